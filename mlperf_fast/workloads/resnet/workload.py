"""ResNet-50 as a Workload: ImageNet (ImageFolder or the reference's TFRecords) or the embedded
JPEG classes, the optimized ResNet (model.py), FusedLARS (or the reference's momentum SGD) on
the reference's warmup + poly-2 schedule, top-1 accuracy on the validation set every 4 epochs
after an offset of 2 (the embedded config: every epoch).

With several processes (torchrun) the model is data-parallel (DistributedDataParallel): each
process trains its slice of every global batch and scores its share of the validation images;
the correct counts are summed over the processes.
"""
from __future__ import annotations

from typing import Any

import torch

from mlperf_fast.harness import distributed
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.timing import Stopwatch
from mlperf_fast.harness.workload import DataError, ModelOptimizerState, RunContext, Workload
from mlperf_fast.optim.lars import FusedLARS
from mlperf_fast.optim.schedules import resnet_poly_warmup, set_lr
from mlperf_fast.workloads.resnet.config import CONFIGS, ResNetConfig
from mlperf_fast.workloads.resnet.model import ClassificationLoss, ResNet, initialization_tensors


class ReferenceSGD(FusedLARS):
    """The reference's SGD variant: Keras' momentum SGD (``v = m v - lr g; w += v``: the rate
    inside the momentum, as LARS has it) on the gradient plus the L2 term's ``2 wd w``
    (``single_l2_loss_op``) for every variable but batch norm's. It is FusedLARS with the trust
    ratio off (every group excluded) and the decay added to the gradients first."""

    def __init__(self, model: torch.nn.Module, lr: float, momentum: float,
                 weight_decay: float) -> None:
        decayed, bn = [], []
        for module in model.modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            (bn if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) else decayed).extend(own)
        super().__init__([{"params": decayed, "lars_exclude": True, "l2": 2 * weight_decay},
                          {"params": bn, "lars_exclude": True, "l2": 0.0}], lr=lr, momentum=momentum)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if group["l2"] and ps:
                torch._foreach_add_([p.grad for p in ps], ps, alpha=group["l2"])
        return super().step(closure)


