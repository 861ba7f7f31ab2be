"""`dysl_bench`: the latency and closed-loop benchmarks."""

from __future__ import annotations

import sys

from dysl_ros.tools.pending import not_implemented


def main() -> int:
    return not_implemented("dysl_bench", "the latency and closed-loop benchmarks")


if __name__ == "__main__":
    sys.exit(main())
