"""SSD as a Workload: COCO 2017 (or the embedded detection set in the same layout), the
optimized SSD (model.py), momentum SGD with weight decay on the reference's warmup and step
schedule, box mAP (COCOeval's, through mlperf_fast.metrics.coco_map) on the
validation images every 5 epochs (the embedded config: every epoch).

With several processes (torchrun) the model is data-parallel (DistributedDataParallel): each
process trains its slice of every global batch and detects on its share of the validation
images with rank 0's batch-norm statistics; rank 0 gathers the detections, scores them and
sends every process the score.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mlperf_fast.harness import distributed
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.timing import Stopwatch
from mlperf_fast.harness.workload import DataError, ModelOptimizerState, RunContext, Workload
from mlperf_fast.ops.nms import Detections
from mlperf_fast.optim.schedules import set_lr, ssd_warmup_multistep
from mlperf_fast.workloads.ssd.boxes import decode_batch, default_boxes
from mlperf_fast.workloads.ssd.config import CONFIGS, SSDConfig
from mlperf_fast.workloads.ssd.model import SSD, DetectionLoss

LAYOUT = "coco2017"


class SSDWorkload(ModelOptimizerState, Workload):
    benchmark = "ssd"
    # a v1.0 benchmark: from v2.0 on, "ssd" in the rules and RCPs is RetinaNet
    ruleset = "1.0.0"
    description = "SSD-ResNet34 on COCO 2017 (object detection), box mAP >= 0.23"
    requires = ("torchvision", "pycocotools", "skimage")
    extra = "detection"

    @classmethod
    def configs(cls) -> dict[str, SSDConfig]:
        return CONFIGS

    @classmethod
    def check_data(cls, config: SSDConfig, data_dir: str | None) -> None:
        if data_dir is None:
            if not config.synth_classes:
                raise DataError(f"configuration {config.name} needs --data-dir (COCO 2017: "
                                "train2017/, val2017/ and annotations/instances_*2017.json)")
            return
        from mlperf_fast.data.coco import coco2017_paths

        for split in ("train", "val"):
            images, annotations = coco2017_paths(data_dir, split)
            if not annotations.is_file():
                raise DataError(f"{annotations}: no such file (COCO 2017 annotations)")
            if not images.is_dir():
                raise DataError(f"{images}: no such folder (COCO 2017 {split} images)")
        if config.backbone_weights is not None and not Path(config.backbone_weights).is_file():
            raise DataError(f"{config.backbone_weights}: no such file (the backbone's weights)")

    def __init__(self, config: SSDConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.per_process_batch()  # refuses a batch that does not divide
        self._splits: tuple[Any, Any] | None = None

    # -- data ----------------------------------------------------------------------------
    def embedded_data(self) -> str:
        from mlperf_fast.data.detection_synth import DetectionSynthSettings, embedded_detection_set

        cfg = self.config
        settings = DetectionSynthSettings(
            num_classes=cfg.synth_classes, train_images=cfg.synth_train_images,
            val_images=cfg.synth_val_images, size=(cfg.synth_size, cfg.synth_size))
        return str(embedded_detection_set(settings, LAYOUT, log=self.ctx.log))

    def splits(self) -> tuple[Any, Any]:
        """(train, val) CocoSets. As the reference's COCODetection, images without annotations
        are left out of both (COCOeval scores nothing on an image with neither ground truth nor
        detections, so the mAP is that of the whole split)."""
        if self._splits is None:
            from mlperf_fast.data.coco import coco2017_paths, read_coco

            root = self.data_dir()
            sets = []
            for split in ("train", "val"):
                images, annotations = coco2017_paths(root, split)
                sets.append(read_coco(annotations, images, skip_empty=True, check_files=False))
            train, val = sets
            if train.num_classes + 1 != self.config.num_classes:
                raise DataError(f"{root}: {train.num_classes} classes, the configuration "
                                f"{self.config.name} has {self.config.num_classes - 1} (+ the "
                                "background)")
            self._splits = (train, val)
        return self._splits

    # -- the run -------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        cfg = self.config
        train, val = self.splits()
        return {
            "global_batch_size": cfg.global_batch_size,
            "gradient_accumulation_steps": 1,
            "train_samples": len(train),
            "eval_samples": len(val),
            # batch norm's statistics are over each process's slice (no group batch norm)
            "model_bn_span": self.per_process_batch(),
            "opt_base_learning_rate": cfg.base_lr,
            "opt_weight_decay": cfg.weight_decay,
            "opt_learning_rate_warmup_steps": cfg.warmup_steps(len(train)),
            "opt_learning_rate_warmup_factor": cfg.warmup_factor,
            "opt_learning_rate_decay_boundary_epochs": list(cfg.decay_epochs),
            "max_samples": cfg.crop_iterations,
        }

    def rcp_as_logged(self, rcp_hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """An RCP record's hyperparameters (the reference's arguments: the rate per 32 images,
        the warmup in epochs) as this run's log states them (config.rcp_as_logged)."""
        from mlperf_fast.workloads.ssd.config import rcp_as_logged

        train, _ = self.splits()
        return rcp_as_logged(rcp_hyperparameters, self.config.global_batch_size, len(train))

    def build(self) -> None:
        from mlperf_fast.data.loader import default_workers
        from mlperf_fast.optim.sgd import FusedSGD

        cfg, ctx = self.config, self.ctx
        cuda = ctx.device.type == "cuda"
        self.workers = default_workers()
        self.train_data, self.val_data = self.splits()
        self.steps_per_epoch = cfg.steps_per_epoch(len(self.train_data))
        self.warmup = cfg.warmup_steps(len(self.train_data))
        self.dboxes = default_boxes(cfg.image_size, cfg.feat_sizes, cfg.steps, cfg.scales,
                                    cfg.aspect_ratios, cfg.scale_xy, cfg.scale_wh)
        generator = torch.Generator().manual_seed(ctx.seed)
        model = SSD(cfg.num_classes, cfg.blocks, cfg.widths, cfg.stem, cfg.extras,
                    cfg.num_defaults, generator=generator)
        if cfg.backbone_weights is not None:
            model.load_backbone(cfg.backbone_weights)
        self.model = model.to(ctx.device)
        # the reference's torch.optim.SGD: decay on every parameter, batch norm's included
        self.optimizer = FusedSGD(self.model.parameters(), lr=cfg.base_lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
        loss = ctx.wrap_model(DetectionLoss(self.model, cfg.neg_ratio))
        if self.compile_wanted(self.config.compile):
            loss = torch.compile(loss)
        self.trainer = TrainStep(loss, self.optimizer, amp_dtype=torch.bfloat16 if cuda else None,
                                 params=list(self.model.parameters()),
                                 on_skip=lambda n: ctx.log(
                                     f"ssd: step {n}: a loss was not finite on some rank; the "
                                     "step was skipped on every rank"))
        ctx.log(f"ssd: {len(self.train_data)} training and {len(self.val_data)} validation "
                f"images, {cfg.num_classes - 1} classes, {len(self.dboxes)} default boxes, "
                f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters, "
                f"{self.steps_per_epoch} steps per epoch, {self.warmup} warmup steps, device "
                f"{ctx.device}, input: PyTorch "
                + (f"in {self.workers} worker processes" if self.workers else "on a thread")
                + (", compiled" if self.compile_wanted(self.config.compile) else ""))

    def _lr(self, step: int) -> float:
        cfg = self.config
        return ssd_warmup_multistep(step, cfg.base_lr, self.steps_per_epoch, self.warmup,
                                    cfg.warmup_factor, cfg.decay_epochs, cfg.decay_gamma)

    def train(self, start: float, stop: float) -> None:
        from mlperf_fast.data.loader import WaitClock
        from mlperf_fast.workloads.ssd.pipeline import train_batches

        epoch, cfg, ctx = int(start), self.config, self.ctx
        dev = ctx.device
        self.model.train()
        watch, clock = Stopwatch(dev), WaitClock()
        batches = clock.timed(train_batches(
            self.train_data, cfg, self.dboxes, ctx.seed, epoch, ctx.rank, ctx.world_size,
            workers=self.workers, pin_memory=dev.type == "cuda"))
        losses = []
        for i, batch in enumerate(batches):
            if i >= self.steps_per_epoch:
                break
            lr = self._lr(epoch * self.steps_per_epoch + i)
            set_lr(self.optimizer.param_groups, lr)
            batch = tuple(t.to(dev, non_blocking=True) for t in batch)
            result = self.trainer.step([batch], 1)
            losses.append(result.loss)
            ctx.report_step(cfg.global_batch_size, result.loss,
                            at=epoch + (i + 1) / self.steps_per_epoch, lr=lr,
                            input_wait_s=clock.waited)
        if losses:
            elapsed = watch.elapsed()
            ctx.log(f"ssd: epoch {epoch + 1}: mean training loss "
                    f"{float(torch.stack(losses).mean()):.3f}, {elapsed:.1f} s, "
                    f"{cfg.global_batch_size * len(losses) / elapsed:.0f} images/s, waiting "
                    f"for input {clock.waited:.2f} s ({100 * clock.waited / elapsed:.1f}%)")

    @torch.no_grad()
    def detect(self) -> list[dict]:
        """This process's detections on its share of the validation images, in the stored
        images' pixels: [{"image_id", "boxes" (k, 4) XYXY, "scores" (k,), "labels" (k,)
        contiguous}] as numpy arrays."""
        from mlperf_fast.workloads.ssd.pipeline import eval_batches

        cfg, ctx = self.config, self.ctx
        dev = ctx.device
        # each process's batch-norm statistics followed its own last slice: detect with rank 0's
        # everywhere, the model the reference evaluates (on rank 0 alone)
        distributed.broadcast_buffers(self.model)
        self.model.eval()
        dboxes = self.dboxes.to(dev)
        out = []
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
        try:
            for images, idx, sizes in eval_batches(self.val_data, cfg, ctx.rank, ctx.world_size,
                                                   workers=self.workers):
                images = images.to(dev, non_blocking=True)
                if amp is not None:
                    with amp:
                        ploc, plabel = self.model(images)
                else:
                    ploc, plabel = self.model(images)
                det = decode_batch(ploc, plabel, dboxes, score_threshold=cfg.score_threshold,
                                   iou_threshold=cfg.nms_iou, max_per_class=cfg.max_per_class,
                                   max_output=cfg.max_detections)
                out += coco_detections(det, [self.val_data.images[i].id for i in idx.tolist()],
                                       sizes)
        finally:
            self.model.train()
        return out

    def evaluate(self) -> dict[str, float]:
        from mlperf_fast.metrics.coco_map import coco_map

        everyone = distributed.gather_object(self.detect())  # None but on rank 0
        score = None
        if everyone is not None:  # one process scores, the others wait for its number
            score = float(coco_map(self.val_data, [d for part in everyone for d in part])["mAP"])
        return {"mAP": distributed.broadcast_object(score)}


def coco_detections(det: Detections, image_ids: Sequence[int], sizes: torch.Tensor
                    ) -> list[dict]:
    """A batch's ``Detections`` (boxes.decode_batch: relative ltrb boxes, labels 1..C-1) as
    metrics.coco_map takes them, on the CPU: per image {"image_id", "boxes" (k, 4) float32
    numpy XYXY in the pixels of its stored image, whose (H, W) is ``sizes[j]``, "scores" (k,),
    "labels" (k,) int64 contiguous 0..C-2}."""
    from mlperf_fast.metrics.coco_map import detections_by_image

    scale = sizes[:, [1, 0, 1, 0]].to(det.boxes.device)[:, None, :]  # (W, H, W, H)
    return detections_by_image(det._replace(boxes=det.boxes.float() * scale,
                                            labels=det.labels - 1), image_ids)


WORKLOAD = SSDWorkload
