"""ResNet-50's configurations: the closed division of MLPerf Training v2.1 (ImageNet) and the
embedded one (generated JPEG classes, a small ResNet), every value with its source.

Sources, as read:

- [ref] mlcommons/training ``image_classification/tensorflow2`` (retired since; the v2.1
  reference): ``resnet_model.py`` (the model, see reference.py), ``lars_optimizer.py`` (trust
  ratio ``eeta ||w|| / (||g|| + wd ||w|| + eps)``, 1 where a norm is 0; momentum on
  ``lr * trust * (g + wd w)``), ``lars_util.py`` (``PolynomialDecayWithWarmup``:
  optim/schedules.py ``resnet_poly_warmup``), ``common.py`` (``skip_list=['batch_normalization',
  'bias', 'bn']``: batch norm and biases get neither adaptation nor decay; ``target_accuracy``
  0.759; ``train_epochs`` rounded up to whole evaluation blocks after the offset),
  ``resnet_runnable.py`` (label-smoothed categorical cross-entropy averaged over the global batch;
  no L2 term in the loss with LARS, ``single_l2_loss_op``: ``wd * 2 * sum(l2_loss)`` over the
  non-batch-norm variables with SGD, i.e. a decay of ``2 wd w`` in the gradient), and the README's
  run command (``--epochs_between_evals=4 --eval_offset_epochs=2 --label_smoothing=0.1
  --lars_epsilon=0 --momentum=0.9``).
- [rules] mlperf-logging 2.1.0 ``compliance_checker/training_2.1.0/closed_resnet.yaml`` (the
  161 weights_initialization tensors, ``opt_name`` in {sgd, lars}, ``eval_accuracy >= 0.759``,
  ``model_bn_span``), ``closed_resnet_lars.yaml`` (``lars_opt_end_learning_rate == 1e-4``,
  ``lars_opt_learning_rate_decay_poly_power == 2``, ``lars_epsilon == 0``, the weight decay a
  power-of-two multiple of 1e-4) and ``closed_resnet_sgd.yaml`` (the same keys with ``sgd_``,
  the base rate a multiple of 0.001).
- [rcp] mlperf-logging 2.1.0 ``rcp_checker/training_2.1.0/rcps_resnet.json``,
  ``resnet_ref_3264``: batch 3,264, LARS, lr 10.5, 2 warmup epochs, momentum 0.9, weight decay
  5e-5, 14,523 decay steps, bn span 204; it converges in 34-36 epochs (mean of 15 runs: 35.2).
- [data] ImageNet 2012: 1,281,167 training and 50,000 validation images, 1,000 classes.

Note on epsilon: the reference's LARSOptimizer sets ``self.epsilon = epsilon or
backend_config.epsilon()``, so the logged ``lars_epsilon=0`` runs with Keras' 1e-7 in the
denominator; against ||g|| + wd ||w|| of a ResNet layer (>= 1e-3) that is below float32's
resolution, and the rules ask for 0, which is what this package uses.
"""
from __future__ import annotations

from dataclasses import dataclass

from mlperf_fast.harness.workload import Metric, Schedule, WorkloadConfig

IMAGENET_TRAIN = 1_281_167  # [data]
IMAGENET_VAL = 50_000  # [data]
OPTIMIZERS = ("lars", "sgd")


