#!/usr/bin/env bash
# Shapes-world analogue of the paper's Table 1 verifier rows, N-curves (Fig. 3) and candidate sheets.
#   bash scripts/shapes_table1.sh            # both decoding orders
#   ORDERS=mask EVAL_NUM=4 bash scripts/shapes_table1.sh
# One main.py command per row (the runner's own policies, N=20 candidates), each scored by the
# shapes evaluator; geneval.compare prints the markdown table (docs/results/table1_<order>.md).
# Then scripts/n_curve.py: GenEval overall vs N for every verifier from one decoding pass, a PNG
# plot and per-prompt contact sheets of all candidates with their scores.
# Runs resume: a killed run restarted with the same command finishes what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # the thread count the shipped rows ran with (float reductions may differ with more)
EVAL_NUM=${EVAL_NUM:-1}
N=${N:-20}
BATCH=${BATCH:-80}           # generator rows per policy call (results do not depend on it)
OUT=${OUT:-outputs/table1}
ORDERS=${ORDERS:-mask raster}
for order in $ORDERS; do
  config=configs/shapes.yaml
  [ "$order" = raster ] && config=configs/shapes_raster.yaml
  for policy in none orm_zs orm_ft prm parm parm++ oracle; do
    $PY main.py --config $config --reward_model $policy --eval_num "$EVAL_NUM" --search_num "$N" \
        --batch_size "$BATCH" --outdir "$OUT/$order/$policy"
  done
  $PY -m geneval.compare "no verifier=$OUT/$order/none" "ORM zero-shot=$OUT/$order/orm_zs" \
      "ORM fine-tuned=$OUT/$order/orm_ft" "PRM=$OUT/$order/prm" "PARM=$OUT/$order/parm" \
      "PARM++=$OUT/$order/parm++" "oracle best-of-N=$OUT/$order/oracle" \
      --baseline "no verifier" --oracle "oracle best-of-N" --json docs/results/table1_$order.json \
      | tee docs/results/table1_$order.md
  # PARM's decisions per candidate (clear and stop steps, fallback), small enough to commit: the figures of
  # docs/results.md come from them (python -m scripts.parm_trace_stats docs/results/parm_decisions_*.json).
  $PY -m scripts.parm_trace_stats "$OUT/$order/parm" --save docs/results/parm_decisions_$order.json
  $PY -m scripts.n_curve --config $config --eval-num "$EVAL_NUM" --n 1 2 4 8 16 "$N" \
      --out docs/results/n_curve_$order.json --plot docs/n_curve_$order.png --sheets docs/candidates/$order \
      --num-sheets 8 ${PRM_CURVE:+--prm} run.batch_size="$BATCH"
done
