#!/usr/bin/env bash
# The paper's GenEval tables (paper v2, Tables 1-4) on the real checkpoints: a GPU box with the
# checkpoints where README "Real backends" puts them. One main.py command per row; every distinct
# (model, verifier, DPO checkpoint) runs once into $OUT and rows shared by several tables reuse it;
# geneval.compare prints each table (docs/results/paper_table<k>.md).
#   NPROC=8 bash scripts/paper_tables.sh                  # Tables 1-4 and the scaling comparison
#   TABLES="1 3" NPROC=8 bash scripts/paper_tables.sh
#   TABLES=scaling NPROC=8 bash scripts/paper_tables.sh   # policies beyond the paper (scaling_policies.py)
#   DRY_RUN=1 bash scripts/paper_tables.sh                # print the main.py arguments of each row
#   JANUS_DPO=ckpts/janus_dpo LLAMAGEN_DPO=ckpts/llamagen_dpo ...   # Table 4's DPO rows (train them with
#                                                         # dpo.train first: no checkpoint is released)
# Runs resume (main.py): a killed script rerun with the same settings finishes what is missing.
#
# Rows the released checkpoints cannot reproduce are not run (each table's block names them):
# fine-tuned PRM (not released), iterative DPO with fine-tuned-ORM reward guidance (not released:
# upstream ships dpo, dpo_iter and dpo_iter_parm_gudie), and Table 5 (PARM++ needs the reflection
# fine-tune of the judge and the self-correction fine-tune of Show-o, neither released).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
NPROC=${NPROC:-8}
OUT=${OUT:-outputs/paper}
TABLES=${TABLES:-1 2 3 4 scaling}
JANUS_DPO=${JANUS_DPO:-}
LLAMAGEN_DPO=${LLAMAGEN_DPO:-}
PROMPTS=(--prompts_file geneval/prompts/generation_prompts.txt --metadata_file geneval/prompts/evaluation_metadata.jsonl)

declare -A CONFIGS=([showo]=config.yaml [janus]=configs/janus.yaml [llamagen]=configs/llamagen.yaml)
declare -A DONE=()  # run folders already run by this invocation (rows shared by tables)

rundir() {  # rundir MODEL VERIFIER DPO -> the output folder of that run
    echo "$OUT/$1/${2}__${3:-base}"
}

run() {  # run MODEL VERIFIER [DPO]: one main.py command, once per invocation
    local model=$1 verifier=$2 dpo=${3:-}
    local outdir
    outdir=$(rundir "$model" "$verifier" "$(basename "${dpo:-base}")")
    [ -n "${DONE[$outdir]:-}" ] && return 0
    DONE[$outdir]=1
    local args=(--config "${CONFIGS[$model]}" "${PROMPTS[@]}" --reward_model "$verifier" --outdir "$outdir")
    [ -n "$dpo" ] && args+=(--dpo_model "$dpo")
    if [ -n "${DRY_RUN:-}" ]; then
        echo "${args[*]}"
    else
        $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" main.py "${args[@]}"
    fi
}

table() {  # table K NAME=MODEL:VERIFIER:DPO ...: run every row, then one compare table
    local k=$1; shift
    local name=paper_table$k
    [[ $k =~ ^[0-9]+$ ]] || name=paper_$k
    local rows=()
    for spec in "$@"; do
        local name=${spec%%=*} rest=${spec#*=}
        IFS=: read -r model verifier dpo <<< "$rest"
        run "$model" "$verifier" "$dpo"
        rows+=("$name=$(rundir "$model" "$verifier" "$(basename "${dpo:-base}")")")
    done
    if [ -z "${DRY_RUN:-}" ]; then
        mkdir -p docs/results
        $PY -m geneval.compare "${rows[@]}" --json "docs/results/$name.json" | tee "docs/results/$name.md"
    fi
}

for k in $TABLES; do
    case $k in
    1)  # verifiers vs preference alignment (Show-o). Not run: PRM fine-tuned (not released).
        table 1 "Baseline=showo:none:" "ORM zero-shot=showo:orm_zs:" "ORM fine-tuned=showo:orm_ft:" \
            "PRM zero-shot=showo:prm:" "DPO (initial)=showo:none:dpo" "DPO iterative=showo:none:dpo_iter" ;;
    2)  # integration. Not run: It. DPO + Ft. ORM guidance, with and without Ft. ORM (checkpoint not released).
        table 2 "Ft. ORM=showo:orm_ft:" "It. DPO=showo:none:dpo_iter" "Ft. ORM + It. DPO=showo:orm_ft:dpo_iter" ;;
    3)  # the Show-o rows of the full comparison. Not run: Ft. PRM; It. DPO + Ft. ORM guidance rows.
        table 3 "Show-o=showo:none:" "Zs. ORM=showo:orm_zs:" "Ft. ORM=showo:orm_ft:" "Zs. PRM=showo:prm:" \
            "PARM=showo:parm:" "DPO=showo:none:dpo" "It. DPO=showo:none:dpo_iter" \
            "Zs. ORM + It. DPO=showo:orm_zs:dpo_iter" "Ft. ORM + It. DPO=showo:orm_ft:dpo_iter" \
            "PARM + It. DPO=showo:parm:dpo_iter" "It. DPO + PARM guidance=showo:none:dpo_iter_parm_gudie" \
            "PARM + It. DPO + PARM guidance=showo:parm:dpo_iter_parm_gudie" ;;
    4)  # sequential AR models, best-of-20 with Show-o's judges; DPO rows need JANUS_DPO / LLAMAGEN_DPO.
        rows=()
        for model in llamagen janus; do
            rows+=("$model=$model:none:" "$model Zs. ORM=$model:orm_zs:" "$model Ft. ORM=$model:orm_ft:"
                   "$model PARM=$model:parm:")
            dpo=$JANUS_DPO; [ "$model" = llamagen ] && dpo=$LLAMAGEN_DPO
            [ -n "$dpo" ] && rows+=("$model DPO=$model:none:$dpo")
        done
        table 4 "${rows[@]}" ;;
    scaling)  # beyond the paper: lookahead (FR-TTS), progressive (GridAR), confidence with and without an ORM
        # (ScalingAR) against plain decoding, best-of-20 and PARM on each model, all at N = 20 with the
        # fine-tuned ORM as judge; geneval.compare's forwards column puts them on one cost axis (the
        # budget-matched sweep is scripts/compare_policies.py, on the shapes world).
        rows=()
        for model in showo janus llamagen; do
            rows+=("$model=$model:none:" "$model Ft. ORM=$model:orm_ft:" "$model PARM=$model:parm:"
                   "$model lookahead=$model:lookahead:" "$model progressive=$model:progressive:"
                   "$model confidence=$model:confidence:" "$model confidence + ORM=$model:confidence_orm:")
        done
        table scaling "${rows[@]}" ;;
    *)  echo "unknown table $k (TABLES takes 1 2 3 4 scaling; Table 5 needs unreleased checkpoints)" >&2; exit 2 ;;
    esac
done
