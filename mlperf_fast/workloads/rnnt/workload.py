"""RNN-T as a harness Workload: LibriSpeech (or the embedded corpus), the optimized model, LAMB
with the reference's warmup / hold / exponential-decay schedule, EMA weights for evaluation,
greedy decoding and word error rate (train.py of the reference, restated)."""
from __future__ import annotations

import os
from typing import Any

import torch

from mlperf_fast.data.dali import dali_available
from mlperf_fast.data.loader import WaitClock, default_workers, load_ahead
from mlperf_fast.data.samplers import BucketingSampler, accumulation_steps, split_micro_batches
from mlperf_fast.data.tokenizers import cached_sentencepiece
from mlperf_fast.harness import distributed
from mlperf_fast.harness.mllog import C
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.timing import Stopwatch
from mlperf_fast.harness.workload import DataError, RunContext, Workload
from mlperf_fast.metrics.wer import word_error_counts
from mlperf_fast.optim import FusedLAMB
from mlperf_fast.optim.ema import EMA
from mlperf_fast.optim.schedules import set_lr, warmup_hold_exp_decay
from mlperf_fast.workloads.rnnt import data
from mlperf_fast.workloads.rnnt.config import CONFIGS, RNNTConfig
from mlperf_fast.workloads.rnnt.features import batch_features
from mlperf_fast.workloads.rnnt.model import RNNT, GreedyDecoder
from mlperf_fast.workloads.rnnt.pipeline import TorchPipeline, eval_batches


