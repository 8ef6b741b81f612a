"""Fuzz harnesses: mutated files through tflm-train, each case in a forked child.

Hypothesis draws the mutations (byte-level and structure-aware: a tensor's
shape, type, buffer or quantization, an operator's tensor list or custom
options, the training metadata, a state header field) and shrinks a failing
case to a small one. Every case runs in a child process forked from this one
(modules and the kernel plugin already loaded, so a case costs milliseconds),
which makes a SIGSEGV or an abort a finding instead of the end of the run, and
a case that outlives its timeout a hang.

The oracle: the child finishes, and any exception it raises is one of the
project's user-error types (ModelError, ConversionError, StateError,
DataError, InterpreterError, PluginError, the CLI's UserError) with a
one-line message. Anything else is an internal error.

Harnesses (TARGETS):
  original   .tflite reader, `inspect` (describe) and `convert` on mutated
             original models; what convert accepts is then prepared (the
             original, as the convert pipeline's guard does) and the converted
             model is loaded and invoked in each mode
  converted  mutated converted models loaded with TrainableModel (or a bare
             Interpreter when their training metadata no longer parses) and
             invoked in each mode: damaged ones (bytes or structure changed,
             the checksum left as it was: refused at load) and `resealed` ones
             (only our operators, their tensors and the metadata changed, the
             checksum recomputed: these reach the loader's checks and our
             kernels' Prepare)
  state      mutated state blobs: the host import (validate + load_state) and
             the kernel import (bytes written straight into the `state`
             input, as a device restoring flash does), then each mode
  data       mutated .npz bytes and generated arrays of odd dtypes and shapes
             (0-d, object, structured, a plain .npy) through tflm_train.data
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import select
import signal
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tflm_train.errors import TflmTrainError

USER_ERRORS = (TflmTrainError,)  # every user-fixable error derives from it
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tflm_train" / "examples"
# Per case; a normal case takes well under a second. Longer than two guarded
# checks (memory.CHECK_TIMEOUT_SECONDS each): a model without a checksum that
# spins a stock kernel is refused by them, not a hang.
TIMEOUT_SECONDS = 90.0
# The original harness runs the guard's prepare-and-invoke in the case itself
# (no second process): past the guard's own limit, a spinning original is its
# refusal (classify), so the case need not wait any longer than that.
HARNESS_TIMEOUT = {"original": 40.0}


# ---- running one case ---------------------------------------------------------------
@dataclass
class Outcome:
    kind: str  # ok | refused | internal-error | bad-message | crash | hang
    detail: str = ""
    stage: str = ""

    @property
    def is_finding(self) -> bool:
        return self.kind in ("internal-error", "bad-message", "crash", "hang")


class _Channel:
    """What a child reports to the parent: stage markers, then one result."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, record: dict) -> None:
        payload = (json.dumps(record) + "\n").encode()
        os.write(self.fd, payload[:32000])

    def stage(self, name: str) -> None:
        self.send({"stage": name})


