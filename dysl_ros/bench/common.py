"""What the benchmarks share: the flags that shape the variants and the outputs, their checks, the
random variants' coins, the report's settings and files, and how a command reports a usage error.

No torch at import (as ``variants``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import numpy as np

from dysl_ros.backends.errors import EngineError
from dysl_ros.bench.variants import (
    COINS,
    RANDOM_VARIANTS,
    LoadSettings,
    coin_probability,
    main_plan,
    variant_modules_dir,
)
from dysl_ros.core.config import ConfigError
from dysl_ros.core.layer_plan import LayerPlan
from dysl_ros.model.model_dir import ModelDirError
from dysl_ros.params import add_flags, check_flags, from_flags

DYSL_OVERRIDES = ("eta", "eta_verify", "skip_threshold")
"""DySL settings a benchmark may override in every variant (sweeps); declared by ``DySLConfig``."""


def add_variant_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that load and shape the variants (``LoadSettings``' fields)."""
    add_flags(parser, LoadSettings, default_help=dict.fromkeys(DYSL_OVERRIDES, "each variant's dysl.json"))


def add_output_arguments(parser: argparse.ArgumentParser, plot_help: str) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object, last line")
    parser.add_argument("--markdown", metavar="FILE", help="write the results table (markdown) to FILE")
    parser.add_argument("--plot", metavar="FILE", help=plot_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_settings(args: argparse.Namespace) -> LoadSettings:
    """The variants' settings from the flags, each checked and named by its flag (a ConfigError)."""
    found = check_flags(LoadSettings, args, [f.name for f in fields(LoadSettings)])
    if found:
        raise ConfigError("; ".join(found))
    return cast(LoadSettings, from_flags(LoadSettings, args))


def plan_variants(args: argparse.Namespace, variants: Sequence[str], model_dir: Path, load: LoadSettings) -> Coins:
    """Every problem of the variant flags that shows before a model is loaded, as a ConfigError; the
    random variants' coins (and the layer plan they follow) otherwise."""
    if "oracle_exit" in variants and not (args.oracle_tolerance is not None and args.oracle_tolerance >= 0):
        raise ConfigError(f"oracle_exit needs --oracle-tolerance >= 0, got {args.oracle_tolerance}")
    if "deer_exit" in variants and not (args.deer_threshold is not None and args.deer_threshold >= 0):
        raise ConfigError(f"deer_exit needs --deer-threshold >= 0, got {args.deer_threshold}")
    target = args.random_target_layers
    plan = main_plan(model_dir if load.modules_dir is None else load.modules_dir)
    randoms = [v for v in variants if v in RANDOM_VARIANTS]
    if randoms:
        if plan is None:
            raise ConfigError(
                f"{', '.join(randoms)} need(s) the layer plan of {model_dir} (run `dysl_train calibrate`)"
            )
        if target is None and "dysl" not in variants:
            raise ConfigError(f"{', '.join(randoms)} match(es) dysl's executed layers: add dysl to --variants "
                              "or give --random-target-layers")
    for variant in variants:
        where = variant_modules_dir(model_dir, variant, load.modules_dir)
        if where is not None and not where.is_dir():
            raise ConfigError(
                f"variant {variant} needs its modules in {where} (see scripts/train_reference.sh: "
                f"`dysl_train {'router' if variant == 'router' else 'distill'} ... --modules-out {where}`)"
            )
    return Coins.of(variants, plan, target)


def check_chunk_arguments(args: argparse.Namespace, chunk_len: int) -> None:
    """The flags that must fit the model's chunk, known once its config is read."""
    if args.execute_steps > chunk_len:
        raise ConfigError(f"--execute-steps {args.execute_steps} exceeds the model's chunk of {chunk_len}")
    if args.oracle_actions is not None and not 1 <= args.oracle_actions <= chunk_len:
        raise ConfigError(f"--oracle-actions must lie in 1..{chunk_len} (the chunk), got {args.oracle_actions}")


@dataclass
class Coins:
    """The random variants' coins: solved up front for ``--random-target-layers``, or, without it,
    after the first phase for dysl's mean executed layers of the same run (``solve_later``)."""

    plan: LayerPlan | None
    randoms: list[str]
    first: list[str]
    """The variants of the first phase; the rest (``later``) run once their coins are solved."""
    later: list[str]
    target: float
    target_from: str = "--random-target-layers"
    coins: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, variants: Sequence[str], plan: LayerPlan | None, target_layers: float | None) -> Coins:
        randoms = [v for v in variants if v in RANDOM_VARIANTS]
        given = target_layers is not None
        first = [v for v in variants if v not in RANDOM_VARIANTS or given]
        target = float("nan") if target_layers is None else float(target_layers)
        coins = cls(plan, randoms, first, [] if given else randoms, target)
        if given and randoms:
            coins.coins = {v: coin_probability(v, coins._plan(), coins.target) for v in randoms}
        return coins

    def solve_later(self, dysl_executed: Sequence[int]) -> dict[str, float]:
        """The later phase's coins, for dysl's mean executed layers of the first phase."""
        self.target = float(np.mean(dysl_executed))
        self.target_from = "dysl's mean executed layers in this run"
        self.coins = {v: coin_probability(v, self._plan(), self.target) for v in self.later}
        return self.coins

    def _plan(self) -> LayerPlan:
        assert self.plan is not None, "check_variant_arguments refuses random variants without a plan"
        return self.plan


