"""The converted model's integrity checksum.

`tflm-train convert` (and `merge`) store a CRC-32 of the file in a metadata
entry named "tflm_train_crc32": 4 bytes, little-endian, computed over the
whole file with those 4 bytes taken as zero. Loading checks it before the
interpreter sees the model: a converted model damaged afterwards (a flipped
bit in flash, a truncated download, an edit) is refused with one line
instead of reaching a stock TFLM kernel that trusts its model and crashes.
A CRC finds damage, not intent: a file edited by someone who recomputes the
CRC passes (see README, Reliability).

The file is walked with bounds-checked reads of the flatbuffer layout (root
table, vtable, vectors), exactly as tflm_ops/device/model_check.cc does on a
device, so that any corrupt file gives an answer and never an exception.
"""

from __future__ import annotations

import enum
import struct
import zlib

CHECKSUM_NAME = "tflm_train_crc32"
CHECKSUM_BYTES = 4

# Field numbers in the .tflite schema (tables Model, Metadata, Buffer).
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA = 0


class Checksum(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no entry: a model from an older tflm-train, or not a converted one
    MISMATCH = "mismatch"  # the file changed after the CRC was written
    MALFORMED = "malformed"  # the flatbuffer or the entry cannot be read


class _Malformed(Exception):
    pass


class _Reader:
    """Bounds-checked reads of a flatbuffer (every offset is checked)."""

    def __init__(self, data: bytes):
        self.data = data

    def u32(self, at: int) -> int:
        if at < 0 or at + 4 > len(self.data):
            raise _Malformed
        return struct.unpack_from("<I", self.data, at)[0]

    def u16(self, at: int) -> int:
        if at < 0 or at + 2 > len(self.data):
            raise _Malformed
        return struct.unpack_from("<H", self.data, at)[0]

    def field(self, table: int, number: int) -> int | None:
        """Position of a table's field, or None when absent."""
        vtable = table - struct.unpack("<i", struct.pack("<I", self.u32(table)))[0]
        vtable_size = self.u16(vtable)
        slot = 4 + 2 * number
        if slot + 2 > vtable_size:
            return None
        offset = self.u16(vtable + slot)
        return table + offset if offset else None

    def indirect(self, at: int) -> int:
        return at + self.u32(at)

    def vector(self, table: int, number: int) -> tuple[int, int]:
        """(position of element 0, length) of a vector field; (0, 0) when absent."""
        at = self.field(table, number)
        if at is None:
            return 0, 0
        vector = self.indirect(at)
        length = self.u32(vector)
        return vector + 4, length


def _checksum_field(data: bytes) -> int | None:
    """Offset of the 4 checksum bytes in the file, None when there is no entry."""
    reader = _Reader(data)
    root = reader.indirect(0)
    entries, count = reader.vector(root, _MODEL_METADATA)
    for i in range(count):
        entry = reader.indirect(entries + 4 * i)
        name_at = reader.field(entry, _METADATA_NAME)
        if name_at is None:
            continue
        name = reader.indirect(name_at)
        length = reader.u32(name)
        if length != len(CHECKSUM_NAME):
            continue
        if name + 4 + length > len(data):
            raise _Malformed
        if data[name + 4:name + 4 + length] != CHECKSUM_NAME.encode():
            continue
        buffer_at = reader.field(entry, _METADATA_BUFFER)
        index = reader.u32(buffer_at) if buffer_at is not None else 0
        buffers, buffer_count = reader.vector(root, _MODEL_BUFFERS)
        if index >= buffer_count:
            raise _Malformed
        payload, size = reader.vector(reader.indirect(buffers + 4 * index), _BUFFER_DATA)
        if size != CHECKSUM_BYTES or payload + size > len(data):
            raise _Malformed
        return payload
    return None


def _crc(data: bytes, field: int) -> int:
    """CRC-32 of the file with the checksum's own bytes as zero."""
    crc = zlib.crc32(data[:field])
    crc = zlib.crc32(bytes(CHECKSUM_BYTES), crc)
    return zlib.crc32(data[field + CHECKSUM_BYTES:], crc)


def verify(data: bytes) -> Checksum:
    data = bytes(data)
    try:
        field = _checksum_field(data)
    except _Malformed:
        return Checksum.MALFORMED
    if field is None:
        return Checksum.MISSING
    stored = int.from_bytes(data[field:field + CHECKSUM_BYTES], "little")
    return Checksum.OK if stored == _crc(data, field) else Checksum.MISMATCH


def seal(data: bytes) -> bytes:
    """The file with its checksum entry (which must exist) filled in."""
    data = bytes(data)
    try:
        field = _checksum_field(data)
    except _Malformed:
        field = None
    if field is None:
        raise ValueError(f"the model has no readable {CHECKSUM_NAME} metadata entry to seal")
    sealed = bytearray(data)
    sealed[field:field + CHECKSUM_BYTES] = _crc(data, field).to_bytes(CHECKSUM_BYTES, "little")
    return bytes(sealed)


def refuse_damaged(data: bytes) -> Checksum:
    """verify(), raising ModelError (one line) for a model damaged after tflm-train wrote it."""
    from tflm_train.converter.model_ir import ModelError

    status = verify(data)
    if status is Checksum.MISMATCH:
        raise ModelError(
            f"model was modified after conversion (its {CHECKSUM_NAME} checksum does not match): "
            "use the file tflm-train wrote, or convert the original again"
        )
    if status is Checksum.MALFORMED:
        from tflm_train.converter.model_ir import Model

        Model.from_bytes(data)  # not a .tflite at all: its own, more precise line
        raise ModelError(f"corrupt or truncated .tflite (its metadata or {CHECKSUM_NAME} entry cannot be read)")
    return status
