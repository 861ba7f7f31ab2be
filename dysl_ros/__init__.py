"""dysl_ros: real-time VLA serving for ROS 2 with DySL dynamic-static layer skipping."""

__version__ = "0.1.0"
