"""BERT's weights under other implementations' names, and a checkpoint loader that refuses what
does not fit.

Our names (reference.py and model.py share them) are NVIDIA's and Hugging Face's. What differs:

- Hugging Face ``transformers.BertForPreTraining``: the state dict also lists the tied decoder,
  ``cls.predictions.decoder.weight`` (the word-embedding table) and
  ``cls.predictions.decoder.bias`` (``cls.predictions.bias``). Old versions also saved the
  ``bert.embeddings.position_ids`` (and ``token_type_ids``) buffers: constants, dropped.
- NVIDIA's converted checkpoint (training_results_v2.1, NVIDIA/benchmarks/bert/implementations/
  pytorch-22.09: convert_tf_checkpoint.py saves ``{"model": model.state_dict()}`` of its
  modeling.py ``BertForPretraining``): the same names plus ``cls.predictions.decoder.weight``
  (tied; its decoder has no bias), and the vocabulary padded to a multiple of 8 (30522 ->
  30528: ``word_embeddings.weight`` and ``cls.predictions.bias``; the padded rows start at zero,
  load_tf_weights_in_bert). NVIDIA's run_pretraining.py renames at load time for its fused
  attention (``multi_head_attention.q_weight``, ...) and its segmented model
  (``bert_model_segment.``, ``heads_only_segment.``); the file itself holds the plain names.

- The reference's TensorFlow checkpoint (the MLPerf phase-1 ``model.ckpt-28252``, a V2 tensor
  bundle read by mlperf_fast.data.tf_checkpoint without TensorFlow): the variable names that
  mlperf-logging's closed_bert.yaml lists (``bert/encoder/layer_0/attention/self/query/kernel``,
  ...; ``layer_N`` -> ``layer.N``, ``kernel`` and ``gamma`` -> ``weight``, ``beta`` ->
  ``bias``, the embedding tables -> ``....weight``, ``cls/predictions/output_bias`` ->
  ``cls.predictions.bias``), every ``kernel`` stored (in, out) and transposed to PyTorch's (out,
  in); ``cls/seq_relationship/output_weights`` is already (2, hidden) (run_pretraining.py
  multiplies by it with ``transpose_b=True``). The reference's LAMB slots (optimization.py:
  ``name + "/adam_m"``, ``"/adam_v"``) and ``global_step`` are left out. ``python3 -m
  mlperf_fast.workloads.bert.weights convert --tf PREFIX --out model.pt`` converts it once.

Everything is a plain ``dict[str, Tensor]``; nothing here imports transformers or TensorFlow.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mlperf_fast.data.tf_checkpoint import INDEX_SUFFIX, read_index, read_tf_checkpoint
from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.bert.reference import BertModelConfig, ReferenceBertForPreTraining

WORD = "bert.embeddings.word_embeddings.weight"
BIAS = "cls.predictions.bias"
DECODER_WEIGHT = "cls.predictions.decoder.weight"
DECODER_BIAS = "cls.predictions.decoder.bias"
#: buffers older transformers versions saved in the state dict: constants, not weights
HF_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
FORMATS = ("ours", "hf", "nvidia", "tf")
#: NVIDIA pads the vocabulary to a multiple of this (modeling.py BertPreTrainedModel.__init__)
NVIDIA_VOCAB_MULTIPLE = 8


#: TensorFlow variables that are not the model's: the reference's LAMB slots (optimization.py
#: ``param_name + "/adam_m"``, ``"/adam_v"``), as suffixes, and whole names: the estimator's step,
#: and the object graph a TF2 ``tf.train.Checkpoint`` adds
TF_IGNORED_SUFFIXES = ("/adam_m", "/adam_v")
TF_IGNORED_NAMES = ("global_step", "_CHECKPOINTABLE_OBJECT_GRAPH")
#: the last part of a TensorFlow variable's name -> ours (tf.layers.dense, layer_norm)
_TF_LEAVES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}
#: the TensorFlow names that the generic rule does not give
_TF_SPECIAL = {
    "bert/embeddings/word_embeddings": WORD,
    "bert/embeddings/position_embeddings": "bert.embeddings.position_embeddings.weight",
    "bert/embeddings/token_type_embeddings": "bert.embeddings.token_type_embeddings.weight",
    "cls/predictions/output_bias": BIAS,
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
}
_TF_LAYER = re.compile(r"layer_(\d+)")


class CheckpointMismatch(ValueError):
    """A checkpoint whose tensors do not match the model's by name and shape."""


