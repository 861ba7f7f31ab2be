#!/usr/bin/env bash
# Entrypoint of Dockerfile.jetson: build the engines missing from the engine directory, then launch dysl_node.
#
#   MODEL_DIR      trained model directory (default /models/reference, mount it read-only)
#   ENGINE_DIR     engine cache root, a volume (default /engines): ENGINE_DIR/<model>/<backend>/manifest.json.
#                  Set it empty (-e ENGINE_DIR=) for dysl_node's own default, MODEL_DIR/engines (the model
#                  mount must then be writable). build_engines and the node get the same value either way.
#   DYSL_BACKEND   tensorrt (default) | onnxruntime | torch
#   DYSL_PRECISION fp16 (default) | fp32
#   DYSL_FORCE_ENGINE_UPDATE
#                  false (default) | true: rebuild the engines even when some exist. Needed after a retrain,
#                  or a JetPack / TensorRT upgrade: engines whose manifest no longer matches the model, the
#                  TensorRT version or the GPU are refused (build_engines exit 1, nothing launched).
#   DYSL_FALLBACK  torch (default): when build_engines cannot build $DYSL_BACKEND engines here
#                  (exit 2: TensorRT or the GPU missing), serve with backend torch on CUDA (CUDA graphs)
#                  instead | none: stop
#   DYSL_PARAMS    a dysl_node params file to start from (default: the package's config/dysl.yaml)
#   DYSL_UNDERLAY_SETUP, DYSL_OVERLAY_SETUP
#                  the ROS install's and the package workspace's setup scripts (defaults: the image's,
#                  /opt/ros/$ROS_DISTRO/setup.bash and /opt/dysl_ws/install/setup.bash; the tests run this
#                  script outside a container with their own, test/test_entrypoint.py)
# Arguments are passed to `ros2 launch dysl_ros dysl.launch.py` (e.g. image_topic:=/camera/color/image_raw).
set -euo pipefail

# ENGINE_DIR: `=` not `:=`, so that an empty value (the node's default) stays empty.
: "${MODEL_DIR:=/models/reference}" "${ENGINE_DIR=/engines}" "${DYSL_BACKEND:=tensorrt}"
: "${DYSL_PRECISION:=fp16}" "${DYSL_FALLBACK:=torch}" "${DYSL_FORCE_ENGINE_UPDATE:=false}" "${ROS_DISTRO:=humble}"
: "${DYSL_UNDERLAY_SETUP:=/opt/ros/${ROS_DISTRO}/setup.bash}" "${DYSL_OVERLAY_SETUP:=/opt/dysl_ws/install/setup.bash}"

case "${DYSL_FORCE_ENGINE_UPDATE,,}" in
    true) force=(--force) rebuilding=", rebuilt as DYSL_FORCE_ENGINE_UPDATE=true" ;;
    false) force=() rebuilding="" ;;
    *)
        echo "dysl_entrypoint: DYSL_FORCE_ENGINE_UPDATE=${DYSL_FORCE_ENGINE_UPDATE}: use true or false" >&2
        exit 2
        ;;
esac

set +u  # ROS setup scripts read unset variables
# shellcheck source=/dev/null
source "${DYSL_UNDERLAY_SETUP}"
# shellcheck source=/dev/null
source "${DYSL_OVERLAY_SETUP}"
set -u

SHARE=$(ros2 pkg prefix dysl_ros)/share/dysl_ros
: "${DYSL_PARAMS:=${SHARE}/config/dysl.yaml}"

# DDS for the processes started here, ros2 launch included: its own ROS node drives dysl_node's
# lifecycle transitions, so it must discover the node under the same rules. The launch file sets the
# node's variables itself, from its localhost_only argument (the last one given wins, as in ros2 launch).
localhost_only=true
for arg in "$@"; do
    case "${arg,,}" in
        localhost_only:=false | localhost_only:=0) localhost_only=false ;;
        localhost_only:=true | localhost_only:=1) localhost_only=true ;;
    esac
