"""The documentation holds together: the README stays a front door, every statement of what has not
run says it in the same words wherever it is made, and every relative link points at a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

# One statement each, in these words, wherever the subject's status is stated.
TENSORRT = (
    "The TensorRT backend is written and type-checked against `tensorrt-stubs`, but no TensorRT plan has ever "
    "been built or run: TensorRT's libraries could not be installed on any machine this project had."
)
JETSON = "`Dockerfile.jetson` has never been built or run on a Jetson: no Orin figure exists."
LAUNCH = (
    "The launch files run in CI from a colcon install tree, with the ROS 2 launch and command-line tools of "
    "the Kilted line on Python 3.11; nothing has run them on ROS 2 Humble."
)
STATEMENTS = {
    "README.md": (TENSORRT, JETSON, LAUNCH),
    "docs/engines.md": (TENSORRT, JETSON),
    "docs/node.md": (LAUNCH,),
    "config/dysl.yaml": (TENSORRT,),
    "Dockerfile.jetson": (TENSORRT, JETSON),
    "launch/dysl.launch.py": (LAUNCH,),
    "launch/demo.launch.py": (LAUNCH,),
}
CONTRADICTIONS = (
    "not built yet",
    "(not yet)",
    "cannot build TensorRT engines",
    "DESIGN:",
    "Built and run nowhere",
    "they have not been run here",
)
"""Older wordings that said something else (or pointed at a document that is not in the repository)."""


def words(text: str) -> str:
    """Text with comment markers and line breaks folded away, so a statement may wrap."""
    lines = [re.sub(r"^\s*(#|\*|-)?\s*", "", line) for line in text.splitlines()]
    return " ".join(" ".join(lines).split())


def product_files() -> list[Path]:
    kinds = ("*.md", "*.py", "*.yaml", "*.sh", "*.xml", "Dockerfile.jetson", "Makefile")
    roots = [REPO / name for name in ("dysl_ros", "docs", "launch", "config", "scripts", "docker", "test")]
    files = [path for root in roots for kind in kinds for path in root.rglob(kind)]
    return [*files, *(REPO / name for name in ("README.md", "Dockerfile.jetson", "Makefile", "package.xml"))]


def test_readme_is_a_front_door() -> None:
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; figures go to docs/results.md"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_status_is_stated_in_the_same_words(name: str) -> None:
    text = words((REPO / name).read_text())
    for statement in STATEMENTS[name]:
        assert words(statement) in text, f"{name} does not say: {statement}"


def test_no_older_wording_remains() -> None:
    this_file = Path(__file__).resolve()
    found = [
        f"{path.relative_to(REPO)}: {phrase!r}"
        for path in product_files()
        if path.resolve() != this_file
        for phrase in CONTRADICTIONS
        if phrase in path.read_text(errors="replace")
    ]
    assert not found, found


def test_relative_links_resolve() -> None:
    broken = []
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "experiments" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
