"""RNN-T configurations: the closed division of MLPerf Training 2.1, and the embedded one.

Every closed value is the MLCommons reference's (mlcommons/training, rnn_speech_recognition/pytorch,
unchanged from the v1.0 update through the 2.1 round until the benchmark was retired). Sources,
relative to that folder:
  [yaml]  configs/baseline_v3-1023sp.yaml          features, augmentation, model sizes
  [sh]    scripts/train.sh                          optimizer, schedule, batch, EMA, init scale
  [train] train.py                                  LAMB eps (opt_eps), target default, logging
  [rnn]   common/rnn.py                             forget-gate bias and init scaling
  [pipe]  common/data/dali/pipeline.py              preemphasis 0.97, silence trim -60 dB,
                                                    log cutoff 1e-20, per-feature normalization
  [dec]   rnnt/decoder.py                           30 symbols per step (greedy)
  [spm]   scripts/create_sentencepieces.sh          unigram, 1023 pieces, coverage 1.0
  [rules] mlperf-logging compliance_checker/training_2.1.0/closed_rnnt.yaml (eval_samples 2703,
          max 300 symbols, target 0.058, LAMB eps 1e-9, weight decay 1e-3, min LR 1e-5)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mlperf_fast.harness.workload import Metric, Schedule, WorkloadConfig


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # [yaml] sample_rate
    window_size: float = 0.02  # [yaml] window_size (s): 320 samples
    window_stride: float = 0.01  # [yaml] window_stride (s): 160 samples
    n_fft: int = 512  # [yaml] n_fft
    n_filt: int = 80  # [yaml] n_filt
    dither: float = 1e-5  # [yaml] dither (train and eval)
    preemph: float = 0.97  # [pipe] preemph_coeff
    log_floor: float = 1e-20  # [pipe] ToDecibels cutoff_db = ln(1e-20)
    trim_silence_db: float | None = -60.0  # [yaml] trim_silence: true; [pipe] threshold -60
    frame_stacking: int = 3  # [yaml] frame_splicing.frame_stacking
    frame_subsampling: int = 3  # [yaml] frame_splicing.frame_subsampling

    @property
    def win_length(self) -> int:
        return int(self.sample_rate * self.window_size)

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate * self.window_stride)

    @property
    def in_feats(self) -> int:
        return self.n_filt * self.frame_stacking  # [yaml] in_feats: 240


@dataclass(frozen=True)
class AugmentConfig:
    speed_min: float = 0.85  # [yaml] speed_perturbation.min_rate
    speed_max: float = 1.15  # [yaml] speed_perturbation.max_rate
    speed_p: float = 1.0  # [yaml] speed_perturbation.p
    freq_masks: int = 2  # [yaml] spec_augment.freq_masks
    min_freq: int = 0  # [yaml] min_freq
    max_freq: int = 20  # [yaml] max_freq
    time_masks: int = 10  # [yaml] time_masks
    min_time: int = 0  # [yaml] min_time
    max_time: float = 0.03  # [yaml] max_time (fraction of the utterance's frames)


@dataclass(frozen=True)
class ModelConfig:
    enc_n_hid: int = 1024  # [yaml]
    enc_pre_rnn_layers: int = 2  # [yaml]
    enc_post_rnn_layers: int = 3  # [yaml]
    enc_stack_time_factor: int = 2  # [yaml]
    enc_dropout: float = 0.1  # [yaml]
    pred_n_hid: int = 512  # [yaml]
    pred_rnn_layers: int = 2  # [yaml]
    pred_dropout: float = 0.3  # [yaml]
    joint_n_hid: int = 512  # [yaml]
    joint_dropout: float = 0.3  # [yaml]
    forget_gate_bias: float = 1.0  # [yaml]; [rnn] set on bias_ih, bias_hh's forget part zeroed
    hidden_hidden_bias_scale: float = 0.0  # [rnn] default of RNNT/LSTM (not set by the yaml)
    weights_init_scale: float = 0.5  # [sh] WEIGHTS_INIT_SCALE; [rnn] scales every LSTM tensor


@dataclass(frozen=True)
class OptimConfig:
    micro_batch: int = 16  # [sh] 1024 / 8 GPUs / GRAD_ACCUMULATION_STEPS 8: per-GPU forward batch
    lr: float = 4e-3  # [sh] LEARNING_RATE
    min_lr: float = 1e-5  # [sh] --min_lr; [rules]
    lr_exp_gamma: float = 0.935  # [sh] LR_EXP_GAMMA
    warmup_epochs: int = 6  # [sh] WARMUP_EPOCHS
    hold_epochs: int = 40  # [sh] HOLD_EPOCHS
    beta1: float = 0.9  # [sh] BETA1
    beta2: float = 0.999  # [sh] BETA2
    eps: float = 1e-9  # [train] opt_eps; [rules]
    weight_decay: float = 1e-3  # [sh] --weight_decay; [rules]
    clip_norm: float = 1.0  # [sh] CLIP_NORM (LAMB's max_grad_norm)
    ema: float = 0.999  # [sh] EMA

    def lamb_kwargs(self) -> dict:
        """The arguments of a LAMB optimizer (FusedLAMB, or the reference's) for this config."""
        return dict(lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps,
                    weight_decay=self.weight_decay, max_grad_norm=self.clip_norm)


@dataclass(frozen=True)
class DataConfig:
    #: LibriSpeech splits, as folders of the distribution (or the reference's *-wav.json manifests)
    train_splits: tuple[str, ...] = ("train-clean-100", "train-clean-360", "train-other-500")
    eval_split: str = "dev-clean"  # [sh] VAL_MANIFESTS
    max_duration: float = 16.7  # [yaml] input_train.audio_dataset.max_duration (s)
    num_buckets: int = 1  # [sh] NUM_BUCKETS=1 (the bucketing sampler with one bucket)
    vocab_size: int = 1023  # [spm] vocab_size; the blank is one more, at index vocab_size
    eval_batch: int = 2  # [sh] VAL_BATCH_SIZE (greedy decoding does not depend on it)
    #: a sentencepiece model file; None: trained on the training transcripts as [spm] does
    sentencepiece_model: str | None = None
    #: the embedded corpus (None for real data): its generator's settings, see synth.py
    embedded: EmbeddedCorpus | None = None


@dataclass(frozen=True)
class EmbeddedCorpus:
    """A speech corpus spoken by libespeak-ng, in LibriSpeech's layout (see data.py)."""

    train_utterances: int = 2400
    eval_utterances: int = 240
    train_voices: int = 24
    eval_voices: int = 6
    seed: int = 20261123
    version: int = 1  # bump when the generator's output changes: it is part of the cache key


@dataclass(frozen=True, kw_only=True)
class RNNTConfig(WorkloadConfig):
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    max_symbols_per_step: int = 30  # [dec] max_symbols_per_step default
    max_symbol_per_sample: int = 300  # [sh] MAX_SYMBOL_PER_SAMPLE; [rules]
    eval_samples: int | None = 2703  # [rules] dev-clean's utterances
    #: intra-op threads of a CPU run (None: torch's default). One thread for the model and one
    #: for the input pipeline beat two shared threads on small LSTMs, where OpenMP's
    #: synchronization costs more than the split work saves.
    cpu_threads: int | None = 1
    #: processes computing training features on the CPU (0: one thread of the training process,
    #: None: one per core beyond the first two, at most 12). Without DALI a GPU run needs several:
    #: one thread computes the embedded corpus's features several times slower than an H200 trains.
    input_workers: int | None = None


#: The reference's own defaults (scripts/train.sh). No RCP was produced with them: a closed
#: result must follow one of the RCP configurations below.
REFERENCE_DEFAULTS = RNNTConfig(
    name="reference_defaults", division="closed",
    targets=(Metric("WER", 0.058, higher_is_better=False),),  # [train] --target; [rules]
    schedule=Schedule(unit="epoch", every=1, budget=100),  # evaluated every epoch; [sh] EPOCHS
    global_batch_size=1024,  # [sh] GLOBAL_BATCH_SIZE
)

#: [rcp] mlperf-logging rcp_checker/training_2.1.0/rcps_rnnt.json: the hyperparameters each
#: reference convergence point was produced with, by global batch size: (lr, hold epochs, warmup
#: epochs, decay gamma, beta2, EMA, weights init scale, gradient accumulation steps on 8 GPUs).
RCP_HYPERPARAMETERS = {
    512: (0.0062, 11, 1, 0.915, 0.9985, 0.994, 0.45, 2),  # rnn_t_ref_0.5k
    1024: (0.007447, 17, 3, 0.9037, 0.999, 0.992, 0.5, 4),  # rnn_t_ref_1k
    1536: (0.0072, 26, 5, 0.92, 0.999, 0.995, 0.5, 4),  # rnn_t_ref_1.5k
    2048: (0.007, 33, 6, 0.939, 0.999, 0.995, 0.5, 16),  # rnn_t_ref_2k
    3072: (0.009, 40, 9, 0.94, 0.995, 0.985, 0.35, 24),  # rnn_t_ref_3k
    6144: (0.014, 40, 16, 0.97, 0.98, 0.96, 0.5, 4),  # rnn_t_ref_6k (beta1 0.82)
}


def rcp_config(global_batch: int, gpus: int = 8) -> RNNTConfig:
    """The closed configuration at the RCP of ``global_batch``: its hyperparameters, and the
    per-GPU micro-batch that gives the RCP's accumulation steps on ``gpus`` GPUs."""
    lr, hold, warmup, gamma, beta2, ema, scale, accum = RCP_HYPERPARAMETERS[global_batch]
    return REFERENCE_DEFAULTS.replace(
        name=f"closed_bs{global_batch}", global_batch_size=global_batch,
        optim=OptimConfig(micro_batch=max(1, global_batch // gpus // accum), lr=lr,
                          hold_epochs=hold, warmup_epochs=warmup, lr_exp_gamma=gamma,
                          beta1=0.82 if global_batch == 6144 else 0.9, beta2=beta2, ema=ema),
        model=ModelConfig(weights_init_scale=scale))


#: The default closed configuration: the RCP at global batch 1024 (44.5 epochs on average).
CLOSED = rcp_config(1024).replace(name="closed")

#: A small RNN-T on the embedded corpus, trainable to its target on a 2-core CPU in minutes. The
#: pipeline is the closed one (features, augmentation, dropout, LAMB with warmup/hold/exponential
#: decay, EMA, greedy decoding); sizes, vocabulary, learning rate and schedule are scaled down to
#: the corpus.
EMBEDDED = RNNTConfig(
    name="embedded",
    division="open",
    # The goal on the held-out split (unseen sentences and voices), set from measured runs (README,
    # "Embedded run"): the loss sits at the sentences' language-model level (~15 nats) for some
    # epochs, then the acoustic phase takes WER from ~0.8 to below 0.15 in 3 to 4 epochs.
    targets=(Metric("WER", 0.15, higher_is_better=False),),
    schedule=Schedule(unit="epoch", every=1, budget=30),
    global_batch_size=16,
    model=ModelConfig(enc_n_hid=256, enc_pre_rnn_layers=1, enc_post_rnn_layers=1,
                      pred_n_hid=128, pred_rnn_layers=1, joint_n_hid=256),
    # LAMB's step is lr times each tensor's norm. Held at 1.5e-2 the loss climbs back from epoch
    # 4 and WER returns to 1.0; held at 5e-3 to 7e-3 the acoustic phase starts in epoch 9 or 10;
    # 1e-2 for three epochs, then 0.8 per epoch, reaches it first (README).
    optim=OptimConfig(micro_batch=16, lr=1e-2, warmup_epochs=1, hold_epochs=3, lr_exp_gamma=0.8,
                      ema=0.99),
    augment=AugmentConfig(freq_masks=1, max_freq=15, time_masks=4),
    data=DataConfig(train_splits=("train-synth",), eval_split="dev-synth", vocab_size=128,
                    num_buckets=4, eval_batch=64, embedded=EmbeddedCorpus()),
    eval_samples=None,
)

CONFIGS: dict[str, RNNTConfig] = {
    "closed": CLOSED, "embedded": EMBEDDED, "reference_defaults": REFERENCE_DEFAULTS,
    **{f"closed_bs{b}": rcp_config(b) for b in RCP_HYPERPARAMETERS},
}
