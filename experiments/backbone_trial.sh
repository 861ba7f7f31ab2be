#!/usr/bin/env bash
# One more bc phase on top of a trained backbone, then the shipped calibration and distillation,
# then the validation runs (seed 2000, never the held-out 3000 and 4000): the experiment behind every
# trial in docs/experiments.md. Nothing here touches models/reference.
#
#   OUT=runs/exp_bc7_exits10 SEED=8 SKIP_MAX=10 experiments/backbone_trial.sh   # a seventh phase on the
#       shipped model, run 2026-12-03 (docs/experiments.md: dense 91.3 %, DySL 88.3 % at 9.61 layers; not shipped)
#   OUT=runs/exp_bc7_skipw2 SEED=11 SKIP_MAX=10 EXTRA="--skip-loss-weight 2.0" experiments/backbone_trial.sh
#       # the skip loss weighed double, run 2026-12-05 (DySL 87.7 % at 9.46 layers, dense 89.7 %; not shipped)
#   INIT=runs/phase3_a58300c OUT=runs/exp_p3_exits6to10 SEED=9 LR=3e-4 SKIP_MIN=6 SKIP_MAX=10 \
#       experiments/backbone_trial.sh   # from the phase-3 model (git archive a58300c models/reference)
#   INIT=runs/exp_p3_exits6to10 OUT=runs/exp_p3b_exits6to10 SEED=10 LR=1e-4 SKIP_MIN=6 SKIP_MAX=10 \
#       experiments/backbone_trial.sh   # a second phase in that regime (docs/experiments.md; not shipped)
#   INIT=runs/phase3_a58300c OUT=runs/exp_p3_smooth70 SEED=9 LR=3e-4 SKIP_MIN=6 SKIP_MAX=10 \
#       EXTRA="--skip-loss-smooth-share 0.7" experiments/backbone_trial.sh   # the skip loss on the 70 %
#       smoothest frames only, run 2026-12-05 (docs/experiments.md; not shipped)
# The three sixth-phase trials of docs/experiments.md started from the phase-5 model (make train's
# runs/train/reference_phase5, or models/reference at commit a3304e5):
#   INIT=$P5 OUT=runs/exp_bc6_exits10 SEED=7 LR=1e-4 SKIP_MAX=10 experiments/backbone_trial.sh   # shipped
#   INIT=$P5 OUT=runs/exp_bc6_plain SEED=6 LR=1e-4 experiments/backbone_trial.sh
#   INIT=$P5 OUT=runs/exp_bc6_skipadapters SEED=5 LR=3e-4 EXTRA="--skip-adapters" experiments/backbone_trial.sh
#   START_AT=2 OUT=... experiments/backbone_trial.sh   # calibrate + distil + validate an existing bc output
#
# Steps: 1 bc (STEPS steps from INIT: 23-34 min on 2 cores at 1600), 2 calibrate + distil
# (6-12 min), 3 validation: dense and DySL at skip thresholds 0.35 and 0.3, 30 episodes per task
# (about 2.3 min each). Prints one line per validation run; logs go to $OUT/validation/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:?set OUT, e.g. runs/exp_bc6}
INIT=${INIT:-models/reference}
# The phase-3 demonstrations (scripts/train_reference.sh step 3).
DEMOS_G4=${DEMOS_G4:-data/demos_mt10_g4}
DEMOS_HARD=${DEMOS_HARD:-data/demos_hard_g4}
STEPS=${STEPS:-1600}
LR=${LR:-1e-4}
SEED=${SEED:-6}
SKIP_MIN=${SKIP_MIN:-4}
SKIP_MAX=${SKIP_MAX:-14}
EXTRA=${EXTRA:-}
DEVICE=${DEVICE:-auto}
START_AT=${START_AT:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ "$START_AT" -le 1 ]; then
# shellcheck disable=SC2086  # EXTRA is a list of flags
"$BIN/dysl_train" bc --demos "$DEMOS_G4,$DEMOS_HARD" --out "$OUT" --init-from "$INIT" --steps "$STEPS" \
    --batch-size 64 --lr "$LR" --warmup-steps 100 --augment-shift 0 --seed "$SEED" --device "$DEVICE" \
    --checkpoint-every 250 --scene-loss-weight 0.5 --skip-loss-weight 1.0 \
    --skip-min-layer "$SKIP_MIN" --skip-max-layer "$SKIP_MAX" $EXTRA
fi
if [ "$START_AT" -le 2 ]; then
# The shipped model's calibration and distillation: train_reference.sh's steps 5 and 6.
START_AT=5 STOP_AT=6 OUT="$OUT" DEMOS_G4="$DEMOS_G4" DEMOS_HARD="$DEMOS_HARD" DEVICE="$DEVICE" BIN="$BIN" \
    scripts/train_reference.sh
fi
MODEL="$OUT" OUT="$OUT/validation" ROUTER=0 BIN="$BIN" experiments/validation_sweep.sh
