"""Settings declared once, as dataclass fields: name, type, default, description and checks.

A settings class (dysl_node's ``NodeParams``, sim_bridge's ``BridgeParams``, the DySL knobs
``DySLConfig``, a training stage's settings) is a frozen dataclass whose every field is made by
``param``. Everything else derives from it: the ROS declarations (``declared``), the validation that
names each bad value (``read_values`` runs every field's checks and collects all problems;
``problems`` does the same for an instance), the typed instance (``convert``), command-line flags
(``add_flags``, ``from_flags``), a field of another class that means the same setting
(``same_as``), and the tests that hold ``config/*.yaml`` and ``docs/node.md`` to the same list.
No ROS and no torch here: the nodes declare, the tools parse.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Collection, Mapping, Sequence

Check = Callable[[str, Any], "str | None"]
"""(name, value) -> what is wrong with the value, or None when it is fine."""


def param(
    default: Any, description: str, *checks: Check, flag: str | None = None, parse: Callable[[str], Any] | None = None
) -> Any:
    """A settings field: its default (``MISSING``: required), the description ROS and ``--help`` show,
    and the checks its value must pass. ``flag``: its command-line name when not ``--<name-with-dashes>``;
    ``parse``: how its flag's text becomes a value when the field's type does not say (argparse ``type``)."""
    metadata = {"description": description, "checks": checks, "flag": flag, "parse": parse}
    return field(default=default, metadata=metadata)


def same_as(
    params_class: type, name: str, *, default: Any = MISSING, note: str = "", or_zero: bool = False
) -> Any:
    """A field that is the setting ``params_class.name`` declares, on another surface: its description
    (plus ``note``) and its checks; another ``default`` where given (None: the setting may be left
    unset, e.g. "keep the model's value"); ``or_zero``: 0 passes as well (a parameter whose 0 leaves
    the setting to a file, e.g. the model's dysl.json)."""
    source = _field(params_class, name)
    checks: tuple[Check, ...] = tuple(source.metadata["checks"])
    if or_zero:
        checks = (zero_or(*checks),)
    elif default is None:
        checks = (optional(*checks),)
    description = f"{source.metadata['description']} {note}".strip()
    return param(source.default if default is MISSING else default, description, *checks)


def _field(params_class: type, name: str) -> dataclasses.Field[Any]:
    for f in fields(params_class):
        if f.name == name:
            return f
    raise KeyError(f"{params_class.__name__} declares no setting {name!r}")


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


def problems(settings: Any) -> list[str]:
    """What every check of a settings instance's fields finds wrong (empty: all fine), one per field."""
    found = []
    for f in fields(settings):
        problem = _first_problem(f, f.name, getattr(settings, f.name))
        if problem is not None:
            found.append(problem)
    return found


def _first_problem(f: dataclasses.Field[Any], name: str, value: Any) -> str | None:
    for check in f.metadata.get("checks", ()):
        problem = check(name, value)
        if problem is not None:
            return problem  # the first check that fails says the most
    return None


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
        problem = _first_problem(f, f.name, merged[f.name])
        if problem is not None:
            problems.append(problem)
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


# ---------------------------------------------------------------------------------------- command line


def flag_name(params_class: type, name: str) -> str:
    """The command-line flag of setting ``name``: ``--name-with-dashes`` unless declared otherwise."""
    return str(_field(params_class, name).metadata.get("flag") or "--" + name.replace("_", "-"))


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    params_class: type,
    names: Sequence[str] | None = None,
    *,
    skip: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
    default_help: Mapping[str, str] | None = None,
) -> None:
    """A flag per field of ``params_class`` (``names``: those, in that order; ``skip``: not those), its
    type, choices, help and default taken from the field. ``defaults`` replaces a flag's default
    (e.g. None: "leave the file's value"); ``default_help`` says what such a default means. A field
    without a default is a required flag; a bool flag sets True (``--no-<name>`` clears a True default).
    The values are checked by ``check_flags`` or by the settings class itself (``from_flags``)."""
    hints = typing.get_type_hints(params_class)
    chosen = [f for f in fields(params_class) if "description" in f.metadata and f.name not in skip]
    if names is not None:
        by_name = {f.name: f for f in chosen}
        chosen = [by_name[n] for n in names]
    for f in chosen:
        default = (defaults or {}).get(f.name, f.default)
        kind = _scalar(hints[f.name])
        said = (default_help or {}).get(f.name) or ("" if _unsaid(default) else _shown(default))
        help_text = str(f.metadata["description"]) + (f" (default: {said})" if said else "")
        options: dict[str, Any] = {"dest": f.name, "help": help_text.replace("%", "%%")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        elif typing.get_origin(kind) is tuple:  # repeatable: each use adds one item
            options.update(action="append", type=typing.get_args(kind)[0], default=None)
        else:
            options["type"] = f.metadata.get("parse") or kind
            choices = [getattr(c, "choices", None) for c in f.metadata.get("checks", ())]
            options["choices"] = next((c for c in choices if c is not None), None)
            options["metavar"] = "{" + ",".join(options["choices"]) + "}" if options["choices"] else None
        if default is MISSING:
            options["required"] = True
        elif "default" not in options:
            options["default"] = default
        parser.add_argument(flag_name(params_class, f.name), **options)


def _unsaid(default: Any) -> bool:
    """A default ``--help`` leaves out: none, off, or an empty list."""
    return default is MISSING or default is None or default is False or default == ()


def _shown(default: Any) -> str:
    return ",".join(str(v) for v in default) if isinstance(default, tuple) else str(default)


def _scalar(hint: Any) -> Any:
    """int, float, str or bool of a field's type (``X | None``: X)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, _UNION_TYPE) and len(args) == 1 else hint


_UNION_TYPE = type(int | None)


def check_flags(params_class: type, args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """Problems of flags given for ``params_class``'s settings ``names`` (None: not given, fine),
    each named by its flag."""
    found = []
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            problem = _first_problem(_field(params_class, name), flag_name(params_class, name), value)
            if problem is not None:
                found.append(problem)
    return found


def from_flags(params_class: type, args: argparse.Namespace, **values: Any) -> Any:
    """An instance of ``params_class`` from the parsed flags of its fields (those ``args`` has; a
    repeatable flag never given keeps the default) and ``values``; the class checks itself
    (``__post_init__``)."""
    hints = typing.get_type_hints(params_class)
    given = {}
    for f in fields(params_class):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if typing.get_origin(_scalar(hints[f.name])) is tuple:
            if value is None:
                continue
            value = tuple(value)
        given[f.name] = value
    return params_class(**{**given, **values})


# ---------------------------------------------------------------------------------------------- checks


def is_number(x: object) -> bool:
    """A finite int or float parameter value (bool excluded: ROS would accept True as 1)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_positive(x: object) -> bool:
    return is_number(x) and float(x) > 0.0  # type: ignore[arg-type]


def is_integer(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class one_of:  # noqa: N801 - a check, named as the other checks are
    """v is one of ``choices`` (which a command-line flag offers as its choices)."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def __call__(self, name: str, v: Any) -> str | None:
        return None if v in self.choices else f"{name} must be one of {self.choices}, got {v!r}"


def optional(*checks: Check) -> Check:
    """None, or a value that passes ``checks``."""

    def check(name: str, v: Any) -> str | None:
        return None if v is None else next((p for p in (c(name, v) for c in checks) if p is not None), None)

    return check


def zero_or(*checks: Check) -> Check:
    """0 (a parameter's "not set": the setting comes from elsewhere), or a value that passes ``checks``."""

    def check(name: str, v: Any) -> str | None:
        if is_number(v) and v == 0:
            return None
        return next((p for p in (c(name, v) for c in checks) if p is not None), None)

    return check


def boolean(name: str, v: Any) -> str | None:
    return None if isinstance(v, bool) else f"{name} must be true or false, got {v!r}"


def positive(name: str, v: Any) -> str | None:
    return None if is_positive(v) else f"{name} must be a finite number > 0, got {v!r}"


def non_negative(name: str, v: Any) -> str | None:
    return None if is_number(v) and float(v) >= 0.0 else f"{name} must be a finite number >= 0, got {v!r}"


def number(name: str, v: Any) -> str | None:
    return None if is_number(v) else f"{name} must be a finite number, got {v!r}"


def number_in(low: float, high: float, *, open_low: bool = False, open_high: bool = False, unit: str = "") -> Check:
    """low <= v <= high (``open_low``: low < v; ``open_high``: v < high), e.g. "must lie in (0, 1000]"."""
    span = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def check(name: str, v: Any) -> str | None:
        ok = (is_number(v) and (float(v) > low if open_low else float(v) >= low)
              and (float(v) < high if open_high else float(v) <= high))
        return None if ok else f"{name} must lie in {span}{unit}, got {v!r}"

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


def chosen(
    spec: str | Sequence[str], known: Sequence[str], what: str, everything: Sequence[str] | None = None
) -> list[str]:
    """``"all"`` (or nothing) or comma-separated names (or a list of such) -> those names in ``known``'s
    order; "all" means ``everything`` (default: all of ``known``). An unknown name is a ValueError
    naming the ``what``."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    wanted = [name.strip() for part in parts for name in part.split(",") if name.strip()]
    if not wanted or wanted == ["all"]:
        return list(known if everything is None else everything)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}: choose from 'all' or {', '.join(known)}")
    return [name for name in known if name in wanted]
