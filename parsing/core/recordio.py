"""insightface / mxnet RecordIO (``train.rec`` + ``train.idx``) read and written in Python.

No mxnet (it does not import with numpy >= 1.24). The format, as dmlc-core writes it:

* ``.idx``: one ``key<TAB>byte offset`` line per record.
* ``.rec``: each record is one or more frames ``magic (uint32 0xced7230a) | lrec (uint32) |
  data | zero padding to 4 bytes``, little endian, where ``lrec = cflag << 29 | length``.
  ``cflag`` 0 is a whole record; when the data contains the magic word at a 4-byte-aligned
  position the writer splits it there into frames with ``cflag`` 1 (first), 2 (middle), 3
  (last), dropping the magic word, and the reader puts it back between frames.
* record payload (``mxnet.recordio.pack``): ``IRHeader`` = ``<IfQQ`` (flag uint32, label
  float32, id uint64, id2 uint64); if ``flag > 0`` then ``flag`` float32 labels follow (and
  the scalar label is 0); then the encoded image.
* insightface layout: record 0 is a header whose labels ``(a, b)`` say that keys ``1..a-1``
  are images and keys ``a..b-1`` are one record per identity with labels ``(first, end)``,
  the key range of that identity's images. Without that header (flag 0) every key is an image
  (:func:`read_layout`).

The face data sets built on it are in :mod:`recognition.data.recordio`; FSErasing mask stores
in :mod:`parsing.core.maskstore`.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parsing.core.errors import DataError, InputError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_FRAME = struct.Struct("<II")
IR_FORMAT = struct.Struct("<IfQQ")

__all__ = [
    "IRHeader",
    "MAGIC",
    "RecordIOReader",
    "RecordIOWriter",
    "encode_frames",
    "pack",
    "read_index",
    "read_layout",
    "unpack",
]


@dataclass(frozen=True)
class IRHeader:
    """The per-record header of ``mxnet.recordio``; ``labels`` holds the float32 labels."""

    flag: int
    labels: tuple[float, ...]
    id: int = 0
    id2: int = 0

    @property
    def label(self) -> float:
        """The first label (insightface's identity label for image records)."""
        return self.labels[0]


def pack(label: float | Sequence[float], payload: bytes, id: int = 0, id2: int = 0) -> bytes:
    """``mxnet.recordio.pack``: a scalar label goes in the header, a sequence after it."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return IR_FORMAT.pack(0, float(label), id, id2) + payload
    values = np.asarray(label, dtype="<f4").ravel()
    if values.size == 0:
        raise InputError("pack: a label sequence needs at least one value")
    return IR_FORMAT.pack(values.size, 0.0, id, id2) + values.tobytes() + payload


def unpack(record: bytes | memoryview, where: str = "record") -> tuple[IRHeader, bytes]:
    """``mxnet.recordio.unpack``: split a record into its header and payload."""
    if len(record) < IR_FORMAT.size:
        raise DataError(f"{where}: {len(record)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id_, id2 = IR_FORMAT.unpack_from(record)
    body = IR_FORMAT.size
    if flag > 0:
        end = body + 4 * flag
        if end > len(record):
            raise DataError(f"{where}: header announces {flag} labels but the record ends")
        labels = tuple(np.frombuffer(record, dtype="<f4", count=flag, offset=body).tolist())
        body = end
    else:
        labels = (label,)
    return IRHeader(flag, labels, id_, id2), bytes(record[body:])


def encode_frames(data: bytes) -> bytes:
    """Frame one record as dmlc-core's ``RecordIOWriter::WriteRecord`` does (magic splits)."""
    if len(data) >= 1 << 29:
        raise InputError("RecordIO records must be shorter than 2**29 bytes")
    view = np.frombuffer(data[: len(data) // 4 * 4], dtype="<u4")
    cuts = (np.flatnonzero(view == MAGIC) * 4).tolist()
    out = bytearray()
    start = 0
    for k, cut in enumerate(cuts):
        out += _FRAME.pack(MAGIC, (1 if k == 0 else 2) << 29 | (cut - start))
        out += data[start:cut]
        start = cut + 4
    out += _FRAME.pack(MAGIC, (3 if cuts else 0) << 29 | (len(data) - start))
    out += data[start:]
    out += b"\0" * (-len(data) % 4)
    return bytes(out)


def read_index(idx_path: str | os.PathLike) -> dict[int, int]:
    """Parse a ``.idx`` file into ``{key: byte offset}`` (file order kept)."""
    index: dict[int, int] = {}
    try:
        text = Path(idx_path).read_text()
    except FileNotFoundError:
        raise DataError(f"{idx_path}: no such index file") from None
    except UnicodeDecodeError:
        raise DataError(f"{idx_path}: not a text index file") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            key, offset = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            raise DataError(f"{idx_path}:{n}: expected 'key<TAB>offset', got {line!r}") from None
        if offset < 0 or key in index:
            raise DataError(f"{idx_path}:{n}: bad or repeated entry {line!r}")
        index[key] = offset
    if not index:
        raise DataError(f"{idx_path}: empty index")
    return index


class RecordIOReader:
    """Random access to the records of a ``.rec`` file through its ``.idx``.

    The file is memory-mapped on first use in each process (DataLoader workers included) and
    the mapping is not pickled, so one reader can be shared with any number of workers.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(
            ".idx")
        if not self.rec_path.is_file():
            raise DataError(f"{self.rec_path}: no such record file")
        self.index = read_index(self.idx_path)
        self._map: mmap.mmap | None = None
        self._pid = -1

    @property
    def keys(self) -> list[int]:
        return list(self.index)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_map"], state["_pid"] = None, -1
        return state

    def _buffer(self) -> mmap.mmap:
        if self._map is None or self._pid != os.getpid():
            if self.rec_path.stat().st_size == 0:
                raise DataError(f"{self.rec_path}: empty record file")
            with open(self.rec_path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._pid = os.getpid()
        return self._map

    def where(self, key: int) -> str:
        return f"{self.rec_path} record {key}"

    def read(self, key: int, limit: int | None = None) -> bytes:
        """The payload of record ``key`` with its frames joined (raises DataError if corrupt).

        With ``limit``, stop once that many bytes are read (to parse headers only).
        """
        try:
            pos = self.index[key]
        except KeyError:
            raise DataError(f"{self.rec_path}: no record {key} in {self.idx_path}") from None
        buf = self._buffer()
        size = len(buf)
        parts: list[bytes] = []
        got = 0
        while True:
            if pos + 8 > size:
                raise DataError(f"{self.where(key)} (byte {pos}): truncated frame header")
            magic, lrec = _FRAME.unpack_from(buf, pos)
            if magic != MAGIC:
                raise DataError(
                    f"{self.where(key)} (byte {pos}): bad magic 0x{magic:08x}, expected "
                    f"0x{MAGIC:08x}")
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if cflag > 3 or (cflag in (2, 3)) != bool(parts):
                raise DataError(f"{self.where(key)} (byte {pos}): bad continuation flag {cflag}")
            if pos + 8 + length > size:
                raise DataError(
                    f"{self.where(key)} (byte {pos}): truncated, {length} bytes announced but "
                    f"{size - pos - 8} left")
            take = length if limit is None else min(length, limit - got)
            parts.append(buf[pos + 8: pos + 8 + take])
            got += take + 4
            pos += 8 + (length + 3) // 4 * 4
            if cflag in (0, 3) or (limit is not None and got >= limit):
                return _MAGIC_BYTES.join(parts)

    def read_header(self, key: int) -> tuple[IRHeader, bytes]:
        """``unpack`` of record ``key``: its header and payload."""
        return unpack(self.read(key), self.where(key))

    def read_labels(self, key: int) -> IRHeader:
        """Only the header (and label array) of record ``key``, without reading the image."""
        head = self.read(key, limit=IR_FORMAT.size)
        flag = IR_FORMAT.unpack_from(head)[0] if len(head) >= IR_FORMAT.size else 0
        if flag:
            head = self.read(key, limit=IR_FORMAT.size + 4 * flag)
        return unpack(head, self.where(key))[0]


class RecordIOWriter:
    """Write records and their ``.idx`` lines (as ``MXIndexedRecordIO.write_idx``)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(
            ".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(self.idx_path, "w")  # noqa: SIM115

    def write(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode_frames(record))

    def close(self) -> None:
        """Close both files, flushed to disk (so a rename after it publishes whole files)."""
        for f in (self._rec, self._idx):
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_layout(reader: RecordIOReader) -> tuple[list[int], range]:
    """The image keys and the identity record keys of a ``.rec`` in insightface's layout.

    With the header record (key 0, flag > 0, labels ``(a, b)``) the images are keys
    ``1..a-1`` and the identity records ``a..b-1``; without it every key is an image and there
    are no identity records. Keys the header lists but the index lacks raise DataError.
    """
    header = reader.read_labels(0) if 0 in reader.index else None
    if header is None or header.flag == 0:
        return list(reader.keys), range(0)
    if len(header.labels) < 2:
        raise DataError(f"{reader.where(0)}: header record needs two labels (a, b)")
    first_id, end_id = (int(v) for v in header.labels[:2])
    image_keys, identity_keys = list(range(1, first_id)), range(first_id, end_id)
    missing = [k for k in (*image_keys, *identity_keys) if k not in reader.index]
    if missing:
        raise DataError(f"{reader.idx_path}: the header record lists keys missing from the "
                        f"index, e.g. {missing[:5]}")
    return image_keys, identity_keys
