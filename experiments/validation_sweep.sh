#!/usr/bin/env bash
# The choices made on the validation seed 2000 (never the held-out 3000 of `make bench`): DySL's skip
# threshold within the 40 % layer budget, and the router's threshold that matches DySL's executed
# layers. 30 episodes per task, each run on the same episodes; about 2 min per run on 2 cores.
# Writes one JSON log per run to out/validation/ and prints success and executed layers.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
MODEL=${MODEL:-models/reference}
OUT=${OUT:-out/validation}
mkdir -p "$OUT"
bench() {  # bench NAME ARGS...
    local name=$1; shift
    "$BIN/dysl_bench" closed-loop --model-dir "$MODEL" --episodes 30 --seed 2000 --workers 2 --no-progress \
        --json "$@" > "$OUT/$name.log" 2>&1
    tail -n 1 "$OUT/$name.log" | "$BIN/python" -c '
import json, sys
for variant, v in json.loads(sys.stdin.read())["variants"].items():
    print("%s: %s %.1f %% at %.2f layers" % (sys.argv[1], variant, 100 * v["success_rate"], v["mean_executed_layers"]))' "$name"
}
bench dense --variants dense
for threshold in 0.3 0.35; do
    bench "dysl_t$threshold" --variants dysl --skip-threshold "$threshold"
done
if [ "${ROUTER:-1}" = 1 ]; then  # ROUTER=0: a model directory without variants/router
    for threshold in 0.33 0.34; do
        bench "router_t$threshold" --variants router --router-threshold "$threshold"
    done
fi
