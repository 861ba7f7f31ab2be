"""Write a mypy-readable copy of tensorrt-stubs to .venv/typings (run by `make setup`).

tensorrt-stubs 10.13 ships `tensorrt/__init__.pyi` and `tensorrt_bindings/*.pyi` without a py.typed
marker and with a few signatures that are not valid Python (parameters named `in`, a required
parameter after defaulted ones). The copy renames `in` to `in_` and gives that parameter a default,
so mypy checks the TensorRT backend's calls against the real API instead of treating it as Any.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from pathlib import Path


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".venv/typings")
    sources = [site / "tensorrt" / "__init__.pyi", *sorted((site / "tensorrt_bindings").glob("*.pyi"))]
    if not sources[0].is_file():
        print(f"typings_tensorrt: tensorrt-stubs not installed in {site}", file=sys.stderr)
        return 1
    shutil.rmtree(out / "tensorrt", ignore_errors=True)
    shutil.rmtree(out / "tensorrt_bindings", ignore_errors=True)
    for source in sources:
        text = source.read_text()
        text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
        required_after_defaults = "power: Weights = None, channel_axis: int)"
        text = text.replace(required_after_defaults, required_after_defaults[:-1] + " = ...)")
        target = out / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"typings_tensorrt: {len(sources)} stub files -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
