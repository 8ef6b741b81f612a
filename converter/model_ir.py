"""A .tflite model in memory, for reading and rewriting.

Built on the flatbuffers object API that tflite-micro ships
(schema_py_generated: ModelT, SubGraphT, TensorT, OperatorT, BufferT). This
module adds what rewriting needs: validation with clear errors, typed access
to tensors and constant data, appending buffers/tensors/operators, named
metadata, and serialization with 16-byte aligned buffers (the Python
flatbuffers builder ignores the schema's force_align, and Cortex-M float loads
fault on unaligned data).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16

# schema TensorType -> numpy dtype
_TENSOR_DTYPES = {
    schema.TensorType.FLOAT32: np.dtype("<f4"),
    schema.TensorType.FLOAT16: np.dtype("<f2"),
    schema.TensorType.INT32: np.dtype("<i4"),
    schema.TensorType.UINT8: np.dtype("u1"),
    schema.TensorType.INT64: np.dtype("<i8"),
    schema.TensorType.BOOL: np.dtype("?"),
    schema.TensorType.INT16: np.dtype("<i2"),
    schema.TensorType.INT8: np.dtype("i1"),
    schema.TensorType.UINT32: np.dtype("<u4"),
    schema.TensorType.UINT16: np.dtype("<u2"),
}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_BUILTIN_NAMES = {
    v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")
}
_BUILTIN_CODES = {k: v for v, k in _BUILTIN_NAMES.items()}
_DTYPE_TO_TENSOR_TYPE = {
    np.dtype("float32"): schema.TensorType.FLOAT32,
    np.dtype("int32"): schema.TensorType.INT32,
    np.dtype("uint8"): schema.TensorType.UINT8,
    np.dtype("int8"): schema.TensorType.INT8,
    np.dtype("int16"): schema.TensorType.INT16,
    np.dtype("int64"): schema.TensorType.INT64,
    np.dtype("bool"): schema.TensorType.BOOL,
}


from tflm_train.errors import TflmTrainError  # the base of every user-fixable error


class ModelError(TflmTrainError, ValueError):
    """The bytes are not a .tflite this tool can read (message says why)."""


@dataclass(frozen=True)
class Quant:
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: np.ndarray  # float32, one value per tensor or per channel
    zero_point: np.ndarray  # int64, same length
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @staticmethod
    def of(scale, zero_point=0, axis: int = 0) -> "Quant":
        s = np.atleast_1d(np.asarray(scale, dtype=np.float32))
        z = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
        if z.size == 1 and s.size > 1:
            z = np.repeat(z, s.size)
        return Quant(s, z, axis)


def tensor_type_name(tensor_type: int) -> str:
    return _TYPE_NAMES.get(tensor_type, f"type{tensor_type}").lower()


# Handle-like tensors (resource variables of streaming models) carry no data
# of their own; they are described by name and never read.
_HANDLE_TYPES = {schema.TensorType.RESOURCE, schema.TensorType.VARIANT}


def dtype_of(tensor_type: int) -> np.dtype:
    try:
        return _TENSOR_DTYPES[tensor_type]
    except KeyError:
        raise ModelError(f"tensor type {tensor_type_name(tensor_type)} is not supported") from None


def is_handle(tensor_type: int) -> bool:
    return tensor_type in _HANDLE_TYPES


# Inputs each builtin needs, by position (later ones, e.g. a bias, are optional).
_REQUIRED_INPUTS = {
    "FULLY_CONNECTED": 2, "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "BATCH_MATMUL": 2,
    "ADD": 2, "SUB": 2, "MUL": 2, "MEAN": 2, "SUM": 2, "PAD": 2,
    "SOFTMAX": 1, "LOGISTIC": 1, "RELU": 1, "RELU6": 1, "TANH": 1, "RESHAPE": 1, "SQUEEZE": 1,
    "AVERAGE_POOL_2D": 1, "MAX_POOL_2D": 1, "QUANTIZE": 1, "DEQUANTIZE": 1, "CONCATENATION": 1,
    "ASSIGN_VARIABLE": 2, "READ_VARIABLE": 1,
}
_WITHOUT_OUTPUTS = {"ASSIGN_VARIABLE"}

# The builtin options each reads (another op type's options: a corrupt file);
# the converter reads the geometry of these, so they must be there.
_OPTIONS = {
    "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions", "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "FULLY_CONNECTED": "FullyConnectedOptions",
    "SOFTMAX": "SoftmaxOptions", "MEAN": "ReducerOptions", "SUM": "ReducerOptions", "RESHAPE": "ReshapeOptions",
    "ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "CONCATENATION": "ConcatenationOptions",
    "PAD": "PadOptions", "SQUEEZE": "SqueezeOptions",
}
_OPTIONS_REQUIRED = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D"}


def builtin_code(name: str) -> int:
    return _BUILTIN_CODES[name]


def _decode(name) -> str:
    if name is None:
        return ""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


class _AlignedBuffer(schema.BufferT):
    """BufferT whose data vector is packed on a 16-byte boundary."""

    def Pack(self, builder):  # noqa: N802 - flatbuffers naming
        data_offset = None
        if self.data is not None and len(self.data) > 0:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        return schema.BufferEnd(builder)


class Model:
    """A parsed .tflite. `self.raw` is the schema's ModelT, edited in place."""

    def __init__(self, raw: schema.ModelT, source: bytes | None = None):
        self.raw = raw
        self.source = source

    @classmethod
    def empty(cls) -> "Model":
        """A model with one empty subgraph, to build on."""
        raw = schema.ModelT()
        raw.version = 3
        raw.description = "tflm-train"
        subgraph = schema.SubGraphT()
        subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = [], [], [], []
        raw.subgraphs = [subgraph]
        raw.buffers = [_AlignedBuffer()]
        raw.operatorCodes = []
        return cls(raw)

    # ---- reading --------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> "Model":
        data = bytes(data)
        if len(data) < 8:
            raise ModelError(f"file is too short to be a .tflite ({len(data)} bytes)")
        if data[4:8] != FILE_IDENTIFIER:
            raise ModelError("not a .tflite file (no TFL3 identifier)")
        try:
            root = schema.Model.GetRootAs(data, 0)
            raw = schema.ModelT.InitFromObj(root)
        except Exception:  # flatbuffers raises whatever the bytes cause
            raise ModelError("corrupt or truncated .tflite (its flatbuffer does not parse)") from None
        model = cls(raw, data)
        model._validate()
        return model

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_bytes(data)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None

    def _validate(self) -> None:
        raw = self.raw
        if not raw.subgraphs:
            raise ModelError("model has no subgraphs")
        buffers = raw.buffers or []
        for buf in buffers:
            if buf.offset and buf.offset > 1:
                raise ModelError("buffers stored outside the flatbuffer (models over 2 GB) are not supported")
        for entry in raw.metadata or []:
            if entry.buffer is None or not 0 <= entry.buffer < len(buffers):
                raise ModelError(f"metadata {_decode(entry.name)!r} points at buffer {entry.buffer}, which does not exist")
        codes = raw.operatorCodes or []
        for sg_index, sg in enumerate(raw.subgraphs):
            tensors = sg.tensors or []
            for t_index, t in enumerate(tensors):
                if t.buffer is not None and t.buffer >= len(buffers):
                    raise ModelError(f"tensor {t_index} points at buffer {t.buffer}, which does not exist")
                data = buffers[t.buffer].data if t.buffer else None
                if t.isVariable and data is not None and len(data):
                    # TFLM gives a variable tensor arena memory and ignores its data: an
                    # operand such as MEAN's axes would then read garbage (fuzz: a spin)
                    raise ModelError(
                        f"tensor {t_index} ({_decode(t.name)}) is marked variable but holds constant data: "
                        "corrupt .tflite"
                    )
                if data is not None and len(data) and t.shape is not None:
                    dtype = _TENSOR_DTYPES.get(t.type)
                    expected = int(np.prod(t.shape)) * dtype.itemsize if dtype is not None else None
                    if expected is not None and expected != len(data):
                        raise ModelError(
                            f"tensor {t_index} ({_decode(t.name)}) holds {len(data)} bytes, "
                            f"its shape needs {expected}: corrupt or truncated .tflite"
                        )
            for t_index, t in enumerate(tensors):
                self._validate_tensor(t_index, t)
            for t in list(sg.inputs if sg.inputs is not None else []) + list(
                sg.outputs if sg.outputs is not None else []
            ):
                if 0 <= t < len(tensors) and 0 in list(tensors[t].shape if tensors[t].shape is not None else []):
                    raise ModelError(
                        f"subgraph {sg_index} input/output {_decode(tensors[t].name) or t} has shape "
                        f"{tuple(int(d) for d in tensors[t].shape)}: a dimension of 0"
                    )
            for o_index, op in enumerate(sg.operators or []):
                if op.opcodeIndex >= len(codes):
                    raise ModelError(f"operator {o_index} uses opcode {op.opcodeIndex}, which does not exist")
                self._validate_arity(o_index, op)
                for t in list(op.inputs if op.inputs is not None else []) + list(
                    op.outputs if op.outputs is not None else []
                ):
                    if t >= len(tensors) or t < -1:
                        raise ModelError(f"operator {o_index} names tensor {t}, which does not exist")
            for t in list(sg.inputs if sg.inputs is not None else []) + list(
                sg.outputs if sg.outputs is not None else []
            ):
                if t < 0 or t >= len(tensors):
                    raise ModelError(f"subgraph {sg_index} names tensor {t}, which does not exist")
            self._validate_single_writer(sg)

    def _validate_single_writer(self, sg) -> None:
        """Each tensor is written by at most one operator, and never a constant
        or a graph input (fuzz finding: a READ_VARIABLE redirected onto another
        op's output made the stock interpreter segfault)."""
        buffers = self.raw.buffers or []
        tensors = sg.tensors or []
        graph_inputs = {int(t) for t in (sg.inputs if sg.inputs is not None else [])}
        writer: dict[int, int] = {}
        for o_index, op in enumerate(sg.operators or []):
            for t in (int(t) for t in (op.outputs if op.outputs is not None else [])):
                if t < 0:
                    continue
                if t in writer:
                    raise ModelError(f"tensor {t} is the output of operators {writer[t]} and {o_index}: corrupt .tflite")
                writer[t] = o_index
                buffer = tensors[t].buffer
                if t in graph_inputs or (buffer and buffers[buffer].data is not None and len(buffers[buffer].data)):
                    raise ModelError(f"operator {o_index} writes into tensor {t}, a model input or constant: corrupt .tflite")

    def _validate_arity(self, index: int, op) -> None:
        """The tensors a builtin operator cannot do without are there: the
        converter and the interpreter index them by position."""
        op_type = self.op_type(op)
        required = _REQUIRED_INPUTS.get(op_type)
        if required is None:
            return
        inputs = list(op.inputs if op.inputs is not None else [])
        outputs = list(op.outputs if op.outputs is not None else [])
        if len(inputs) < required or any(int(t) < 0 for t in inputs[:required]):
            raise ModelError(f"operator {index} ({op_type}) lacks one of its {required} required inputs: corrupt .tflite")
        if op_type not in _WITHOUT_OUTPUTS and (not outputs or int(outputs[0]) < 0):
            raise ModelError(f"operator {index} ({op_type}) has no output: corrupt .tflite")
        expected = _OPTIONS.get(op_type)
        options = op.builtinOptions
        if expected is not None and (options is not None or op_type in _OPTIONS_REQUIRED) \
                and type(options).__name__ != expected + "T":
            found = type(options).__name__.removesuffix("T") if options is not None else "none"
            raise ModelError(f"operator {index} ({op_type}) has builtin options {found}, not {expected}: corrupt .tflite")

    @staticmethod
    def _validate_tensor(index: int, t) -> None:
        """Shape and quantization a reader can index without going out of range."""
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        name = _decode(t.name) or str(index)
        if any(d < 0 for d in shape):
            raise ModelError(f"tensor {index} ({name}) has a negative dimension in shape {tuple(shape)}")
        if int(np.prod(shape, dtype=np.float64)) > 2**31 - 1:
            raise ModelError(f"tensor {index} ({name}) has shape {tuple(shape)}: over 2**31 elements")
        q = t.quantization
        if q is None:
            return
        scales = [] if q.scale is None else list(q.scale)
        zero_points = [] if q.zeroPoint is None else list(q.zeroPoint)
        if len(zero_points) not in (0, 1, len(scales)) or (zero_points and not scales):
            raise ModelError(
                f"tensor {index} ({name}) has {len(zero_points)} zero points for {len(scales)} scales: corrupt quantization"
            )
        if scales and not all(np.isfinite(s) for s in scales):
            raise ModelError(f"tensor {index} ({name}) has a quantization scale that is not finite")
        if len(scales) > 1:
            axis = int(q.quantizedDimension or 0)
            if not 0 <= axis < len(shape) or shape[axis] != len(scales):
                raise ModelError(
                    f"tensor {index} ({name}) has {len(scales)} per-channel scales along dimension {axis} "
                    f"of shape {tuple(shape)}: corrupt quantization"
                )

    # ---- writing --------------------------------------------------------------
    def to_bytes(self) -> bytes:
        raw = self.raw
        raw.buffers = [self._aligned(b) for b in (raw.buffers or [])]
        builder = flatbuffers.Builder(1024)
        builder.Finish(raw.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())

    def sealed_bytes(self) -> bytes:
        """to_bytes() with the integrity checksum (converter/integrity.py)
        entry added and filled in: what convert and merge write."""
        from tflm_train.converter.integrity import CHECKSUM_BYTES, CHECKSUM_NAME, seal

        self.set_metadata(CHECKSUM_NAME, bytes(CHECKSUM_BYTES))
        return seal(self.to_bytes())

    @staticmethod
    def _aligned(buf: schema.BufferT) -> _AlignedBuffer:
        if isinstance(buf, _AlignedBuffer):
            return buf
        aligned = _AlignedBuffer()
        aligned.data = buf.data
        return aligned

    def save(self, path: str | os.PathLike) -> None:
        write_atomic(path, self.to_bytes())

    # ---- graph access ---------------------------------------------------------
    @property
    def main(self) -> schema.SubGraphT:
        return self.raw.subgraphs[0]

    @property
    def operators(self) -> list:
        return self.main.operators or []

    @property
    def tensors(self) -> list:
        return self.main.tensors or []

    def op_type(self, op: schema.OperatorT) -> str:
        """Builtin name (FULLY_CONNECTED) or the custom op's name."""
        code = self.raw.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            return _decode(code.customCode)
        return _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")

    def tensor_name(self, index: int) -> str:
        return _decode(self.tensors[index].name)

    def shape(self, index: int) -> tuple[int, ...]:
        shape = self.tensors[index].shape
        return tuple(int(d) for d in shape) if shape is not None else ()

    def dtype(self, index: int) -> np.dtype:
        return dtype_of(self.tensors[index].type)

    def type_name(self, index: int) -> str:
        """float32, int8, ..., or resource for a resource-variable handle."""
        return tensor_type_name(self.tensors[index].type)

    def quant(self, index: int) -> Quant | None:
        q = self.tensors[index].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        zp = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0]
        return Quant.of(q.scale, zp, q.quantizedDimension or 0)

    def constant(self, index: int) -> np.ndarray | None:
        """Constant data of a tensor, shaped, or None for activations."""
        t = self.tensors[index]
        if not t.buffer:
            return None
        data = self.raw.buffers[t.buffer].data
        if data is None or len(data) == 0:
            return None
        raw = np.asarray(data, dtype=np.uint8).tobytes()
        return np.frombuffer(raw, dtype=self.dtype(index)).reshape(self.shape(index))

    def producers(self) -> dict[int, int]:
        """tensor index -> index of the operator that writes it."""
        out = {}
        for i, op in enumerate(self.operators):
            for t in op.outputs if op.outputs is not None else []:
                out[int(t)] = i
        return out

    def consumers(self) -> dict[int, list[int]]:
        """tensor index -> indices of the operators that read it."""
        out: dict[int, list[int]] = {}
        for i, op in enumerate(self.operators):
            for t in op.inputs if op.inputs is not None else []:
                if t >= 0:
                    out.setdefault(int(t), []).append(i)
        return out

    def inputs_of(self, op) -> list[int]:
        return [int(t) for t in (op.inputs if op.inputs is not None else [])]

    def outputs_of(self, op) -> list[int]:
        return [int(t) for t in (op.outputs if op.outputs is not None else [])]

    # ---- editing --------------------------------------------------------------
    def add_buffer(self, data: bytes | np.ndarray | None = None) -> int:
        buf = _AlignedBuffer()
        if data is not None:
            payload = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
            buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
        if self.raw.buffers is None:
            self.raw.buffers = [_AlignedBuffer()]  # buffer 0 is the empty sentinel
        self.raw.buffers.append(buf)
        return len(self.raw.buffers) - 1

    def add_tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype,
        data: np.ndarray | bytes | None = None,
        quant: Quant | None = None,
        is_variable: bool = False,
    ) -> int:
        """Appends a tensor to the main subgraph; `data` makes it a constant."""
        dtype = np.dtype(dtype)
        if dtype not in _DTYPE_TO_TENSOR_TYPE:
            # e.g. a layer's float16 output, which the converter would copy
            raise ModelError(f"tensor {name}: type {dtype.name} is not supported by tflm-train")
        t = schema.TensorT()
        t.name = name
        t.shape = np.asarray(list(shape), dtype=np.int32)
        t.type = _DTYPE_TO_TENSOR_TYPE[dtype]
        t.isVariable = is_variable
        if data is not None:
            array = np.ascontiguousarray(np.asarray(data, dtype=dtype)) if not isinstance(data, bytes) else data
            t.buffer = self.add_buffer(array if isinstance(array, bytes) else array.astype(dtype.newbyteorder("<")))
        else:
            t.buffer = self.add_buffer(None)
        if quant is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in quant.scale]
            q.zeroPoint = [int(z) for z in quant.zero_point]
            q.quantizedDimension = quant.axis
            t.quantization = q
        if self.main.tensors is None:
            self.main.tensors = []
        self.main.tensors.append(t)
        return len(self.main.tensors) - 1

    def opcode_index(self, op_type: str, version: int = 1) -> int:
        """Index of the operator code for a builtin name or custom op name."""
        codes = self.raw.operatorCodes
        if codes is None:
            codes = self.raw.operatorCodes = []
        builtin = _BUILTIN_CODES.get(op_type)
        for i, code in enumerate(codes):
            existing = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin is not None and existing == builtin:
                return i
            if builtin is None and existing == schema.BuiltinOperator.CUSTOM and _decode(code.customCode) == op_type:
                return i
        code = schema.OperatorCodeT()
        if builtin is None:
            code.builtinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = op_type
        else:
            code.builtinCode = builtin
        code.deprecatedBuiltinCode = min(code.builtinCode, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = version
        codes.append(code)
        return len(codes) - 1

    def make_op(
        self,
        op_type: str,
        inputs: Iterable[int],
        outputs: Iterable[int],
        custom_options: bytes | None = None,
        builtin_options=None,
        builtin_options_type: int = 0,
    ) -> schema.OperatorT:
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode_index(op_type)
        op.inputs = np.asarray(list(inputs), dtype=np.int32)
        op.outputs = np.asarray(list(outputs), dtype=np.int32)
        if custom_options is not None:
            op.customOptions = np.frombuffer(bytes(custom_options), dtype=np.uint8).copy()
            op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        if builtin_options is not None:
            op.builtinOptions = builtin_options
            op.builtinOptionsType = builtin_options_type
        return op

    def append_op(self, op_type: str, inputs, outputs, **kwargs) -> int:
        op = self.make_op(op_type, inputs, outputs, **kwargs)
        if self.main.operators is None:
            self.main.operators = []
        self.main.operators.append(op)
        return len(self.main.operators) - 1

    def prune(self) -> None:
        """Drops main-subgraph tensors nothing uses, then unused buffers."""
        main = self.main
        used = set(int(t) for t in main.inputs) | set(int(t) for t in main.outputs)
        for op in self.operators:
            used.update(t for t in self.inputs_of(op) + self.outputs_of(op) if t >= 0)
            used.update(int(t) for t in (op.intermediates if op.intermediates is not None else []))
        self._keep_tensors(sorted(used))

        buffers_used = {0}
        for subgraph in self.raw.subgraphs:
            buffers_used.update(t.buffer for t in (subgraph.tensors or []) if t.buffer)
        buffers_used.update(entry.buffer for entry in (self.raw.metadata or []))
        keep_buffers = sorted(buffers_used)
        buffer_map = {old: new for new, old in enumerate(keep_buffers)}
        self.raw.buffers = [self.raw.buffers[i] for i in keep_buffers]
        for subgraph in self.raw.subgraphs:
            for t in subgraph.tensors or []:
                t.buffer = buffer_map.get(t.buffer, 0)
        for entry in self.raw.metadata or []:
            entry.buffer = buffer_map[entry.buffer]

    def drop_tensors(self, indices) -> None:
        """Removes main-subgraph tensors that no operator or subgraph I/O uses."""
        drop = {int(t) for t in indices}
        self._keep_tensors([i for i in range(len(self.tensors)) if i not in drop])

    def _keep_tensors(self, keep: list[int]) -> None:
        main = self.main
        remap = {old: new for new, old in enumerate(keep)}
        main.tensors = [self.tensors[i] for i in keep]

        def mapped(values):
            return np.asarray([remap[int(t)] if t >= 0 else -1 for t in values], dtype=np.int32)

        main.inputs = mapped(main.inputs)
        main.outputs = mapped(main.outputs)
        for op in self.operators:
            op.inputs = mapped(self.inputs_of(op))
            op.outputs = mapped(self.outputs_of(op))
            if op.intermediates is not None:
                op.intermediates = mapped(op.intermediates)

    def remove_metadata(self, name: str) -> None:
        self.raw.metadata = [m for m in (self.raw.metadata or []) if _decode(m.name) != name]

    # ---- metadata ---------------------------------------------------------------
    def metadata(self, name: str) -> bytes | None:
        for entry in self.raw.metadata or []:
            if _decode(entry.name) == name:
                data = self.raw.buffers[entry.buffer].data
                return b"" if data is None else np.asarray(data, dtype=np.uint8).tobytes()
        return None

    def set_metadata(self, name: str, payload: bytes) -> None:
        for entry in self.raw.metadata or []:
            if _decode(entry.name) == name:
                self.raw.buffers[entry.buffer] = _AlignedBuffer()
                self.raw.buffers[entry.buffer].data = np.frombuffer(payload, dtype=np.uint8).copy()
                return
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = self.add_buffer(payload)
        if self.raw.metadata is None:
            self.raw.metadata = []
        self.raw.metadata.append(entry)


def model_hash(data: bytes) -> int:
    """First 8 bytes of SHA-256, little-endian: identifies a base model."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes all of `data` or nothing: a temporary file renamed into place.

    A symbolic link is written through, as shell redirection does: the file
    it points to gets the data (created if the link dangles) and the link
    stays. Renaming onto the link itself would silently replace it.
    """
    path = Path(os.path.realpath(path))
    if path.is_symlink():  # realpath stops at a link loop instead of raising
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
