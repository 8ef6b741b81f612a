"""Memory-aware backward pass: what stays alive, measured and computed.

Arena sizes are measurements (the smallest arena the interpreter allocates
in), deterministic for a given model, so budgets can be asserted; timings
are not, and live in benchmarks/.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnn_models
import golden
from tflm_train.converter import ConvertConfig, convert, ops
from tflm_train.converter.model_ir import Model
from tflm_train.converter.liveness import live_bytes
from tflm_train.converter.state_format import HEADER_BYTES
from tflm_train.memory import smallest_arena
from tflm_train.sparse import choose_sparse
from tflm_train.trainer import TrainableModel


@pytest.fixture(scope="module")
def ds_cnn():
    """DS-CNN-S int8 as cnn_models.ds_cnn_s() builds it (checked in: no TensorFlow needed)."""
    return golden.model("ds_cnn_s_int8")


def test_ds_cnn_lora_trains_in_little_more_than_inference_memory(ds_cnn):
    """The issue's target: training arena <= 1.3 x (inference arena + state)."""
    result = convert(ds_cnn, ConvertConfig(method="lora", targets="last:2"))
    inference, training = smallest_arena(ds_cnn), smallest_arena(result.model)
    assert training <= 1.3 * (inference + result.metadata["state"]["bytes"]), (inference, training)


def test_global_pool_gradient_is_never_spread_out(ds_cnn):
    model = Model.from_bytes(convert(ds_cnn, ConvertConfig(method="lora", targets="last:2")).model)
    kinds = [model.op_type(op) for op in model.operators]
    assert "TFLMT_POOL_GRAD" not in kinds  # the conv reads the pooled gradient itself
    # No float tensor as large as the last conv's output (125 positions x 64).
    grads = [t for t in range(len(model.tensors)) if model.tensor_name(t).endswith("/grad")]
    assert max(int(np.prod(model.shape(t))) for t in grads) < 125 * 64


def test_bias_only_backward_keeps_no_layer_input_alive(ds_cnn):
    result = convert(ds_cnn, ConvertConfig(method="bias", targets="last:10"))
    model = Model.from_bytes(result.model)
    for op in model.operators:
        kind = model.op_type(op)
        if kind.endswith("_GRAD") and kind.startswith(("TFLMT_CONV", "TFLMT_DEPTHWISE", "TFLMT_FULLY")):
            assert model.inputs_of(op)[1] == -1, kind  # x not read
    forward_relu = [op for op in model.operators if model.op_type(op) in ("TFLMT_CONV_2D", "TFLMT_DEPTHWISE_CONV_2D")]
    assert all(model.tensor_name(model.outputs_of(op)[-1]).endswith("/activation_mask") for op in forward_relu)
    # Live activations at the peak: the float gradients in flight and masks,
    # not the ten int8 layer outputs (8,000 bytes each) of the forward pass.
    liveness = live_bytes(result.model)
    int8_outputs = [b for name, b in liveness.peak_tensors if b == 8000 and not name.endswith("/grad")]
    assert len(int8_outputs) <= 2, liveness.peak_tensors[:12]


