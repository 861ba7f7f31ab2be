"""The worked example of docs/bring_your_model.md runs as written: every bash block, in order, from
the repository root (the venv of `make setup`, Meta-World rendering with EGL)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bring_your_model.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_the_worked_example_runs_as_written() -> None:
    blocks = bash_blocks(DOC.read_text())
    assert len(blocks) >= 7, "the worked example lost its steps"
    shutil.rmtree(REPO / "out" / "example", ignore_errors=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    outputs = []
    for number, block in enumerate(blocks, 1):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert done.returncode == 0, f"step {number} failed:\n{block}\n{output}"
        outputs.append(done.stdout)
    report = outputs[-1].strip().splitlines()[-1]
    assert '"dysl"' in report and '"random_skip"' in report and '"oracle_exit"' in report
