"""`tflm-train report` on integer training (--arithmetic int8): a trainable
parameter is 2 bytes (int16) there, not float32's 4; its gradient
accumulator and a momentum velocity are 4 bytes (int32)."""

from __future__ import annotations

from pathlib import Path

from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.convert import convert
from tflm_train.converter.ops import OptimizerConfig
from tflm_train.converter.state_format import HEADER_BYTES
from tflm_train.memory_report import parameter_bytes, report

DIGITS = Path(__file__).resolve().parents[1] / "tflm_train/examples/digits/model_int8.tflite"


def test_report_counts_two_bytes_per_int16_parameter():
    base = DIGITS.read_bytes()
    floats = convert(base, ConvertConfig(targets="last:3"))
    ints = convert(base, ConvertConfig(targets="last:3", arithmetic="int8",
                                       optimizer=OptimizerConfig(kind="momentum")))
    p = ints.metadata["state"]["param_count"]
    assert p == floats.metadata["state"]["param_count"] == 680
    measured = {name: report(result.model).to_json() for name, result in (("float", floats), ("int8", ints))}
    assert measured["float"]["trainable_param_bytes"] == 4 * p
    assert measured["float"]["breakdown"]["adapter parameters"] == 4 * p
    assert measured["int8"]["trainable_param_bytes"] == 2 * p
    assert measured["int8"]["breakdown"]["adapter parameters"] == 2 * p
    assert measured["int8"]["optimizer_state_bytes"] == 4 * p  # one int32 velocity each
    # The parts add up to the state the converter laid out (int16 values padded to 4 bytes).
    state = ints.metadata["state"]["bytes"] - HEADER_BYTES
    assert state == (2 * p + 3) // 4 * 4 + 4 * p + measured["int8"]["optimizer_state_bytes"]
    # int8 parameters, where a layout has them, are 1 byte each.
    assert parameter_bytes([{"shape": [3, 5], "dtype": "int8"}, {"shape": [4]}]) == 15 + 16
