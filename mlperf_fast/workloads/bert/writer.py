"""Pretraining examples from text: one sentence per line, blank lines between documents, turned
into BERT's masked-LM + next-sentence examples by the reference's rules and written as NVIDIA's
hdf5 shards (or the reference's TFRecords).

The rules, as read in mlcommons/training ``retired_benchmarks/bert/cleanup_scripts/
create_pretraining_data.py`` (the MLPerf data set's generator, run with ``--max_seq_length=512
--max_predictions_per_seq=76 --masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=10``,
dataset.md):

- documents: lines tokenized (WordPiece, lower-cased), empty lines end a document, empty
  documents dropped, then the documents shuffled with ``random.Random(seed)``;
- ``dupe_factor`` passes over every document, each drawing new instances and masks; all instances
  shuffled at the end;
- per document: a target length ``max_seq_length - 3``, or with probability ``short_seq_prob``
  (0.1) ``randint(2, max_seq_length - 3)``; sentences gathered into a chunk until it reaches the
  target (or the document ends); ``a_end = randint(1, len(chunk) - 1)`` sentences (1 for a
  one-sentence chunk) make segment A; segment B is the rest of the chunk, or, for a one-sentence
  chunk or with probability 0.5, sentences of a random other document from a random start (the
  chunk's unused sentences are put back: the walk resumes at them); the pair is trimmed to
  ``max_seq_length - 3`` tokens by dropping a token of the longer side, from its front or its back
  with probability 0.5 each; ``[CLS] A [SEP] B [SEP]``, segment ids 0 then 1;
- masking: the non-special positions shuffled; ``min(max_predictions, max(1, round(len * 0.15)))``
  of them masked in that order: ``[MASK]`` with probability 0.8, else the original token with
  probability 0.5, else a uniformly random vocabulary entry; positions sorted.

The random draws are made through Python's ``random.Random`` in the reference's order, so the same
text, vocabulary, tokenizer and seed give the reference's examples.

Outputs: ``write_hdf5`` writes NVIDIA's fixed-length layout (``input_ids`` int32 [N, L],
``input_mask`` int8, ``segment_ids`` int8, ``masked_lm_positions`` int32 [N, P],
``masked_lm_ids`` int32 [N, P], ``next_sentence_labels`` int8 [N], gzip), padded with zeros as
the reference pads; ``write_tfrecords`` the reference's tf.train.Examples (the same features,
int64, with ``masked_lm_weights`` float).

Command: ``python3 -m mlperf_fast.workloads.bert.writer --vocab vocab.txt --out DIR [--format
hdf5|tfrecord] [--shards N] TEXT_FILE ...``.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Instance:
    """One example: WordPiece tokens (masked), segment ids, the masked positions and their
    original tokens, and whether B is a random document's."""

    tokens: list[str]
    segment_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_labels: list[str]
    is_random_next: bool


class WordPiece:
    """The reference's FullTokenizer (basic tokenization: lower-casing, accents stripped,
    punctuation split; then greedy longest-match WordPiece with ``##`` continuations) through
    Hugging Face ``tokenizers``' BERT pipeline, over a ``vocab.txt`` (one token per line, the id
    is the line number)."""

    def __init__(self, vocab_file: str, lowercase: bool = True) -> None:
        from tokenizers import BertWordPieceTokenizer

        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"{vocab_file}: no such vocabulary file")
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab_words = [line.rstrip("\n") for line in f]
        missing = [t for t in SPECIAL if t not in self.vocab_words]
        if missing:
            raise ValueError(f"{vocab_file}: the vocabulary lacks {missing}")
        self.vocab = {w: i for i, w in enumerate(self.vocab_words)}
        self._tok = BertWordPieceTokenizer(vocab_file, lowercase=lowercase,
                                           strip_accents=lowercase, clean_text=True)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def ids(self, tokens: Sequence[str]) -> list[int]:
        unk = self.vocab["[UNK]"]
        return [self.vocab.get(t, unk) for t in tokens]


def train_vocab(texts: Iterable[str], vocab_size: int, path: str,
                min_frequency: int = 2) -> str:
    """A WordPiece vocabulary for ``texts``, written as ``vocab.txt`` at ``path``: the five
    special tokens first ([PAD] is id 0, as padding needs), every character seen (alone and as a
    ``##`` continuation, so that any word can be spelled), then the most frequent words (BERT's
    normalization and pre-tokenization: lower-cased, accents stripped, punctuation apart) seen at
    least ``min_frequency`` times, by count then alphabetically, up to ``vocab_size``.

    Deterministic by construction: tokenizers' own WordPiece trainer breaks ties between equally
    frequent merges in hash-map order, which differs from run to run, and a cached data set must
    be the same every time it is built."""
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    norm = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                          lowercase=True)
    pre = BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = [*SPECIAL, *chars, *(f"##{c}" for c in chars)]
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} special "
                         "tokens and characters of the text")
    have = set(vocab)
    for word, count in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or count < min_frequency:
            break
        if word not in have:
            vocab.append(word)
            have.add(word)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    os.replace(tmp, path)
    return path


