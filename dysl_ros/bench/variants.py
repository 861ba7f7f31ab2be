"""The policy variants the closed-loop benchmark compares, on the same episodes.

| variant          | modules                          | runs                                                        |
|------------------|----------------------------------|-------------------------------------------------------------|
| `dense`          | -                                | every layer, every tick                                     |
| `dysl`           | the model dir's                  | DySL as the node runs it (settings from dysl.json)          |
| `no_pre_skip`    | the model dir's                  | DySL, allow points fixed at the gap starts                  |
| `no_post_verify` | the model dir's                  | DySL without post-skip verification                         |
| `no_static`      | `variants/no_static`             | DySL over one gap (only the last layer static)              |
| `one_stage`      | `variants/one_stage`             | DySL with modules trained without stage 1                   |
| `random_skip`    | the model dir's adapters         | each controller replaced by a seeded coin (below)           |
| `random_drop`    | none (the plan's static layers)  | untrained: seeded coins drop single dynamic layers (below)  |
| `random_layers`  | none                             | untrained: seeded coins drop any single layer (below)       |
| `router`         | `variants/router`                | per-layer router, FlexiDepth-like (dysl_ros.core.router)    |
| `oracle_exit`    | the model dir's adapters         | diagnostic bound, not a policy: each tick the shallowest    |
|                  |                                  | exit whose chunk is within a tolerance of the dense chunk   |
| `deer_exit`      | the model dir's adapters         | DeeR-VLA-style early exit (the paper's Table 2): leave a    |
|                  |                                  | gap at the first exit whose chunk agrees with the previous  |
|                  |                                  | exit's within ``--deer-threshold``                          |

Random skip: allow points stay at the gap starts (no pre-skip, no verification) and every consulted
controller is a coin that says "skip" with probability q, q solved so that the expected executed layers
per tick equal a target (DySL's measured mean in the same run, or a given number). Within a gap of n
dynamic layers consulted from its start, layer j (0-based) runs iff the first j+1 coins say "keep":
E[executed] = static layers + sum_g sum_{j=1..n_g} (1-q)^j, decreasing in q, solved by bisection.
It keeps DySL's trained adapters and exit structure, so it measures what the controllers' choice of
exit layer is worth.

Random drop and random layers are the paper's "Random Skip" row (Table 2: no fine-tuned parameters):
no adapters, no controllers; a layer runs with probability r, else the residual stream passes it
unchanged. They differ in what the coin may drop. Random drop keeps the calibrated static layers
(the baseline gets DySL's calibration for free) and flips a coin for each dynamic layer, r = (target
- static layers) / dynamic layers. Random layers knows nothing of the plan, as the paper's baseline
does not: every layer, the informative ones too, runs with r = target / L.

Oracle exit (not in ``all``: it runs the dense pass and every candidate exit each tick, so it is a
bound, never a servable policy): allow points at the gap starts, no verification, and controller i
says "skip" iff adapter i's jump, with the rest of the stack run densely, gives a chunk whose mean
absolute difference from the dense chunk (normalised actions) is at most ``--oracle-tolerance``.
It is the best any controller could do with these adapters by the distillation's own measure (the
distance to the dense chunk): if it loses to dense at DySL's executed layers, no controller closes
the gap; if it does not, the controllers are what falls short.

DeeR exit (the paper's Table 2 baseline after DeeR-VLA): every dynamic layer is an exit (its adapter,
then the rest of the stack run densely, then the head); going down a gap the pass computes each
exit's chunk and leaves at the first one whose chunk lies within ``--deer-threshold`` (mean absolute
difference, normalised actions) of the previous exit's. It uses no controller, no continuity and no
verification: agreement between successive exits is its only signal. The threshold is chosen on the
validation seed to put it at the layers of the run it is compared with.

This module has no torch at import; loading a variant imports the backends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError, DySLConfig
from dysl_ros.core.exit_error import EXIT_MEASURES, ExitRule, exit_error
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.core.router import run_router_path
from dysl_ros.core.runner import DySLRunner, FloatArray, ModelInputs, SegmentBackend, TickResult
from dysl_ros.params import chosen, integer_at_least, non_negative, number_in, one_of, optional, param, same_as, text

T = TypeVar("T")

VARIANTS: tuple[str, ...] = (
    "dense", "dysl", "no_pre_skip", "no_post_verify", "no_static", "one_stage", "random_skip", "random_drop",
    "random_layers", "router",
)
DIAGNOSTIC_VARIANTS: tuple[str, ...] = ("oracle_exit", "deer_exit")
"""Run only when named: a bound that needs the dense pass every tick, and a baseline that needs its
threshold (chosen for matched layers on the validation seed)."""
KNOWN_VARIANTS: tuple[str, ...] = VARIANTS + DIAGNOSTIC_VARIANTS
"""Every name ``--variants`` takes, in report order."""
RANDOM_VARIANTS: tuple[str, ...] = ("random_skip", "random_drop", "random_layers")
"""Variants whose coin is solved for a target of executed layers (dysl's measured mean by default;
each one's coin in COINS)."""
MODULE_VARIANTS = {"no_static": "no_static", "one_stage": "one_stage", "router": "router"}
"""Variants whose modules live in ``<model dir>/variants/<name>``."""


def parse_variants(spec: str) -> list[str]:
    """``"all"`` (``VARIANTS``) or a comma list -> variant names in the canonical order."""
    return chosen(spec, KNOWN_VARIANTS, "variant", everything=VARIANTS)


def variant_modules_dir(model_dir: str | Path, variant: str, modules_dir: str | Path | None = None) -> Path | None:
    """Where ``variant`` takes its plan and modules from: ``<model dir>/variants/<name>`` for the
    ablations, else ``modules_dir`` (another speed/accuracy point, e.g. a distillation at another
    lambda), else None (the model dir's own)."""
    name = MODULE_VARIANTS.get(variant)
    if name is not None:
        return Path(model_dir) / "variants" / name
    return None if modules_dir is None or variant == "dense" else Path(modules_dir)


# --------------------------------------------------------------------------------------------------
# Random skip


def expected_executed_layers(plan: LayerPlan, q: float, allow_points: Sequence[int] | None = None) -> float:
    """Expected executed layers per tick when every consulted controller skips with probability ``q``
    (allow points default to the gap starts: every dynamic layer's coin may be consulted)."""
    points = [gap.start for gap in plan.gaps] if allow_points is None else list(allow_points)
    if len(points) != len(plan.gaps):
        raise ValueError(f"expected {len(plan.gaps)} allow points, got {len(points)}")
    keep = 1.0 - q
    total = float(len(plan.static_layers))
    for gap, allow in zip(plan.gaps, points, strict=True):
        if not gap.start <= allow <= gap.static:
            raise ValueError(f"allow point {allow} outside its gap [{gap.start}, {gap.static}]")
        total += allow - gap.start  # forced prefix
        total += sum(keep**j for j in range(1, gap.static - allow + 1))
    return total


def random_skip_probability(
    plan: LayerPlan, target_layers: float, allow_points: Sequence[int] | None = None, tol: float = 1e-9
) -> float:
    """The coin's skip probability q whose expected executed layers equal ``target_layers``, clamped
    to what the plan allows (q = 0: every layer; q = 1: static layers and forced prefixes only)."""
    low, high = 0.0, 1.0
    most = expected_executed_layers(plan, 0.0, allow_points)
    least = expected_executed_layers(plan, 1.0, allow_points)
    if target_layers >= most:
        return 0.0
    if target_layers <= least:
        return 1.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if expected_executed_layers(plan, mid, allow_points) > target_layers:
            low = mid
        else:
            high = mid
        if high - low < tol:
            break
    return 0.5 * (low + high)


def random_drop_keep_probability(plan: LayerPlan, target_layers: float) -> float:
    """The probability r that random drop runs a dynamic layer, for ``target_layers`` expected
    executed layers per tick, clamped to [0, 1] (static layers only .. every layer)."""
    dynamic = len(plan.dynamic_layers)
    if dynamic == 0:
        return 1.0
    return min(1.0, max(0.0, (target_layers - len(plan.static_layers)) / dynamic))


def random_layers_keep_probability(plan: LayerPlan, target_layers: float) -> float:
    """The probability r that random layers runs a layer, any layer, for ``target_layers`` expected
    executed layers per tick, clamped to [0, 1]."""
    return min(1.0, max(0.0, target_layers / plan.num_layers))


@dataclass(frozen=True)
class Coin:
    """What a random variant's coin is: its name in the bench report, its meaning, and its solver
    (the probability for a target of expected executed layers)."""

    field: str
    meaning: str
    solve: Callable[[LayerPlan, float], float]


COINS: dict[str, Coin] = {
    "random_skip": Coin("skip_probability", "skip probability of each consulted controller's coin",
                        random_skip_probability),
    "random_drop": Coin("keep_probability", "probability that each dynamic layer runs (no adapters)",
                        random_drop_keep_probability),
    "random_layers": Coin("keep_probability", "probability that each layer runs (no adapters, no static layers)",
                          random_layers_keep_probability),
}


def coin_probability(variant: str, plan: LayerPlan, target_layers: float) -> float:
    """A random variant's coin for ``target_layers``: random_skip's skip probability q, random_drop's
    and random_layers' keep probability r."""
    if variant not in COINS:
        raise ValueError(f"{variant} is not one of the random variants {RANDOM_VARIANTS}")
    return COINS[variant].solve(plan, target_layers)


class ReplacedControllers(Generic[T]):
    """A segment backend whose controllers a variant replaces: subclasses say ``skip_probability``;
    embedding, layers, adapters and head are the wrapped backend's."""

    def __init__(self, inner: SegmentBackend[T], plan: LayerPlan | None = None) -> None:
        self.inner = inner
        self.num_layers = plan.num_layers if plan is not None else 0
        self.static_of = {} if plan is None else {
            layer: gap.static for gap in plan.gaps for layer in gap.dynamic_layers
        }

    def embed(self, inputs: ModelInputs) -> T:
        return self.inner.embed(inputs)

    def run_layers(self, start: int, stop: int, x: T) -> T:
        return self.inner.run_layers(start, stop, x)

    def adapt(self, layer: int, x: T) -> T:
        return self.inner.adapt(layer, x)

    def skip_probability(self, layer: int, x: T) -> float:
        raise NotImplementedError

    def head(self, x: T) -> FloatArray:
        return self.inner.head(x)

    def exit_chunk(self, layer: int, x: T) -> FloatArray:
        """The chunk if the pass jumps from dynamic layer ``layer`` (input ``x``): its adapter, then the
        dense stack from the gap's static layer on, then the head."""
        jumped = self.inner.run_layers(self.static_of[layer], self.num_layers, self.inner.adapt(layer, x))
        return self.inner.head(jumped)


class CoinBackend(ReplacedControllers[T]):
    """Controllers that are coins: ``skip_probability`` is 1.0 with probability ``q`` and 0.0
    otherwise (so any threshold in (0, 1] reads it as skip / keep)."""

    def __init__(self, inner: SegmentBackend[T], q: float, seed: int = 0) -> None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"skip probability must lie in [0, 1], got {q}")
        super().__init__(inner)
        self.name = f"{inner.name}+coin"
        self.q = q
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def skip_probability(self, layer: int, x: T) -> float:
        return 1.0 if self.rng.random() < self.q else 0.0


