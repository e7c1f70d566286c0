#!/usr/bin/env bash
# How the shapes DPO learning rate was chosen: initial-DPO variants trained on round 1's pairs
# (scripts/train_shapes_dpo.sh, STAGES=dpo, must have run), each scored on the HELD-IN suite
# (training-pool prompts, geneval/prompts/shapes/heldin_*; never the evaluation suite), 4 images per prompt.
#   bash scripts/dpo_lr_sweep.sh                         # base + the four variants in the README
#   VARIANTS="1e-5:0 5e-6:0" bash scripts/dpo_lr_sweep.sh   # LR:SFT_COEF pairs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-outputs/shapes_dpo_work}
OUT=${OUT:-outputs/dpo_lr_sweep}
STEPS=${STEPS:-200}
BATCH=${BATCH:-16}
VARIANTS=${VARIANTS:-1e-4:0 1e-4:1 3e-5:1 1e-5:0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
heldin=(run.prompts_file=geneval/prompts/shapes/heldin_prompts.txt
        run.metadata_file=geneval/prompts/shapes/heldin_metadata.jsonl --eval_num 4)
[ -f "$WORK/pairs_dpo.jsonl" ] || { echo "no $WORK/pairs_dpo.jsonl: run STAGES=dpo bash scripts/train_shapes_dpo.sh" >&2; exit 2; }
$PY main.py --config configs/shapes.yaml "${heldin[@]}" --outdir "$OUT/heldin_base" | tail -1
for variant in $VARIANTS; do
    IFS=: read -r lr sft <<< "$variant"
    name=lr${lr}_sft${sft}
    $PY -m dpo.train --pairs "$WORK/pairs_dpo.jsonl" --init weights/shapes --out "$OUT/weights_$name" \
        --steps "$STEPS" --batch-size "$BATCH" --lr "$lr" --sft-coef "$sft" --seed 0 --checkpoint-every 1000 > /dev/null
    echo -n "$name: "
    $PY main.py --config configs/shapes.yaml "${heldin[@]}" generation.weights="$OUT/weights_$name" \
        --outdir "$OUT/heldin_$name" | tail -1
done
