"""`dysl_train`: the offline pipeline: demos, bc, calibrate, distill."""

from __future__ import annotations

import sys

from dysl_ros.tools.pending import not_implemented


def main() -> int:
    return not_implemented("dysl_train", "the offline pipeline: demos, bc, calibrate, distill")


if __name__ == "__main__":
    sys.exit(main())
