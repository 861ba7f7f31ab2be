#!/usr/bin/env bash
# GPU latency figures in one go, on a CUDA box (an H100) with the venv set up (`make setup`, CUDA torch):
#   1. reference model, torch CUDA-graph segments: dense vs DySL replaying the closed-loop decision
#      trace, plus dense on eager segments (--compare-eager: dense eager vs dense CUDA graph);
#   2. reference model, eager torch segments: dense vs DySL (the paper's 3.75x was against eager);
#   3. Llama-2-7B-shaped backbone (fp16, random weights: latency only), the same trace mapped onto
#      its 32 layers (its first SYNTHETIC_ITERATIONS ticks), CUDA graph (and dense eager);
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
# The 7B-shaped backbone takes ~50 ms a round (dense graph, DySL, dense eager): the whole 7313-tick
# trace would be 6 min, so it replays the trace's first ticks only (2026-12-04, H200: 600 ticks, 35 s).
SYNTHETIC_ITERATIONS=${SYNTHETIC_ITERATIONS:-600}
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
bench() {  # bench NAME ITERATIONS ARGS...: one latency run, its JSON line kept apart; a failure does not stop the others
    local name=$1 iterations=$2
    shift 2
    step "$name"
    if "$BIN/dysl_bench" latency --trace "$TRACE" --device "$DEVICE" --json ${iterations:+--iterations "$iterations"} \
        "$@" | tee "$OUT/$name.log" && tail -n 1 "$OUT/$name.log" > "$OUT/$name.json" \
        && "$BIN/python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$OUT/$name.json"; then
        echo "-> $OUT/$name.json" >&2
    else
        failed+=("$name")
    fi
}

bench reference_cuda_graph "$ITERATIONS" --model-dir "$MODEL" --backend torch --precision "$PRECISION" --compare-eager
bench reference_eager "$ITERATIONS" --model-dir "$MODEL" --backend torch --precision "$PRECISION" --eager
bench llama2_7b_cuda_graph "$SYNTHETIC_ITERATIONS" --synthetic llama2-7b --backend torch --precision fp16 --compare-eager
# TensorRT fp16 plans, where TensorRT can run (`import tensorrt` alone also succeeds on its type stubs)
if "$BIN/python" -c 'import sys; from dysl_ros.backends.capability import backend_problems as p; sys.exit(bool(p("tensorrt")))'; then
    bench reference_tensorrt "$ITERATIONS" --model-dir "$MODEL" --backend tensorrt --precision fp16
fi

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (see $OUT/<name>.log and the errors above)" >&2
    exit 1
fi
echo "done: $OUT/*.json"
