"""DPO training of a generator under ``accelerate launch`` (upstream training/train_dpo.py).

One loop for every backend (``--backend``, adapters in dpo/backends.py): ``tiny`` (the shapes
world, the default), ``showo``, ``janus``, ``llamagen``. Run from the repo root:

    # shapes world: --init/--reference are FOLDER/generator + FOLDER/tokenizer folders
    accelerate launch --config_file dpo/accelerate_ddp.yaml -m dpo.train \\
        --pairs work/pairs.jsonl --init weights/shapes --out weights/shapes/dpo/dpo
    accelerate launch --num_processes 2 --cpu -m dpo.train ...      # two CPU processes (gloo)
    python -m dpo.train ...                                          # one process

    # Show-o (config.yaml; --init defaults to its generation.weights, showlab/show-o); pairs may
    # name the generator's PNGs (MAGVIT-v2 encodes them) or hold token lists
    accelerate launch --config_file dpo/accelerate_ddp.yaml -m dpo.train --backend showo \\
        --config config.yaml --pairs work/pairs.jsonl --out ckpts/dpo
    accelerate launch --config_file dpo/accelerate_ddp.yaml -m dpo.train --backend showo \\
        --config config.yaml --pairs work/pairs_iter.jsonl --init ckpts/dpo --out ckpts/dpo_iter
    python main.py --config config.yaml --dpo_model ckpts/dpo_iter   # or generation.weights=ckpts/dpo_iter

    # Janus-Pro (configs/janus.yaml; pairs name the generator's PNGs (its VQ encodes them) or hold
    # token lists; float32 training)
    accelerate launch --config_file dpo/accelerate_ddp.yaml -m dpo.train --backend janus \\
        --config configs/janus.yaml --pairs work/pairs.jsonl --out ckpts/janus_dpo generation.dtype=float32
    torchrun --nproc_per_node=8 main.py --config configs/janus.yaml --dpo_model ckpts/janus_dpo

    # LlamaGen (configs/llamagen.yaml; pairs hold token lists: its VQ loads decoder-only; float32
    # training; the result is OUT/t2i_dpo.pt; generation.llamagen.text_encoder=DIR etc. as in main.py)
    accelerate launch --config_file dpo/accelerate_ddp.yaml -m dpo.train --backend llamagen \\
        --config configs/llamagen.yaml --pairs work/pairs_tokens.jsonl --out ckpts/llamagen_dpo \\
        generation.dtype=float32
    torchrun --nproc_per_node=8 main.py --config configs/llamagen.yaml --dpo_model ckpts/llamagen_dpo

The generator comes from the ``generation:`` section of ``--config`` (default: the backend's preset,
``dpo.backends.PRESETS``) with positional ``generation.KEY=VALUE`` overrides, as in main.py;
``--init`` sets ``generation.weights``. ``--reference`` (same kind of weights) defaults to ``--init``
(the paper: policy and frozen reference both start from the round's starting model). The result is
written in the backend's own checkpoint layout, so ``generation.weights=OUT`` or ``--dpo_model OUT``
loads it. Weights train in float32 (``generation.dtype`` must say so; accelerate's ``mixed_precision``
stays ``no``, see dpo/accelerate_ddp.yaml). ``--cond-dropout`` (0.1) applies to every backend: a
dropped pair is scored under the unconditional prompt of the generator's guidance rows.
Under FSDP (dpo/accelerate_fsdp.yaml) set ``fsdp_transformer_layer_cls_to_wrap`` to the backend's
block: ``Block`` (tiny), ``PhiDecoderLayer`` (Show-o), ``LlamaDecoderLayer`` (Janus), ``TransformerBlock``
(LlamaGen). On CPU processes accelerate does not shard (its FSDP config would run DDP and is
refused): ``--fsdp-blocks`` with the same class name shards with torch's FSDP2 (``dpo/fsdp_cpu.py``).

Upstream settings kept (scripts/dpo.yaml): beta 0.1, AdamW (0.9, 0.999, eps 1e-8, weight decay
0.01, none on biases, LayerNorms and embeddings), cosine schedule with 10% warmup, no gradient
clipping, text dropout 0.1, ``min_masking_rate`` 0, 1 epoch. Fixed upstream bugs (Image-Generation-CoT
training/train_dpo.py): the data is shuffled each epoch and every rank trains on its own slice of the global
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
steps, per-rank parameter checksums: equal iff the ranks stayed in sync; written last, it marks a
finished run, which a rerun skips) and the weights, built aside and renamed in before the summary:
``OUT/tokenizer`` + ``OUT/generator`` (tiny), ``OUT/{config.json, pytorch_model.safetensors, llm/}``
(Show-o), ``OUT/{config.json, model.safetensors, tokenizer and processor files}`` (Janus),
``OUT/t2i_dpo.pt`` (LlamaGen).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from dpo import fsdp_cpu
from dpo.backends import BACKENDS, PRESETS, REPO, Backend
from dpo.likelihood import draw_masks, draw_text_dropout
from dpo.loss import dpo_loss
from dpo.pairs import read_pairs
from generation.config import GenerationConfig
from geneval.layout import atomic_write_text

CHECKPOINT, LOG_FILE, SUMMARY_FILE = "checkpoint", "train_log.jsonl", "train_summary.json"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainConfig:
    pairs: str
    """Pair file (``dpo.pairs``): image paths or token lists."""
    out: str
    """Output weights folder, in the backend's own layout (``dpo.backends``)."""
    init: str = ""
    """Weights the policy starts from (sets ``generation.weights``); empty: the config's ``generation.weights``."""
    reference: str = ""
    """Frozen reference weights (same kind as ``init``); empty: ``init``."""
    backend: str = "tiny"
    """Generator family, a key of ``dpo.backends.BACKENDS``: tiny, showo, janus, llamagen."""
    config: str = ""
    """Run config whose ``generation:`` section builds the generator; empty: the backend's preset (``PRESETS``)."""
    overrides: list[str] = field(default_factory=list)
    """``generation.KEY=VALUE`` overrides of that section (positional on the command line, as in main.py)."""
    order: str = ""
    """Sets ``generation.order``: tiny ``mask`` or ``raster``, Show-o ``mask``, Janus/LlamaGen ``raster``; empty: the
    config's."""
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
    fsdp_blocks: str = ""
    """CPU processes only: shard the policy with FSDP2 ``fully_shard``, one unit per module of this class
    (``Block``, ``PhiDecoderLayer``, ``LlamaDecoderLayer``, ``TransformerBlock``; ``dpo/fsdp_cpu.py``),
    because accelerate's FSDP config runs as plain DDP on CPU. Empty: accelerate decides (DDP, or its FSDP
    on GPUs). Checkpoints are not written in this mode (``--checkpoint-every`` must be >= the steps)."""


