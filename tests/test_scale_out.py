"""main.py past one process on torchrun itself: two "nodes" (two torchrun agents, one process each,
c10d rendezvous on localhost) and an elastic restart (``--max-restarts``) after a worker is killed.
Both must write the files of a one-process run. docs/scale_out.md has the recipes these test.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import main as runner
from outdir_lock import LOCK_FILE
from runner_fixtures import REPO, command, generated, subprocess_env, suite, weights  # noqa: F401

import pytest

TIMEOUT = 240


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scale_out")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent(argv: list[str], *launcher: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher, "main.py", *argv], cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return process.returncode, err


def test_two_nodes_with_c10d_rendezvous_write_the_images_of_one_process(root, weights, suite):
    one = root / "one-process"
    assert runner.main(command(one, weights, suite)) == 0
    outdir = root / "two-nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    rendezvous = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                  "--rdzv-id=scale-out-test", "--max-restarts=0"]
    # The first agent hosts the rendezvous store, as the node named in --rdzv-endpoint does on a cluster.
    nodes = [agent(command(outdir, weights, suite), *rendezvous, "--rdzv-conf=is_host=1"),
             agent(command(outdir, weights, suite), *rendezvous, "--rdzv-conf=is_host=0")]
    results = [finish(node) for node in nodes]
    assert [code for code, _ in results] == [0, 0], "\n".join(err[-2000:] for _, err in results)
    assert generated(outdir) == generated(one)
    assert json.loads((outdir / "run_info.json").read_text())["world_size"] == 2


def test_elastic_restart_after_a_killed_worker_finishes_the_same_images(root, weights, suite):
    slow = ("--batch_size", "1", "--generation_timesteps", "32")
    one = root / "slow-one-process"
    assert runner.main(command(one, weights, suite, *slow)) == 0
    outdir = root / "elastic"
    lock = outdir / LOCK_FILE
    process = agent(command(outdir, weights, suite, *slow), "--standalone", "--nproc_per_node=2", "--max-restarts=1")
    deadline = time.monotonic() + TIMEOUT
    while not (any(outdir.glob("*/samples/*.png")) and lock.is_file() and lock.stat().st_size) \
            and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    total = len(suite[0].read_text().splitlines()) * 2
    done = len(list(outdir.glob("*/samples/*.png")))
    assert 0 < done < total, f"the kill must land mid-run ({done} of {total} images)"
    rank0 = json.loads(lock.read_text())["pid"]  # the lock names its holder, rank 0's worker
    subprocess.run(["kill", "-KILL", str(rank0)], check=True)
    code, err = finish(process)
    assert code == 0, err[-3000:]
    assert json.loads((outdir / "run_info.json").read_text())["restart_count"] == 1  # the second attempt finished
    assert generated(outdir) == generated(one)
    assert not lock.exists()


def test_slurm_script_runs_main_through_srun_and_torchrun(root, weights, suite, tmp_path):
    # Stand-ins for Slurm's commands: scontrol names this machine, srun runs its command once (one node).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n")
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    one = root / "slurm-one-process"
    assert runner.main(command(one, weights, suite)) == 0
    outdir = root / "slurm"
    env = dict(subprocess_env(), PATH=f"{bin_dir}:{subprocess_env()['PATH']}", SLURM_JOB_NODELIST="node[1]",
               SLURM_JOB_NUM_NODES="1", SLURM_JOB_ID="4242", NPROC_PER_NODE="2", RDZV_PORT=str(free_port()),
               PYTHON=sys.executable)
    result = subprocess.run(["bash", "scripts/slurm_main.sbatch", *command(outdir, weights, suite)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert generated(outdir) == generated(one)
    assert json.loads((outdir / "run_info.json").read_text())["world_size"] == 2
