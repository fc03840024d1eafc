"""BERT's embedded data set: English text already on every machine with Python, turned into
pretraining shards by the same writer (writer.py) in the same hdf5 layout and read by the same
reader as the real data.

The text: CPython's own documentation of its statements, operators and built-in types
(``pydoc_data/topics.py``, about 465,000 characters, 79 topics) and the docstrings of the
standard library's modules, classes and functions, read from the source files with ``ast`` (no
module is imported). Each topic, and each module's docstrings together, is a document; its
paragraphs are split into sentences at a full stop, question or exclamation mark followed by
a space and a capital letter or a digit. Code examples (lines indented four spaces or starting
with ``>>>``) are left out: the task is English. Held out for evaluation: every 10th document
(by a hash of its name, so the split does not move when documents are added).

A WordPiece vocabulary is built from the training documents (writer.train_vocab) and everything
is cached and verified through mlperf_fast.data.cache, keyed by the settings and by the SHA-256
of the text itself (so another Python version's documentation makes another data set).
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import re
import sysconfig
import time
from collections.abc import Callable

from mlperf_fast.data.cache import cached
from mlperf_fast.workloads.bert import writer

VERSION = 2
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


@dataclasses.dataclass(frozen=True)
class CorpusSettings:
    vocab_size: int = 8192
    max_seq_length: int = 128
    max_predictions: int = 20  # the original BERT's 128-token setting (0.15 x 128 = 19.2)
    dupe_factor: int = 5
    eval_every: int = 10  # one document in 10 held out
    max_docstring_chars: int = 1_500_000
    seed: int = 12345  # the reference's mandated seed
    version: int = VERSION


def _sentences(text: str) -> list[str]:
    """Sentences of ``text``: prose paragraphs only (code and doctest lines dropped), joined
    across line breaks, split at sentence ends."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines()
                 if ln.strip() and not ln.startswith("    ") and not ln.lstrip().startswith(">>>")
                 and not set(ln.strip()) <= set("*=-~^")]
        prose = " ".join(ln.strip() for ln in lines)
        if len(prose) < 20:
            continue
        out.extend(s.strip() for s in _SENTENCE_END.split(prose) if len(s.strip()) >= 8)
    return out


def topics_documents() -> list[tuple[str, list[str]]]:
    """(name, sentences) of each topic of pydoc_data/topics.py."""
    from pydoc_data.topics import topics

    return [(f"topic:{name}", _sentences(topics[name])) for name in sorted(topics)]


def docstring_documents(limit_chars: int) -> list[tuple[str, list[str]]]:
    """(name, sentences) of the standard library's modules (their docstrings: module, classes,
    functions), sorted by path, until ``limit_chars`` of docstring text."""
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in (
            "test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__", "turtledemo"))
        paths.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    documents, total = [], 0
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        texts = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
        sentences = _sentences("\n\n".join(texts))
        if len(sentences) < 2:
            continue
        documents.append((f"module:{os.path.relpath(path, stdlib)}", sentences))
        total += sum(len(s) for s in sentences)
        if total >= limit_chars:
            break
    return documents


def _held_out(name: str, every: int) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % every == 0


def corpus(settings: CorpusSettings) -> tuple[list[list[str]], list[list[str]]]:
    """(training documents, evaluation documents), each a list of sentences."""
    docs = topics_documents() + docstring_documents(settings.max_docstring_chars)
    train = [s for name, s in docs if not _held_out(name, settings.eval_every)]
    evals = [s for name, s in docs if _held_out(name, settings.eval_every)]
    return train, evals


def _text_lines(documents: list[list[str]]) -> list[str]:
    lines = []
    for sentences in documents:
        lines.extend(sentences)
        lines.append("")
    return lines


def build(settings: CorpusSettings, out: str, log: Callable[[str], None]) -> None:
    t0 = time.perf_counter()
    train_docs, eval_docs = corpus(settings)
    for name, docs in (("train.txt", train_docs), ("eval.txt", eval_docs)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(_text_lines(docs)) + "\n")
    vocab = writer.train_vocab((s for d in train_docs for s in d), settings.vocab_size,
                               os.path.join(out, "vocab.txt"))
    tok = writer.WordPiece(vocab)
    for split, docs, dupe in (("train", train_docs, settings.dupe_factor), ("eval", eval_docs, 1)):
        documents = writer.read_documents(_text_lines(docs), tok)
        instances = writer.create_instances(documents, tok.vocab_words, settings.seed,
                                            settings.max_seq_length, dupe, 0.1, 0.15,
                                            settings.max_predictions)
        arrays = writer.to_arrays(instances, tok, settings.max_seq_length,
                                  settings.max_predictions)
        writer.write_shards(arrays, os.path.join(out, split), "part", 1)
        log(f"bert: embedded {split} set: {len(instances)} sequences from {len(documents)} "
            f"documents ({time.perf_counter() - t0:.1f} s)")


def text_digest(settings: CorpusSettings) -> str:
    """SHA-256 of the source text (the topics and the docstring files as they are here)."""
    train, evals = corpus(settings)
    h = hashlib.sha256()
    for doc in train + evals:
        h.update("\n".join(doc).encode())
        h.update(b"\0")
    return h.hexdigest()


def embedded_dataset(settings: CorpusSettings | None = None,
                     log: Callable[[str], None] = print) -> str:
    """The embedded data set's folder (built once, cached): ``vocab.txt``, ``train/part_*.hdf5``,
    ``eval/part_*.hdf5`` and the text they came from."""
    settings = settings or CorpusSettings()
    key = {**dataclasses.asdict(settings), "text_sha256": text_digest(settings)}
    return cached("bert", "pydoc-corpus", key, lambda out: build(settings, out, log), log=log,
                  what="the embedded BERT data set")