class ResNetWorkload(ModelOptimizerState, Workload):
    benchmark = "resnet"
    description = "ResNet-50 v1.5 on ImageNet (image classification), top-1 >= 0.759"
    requires = ("torchvision",)
    extra = "resnet"

    @classmethod
    def configs(cls) -> dict[str, ResNetConfig]:
        return CONFIGS

    @classmethod
    def check_data(cls, config: ResNetConfig, data_dir: str | None) -> None:
        if data_dir is None:
            if not config.synth_classes:
                raise DataError(f"configuration {config.name} needs --data-dir (ImageNet: "
                                "train/ and val/ in the ImageFolder layout, or the reference's "
                                "TFRecord shards)")
            return
        from mlperf_fast.workloads.resnet.data import check_dataset

        check_dataset(data_dir)

    def __init__(self, config: ResNetConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.per_process_batch()  # refuses a batch that does not divide
        self._splits: tuple[Any, Any] | None = None

    # -- data ----------------------------------------------------------------------------
    def embedded_data(self) -> str:
        from mlperf_fast.workloads.resnet import synth

        cfg = self.config
        settings = synth.settings_for(cfg.synth_classes, cfg.synth_train_per_class,
                                      cfg.synth_val_per_class)
        return synth.embedded_dataset(settings, log=self.ctx.log)

    def splits(self) -> tuple[Any, Any]:
        if self._splits is None:
            from mlperf_fast.workloads.resnet.data import open_split

            d = self.data_dir()
            self._splits = open_split(d, "train"), open_split(d, "val")
            train, _val = self._splits
            if train.num_classes != self.config.num_classes:
                raise DataError(f"{d}: {train.num_classes} classes, the configuration "
                                f"{self.config.name} has {self.config.num_classes}")
        return self._splits

    # -- the run -------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        cfg = self.config
        train, val = self.splits()
        spe = cfg.steps_per_epoch(len(train))
        o = cfg.optimizer
        train_steps = cfg.train_steps(spe)
        hp = {
            "global_batch_size": cfg.global_batch_size,
            "gradient_accumulation_steps": 1,
            "opt_name": o,
            "train_samples": len(train),
            "eval_samples": len(val),
            # batch norm's statistics are over each process's slice (no group batch norm)
            "model_bn_span": self.per_process_batch(),
            "opt_learning_rate_warmup_epochs": cfg.warmup_epochs,
            f"{o}_opt_base_learning_rate": cfg.lr,
            f"{o}_opt_end_learning_rate": cfg.end_lr,
            f"{o}_opt_learning_rate_decay_poly_power": 2,
            f"{o}_opt_learning_rate_decay_steps": train_steps - round(cfg.warmup_epochs * spe) + 1,
            f"{o}_opt_momentum": cfg.momentum,
            f"{o}_opt_weight_decay": cfg.weight_decay,
        }
        if o == "lars":
            hp["lars_opt_learning_rate_warmup_epochs"] = cfg.warmup_epochs
            hp["lars_epsilon"] = cfg.lars_epsilon
        return hp

    def build(self) -> None:
        from functools import partial

        from mlperf_fast.data.dali import dali_available
        from mlperf_fast.data.loader import WorkerPool, default_workers
        from mlperf_fast.optim.lars import lars_param_groups
        from mlperf_fast.workloads.resnet import pipeline

        cfg, ctx = self.config, self.ctx
        # the input: DALI on CUDA when installed ("auto") or when asked ("on": its CPU operators
        # on a CPU device), chosen first so that a missing DALI fails before any work
        cuda = ctx.device.type == "cuda"
        self.workers = default_workers()
        if cfg.dali == "on" or (cfg.dali == "auto" and cuda and dali_available()):
            from mlperf_fast.workloads.resnet.dali_pipeline import DaliInput

            device_id = (ctx.device.index if ctx.device.index is not None
                         else torch.cuda.current_device()) if cuda else None
            # channels-last, as the model wants it; DALI's host threads on the spare cores
            dali = DaliInput(device_id, num_threads=max(2, self.workers), layout="NHWC")
            self._train_batches, self._eval_batches = dali.train_batches, dali.eval_batches
            inputs = f"DALI on the {'GPU' if cuda else 'CPU'} ({dali.num_threads} threads)"
        else:
            if cuda and cfg.dali == "auto":
                ctx.log("resnet: NVIDIA DALI is not installed (pip install mlperf-fast[dali]): "
                        "images are decoded on the CPU in PyTorch")
            # the workers live through the run (one pool for training, one for evaluation)
            train_workers, eval_workers = self.workers, self.workers
            if self.workers:
                train_workers = WorkerPool(self.workers, pin_memory=cuda)
                eval_workers = WorkerPool(self.workers)
            self._train_batches = partial(pipeline.train_batches, workers=train_workers)
            self._eval_batches = partial(pipeline.eval_batches, workers=eval_workers)
            inputs = "PyTorch " + (f"in {self.workers} worker processes, kept across epochs"
                                   if self.workers
                                   else "on a thread")
        self.train_data, self.val_data = self.splits()
        self.steps_per_epoch = cfg.steps_per_epoch(len(self.train_data))
        self.total_steps = cfg.train_steps(self.steps_per_epoch)
        generator = torch.Generator().manual_seed(ctx.seed)
        self.model = ResNet(cfg.num_classes, cfg.blocks, cfg.widths, cfg.stem, cfg.expansion,
                            generator=generator).to(ctx.device)
        if cfg.optimizer == "lars":
            self.optimizer = FusedLARS(lars_param_groups(self.model), lr=cfg.lr,
                                       momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                       trust_coefficient=cfg.lars_eta, eps=cfg.lars_epsilon)
        else:
            self.optimizer = ReferenceSGD(self.model, cfg.lr, cfg.momentum, cfg.weight_decay)
        loss = ctx.wrap_model(ClassificationLoss(self.model, cfg.label_smoothing))
        if self.compile_wanted(self.config.compile):
            loss = torch.compile(loss)
        amp = torch.bfloat16 if ctx.device.type == "cuda" else None
        self.trainer = TrainStep(loss, self.optimizer, amp_dtype=amp,
                                 params=list(self.model.parameters()),
                                 on_skip=lambda n: ctx.log(
                                     f"resnet: step {n}: a loss was not finite on some rank; "
                                     "the step was skipped on every rank"))
        ctx.log(f"resnet: {len(self.train_data)} training and {len(self.val_data)} validation "
                f"images, {cfg.num_classes} classes, "
                f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters, "
                f"{cfg.optimizer.upper()}, {self.steps_per_epoch} steps per epoch, device "
                f"{ctx.device}, input: {inputs}"
                + (", compiled" if self.compile_wanted(self.config.compile) else ""))

    def log_weights_initialization(self, log: Any) -> None:
        with torch.device("meta"):
            names = initialization_tensors(ResNet(self.config.num_classes, self.config.blocks,
                                                  self.config.widths, self.config.stem,
                                                  self.config.expansion))
        for name in names:
            log.event("weights_initialization", metadata={"tensor": name})

    def _lr(self, step: int) -> float:
        cfg = self.config
        return resnet_poly_warmup(step, cfg.lr, self.steps_per_epoch, self.total_steps,
                                  cfg.warmup_epochs, cfg.end_lr)

    def train(self, start: float, stop: float) -> None:
        from mlperf_fast.data.loader import WaitClock

        epoch, cfg, ctx = int(start), self.config, self.ctx
        dev = ctx.device
        self.model.train()
        watch, clock = Stopwatch(dev), WaitClock()
        batches = clock.timed(self._train_batches(
            self.train_data, cfg.global_batch_size, ctx.seed, epoch, ctx.rank, ctx.world_size,
            cfg.image_size))
        losses = []
        for i, (images, labels) in enumerate(batches):
            if i >= self.steps_per_epoch:
                break
            # the reference's step counter: the optimizer's iterations before this update
            lr = self._lr(epoch * self.steps_per_epoch + i)
            set_lr(self.optimizer.param_groups, lr)
            batch = (images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True))
            result = self.trainer.step([batch], 1)
            losses.append(result.loss)
            ctx.report_step(cfg.global_batch_size, result.loss,
                            at=epoch + (i + 1) / self.steps_per_epoch, lr=lr,
                            input_wait_s=clock.waited)
        if losses:
            elapsed = watch.elapsed()
            ctx.log(f"resnet: epoch {epoch + 1}: mean training loss "
                    f"{float(torch.stack(losses).mean()):.3f}, {elapsed:.1f} s, "
                    f"{cfg.global_batch_size * len(losses) / elapsed:.0f} images/s, waiting "
                    f"for input {clock.waited:.2f} s ({100 * clock.waited / elapsed:.1f}%)")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        cfg, ctx = self.config, self.ctx
        dev = ctx.device
        self.model.eval()
        correct = torch.zeros((), dtype=torch.float64, device=dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
        for images, labels, valid in self._eval_batches(self.val_data, cfg.eval_batch_size,
                                                        ctx.rank, ctx.world_size, cfg.image_size):
            images, labels, valid = images.to(dev), labels.to(dev), valid.to(dev)
            if amp is not None:
                with amp:
                    logits = self.model(images)
            else:
                logits = self.model(images)
            hit = (logits.float().argmax(dim=1) == labels) & valid
            correct += hit.sum()
            total += valid.sum()
        t = distributed.all_reduce_sum(torch.stack([correct, total]))
        return {"top1": float(t[0] / t[1]) if float(t[1]) else 0.0}


WORKLOAD = ResNetWorkload
