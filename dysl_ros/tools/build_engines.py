"""`build_engines`: export a model directory's segments to per-segment engines.

    build_engines --model-dir D [--out engines] [--backend onnxruntime] [--precision fp32] [--force]

Exit codes: 0 built or already up to date, 1 failed (message says why), 2 usage error or a backend
this version cannot build yet (torch CUDA graphs, tensorrt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dysl_ros.backends.engines import BUILDABLE_BACKENDS, EngineError, build_engines, engine_path, segment_sizes
from dysl_ros.core.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2
PLANNED_BACKENDS = ("torch", "tensorrt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_engines",
        description="Export a dysl_ros model directory to one engine per segment "
        "(embed, each layer, each adapter and controller, head) under OUT/<model name>/<backend>/.",
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="model directory (vla_config.json, ...)")
    parser.add_argument("--out", default=Path("engines"), type=Path, help="engine root (default: engines)")
    parser.add_argument(
        "--backend",
        default="onnxruntime",
        choices=(*BUILDABLE_BACKENDS, *PLANNED_BACKENDS),
        help="engine kind; this version builds onnxruntime only",
    )
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"), help="onnxruntime: fp32 only")
    parser.add_argument("--force", action="store_true", help="rebuild even if matching engines exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend not in BUILDABLE_BACKENDS:
        what = "CUDA-graph torch engines" if args.backend == "torch" else "TensorRT engines"
        print(
            f"build_engines: --backend {args.backend} ({what}) is not available yet in this version; "
            f"nothing was built. Available: {', '.join(BUILDABLE_BACKENDS)}.",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    from dysl_ros.model.checkpoint import ModelDirError  # imports torch: not for --help or a refusal

    up_to_date = engine_path(args.out, args.model_dir, args.backend).exists() and not args.force
    try:
        engine_dir = build_engines(args.model_dir, args.out, args.backend, args.precision, force=args.force)
        sizes = segment_sizes(engine_dir)
    except (EngineError, ModelDirError, ConfigError) as exc:
        print(f"build_engines: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"engines: {engine_dir}" + (" (up to date, kept)" if up_to_date else " (built)"))
    width = max(len(name) for name, _, _ in sizes)
    print(f"{'segment':<{width}}  {'file':<{width + 5}}  {'size':>10}")
    for name, file, size in sizes:
        print(f"{name:<{width}}  {file:<{width + 5}}  {_human(size):>10}")
    print(f"{'total':<{width}}  {len(sizes):>{width + 5}}  {_human(sum(s for _, _, s in sizes)):>10}")
    return EXIT_OK


def _human(size: int) -> str:
    value, unit = float(size), "B"
    for larger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"

if __name__ == "__main__":
    sys.exit(main())
