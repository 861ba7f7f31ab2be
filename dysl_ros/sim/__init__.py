"""Meta-World as a ROS 2 robot (``sim_bridge``) and the closed-loop demo's reporting helpers."""
