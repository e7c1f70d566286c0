"""FSDP for DPO, run: 2 CPU processes (gloo) with FSDP2 ``fully_shard`` (``dpo.train --fsdp-blocks``) on the
tiny shapes model and tiny Show-o, Janus and LlamaGen, against the same run under DDP.

accelerate's own FSDP config does not shard CPU process groups (it runs DDP: ``dpo/fsdp_cpu.py``);
``dpo.train`` now refuses that instead of running DDP silently, tested here too.

Tolerance: the weights of the FSDP and DDP runs must agree to ``atol=5e-4`` (the bound the DDP vs one
process test uses: well below one update at lr 1e-3; reduce-scatter and all-reduce may sum in
other orders) while every trained tensor moved by more than that.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo.train import TrainConfig
from dpo_fixtures import janus_case, llamagen_case, pair_file, showo_case  # noqa: F401  (pair_file: fixture)
from janus_fixtures import weights as janus_weights  # noqa: F401  (fixture)
from llamagen_fixtures import weights as llamagen_weights  # noqa: F401  (fixture)
from showo_fixtures import checkpoint  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 5e-4


def run_jobs(jobs: list[tuple[TrainConfig, str]], folder: Path) -> list[dict]:
    """Every (config, block class) trained under DDP and under FSDP2, all in one 2-process torchrun launch."""
    spec = folder / "jobs.json"
    spec.write_text(json.dumps([{"config": dataclasses.asdict(dataclasses.replace(cfg, checkpoint_every=1000)),
                                 "block": block} for cfg, block in jobs]))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(REPO / "tests" / "fsdp_vs_ddp.py"), str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(launcher, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def state(path: Path) -> dict[str, torch.Tensor]:
    """The saved weights of any backend's output folder, by tensor name."""
    files = sorted(path.rglob("*.safetensors")) + sorted(path.rglob("*.pt"))
    tensors = {}
    for file in files:
        loaded = load_file(str(file)) if file.suffix == ".safetensors" else torch.load(file, map_location="cpu")
        loaded = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
        tensors.update({f"{file.relative_to(path)}:{k}": v for k, v in loaded.items() if torch.is_tensor(v)})
    return tensors


def check_close(ddp: dict, fsdp: dict, init: dict | None = None) -> None:
    assert ddp.keys() == fsdp.keys() and ddp
    worst = max((ddp[k].float() - fsdp[k].float()).abs().max().item() for k in ddp)
    print(f"max |FSDP - DDP| = {worst:.3g}")  # pytest -s shows it
    assert worst <= TOLERANCE, worst
    if init is not None:
        moved = [k for k in ddp if k in init and ddp[k].is_floating_point()
                 and (ddp[k].float() - init[k].float()).abs().max() > TOLERANCE]
        assert moved, "training moved no tensor by more than the tolerance"


@pytest.fixture(scope="module")
def trained(pair_file, tiny_weights, checkpoint, janus_weights, llamagen_weights, tmp_path_factory):
    """Backend name -> (DDP weights, FSDP weights, initial weights or None), from one launch."""
    folder = tmp_path_factory.mktemp("fsdp")
    tiny = TrainConfig(pairs=str(pair_file), init=str(tiny_weights), out=str(folder / "tiny"), lr=1e-3,
                       batch_size=2, steps=3, log_every=1)
    jobs = {"tiny": (tiny, "Block")}
    for name, make, weights, block in (("showo", showo_case, checkpoint, "PhiDecoderLayer"),
                                       ("janus", janus_case, janus_weights, "LlamaDecoderLayer"),
                                       ("llamagen", llamagen_case, llamagen_weights, "TransformerBlock")):
        (folder / name).mkdir()
        jobs[name] = (dataclasses.replace(make(weights, folder / name)[0], steps=2), block)
    reports = run_jobs(list(jobs.values()), folder)
    assert len(reports) == 2 * len(jobs) and all(r["world_size"] == 2 for r in reports)
    assert [r["ranks_in_sync"] for r in reports] == [True, None] * len(jobs)  # DDP replicas agree; FSDP shards differ
    init = {f"generator/model.safetensors:{k}": v
            for k, v in load_file(str(tiny_weights / "generator" / "model.safetensors")).items()}
    return {name: (state(Path(f"{cfg.out}-ddp")), state(Path(f"{cfg.out}-fsdp")), init if name == "tiny" else None)
            for name, (cfg, _) in jobs.items()}


@pytest.mark.parametrize("name", ["tiny", "showo", "janus", "llamagen"])
def test_fsdp_on_two_cpu_processes_matches_ddp(trained, name):
    check_close(*trained[name])


def test_accelerates_fsdp_config_on_cpu_is_refused_not_run_as_ddp(pair_file, tiny_weights, tmp_path):
    config = tmp_path / "fsdp_cpu.yaml"
    config.write_text((REPO / "dpo" / "accelerate_fsdp.yaml").read_text()
                      .replace("use_cpu: false", "use_cpu: true").replace("num_processes: 8", "num_processes: 2")
                      .replace("gpu_ids: all", "gpu_ids: null"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "dpo.train",
               "--pairs", str(pair_file), "--init", str(tiny_weights), "--out", str(tmp_path / "out"), "--steps", "1"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode != 0
    assert "accelerate was launched with an FSDP config but runs as" in result.stderr
    assert not (tmp_path / "out" / "train_summary.json").exists()
