"""RNN-T as a harness Workload: LibriSpeech (or the embedded corpus), the optimized model, LAMB
with the reference's warmup / hold / exponential-decay schedule, EMA weights for evaluation,
greedy decoding and word error rate (train.py of the reference, restated)."""
from __future__ import annotations

import collections
import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor
import hashlib
import os
import sys
import time
from typing import Any

import torch

from mlperf_fast.harness.mllog import C
from mlperf_fast.harness.timing import Stopwatch
from mlperf_fast.harness.workload import DataError, RunContext, Workload
from mlperf_fast.rnnt import data, ops
from mlperf_fast.rnnt.config import CONFIGS, RNNTConfig
from mlperf_fast.rnnt.features import batch_features
from mlperf_fast.rnnt.metrics import word_error_counts
from mlperf_fast.rnnt.model import RNNT, GreedyDecoder
from mlperf_fast.rnnt.pipeline import TorchPipeline, dali_available, eval_batches


def _say(msg: str) -> None:
    print(f"rnnt: {msg}", file=sys.stderr, flush=True)


def lr_factor(step: int, epoch: int, steps_per_epoch: int, warmup_epochs: int,
              hold_epochs: int, gamma: float) -> float:
    """common/optimizers.py lr_policy: linear warmup over steps, hold, then gamma per epoch
    (``step`` counts from 1, ``epoch`` from 1)."""
    warmup = warmup_epochs * steps_per_epoch
    hold = hold_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step < warmup + hold:
        return 1.0
    return gamma ** (epoch - warmup_epochs - hold_epochs)


