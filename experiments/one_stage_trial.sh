#!/usr/bin/env bash
# Does one-stage training learn to skip on a given backbone? Distils the shipped recipe's modules
# (λ 0.001, threshold 0.35) twice into MODEL/variants/, once one-stage and once two-stage, and runs
# both on the validation seed 2000 (30 episodes per task; dense too). MODEL needs a layer plan
# (dysl_train calibrate). About 6 + 6 min of distillation and 8 min of episodes on 2 cores.
#
#   MODEL=runs/phase3_a58300c experiments/one_stage_trial.sh   # the densely trained phase-3 backbone
#       (docs/experiments.md, "One-stage training on the densely trained backbone")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
MODEL=${MODEL:?set MODEL, a calibrated model directory}
DEMOS=${DEMOS:-data/demos_mt10_g4,data/demos_hard_g4}
DEVICE=${DEVICE:-auto}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
DISTILL=(--demos "$DEMOS" --stage1-steps 400 --stage2-steps 800 --batch-size 32 --seed 0 --device "$DEVICE"
         --lambda 0.001 --skip-threshold 0.35)
BENCH=(--model-dir "$MODEL" --episodes 30 --seed 2000 --workers 2 --json)
mkdir -p "$MODEL/validation"
"$BIN/dysl_train" distill --model-dir "$MODEL" "${DISTILL[@]}" --one-stage --modules-out "$MODEL/variants/one_stage_trial"
"$BIN/dysl_bench" closed-loop "${BENCH[@]}" --modules-dir "$MODEL/variants/one_stage_trial" --variants dysl \
    > "$MODEL/validation/one_stage_trial.log"
"$BIN/dysl_train" distill --model-dir "$MODEL" "${DISTILL[@]}" --modules-out "$MODEL/variants/two_stage_trial"
"$BIN/dysl_bench" closed-loop "${BENCH[@]}" --modules-dir "$MODEL/variants/two_stage_trial" --variants dense,dysl \
    > "$MODEL/validation/two_stage_trial.log"
for run in one_stage_trial two_stage_trial; do
    printf '%s: ' "$run"; grep -E '^\| `' "$MODEL/validation/$run.log" | head -2 | tr '\n' ' '; echo
done
