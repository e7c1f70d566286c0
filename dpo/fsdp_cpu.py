"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for DPO on CPU processes (gloo).

accelerate 1.15 turns its FSDP config on only for accelerator process groups: ``AcceleratorState``
sets ``DistributedType.FSDP`` inside its MULTI_GPU/NPU/XPU... branch (accelerate/state.py, the
``ACCELERATE_USE_FSDP`` test), so ``accelerate launch --config_file dpo/accelerate_fsdp.yaml`` with
``use_cpu: true`` runs plain DDP (MULTI_CPU) without a word. torch itself shards on a CPU device
mesh, so ``dpo.train --fsdp-blocks NAME`` applies ``fully_shard`` here: one FSDP unit per block
class ``NAME`` (as ``fsdp_transformer_layer_cls_to_wrap``), then the root. Gradients are
reduce-scattered and averaged over the ranks, as DDP all-reduces and averages them.
"""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


def shard(model: torch.nn.Module, block_class: str, world_size: int) -> torch.nn.Module:
    """``model`` sharded in place over ``world_size`` CPU ranks; ValueError when no module is a ``block_class``."""
    blocks = [module for module in model.modules() if type(module).__name__ == block_class]
    if not blocks:
        names = sorted({type(m).__name__ for m in model.modules()})
        raise ValueError(f"--fsdp-blocks {block_class}: the model has no module of that class; its classes: {names}")
    mesh = init_device_mesh("cpu", (world_size,))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor whole (a collective: every rank calls it, in the same order). Tied parameters (one
    Parameter under two names, e.g. Janus' ``lm_head`` and text embeddings) come out as one tensor, so
    a saver that drops tied copies (``save_pretrained``) still recognises them: FSDP2's state dict
    hands out a separate DTensor per name."""
    parameter_of = {name: id(p) for name, p in model.named_parameters(remove_duplicate=False)}
    gathered: dict[int, torch.Tensor] = {}
    state = {}
    for name, value in model.state_dict().items():
        key = parameter_of.get(name, id(value))
        if key not in gathered:
            gathered[key] = value.full_tensor() if isinstance(value, DTensor) else value
        state[name] = gathered[key]
    return state


def local_checksum(model: torch.nn.Module) -> float:
    """Sum of this rank's shards (a DTensor's local part): differs between ranks by design."""
    return float(sum((p.to_local() if isinstance(p, DTensor) else p).detach().double().sum()
                     for p in model.parameters()))