def read_documents(lines: Iterable[str], tokenizer: WordPiece) -> list[list[list[str]]]:
    """Documents of tokenized sentences: one sentence per line, an empty line ends a document;
    empty documents are dropped (the reference's reading loop)."""
    documents: list[list[list[str]]] = [[]]
    for line in lines:
        line = line.strip()
        if not line:
            documents.append([])
        tokens = tokenizer.tokenize(line) if line else []
        if tokens:
            documents[-1].append(tokens)
    return [d for d in documents if d]


def _truncate_pair(a: list[str], b: list[str], max_tokens: int, rng: random.Random) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def mask_tokens(tokens: list[str], masked_lm_prob: float, max_predictions: int,
                vocab_words: Sequence[str], rng: random.Random
                ) -> tuple[list[str], list[int], list[str]]:
    """The reference's masking of one ``[CLS] A [SEP] B [SEP]`` sequence: (masked tokens, the
    masked positions ascending, their original tokens)."""
    candidates = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
    rng.shuffle(candidates)
    out = list(tokens)
    count = min(max_predictions, max(1, round(len(tokens) * masked_lm_prob)))  # half to even
    chosen = sorted(candidates[:count])
    # the draws must follow the shuffled order, as the reference walks it
    replaced = {}
    for index in candidates[:count]:
        if rng.random() < 0.8:
            replaced[index] = "[MASK]"
        elif rng.random() < 0.5:
            replaced[index] = tokens[index]
        else:
            replaced[index] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
    for index, token in replaced.items():
        out[index] = token
    return out, chosen, [tokens[i] for i in chosen]


def document_instances(documents: Sequence[list[list[str]]], index: int, max_seq_length: int,
                       short_seq_prob: float, masked_lm_prob: float, max_predictions: int,
                       vocab_words: Sequence[str], rng: random.Random) -> list[Instance]:
    """The instances of document ``index`` (see the module docstring for the rules)."""
    document = documents[index]
    max_tokens = max_seq_length - 3
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances: list[Instance] = []
    chunk: list[list[str]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                b: list[str] = []
                random_next = len(chunk) == 1 or rng.random() < 0.5
                if random_next:
                    b_target = target - len(a)
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    other_doc = documents[other]
                    for s in other_doc[rng.randint(0, len(other_doc) - 1):]:
                        b.extend(s)
                        if len(b) >= b_target:
                            break
                    i -= len(chunk) - a_end  # the unused sentences go back
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                _truncate_pair(a, b, max_tokens, rng)
                if not a or not b:
                    raise ValueError(f"document {index}: an empty segment after truncation")
                tokens = ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
                segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                tokens, positions, labels = mask_tokens(tokens, masked_lm_prob,
                                                        max_predictions, vocab_words, rng)
                instances.append(Instance(tokens, segments, positions, labels, random_next))
            chunk, length = [], 0
        i += 1
    return instances


def create_instances(documents: list[list[list[str]]], vocab_words: Sequence[str],
                     seed: int = 12345, max_seq_length: int = 512, dupe_factor: int = 10,
                     short_seq_prob: float = 0.1, masked_lm_prob: float = 0.15,
                     max_predictions: int = 76, shuffle_documents: bool = True
                     ) -> list[Instance]:
    """Every instance of ``dupe_factor`` passes over the documents, shuffled, from one
    ``random.Random(seed)`` (the documents are shuffled in place first, as the reference does)."""
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length must be >= 5, got {max_seq_length}")
    if len(documents) < 2:
        raise ValueError(f"{len(documents)} document(s): next-sentence pairs need at least 2")
    rng = random.Random(seed)
    if shuffle_documents:
        rng.shuffle(documents)
    instances: list[Instance] = []
    for _ in range(dupe_factor):
        for d in range(len(documents)):
            instances.extend(document_instances(documents, d, max_seq_length, short_seq_prob,
                                                 masked_lm_prob, max_predictions, vocab_words,
                                                 rng))
    rng.shuffle(instances)
    return instances


def to_arrays(instances: Sequence[Instance], tokenizer: WordPiece, max_seq_length: int,
              max_predictions: int) -> dict[str, np.ndarray]:
    """The fixed-length arrays of NVIDIA's hdf5 layout, zero-padded as the reference pads."""
    n = len(instances)
    out = {"input_ids": np.zeros((n, max_seq_length), np.int32),
           "input_mask": np.zeros((n, max_seq_length), np.int8),
           "segment_ids": np.zeros((n, max_seq_length), np.int8),
           "masked_lm_positions": np.zeros((n, max_predictions), np.int32),
           "masked_lm_ids": np.zeros((n, max_predictions), np.int32),
           "next_sentence_labels": np.zeros((n,), np.int8)}
    for k, inst in enumerate(instances):
        if len(inst.tokens) > max_seq_length or len(inst.masked_lm_positions) > max_predictions:
            raise ValueError(f"instance {k}: longer than the layout ({len(inst.tokens)} tokens, "
                             f"{len(inst.masked_lm_positions)} predictions)")
        t = len(inst.tokens)
        out["input_ids"][k, :t] = tokenizer.ids(inst.tokens)
        out["input_mask"][k, :t] = 1
        out["segment_ids"][k, :t] = inst.segment_ids
        p = len(inst.masked_lm_positions)
        out["masked_lm_positions"][k, :p] = inst.masked_lm_positions
        out["masked_lm_ids"][k, :p] = tokenizer.ids(inst.masked_lm_labels)
        out["next_sentence_labels"][k] = int(inst.is_random_next)
    return out


def write_hdf5(arrays: dict[str, np.ndarray], path: str) -> None:
    """One shard in NVIDIA's fixed-length layout (written to a temporary name, then renamed)."""
    import h5py

    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, dtype=value.dtype, compression="gzip")
    os.replace(tmp, path)


