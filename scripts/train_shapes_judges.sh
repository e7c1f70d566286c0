#!/usr/bin/env bash
# Reproduce the shipped shapes-world judges (weights/shapes/judges/) and their held-out accuracy.
#   bash scripts/train_shapes_judges.sh
# 1. zero-shot ORM on rendered scenes with matching and perturbed captions, 30% of the scenes changed
#    (an object dropped, added, recoloured or reshaped), plus a per-token shape/colour head (never a
#    generated image),
# 2. labelled generations of the shipped generator, both decoding orders: training-pool prompts for
#    training, the evaluation prompts (other seeds) for the accuracy report (training/judge_data.py),
# 3. ORM ft, PRM, PARM and PARM++ fine-tuned from the zero-shot ORM on them, with cross-entropy plus a
#    within-prompt ranking loss (a correct and a wrong final of one prompt in every pair),
# 4. accuracy of every judge on the held-out generations (docs/results/judges.json).
# Every step is seeded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
J=weights/shapes/judges
D=data/judges
$PY -m training.train_judges --recipe orm_zs --num-examples 100000 --eval-examples 2000 --steps 2400 \
    --batch-size 128 --lr 1e-3 --warmup 100 --scene-change 0.3 --scene-weight 0.5 --out $J/orm_zs
for order in mask raster; do
  $PY -m training.judge_data --order $order --suite train --groups 320 --prm-groups 80 --out $D/${order}_train.pt
  $PY -m training.judge_data --order $order --suite heldout --candidates 4 --prm-groups 73 --prm-rows 1 \
      --out $D/${order}_heldout.pt
done
# steps and learning rate per recipe: the ORM/PRM sets are small (5-7K examples), PARM's large (85K)
for spec in orm_ft:500:5e-4 prm:400:5e-4 parm:700:1e-3 parm++:700:1e-3; do
  IFS=: read -r recipe steps lr <<< "$spec"
  $PY -m training.train_judges --recipe "$recipe" --init $J/orm_zs --data $D/mask_train.pt \
      $D/raster_train.pt --steps "$steps" --batch-size 128 --lr "$lr" --pairwise-weight 1 --pair-batch 32 \
      --out "$J/$recipe"
done
$PY -m training.judge_accuracy --data $D/mask_heldout.pt $D/raster_heldout.pt \
    --judges $J/orm_zs $J/orm_ft $J/prm $J/parm "$J/parm++" --out docs/results/judges.json