class OracleExitBackend(ReplacedControllers[T]):
    """Controllers that know the answer: ``embed`` also runs the dense pass and keeps its chunk;
    ``skip_probability(i, x)`` is 1.0 iff exit i's chunk lies within ``tolerance`` of that chunk (by
    ``measure``, dysl_ros.core.exit_error: mean absolute difference of the normalised actions, or that
    relative to the dense chunk's size), else 0.0. ``actions``: compare only the chunk's first that
    many actions (the ones the arm executes before the next tick); None: the whole chunk."""

    def __init__(
        self, inner: SegmentBackend[T], plan: LayerPlan, tolerance: float, actions: int | None = None,
        measure: str = "absolute",
    ) -> None:
        if not tolerance >= 0.0:
            raise ValueError(f"oracle tolerance must be >= 0, got {tolerance}")
        if actions is not None and actions < 1:
            raise ValueError(f"oracle actions must be >= 1 (or None: the whole chunk), got {actions}")
        if measure not in EXIT_MEASURES:
            raise ValueError(f"oracle measure must be one of {EXIT_MEASURES}, got {measure!r}")
        super().__init__(inner, plan)
        self.measure = measure
        self.name = f"{inner.name}+oracle"
        self.tolerance = tolerance
        self.window = slice(actions)
        self.dense_chunk: FloatArray | None = None

    def embed(self, inputs: ModelInputs) -> T:
        x = self.inner.embed(inputs)
        self.dense_chunk = self.inner.head(self.inner.run_layers(0, self.num_layers, x))
        return x

    def exit_error(self, layer: int, x: T) -> float:
        """The exit error over the compared actions when the pass jumps from dynamic layer ``layer``
        (input ``x``)."""
        if self.dense_chunk is None:
            raise RuntimeError("embed() first: the oracle compares against this tick's dense chunk")
        chunk = self.exit_chunk(layer, x)
        return float(exit_error(chunk[self.window], self.dense_chunk[self.window], self.measure))

    def skip_probability(self, layer: int, x: T) -> float:
        return 1.0 if self.exit_error(layer, x) <= self.tolerance else 0.0


