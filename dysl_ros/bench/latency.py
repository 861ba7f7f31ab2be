"""Placeholder: being written (see the open issue). Nothing here pretends to measure."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("dysl_bench latency: not implemented yet; nothing was measured.", file=sys.stderr)
    return 3
