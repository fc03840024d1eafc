"""One DLRM training step of the closed model (26 tables of dim 128, bottom MLP 13-512-256-128,
top MLP 479-1024-1024-512-256-1, BCE, SGD) at a per-GPU batch of 6,912 (NVIDIA's v2.1 8-GPU
submissions: 55,296 / 8) and of 55,296 (the whole RCP batch on one GPU), float32.

Baselines: the MLCommons reference model (workloads/dlrm/reference.py: per-table
nn.EmbeddingBag with sparse gradients, coalesced, one torch.optim.SGD), and torchrec's DLRM
(dlrm_torchrec.py beside this file: DLRMTrain under DistributedModelParallel on one rank, its
tables in FBGEMM's fused TBE with EXACT_SGD in the backward, torch.optim.SGD on the MLPs; the
row is skipped, with the reason, where torchrec or fbgemm_gpu cannot be imported). Ours:
workloads/dlrm/model.py (one table-batched embedding with the SGD update fused into its
backward, the dot-interaction kernel, bias+ReLU in the GEMM epilogue) with torch.optim.SGD on
the MLPs. All three time the whole step at the same learning rate on the same batches, input
ids already on the GPU, rotating over 4 batches.

Tables: the real 26 sizes (Criteo 1TB with the 40M cap: 187.8M rows, 96 GB in float32), unless
``DLRM_BENCH_MAX_ROWS`` caps each table (stated in the shape column). No two of the models fit
on one 141 GB GPU together, so they are built, measured and freed one after the other within
the test. Ids: a power law per table, ``P(k) ~ 1 / (k + 1)`` (log-uniform: ``floor(n ** u)``),
the hot rows scattered over the table by a multiplicative hash, as hashed Criteo ids are.

Floor: the larger of the MLPs' FLOPs (forward + 2x backward) at the measured bf16 matrix rate,
and the embedding traffic (each looked-up row read in the forward, read and written by the
update) at the measured copy bandwidth.

A second test times mlperf_fast.metrics.auc.roc_auc on the GPU over the 89,137,319 samples of
the test set against sklearn.metrics.roc_auc_score on the host.

On the CPU, ``python3 benchmarks/steps/bench_dlrm_step.py --smoke`` runs three steps of each model
(torchrec's where it imports) on tiny tables from the same weights and prints their losses;
tests/dlrm/test_dlrm_bench_smoke.py holds them equal.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import math
import os
import sys
import time
from types import ModuleType

import pytest
import torch

from mlperf_fast.workloads.dlrm.config import CLOSED, CRITEO_1TB_TABLE_SIZES, NUM_DENSE
from mlperf_fast.workloads.dlrm.model import DLRM, DLRMLoss
from mlperf_fast.workloads.dlrm.reference import ReferenceDLRM, reference_step

ROTATE = 4
EVAL_SAMPLES = 89_137_319


def table_sizes() -> list[int]:
    cap = int(os.environ.get("DLRM_BENCH_MAX_ROWS", "0"))
    return [min(n, cap) if cap else n for n in CRITEO_1TB_TABLE_SIZES]


def power_law_ids(n: int, batch: int, generator: torch.Generator, device) -> torch.Tensor:
    """``batch`` ids of a table of ``n`` rows, P(k) ~ 1 / (k + 1), hot rows hashed apart."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    k = torch.floor(torch.exp(u * math.log(n))).to(torch.int64) - 1
    return (k.clamp_(0, n - 1) * 2654435761) % n