def run_isolated(function, data: bytes, timeout: float = TIMEOUT_SECONDS) -> Outcome:
    """Runs function(data, channel) in a forked child; classifies how it ended."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 0
        try:
            os.close(read_fd)
            faulthandler.disable()  # pytest's would print every crash's Python stack
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            channel = _Channel(write_fd)
            try:
                function(data, channel)
                result = {"kind": "ok"}
            except USER_ERRORS as exc:
                message = str(exc).strip()
                one_line = bool(message) and "\n" not in message
                result = {"kind": "refused" if one_line else "bad-message",
                          "detail": f"{type(exc).__name__}: {message}"}
            except BaseException:  # noqa: BLE001 - the point: anything else is a finding
                result = {"kind": "internal-error", "detail": traceback.format_exc(limit=12)}
            channel.send(result)
        except BaseException:  # noqa: BLE001
            status = 70
        finally:
            os._exit(status)

    os.close(write_fd)
    buffer = b""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        buffer += chunk
    os.close(read_fd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)

    stage, result = "", None
    for line in buffer.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "stage" in record:
            stage = record["stage"]
        elif "kind" in record:
            result = record
    if timed_out:
        return Outcome("hang", f"no answer in {timeout:.0f} s", stage)
    if os.WIFSIGNALED(status):
        return Outcome("crash", signal.Signals(os.WTERMSIG(status)).name, stage)
    if result is None:
        return Outcome("crash", f"child exited with status {os.WEXITSTATUS(status)} without a result", stage)
    return Outcome(result["kind"], result.get("detail", ""), stage)


# ---- seeds ----------------------------------------------------------------------------
def _wake_word(name: str) -> bytes | None:
    try:
        import importlib.resources

        return (importlib.resources.files("pymicro_wakeword") / "models" / f"{name}.tflite").read_bytes()
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        return None


def _sine_model() -> bytes | None:
    import tflite_micro

    for path in Path(tflite_micro.__file__).parent.rglob("*sine*.tflite"):
        return path.read_bytes()
    return None


@lru_cache(maxsize=None)
def original_seeds() -> dict[str, bytes]:
    """Original models: the bundled examples, the wheel's sine model, a
    microWakeWord model, and any .tflite in $TFLMT_FUZZ_SEEDS (e.g. the MLPerf
    models tests/cnn_models.py builds, for the long campaign)."""
    seeds = {}
    for example in ("digits", "basic_motions"):
        for kind in ("int8", "float"):
            seeds[f"{example}_{kind}"] = (EXAMPLES / example / f"model_{kind}.tflite").read_bytes()
    for name, data in (("sine", _sine_model()), ("hey_jarvis", _wake_word("hey_jarvis"))):
        if data is not None:
            seeds[name] = data
    extra = os.environ.get("TFLMT_FUZZ_SEEDS")
    if extra:
        for path in sorted(Path(extra).glob("*.tflite")):
            seeds[path.stem] = path.read_bytes()
    return seeds


# (seed model, convert settings): LoRA and adapters on dense and conv
# layers, int8 and float, CE and MSE, SGD and Adam, so every kernel runs.
_CONVERTED = {
    "digits_int8_lora": ("digits_int8", dict(method="lora")),
    "digits_float_adapter_adam": ("digits_float", dict(method="adapter", optimizer="adam")),
    "basic_motions_int8_lora": ("basic_motions_int8", dict(method="lora")),
    "basic_motions_float_bias_mse": ("basic_motions_float", dict(method="bias", loss="mse")),
}


@lru_cache(maxsize=None)
def converted_seeds() -> dict[str, bytes]:
    from tflm_train.converter import ConvertConfig, OptimizerConfig, convert

    seeds = {}
    originals = original_seeds()
    for name, (base, options) in _CONVERTED.items():
        options = dict(options)
        optimizer = OptimizerConfig(kind=options.pop("optimizer", "sgd"))
        seeds[name] = convert(originals[base], ConvertConfig(optimizer=optimizer, **options)).model
    return seeds


@lru_cache(maxsize=None)
def state_seed() -> tuple[bytes, bytes]:
    """(converted digits model, its state after a few Adam steps)."""
    from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
    from tflm_train.trainer import TrainableModel

    model = convert(original_seeds()["digits_int8"],
                    ConvertConfig(method="lora", optimizer=OptimizerConfig(kind="adam", accumulate=2))).model
    trainable = TrainableModel(model)
    data = np.load(EXAMPLES / "digits" / "user_train.npz")
    for i in range(3):
        trainable.train_step(data["x"][i], int(data["y"][i]), 0.01)
    return model, trainable.save_state()


@lru_cache(maxsize=None)
def npz_seeds() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((EXAMPLES / "digits").glob("*.npz"))}


# ---- byte-level mutations ---------------------------------------------------------------
_INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 1 << 20, 0x7FFFFFFF,
                -1, -2, -0x80000000, -129, 127, 128]

byte_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(0, 7)),
    st.tuples(st.just("bytes"), st.integers(0, 1 << 30), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("zero"), st.integers(0, 1 << 30), st.integers(1, 16)),
    st.tuples(st.just("int32"), st.integers(0, 1 << 30), st.sampled_from(_INTERESTING)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 30), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 30), st.integers(1, 64)),
    st.tuples(st.just("duplicate"), st.integers(0, 1 << 30), st.integers(1, 64)),
)
byte_ops = st.lists(byte_op, min_size=1, max_size=4)


def apply_byte_ops(data: bytes, ops, start: int = 0) -> bytes:
    """Applies the ops to data[start:] (offsets taken modulo its length)."""
    out = bytearray(data)
    for kind, offset, arg in ops:
        span = len(out) - start
        if span <= 0:
            break
        at = start + offset % span
        if kind == "flip":
            out[at] ^= 1 << arg
        elif kind == "bytes":
            out[at:at + len(arg)] = arg
        elif kind == "zero":
            out[at:at + arg] = bytes(min(arg, len(out) - at))
        elif kind == "int32":
            at = start + (offset % span) // 4 * 4
            out[at:at + 4] = int(arg).to_bytes(4, "little", signed=True)
        elif kind == "truncate":
            del out[at:]
        elif kind == "delete":
            del out[at:at + arg]
        elif kind == "duplicate":
            out[at:at] = out[at:at + arg]
    return bytes(out)


# ---- structure-aware .tflite mutations -------------------------------------------------
# Each op picks its object by an integer taken modulo the object count, so
# one recipe applies to any model.
_DIMS = [0, 1, 2, 3, -1, 64, 65, 1000, 1 << 16, 0x7FFFFFFF, -0x80000000]
tflite_op = st.one_of(
    st.tuples(st.just("shape_dim"), st.integers(0, 10_000), st.integers(0, 7), st.sampled_from(_DIMS)),
    st.tuples(st.just("shape_rank"), st.integers(0, 10_000), st.integers(0, 7), st.just(0)),
    st.tuples(st.just("type"), st.integers(0, 10_000), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("buffer"), st.integers(0, 10_000), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("quant"), st.integers(0, 10_000), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("op_input"), st.integers(0, 10_000), st.integers(0, 10), st.integers(-2, 10_000)),
    st.tuples(st.just("op_output"), st.integers(0, 10_000), st.integers(0, 4), st.integers(-2, 10_000)),
    st.tuples(st.just("op_arity"), st.integers(0, 10_000), st.integers(0, 3), st.integers(0, 10_000)),
    st.tuples(st.just("opcode"), st.integers(0, 10_000), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("custom_options"), st.integers(0, 10_000), st.integers(0, 1 << 20), byte_ops),
    st.tuples(st.just("graph_io"), st.integers(0, 1), st.integers(0, 8), st.integers(-2, 10_000)),
    st.tuples(st.just("metadata"), st.integers(0, 10_000), st.integers(0, 1 << 20), byte_ops),
    st.tuples(st.just("variable"), st.integers(0, 10_000), st.just(0), st.just(0)),
)
tflite_ops = st.lists(tflite_op, min_size=1, max_size=3)


def _pick(items, index):
    return (items, index % len(items)) if items else (items, None)


class _Scope:
    """What a structural mutation may pick: everything, or (ours_only) only
    tflm-train's operators and the tensors and buffers no stock operator
    uses, so that a resealed case stays within what our code reads."""

    def __init__(self, model, ours_only: bool):
        main = model.main
        self.tensor_count = len(main.tensors or [])
        self.buffer_count = len(model.raw.buffers or [1])
        self.code_count = len(model.raw.operatorCodes or [1])
        operators = list(main.operators or [])
        self.ours_only = ours_only
        if not ours_only:
            self.tensors = list(range(self.tensor_count))
            self.operators = operators
            self.buffers = list(range(self.buffer_count + 2))
            self.codes = list(range(self.code_count + 1))
            return
        ours = [op for op in operators if model.op_type(op).startswith("TFLMT_")]
        stock_tensors = set()
        for op in operators:
            if op not in ours:
                for attr in ("inputs", "outputs", "intermediates"):
                    stock_tensors.update(int(t) for t in (getattr(op, attr) if getattr(op, attr) is not None else []))
        self.operators = ours
        self.tensors = [i for i in range(self.tensor_count) if i not in stock_tensors]
        stock_buffers = {int(main.tensors[i].buffer or 0) for i in stock_tensors if 0 <= i < self.tensor_count}
        self.buffers = [b for b in range(self.buffer_count + 2) if b == 0 or b not in stock_buffers]
        self.codes = sorted({int(op.opcodeIndex) for op in ours}) + [self.code_count]

    def tensor(self, index: int) -> int:
        return self.tensors[index % len(self.tensors)]

    def new_tensor(self, value: int, extra: int) -> int:
        """An index to point something at: any (or out of range), or one of ours."""
        if value < 0:
            return value
        if self.ours_only:
            choices = self.tensors + [self.tensor_count + i for i in range(extra)]
            return choices[value % len(choices)]
        return value % (self.tensor_count + extra)


def apply_tflite_ops(data: bytes, ops, ours_only: bool = False) -> bytes | None:
    """The model with the structural mutations applied, re-serialized; None
    when the mutation cannot be serialized (the flatbuffer builder refuses).

    ours_only: mutate only what our kernels and the host read (tflm-train's
    operators, tensors and buffers no stock operator uses, the metadata) and
    then recompute the model's checksum: a model edited after conversion
    that still passes the integrity check. (A resealed edit of a stock
    operator's tensors is out of scope: stock TFLM trusts its model and
    cannot be patched; the checksum only stops damage, not intent.)"""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    from tflm_train.converter.integrity import seal
    from tflm_train.converter.model_ir import Model

    model = Model.from_bytes(data)
    main = model.main
    tensors = main.tensors or []
    scope = _Scope(model, ours_only)
    operators = scope.operators
    for kind, a, b, c in ops:
        if kind in ("shape_dim", "shape_rank", "type", "buffer", "quant", "variable") and scope.tensors:
            t = tensors[scope.tensor(a)]
            shape = list(t.shape if t.shape is not None else [])
            if kind == "shape_dim":
                if shape:
                    shape[b % len(shape)] = c
                t.shape = np.asarray(shape, np.int32)
            elif kind == "shape_rank":
                t.shape = np.asarray(shape[:-1] if b % 2 else shape + [1] * (b % 4 + 1), np.int32)
            elif kind == "type":
                t.type = b
            elif kind == "buffer":
                t.buffer = scope.buffers[b % len(scope.buffers)]
            elif kind == "variable":
                t.isVariable = not t.isVariable
            elif kind == "quant":
                q = t.quantization or schema.QuantizationParametersT()
                choice = b % 6
                if choice == 0:
                    q.scale = [0.0]
                elif choice == 1:
                    q.scale = [float("nan")]
                elif choice == 2:
                    q.scale = [float("inf")]
                elif choice == 3:
                    q.zeroPoint = [1 << 40]
                elif choice == 4:
                    q.quantizedDimension = 7
                else:
                    q.scale = list(q.scale if q.scale is not None else [1.0]) * 3
                t.quantization = q
        elif kind in ("op_input", "op_output", "op_arity", "opcode", "custom_options") and operators:
            op = operators[a % len(operators)]
            if kind in ("op_input", "op_output"):
                attr = "inputs" if kind == "op_input" else "outputs"
                values = list(getattr(op, attr) if getattr(op, attr) is not None else [])
                if values:
                    # Reading any tensor is ours to survive; writing only ours.
                    values[b % len(values)] = (c if c < 0 else c % (len(tensors) + 3)) if attr == "inputs" \
                        else scope.new_tensor(c, 3)
                setattr(op, attr, np.asarray(values, np.int32))
            elif kind == "op_arity":
                values = list(op.inputs if op.inputs is not None else [])
                op.inputs = np.asarray(values[:-1] if b % 2 else values + [c % (len(tensors) + 1) - 1], np.int32)
            elif kind == "opcode":
                op.opcodeIndex = scope.codes[b % len(scope.codes)]
            elif kind == "custom_options":
                # Custom ops only (ours): mutate the n-th one's options blob.
                custom = [o for o in operators if o.customOptions is not None and len(o.customOptions)]
                if custom:
                    target = custom[b % len(custom)]
                    blob = apply_byte_ops(np.asarray(target.customOptions, np.uint8).tobytes(), c)
                    target.customOptions = np.frombuffer(blob, np.uint8).copy()
        elif kind == "graph_io":
            attr = "inputs" if a == 0 else "outputs"
            values = list(getattr(main, attr) if getattr(main, attr) is not None else [])
            positions = [i for i, t in enumerate(values) if not ours_only or int(t) in scope.tensors]
            if positions:
                values[positions[b % len(positions)]] = scope.new_tensor(c, 2)
            setattr(main, attr, np.asarray(values, np.int32))
        elif kind == "metadata":
            entries = model.raw.metadata or []
            if entries:
                entry = entries[a % len(entries)]
                payload = model.metadata(entry.name.decode() if isinstance(entry.name, bytes) else entry.name)
                model.set_metadata(entry.name.decode() if isinstance(entry.name, bytes) else entry.name,
                                   apply_byte_ops(payload or b"", c))
    try:
        mutated = model.to_bytes()
    except Exception:  # noqa: BLE001 - e.g. a value the builder cannot pack: not a case
        return None
    if ours_only:
        try:
            mutated = seal(mutated)
        except ValueError:  # the mutation damaged the checksum entry itself: a damaged model
            pass
    return mutated


# ---- what each harness runs in the child ---------------------------------------------
def _invoke_trainable(model_bytes: bytes, channel: _Channel) -> None:
    from tflm_train.trainer import TrainableModel

    trainable = TrainableModel(model_bytes)
    x = np.linspace(-1, 1, int(np.prod(trainable.sample_shape)), dtype=np.float32).reshape(trainable.sample_shape)
    if trainable.info.task == "classification":
        y = 1
    else:
        y = np.zeros(trainable.output_shape, np.float32)
    channel.stage("invoke:predict")
    trainable.predict(x)
    channel.stage("invoke:train")
    trainable.train_step(x, y, 0.01)
    channel.stage("invoke:evaluate")
    trainable.evaluate_loss(x, y)
    channel.stage("save_state")
    trainable.save_state()


def _invoke_bare(model_bytes: bytes, channel: _Channel) -> None:
    """A model whose training metadata is gone: every input zero, each mode
    (0 infer, 1 train, 2 evaluate) on whichever input is named `mode`."""
    from tflm_train.converter.model_ir import Model
    from tflm_train.runtime import Interpreter

    model = Model.from_bytes(model_bytes)
    inputs = list(model.main.inputs if model.main.inputs is not None else [])
    interpreter = Interpreter(model_bytes)
    for mode in (0, 1, 2):
        for i, tensor in enumerate(inputs):
            details = interpreter.input_details(i)
            value = np.zeros(details["shape"], details["dtype"])
            if model.tensor_name(int(tensor)) == "mode" and value.size:
                value.flat[0] = mode
            interpreter.set_input(i, value)
        channel.stage(f"invoke:mode{mode}")
        interpreter.invoke()


def _prepare_and_invoke_once(model_bytes: bytes, which: str, channel: _Channel) -> None:
    """What tflm_train.memory.check_prepares has its worker do (prepare, invoke
    once with every input zero); we are isolated already. A crash or hang in
    these stages is the guard's refusal (classify)."""
    from tflm_train._arena_probe import _invoke_with_zeros
    from tflm_train.converter.model_ir import ModelError
    from tflm_train.runtime import Interpreter

    channel.stage(f"prepare-{which}")
    try:
        interpreter = Interpreter(model_bytes, guard="none")
        channel.stage(f"invoke-{which}")
        _invoke_with_zeros(interpreter, model_bytes)
    except USER_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - in check_prepares' worker any exception is a refusal
        raise ModelError(f"check_prepares: {type(exc).__name__}: {exc}") from None


