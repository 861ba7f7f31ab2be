"""Joint limits of the command joints: from the robot description (URDF) and ros2_control's
``joint_limits.<joint>.*`` parameter convention, the parameters overriding. No ROS here: the node
reads the parameters and the ``robot_description`` and hands them in.

    URDF   <joint name="j1" type="revolute"> <limit lower="-2.9" upper="2.9" velocity="1.7" effort="87"/>
    params joint_limits.j1.has_acceleration_limits: true
           joint_limits.j1.max_acceleration: 5.0

ros2_control's rules: a parameter set overrides what the URDF says, ``has_<kind>_limits: false``
removes that limit, ``continuous`` joints have no position limits. The URDF carries position and
velocity limits only; acceleration (and jerk) come from the parameters. dysl_ros needs a velocity and
an acceleration limit on every command joint (stops ramp down at the acceleration limit), and
position limits on every joint that is not continuous: a joint without them is refused at configure,
by name, with the ways to give them.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dysl_ros.core.config import ConfigError

FIELDS = (
    "has_position_limits",
    "min_position",
    "max_position",
    "has_velocity_limits",
    "max_velocity",
    "has_acceleration_limits",
    "max_acceleration",
    "has_jerk_limits",
    "max_jerk",
)
"""ros2_control's ``joint_limits.<joint>.<field>`` parameters that dysl_ros reads."""
PREFIX = "joint_limits"
HOW_TO_GIVE = (
    "give them in the URDF (robot_description parameter or the /robot_description topic: "
    '<limit lower=".." upper=".." velocity=".."/>) and as parameters '
    "joint_limits.<joint>.{has_acceleration_limits: true, max_acceleration: ..} (also has_velocity_limits / "
    "max_velocity, has_position_limits / min_position / max_position, has_jerk_limits / max_jerk)"
)