class DeerExitBackend(ReplacedControllers[T]):
    """Controllers that follow DeeR's exit rule: ``skip_probability(i, x)`` computes exit i's chunk and
    says 1.0 iff it lies within ``threshold`` (mean |difference|) of the previous exit's chunk in the
    same gap and tick; the first exit consulted in a gap has nothing to agree with and says 0.0."""

    def __init__(self, inner: SegmentBackend[T], plan: LayerPlan, threshold: float) -> None:
        if not threshold >= 0.0:
            raise ValueError(f"deer threshold must be >= 0, got {threshold}")
        super().__init__(inner, plan)
        self.name = f"{inner.name}+deer"
        self.threshold = threshold
        self.previous: tuple[int, FloatArray] | None = None
        """(static layer of its gap, chunk) of the last exit computed this tick."""

    def embed(self, inputs: ModelInputs) -> T:
        self.previous = None
        return self.inner.embed(inputs)

    def skip_probability(self, layer: int, x: T) -> float:
        static = self.static_of[layer]
        chunk = self.exit_chunk(layer, x)
        previous, self.previous = self.previous, (static, chunk)
        if previous is None or previous[0] != static:
            return 0.0
        return 1.0 if float(np.abs(chunk - previous[1]).mean()) <= self.threshold else 0.0


