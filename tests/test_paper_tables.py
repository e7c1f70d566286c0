"""scripts/paper_tables.sh: every row is a main.py command that loads and checks as written."""
import os
import subprocess
from pathlib import Path

from main import parse_args, prepare

REPO = Path(__file__).resolve().parents[1]


def dry_run(**env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/paper_tables.sh"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", **env})


def test_every_row_is_a_valid_main_command(tmp_path):
    result = dry_run(OUT=str(tmp_path / "paper"))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    runs = {tuple(argv) for argv in rows}
    # 6 + 3 + 12 + 8 rows of Tables 1-4 and 21 of the scaling comparison; a row shared by tables runs once
    # (the scaling comparison adds 4 new policies on each of the 3 models)
    assert len(rows) == len(runs) == 32
    for argv in runs:
        job = prepare(parse_args(list(argv)), list(argv))  # flags, config, names and prompt files all check
        assert job.cfg.run.search_num == 20 and job.cfg.run.eval_num == 4
    best = [argv for argv in runs if "parm__dpo_iter_parm_gudie" in " ".join(argv)]
    assert len(best) == 1 and ("--reward_model", "parm") == best[0][best[0].index("--reward_model"):][:2]
    job = prepare(parse_args(list(best[0])), list(best[0]))
    assert (job.cfg.generation.backend, job.cfg.generation.weights) == ("showo", "ckpts/dpo_iter_parm_gudie")
    backends = {prepare(parse_args(list(a)), list(a)).cfg.generation.backend for a in runs}
    assert backends == {"showo", "janus", "llamagen"}


def test_table4_dpo_rows_need_a_trained_checkpoint(tmp_path):
    without = dry_run(TABLES="4", OUT=str(tmp_path)).stdout.splitlines()
    with_dpo = dry_run(TABLES="4", OUT=str(tmp_path), JANUS_DPO=str(tmp_path / "janus_dpo")).stdout.splitlines()
    assert len(without) == 8 and len(with_dpo) == 9
    assert with_dpo[-1].endswith(f"--dpo_model {tmp_path / 'janus_dpo'}") and "configs/janus.yaml" in with_dpo[-1]


def test_scaling_rows_name_the_new_policies_on_every_model(tmp_path):
    result = dry_run(TABLES="scaling", OUT=str(tmp_path))
    assert result.returncode == 0, result.stderr
    runs = [line.split() for line in result.stdout.splitlines()]
    assert len(runs) == 21
    seen = set()
    for argv in runs:
        job = prepare(parse_args(list(argv)), list(argv))
        seen.add((job.cfg.generation.backend, job.cfg.run.reward_model))
        if job.cfg.run.reward_model in ("lookahead", "progressive", "confidence_orm"):
            assert job.cfg.reward_checkpoints[job.cfg.run.reward_model] == "ckpts/orm_ft_hf"
    assert seen == {(backend, policy) for backend in ("showo", "janus", "llamagen")
                    for policy in ("none", "orm_ft", "parm", "lookahead", "progressive", "confidence",
                                   "confidence_orm")}


def test_unknown_table_is_refused():
    result = dry_run(TABLES="5")
    assert result.returncode == 2 and "Table 5 needs unreleased checkpoints" in result.stderr
