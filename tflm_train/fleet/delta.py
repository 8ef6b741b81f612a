"""The adapter delta: what a device sends after a round of local training.

A round starts from a global adapter (the trainable parameters of the
training state, docs/state_format.md). After training, the device sends
`its adapter - the round's starting adapter`, tensor by tensor, and nothing
else: the gradient accumulators, the optimizer slots and the counters stay in
its state. Encodings:

  float32   the differences as they are (4 bytes a value)
  int8      per tensor: scale = max |d| / 127, q = round(d / scale) in [-127, 127]
            (1 byte a value + 4 for the scale)
  top_k     optional with either: per tensor only the ceil(top_k * size)
            largest |d| are sent, with their flat positions (u16 when the
            tensor has at most 65536 values, else u32)

The bytes (little-endian; a device can write them with memcpy, see
docs/federated.md):

  0  magic "TMTD" | 4 u16 format version (1) | 6 u8 encoding (0 float32, 1 int8)
  7  u8 flags (bit 0: top-k) | 8 u64 base model hash | 16 u32 layout hash
  20 u32 tensor count | 24 u32 examples trained on | 28 f32 top-k fraction (0 = dense)
  32 per tensor, in the layout's order: u32 values sent n | [int8: f32 scale]
     | [top-k: n positions] | n values (f32 or i8) | padding to 4 bytes

The base model hash and the layout hash are the training state's (the
converted model's metadata): a delta made for another base model or another
conversion (other adapters, ranks, optimizer) is refused (ForeignDeltaError).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import (
    _FLAGS_OFFSET,
    FLAG_INTEGER,
    FLAG_LIVE,
    HEADER_BYTES,
    Header,
    StateError,
    seal,
)
from tflm_train.converter.training_info import TrainingInfo, training_info
from tflm_train.errors import TflmTrainError

MAGIC = b"TMTD"
FORMAT_VERSION = 1
ENCODINGS = ("float32", "int8")
_HEADER = struct.Struct("<4sHBBQIIIf")  # 32 bytes
_FLAG_TOP_K = 1
INT8_MAX = 127


class ForeignDeltaError(TflmTrainError, ValueError):
    """A delta that does not belong to this fleet's model (message says why)."""


class DeltaFormatError(TflmTrainError, ValueError):
    """Bytes that are not a well-formed delta."""