class RNNTWorkload(Workload):
    benchmark = "rnnt"
    description = "RNN-T speech recognition (LibriSpeech; embedded: a synthesized English corpus)"
    requires = ("soundfile", "sentencepiece", "espeakng_loader")
    extra = "rnnt"

    def __init__(self, config: RNNTConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self._train: list[data.Sample] | None = None
        self._eval: list[data.Sample] | None = None

    # -- configuration --------------------------------------------------------------------------
    @classmethod
    def configs(cls) -> dict[str, RNNTConfig]:
        return CONFIGS

    @classmethod
    def check_data(cls, config: RNNTConfig, data_dir: str | None) -> None:
        if data_dir is None:
            if config.data.embedded is None:
                raise DataError(f"the {config.name} configuration needs --data-dir (LibriSpeech)")
            return
        for split in (*config.data.train_splits, config.data.eval_split):
            data.check_split(data_dir, split)
        spm = config.data.sentencepiece_model
        if spm is not None and not os.path.exists(spm):
            raise DataError(f"{spm} is missing")

    # -- data -------------------------------------------------------------------------------------
    def embedded_data(self) -> str:
        cfg = self.config.data
        return data.embedded_corpus(cfg.embedded, cfg.train_splits[0], cfg.eval_split,
                                    log=self.ctx.log)

    def _samples(self) -> tuple[list[data.Sample], list[data.Sample]]:
        if self._train is None:
            cfg = self.config.data
            root = self.data_dir()
            train = [s for split in cfg.train_splits for s in data.read_split(root, split)]
            self._train = [s for s in train if s.duration <= cfg.max_duration]
            self._eval = data.read_split(root, cfg.eval_split)
        return self._train, self._eval

    def _tokenizer(self, train: list[data.Sample]) -> data.Tokenizer:
        cfg = self.config.data
        if cfg.sentencepiece_model is not None:
            return data.Tokenizer(cfg.sentencepiece_model)
        model = cached_sentencepiece("rnnt", [s.transcript for s in train], cfg.vocab_size,
                                     log=self.ctx.log)
        return data.Tokenizer(model)

    def _train_samples_per_epoch(self) -> int:
        train, _ = self._samples()
        gbs = self.config.global_batch_size
        return len(train) // gbs * gbs

    def hyperparameters(self) -> dict[str, Any]:
        c, o, a = self.config, self.config.optim, self.config.augment
        _, evals = self._samples()
        hp: dict[str, Any] = {
            C.GLOBAL_BATCH_SIZE: c.global_batch_size,
            C.GRADIENT_ACCUMULATION_STEPS: self._accumulation(),
            C.OPT_NAME: C.LAMB,
            C.OPT_BASE_LR: o.lr,
            C.OPT_LAMB_EPSILON: o.eps,
            C.OPT_LAMB_LR_DECAY_POLY_POWER: o.lr_exp_gamma,
            C.OPT_LR_WARMUP_EPOCHS: o.warmup_epochs,
            C.OPT_LAMB_LR_HOLD_EPOCHS: o.hold_epochs,
            C.OPT_LAMB_BETA_1: o.beta1,
            C.OPT_LAMB_BETA_2: o.beta2,
            C.OPT_GRADIENT_CLIP_NORM: o.clip_norm,
            C.OPT_LR_ALT_DECAY_FUNC: True,
            C.OPT_LR_ALT_WARMUP_FUNC: True,
            C.OPT_LAMB_LR_MIN: o.min_lr,
            C.OPT_WEIGHT_DECAY: o.weight_decay,
            C.MODEL_WEIGHTS_INITIALIZATION_SCALE: c.model.weights_init_scale,
            C.MODEL_EVAL_EMA_FACTOR: o.ema,
            C.EVAL_MAX_PREDICTION_SYMBOLS: c.max_symbol_per_sample,
            C.TRAIN_SAMPLES: self._train_samples_per_epoch(),
            C.EVAL_SAMPLES: len(evals),
            C.DATA_TRAIN_MAX_DURATION: c.data.max_duration,
            C.DATA_TRAIN_NUM_BUCKETS: c.data.num_buckets,
        }
        if a is not None:
            hp.update({
                C.DATA_SPEED_PERTURBATON_MIN: a.speed_min,
                C.DATA_SPEED_PERTURBATON_MAX: a.speed_max,
                C.DATA_SPEC_AUGMENT_FREQ_N: a.freq_masks,
                C.DATA_SPEC_AUGMENT_FREQ_MIN: a.min_freq,
                C.DATA_SPEC_AUGMENT_FREQ_MAX: a.max_freq,
                C.DATA_SPEC_AUGMENT_TIME_N: a.time_masks,
                C.DATA_SPEC_AUGMENT_TIME_MIN: a.min_time,
                C.DATA_SPEC_AUGMENT_TIME_MAX: a.max_time,
            })
        return hp

    def _accumulation(self) -> int:
        return accumulation_steps(self.config.global_batch_size, self.ctx.world_size,
                                  self.config.optim.micro_batch)

    # -- the run ----------------------------------------------------------------------------------
    def _input_workers(self) -> int:
        if self.config.input_workers is not None:
            return self.config.input_workers
        # on a 2-core machine the model takes one core and a thread makes the input on the other
        return default_workers() if self.ctx.device.type == "cuda" else 0

    def build(self) -> None:
        cfg, ctx = self.config, self.ctx
        train, evals = self._samples()
        self.tokenizer = self._tokenizer(train)
        dev = ctx.device
        if dev.type == "cpu" and cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.uses_dali = dev.type == "cuda" and dali_available()
        self.workers = 0
        if self.uses_dali:
            from mlperf_fast.workloads.rnnt.pipeline import DaliPipeline

            mb = min(cfg.optim.micro_batch, cfg.global_batch_size // ctx.world_size)
            self.train_pipe = DaliPipeline(train, self.tokenizer, cfg.features, cfg.augment,
                                           train=True, seed=ctx.seed * 1000 + ctx.rank,
                                           device_id=dev.index or 0, max_batch=mb)
            self.eval_pipe = DaliPipeline(evals, self.tokenizer, cfg.features, None, train=False,
                                          seed=ctx.seed, device_id=dev.index or 0,
                                          max_batch=cfg.data.eval_batch)
            self._make_batch = lambda key: self.train_pipe.batch(key[0])
            features = "DALI on the GPU"
        else:
            self.workers = self._input_workers()
            if dev.type == "cuda":
                ctx.log("rnnt: NVIDIA DALI is not installed (pip install mlperf-fast[dali]): "
                        "features are computed on the CPU in PyTorch")
            self.train_pipe = TorchPipeline(train, self.tokenizer, cfg.features, cfg.augment,
                                            train=True, seed=ctx.seed * 1000 + ctx.rank,
                                            cache_audio=cfg.data.embedded is not None)
            if self.workers:
                self.train_pipe.preload()  # decoded once here, shared by the forked workers
            self.eval_pipe = TorchPipeline(evals, self.tokenizer, cfg.features, None,
                                           train=False, seed=ctx.seed)
            self._make_batch = self.train_pipe.keyed_batch
            features = (f"PyTorch in {self.workers} worker processes" if self.workers
                        else "PyTorch on a thread")
        self.references = [s.transcript for s in evals]
        self.sampler = BucketingSampler([s.duration for s in train], cfg.global_batch_size,
                                        cfg.data.num_buckets, seed=ctx.seed, rank=ctx.rank,
                                        world_size=ctx.world_size)
        self.steps_per_epoch = len(self.sampler)
        n_classes = self.tokenizer.num_labels + 1
        self.model = RNNT(n_classes, cfg.features.in_feats, cfg.model).to(dev)
        o = cfg.optim
        groups = [{"params": list(m.parameters())} for m in (
            self.model.encoder, self.model.prediction)]
        groups.append({"params": [p for m in (self.model.joint_enc, self.model.joint_pred,
                                              self.model.joint_net) for p in m.parameters()]})
        self.opt = FusedLAMB(groups, **o.lamb_kwargs())
        self.ema = EMA(self.model, o.ema) if o.ema > 0 else None
        # LAMB clips the gradients' global norm itself (max_grad_norm): no clipping in the step
        self.trainer = TrainStep(ctx.wrap_model(TrainingLoss(self.model)), self.opt,
                                 ema=self.ema, params=list(self.model.parameters()),
                                 on_skip=lambda n: ctx.log(
                                     f"rnnt: step {n}: a loss was not finite on some rank; "
                                     "the step was skipped on every rank"))
        self.decoder = GreedyDecoder(self.tokenizer.blank, cfg.max_symbols_per_step,
                                     cfg.max_symbol_per_sample)
        self.aug_gen = torch.Generator().manual_seed(ctx.seed * 7919 + ctx.rank)
        ctx.log(f"rnnt: {len(train)} training and {len(evals)} evaluation utterances, "
                f"{self.tokenizer.num_labels} pieces + blank, "
                f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters, "
                f"optimizer FusedLAMB, device {dev}, features {features}")

    def log_weights_initialization(self, log: Any) -> None:
        for name in RNNT.initialized_tensors:
            log.event(C.WEIGHTS_INITIALIZATION, metadata={"tensor": name})

    def _set_lr(self, epoch: int) -> None:
        o = self.config.optim
        # the reference's step counter starts at 1 and advances with each applied step
        a = warmup_hold_exp_decay(self.trainer.applied + 1, epoch + 1, self.steps_per_epoch,
                                  o.warmup_epochs, o.hold_epochs, o.lr_exp_gamma)
        set_lr(self.opt.param_groups, max(a * o.lr, o.min_lr))

    def _to_device(self, feats: torch.Tensor, lens: torch.Tensor, augment: bool):
        dev = self.ctx.device
        return batch_features(feats.to(dev, non_blocking=True), lens.to(dev),
                              self.config.features, self.config.augment if augment else None,
                              self.aug_gen)

    def _device_batches(self, batches):
        dev = self.ctx.device
        for feats, lens, y, y_lens in batches:
            x, x_lens = self._to_device(feats, lens, augment=True)
            yield x, x_lens, y.to(dev, non_blocking=True), y_lens.to(dev, non_blocking=True)

    def train(self, start: float, stop: float) -> None:
        epoch = int(start)
        o, ctx = self.config.optim, self.ctx
        self.model.train()
        chunked = [split_micro_batches(b, o.micro_batch) for b in self.sampler.epoch(epoch)]
        keys = [(chunk, self._batch_seed(epoch, i, j)) for i, chunks in enumerate(chunked)
                for j, chunk in enumerate(chunks)]
        watch, clock = Stopwatch(ctx.device), WaitClock()
        inputs = self._device_batches(clock.timed(load_ahead(
            self._make_batch, keys, workers=self.workers,
            pin_memory=ctx.device.type == "cuda" and self.workers > 0)))
        losses = []
        for i, chunks in enumerate(chunked):
            self._set_lr(epoch)
            result = self.trainer.step(inputs, len(chunks))
            losses.append(result.loss)
            ctx.report_step(self.config.global_batch_size, result.loss,
                            at=epoch + (i + 1) / len(chunked),
                            lr=self.opt.param_groups[0]["lr"], input_wait_s=clock.waited)
        if losses:
            mean = float(torch.stack(losses).mean())
            elapsed = watch.elapsed()
            # The input pipeline's share: time the training loop spent blocked on the next
            # batch. Near zero means the pipeline kept ahead of the model.
            ctx.log(f"rnnt: epoch {epoch + 1}: mean training loss {mean:.3f}, "
                    f"learning rate {self.opt.param_groups[0]['lr']:.2e}, {elapsed:.1f} s, "
                    f"waiting for input {clock.waited:.2f} s "
                    f"({100 * clock.waited / elapsed:.1f}%)")

    def _batch_seed(self, epoch: int, batch: int, micro: int) -> int:
        """The seed of one micro-batch's random draws: a function of the run's seed, the rank and
        the batch's place, so that workers and resumed runs draw the same."""
        seed = ((self.ctx.seed * 1_000_003 + self.ctx.rank) * 10_007 + epoch) * 100_003
        return (seed + batch * 1009 + micro) % (2 ** 63)

    @torch.no_grad()
    def transcribe(self, model: RNNT, indices: list[int]) -> list[str]:
        feats, lens, _, _ = self.eval_pipe.batch(indices)
        x, x_lens = self._to_device(feats, lens, augment=False)
        return [self.tokenizer.detokenize(h) for h in self.decoder.decode(model, x, x_lens)]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model = self.ema.module if self.ema is not None else self.model
        errors = words = 0
        for idx in eval_batches(len(self.references), self.config.data.eval_batch,
                                self.ctx.rank, self.ctx.world_size):
            hyps = self.transcribe(model, idx)
            e, w = word_error_counts(hyps, [self.references[i] for i in idx])
            errors, words = errors + e, words + w
        t = distributed.all_reduce_sum(
            torch.tensor([errors, words], dtype=torch.float64, device=self.ctx.device))
        errors, words = float(t[0]), float(t[1])
        return {"WER": errors / words if words else float("inf")}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "step": self.trainer.state_dict(), "aug_gen": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.trainer.load_state_dict(state["step"])
        self.aug_gen.set_state(state["aug_gen"])


class TrainingLoss(torch.nn.Module):
    """The model's training loss as a module's forward, for DistributedDataParallel to wrap: its
    gradient hooks follow a forward call, and the loss (fused joint + loss on CUDA) is what the
    step needs, not the reference's logits."""

    def __init__(self, model: RNNT) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, y: torch.Tensor,
                y_lens: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x, x_lens, y, y_lens)


WORKLOAD = RNNTWorkload