def _tied(state: Mapping[str, torch.Tensor], name: str, source: str) -> None:
    """Refuse a decoder tensor that is not its tied source: the model cannot represent it."""
    # a missing source is reported with the other differences by load_checkpoint
    if name in state and source in state and not torch.equal(state[name], state[source]):
        raise CheckpointMismatch(f"{name} differs from {source}: this BERT ties them, so an "
                                 "untied checkpoint cannot be loaded")


def to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict as ``transformers.BertForPreTraining``'s (strict ``load_state_dict``)."""
    out = dict(state)
    out[DECODER_WEIGHT] = state[WORD]
    out[DECODER_BIAS] = state[BIAS]
    return out


def from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``transformers.BertForPreTraining`` state dict under our names (tied entries checked,
    then dropped; old constant buffers dropped)."""
    _tied(state, DECODER_WEIGHT, WORD)
    _tied(state, DECODER_BIAS, BIAS)
    drop = {DECODER_WEIGHT, DECODER_BIAS, *HF_BUFFERS}
    return {k: v for k, v in state.items() if k not in drop}


def _padded(n: int) -> int:
    return -(-n // NVIDIA_VOCAB_MULTIPLE) * NVIDIA_VOCAB_MULTIPLE


def to_nvidia(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict as NVIDIA's converted checkpoint holds it (the ``"model"`` entry): the tied
    decoder listed, the vocabulary padded with zero rows to a multiple of 8."""
    out = dict(state)
    vocab = state[WORD].shape[0]
    extra = _padded(vocab) - vocab
    if extra:
        word, bias = state[WORD], state[BIAS]
        out[WORD] = torch.cat([word, word.new_zeros(extra, word.shape[1])])
        out[BIAS] = torch.cat([bias, bias.new_zeros(extra)])
    out[DECODER_WEIGHT] = out[WORD]
    return out


