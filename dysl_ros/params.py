"""Parameters declared once, as dataclass fields: name, type, default, description and checks.

A parameter set (dysl_node's ``NodeParams``, sim_bridge's ``BridgeParams``) is a frozen dataclass
whose every field is made by ``param``. Everything else derives from it: the ROS declarations
(``declared``), the validation that names each bad value (``read_values`` runs every field's
checks and collects all problems), the typed instance (``convert``), and the tests that hold
``config/*.yaml`` and ``docs/node.md`` to the same list. No ROS here: the nodes declare.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

Check = Callable[[str, Any], "str | None"]
"""(name, value) -> what is wrong with the value, or None when it is fine."""


def param(default: Any, description: str, *checks: Check) -> Any:
    """A parameter field: its default, the description ROS shows, and the checks its value must pass."""
    return field(default=default, metadata={"description": description, "checks": checks})


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    """As ROS declares it: tuples become lists (ROS infers the array type from the default)."""
    description: str


def declared(params_class: type) -> tuple[ParamSpec, ...]:
    """Every parameter of ``params_class``, in declaration order."""
    return tuple(
        ParamSpec(f.name, ros_value(f.default), str(f.metadata["description"]))
        for f in fields(params_class)
        if "description" in f.metadata
    )


def ros_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def read_values(
    params_class: type, values: Mapping[str, Any], *, allow_unknown: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """Each declared parameter's value (``values``' or its default) and every problem its checks find."""
    specs = declared(params_class)
    problems = [] if allow_unknown else [f"unknown parameter {n!r}" for n in sorted(set(values) - _names(specs))]
    merged = {spec.name: values.get(spec.name, spec.default) for spec in specs}
    for f in fields(params_class):
        for check in f.metadata.get("checks", ()):
            problem = check(f.name, merged[f.name])
            if problem is not None:
                problems.append(problem)
                break  # one message per parameter: the first check that fails says the most
    return merged, problems


def convert(params_class: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Validated values in the fields' types (ints given for floats, lists for tuples)."""
    hints = typing.get_type_hints(params_class)
    return {name: _as_type(hints[name], value) for name, value in values.items()}


def _as_type(hint: Any, value: Any) -> Any:
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    if typing.get_origin(hint) is tuple:
        (item, *_) = typing.get_args(hint)
        return tuple(_as_type(item, v) for v in value)
    return value


def _names(specs: Sequence[ParamSpec]) -> set[str]:
    return {spec.name for spec in specs}


# ---------------------------------------------------------------------------------------------- checks


def is_number(x: object) -> bool:
    """A finite int or float parameter value (bool excluded: ROS would accept True as 1)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_positive(x: object) -> bool:
    return is_number(x) and float(x) > 0.0  # type: ignore[arg-type]


def is_integer(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def one_of(choices: Sequence[str]) -> Check:
    options = tuple(choices)
    return lambda name, v: None if v in options else f"{name} must be one of {options}, got {v!r}"


def boolean(name: str, v: Any) -> str | None:
    return None if isinstance(v, bool) else f"{name} must be true or false, got {v!r}"


def positive(name: str, v: Any) -> str | None:
    return None if is_positive(v) else f"{name} must be a finite number > 0, got {v!r}"


def non_negative(name: str, v: Any) -> str | None:
    return None if is_number(v) and float(v) >= 0.0 else f"{name} must be a finite number >= 0, got {v!r}"


def number(name: str, v: Any) -> str | None:
    return None if is_number(v) else f"{name} must be a finite number, got {v!r}"


def number_in(low: float, high: float, *, open_low: bool = False, unit: str = "") -> Check:
    """low <= v <= high (``open_low``: low < v), e.g. "must lie in (0, 1000]"."""
    bracket = "(" if open_low else "["

    def check(name: str, v: Any) -> str | None:
        ok = is_number(v) and (float(v) > low if open_low else float(v) >= low) and float(v) <= high
        return None if ok else f"{name} must lie in {bracket}{low:g}, {high:g}]{unit}, got {v!r}"

    return check


def integer_at_least(low: int, note: str = "") -> Check:
    return lambda name, v: (
        None if is_integer(v) and v >= low else f"{name} must be an integer >= {low}{note}, got {v!r}"
    )


def integer_in(low: int, high: int, text: str = "") -> Check:
    span = text or f"[{low}, {high}]"
    return lambda name, v: (
        None if is_integer(v) and low <= v <= high else f"{name} must be an integer in {span}, got {v!r}"
    )


def numbers(name: str, v: Any) -> str | None:
    """A non-empty list of finite numbers."""
    ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(is_number(x) for x in v)
    return None if ok else f"{name} must be a list of finite numbers, got {v!r}"


def strings(name: str, v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
    return None if ok else f"{name} must be a list of strings, got {v!r}"


def text(name: str, v: Any) -> str | None:
    return None if isinstance(v, str) else f"{name} must be a string, got {v!r}"