@dataclass(frozen=True)
class TensorSlot:
    """One trainable tensor of the state: its place among the parameters."""

    name: str
    shape: tuple[int, ...]
    offset: int
    scale: float | None  # integer states: real = scale * int16 value

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class AdapterLayout:
    """Where a converted model keeps its adapter in the training state, and
    the identity (base model hash, layout hash) that a delta must match."""

    def __init__(self, info: TrainingInfo):
        self.info = info
        expected = info.expected_header()
        self.base_model_hash: int = expected.base_model_hash
        self.layout_hash: int = expected.layout_hash
        self.param_count: int = expected.param_count
        self.state_bytes: int = info.state_bytes
        self.slots = [
            TensorSlot(t["name"], tuple(int(d) for d in t["shape"]), int(t["offset"]),
                       float(t["scale"]) if t.get("dtype", "float32") != "float32" else None)
            for t in info.tensors
        ]
        self.integer = any(slot.scale is not None for slot in self.slots)

    @classmethod
    def of_model(cls, model_bytes: bytes) -> "AdapterLayout":
        info = training_info(Model.from_bytes(model_bytes))
        if info is None:
            raise ForeignDeltaError("model was not converted by tflm-train (run: tflm-train convert)")
        return cls(info)

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    def identity(self) -> str:
        return f"base model {self.base_model_hash:016x}, layout {self.layout_hash:08x}"

    # ---- state <-> adapter -------------------------------------------------
    def _check_state(self, state: bytes) -> Header:
        header = Header.unpack(state)
        if header.base_model_hash != self.base_model_hash or header.layout_hash != self.layout_hash:
            raise StateError("state belongs to another model or conversion than this fleet's")
        if len(state) != self.state_bytes:
            raise StateError(f"state is {len(state)} bytes, this model's is {self.state_bytes}")
        return header

    def adapter(self, state: bytes) -> dict[str, np.ndarray]:
        """The trainable tensors of a state, in real units (float32), by name."""
        self._check_state(state)
        if self.integer:
            raw = np.frombuffer(state, "<i2", count=self.param_count, offset=HEADER_BYTES).astype(np.float32)
        else:
            raw = np.frombuffer(state, "<f4", count=self.param_count, offset=HEADER_BYTES)
        out = {}
        for slot in self.slots:
            values = raw[slot.offset : slot.offset + slot.size].astype(np.float32)
            if slot.scale is not None:
                values = values * np.float32(slot.scale)
            out[slot.name] = values.reshape(slot.shape)
        return out

    def with_adapter(self, state: bytes, adapter: dict[str, np.ndarray]) -> bytes:
        """`state` with its trainable tensors replaced by `adapter` (a global
        adapter received from the server); gradients, optimizer slots and
        counters are kept. Exported form: LIVE clear, CRC sealed."""
        self._check_state(state)
        self.check_adapter(adapter)
        out = bytearray(state)
        flags = struct.unpack_from("<I", out, _FLAGS_OFFSET)[0]
        struct.pack_into("<I", out, _FLAGS_OFFSET, flags & ~FLAG_LIVE)
        for slot in self.slots:
            values = np.asarray(adapter[slot.name], np.float32).reshape(-1)
            if not np.isfinite(values).all():
                raise StateError(f"adapter tensor {slot.name} holds non-finite values")
            if slot.scale is not None:  # integer state: back to its int16 grid
                q = np.clip(np.round(values / np.float32(slot.scale)), -32768, 32767).astype("<i2")
                out[HEADER_BYTES + 2 * slot.offset : HEADER_BYTES + 2 * (slot.offset + slot.size)] = q.tobytes()
            else:
                out[HEADER_BYTES + 4 * slot.offset : HEADER_BYTES + 4 * (slot.offset + slot.size)] = \
                    values.astype("<f4").tobytes()
        if Header.unpack(bytes(out)).flags & FLAG_INTEGER != (FLAG_INTEGER if self.integer else 0):
            raise StateError("state's INTEGER flag does not match the model's layout")
        return bytes(seal(out))

    def check_adapter(self, adapter: dict[str, np.ndarray]) -> None:
        if set(adapter) != set(self.names):
            raise ForeignDeltaError(
                f"adapter tensors {sorted(adapter)} are not this model's {self.names}")
        for slot in self.slots:
            if int(np.asarray(adapter[slot.name]).size) != slot.size:
                raise ForeignDeltaError(
                    f"adapter tensor {slot.name} has {np.asarray(adapter[slot.name]).size} values, "
                    f"this model's has {slot.size}")

    def zeros(self) -> dict[str, np.ndarray]:
        return {slot.name: np.zeros(slot.shape, np.float32) for slot in self.slots}


@dataclass
class DeltaTensor:
    """One tensor of a delta as sent: dense or top-k, float32 or int8."""

    values: np.ndarray  # float32 or int8, the n values sent
    scale: float | None = None  # int8: real = scale * q
    index: np.ndarray | None = None  # top-k: flat positions of the values (sorted)

    def dense(self, size: int) -> np.ndarray:
        real = self.values.astype(np.float32)
        if self.scale is not None:
            real = real * np.float32(self.scale)
        if self.index is None:
            return real
        out = np.zeros(size, np.float32)
        out[self.index] = real
        return out