# --------------------------------------------------------------------------------------------------
# One interface over every variant


@dataclass(frozen=True)
class VariantStep:
    actions: npt.NDArray[np.float64]
    """(chunk_len, action_dim), de-normalised."""
    executed_layers: int
    layer_evaluations: int
    verified: bool
    tick: TickResult | None
    """DySL ticks (every variant but the router)."""


class VariantPolicy(Protocol):
    name: str
    num_layers: int

    def reset(self, episode_seed: int) -> None: ...

    def step(self, obs: Any, execute: slice) -> VariantStep: ...


class RunnerVariant:
    """dense, dysl and its ablations, random skip: a DySLRunner over a backend."""

    def __init__(self, name: str, policy: Any, runner: DySLRunner[Any], coin: CoinBackend[Any] | None = None) -> None:
        self.name = name
        self.policy = policy
        self.runner = runner
        self.coin = coin
        self.num_layers = runner.plan.num_layers

    def reset(self, episode_seed: int) -> None:
        self.runner.reset()
        if self.coin is not None:
            self.coin.reseed(episode_seed)

    def step(self, obs: Any, execute: slice) -> VariantStep:
        from dysl_ros.model.spec import denormalise_actions, preprocess

        spec = self.policy.spec
        tick = self.runner.step(preprocess(spec, obs), execute)
        return VariantStep(
            denormalise_actions(spec, tick.chunk), tick.executed_layers, tick.layer_evaluations, tick.verified, tick
        )


class RouterVariant:
    def __init__(self, policy: Any, threshold: float) -> None:
        self.name = "router"
        self.policy = policy
        self.backend = policy.runner.backend
        self.threshold = threshold
        self.num_layers = int(policy.bundle.dims.num_layers)

    def reset(self, episode_seed: int) -> None:
        pass  # stateless

    def step(self, obs: Any, execute: slice) -> VariantStep:
        from dysl_ros.model.spec import denormalise_actions, preprocess

        spec = self.policy.spec
        chunk, trace = run_router_path(
            self.backend, preprocess(spec, obs), self.threshold, num_layers=self.num_layers
        )
        executed = len(trace.executed_layers)
        return VariantStep(denormalise_actions(spec, chunk), executed, executed, False, None)


