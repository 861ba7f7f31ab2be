"""Camera-sized best-effort images must cross process boundaries with the project's Fast DDS profile.

Without config/fastdds.xml's segment size (default 512 KB shared-memory segment) 4 of 300 640x480
rgb8 frames arrived (1.3 %, measured here); with it, 300 of 300 on an idle machine and 264 of 300 on a
busy 2-core CI runner, where the best-effort reader falls behind. The bar sits between the two.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ros_harness import PYTHON, REPO, SENSOR_QOS, ros_process, ros_session
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

PUBLISHER = REPO / "test" / "dds_publisher.py"
TOPIC = "/dds_transport_test/image"
WIDTH, HEIGHT, RATE_HZ, DURATION_S = 640, 480, 30.0, 10.0
# Far above the 1.3 % of the default segment, and below what a loaded CI runner delivers (88 %):
# best effort is allowed to drop frames when the reader is starved of CPU; it is not allowed to
# drop nearly all of them because the segment cannot hold one.
MIN_DELIVERY = 0.5


def _frame_index(msg: Image) -> int:
    # Keep only the frame index the publisher writes into the first 4 bytes, not the 0.9 MB image.
    return int.from_bytes(bytes(msg.data[0:4]), "little")


def _sent_count(log_path: Path) -> int:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("sent="), f"publisher did not report its count:\n{lines[-20:]}"
    return int(lines[-1].split("=", 1)[1])


def test_best_effort_640x480_images_arrive(domain_id: int, tmp_path: Path) -> None:
    log_path = tmp_path / "dds_publisher.log"
    args = [
        PYTHON, str(PUBLISHER),
        "--topic", TOPIC,
        "--width", str(WIDTH), "--height", str(HEIGHT),
        "--rate", str(RATE_HZ), "--duration", str(DURATION_S),
        "--min-subscribers", "1", "--match-timeout", "10",
    ]  # fmt: skip
    t0 = time.monotonic()
    with ros_session(domain_id, "dds_transport_probe") as ros:
        frames = ros.subscribe(Image, TOPIC, SENSOR_QOS, transform=_frame_index)
        with ros_process(args, domain_id, log_path) as proc:
            rc = proc.wait(timeout=DURATION_S + 15.0)
        # Frames still in flight when the publisher printed its count.
        ros.wait_until(lambda: len(frames) >= _sent_count(log_path), timeout=1.0)
    elapsed = time.monotonic() - t0

    log = log_path.read_text(errors="replace")
    assert rc == 0, f"publisher failed (rc={rc}):\n{log[-3000:]}"
    # Fast DDS reports a profile it cannot parse (and then silently uses its defaults) on stderr.
    assert "XMLPARSER" not in log, f"Fast DDS rejected config/fastdds.xml:\n{log[-3000:]}"
    sent = _sent_count(log_path)
    expected = round(RATE_HZ * DURATION_S)
    assert sent == expected, f"publisher sent {sent} of {expected} frames:\n{log[-3000:]}"

    indices = frames.messages
    received = len(set(indices))
    ratio = received / sent
    print(f"delivered {received}/{sent} frames ({ratio:.1%}) of {WIDTH}x{HEIGHT} rgb8 in {elapsed:.1f} s")
    assert ratio >= MIN_DELIVERY, (
        f"only {received}/{sent} ({ratio:.1%}) best-effort {WIDTH}x{HEIGHT} frames arrived; "
        f"is FASTDDS_DEFAULT_PROFILES_FILE (config/fastdds.xml) in effect?\n{log[-2000:]}"
    )
