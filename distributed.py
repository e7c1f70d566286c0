"""Explicit, world-size-invariant helpers for torchrun jobs (and plain single-process runs).

    torchrun --nproc_per_node=K main.py ...   # RANK, WORLD_SIZE, LOCAL_RANK set: one process group
    python main.py ...                        # no torchrun variables: one process, no group

Every helper takes the ``DistInfo`` it works on: rank and world size are passed around, never
read from globals, so callers shard work as ``items[rank::world]`` and tests can build a
``DistInfo`` by hand. A world of one needs no process group and every collective is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    """Global rank of this process (torchrun ``RANK``)."""
    world_size: int = 1
    """Number of processes (torchrun ``WORLD_SIZE``)."""
    local_rank: int = 0
    """Rank on this machine (torchrun ``LOCAL_RANK``): picks the GPU."""
    device: torch.device = torch.device("cpu")
    """Where this process runs its models; collectives use it too (gloo on CPU, nccl on GPU)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_ranks() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto``: cuda:LOCAL_RANK when CUDA is available, else cpu. ``cuda``: cuda:LOCAL_RANK. Else as written."""
    if preference == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ValueError(f"device {preference!r} is not a device name; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} asks for CUDA but none is available; use device=cpu or auto")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)  # one GPU per process under torchrun
    return device


def init_distributed(device_preference: str = "auto") -> DistInfo:
    """This process's ``DistInfo``; joins torchrun's process group (gloo on CPU, nccl on GPU) when WORLD_SIZE > 1.

    A process group that already exists is reused as it is.
    """
    rank, world_size, local_rank = env_ranks()
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world_size, store=attempt_store(rank, world_size))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def attempt_store(rank: int, world_size: int) -> dist.Store:
    """torchrun's store (``env://``) under a prefix naming this restart attempt.

    After ``--max-restarts`` restarts a failed group, the workers of the new attempt get the agent's
    store again, still holding the old attempt's keys; gloo would read the dead workers' addresses
    there and fail with "connectFullMesh failed ... Connection refused". A prefix per
    ``TORCHELASTIC_RESTART_COUNT`` keeps every attempt's keys apart.
    """
    store, _, _ = next(dist.rendezvous("env://", rank, world_size))
    return dist.PrefixStore(f"main_attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def current_dist_info() -> DistInfo:
    """The running process group's rank and size (CPU device), or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=env_ranks()[2])
    return DistInfo()


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share, ``items[rank::world]``: global order is kept, so results can be keyed by index."""
    return list(items[info.rank::info.world_size])


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def _all_reduce(value: int, info: DistInfo, op) -> int:
    if info.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=info.device)
    dist.all_reduce(tensor, op=op)
    return int(tensor.item())


def all_reduce_sum(value: int, info: DistInfo) -> int:
    """The sum of ``value`` over all ranks (every rank must call it)."""
    return _all_reduce(value, info, dist.ReduceOp.SUM)


def all_reduce_max(value: int, info: DistInfo) -> int:
    """The largest ``value`` of all ranks (every rank must call it)."""
    return _all_reduce(value, info, dist.ReduceOp.MAX)


def print0(info: DistInfo, *args, **kwargs) -> None:
    """``print`` on rank 0 only."""
    if info.is_main:
        print(*args, **kwargs)


def destroy(info: DistInfo) -> None:
    """Leave the process group, if this job has one."""
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
