"""The GenEval oracle judge, the oracle policy through main.py, and the comparison table of scored runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import main as runner
from geneval import compare
from geneval.config import GenEvalConfig
from geneval.verdicts import metadata_by_prompt
from reward_models.oracle import GenEvalOracle
from geneval.suites import color_record, position_record
from shapes.render import render, sample_scene
from reward_models import Question
from conftest import write_shapes_suite

REPO = Path(__file__).resolve().parents[1]


def scene(record: dict, seed: int) -> torch.Tensor:
    return torch.from_numpy(render(sample_scene(record, np.random.default_rng(seed)))).permute(2, 0, 1)


def test_oracle_answers_with_the_geneval_verdict():
    red, blue = color_record("circle", "red"), color_record("circle", "blue")
    oracle = GenEvalOracle(GenEvalConfig(detector="shapes"), [red, blue])
    images = torch.stack([scene(red, 0), scene(red, 0)])
    p_yes, p_no = oracle.yes_no_probs(images, [Question("orm", red["prompt"]), Question("orm", blue["prompt"])])
    assert p_yes.tolist() == [1.0, 0.0] and p_no.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="no GenEval metadata"):
        oracle.verdicts(images[:1], ["a photo of a purple cross"])
    with pytest.raises(ValueError, match="final images only"):
        oracle.yes_no_probs(images[:1], [Question("clarity", red["prompt"])])


def test_one_prompt_with_two_metadata_records_is_refused():
    left = position_record("circle", "left of", "square")
    clash = {**position_record("circle", "right of", "square"), "prompt": left["prompt"]}
    with pytest.raises(ValueError, match="two different metadata records"):
        metadata_by_prompt([left, clash])
    assert metadata_by_prompt([left, dict(left)]) == {left["prompt"]: left}


def test_main_runs_the_oracle_policy(tiny_weights, tmp_path):
    records, prompts_file, metadata_file = write_shapes_suite(tmp_path, slice(2))
    outdir = tmp_path / "out"
    argv = ["--config", str(REPO / "configs" / "shapes.yaml"), "--prompts_file", str(prompts_file),
            "--metadata_file", str(metadata_file), "--outdir", str(outdir), "--eval_num", "1", "--search_num", "4",
            "--reward_model", "oracle", "--generation_timesteps", "3", f"generation.weights={tiny_weights}"]
    assert runner.main(argv) == 0
    results = {json.loads(line)["filename"].split("/")[-3]: json.loads(line)["correct"]
               for line in (outdir / "results.jsonl").read_text().splitlines()}
    for prompt in range(2):
        trace = [json.loads(line) for line in (outdir / f"{prompt:05d}" / "trace" / "0000.jsonl").read_text().splitlines()]
        scores = [t["final_score"] for t in trace]
        assert set(scores) <= {0.0, 1.0}
        chosen = [t["candidate"] for t in trace if t["chosen"]]
        assert chosen == [scores.index(1.0) if 1.0 in scores else 0]  # the first correct candidate
        assert results[f"{prompt:05d}"] == (1.0 in scores)  # the evaluator agrees with the oracle's pick


def write_run(folder: Path, verdicts: dict[str, list[bool]], forwards: int, calls: int) -> None:
    lines = []
    for p, (tag, values) in enumerate(verdicts.items()):
        for s, correct in enumerate(values):
            lines.append(json.dumps({"tag": tag, "correct": correct, "metadata": json.dumps({"p": p}),
                                     "filename": f"{p:05d}/samples/{s:04d}.png", "prompt": f"p{p}"}))
            trace = folder / f"{p:05d}" / "trace" / f"{s:04d}.jsonl"
            trace.parent.mkdir(parents=True, exist_ok=True)
            trace.write_text("".join(json.dumps({"candidate": c, "generator_forwards": forwards / 2,
                                                 "judge_calls": calls // 2}) + "\n" for c in range(2)))
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_table_reports_the_share_of_the_oracle_gain(tmp_path, capsys):
    write_run(tmp_path / "base", {"counting": [False, False], "colors": [True, False]}, 12, 0)  # 0.25
    write_run(tmp_path / "orm", {"counting": [True, False], "colors": [True, False]}, 24, 2)  # 0.5
    write_run(tmp_path / "oracle", {"counting": [True, True], "colors": [True, True]}, 24, 2)  # 1.0
    rows = compare.build_rows([f"base={tmp_path / 'base'}", f"ORM={tmp_path / 'orm'}",
                               f"oracle={tmp_path / 'oracle'}"], "base", "oracle")
    assert [r["overall"] for r in rows] == [0.25, 0.5, 1.0]
    assert rows[1]["oracle_share"] == pytest.approx(1 / 3)
    assert rows[1]["generator_forwards"] == 24 and rows[1]["judge_calls"] == 2
    table = compare.markdown(rows)
    assert "| ORM | - | - | 0.50 | 0.50 | - | - | **0.500** ± 0.250 | 33% | 24 | 2 |" in table  # SE: sqrt(2 x 0.25 / 2) / 2
    assert compare.main([f"x={tmp_path / 'missing'}"]) == 2
    assert "geneval.evaluate" in capsys.readouterr().err