def check_original(data: bytes, channel: _Channel, method: str = "lora") -> None:
    from tflm_train.converter import ConvertConfig, convert
    from tflm_train.converter.model_ir import Model
    from tflm_train.inspection import describe

    channel.stage("read")
    Model.from_bytes(data)
    channel.stage("inspect")
    json.dumps(describe(data, "fuzz.tflite"))
    channel.stage("convert")
    result = convert(data, ConvertConfig(method=method))
    _prepare_and_invoke_once(data, "original", channel)  # the convert pipeline's guard
    # The pipeline checks the converted model the same way before writing it.
    _prepare_and_invoke_once(result.model, "converted", channel)
    channel.stage("converted")
    _invoke_trainable(result.model, channel)


def check_converted(data: bytes, channel: _Channel) -> None:
    from tflm_train.converter.model_ir import ModelError

    try:
        channel.stage("load")
        _invoke_trainable(data, channel)
    except ModelError:
        channel.stage("bare")
        _invoke_bare(data, channel)


def check_state(data: bytes, channel: _Channel, kernel_path: bool = False) -> None:
    from tflm_train.trainer import TrainableModel

    model, state = state_seed()
    trainable = TrainableModel(model)
    if kernel_path:
        # A device restoring flash: the bytes go straight into the state
        # input; TFLMT_STATE must refuse what the host check would.
        size = trainable.info.state_bytes
        blob = (data + bytes(size))[:size]
        trainable.interpreter.set_input(trainable._state_in, np.frombuffer(blob, np.uint8))
    else:
        channel.stage("load_state")
        trainable.load_state(data)
    x = np.zeros(trainable.sample_shape, np.float32)
    for step, run in (("train", lambda: trainable.train_step(x, 3, 0.01)),
                      ("evaluate", lambda: trainable.evaluate_loss(x, 3)),
                      ("predict", lambda: trainable.predict(x))):
        channel.stage(f"invoke:{step}")
        run()
    trainable.save_state()