class RandomDropVariant:
    """The paper's untrained random skip: embed, then each layer in order; a layer in ``always``
    runs, any other when a seeded coin (probability ``keep``) says so, else x passes it unchanged;
    then the head. random_drop: ``always`` = the plan's static layers; random_layers: none."""

    def __init__(self, name: str, policy: Any, plan: LayerPlan, keep: float, always: Sequence[int]) -> None:
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"keep probability must lie in [0, 1], got {keep}")
        self.name = name
        self.policy = policy
        self.backend = policy.runner.backend
        self.static = frozenset(always)
        self.keep = keep
        self.num_layers = plan.num_layers
        self.rng = np.random.default_rng(0)

    def reset(self, episode_seed: int) -> None:
        self.rng = np.random.default_rng(episode_seed)

    def step(self, obs: Any, execute: slice) -> VariantStep:
        from dysl_ros.model.spec import denormalise_actions, preprocess

        spec = self.policy.spec
        x = self.backend.embed(preprocess(spec, obs))
        executed = 0
        for layer in range(self.num_layers):
            if layer in self.static or self.rng.random() < self.keep:
                x = self.backend.run_layers(layer, layer + 1, x)
                executed += 1
        chunk = self.backend.head(x)
        return VariantStep(denormalise_actions(spec, chunk), executed, executed, False, None)


_OVERRIDE = "Every variant's, for sweeps."


@dataclass(frozen=True)
class LoadSettings:
    """How the benchmarks load and shape the variants, declared once: the closed-loop and the
    offline benchmark derive their flags from these fields (``dysl_ros.bench.common``)."""

    model_dir: str = param("models/reference", "Model directory.", text)
    backend: str = param("torch", "Backend the variants run on.", one_of(("torch", "onnxruntime")))
    modules_dir: str | None = param(
        None,
        "DySL modules for dysl, no_pre_skip, no_post_verify, random_skip and oracle_exit (another lambda's "
        "`dysl_train distill --modules-out`; default: the model dir's).",
        optional(text),
    )
    random_target_layers: float | None = param(
        None,
        "random_skip's, random_drop's and random_layers' expected executed layers per tick (default: dysl's "
        "measured mean in this run).",
        optional(non_negative),
    )
    router_threshold: float | None = param(
        None, "router skips a layer when p >= this (default: the router's dysl.json skip_threshold).",
        optional(number_in(0, 1, open_low=True)),
    )
    oracle_tolerance: float | None = same_as(
        ExitRule, "tolerance", note="oracle_exit skips from the first dynamic layer whose jump lands within it "
        "(no default: oracle_exit needs it)."
    )
    oracle_measure: str = same_as(ExitRule, "measure")
    oracle_actions: int | None = param(
        None,
        "oracle_exit compares only the chunk's first N actions (e.g. the --execute-steps the arm runs; default: "
        "the whole chunk).",
        optional(integer_at_least(1)),
    )
    deer_threshold: float | None = param(
        None,
        "deer_exit (DeeR-VLA-style early exit) leaves a gap at the first exit whose chunk lies within this mean "
        "|difference| of the previous exit's; choose it on the validation seed for matched layers.",
        optional(non_negative),
    )
    eta: float | None = same_as(DySLConfig, "eta", default=None, note=_OVERRIDE)
    eta_verify: float | None = same_as(DySLConfig, "eta_verify", default=None, note=_OVERRIDE)
    skip_threshold: float | None = same_as(DySLConfig, "skip_threshold", default=None, note=_OVERRIDE)

    def dysl_overrides(self) -> dict[str, float]:
        given = {"eta": self.eta, "eta_verify": self.eta_verify, "skip_threshold": self.skip_threshold}
        return {key: value for key, value in given.items() if value is not None}


