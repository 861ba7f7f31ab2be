"""`dysl_train`: the offline pipeline, one sub-command per stage.

    dysl_train demos      --out data/demos --tasks all --episodes-per-task 20 --workers 2
    dysl_train demos      --out data/lerobot --format lerobot       (a LeRobotDataset v3.0 instead of npz)
    dysl_train to-lerobot --demos data/demos --out data/lerobot     (existing demos -> LeRobotDataset v3.0)
    dysl_train to-lerobot --rosbag my_bag --mapping bag_mapping.yaml --out data/lerobot   (a robot's rosbag2)
    dysl_train import     --decoder ckpt --spec spec.yaml --embed pkg.mod:f --head pkg.mod:g --out models/mine
    dysl_train bc         --demos data/demos --out models/reference
    dysl_train calibrate  --model-dir models/reference --demos data/demos
    dysl_train distill    --model-dir models/reference --demos data/demos --stage1-steps N --stage2-steps M
    dysl_train distill    ... --plan last-layer-only --modules-out models/reference/variants/no_static
    dysl_train router     --model-dir models/reference --demos data/demos --stage1-steps N --stage2-steps M

Each stage's module is imported only when its sub-command runs: `demos` does not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from dysl_ros.params import add_flags, from_flags
from dysl_ros.training.settings import (
    BCSettings,
    CalibrateSettings,
    DemosSettings,
    DistillSettings,
    RouterSettings,
)

Handler = Callable[[argparse.Namespace], int]
DEMOS_HELP = (
    "demonstrations: a directory of dysl_train demos (several: A,B), a LeRobotDataset directory (v3.0, v2.1) "
    "or a rosbag2 recording (a bag directory, .db3 or .mcap; with --mapping)"
)
MAPPING_HELP = (
    "LeRobot datasets: YAML mapping the model's cameras, state and action to the dataset's feature keys "
    "(default: the dataset's dysl_mapping.yaml); rosbag2 recordings: the bag mapping of topics (required)"
)


def _fail(command: str, message: str, status: int = 2) -> int:
    """``dysl_train <command>: <message>`` on stderr, and the exit status (2: usage, 1: nothing made)."""
    print(f"dysl_train {command}: {message}", file=sys.stderr)
    return status


def _stage(module: str, function: str) -> Handler:
    """A handler that imports ``module`` only when called (``demos`` does not pay for torch)."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), function)(args))

    return run


def _demos(args: argparse.Namespace) -> int:
    if getattr(args, "format", "npz") == "lerobot" and getattr(args, "arm", "ee") != "ee":
        return _fail("demos", "--format lerobot records the end-effector arm only (leave out --arm)")
    if getattr(args, "format", "npz") == "lerobot":
        return _demos_lerobot(args)
    from dysl_ros.training.demos import generate_demos

    try:
        settings = from_flags(DemosSettings, args)
        summary = generate_demos(args.out, settings, overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, FileExistsError, RuntimeError) as exc:  # RuntimeError: an episode failed in a worker
        return _fail("demos", str(exc))
    if not any(row["kept"] for row in summary.values()):
        return _fail("demos", "no episode was kept (the expert never succeeded?)", 1)
    return 0


def _add_demos(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demos",
        help="record Meta-World MT10 scripted-expert demonstrations",
        description="Record scripted-expert episodes of Meta-World MT10 tasks (camera image, proprio, action) "
        "into OUT/index.json + one .npz per episode (format: dysl_ros.training.demos).",
    )
    p.add_argument("--out", required=True, help="output directory")
    add_flags(p, DemosSettings)
    p.add_argument("--overwrite", action="store_true", help="replace an existing index in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--format", choices=("npz", "lerobot"), default="npz",
        help="npz: OUT/index.json + .npz episodes (default); lerobot: a LeRobotDataset v3.0 in OUT",
    )
    p.add_argument(
        "--codec", choices=("h264", "av1", "images"), default="h264",
        help="with --format lerobot: how camera frames are stored (default: h264 video)",
    )
    p.set_defaults(handler=_demos)


