"""TFRecord framing and tf.train.Example without TensorFlow: CRC32C against RFC 3720's vectors and
a byte-at-a-time oracle, Example bytes against a hand encoding of the wire format, and the
errors on damaged files."""
import os
import struct

import numpy as np
import pytest

from mlperf_fast.data import tfrecord as tr
from mlperf_fast.harness.workload import DataError


def crc_oracle(data: bytes) -> int:
    """CRC32C bit by bit, straight from the definition (reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_values():
    # RFC 3720 B.4 and the usual check value
    assert tr.crc32c(b"123456789") == 0xE3069283
    assert tr.crc32c(bytes(32)) == 0x8A9136AA
    assert tr.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tr.crc32c(bytes(range(32))) == 0x46DD794E
    assert tr.crc32c(b"") == 0


def test_crc32c_many_against_oracle():
    rng = np.random.default_rng(5)
    buf = rng.integers(0, 256, 4000, dtype=np.uint8)
    lengths = np.array([0, 1, 7, 255, 256, 257, 511, 512, 1000, 3000, 2999, 13])
    starts = np.array([rng.integers(0, len(buf) - n + 1) for n in lengths])
    got = tr.crc32c_many(buf, starts, lengths)
    want = [crc_oracle(buf[s:s + n].tobytes()) for s, n in zip(starts, lengths)]
    assert got.dtype == np.uint32 and got.tolist() == want
    with pytest.raises(ValueError, match="outside"):
        tr.crc32c_many(buf, np.array([3990]), np.array([20]))


def test_masked_crc_and_framing():
    # masked = rotate right by 15, plus 0xa282ead8 (TFRecord's definition)
    c = 0x12345678
    rot = ((c >> 15) | (c << 17)) & 0xFFFFFFFF
    assert tr.mask_crc(c) == (rot + 0xA282EAD8) & 0xFFFFFFFF
    assert tr.mask_crc(np.array([c], dtype=np.uint32)).tolist() == [tr.mask_crc(c)]
    framed = tr.frame_record(b"abc")
    assert framed[:8] == struct.pack("<Q", 3) and framed[12:15] == b"abc"
    assert struct.unpack("<I", framed[8:12])[0] == tr.mask_crc(crc_oracle(framed[:8]))
    assert struct.unpack("<I", framed[15:])[0] == tr.mask_crc(crc_oracle(b"abc"))


def test_example_against_hand_encoding():
    # Example{features{feature{key: "a", value{int64_list{value: [1, 300]}}}}}, packed:
    # Int64List 0a 03 01 ac02 | Feature 1a 05 .. | entry 0a 01 'a' 12 07 .. | Features 0a 0c ..
    # | Example 0a 0e ..
    want = bytes.fromhex("0a0e" "0a0c" "0a0161" "1207" "1a05" "0a03" "01ac02")
    assert tr.encode_example({"a": [1, 300]}) == want
    assert tr.decode_example(want) == {"a": [1, 300]}
    # the same list unpacked (field 1 as two varints), as older writers emit it
    unpacked = bytes.fromhex("0a0e" "0a0c" "0a0161" "1207" "1a05" "0801" "08ac02")
    assert tr.decode_example(unpacked) == {"a": [1, 300]}


def test_example_round_trip_types():
    feats = {"img": b"\x00\xff" * 50, "txt": "knee pad", "label": 615, "neg": [-1, -(2 ** 63)],
             "big": [2 ** 62], "f": [0.1, -2.5, 1.0], "multi": [b"x", b"", b"yz"]}
    got = tr.decode_example(tr.encode_example(feats))
    assert got["img"] == [feats["img"]] and got["txt"] == [b"knee pad"]
    assert got["label"] == [615] and got["neg"] == [-1, -(2 ** 63)] and got["big"] == [2 ** 62]
    assert got["f"] == pytest.approx(np.float32([0.1, -2.5, 1.0]).tolist())
    assert got["multi"] == [b"x", b"", b"yz"]
    assert tr.decode_example(tr.encode_example(feats), keys={"label"}) == {"label": [615]}
    with pytest.raises(ValueError, match="empty"):
        tr.encode_example({"x": []})


def test_example_malformed():
    good = tr.encode_example({"a": [1, 300]})
    with pytest.raises(ValueError):
        tr.decode_example(good[:-1])  # the last varint cut
    with pytest.raises(ValueError):
        tr.decode_example(b"\x0a\x20" + good)  # a length past the end
    # an unknown field of Example is skipped
    assert tr.decode_example(b"\x10\x05" + good) == {"a": [1, 300]}


def test_scan_records_and_damage(tmp_path):
    path = str(tmp_path / "f")
    records = [b"first", b"", os.urandom(700), b"last"]
    assert tr.write_records(path, records) == 4
    offsets, lengths = tr.scan_records(path)
    assert lengths.tolist() == [5, 0, 700, 4]
    assert [tr.read_record(path, o, n) for o, n in zip(offsets, lengths)] == records
    with open(path, "rb") as f:
        raw = f.read()

    def damaged(data: bytes) -> str:
        p = str(tmp_path / "bad")
        with open(p, "wb") as f:
            f.write(data)
        return p

    third = int(offsets[2]) - 12  # the record's header offset
    flipped = bytearray(raw)
    flipped[int(offsets[2]) + 100] ^= 0x40
    with pytest.raises(DataError, match=rf"bad: the data CRC of record 2 \(at offset {third}\)"):
        tr.scan_records(damaged(bytes(flipped)))
    flipped = bytearray(raw)
    flipped[third + 1] ^= 1  # the length
    with pytest.raises(DataError, match=f"length CRC of the record at offset {third}"):
        tr.scan_records(damaged(bytes(flipped)))
    with pytest.raises(DataError, match="truncated"):
        tr.scan_records(damaged(raw[:-3]))
    with pytest.raises(DataError, match="truncated record header"):
        tr.scan_records(damaged(raw + b"\x01\x02"))
    assert tr.scan_records(damaged(b""))[0].tolist() == []
