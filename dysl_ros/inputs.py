"""Validation and conversion of the node's inputs, from message fields to model-ready arrays.

No ROS types here: each function takes the fields it checks, so every rejection is unit-testable
and the node only maps a raised ``InputRejected`` to a counter and a throttled log line. Training
decodes its demonstration frames with the same ``decode_image``, so a model sees the same pixels
offline and on the robot.
"""

from __future__ import annotations

import math
import struct
from typing import Sequence

import cv2
import numpy as np
import numpy.typing as npt

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}
MAX_INSTRUCTION_BYTES = 1024


class InputRejected(ValueError):
    """An input the node will not use. ``counter`` names the diagnostics counter it increments."""

    def __init__(self, counter: str, message: str) -> None:
        super().__init__(message)
        self.counter = counter


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | bytearray | memoryview | npt.NDArray[np.uint8] | Sequence[int],
    size: int | tuple[int, int] | None,
    fit: str = "letterbox",
    channels: int = 3,
) -> npt.NDArray[np.uint8]:
    """sensor_msgs/Image fields -> the camera's (H, W, channels) uint8, RGB or mono, fitted to ``size``
    (an int: square; None: the image's own size) by ``fit_image``."""
    source_channels = CHANNELS.get(encoding)
    if source_channels is None:
        raise InputRejected(
            "unknown_encoding", f"image encoding {encoding!r} is not supported; use one of {sorted(CHANNELS)}"
        )
    if width <= 0 or height <= 0:
        raise InputRejected("empty_image", f"image is {width}x{height}: width and height must be > 0")
    if step < width * source_channels:
        raise InputRejected(
            "bad_step", f"image step {step} < width*channels = {width}*{source_channels} for {encoding}"
        )
    try:  # bytes, array.array (rclpy's uint8[]), memoryview: no copy
        buffer = np.frombuffer(data, dtype=np.uint8)  # type: ignore[arg-type]
    except TypeError:
        buffer = np.asarray(data, dtype=np.uint8).reshape(-1)
    if buffer.size != step * height:
        raise InputRejected(
            "bad_data_length", f"image data has {buffer.size} bytes, expected step*height = {step}*{height}"
        )
    pixels = buffer.reshape(height, step)[:, : width * source_channels].reshape(height, width, source_channels)
    rgb = pixels if encoding == "rgb8" else np.asarray(cv2.cvtColor(np.ascontiguousarray(pixels), TO_RGB[encoding]))
    target = (height, width) if size is None else (size, size) if isinstance(size, int) else size
    fitted = fit_image(np.asarray(rgb, dtype=np.uint8), target[0], target[1], fit)
    if channels == 1:
        return np.ascontiguousarray(cv2.cvtColor(fitted, cv2.COLOR_RGB2GRAY)[..., None], dtype=np.uint8)
    return np.ascontiguousarray(fitted, dtype=np.uint8)


def fit_image(rgb: npt.NDArray[np.uint8], height: int, width: int, fit: str) -> npt.NDArray[np.uint8]:
    """An image of any size as the camera's ``height`` x ``width``, never squashed: ``letterbox``
    scales it to fit inside and pads with black, ``center_crop`` scales it to cover and crops the
    centre. OpenCV's area filter when shrinking, bilinear when enlarging."""
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb
    if fit not in ("letterbox", "center_crop"):
        raise ValueError(f"fit must be letterbox or center_crop, got {fit!r}")
    scale = min(height / h, width / w) if fit == "letterbox" else max(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    scaled = cv2.resize(np.ascontiguousarray(rgb), (new_w, new_h), interpolation=interpolation)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    if fit == "letterbox":
        out = np.zeros((height, width, rgb.shape[2]), dtype=np.uint8)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[top : top + new_h, left : left + new_w] = scaled[:height, :width]
        return out
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def decode_compressed_image(
    image_format: str,
    data: bytes | bytearray | memoryview | Sequence[int],
    size: int | tuple[int, int] | None,
    fit: str = "letterbox",
    channels: int = 3,
) -> npt.NDArray[np.uint8]:
    """sensor_msgs/CompressedImage fields (JPEG or PNG, as image_transport's compressed plugin sends
    them) -> the camera's image, fitted as ``decode_image`` fits raw images."""
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)  # type: ignore[arg-type]
    except TypeError:
        buffer = np.asarray(data, dtype=np.uint8).reshape(-1)
    if buffer.size == 0:
        raise InputRejected("empty_image", "compressed image has no data")
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputRejected(
            "bad_compressed_image", f"compressed image ({image_format or 'no format'}) is not a decodable JPEG or PNG"
        )
    pixels = np.asarray(bgr, dtype=np.uint8)  # IMREAD_COLOR gives 8-bit BGR: no copy, here or below
    height, width = pixels.shape[:2]
    return decode_image("bgr8", height, width, width * 3, pixels, size, fit, channels)