def _demos_lerobot(args: argparse.Namespace) -> int:
    """Record as npz into a temporary directory beside OUT, then convert: one recording path for both formats."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from dysl_ros.training.lerobot_dataset import INFO_PATH
    from dysl_ros.training.lerobot_writer import demos_to_lerobot

    out = Path(args.out)
    # Checked before rendering for minutes, not after.
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (args.overwrite and (out / INFO_PATH).is_file()):
            hint = "" if args.overwrite else ": choose another --out, or --overwrite to replace a LeRobot dataset"
            return _fail("demos", f"{out} exists and is not an empty directory{hint}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.npz.", dir=out.parent))
    try:
        status = _demos(argparse.Namespace(**{**vars(args), "format": "npz", "out": str(tmp), "overwrite": True}))
        if status != 0:
            return status
        # An existing dataset (--overwrite) is replaced only once the new one is complete.
        replace = out.exists() and any(out.iterdir())
        target = tmp / "lerobot" if replace else out
        try:
            demos_to_lerobot(tmp, target, codec=args.codec)
            if replace:
                shutil.rmtree(out)
                os.replace(target, out)
        except (ValueError, OSError) as exc:
            return _fail("demos", str(exc))
        print(f"LeRobotDataset v3.0 ({args.codec}): {out}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _to_lerobot(args: argparse.Namespace) -> int:
    if args.rosbag is not None:
        return _bag_to_lerobot(args)
    if args.mapping is not None or args.json:
        return _fail("to-lerobot", "--mapping and --json are for --rosbag")
    from dysl_ros.training.lerobot_writer import demos_to_lerobot

    try:
        out = demos_to_lerobot(args.demos, args.out, codec=args.codec, fps=args.fps)
    except (ValueError, OSError) as exc:  # DemoFormatError, LeRobotFormatError; FileExistsError for OUT
        return _fail("to-lerobot", str(exc))
    print(f"LeRobotDataset v3.0 ({args.codec}): {out}")
    return 0


def _bag_to_lerobot(args: argparse.Namespace) -> int:
    """A rosbag2 recording -> a LeRobotDataset v3.0, with what was dropped and why."""
    import json
    from pathlib import Path

    from dysl_ros.training.rosbag_dataset import bag_to_lerobot, open_bag

    if args.mapping is None:
        return _fail("to-lerobot", "--rosbag needs --mapping FILE (topics -> cameras, state, action)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return _fail("to-lerobot", f"{out} exists and is not an empty directory: choose another --out")
    try:
        dataset = open_bag(args.rosbag, args.mapping, min_length=args.min_length, progress=not args.no_progress)
        for line in dataset.summary_lines():
            print(line)
        bag_to_lerobot(dataset, out, codec=args.codec, progress=not args.no_progress)
    except (ValueError, OSError) as exc:  # BagFormatError, LeRobotFormatError; FileExistsError for OUT
        return _fail("to-lerobot", str(exc))
    print(f"LeRobotDataset v3.0 ({args.codec}, {dataset.fps:g} fps): {out}")
    if args.json:
        print(json.dumps({**dataset.summary(), "out": str(out), "codec": args.codec}))
    return 0


def _add_to_lerobot(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "to-lerobot",
        help="convert demonstrations (dysl_train demos) or a rosbag2 recording into a LeRobotDataset v3.0",
        description="Convert demonstration directories (OUT of dysl_train demos), or a robot's rosbag2 recording "
        "through a bag mapping (format: dysl_ros.training.rosbag_format), into a LeRobotDataset v3.0 "
        "(format: dysl_ros.training.lerobot_dataset), with OUT/dysl_mapping.yaml mapping each camera to its "
        "feature.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--demos", help="demonstrations directory; several: A,B")
    source.add_argument("--rosbag", metavar="BAG", help="a rosbag2 recording: bag directory, .db3 or .mcap file")
    p.add_argument(
        "--mapping", metavar="FILE", default=None,
        help="with --rosbag: YAML of topics -> cameras, state, action, instruction; fps, tolerance, episode split",
    )
    p.add_argument("--out", required=True, help="dataset directory to write (must not exist, or be empty)")
    p.add_argument(
        "--codec", choices=("h264", "av1", "images"), default="h264",
        help="camera frames as H.264 or AV1 video (lossy, high quality), or PNG images in the parquet "
        "(lossless, larger) (default: h264)",
    )
    p.add_argument("--fps", type=float, default=20.0,
                   help="--demos: frames per second recorded in the dataset (default: 20; a bag's is its mapping's)")
    p.add_argument(
        "--min-length", type=int, default=1, metavar="N",
        help="with --rosbag: an episode of fewer frames is an error (the model's action horizon; default: 1)",
    )
    p.add_argument("--json", action="store_true",
                   help="with --rosbag: print what was converted and dropped as one JSON object, last line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_to_lerobot)


# The training stages' flags derive from their settings (dysl_ros.training.settings): each
# default, check and help line is declared there once.


def _add_bc(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bc", help="train the dense VLA by behaviour cloning on the demos")
    p.add_argument("--demos", required=True, help=DEMOS_HELP)
    p.add_argument("--mapping", default=None, help=MAPPING_HELP)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--config-json", default=None, help="VLAConfig JSON (default: the reference config)")
    add_flags(p, BCSettings, skip=("camera", "goal_marker_radius"))
    p.set_defaults(handler=_stage("dysl_ros.training.bc", "main_bc"))


def _add_stage(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, model_dir: str,
    settings: type, handler: Handler,
) -> None:
    """A stage that trains on a model directory's backbone: its model and demonstrations, then its
    settings' flags."""
    p = sub.add_parser(name, help=summary)
    p.add_argument("--model-dir", required=True, help=model_dir)
    p.add_argument("--demos", required=True, help=DEMOS_HELP)
    p.add_argument("--mapping", default=None, help=MAPPING_HELP)
    add_flags(p, settings)
    p.set_defaults(handler=handler)


