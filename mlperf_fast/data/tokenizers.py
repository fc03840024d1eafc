"""Tokenizers trained on a benchmark's own text and kept in the verified cache (data/cache.py),
keyed by the text and the settings, so that a damaged model file is detected and retrained."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

from mlperf_fast.data.cache import cached


def train_sentencepiece(texts: Sequence[str], vocab_size: int, prefix: str,
                        model_type: str = "unigram") -> str:
    """A sentencepiece model of ``vocab_size`` pieces, character coverage 1.0, no BOS/EOS (the
    RNN-T reference's scripts/create_sentencepieces.sh settings); returns the model file."""
    import sentencepiece as spm

    from mlperf_fast.harness.workload import DataError

    text_file = prefix + ".txt"
    with open(text_file, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in texts)
    try:
        spm.SentencePieceTrainer.train(
            input=text_file, model_prefix=prefix, vocab_size=vocab_size, character_coverage=1.0,
            bos_id=-1, eos_id=-1, model_type=model_type, num_threads=1, minloglevel=2)
    except RuntimeError as e:  # too little text for the vocabulary, most often
        raise DataError(f"sentencepiece could not train {vocab_size} pieces on {len(texts)} "
                        f"transcripts ({str(e).strip().splitlines()[-1]})") from e
    finally:
        os.unlink(text_file)
    return prefix + ".model"


def cached_sentencepiece(kind: str, texts: Sequence[str], vocab_size: int,
                         model_type: str = "unigram",
                         log: Callable[[str], None] = print) -> str:
    """The model file of a sentencepiece model trained on ``texts``, from the cache."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    settings = {"texts_sha256": digest, "vocab_size": vocab_size, "model_type": model_type}
    folder = cached(kind, f"sentencepiece-{model_type}{vocab_size}", settings,
                    lambda out: train_sentencepiece(texts, vocab_size, os.path.join(out, "spm"),
                                                    model_type),
                    log=log, what="the sentencepiece model")
    return os.path.join(folder, "spm.model")
