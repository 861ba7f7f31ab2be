#!/usr/bin/env bash
# GPU latency figures in one go, on a CUDA box (an H100) with the venv set up (`make setup`, CUDA torch):
#   1. reference model, torch CUDA-graph segments: dense vs DySL replaying the closed-loop decision
#      trace, plus dense on eager segments (--compare-eager: dense eager vs dense CUDA graph);
#   2. reference model, eager torch segments: dense vs DySL (the paper's 3.75x was against eager);
#   3. Llama-2-7B-shaped backbone (fp16, random weights: latency only), the same trace mapped onto
#      its 32 layers, CUDA graph (and dense eager);
#   4. where TensorRT is installed: reference model, TensorRT fp16 plans, dense vs DySL.
# Each step prints its markdown table; its JSON line goes to $OUT/<step>.json, the log to $OUT/<step>.log.
#
#   scripts/gpu_bench.sh                          # OUT defaults to runs/gpu_bench
#   OUT=/tmp/out DEVICE=cuda:1 TRACE=out/bench/decisions.json scripts/gpu_bench.sh
set -euo pipefail

BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/gpu_bench}
MODEL=${MODEL:-models/reference}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-fp16}
TRACE=${TRACE:-$OUT/decisions.json}
ITERATIONS=${ITERATIONS:-}  # empty: whole passes over the trace, at least 200 ticks
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"

step() { printf '\n== %s ==\n' "$*" >&2; }

"$BIN/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device")'

if [[ ! -f "$TRACE" ]]; then
    step "recording DySL's decisions in closed loop -> $TRACE"
    "$BIN/dysl_bench" closed-loop --model-dir "$MODEL" --episodes 10 --seed 2000 --workers 2 \
        --record-trace "$TRACE" --json | tee "$OUT/closed_loop.log"
fi

failed=()
bench() {  # bench NAME ARGS...: one latency run, its JSON line kept apart; a failure does not stop the others
    local name=$1
    shift
    step "$name"
    if "$BIN/dysl_bench" latency --trace "$TRACE" --device "$DEVICE" --json ${ITERATIONS:+--iterations "$ITERATIONS"} \
        "$@" | tee "$OUT/$name.log" && tail -n 1 "$OUT/$name.log" > "$OUT/$name.json" \
        && "$BIN/python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$OUT/$name.json"; then
        echo "-> $OUT/$name.json" >&2
    else
        failed+=("$name")
    fi
}

bench reference_cuda_graph --model-dir "$MODEL" --backend torch --precision "$PRECISION" --compare-eager
bench reference_eager --model-dir "$MODEL" --backend torch --precision "$PRECISION" --eager
bench llama2_7b_cuda_graph --synthetic llama2-7b --backend torch --precision fp16 --compare-eager
if "$BIN/python" -c 'import tensorrt' 2>/dev/null; then  # TensorRT fp16 plans, when installed
    bench reference_tensorrt --model-dir "$MODEL" --backend tensorrt --precision fp16
fi

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (see $OUT/<name>.log and the errors above)" >&2
    exit 1
fi
echo "done: $OUT/*.json"
