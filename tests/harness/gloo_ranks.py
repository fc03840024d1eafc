"""Run a test function on several processes joined in one gloo group: the CPU stand-in for one
process per GPU. ``run_ranks(target, *args)`` spawns the processes, each calls ``target(rank,
*args)`` inside ``init_process_group("gloo")`` and sends back what it returns (anything
``torch.save`` takes); the first error
of any rank fails the test at once with that rank's traceback (the other ranks, then waiting in
a collective, are killed), and a rank that neither returns nor fails by ``timeout`` fails it as
hung. ``target`` must be a module-level function (spawn pickles it by name)."""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any


def _child(target: Callable[..., Any], rank: int, world: int, store: str, args: tuple,
           out: Any) -> None:
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)  # the ranks share the machine's cores
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world)
        result = target(rank, *args)
        dist.destroy_process_group()
        # as bytes: a tensor sent as itself is shared memory that this process, about to exit,
        # would have to keep serving until the parent has read it
        buf = io.BytesIO()
        torch.save(result, buf)
        out.put(("ok", rank, buf.getvalue()))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        out.put(("error", rank, traceback.format_exc()))


def run_ranks(target: Callable[..., Any], *args: Any, world: int = 2,
              timeout: float = 240.0) -> list[Any]:
    """``[target(0, *args), ..., target(world - 1, *args)]``, each computed on its own spawned
    process of a ``world``-process gloo group."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_child, args=(target, r, world, store, args, out))
                 for r in range(world)]
        for p in procs:
            p.start()
        results: dict[int, Any] = {}
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        try:  # read before joining: a child exits only once what it sent has been read
            while len(results) < world and not errors:
                try:
                    kind, rank, value = out.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if kind == "ok":
                    import torch

                    results[rank] = torch.load(io.BytesIO(value), weights_only=False)
                else:
                    errors.append(f"rank {rank}:\n{value}")
        finally:
            for p in procs:
                p.join(timeout=10 if not errors and len(results) == world else 1)
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
    assert not errors, "\n".join(errors)
    missing = sorted(set(range(world)) - set(results))
    assert not missing, f"ranks {missing} hung (no result within {timeout} s)"
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    assert not bad, f"a rank exited with {bad}"
    return [results[r] for r in range(world)]
