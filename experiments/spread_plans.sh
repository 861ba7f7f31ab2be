#!/usr/bin/env bash
# Issue 30's cheap trials: does a layer plan that spreads the static layers over the depth let the
# shipped backbone's DySL beat its own coins? The shipped backbone, DySL modules re-distilled for each
# plan as shipped (lambda 0.001, 400 + 800 steps, skip threshold 0.35) on fresh demonstrations, then
# dense / DySL / random skip (DySL's structure, coins at its layers) on the validation seed 2000 only.
#
#   experiments/spread_plans.sh                          # the plans below, 10 episodes per task
#   PLANS="maxgap6" EPISODES=30 experiments/spread_plans.sh
#
# Plans: lowest (the shipped rule: 20 % lowest-similarity layers), maxgapN (the lowest-similarity set
# with no gap longer than N: dysl_train calibrate --max-gap N). Results: $OUT/<plan>/validation.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/plans}
DEMOS=${DEMOS:-$OUT/demos}
PLANS=${PLANS:-"lowest maxgap10 maxgap8"}
EPISODES=${EPISODES:-10}
VARIANTS=${VARIANTS:-dense,dysl,random_skip}
export OMP_WAIT_POLICY=PASSIVE MUJOCO_GL=${MUJOCO_GL:-egl}

if [[ ! -f "$DEMOS/index.json" ]]; then  # 30 per task with the phase-3 demos' settings (DART noise 0.3)
    "$BIN/dysl_train" demos --out "$DEMOS" --tasks all --episodes-per-task 30 --seed 1000 --workers 2 \
        --action-noise 0.3 --no-progress
fi
for plan in $PLANS; do
    case "$plan" in
        lowest) rule=() ;;
        maxgap*) rule=(--max-gap "${plan#maxgap}") ;;
        *) echo "unknown plan $plan" >&2; exit 2 ;;
    esac
    dir="$OUT/$plan"
    if [[ ! -f "$dir/dysl_modules.safetensors" ]]; then
        rm -rf "$dir" && mkdir -p "$dir"
        for file in models/reference/*; do  # the backbone and its records, none of the DySL files
            case "$(basename "$file")" in layer_plan.json|layer_similarity.png|dysl*|variants|engines) ;;
                *) cp -r "$file" "$dir/" ;; esac
        done
        "$BIN/dysl_train" calibrate --model-dir "$dir" --demos "$DEMOS" --static-ratio 0.2 "${rule[@]}" --seed 0
        "$BIN/dysl_train" distill --model-dir "$dir" --demos "$DEMOS" --stage1-steps 400 --stage2-steps 800 \
            --batch-size 32 --seed 0 --lambda 0.001 --skip-threshold 0.35
    fi
    "$BIN/dysl_bench" closed-loop --model-dir "$dir" --episodes "$EPISODES" --seed 2000 --workers 2 \
        --variants "$VARIANTS" --no-progress --json ${EXTRA:-} | tail -n 1 > "$dir/validation.json"
    "$BIN/python" - "$dir/validation.json" "$plan" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
cells = [f"{name} {v['success_rate']:.1%} at {v['mean_executed_layers']:.2f}" for name, v in report["variants"].items()]
print(f"{sys.argv[2]}: " + ", ".join(cells))
PY
done
