"""`build_engines`: export a model directory's segments to per-segment engines.

    build_engines --model-dir D [--out ROOT] [--backend onnxruntime|tensorrt] [--precision P]
                  [--device cuda:N] [--force]

Engines go to ``ROOT/<model name>/<backend>/``; ``--out`` defaults to ``D/engines``, the root
``dysl_node`` reads when its ``engine_dir`` parameter is unset (``engine_root`` in
``dysl_ros.backends.manifest``, the one definition), so that engines built here are the ones the node finds.
``--force`` rebuilds over engines whose manifest no longer matches (a retrained model, another
TensorRT version or GPU), which otherwise fail with exit 1.

``onnxruntime``: ONNX files, fp32, portable. ``tensorrt``: ONNX -> TensorRT plans (default fp16),
built on the GPU ``--device`` that will run them (plans are tied to the TensorRT version and GPU).
Exit codes: 0 built or already up to date, 1 failed (message says why), 2 usage error or a backend
this machine or version cannot build (TensorRT or a GPU missing; torch, whose CUDA graphs are
captured when the policy loads and have no files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dysl_ros.backends.build import build_engines
from dysl_ros.backends.capability import ALL_PRECISIONS, ENGINE_BACKENDS, PRECISIONS
from dysl_ros.backends.errors import BackendUnavailable, EngineError
from dysl_ros.backends.manifest import engine_path, engine_root, segment_sizes
from dysl_ros.core.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2
NO_FILES_BACKENDS = ("torch",)
"""Accepted so that asking for them gets an explanation instead of an argparse error."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_engines",
        description="Export a dysl_ros model directory to one engine per segment "
        "(embed, each layer, each adapter and controller, head) under OUT/<model name>/<backend>/.",
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="model directory (vla_config.json, ...)")
    parser.add_argument(
        "--out",
        default=None,
        type=Path,
        help="engine root (default: MODEL_DIR/engines, where dysl_node looks when its engine_dir is unset)",
    )
    parser.add_argument(
        "--backend",
        default="onnxruntime",
        choices=(*ENGINE_BACKENDS, *NO_FILES_BACKENDS),
        help="engine kind: onnxruntime (CPU, ONNX files) or tensorrt (plans built on this machine's GPU)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=ALL_PRECISIONS,
        help="onnxruntime: fp32 only; tensorrt: fp16 (default) or fp32",
    )
    parser.add_argument("--device", default="cuda", help="tensorrt: the GPU to build on (default: cuda)")
    parser.add_argument("--force", action="store_true", help="rebuild even if matching engines exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend in NO_FILES_BACKENDS:
        print(
            "build_engines: --backend torch has no engine files: its CUDA graphs are captured in memory when the "
            "policy loads (backend: torch on a CUDA device). Nothing was built. Engine backends: "
            f"{', '.join(ENGINE_BACKENDS)}.",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    if args.precision is not None and args.precision not in PRECISIONS[args.backend]:
        print(
            f"build_engines: --precision {args.precision} is not available for {args.backend} engines "
            f"(use {' or '.join(PRECISIONS[args.backend])})",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    from dysl_ros.model.model_dir import ModelDirError

    # The node's own rule for where engines live, so the two cannot drift apart.
    out = engine_root(args.model_dir, str(args.out) if args.out is not None else None)
    up_to_date = engine_path(out, args.model_dir, args.backend).exists() and not args.force
    try:
        engine_dir = build_engines(
            args.model_dir, out, args.backend, args.precision, force=args.force, device=args.device
        )
        sizes = segment_sizes(engine_dir)
    except BackendUnavailable as exc:
        print(f"build_engines: {exc}. Nothing was built.", file=sys.stderr)
        return EXIT_UNAVAILABLE
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
