"""LibriSpeech on disk, the tokenizer, and the embedded corpus.

Two on-disk forms are read:
  * the distribution's layout: ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac``
    with ``<speaker>-<chapter>.trans.txt`` (lines "ID TRANSCRIPT") beside them;
  * the reference's preprocessed manifests, ``<root>/librispeech-<split>-wav.json`` (a list of
    {"transcript", "files": [{"fname", ...}], "original_duration"}), audio paths relative to root.
The embedded corpus is written in the first form and read back by the same reader.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass

import numpy as np

from mlperf_fast.data.cache import cached
from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.rnnt.config import EmbeddedCorpus

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
            try:
                with open(trans, encoding="utf-8") as f:
                    lines = f.readlines()
            except UnicodeDecodeError as e:
                raise DataError(f"{trans} is not UTF-8 text ({e})") from e
            for line_no, line in enumerate(lines, 1):
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


# -- the embedded corpus ------------------------------------------------------------------------

def generate_corpus(corpus: EmbeddedCorpus, train_split: str, eval_split: str, out: str,
                    log=print) -> None:
    """Speak the corpus into the folder ``out`` (LibriSpeech layout, 16 kHz 16-bit FLAC)."""
    import soundfile as sf
    import torch

    from mlperf_fast.workloads.rnnt import synth
    from mlperf_fast.workloads.rnnt.features import resample

    speaker = synth.Speaker()
    transcripts: dict[str, list[str]] = {}
    rng = random.Random(corpus.seed + 1)
    utterances = list(synth.plan(corpus, train_split, eval_split, synth.voices(speaker.data_path)))
    for n, utt in enumerate(utterances):
        wav = speaker.say(utt.text, utt.voice, utt.rate_wpm, utt.pitch)
        audio = resample(torch.from_numpy(wav.astype(np.float32) / 32768.0),
                         synth.ESPEAK_RATE, 16000).numpy()
        # a little room noise, so that silence is not digital zero
        audio = audio + rng.uniform(1e-4, 1e-3) * np.random.default_rng(
            corpus.seed + n).standard_normal(audio.shape).astype(np.float32)
        ch_dir = os.path.join(out, utt.split, str(utt.speaker), str(utt.chapter))
        os.makedirs(ch_dir, exist_ok=True)
        sf.write(os.path.join(ch_dir, utt.utt_id + ".flac"),
                 np.clip(audio, -1.0, 1.0), 16000, subtype="PCM_16")
        key = os.path.join(ch_dir, f"{utt.speaker}-{utt.chapter}.trans.txt")
        transcripts.setdefault(key, []).append(f"{utt.utt_id} {utt.text.upper()}")
        if (n + 1) % 200 == 0 or n + 1 == len(utterances):
            log(f"embedded corpus: {n + 1} of {len(utterances)} utterances spoken")
    for path, lines in transcripts.items():
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)


def embedded_corpus(corpus: EmbeddedCorpus, train_split: str, eval_split: str,
                    log=print) -> str:
    """The corpus's folder in the verified cache (data/cache.py), generated (or regenerated, if
    the cached one is damaged) as needed; on rank 0 first when the run is distributed."""
    return cached("rnnt", f"embedded-v{corpus.version}", corpus,
                  lambda out: generate_corpus(corpus, train_split, eval_split, out, log=log),
                  log=log, what="the embedded RNN-T corpus")
