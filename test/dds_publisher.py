"""Publish synthetic sensor_msgs/Image frames at a fixed rate (run as a separate process by tests).

Waits until at least ``--min-subscribers`` subscriptions are matched, publishes for ``--duration``
seconds, then prints ``sent=<N>`` as its last line.
"""

from __future__ import annotations

import argparse
import array
import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--rate", type=float, default=30.0, help="frames per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    p.add_argument("--min-subscribers", type=int, default=1, help="wait for this many matched subscriptions")
    p.add_argument("--match-timeout", type=float, default=15.0, help="seconds to wait for subscribers")
    p.add_argument("--settle", type=float, default=0.5, help="seconds to wait after matching, before publishing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
    rclpy.init()
    node = rclpy.create_node("dds_test_publisher")
    pub = node.create_publisher(Image, args.topic, qos)
    sent = 0
    try:
        deadline = time.monotonic() + args.match_timeout
        while pub.get_subscription_count() < args.min_subscribers:
            if time.monotonic() > deadline:
                print(f"no subscriber matched within {args.match_timeout} s", flush=True)
                print("sent=0", flush=True)
                return 2
            time.sleep(0.02)
        print(f"matched {pub.get_subscription_count()} subscription(s)", flush=True)
        # Matching is seen from the writer's side first; give the reader's side a moment to match too.
        time.sleep(args.settle)

        msg = Image()
        msg.header.frame_id = "camera"
        msg.width, msg.height = args.width, args.height
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = args.width * 3
        # array('B') is taken as is by the generated setter (bytes would be validated byte by byte).
        payload = array.array("B", bytes(args.height * msg.step))
        n = round(args.rate * args.duration)
        period = 1.0 / args.rate
        start = time.monotonic()
        for i in range(n):
            target = start + i * period
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload[0:4] = array.array("B", i.to_bytes(4, "little"))  # frame index, for ordering checks
            msg.data = payload
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            sent += 1
        elapsed = time.monotonic() - start
        print(f"published {sent} frames of {args.width}x{args.height} rgb8 in {elapsed:.2f} s", flush=True)
        # Let the last frames drain before the participant goes away.
        time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"sent={sent}", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
