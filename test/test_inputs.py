"""Input validation of the node, field by field (no ROS needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dysl_ros.inputs import (
    MAX_INSTRUCTION_BYTES,
    InputRejected,
    JointStateReader,
    check_stamp,
    decode_compressed_image,
    decode_image,
    parse_instruction,
    parse_proprio,
    string_from_cdr,
)

RGB = (200, 100, 50)


def frame(encoding: str, width: int = 4, height: int = 3, pad: int = 0) -> tuple[int, bytes]:
    pixel = {"rgb8": RGB, "bgr8": RGB[::-1], "rgba8": (*RGB, 255), "bgra8": (*RGB[::-1], 255), "mono8": (77,)}[encoding]
    row = bytes(pixel) * width + b"\xee" * pad
    return len(row), row * height


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_become_rgb(encoding: str) -> None:
    step, data = frame(encoding, width=4, height=4)
    out = decode_image(encoding, 4, 4, step, data, size=4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert np.all(out == np.array(RGB, np.uint8))


def test_mono_becomes_grey_rgb() -> None:
    step, data = frame("mono8", width=4, height=4)
    assert np.all(decode_image("mono8", 4, 4, step, data, size=8) == 77)


def test_row_padding_is_ignored_and_any_resolution_is_resized() -> None:
    step, data = frame("rgb8", width=64, height=48, pad=5)
    out = decode_image("rgb8", 48, 64, step, data, size=(12, 16))  # same aspect ratio: no bars
    assert out.shape == (12, 16, 3)
    assert np.all(out == np.array(RGB, np.uint8))  # padding bytes (0xee) never leak into pixels


def test_another_aspect_ratio_is_letterboxed_or_cropped_never_squashed() -> None:
    step, data = frame("rgb8", width=8, height=4)  # 2:1 into a square camera
    boxed = decode_image("rgb8", 4, 8, step, data, size=8, fit="letterbox")
    assert boxed.shape == (8, 8, 3)
    assert np.all(boxed[2:6] == np.array(RGB, np.uint8))  # the whole image, centred
    assert np.all(boxed[:2] == 0) and np.all(boxed[6:] == 0)  # black bars above and below
    cropped = decode_image("rgb8", 4, 8, step, data, size=8, fit="center_crop")
    assert cropped.shape == (8, 8, 3) and np.all(cropped == np.array(RGB, np.uint8))  # covers: no bars
    marked = np.zeros((4, 8, 3), np.uint8)
    marked[:, :1] = 255  # the left eighth
    cropped = decode_image("rgb8", 4, 8, 24, marked.tobytes(), size=8, fit="center_crop")
    assert cropped[:, :, 0].max() == 0  # the crop kept the centre, not the left edge


def test_mono_cameras_get_one_channel() -> None:
    step, data = frame("rgb8", width=4, height=4)
    grey = decode_image("rgb8", 4, 4, step, data, size=4, channels=1)
    assert grey.shape == (4, 4, 1) and len(np.unique(grey)) == 1


def test_resize_keeps_layout() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    image[:20, :, 0] = 255  # top half red
    out = decode_image("rgb8", 40, 40, 120, image.tobytes(), size=8)
    assert out[:4, :, 0].min() == 255 and out[4:, :, 0].max() == 0


@pytest.mark.parametrize(
    ("counter", "encoding", "height", "width", "step", "length"),
    [
        ("unknown_encoding", "yuv422", 2, 2, 4, 8),
        ("empty_image", "rgb8", 0, 4, 12, 0),
        ("empty_image", "rgb8", 4, 0, 0, 0),
        ("bad_step", "rgb8", 2, 4, 11, 22),
        ("bad_data_length", "rgb8", 2, 4, 12, 23),
        ("bad_data_length", "rgba8", 2, 4, 16, 0),
    ],
)
def test_malformed_images_are_rejected(
    counter: str, encoding: str, height: int, width: int, step: int, length: int
) -> None:
    with pytest.raises(InputRejected) as info:
        decode_image(encoding, height, width, step, b"\x00" * length, size=8)
    assert info.value.counter == counter
    assert str(info.value)


def test_rclpy_array_payload_is_accepted_without_copy_semantics_issues() -> None:
    import array

    step, data = frame("rgb8", width=4, height=4)
    out = decode_image("rgb8", 4, 4, step, array.array("B", data), size=4)
    assert np.all(out == np.array(RGB, np.uint8))


def test_proprio() -> None:
    assert parse_proprio([1.0, 2.0, 3.0, 4.0], 4).tolist() == [1.0, 2.0, 3.0, 4.0]
    for values, counter in (
        ([1.0, 2.0], "bad_proprio_length"),
        ([1.0, float("nan"), 0, 0], "non_finite_joint_states"),
        ([float("-inf"), 0, 0, 0], "non_finite_joint_states"),
    ):
        with pytest.raises(InputRejected) as info:
            parse_proprio(values, 4)
        assert info.value.counter == counter


def test_joint_states_are_read_by_name_in_any_order() -> None:
    reader = JointStateReader(("elbow", "shoulder"), "command_joint_names")
    assert reader.read(["wrist", "shoulder", "elbow"], [3.0, 1.0, 2.0]).tolist() == [2.0, 1.0]
    assert reader.read(["wrist", "shoulder", "elbow"], [6.0, 4.0, 5.0]).tolist() == [5.0, 4.0]  # same names
    assert reader.read(["elbow", "shoulder"], [7.0, 8.0]).tolist() == [7.0, 8.0]  # the order changed
    for names, positions, counter in (
        (["elbow"], [1.0], "missing_joint"),
        (["elbow", "shoulder"], [1.0], "bad_joint_state"),
        (["elbow", "shoulder"], [1.0, float("nan")], "non_finite_joint_states"),
    ):
        with pytest.raises(InputRejected) as info:
            reader.read(names, positions)
        assert info.value.counter == counter
    assert "command_joint_names's joint(s) ['shoulder']" in str(_rejection(reader, ["elbow"], [1.0]))
    # A rejected message leaves the last good lookup as it was.
    assert reader.read(["elbow", "shoulder"], [9.0, 10.0]).tolist() == [9.0, 10.0]


def test_state_velocities_are_read_by_name_too() -> None:
    reader = JointStateReader(("shoulder", "shoulder/velocity", "elbow/velocity"))
    names, positions, velocities = ["elbow", "shoulder"], [1.0, 2.0], [-0.5, 0.25]
    assert reader.read(names, positions, velocities).tolist() == [2.0, 0.25, -0.5]
    assert reader.read(["shoulder", "elbow"], [3.0, 4.0], [0.1, 0.2]).tolist() == [3.0, 0.1, 0.2]
    rejected = _rejection(reader, names, positions)  # a driver that sends no velocities
    assert rejected.counter == "bad_joint_state" and "0 velocities for 2 names" in str(rejected)
    assert JointStateReader(("shoulder",)).read(names, positions).tolist() == [2.0]  # positions need none


def _rejection(reader: JointStateReader, names: list[str], positions: list[float]) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        reader.read(names, positions)
    return info.value


def test_compressed_images_decode_as_the_raw_ones() -> None:
    import cv2

    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # lossless
    assert ok
    raw = decode_image("rgb8", 30, 40, 120, rgb.tobytes(), size=(16, 20))
    assert np.array_equal(decode_compressed_image("png", png.tobytes(), (16, 20)), raw)
    with pytest.raises(InputRejected) as info:
        decode_compressed_image("jpeg", b"not an image", 16)
    assert info.value.counter == "bad_compressed_image"


def cdr(payload: bytes, little: bool = True) -> bytes:
    header = b"\x00\x01\x00\x00" if little else b"\x00\x00\x00\x00"
    return header + struct.pack("<I" if little else ">I", len(payload) + 1) + payload + b"\x00"


def test_instruction_bytes_from_cdr_both_endians() -> None:
    assert string_from_cdr(cdr(b"open the drawer")) == b"open the drawer"
    assert string_from_cdr(cdr("öffne".encode(), little=False)) == "öffne".encode()
    for bad in (b"\x00\x01", b"\x00\x01\x00\x00" + struct.pack("<I", 99) + b"abc"):
        with pytest.raises(InputRejected) as info:
            string_from_cdr(bad)
        assert info.value.counter == "malformed_instruction"


@pytest.mark.parametrize(
    ("raw", "counter"),
    [
        (b"", "empty_instruction"),
        (b"  \t ", "empty_instruction"),
        (b"x" * (MAX_INSTRUCTION_BYTES + 1), "instruction_too_long"),
        (b"pick \xff up", "instruction_not_utf8"),
    ],
)
def test_bad_instructions(raw: bytes, counter: str) -> None:
    with pytest.raises(InputRejected) as info:
        parse_instruction(raw)
    assert info.value.counter == counter


def test_good_instruction_and_limit() -> None:
    assert parse_instruction("Greif den Würfel".encode()) == "Greif den Würfel"
    assert len(parse_instruction(b"y" * MAX_INSTRUCTION_BYTES)) == MAX_INSTRUCTION_BYTES


def test_stamps() -> None:
    assert check_stamp(99.9, 100.0, 50.0) == pytest.approx(100.0)
    assert check_stamp(100.04, 100.0, 50.0) == pytest.approx(-40.0)  # small clock skew tolerated
    for stamp, counter in ((100.2, "future_stamp"), (0.0, "unstamped_image")):
        with pytest.raises(InputRejected) as info:
            check_stamp(stamp, 100.0, 50.0)
        assert info.value.counter == counter
