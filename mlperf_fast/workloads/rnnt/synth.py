"""The embedded speech corpus: English sentences spoken by libespeak-ng (from the espeakng-loader
wheel, which ships the library and its voices), many voices, rates and pitches.

Sentences come from a small grammar of everyday scenes (about 200 words), so that a small RNN-T
can learn the acoustics of every word from a few thousand utterances; the held-out split has
sentences that never occur in training, spoken by voices that never occur in training.
"""
from __future__ import annotations

import ctypes
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

ESPEAK_RATE = 22050  # libespeak-ng's output rate

_DET = ["the", "a", "my", "your", "this", "that", "our", "their"]
_ADJ = ["red", "green", "blue", "yellow", "black", "white", "small", "big", "old", "new",
        "warm", "cold", "soft", "heavy", "bright", "dark", "quiet", "happy", "tired", "clean"]
_NOUN = ["cat", "dog", "bird", "horse", "fish", "child", "teacher", "doctor", "farmer", "driver",
         "table", "chair", "window", "door", "garden", "river", "bridge", "house", "train", "boat",
         "box", "cup", "book", "letter", "apple", "bread", "coat", "road", "tree", "lamp"]
_PLURAL = {"child": "children", "fish": "fish", "box": "boxes", "bus": "buses"}
_VERB_PAST = ["found", "moved", "painted", "watched", "carried", "opened", "closed", "cleaned",
              "followed", "pushed", "pulled", "visited", "bought", "sold", "dropped", "lifted"]
_VERB = ["find", "move", "paint", "watch", "carry", "open", "close", "clean", "follow", "push",
         "pull", "visit", "buy", "sell", "drop", "lift"]
_PREP = ["near", "behind", "under", "over", "beside", "inside", "across", "past"]
_NAME = ["john", "mary", "peter", "susan", "david", "laura", "thomas", "emma", "george", "alice"]
_NUM = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
_TIME = ["today", "yesterday", "this morning", "last night", "every day", "on monday",
         "on friday", "in the evening", "after lunch", "before dinner"]
_ADV = ["slowly", "quickly", "carefully", "quietly", "again", "together"]


def _plural(noun: str) -> str:
    return _PLURAL.get(noun, noun + "s")


def _sentence(rng: random.Random) -> str:
    c = rng.choice
    templates = (
        lambda: f"{c(_DET)} {c(_ADJ)} {c(_NOUN)} is {c(_PREP)} the {c(_NOUN)}",
        lambda: f"{c(_NAME)} {c(_VERB_PAST)} {c(_DET)} {c(_ADJ)} {c(_NOUN)} {c(_TIME)}",
        lambda: f"please {c(_VERB)} the {c(_NOUN)} {c(_PREP)} the {c(_ADJ)} {c(_NOUN)}",
        lambda: f"{c(_NUM)} {c(_ADJ)} {_plural(c(_NOUN))} are {c(_PREP)} {c(_DET)} {c(_NOUN)}",
        lambda: f"the {c(_NOUN)} {c(_VERB_PAST)} the {c(_NOUN)} {c(_ADV)}",
        lambda: f"{c(_NAME)} and {c(_NAME)} {c(_VERB_PAST)} {c(_NUM)} {_plural(c(_NOUN))}",
        lambda: f"did {c(_NAME)} {c(_VERB)} {c(_DET)} {c(_NOUN)} {c(_TIME)}",
        lambda: f"{c(_DET)} {c(_NOUN)} is {c(_ADJ)} and {c(_ADJ)}",
    )
    return c(templates)()


def sentences(n: int, rng: random.Random, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` distinct sentences, none of them in ``exclude``."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        s = _sentence(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def vocabulary() -> set[str]:
    words = set(_DET + _ADJ + _NOUN + _VERB_PAST + _VERB + _PREP + _NAME + _NUM + _ADV)
    words |= {_plural(n) for n in _NOUN}
    words |= {w for t in _TIME for w in t.split()}
    return words | {"is", "please", "the", "are", "and", "did"}


# Variants (data/voices/!v) that sound like speech; whispering and robotic ones are left out.
_EXCLUDED_VARIANTS = {"whisper", "whisperf", "Demonic", "UniRobot", "anikaRobot", "croak",
                      "Mr serious"}


@dataclass(frozen=True)
class Voice:
    language: str  # "en-us" or "en"
    variant: str

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"


def voices(data_path: str) -> list[Voice]:
    import os

    variants = sorted(v for v in os.listdir(os.path.join(data_path, "voices", "!v"))
                      if v not in _EXCLUDED_VARIANTS and " " not in v)
    return [Voice(lang, v) for v in variants for lang in ("en-us", "en")]


class Speaker:
    """libespeak-ng in synchronous mode, speaking into memory. The library has global state, so
    one instance per process is used at a time (guarded by a lock)."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = espeakng_loader.get_data_path()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = self._lib.espeak_Initialize(0x02, 0, self.data_path.encode(), 0)  # SYNCHRONOUS
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"libespeak-ng initialization failed (returned {rate})")
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                 ctypes.c_void_p)
        self._callback = proto(self._collect)  # kept alive as long as the library may call it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, text: str, voice: Voice, rate_wpm: int, pitch: int) -> np.ndarray:
        """int16 samples at ESPEAK_RATE."""
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise RuntimeError(f"libespeak-ng has no voice {voice.name}")
            self._lib.espeak_SetParameter(1, int(rate_wpm), 0)  # espeakRATE
            self._lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
            self._chunks = []
            data = text.encode()
            self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@dataclass(frozen=True)
class Utterance:
    split: str
    speaker: int
    chapter: int
    index: int
    text: str
    voice: Voice
    rate_wpm: int
    pitch: int

    @property
    def utt_id(self) -> str:
        return f"{self.speaker}-{self.chapter}-{self.index:04d}"


def plan(corpus, train_split: str, eval_split: str, all_voices: list[Voice]) -> Iterator[Utterance]:
    """The corpus's utterances, deterministic in ``corpus.seed``: disjoint voices and sentences
    for the two splits. ``corpus`` is a config.EmbeddedCorpus."""
    rng = random.Random(corpus.seed)
    pool = list(all_voices)
    rng.shuffle(pool)
    if len(pool) < corpus.train_voices + corpus.eval_voices:
        raise RuntimeError(f"libespeak-ng has only {len(pool)} usable voices")
    train_voices = pool[:corpus.train_voices]
    eval_voices = pool[corpus.train_voices:corpus.train_voices + corpus.eval_voices]
    train_text = sentences(corpus.train_utterances, rng)
    eval_text = sentences(corpus.eval_utterances, rng, exclude=set(train_text))
    for split, texts, vs, first_speaker in ((train_split, train_text, train_voices, 100),
                                            (eval_split, eval_text, eval_voices, 900)):
        for i, text in enumerate(texts):
            v = i % len(vs)
            yield Utterance(split=split, speaker=first_speaker + v, chapter=(i // len(vs)) % 4,
                            index=i, text=text, voice=vs[v], rate_wpm=rng.randint(140, 200),
                            pitch=rng.randint(30, 70))
