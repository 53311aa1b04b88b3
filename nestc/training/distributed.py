"""Data-parallel plumbing over ``torch.distributed`` that degrades to no-ops in one process.

NeST makes discrete decisions (which connections to grow, which to prune). Under data parallelism
every rank must take exactly the same decision or the replicas silently drift apart, so the rule
for later code is: decide on rank 0, :func:`broadcast_object` the decision, or average statistics
with :func:`all_reduce_mean` first. These helpers work unchanged in a plain single-process run, so
callers never branch on whether they were launched by ``torchrun``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, shows progress and writes files."""
        return self.rank == 0


def active() -> bool:
    """True when a process group with more than one member is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def launched_as() -> tuple[int, int]:
    """``(world size, local rank)`` as torchrun's environment gives them (``(1, 0)`` outside torchrun)."""
    return _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment, if any.

    Idempotent: a group the caller already initialised is used as is. Without ``WORLD_SIZE > 1`` in
    the environment nothing is initialised and a single-process :class:`DistInfo` comes back.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; by default nccl when CUDA is available, gloo otherwise.
            Pass ``"gloo"`` to train on CPUs of a GPU machine.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        count = torch.cuda.device_count() or 1
        return DistInfo(rank, world, _env_int("LOCAL_RANK", rank % count))
    world, local_rank = launched_as()
    if world <= 1 or not dist.is_available():
        return DistInfo()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # nccl collectives run on the current device
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return rank ``src``'s ``obj`` on every rank (picklable objects; returns ``obj`` when alone)."""
    if not active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` when alone)."""
    if not active():
        return [obj]
    gathered: list[T] = [obj] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers, in place (nothing happens when alone).

    DDP keeps parameters equal (it averages gradients) and hands every forward pass rank 0's buffers, but
    batch normalisation then updates its running statistics from each rank's own share of the batch: after
    the last step of a fit every rank holds different ones. Evaluation and the passes read them (held-out
    accuracy, a BatchNormalization's gain), so the ranks' decisions, and then their networks' shapes, would
    part. Buffers live where the backend communicates (the rank's GPU for nccl), as DDP requires.
    """
    broadcast_tensors(module.buffers(), src)


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Give every rank rank ``src``'s values of ``tensors``, in place (nothing happens when alone).

    The tensors live where the backend communicates; nccl sends contiguous memory only, so a tensor with other
    strides travels as a contiguous copy.
    """
    if not active():
        return
    for tensor in tensors:
        sent = tensor if tensor.is_contiguous() else tensor.contiguous()
        dist.broadcast(sent, src=src)
        if sent is not tensor:
            tensor.copy_(sent)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (unchanged when alone)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over ranks in place and return it (unchanged when alone).

    The tensor must live where the backend communicates: CPU for gloo, the rank's GPU for nccl.
    """
    if active():
        all_reduce_sum(tensor).div_(dist.get_world_size())
    return tensor
