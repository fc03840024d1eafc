"""torchrec's DLRM trained the way torchrec trains it, as a baseline of bench_dlrm_step.py.

The model is ``torchrec.models.dlrm.DLRMTrain(DLRM(...))``: an EmbeddingBagCollection of one
table per categorical feature, torchrec's MLPs, its dot interaction and BCE on the logits. Its
tables are placed by ``DistributedModelParallel`` on a process group of one rank, every table
table-wise on rank 0 with the ``fused`` compute kernel, the tables marked for torch.optim.SGD
by torch.distributed.optim's ``_apply_optimizer_in_backward``: the sharder turns that into
FBGEMM's SplitTableBatchedEmbeddingBagsCodegen (one TBE over all tables, as they share a dim)
with its EXACT_SGD update inside the backward, as torchrec's DLRM examples train. The dense
layers take torch.optim.SGD.

Two choices keep the baseline at its fastest on one GPU: the plan is written out rather than
left to the planner (whose default topology would move tables of the real sizes off the GPU),
and DMP is built with ``init_data_parallel=False``, so the dense layers are not wrapped in a
one-rank DDP whose all-reduce neither other model does. Batches are KeyedJaggedTensors built as
torchrec's Criteo reader builds them, every per-key length given, so a step syncs with the host
only where torchrec itself does.

torchrec's interaction lists the pairs of the upper triangle row by row, (0, 1), (0, 2), ...;
the reference lists the lower one, (1, 0), (2, 0), (2, 1), ... The values are the same (the
Gram matrix is symmetric) in another order, so ``load_reference`` permutes the columns of the
top MLP's first layer: on the same weights the three models compute the same function.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.datasets.utils import Batch
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
from torchrec.distributed.types import ShardingPlan
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from mlperf_fast.workloads.dlrm.config import NUM_DENSE
from mlperf_fast.workloads.dlrm.reference import ReferenceDLRM

TABLES = "model.sparse_arch.embedding_bag_collection"  # the EBC's path inside DLRMTrain


def feature_names(num_tables: int) -> list[str]:
    """The categorical features' keys, as torchrec's Criteo reader names them."""
    return [f"cat_{i}" for i in range(num_tables)]


@contextlib.contextmanager
def one_rank_group(device: torch.device | str) -> Iterator[None]:
    """The default process group of one rank (NCCL for a GPU, gloo for the CPU) while the block
    runs, made and destroyed here unless one already exists (then it must have one rank)."""
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise RuntimeError(f"the torchrec baseline runs on one rank, the process group has "
                               f"{dist.get_world_size()}")
        yield
        return
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def build(table_sizes: Sequence[int], dim: int, bottom: Sequence[int], top: Sequence[int], *,
          lr: float, device: torch.device | str) -> DistributedModelParallel:
    """DLRMTrain over tables of ``table_sizes`` rows x ``dim`` (float32), the bottom MLP
    13-``bottom`` (ending at ``dim``), the top MLP ``top`` (ending at 1), the tables in one fused
    TBE updated by exact SGD at ``lr`` in the backward. Needs the process group of
    ``one_rank_group``; its tables start as torchrec initializes them (U(-sqrt(1/n), sqrt(1/n)),
    as the reference's)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    names = feature_names(len(table_sizes))
    configs = [EmbeddingBagConfig(name=f"t_{f}", embedding_dim=dim, num_embeddings=n,
                                  feature_names=[f], pooling=PoolingType.SUM)
               for f, n in zip(names, table_sizes)]
    # On the meta device the tables take no memory until DMP makes them inside the TBE.
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    model = DLRMTrain(DLRM(ebc, NUM_DENSE, list(bottom), list(top), dense_device=device))
    # torchrec's own DLRM examples mark the tables so (its wrapper of the same name is
    # deprecated in favour of this one); the sharder reads the mark and fuses EXACT_SGD.
    _apply_optimizer_in_backward(torch.optim.SGD, model.model.sparse_arch.parameters(),
                                 {"lr": lr})
    fused = EmbeddingComputeKernel.FUSED.value
    plan = ShardingPlan({TABLES: construct_module_sharding_plan(
        ebc, {c.name: table_wise(rank=0, compute_kernel=fused) for c in configs},
        local_size=1, world_size=1, device_type=device.type)})
    dmp = DistributedModelParallel(model, device=device, plan=plan, init_data_parallel=False)
    # torchrec's DDP wrapper moves the module to the device; without it the interaction's
    # pair-index buffer, made on the CPU, would be copied to the GPU in every step.
    dmp.module.to(device)
    return dmp


def dense_parameters(model: DistributedModelParallel) -> list[nn.Parameter]:
    """The parameters the dense optimizer steps (all but the fused tables)."""
    return [p for _, p in in_backward_optimizer_filter(model.named_parameters())]


def make_batch(dense: torch.Tensor, sparse: torch.Tensor, labels: torch.Tensor) -> Batch:
    """torchrec's Batch of dense [B, 13] float32, ids [B, T] int64 (one per bag) and labels [B]
    float32, its KeyedJaggedTensor complete (lengths, offsets and per-key sizes given)."""
    B, T = sparse.shape
    keys = feature_names(T)
    n = B * T
    kjt = KeyedJaggedTensor(
        keys=keys, values=sparse.t().reshape(-1),
        lengths=torch.ones(n, dtype=torch.int32, device=sparse.device),
        offsets=torch.arange(n + 1, dtype=torch.int32, device=sparse.device),
        stride=B, length_per_key=[B] * T, offset_per_key=[B * i for i in range(T + 1)],
        index_per_key={k: i for i, k in enumerate(keys)})
    return Batch(dense_features=dense, sparse_features=kjt, labels=labels)


def _interaction_order(num_tables: int) -> torch.Tensor:
    """``perm`` with torchrec's interaction column ``perm[k]`` = the reference's column ``k``."""
    n = num_tables + 1
    rows, cols = torch.triu_indices(n, n, offset=1).tolist()
    theirs = {(a, b): c for c, (a, b) in enumerate(zip(rows, cols))}
    return torch.tensor([theirs[(j, i)] for i in range(n) for j in range(i)])


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def load_reference(model: DistributedModelParallel, ref: ReferenceDLRM) -> None:
    """Copy the weights of a reference model of the same shape into ``model``."""
    dlrm = model.module.model
    state = model.state_dict()
    for f, bag in zip(feature_names(len(ref.emb_l)), ref.emb_l):
        # One rank: the table's one local shard is a view of its rows inside the TBE.
        shards = state[f"{TABLES}.embedding_bags.t_{f}.weight"].local_shards()
        if len(shards) != 1 or shards[0].tensor.shape != bag.weight.shape:
            raise ValueError(f"table t_{f} is not one shard of shape {tuple(bag.weight.shape)}")
        shards[0].tensor.copy_(bag.weight)
    ours = _linears(dlrm.dense_arch) + _linears(dlrm.over_arch)
    theirs = [m for m in [*ref.bot_l, *ref.top_l] if isinstance(m, nn.Linear)]
    if [tuple(m.weight.shape) for m in ours] != [tuple(m.weight.shape) for m in theirs]:
        raise ValueError("the reference model has other MLPs")
    for a, b in zip(ours, theirs):
        a.weight.copy_(b.weight)
        a.bias.copy_(b.bias)
    first = ours[len(_linears(dlrm.dense_arch))]
    dim = ref.emb_l[0].embedding_dim
    perm = _interaction_order(len(ref.emb_l)).to(first.weight.device)
    first.weight[:, dim + perm] = theirs[len(_linears(dlrm.dense_arch))].weight[:, dim:]
