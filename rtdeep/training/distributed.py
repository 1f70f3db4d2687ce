"""Training and batch inference on several processes, GPUs or machines, through ``torchrun``.

``torchrun`` starts one process per device and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and
the rendezvous address; :func:`init_distributed` reads them and joins the process group (NCCL when
the process has a CUDA device, gloo on CPUs). Without ``torchrun`` it returns a single-process
context and nothing else changes, so every command runs the same way on a laptop.

Conventions the callers keep:

* every process builds the same model from the same seed (DDP also broadcasts rank 0's weights);
* every process draws the same global batch from the same sampler stream and trains on its own
  equal share of it (:func:`share_of_batch`), so gradients averaged over processes equal those of
  one process on the whole batch: 1 and N processes follow the same trajectory up to rounding;
* only rank 0 writes files (checkpoints, bundles, summaries) and decides when to stop
  (:func:`broadcast_object`), so processes never disagree about the number of steps;
* batch inference gives each rank every N-th study (:func:`shard`).

Example (2 GPUs on one machine; on CPUs use ``--device cpu`` and gloo is chosen):
    torchrun --nproc_per_node 2 -m rtdeep train-seg --site thorax --arch unet3d --data COHORT --out RUN
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

__all__ = [
    "DistContext",
    "average_gradients",
    "barrier",
    "broadcast_object",
    "close_distributed",
    "init_distributed",
    "launched_by_torchrun",
    "mean_over_processes",
    "shard",
    "share_of_batch",
    "wrap_ddp",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its torch device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and prints results (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or another launcher) has set ``WORLD_SIZE`` above 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` prepared, or return a single-process context.

    Args:
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. Under ``torchrun`` with CUDA,
            each process takes GPU ``LOCAL_RANK``.

    Returns:
        The context (rank 0 of 1 without ``torchrun``).
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not launched_by_torchrun():
        return DistContext(device="cuda" if use_cuda else "cpu")
    import torch.distributed as dist

    # Before the group exists: torch.distributed.nn's collectives take ``group=group.WORLD`` as a default
    # argument, bound at their first import. Imported later (DistributedDataParallel imports them), they
    # would hold the group after destroy_process_group, its gloo threads would outlive the interpreter,
    # and a process could abort at exit ("terminate called without an active exception") when such a
    # thread frees a finished collective's tensor. See close_distributed.
    importlib.import_module("torch.distributed.nn")

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=f"cuda:{local_rank}" if use_cuda else "cpu", backend=backend)


def close_distributed() -> None:
    """Wait for every process, then leave the process group (if one was joined).

    The barrier keeps a rank that finished early (while rank 0 still writes) from tearing its
    connections down under the others. Destroying the group joins its gloo threads, while Python is
    still running, provided nothing else holds it: drop DistributedDataParallel wrappers first
    (:func:`wrap_ddp`'s result; the trainers keep it local), and :func:`init_distributed` keeps
    torch.distributed.nn's default arguments from holding it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    """Wait until every process gets here (no-op for one process)."""
    if context.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(value: T, context: DistContext) -> T:
    """Rank 0's ``value`` on every process (any picklable object)."""
    if not context.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_of_batch(batch_size: int, context: DistContext) -> slice:
    """This process's slice of a global batch of ``batch_size`` samples.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes (the shares must
            be equal for averaged gradients to equal the whole batch's).
    """
    if batch_size % context.world_size:
        raise ValueError(f"batch size {batch_size} is not a multiple of {context.world_size} processes")
    size = batch_size // context.world_size
    return slice(context.rank * size, (context.rank + 1) * size)


def shard(items: Sequence[T], context: DistContext) -> list[T]:
    """Every ``world_size``-th item, starting at this rank (all items for one process)."""
    return list(items[context.rank::context.world_size])


def average_gradients(module: torch.nn.Module, context: DistContext) -> None:
    """All-reduce and average the gradients of ``module`` (for a network not wrapped in DDP)."""
    if not context.distributed:
        return
    import torch.distributed as dist

    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= context.world_size


def wrap_ddp(module: torch.nn.Module, context: DistContext) -> Any:
    """``module`` in DistributedDataParallel when there are several processes, else unchanged."""
    if not context.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.local_rank] if context.device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=device_ids)


def mean_over_processes(value: float, context: DistContext) -> float:
    """The mean of ``value`` over all processes (``value`` itself for one process)."""
    if not context.distributed:
        return float(value)
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / context.world_size