# -- data ------------------------------------------------------------------------------------------
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
def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, without weight decay on biases, norms and embeddings
    (upstream train_dpo.py). An embedding is a parameter or module whose own name says ``embed``
    (``pos_embed``, ``tok_embeddings.weight``), not every tensor below one (LlamaGen's ``cls_embedding.cap_proj``)."""
    def decays(name: str, param: torch.Tensor) -> bool:
        return param.ndim >= 2 and "embed" not in ".".join(name.split(".")[-2:])

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
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


def is_finished(backend: Backend, out: Path) -> bool:
    """Weights saved, then the summary: written last, so both exist only after a finished run."""
    return backend.is_saved(out) and (out / SUMMARY_FILE).is_file()


# -- training --------------------------------------------------------------------------------------
def generation_config(cfg: TrainConfig) -> GenerationConfig:
    """The ``generation:`` section of ``--config`` (or the backend's preset) + overrides, ``--init``, ``--order``."""
    from config import load_config

    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown --backend {cfg.backend!r}; valid: {sorted(BACKENDS)}")
    foreign = [o for o in cfg.overrides if not o.startswith("generation.")]
    if foreign:
        raise ValueError(f"overrides {foreign} are outside generation.*; dpo.train reads only the generator's section "
                         "(e.g. generation.dtype=float32)")
    config = cfg.config or str(REPO / PRESETS[cfg.backend])
    generation = load_config(config, cfg.overrides).generation
    if generation.backend != cfg.backend:
        raise ValueError(f"{config} configures generation.backend={generation.backend}, not --backend {cfg.backend}; "
                         f"pass that backend's preset ({PRESETS[cfg.backend]}) or the matching --backend")
    generation.weights = cfg.init or generation.weights
    generation.order = cfg.order or generation.order
    return generation


def build_backend(cfg: TrainConfig) -> Backend:
    """The adapter of ``--backend`` for this run (nothing loaded yet)."""
    generation = generation_config(cfg)
    if generation.dtype != "float32":
        raise ValueError(f"generation.dtype={generation.dtype}: DPO trains float32 weights (AdamW steps of lr "
                         f"{cfg.lr:g} vanish in bfloat16 rounding); add generation.dtype=float32 (the output loads in "
                         "any dtype)")
    if Path(cfg.out).resolve() == Path(generation.weights).resolve():
        raise ValueError(f"--out {cfg.out} is the folder the policy starts from; write the result elsewhere")
    return BACKENDS[cfg.backend](generation, cfg.reference or generation.weights)


def check_config(cfg: TrainConfig) -> None:
    if cfg.batch_size < 1 or cfg.beta <= 0:
        raise ValueError("--batch-size must be >= 1 and --beta > 0")


def check_sharding(cfg: TrainConfig, accelerator, steps: int) -> None:
    """No silent DDP where FSDP was asked for, and ``--fsdp-blocks`` only where accelerate does not shard."""
    from accelerate.utils import DistributedType

    asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if asked and accelerator.distributed_type != DistributedType.FSDP:
        raise ValueError(f"accelerate was launched with an FSDP config but runs as {accelerator.distributed_type.value}: "
                         "accelerate shards only on GPUs (and other accelerators). On CPU processes launch "
                         "without the FSDP config and pass --fsdp-blocks BLOCK_CLASS (dpo/fsdp_cpu.py)")
    if cfg.fsdp_blocks and accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise ValueError(f"--fsdp-blocks shards CPU process groups; this run is {accelerator.distributed_type.value} "
                         "(on GPUs use accelerate's FSDP config, dpo/accelerate_fsdp.yaml; one process needs no sharding)")
    if cfg.fsdp_blocks and cfg.checkpoint_every < steps:
        raise ValueError(f"--fsdp-blocks writes no checkpoints (accelerate's save_state would keep rank 0's optimizer "
                         f"shard only); pass --checkpoint-every {steps} or more")


def train(cfg: TrainConfig, accelerator=None, backend: Backend | None = None) -> dict | None:
    """Run (or resume) one DPO training; returns the summary, or None when stopped by ``stop_after``.

    ``backend``: the adapter (``build_backend(cfg)``, e.g. kept by a test to inspect the trained model); None
    builds it.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    backend = backend or build_backend(cfg)
    check_config(cfg)
    out = Path(cfg.out)
    # Without CUDA, cpu=True is what makes accelerate join a launcher's gloo group (MULTI_CPU).
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    check_sharding(cfg, accelerator, total_steps(cfg, len(read_pairs(cfg.pairs)), accelerator.num_processes)
                   if cfg.fsdp_blocks else 0)
    if is_finished(backend, out):
        accelerator.print(f"{out} already holds a finished run; nothing to do")
        return json.loads((out / SUMMARY_FILE).read_text())
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    policy, reference = backend.load(device)
    data = backend.encode(read_pairs(cfg.pairs))
    if not cfg.use_weights:
        data.weight = torch.ones_like(data.weight)
    num_pairs, steps = len(data.chosen), total_steps(cfg, len(data.chosen), world)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(out)
    accelerator.wait_for_everyone()

    policy.train()
    if cfg.fsdp_blocks:  # sharded before the optimiser sees its parameters (they become DTensors)
        policy = fsdp_cpu.shard(policy, cfg.fsdp_blocks, world)
        optimizer = accelerator.prepare(build_optimizer(policy, cfg))
    else:
        optimizer = build_optimizer(policy, cfg)
        policy, optimizer = accelerator.prepare(policy, optimizer)
    start = 0
    if (out / CHECKPOINT / STATE_FILE).is_file():
        accelerator.load_state(str(out / CHECKPOINT))
        start = json.loads((out / CHECKPOINT / STATE_FILE).read_text())["step"]
        accelerator.print(f"resuming from step {start}")
    log = read_log(out, start) if accelerator.is_main_process else []

    progress = tqdm(range(start, steps), initial=start, total=steps, desc="dpo", mininterval=5,
                    disable=not accelerator.is_main_process)
    for done, step in enumerate(progress, start=1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, cfg)
        global_index = global_batch_indices(step, num_pairs, cfg.batch_size * world, cfg.seed)
        index = global_index[rank * cfg.batch_size:(rank + 1) * cfg.batch_size]
        batch = data.rows(index, device)
        # The draws of the whole global batch, sliced: a pair's noise does not depend on the world size.
        generator = torch.Generator().manual_seed(mixed_seed(cfg.seed, step))
        if backend.order == "mask":
            draw = draw_masks(len(global_index), backend.num_tokens, generator, cfg.cond_dropout,
                              cfg.min_masking_rate)
        else:
            draw = draw_text_dropout(len(global_index), generator, cfg.cond_dropout)
        draw = draw.rows(slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)).to(device)
        pi_c, pi_r, n_c, _ = backend.pair_logprobs(policy, batch, draw)
        with torch.no_grad():
            ref_c, ref_r, _, _ = backend.pair_logprobs(reference, batch, draw)
        result = dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta, batch.weight, cfg.sft_coef, n_c,
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

    checksum = fsdp_cpu.local_checksum(policy) if cfg.fsdp_blocks else parameter_checksum(policy)
    checksums = accelerator.gather(torch.tensor([checksum], dtype=torch.float64, device=device)).tolist()
    # Ranks hold different shards under either FSDP
    sharded = accelerator.distributed_type == DistributedType.FSDP or bool(cfg.fsdp_blocks)
    summary = {"steps": steps, "pairs": num_pairs, "world_size": world, "config": dataclasses.asdict(cfg),
               "generation": dataclasses.asdict(backend.generation),
               "rank_checksums": checksums, "ranks_in_sync": None if sharded else len(set(checksums)) == 1,
               "last": log[-1] if log else None}
    # A collective under FSDP: every rank calls it
    state = fsdp_cpu.full_state_dict(policy) if cfg.fsdp_blocks else accelerator.get_state_dict(policy)
    if accelerator.is_main_process:
        backend.save(state, out)
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    accelerator.wait_for_everyone()
    return summary


def accelerate_rank() -> int:
    from accelerate import PartialState

    return PartialState().process_index


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="dpo.train", description=__doc__.splitlines()[0])
    for option in dataclasses.fields(TrainConfig):
        flag = "--" + option.name.replace("_", "-")
        if option.type == "list[str]":
            parser.add_argument(option.name, nargs="*", default=[], help="generation.KEY=VALUE overrides")
        elif option.default is dataclasses.MISSING:
            parser.add_argument(flag, type={"str": str}[option.type], required=True)
        elif option.type == "bool":
            parser.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=option.default)
        else:
            kind = {"float": float, "int": int, "str": str}[option.type]
            parser.add_argument(flag, type=kind, default=option.default)
    return TrainConfig(**vars(parser.parse_intermixed_args(argv)))


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
