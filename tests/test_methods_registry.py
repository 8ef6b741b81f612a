"""One place per method and per gradient rule: the registries and what reads them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tflm_train.cli import cli
from tflm_train.converter import ConversionError, ConvertConfig, convert, gradients, methods
from tflm_train.converter.constants import GradFlag
from tflm_train.converter.merge import merge
from tflm_train.converter.methods import bias
from tflm_train.converter.model_ir import Model
from tflm_train.converter.ops import Activation, LinearLayer
from tflm_train.trainer import PlainModel, TrainableModel


def test_cli_method_choices_and_help_come_from_the_registry():
    option = next(p for p in cli.commands["convert"].params if p.name == "method")
    assert tuple(option.type.choices) == methods.names()
    for spec in methods.specs():
        assert f"{spec.name}: {spec.help}" in option.help


@pytest.mark.parametrize("method", methods.names())
def test_options_of_other_methods_are_refused(method):
    spec = methods.get(method)
    foreign = {"classes": 3, "head_mode": "append", "sparse_weights": "0", "lora_alpha": 8.0, "r": 2}
    for option, value in foreign.items():
        owners = [s.name for s in methods.specs() if option in s.options]
        if method in owners:
            continue
        with pytest.raises(ConversionError, match=f"{option} is an option of method {' / '.join(owners)}"):
            ConvertConfig(method=method, **{option: value})
    ConvertConfig(method=method, **{k: v for k, v in foreign.items() if k in spec.options})  # its own: fine


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ConversionError, match="unknown method 'loha' \\(choose from lora, adapter, bias, head, sparse\\)"):
        ConvertConfig(method="loha")


@pytest.fixture
def extra_method():
    """A method added the way a new module would: one MethodSpec, registered."""
    spec = methods.register(dataclasses.replace(methods.get("bias"), name="bias_fc", eligible_ops=("FULLY_CONNECTED",),
                                                help="biases of FULLY_CONNECTED layers only", apply=bias.apply))
    yield spec
    methods._REGISTRY.pop(spec.name)


def test_a_registered_method_converts_trains_and_merges(digits, extra_method):
    result = convert(digits.float_model, ConvertConfig(method="bias_fc", targets="last:1"))
    assert result.metadata["config"]["method"] == "bias_fc"
    assert [a["op"] for a in result.metadata["adapted"]] == ["FULLY_CONNECTED"]
    model = TrainableModel(result.model)
    before = model.save_state()
    for i in range(8):
        model.train_step(digits.user_train.x[i], digits.user_train.y[i], 0.05)
    assert model.save_state() != before
    merged = PlainModel(merge(result.model, model.save_state()))
    np.testing.assert_allclose(merged.predict(digits.user_test.x[0]), model.predict(digits.user_test.x[0]), atol=1e-5)
    with pytest.raises(ValueError, match="registered twice"):
        methods.register(dataclasses.replace(extra_method, help="another"))


def test_methods_that_cannot_merge_say_why(digits):
    for spec in methods.specs():
        assert spec.merge_note, spec.name
    refusing = [s for s in methods.specs() if not s.merges]
    assert [s.name for s in refusing] == ["adapter"]
    converted = convert(digits.int8_model, ConvertConfig(method="adapter")).model
    with pytest.raises(ConversionError, match="cannot be folded"):
        merge(converted)


def test_backward_rule_table_covers_every_supported_op():
    # The op types the backward pass went through before the table existed.
    before = {
        "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TFLMT_FULLY_CONNECTED", "TFLMT_CONV_2D",
        "TFLMT_DEPTHWISE_CONV_2D", "TFLMT_ADAPTER", "SOFTMAX", "MEAN", "PAD", "PADV2", "CONCATENATION", "RELU",
        "RELU6", "RELU_N1_TO_1", "TANH", "LOGISTIC", "QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
        "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "SUB", "MUL",
    }
    assert gradients.supported() == before
    with pytest.raises(ValueError, match="two backward rules for SOFTMAX"):
        gradients.rule("SOFTMAX")(lambda bw, step: None)


def test_activation_mask_pass_flags_forward_and_backward_ops(digits):
    result = convert(digits.int8_model, ConvertConfig(method="lora", targets="last:3"))
    model = Model.from_bytes(result.model)
    masked = 0
    for op in model.operators:
        kind = model.op_type(op)
        if kind not in ("TFLMT_FULLY_CONNECTED", "TFLMT_FULLY_CONNECTED_GRAD"):
            continue
        layer = LinearLayer.from_options(op.customOptions)
        if layer.activation in (Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1):  # a mask replaces y
            assert layer.grad_flags & GradFlag.ACTIVATION_MASK, kind
            if kind == "TFLMT_FULLY_CONNECTED":
                mask = model.outputs_of(op)[-1]
                assert model.tensor_name(mask).endswith("/activation_mask")
                assert model.dtype(mask) == np.uint8
                masked += 1
        else:
            assert not layer.grad_flags & GradFlag.ACTIVATION_MASK, kind
    assert masked == 2  # the two hidden ReLU layers; the last one has no activation


def test_cli_refuses_another_methods_option_by_its_flag():
    from test_cli import MODEL, assert_user_error, run

    from tflm_train.cli import CLI_FLAGS

    assert {option for spec in methods.specs() for option in spec.options} <= set(CLI_FLAGS)
    done = run("convert", MODEL, "-o", "/nonexistent/never-written.tflite", "--method", "bias", "--rank", "2")
    assert_user_error(done, "--rank is an option of --method lora / adapter, not of bias")