def test_activation_mask_gives_the_same_gradients_as_the_output():
    """A backward op reading the forward op's 1-bit mask computes exactly what
    it computes from the stored int8 output."""
    import dataclasses

    from graphs import Graph, state_blob, state_grads
    from tflm_train.converter import ops
    from tflm_train.converter.model_ir import Quant

    rng = np.random.default_rng(8)
    layer = ops.LinearLayer(kind=ops.LinearKind.CONV_2D, in_channels=3, out_channels=5, activation=ops.Activation.RELU6,
                            kernel=(3, 3), padding=(1, 1), out_size=(6, 6), bias_offset=0)
    w_q = rng.integers(-127, 128, size=layer.weight_shape()).astype(np.int8)
    x_q = rng.integers(-128, 128, size=(1, 6, 6, 3)).astype(np.int8)
    dy = rng.normal(size=(1, 6, 6, 5)).astype(np.float32)
    params = rng.normal(size=5).astype(np.float32)
    results = []
    for use_mask in (False, True):
        l = dataclasses.replace(layer, grad_flags=2 if use_mask else 0)
        g = Graph()
        tx = g.input("x", x_q.shape, np.int8, quant=Quant.of(0.05, 0))
        tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
        tstate = g.state(params)
        tw = g.const("w", w_q, quant=Quant.of(np.full(5, 0.01, np.float32), 0))
        ty = g.output(g.tensor("y", (1, 6, 6, 5), np.int8, quant=Quant.of(0.03, -128)))
        outputs = [ty]
        if use_mask:
            outputs.append(g.tensor("mask", [(6 * 6 * 5 + 7) // 8], np.uint8))
        g.op(l.forward_op, [tx, tw, -1, tstate], outputs, l.options())
        tdx = g.output(g.tensor("dx", x_q.shape))
        g.op(l.grad_op, [tdy, -1, outputs[-1], tw, tstate, tmode, -1], [tdx], l.options())
        out = g.run({tx: x_q, tdy: dy, tmode: np.array([1], np.int32), tstate: state_blob(params)})
        results.append((out[ty], out[tdx], state_grads(out[tstate], 5)))
    for stored, masked in zip(*results):
        np.testing.assert_array_equal(stored, masked)


def test_sparse_update_picks_parts_within_the_budget(ds_cnn):
    """A budget far below what every layer's bias needs (the issue's case) is
    accepted: only the last layer's bias is required (without data, parts are
    ranked from the output back; tests/test_sparse_contribution.py ranks by data)."""
    biases_only = smallest_arena(convert(ds_cnn, ConvertConfig(method="sparse")).model)
    budget = biases_only // 2
    choice = choose_sparse(ds_cnn, ConvertConfig(method="sparse"), budget)
    assert choice.ranking == "output-first"
    assert choice.arena_bytes <= budget < biases_only
    assert smallest_arena(choice.result.model) == choice.arena_bytes
    adapted = choice.result.metadata["adapted"]
    last = adapted[-1]["name"]
    assert last in choice.bias_layers and last == "ds_cnn_s_1/logits_1"
    assert {a["name"] for a in adapted if a["weights"]} == set(choice.weight_layers)
    assert {a["name"] for a in adapted if a["bias"]} == set(choice.bias_layers)
    # Every part kept was measured within the budget on its own; every part
    # measured over it on its own was left out.
    for part in choice.parts:
        if part.arena_bytes is None or part.arena_bytes > budget:  # None: over it (one probe)
            assert not part.chosen
    assert any(p.chosen for p in choice.parts)  # more than the base fits
    with pytest.raises(Exception, match="too small: training only the last layer's bias"):
        choose_sparse(ds_cnn, ConvertConfig(method="sparse"), smallest_arena(ds_cnn))


def _hidden_tensors(model_bytes: bytes) -> list[str]:
    model = Model.from_bytes(model_bytes)
    return [model.tensor_name(t) for t in range(len(model.tensors))
            if model.tensor_name(t).endswith(("/lora_hidden", "/adapter_hidden"))]


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_recomputed_hidden_rows_train_like_kept_ones(ds_cnn, method):
    """The backward pass recomputing LoRA's conv_A(x) / the adapter's
    act(D x + bd) gives the steps that keeping them gives; only memory differs.
    Targets: the strided 10x4 first conv (LoRA A is a k x k conv), the last
    pointwise conv (its gradient arrives pooled) and the classifier."""
    base = Model.from_bytes(ds_cnn)
    linear = [i for i, op in enumerate(base.operators)
              if base.op_type(op) in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    targets = f"{linear[0]},{linear[-2]},{linear[-1]}"
    x, y = cnn_models.synthetic_data("ds_cnn_s", 4, seed=5)
    runs = {}
    for mode in ("never", "always"):
        result = convert(ds_cnn, ConvertConfig(method=method, targets=targets, recompute=mode))
        model = Model.from_bytes(result.model)
        hidden = _hidden_tensors(result.model)
        if mode == "never":
            assert len(hidden) == 3
        else:
            # The two convs' hidden rows are gone from the graph: the forward op
            # does not write them, the backward op reads -1. The classifier's
            # is a single row, which is not worth recomputing.
            assert len(hidden) == 1 and any("recomputes the hidden rows" in n for n in result.metadata["notes"])
            if method == "lora":  # the LoRA convs' backward ops (not the frozen ones')
                grads = [op for op in model.operators if model.op_type(op) == "TFLMT_CONV_2D_GRAD"
                         and ops.LinearLayer.from_options(op.customOptions).lora_rank > 0]
                position = 6
            else:
                grads = [op for op in model.operators if model.op_type(op) == "TFLMT_ADAPTER_GRAD"
                         and int(np.prod(model.shape(model.inputs_of(op)[1])[:-1])) > 1]  # not the classifier's
                position = 2
            assert len(grads) == 2 and all(model.inputs_of(op)[position] == -1 for op in grads)
        trainable = TrainableModel(result.model)
        losses = [trainable.train_step(x[i], int(y[i]), 0.05) for i in range(len(x))]
        predictions = trainable.predict(x[0])
        runs[mode] = (np.array(losses), np.frombuffer(trainable.save_state(), np.uint8), predictions)
    kept, recomputed = runs["never"], runs["always"]
    assert not np.allclose(kept[0][0], kept[0][-1])  # it trained
    np.testing.assert_allclose(recomputed[0], kept[0], rtol=1e-6)
    np.testing.assert_array_equal(recomputed[2], kept[2])
    # Parameters, gradients and optimizer slots (the header's CRC differs with them).
    body = lambda state: state[HEADER_BYTES:].view(np.float32)  # noqa: E731
    np.testing.assert_allclose(body(recomputed[1]), body(kept[1]), rtol=1e-5, atol=1e-7)


@pytest.mark.tf
def test_recompute_auto_only_where_the_activation_peak_drops(ds_cnn):
    # DS-CNN, LoRA on the last pointwise conv and the classifier: the peak is
    # at the pointwise conv's forward op, where its hidden rows are alive.
    config = dict(method="lora", targets="last:2")
    kept = convert(ds_cnn, ConvertConfig(recompute="never", **config))
    auto = convert(ds_cnn, ConvertConfig(recompute="auto", **config))
    # The pointwise conv's 125 x 4 floats are recomputed; the classifier's 4
    # floats are not at the peak, so they are kept.
    assert len(_hidden_tensors(kept.model)) == 2
    assert [name.split("/lora_hidden")[0].endswith("BiasAdd") for name in _hidden_tensors(auto.model)] == [True]
    assert live_bytes(auto.model).peak_bytes < live_bytes(kept.model).peak_bytes
    assert smallest_arena(auto.model) < smallest_arena(kept.model)  # measured, not only computed
    # MobileNetV1: the peak is in the first blocks' forward pass, long before
    # the adapted last layers; recomputing would cost time and save nothing.
    mobilenet = cnn_models.mobilenet_v1_025_vww().int8_model
    auto = convert(mobilenet, ConvertConfig(recompute="auto", **config))
    assert len(_hidden_tensors(auto.model)) == 2
    assert not any("recomputes" in note for note in auto.metadata["notes"])
    always = convert(mobilenet, ConvertConfig(recompute="always", **config))
    assert live_bytes(always.model).peak_bytes == live_bytes(auto.model).peak_bytes


@pytest.mark.tf
@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_recompute_on_a_dense_layer_over_time_steps(method, quantized):
    """A Dense applied to every step of a sequence is a FULLY_CONNECTED with
    several rows: its hidden rows are recomputed (float and int8 paths) and
    train as the kept ones do."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(3)
    keras_model = tf.keras.Sequential([
        tf.keras.Input((6, 8)),
        tf.keras.layers.Dense(12, activation="relu"),  # FULLY_CONNECTED on 6 rows
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3),
    ])
    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, 6, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=8)
    base = cnn_models.to_tflite(keras_model, representative=x if quantized else None)
    parsed = Model.from_bytes(base)
    first = min(i for i, op in enumerate(parsed.operators) if parsed.op_type(op) == "FULLY_CONNECTED")
    runs = {}
    for mode in ("never", "always"):
        result = convert(base, ConvertConfig(method=method, targets=f"{first}", loss="ce", recompute=mode))
        assert len(_hidden_tensors(result.model)) == (1 if mode == "never" else 0)
        trainable = TrainableModel(result.model)
        losses = [trainable.train_step(x[i], int(y[i]), 0.05) for i in range(len(x))]
        runs[mode] = (np.array(losses), trainable.predict(x[0]),
                      np.frombuffer(trainable.save_state(), np.uint8)[HEADER_BYTES:].view(np.float32))
    assert not np.allclose(runs["never"][0][0], runs["never"][0][-1])
    np.testing.assert_allclose(runs["always"][0], runs["never"][0], rtol=1e-6)
    np.testing.assert_allclose(runs["always"][1], runs["never"][1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(runs["always"][2], runs["never"][2], rtol=1e-5, atol=1e-7)
