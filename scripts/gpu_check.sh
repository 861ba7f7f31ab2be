#!/usr/bin/env bash
# Every GPU check of the project in one run, on a CUDA machine WITHOUT the project's venv: a plain
# python3 with torch, onnx, onnxruntime, transformers, safetensors, tqdm, cuda-python and pytest (no
# ROS, no MuJoCo), e.g. a lent cloud GPU. Nothing here needs Meta-World: the decision trace and the few
# demonstrations it reads were made on a CPU machine and travel with the tree.
#   1. the machine and library versions;
#   2. test/test_backends_gpu.py: the CUDA-graph backend against eager torch fp32, fp32 and fp16
#      (its TensorRT cases skip with the reason where TensorRT is absent); test/test_cuda_runtime.py:
#      the TensorRT backend's device buffers and stream through cuda-python;
#   3. scripts/gpu_bench.sh: reference model on CUDA graphs and on eager torch, dense vs DySL
#      replaying the closed-loop decision trace; the Llama-2-7B-shaped backbone (latency only);
#   4. training speed on the GPU: a bc phase as the reference recipe's sixth (batch 64, scene and
#      skip losses) and a two-stage distillation (batch 32), each timed from its own log.
#
#   TRACE=out/bench/decisions.json DEMOS=<a small demos dir> OUT=runs/gpu_check scripts/gpu_check.sh
#
# TRACE comes from `make bench` (out/bench/decisions.json); DEMOS may be any demonstrations dir
# with Meta-World states (phase-3 demos or later), a few episodes per task are enough for timing.
# Everything printed also goes to $OUT/check.log; the latency JSON lines and logs to $OUT/bench/.
set -uo pipefail

PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
TRACE=${TRACE:-out/bench/decisions.json}
DEMOS=${DEMOS:?DEMOS: a demonstrations directory with states (dysl_train demos ... --goal-marker-radius 0.04)}
BC_STEPS=${BC_STEPS:-300}
DISTILL_STEPS=${DISTILL_STEPS:-200}
TRAIN_DEVICE=${TRAIN_DEVICE:-cuda}  # cpu: a dry run of the script on a machine without a GPU
WORK=$(mktemp -d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT/bench"
exec > >(tee "$OUT/check.log") 2>&1

# Console scripts as the venv would have them, over this python3.
PYTHON=$(command -v "$PY")
[[ $PYTHON == /* ]] || PYTHON=$PWD/$PYTHON
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON" > "$WORK/bin/python"
for tool in bench:dysl_bench train:dysl_train; do
    printf '#!/bin/sh\nexec "%s" -m dysl_ros.tools.%s "$@"\n' "$PYTHON" "${tool%%:*}" > "$WORK/bin/${tool##*:}"
done
chmod +x "$WORK"/bin/*

failed=()
section() { printf '\n==== %s (%s) ====\n' "$*" "$(date -u +%H:%M:%S)"; }

section "1 machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
"$PYTHON" - <<'EOF'
import platform, torch, onnxruntime, transformers
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"onnxruntime {onnxruntime.__version__}, transformers {transformers.__version__}")
if torch.cuda.is_available():
    print("GPU:", torch.cuda.get_device_name(0), "compute capability", torch.cuda.get_device_capability(0))
EOF

section "2 parity: test/test_backends_gpu.py"
# --noconftest: the shared conftest sets up ROS (rclpy), which this machine does not have; these
# tests start no ROS process.
"$PYTHON" -m pytest --noconftest -p no:cacheprovider -q -s -rs test/test_backends_gpu.py test/test_cuda_runtime.py \
    || failed+=(parity)

section "3 latency: scripts/gpu_bench.sh"
BIN="$WORK/bin" OUT="$OUT/bench" TRACE="$TRACE" bash scripts/gpu_bench.sh || failed+=(latency)

section "4 training speed on the GPU"
# bc: the sixth phase of scripts/train_reference.sh (from the shipped weights, so the losses are
# the trained model's), BC_STEPS steps; samples/s per 50 steps from its log.
"$WORK/bin/dysl_train" bc --demos "$DEMOS" --out "$WORK/bc" --init-from models/reference --steps "$BC_STEPS" \
    --batch-size 64 --lr 1e-4 --warmup-steps 100 --augment-shift 0 --seed 7 --device "$TRAIN_DEVICE" --log-every 50 \
    --scene-loss-weight 0.5 --skip-loss-weight 1.0 --skip-min-layer 4 --skip-max-layer 10 \
    && "$PYTHON" - "$WORK/bc/train_log.jsonl" <<'EOF' || failed+=(bc)
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for row in rows:
    print(f"bc step {row['step']}: loss {row['loss']:.4f}, {row['samples_per_s']:.0f} samples/s "
          f"({64 / row['samples_per_s'] * 1000:.1f} ms per step of 64), elapsed {row['elapsed_s']:.1f} s")
steady = [r["samples_per_s"] for r in rows[1:]] or [rows[-1]["samples_per_s"]]
print(f"bc steady rate (after the first 50 steps): {sum(steady) / len(steady):.0f} samples/s")
EOF
# distill: the recipe's stage sizes scaled down (400 + 800 steps there), batch 32.
start=$(date +%s%N)
"$WORK/bin/dysl_train" distill --model-dir models/reference --demos "$DEMOS" --stage1-steps "$DISTILL_STEPS" \
    --stage2-steps "$DISTILL_STEPS" --batch-size 32 --seed 0 --device "$TRAIN_DEVICE" --lambda 0.001 \
    --modules-out "$WORK/distill" || failed+=(distill)
echo "distill: $((2 * DISTILL_STEPS)) steps (stage 1 + stage 2, with loading) in $((($(date +%s%N) - start) / 1000000)) ms"

section "done"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks ran; latency JSON in $OUT/bench/"