def check_data(data: bytes, channel: _Channel) -> None:
    from tflm_train.data import DataError, check_inputs, check_labels, check_targets, load_npz

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        path.write_bytes(data)
        channel.stage("load_npz")
        dataset = load_npz(path)
    # Good data for the digits model has valid inputs and either labels (a
    # classifier) or targets (a regression): all three checks run either way.
    failed = {}
    for name, check in (("inputs", lambda: check_inputs(dataset, (64,))),
                        ("labels", lambda: check_labels(dataset, 10)),
                        ("targets", lambda: check_targets(dataset, (10,)))):
        channel.stage(f"check_{name}")
        try:
            check()
        except DataError as exc:
            failed[name] = exc
    if "inputs" in failed:
        raise failed["inputs"]
    if "labels" in failed and "targets" in failed:
        raise failed["labels"]


# ---- hypothesis strategies per harness ---------------------------------------------------
def _seed_and_ops(seeds: dict[str, bytes], structural):
    names = sorted(seeds)
    return st.tuples(st.sampled_from(names), st.booleans(), byte_ops, structural)


@st.composite
def original_cases(draw):
    seeds = original_seeds()
    name, structural, bytes_recipe, struct_recipe = draw(_seed_and_ops(seeds, tflite_ops))
    method = draw(st.sampled_from(["lora", "bias", "adapter", "head"]))
    data = apply_tflite_ops(seeds[name], struct_recipe) if structural else apply_byte_ops(seeds[name], bytes_recipe)
    return name, method, data