def _add_import(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "import",
        help="a model directory from a Hugging Face decoder checkpoint, your embed and head, an observation spec",
        description="Your own VLA as embed -> Hugging Face decoder layers -> head (docs/bring_your_model.md).",
    )
    p.add_argument("--decoder", required=True, help="Hugging Face checkpoint directory (config.json + safetensors)")
    p.add_argument("--spec", required=True, help="observation spec YAML: cameras, state, actions, tokenizer")
    p.add_argument("--embed", required=True, help="entry point package.module:factory of your embed")
    p.add_argument("--embed-kwargs", default="{}", help="JSON object of the embed factory's keyword arguments")
    p.add_argument("--embed-weights", default=None, help="safetensors of the embed (default: the factory's init)")
    p.add_argument("--head", required=True, help="entry point package.module:factory of your head")
    p.add_argument("--head-kwargs", default="{}", help="JSON object of the head factory's keyword arguments")
    p.add_argument("--head-weights", default=None, help="safetensors of the head (default: the factory's init)")
    p.add_argument("--tokenizer", default=None, help="local Hugging Face tokenizer directory (copied to OUT/tokenizer)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="how the embed and head weights are stored (the decoder's stay as they are)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(handler=_import)


def _import(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import yaml

    from dysl_ros.core.config import ConfigError
    from dysl_ros.model.hf_decoder import ModulePart, import_model
    from dysl_ros.model.observation_spec import ObservationSpec

    try:
        spec_data = yaml.safe_load(Path(args.spec).read_text())
        if not isinstance(spec_data, dict):
            raise ConfigError(f"{args.spec} must hold a mapping (cameras, state, actions, tokenizer)")
        spec = ObservationSpec.from_dict(spec_data)
        parts = {}
        for what in ("embed", "head"):
            kwargs = json.loads(getattr(args, f"{what}_kwargs"))
            if not isinstance(kwargs, dict):
                raise ConfigError(f"--{what}-kwargs must be a JSON object, got {kwargs!r}")
            parts[what] = ModulePart(getattr(args, what), kwargs)
        out = import_model(
            args.out, decoder_dir=args.decoder, spec=spec, embed=parts["embed"], head=parts["head"],
            embed_weights=args.embed_weights, head_weights=args.head_weights, tokenizer_dir=args.tokenizer,
            dtype=args.dtype,
        )
    except (ConfigError, ValueError, OSError, yaml.YAMLError) as exc:  # json errors are ValueErrors
        return _fail("import", str(exc))
    description = json.loads((out / "backbone.json").read_text())
    print(
        f"imported {description['family']} decoder ({description['num_layers']} layers, hidden "
        f"{description['hidden_size']}, {description['num_tokens']} tokens) into {out}; next: dysl_train calibrate "
        f"--model-dir {out} --demos <dataset>"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dysl_train", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{demos,to-lerobot,import,bc,calibrate,distill,router}"
    )
    _add_demos(sub)
    _add_to_lerobot(sub)
    _add_import(sub)
    _add_bc(sub)
    _add_stage(sub, "calibrate", "pick static/dynamic layers from layer similarities on the demos",
               "trained model directory (dysl_train bc --out)", CalibrateSettings,
               _stage("dysl_ros.training.calibrate", "main_calibrate"))
    _add_stage(sub, "distill", "train the DySL adapters and controllers (two-stage distillation)",
               "calibrated model directory", DistillSettings, _stage("dysl_ros.training.distill", "main_distill"))
    _add_stage(sub, "router",
               "train the per-layer router baseline (FlexiDepth-like) for the closed-loop comparison",
               "trained model directory", RouterSettings, _stage("dysl_ros.training.router", "main_router"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
