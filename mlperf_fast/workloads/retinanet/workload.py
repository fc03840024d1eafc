"""RetinaNet as a Workload: the OpenImages MLPerf subset (--data-dir) or the embedded shapes set
(data/detection_synth.py, the same OpenImages layout, read by the same reader), the optimized
RetinaNet (model.py), Adam with the reference's linear warmup over the first epoch, COCO box
mAP (metrics/coco_map.py, pycocotools' COCOeval) on the validation set after every epoch.

The MLPerf log names the benchmark ``ssd``: in the v2.1 round that is RetinaNet's name
(mlperf-logging's ``closed_ssd.yaml`` holds RetinaNet's rules), so that the compliance checker
applies those rules; on the command line it is ``retinanet``.

With several processes (torchrun) the model is data-parallel (DistributedDataParallel): each
process trains its slice of every global batch and detects on its share of the validation
images; rank 0 gathers the detections, scores them and sends every process the score.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from mlperf_fast.harness import distributed
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.timing import Stopwatch
from mlperf_fast.harness.workload import DataError, ModelOptimizerState, RunContext, Workload
from mlperf_fast.optim.adam import FusedAdam
from mlperf_fast.optim.schedules import retinanet_warmup_factor, set_lr
from mlperf_fast.workloads.retinanet.config import CONFIGS, RetinaNetConfig
from mlperf_fast.workloads.retinanet.model import RetinaNet, initialization_tensors

LAYOUT = "openimages"
SPLITS = ("train", "validation")


def synth_settings(cfg: RetinaNetConfig):
    """The embedded set of ``cfg`` (data/detection_synth.py)."""
    from mlperf_fast.data.detection_synth import DetectionSynthSettings

    return DetectionSynthSettings(num_classes=cfg.synth_classes,
                                  train_images=cfg.synth_train_images,
                                  val_images=cfg.synth_val_images, size=tuple(cfg.synth_size),
                                  max_objects=cfg.synth_max_objects)


class RetinaNetWorkload(ModelOptimizerState, Workload):
    benchmark = "ssd"  # the v2.1 round's name of RetinaNet (see the module's docstring)
    description = ("RetinaNet ResNeXt50-FPN on OpenImages (object detection), "
                   "box mAP >= 0.340")
    requires = ("pycocotools",)
    extra = "retinanet"

    @classmethod
    def configs(cls) -> dict[str, RetinaNetConfig]:
        return CONFIGS

    @classmethod
    def check_data(cls, config: RetinaNetConfig, data_dir: str | None) -> None:
        if data_dir is None:
            if not config.synth_classes:
                raise DataError(f"configuration {config.name} needs --data-dir (the OpenImages "
                                "MLPerf subset: train/ and validation/, each with data/*.jpg "
                                "and labels/openimages-mlperf.json)")
            return
        from mlperf_fast.data.coco import openimages_paths

        for split in SPLITS:
            folder, labels = openimages_paths(data_dir, split)
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder (the {split} images)")
            if not labels.is_file():
                raise DataError(f"{labels}: no such file (the {split} annotations)")
        if config.backbone_weights is not None:
            import os

            if not os.path.isfile(config.backbone_weights):
                raise DataError(f"backbone_weights {config.backbone_weights}: no such file")

    def __init__(self, config: RetinaNetConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.per_process_batch()  # refuses a batch that does not divide
        self._sets: tuple[Any, Any] | None = None

    # -- data ----------------------------------------------------------------------------
    def embedded_data(self) -> str:
        from mlperf_fast.data.detection_synth import embedded_detection_set

        return str(embedded_detection_set(synth_settings(self.config), LAYOUT, log=self.ctx.log))

    def sets(self) -> tuple[Any, Any]:
        """The (train, validation) CocoSets."""
        if self._sets is None:
            from mlperf_fast.data.coco import openimages_paths, read_coco

            root = self.data_dir()
            sets = []
            for split in SPLITS:
                folder, labels = openimages_paths(root, split)
                sets.append(read_coco(labels, folder))
            for s in sets:
                if s.num_classes != self.config.num_classes:
                    raise DataError(f"{s.annotation_file}: {s.num_classes} categories, the "
                                    f"configuration {self.config.name} has "
                                    f"{self.config.num_classes}")
            self._sets = (sets[0], sets[1])
        return self._sets

    # -- the run -------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        cfg = self.config
        train, val = self.sets()
        return {
            "global_batch_size": cfg.global_batch_size,
            "gradient_accumulation_steps": 1,
            "opt_name": "adam",
            "opt_base_learning_rate": cfg.lr,
            "opt_weight_decay": cfg.weight_decay,
            "opt_learning_rate_warmup_epochs": cfg.warmup_epochs,
            "opt_learning_rate_warmup_factor": cfg.warmup_factor,
            "train_samples": len(train),
            "eval_samples": len(val),
        }

    def build(self) -> None:
        from mlperf_fast.data.coco import DetectionDataset
        from mlperf_fast.data.loader import default_workers
        from mlperf_fast.workloads.retinanet.pipeline import Preprocessing

        cfg, ctx = self.config, self.ctx
        if cfg.division == "closed" and cfg.backbone_weights is None:
            ctx.log("warning: retinanet: no backbone_weights (--set backbone_weights=PATH, "
                    "torchvision's ResNeXt50-32x4d ImageNet weights): the backbone starts "
                    "from random weights, as no closed run does, and every layer trains")
        train, val = self.sets()
        self.train_data, self.val_data = DetectionDataset(train), DetectionDataset(val)
        self.prep = Preprocessing.of(cfg)
        self.workers = default_workers()
        self.steps_per_epoch = cfg.steps_per_epoch(len(train))
        self.warmup_iters = round(cfg.warmup_epochs * self.steps_per_epoch)
        # the reference draws its initial weights from torch's generator; drawn here from the
        # run's seed without disturbing the generator state the harness saves and restores
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            self.model = RetinaNet(cfg).to(ctx.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # [ref] torch.optim.Adam(params, lr): L2-form (no decoupled decay), weight decay 0
        self.optimizer = FusedAdam(params, lr=cfg.lr, adam_w_mode=False,
                                   weight_decay=cfg.weight_decay)
        loss = ctx.wrap_model(self.model)
        if self.compile_wanted(self.config.compile):
            loss = torch.compile(loss)
        amp = torch.bfloat16 if ctx.device.type == "cuda" else None
        self.trainer = TrainStep(loss, self.optimizer, amp_dtype=amp, params=params,
                                 on_skip=lambda n: ctx.log(
                                     f"retinanet: step {n}: a loss was not finite on some "
                                     "rank; the step was skipped on every rank"))
        ctx.log(f"retinanet: {len(train)} training and {len(val)} validation images, "
                f"{cfg.num_classes} classes, {cfg.image_size[0]}x{cfg.image_size[1]} input, "
                f"{sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters, "
                f"{self.steps_per_epoch} steps per epoch, device {ctx.device}")

    def log_weights_initialization(self, log: Any) -> None:
        for name in initialization_tensors(self.config):
            log.event("weights_initialization", metadata={"tensor": name})

    def lr(self, step: int) -> float:
        """The rate of the update after ``step`` earlier ones ([ref] warmup_lr_scheduler)."""
        cfg = self.config
        return cfg.lr * retinanet_warmup_factor(step, max(1, self.warmup_iters),
                                                cfg.warmup_factor)

    def train(self, start: float, stop: float) -> float | None:
        """Train the steps from progress ``start`` to ``stop`` (epochs, possibly fractional:
        step ``s`` of the run is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``)."""
        from mlperf_fast.data.loader import WaitClock
        from mlperf_fast.workloads.retinanet.pipeline import train_batches

        cfg, ctx = self.config, self.ctx
        dev, spe = ctx.device, self.steps_per_epoch
        # whole steps: a fractional point is rounded up to the next whole global batch
        first, last = math.ceil(start * spe - 1e-9), math.ceil(stop * spe - 1e-9)
        self.model.train()
        watch, clock = Stopwatch(dev), WaitClock()
        losses = []
        for epoch in range(first // spe, (last + spe - 1) // spe):
            lo, hi = max(first - epoch * spe, 0), min(last - epoch * spe, spe)
            batches = train_batches(self.train_data, cfg.global_batch_size, ctx.seed, epoch,
                                    self.prep, ctx.rank, ctx.world_size, workers=self.workers,
                                    clock=clock, pin_memory=dev.type == "cuda", start=lo,
                                    stop=hi)
            for i, batch in zip(range(lo, hi), batches):
                step = epoch * spe + i
                lr = self.lr(step)
                set_lr(self.optimizer.param_groups, lr)
                batch = tuple(t.to(dev, non_blocking=True) for t in batch)
                result = self.trainer.step([batch], 1)
                losses.append(result.loss)
                ctx.report_step(cfg.global_batch_size, result.loss, at=(step + 1) / spe, lr=lr,
                                input_wait_s=clock.waited)
        if losses:
            elapsed = watch.elapsed()
            ctx.log(f"retinanet: epochs {start:g}-{stop:g}: mean training loss "
                    f"{float(torch.stack(losses).mean()):.3f}, {elapsed:.1f} s, "
                    f"{cfg.global_batch_size * len(losses) / elapsed:.1f} images/s, waiting "
                    f"for input {clock.waited:.2f} s")
        return None if abs(last - stop * spe) < 1e-9 else last / spe

    @torch.no_grad()
    def detections(self) -> list[dict]:
        """This rank's detections of its share of the validation images: per image
        {"image_id", "boxes" (k, 4) float32 numpy XYXY of the original image, "scores",
        "labels"}."""
        from mlperf_fast.metrics.coco_map import detections_by_image
        from mlperf_fast.workloads.retinanet.pipeline import eval_batches

        cfg, ctx = self.config, self.ctx
        dev = ctx.device
        # trainable batch norm (the embedded model) keeps each rank's running statistics:
        # every rank evaluates with rank 0's
        distributed.broadcast_buffers(self.model)
        self.model.eval()
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
        out = []
        for images, ids, sizes, valid in eval_batches(self.val_data, cfg.eval_batch_size,
                                                      self.prep, ctx.rank, ctx.world_size,
                                                      workers=self.workers):
            images = images.to(dev, non_blocking=True)
            if amp is not None:
                with amp:
                    det = self.model.detect(images, sizes)
            else:
                det = self.model.detect(images, sizes)
            out += detections_by_image(det, ids, valid)
        self.model.train()
        return out

    def evaluate(self) -> dict[str, float]:
        from mlperf_fast.metrics.coco_map import coco_map

        everyone = distributed.gather_object(self.detections())  # None but on rank 0
        result = None
        if everyone is not None:  # one process scores, the others wait for its number
            result = coco_map(self._sets[1], [d for part in everyone for d in part])["mAP"]
        return {"mAP": distributed.broadcast_object(result)}


WORKLOAD = RetinaNetWorkload