VELOCITY_SUFFIX = "/velocity"
"""A ``state_joint_names`` entry ``<joint>/velocity`` reads the joint's ``velocity``, not its ``position``."""


class JointStateReader:
    """The values of the ``wanted`` joints, by name, from JointStates of any joints in any order (extra
    joints ignored): ``<joint>`` is the joint's position, ``<joint>/velocity`` its velocity. Missing or
    non-finite ones are rejected. The name lookup is redone only when a message's names differ from
    the last good one's (a driver sends the same list each time)."""

    def __init__(self, wanted: Sequence[str], what: str = "the model's state") -> None:
        self.wanted, self.what = tuple(wanted), what
        self._joints = [name.removesuffix(VELOCITY_SUFFIX) for name in self.wanted]
        self._is_velocity = np.asarray([name.endswith(VELOCITY_SUFFIX) for name in self.wanted], dtype=bool)
        self._lookup: tuple[list[str], npt.NDArray[np.intp]] = ([], np.zeros(0, dtype=np.intp))
        """(the last good message's names, where the wanted joints stand in them): one attribute, swapped whole."""

    @property
    def needs_velocity(self) -> bool:
        return bool(self._is_velocity.any())

    def read(
        self, names: Sequence[str], position: Sequence[float], velocity: Sequence[float] = ()
    ) -> npt.NDArray[np.float64]:
        if len(names) != len(position):
            raise InputRejected(
                "bad_joint_state", f"joint_states has {len(names)} names but {len(position)} positions"
            )
        if self.needs_velocity and len(velocity) != len(names):
            raise InputRejected(
                "bad_joint_state",
                f"joint_states has {len(velocity)} velocities for {len(names)} names; {self.what} reads velocities",
            )
        known, where = self._lookup
        if list(names) != known:
            index = {name: i for i, name in enumerate(names)}
            missing = sorted({name for name in self._joints if name not in index})
            if missing:
                raise InputRejected("missing_joint", f"joint_states lacks {self.what}'s joint(s) {missing}")
            where = np.asarray([index[name] for name in self._joints], dtype=np.intp)
            self._lookup = (list(names), where)
        values = np.asarray(position, dtype=np.float64)[where]
        if self.needs_velocity:
            values = np.where(self._is_velocity, np.asarray(velocity, dtype=np.float64)[where], values)
        if not np.all(np.isfinite(values)):
            raise InputRejected(
                "non_finite_joint_states", f"joint_states has NaN or inf for {list(self.wanted)}: {values}"
            )
        return values


def parse_proprio(position: Sequence[float], expected: int) -> npt.NDArray[np.float64]:
    """sensor_msgs/JointState.position -> proprio vector."""
    values = np.asarray(position, dtype=np.float64).reshape(-1)
    if values.size != expected:
        raise InputRejected(
            "bad_proprio_length", f"joint_states.position has {values.size} values, the model needs {expected}"
        )
    if not np.all(np.isfinite(values)):
        raise InputRejected("non_finite_joint_states", f"joint_states.position contains NaN or inf: {values.tolist()}")
    return values


def string_from_cdr(serialized: bytes) -> bytes:
    """The raw bytes of a serialised std_msgs/String (rclpy would silently replace invalid UTF-8)."""
    if len(serialized) < 8:
        raise InputRejected("malformed_instruction", f"instruction message is {len(serialized)} bytes: too short")
    little_endian = serialized[1] & 1 == 1  # encapsulation id: odd = little endian
    (length,) = struct.unpack("<I" if little_endian else ">I", serialized[4:8])
    if length == 0 or 8 + length > len(serialized):
        raise InputRejected("malformed_instruction", f"instruction string length {length} does not fit the message")
    return serialized[8 : 8 + length - 1]  # drop the terminating NUL


def parse_instruction(raw: bytes) -> str:
    if len(raw) > MAX_INSTRUCTION_BYTES:
        raise InputRejected(
            "instruction_too_long", f"instruction is {len(raw)} bytes, more than {MAX_INSTRUCTION_BYTES}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRejected(
            "instruction_not_utf8", f"instruction is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    if not text.strip():
        raise InputRejected("empty_instruction", "instruction is empty")
    return text


def check_stamp(stamp_s: float, now_s: float, max_future_ms: float) -> float:
    """Returns the image's age in ms; rejects stamps from the future and unset (zero) stamps."""
    if stamp_s <= 0.0 or not math.isfinite(stamp_s):
        raise InputRejected("unstamped_image", "image header.stamp is zero: its age cannot be judged")
    age_ms = (now_s - stamp_s) * 1000.0
    if -age_ms > max_future_ms:
        raise InputRejected(
            "future_stamp", f"image stamped {-age_ms:.0f} ms in the future (limit {max_future_ms:.0f} ms)"
        )
    return age_ms
