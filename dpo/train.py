"""DPO training of the shapes-world generator under ``accelerate launch`` (upstream training/train_dpo.py).

    accelerate launch --config_file dpo/accelerate_ddp.yaml -m dpo.train \\
        --pairs work/pairs.jsonl --init weights/shapes --out weights/shapes/dpo/dpo
    accelerate launch --num_processes 2 --cpu -m dpo.train ...      # two CPU processes (gloo)
    python -m dpo.train ...                                          # one process

``--init`` and ``--reference`` are generator weights folders (``FOLDER/generator`` +
``FOLDER/tokenizer``, see generation/tiny/backend.py); the reference defaults to ``--init`` (the
paper: policy and frozen reference both start from the round's starting model). The result is
written in the same layout, so ``generation.weights=OUT`` or ``--dpo_model OUT`` loads it.

Upstream settings kept (scripts/dpo.yaml): beta 0.1, AdamW (0.9, 0.999, eps 1e-8, weight decay
0.01, none on biases, LayerNorms and embeddings), cosine schedule with 10% warmup, no gradient
clipping, text dropout 0.1, ``min_masking_rate`` 0, 1 epoch. Fixed upstream bugs (paper.md
section 4): the data is shuffled each epoch and every rank trains on its own slice of the global
batch (upstream feeds every rank the same unshuffled batches, bug 3); the mask and text dropout
are shared by chosen/rejected and policy/reference (bug 4, ``dpo.likelihood``); pair weights from
``dpo.guidance`` enter the loss (bug 1). The loss of a rank is normalised by the global batch's
weight sum, so the all-reduced gradient is exactly the global weighted mean.

Everything random is a function of (seed, step) and the pair's place in the global batch, so the
result depends on the global batch size but not on how many processes share it, and a killed run
restarted with the same command resumes from ``OUT/checkpoint`` (``accelerator.save_state``,
written to a temporary folder and renamed) and produces the same weights as an uninterrupted run,
with no step logged twice.
Outputs: ``OUT/train_log.jsonl`` (one line per logged step), ``OUT/train_summary.json`` (settings,
steps, per-rank parameter checksums: equal iff the ranks stayed in sync), ``OUT/tokenizer`` and
``OUT/generator`` (written last; its ``config.json`` marks a finished run, which a rerun skips).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dpo.likelihood import TINY_SCORERS, draw_masks, draw_text_dropout, pair_logprobs
from dpo.loss import dpo_loss
from dpo.pairs import load_images, read_pairs
from generation.tiny.model import TinyT2I
from generation.tiny.text import WordTokenizer
from generation.tiny.vq import PatchTokenizer
from geneval.layout import atomic_write_text

CHECKPOINT, LOG_FILE, SUMMARY_FILE = "checkpoint", "train_log.jsonl", "train_summary.json"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainConfig:
    pairs: str
    """Pair file (``dpo.pairs``): image paths or token lists."""
    init: str
    """Weights folder the policy starts from (``FOLDER/generator``, ``FOLDER/tokenizer``)."""
    out: str
    """Output weights folder (same layout)."""
    reference: str = ""
    """Frozen reference weights folder; empty: ``init``."""
    order: str = "mask"
    """Likelihood: ``mask`` (masked tokens, Show-o) or ``raster`` (exact sequence)."""
    beta: float = 0.1
    sft_coef: float = 0.0
    use_weights: bool = True
    """Use the pair file's ``weight`` field (PARM-guided pairs); False: every pair counts 1."""
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 10
    """Pairs per process per step (upstream ``batch_size_t2i``)."""
    epochs: float = 1.0
    steps: int = 0
    """Total optimiser steps; 0: ``ceil(epochs * pairs / global batch)``."""
    cond_dropout: float = 0.1
    min_masking_rate: float = 0.0
    seed: int = 10086
    checkpoint_every: int = 100
    log_every: int = 10
    stop_after: int = 0
    """Testing: exit (as if killed, without saving) after this many steps of this invocation; 0: never."""


