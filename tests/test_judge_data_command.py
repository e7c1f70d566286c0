"""The labelled-generation data command (training/judge_data.py, issue 12 section 1): the whole
training pool and never an evaluation prompt, the same records from 1 or 2 ranks, a resume after a
kill that redoes nothing, and labels that agree with the evaluator."""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reward_models.oracle import GenEvalOracle
from geneval.suites import load_metadata
from config import load_config
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from training import judge_data

REPO = Path(__file__).resolve().parents[1]


def data_args(**changes) -> argparse.Namespace:
    args = judge_data.parse_args(["--suite", "pool", "--groups", "5", "--candidates", "2", "--groups-per-batch", "2",
                                  "--prm-share", "0.4", "--prm-rows", "1", "--prm-first", "1", "--prm-every", "2",
                                  "--continuations", "2", "--out", "unused.pt"])
    return argparse.Namespace(**{**vars(args), **changes})


def tiny_generator(weights: Path, order: str) -> TinyGenerator:
    return TinyGenerator(GenerationConfig(backend="tiny", weights=str(weights), order=order, num_steps=4,
                                          rows_per_step=2))


def assert_same_data(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_pool_suite_is_every_training_prompt_and_no_evaluation_prompt():
    pool = judge_data.pick_records("pool", 0, 0)
    train = load_metadata(judge_data.SUITES["train"])
    assert pool == train and len(pool) > 2700
    args = judge_data.parse_args(["--suite", "pool", "--out", "x.pt"])  # the command's default: the whole pool
    assert judge_data.pick_records(args.suite, args.groups, args.seed) == train
    assert judge_data.parse_args(["--out", "x.pt"]).groups == 320  # the shipped recipe's train suite
    evaluation = {r["prompt"] for r in load_metadata("geneval/prompts/shapes/evaluation_metadata.jsonl")}
    evaluation |= set((REPO / "geneval/prompts/shapes/generation_prompts.txt").read_text().splitlines())
    assert not {r["prompt"] for r in pool} & evaluation


def test_prm_labels_in_proportion_to_the_prompts():
    assert len(judge_data.prm_group_set(2861, data_args(prm_share=0.25))) == round(0.25 * 2861)
    assert judge_data.prm_group_set(10, data_args(prm_share=0.0)) == set()


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_one_and_two_ranks_make_the_same_records(tiny_weights, tmp_path, order):
    records, args = judge_data.pick_records("pool", 5, 0), data_args()
    generator = tiny_generator(tiny_weights, order)
    one, two = tmp_path / "one", tmp_path / "two"
    done = judge_data.run_shard(generator, records, args, one, 0, 1)
    assert done["units"] == 3 and done["finals"] == 10
    shares = [judge_data.run_shard(generator, records, args, two, rank, 2)["units"] for rank in (0, 1)]
    assert shares == [2, 1]
    merged = judge_data.merge_units(generator, records, args, one)
    assert_same_data(merged, judge_data.merge_units(generator, records, args, two))
    assert_same_data(merged, judge_data.generate(generator, records, args))  # the one-process command
    assert len(merged["prm_hits"]) > 0


def test_merge_names_missing_units_and_resume_refuses_other_settings(tiny_weights, tmp_path):
    records, args = judge_data.pick_records("pool", 5, 0), data_args()
    generator = tiny_generator(tiny_weights, "mask")
    judge_data.run_shard(generator, records, args, tmp_path, 0, 2)
    with pytest.raises(ValueError, match="lacks 1 of 3 units"):
        judge_data.merge_units(generator, records, args, tmp_path)
    judge_data.check_manifest(tmp_path, {"candidates": 2})
    with pytest.raises(ValueError, match="candidates differ"):
        judge_data.check_manifest(tmp_path, {"candidates": 3})


def write_preset(folder: Path, weights: Path) -> Path:
    text = (REPO / "configs/shapes.yaml").read_text().replace("weights/shapes/tokenizer", f"{weights}/tokenizer")
    text = text.replace("weights: weights/shapes", f"weights: {weights}").replace("num_steps: 12", "num_steps: 4")
    path = folder / "preset.yaml"
    path.write_text(text)
    assert load_config(str(path)).generation.weights == str(weights)
    return path


def test_a_killed_run_resumes_without_redoing_units(tiny_weights, tmp_path):
    out, preset = tmp_path / "mask.pt", write_preset(tmp_path, tiny_weights)
    parts = out.with_name(out.name + ".parts")
    command = [sys.executable, "-m", "training.judge_data", "--order", "mask", "--suite", "pool",
               "--groups", "60", "--candidates", "2", "--groups-per-batch", "1", "--prm-share", "0.5",
               "--prm-rows", "1", "--prm-first", "1", "--continuations", "2",
               "--config", str(preset), "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(parts.glob("unit_*.pt"))) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("unit_*.pt")}
    assert not out.exists() and 3 <= len(done) < 60, "the kill must land mid-run"
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["units"] == 60 - len(done) and report["finals"] == 2 * (60 - len(done))  # nothing redone
    assert report["finals_per_s"] > 0 and report["trajectories"] == 120
    assert not parts.exists()  # joined and cleaned up
    data = torch.load(out)
    args = data_args(groups=60, groups_per_batch=1, prm_share=0.5, prm_every=2, continuations=2)
    generator = TinyGenerator(judge_data.generation_config(str(preset), "mask"))
    fresh = judge_data.generate(generator, judge_data.pick_records("pool", 60, 0), args)
    data.pop("args")
    assert_same_data(data, fresh)  # no duplicated or missing trajectory


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_labels_agree_with_the_evaluator(order):
    """Shipped generator, a handful of images: the stored verdict of each final is the evaluator's."""
    generator = TinyGenerator(judge_data.generation_config(None, order))
    records = judge_data.pick_records("train", 5, 0)  # one prompt of every tag
    data = judge_data.generate(generator, records, data_args(suite="train", prm_share=0.0))
    finals = generator.decode(data["previews"][:, -1].long())  # the last preview is the final image
    metadata = [records[g] for g in data["traj_group"].tolist()]
    oracle = GenEvalOracle(load_config(judge_data.PRESETS[order]).geneval, metadata)
    assert oracle.verdicts(finals, [r["prompt"] for r in metadata]) == data["label"].tolist()