def variant_settings(report: dict[str, Any], args: argparse.Namespace, variants: Sequence[str], coins: Coins) -> None:
    """Into ``report``: the settings of the diagnostic variants that ran, and each random variant's coin."""
    if "deer_exit" in variants:
        report["deer_threshold"] = args.deer_threshold
    if "oracle_exit" in variants:
        report["oracle_tolerance"] = args.oracle_tolerance
        report["oracle_actions"] = args.oracle_actions
        report["oracle_measure"] = args.oracle_measure
    if coins.randoms:
        report["random_target"] = {"target_layers": coins.target, "target_from": coins.target_from}
        for name in coins.randoms:
            figures = report["variants"][name]
            figures["coin_probability"] = figures[COINS[name].field] = coins.coins[name]
            figures["target_layers"] = coins.target


def layer_cells(figures: Mapping[str, Any]) -> str:
    """A results table's last five cells of one variant: executed layers (mean, p99), executed
    fraction, verification rate, ticks."""
    v = figures
    return (f"{v['mean_executed_layers']:.2f} | {v['p99_executed_layers']:.0f} | {v['executed_fraction']:.1%} | "
            f"{v['verification_rate']:.1%} | {v['ticks']} |")


def model_note(report: Mapping[str, Any]) -> str:
    """What ran: "model `DIR` (N layers, hash H); backend B on MACHINE"."""
    return (f"model `{report['model_dir']}` ({report['num_layers']} layers, hash {str(report['model_hash'])[:12]}); "
            f"backend {report['backend']} on {report['machine']}")


def coin_and_oracle_notes(report: Mapping[str, Any]) -> list[str]:
    """The report's sentences on what the random variants' coins were solved for and on oracle_exit's
    tolerance."""
    notes = []
    random = report.get("random_target")
    if random is not None:
        solved = "; ".join(
            f"{name}: {COINS[name].meaning} {report['variants'][name]['coin_probability']:.4f}"
            for name in RANDOM_VARIANTS if name in report["variants"]
        )
        notes.append(f"{solved}; solved for {random['target_layers']:.2f} expected executed layers "
                     f"({random['target_from']}).")
    if "oracle_exit" in report["variants"]:
        measure = report.get("oracle_measure", "absolute")
        measured = ("mean absolute difference of the normalised actions over the dense chunk's mean |action|"
                    if measure == "relative" else "mean absolute difference, normalised actions")
        actions = report.get("oracle_actions")
        compared = "over the whole chunk" if actions is None else f"over its first {actions} actions"
        notes.append(f"oracle_exit is a bound, not a policy: each tick it runs the dense pass and takes the "
                     f"shallowest exit whose chunk lies within {report['oracle_tolerance']} ({measured}, "
                     f"{compared}) of the dense chunk.")
    return notes


def write_outputs(
    args: argparse.Namespace, report: Mapping[str, Any], markdown: str, table: str, summary: str,
    plot: Callable[[Mapping[str, Any], Path], None],
) -> None:
    """The report's files (``--markdown``, ``--plot``), its table and summary line, and ``--json`` last."""
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown)
    if args.plot:
        plot(report, Path(args.plot))
    print(table)
    print(summary)
    if args.json:
        print(json.dumps(report))


USAGE_ERRORS: tuple[type[Exception], ...] = (ConfigError, ValueError, FileNotFoundError, EngineError, ModelDirError)
"""What a user mends (a flag, a model or engine directory, a dataset): a message and exit status 2."""


def exit_status(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                usage: tuple[type[Exception], ...] = USAGE_ERRORS) -> int:
    """``run(args)``'s exit status; an error of ``usage`` is printed as ``prog: error: ...`` and ends
    with status 2 rather than a traceback."""
    try:
        return run(args)
    except usage as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def save_figure(fig: Any, file: Path, dpi: int = 120) -> None:
    """Lay out, write (making its folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=dpi)
    plt.close(fig)
