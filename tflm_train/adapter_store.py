"""Reads the adapter a device's flash store holds (tflmt::AdapterStore,
tflm_ops/device/adapter_store.h), from a dump of its flash region: which
adapter is current, its sequence number, and its bytes (an exported state).

Read-only, for the host (`tflm-train fleet log --flash`); the device writes.
The selection rules are the store's: a slot counts when its header CRC holds,
its COMMIT marker reads all 0x00, its REVOKE marker is still erased, its
payload CRC holds and it belongs to the expected model and layout; the
highest sequence number among those is current; none means factory.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from tflm_train.errors import UserError

MAGIC = b"TMAS"
FORMAT_VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<4sHHIIQIII")  # through the header CRC (offset 32)
_HEADER_CRC_OFFSET = 32
_COMMIT = slice(40, 48)
_REVOKE = slice(48, 56)


@dataclass
class StoredAdapter:
    slot: int
    sequence: int
    state: bytes


def current_adapter(image: bytes, slot_bytes: int, base_model_hash: int, layout_hash: int) -> StoredAdapter | None:
    """The current adapter in a dump of the store's region (both slots,
    slot 0 first), or None: factory (the model's initial adapter)."""
    if slot_bytes <= HEADER_BYTES or len(image) != 2 * slot_bytes:
        raise UserError(f"a store dump of two {slot_bytes}-byte slots is {2 * slot_bytes} bytes, this one {len(image)}")
    best: StoredAdapter | None = None
    for slot in range(2):
        raw = image[slot * slot_bytes : (slot + 1) * slot_bytes]
        magic, version, header_bytes, sequence, length, model, layout, payload_crc, header_crc = _HEADER.unpack_from(raw)
        if (
            magic != MAGIC
            or version != FORMAT_VERSION
            or header_bytes != HEADER_BYTES
            or header_crc != zlib.crc32(raw[:_HEADER_CRC_OFFSET])
            or (model, layout) != (base_model_hash, layout_hash)
            or raw[_COMMIT] != bytes(8)
            or raw[_REVOKE] != b"\xff" * 8
            or length > slot_bytes - HEADER_BYTES
        ):
            continue
        payload = bytes(raw[HEADER_BYTES : HEADER_BYTES + length])
        if zlib.crc32(payload) != payload_crc:
            continue
        if best is None or sequence > best.sequence:
            best = StoredAdapter(slot, sequence, payload)
    return best


__all__ = ["StoredAdapter", "current_adapter"]
