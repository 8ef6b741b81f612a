"""The training-state blob: layout, header, checksum (host side).

The same bytes are the converted model's `state` variable tensor, a state
file saved by `tflm-train fit --state-out`, and what a device writes to flash.
tflm_ops/kernels/training_state.h is the device side; docs/state_format.md
describes the format for users. Little-endian throughout:

  0 magic "TMTS" | 4 u16 version | 6 u16 header bytes (64) | 8 u64 base model hash
  16 u32 layout hash | 20 u32 payload bytes | 24 u32 parameter count P
  28 u32 optimizer steps | 32 u32 samples accumulated | 36 u32 CRC-32
  40 u32 skipped updates | 44 u32 flags (bit 0 LIVE, bit 1 INTEGER) | 48 u32 skipped samples
  52 u32 rejected episodes | 56 u32 rollbacks | 60..64 reserved (zero)
  64: P float32 parameters | P gradients | P per optimizer slot
  (INTEGER, --arithmetic int8: P int16 parameters padded to 4 bytes | P int32
  gradient accumulators [| P int32 velocities, with momentum]; each tensor's
  entry names its dtype and scale)

LIVE marks a state inside an interpreter that the TFLMT_STATE op has verified;
while it is set the CRC is not maintained (the step pays no checksum). A
state leaving the interpreter is `exported` (LIVE cleared, CRC sealed); one
entering is `imported` (LIVE cleared, so the kernel verifies it in full).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"TMTS"
FORMAT_VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<4sHHQIIIIIIIIIII")  # through the rollbacks field
_CRC_OFFSET = 36
_FLAGS_OFFSET = 44
SKIPPED_UPDATES_OFFSET = 40
SKIPPED_SAMPLES_OFFSET = 48
REJECTED_EPISODES_OFFSET = 52
ROLLBACKS_OFFSET = 56
FLAG_LIVE = 1
FLAG_INTEGER = 2  # an integer training state (no float values in it)

OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}


from tflm_train.errors import TflmTrainError  # the base of every user-fixable error


class StateError(TflmTrainError, ValueError):
    """A state blob that cannot be used with this model (message says why)."""


@dataclass
class Header:
    base_model_hash: int
    layout_hash: int
    payload_bytes: int
    param_count: int
    step: int = 0
    accumulated: int = 0
    crc: int = 0
    skipped: int = 0  # updates not applied: they would have made a value non-finite
    flags: int = 0
    skipped_samples: int = 0  # samples not trained on: non-finite or out-of-range values
    rejected_episodes: int = 0  # episodes whose held-out check was worse: not committed
    rollbacks: int = 0  # episodes stopped by divergence and rolled back
    version: int = FORMAT_VERSION
    magic: bytes = MAGIC

    def pack(self) -> bytes:
        head = _HEADER.pack(
            self.magic,
            self.version,
            HEADER_BYTES,
            self.base_model_hash,
            self.layout_hash,
            self.payload_bytes,
            self.param_count,
            self.step,
            self.accumulated,
            self.crc,
            self.skipped,
            self.flags,
            self.skipped_samples,
            self.rejected_episodes,
            self.rollbacks,
        )
        return head + bytes(HEADER_BYTES - len(head))

    @classmethod
    def unpack(cls, blob: bytes) -> "Header":
        if len(blob) < HEADER_BYTES:
            raise StateError(f"state is truncated ({len(blob)} bytes, the header alone is {HEADER_BYTES})")
        fields = _HEADER.unpack_from(blob, 0)
        magic, version, header_bytes = fields[0], fields[1], fields[2]
        if magic != MAGIC:
            raise StateError("not a tflm-train state (bad magic number)")
        if version != FORMAT_VERSION:
            raise StateError(f"state format version {version}; this tflm-train reads version {FORMAT_VERSION}")
        if header_bytes != HEADER_BYTES:
            raise StateError("state header is corrupt")
        return cls(
            base_model_hash=fields[3],
            layout_hash=fields[4],
            payload_bytes=fields[5],
            param_count=fields[6],
            step=fields[7],
            accumulated=fields[8],
            crc=fields[9],
            skipped=fields[10],
            flags=fields[11],
            skipped_samples=fields[12],
            rejected_episodes=fields[13],
            rollbacks=fields[14],
            version=version,
            magic=magic,
        )


def checksum(blob: bytes) -> int:
    """CRC-32 over everything but the CRC field itself."""
    return zlib.crc32(blob[_CRC_OFFSET + 4 :], zlib.crc32(blob[:_CRC_OFFSET])) & 0xFFFFFFFF


def seal(blob: bytearray) -> bytearray:
    struct.pack_into("<I", blob, _CRC_OFFSET, checksum(bytes(blob)))
    return blob


def _with_live_cleared(blob: bytes) -> bytearray:
    out = bytearray(blob)
    if len(out) >= HEADER_BYTES:
        flags = struct.unpack_from("<I", out, _FLAGS_OFFSET)[0]
        struct.pack_into("<I", out, _FLAGS_OFFSET, flags & ~FLAG_LIVE)
    return out


def export(live: bytes) -> bytes:
    """The state tensor's bytes -> a state file: LIVE cleared, CRC sealed.

    The device helper does the same (tflmt::Trainer::SaveState)."""
    return bytes(seal(_with_live_cleared(live)))


def imported(blob: bytes) -> bytes:
    """A state file -> the bytes to write into the state tensor: LIVE cleared,
    so the next invocation verifies it in full (tflmt::Trainer::LoadState)."""
    return bytes(_with_live_cleared(blob))


@dataclass
class TrainableTensor:
    """One trainable tensor in the state: where it is and what it is."""

    name: str  # e.g. "dense_2/lora_A"
    role: str  # lora_A, lora_B, weight, bias, adapter_down, ...
    layer: str  # name of the layer it belongs to
    shape: tuple[int, ...]
    offset: int  # values (float32, or int16 in an integer state) from the start of the parameters
    # Integer states: the parameter's type and its fixed scale (real = scale * q).
    dtype: str = "float32"
    scale: float | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def to_json(self) -> dict:
        entry = {"name": self.name, "role": self.role, "layer": self.layer, "shape": list(self.shape), "offset": self.offset}
        if self.dtype != "float32":  # float entries stay as they always were
            entry.update(dtype=self.dtype, scale=self.scale)
        return entry

    def hash_key(self) -> list:
        key = [self.name, list(self.shape), self.offset]
        return key if self.dtype == "float32" else key + [self.dtype, self.scale]


@dataclass
class StateLayout:
    """Allocates trainable tensors in the state and builds its initial bytes."""

    optimizer: str
    # What the parameters mean beyond their names and shapes (e.g. the LoRA
    # scale): a state trained under other semantics must not load silently.
    semantics: dict = field(default_factory=dict)
    tensors: list[TrainableTensor] = field(default_factory=list)
    initial_values: list[np.ndarray] = field(default_factory=list)
    # True for integer training (--arithmetic int8): int16 parameters, int32
    # accumulators, flag INTEGER (converter/integer.py).
    integer: bool = False

    def add(self, name: str, role: str, layer: str, initial: np.ndarray) -> TrainableTensor:
        initial = np.asarray(initial, dtype=np.float32)
        tensor = TrainableTensor(name, role, layer, tuple(int(d) for d in initial.shape), self.param_count)
        self.tensors.append(tensor)
        self.initial_values.append(initial.reshape(-1))
        return tensor

    def add_int16(self, name: str, role: str, layer: str, initial: np.ndarray, scale: float) -> TrainableTensor:
        """An int16 parameter tensor of an integer state, with its fixed scale."""
        initial = np.asarray(initial, dtype=np.int16)
        tensor = TrainableTensor(
            name, role, layer, tuple(int(d) for d in initial.shape), self.param_count, "int16", float(scale)
        )
        self.tensors.append(tensor)
        self.initial_values.append(initial.reshape(-1))
        return tensor

    @property
    def param_count(self) -> int:
        return sum(t.size for t in self.tensors)

    @property
    def slots(self) -> int:
        return OPTIMIZER_SLOTS[self.optimizer]

    @property
    def payload_bytes(self) -> int:
        if self.integer:
            return integer_payload_bytes(self.param_count, self.slots)
        return 4 * self.param_count * (2 + self.slots)

    @property
    def state_bytes(self) -> int:
        return HEADER_BYTES + self.payload_bytes

    def layout_hash(self) -> int:
        """Changes whenever a state of one layout would be misread by another."""
        description = {
            "optimizer": self.optimizer,
            "semantics": self.semantics,
            "tensors": [t.hash_key() for t in self.tensors],
        }
        return zlib.crc32(json.dumps(description, sort_keys=True).encode()) & 0xFFFFFFFF

    def header(self, base_model_hash: int) -> Header:
        return Header(
            base_model_hash=base_model_hash,
            layout_hash=self.layout_hash(),
            payload_bytes=self.payload_bytes,
            param_count=self.param_count,
            flags=FLAG_INTEGER if self.integer else 0,
        )

    def initial_blob(self, base_model_hash: int) -> bytes:
        """Header + initial parameters, the rest (zeros) left implicit.

        The checksum covers the full state with its zero gradients and
        optimizer slots, which is what the device reconstructs from this.
        """
        dtype = "<i2" if self.integer else "<f4"
        params = np.concatenate(self.initial_values) if self.initial_values else np.zeros(0, dtype)
        values = params.astype(dtype).tobytes()
        full = bytearray(self.header(base_model_hash).pack()) + values
        full += bytes(self.state_bytes - len(full))
        seal(full)
        return bytes(full[: HEADER_BYTES + len(values)])

    def to_json(self) -> dict:
        return {
            "bytes": self.state_bytes,
            "param_count": self.param_count,
            "optimizer_slots": self.slots,
            "layout_hash": self.layout_hash(),
            "tensors": [t.to_json() for t in self.tensors],
        }


def validate(blob: bytes, expected: Header, state_bytes: int) -> Header:
    """Checks a state blob against a model; raises StateError saying why not."""
    header = Header.unpack(blob)
    if header.base_model_hash != expected.base_model_hash:
        raise StateError("state was saved for another base model")
    if (
        header.layout_hash != expected.layout_hash
        or header.payload_bytes != expected.payload_bytes
        or header.param_count != expected.param_count
    ):
        raise StateError("state was saved for another conversion of this model (different adapters or optimizer)")
    if len(blob) != state_bytes:
        raise StateError(f"state is {len(blob)} bytes, this model's is {state_bytes}: truncated or corrupt")
    if header.crc != checksum(blob):
        raise StateError("state is corrupt (checksum mismatch)")
    if header.flags & FLAG_INTEGER:
        return header  # integers are always finite
    # Parameters and optimizer slots (not the pending gradients: the
    # optimizer drops a non-finite update) - what the kernel checks too.
    values = np.frombuffer(blob, dtype="<f4", offset=HEADER_BYTES)
    p = header.param_count
    if not (np.isfinite(values[:p]).all() and np.isfinite(values[2 * p :]).all()):
        raise StateError("state holds non-finite parameters (NaN or infinity)")
    return header


def parameters(blob: bytes, header: Header) -> np.ndarray:
    """The P float32 parameters of a (validated) state (an integer state's
    raw int16 values: integer_parameters / dequantized_parameters)."""
    if header.flags & FLAG_INTEGER:
        return integer_parameters(blob, header).astype(np.float32)
    return np.frombuffer(blob, dtype="<f4", count=header.param_count, offset=HEADER_BYTES).copy()


def integer_payload_bytes(params: int, slots: int = 0) -> int:
    """int16 parameters padded to 4 bytes, then int32 accumulators, then
    `slots` int32 values per parameter (1: the velocity of SGD with momentum)."""
    return (2 * params + 3) // 4 * 4 + 4 * params * (1 + slots)


def integer_parameters(blob: bytes, header: Header) -> np.ndarray:
    """The P int16 parameters of an integer state."""
    return np.frombuffer(blob, dtype="<i2", count=header.param_count, offset=HEADER_BYTES).copy()


def integer_gradients(blob: bytes, header: Header) -> np.ndarray:
    """The P int32 gradient accumulators of an integer state."""
    offset = HEADER_BYTES + (2 * header.param_count + 3) // 4 * 4
    return np.frombuffer(blob, dtype="<i4", count=header.param_count, offset=offset).copy()


def integer_velocities(blob: bytes, header: Header) -> np.ndarray:
    """The P int32 velocities (2^-16 parameter steps) of an integer state
    trained with --optimizer momentum."""
    offset = HEADER_BYTES + (2 * header.param_count + 3) // 4 * 4 + 4 * header.param_count
    return np.frombuffer(blob, dtype="<i4", count=header.param_count, offset=offset).copy()


def dequantized_parameters(blob: bytes, header: Header, tensors: list[dict]) -> np.ndarray:
    """An integer state's parameters in real units, from the layout's entries
    (metadata "state"/"tensors", each with its offset, shape and scale)."""
    q = integer_parameters(blob, header)
    out = np.zeros(header.param_count, np.float32)
    for t in tensors:
        size = int(np.prod(t["shape"]))
        out[t["offset"] : t["offset"] + size] = q[t["offset"] : t["offset"] + size] * np.float32(t["scale"])
    return out
