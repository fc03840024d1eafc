"""torch.distributed for the harness: one process per GPU (or several on the CPU, with gloo),
started by torchrun. The harness never starts its own communication layer; without torchrun's
environment it runs as a single process."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group if torchrun started us; pick this process's device.

    Returns (rank, world_size, device). ``device`` ("cpu", "cuda") overrides the default, which is
    the GPU of this local rank where there is one, else the CPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    if not launched_by_torchrun():
        return 0, 1, dev
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            device_id=dev if dev.type == "cuda" else None,
        )
    return dist.get_rank(), dist.get_world_size(), dev


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Every buffer of ``module`` (batch norm's running statistics) from rank ``src``, in place:
    DistributedDataParallel broadcasts them only at the next training forward, so a model that
    evaluates right after training would otherwise hold each rank's own."""
    if is_distributed():
        for buf in module.buffers():
            dist.broadcast(buf, src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` on rank ``dst`` (in rank order), None on the others: what only one
    rank reads (the detections it scores) travels to that rank alone."""
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place), for evaluation counts and totals."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Maximum of ``t`` over ranks (in place): a flag raised on any rank is raised on all."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def rank0_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks once it has finished: for work whose result
    the others then find ready (a data set built into the cache). An exception on rank 0 is
    raised on every rank, so that none waits for it forever."""
    if not is_distributed():
        return fn()
    if dist.get_rank() == 0:
        try:
            result = fn()
        except BaseException as e:
            broadcast_object(f"{type(e).__name__}: {e}")
            raise
        broadcast_object(None)
        return result
    error = broadcast_object(None)
    if error is not None:
        raise RuntimeError(f"rank 0 failed: {error}")
    return fn()
