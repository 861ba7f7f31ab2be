#!/usr/bin/env bash
# DySL's continuity threshold eta (allow points, Eq. 2-3) against the skip threshold, on the
# validation seed 2000 only (never the held-out 3000 / 4000). Each point runs `dysl` alone on the
# same episodes; dense of the same episodes is run once. Points are "eta:threshold" pairs.
#
#   POINTS="0.06:0.25 0.13:0.4" EPISODES=100 experiments/eta_sweep.sh
#
# Writes one JSON log per run to $OUT and prints success and executed layers. About 1.2 min per
# point at 30 episodes per task, 4 min at 100, on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
MODEL=${MODEL:-models/reference}
EPISODES=${EPISODES:-30}
SEED=${SEED:-2000}
OUT=${OUT:-out/eta_sweep/seed${SEED}_e${EPISODES}}
POINTS=${POINTS:-"0.06:0.25 0.08:0.3 0.13:0.4 0.16:0.45"}
DENSE=${DENSE:-1}
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
bench() {  # bench NAME ARGS...
    local name=$1; shift
    "$BIN/dysl_bench" closed-loop --model-dir "$MODEL" --episodes "$EPISODES" --seed "$SEED" --workers 2 \
        --no-progress --json "$@" > "$OUT/$name.log" 2>&1
    tail -n 1 "$OUT/$name.log" | "$BIN/python" -c '
import json, sys
for variant, v in json.loads(sys.stdin.read())["variants"].items():
    tasks = " ".join("%s %.0f" % (t.split("-v")[0], 100 * r["success_rate"]) for t, r in v["per_task"].items()
                     if r["success_rate"] < 1.0)
    print("%s: %s %.1f %% at %.2f layers (%s)" % (sys.argv[1], variant, 100 * v["success_rate"],
                                               v["mean_executed_layers"], tasks), flush=True)' "$name"
}
if [ "$DENSE" = 1 ]; then bench dense --variants dense; fi
for point in $POINTS; do
    eta=${point%%:*}; threshold=${point##*:}
    bench "dysl_eta${eta}_t${threshold}" --variants dysl --eta "$eta" --skip-threshold "$threshold"
done