@st.composite
def converted_cases(draw):
    """Damage (bytes or structure changed, the checksum left as it was: the
    loader must refuse it) and edits that recompute the checksum (`resealed`,
    only our operators, tensors and metadata: these reach our kernels)."""
    seeds = converted_seeds()
    name, _, bytes_recipe, struct_recipe = draw(_seed_and_ops(seeds, tflite_ops))
    how = draw(st.sampled_from(["bytes", "structure", "resealed", "resealed"]))
    if how == "bytes":
        data = apply_byte_ops(seeds[name], bytes_recipe)
    else:
        data = apply_tflite_ops(seeds[name], struct_recipe, ours_only=how == "resealed")
    return f"{name}, {how}", data


_HEADER_FIELDS = [(4, 2), (6, 2), (8, 8), (16, 4), (20, 4), (24, 4), (28, 4), (32, 4), (36, 4), (40, 4)]


@st.composite
def state_cases(draw):
    from tflm_train.converter.state_format import HEADER_BYTES, seal

    _, state = state_seed()
    if draw(st.booleans()):  # a header field set to an interesting value
        offset, width = draw(st.sampled_from(_HEADER_FIELDS))
        value = draw(st.sampled_from(_INTERESTING)) % (1 << (8 * width))
        blob = bytearray(state)
        blob[offset:offset + width] = value.to_bytes(width, "little")
        blob = bytes(blob)
    else:
        blob = apply_byte_ops(state, draw(byte_ops), start=draw(st.sampled_from([0, HEADER_BYTES])))
    if draw(st.booleans()) and len(blob) >= HEADER_BYTES:
        blob = bytes(seal(bytearray(blob)))  # a valid CRC: the mutation reaches the checks behind it
    if draw(st.integers(0, 9)) == 0:
        blob = draw(st.binary(max_size=200))  # anything at all
    return blob, draw(st.booleans())