def from_nvidia(state: Mapping[str, torch.Tensor],
                vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """NVIDIA's converted checkpoint (the file's dict or its ``"model"`` entry) under our names.

    ``vocab_size``: the model's vocabulary. Where the checkpoint's is that padded to a multiple
    of 8, the padded rows are cut, and must be zero: non-zero rows (a checkpoint NVIDIA trained
    on) took part in its softmax, so cutting them would change the model; load such a one into
    a model of the padded vocabulary instead. None keeps the checkpoint's size."""
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    _tied(state, DECODER_WEIGHT, WORD)
    out = {k: v for k, v in state.items() if k != DECODER_WEIGHT}
    have = out[WORD].shape[0] if WORD in out else None
    if vocab_size is not None and have is not None and have != vocab_size:
        if have != _padded(vocab_size):
            raise CheckpointMismatch(f"{WORD} has {have} rows; a model of vocabulary "
                                     f"{vocab_size} takes {vocab_size} (or {_padded(vocab_size)}"
                                     " padded)")
        for name in (WORD, BIAS):
            if name in out:
                rest = out[name][vocab_size:]
                if rest.count_nonzero():
                    raise CheckpointMismatch(
                        f"{name}: the padded rows {vocab_size}..{have - 1} are not zero (a "
                        f"trained checkpoint); load it into a model of vocab_size={have}")
                out[name] = out[name][:vocab_size]
    return out


def tf_ignored(name: str, ignore: Collection[str] = ()) -> bool:
    """Whether the TensorFlow variable ``name`` is left out of the model's state: an optimizer
    slot or the step (TF_IGNORED_SUFFIXES, TF_IGNORED_NAMES), or one of ``ignore`` (whole names,
    or suffixes where they start with ``/``)."""
    suffixes = TF_IGNORED_SUFFIXES + tuple(i for i in ignore if i.startswith("/"))
    return name in TF_IGNORED_NAMES or name in ignore or name.endswith(suffixes)


def tf_name(name: str) -> tuple[str, bool] | None:
    """Our name for the reference's TensorFlow variable ``name`` and whether its value is
    transposed (a dense layer's ``kernel``); None where ``name`` follows none of the rules."""
    if name in _TF_SPECIAL:
        return _TF_SPECIAL[name], False
    parts = name.split("/")
    if len(parts) < 2 or parts[0] not in ("bert", "cls") or parts[-1] not in _TF_LEAVES:
        return None
    parts = [f"layer.{m.group(1)}" if (m := _TF_LAYER.fullmatch(p)) else p for p in parts]
    return ".".join(parts[:-1] + [_TF_LEAVES[parts[-1]]]), parts[-1] == "kernel"


def from_tf(arrays: Mapping[str, np.ndarray | torch.Tensor],
            ignore: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """The reference's TensorFlow variables (``{name: array}``, as
    :func:`mlperf_fast.data.tf_checkpoint.read_tf_checkpoint` returns them) as our state dict:
    renamed by :func:`tf_name`, kernels transposed to (out, in), optimizer slots and the step
    (:func:`tf_ignored`, plus ``ignore``) left out. A name that follows no rule is kept as it
    is, so that :func:`load_checkpoint` lists it among the unexpected tensors; two names for
    one tensor, a kernel that is not a matrix, or a value that is not numeric raise
    CheckpointMismatch."""
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for name, value in arrays.items():
        if tf_ignored(name, ignore):
            continue
        mapped = tf_name(name)
        ours, transpose = mapped if mapped is not None else (name, False)
        if ours in out:
            raise CheckpointMismatch(f"{name} and {source[ours]} both map to {ours}")
        t = value if isinstance(value, torch.Tensor) else _as_tensor(name, value)
        if transpose:
            if t.dim() != 2:
                raise CheckpointMismatch(f"{name} is a kernel of shape {tuple(t.shape)}, not a "
                                         "(in, out) matrix")
            t = t.t().contiguous()
        out[ours], source[ours] = t, name
    return out


def _as_tensor(name: str, value: np.ndarray) -> torch.Tensor:
    a = np.asarray(value)
    if a.dtype.kind not in "biufc":
        raise CheckpointMismatch(f"{name} holds {a.dtype} values, not numbers: not a weight")
    return torch.from_numpy(np.ascontiguousarray(a))


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a TensorFlow checkpoint: its ``.index``, a data file, a prefix
    beside an ``.index`` file, or a folder."""
    p = os.fspath(path)
    return (p.endswith(INDEX_SUFFIX) or re.search(r"\.data-\d{5}-of-\d{5}$", p) is not None
            or os.path.isdir(p) or (not os.path.isfile(p) and os.path.isfile(p + INDEX_SUFFIX)))


def read_tf(path: str | os.PathLike, ignore: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """The TensorFlow checkpoint at ``path`` (see :func:`is_tf_checkpoint`) as our state dict
    (:func:`from_tf`); the ignored variables' bytes are not read (the optimizer slots are two
    thirds of the phase-1 checkpoint). DataError names a missing or corrupt file."""
    return from_tf(read_tf_checkpoint(path, lambda n: not tf_ignored(n, ignore)), ignore)


def detect_format(state: Mapping[str, object]) -> str:
    """Which of FORMATS a state dict is in: NVIDIA's file wraps it in ``"model"`` and lists the
    decoder's weight alone; Hugging Face's lists the decoder's bias too; TensorFlow's names are
    paths (``bert/embeddings/word_embeddings``)."""
    if "model" in state and isinstance(state["model"], Mapping):
        return "nvidia"
    if any(isinstance(k, str) and "/" in k for k in state):
        return "tf"
    if DECODER_BIAS in state:
        return "hf"
    if DECODER_WEIGHT in state:
        return "nvidia"
    return "ours"


def mismatches(state: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]
               ) -> list[str]:
    """Every difference by name and shape between ``state`` and the model's ``want``, one line
    each: missing tensors, unexpected ones, then shape differences, in the model's order."""
    lines = [f"missing: {k} {tuple(v.shape)}" for k, v in want.items() if k not in state]
    lines += [f"unexpected: {k} {tuple(getattr(v, 'shape', ()))}" for k, v in state.items()
              if k not in want]
    for k, v in want.items():
        got = state.get(k)
        if got is not None:
            if not isinstance(got, torch.Tensor):
                lines.append(f"not a tensor: {k} ({type(got).__name__})")
            elif tuple(got.shape) != tuple(v.shape):
                lines.append(f"shape: {k} is {tuple(got.shape)} in the checkpoint, "
                             f"{tuple(v.shape)} in the model")
    return lines


def to_ours(source: str | os.PathLike | Mapping[str, torch.Tensor], fmt: str = "auto",
            vocab_size: int | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """A checkpoint in any of FORMATS (a path to a ``torch.save``d dict or to a TensorFlow
    checkpoint, or a state dict) under our names, and the format it was in (``fmt="auto"``:
    :func:`is_tf_checkpoint` for a path, then :func:`detect_format`). ``vocab_size``: the
    model's, for NVIDIA's padded vocabulary (:func:`from_nvidia`)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")
    if isinstance(source, (str, os.PathLike)):
        if fmt == "tf" or (fmt == "auto" and is_tf_checkpoint(source)):
            return read_tf(source), "tf"
        try:
            source = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:  # any failure to read it: the error names the file
            raise CheckpointMismatch(f"checkpoint {os.fspath(source)} cannot be read "
                                     f"({type(e).__name__}: {e})") from e
    if not isinstance(source, Mapping):
        raise CheckpointMismatch(f"a checkpoint must be a dict of tensors, got "
                                 f"{type(source).__name__}")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "hf":
        return from_hf(source), fmt
    if fmt == "nvidia":
        return from_nvidia(source, vocab_size), fmt
    if fmt == "tf":
        if source and not any(isinstance(k, str) and "/" in k for k in source):
            raise CheckpointMismatch(f"fmt='tf', but none of the {len(source)} names is a "
                                     "TensorFlow variable's (bert/embeddings/word_embeddings, "
                                     "...)")
        return from_tf(source), fmt
    return dict(source), fmt


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor],
                    fmt: str = "auto", show: int = 10) -> str:
    """Load a checkpoint (a path to a ``torch.save``d dict or to a TensorFlow checkpoint, or a
    state dict) in any of FORMATS into ``model`` (reference.py's or model.py's BERT), after
    checking every tensor's name and shape: CheckpointMismatch lists the first ``show``
    differences and loads nothing. Returns the format read (:func:`to_ours`). A TensorFlow
    checkpoint that is missing or corrupt raises DataError naming the file."""
    config = getattr(model, "config", None)
    vocab = config.vocab_size if isinstance(config, BertModelConfig) else None
    state, fmt = to_ours(source, fmt, vocab)
    problems = mismatches(state, model.state_dict())
    if problems:
        head = "\n  ".join(problems[:show])
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise CheckpointMismatch(f"the {fmt} checkpoint does not match the model "
                                 f"({len(problems)} differences):\n  {head}{more}")
    model.load_state_dict(state, strict=True)
    return fmt


# -- the command --------------------------------------------------------------------------------
def tf_config(state: Mapping[str, torch.Tensor]) -> BertModelConfig:
    """The shape of the BERT whose state (our names) ``state`` is, read off its tensors (the
    heads, which no shape shows, as 1): to check a converted checkpoint is whole."""
    layers = {int(m.group(1)) for k in state
              if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))}
    try:
        vocab, hidden = state[WORD].shape
        return BertModelConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=max(layers) + 1,
            num_attention_heads=1,
            intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
            max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
            type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0])
    except KeyError as e:
        raise CheckpointMismatch(f"not a whole BERT: it has no {e.args[0]}") from e
    except ValueError as e:  # no layers, or shapes no BERT has
        raise CheckpointMismatch(f"not a whole BERT ({e})") from e


def convert(prefix: str, out: str, ignore: Collection[str] = ()) -> str:
    """Convert the TensorFlow checkpoint ``prefix`` into our state dict, check it is a whole
    BERT (every tensor of :func:`tf_config`'s model by name and shape, nothing else), and
    ``torch.save`` it to ``out`` (through a temporary file). Returns a summary line."""
    try:
        state = read_tf(prefix, ignore)
        config = tf_config(state)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{prefix}: {e}") from e
    with torch.device("meta"):  # the shapes only: no memory, no initialization
        want = ReferenceBertForPreTraining(config).state_dict()
    problems = mismatches(state, want)
    if problems:
        raise CheckpointMismatch(f"{prefix} does not convert to a whole BERT "
                                 f"({len(problems)} differences):\n  " + "\n  ".join(problems[:10]))
    _, entries = read_index(prefix)
    skipped = sorted(n for n in entries if tf_ignored(n, ignore))
    tmp = f"{out}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, out)
    params = sum(t.numel() for t in state.values())
    return (f"{out}: {len(state)} tensors, {params:,} parameters (vocabulary "
            f"{config.vocab_size}, hidden {config.hidden_size}, {config.num_hidden_layers} "
            f"layers); left out {len(skipped)} "
            "TensorFlow variables (optimizer slots, global_step)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m mlperf_fast.workloads.bert.weights",
        description="BERT checkpoints: convert the reference's TensorFlow checkpoint once, so "
                    "that training reads a PyTorch state dict.")
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("convert", help="a TensorFlow checkpoint -> a torch.save'd state "
                                            "dict under our names")
    c.add_argument("--tf", required=True, metavar="PREFIX",
                   help="the checkpoint: its prefix (model.ckpt-28252), its .index, or a folder")
    c.add_argument("--out", required=True, metavar="FILE", help="where to write it (model.pt)")
    c.add_argument("--ignore", action="append", default=[], metavar="NAME",
                   help="another TensorFlow variable to leave out: a name, or a suffix that "
                        "starts with '/' (repeatable)")
    args = parser.parse_args(argv)
    try:
        print(convert(args.tf, args.out, args.ignore))
    except (DataError, CheckpointMismatch) as e:  # the message names the file and the tensor
        print(f"convert: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
