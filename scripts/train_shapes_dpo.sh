#!/usr/bin/env bash
# Train the shapes-world DPO checkpoints (paper sections 3.3-3.4) on CPU:
#   weights/shapes/dpo/dpo                   initial DPO: base model's samples, random yes/no pairs
#   weights/shapes/dpo/dpo_iter              iterative DPO: dpo's own samples, relabelled, from dpo
#   weights/shapes/dpo/dpo_iter_parm_gudie   iterative DPO + PARM guidance (dpo/guidance.py), from dpo
# (``gudie``: upstream's checkpoint spelling, main.py:141; main.py also accepts ``guide``.)
#
#   bash scripts/train_shapes_dpo.sh                 # about 25 minutes on 2 CPU cores
#   NUM_PROMPTS=40 K=4 STEPS=20 OUT=/tmp/dpo WORK=/tmp/dpo_work bash scripts/train_shapes_dpo.sh   # smoke run
#
# Each round: main.py generates K images per prompt of a seeded subset of the shapes TRAINING pool
# (geneval/prompts/shapes/train_metadata.jsonl, disjoint from the evaluation suite), geneval.evaluate
# labels them (or a judge, LABELS=judge), dpo.pairs builds the pairs (prompts whose images all share
# one label are dropped), and dpo.train trains under accelerate launch. Every stage resumes: rerunning
# the script after a kill skips finished generations, evaluations and trainings.
# Then evaluate, e.g.:
#   python main.py --config configs/shapes.yaml --dpo_model weights/shapes/dpo/dpo_iter run.outdir=outputs/shapes_dpo_iter
set -euo pipefail
cd "$(dirname "$0")/.."

# -- size knobs ------------------------------------------------------------------------------------
NUM_PROMPTS=${NUM_PROMPTS:-240}       # training-pool prompts per round
K=${K:-8}                             # images per prompt (run.eval_num)
PAIRS_PER_PROMPT=${PAIRS_PER_PROMPT:-2}
STEPS=${STEPS:-200}                   # optimiser steps per training
BATCH=${BATCH:-8}                     # pairs per process per step (global batch = BATCH * NPROC)
LR=${LR:-1e-5}                        # upstream's; 1e-4 and 3e-5 made held-in GenEval worse (README)
BETA=${BETA:-0.1}
NPROC=${NPROC:-2}                     # processes for generation and training (one CPU core each)
SEED=${SEED:-0}
STAGES=${STAGES:-dpo dpo_iter guided}   # a subset runs part of the loop (later stages read earlier outputs)
# -- inputs and outputs ----------------------------------------------------------------------------
PY=${PY:-.venv/bin/python}
BASE=${BASE:-weights/shapes}                      # generator the first round starts from
PARM=${PARM:-weights/shapes/judges/parm}          # PARM judge for the guided variant
LABELS=${LABELS:-geneval}                         # geneval | judge
LABEL_JUDGE=${LABEL_JUDGE:-weights/shapes/judges/orm}   # judge checkpoint when LABELS=judge
OUT=${OUT:-weights/shapes/dpo}
WORK=${WORK:-outputs/shapes_dpo_work}

export OMP_NUM_THREADS=1
if [ ! -f "$PARM/config.json" ]; then
    echo "no PARM judge at $PARM (needed for dpo_iter_parm_gudie); train it first or set PARM=" >&2
    exit 2
fi
label_args=(--labels "$LABELS")
if [ "$LABELS" = judge ]; then label_args+=(--judge "$LABEL_JUDGE"); fi

launch() {  # launch MODULE ARGS...: NPROC processes (a gloo group on CPU) or one plain process
    local module=$1; shift
    if [ "$NPROC" -gt 1 ]; then
        # accelerate_ddp.yaml starts NPROC processes; without CUDA dpo.train joins them as a gloo group.
        "$PY" -m accelerate.commands.launch --config_file dpo/accelerate_ddp.yaml --num_processes "$NPROC" \
            -m "$module" "$@"
    else
        "$PY" -m "$module" "$@"
    fi
}

generate() {  # generate WEIGHTS OUTDIR: K labelled candidates per prompt
    local weights=$1 outdir=$2
    local args=(main.py --config configs/shapes.yaml run.outdir="$outdir" run.eval_num="$K" run.seed="$SEED"
                run.prompts_file="$WORK/prompts/prompts.txt" run.metadata_file="$WORK/prompts/metadata.jsonl"
                generation.weights="$weights" run.evaluate=false)
    if [ "$NPROC" -gt 1 ]; then
        "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "${args[@]}"
    else
        "$PY" "${args[@]}"
    fi
    if [ "$LABELS" = geneval ]; then
        "$PY" -m geneval.evaluate "$outdir" --config configs/shapes.yaml
    fi
}

train() {  # train PAIRS INIT OUT
    launch dpo.train --pairs "$1" --init "$2" --reference "$2" --out "$3" --steps "$STEPS" \
        --batch-size "$BATCH" --lr "$LR" --beta "$BETA" --seed "$SEED" --checkpoint-every 50
}

"$PY" -m dpo.prompt_subset --num "$NUM_PROMPTS" --seed "$SEED" --out "$WORK/prompts"

for stage in $STAGES; do
    case $stage in
    dpo)
        echo "== round 1: initial DPO from $BASE"
        generate "$BASE" "$WORK/gen_base"
        "$PY" -m dpo.pairs "$WORK/gen_base" --out "$WORK/pairs_dpo.jsonl" "${label_args[@]}" \
            --pairs-per-prompt "$PAIRS_PER_PROMPT" --seed "$SEED"
        train "$WORK/pairs_dpo.jsonl" "$BASE" "$OUT/dpo" ;;
    dpo_iter)
        echo "== round 2: iterative DPO from $OUT/dpo (its own samples, relabelled)"
        generate "$OUT/dpo" "$WORK/gen_dpo"
        "$PY" -m dpo.pairs "$WORK/gen_dpo" --out "$WORK/pairs_dpo_iter.jsonl" "${label_args[@]}" \
            --pairs-per-prompt "$PAIRS_PER_PROMPT" --seed "$SEED"
        train "$WORK/pairs_dpo_iter.jsonl" "$OUT/dpo" "$OUT/dpo_iter" ;;
    guided)
        echo "== round 2, PARM-guided: same samples, PARM-chosen pairs and confidence weights"
        generate "$OUT/dpo" "$WORK/gen_dpo"  # resumes: already there after the dpo_iter stage
        "$PY" -m dpo.pairs "$WORK/gen_dpo" --out "$WORK/pairs_dpo_iter_parm.jsonl" "${label_args[@]}" \
            --mode parm --parm "$PARM" --pairs-per-prompt "$PAIRS_PER_PROMPT"
        train "$WORK/pairs_dpo_iter_parm.jsonl" "$OUT/dpo" "$OUT/dpo_iter_parm_gudie" ;;
    *)
        echo "unknown stage $stage (STAGES takes dpo dpo_iter guided)" >&2
        exit 2 ;;
    esac
done

echo "done: $OUT/{dpo,dpo_iter,dpo_iter_parm_gudie}"