_ODD_DTYPES = ["f4", "f8", "f2", "i1", "u1", "i8", "u8", "?", "c8", "U3", "S2", "M8[s]", "m8[s]", "V4",
               [("a", "f4"), ("b", "i4")]]


def _array_bytes(arrays: dict, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "npy":
        np.save(buffer, next(iter(arrays.values())), allow_pickle=True)
    elif kind == "compressed":
        np.savez_compressed(buffer, **arrays)
    else:
        np.savez(buffer, **arrays)
    return buffer.getvalue()


@st.composite
def data_cases(draw):
    seeds = npz_seeds()
    choice = draw(st.integers(0, 2))
    if choice == 0:  # mutated zip bytes of a real data file
        name = draw(st.sampled_from(sorted(seeds)))
        return apply_byte_ops(seeds[name], draw(byte_ops))
    arrays = {}
    for key in draw(st.sampled_from([("x", "y"), ("x",), ("y", "z"), ("x", "y", "extra")])):
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 10, 64]), max_size=3)))
        if draw(st.integers(0, 5)) == 0:
            arrays[key] = np.array([None, 1, "a"], dtype=object)  # object array: refused unpickled
        else:
            dtype = np.dtype(draw(st.sampled_from(_ODD_DTYPES)))
            arrays[key] = np.zeros(shape, dtype)
            if arrays[key].size and dtype.kind == "f":
                arrays[key].flat[0] = draw(st.sampled_from([np.nan, np.inf, -1, 10, 1e30]))
            elif arrays[key].size and dtype.kind in "iu":
                arrays[key].flat[0] = np.array(draw(st.sampled_from([-1, 10, 200]))).astype(dtype)
    blob = _array_bytes(arrays, draw(st.sampled_from(["npz", "compressed", "npy"])))
    if choice == 2:  # and then the zip bytes mutated
        blob = apply_byte_ops(blob, draw(byte_ops))
    return blob