class RNNTWorkload(Workload):
    benchmark = "rnnt"
    quality_name = "WER"
    higher_is_better = False

    def __init__(self, config: RNNTConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self._root: str | None = None
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

    @property
    def target(self) -> float:
        return self.config.target_wer

    @property
    def max_epochs(self) -> int:
        return self.config.optim.epochs

    @property
    def division(self) -> str:
        return self.config.division

    # -- data -------------------------------------------------------------------------------------
    def _samples(self) -> tuple[list[data.Sample], list[data.Sample]]:
        if self._train is None:
            cfg = self.config.data
            if self.ctx.data_dir is None:
                if self.ctx.rank == 0:
                    self._root = data.embedded_corpus(cfg.embedded, cfg.train_splits[0],
                                                      cfg.eval_split, log=_say)
                if self.ctx.distributed:
                    from mlperf_fast.harness import distributed

                    distributed.barrier()
                self._root = data.corpus_dir(cfg.embedded)
            else:
                self._root = self.ctx.data_dir
            train = [s for split in cfg.train_splits for s in data.read_split(self._root, split)]
            self._train = [s for s in train if s.duration <= cfg.max_duration]
            self._eval = data.read_split(self._root, cfg.eval_split)
        return self._train, self._eval

    def _tokenizer(self, train: list[data.Sample]) -> data.Tokenizer:
        cfg = self.config.data
        if cfg.sentencepiece_model is not None:
            return data.Tokenizer(cfg.sentencepiece_model)
        texts = [s.transcript for s in train]
        key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
        prefix = os.path.join(data.cache_root(), "rnnt", "sentencepiece",
                              f"unigram{cfg.vocab_size}-{key}")
        if self.ctx.rank == 0 and not os.path.exists(prefix + ".model"):
            _say(f"training the sentencepiece model {prefix}.model")
            data.train_tokenizer(texts, cfg.vocab_size, prefix)
        if self.ctx.distributed:
            from mlperf_fast.harness import distributed

            distributed.barrier()
        return data.Tokenizer(prefix + ".model")

    def _train_samples_per_epoch(self) -> int:
        train, _ = self._samples()
        gbs = self.config.optim.global_batch_size
        return len(train) // gbs * gbs

    def hyperparameters(self) -> dict[str, Any]:
        c, o, a = self.config, self.config.optim, self.config.augment
        _, evals = self._samples()
        hp: dict[str, Any] = {
            C.GLOBAL_BATCH_SIZE: o.global_batch_size,
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
        o = self.config.optim
        local = o.global_batch_size // self.ctx.world_size
        return max(1, -(-local // o.micro_batch))

    # -- the run ----------------------------------------------------------------------------------
    def build(self) -> None:
        cfg, ctx = self.config, self.ctx
        train, evals = self._samples()
        self.tokenizer = self._tokenizer(train)
        dev = ctx.device
        if dev.type == "cpu" and cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.uses_dali = dev.type == "cuda" and dali_available()
        if self.uses_dali:
            from mlperf_fast.rnnt.pipeline import DaliPipeline

            mb = min(cfg.optim.micro_batch, cfg.optim.global_batch_size // ctx.world_size)
            self.train_pipe = DaliPipeline(train, self.tokenizer, cfg.features, cfg.augment,
                                           train=True, seed=ctx.seed * 1000 + ctx.rank,
                                           device_id=dev.index or 0, max_batch=mb)
            self.eval_pipe = DaliPipeline(evals, self.tokenizer, cfg.features, None, train=False,
                                          seed=ctx.seed, device_id=dev.index or 0,
                                          max_batch=cfg.data.eval_batch)
        else:
            if dev.type == "cuda":
                _say("NVIDIA DALI is not installed (pip install mlperf-fast[dali]): features "
                     "are computed on the CPU in PyTorch")
            self.train_pipe = TorchPipeline(train, self.tokenizer, cfg.features, cfg.augment,
                                            train=True, seed=ctx.seed * 1000 + ctx.rank,
                                            cache_audio=cfg.data.embedded is not None)
            self.eval_pipe = TorchPipeline(evals, self.tokenizer, cfg.features, None,
                                           train=False, seed=ctx.seed)
        self.references = [s.transcript for s in evals]
        self.sampler = data.BucketingSampler([s.duration for s in train],
                                             cfg.optim.global_batch_size, cfg.data.num_buckets,
                                             seed=ctx.seed, rank=ctx.rank,
                                             world_size=ctx.world_size)
        self.steps_per_epoch = len(self.sampler)
        n_classes = self.tokenizer.num_labels + 1
        self.model = RNNT(n_classes, cfg.features.in_feats, cfg.model).to(dev)
        self.ddp = ctx.wrap_model(TrainingLoss(self.model))
        self.ema = copy.deepcopy(self.model) if cfg.optim.ema > 0 else None
        o = cfg.optim
        groups = [{"params": list(m.parameters()), "lr": o.lr} for m in (
            self.model.encoder, self.model.prediction)]
        groups.append({"params": [p for m in (self.model.joint_enc, self.model.joint_pred,
                                              self.model.joint_net) for p in m.parameters()],
                       "lr": o.lr})
        self.opt = ops.make_lamb(groups, o)
        self.decoder = GreedyDecoder(self.tokenizer.blank, cfg.max_symbols_per_step,
                                     cfg.max_symbol_per_sample)
        self.step = 1
        self.aug_gen = torch.Generator().manual_seed(ctx.seed * 7919 + ctx.rank)
        _say(f"{len(train)} training and {len(evals)} evaluation utterances, "
             f"{self.tokenizer.num_labels} pieces + blank, "
             f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters, "
             f"optimizer {ops.lamb_name()}, loss {ops.rnnt_loss().__module__}, device {dev}, "
             f"features {'DALI on the GPU' if self.uses_dali else 'PyTorch on the CPU'}")

    def log_weights_initialization(self, log: Any) -> None:
        for name in RNNT.initialized_tensors:
            log.event(C.WEIGHTS_INITIALIZATION, metadata={"tensor": name})

    def _set_lr(self, epoch: int) -> None:
        o = self.config.optim
        a = lr_factor(self.step, epoch + 1, self.steps_per_epoch, o.warmup_epochs,
                      o.hold_epochs, o.lr_exp_gamma)
        for g in self.opt.param_groups:
            g["lr"] = max(a * o.lr, o.min_lr)

    def _to_device(self, feats: torch.Tensor, lens: torch.Tensor, augment: bool):
        dev = self.ctx.device
        x, x_lens = batch_features(feats.to(dev, non_blocking=True), lens.to(dev),
                                   self.config.features,
                                   self.config.augment if augment else None, self.aug_gen)
        return x, x_lens

    def train_epoch(self, epoch: int) -> None:
        o, dev = self.config.optim, self.ctx.device
        self.model.train()
        chunked = [[b[i:i + o.micro_batch] for i in range(0, len(b), o.micro_batch)]
                   for b in self.sampler.epoch(epoch)]
        # the input pipeline runs one micro-batch ahead on a thread of its own (its torch ops
        # release the GIL), in order, so its random draws do not depend on timing
        watch, waited = Stopwatch(dev), [0.0]
        with ThreadPoolExecutor(max_workers=1) as pool:
            inputs = _waiting(_prefetch(pool, self.train_pipe.batch,
                                        [c for chunks in chunked for c in chunks], depth=2),
                              waited)
            losses = [self._train_step(epoch, chunks, inputs) for chunks in chunked]
        if self.ctx.rank == 0 and losses:
            mean = float(torch.stack(losses).mean())
            elapsed = watch.elapsed()
            # The input pipeline's share: time the training loop spent blocked on the next
            # batch. Near zero means the pipeline kept ahead of the model.
            _say(f"epoch {epoch + 1}: mean training loss {mean:.3f}, "
                 f"learning rate {self.opt.param_groups[0]['lr']:.2e}, {elapsed:.1f} s, "
                 f"waiting for input {waited[0]:.2f} s ({100 * waited[0] / elapsed:.1f}%)")

    def _train_step(self, epoch: int, chunks: list[list[int]], inputs) -> torch.Tensor:
        """One optimizer step over the micro-batches of one global batch."""
        o, dev = self.config.optim, self.ctx.device
        self._set_lr(epoch)
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=dev)
        for j, chunk in enumerate(chunks):
            feats, lens, y, y_lens = next(inputs)
            x, x_lens = self._to_device(feats, lens, augment=True)
            sync = j == len(chunks) - 1 or not self.ctx.distributed
            ctxm = self.ddp.no_sync() if not sync else contextlib.nullcontext()
            with ctxm:
                loss = self._loss(x, x_lens, y.to(dev), y_lens.to(dev)) / len(chunks)
                if torch.isnan(loss).any():
                    _say("loss is NaN; skipping the update")
                    continue
                loss.backward()
            total += loss.detach()
        self.opt.step()
        if self.ema is not None:
            ema_p = list(self.ema.state_dict().values())
            cur_p = list(self.model.state_dict().values())
            torch._foreach_lerp_(ema_p, cur_p, 1.0 - o.ema)
        self.step += 1
        self.ctx.report_step(o.global_batch_size, total)
        return total

    def _loss(self, x, x_lens, y, y_lens) -> torch.Tensor:
        # through the wrapper, so that DDP's hooks see the forward (a plain call without DDP)
        return self.ddp(x, x_lens, y, y_lens)

    @torch.no_grad()
    def transcribe(self, model: RNNT, indices: list[int]) -> list[str]:
        feats, lens, _, _ = self.eval_pipe.batch(indices)
        x, x_lens = self._to_device(feats, lens, augment=False)
        return [self.tokenizer.detokenize(h) for h in self.decoder.decode(model, x, x_lens)]

    @torch.no_grad()
    def evaluate(self) -> float:
        model = self.ema if self.ema is not None else self.model
        errors = words = 0
        for idx in eval_batches(len(self.references), self.config.data.eval_batch,
                                self.ctx.rank, self.ctx.world_size):
            hyps = self.transcribe(model, idx)
            e, w = word_error_counts(hyps, [self.references[i] for i in idx])
            errors, words = errors + e, words + w
        if self.ctx.distributed:
            import torch.distributed as dist

            t = torch.tensor([errors, words], dtype=torch.float64, device=self.ctx.device)
            dist.all_reduce(t)
            errors, words = float(t[0]), float(t[1])
        return errors / words if words else float("inf")

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None,
                 "step": self.step, "aug_gen": self.aug_gen.get_state()}
        if isinstance(self.train_pipe, TorchPipeline):  # DALI's generators are not saved
            state["pipe_gen"] = self.train_pipe.generator.get_state()
            state["pipe_np"] = self.train_pipe.np_rng.bit_generator.state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        self.aug_gen.set_state(state["aug_gen"])
        if "pipe_gen" in state and isinstance(self.train_pipe, TorchPipeline):
            self.train_pipe.generator.set_state(state["pipe_gen"])
            self.train_pipe.np_rng.bit_generator.state = state["pipe_np"]


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


def _waiting(items, waited: list[float]):
    """The items of an iterator, adding the seconds spent waiting for each to ``waited[0]``."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - t0
        yield item


def _prefetch(pool, fn, items, depth: int):
    """fn(item) for each item, computed ``depth`` items ahead on ``pool``, yielded in order."""
    pending = collections.deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            break
    for item in it:
        yield pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        yield pending.popleft().result()

