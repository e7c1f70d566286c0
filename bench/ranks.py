"""Throughput of main.py with 2 torchrun ranks against 1 process, on the shapes suite, in one invocation.

    python -m bench.ranks [--prompts 48] [--eval-num 4] [--repeats 2] [--threads 1]

Each repeat runs the same command (configs/shapes.yaml, shipped weights, ``--reward_model none``,
no scoring) as one process and as ``torchrun --standalone --nproc_per_node=2``, each rank with
``--threads`` threads, into fresh folders, then reruns each finished folder: a rerun loads
everything and generates nothing, so its wall time is the start-up cost, subtracted to give
generation images/s. The two runs' images are compared byte for byte. Prints one line per run and
the 2-rank/1-process ratio; on a machine whose cores other jobs share, the ratio says so too.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.generation import machine

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def images(outdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.glob("*/samples/*.png"))}


def load_average() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48, help="the first N prompts of the shapes suite")
    parser.add_argument("--eval-num", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    args = parser.parse_args()
    total = args.prompts * args.eval_num
    launchers = {"1 process": [sys.executable, "main.py"],
                 "2 ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "main.py"]}
    print(f"machine: {machine()} (this process); {os.cpu_count()} CPUs; {args.threads} thread(s) per rank; "
          f"load average before: {load_average()} (above the CPU count: other jobs share the cores)")
    rates: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            outputs = {}
            for name, launcher in launchers.items():
                outdir = Path(tmp) / f"{name.replace(' ', '_')}-{repeat}"
                command = launcher + ["--config", "configs/shapes.yaml", "--outdir", str(outdir), "--eval_num",
                                      str(args.eval_num), f"run.prompt_range=0-{args.prompts}", "run.evaluate=false"]
                wall = timed(command, args.threads)
                startup = timed(command, args.threads)  # the rerun: loads everything, generates nothing
                rate = total / (wall - startup)
                rates[name].append(rate)
                outputs[name] = images(outdir)
                print(f"repeat {repeat} {name}: {total} images, wall {wall:.1f} s, start-up {startup:.1f} s, "
                      f"{rate:.2f} images/s (load average {load_average()})")
            assert outputs["1 process"] == outputs["2 ranks"] and len(outputs["2 ranks"]) == total, "images differ"
            for outdir in Path(tmp).iterdir():
                shutil.rmtree(outdir)
    best = {name: max(values) for name, values in rates.items()}
    print(f"best of {args.repeats}: 1 process {best['1 process']:.2f} images/s, 2 ranks {best['2 ranks']:.2f} "
          f"images/s; ratio 2 ranks / 1 process = {best['2 ranks'] / best['1 process']:.2f} (images identical)")


if __name__ == "__main__":
    main()
