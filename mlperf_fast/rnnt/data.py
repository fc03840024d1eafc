"""LibriSpeech on disk, the tokenizer, the bucketing sampler, and the embedded corpus.

Two on-disk forms are read:
  * the distribution's layout: ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac``
    with ``<speaker>-<chapter>.trans.txt`` (lines "ID TRANSCRIPT") beside them;
  * the reference's preprocessed manifests, ``<root>/librispeech-<split>-wav.json`` (a list of
    {"transcript", "files": [{"fname", ...}], "original_duration"}), audio paths relative to root.
The embedded corpus is written in the first form and read back by the same reader.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from mlperf_fast.harness.workload import DataError
from mlperf_fast.rnnt.config import EmbeddedCorpus

#: The reference's output characters (configs/baseline_v3-1023sp.yaml, tokenizer.labels)
CHARSET = " abcdefghijklmnopqrstuvwxyz'"


@dataclass(frozen=True)
class Sample:
    path: str  # audio file (FLAC or WAV)
    transcript: str  # normalized: lower case, CHARSET only, single spaces
    duration: float  # seconds


def normalize_transcript(text: str) -> str:
    """Lower case, characters outside CHARSET dropped, whitespace collapsed (LibriSpeech's
    transcripts are upper-case letters, apostrophes and spaces, so this is the reference's
    english_cleaners on them)."""
    text = "".join(ch for ch in text.lower() if ch in CHARSET)
    return re.sub(r" +", " ", text).strip()


def _audio_duration(path: str) -> float:
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises its own error types for unreadable files
        raise DataError(f"{path} is not a readable audio file ({e})") from e
    return info.frames / info.samplerate


def read_split_dir(split_dir: str) -> list[Sample]:
    """All utterances of one split folder in the LibriSpeech layout, sorted by id."""
    if not os.path.isdir(split_dir):
        raise DataError(f"{split_dir} is missing")
    samples: list[Sample] = []
    for speaker in sorted(os.listdir(split_dir)):
        spk_dir = os.path.join(split_dir, speaker)
        if not os.path.isdir(spk_dir):
            continue
        for chapter in sorted(os.listdir(spk_dir)):
            ch_dir = os.path.join(spk_dir, chapter)
            trans = os.path.join(ch_dir, f"{speaker}-{chapter}.trans.txt")
            if not os.path.isdir(ch_dir):
                continue
            if not os.path.exists(trans):
                raise DataError(f"{trans} is missing")
            with open(trans, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    utt, _, text = line.partition(" ")
                    if not text:
                        raise DataError(f"{trans}:{line_no}: expected 'ID TRANSCRIPT'")
                    audio = os.path.join(ch_dir, f"{utt}.flac")
                    if not os.path.exists(audio):
                        raise DataError(f"{audio} is missing (listed in {trans})")
                    samples.append(Sample(audio, normalize_transcript(text),
                                          _audio_duration(audio)))
    if not samples:
        raise DataError(f"{split_dir} holds no utterances")
    return samples


def manifest_path(root: str, split: str) -> str:
    return os.path.join(root, f"librispeech-{split}-wav.json")


def read_manifest(root: str, split: str) -> list[Sample]:
    """The reference's preprocessed manifest of ``split``."""
    path = manifest_path(root, split)
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        samples = [Sample(os.path.join(root, e["files"][-1]["fname"]),
                          normalize_transcript(e["transcript"]), float(e["original_duration"]))
                   for e in entries]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"{path} is not a valid manifest ({e})") from e
    return samples


def read_split(root: str, split: str) -> list[Sample]:
    """``split`` under ``root``: the reference's manifest if there is one, else the folder."""
    if os.path.exists(manifest_path(root, split)):
        return read_manifest(root, split)
    return read_split_dir(os.path.join(root, split))


def check_split(root: str, split: str) -> None:
    """Cheap up-front check: the split's manifest or folder exists."""
    if not (os.path.exists(manifest_path(root, split)) or os.path.isdir(os.path.join(root, split))):
        raise DataError(f"neither {manifest_path(root, split)} nor {os.path.join(root, split)} "
                        "exists")


