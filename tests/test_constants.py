"""The constants Python and C++ share are defined once on each side and equal.

converter/constants.py against tflm_ops/kernels/constants.h and
tflm_ops/reference/types.h (op names, per-op options versions, enums), and the
state header layout of converter/state_format.py against
tflm_ops/kernels/training_state.h. The headers are parsed with simple regexes
over their constexpr lines; each failure names the constant that drifted.
"""

from __future__ import annotations

import re
import struct
from enum import Enum
from pathlib import Path

import pytest

from tflm_train.converter import constants, ops, state_format

ROOT = Path(__file__).resolve().parents[1]
CONSTANTS_H = ROOT / "tflm_ops/kernels/constants.h"
TYPES_H = ROOT / "tflm_ops/reference/types.h"
TRAINING_STATE_H = ROOT / "tflm_ops/kernels/training_state.h"

PYTHON_ENUMS = {
    "Mode": constants.Mode,
    "Activation": constants.Activation,
    "LinearKind": constants.LinearKind,
    "LossKind": constants.LossKind,
    "OptimizerKind": constants.OptimizerKind,
    "PoolKind": constants.PoolKind,
    "BroadcastKind": constants.BroadcastKind,
    "GradFlag": constants.GradFlag,
}


def normalized(name: str) -> str:
    """kReluN1To1 / RELU_N1_TO_1 -> relun1to1; kConv2D / CONV_2D -> conv2d."""
    if re.match(r"k[A-Z0-9]", name):
        name = name[1:]
    return name.replace("_", "").lower()


def cpp_op_names(text: str) -> dict[str, str]:
    """kFullyConnectedOpName -> "TFLMT_FULLY_CONNECTED", keyed by FullyConnected."""
    return dict(re.findall(r'constexpr\s+char\s+k(\w+)OpName\[\]\s*=\s*"(\w+)"\s*;', text))


def cpp_options_versions(text: str) -> dict[str, int]:
    found = re.findall(r"constexpr\s+uint8_t\s+k(\w+)OptionsVersion\s*=\s*(\d+)\s*;", text)
    return {name: int(value) for name, value in found}


def cpp_enums(text: str) -> dict[str, dict[str, int]]:
    """enum class X : T { kA = 0, ... } -> {"X": {"kA": 0, ...}} (comments stripped)."""
    text = re.sub(r"//[^\n]*", "", text)
    enums = {}
    for name, body in re.findall(r"enum\s+class\s+(\w+)\s*:\s*\w+\s*\{([^}]*)\}", text):
        members = re.findall(r"(k\w+)\s*=\s*(-?\d+)", body)
        enums[name] = {member: int(value) for member, value in members}
    return enums


def test_the_parsers_find_what_the_headers_hold():
    """Guards the guards: a header reformatted beyond the regexes fails here."""
    header = CONSTANTS_H.read_text()
    assert len(cpp_op_names(header)) == len(constants.ALL_OPS)
    assert len(cpp_options_versions(header)) == len(constants.ALL_OPS)
    enums = {**cpp_enums(header), **cpp_enums(TYPES_H.read_text())}
    assert set(PYTHON_ENUMS) <= set(enums), f"enums missing from the headers: {set(PYTHON_ENUMS) - set(enums)}"


def test_op_names_match():
    cpp = {normalized(key): value for key, value in cpp_op_names(CONSTANTS_H.read_text()).items()}
    python = {normalized(name): getattr(constants, name) for name in dir(constants)
              if isinstance(getattr(constants, name), str) and getattr(constants, name) in constants.ALL_OPS}
    for key in sorted(set(cpp) | set(python)):
        assert key in cpp, f"op {python[key]} is in converter/constants.py but not in kernels/constants.h"
        assert key in python, f"op {cpp[key]} is in kernels/constants.h but not in converter/constants.py"
        assert cpp[key] == python[key], f"op name drifted: C++ {cpp[key]!r}, Python {python[key]!r}"
    assert sorted(constants.ALL_OPS) == sorted(cpp.values())


def test_every_op_has_its_own_options_version_and_they_match():
    header = CONSTANTS_H.read_text()
    names = cpp_op_names(header)
    versions = cpp_options_versions(header)
    assert set(names) == set(versions), f"ops without an options version: {set(names) ^ set(versions)}"
    assert set(constants.OPTIONS_VERSIONS) == set(constants.ALL_OPS)
    for key, op in names.items():
        assert versions[key] == constants.OPTIONS_VERSIONS[op], (
            f"options version of {op} drifted: C++ k{key}OptionsVersion = {versions[key]}, "
            f"Python OPTIONS_VERSIONS[{op!r}] = {constants.OPTIONS_VERSIONS[op]}"
        )


