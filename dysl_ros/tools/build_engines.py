"""`build_engines`: per-segment ONNX Runtime / CUDA-graph / TensorRT engines."""

from __future__ import annotations

import sys

from dysl_ros.tools.pending import not_implemented


def main() -> int:
    return not_implemented("build_engines", "per-segment ONNX Runtime / CUDA-graph / TensorRT engines")


if __name__ == "__main__":
    sys.exit(main())