def load_audio(path: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the file's sample rate."""
    import soundfile as sf

    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        raise DataError(f"{path} is not a readable audio file ({e})") from e
    return audio.mean(axis=1), rate


# -- tokenizer ----------------------------------------------------------------------------------


class Tokenizer:
    """Sentencepiece pieces; the RNN-T blank is one more index, ``blank = num_labels``. Index 0 is
    sentencepiece's <unk>, which pads label batches (it never occurs in the data)."""

    def __init__(self, model_file: str) -> None:
        import sentencepiece as spm

        if not os.path.exists(model_file):
            raise DataError(f"{model_file} is missing")
        self.model_file = model_file
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        self.num_labels = len(self.sp)

    @property
    def blank(self) -> int:
        return self.num_labels

    def tokenize(self, text: str) -> list[int]:
        ids = self.sp.encode(text, out_type=int)
        if 0 in ids:
            raise DataError(f"<unk> in the tokenization of {text!r} ({self.model_file})")
        return ids

    def detokenize(self, ids: list[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


def train_tokenizer(transcripts: list[str], vocab_size: int, prefix: str) -> str:
    """A unigram sentencepiece model of ``vocab_size`` pieces, character coverage 1.0, no BOS/EOS
    (scripts/create_sentencepieces.sh); returns the model file."""
    import sentencepiece as spm

    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    text_file = prefix + ".txt"
    with open(text_file, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in transcripts)
    spm.SentencePieceTrainer.train(
        input=text_file, model_prefix=prefix, vocab_size=vocab_size, character_coverage=1.0,
        bos_id=-1, eos_id=-1, model_type="unigram", num_threads=1, minloglevel=2)
    return prefix + ".model"


# -- sampler ------------------------------------------------------------------------------------


class BucketingSampler:
    """Batches of similar durations (common/data/dali/sampler.py BucketingSampler): utterances
    sorted by duration are split into ``num_buckets`` buckets, each shuffled; the concatenation
    is cut into global batches (the remainder dropped at random), the batches shuffled, and each
    global batch split over the ranks. Deterministic in (seed, epoch), the same on every rank."""

    def __init__(self, durations: list[float], global_batch: int, num_buckets: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f"global_batch {global_batch} is not divisible by world_size "
                             f"{world_size}")
        if len(durations) < global_batch:
            raise ValueError(f"{len(durations)} utterances make no batch of {global_batch}")
        self.order = np.argsort(np.asarray(durations), kind="stable")
        self.global_batch, self.num_buckets = global_batch, max(1, num_buckets)
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self) -> int:
        return len(self.order) // self.global_batch

    def epoch(self, epoch: int) -> list[list[int]]:
        """This rank's batches (lists of utterance indices) for ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        shuffled = np.concatenate([rng.permutation(b)
                                   for b in np.array_split(self.order, self.num_buckets)])
        drop = len(shuffled) - len(self) * self.global_batch
        if drop:
            shuffled = np.delete(shuffled, rng.choice(len(shuffled), drop, replace=False))
        batches = shuffled.reshape(len(self), self.global_batch)
        rng.shuffle(batches, axis=0)
        per_rank = self.global_batch // self.world_size
        return [b[self.rank * per_rank:(self.rank + 1) * per_rank].tolist() for b in batches]


# -- the embedded corpus ------------------------------------------------------------------------

_MANIFEST = "MANIFEST.json"


def cache_root() -> str:
    base = os.environ.get("MLPERF_FAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "mlperf_fast")
    return base


def corpus_dir(corpus: EmbeddedCorpus) -> str:
    key = hashlib.sha256(json.dumps(asdict(corpus), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_root(), "rnnt", f"embedded-v{corpus.version}-{key}")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_corpus(root: str) -> str | None:
    """None if ``root`` holds a complete, intact corpus; else what is wrong."""
    path = os.path.join(root, _MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"{path}: {e}"
    for rel, (size, digest) in files.items():
        p = os.path.join(root, rel)
        if not os.path.exists(p):
            return f"{p} is missing"
        if os.path.getsize(p) != size or _sha256(p) != digest:
            return f"{p} is corrupt (size or checksum differs from {_MANIFEST})"
    return None


def generate_corpus(corpus: EmbeddedCorpus, train_split: str, eval_split: str, root: str,
                    log=print) -> None:
    """Speak the corpus into ``root`` (LibriSpeech layout, 16 kHz 16-bit FLAC), with a manifest
    of every file's size and SHA-256, written last: a corpus without it is incomplete."""
    import soundfile as sf
    import torch

    from mlperf_fast.rnnt import synth
    from mlperf_fast.rnnt.features import resample

    speaker = synth.Speaker()
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        transcripts: dict[str, list[str]] = {}
        rng = random.Random(corpus.seed + 1)
        n = 0
        for utt in synth.plan(corpus, train_split, eval_split, synth.voices(speaker.data_path)):
            wav = speaker.say(utt.text, utt.voice, utt.rate_wpm, utt.pitch)
            audio = resample(torch.from_numpy(wav.astype(np.float32) / 32768.0),
                             synth.ESPEAK_RATE, 16000).numpy()
            # a little room noise, so that silence is not digital zero
            audio = audio + rng.uniform(1e-4, 1e-3) * np.random.default_rng(
                corpus.seed + n).standard_normal(audio.shape).astype(np.float32)
            ch_dir = os.path.join(tmp, utt.split, str(utt.speaker), str(utt.chapter))
            os.makedirs(ch_dir, exist_ok=True)
            sf.write(os.path.join(ch_dir, utt.utt_id + ".flac"),
                     np.clip(audio, -1.0, 1.0), 16000, subtype="PCM_16")
            key = os.path.join(ch_dir, f"{utt.speaker}-{utt.chapter}.trans.txt")
            transcripts.setdefault(key, []).append(f"{utt.utt_id} {utt.text.upper()}")
            n += 1
            if n % 500 == 0:
                log(f"embedded corpus: {n} utterances spoken")
        for path, lines in transcripts.items():
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        files = {}
        for dirpath, _, names in os.walk(tmp):
            for name in names:
                p = os.path.join(dirpath, name)
                files[os.path.relpath(p, tmp)] = [os.path.getsize(p), _sha256(p)]
        with open(os.path.join(tmp, _MANIFEST), "w") as f:
            json.dump({"corpus": asdict(corpus), "files": dict(sorted(files.items()))}, f)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def embedded_corpus(corpus: EmbeddedCorpus, train_split: str, eval_split: str,
                    log=print) -> str:
    """The corpus's folder, generated (or regenerated, if the cached one is damaged) as needed."""
    root = corpus_dir(corpus)
    problem = verify_corpus(root) if os.path.exists(root) else "not generated yet"
    if problem is not None:
        if os.path.exists(root):
            log(f"embedded corpus at {root} is damaged ({problem}); rebuilding it")
        else:
            log(f"generating the embedded corpus at {root}")
        generate_corpus(corpus, train_split, eval_split, root, log=log)
        problem = verify_corpus(root)
        if problem is not None:
            raise DataError(f"the embedded corpus could not be written: {problem}")
    return root