class VariantLoader:
    """Loads variants on demand, sharing one loaded policy (backbone + backend) per modules dir."""

    def __init__(self, settings: LoadSettings) -> None:
        self.settings = settings
        self._policies: dict[str | None, Any] = {}
        self._variants: dict[str, VariantPolicy] = {}

    def base_policy(self, modules_dir: Path | None) -> Any:
        key = None if modules_dir is None else str(modules_dir)
        if key not in self._policies:
            from dysl_ros.policy import PolicyOptions, load_policy

            s = self.settings
            bundle_dense = modules_dir is None and not _has_main_modules(s.model_dir)
            options = PolicyOptions(backend=s.backend, num_threads=1, modules_dir=modules_dir, dense=bundle_dense)
            self._policies[key] = load_policy(s.model_dir, options)
        return self._policies[key]

    def get(self, variant: str, coin: float | None = None) -> VariantPolicy:
        """The variant, loaded once (the random variants: once per ``coin``, see coin_probability)."""
        key = variant if variant not in RANDOM_VARIANTS else f"{variant}:{coin}"
        if key not in self._variants:
            self._variants[key] = self._load(variant, coin)
        return self._variants[key]

    def _load(self, variant: str, coin_p: float | None) -> VariantPolicy:
        s = self.settings
        modules_dir = variant_modules_dir(s.model_dir, variant, s.modules_dir)
        policy = self.base_policy(modules_dir)
        backend = policy.runner.backend
        settings: DySLConfig = dataclasses.replace(policy.bundle.dysl_config or DySLConfig(), **s.dysl_overrides())
        plan: LayerPlan = policy.plan
        if variant == "router":
            threshold = settings.skip_threshold if s.router_threshold is None else s.router_threshold
            return RouterVariant(policy, threshold)
        if variant == "dense":
            return RunnerVariant(variant, policy, DySLRunner(backend, plan, settings, dense=True))
        if variant in RANDOM_VARIANTS and coin_p is None:
            raise ConfigError(f"{variant} needs its coin's probability (solved from a target of executed layers)")
        if variant in ("random_drop", "random_layers"):
            assert coin_p is not None
            always = plan.static_layers if variant == "random_drop" else ()
            return RandomDropVariant(variant, policy, plan, coin_p, always)
        if not policy.bundle.has_dysl:
            raise ConfigError(f"variant {variant} needs DySL modules in {s.model_dir} (run `dysl_train distill`)")
        if variant == "oracle_exit":
            if s.oracle_tolerance is None:
                raise ConfigError("oracle_exit needs --oracle-tolerance (mean |chunk - dense chunk| it accepts)")
            oracle: OracleExitBackend[Any] = OracleExitBackend(
                backend, plan, s.oracle_tolerance, s.oracle_actions, s.oracle_measure
            )
            config = dataclasses.replace(settings, enable_pre_skip=False, enable_post_verify=False)
            return RunnerVariant(variant, policy, DySLRunner(oracle, plan, config))
        if variant == "deer_exit":
            if s.deer_threshold is None:
                raise ConfigError("deer_exit needs --deer-threshold (mean |chunk - previous exit's chunk| it accepts)")
            deer: DeerExitBackend[Any] = DeerExitBackend(backend, plan, s.deer_threshold)
            config = dataclasses.replace(settings, enable_pre_skip=False, enable_post_verify=False)
            return RunnerVariant(variant, policy, DySLRunner(deer, plan, config))
        if variant == "random_skip":
            assert coin_p is not None
            coin: CoinBackend[Any] = CoinBackend(backend, coin_p)
            config = dataclasses.replace(settings, enable_pre_skip=False, enable_post_verify=False)
            return RunnerVariant(variant, policy, DySLRunner(coin, plan, config), coin)
        overrides = {"no_pre_skip": {"enable_pre_skip": False}, "no_post_verify": {"enable_post_verify": False}}
        config = dataclasses.replace(settings, **overrides.get(variant, {}))
        return RunnerVariant(variant, policy, DySLRunner(backend, plan, config))


def _has_main_modules(model_dir: str | Path) -> bool:
    from dysl_ros.model.checkpoint import MODULES_FILE, PLAN_FILE

    return (Path(model_dir) / PLAN_FILE).is_file() and (Path(model_dir) / MODULES_FILE).is_file()


def main_plan(model_dir: str | Path) -> LayerPlan | None:
    """The model dir's own layer plan (read without loading the model), or None."""
    from dysl_ros.model.checkpoint import PLAN_FILE

    file = Path(model_dir) / PLAN_FILE
    return LayerPlan.load(file) if file.is_file() else None
