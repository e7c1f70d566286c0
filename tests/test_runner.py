"""End-to-end tests of the runner (main.py) on a tiny random shapes-world generator.

One process in-process, two processes under torchrun (gloo), a killed-and-resumed subprocess,
a failing rank, and every kind of bad input. The generator is random, so images are noise,
but they are deterministic noise: equality across world sizes and restarts is exact.
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main as runner
from generation import GENERATORS
from runner_fixtures import EVAL_NUM, REPO, command, files, generated, subprocess_env, suite, weights  # noqa: F401
from runner_fixtures import write_suite


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runner")


def torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main.py"]
    return subprocess.run(launcher + argv, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=180)


@pytest.fixture(scope="module")
def reference(root, weights, suite) -> Path:
    """One uninterrupted single-process run, scored with the shapes detector."""
    outdir = root / "reference"
    assert runner.main(command(outdir, weights, suite, "run.evaluate=true")) == 0
    return outdir


# ----------------------------------------------------------------------------
# One process

def test_writes_the_geneval_layout_with_traces(reference, suite):
    prompts = suite[0].read_text().splitlines()
    records = [json.loads(line) for line in suite[1].read_text().splitlines()]
    expected = {"config.yaml", "run_info.json", "results.jsonl", "summary.md"}
    for index in range(len(prompts)):
        expected.add(f"{index:05d}/metadata.jsonl")
        for sample in range(EVAL_NUM):
            expected |= {f"{index:05d}/samples/{sample:04d}.png", f"{index:05d}/trace/{sample:04d}.jsonl"}
    assert {k for k in files(reference) if not k.startswith(".geneval_cache")} == expected
    assert json.loads((reference / "00002" / "metadata.jsonl").read_text()) == records[2]
    trace = [json.loads(line) for line in (reference / "00002" / "trace" / "0001.jsonl").read_text().splitlines()]
    assert trace == [{"prompt": prompts[2], "prompt_index": 2, "sample": 1, "candidate": 0, "seed": [0, 2, 1, 0],
                      "chosen": True}]
    pngs = [p.read_bytes() for p in sorted(reference.glob("*/samples/*.png"))]
    assert len(set(pngs)) == len(pngs)  # every (prompt, sample) seed draws its own image
    results = [json.loads(line) for line in (reference / "results.jsonl").read_text().splitlines()]
    assert len(results) == len(prompts) * EVAL_NUM and {r["tag"] for r in results} == {r["tag"] for r in records}
    saved = (reference / "config.yaml").read_text()
    assert "backend: tiny" in saved and "eval_num: 2" in saved and "detector: shapes" in saved
    run_info = json.loads((reference / "run_info.json").read_text())
    assert run_info["packages"]["torch"] == importlib.metadata.version("torch") and run_info["world_size"] == 1
    assert "git_commit" in run_info


def test_rerun_skips_done_samples_and_accepts_image_neutral_changes(root, reference, weights, suite):
    outdir = root / "rerun"
    shutil.copytree(reference, outdir)
    before = {p: p.stat().st_mtime_ns for p in outdir.glob("*/samples/*.png")}
    assert runner.main(command(outdir, weights, suite, "--batch_size", "1", "geneval.threshold=0.5")) == 0
    assert {p: p.stat().st_mtime_ns for p in outdir.glob("*/samples/*.png")} == before  # nothing regenerated
    assert generated(outdir) == generated(reference)
    assert "batch_size: 1" in (outdir / "config.yaml").read_text()


def test_changed_settings_are_refused(root, reference, weights, suite, capsys):
    outdir = root / "changed"
    shutil.copytree(reference, outdir)
    snapshot = files(outdir)
    assert runner.main(command(outdir, weights, suite, "--guidance_scale", "3.0", "run.seed=1")) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings" in err
    assert "generation.guidance_scale: 2.0 -> 3.0" in err and "run.seed: 0 -> 1" in err
    assert files(outdir) == snapshot


def test_dpo_model_spellings_resolve_to_the_same_checkpoint(root, reference, weights, suite):
    checkpoints = {"dpo_iter_parm_gudie": str(weights)}
    resolved = {name: runner.resolve_dpo_model(name, checkpoints)
                for name in ("dpo_iter_parm_gudie", "dpo_iter_parm_guide")}
    assert set(resolved.values()) == {("dpo_iter_parm_gudie", str(weights))}
    assert runner.resolve_dpo_model(str(weights), {}) == (str(weights), str(weights))  # a folder path
    assert runner.resolve_dpo_model("", checkpoints) == ("", None)
    # Upstream run.sh's spelling end to end: generation.weights comes from the preset's checkpoint.
    outdir = root / "dpo"
    argv = command(outdir, root / "no-such-weights", suite, "--dpo_model", "dpo_iter_parm_guide",
                   f"dpo_checkpoints.dpo_iter_parm_gudie={weights}")
    assert runner.main(argv) == 0
    saved = (outdir / "config.yaml").read_text()
    assert f"weights: {weights}" in saved and "dpo_model: dpo_iter_parm_gudie" in saved
    assert generated(outdir) == generated(reference)


# ----------------------------------------------------------------------------
# Bad input: exit code 2, a message, and an existing OUTDIR left byte for byte

def _bad_suites(root: Path, suite: tuple[Path, Path]) -> dict[str, tuple[Path, Path]]:
    prompts = suite[0].read_text().splitlines()
    records = [json.loads(line) for line in suite[1].read_text().splitlines()]
    bad = root / "bad"
    suites = {"mismatch": write_suite(bad / "mismatch", prompts[:2] + ["a photo of a star"] + prompts[3:], records),
              "short": write_suite(bad / "short", prompts[:3], records),
              "empty": write_suite(bad / "empty", [], records)}
    malformed = write_suite(bad / "malformed", prompts, records)
    lines = malformed[1].read_text().splitlines()
    malformed[1].write_text("\n".join(lines[:1] + ["{not json"] + lines[2:]) + "\n")
    suites["malformed"] = malformed
    suites["missing"] = (bad / "nowhere.txt", suite[1])
    return suites


BAD_INPUTS = {
    "missing": ([], "prompt file {prompts} does not exist"),
    "empty": ([], "prompt file {prompts} is empty"),
    "malformed": ([], "{metadata}:2: malformed JSON"),
    "mismatch": ([], "line 3: prompt 'a photo of a star' differs from the metadata prompt"),
    "short": ([], "line 4: 3 prompts but 4 metadata records"),
    "reward_model": (["--reward_model", "bogus"],
                     "unknown --reward_model 'bogus'; valid: ['confidence', 'confidence_orm', 'lookahead', 'none', 'oracle', "
                     "'orm_ft', 'orm_zs', 'parm', 'parm++', 'prm', 'progressive']"),
    "dpo_name": (["--dpo_model", "bogus"], "--dpo_model 'bogus' is neither a checkpoint of this preset (it has: "
                 "['dpo', 'dpo_iter', 'dpo_iter_parm_gudie']"),
    "backend": (["generation.backend=sdxl"], f"unknown generation.backend 'sdxl'; valid: {sorted(GENERATORS)}"),
    "unknown_key": (["run.eval_nums=3"], "unknown config key 'run.eval_nums'"),
    "wrong_type": (["run.seed=abc"], "bad value for config key 'run.seed'"),
    "not_key_value": (["run.seed"], "override 'run.seed' is not key=value"),
    "device": (["run.device=tpu"], "device 'tpu' is not a device name"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_and_touches_nothing(case, root, reference, weights, suite, capsys):
    outdir = root / f"bad-{case}"
    shutil.copytree(reference, outdir)
    snapshot = files(outdir)
    suites = _bad_suites(root / case, suite)
    prompts_file, metadata_file = suites.get(case, suite)
    extra, message = BAD_INPUTS[case]
    argv = command(outdir, weights, (prompts_file, metadata_file), *extra)
    assert runner.main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(prompts=prompts_file, metadata=metadata_file) in err
    assert "Traceback" not in err
    assert files(outdir) == snapshot


@pytest.mark.parametrize("extra, message", [
    (["--reward_model", "orm_zs", "reward_checkpoints.orm_zs=/no/such/judge"], "no shapes judge at /no/such/judge"),
    (["generation.weights=/no/such/folder"], "no shapes-world generator at /no/such/folder"),
])
def test_bad_input_creates_no_outdir(root, weights, suite, capsys, extra, message):
    outdir = root / "never-created"
    assert runner.main(command(outdir, weights, suite, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not outdir.exists()


def test_foreign_outdir_is_refused(root, weights, suite, capsys):
    outdir = root / "foreign"
    (outdir / "00000" / "samples").mkdir(parents=True)
    assert runner.main(command(outdir, weights, suite)) == 2
    assert "holds prompt folders but no config.yaml" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Several processes and restarts

def test_two_ranks_write_the_same_files_as_one(root, reference, weights, suite):
    outdir = root / "two-ranks"
    result = torchrun(command(outdir, weights, suite))
    assert result.returncode == 0, result.stderr[-3000:]
    assert generated(outdir) == generated(reference)
    assert json.loads((outdir / "run_info.json").read_text())["world_size"] == 2
    assert "8/8" in result.stderr  # one bar, global count


def test_a_failing_rank_fails_the_job(root, weights, suite):
    prompts = suite[0].read_text().splitlines()
    records = [json.loads(line) for line in suite[1].read_text().splitlines()]
    dog = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}
    # Prompt 3 is rank 1's ([1::2]); rank 0's prompts are fine.
    bad_suite = write_suite(root / "dog", prompts[:3] + [dog["prompt"]], records[:3] + [dog])
    result = torchrun(command(root / "dog-out", weights, bad_suite))
    assert result.returncode != 0
    assert "uses words outside the shapes world ['dog']" in result.stderr
    assert "Traceback" in result.stderr  # an error at run time keeps its traceback


def test_killed_run_resumes_to_the_same_files(root, weights, suite):
    outdir = root / "killed"
    # Slow enough (64 steps, one image per batch) to be caught between two PNGs.
    argv = command(outdir, weights, suite, "--batch_size", "1", "--generation_timesteps", "64")
    assert runner.main(argv) == 0
    uninterrupted = files(outdir)
    shutil.rmtree(outdir)
    total = len(suite[0].read_text().splitlines()) * EVAL_NUM
    process = subprocess.Popen([sys.executable, "main.py", *argv], cwd=REPO, env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(outdir.glob("*/samples/*.png")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    num_done = len(list(outdir.glob("*/samples/*.png")))
    assert 0 < num_done < total, f"the kill must land mid-run, found {num_done} of {total} images"
    resumed = subprocess.run([sys.executable, "main.py", *argv], cwd=REPO, env=subprocess_env(),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert files(outdir) == uninterrupted  # every file, temporaries included (there must be none)