# ---- a run: cases, counts, findings -------------------------------------------------------
@dataclass
class Campaign:
    """Counts outcomes per harness; keeps the findings (and saves them)."""

    findings_dir: Path | None = None
    counts: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    progress_every: int = 0  # print the counts every N cases (0: never)

    def record(self, harness: str, data: bytes, outcome: Outcome, label: str = "") -> None:
        self.counts.setdefault(harness, Counter())[outcome.kind] += 1
        if self.progress_every and self.total() % self.progress_every == 0:
            print(f"{self.total()} cases: " + json.dumps({h: dict(c) for h, c in self.counts.items()}), flush=True)
        if not outcome.is_finding:
            return
        self.findings.append((harness, label, outcome))
        if self.findings_dir is not None:
            self.findings_dir.mkdir(parents=True, exist_ok=True)
            stem = f"{harness}-{outcome.kind}-{len(self.findings):04d}"
            (self.findings_dir / f"{stem}.bin").write_bytes(data)
            (self.findings_dir / f"{stem}.txt").write_text(
                f"{harness} {label}\n{outcome.kind} at stage {outcome.stage}: {outcome.detail}\n")

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def classify(harness: str, outcome: Outcome) -> Outcome:
    """The original harness prepares and invokes the original itself (in its
    child) where the convert pipeline calls tflm_train.memory.check_prepares:
    a crash there is what that guard turns into a ModelError line."""
    guarded = ("prepare-original", "invoke-original", "prepare-converted", "invoke-converted")
    if harness == "original" and outcome.stage in guarded and outcome.kind == "crash":
        return Outcome("refused", f"check_prepares: the interpreter crashes ({outcome.detail})", outcome.stage)
    if harness == "original" and outcome.stage in guarded and outcome.kind == "hang":
        # check_prepares gives up after memory.CHECK_TIMEOUT_SECONDS (a stock kernel spinning)
        return Outcome("refused", "check_prepares: the interpreter does not finish", outcome.stage)
    return outcome