def write_tfrecords(arrays: dict[str, np.ndarray], path: str) -> None:
    """One shard of the reference's tf.train.Examples."""
    from mlperf_fast.data.tfrecord import encode_example, write_records

    def examples():
        for k in range(len(arrays["input_ids"])):
            ids = arrays["masked_lm_ids"][k]
            weights = (arrays["masked_lm_positions"][k] != 0).astype(np.float32)
            yield encode_example({
                "input_ids": arrays["input_ids"][k].tolist(),
                "input_mask": arrays["input_mask"][k].tolist(),
                "segment_ids": arrays["segment_ids"][k].tolist(),
                "masked_lm_positions": arrays["masked_lm_positions"][k].tolist(),
                "masked_lm_ids": ids.tolist(),
                "masked_lm_weights": weights.tolist(),
                "next_sentence_labels": [int(arrays["next_sentence_labels"][k])]})
    tmp = path + ".tmp"
    write_records(tmp, examples())
    os.replace(tmp, path)


def write_shards(arrays: dict[str, np.ndarray], out_dir: str, prefix: str, shards: int,
                 fmt: str = "hdf5") -> list[str]:
    """The arrays split into ``shards`` consecutive parts ``<prefix>_<k>.hdf5`` (or
    ``<prefix>-<k>.tfrecord``)."""
    if fmt not in ("hdf5", "tfrecord"):
        raise ValueError(f"format must be 'hdf5' or 'tfrecord', got {fmt!r}")
    n = len(arrays["input_ids"])
    shards = max(1, min(shards, n))
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for k in range(shards):
        part = {key: v[bounds[k]:bounds[k + 1]] for key, v in arrays.items()}
        if fmt == "hdf5":
            path = os.path.join(out_dir, f"{prefix}_{k:05d}.hdf5")
            write_hdf5(part, path)
        else:
            path = os.path.join(out_dir, f"{prefix}-{k:05d}.tfrecord")
            write_tfrecords(part, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m mlperf_fast.workloads.bert.writer",
                                description="BERT pretraining shards from one-sentence-per-line "
                                            "text, by the MLPerf reference's rules")
    p.add_argument("inputs", nargs="+", help="text files: a sentence per line, blank lines "
                                             "between documents")
    p.add_argument("--vocab", required=True, help="vocab.txt (the MLPerf one for the real set)")
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default="part")
    p.add_argument("--format", choices=("hdf5", "tfrecord"), default="hdf5")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--max-predictions", type=int, default=76)
    p.add_argument("--dupe-factor", type=int, default=10)
    p.add_argument("--masked-lm-prob", type=float, default=0.15)
    p.add_argument("--short-seq-prob", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=12345)
    args = p.parse_args(argv)
    try:
        tokenizer = WordPiece(args.vocab)
        documents = []
        for path in args.inputs:
            with open(path, encoding="utf-8") as f:
                documents.extend(read_documents(f, tokenizer))
        instances = create_instances(documents, tokenizer.vocab_words, args.seed,
                                     args.max_seq_length, args.dupe_factor, args.short_seq_prob,
                                     args.masked_lm_prob, args.max_predictions)
        arrays = to_arrays(instances, tokenizer, args.max_seq_length, args.max_predictions)
        paths = write_shards(arrays, args.out, args.prefix, args.shards, args.format)
    except (OSError, ValueError) as e:
        print(f"writer: {e}", file=sys.stderr)
        return 2
    print(f"{len(instances)} examples from {len(documents)} documents in {len(paths)} shard(s) "
          f"under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
