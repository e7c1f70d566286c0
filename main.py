"""Generate GenEval images with a generator and a selection policy; then score them. One entry point.

    python main.py --config configs/shapes.yaml                          # one process
    torchrun --nproc_per_node=8 main.py --config config.yaml \\
        --reward_model none --dpo_model dpo_iter run.seed=1              # one process per GPU

Flags are upstream's (ZiyuGuo99/Image-Generation-CoT main.py:46-125) and each sets one config
key; any other key is set with ``key=value`` (see config.py). Flags override the YAML preset and
``key=value`` overrides everything. Output, in GenEval's layout (``geneval/layout.py``):

    OUTDIR/config.yaml, OUTDIR/run_info.json          resolved config; versions and git commit
    OUTDIR/%05d/metadata.jsonl                        the prompt's metadata record
    OUTDIR/%05d/samples/%04d.png                      the kept image of each of run.eval_num samples
    OUTDIR/%05d/trace/%04d.jsonl                      one line per candidate of that image
    OUTDIR/results.jsonl, summary.md                  GenEval scores (unless run.evaluate=false)

Prompts are sharded ``[rank::world]``; every candidate is seeded from (seed, prompt, sample,
candidate), so images are the same for any number of ranks. Every file is written atomically and
a sample is done iff its PNG exists: rerunning a killed command finishes the job. Bad input is
rejected before anything is written (exit code 2); a rerun whose settings would change the images
of an existing OUTDIR is refused, and so is a second run while one writes there (``outdir_lock.py``).
``run.per_tag`` / ``run.prompt_range`` generate a subset of the prompts. Several nodes, Slurm and
elastic restarts: docs/scale_out.md.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from config import Config, flatten, is_path_setting, load_config, parse_prompt_range, shipped_path, to_yaml
from distributed import DistInfo, all_reduce_max, all_reduce_sum, barrier, destroy, env_ranks, init_distributed, \
    print0, resolve_device, shard
from generation import GENERATORS, build_generator
from generation.base import NonFiniteLogits
from geneval.evaluate import evaluate_outdir
from geneval.layout import METADATA_FILE, TMP_SUFFIX, atomic_write_text, prompt_dir, sample_done, write_sample
from geneval.suites import check_prompts_match, load_metadata, load_prompts
from outdir_lock import OutdirLock
from policies import build_policy, check_policy_name
from search import ImageRequest, Selection

FLAGS = {
    "prompts_file": ("run.prompts_file", str),
    "metadata_file": ("run.metadata_file", str),
    "outdir": ("run.outdir", str),
    "batch_size": ("run.batch_size", int),
    "eval_num": ("run.eval_num", int),
    "search_num": ("run.search_num", int),
    "reward_model": ("run.reward_model", str),
    "dpo_model": ("run.dpo_model", str),
    "guidance_scale": ("generation.guidance_scale", float),
    "generation_timesteps": ("generation.num_steps", int),
}
"""Upstream's flags (main.py:46-125) -> the config key each one sets."""

SAME_CHECKPOINT = [{"dpo_iter_parm_gudie", "dpo_iter_parm_guide"}]
"""Spellings of one checkpoint: upstream main.py:141 accepts only the typo ``gudie`` while its
run.sh passes ``guide`` (and so fails); we accept both."""

IMAGE_NEUTRAL_KEYS = ("run.evaluate", "run.batch_size", "run.device", "run.outdir", "run.prompt_range", "run.per_tag")
IMAGE_NEUTRAL_PREFIXES = ("geneval.", "dpo_checkpoints.")
"""Settings a rerun into an existing OUTDIR may change: they do not change any image. The DPO name
table is one of them: the checkpoint a run used is saved as the resolved ``generation.weights``;
so is the prompt subset (an image depends on its prompt's line only)."""

INPUT_FILE_KEYS = ("run.prompts_file", "run.metadata_file")
"""Settings naming input files: compared by content (a hash saved in run_info.json), not by spelling."""

CONFIG_FILE, RUN_INFO_FILE, TRACE_DIR = "config.yaml", "run_info.json", "trace"
PACKAGES = ["torch", "transformers", "accelerate", "numpy", "omegaconf", "pyyaml", "pillow", "safetensors", "tqdm"]


# ----------------------------------------------------------------------------
# Command line and validation (nothing is written here)