# -- data ------------------------------------------------------------------------------------------
@dataclass
class PairTensors:
    text: torch.Tensor  # long [P, T]
    chosen: torch.Tensor  # long [P, N]
    rejected: torch.Tensor  # long [P, N]
    weight: torch.Tensor  # float [P]


def encode_side(values: list, tokenizer: PatchTokenizer, num_tokens: int) -> torch.Tensor:
    """Token ids ``[P, N]`` of one side of the pairs: token lists as given, image paths through the tokenizer."""
    codes = torch.empty(len(values), num_tokens, dtype=torch.long)
    paths = [i for i, v in enumerate(values) if isinstance(v, str)]
    for i, v in enumerate(values):
        if not isinstance(v, str):
            if len(v) != num_tokens:
                raise ValueError(f"pair {i}: {len(v)} image tokens, the generator uses {num_tokens}")
            codes[i] = torch.tensor(v)
    for start in range(0, len(paths), 512):
        chunk = paths[start:start + 512]
        codes[chunk] = tokenizer.encode(load_images([values[i] for i in chunk]))
    return codes


def load_pair_tensors(path: str, text_tokenizer: WordTokenizer, tokenizer: PatchTokenizer,
                      num_tokens: int) -> PairTensors:
    records = read_pairs(path)
    return PairTensors(text_tokenizer.encode([r["prompt"] for r in records]),
                       encode_side([r["chosen"] for r in records], tokenizer, num_tokens),
                       encode_side([r["rejected"] for r in records], tokenizer, num_tokens),
                       torch.tensor([float(r["weight"]) for r in records]))


def mixed_seed(*values: int) -> int:
    """A 63-bit seed from integers; neighbouring tuples give unrelated streams."""
    mixed = torch.tensor(values, dtype=torch.int64)
    multipliers = torch.tensor([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F][:len(values)], dtype=torch.int64)
    return int((mixed * multipliers).sum().item()) & 0x7FFF_FFFF_FFFF_FFFF


def global_batch_indices(step: int, num_pairs: int, global_batch: int, seed: int) -> torch.Tensor:
    """Pair indices of global batch ``step``: consecutive slices of a fresh permutation per epoch."""
    positions = torch.arange(step * global_batch, (step + 1) * global_batch)
    epochs, offsets = positions // num_pairs, positions % num_pairs
    indices = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        order = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(mixed_seed(seed, epoch)))
        rows = epochs == epoch
        indices[rows] = order[offsets[rows]]
    return indices


def rank_batch_indices(step: int, num_pairs: int, batch_size: int, rank: int, world: int, seed: int) -> torch.Tensor:
    """This rank's ``batch_size`` pairs of global batch ``step`` (the ranks' slices are disjoint)."""
    return global_batch_indices(step, num_pairs, batch_size * world, seed)[rank * batch_size:(rank + 1) * batch_size]


def total_steps(cfg: TrainConfig, num_pairs: int, world: int) -> int:
    return cfg.steps or max(1, math.ceil(cfg.epochs * num_pairs / (cfg.batch_size * world)))


# -- optimisation ----------------------------------------------------------------------------------
def build_optimizer(model: TinyT2I, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases, norms and embeddings (upstream train_dpo.py)."""
    def decays(name: str, param: torch.Tensor) -> bool:
        return param.ndim >= 2 and "embed" not in name

    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if decays(n, p)], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def learning_rate(step: int, steps: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0 (upstream ``cosine``)."""
    warmup = int(cfg.warmup_ratio * steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


# -- outputs ---------------------------------------------------------------------------------------
def write_log(out: Path, log: list[dict]) -> None:
    atomic_write_text(out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log))


def read_log(out: Path, before_step: int) -> list[dict]:
    """Logged lines of steps before ``before_step`` (a resumed run re-logs the steps after its checkpoint)."""
    path = out / LOG_FILE
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] < before_step]


