#!/usr/bin/env bash
# Reproduces the shipped reference model (models/reference) from scratch: demonstrations, dense
# behaviour cloning in six phases, calibration, two-stage distillation and the ablations' modules.
#
#   make train                      # writes runs/train/reference (the shipped model is not touched)
#   OUT=runs/x DEVICE=cuda make train
#   START_AT=5 OUT=runs/x make train  # steps 5-8 only (calibrate, distil) on a bc output already in runs/x
#   START_AT=5 STOP_AT=6 ...           # steps 5 and 6
#
# Seeds: demos run seeds 1000 and 1001 (evaluation uses 2000 and up), bc seeds 0 to 4 and 7 (six
# phases; 5 and 6 went to trial phases not shipped), distillation seed 0. On a CPU shared with
# other work set OMP_WAIT_POLICY=PASSIVE.
# Every step is deterministic for a given device and library versions; CPU vs GPU results differ
# in the last bits (float reduction order), not in what the commands do.
set -euo pipefail

BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/train/reference}
DEMOS=${DEMOS:-runs/train/demos_mt10}
# Phase 3's demonstrations: the goal drawn at 4 cm, Meta-World's state recorded for the scene loss,
# the expert's executed hand actions perturbed (DART, noise std 0.3; labels stay clean).
DEMOS_G4=${DEMOS_G4:-runs/train/demos_mt10_g4}
DEMOS_HARD=${DEMOS_HARD:-runs/train/demos_hard_g4}
DEMOS3="$DEMOS_G4,$DEMOS_HARD"
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-2}
BC_STEPS=${BC_STEPS:-4000}
BC2_STEPS=${BC2_STEPS:-2500}
BC3_STEPS=${BC3_STEPS:-4000}
BC4_STEPS=${BC4_STEPS:-2000}
BC5_STEPS=${BC5_STEPS:-2500}
BC6_STEPS=${BC6_STEPS:-1600}
PHASE1=${PHASE1:-${OUT}_phase1}
PHASE2=${PHASE2:-${OUT}_phase2}
PHASE3=${PHASE3:-${OUT}_phase3}
PHASE4=${PHASE4:-${OUT}_phase4}
PHASE5=${PHASE5:-${OUT}_phase5}
LAMBDA=${LAMBDA:-0.001}
# Chosen on the validation seed 2000 with lambda 0.001 (experiments/validation_sweep.sh, 30 episodes per
# task, dense 89.7 %): 0.3 -> 88.3 % at 9.11 layers, 0.35 -> 88.7 % at 9.54 (the best within 40 % of
# the layers). Only inference reads it; distillation writes it to dysl.json.
SKIP_THRESHOLD=${SKIP_THRESHOLD:-0.35}
SWEEP_LAMBDAS=${SWEEP_LAMBDAS:-0.002 0.005}
export MUJOCO_GL=${MUJOCO_GL:-egl}

START_AT=${START_AT:-1}
STOP_AT=${STOP_AT:-8}
# step N "title": prints the title and returns whether step N runs (START_AT <= N <= STOP_AT).
step() { local n=$1; shift
         if (( n < START_AT || n > STOP_AT )); then printf '\n== skipped: %s ==\n' "$*"; return 1; fi
         printf '\n== %s ==\n' "$*"; }

if step 1 "1/8 demonstrations: MT10, 50 episodes per task, run seed 1000"; then
if [[ ! -f "$DEMOS/index.json" ]]; then
    "$BIN/dysl_train" demos --out "$DEMOS" --tasks all --episodes-per-task 50 --seed 1000 --workers "$WORKERS"
fi
fi

if step 2 "2/8 dense behaviour cloning: $BC_STEPS steps at lr 6e-4, then $BC2_STEPS at lr 3e-4, batch 64"; then
"$BIN/dysl_train" bc --demos "$DEMOS" --out "$PHASE1" --steps "$BC_STEPS" --batch-size 64 --lr 6e-4 \
    --warmup-steps 200 --augment-shift 4 --seed 0 --device "$DEVICE" --checkpoint-every 250
# Second phase: the loss was still falling when the first schedule ended; a fresh, lower schedule
# from its weights (fresh optimiser) went on from 0.060 to 0.047 and raised dense success.
"$BIN/dysl_train" bc --demos "$DEMOS" --out "$PHASE2" --init-from "$PHASE1" --steps "$BC2_STEPS" \
    --batch-size 64 --lr 3e-4 --warmup-steps 100 --augment-shift 4 --seed 1 --device "$DEVICE" \
    --checkpoint-every 250
fi

if step 3 "3/8 demonstrations for phase 3: goal marker 4 cm, states recorded, DART noise 0.3; MT10 x 100 (seed 1000) + 150 more of the four hardest tasks (seed 1001)"; then
if [[ ! -f "$DEMOS_G4/index.json" ]]; then
    "$BIN/dysl_train" demos --out "$DEMOS_G4" --tasks all --episodes-per-task 100 --seed 1000 \
        --workers "$WORKERS" --goal-marker-radius 0.04 --action-noise 0.3
fi
if [[ ! -f "$DEMOS_HARD/index.json" ]]; then
    "$BIN/dysl_train" demos --out "$DEMOS_HARD" --tasks reach-v3,push-v3,pick-place-v3,peg-insert-side-v3 \
        --episodes-per-task 150 --seed 1001 --workers "$WORKERS" --goal-marker-radius 0.04 --action-noise 0.3
fi
fi