@pytest.mark.parametrize("enum_name", sorted(PYTHON_ENUMS))
def test_enum_matches(enum_name):
    cpp_all = {**cpp_enums(CONSTANTS_H.read_text()), **cpp_enums(TYPES_H.read_text())}
    cpp = {normalized(member): value for member, value in cpp_all[enum_name].items()}
    python_enum: type[Enum] = PYTHON_ENUMS[enum_name]
    python = {normalized(member): int(value) for member, value in python_enum.__members__.items()}
    for member in sorted(set(cpp) | set(python)):
        assert member in cpp, f"{enum_name}.{member} is in Python but not in C++"
        assert member in python, f"{enum_name}.{member} is in C++ but not in Python"
        assert cpp[member] == python[member], (
            f"{enum_name}.{member} drifted: C++ {cpp[member]}, Python {python[member]}"
        )


def test_ops_module_re_exports_the_shared_constants():
    """Other modules use ops.X; those must be the very objects of constants.py."""
    for name in ("FULLY_CONNECTED", "ALL_OPS", "Activation", "Mode", "LinearKind", "GradFlag", "LOSS_KINDS",
                 "OPTIMIZER_KINDS", "BROADCAST_KINDS", "MAX_DIMS"):
        assert getattr(ops, name) is getattr(constants, name), name
    assert (ops.GradFlag.DY_POOLED, ops.GradFlag.ACTIVATION_MASK) == (1, 2)


def test_each_options_builder_writes_its_own_ops_version(monkeypatch):
    """Bumping one op's version changes that op's blob and no other."""
    layer = ops.LinearLayer.fully_connected(3, 2)
    builders = {
        ops.FULLY_CONNECTED: layer.options,
        ops.FULLY_CONNECTED_GRAD: layer.grad_options,
        ops.ADAPTER: ops.AdapterLayer(4, 2, 0, 8, 10, 18).options,
        ops.ADAPTER_GRAD: ops.AdapterLayer(4, 2, 0, 8, 10, 18).grad_options,
        ops.ACTIVATION_GRAD: lambda: ops.activation_grad_options(ops.Activation.RELU),
        ops.SOFTMAX_GRAD: lambda: ops.softmax_grad_options(1.0),
        ops.LOSS: lambda: ops.loss_options("ce"),
        ops.OPTIMIZER: lambda: ops.OptimizerConfig().options(),
        ops.ADD_GRADS: ops.version_only_options,
        ops.STATE: lambda: ops.version_only_options(ops.STATE),
        ops.POOL_GRAD: lambda: ops.pool_grad_options("max", (1, 2, 2, 1), (1, 1, 1, 1), (2, 2), (2, 2), (0, 0)),
        ops.MEAN_GRAD: lambda: ops.mean_grad_options((1, 2, 2, 1), (1, 2)),
        ops.CROP: lambda: ops.crop_options((1, 4), (0, 1), (1, 2)),
        ops.BROADCAST_GRAD: lambda: ops.broadcast_grad_options("add", (2, 3), (1, 3), (2, 3)),
    }
    for op, build in builders.items():
        assert build()[0] == constants.OPTIONS_VERSIONS[op], op
        versions = dict(constants.OPTIONS_VERSIONS, **{op: 77})
        monkeypatch.setattr(ops, "OPTIONS_VERSIONS", versions)
        assert build()[0] == 77, f"{op}'s options builder does not write {op}'s version"
        monkeypatch.setattr(ops, "OPTIONS_VERSIONS", constants.OPTIONS_VERSIONS)


def test_state_header_layout_matches():
    header = TRAINING_STATE_H.read_text()
    offsets = {name: int(value) for name, value in re.findall(r"constexpr\s+size_t\s+k(\w+)Offset\s*=\s*(\d+)\s*;", header)}
    header_bytes = int(re.search(r"constexpr\s+size_t\s+kHeaderBytes\s*=\s*(\d+)\s*;", header).group(1))
    version = int(re.search(r"constexpr\s+uint16_t\s+kFormatVersion\s*=\s*(\d+)\s*;", header).group(1))
    magic = re.search(r"kMagic\[4\]\s*=\s*\{([^}]*)\}", header).group(1)
    assert header_bytes == state_format.HEADER_BYTES, "state header size drifted"
    assert version == state_format.FORMAT_VERSION, "state format version drifted"
    assert "".join(re.findall(r"'(.)'", magic)).encode() == state_format.MAGIC, "state magic drifted"
    assert offsets["Crc"] == state_format._CRC_OFFSET, "state CRC offset drifted"
    # Where each field of the Python header struct starts (after the magic).
    starts, position = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", state_format._HEADER.format):
        if position > 0:
            starts.append(position)
        position += struct.calcsize("<" + count + code)
    for name, offset in offsets.items():
        assert offset in starts, f"state header field k{name}Offset = {offset} is no field of state_format's header"
    assert len(offsets) == len(starts), f"C++ names {len(offsets)} header fields, Python packs {len(starts)}"