FLAG_HELP = {
    "eval_num": "images kept per prompt (GenEval scores 4)",
    "search_num": "candidates generated per kept image: N of best-of-N / the paths PRM and PARM search "
                  "among (ignored by --reward_model none)",
    "batch_size": "candidate rows per generator forward; bounds memory, never changes an image",
    "generation_timesteps": "decoding steps of the mask-predict order (Show-o: 18)",
    "reward_model": "the selection policy (names below)",
    "dpo_model": "DPO generator weights (names below)",
    "guidance_scale": "classifier-free guidance s in (1+s)*cond - s*uncond, a finite number >= 0",
}


def help_epilog() -> str:
    """Valid names, read when --help is asked for (nothing is read at import)."""
    from policies import POLICIES

    repo, presets = Path(__file__).resolve().parent, []
    for preset in ["config.yaml", *sorted(f"configs/{p.name}" for p in (repo / "configs").glob("*.yaml"))]:
        try:
            names = sorted((yaml.safe_load((repo / preset).read_text()) or {}).get("dpo_checkpoints") or {})
        except (OSError, yaml.YAMLError):
            continue
        presets.append(f"  {preset}: {', '.join(names) if names else '(none)'}")
    return "\n".join([
        f"--reward_model names: {', '.join(sorted(POLICIES))} (none = plain decoding; see search.py)",
        "--dpo_model: a name of the preset's dpo_checkpoints, or a weights folder. Names per preset:",
        *presets,
        "Other settings: key=value (see config.py), e.g. run.per_tag=1 (first prompt of every tag), "
        "run.prompt_range=0-10, run.seed=1, run.evaluate=false.",
    ])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=help_epilog() if {"-h", "--help"} & set(argv) else None)
    parser.add_argument("--config", default="config.yaml",
                        help="YAML preset (default: config.yaml, the paper's Show-o setting; "
                             "configs/shapes.yaml runs the embedded shapes world on CPU)")
    for flag, (key, kind) in FLAGS.items():
        extra = f": {FLAG_HELP[flag]}" if flag in FLAG_HELP else ""
        parser.add_argument(f"--{flag}", type=kind, default=None, help=f"sets {key}{extra}")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. run.seed=1 run.evaluate=false")
    return parser.parse_intermixed_args(argv)


def flag_updates(args: argparse.Namespace) -> dict[str, object]:
    return {key: getattr(args, flag) for flag, (key, _) in FLAGS.items() if getattr(args, flag) is not None}


def resolve_dpo_model(name: str, checkpoints: dict[str, str]) -> tuple[str, str | None]:
    """``(canonical name, weights folder)`` of ``--dpo_model``; ``("", None)`` when not set.

    A name is looked up (under any of its spellings) in the preset's ``dpo_checkpoints``; anything
    else must be an existing weights folder.
    """
    if not name:
        return "", None
    spellings = next((group for group in SAME_CHECKPOINT if name in group), {name})
    for spelling in sorted(spellings, key=lambda s: s != name):  # the name as given first
        if spelling in checkpoints:
            return spelling, checkpoints[spelling]
    if Path(name).is_dir():
        return name, name
    raise ValueError(f"--dpo_model {name!r} is neither a checkpoint of this preset (it has: "
                     f"{sorted(checkpoints) or 'none'}; set them under dpo_checkpoints:) nor an existing "
                     "weights folder; pass one of those names or a folder path")