def recover_checkpoint(out: Path) -> None:
    """Finish or undo a checkpoint swap that a kill interrupted (main process only)."""
    current, old, tmp = out / CHECKPOINT, out / f"{CHECKPOINT}.old", out / f"{CHECKPOINT}.tmp"
    if not (current / STATE_FILE).is_file() and (old / STATE_FILE).is_file():
        shutil.rmtree(current, ignore_errors=True)
        old.rename(current)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(accelerator, out: Path, step: int) -> None:
    """``accelerator.save_state`` into a temporary folder, then swapped in: a kill leaves one whole checkpoint."""
    current, old, tmp = out / CHECKPOINT, out / f"{CHECKPOINT}.old", out / f"{CHECKPOINT}.tmp"
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps({"step": step}) + "\n")  # last: marks it complete
        if current.exists():
            current.rename(old)
        tmp.rename(current)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_weights(model: TinyT2I, init: Path, out: Path, text_tokenizer: WordTokenizer) -> None:
    """``OUT/tokenizer`` (a copy of the init's) then ``OUT/generator``, each built aside and renamed in."""
    tokenizer_tmp, generator_tmp = out / "tokenizer.tmp", out / "generator.tmp"
    for tmp in (tokenizer_tmp, generator_tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(init / "tokenizer", tokenizer_tmp)
    shutil.rmtree(out / "tokenizer", ignore_errors=True)
    tokenizer_tmp.rename(out / "tokenizer")
    model.save(generator_tmp)
    text_tokenizer.save(generator_tmp / "text_vocab.json")
    shutil.rmtree(out / "generator", ignore_errors=True)
    generator_tmp.rename(out / "generator")


def is_finished(out: Path) -> bool:
    return (out / "generator" / "config.json").is_file() and (out / SUMMARY_FILE).is_file()


# -- training --------------------------------------------------------------------------------------
def check_config(cfg: TrainConfig) -> None:
    if cfg.order not in TINY_SCORERS:
        raise ValueError(f"--order must be one of {sorted(TINY_SCORERS)}, got {cfg.order!r}")
    for name in ("init", "reference"):
        folder = Path(getattr(cfg, name) or cfg.init)
        if not (folder / "generator" / "config.json").is_file() or not (folder / "tokenizer").is_dir():
            raise ValueError(f"--{name} {folder} is not a generator weights folder (FOLDER/generator/config.json "
                             "and FOLDER/tokenizer); pass e.g. weights/shapes or a finished DPO output")
    if cfg.batch_size < 1 or cfg.beta <= 0:
        raise ValueError("--batch-size must be >= 1 and --beta > 0")


def train(cfg: TrainConfig, accelerator=None) -> dict | None:
    """Run (or resume) one DPO training; returns the summary, or None when stopped by ``stop_after``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    check_config(cfg)
    out, init = Path(cfg.out), Path(cfg.init)
    # Without CUDA, cpu=True is what makes accelerate join a launcher's gloo group (MULTI_CPU).
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    if is_finished(out):
        accelerator.print(f"{out} already holds a finished run; nothing to do")
        return json.loads((out / SUMMARY_FILE).read_text())
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(out)
    accelerator.wait_for_everyone()
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes

    text_tokenizer = WordTokenizer.load(init / "generator" / "text_vocab.json")
    tokenizer = PatchTokenizer.load(init / "tokenizer")
    policy = TinyT2I.load(init / "generator")
    reference = TinyT2I.load(Path(cfg.reference or cfg.init) / "generator").to(device).requires_grad_(False)
    model_cfg = policy.cfg
    data = load_pair_tensors(cfg.pairs, text_tokenizer, tokenizer, model_cfg.num_image_tokens)
    if not cfg.use_weights:
        data.weight = torch.ones_like(data.weight)
    num_pairs, steps = len(data.text), total_steps(cfg, len(data.text), world)

    policy.train()
    optimizer = build_optimizer(policy, cfg)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    start = 0
    if (out / CHECKPOINT / STATE_FILE).is_file():
        accelerator.load_state(str(out / CHECKPOINT))
        start = json.loads((out / CHECKPOINT / STATE_FILE).read_text())["step"]
        accelerator.print(f"resuming from step {start}")
    log = read_log(out, start) if accelerator.is_main_process else []
    score = TINY_SCORERS[cfg.order]
    scorer_args = {"pad_id": text_tokenizer.pad_id, "cfg": model_cfg}

    progress = tqdm(range(start, steps), initial=start, total=steps, desc="dpo", mininterval=5,
                    disable=not accelerator.is_main_process)
    for done, step in enumerate(progress, start=1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, cfg)
        global_index = global_batch_indices(step, num_pairs, cfg.batch_size * world, cfg.seed)
        index = global_index[rank * cfg.batch_size:(rank + 1) * cfg.batch_size]
        text, chosen, rejected = (t[index].to(device) for t in (data.text, data.chosen, data.rejected))
        # The draws of the whole global batch, sliced: a pair's noise does not depend on the world size.
        generator = torch.Generator().manual_seed(mixed_seed(cfg.seed, step))
        if cfg.order == "mask":
            draw = draw_masks(len(global_index), model_cfg.num_image_tokens, generator, cfg.cond_dropout,
                              cfg.min_masking_rate)
        else:
            draw = draw_text_dropout(len(global_index), generator, cfg.cond_dropout)
        draw = draw.rows(slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)).to(device)
        pi_c, pi_r, n_c, _ = pair_logprobs(score, policy, text, chosen, rejected, draw, **scorer_args)
        with torch.no_grad():
            ref_c, ref_r, _, _ = pair_logprobs(score, reference, text, chosen, rejected, draw, **scorer_args)
        result = dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta, data.weight[index].to(device), cfg.sft_coef, n_c,
                          normaliser=data.weight[global_index].sum().item() / world)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(result.loss)
        optimizer.step()
        if step % cfg.log_every == 0 or step == steps - 1:
            stats = torch.tensor([result.loss.item(), result.accuracy, result.margin], device=device)
            stats = accelerator.reduce(stats, reduction="mean").tolist()
            if accelerator.is_main_process:
                log.append({"step": step, "loss": stats[0], "accuracy": stats[1], "reward_margin": stats[2],
                            "lr": learning_rate(step, steps, cfg)})
                write_log(out, log)
                progress.set_postfix(loss=f"{stats[0]:.4f}", acc=f"{stats[1]:.2f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(accelerator, out, step + 1)
        if cfg.stop_after and done >= cfg.stop_after and step + 1 < steps:
            accelerator.print(f"stopping after step {step} (--stop-after)")
            return None

    checksums = accelerator.gather(torch.tensor([parameter_checksum(policy)], dtype=torch.float64,
                                                device=device)).tolist()
    sharded = accelerator.distributed_type == DistributedType.FSDP  # ranks hold different shards
    summary = {"steps": steps, "pairs": num_pairs, "world_size": world, "config": dataclasses.asdict(cfg),
               "rank_checksums": checksums, "ranks_in_sync": None if sharded else len(set(checksums)) == 1,
               "last": log[-1] if log else None}
    state = accelerator.get_state_dict(policy)  # a collective under FSDP: every rank calls it
    if accelerator.is_main_process:
        final = TinyT2I(model_cfg)
        final.load_state_dict(state)
        save_weights(final.eval(), init, out, text_tokenizer)
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    accelerator.wait_for_everyone()
    return summary


def accelerate_rank() -> int:
    from accelerate import PartialState

    return PartialState().process_index


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="dpo.train", description=__doc__.splitlines()[0])
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = {"float": float, "int": int, "str": str, "bool": str}[field.type]
        if field.default is dataclasses.MISSING:
            parser.add_argument(flag, type=kind, required=True)
        elif field.type == "bool":
            parser.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=field.default)
        else:
            parser.add_argument(flag, type=kind, default=field.default)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        summary = train(cfg)
    except ValueError as err:  # bad user input (paths, settings, pair file): a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary is not None and accelerate_rank() == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "pairs", "world_size", "ranks_in_sync", "last")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
