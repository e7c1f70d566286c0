"""dpo/train.py: data sharding, schedule, resuming, and a 2-process CPU (gloo) run under accelerate launch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo.train import TrainConfig, global_batch_indices, learning_rate, rank_batch_indices, train
from generation.base import run_to_end, seeded_generator
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from dpo_fixtures import pair_file  # noqa: F401  (fixture: 12 pairs for the tiny shapes model)

REPO = Path(__file__).resolve().parents[1]


def config(pair_file, tiny_weights, out, **overrides) -> TrainConfig:
    settings = dict(pairs=str(pair_file), init=str(tiny_weights), out=str(out), lr=1e-3, batch_size=4, steps=4,
                    log_every=1, checkpoint_every=2)
    return TrainConfig(**{**settings, **overrides})


def weights(out) -> dict:
    return load_file(str(Path(out) / "generator" / "model.safetensors"))


def test_ranks_get_disjoint_slices_of_a_shuffled_epoch():
    slices = [rank_batch_indices(0, 10, 3, rank, 2, seed=1) for rank in range(2)]
    assert torch.equal(torch.cat(slices), global_batch_indices(0, 10, 6, seed=1))
    assert not set(slices[0].tolist()) & set(slices[1].tolist())
    epoch = torch.cat([global_batch_indices(step, 10, 5, seed=1) for step in range(2)])
    assert sorted(epoch.tolist()) == list(range(10)) and epoch.tolist() != list(range(10))
    assert not torch.equal(global_batch_indices(2, 10, 5, seed=1), global_batch_indices(0, 10, 5, seed=1))


def test_warmup_then_cosine_to_zero():
    cfg = TrainConfig(pairs="", init="", out="", lr=1.0, warmup_ratio=0.1)
    assert [learning_rate(s, 100, cfg) for s in (0, 9)] == pytest.approx([0.1, 1.0])
    assert learning_rate(10, 100, cfg) == pytest.approx(1.0)
    assert learning_rate(55, 100, cfg) == pytest.approx(0.5)


def test_killed_run_resumes_to_the_same_weights_without_duplicate_steps(pair_file, tiny_weights, tmp_path):
    straight = train(config(pair_file, tiny_weights, tmp_path / "straight"))
    assert straight["steps"] == 4 and straight["ranks_in_sync"]
    resumed_out = tmp_path / "resumed"
    assert train(config(pair_file, tiny_weights, resumed_out, stop_after=3)) is None  # "killed" after step 2
    assert (resumed_out / "checkpoint" / "trainer_state.json").is_file()
    assert not (resumed_out / "generator").exists()
    train(config(pair_file, tiny_weights, resumed_out))
    log = [json.loads(line) for line in (resumed_out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert not (resumed_out / "checkpoint").exists()
    a, b = weights(tmp_path / "straight"), weights(resumed_out)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    init = load_file(str(tiny_weights / "generator" / "model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)
    assert train(config(pair_file, tiny_weights, resumed_out))["steps"] == 4  # finished: a rerun is a no-op

    # the output is a generator weights folder: the shapes backend loads and samples from it
    gen = TinyGenerator(GenerationConfig(backend="tiny", weights=str(resumed_out), num_steps=2))
    images = run_to_end(gen, ["a photo of a circle"], [seeded_generator(0, 0, 0, 0)])
    assert images.shape == (1, 3, 64, 64)


def test_two_cpu_processes_stay_in_sync_and_match_one_process(pair_file, tiny_weights, tmp_path):
    train(config(pair_file, tiny_weights, tmp_path / "one", batch_size=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dpo.train",
               "--pairs", str(pair_file), "--init", str(tiny_weights), "--out", str(tmp_path / "two"),
               "--lr", "1e-3", "--batch-size", "2", "--steps", "4", "--log-every", "1"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"]
    assert len(summary["rank_checksums"]) == 2
    # Same global batch of 4 pairs, same noise per pair: the same training as one process. Losses agree
    # to float rounding; weights to well below one update (lr 1e-3 per step; Adam magnifies rounding
    # on parameters whose gradient is ~0, e.g. embedding rows of codes seen once).
    logs = [[json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
            for name in ("one", "two")]
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=2e-5)
    a, b, init = weights(tmp_path / "one"), weights(tmp_path / "two"), weights(tiny_weights)
    assert all(torch.allclose(a[k], b[k], atol=5e-4) for k in a)
    assert all((b[k] - init[k]).abs().max() > 1e-3 for k in b)  # every tensor moved by more than that


def test_bad_paths_exit_2_with_a_message(pair_file, tmp_path, capsys):
    from dpo.train import main

    assert main(["--pairs", str(pair_file), "--init", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is not a generator weights folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
