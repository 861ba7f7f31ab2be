# dysl_ros developer entry points. `make setup` is idempotent: a second run only checks the stamp.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp

# Every ROS process started from here stays on loopback with the project's Fast DDS profile.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds.xml
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)

.PHONY: setup test lint typecheck unit demo bench train clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "dysl_ros needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@# tensorrt-stubs declares TensorRT itself as a dependency, which cannot be installed here.
	$(BIN)/python -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import rclpy, torch, onnxruntime, dysl_ros; print('setup ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check dysl_ros test launch setup.py

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q test

# The test command of the README and of CI.
test: lint typecheck unit

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
