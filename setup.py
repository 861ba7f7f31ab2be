"""dysl_ros: real-time VLA serving for ROS 2 with DySL dynamic-static layer skipping."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dysl_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    # ROS dependencies come from package.xml (rosdep / apt); the development venv gets the rest
    # from requirements.txt.
    install_requires=["setuptools"],
    zip_safe=True,
    python_requires=">=3.10",
    maintainer="dysl_ros maintainers",
    maintainer_email="dysl-ros@users.noreply.github.com",
    description="Serve a vision-language-action policy on ROS 2 in real time with DySL layer skipping.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "dysl_node = dysl_ros.node.dysl_node:main",
            "build_engines = dysl_ros.tools.build_engines:main",
            "dysl_train = dysl_ros.tools.train:main",
            "dysl_bench = dysl_ros.tools.bench:main",
            "sim_bridge = dysl_ros.tools.sim_bridge:main",
        ],
    },
)
