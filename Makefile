# dysl_ros developer entry points. `make setup` is idempotent: a second run only checks the stamp.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
# The robot's runtime alone (requirements-runtime.txt: no torch, no transformers), where
# test/test_runtime_install.py starts dysl_node. pip takes its wheels from its cache after the first run.
RUNTIME_VENV  := .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.setup-stamp
# A bench command piped into tee must still fail the target when it fails.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c

# Every ROS process started from here stays on loopback with the project's Fast DDS profile.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds.xml
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)

# The ROS 2 launch and command-line tools as wheels (launch, launch_ros, launch_pytest, ros2cli and its
# verbs), for development and CI machines, which have no ROS install: installed when the folder beside
# this repository exists (a robot gets the same tools from its ROS install). Without them the launch and
# ros2 command-line tests skip, saying why. Nothing else reads ../shared.
ROS_WHEELS      := ../shared/ros_wheels
ROS_WHEEL_FILES := $(sort $(wildcard $(ROS_WHEELS)/*.whl))
ROS_TOOLS_STAMP := $(VENV)/.ros-tools-stamp

.PHONY: setup test lint typecheck unit demo bench bench-large bench-curve bench-offline bench-arm train train-joint clean

setup: $(STAMP) $(RUNTIME_STAMP) $(if $(ROS_WHEEL_FILES),$(ROS_TOOLS_STAMP))

$(STAMP): requirements.txt setup.py setup.cfg package.xml scripts/typings_tensorrt.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "dysl_ros needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@# tensorrt-stubs declares TensorRT itself as a dependency, which cannot be installed here.
	$(BIN)/python -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	$(BIN)/python scripts/typings_tensorrt.py $(VENV)/typings
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import rclpy, torch, onnxruntime, dysl_ros; print('setup ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
	touch $(STAMP)

$(RUNTIME_STAMP): requirements-runtime.txt setup.py setup.cfg package.xml
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	@# setuptools: builds the editable install below (the venv's own may predate its bdist_wheel).
	$(RUNTIME_VENV)/bin/python -m pip install --quiet -r requirements-runtime.txt "setuptools>=70.1,<80"
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(RUNTIME_VENV)/bin/python -c "import importlib.util as u, rclpy, onnxruntime, dysl_ros; \
		assert not [m for m in ('torch', 'transformers') if u.find_spec(m)], 'torch in the runtime venv'; \
		print('runtime venv ok: onnxruntime', onnxruntime.__version__, '(no torch, no transformers)')"
	touch $(RUNTIME_STAMP)

# --no-deps: launch_ros names `launch` (on PyPI an unrelated project) and `ament_index_python` (PyPI:
# ros-ament-index-python); requirements-ros-tools.txt has what the wheels need from PyPI.
$(ROS_TOOLS_STAMP): $(STAMP) $(ROS_WHEEL_FILES) requirements-ros-tools.txt
	$(BIN)/python -m pip install --quiet --no-deps $(ROS_WHEEL_FILES)
	$(BIN)/python -m pip install --quiet -r requirements-ros-tools.txt
	$(BIN)/python -c "from importlib.metadata import version as v; import launch_ros, launch_pytest; \
		print('ROS 2 tools ok: launch', v('launch'), '| launch_ros', v('launch_ros'), '| ros2cli', v('ros2cli'))"
	touch $(ROS_TOOLS_STAMP)

lint: setup
	$(BIN)/ruff check dysl_ros test launch scripts experiments setup.py

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q -rfEs test  # -rfEs: every failure, error and skip (with its reason) named in the summary

# The test command of the README and of CI.
test: lint typecheck unit

# The main job: the shipped model in a closed loop over ROS 2 on this CPU (Meta-World sim_bridge + dysl_node).
# WIRING=jtc or WIRING=forward: models/reference_joint drives the Sawyer's joints through a joint
# trajectory controller or a forward position controller (sim_bridge's arm modes); default: the end effector.
WIRING ?= ee
demo: setup
	$(BIN)/python -m dysl_ros.tools.demo $(if $(filter-out ee,$(WIRING)),--wiring $(WIRING))

# CPU figures of the README: closed-loop success per variant, then dense vs DySL latency on onnxruntime
# replaying the closed loop's decisions. Eval seed 3000: seed 2000 served to choose lambda and eta
# (bench-curve) and the router's threshold, so the figures of record come from episodes no choice was
# made on. The router's threshold 0.34 put its executed layers on DySL's on seed 2000 (9.54 and
# 9.54 at DySL's threshold 0.35, 30 episodes per task; 0.33: 9.28): baselines compare at matched
# layers. 30 episodes per task (300 per variant; 14 min on 2 cores with the latency replay and the
# static-only run): at 10 a task's rate moves 10 points per episode.
bench: setup
	mkdir -p out/bench
	$(BIN)/dysl_bench closed-loop --model-dir models/reference --episodes 30 --seed 3000 --workers 2 \
		--variants all --router-threshold 0.34 \
		--record-trace out/bench/decisions.json --markdown out/bench/closed_loop.md --plot out/bench/closed_loop.png \
		--json | tee out/bench/closed_loop.log
	$(BIN)/dysl_bench latency --model-dir models/reference --backend onnxruntime --num-threads 1 \
		--trace out/bench/decisions.json --json | tee out/bench/latency.log
	# The floor: the five static layers alone (random_drop with every dynamic layer dropped).
	$(BIN)/dysl_bench closed-loop --model-dir models/reference --episodes 30 --seed 3000 --workers 2 \
		--variants random_drop --random-target-layers 5 --markdown out/bench/static_only.md --json \
		| tee out/bench/static_only.log
	# The ceiling of DySL's structure at its layers: each tick the shallowest exit within 0.026 of the
	# dense chunk (oracle_exit, a bound that runs the dense pass; 0.026 put it at 9.50 layers on seed 2000).
	$(BIN)/dysl_bench closed-loop --model-dir models/reference --episodes 30 --seed 3000 --workers 2 \
		--variants oracle_exit --oracle-tolerance 0.026 --markdown out/bench/oracle.md --json \
		| tee out/bench/oracle.log

# A larger held-out check of dense vs DySL vs random skip (with DySL's adapters and static layers, and
# the paper's, with neither) vs the oracle bound of DySL's structure: seed 4000 (no choice made on
# it), 100 episodes per task (1000 per variant), about 25 min on 2 cores. At 300 episodes a mean near 88 % has a
# standard error of 2 points, at 1000 of 1.
bench-large: setup
	mkdir -p out/bench
	$(BIN)/dysl_bench closed-loop --model-dir models/reference --episodes 100 --seed 4000 --workers 2 \
		--variants dense,dysl,random_skip,random_layers,oracle_exit --oracle-tolerance 0.026 \
		--markdown out/bench/closed_loop_large.md \
		--plot out/bench/closed_loop_large.png --json \
		| tee out/bench/closed_loop_large.log

# DySL on recorded episodes, without a simulator (what a user with a LeRobot dataset runs): the
# held-out seed 3000's Meta-World episodes (5 per task, the scripted expert) as a LeRobot v3.0
# dataset, replayed through the shipped model; chunk error against dense and against the recorded
# actions per variant, at matched layers. About 2 min on 2 cores (40 s of it recording the dataset).
bench-offline: setup
	mkdir -p out/bench
	test -f out/bench/metaworld_lerobot/meta/info.json || $(BIN)/dysl_train demos --format lerobot \
		--out out/bench/metaworld_lerobot --tasks all --episodes-per-task 5 --seed 3000 --workers 2 --no-progress
	$(BIN)/dysl_bench offline --model-dir models/reference --demos out/bench/metaworld_lerobot \
		--variants dense,dysl,random_skip,oracle_exit --oracle-tolerance 0.026 --no-progress \
		--markdown out/bench/offline.md --plot out/bench/offline.png --json | tee out/bench/offline.log

# The joint-space model through the arm's controllers on the held-out seed 4000 (seed 3000's pick-place
# episodes served to find the node's faults through the controllers): in process (the same
# servos, no ROS; 30 episodes per task and variant, 4 min on 2 cores), over ROS 2 through sim_bridge's
# joint trajectory controller (30 per task and variant, real time) and its forward controller (3 per
# task and variant: its motion), dense and DySL each. Over ROS the two variants run at once, each
# sim_bridge + dysl_node pair on its own ROS domain (about 1.4 of the 2 cores): 38 + 4 min.
# Success, executed layers and the joints' motion; one episode's plot per wiring and variant.
bench-arm: setup
	mkdir -p out/bench
	$(BIN)/dysl_bench closed-loop --model-dir models/reference_joint --episodes 30 --seed 4000 --workers 2 \
		--variants dense,dysl --backend onnxruntime --markdown out/bench/arm_inprocess.md \
		--motion-plot out/bench/arm_inprocess_motion.png --json | tee out/bench/arm_inprocess.log
	for wiring_episodes in jtc:30 forward:3; do wiring=$${wiring_episodes%:*}; \
	  for v in dense dysl; do \
	    $(BIN)/dysl_bench closed-loop --wiring $$wiring --model-dir models/reference_joint \
	      --episodes $${wiring_episodes#*:} --seed 4000 --variants $$v --ros-out out/bench/ros_$${wiring}_$$v \
	      --markdown out/bench/arm_$${wiring}_$$v.md --motion-plot out/bench/arm_$${wiring}_$${v}_motion.png \
	      --json > out/bench/arm_$${wiring}_$$v.log 2>&1 & \
	  done; wait; done
	cat out/bench/arm_jtc_dense.md out/bench/arm_jtc_dysl.md out/bench/arm_forward_dense.md out/bench/arm_forward_dysl.md

# The speed/accuracy curve (lambda points x eta values) on the validation seed 2000.
bench-curve: setup
	$(BIN)/python scripts/speed_accuracy.py --model-dir models/reference --episodes 10 --seed 2000 \
		--modules models/reference,models/reference/variants/lambda_0.002,models/reference/variants/lambda_0.005 \
		--etas 0.0258,0.06,0.12 --out out/bench/speed_accuracy

# Reproduces models/reference from scratch into runs/train/reference (see scripts/train_reference.sh).
train: setup
	scripts/train_reference.sh

# Reproduces models/reference_joint from scratch into runs/train/reference_joint (scripts/train_reference_joint.sh).
train-joint: setup
	scripts/train_reference_joint.sh

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
