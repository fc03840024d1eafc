"""DLRM as a Workload: the reference's binary data (or the embedded data set, generated and
preprocessed into the same format), the optimized model, one SGD with the reference's
warmup/hold/poly-2 decay for the MLPs and the tables alike, an AUC evaluation every 0.05 epoch.

With several processes (torchrun) the tables are sharded, each whole on one process or split by
rows over all of them as the config's ``sharding`` says (plan.py, sharded.py), and the MLPs are
data-parallel: each process trains its slice of every global batch (a last short batch is
left out so that every slice has the same size) and scores its slice of each test batch (the
last padded), and the AUC is computed over every process's scores.

The step goes through harness.step.TrainStep with one micro-batch and without its non-finite
skipping (``skip_nonfinite=False``): the tables' SGD update is applied inside the backward (the
fused table-batched embedding never materialises their gradient), so by the time the step's
finiteness flag could be read the tables have already moved and the step cannot be withdrawn.
The reference has no such skipping either. Gradient accumulation is not used for the same
reason (each backward updates the tables) and because the reference takes one batch per step.
"""
from __future__ import annotations

from typing import Any

import torch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.workload import DataError, ModelOptimizerState, RunContext, Workload, tidy
from mlperf_fast.metrics.auc import roc_auc
from mlperf_fast.optim.schedules import set_lr
from mlperf_fast.workloads.dlrm import pipeline
from mlperf_fast.workloads.dlrm.config import CONFIGS, DLRMConfig, dlrm_lr
from mlperf_fast.workloads.dlrm.data import CriteoBinary, check_dataset, read_counts, split_path
from mlperf_fast.workloads.dlrm.model import DLRM, DLRMLoss


