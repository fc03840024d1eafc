"""TensorFlow checkpoints (the V2 "tensor bundle" format) read without TensorFlow.

A checkpoint ``PREFIX`` is a metadata file ``PREFIX.index`` and data files
``PREFIX.data-SSSSS-of-NNNNN`` (tensor_bundle/naming.cc: ``"%s.data-%05d-of-%05d"``, shard
``SSSSS`` of ``NNNNN``). The facts below were read in TensorFlow's sources
(tensorflow/core/lib/io/format.{h,cc}, block.cc, table_options.h, table_format.txt, which points
to LevelDB's doc/table_format.txt; tensorflow/core/protobuf/tensor_bundle.proto;
tensorflow/core/util/tensor_bundle/tensor_bundle.cc) and checked against files TensorFlow 2.21
wrote (tests/data/fixtures/).

**The index** is a LevelDB-style table (an "SSTable") of sorted keys:

- the footer, the file's last 48 bytes: two block handles (the meta-index block's and the index
  block's; a handle is ``varint64 offset, varint64 size``), zero padding up to 40 bytes, then the
  magic number ``0xdb4775248b80fb57`` as a little-endian uint64;
- every block is followed by a 5-byte trailer: the compression type (0 none, 1 snappy; TensorFlow
  writes bundles uncompressed, tensor_bundle.cc ``TableBuilderOptions``, but its reader takes
  both, and so does this one: any other type is refused) and the masked CRC32C (TFRecord's mask)
  of the stored block bytes followed by that type byte;
- a block is entries, then ``uint32 restarts[n]``, then ``uint32 n`` (little-endian). An entry
  is ``varint32 shared, varint32 non_shared, varint32 value_length``, the key's last
  ``non_shared`` bytes (its first ``shared`` bytes are the previous key's), then the value; at a
  restart offset ``shared`` is 0;
- the index block maps, for each data block, a key >= that block's last key to the data block's
  handle; the meta-index block is empty (TensorFlow's tables hold no filters) and not read.

**The entries**: key ``""`` holds a ``BundleHeaderProto`` (``int32 num_shards = 1``,
``Endianness endianness = 2`` (0 little, 1 big), ``VersionDef version = 3``: ``int32 producer =
1, int32 min_consumer = 2, repeated int32 bad_consumers = 3``); every other key is a tensor's
name and holds a ``BundleEntryProto``: ``DataType dtype = 1``, ``TensorShapeProto shape = 2``
(``repeated Dim dim = 2`` of ``int64 size = 1``; ``bool unknown_rank = 3``), ``int32 shard_id =
3``, ``int64 offset = 4``, ``int64 size = 5``, ``fixed32 crc32c = 6`` (the masked CRC32C of the
tensor's bytes), ``repeated TensorSliceProto slices = 7`` (set only for a partitioned variable,
whose slices are stored under other keys: refused here).

**The data**: a tensor of a fixed-size dtype is its ``size`` bytes, row-major, at ``offset`` of
shard ``shard_id``, in the writer's byte order. A string tensor is ``varint64`` lengths, a
4-byte masked CRC32C of the lengths (each as a little-endian uint32, or uint64 above 2**32 - 1),
then the strings' bytes; its entry's CRC covers those lengths (as uint32/uint64), the 4 checksum
bytes and the strings. The bundle's version is checked as TensorFlow does (``CheckVersions``
with consumer version 1, minimum producer 0).

Supported dtypes: float16/32/64, bfloat16 (widened to float32 exactly, or its raw uint16 bits),
int8/16/32/64, uint8/16/32/64, bool, complex64/128 and string (an object array of bytes).
Refused: quantized types, resource, variant, the float8, float4, int4 and int2 types, big-endian
bundles, partitioned variables. Every malformed, truncated or missing file raises DataError
naming it.
"""
from __future__ import annotations

import glob
import math
import os
import re
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mlperf_fast.data.tfrecord import as_int64, crc32c, iter_fields, mask_crc, read_varint
from mlperf_fast.harness.workload import DataError

INDEX_SUFFIX = ".index"
FOOTER_SIZE = 48  # format.h Footer::kEncodedLength: 2 * BlockHandle::kMaxEncodedLength + 8
TABLE_MAGIC = 0xDB4775248B80FB57  # format.h kTableMagicNumber
BLOCK_TRAILER = 5  # format.h kBlockTrailerSize: 1-byte type + 32-bit crc
COMPRESSION_NONE, COMPRESSION_SNAPPY = 0, 1  # table_options.h CompressionType
BUNDLE_VERSION = 1  # tensor_bundle.cc kTensorBundleVersion: the consumer version we implement
BUNDLE_MIN_PRODUCER = 0  # kTensorBundleMinProducer
_DATA_FILE = re.compile(r"(.*)\.data-\d{5}-of-\d{5}")

