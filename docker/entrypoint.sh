#!/usr/bin/env bash
# Entrypoint of Dockerfile.jetson: build the engines missing from $ENGINE_DIR, then launch dysl_node.
#
#   MODEL_DIR      trained model directory (default /models/reference, mount it read-only)
#   ENGINE_DIR     engine cache, a volume (default /engines): engines/<model>/<backend>/manifest.json
#   DYSL_BACKEND   tensorrt (default) | onnxruntime | torch
#   DYSL_PRECISION fp16 (default) | fp32
#   DYSL_FALLBACK  torch (default): when build_engines cannot build $DYSL_BACKEND engines here
#                  (exit 2: TensorRT or the GPU missing), serve with backend torch on CUDA (CUDA graphs)
#                  instead | none: stop
#   DYSL_PARAMS    a dysl_node params file to start from (default: the package's config/dysl.yaml)
# Arguments are passed to `ros2 launch dysl_ros dysl.launch.py` (e.g. image_topic:=/camera/color/image_raw).
set -euo pipefail

: "${MODEL_DIR:=/models/reference}" "${ENGINE_DIR:=/engines}" "${DYSL_BACKEND:=tensorrt}"
: "${DYSL_PRECISION:=fp16}" "${DYSL_FALLBACK:=torch}" "${ROS_DISTRO:=humble}"

set +u  # ROS setup scripts read unset variables
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /opt/dysl_ws/install/setup.bash
set -u

SHARE=$(ros2 pkg prefix dysl_ros)/share/dysl_ros
: "${DYSL_PARAMS:=${SHARE}/config/dysl.yaml}"
# Fast DDS 2.x (Humble) reads the FASTRTPS_ name; the launch file sets both for the node, this is
# for build_engines and anything else started here.
export FASTRTPS_DEFAULT_PROFILES_FILE="${SHARE}/config/fastdds.xml" FASTDDS_DEFAULT_PROFILES_FILE="${SHARE}/config/fastdds.xml"

if [[ ! -f "${MODEL_DIR}/vla_config.json" ]]; then
    echo "dysl_entrypoint: no model at MODEL_DIR=${MODEL_DIR} (vla_config.json missing): mount one, e.g." \
         "-v \$PWD/models:/models:ro -e MODEL_DIR=/models/reference" >&2
    exit 2
fi
mkdir -p "${ENGINE_DIR}"

backend="${DYSL_BACKEND}" device=cuda precision="${DYSL_PRECISION}"
if [[ "${backend}" == "onnxruntime" ]]; then
    device=cpu precision=fp32  # the onnxruntime backend runs fp32 on the CPU
fi
if [[ "${backend}" != "torch" ]]; then
    echo "dysl_entrypoint: ${backend} engines for ${MODEL_DIR} in ${ENGINE_DIR} (built when missing; slow the first time)"
    set +e
    build_engines --model-dir "${MODEL_DIR}" --out "${ENGINE_DIR}" --backend "${backend}" --precision "${precision}"
    rc=$?
    set -e
    if [[ ${rc} -eq 2 && "${DYSL_FALLBACK}" == "torch" ]]; then
        echo "dysl_entrypoint: ${backend} engines cannot be built here (see above);" \
             "serving with backend torch on CUDA, as CUDA graphs (DYSL_FALLBACK=torch)" >&2
        backend=torch device=cuda
    elif [[ ${rc} -ne 0 ]]; then
        echo "dysl_entrypoint: build_engines failed (exit ${rc}); nothing launched" >&2
        exit "${rc}"
    fi
fi

# The params file with the model, engines and backend chosen here (every other value as given).
PARAMS=/tmp/dysl_params.yaml
python3 - "${DYSL_PARAMS}" "${PARAMS}" "${MODEL_DIR}" "${ENGINE_DIR}" "${backend}" "${device}" "${precision}" <<'PY'
import sys

import yaml

source, target, model_dir, engine_dir, backend, device, precision = sys.argv[1:]
with open(source) as f:
    doc = yaml.safe_load(f) or {}
params = doc.setdefault("/**", {}).setdefault("ros__parameters", {})
params.update(model_dir=model_dir, engine_dir=engine_dir, backend=backend, device=device, precision=precision)
with open(target, "w") as f:
    yaml.safe_dump(doc, f, sort_keys=False)
print(f"dysl_entrypoint: {target}: model_dir={model_dir} engine_dir={engine_dir} backend={backend} "
      f"device={device} precision={precision}")
PY

exec ros2 launch dysl_ros dysl.launch.py params_file:="${PARAMS}" "$@"