def replay(harness: str, option: str, data: bytes) -> Outcome:
    """One saved case again (regressions/, findings): option is the convert
    method (original), 'kernel' or 'host' (state), or '-'."""
    functions = {
        "original": lambda d, c: check_original(d, c, option),
        "converted": check_converted,
        "state": lambda d, c: check_state(d, c, option == "kernel"),
        "data": check_data,
    }
    return classify(harness, run_isolated(functions[harness], data, HARNESS_TIMEOUT.get(harness, TIMEOUT_SECONDS)))


CHUNK = 25
SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


def run_harness(harness: str, campaign: Campaign, max_examples: int, seconds: float,
                derandomize: bool = False, stop_on_finding: bool = False) -> None:
    """Runs up to max_examples cases of one harness for at most `seconds`."""
    from hypothesis import given

    end = time.monotonic() + seconds
    found = []  # after a finding, hypothesis replays it: past the time budget too

    def running() -> bool:
        return time.monotonic() < end or bool(found)

    def one(data: bytes, function, label: str) -> None:
        outcome = classify(harness, run_isolated(function, data, HARNESS_TIMEOUT.get(harness, TIMEOUT_SECONDS)))
        if not found:
            campaign.record(harness, data, outcome, label)
        if stop_on_finding and outcome.is_finding:
            found.append(outcome)
            raise AssertionError(f"{harness} {label}: {outcome.kind} at stage {outcome.stage}: {outcome.detail}")

    if harness == "original":
        strategy = original_cases()

        def body(case):
            name, method, data = case
            if data is not None and running():
                one(data, lambda d, c: check_original(d, c, method), f"{method} (seed {name})")
    elif harness == "converted":
        strategy = converted_cases()

        def body(case):
            name, data = case
            if data is not None and running():
                one(data, check_converted, f"- (seed {name})")
    elif harness == "state":
        strategy = state_cases()

        def body(case):
            blob, kernel_path = case
            if running():
                one(blob, lambda d, c: check_state(d, c, kernel_path), "kernel" if kernel_path else "host")
    elif harness == "data":
        strategy = data_cases()

        def body(case):
            if running():
                one(case, check_data, "-")
    else:
        raise ValueError(f"unknown harness {harness}")

    # No shrinking: every step of it would fork again; the finding is saved as
    # it is. Chunks of cases, so that the run stops soon after its time is up
    # (hypothesis itself has no time limit); derandomized, chunk i uses seed i.
    from hypothesis import seed

    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    done, chunk = 0, 0
    while done < max_examples and running():
        count = min(CHUNK, max_examples - done)
        test = settings(max_examples=count, phases=phases, **SETTINGS)(given(strategy)(body))
        if derandomize:
            test = seed(chunk)(test)
        test()
        done, chunk = done + count, chunk + 1


TARGETS = ("original", "converted", "state", "data")


def write_zip_member(name: str, payload: bytes) -> bytes:
    """An .npz-like zip with one member (for hand-made regression files)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()
