"""What a tick sees (``node.input_slots``): the joint state of its image's moment, no ROS.

A joint_state_broadcaster publishes at 100 Hz or more while an image reaches the node tens of ms
after its stamp; the newest joint state then lies that far ahead of what the camera saw, and a
joint-space chunk integrated from it overshoots by the motion in between."""

from __future__ import annotations

import threading
import time

import numpy as np

from dysl_ros.node.input_slots import InputSlots, LatestImage

NS = 1_000_000_000
IMAGE_NS = 1000 * NS


def slots_with_states(stamps_ns: list[int]) -> InputSlots:
    """States whose joint values are their index, then an instruction and one image at IMAGE_NS."""
    slots = InputSlots(("camera",), max_camera_skew_ms=50.0, max_image_age_ms=1e9, needs_joints=True)
    slots.put_instruction("reach the goal")
    for i, stamp in enumerate(stamps_ns):
        slots.put_state(np.full(9, float(i)), np.full(7, float(i)), stamp)
    rgb = np.zeros((8, 8, 3), np.uint8)
    slots.put_image("camera", LatestImage(rgb, IMAGE_NS / NS, IMAGE_NS, None, time.monotonic()))
    return slots


def taken_index(slots: InputSlots) -> tuple[float, float]:
    taken = slots.take(threading.Event(), lambda: IMAGE_NS / NS + 0.1)
    assert taken.inputs is not None, taken.waiting_for
    assert taken.inputs.joints is not None
    return float(taken.inputs.proprio[0]), float(taken.inputs.joints[0])


def test_the_state_stamped_nearest_the_image_not_the_newest() -> None:
    # 100 Hz from 200 ms before the image to 100 ms after it: index 20 is stamped with the image.
    stamps = [IMAGE_NS + (k - 20) * 10_000_000 for k in range(31)]
    assert taken_index(slots_with_states(stamps)) == (20.0, 20.0)
    # 3 ms after the image's stamp is nearer than 7 ms before it.
    stamps = [IMAGE_NS - 7_000_000, IMAGE_NS + 3_000_000, IMAGE_NS + 13_000_000]
    assert taken_index(slots_with_states(stamps)) == (1.0, 1.0)


def test_unstamped_states_or_another_clock_fall_back_to_the_newest() -> None:
    assert taken_index(slots_with_states([0, 0, 0])) == (2.0, 2.0)
    # Every state more than max_camera_skew_ms from the image: stamps on another clock.
    assert taken_index(slots_with_states([5 * NS, 5 * NS + 10_000_000])) == (1.0, 1.0)


def test_the_joint_state_is_what_the_tick_waits_for_when_none_came() -> None:
    slots = slots_with_states([])
    taken = slots.take(threading.Event(), lambda: IMAGE_NS / NS + 0.1)
    assert taken.inputs is None and taken.waiting_for == "joint_states"


def test_a_full_history_and_states_without_the_command_joints() -> None:
    """The whole history at 1 kHz (the image's moment deep in it), and a state topic without the
    command joints interleaved: the proprio state and the command joints are each the nearest of
    their kind, and the newest when their kind has none near the image."""
    slots = InputSlots(("camera",), max_camera_skew_ms=50.0, max_image_age_ms=1e9, needs_joints=True)
    slots.put_instruction("reach the goal")
    for k in range(2000):  # more than the history keeps; the image is stamped at k = 1500
        stamp = IMAGE_NS + (k - 1500) * 1_000_000
        joints = np.full(7, float(k)) if k % 2 == 0 else None  # odd k: a state without the command joints
        slots.put_state(np.full(9, float(k)), joints, stamp)
    slots.put_image("camera", LatestImage(np.zeros((8, 8, 3), np.uint8), IMAGE_NS / NS, IMAGE_NS + 1_400_000,
                                          None, time.monotonic()))
    assert taken_index(slots) == (1501.0, 1502.0)  # 0.4 ms from the image; 0.6 ms (1500: 1.4 ms)
    # The command joints only far from the image (another clock): the newest of them.
    slots = InputSlots(("camera",), max_camera_skew_ms=50.0, max_image_age_ms=1e9, needs_joints=True)
    slots.put_instruction("reach the goal")
    slots.put_state(np.full(9, 0.0), np.full(7, 0.0), 5 * NS)
    slots.put_state(np.full(9, 1.0), np.full(7, 1.0), 5 * NS + 10_000_000)
    for k in range(2, 40):
        slots.put_state(np.full(9, float(k)), None, IMAGE_NS + (k - 20) * 10_000_000)
    slots.put_image("camera", LatestImage(np.zeros((8, 8, 3), np.uint8), IMAGE_NS / NS, IMAGE_NS, None,
                                          time.monotonic()))
    assert taken_index(slots) == (20.0, 1.0)
