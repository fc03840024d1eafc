"""TensorFlow checkpoints read without TensorFlow, against checkpoints that TensorFlow 2.21 wrote
(tests/data/fixtures/tf_checkpoints/, made by make_tf_checkpoints.py there): every value equal to
what TensorFlow's own reader returned (manifest.json), every dtype, scalars and empty tensors,
strings, two data shards, an index of snappy-compressed blocks, and the refusals: damaged
bytes, truncated and missing files, partitioned variables, unsupported compression; the snappy
decoder on hand-made streams."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from mlperf_fast.data import tf_checkpoint as tc
from mlperf_fast.data.tfrecord import crc32c, mask_crc
from mlperf_fast.harness.workload import DataError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tf_checkpoints")
with open(os.path.join(FIXTURES, "manifest.json")) as _f:
    MANIFEST = json.load(_f)


def copy(name: str, tmp_path) -> str:
    """The fixture checkpoint ``name`` copied into ``tmp_path`` (to be damaged there)."""
    for f in os.listdir(FIXTURES):
        if f.startswith(name + "."):
            shutil.copyfile(os.path.join(FIXTURES, f), tmp_path / f)
    return str(tmp_path / name)


def check_against_tensorflow(got: dict[str, np.ndarray], want: dict[str, dict]) -> None:
    assert sorted(got) == sorted(want)
    for name, row in want.items():
        value = got[name]
        assert list(value.shape) == row["shape"], name
        if row["dtype"] == "string":
            assert value.dtype == object, name
            assert [x.hex() for x in value.reshape(-1)] == row["strings"], name
            continue
        want_dtype = "uint16" if row["dtype"] == "bfloat16" else row["dtype"]
        assert value.dtype == np.dtype(want_dtype), name
        data = value.astype(value.dtype.newbyteorder("<")).tobytes()
        if "hex" in row:
            assert data.hex() == row["hex"], name
        else:
            assert hashlib.sha256(data).hexdigest()[:16] == row["sha256_16"], name


@pytest.mark.parametrize("name", ["dtypes", "sharded", "sliced_plain", "bert_tiny"])
def test_values_equal_tensorflows(name):
    if name == "sliced_plain":  # the plain tensor beside a partitioned one
        got = tc.read_tf_checkpoint(os.path.join(FIXTURES, "sliced"), ["plain"])
        check_against_tensorflow(got, {"plain": MANIFEST["sliced"]["plain"]})
        return
    got = tc.read_tf_checkpoint(os.path.join(FIXTURES, name), bfloat16="uint16")
    check_against_tensorflow(got, MANIFEST[name])


def test_dtypes_shapes_and_names():
    got = tc.read_tf_checkpoint(os.path.join(FIXTURES, "dtypes"))
    assert list(got) == sorted(got)  # the index's (byte) order
    assert got["float32/scalar"].shape == () and got["float32/scalar"] == np.float32(-3.25)
    assert got["int64/scalar"] == -(2 ** 40) - 5 and got["int64/scalar"].dtype == np.int64
    assert got["empty/float32"].shape == (0, 3) and got["empty/string"].shape == (0,)
    assert got["uint64/vector"].tolist() == [0, 2 ** 63 + 5, 2 ** 64 - 1]
    assert got["bool/matrix"].tolist() == [[True, False], [False, True]]
    assert got["string/vector"].tolist() == [b"", b"abc", "\u00fcn\u00efcode".encode(),
                                             bytes(range(200))]
    assert got["string/scalar"].shape == () and got["string/scalar"].item() == b"hello"
    assert got["long/" + "n" * 150].tolist() == [0, 1, 2]
    assert [got[f"many/k{i:02d}"].item() for i in range(20)] == [i * i - 50 for i in range(20)]
    # bfloat16 widened to float32 is its bits shifted up: exact
    bits = tc.read_tf_checkpoint(os.path.join(FIXTURES, "dtypes"), ["bfloat16/matrix"],
                                 bfloat16="uint16")["bfloat16/matrix"]
    wide = got["bfloat16/matrix"]
    assert wide.dtype == np.float32
    assert (wide.view(np.uint32) == bits.astype(np.uint32) << 16).all()
    for array in got.values():
        assert array.flags.writeable  # torch.from_numpy takes them without a warning


def test_index_entries_and_paths():
    prefix = os.path.join(FIXTURES, "sharded")
    header, entries = tc.read_index(prefix + ".index")
    assert header.num_shards == 2 and header.endianness == 0 and header.producer == 1
    assert {e.shard_id for e in entries.values()} == {0, 1}  # both shards hold tensors
    e = entries["a/first"]
    assert e.dtype == "float32" and e.shape == (2, 2) and e.size == 16 and e.numel == 4
    # a prefix, its index, a data file and the folder's 'checkpoint'-less lookup all agree
    data = prefix + ".data-00001-of-00002"
    assert tc.checkpoint_prefix(prefix + ".index") == tc.checkpoint_prefix(data) == prefix
    assert tc.data_filename(prefix, 1, 2) == data
    assert tc.read_tf_checkpoint(data, ["d/fourth"])["d/fourth"].tolist() == [0, 1, 2, 3]


def test_folder_and_state_file(tmp_path):
    copy("sharded", tmp_path)
    assert tc.checkpoint_prefix(tmp_path) == str(tmp_path / "sharded")  # the only index
    copy("dtypes", tmp_path)
    with pytest.raises(DataError, match="2 checkpoint indexes"):
        tc.checkpoint_prefix(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "dtypes"\n'
                                         'all_model_checkpoint_paths: "dtypes"\n')
    assert tc.checkpoint_prefix(tmp_path) == str(tmp_path / "dtypes")


def test_snappy_index_reads_alike():
    """The same entries in small snappy-compressed blocks with a restart every 4 keys (written
    from LevelDB's spec and read back by TensorFlow before it was kept)."""
    snappy = os.path.join(FIXTURES, "snappy")
    table = tc.read_table(snappy + ".index")
    assert table == tc.read_table(os.path.join(FIXTURES, "dtypes.index"))
    check_against_tensorflow(tc.read_tf_checkpoint(snappy, bfloat16="uint16"),
                             MANIFEST["dtypes"])
    with open(snappy + ".index", "rb") as f:
        raw = f.read()
    _, _, pos = tc._handle(memoryview(raw), len(raw) - 48, len(raw))
    offset, size, _ = tc._handle(memoryview(raw), pos, len(raw))
    assert raw[offset + size] == tc.COMPRESSION_SNAPPY  # the index block's trailer
    blocks = tc._block_entries(tc.snappy_uncompress(raw[offset:offset + size]), "", "index")
    assert len(blocks) > 5


def test_names_filter_reads_only_those(tmp_path):
    prefix = copy("dtypes", tmp_path)
    _, entries = tc.read_index(prefix)
    bad = entries["float32/rank3"]
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:  # damage one tensor: the others still read
        f.seek(bad.offset + 5)
        byte = f.read(1)
        f.seek(bad.offset + 5)
        f.write(bytes([byte[0] ^ 0x10]))
    assert tc.read_tf_checkpoint(prefix, ["int8/vector"])["int8/vector"].tolist() == \
        [-128, -1, 0, 127]
    got = tc.read_tf_checkpoint(prefix, lambda n: n.startswith("uint"))
    assert sorted(got) == ["uint16/vector", "uint32/vector", "uint64/vector", "uint8/vector"]
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        tc.read_tf_checkpoint(prefix, ["int8/vector", "nope"])
    with pytest.raises(DataError, match=r"dtypes\.data-00000-of-00001: tensor 'float32/rank3' "
                                        "fails its CRC32C check"):
        tc.read_tf_checkpoint(prefix)


def test_corrupt_string_tensor(tmp_path):
    prefix = copy("dtypes", tmp_path)
    e = tc.read_index(prefix)[1]["string/vector"]
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(e.offset + e.size - 1)  # the last string's last byte
        f.write(b"\xee")
    with pytest.raises(DataError, match="'string/vector' fails its CRC32C"):
        tc.read_tf_checkpoint(prefix, ["string/vector"])
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(e.offset)  # the first length (0) -> 1: the length checksum no longer matches
        f.write(b"\x01")
    with pytest.raises(DataError, match="string lengths|bytes hold"):
        tc.read_tf_checkpoint(prefix, ["string/vector"])


def test_truncated_and_missing_files(tmp_path):
    prefix = copy("sharded", tmp_path)
    shard1 = prefix + ".data-00001-of-00002"
    with open(shard1, "r+b") as f:
        f.truncate(os.path.getsize(shard1) - 3)
    with pytest.raises(DataError, match=r"sharded\.data-00001-of-00002: tensor '.*' lies at bytes "
                                        r".* the file is truncated"):
        tc.read_tf_checkpoint(prefix)
    os.remove(shard1)
    with pytest.raises(DataError, match=r"sharded\.data-00001-of-00002 is missing: the index .* "
                                        r"names 2 data shard\(s\)"):
        tc.read_tf_checkpoint(prefix)
    # shard 0 alone still reads
    assert sorted(tc.read_tf_checkpoint(prefix, ["a/first", "c/third"])) == ["a/first",
                                                                             "c/third"]
    index = prefix + ".index"
    raw = Path(index).read_bytes()
    for cut in (len(raw) - 1, 30, 0):
        with open(index, "wb") as f:
            f.write(raw[:cut])
        with pytest.raises(DataError, match=r"sharded\.index"):
            tc.read_index(prefix)
    os.remove(index)
    with pytest.raises(DataError, match=r"sharded\.index does not exist"):
        tc.read_tf_checkpoint(prefix)
    with pytest.raises(DataError, match=r"not-here\.index does not exist"):
        tc.read_tf_checkpoint(tmp_path / "not-here")


def test_corrupt_index_blocks(tmp_path):
    prefix = copy("dtypes", tmp_path)
    index = prefix + ".index"
    raw = bytearray(Path(index).read_bytes())

    def damaged(data: bytes, match: str) -> None:
        with open(index, "wb") as f:
            f.write(data)
        with pytest.raises(DataError, match=match) as e:
            tc.read_tf_checkpoint(prefix)
        assert index in str(e.value)

    flipped = bytearray(raw)
    flipped[40] ^= 0x01  # inside the data block: its CRC no longer matches
    damaged(bytes(flipped), "data block 0 at offset 0 fails its CRC32C check")
    magic = bytearray(raw)
    magic[-1] ^= 0xFF
    damaged(bytes(magic), "magic number")
    # the data block's compression type set to 2, its CRC recomputed: refused by name
    _, _, pos = tc._handle(memoryview(raw), len(raw) - 48, len(raw))
    off, size, _ = tc._handle(memoryview(raw), pos, len(raw))
    index_block = tc._block_entries(bytes(raw[off:off + size]), index, "index block")
    data_off, data_size, _ = tc._handle(memoryview(index_block[0][1]), 0, len(index_block[0][1]))
    typed = bytearray(raw)
    typed[data_off + data_size] = 2
    typed[data_off + data_size + 1:data_off + data_size + 5] = struct.pack(
        "<I", mask_crc(crc32c(bytes(typed[data_off:data_off + data_size + 1]))))
    damaged(bytes(typed), r"compression type 2; only 0 \(none\) and 1 \(snappy\) are supported")
    damaged(bytes(raw[:-60]) + bytes(raw[-48:]), "runs past the end|CRC32C")


def test_partitioned_variable_refused():
    prefix = os.path.join(FIXTURES, "sliced")
    _, entries = tc.read_index(prefix)
    assert entries["part"].slices == 2 and entries["part"].shape == (4, 3)
    with pytest.raises(DataError, match="'part' is a partitioned variable .2 slices."):
        tc.read_tf_checkpoint(prefix)


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    return bytes(out + bytes([v]))


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table block with a restart at every entry (no shared prefixes: the simplest valid)."""
    block, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(block))
        block += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    restarts = restarts or [0]
    return bytes(block) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def build_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A one-data-block table of ``entries``, uncompressed, as LevelDB's table_format lays it."""
    out = bytearray()

    def put(block: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block + b"\x00" + struct.pack("<I", mask_crc(crc32c(block + b"\x00"))))
        return handle

    data = put(_block(entries))
    handles = put(_block([])) + put(_block([(entries[-1][0], data)]))
    return bytes(out) + handles + bytes(40 - len(handles)) + struct.pack("<Q", tc.TABLE_MAGIC)


def test_bundle_header_refusals(tmp_path):
    """A big-endian bundle, one that needs a newer reader and one whose entries name a shard it
    does not have, made by rewriting the header entry of a real index."""
    prefix = copy("sharded", tmp_path)
    index = prefix + ".index"
    table = tc.read_table(index)

    def rewritten(header: str) -> None:
        with open(index, "wb") as f:
            f.write(build_table([(b"", bytes.fromhex(header))] + table[1:]))

    rewritten("0802" "1a02" "0801")  # num_shards 2, version {producer 1}: as TensorFlow wrote
    assert tc.read_tf_checkpoint(prefix)["c/third"] == 3
    rewritten("0802" "1001" "1a02" "0801")  # endianness BIG
    with pytest.raises(DataError, match="sharded.index: the bundle was written big-endian"):
        tc.read_tf_checkpoint(prefix)
    rewritten("0802" "1a04" "08011002")  # min_consumer 2
    with pytest.raises(DataError, match="min_consumer 2"):
        tc.read_tf_checkpoint(prefix)
    rewritten("0801" "1a02" "0801")  # one shard: shard 1 does not exist
    with pytest.raises(DataError, match="in shard 1, but the bundle has 1 shards"):
        tc.read_tf_checkpoint(prefix)
    with open(index, "wb") as f:  # an entry that is not a BundleEntryProto
        f.write(build_table(table[:1] + [(b"a/first", b"\x0f")] + table[2:]))
    with pytest.raises(DataError, match="the entry of 'a/first' is not a valid BundleEntryProto"):
        tc.read_index(prefix)


def test_snappy_decoder():
    # 'abcd' as a literal, then copies: 1-byte offset (4 back, 4 bytes), overlapping 2-byte
    # offset (1 back, 6 bytes: 'dddddd'), 4-byte offset (8 back, 3 bytes)
    stream = (_varint(4 + 4 + 6 + 3) + bytes([3 << 2]) + b"abcd"
              + bytes([((4 - 4) << 2) | 1, 4])
              + bytes([((6 - 1) << 2) | 2]) + struct.pack("<H", 1)
              + bytes([((3 - 1) << 2) | 3]) + struct.pack("<I", 8))
    assert tc.snappy_uncompress(stream) == b"abcdabcddddddd" + b"cdd"
    # a literal of 100 bytes: its length in one extra byte (tag 60)
    payload = bytes(range(100))
    assert tc.snappy_uncompress(_varint(100) + bytes([60 << 2, 99]) + payload) == payload
    assert tc.snappy_uncompress(_varint(0)) == b""
    bad = {
        "copy from offset 5": _varint(8) + bytes([3 << 2]) + b"abcd" + bytes([1, 5]),
        "runs past the end": _varint(4) + bytes([3 << 2]) + b"ab",
        "2 bytes decoded, 3 announced": _varint(3) + bytes([1 << 2]) + b"ab",
        "more than the 1 bytes": _varint(1) + bytes([1 << 2]) + b"ab",
        "offset runs past": _varint(4) + bytes([0, 97, 2]),
    }
    for match, data in bad.items():
        with pytest.raises(ValueError, match=match):
            tc.snappy_uncompress(data)
