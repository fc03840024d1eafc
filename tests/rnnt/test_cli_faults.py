"""RNN-T's data faults through the command line: one line naming the file, exit code 2, and
nothing left in --output."""
import os
import subprocess
import sys

import numpy as np
import pytest


def _write_split(root, split, lines, encoding_bytes=None):
    ch = root / split / "1" / "2"
    ch.mkdir(parents=True)
    import soundfile as sf

    for i, _ in enumerate(lines):
        sf.write(ch / f"1-2-{i}.flac", np.random.default_rng(i).uniform(-0.1, 0.1, 4000)
                 .astype(np.float32), 16000)
    trans = ch / "1-2.trans.txt"
    if encoding_bytes is not None:
        trans.write_bytes(encoding_bytes)
    else:
        trans.write_text("".join(f"1-2-{i} {t}\n" for i, t in enumerate(lines)))
    return trans


def _train(tmp_path, data, *extra):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlperf_fast.train", "rnnt", "--data-dir", str(data),
           "--config", "closed", "--set", "data.train_splits=train", "--set",
           "data.eval_split=dev", "--device", "cpu", "--output", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLPERF_FAST_CACHE": str(tmp_path / "cache")})
    return proc, out


def _one_line(proc, *words):
    assert proc.returncode == 2, (proc.stdout, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    err = [line for line in lines if line.startswith("mlperf_fast.train: error:")]
    assert len(err) == 1 and err[0] == lines[-1], proc.stderr  # one error line, the last
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in err[0], (w, err[0])


@pytest.mark.slow
def test_non_utf8_transcripts(tmp_path):
    data = tmp_path / "data"
    bad = _write_split(data, "train", ["a"], encoding_bytes=b"1-2-0 caf\xe9\n")
    _write_split(data, "dev", ["a b"])
    proc, out = _train(tmp_path, data)
    _one_line(proc, str(bad), "UTF-8")
    assert not out.exists()


@pytest.mark.slow
def test_too_little_text_for_the_tokenizer(tmp_path):
    data = tmp_path / "data"
    _write_split(data, "train", ["hello world", "a cat"])
    _write_split(data, "dev", ["a b"])
    proc, out = _train(tmp_path, data)
    _one_line(proc, "sentencepiece could not train 1023 pieces")
    assert not out.exists()