@dataclass
class Delta:
    """An adapter delta for one model (its base model and layout hashes)."""

    base_model_hash: int
    layout_hash: int
    encoding: str
    tensors: list[DeltaTensor]
    num_examples: int = 0
    top_k: float = 0.0  # 0: dense
    # The layout's tensor sizes (not sent: the layout hash pins them); they
    # decide the width of top-k positions.
    sizes: list[int] = field(default_factory=list)

    # ---- making one ------------------------------------------------------------
    @classmethod
    def between(cls, layout: AdapterLayout, start: dict[str, np.ndarray], end: dict[str, np.ndarray], *,
                encoding: str = "float32", top_k: float | None = None, num_examples: int = 0) -> "Delta":
        """`end - start`, tensor by tensor, encoded."""
        layout.check_adapter(start)
        layout.check_adapter(end)
        diffs = {name: np.asarray(end[name], np.float32).reshape(-1) - np.asarray(start[name], np.float32).reshape(-1)
                 for name in layout.names}
        return cls.encode(layout, diffs, encoding=encoding, top_k=top_k, num_examples=num_examples)

    @classmethod
    def encode(cls, layout: AdapterLayout, diffs: dict[str, np.ndarray], *, encoding: str = "float32",
               top_k: float | None = None, num_examples: int = 0) -> "Delta":
        """Real-valued differences (by tensor name) -> the encoded delta."""
        if encoding not in ENCODINGS:
            raise ValueError(f"delta encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
        if top_k is not None and not 0.0 < top_k <= 1.0:
            raise ValueError(f"top-k fraction {top_k}: use a value in (0, 1]")
        tensors = []
        for slot in layout.slots:
            d = np.asarray(diffs[slot.name], np.float32).reshape(-1)
            index = None
            if top_k is not None and top_k < 1.0:
                k = max(1, math.ceil(top_k * d.size))
                # The k largest magnitudes; ties broken by position so that
                # the choice is reproducible on a device.
                index = np.sort(np.argsort(-np.abs(d), kind="stable")[:k]).astype(np.uint32)
                d = d[index]
            if encoding == "int8":
                peak = float(np.max(np.abs(d))) if d.size else 0.0
                scale = peak / INT8_MAX if peak > 0 else 0.0
                q = np.zeros(d.size, np.int8) if scale == 0 else \
                    np.clip(np.round(d / np.float32(scale)), -INT8_MAX, INT8_MAX).astype(np.int8)
                tensors.append(DeltaTensor(q, np.float32(scale).item(), index))
            else:
                tensors.append(DeltaTensor(d.astype(np.float32), None, index))
        return cls(layout.base_model_hash, layout.layout_hash, encoding, tensors, int(num_examples),
                   float(top_k) if top_k is not None and top_k < 1.0 else 0.0, [slot.size for slot in layout.slots])

    # ---- reading one -------------------------------------------------------------
    def check(self, layout: AdapterLayout) -> None:
        """Raises ForeignDeltaError unless the delta was made for `layout`."""
        if self.base_model_hash != layout.base_model_hash:
            raise ForeignDeltaError(
                f"delta refused: it was made for another base model (its hash {self.base_model_hash:016x}, "
                f"this fleet's {layout.base_model_hash:016x})")
        if self.layout_hash != layout.layout_hash:
            raise ForeignDeltaError(
                f"delta refused: it was made for another conversion of this model (layout hash "
                f"{self.layout_hash:08x}, this fleet's {layout.layout_hash:08x}: other adapters or optimizer)")
        if len(self.tensors) != len(layout.slots):
            raise ForeignDeltaError(
                f"delta refused: it has {len(self.tensors)} tensors, this model's adapter {len(layout.slots)}")
        for tensor, slot in zip(self.tensors, layout.slots):
            n = tensor.values.size
            if (tensor.index is None and n != slot.size) or n > slot.size or (
                    tensor.index is not None and (tensor.index.size != n or (n and int(tensor.index.max()) >= slot.size))):
                raise ForeignDeltaError(f"delta refused: tensor {slot.name} does not fit its {slot.size} values")
            if tensor.values.dtype == np.float32 and not np.isfinite(tensor.values).all():
                raise ForeignDeltaError(f"delta refused: tensor {slot.name} holds non-finite values")
            if tensor.scale is not None and not math.isfinite(tensor.scale):
                raise ForeignDeltaError(f"delta refused: tensor {slot.name} has a non-finite scale")

    def dense(self, layout: AdapterLayout) -> dict[str, np.ndarray]:
        """The real-valued differences by tensor name (after `check`)."""
        self.check(layout)
        return {slot.name: tensor.dense(slot.size).reshape(slot.shape) for tensor, slot in zip(self.tensors, layout.slots)}

    def apply(self, layout: AdapterLayout, start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """start + delta: the adapter the device ended its round with (up to the encoding)."""
        dense = self.dense(layout)
        return {name: np.asarray(start[name], np.float32).reshape(dense[name].shape) + dense[name] for name in dense}

    # ---- bytes -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        code = ENCODINGS.index(self.encoding)
        flags = _FLAG_TOP_K if self.top_k else 0
        out = bytearray(_HEADER.pack(MAGIC, FORMAT_VERSION, code, flags, self.base_model_hash, self.layout_hash,
                                     len(self.tensors), self.num_examples, self.top_k))
        for i, tensor in enumerate(self.tensors):
            n = tensor.values.size
            out += struct.pack("<I", n)
            if self.encoding == "int8":
                out += struct.pack("<f", tensor.scale or 0.0)
            if self.top_k:
                out += tensor.index.astype(_index_dtype(self.sizes[i])).tobytes()
            out += tensor.values.astype("<f4" if self.encoding == "float32" else "i1").tobytes()
            out += bytes(-len(out) % 4)
        return bytes(out)

    @property
    def nbytes(self) -> int:
        """Bytes on the wire (the encoded delta, headers included)."""
        return len(self.to_bytes())

    @classmethod
    def from_bytes(cls, blob: bytes, layout: AdapterLayout) -> "Delta":
        """Parses a delta and checks it against `layout` (ForeignDeltaError if
        it was made for another model; DeltaFormatError if malformed)."""
        blob = bytes(blob)
        if len(blob) < _HEADER.size:
            raise DeltaFormatError(f"delta is truncated ({len(blob)} bytes, the header alone is {_HEADER.size})")
        magic, version, code, flags, base, layout_hash, count, examples, top_k = _HEADER.unpack_from(blob, 0)
        if magic != MAGIC:
            raise DeltaFormatError("not a tflm-train delta (bad magic number)")
        if version != FORMAT_VERSION:
            raise DeltaFormatError(f"delta format version {version}; this tflm-train reads version {FORMAT_VERSION}")
        if code >= len(ENCODINGS):
            raise DeltaFormatError(f"delta encoding {code} is unknown")
        delta = cls(base, layout_hash, ENCODINGS[code], [], examples, top_k if flags & _FLAG_TOP_K else 0.0,
                    [slot.size for slot in layout.slots])
        if base != layout.base_model_hash or layout_hash != layout.layout_hash or count != len(layout.slots):
            delta.tensors = [DeltaTensor(np.zeros(0, np.float32))] * count
            delta.check(layout)  # raises with the reason
        pos = _HEADER.size
        try:
            for slot in layout.slots:
                (n,) = struct.unpack_from("<I", blob, pos)
                pos += 4
                if n > slot.size:
                    raise DeltaFormatError(f"delta tensor {slot.name} holds {n} values, the tensor has {slot.size}")
                scale = None
                if delta.encoding == "int8":
                    (scale,) = struct.unpack_from("<f", blob, pos)
                    pos += 4
                index = None
                if delta.top_k:
                    dtype = np.dtype(_index_dtype(slot.size))
                    index = np.frombuffer(blob, dtype, count=n, offset=pos).astype(np.uint32)
                    pos += n * dtype.itemsize
                elif n != slot.size:
                    raise DeltaFormatError(f"dense delta tensor {slot.name} holds {n} values, the tensor has {slot.size}")
                dtype = np.dtype("<f4" if delta.encoding == "float32" else "i1")
                values = np.frombuffer(blob, dtype, count=n, offset=pos).copy()
                pos += n * dtype.itemsize
                pos += -pos % 4
                delta.tensors.append(DeltaTensor(values.astype(np.float32) if dtype.kind == "f" else values, scale, index))
        except (struct.error, ValueError) as error:
            if isinstance(error, TflmTrainError):
                raise
            raise DeltaFormatError("delta is truncated") from None
        if pos != len(blob):
            raise DeltaFormatError(f"delta has {len(blob) - pos} bytes after its last tensor")
        delta.check(layout)
        return delta


def _index_dtype(size: int) -> str:
    return "<u2" if size <= 65536 else "<u4"


__all__ = ["AdapterLayout", "Delta", "DeltaFormatError", "DeltaTensor", "ENCODINGS", "ForeignDeltaError", "TensorSlot"]