@dataclass(frozen=True)
class JointLimits:
    """Per command joint, in the controller's order; +-inf where a joint has no such limit."""

    joints: tuple[str, ...]
    min_position: npt.NDArray[np.float64]
    max_position: npt.NDArray[np.float64]
    max_velocity: npt.NDArray[np.float64]
    max_acceleration: npt.NDArray[np.float64]
    max_jerk: npt.NDArray[np.float64]
    """inf where no jerk limit is given."""

    @property
    def has_jerk(self) -> bool:
        return bool(np.all(np.isfinite(self.max_jerk)))

    def describe(self) -> str:
        rows = []
        for i, joint in enumerate(self.joints):
            position = (
                f"[{self.min_position[i]:.4g}, {self.max_position[i]:.4g}]"
                if np.isfinite(self.min_position[i]) else "continuous"
            )
            jerk = f", jerk {self.max_jerk[i]:.4g}" if np.isfinite(self.max_jerk[i]) else ""
            rows.append(
                f"{joint}: position {position}, velocity {self.max_velocity[i]:.4g}, "
                f"acceleration {self.max_acceleration[i]:.4g}{jerk}"
            )
        return "; ".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (picklable, JSON-able) for the stream process."""
        return {
            "joints": list(self.joints),
            **{
                key: getattr(self, key).tolist()
                for key in ("min_position", "max_position", "max_velocity", "max_acceleration", "max_jerk")
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JointLimits:
        return cls(
            tuple(data["joints"]),
            *(
                np.asarray(data[key], dtype=np.float64)
                for key in ("min_position", "max_position", "max_velocity", "max_acceleration", "max_jerk")
            ),
        )


@dataclass
class _Partial:
    """What one source says about a joint; None where it says nothing."""

    continuous: bool = False
    min_position: float | None = None
    max_position: float | None = None
    max_velocity: float | None = None
    max_acceleration: float | None = None
    max_jerk: float | None = None


def urdf_limits(urdf: str) -> dict[str, _Partial]:
    """Every non-fixed joint of a URDF with what its ``<limit>`` says. Malformed XML names the line;
    a revolute or prismatic joint without ``<limit>`` (the URDF spec requires one) names the joint."""
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as exc:
        line, column = exc.position
        raise ConfigError(f"robot_description is not valid XML: {exc.msg if hasattr(exc, 'msg') else exc} "
                          f"(line {line}, column {column})") from None
    if root.tag != "robot":
        raise ConfigError(f"robot_description: the root element is <{root.tag}>, a URDF's is <robot>")
    joints: dict[str, _Partial] = {}
    for joint in root.iter("joint"):
        name, kind = joint.get("name"), joint.get("type")
        if not name:
            raise ConfigError("robot_description: a <joint> without a name")
        if kind in ("fixed", "floating", "planar"):
            continue
        limit = joint.find("limit")
        if kind in ("revolute", "prismatic") and limit is None:
            raise ConfigError(f"robot_description: {kind} joint {name!r} has no <limit> (the URDF spec requires one)")
        partial = _Partial(continuous=kind == "continuous")
        if limit is not None:
            if not partial.continuous:
                partial.min_position = _attribute(limit, "lower", name, 0.0)
                partial.max_position = _attribute(limit, "upper", name, 0.0)
            velocity = _attribute(limit, "velocity", name, None)
            partial.max_velocity = velocity if velocity is not None and velocity > 0 else None
        joints[name] = partial
    return joints


def _attribute(element: ET.Element, key: str, joint: str, default: float | None) -> float | None:
    text = element.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"robot_description: joint {joint!r} <limit {key}={text!r}> is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"robot_description: joint {joint!r} <limit {key}={text!r}> is not finite")
    return value


def parameter_names(joints: Sequence[str]) -> list[str]:
    """The ``joint_limits.<joint>.<field>`` parameters the node declares for its command joints."""
    return [f"{PREFIX}.{joint}.{name}" for joint in joints for name in FIELDS]


def resolve(
    joints: Sequence[str], urdf: str, parameters: Mapping[str, Any]
) -> JointLimits:
    """The limits of ``joints`` (the controller's, in its order) from the URDF (may be "") and the
    ``joint_limits.*`` parameters given (name -> value; None or absent: not given). Raises ConfigError
    listing every problem: a joint missing from the URDF, a bad parameter, a limit missing."""
    from_urdf = urdf_limits(urdf) if urdf.strip() else {}
    problems: list[str] = []
    if from_urdf:
        missing = [j for j in joints if j not in from_urdf]
        if missing:
            problems.append(
                f"robot_description has no joint {', '.join(map(repr, missing))} "
                f"(its movable joints: {', '.join(from_urdf) or 'none'})"
            )
    rows: dict[str, list[float]] = {k: [] for k in ("lo", "hi", "v", "a", "j")}
    for joint in joints:
        partial = from_urdf.get(joint, _Partial())
        given = {name: parameters.get(f"{PREFIX}.{joint}.{name}") for name in FIELDS}
        bad = _apply_parameters(joint, partial, given)
        problems += bad
        needed = []
        if not partial.continuous and (partial.min_position is None or partial.max_position is None):
            needed.append("position")
        if partial.max_velocity is None:
            needed.append("velocity")
        if partial.max_acceleration is None:
            needed.append("acceleration")
        if needed and not bad:
            problems.append(f"joint {joint!r} has no {' or '.join(needed)} limit")
        if (
            partial.min_position is not None and partial.max_position is not None
            and partial.min_position >= partial.max_position
        ):
            problems.append(f"joint {joint!r}: min_position {partial.min_position} is not below {partial.max_position}")
        rows["lo"].append(-math.inf if partial.min_position is None else partial.min_position)
        rows["hi"].append(math.inf if partial.max_position is None else partial.max_position)
        rows["v"].append(math.nan if partial.max_velocity is None else partial.max_velocity)
        rows["a"].append(math.nan if partial.max_acceleration is None else partial.max_acceleration)
        rows["j"].append(math.inf if partial.max_jerk is None else partial.max_jerk)
    if problems:
        listed = "\n  - ".join(problems)
        raise ConfigError(f"joint limits of the command joints:\n  - {listed}\n  Limits are required: {HOW_TO_GIVE}")
    return JointLimits(tuple(joints), *(np.asarray(rows[k], dtype=np.float64) for k in ("lo", "hi", "v", "a", "j")))


def _apply_parameters(joint: str, partial: _Partial, given: Mapping[str, Any]) -> list[str]:
    """ros2_control's override rules, in place; the problems with the values given."""
    problems: list[str] = []

    def flag(name: str) -> bool | None:
        value = given.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            problems.append(f"{PREFIX}.{joint}.{name} must be true or false, got {value!r}")
            return None
        return value

    def number(name: str, positive: bool) -> float | None:
        value = given.get(name)
        if value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
        if not ok or (positive and float(value) <= 0):
            kind = "positive finite" if positive else "finite"
            problems.append(f"{PREFIX}.{joint}.{name} must be a {kind} number, got {value!r}")
            return None
        return float(value)

    has_position = flag("has_position_limits")
    low, high = number("min_position", False), number("max_position", False)
    if has_position is False:
        partial.min_position = partial.max_position = None
        partial.continuous = True
    elif has_position or low is not None or high is not None:
        if low is not None:
            partial.min_position = low
        if high is not None:
            partial.max_position = high
        partial.continuous = False
    for kind in ("velocity", "acceleration", "jerk"):
        has = flag(f"has_{kind}_limits")
        value = number(f"max_{kind}", positive=True)
        if has is False:
            setattr(partial, f"max_{kind}", None)
        elif value is not None:
            setattr(partial, f"max_{kind}", value)
        elif has:
            problems.append(f"{PREFIX}.{joint}.has_{kind}_limits is true but max_{kind} is not given")
    return problems