def batches(sizes, batch: int, device, count: int = ROTATE, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for _ in range(count):
        dense = torch.log(torch.randint(0, 1000, (batch, NUM_DENSE), generator=g,
                                        device=device).float() + 1)
        sparse = torch.stack([power_law_ids(n, batch, g, device) for n in sizes], 1)
        labels = (torch.rand(batch, generator=g, device=device) < 0.035).float()
        out.append((dense, sparse, labels))
    return out


def reference_step_fn(sizes, dim, bottom, top, data, lr: float = 0.1,
                      like: ReferenceDLRM | None = None):
    """(model, step): ``step()`` trains on the next batch of ``data`` and returns the loss. The
    model starts from ``like``'s weights where given (so do the other two builders')."""
    if like is not None:
        model = copy.deepcopy(like)
    else:
        model = ReferenceDLRM(sizes, dim, bottom, top, device=data[0][0].device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    it = itertools.count()

    def step():
        return reference_step(model, opt, *data[next(it) % len(data)])

    return model, step


def fast_step_fn(sizes, dim, bottom, top, data, lr: float = 0.1,
                 like: ReferenceDLRM | None = None):
    device = data[0][0].device
    model = DLRM(sizes, dim, bottom, top, lr=lr, device=device)
    if like is not None:
        model.load_reference(like)
    loss_fn = DLRMLoss(model)
    opt = torch.optim.SGD(model.dense_parameters(), lr=lr)
    it = itertools.count()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(*data[next(it) % len(data)])
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


def torchrec_missing() -> str | None:
    """Why the torchrec row cannot run here, or None."""
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec  # noqa: F401
    except (ImportError, OSError, RuntimeError) as e:  # a wheel built for another torch: OSError
        return (f"the torchrec row needs torchrec and fbgemm_gpu built for this torch "
                f"(torchrec 1.6.1 with fbgemm-gpu 1.6.0 for torch 2.11): {e}")
    return None


def torchrec_baseline() -> ModuleType:
    """dlrm_torchrec.py (beside this file, also when this file is loaded by path)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import dlrm_torchrec

    return dlrm_torchrec


def torchrec_step_fn(sizes, dim, bottom, top, data, lr: float = 0.1,
                     like: ReferenceDLRM | None = None):
    """Inside ``torchrec_baseline().one_rank_group(device)``: its DMP needs the process group."""
    tr = torchrec_baseline()
    model = tr.build(sizes, dim, bottom, top, lr=lr, device=data[0][0].device)
    if like is not None:
        tr.load_reference(model, like)
    opt = torch.optim.SGD(tr.dense_parameters(model), lr=lr)
    # Built before timing, as torchrec's Criteo reader hands them over.
    inputs = [tr.make_batch(*b) for b in data]
    it = itertools.count()

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = model(inputs[next(it) % len(inputs)])
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


def _mlp_macs(widths) -> int:
    return sum(a * b for a, b in itertools.pairwise(widths))


def step_floor(batch: int, dim: int, tables: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one step: MLPs and interaction forward + 2x backward; rows read in the
    forward and read + written by the update."""
    n = tables + 1
    macs = (_mlp_macs([NUM_DENSE, *CLOSED.bottom_mlp])
            + _mlp_macs([dim + n * (n - 1) // 2, *CLOSED.top_mlp]) + n * n * dim)
    return 3 * 2 * macs * batch, 3 * batch * tables * dim * 4


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def smoke(with_torchrec: bool = False, steps: int = 3) -> dict[str, list[float]]:
    """``steps`` training steps of each model on tiny tables on the CPU, all from one reference
    model's weights, no timing: each model's losses, by name (``with_torchrec`` adds torchrec's).
    The same weights and batches give the same first loss; the later ones agree only if every
    model's update (the tables' fused SGD included) is the same too."""
    sizes = [min(n, 50) for n in CRITEO_1TB_TABLE_SIZES]
    data = batches(sizes, 64, "cpu", count=2)
    dim, bottom, top = 8, (16, 8), (16, 1)
    like = ReferenceDLRM(sizes, dim, bottom, top, generator=torch.Generator().manual_seed(0))
    builds = {"reference": reference_step_fn, "mlperf_fast": fast_step_fn}
    if with_torchrec:
        builds["torchrec"] = torchrec_step_fn
    losses = {}
    with torchrec_baseline().one_rank_group("cpu") if with_torchrec else contextlib.nullcontext():
        for name, build in builds.items():
            _, step = build(sizes, dim, bottom, top, data, like=like)
            losses[name] = [float(step()) for _ in range(steps)]
    return losses


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [6912, 55296])
def test_dlrm_training_step(measure, batch):
    sizes = table_sizes()
    dim, bottom, top = CLOSED.embedding_dim, CLOSED.bottom_mlp, CLOSED.top_mlp
    data = batches(sizes, batch, "cuda")
    flops, nbytes = step_floor(batch, dim, len(sizes))
    capped = f", rows capped at {os.environ['DLRM_BENCH_MAX_ROWS']}" \
        if os.environ.get("DLRM_BENCH_MAX_ROWS") else ""
    shape = f"B={batch}, 26 tables, {sum(sizes) / 1e6:.1f}M rows x {dim}{capped}, fp32"
    group = f"DLRM training step, closed model, B={batch}"
    model, step = reference_step_fn(sizes, dim, bottom, top, data)
    measure(group, "reference (nn.EmbeddingBag sparse, SGD)", step, role="baseline",
            shape=shape, flops=flops, bytes=nbytes, warmup=3, repeat=10)
    del model, step
    _free()
    model, step = fast_step_fn(sizes, dim, bottom, top, data)
    measure(group, "mlperf_fast DLRM (fused TBE SGD)", step, shape=shape, flops=flops,
            bytes=nbytes, warmup=5, repeat=30)
    del model, step
    _free()
    missing = torchrec_missing()
    if missing:
        pytest.skip(missing)  # the two rows above are kept
    tr = torchrec_baseline()
    with tr.one_rank_group("cuda"):
        model, step = torchrec_step_fn(sizes, dim, bottom, top, data)
        measure(group, "torchrec DLRM (DMP, FBGEMM fused TBE EXACT_SGD)", step, role="baseline",
                shape=shape, flops=flops, bytes=nbytes, warmup=5, repeat=30)
        del model, step
    _free()


@pytest.mark.cuda
def test_auc_89m(measure):
    from mlperf_fast.metrics.auc import roc_auc

    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator(device="cuda").manual_seed(0)
    scores = torch.rand(EVAL_SAMPLES, generator=g, device="cuda")
    labels = (torch.rand(EVAL_SAMPLES, generator=g, device="cuda") < 0.2 + 0.1 * scores)
    labels = labels.to(torch.int8)
    y_host, s_host = labels.cpu().numpy(), scores.cpu().numpy()
    t = time.perf_counter()
    want = sk.roc_auc_score(y_host, s_host)
    sk_s = time.perf_counter() - t
    got = roc_auc(scores, labels)
    assert abs(got - want) < 1e-9
    group = "ROC AUC, 89,137,319 samples"
    shape = f"N={EVAL_SAMPLES}, float32 scores"
    measure(group, "sklearn roc_auc_score (host)", lambda: sk.roc_auc_score(y_host, s_host),
            role="baseline", shape=shape, warmup=0, repeat=1, min_time_s=0.0)
    measure(group, "mlperf_fast roc_auc (GPU sort)", lambda: roc_auc(scores, labels),
            shape=shape, bytes=EVAL_SAMPLES * (4 + 1) * 6.0)
    print(f"sklearn once: {sk_s:.1f} s")


if __name__ == "__main__":
    if "--smoke" in sys.argv:
        missing = torchrec_missing()
        if missing:
            print(f"smoke: {missing}")
        for name, values in smoke(with_torchrec=missing is None).items():
            print(f"smoke: {name:12s} losses {', '.join(f'{v:.9f}' for v in values)}")
