"""BERT as a Workload: NVIDIA's hdf5 shards or the reference's TFRecords (or the embedded data
set, written by the same writer), the optimized BERT (model.py), FusedLAMB with the reference's
exclusions on BERT's warmup + linear decay, masked-LM accuracy on the evaluation set every
``FLOOR(0.05 * (230.23 * GBS + 3e6), 25,000)`` samples.

Progress is counted in samples (the rules' unit). With several processes the model is
data-parallel: each trains its slice of every global batch and scores its share of the
evaluation set; the weighted counts are summed over the processes.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from mlperf_fast.harness import distributed
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.timing import Stopwatch
from mlperf_fast.harness.workload import DataError, ModelOptimizerState, RunContext, Workload, tidy
from mlperf_fast.optim import FusedLAMB
from mlperf_fast.optim.schedules import bert_poly_warmup, set_lr
from mlperf_fast.workloads.bert import pipeline
from mlperf_fast.workloads.bert.config import CONFIGS, BertConfig
from mlperf_fast.workloads.bert.data import check_dataset, concat, read_shard, shard_paths
from mlperf_fast.workloads.bert.model import dense_targets
from mlperf_fast.workloads.bert.reference import masked_lm_accuracy

#: [ref] optimization.py: exclude_from_weight_decay (also from layer adaptation)
NO_DECAY = ("LayerNorm", "layer_norm", "bias")


def tf_tensor_names(num_layers: int) -> list[str]:
    """The reference's variable names, as closed_bert.yaml lists them for weights_initialization
    (398 for 24 layers)."""
    names = ["bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
             "bert/embeddings/token_type_embeddings", "bert/embeddings/LayerNorm/gamma",
             "bert/embeddings/LayerNorm/beta"]
    for i in range(num_layers):
        p = f"bert/encoder/layer_{i}/"
        for part in ("attention/self/query", "attention/self/key", "attention/self/value",
                     "attention/output/dense"):
            names += [p + part + "/kernel", p + part + "/bias"]
        names += [p + "attention/output/LayerNorm/gamma", p + "attention/output/LayerNorm/beta",
                  p + "intermediate/dense/kernel", p + "intermediate/dense/bias",
                  p + "output/dense/kernel", p + "output/dense/bias",
                  p + "output/LayerNorm/gamma", p + "output/LayerNorm/beta"]
    names += ["bert/pooler/dense/kernel", "bert/pooler/dense/bias",
              "cls/predictions/output_bias", "cls/predictions/transform/dense/kernel",
              "cls/predictions/transform/dense/bias",
              "cls/predictions/transform/LayerNorm/gamma",
              "cls/predictions/transform/LayerNorm/beta",
              "cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"]
    return names


def lamb_groups(model: torch.nn.Module) -> list[dict]:
    """Decayed and adapted weights; LayerNorm parameters and biases neither ([ref])."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class PretrainingLoss(torch.nn.Module):
    """The step's loss module: the model's total loss (masked LM + next sentence) of a batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.model(**batch)[0]


class BertWorkload(ModelOptimizerState, Workload):
    benchmark = "bert"
    description = "BERT-large phase-2 pretraining (language), masked-LM accuracy >= 0.720"
    requires = ("h5py", "tokenizers")
    extra = "bert"

    @classmethod
    def configs(cls) -> dict[str, BertConfig]:
        return CONFIGS

    @classmethod
    def check_data(cls, config: BertConfig, data_dir: str | None) -> None:
        if data_dir is None:
            if not config.embedded:
                raise DataError(f"configuration {config.name} needs --data-dir (train/ and eval/ "
                                "shards with their vocab.txt) and init_checkpoint (the phase-1 "
                                "checkpoint: --set init_checkpoint=PATH)")
            return
        check_dataset(data_dir)
        if config.division == "closed" and not config.init_checkpoint:
            raise DataError("the closed configuration starts from the phase-1 checkpoint: "
                            "--set init_checkpoint=PATH")
        ckpt = config.init_checkpoint
        if ckpt and not (os.path.isfile(ckpt) or os.path.isdir(ckpt)
                         or os.path.isfile(ckpt + ".index")):
            raise DataError(f"init_checkpoint {ckpt}: no such file (a PyTorch state dict, or a "
                            "TensorFlow checkpoint prefix with its .index)")

    def __init__(self, config: BertConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.per_process_batch()  # refuses a batch that does not divide
        self._shards: dict[int, Any] = {}
        self._eval = None

    # -- data ----------------------------------------------------------------------------
    def embedded_data(self) -> str:
        from mlperf_fast.workloads.bert import synth

        return synth.embedded_dataset(log=self.ctx.log)

    def vocab_size(self) -> int:
        with open(os.path.join(self.data_dir(), "vocab.txt"), encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > self.config.vocab_size:
            raise DataError(f"{self.data_dir()}/vocab.txt has {n} tokens, more than the "
                            f"model's vocab_size {self.config.vocab_size}")
        return n

    def _load(self, shard: int):
        """Training shard ``shard`` (the last one read is kept: rows of one batch may come from
        two shards, and a stream walks shards in order)."""
        if shard not in self._shards:
            cfg = self.config
            data = read_shard(self.train_paths[shard], cfg.max_seq_length, cfg.max_predictions,
                              cfg.vocab_size)
            if len(self._shards) >= 2:
                self._shards.pop(next(iter(self._shards)))
            self._shards[shard] = data
        return self._shards[shard]

    def _shard_counts(self) -> list[int]:
        import h5py

        counts = []
        for path in self.train_paths:
            try:
                with h5py.File(path, "r") as f:
                    counts.append(len(f["input_ids"]) if "packed_input_len" not in f else
                                  int(sum(len(x) for x in f["packed_input_len"])))
                    continue
            except OSError:
                pass
            counts.append(len(self._load(len(counts))))
        return counts

    def eval_set(self):
        if self._eval is None:
            cfg = self.config
            parts = [read_shard(p, cfg.max_seq_length, cfg.max_predictions, cfg.vocab_size)
                     for p in shard_paths(self.data_dir(), "eval")]
            data = concat(parts)
            if cfg.eval_samples and len(data) > cfg.eval_samples:
                data = data.head(cfg.eval_samples)
            self._eval = data
        return self._eval

    # -- the run -------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        cfg = self.config
        self.train_paths = shard_paths(self.data_dir(), "train")
        self.counts = self._shard_counts()
        return {
            "global_batch_size": cfg.global_batch_size,
            "gradient_accumulation_steps": self._accumulation(),
            "opt_base_learning_rate": cfg.lr,
            "opt_lamb_epsilon": cfg.epsilon,
            "opt_learning_rate_training_steps": cfg.train_steps,
            "opt_learning_rate_warmup_steps": cfg.warmup_steps,
            "num_warmup_steps": cfg.warmup_steps,
            "start_warmup_step": cfg.start_warmup_step,
            "opt_lamb_beta_1": cfg.beta1,
            "opt_lamb_beta_2": cfg.beta2,
            "opt_lamb_weight_decay_rate": cfg.weight_decay,
            "max_sequence_length": cfg.max_seq_length,
            "train_samples": int(sum(self.counts)),
            "eval_samples": len(self.eval_set()),
        }

    def _accumulation(self) -> int:
        per = self.per_process_batch()
        mb = self.config.micro_batch or per
        if per % mb:
            raise ValueError(f"micro_batch {mb} does not divide the per-process batch {per}")
        return per // mb

    def build(self) -> None:
        from mlperf_fast.workloads.bert.model import BertForPreTraining, model_config

        cfg, ctx = self.config, self.ctx
        if not hasattr(self, "counts"):
            self.hyperparameters()
        self.stream = pipeline.SampleStream(self.counts, ctx.seed)
        torch.manual_seed(ctx.seed)
        self.model = BertForPreTraining(model_config(cfg, self.vocab_size()),
                                        unpad=cfg.layout == "packed", attention=cfg.attention,
                                        op_backend=cfg.op_backend).to(ctx.device)
        if cfg.init_checkpoint:
            from mlperf_fast.workloads.bert.weights import load_checkpoint

            load_checkpoint(self.model, cfg.init_checkpoint)
        self.optimizer = FusedLAMB(lamb_groups(self.model), lr=cfg.lr, betas=(cfg.beta1,
                                   cfg.beta2), eps=cfg.epsilon, weight_decay=cfg.weight_decay,
                                   max_grad_norm=cfg.max_grad_norm)
        amp = torch.bfloat16 if ctx.device.type == "cuda" else None
        self.trainer = TrainStep(ctx.wrap_model(PretrainingLoss(self.model)), self.optimizer,
                                 amp_dtype=amp, params=list(self.model.parameters()),
                                 on_skip=lambda n: ctx.log(
                                     f"bert: step {n}: a loss was not finite on some rank; "
                                     "the step was skipped on every rank"))
        ctx.log(f"bert: {sum(self.counts)} training sequences in {len(self.counts)} shard(s), "
                f"{len(self.eval_set())} evaluation sequences, vocabulary {self.vocab_size()}, "
                f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters, "
                f"FusedLAMB, {cfg.layout} layout, device {ctx.device}")

    def log_weights_initialization(self, log: Any) -> None:
        for name in tf_tensor_names(self.config.num_layers):
            log.event("weights_initialization", metadata={"tensor": name})

    def _micro_batches(self, batch: dict, count: int):
        dev = self.ctx.device
        n = len(batch["input_ids"])
        size = n // count
        for j in range(count):
            yield {k: v[j * size:(j + 1) * size].to(dev, non_blocking=True)
                   for k, v in batch.items()}

    def train(self, start: float, stop: float) -> float | None:
        cfg, ctx = self.config, self.ctx
        self.model.train()
        watch = Stopwatch(ctx.device)
        count = self._accumulation()
        reached = int(start)
        steps = 0
        for reached, batch in pipeline.train_batches(self.stream, self._load, int(start),
                                                     int(stop), cfg.global_batch_size,
                                                     ctx.rank, ctx.world_size):
            # TensorFlow's global_step before the update: the steps applied so far
            lr = bert_poly_warmup(self.trainer.applied + self.trainer.skipped, cfg.lr,
                                  cfg.train_steps, cfg.warmup_steps, cfg.start_warmup_step)
            set_lr(self.optimizer.param_groups, lr)
            result = self.trainer.step(self._micro_batches(batch, count), count)
            steps += 1
            ctx.report_step(cfg.global_batch_size, result.loss, at=reached, lr=lr)
        if steps:
            elapsed = watch.elapsed()
            ctx.log(f"bert: {steps} steps to sample {reached}: {elapsed:.1f} s, "
                    f"{steps * cfg.global_batch_size / elapsed:.0f} sequences/s")
        return None if reached == int(stop) else tidy(reached)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        cfg, ctx = self.config, self.ctx
        dev = ctx.device
        self.model.eval()
        hits = torch.zeros((), dtype=torch.float64, device=dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for batch in pipeline.eval_batches(self.eval_set(), cfg.eval_batch_size, ctx.rank,
                                           ctx.world_size):
            if len(batch["input_ids"]) == 0:
                continue
            batch = {k: v.to(dev) for k, v in batch.items()}
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                mlm_logits = self.model(**batch)[3]  # (N, V): the predictions of weight > 0
            hit, weight = masked_lm_accuracy(mlm_logits.float(), *dense_targets(
                batch["masked_lm_ids"], batch["masked_lm_weights"]))
            hits += hit.double()
            total += weight.double()
        t = distributed.all_reduce_sum(torch.stack([hits, total]))
        return {"mlm_accuracy": float(t[0] / t[1]) if float(t[1]) else 0.0}


WORKLOAD = BertWorkload
