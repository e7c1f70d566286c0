#!/usr/bin/env bash
# Shapes-world analogue of the paper's alignment and integration rows (Tables 1-3), mask-predict order.
#   bash scripts/shapes_dpo_table.sh        (after scripts/train_shapes_dpo.sh and scripts/shapes_table1.sh)
# Alignment: the base generator and the three DPO checkpoints decoding plainly, EVAL_NUM_PLAIN images
# per prompt. Integration: the paper's best combination, PARM verification at N=20 on iterative DPO with
# PARM guidance (EVAL_NUM images per prompt, as Table 1, whose rows are reused from $T1). Other
# combinations: add rows with --reward_model orm_ft|parm --dpo_model dpo|dpo_iter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
EVAL_NUM_PLAIN=${EVAL_NUM_PLAIN:-4}
EVAL_NUM=${EVAL_NUM:-1}
BATCH=${BATCH:-80}
OUT=${OUT:-outputs/dpo_table}
T1=${T1:-outputs/table1/mask}
C=configs/shapes.yaml
$PY main.py --config $C --eval_num "$EVAL_NUM_PLAIN" --outdir "$OUT/plain/base"
for dpo in dpo dpo_iter dpo_iter_parm_gudie; do
  $PY main.py --config $C --dpo_model $dpo --eval_num "$EVAL_NUM_PLAIN" --outdir "$OUT/plain/$dpo"
done
$PY -m geneval.compare "base generator=$OUT/plain/base" "DPO=$OUT/plain/dpo" "iterative DPO=$OUT/plain/dpo_iter" \
    "iterative DPO + PARM guidance=$OUT/plain/dpo_iter_parm_gudie" --json docs/results/dpo_alignment.json \
    | tee docs/results/dpo_alignment.md
$PY main.py --config $C --reward_model parm --dpo_model dpo_iter_parm_gudie --eval_num "$EVAL_NUM" \
    --batch_size "$BATCH" --outdir "$OUT/parm/dpo_iter_parm_gudie"
$PY -m geneval.compare "base=$T1/none" "base + ORM ft=$T1/orm_ft" "base + PARM=$T1/parm" \
    "iterative DPO + PARM guidance + PARM=$OUT/parm/dpo_iter_parm_gudie" "oracle best-of-N=$T1/oracle" \
    --baseline base --oracle "oracle best-of-N" \
    --json docs/results/dpo_integration.json | tee docs/results/dpo_integration.md