done
if [[ "${localhost_only}" == "true" ]]; then
    # Which variables load the profile (Fast DDS 2.x, Humble, reads the FASTRTPS_ name) and keep
    # discovery on this host (Humble reads ROS_LOCALHOST_ONLY=1; ROS_AUTOMATIC_DISCOVERY_RANGE arrived in
    # Iron) depends on the distribution: dysl_ros.wiring has the one definition the launch files use
    # too. A discovery value given with `docker run -e` is kept.
    dds=$(python3 -c 'import sys
from dysl_ros.wiring import localhost_environment, profile_environment
share, distro = sys.argv[1:]
for name, value in profile_environment(f"{share}/config/fastdds.xml", distro).items():
    print(f"profile {name}={value}")
for name, value in localhost_environment(distro).items():
    print(f"discovery {name}={value}")' "${SHARE}" "${ROS_DISTRO}")
    while read -r kind assignment; do
        [[ -n "${assignment}" ]] || continue
        name=${assignment%%=*}
        if [[ "${kind}" == "profile" || -z "${!name+set}" ]]; then
            export "${assignment}"
        fi
        echo "dysl_entrypoint: ${name}=${!name}"
    done <<<"${dds}"
fi

if [[ ! -f "${MODEL_DIR}/vla_config.json" ]]; then
    echo "dysl_entrypoint: no model at MODEL_DIR=${MODEL_DIR} (vla_config.json missing): mount one, e.g." \
         "-v \$PWD/models:/models:ro -e MODEL_DIR=/models/reference" >&2
    exit 2
fi
# build_engines' --out and the node's engine_dir: both resolve an empty value to MODEL_DIR/engines
# (dysl_ros.backends.registry.engine_root), so the node finds exactly what was built here.
out=()
if [[ -n "${ENGINE_DIR}" ]]; then
    mkdir -p "${ENGINE_DIR}"
    out=(--out "${ENGINE_DIR}")
fi
engines_at="${ENGINE_DIR:-${MODEL_DIR}/engines}"

backend="${DYSL_BACKEND}" device=cuda precision="${DYSL_PRECISION}"
if [[ "${backend}" == "onnxruntime" ]]; then
    device=cpu precision=fp32  # the onnxruntime backend runs fp32 on the CPU
fi
if [[ "${backend}" != "torch" ]]; then
    echo "dysl_entrypoint: ${backend} engines for ${MODEL_DIR} in ${engines_at}" \
         "(built when missing${rebuilding}; slow the first time)"
    # colcon installs the console scripts to lib/dysl_ros, which is not on PATH: ros2 run finds them
    # (and passes the exit code through).
    set +e
    ros2 run dysl_ros build_engines --model-dir "${MODEL_DIR}" "${out[@]}" --backend "${backend}" \
        --precision "${precision}" "${force[@]}"
    rc=$?
    set -e
    if [[ ${rc} -eq 2 && "${DYSL_FALLBACK}" == "torch" ]]; then
        echo "dysl_entrypoint: ${backend} engines cannot be built here (see above);" \
             "serving with backend torch on CUDA, as CUDA graphs (DYSL_FALLBACK=torch)" >&2
        backend=torch device=cuda
    elif [[ ${rc} -ne 0 ]]; then
        echo "dysl_entrypoint: build_engines failed (exit ${rc}); nothing launched. Engines refused as built" \
             "from another model or for another TensorRT or GPU (see above) are rebuilt with" \
             "-e DYSL_FORCE_ENGINE_UPDATE=true" >&2
        exit "${rc}"
    fi
fi

# The params file with the model, engines and backend chosen here (every other value as given).
# force_engine_update is always false there: the engines were (re)built just above, and the node
# forcing another rebuild would redo it (minutes for TensorRT) on every start.
PARAMS=$(mktemp -t dysl_params.XXXXXX.yaml)
python3 - "${DYSL_PARAMS}" "${PARAMS}" "${MODEL_DIR}" "${ENGINE_DIR}" "${backend}" "${device}" "${precision}" <<'PY'
import sys

import yaml

source, target, model_dir, engine_dir, backend, device, precision = sys.argv[1:]
with open(source) as f:
    doc = yaml.safe_load(f) or {}
params = doc.setdefault("/**", {}).setdefault("ros__parameters", {})
params.update(
    model_dir=model_dir,
    engine_dir=engine_dir,
    force_engine_update=False,
    backend=backend,
    device=device,
    precision=precision,
)
with open(target, "w") as f:
    yaml.safe_dump(doc, f, sort_keys=False)
print(f"dysl_entrypoint: {target}: model_dir={model_dir} engine_dir={engine_dir or '(model_dir/engines)'} "
      f"backend={backend} device={device} precision={precision}")
PY

exec ros2 launch dysl_ros dysl.launch.py params_file:="${PARAMS}" "$@"
