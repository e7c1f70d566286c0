"""Regression tests of issue 15's failures: one writer per output folder, every bad value refused
before anything is written, NaN logits stopping the run, user errors as one line with exit 2
(main.py, the evaluator, torchrun), prompt files compared by content, Ctrl-C, prompt subsets.

The generator is the tiny random shapes-world model of ``runner_fixtures.py`` (deterministic noise).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import main as runner
from geneval import evaluate
from outdir_lock import LOCK_FILE, OutdirLock
from evaluate_fixtures import make_outdir
from runner_fixtures import EVAL_NUM, REPO, command, files, generated, subprocess_env, suite, weights  # noqa: F401

SLOW = ("--batch_size", "1", "--generation_timesteps", "64")
"""Settings slow enough (one image per batch, 64 steps) to be caught mid-run."""


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hardening")


@pytest.fixture(scope="module")
def reference(root, weights, suite) -> Path:
    outdir = root / "reference"
    assert runner.main(command(outdir, weights, suite)) == 0
    return outdir


def popen(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "main.py", *argv], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition(), "the run ended (or timed out) before the awaited moment"


# ----------------------------------------------------------------------------
# One writer per output folder

def test_a_held_folder_is_refused_naming_the_holder(root, weights, suite, capsys):
    outdir = root / "held"
    with OutdirLock(outdir, ["--outdir", str(outdir), "--guidance_scale", "3"]):
        assert runner.main(command(outdir, weights, suite)) == 2
    err = capsys.readouterr().err
    assert f"{outdir} is being written by another run (pid {os.getpid()} on " in err
    assert "--guidance_scale 3" in err and "Traceback" not in err
    assert list(outdir.iterdir()) == []  # nothing written; the holder's lock file is gone with it


def test_two_runs_started_together_never_mix(root, weights, suite):
    outdir = root / "race"
    processes = {scale: popen(command(outdir, weights, suite, "--guidance_scale", scale)) for scale in ("2.0", "3.0")}
    results = {scale: (p.wait(timeout=180), p.communicate()[1]) for scale, p in processes.items()}
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 2], results
    winner = next(scale for scale, (code, _) in results.items() if code == 0)
    loser_err = next(err for code, err in results.values() if code == 2)
    assert "being written by another run" in loser_err or "holds a run with other settings" in loser_err
    assert f"guidance_scale: {winner}" in (outdir / "config.yaml").read_text()
    alone = root / f"race-alone-{winner}"
    assert runner.main(command(alone, weights, suite, "--guidance_scale", winner)) == 0
    assert generated(outdir) == generated(alone)
    assert not (outdir / LOCK_FILE).exists()


def test_a_killed_runs_lock_does_not_block_the_rerun(root, weights, suite, reference):
    outdir = root / "stale"
    argv = command(outdir, weights, suite, *SLOW)
    process = popen(argv)
    wait_for(lambda: (outdir / LOCK_FILE).is_file() and (outdir / LOCK_FILE).stat().st_size > 0, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (outdir / LOCK_FILE).is_file()  # left behind, but nobody holds it
    assert runner.main(argv) == 0
    assert not (outdir / LOCK_FILE).exists()


# ----------------------------------------------------------------------------
# Bad values: exit 2 before anything is written

@pytest.mark.parametrize("extra, message", [
    (["--generation_timesteps", "0"], "generation.num_steps must be at least 1, got 0"),
    (["--generation_timesteps", "-3"], "generation.num_steps must be at least 1, got -3"),
    (["--guidance_scale", "nan"], "generation.guidance_scale must be a finite number, got nan"),
    (["--guidance_scale", "inf"], "generation.guidance_scale must be a finite number, got inf"),
    (["--guidance_scale", "-1"], "generation.guidance_scale must be at least 0, got -1.0"),
    (["generation.temperature=-inf"], "generation.temperature must be a finite number, got -inf"),
    (["generation.llamagen.top_p=1.5"], "generation.llamagen.top_p must be greater than 0 and at most 1"),
    (["geneval.threshold=1.5"], "geneval.threshold must be between 0 and 1, got 1.5"),
    (["reward.batch_size=0"], "reward.batch_size must be at least 1, got 0"),
    (["run.per_tag=-1"], "run.per_tag must be at least 0, got -1"),
    (["run.prompt_range=9-"], "run.prompt_range='9-' selects none of the 4 prompts"),
    (["run.prompt_range=one"], "run.prompt_range='one' is not START-END"),
])
def test_bad_numbers_exit_2_before_anything_is_written(root, weights, suite, capsys, extra, message):
    outdir = root / "never"
    assert runner.main(command(outdir, weights, suite, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not outdir.exists()


def test_a_folder_without_images_takes_the_fixed_command(root, weights, suite, reference):
    # What a run that crashed before its first image leaves (config, run_info, metadata): the fix is accepted.
    outdir = root / "crashed-early"
    shutil.copytree(reference, outdir)
    for png in outdir.glob("*/samples/*.png"):
        png.unlink()
    config = outdir / "config.yaml"
    config.write_text(config.read_text().replace("num_steps: 12", "num_steps: 0"))
    assert runner.main(command(outdir, weights, suite)) == 0
    assert generated(outdir) == generated(reference)
    assert "num_steps: 12" in config.read_text()


def test_nan_logits_stop_the_run_naming_prompt_and_step(root, weights, suite, capsys):
    broken = root / "nan-weights"
    shutil.copytree(weights, broken)
    weights_file = next((broken / "generator").glob("*.safetensors"))
    from safetensors.torch import load_file, save_file
    tensors = load_file(weights_file)
    tensors["head.bias"] = torch.full_like(tensors["head.bias"], float("nan"))  # a damaged checkpoint
    save_file(tensors, weights_file)
    outdir = root / "nan-run"
    assert runner.main(command(outdir, broken, suite)) == 1
    err = capsys.readouterr().err
    first_prompt = suite[0].read_text().splitlines()[0]
    assert f"NaN or +inf logits at decoding step 1 of 12 for prompt 0 {first_prompt!r}, image 0, candidate 0" in err
    assert not list(outdir.glob("*/samples/*.png")) and not (outdir / LOCK_FILE).exists()


def _unwritable(root: Path) -> Path:
    """A folder this process cannot write to: read-only for a normal user; under /sys for root."""
    if os.geteuid() == 0:
        return Path("/sys") / "hardening-test-outdir"
    folder = root / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder / "out"


def test_read_only_outdir_is_one_line_exit_2(root, weights, suite, capsys):
    assert runner.main(command(_unwritable(root), weights, suite)) == 2
    err = capsys.readouterr().err
    assert "main.py: error: cannot " in err and "pass a folder you can write to" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------
# Prompt files

def test_prompt_file_spellings_of_one_file_are_the_same_run(root, reference, weights, suite, monkeypatch):
    outdir = root / "spelling"
    shutil.copytree(reference, outdir)
    monkeypatch.chdir(suite[0].parent)
    relative = (Path("./prompts.txt"), Path("./metadata.jsonl"))
    assert runner.main(command(outdir, weights, relative)) == 0  # ./x and /abs/x: one file
    assert generated(outdir) == generated(reference)
    copy = root / "suite-copy"
    shutil.copytree(suite[0].parent, copy)
    assert runner.main(command(outdir, weights, (copy / "prompts.txt", copy / "metadata.jsonl"))) == 0  # same bytes


def test_prompt_file_with_other_content_is_refused(root, reference, weights, suite, capsys):
    outdir = root / "other-content"
    shutil.copytree(reference, outdir)
    other = root / "other-suite"
    other.mkdir()
    prompts = suite[0].read_text().splitlines()
    records = [json.loads(line) for line in suite[1].read_text().splitlines()]
    (other / "prompts.txt").write_text("".join(p + "\n" for p in prompts[:3]))
    (other / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:3]))
    assert runner.main(command(outdir, weights, (other / "prompts.txt", other / "metadata.jsonl"))) == 2
    assert "run.prompts_file:" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_unusable_prompt_files_are_named(root, weights, suite, capsys, kind):
    if kind == "folder":
        path, message = suite[0].parent, f"prompt file {suite[0].parent} is a folder; pass the file inside it"
    else:
        path = root / "prompts.bin"
        path.write_bytes(bytes(range(256)))
        message = f"prompt file {path} is not UTF-8 text"
    assert runner.main(command(root / "never", weights, (path, suite[1]))) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ----------------------------------------------------------------------------
# Ctrl-C, torchrun, subsets, --help

def test_ctrl_c_stops_cleanly_and_says_how_to_resume(root, weights, suite):
    outdir = root / "interrupted"
    argv = command(outdir, weights, suite, *SLOW)
    process = popen(argv)
    wait_for(lambda: any(outdir.glob("*/samples/*.png")), process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "main.py: interrupted;" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not (outdir / LOCK_FILE).exists()


def test_bad_input_under_torchrun_is_printed_once_with_exit_2(root, weights, suite):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main.py"]
    result = subprocess.run(launcher + command(root / "never", weights, suite, "--generation_timesteps", "0"),
                            cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert result.stderr.count("main.py: error: generation.num_steps must be at least 1") == 1, result.stderr
    assert "exitcode  : 2" in result.stderr  # every worker exits 2 (torchrun itself always exits 1 on failure)
    assert result.returncode != 0 and not (root / "never").exists()


def test_prompt_subset_runs_the_first_of_every_tag_with_the_full_runs_images(root, reference, weights, suite):
    outdir = root / "subset"
    assert runner.main(command(outdir, weights, suite, "run.per_tag=1", "run.prompt_range=1-")) == 0
    full = generated(reference)
    subset = generated(outdir)
    assert {key.split("/")[0] for key in subset} == {"00001", "00002", "00003"}  # one prompt per tag
    assert subset == {key: value for key, value in full.items() if key in subset}
    assert runner.main(command(outdir, weights, suite)) == 0  # the rest is filled in, same images
    assert generated(outdir) == full


def test_help_lists_names_and_explains_counts():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps the flag help
    assert ("--reward_model names: confidence, confidence_orm, lookahead, none, oracle, orm_ft, orm_zs, parm, parm++, "
            "prm, progressive") in result.stdout
    assert "configs/shapes.yaml: dpo, dpo_iter, dpo_iter_parm_gudie" in result.stdout
    assert "images kept per prompt" in text and "candidates generated per kept image" in text


# ----------------------------------------------------------------------------
# The evaluator's user errors

@pytest.mark.parametrize("argv, message", [
    (["{root}/no-such-folder"], "no-such-folder does not exist"),
    (["{empty}"], "no images to score"),
    (["{data}", "treshold=0.5"], "unknown GenEval setting(s) ['treshold']"),
    (["{data}", "detector=yolo"], "unknown detector 'yolo'"),
    (["{data}", "threshold=nan"], "threshold must be a finite number"),
    (["{data}", "detector=hf"], "holds shapes-world prompts"),
])
def test_evaluator_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    data = make_outdir(tmp_path)["outdir"]
    (tmp_path / "empty").mkdir()
    argv = [a.format(root=tmp_path, empty=tmp_path / "empty", data=data) for a in argv]
    with warnings.catch_warnings():  # make_outdir's junk folder is warned about
        warnings.simplefilter("ignore")
        assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert "python -m geneval.evaluate: error: " in err and message in err and "Traceback" not in err


def test_evaluator_reads_the_detector_from_the_runs_config_and_strict_fails_on_unreadable(tmp_path, capsys):
    data = make_outdir(tmp_path)
    outdir = data["outdir"]
    (outdir / "config.yaml").write_text("run:\n  seed: 0\ngeneval:\n  detector: shapes\n  device: cpu\n")
    with pytest.warns(UserWarning, match="junk"):
        assert evaluate.main([str(outdir)]) == 0  # no detector=shapes on the command line
    out = capsys.readouterr()
    assert f"{len(data['errors'])} image(s)/folder(s) could NOT be scored" in out.out
    assert "could not be scored" in (outdir / "summary.md").read_text()
    with pytest.warns(UserWarning, match="junk"):
        assert evaluate.main([str(outdir), "--strict"]) == 1
    assert "--strict: 3 image(s)/folder(s) could not be scored" in capsys.readouterr().err