if step 4 "4/8 bc phases 3-6: $BC3_STEPS steps at lr 5e-4 on the phase-3 demos, scene loss 0.5, no image shift; then $BC4_STEPS and $BC5_STEPS at lr 3e-4 and $BC6_STEPS at lr 1e-4 with the skip loss"; then
# The first two phases left a policy that ignored where the goal was: on the clean demos the hand's
# position already told the way (every episode a straight line from one start). The noisy demos
# break that shortcut; the scene loss teaches the stem and the action queries where things are; no
# random shift: with the camera fixed, shifting the picture only hid where the goal is
# (experiments/vision_ablation.py).
"$BIN/dysl_train" bc --demos "$DEMOS3" --out "$PHASE3" --init-from "$PHASE2" --steps "$BC3_STEPS" \
    --batch-size 64 --lr 5e-4 --warmup-steps 200 --augment-shift 0 --seed 2 --device "$DEVICE" \
    --checkpoint-every 250 --scene-loss-weight 0.5
# Phase 4: the same, plus the skip loss (the chunk with layers i..22 left out, i = 4..22, must be
# right too). Densely trained, this 24-layer stack kept no redundancy: DySL lost 20 points at 11.4
# layers; after this phase it lost 1 at 10.7 on seed 2000.
"$BIN/dysl_train" bc --demos "$DEMOS3" --out "$PHASE4" --init-from "$PHASE3" --steps "$BC4_STEPS" \
    --batch-size 64 --lr 3e-4 --warmup-steps 100 --augment-shift 0 --seed 3 --device "$DEVICE" \
    --checkpoint-every 250 --scene-loss-weight 0.5 --skip-loss-weight 1.0 --skip-min-layer 4
# Phase 5: the skip loss's exits drawn from 4..14 only. DySL mostly leaves the stack early (about 9
# of 24 layers executed), and phase 4 spent 8 of its 19 exits (15..22) on depths that DySL
# rarely takes. On seed 2000 DySL near 9 layers went from 83 % (phase 4, threshold 0.35, 9.3 layers)
# to 88 % (threshold 0.3, 9.0 layers); dense stayed at 89 %.
"$BIN/dysl_train" bc --demos "$DEMOS3" --out "$PHASE5" --init-from "$PHASE4" --steps "$BC5_STEPS" \
    --batch-size 64 --lr 3e-4 --warmup-steps 100 --augment-shift 0 --seed 4 --device "$DEVICE" \
    --checkpoint-every 250 --scene-loss-weight 0.5 --skip-loss-weight 1.0 --skip-min-layer 4 \
    --skip-max-layer 14
# Phase 6: exits from 4..10 only, at a low rate (experiments/backbone_trial.sh, SKIP_MAX=10 SEED=7). On
# seed 2000 (30 episodes per task) dense went from 88.7 to 89.7 % and DySL at threshold 0.35 from
# 87.3 % (9.49 layers) to 88.7 % (9.54); the same phase with exits to 14 (seed 6) gave 86.7 %.
"$BIN/dysl_train" bc --demos "$DEMOS3" --out "$OUT" --init-from "$PHASE5" --steps "$BC6_STEPS" \
    --batch-size 64 --lr 1e-4 --warmup-steps 100 --augment-shift 0 --seed 7 --device "$DEVICE" \
    --checkpoint-every 250 --scene-loss-weight 0.5 --skip-loss-weight 1.0 --skip-min-layer 4 \
    --skip-max-layer 10
fi
DEMOS="$DEMOS3"  # calibration and distillation see what the policy is evaluated on: the 4 cm marker
# What every distillation below shares.
DISTILL=(--demos "$DEMOS" --stage1-steps 400 --stage2-steps 800 --batch-size 32 --seed 0 --device "$DEVICE")

if step 5 "5/8 calibration: 20 % static layers"; then
"$BIN/dysl_train" calibrate --model-dir "$OUT" --demos "$DEMOS" --static-ratio 0.2 --seed 0 --device "$DEVICE"
fi

if step 6 "6/8 two-stage distillation, lambda $LAMBDA"; then
"$BIN/dysl_train" distill --model-dir "$OUT" "${DISTILL[@]}" --lambda "$LAMBDA" --skip-threshold "$SKIP_THRESHOLD"
fi

if step 7 "7/8 speed/accuracy points: lambda $SWEEP_LAMBDAS (scripts/speed_accuracy.py plots them)"; then
for lam in $SWEEP_LAMBDAS; do
    "$BIN/dysl_train" distill --model-dir "$OUT" "${DISTILL[@]}" --lambda "$lam" --skip-threshold "$SKIP_THRESHOLD" \
        --modules-out "$OUT/variants/lambda_$lam"
done
fi

if step 8 "8/8 ablations: one-stage, no static layers, per-layer router"; then
"$BIN/dysl_train" distill --model-dir "$OUT" "${DISTILL[@]}" --lambda "$LAMBDA" --skip-threshold "$SKIP_THRESHOLD" \
    --one-stage --modules-out "$OUT/variants/one_stage"
"$BIN/dysl_train" distill --model-dir "$OUT" "${DISTILL[@]}" --lambda "$LAMBDA" --skip-threshold "$SKIP_THRESHOLD" \
    --plan last-layer-only --modules-out "$OUT/variants/no_static"
"$BIN/dysl_train" router --model-dir "$OUT" "${DISTILL[@]}" --lambda "$LAMBDA" --modules-out "$OUT/variants/router"
fi

echo
echo "done: $OUT"