@dataclass(frozen=True, kw_only=True)
class ResNetConfig(WorkloadConfig):
    """One ResNet run. The learning rate follows ``resnet_poly_warmup`` over ``train_steps``
    (see :meth:`train_steps`)."""

    name: str = "closed"
    # -- model [ref] resnet_model.py
    num_classes: int = 1000
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: int = 64
    expansion: int = 4
    image_size: int = 224  # training crop and evaluation crop
    # -- optimizer [rcp] resnet_ref_3264; [rules] closed_resnet_lars.yaml
    optimizer: str = "lars"
    lr: float = 10.5
    end_lr: float = 1e-4
    warmup_epochs: float = 2.0
    #: the polynomial decay's length in steps as the RCP states it (the reference's
    #: ``train_steps - warmup_steps + 1``); None: to the end of ``train_epochs``
    decay_steps: int | None = 14523
    train_epochs: int = 42
    momentum: float = 0.9
    weight_decay: float = 5e-5
    lars_eta: float = 0.001  # [ref] LARSOptimizer(eeta=0.001)
    lars_epsilon: float = 0.0  # [rules] lars_epsilon == 0 (see the note above)
    label_smoothing: float = 0.1  # [ref] --label_smoothing=0.1
    # -- data
    train_samples: int = IMAGENET_TRAIN
    eval_samples: int = IMAGENET_VAL
    eval_batch_size: int = 500
    # -- the embedded data set (used only without a data dir): see synth.py
    synth_classes: int = 0  # 0: not generated (the closed config needs the real data)
    synth_train_per_class: int = 0
    synth_val_per_class: int = 0
    #: compile the loss module with torch.compile: "auto" (on CUDA), "on", "off"
    compile: str = "auto"
    #: the input pipeline: DALI (dali_pipeline.py) where "auto" (on CUDA, when DALI is
    #: installed) or "on" (required; on a CPU device DALI's CPU operators), else PyTorch's
    dali: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be 'auto', 'on' or 'off', got {self.compile!r}")
        if self.dali not in ("auto", "on", "off"):
            raise ValueError(f"dali must be 'auto', 'on' or 'off', got {self.dali!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 (the net divides it by 32), got "
                             f"{self.image_size}")

    def steps_per_epoch(self, train_samples: int) -> int:
        """Whole global batches per epoch: the reference drops the remainder
        (``drop_remainder=True``)."""
        steps = train_samples // self.global_batch_size
        if steps < 1:
            raise ValueError(f"{train_samples} training images: fewer than one global batch of "
                             f"{self.global_batch_size}")
        return steps

    def train_steps(self, steps_per_epoch: int) -> int:
        """The schedule's ``train_steps``: from the RCP's decay steps when given (``decay =
        train_steps - warmup_steps + 1``), else the reference's ``steps_per_epoch *
        train_epochs``."""
        if self.decay_steps is None:
            return steps_per_epoch * self.train_epochs
        return round(self.warmup_epochs * steps_per_epoch) + self.decay_steps - 1


CLOSED = ResNetConfig(
    name="closed",
    division="closed",
    targets=(Metric("top1", 0.759),),
    # [ref] --epochs_between_evals=4 --eval_offset_epochs=2: evaluations after epochs 2, 6,
    # 10, ...; the budget: 39.05 epochs of schedule rounded up to the next evaluation (42)
    schedule=Schedule(unit="epoch", every=4, first=2, budget=42),
    global_batch_size=3264,  # [rcp] resnet_ref_3264
)

#: The SGD variant the rules allow (closed_resnet_sgd.yaml): the same poly schedule, momentum
#: SGD with the reference's L2 term as weight decay 2 * wd on the non-batch-norm weights. No v2.1
#: RCP uses SGD, so these are the LARS RCP's values with the base rate on the rules' 0.001 grid.
CLOSED_SGD = CLOSED.replace(name="closed_sgd", optimizer="sgd", lr=10.5, weight_decay=5e-5)

EMBEDDED = ResNetConfig(
    name="embedded",
    division="open",
    # Measured (seed 1, 24 epochs of schedule): top-1 0.914 after 13 epochs, levelling off at
    # 0.96; a multinomial logistic regression on the evaluation view's pixels (32 x 32 RGB,
    # standardized, C in {0.001, 0.01, 0.1}) scores 0.115-0.128 on the same validation images
    # (chance: 0.10). Target 0.90, with a 20-epoch schedule and budget.
    targets=(Metric("top1", 0.90),),
    schedule=Schedule(unit="epoch", every=1, budget=20),
    global_batch_size=128,
    blocks=(1, 1, 1, 1),
    widths=(16, 32, 64, 128),
    stem=16,
    num_classes=10,
    image_size=64,
    lr=4.0,
    warmup_epochs=1.0,
    decay_steps=None,
    train_epochs=20,
    weight_decay=5e-5,
    eval_batch_size=250,
    train_samples=0,  # counted from the generated files
    eval_samples=0,
    synth_classes=10,
    synth_train_per_class=600,
    synth_val_per_class=100,
)

CONFIGS: dict[str, ResNetConfig] = {"closed": CLOSED, "closed_sgd": CLOSED_SGD,
                                     "embedded": EMBEDDED}