#: types.proto DataType -> (name, numpy dtype of the stored bytes, little-endian)
DTYPES: dict[int, tuple[str, str | None]] = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
    5: ("int16", "<i2"), 6: ("int8", "i1"), 7: ("string", None), 8: ("complex64", "<c8"),
    9: ("int64", "<i8"), 10: ("bool", "?"), 14: ("bfloat16", "<u2"), 17: ("uint16", "<u2"),
    18: ("complex128", "<c16"), 19: ("float16", "<f2"), 22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
}
_STORED = {name: np.dtype(code) for name, code in DTYPES.values() if code is not None}
#: the other DataType values, named in the refusal
_UNSUPPORTED = {0: "DT_INVALID", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16",
                16: "quint16", 20: "resource", 21: "variant", 24: "float8_e5m2",
                25: "float8_e4m3fn", 26: "float8_e4m3fnuz", 27: "float8_e4m3b11fnuz",
                28: "float8_e5m2fnuz", 29: "int4", 30: "uint4", 31: "int2", 32: "uint2",
                33: "float4_e2m1fn"}


@dataclass(frozen=True)
class BundleHeader:
    """The index's header entry (BundleHeaderProto)."""

    num_shards: int
    endianness: int  # 0 little, 1 big
    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...]


@dataclass(frozen=True)
class TensorEntry:
    """Where a tensor lies and what it is (BundleEntryProto). ``dtype`` is one of DTYPES' names
    (or ``"unsupported:NAME"``); ``crc32c`` the masked CRC as stored; ``slices`` the number of
    slices of a partitioned variable (0 for a plain tensor)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)  # Python integers: a corrupt shape cannot overflow


# -- snappy -------------------------------------------------------------------------------------
def snappy_uncompress(data: bytes | memoryview) -> bytes:
    """Snappy's raw block format (format_description.txt of google/snappy): a varint of the
    uncompressed length, then elements by the low 2 bits of a tag byte: 0 a literal (length - 1
    in the tag's upper 6 bits, or in the 1-4 bytes after it when those read 60-63), 1 a copy of
    4-11 bytes with an 11-bit offset, 2 a copy of 1-64 bytes with a 2-byte offset, 3 the same
    with a 4-byte offset (copies may overlap their output). ValueError on malformed input."""
    buf = memoryview(data).cast("B")
    end = len(buf)
    want, pos = read_varint(buf, 0, end)
    if want >= 1 << 32:
        raise ValueError(f"snappy: an uncompressed length of {want} bytes is over the format's "
                         "limit of 2**32 - 1")
    out = bytearray()
    while pos < end:
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > end:
                    raise ValueError("snappy: a literal's length runs past the end")
                length = int.from_bytes(buf[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > end:
                raise ValueError("snappy: a literal runs past the end")
            out += buf[pos:pos + length]
            pos += length
        else:
            if kind == 1:
                length, extra = ((tag >> 2) & 7) + 4, 1
            else:
                length, extra = (tag >> 2) + 1, 2 if kind == 2 else 4
            if pos + extra > end:
                raise ValueError("snappy: a copy's offset runs past the end")
            offset = int.from_bytes(buf[pos:pos + extra], "little")
            pos += extra
            if kind == 1:
                offset |= (tag >> 5) << 8
            if offset == 0 or offset > len(out):
                raise ValueError(f"snappy: a copy from offset {offset} with {len(out)} bytes "
                                 "written")
            start = len(out) - offset
            if offset >= length:
                out += out[start:start + length]
            else:  # an overlapping copy repeats the last ``offset`` bytes
                out += (bytes(out[start:]) * (length // offset + 1))[:length]
        if len(out) > want:
            raise ValueError(f"snappy: more than the {want} bytes announced")
    if len(out) != want:
        raise ValueError(f"snappy: {len(out)} bytes decoded, {want} announced")
    return bytes(out)


# -- the table (.index) -------------------------------------------------------------------------
def _handle(buf: memoryview, pos: int, end: int) -> tuple[int, int, int]:
    """A BlockHandle at ``buf[pos:end]``: (offset, size, position after it)."""
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return offset, size, pos


def _read_block(raw: bytes, path: str, offset: int, size: int, what: str) -> bytes:
    """The contents of the block at ``offset`` (``size`` stored bytes, then the trailer), its
    CRC checked and uncompressed."""
    stop = offset + size + BLOCK_TRAILER
    if stop > len(raw) - FOOTER_SIZE:
        raise DataError(f"{path}: the {what} (offset {offset}, {size} bytes) runs past the end "
                        f"of the table ({len(raw)} bytes): the file is truncated or corrupt")
    stored = raw[offset:offset + size + 1]  # the contents and the type byte
    (want,) = struct.unpack_from("<I", raw, offset + size + 1)
    if mask_crc(crc32c(stored)) != want:
        raise DataError(f"{path}: the {what} at offset {offset} fails its CRC32C check: the "
                        "file is corrupt")
    kind = stored[-1]
    if kind == COMPRESSION_NONE:
        return stored[:-1]
    if kind == COMPRESSION_SNAPPY:
        try:
            return snappy_uncompress(memoryview(stored)[:-1])
        except ValueError as e:
            raise DataError(f"{path}: the {what} at offset {offset} is not valid snappy ({e})"
                            ) from e
    raise DataError(f"{path}: the {what} at offset {offset} has compression type {kind}; only "
                    f"{COMPRESSION_NONE} (none) and {COMPRESSION_SNAPPY} (snappy) are supported")


def _block_entries(block: bytes, path: str, what: str) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of a block, keys rebuilt from their shared prefixes and checked
    to increase, the restart array checked against the entries."""
    size = len(block)
    if size < 4:
        raise DataError(f"{path}: the {what} is {size} bytes, too short for its restart count")
    (n,) = struct.unpack_from("<I", block, size - 4)
    if n > (size - 4) // 4:
        raise DataError(f"{path}: the {what} announces {n} restart points, more than its "
                        f"{size} bytes hold")
    limit = size - 4 * (n + 1)
    restarts = struct.unpack_from(f"<{n}I", block, limit)
    buf = memoryview(block)
    entries: list[tuple[bytes, bytes]] = []
    fresh: set[int] = set()  # offsets of entries with no shared prefix: where restarts may point
    key = b""
    pos = 0
    try:
        while pos < limit:
            start = pos
            shared, pos = read_varint(buf, pos, limit)
            non_shared, pos = read_varint(buf, pos, limit)
            length, pos = read_varint(buf, pos, limit)
            if shared > len(key):
                raise ValueError(f"an entry shares {shared} bytes of a {len(key)}-byte key")
            if pos + non_shared + length > limit:
                raise ValueError("an entry runs past the block's restart array")
            new = key[:shared] + block[pos:pos + non_shared]
            if entries and new <= key:
                raise ValueError(f"key {new!r} does not follow {key!r} in order")
            key = new
            entries.append((key, block[pos + non_shared:pos + non_shared + length]))
            if shared == 0:
                fresh.add(start)
            pos += non_shared + length
    except ValueError as e:
        raise DataError(f"{path}: a bad entry in the {what} at byte {pos} ({e}): the file is "
                        "corrupt") from e
    bad = [r for r in restarts if r not in fresh and not (r == 0 and not entries)]
    if bad:
        raise DataError(f"{path}: the {what}'s restart point {bad[0]} is not the start of an "
                        "entry with a whole key: the file is corrupt")
    return entries


def read_table(path: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table file ``path``, in key order, after checking its footer,
    each block's CRC and the order of its keys. Raises DataError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e})") from e
    if len(raw) < FOOTER_SIZE:
        raise DataError(f"{path} is {len(raw)} bytes, shorter than a table's {FOOTER_SIZE}-byte "
                        "footer: truncated, or not a checkpoint index")
    (magic,) = struct.unpack_from("<Q", raw, len(raw) - 8)
    if magic != TABLE_MAGIC:
        raise DataError(f"{path} does not end with the table magic number (0x{magic:016x}): "
                        "truncated, or not a TensorFlow checkpoint index")
    footer = memoryview(raw)[len(raw) - FOOTER_SIZE:len(raw) - 8]
    try:
        _, _, pos = _handle(footer, 0, len(footer))  # the meta-index: empty, no filters
        index_offset, index_size, _ = _handle(footer, pos, len(footer))
    except ValueError as e:
        raise DataError(f"{path}: the footer's block handles are malformed ({e})") from e
    index = _block_entries(_read_block(raw, path, index_offset, index_size, "index block"),
                           path, "index block")
    out: list[tuple[bytes, bytes]] = []
    for i, (separator, value) in enumerate(index):
        what = f"data block {i}"
        try:
            offset, size, stop = _handle(memoryview(value), 0, len(value))
        except ValueError as e:
            raise DataError(f"{path}: the index's handle of {what} is malformed ({e})") from e
        if stop != len(value):
            raise DataError(f"{path}: the index's handle of {what} has {len(value) - stop} "
                            "bytes after it: the file is corrupt")
        entries = _block_entries(_read_block(raw, path, offset, size, what), path, what)
        if entries and (entries[-1][0] > separator or (out and entries[0][0] <= out[-1][0])):
            raise DataError(f"{path}: the keys of {what} are out of order with the index: the "
                            "file is corrupt")
        out += entries
    return out


# -- the bundle's protos ------------------------------------------------------------------------
def _header(value: bytes) -> BundleHeader:
    buf = memoryview(value)
    num_shards = endianness = producer = min_consumer = 0
    bad: list[int] = []
    for number, wire, v in iter_fields(buf, 0, len(buf)):
        if number == 1 and wire == 0:
            num_shards = as_int64(v)
        elif number == 2 and wire == 0:
            endianness = v
        elif number == 3 and wire == 2:
            for n2, w2, v2 in iter_fields(buf, *v):  # VersionDef
                if n2 == 1 and w2 == 0:
                    producer = as_int64(v2)
                elif n2 == 2 and w2 == 0:
                    min_consumer = as_int64(v2)
                elif n2 == 3 and w2 == 0:
                    bad.append(as_int64(v2))
                elif n2 == 3 and w2 == 2:  # packed
                    p, stop = v2
                    while p < stop:
                        x, p = read_varint(buf, p, stop)
                        bad.append(as_int64(x))
    return BundleHeader(num_shards, endianness, producer, min_consumer, tuple(bad))


def _shape(buf: memoryview, start: int, stop: int) -> tuple[int, ...]:
    dims: list[int] = []
    for number, wire, v in iter_fields(buf, start, stop):
        if number == 2 and wire == 2:  # Dim
            size = 0
            for n2, w2, v2 in iter_fields(buf, *v):
                if n2 == 1 and w2 == 0:
                    size = as_int64(v2)
            if size < 0:
                raise ValueError(f"a dimension of unknown size ({size})")
            dims.append(size)
        elif number == 3 and wire == 0 and v:
            raise ValueError("a shape of unknown rank")
    return tuple(dims)


def _entry(name: str, value: bytes) -> TensorEntry:
    buf = memoryview(value)
    dtype = shard_id = offset = size = crc = slices = 0
    shape: tuple[int, ...] = ()
    for number, wire, v in iter_fields(buf, 0, len(buf)):
        if number == 1 and wire == 0:
            dtype = v
        elif number == 2 and wire == 2:
            shape = _shape(buf, *v)
        elif number == 3 and wire == 0:
            shard_id = as_int64(v)
        elif number == 4 and wire == 0:
            offset = as_int64(v)
        elif number == 5 and wire == 0:
            size = as_int64(v)
        elif number == 6 and wire == 5:
            (crc,) = struct.unpack_from("<I", buf, v[0])
        elif number == 7 and wire == 2:
            slices += 1
    if offset < 0 or size < 0:
        raise ValueError(f"a negative offset ({offset}) or size ({size})")
    kind = DTYPES[dtype][0] if dtype in DTYPES else \
        f"unsupported:{_UNSUPPORTED.get(dtype, f'DataType {dtype}')}"
    return TensorEntry(name, kind, shape, shard_id, offset, size, crc, slices)


def checkpoint_prefix(path: str | os.PathLike) -> str:
    """The prefix of the checkpoint at ``path``: the prefix itself, its ``.index`` file, one of
    its data files, or a folder (its TensorFlow ``checkpoint`` state file's
    ``model_checkpoint_path``, or the folder's only ``*.index``)."""
    p = os.fspath(path)
    if p.endswith(INDEX_SUFFIX):
        return p[:-len(INDEX_SUFFIX)]
    m = _DATA_FILE.fullmatch(p)
    if m:
        return m.group(1)
    if os.path.isdir(p):
        state = os.path.join(p, "checkpoint")
        if os.path.isfile(state):
            with open(state, encoding="utf-8") as f:
                m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', f.read(), re.MULTILINE)
            if m:
                return os.path.join(p, m.group(1))  # an absolute path stays absolute
        found = sorted(glob.glob(os.path.join(glob.escape(p), "*" + INDEX_SUFFIX)))
        if len(found) != 1:
            raise DataError(f"{p} is a folder with {len(found)} checkpoint indexes (*.index) "
                            "and no 'checkpoint' file naming one: give the checkpoint's prefix")
        return found[0][:-len(INDEX_SUFFIX)]
    return p


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
    """naming.cc DataFilename: ``PREFIX.data-SSSSS-of-NNNNN``."""
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def read_index(path: str | os.PathLike) -> tuple[BundleHeader, dict[str, TensorEntry]]:
    """The header and every tensor's entry of the checkpoint at ``path`` (see
    :func:`checkpoint_prefix`), by name in key order, without reading any tensor. Raises
    DataError naming the index on a malformed file or an unreadable version or byte order."""
    prefix = checkpoint_prefix(path)
    index = prefix + INDEX_SUFFIX
    if not os.path.isfile(index):
        raise DataError(f"{index} does not exist: {os.fspath(path)} is not the prefix of a "
                        "TensorFlow V2 checkpoint (PREFIX.index and PREFIX.data-*-of-* files)")
    table = read_table(index)
    if not table or table[0][0] != b"":
        raise DataError(f"{index} has no header entry (key ''): not a tensor bundle")
    try:
        header = _header(table[0][1])
    except ValueError as e:
        raise DataError(f"{index}: the header entry is not a BundleHeaderProto ({e})") from e
    if header.endianness != 0:
        raise DataError(f"{index}: the bundle was written big-endian (endianness "
                        f"{header.endianness}); only little-endian bundles are supported")
    if header.producer < BUNDLE_MIN_PRODUCER or header.min_consumer > BUNDLE_VERSION or \
            BUNDLE_VERSION in header.bad_consumers:
        raise DataError(f"{index}: bundle version producer {header.producer}, min_consumer "
                        f"{header.min_consumer}, bad_consumers {list(header.bad_consumers)}: "
                        f"this reader implements version {BUNDLE_VERSION}")
    entries: dict[str, TensorEntry] = {}
    for key, value in table[1:]:
        name = key.decode("utf-8", "backslashreplace")
        try:
            entries[name] = _entry(name, value)
        except ValueError as e:
            raise DataError(f"{index}: the entry of {name!r} is not a valid BundleEntryProto "
                            f"({e})") from e
    return header, entries


# -- the data -----------------------------------------------------------------------------------
def _strings(raw: np.ndarray, e: TensorEntry, where: str) -> tuple[np.ndarray, int]:
    """A string tensor's values (object array of bytes) and the CRC32C of its bytes as its
    entry's checksum covers them."""
    buf = memoryview(raw)
    n = e.numel
    if not len(raw) and not n:  # TensorFlow's reader takes an empty entry as it is
        return np.empty(e.shape, dtype=object), 0
    lengths, pos = [], 0
    try:
        for _ in range(n):
            length, pos = read_varint(buf, pos, len(buf))
            lengths.append(length)
    except ValueError as ex:
        raise DataError(f"{where}: the string lengths are malformed ({ex})") from ex
    as_crc = b"".join(struct.pack("<I" if x < 1 << 32 else "<Q", x) for x in lengths)
    if pos + 4 + sum(lengths) != len(raw):
        raise DataError(f"{where}: {len(raw)} bytes hold {pos} of lengths, 4 of checksum and "
                        f"{sum(lengths)} of strings in total: the entry is corrupt")
    (check,) = struct.unpack_from("<I", buf, pos)
    if mask_crc(crc32c(as_crc)) != check:
        raise DataError(f"{where}: the checksum of the string lengths does not match: the file "
                        "is corrupt")
    # the entry's CRC: the lengths as fixed-width integers, then the bytes from the checksum on
    crc = crc32c(as_crc + bytes(buf[pos:]))
    pos += 4
    out = np.empty(n, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = bytes(buf[pos:pos + length])
        pos += length
    return out.reshape(e.shape), crc


def _tensor(raw: np.ndarray, e: TensorEntry, where: str, bfloat16: str) -> np.ndarray:
    """The array of a fixed-size dtype from its bytes (checked in size first)."""
    stored = _STORED[e.dtype]
    if e.size != e.numel * stored.itemsize:
        raise DataError(f"{where}: {e.size} bytes for {e.numel} elements of {e.dtype}: the entry "
                        "is corrupt")
    a = raw.view(stored).reshape(e.shape)
    if e.dtype == "bfloat16" and bfloat16 == "float32":
        # bfloat16 is float32's upper half: widening is exact
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(a.dtype.newbyteorder("="), copy=False)


def _read_shard(f, data: str, group: list[TensorEntry], bfloat16: str
                ) -> dict[str, np.ndarray]:
    """The tensors of ``group`` from the open data file ``f`` (named ``data``), read in one
    forward pass, each checked against its CRC32C."""
    out: dict[str, np.ndarray] = {}
    file_size = os.fstat(f.fileno()).st_size
    for e in sorted(group, key=lambda e: e.offset):
        where = f"{data}: tensor {e.name!r}"
        if e.offset + e.size > file_size:
            raise DataError(f"{where} lies at bytes {e.offset}..{e.offset + e.size} of a "
                            f"{file_size}-byte file: the file is truncated")
        raw = np.empty(e.size, dtype=np.uint8)
        f.seek(e.offset)
        if f.readinto(raw) != e.size:
            raise DataError(f"{where}: the file ended early (changed while read?)")
        if e.dtype == "string":
            value, crc = _strings(raw, e, where)
        else:
            value = _tensor(raw, e, where, bfloat16)
            crc = crc32c(raw.data)
        if mask_crc(crc) != e.crc32c:
            raise DataError(f"{where} fails its CRC32C check: the file is corrupt")
        out[e.name] = value
    return out


def read_tf_checkpoint(path: str | os.PathLike,
                       names: Collection[str] | Callable[[str], bool] | None = None, *,
                       bfloat16: Literal["float32", "uint16"] = "float32"
                       ) -> dict[str, np.ndarray]:
    """The tensors of the TensorFlow checkpoint at ``path`` (its prefix, its ``.index``, a data
    file, or a folder: :func:`checkpoint_prefix`) as ``{name: numpy array}`` in the index's
    order, each one's CRC32C verified.

    ``names``: every tensor (None), those named (KeyError for a name not in the checkpoint), or
    those for which the callable is true; the others' bytes are not read. ``bfloat16``: how
    bfloat16 tensors come back, widened to float32 (exact) or as their raw bits in uint16 (for
    ``torch.from_numpy(a).view(torch.bfloat16)``). Strings come back as object arrays of bytes.

    Raises DataError naming the file (and the tensor) on a malformed index, a missing or
    truncated data file, a checksum that does not match, an unsupported dtype, a partitioned
    variable."""
    if bfloat16 not in ("float32", "uint16"):
        raise ValueError(f"bfloat16 must be 'float32' or 'uint16', got {bfloat16!r}")
    prefix = checkpoint_prefix(path)
    header, entries = read_index(prefix)
    if isinstance(names, str):  # one name, not its characters
        names = [names]
    if names is None:
        chosen = list(entries.values())
    elif callable(names):
        chosen = [e for n, e in entries.items() if names(n)]
    else:
        missing = [n for n in names if n not in entries]
        if missing:
            raise KeyError(f"{prefix}{INDEX_SUFFIX} has no tensor named {missing[0]!r} "
                           f"({len(missing)} of the names asked for are missing)")
        wanted = set(names)
        chosen = [e for n, e in entries.items() if n in wanted]
    index = prefix + INDEX_SUFFIX
    for e in chosen:
        if e.slices:
            raise DataError(f"{index}: {e.name!r} is a partitioned variable ({e.slices} slices); "
                            "reading partitioned variables is not supported")
        if e.dtype.startswith("unsupported:"):
            raise DataError(f"{index}: {e.name!r} has dtype {e.dtype.split(':', 1)[1]}, which "
                            "this reader does not support")
        if not 0 <= e.shard_id < header.num_shards:
            raise DataError(f"{index}: {e.name!r} is in shard {e.shard_id}, but the bundle has "
                            f"{header.num_shards} shards: the index is corrupt")
    out: dict[str, np.ndarray] = {}
    by_shard: dict[int, list[TensorEntry]] = {}
    for e in chosen:
        by_shard.setdefault(e.shard_id, []).append(e)
    for shard, group in sorted(by_shard.items()):
        data = data_filename(prefix, shard, header.num_shards)
        if not os.path.isfile(data):
            raise DataError(f"{data} is missing: the index {index} names {header.num_shards} "
                            f"data shard(s), and {group[0].name!r} is in shard {shard}")
        try:
            with open(data, "rb") as f:
                out.update(_read_shard(f, data, group, bfloat16))
        except OSError as ex:
            raise DataError(f"{data} cannot be read ({ex})") from ex
    return {e.name: out[e.name] for e in chosen}
