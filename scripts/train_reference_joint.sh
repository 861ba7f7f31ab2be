#!/usr/bin/env bash
# Reproduces models/reference_joint from scratch: the joint-space reference model (the Sawyer's seven
# joints through position servos, dysl_ros/mt10/joint_env.py). Demonstrations recorded in
# joint space with the arm moving within the Sawyer's velocity and acceleration limits (the limits
# sim_bridge's URDF gives dysl_node), dense behaviour cloning, calibration, two-stage distillation, engines.
# A smaller recipe than scripts/train_reference.sh (12 layers instead of 24, one bc phase of 5000
# steps at batch 32 instead of six phases) so that it trains in about an hour on 2 CPU cores.
#
#   scripts/train_reference_joint.sh                   # writes runs/train/reference_joint
#   OUT=runs/x START_AT=3 scripts/train_reference_joint.sh
#
# Seeds: demos run seeds 1000 and 1001 (validation 2000; the figures of record 4000, `make bench-arm`), bc
# seed 0, calibration and distillation seed 0. On a CPU shared with other work set
# OMP_WAIT_POLICY=PASSIVE (and run it under nice).
set -euo pipefail

BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/train/reference_joint}
DEMOS=${DEMOS:-runs/train/demos_joint_limited}
DEMOS_HARD=${DEMOS_HARD:-runs/train/demos_joint_limited_hard}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-2}
BC_STEPS=${BC_STEPS:-5000}
SKIP_THRESHOLD=${SKIP_THRESHOLD:-0.5}
START_AT=${START_AT:-1}
STOP_AT=${STOP_AT:-5}
export MUJOCO_GL=${MUJOCO_GL:-egl}
step() { local n=$1; shift
         if (( n < START_AT || n > STOP_AT )); then printf '\n== skipped: %s ==\n' "$*"; return 1; fi
         printf '\n== %s ==\n' "$*"; }

if step 1 "1/5 joint-space demonstrations within the arm's limits: MT10 x 60 (seed 1000, DART noise 0.1) + 60 more of push, pick-place, peg-insert-side (seed 1001)"; then
# Noise 0.1, not the end-effector recipe's 0.3: through the joints the expert's peg-insert-side fell
# from 6/10 to 0/10 at 0.3 (2/10 at 0.1), push from 6/10 to 4/10. Within the limits: the expert's
# inverse kinematics asks several times the joints' speed limits near singular poses (button-press-
# topdown's press: up to 8 rad/s on right_j2, limit 1.957), which dysl_node never lets through.
if [[ ! -f "$DEMOS/index.json" ]]; then
    "$BIN/dysl_train" demos --out "$DEMOS" --tasks all --episodes-per-task 60 --seed 1000 --workers "$WORKERS" \
        --arm joint --within-limits --goal-marker-radius 0.04 --action-noise 0.1
fi
if [[ ! -f "$DEMOS_HARD/index.json" ]]; then
    "$BIN/dysl_train" demos --out "$DEMOS_HARD" --tasks push-v3,pick-place-v3,peg-insert-side-v3 \
        --episodes-per-task 60 --seed 1001 --workers "$WORKERS" --arm joint --within-limits --goal-marker-radius 0.04
fi
fi
ALL_DEMOS="$DEMOS,$DEMOS_HARD"

if step 2 "2/5 behaviour cloning: $BC_STEPS steps at batch 32, lr 6e-4, scene loss 0.5, skip loss 1.0 (exits 2..7)"; then
# One phase where the end-effector recipe has six: the scene loss (where the hand, object and goal
# are) and the skip loss (layers i..L-2 left out, i in 2..7: the depth redundancy DySL uses) from the
# first step, batch 32 instead of 64, so that it fits about an hour of a shared 2-core CPU.
"$BIN/dysl_train" bc --demos "$ALL_DEMOS" --out "$OUT" --config-json scripts/reference_joint_config.json \
    --steps "$BC_STEPS" --batch-size 32 --lr 6e-4 --warmup-steps 150 --augment-shift 0 --seed 0 \
    --device "$DEVICE" --checkpoint-every 250 --scene-loss-weight 0.5 --skip-loss-weight 1.0 \
    --skip-min-layer 2 --skip-max-layer 7
fi

if step 3 "3/5 calibration: 20 % static layers"; then
"$BIN/dysl_train" calibrate --model-dir "$OUT" --demos "$ALL_DEMOS" --static-ratio 0.2 --seed 0 --device "$DEVICE"
fi

if step 4 "4/5 two-stage distillation, lambda 0.001"; then
"$BIN/dysl_train" distill --model-dir "$OUT" --demos "$ALL_DEMOS" --stage1-steps 400 --stage2-steps 800 \
    --batch-size 32 --seed 0 --device "$DEVICE" --lambda 0.001 --skip-threshold "$SKIP_THRESHOLD"
fi

if step 5 "5/5 ONNX Runtime engines"; then
"$BIN/build_engines" --model-dir "$OUT"
fi

echo
echo "done: $OUT"
