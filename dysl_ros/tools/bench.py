"""`dysl_bench`: the latency, closed-loop, offline and replay benchmarks. With ``--json`` the last line printed is one
JSON object with the figures, for scripts and CI."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    from dysl_ros.bench import bag_replay, closed_loop, latency, offline

    parser = argparse.ArgumentParser(prog="dysl_bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module, summary in (
        ("latency", latency, "dense vs DySL backbone and tick latency on one backend"),
        ("closed-loop", closed_loop, "Meta-World success rate and executed layers per policy variant"),
        ("offline", offline,
         "DySL on recorded LeRobotDataset episodes: errors vs dense and recorded, executed layers"),
        ("replay", bag_replay,
         "a robot's rosbag2 played into dysl_node over ROS 2: latency, executed layers, stale periods"),
    ):
        module.add_arguments(commands.add_parser(
            name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        ))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "latency":
        from dysl_ros.bench import latency

        return latency.run(args)
    if args.command == "offline":
        from dysl_ros.bench import offline

        return offline.run(args)
    if args.command == "replay":
        from dysl_ros.bench import bag_replay

        return bag_replay.run(args)
    if getattr(args, "wiring", "inprocess") != "inprocess":
        from dysl_ros.bench import ros_loop

        return ros_loop.run(args)
    from dysl_ros.bench import closed_loop

    return closed_loop.run(args)


if __name__ == "__main__":
    sys.exit(main())