class DLRMWorkload(ModelOptimizerState, Workload):
    benchmark = "dlrm"
    description = "DLRM on Criteo 1TB (recommendation), AUC >= 0.8025"

    @classmethod
    def configs(cls) -> dict[str, DLRMConfig]:
        return CONFIGS

    @classmethod
    def check_data(cls, config: DLRMConfig, data_dir: str | None) -> None:
        if data_dir is None:
            if not config.synth_days:
                raise DataError(f"configuration {config.name} needs --data-dir (the preprocessed "
                                "Criteo 1TB: python3 -m mlperf_fast.workloads.dlrm.preprocess)")
            return
        check_dataset(data_dir)

    def __init__(self, config: DLRMConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.per_process_batch()  # refuses a batch that does not divide

    # -- data ----------------------------------------------------------------------------
    def embedded_data(self) -> str:
        from mlperf_fast.workloads.dlrm import synth

        cfg = self.config
        settings = synth.settings_for(cfg.synth_vocab, cfg.synth_days, cfg.synth_rows_per_day,
                                      cfg.max_ind_range)
        return synth.embedded_dataset(settings, log=self.ctx.log)

    def _splits(self) -> tuple[CriteoBinary, CriteoBinary, tuple[int, ...]]:
        d = self.data_dir()
        counts = read_counts(d)
        train = CriteoBinary(split_path(d, "train"), self.config.global_batch_size, counts)
        test = CriteoBinary(split_path(d, "test"), self.config.eval_batch_size, counts)
        return train, test, counts

    # -- the run -------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        cfg = self.config
        train, test, _ = self._splits()
        return {
            "global_batch_size": cfg.global_batch_size,
            "gradient_accumulation_steps": 1,
            "opt_base_learning_rate": cfg.lr,
            "opt_learning_rate_warmup_steps": cfg.warmup_steps,
            "lr_decay_start_steps": cfg.decay_start_step,
            "sgd_opt_base_learning_rate": cfg.lr,
            "sgd_opt_learning_rate_decay_poly_power": cfg.decay_power,
            "sgd_opt_learning_rate_decay_steps": cfg.decay_steps,
            "train_samples": train.num_samples,
            "eval_samples": test.num_samples,
        }

    def build(self) -> None:
        cfg, ctx = self.config, self.ctx
        self.train_data, self.test_data, counts = self._splits()
        # built and initialised on the device itself: the closed tables (96 GB) never pass
        # through host memory
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        if ctx.distributed:
            from mlperf_fast.workloads.dlrm.sharded import ShardedDLRM

            self.model = ShardedDLRM(counts, cfg.embedding_dim, cfg.bottom_mlp, cfg.top_mlp,
                                     plan=cfg.sharding, lr=self._lr(1), generator=generator,
                                     seed=ctx.seed, device=ctx.device)
            self.model.average_gradients_in_backward()
            self._tables = self.model.sharded
            ctx.log(f"dlrm: sharding {cfg.sharding!r} over {ctx.world_size} processes: "
                    f"{self._tables.plan.describe()}")
        else:
            self.model = DLRM(counts, cfg.embedding_dim, cfg.bottom_mlp, cfg.top_mlp,
                              fused_sgd=True, lr=self._lr(1), generator=generator,
                              device=ctx.device)
            self._tables = self.model.embedding
        self.optimizer = torch.optim.SGD(self.model.dense_parameters(), lr=self._tables.lr)
        self.trainer = TrainStep(DLRMLoss(self.model), self.optimizer,
                                 params=self.model.dense_parameters(), skip_nonfinite=False)
        self.steps_per_epoch = self.train_data.num_batches
        if ctx.distributed:
            self.steps_per_epoch = self.train_data.num_samples // cfg.global_batch_size
            if self.steps_per_epoch == 0:
                raise DataError(f"{self.train_data.path}: fewer rows than one global batch")

    def log_weights_initialization(self, log: Any) -> None:
        for name in weights_initialization_tensors(self.config):
            log.event("weights_initialization", metadata={"tensor": name})

    def _lr(self, step: int) -> float:
        cfg = self.config
        return dlrm_lr(step, cfg.lr, cfg.warmup_steps, cfg.decay_start_step, cfg.decay_steps,
                       cfg.decay_power)

    def train(self, start: float, stop: float) -> float | None:
        spe, ctx = self.steps_per_epoch, self.ctx
        first, last = round(start * spe), round(stop * spe)
        self.model.train()
        for g, batch in pipeline.train_batches(self.train_data, ctx.seed, first, last,
                                               ctx.device, spe):
            lr = self._lr(g + 1)
            set_lr(self.optimizer.param_groups, lr)
            self._tables.lr = lr
            samples = len(batch)
            if ctx.distributed:
                batch = pipeline.part(batch, ctx.rank, ctx.world_size)
            result = self.trainer.step([(batch.dense, batch.sparse, batch.labels)], 1)
            ctx.report_step(samples, result.loss, at=(g + 1) / spe, lr=lr)
        reached = last / spe
        return None if abs(reached - stop) < 1e-12 else tidy(reached)

    @torch.no_grad()
    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test set's probabilities (float32, as the reference scores it) and labels."""
        self.model.eval()
        ctx = self.ctx
        scores, labels = [], []
        for batch in pipeline.eval_batches(self.test_data, ctx.device):
            if ctx.distributed:
                batch, valid = pipeline.padded_part(batch, ctx.rank, ctx.world_size)
            p = torch.sigmoid(self.model(batch.dense, batch.sparse).float())
            if ctx.distributed:  # padding rows are labelled -1 and dropped after the gather
                labels.append(torch.where(valid, batch.labels, -1.0))
            else:
                labels.append(batch.labels)
            scores.append(p)
        scores, labels = torch.cat(scores), torch.cat(labels)
        if ctx.distributed:
            import torch.distributed as dist

            both = torch.stack([scores, labels])
            gathered = [torch.empty_like(both) for _ in range(ctx.world_size)]
            dist.all_gather(gathered, both)
            scores, labels = torch.cat(gathered, dim=1)
            keep = labels >= 0
            scores, labels = scores[keep], labels[keep]
        return scores, labels

    def evaluate(self) -> dict[str, float]:
        return {"AUC": roc_auc(*self.predict())}


WORKLOAD = DLRMWorkload


def weights_initialization_tensors(config: DLRMConfig) -> list[str]:
    """The tensors the rules name in weights_initialization events (closed_dlrm.yaml: the tables
    as one, then each MLP layer)."""
    return (["embeddings"] + [f"bottom_mlp_dense{i + 1}" for i in range(len(config.bottom_mlp))]
            + [f"top_mlp_dense{i + 1}" for i in range(len(config.top_mlp))])


def embedded_data_dir() -> str:
    """The embedded data set's folder (built if needed): for tools and benchmarks."""
    ctx = RunContext(seed=CONFIGS["embedded"].seed, device=torch.device("cpu"))
    return DLRMWorkload(CONFIGS["embedded"], ctx).data_dir()