def check_backend(name: str) -> None:
    """A name of ``generation.GENERATORS`` (checked before any model loads)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generation.backend {name!r}; valid: {sorted(GENERATORS)}")


@dataclass
class Job:
    cfg: Config
    prompts: list[str]
    metadata: list[dict]
    argv: list[str]
    selected: list[int] | None = None
    """The prompt lines this run generates (``run.prompt_range``, ``run.per_tag``); None = all."""

    def __post_init__(self):
        if self.selected is None:
            self.selected = list(range(len(self.prompts)))

    @property
    def outdir(self) -> Path:
        return Path(self.cfg.run.outdir)


def prepare(args: argparse.Namespace, argv: list[str]) -> Job:
    """Load and check everything the run needs from the user; raises ValueError, writes nothing."""
    cfg = load_config(args.config, args.overrides, flag_updates(args))
    cfg.run.dpo_model, weights = resolve_dpo_model(cfg.run.dpo_model, cfg.dpo_checkpoints)
    if weights is not None:
        cfg.generation.weights = weights
    check_policy_name(cfg.run.reward_model)
    check_backend(cfg.generation.backend)
    prompts, metadata = load_prompts(cfg.run.prompts_file), load_metadata(cfg.run.metadata_file)
    check_prompts_match(prompts, metadata)
    job = Job(cfg, prompts, metadata, argv, select_prompts(metadata, cfg.run.prompt_range, cfg.run.per_tag))
    check_outdir(job)
    return job


def select_prompts(metadata: list[dict], prompt_range: str, per_tag: int) -> list[int]:
    """Indices of the prompts a run generates: ``prompt_range`` first, then the first ``per_tag`` of each tag."""
    indices = list(range(len(metadata)))[parse_prompt_range(prompt_range)]
    if not indices:
        raise ValueError(f"run.prompt_range={prompt_range!r} selects none of the {len(metadata)} prompts; "
                         f"valid lines are 0 to {len(metadata) - 1}")
    if per_tag:
        seen: dict[str, int] = {}
        kept = []
        for index in indices:
            tag = metadata[index]["tag"]
            if seen.get(tag, 0) < per_tag:
                seen[tag] = seen.get(tag, 0) + 1
                kept.append(index)
        indices = kept
    return indices


# ----------------------------------------------------------------------------
# Never mixing runs in one OUTDIR

def _affects_images(key: str) -> bool:
    return key not in IMAGE_NEUTRAL_KEYS and not key.startswith(IMAGE_NEUTRAL_PREFIXES)


def config_differences(old_yaml: str, new_yaml: str) -> list[str]:
    """``key: old -> new`` for every image-changing setting that differs between two resolved configs."""
    old, new = flatten(yaml.safe_load(old_yaml) or {}), flatten(yaml.safe_load(new_yaml))
    # A setting added to the schema after the run was written is absent from its config.yaml; at its
    # default it keeps the behaviour the run had (new settings default to the old behaviour).
    defaults = flatten(yaml.safe_load(to_yaml(Config())))
    missing = "<absent>"
    return [f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}"
            for key in sorted(old.keys() | new.keys())
            if _affects_images(key) and not _same_value(key, old.get(key, missing), new.get(key, missing))
            and not (key not in old and key in defaults and new.get(key) == defaults[key])]


def _same_value(key: str, old, new) -> bool:
    """Equal values; for a path setting, also two spellings of one file (a shipped path saved as the
    preset writes it by a run in the repository, and anchored on the repository from elsewhere)."""
    if old == new:
        return True
    if not (is_path_setting(key) and isinstance(old, str) and isinstance(new, str) and old and new):
        return False
    return Path(shipped_path(old)).resolve() == Path(shipped_path(new)).resolve()


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def input_paths(cfg: Config) -> dict[str, str]:
    return {"run.prompts_file": cfg.run.prompts_file, "run.metadata_file": cfg.run.metadata_file}


def input_files(cfg: Config) -> dict[str, dict]:
    """What run_info.json records of the input files: resolved path and content hash."""
    return {key: {"path": str(Path(path).resolve()), "sha256": file_digest(path)}
            for key, path in input_paths(cfg).items()}


def input_file_differences(outdir: Path, old_yaml: str, cfg: Config) -> list[str]:
    """Input files that differ from the saved run's: by content hash (recorded in run_info.json),
    or, for runs written before hashes were recorded, by resolved path. ``./x`` and ``/abs/x`` are one file."""
    try:
        recorded = json.loads((outdir / RUN_INFO_FILE).read_text(encoding="utf-8")).get("inputs", {})
    except (OSError, ValueError, AttributeError):
        recorded = {}
    old, new = flatten(yaml.safe_load(old_yaml) or {}), input_files(cfg)
    differences = []
    for key in INPUT_FILE_KEYS:
        if key in recorded:
            same = recorded[key].get("sha256") == new[key]["sha256"]
        else:
            same = key in old and Path(str(old[key])).resolve() == Path(new[key]["path"])
        if not same:
            differences.append(f"{key}: {old.get(key, '<absent>')!r} -> {input_paths(cfg)[key]!r}"
                               + (" (other content)" if key in recorded else ""))
    return differences


def has_images(outdir: Path) -> bool:
    """Whether any sample of OUTDIR is done: a folder without one holds nothing a new setting could mix with."""
    return any(outdir.glob("[0-9]*/samples/*.png"))


def check_outdir(job: Job) -> None:
    """Refuse an OUTDIR that holds another run (other image settings, other metadata, or unknown origin).

    A folder without a finished image (e.g. left by a run that crashed before its first one) is
    not refused: nothing in it can be mixed, and its config is rewritten by the new run.
    """
    outdir = job.outdir
    if not outdir.exists():
        return
    if not outdir.is_dir():
        raise ValueError(f"--outdir {outdir} exists and is not a folder")
    saved = outdir / CONFIG_FILE
    if saved.is_file():
        if not has_images(outdir):
            return
        try:
            old_yaml = saved.read_text(encoding="utf-8")
            differences = [d for d in config_differences(old_yaml, to_yaml(job.cfg))
                           if d.split(":")[0] not in INPUT_FILE_KEYS]
        except yaml.YAMLError as err:
            raise ValueError(f"{saved} is not valid YAML ({err}); use another --outdir") from err
        differences += input_file_differences(outdir, old_yaml, job.cfg)
        if differences:
            raise ValueError(f"{outdir} holds a run with other settings ({'; '.join(differences)}); images of "
                             "different settings are never mixed: use another --outdir or the saved settings")
    elif any(p.is_dir() and p.name.isdigit() for p in outdir.iterdir()):
        raise ValueError(f"{outdir} holds prompt folders but no {CONFIG_FILE}, so it was not written by "
                         "main.py; use another --outdir")
    for index, record in enumerate(job.metadata):
        path = prompt_dir(outdir, index) / METADATA_FILE
        if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != record:
            raise ValueError(f"{path} describes another prompt than line {index + 1} of "
                             f"{job.cfg.run.metadata_file}; use another --outdir")


# ----------------------------------------------------------------------------
# Writing

def remove_leftovers(path: Path) -> None:
    """Delete temporaries a killed atomic writer of ``path`` left (geneval/layout.py's naming)."""
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def write_if_changed(path: Path, text: str) -> None:
    """Atomic write, skipped when the file already holds ``text`` (an identical rerun touches nothing)."""
    remove_leftovers(path)
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        atomic_write_text(path, text)


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository holding this file; None without git or commits."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, check=False)
    except FileNotFoundError:  # no git executable
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_files(job: Job, info: DistInfo) -> None:
    """Rank 0: the resolved config and what produced the run."""
    run_info = {"git_commit": git_commit(), "packages": package_versions(), "python": platform.python_version(),
                "world_size": info.world_size, "argv": job.argv, "inputs": input_files(job.cfg),
                # torchrun --max-restarts: which attempt wrote this (0 = the first)
                "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))}
    write_if_changed(job.outdir / CONFIG_FILE, to_yaml(job.cfg))
    write_if_changed(job.outdir / RUN_INFO_FILE, json.dumps(run_info, indent=2) + "\n")


def trace_path(outdir: Path, prompt_index: int, sample_index: int) -> Path:
    return prompt_dir(outdir, prompt_index) / TRACE_DIR / f"{sample_index:04d}.jsonl"


def trace_lines(request: ImageRequest, selection: Selection, seed: int) -> str:
    lines = []
    for record in selection.candidates:
        candidate = record.candidate
        line = {"prompt": request.prompt, "prompt_index": request.prompt_index, "sample": request.sample_index,
                "candidate": candidate, "seed": [seed, request.prompt_index, request.sample_index, candidate]}
        line.update(record.as_json())
        lines.append(json.dumps(line) + "\n")
    return "".join(lines)


def write_selection(outdir: Path, request: ImageRequest, selection: Selection, seed: int) -> None:
    """Trace first, PNG last: the PNG marks the sample done, so a done sample always has its trace."""
    path = trace_path(outdir, request.prompt_index, request.sample_index)
    remove_leftovers(path)
    atomic_write_text(path, trace_lines(request, selection, seed))
    image = selection.image.permute(1, 2, 0).cpu().numpy()  # [3, H, W] -> [H, W, 3]
    assert image.dtype == np.uint8, "a policy must return uint8 images"
    write_sample(outdir, request.prompt_index, request.sample_index, image)


# ----------------------------------------------------------------------------
# Generating

def pending_requests(job: Job, prompt_indices: list[int]) -> list[ImageRequest]:
    """This rank's samples without a PNG, after writing each prompt's metadata record."""
    requests = []
    for index in prompt_indices:
        write_if_changed(prompt_dir(job.outdir, index) / METADATA_FILE, json.dumps(job.metadata[index]) + "\n")
        requests += [ImageRequest(job.prompts[index], index, sample) for sample in range(job.cfg.run.eval_num)
                     if not sample_done(job.outdir, index, sample)]
    return requests


def chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def generate(job: Job, generator, policy, info: DistInfo) -> None:
    """Every rank runs its prompts' pending samples; rank 0 shows one bar over all ranks."""
    run = job.cfg.run
    mine = shard(job.selected, info)
    requests = pending_requests(job, mine)
    batches = chunks(requests, max(1, run.batch_size // policy.num_candidates))
    # Ranks step together (a padded empty batch when one runs out) so the bar counts all of them.
    num_rounds = all_reduce_max(len(batches), info)
    done = all_reduce_sum(len(mine) * run.eval_num - len(requests), info)
    total = len(job.selected) * run.eval_num
    with tqdm(total=total, initial=done, unit="img", desc="generate", disable=not info.is_main) as bar:
        for round_index in range(num_rounds):
            batch = batches[round_index] if round_index < len(batches) else []
            if batch:
                for request, selection in zip(batch, policy(generator, batch, run.seed), strict=True):
                    write_selection(job.outdir, request, selection, run.seed)
            bar.update(all_reduce_sum(len(batch), info))


def load_models(job: Job):
    """The generator and the policy, on this process's device (the one ``init_distributed`` will pick)."""
    device = resolve_device(job.cfg.run.device, env_ranks()[2])
    generator = build_generator(job.cfg.generation, device)
    return generator, build_policy(job.cfg, device)


def run(job: Job, generator, policy, info: DistInfo) -> None:
    barrier(info)  # every rank loaded its models before anything is written
    if info.is_main:
        write_run_files(job, info)
    generate(job, generator, policy, info)
    barrier(info)  # every image exists before scoring
    if job.cfg.run.evaluate:
        summary = evaluate_outdir(job.outdir, job.cfg.geneval, info)
        print0(info, f"GenEval overall {summary.overall:.5f} ({job.outdir})")


def user_error(err: Exception) -> int:
    """Exit code 2 after one line naming the problem. Under torchrun every process meets the same
    bad input, so only the first process of each node prints it (one line per node's log)."""
    if env_ranks()[2] == 0:
        print(f"main.py: error: {err}", file=sys.stderr)
    return 2


def lock_outdir(job: Job, lock: OutdirLock, info: DistInfo) -> bool:
    """Rank 0 takes OUTDIR's lock and checks the folder again under it (another run may have written
    since ``prepare``); every rank learns whether that worked. False: refused, already printed."""
    error = None
    if info.is_main:
        try:
            lock.acquire()
            check_outdir(job)
        except ValueError as err:
            lock.release()
            error = err
            print(f"main.py: error: {err}", file=sys.stderr)
    return all_reduce_max(int(error is not None), info) == 0


def count_images(job: Job) -> int:
    return sum(sample_done(job.outdir, index, sample) for index in job.selected for sample in range(job.cfg.run.eval_num))


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 bad input or an output folder this run may not write; 1 a failure while
    running (its message names the prompt and step where it could); 130 stopped by Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        job = prepare(args, argv)
        generator, policy = load_models(job)
    except ValueError as err:  # bad user input: the message says what to fix; no traceback
        return user_error(err)
    info = init_distributed(job.cfg.run.device)
    lock = OutdirLock(job.outdir, argv)
    try:
        if not lock_outdir(job, lock, info):
            return 2
        run(job, generator, policy, info)
    except KeyboardInterrupt:
        print0(info, f"\nmain.py: interrupted; {count_images(job)} of {len(job.selected) * job.cfg.run.eval_num} "
                     "images are saved. Run the same command again to resume where it stopped.", file=sys.stderr)
        return 130
    except PermissionError as err:
        print(f"main.py: error: cannot write {err.filename} ({err.strerror}); pass an --outdir you can write to",
              file=sys.stderr)
        return 2
    except NonFiniteLogits as err:
        print(f"main.py: error: {err}", file=sys.stderr)
        return 1
    finally:
        lock.release()
        destroy(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
