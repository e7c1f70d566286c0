"""The shipped shapes judges: they load through the presets, answer their questions, and the seed-style
commands ``--reward_model orm_zs|orm_ft|prm|parm|parm++`` run on the shapes preset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as runner
from config import load_config
from reward_models import Question, build_judge, verifiers
from conftest import write_shapes_suite

REPO = Path(__file__).resolve().parents[1]
KINDS = {"orm_zs": ["orm"], "orm_ft": ["orm"], "prm": ["prm", "orm"], "parm": ["clarity", "potential", "orm"],
         "parm++": ["clarity", "potential", "orm"]}


@pytest.mark.parametrize("preset", ["configs/shapes.yaml", "configs/shapes_raster.yaml"])
def test_presets_point_at_the_shipped_judges(preset):
    cfg = load_config(REPO / preset)
    # The policies of scaling_policies.py ask the fine-tuned ORM (the ORM question of completed images).
    scaling = {"lookahead": "orm_ft", "progressive": "orm_ft", "confidence_orm": "orm_ft"}
    assert cfg.reward.backend == "shapes" and set(cfg.reward_checkpoints) == set(KINDS) | set(scaling)
    for name in KINDS:
        assert (REPO / cfg.reward_checkpoints[name] / "config.json").is_file(), name
    for name, judge in scaling.items():
        assert cfg.reward_checkpoints[name] == cfg.reward_checkpoints[judge], name


@pytest.mark.parametrize("name", sorted(KINDS))
def test_shipped_judge_answers_its_questions(name):
    cfg = load_config(REPO / "configs/shapes.yaml")
    judge = build_judge(verifiers.judge_config(cfg.reward, cfg.reward_checkpoints, name), "cpu")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    for kind in KINDS[name]:
        p_yes, p_no = judge.yes_no_probs(images, [Question(kind, "a photo of a red circle")] * 2)
        assert torch.allclose(p_yes + p_no, torch.ones(2)) and ((p_yes > 0) & (p_yes < 1)).all()
    assert verifiers.is_reflective(judge) == (name == "parm++")
    log = json.loads((REPO / cfg.reward_checkpoints[name] / "train_log.json").read_text())
    assert log["recipe"] == name


@pytest.mark.parametrize("policy", ["orm_zs", "orm_ft", "prm", "parm", "parm++"])
def test_seed_style_command_runs_on_the_shapes_preset(policy, tmp_path):
    records, prompts_file, metadata_file = write_shapes_suite(tmp_path, slice(None, None, 40))
    outdir = tmp_path / "out"
    assert runner.main(["--config", str(REPO / "configs/shapes.yaml"), "--prompts_file", str(prompts_file),
                        "--metadata_file", str(metadata_file), "--reward_model", policy, "--eval_num", "1",
                        "--search_num", "3", "--generation_timesteps", "4", "--outdir", str(outdir)]) == 0
    assert len((outdir / "results.jsonl").read_text().splitlines()) == len(records)
    trace = [json.loads(line) for line in (outdir / "00000" / "trace" / "0000.jsonl").read_text().splitlines()]
    assert sum(t["chosen"] for t in trace) == 1 and all(t["judge_calls"] >= 1 for t in trace)


@pytest.mark.parametrize("name", ["dpo", "dpo_iter", "dpo_iter_parm_gudie", "dpo_iter_parm_guide"])
def test_shipped_dpo_checkpoints_resolve_and_load(name):
    from generation import build_generator

    cfg = load_config(REPO / "configs/shapes.yaml")
    canonical, folder = runner.resolve_dpo_model(name, cfg.dpo_checkpoints)
    assert canonical == name.replace("guide", "gudie") and (REPO / folder / "generator" / "config.json").is_file()
    cfg.generation.weights = str(REPO / folder)
    generator = build_generator(cfg.generation, "cpu")
    base = build_generator(load_config(REPO / "configs/shapes.yaml").generation, "cpu")
    summary = json.loads((REPO / folder / "train_summary.json").read_text())
    # global batch 16 (2 processes x 8 or 1 x 16: the result does not depend on the split), lr 1e-5
    assert summary["ranks_in_sync"] and summary["world_size"] * summary["config"]["batch_size"] == 16
    assert summary["config"]["lr"] == 1e-5
    assert any(not torch.equal(a, b) for a, b in zip(generator.model.parameters(), base.model.parameters()))
