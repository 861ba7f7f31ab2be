"""The tick as a program of conditional steps (what a device would capture once) takes exactly the
path the host-driven runner takes, for every plan, allow point and controller decision."""

from __future__ import annotations

import numpy as np
import pytest

from dysl_ros.backends.tick_program import Step, execute, tick_program
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.runner import run_path


class ArithmeticBackend:
    """Segments as arithmetic on a vector, with controllers that answer from the state they see, so
    a different path gives different decisions and a different chunk."""

    name = "arithmetic"

    def __init__(self, seed: int) -> None:
        self.weights = np.random.default_rng(seed).uniform(0.2, 1.8, 64)

    def embed(self, inputs: object) -> np.ndarray:
        return np.ones(3)

    def run_layers(self, start: int, stop: int, x: np.ndarray) -> np.ndarray:
        for layer in range(start, stop):
            x = x * self.weights[layer] + layer
        return x

    def adapt(self, layer: int, x: np.ndarray) -> np.ndarray:
        return x * 0.5 - layer

    def skip_probability(self, layer: int, x: np.ndarray) -> float:
        return float((np.sin(x.sum() * (layer + 1)) + 1.0) / 2.0)

    def head(self, x: np.ndarray) -> np.ndarray:
        return np.asarray([x], dtype=np.float32)


def test_the_program_lays_out_every_segment_once() -> None:
    plan = LayerPlan(num_layers=6, static_layers=(1, 5))
    steps = tick_program(plan)
    assert steps[0] == Step("embed") and steps[-1] == Step("head")
    assert [s.layer for s in steps if s.op == "consult"] == [0, 2, 3, 4]
    assert [s.layer for s in steps if s.op in ("layer", "static")] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", range(40))
def test_the_program_takes_the_runners_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_layers = int(rng.integers(2, 16))
    static = sorted({num_layers - 1, *rng.choice(num_layers - 1, int(rng.integers(0, 4)), replace=True).tolist()})
    plan = LayerPlan(num_layers=num_layers, static_layers=tuple(int(s) for s in static))
    allow = [int(rng.integers(gap.start, gap.static + 1)) for gap in plan.gaps]
    threshold = float(rng.uniform(0.2, 0.9))
    backend = ArithmeticBackend(seed)
    expected_chunk, expected = run_path(backend, {}, plan.gaps, allow, threshold)
    chunk, trace = execute(tick_program(plan), backend, {}, allow, threshold)
    assert trace == expected
    np.testing.assert_array_equal(chunk, expected_chunk)
