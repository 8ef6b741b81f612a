"""tflm-train benchmark: training-step time and memory against inference and TensorFlow.

    python benchmarks/run.py                 # the full table (a few minutes on 2 cores)
    python benchmarks/run.py --json          # the same as one JSON object
    python benchmarks/run.py --models ds_cnn_s --methods lora --repeats 20
    python benchmarks/run.py --mobilenet     # + MobileNetV2 w0.35 at 96/128/160 (slow)
    python benchmarks/run.py --steps-only    # only the per-step split and float vs int8 (seconds)

For each reference model (tests/cnn_models.py, int8 via TFLiteConverter) and
method, all in one run, on this machine:
  inference ms   one Invoke() of the original model in the TFLM x86 interpreter
  train ms       one training Invoke() of the converted model (forward, loss,
                 backward, update), the same interpreter
  arena ratios   training arena / inference arena, and training arena / the
                 step's live activations at its peak (computed from the graph)
  TF eager / tf.function ms and MB: the same fine-tuning step (batch 1, same
                 adapters, float weights of the same model) in TensorFlow; MB is
                 the peak resident memory (Linux VmHWM, reset just before the
                 first step) above the resident memory at that moment, tracing
                 included, in a fresh process per mode: what the steps add on
                 top of TensorFlow's own baseline (hundreds of MB, not counted)
With TFLM_DIR set (a tflite-micro checkout), each row is also measured on
Cortex-M4 under QEMU (firmware/trainer): instructions of one inference of the
converted model (mode 0) and one training step (-icount: instructions, not
cycles), and the smallest 32-bit arena.
Per step (digits MLP, always; fast): a training step split into forward,
backward, optimizer and state bookkeeping by the kernel plugin's per-kernel
timer (tflm_train/profiling.py), next to one inference, for LoRA and for
sparse with every weight training; and the float vs integer LoRA step once
convert has --arithmetic int8 (else the row says n/a).
With --sparse-budget: the issue's small-budget case, a 16,384-byte budget on a
small DS-CNN (tests/cnn_models.ds_cnn_small, 38 channels, inference arena
13,744 B), chosen by contribution on its synthetic data with a level offset;
the choice, its arena and the trial's held-out gain (a minute: Keras build).
With --mobilenet: MobileNetV2 w0.35 (Keras, int8) at --mobilenet-resolutions,
inference and training arenas (lora, bias, sparse chosen within 256 KB), next
to the published figures of Lin et al. 2022 (minutes: not for CI).
Times are medians of --repeats steps after a warm-up; the two sides of a ratio
(inference and training step, TFLM forward and our backward kernel) are timed
alternately, so that both see the same machine load. Targets from the issue
are checked and printed; they are targets, not tests (these machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from tflm_train.converter import ConvertConfig, convert  # noqa: E402
from tflm_train.converter.liveness import live_bytes  # noqa: E402
from tflm_train.memory import smallest_arena  # noqa: E402
from tflm_train.trainer import PlainModel, TrainableModel, quantize  # noqa: E402

METHODS = {
    "lora": ConvertConfig(method="lora", targets="last:2"),
    "bias": ConvertConfig(method="bias", targets="last:2"),
    "head": ConvertConfig(method="head"),
    "adapter": ConvertConfig(method="adapter", targets="last:2"),
    "sparse": ConvertConfig(method="sparse"),  # the biases of every layer
}
MODELS = ("ds_cnn_s", "mobilenet_v1_025_vww", "resnet8", "fc_autoencoder")


def paired_median_ms(first, second, repeats: int) -> tuple[float, float]:
    """Median wall time of two steps, timed alternately so that both see the
    same machine load: their ratio is the number to quote."""
    first(), second()  # warm-up
    times = ([], [])
    for _ in range(repeats):
        for step, samples in ((first, times[0]), (second, times[1])):
            start = time.perf_counter_ns()
            step()
            samples.append(time.perf_counter_ns() - start)
    return statistics.median(times[0]) / 1e6, statistics.median(times[1]) / 1e6


def tflm_times(base: bytes, converted: bytes, sample: np.ndarray, label, repeats: int) -> tuple[float, float]:
    # Every timed step writes its inputs, as firmware does: TFLM's planner may
    # reuse an input's arena bytes once its last reader has run, so an input
    # is only valid for the invoke it was written for.
    plain = PlainModel(base)
    quantized = quantize(sample[None], plain.input_details)

    def infer():
        plain.interpreter.set_input(0, quantized)
        plain.interpreter.invoke()

    model = TrainableModel(converted)
    return paired_median_ms(infer, lambda: model.train_step(sample, label, 1e-4), repeats)


TF_STEP = r"""
import ctypes, gc, json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, sys.argv[1])
import numpy as np, tensorflow as tf
import tf_reference
from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.state_format import Header, parameters
from tflm_train.trainer import TrainableModel
import cnn_models
args = json.loads(sys.argv[2])
built = getattr(cnn_models, args["model"])()
base = built.float_model
result = convert(base, ConvertConfig(**args["config"]))
state = TrainableModel(result.model).save_state()
params = parameters(state, Header.unpack(state))
x, y = built.sample_data(1, seed=3)
x = x[:1].astype(np.float32)
# The same tensors on the same layers as the converted model trains.
reference = tf_reference.ConvertedModel(base, result.metadata, params)
variables = reference.variables
optimizer = tf.keras.optimizers.SGD(1e-4)
reconstruction = built.task == "reconstruction"
def step():
    with tf.GradientTape() as tape:
        out = reference.output(x, logits=not reconstruction)
        if reconstruction:
            loss = tf.reduce_mean((out - x) ** 2)
        else:
            loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([int(y[0])]), out)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
if args["mode"] == "function":
    step = tf.function(step)
def status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024
del result, state  # the conversion's garbage must not be freed inside the measurement
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the baseline is what is live
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # restart the kernel's peak-resident counter (VmHWM) from here
before = status_mb("VmRSS")  # model and data ready, no step yet
step()  # warm-up (tf.function traces here)
times = []
for _ in range(args["repeats"]):
    start = time.perf_counter_ns(); step(); times.append(time.perf_counter_ns() - start)
times.sort()
print(json.dumps({"ms": times[len(times) // 2] / 1e6, "peak_mb": status_mb("VmHWM") - before}))
"""


def tf_step(model: str, config: ConvertConfig, mode: str, repeats: int) -> dict:
    """The fine-tuning step in TensorFlow, in a fresh process (for its memory)."""
    config_json = {"method": config.method, "targets": config.targets}
    done = subprocess.run(
        [sys.executable, "-c", TF_STEP, str(ROOT / "tests"),
         json.dumps({"model": model, "config": config_json, "mode": mode, "repeats": repeats})],
        capture_output=True, text=True, timeout=1200,
    )
    if done.returncode != 0:
        return {"ms": float("nan"), "peak_mb": float("nan"), "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- per-step split (digits MLP) -------------------------------------------------------------------
DIGITS = ROOT / "tflm_train" / "examples" / "digits" / "model_int8.tflite"
STEP_SPLIT_CONFIGS = {
    "lora": ConvertConfig(method="lora", targets="last:2"),
    # Every weight and bias of the MLP trains: forward, input and weight gradients.
    "sparse (all weights)": ConvertConfig(method="sparse", sparse_weights="last:3"),
}


def integer_arithmetic_config(config: ConvertConfig) -> ConvertConfig | None:
    """The same conversion with integer training (issue 17 items 2-3), or None
    when this build has no `arithmetic` option (convert --arithmetic int8)."""
    import dataclasses

    if "arithmetic" not in {f.name for f in dataclasses.fields(ConvertConfig)}:
        return None
    return dataclasses.replace(config, arithmetic="int8")


def _raw_step(model: TrainableModel, sample: np.ndarray, label) -> callable:
    """Writes every input (as firmware does: TFLM may reuse an input's bytes
    once read) and invokes: the step without the Python API's conversions."""
    raw = model.interpreter._interpreter
    feeds = [(quantize(sample[None], model.input_details), 0),
             (quantize(np.asarray(label)[None], model._target_details), model._target),
             (np.array([1e-4], np.float32), model._learning_rate),
             (np.array([1], np.int32), model._mode)]  # Mode.TRAIN

    def step():
        for value, index in feeds:
            raw.set_input(value, index)
        raw.invoke()
    return step


def step_split(base: bytes, config: ConvertConfig, sample: np.ndarray, label, blocks: int, block_steps: int) -> dict:
    """A training step split into forward / backward / optimizer / bookkeeping
    by the plugin's per-kernel timer (tflm_train/profiling.py), next to one
    inference of the original model timed the same way (input written,
    Invoke). Blocks of steps alternate between the two, so both see the same
    load; each number is the median over blocks of the per-step medians.
    The kernels are timed inside the plugin; the rest of a step (input
    writes through the wheel's Python binding, TFLM's dispatch) is
    `interpreter_us`."""
    from tflm_train.profiling import PARTS, profiled_interpreters, split_step

    result = convert(base, config)
    with profiled_interpreters():
        model = TrainableModel(result.model)
        plain = PlainModel(base)
    train = _raw_step(model, sample, label)
    raw_plain = plain.interpreter._interpreter
    x = quantize(sample[None], plain.input_details)

    def infer():
        raw_plain.set_input(x, 0)
        raw_plain.invoke()

    trains, infers = [], []
    for _ in range(blocks):
        trains.append(split_step(train, block_steps))
        infers.append(split_step(infer, block_steps))
    med = statistics.median
    row = {"config": {"method": config.method, "targets": config.targets, "sparse_weights": config.sparse_weights},
           "trainable_params": result.metadata["state"]["param_count"],
           "inference_us": med(s.wall_us for s in infers),
           "step_us": med(s.wall_us for s in trains),
           "interpreter_us": med(s.interpreter_us for s in trains)}
    for part in PARTS:
        row[f"{part}_us"] = med(s.parts_us[part] for s in trains)
    row["step_over_inference"] = row["step_us"] / row["inference_us"]
    # Kernels only (what a device pays; the host binding's per-input cost and
    # the interpreter's dispatch left out): the sums of the timed kernels.
    row["inference_kernels_us"] = med(s.kernels_us for s in infers)
    row["step_kernels_us"] = med(s.kernels_us for s in trains)
    row["kernels_over_inference"] = row["step_kernels_us"] / row["inference_kernels_us"]
    row["bookkeeping_share"] = row["bookkeeping_us"] / row["step_us"]
    # The Python API on top (quantizing the sample, label checks, the error
    # capture around Invoke): what `fit` pays per sample on the host.
    label_in = label

    def api_step():
        model.train_step(sample, label_in, 1e-4)
    api_step()
    row["python_train_step_us"] = med(split_step(api_step, block_steps).wall_us for _ in range(max(3, blocks // 3)))
    return row


def step_rows(blocks: int, block_steps: int) -> tuple[list[dict], dict]:
    data = np.load(DIGITS.parent / "user_train.npz")
    sample, label = data["x"][0].astype(np.float32), int(data["y"][0])
    base = DIGITS.read_bytes()
    rows = []
    for name, config in STEP_SPLIT_CONFIGS.items():
        row = step_split(base, config, sample, label, blocks, block_steps)
        row["name"] = name
        rows.append(row)
    # ---- float vs integer training step (issue 17 items 2-3) ----
    # Filled in once convert has --arithmetic int8 (ConvertConfig.arithmetic):
    # the same LoRA conversion, float and integer, timed in alternating blocks.
    integer = integer_arithmetic_config(STEP_SPLIT_CONFIGS["lora"])
    if integer is None:
        float_vs_int = {"available": False, "note": "n/a (no --arithmetic int8 in this build)"}
    else:
        float_vs_int = float_vs_integer_step(base, STEP_SPLIT_CONFIGS["lora"], integer, sample, label, blocks,
                                             block_steps)
    return rows, float_vs_int


def float_vs_integer_step(base: bytes, float_config: ConvertConfig, int_config: ConvertConfig, sample: np.ndarray,
                          label, blocks: int, block_steps: int) -> dict:
    """The same conversion trained in float and in integers: blocks of steps
    alternate between the two (same machine load), each op's time is the
    median over blocks of its per-step median (the plugin's per-kernel timer)."""
    from tflm_train.profiling import profiled_interpreters, split_step

    with profiled_interpreters():
        steps = {name: _raw_step(TrainableModel(convert(base, config).model), sample, label)
                 for name, config in (("float", float_config), ("int8", int_config))}
    splits: dict[str, list] = {name: [] for name in steps}
    for _ in range(blocks):
        for name, step in steps.items():
            splits[name].append(split_step(step, block_steps))
    med = statistics.median
    out = {"available": True}
    for name, runs in splits.items():
        ops = sorted({op for run in runs for op in run.by_op_us})
        out[f"{name}_step_us"] = med(r.wall_us for r in runs)
        out[f"{name}_kernels_us"] = med(r.kernels_us for r in runs)
        out[f"{name}_by_op_us"] = {op: med(r.by_op_us.get(op, 0.0) for r in runs) for op in ops}
    out["int8_over_float"] = out["int8_step_us"] / out["float_step_us"]
    out["int8_over_float_kernels"] = out["int8_kernels_us"] / out["float_kernels_us"]
    return out


# ---- MobileNetV2 w0.35 at MCU resolutions (--mobilenet; heavy: Keras build + many arena probes) --------
BUDGET_256KB = 256 * 1024
# The reference point: the paper's measured peak memory for MbV2-w0.35 (on an MCU with
# their Tiny Training Engine; the figure "Peak memory vs. models", also
# figures/latency_peakmem_comparison.png in github.com/mit-han-lab/tiny-training).
PAPER = ("Lin et al., \"On-Device Training Under 256KB Memory\", NeurIPS 2022 (arXiv:2206.15472), measured "
         "peak memory of MbV2-w0.35 training: full update 2,939 KB, sparse update 335 KB, sparse update + "
         "operator reordering 141 KB (their engine; training latency 8,501 ms TF-Lite full (projected), "
         "3,448 ms TF-Lite sparse, 373 ms their engine)")
PAPER_KB = {"full": 2939, "sparse": 335, "sparse_reordered": 141}


def mobilenet_rows(resolutions: list[int]) -> list[dict]:
    """Keras MobileNetV2(alpha=0.35, weights=None, 10 classes, logits out), int8
    via TFLiteConverter with a representative set (random images: the arena
    does not depend on the weights). Arenas: the smallest TFLM allocates in."""
    import cnn_models
    import tensorflow as tf

    from tflm_train.converter import ConversionError
    from tflm_train.sparse import choose_sparse

    rows = []
    for resolution in resolutions:
        keras_model = tf.keras.applications.MobileNetV2(input_shape=(resolution, resolution, 3), alpha=0.35,
                                                        weights=None, classes=10, classifier_activation=None)
        representative = np.random.default_rng(0).uniform(-1, 1, (8, resolution, resolution, 3)).astype(np.float32)
        base = cnn_models.to_tflite(keras_model, representative)
        row = {"resolution": resolution, "arena_inference": smallest_arena(base)}
        for method in ("lora", "bias"):
            row[f"arena_{method}"] = smallest_arena(convert(base, METHODS[method]).model)
        # Sparse within 256 KB: candidates among the last 6 linear layers, ranked
        # from the output back (random data would rank nothing meaningfully).
        try:
            choice = choose_sparse(base, ConvertConfig(method="sparse", targets="last:6"), BUDGET_256KB)
            row.update({"arena_sparse": choice.arena_bytes, "sparse_biases": len(choice.bias_layers),
                        "sparse_weights": len(choice.weight_layers) + len(choice.channel_layers)})
        except ConversionError as exc:
            row.update({"arena_sparse": None, "sparse_refused": str(exc)})
        rows.append(row)
        print(f"  measured MobileNetV2-0.35 @ {resolution}", file=sys.stderr, flush=True)
    return rows


# ---- sparse update within a small budget (issue 17 item 4) -------------------------------------
SMALL_BUDGET = 16 * 1024


def sparse_budget_row() -> dict:
    """16 KB on the 13.5 KB-inference DS-CNN: every bias needs 51 KB; the
    choice by contribution (fractions of a layer's channels included)."""
    import cnn_models

    from tflm_train.memory import smallest_arena_within
    from tflm_train.sparse import choose_sparse

    built = cnn_models.ds_cnn_small(trained=True, channels=38)
    base = built.int8_model
    x, y = cnn_models.synthetic_data("ds_cnn_small", 96, seed=11)
    x = x + np.float32(0.3)  # the user's microphone: a level offset the model never saw
    every_bias = smallest_arena_within(convert(base, ConvertConfig(method="sparse")).model, 4 * SMALL_BUDGET)
    choice = choose_sparse(base, ConvertConfig(method="sparse"), SMALL_BUDGET, data=(x, y))
    parts = [p.as_dict() for p in choice.parts]
    return {"model": "ds_cnn_small", "budget_bytes": SMALL_BUDGET, "arena_inference": smallest_arena(base),
            "arena_every_bias": every_bias, "arena_base": choice.base_arena_bytes, "arena_choice": choice.arena_bytes,
            "chosen": [p["part"] + " " + p["layer"] + (f" {len(p['channels'])}/{p['out_channels']}" if p["channels"] else "")
                       for p in parts if p["chosen"]] + [f"bias {name}" for name in choice.bias_layers],
            "parts": parts, "loss_before": choice.loss_before, "loss_after": choice.loss_after,
            "accuracy_before": choice.accuracy_before, "accuracy_after": choice.accuracy_after}


# ---- per-MAC kernel comparison ----------------------------------------------------------------------
def kernel_comparison(repeats: int) -> list[dict]:
    """Our backward kernels against TFLM's reference forward kernels, same shapes, ns per MAC."""
    from graphs import Graph
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    from tflm_train.converter import ops
    from tflm_train.converter.model_ir import Quant
    from tflm_train.runtime import Interpreter

    rng = np.random.default_rng(0)
    rows = []

    def invoker(graph: Graph, feeds: dict):
        interpreter = Interpreter(graph.build())
        for position, tensor in enumerate(graph._inputs):
            interpreter.set_input(position, feeds[tensor])
        return interpreter.invoke  # single-op graphs: no tensor reuses an input's bytes

    def per_mac(shape: str, stock: Graph, stock_feeds: dict, ours: Graph, our_feeds: dict, macs: int) -> dict:
        forward, backward = paired_median_ms(invoker(stock, stock_feeds), invoker(ours, our_feeds), repeats)
        return {"shape": shape, "tflm_forward_ns_per_mac": 1e6 * forward / macs,
                "ours_backward_ns_per_mac": 1e6 * backward / macs}

    for kind, dtype in (("FULLY_CONNECTED", np.float32), ("FULLY_CONNECTED", np.int8)):
        units, features = 256, 256
        w = rng.normal(size=(units, features)).astype(np.float32)
        quant = Quant.of(0.05, 0) if dtype == np.int8 else None
        wq = np.clip(np.round(w / 0.01), -127, 127).astype(np.int8) if dtype == np.int8 else w
        wquant = Quant.of(0.01, 0) if dtype == np.int8 else None
        stock = Graph()
        tx = stock.input("x", [1, features], dtype, quant=quant)
        ty = stock.output(stock.tensor("y", [1, units], dtype, quant=Quant.of(0.1, 0) if dtype == np.int8 else None))
        options = schema.FullyConnectedOptionsT()
        stock.model.append_op("FULLY_CONNECTED", [tx, stock.const("w", wq, quant=wquant)], [ty],
                              builtin_options=options, builtin_options_type=schema.BuiltinOptions.FullyConnectedOptions)
        ours = Graph()
        tdy, tmode = ours.input("dy", [1, units]), ours.input("mode", [1], np.int32)
        tdx = ours.output(ours.tensor("dx", [1, features]))
        layer = ops.LinearLayer.fully_connected(features, units)
        ours.op(layer.grad_op, [tdy, -1, -1, ours.const("w", wq, quant=wquant), -1, tmode, -1], [tdx], layer.options())
        macs = units * features
        x = np.zeros((1, features), dtype)
        rows.append(per_mac(f"FC {features}->{units} ({np.dtype(dtype).name} weights)", stock, {tx: x},
                            ours, {tdy: np.ones((1, units)), tmode: np.array([1], np.int32)}, macs))
    # CONV_2D 3x3, 16x16x32 -> 16x16x32, float.
    h = w_ = 16
    channels = 32
    filt = rng.normal(size=(channels, 3, 3, channels)).astype(np.float32)
    stock = Graph()
    tx = stock.input("x", [1, h, w_, channels])
    ty = stock.output(stock.tensor("y", [1, h, w_, channels]))
    options = schema.Conv2DOptionsT()
    options.padding, options.strideH, options.strideW = schema.Padding.SAME, 1, 1
    options.dilationHFactor = options.dilationWFactor = 1
    stock.model.append_op("CONV_2D", [tx, stock.const("w", filt)], [ty], builtin_options=options,
                          builtin_options_type=schema.BuiltinOptions.Conv2DOptions)
    ours = Graph()
    tdy, tmode = ours.input("dy", [1, h, w_, channels]), ours.input("mode", [1], np.int32)
    tdx = ours.output(ours.tensor("dx", [1, h, w_, channels]))
    layer = ops.LinearLayer(kind=ops.LinearKind.CONV_2D, in_channels=channels, out_channels=channels, kernel=(3, 3),
                            padding=(1, 1), out_size=(h, w_))
    ours.op(layer.grad_op, [tdy, -1, -1, ours.const("w", filt), -1, tmode, -1], [tdx], layer.options())
    macs = h * w_ * channels * channels * 9
    rows.append(per_mac(f"CONV_2D 3x3 {h}x{w_}x{channels}->{channels} (float32)",
                        stock, {tx: np.zeros((1, h, w_, channels), np.float32)},
                        ours, {tdy: np.ones((1, h, w_, channels), np.float32), tmode: np.array([1], np.int32)}, macs))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-tf", action="store_true", help="Skip the TensorFlow columns.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--step-blocks", type=int, default=15, help="Per-step split: blocks of steps (median over blocks).")
    parser.add_argument("--step-block-steps", type=int, default=200, help="Per-step split: steps per block.")
    parser.add_argument("--mobilenet", action="store_true",
                        help="Also MobileNetV2 w0.35 at --mobilenet-resolutions (minutes: Keras build, arena probes).")
    parser.add_argument("--mobilenet-resolutions", default="96,128,160")
    parser.add_argument("--sparse-budget", action="store_true",
                        help="Also the 16 KB sparse budget on the 13.5 KB-inference DS-CNN (a minute).")
    parser.add_argument("--steps-only", action="store_true",
                        help="Only the per-step split and the float vs int8 step (digits MLP; seconds).")
    args = parser.parse_args()
    if args.steps_only:
        steps, float_vs_int = step_rows(args.step_blocks, args.step_block_steps)
        if args.json:
            print(json.dumps({"steps": steps, "float_vs_int": float_vs_int}))
        else:
            print_table([], [], check_targets([], [], steps, float_vs_int), steps, float_vs_int)
        return 0

    import cnn_models

    rows = []
    for name in args.models.split(","):
        built = getattr(cnn_models, name)()
        base = built.int8_model
        x, y = built.sample_data(1, seed=3)
        sample = x[0]
        inference_arena = smallest_arena(base)
        for method in args.methods.split(","):
            config = METHODS[method]
            if name == "fc_autoencoder" and method == "head":
                continue  # a reconstruction model has no classifier head
            result = convert(base, config)
            label = sample if built.task == "reconstruction" else int(y[0])
            inference_ms, train_ms = tflm_times(base, result.model, sample, label, args.repeats)
            training_arena = smallest_arena(result.model)
            live = live_bytes(result.model)
            state = result.metadata["state"]["bytes"]
            row = {
                "model": name, "method": method,
                "inference_ms": inference_ms, "train_ms": train_ms, "train_over_inference": train_ms / inference_ms,
                "arena_inference": inference_arena, "arena_training": training_arena, "state_bytes": state,
                "arena_over_inference": training_arena / inference_arena,
                "arena_over_inference_plus_state": training_arena / (inference_arena + state),
                "arena_over_live_peak": training_arena / (live.peak_bytes + live.variable_bytes),
            }
            if not args.no_tf:
                for mode in ("eager", "function"):
                    measured = tf_step(name, config, mode, max(5, args.repeats // 3))
                    if "error" in measured:
                        row[f"tf_{mode}_error"] = measured["error"]
                        print(f"  TensorFlow {mode} step failed for {name} / {method}: {measured['error']}",
                              file=sys.stderr, flush=True)
                    row[f"tf_{mode}_ms"] = measured["ms"]
                    row[f"tf_{mode}_peak_mb"] = measured["peak_mb"]
            if os.environ.get("TFLM_DIR"):  # on Cortex-M4 under QEMU (tflm_train/device_run.py)
                from tflm_train.device_run import device_report

                m4 = device_report(result.model, "cortex-m4", None)
                row.update({f"m4_{k}": m4[k] for k in ("infer_instructions", "train_step_instructions",
                                                       "train_to_infer", "smallest_arena_bytes")})
            rows.append(row)
            if not args.json:
                print(f"  measured {name} / {method}", file=sys.stderr, flush=True)
    kernels = kernel_comparison(args.repeats)
    steps, float_vs_int = step_rows(args.step_blocks, args.step_block_steps)
    mobilenet = mobilenet_rows([int(r) for r in args.mobilenet_resolutions.split(",")]) if args.mobilenet else []
    sparse_budget = sparse_budget_row() if args.sparse_budget else None
    targets = check_targets(rows, kernels, steps, float_vs_int)
    if sparse_budget is not None:
        gain = sparse_budget["loss_before"] - sparse_budget["loss_after"]
        targets.append({"target": "16 KB sparse budget on the 13.5 KB DS-CNN accepted, held-out loss gain of the choice",
                        "value": gain, "limit": "> 0, arena <= 16,384 B",
                        "met": gain > 0 and sparse_budget["arena_choice"] <= SMALL_BUDGET})
    if args.json:
        print(json.dumps({"rows": rows, "kernels": kernels, "steps": steps, "float_vs_int": float_vs_int,
                          "mobilenet": mobilenet, "paper": PAPER if mobilenet else None,
                          "sparse_budget": sparse_budget, "targets": targets}))
        return 0
    print_table(rows, kernels, targets, steps, float_vs_int, mobilenet, sparse_budget)
    return 0


def check_targets(rows: list[dict], kernels: list[dict], steps: list[dict] = (), float_vs_int: dict | None = None) -> list[dict]:
    found = {(r["model"], r["method"]): r for r in rows}
    checks = []
    split = {s["name"]: s for s in steps}
    if "lora" in split:
        checks.append({"target": "digits LoRA: state bookkeeping <= 5% of a step",
                       "value": 100 * split["lora"]["bookkeeping_share"], "limit": 5.0})
    if "sparse (all weights)" in split:
        every = split["sparse (all weights)"]
        checks.append({"target": "digits MLP, every weight training: step kernels <= 3.5 x inference kernels",
                       "value": every["kernels_over_inference"], "limit": 3.5})
        checks.append({"target": "digits MLP, every weight training: step <= 3.5 x inference (inputs written + Invoke)",
                       "value": every["step_over_inference"], "limit": 3.5})
    if float_vs_int and float_vs_int.get("available"):
        checks.append({"target": "digits LoRA: integer step <= 1.5 x float step (inputs written + Invoke)",
                       "value": float_vs_int["int8_over_float"], "limit": 1.5})
    lora, head = found.get(("ds_cnn_s", "lora")), found.get(("ds_cnn_s", "head"))
    if lora:
        checks.append({"target": "DS-CNN LoRA: training arena <= 1.3 x (inference arena + state)",
                       "value": lora["arena_over_inference_plus_state"], "limit": 1.3})
        checks.append({"target": "DS-CNN LoRA: train step <= 2.5 x inference", "value": lora["train_over_inference"],
                       "limit": 2.5})
    if lora and "m4_train_to_infer" in lora:
        checks.append({"target": "DS-CNN LoRA on Cortex-M4: train step <= 1.3 x inference (instructions)",
                       "value": lora["m4_train_to_infer"], "limit": 1.3})
    if head:
        checks.append({"target": "DS-CNN head: train step <= 1.5 x inference", "value": head["train_over_inference"],
                       "limit": 1.5})
    for k in kernels:
        checks.append({"target": f"backward per MAC <= TFLM forward per MAC: {k['shape']}",
                       "value": k["ours_backward_ns_per_mac"] / k["tflm_forward_ns_per_mac"], "limit": 1.0})
    for check in checks:
        check["met"] = check["value"] <= check["limit"]
    return checks


def print_table(rows, kernels, targets, steps=(), float_vs_int=None, mobilenet=(), sparse_budget=None) -> None:
    header = (f"{'model':22} {'method':8} {'infer ms':>9} {'train ms':>9} {'ratio':>6} {'arena inf':>10} "
              f"{'arena train':>11} {'x inf':>6} {'x live':>6} {'TF eager ms':>11} {'MB':>6} {'TF fn ms':>9} {'MB':>6}")
    if rows:
        print(header)
        print("-" * len(header))
    for r in rows:
        print(f"{r['model']:22} {r['method']:8} {r['inference_ms']:9.2f} {r['train_ms']:9.2f} "
              f"{r['train_over_inference']:6.2f} {r['arena_inference']:10,} {r['arena_training']:11,} "
              f"{r['arena_over_inference']:6.2f} {r['arena_over_live_peak']:6.2f} "
              f"{r.get('tf_eager_ms', float('nan')):11.2f} {r.get('tf_eager_peak_mb', float('nan')):6.1f} "
              f"{r.get('tf_function_ms', float('nan')):9.2f} {r.get('tf_function_peak_mb', float('nan')):6.1f}")
    if any("m4_train_to_infer" in r for r in rows):
        print()
        print("Cortex-M4 under QEMU (instructions, not cycles; inference = the converted model in mode 0; "
              "arena = smallest that allocates, 32-bit)")
        print(f"{'model':22} {'method':8} {'infer instr':>14} {'train instr':>14} {'ratio':>6} {'arena':>9}")
        for r in rows:
            if "m4_train_to_infer" in r:
                print(f"{r['model']:22} {r['method']:8} {r['m4_infer_instructions']:14,} "
                      f"{r['m4_train_step_instructions']:14,} {r['m4_train_to_infer']:6.2f} {r['m4_smallest_arena_bytes']:9,}")
    if kernels:
        print()
        print(f"{'kernel shape':45} {'TFLM forward ns/MAC':>20} {'our backward ns/MAC':>20}")
    for k in kernels:
        print(f"{k['shape']:45} {k['tflm_forward_ns_per_mac']:20.3f} {k['ours_backward_ns_per_mac']:20.3f}")
    if steps:
        print()
        print("Per step, digits MLP (us; the plugin times every kernel: tflm_train/profiling.py; inference = the "
              "original model, input written + Invoke)")
        print(f"{'update':22} {'params':>6} {'infer':>7} {'step':>7} {'ratio':>6} {'kern.ratio':>10} {'forward':>8} "
              f"{'backward':>8} {'optim.':>7} {'bookkp.':>7} {'interp.':>7} {'py API':>7}")
        for r in steps:
            print(f"{r['name']:22} {r['trainable_params']:6,} {r['inference_us']:7.2f} {r['step_us']:7.2f} "
                  f"{r['step_over_inference']:6.2f} {r['kernels_over_inference']:10.2f} {r['forward_us']:8.2f} "
                  f"{r['backward_us']:8.2f} {r['optimizer_us']:7.2f} {r['bookkeeping_us']:7.2f} "
                  f"{r['interpreter_us']:7.2f} {r['python_train_step_us']:7.1f}")
    if float_vs_int is not None:
        # ---- float vs integer training step (issue 17 items 2-3) ----
        if float_vs_int["available"]:
            print(f"float vs int8 LoRA step (digits): {float_vs_int['float_step_us']:.2f} us vs "
                  f"{float_vs_int['int8_step_us']:.2f} us ({float_vs_int['int8_over_float']:.2f}x; kernels "
                  f"{float_vs_int['float_kernels_us']:.2f} vs {float_vs_int['int8_kernels_us']:.2f} us, "
                  f"{float_vs_int['int8_over_float_kernels']:.2f}x)")
            for arithmetic in ("float", "int8"):
                ops = float_vs_int[f"{arithmetic}_by_op_us"]
                print(f"  {arithmetic:5} per op (us): " + ", ".join(f"{op} {us:.2f}" for op, us in ops.items()))
        else:
            print(f"float vs int8 LoRA step (digits): {float_vs_int['note']}")
    if mobilenet:
        print()
        print("MobileNetV2 w0.35, int8 (TFLM smallest arena, bytes; lora/bias on the last 2 layers; sparse: "
              "chosen within 256 KB)")
        print(f"{'res':>4} {'inference':>10} {'lora':>10} {'bias':>10} {'sparse<=256KB':>14} {'trains':>22}")
        for r in mobilenet:
            if r["arena_sparse"] is not None:
                sparse = f"{r['arena_sparse']:,}"
                trains = f"{r['sparse_biases']} biases, {r['sparse_weights']} weights"
            else:
                sparse, trains = "refused", "last bias needs more"
            print(f"{r['resolution']:4} {r['arena_inference']:10,} {r['arena_lora']:10,} {r['arena_bias']:10,} "
                  f"{sparse:>14} {trains:>22}")
        print(f"paper: {PAPER}")
    if sparse_budget is not None:
        r = sparse_budget
        print()
        print(f"Sparse within {r['budget_bytes']:,} B on {r['model']} (inference arena {r['arena_inference']:,} B; "
              f"every bias: {'over ' + format(4 * r['budget_bytes'], ',') if r['arena_every_bias'] is None else format(r['arena_every_bias'], ',')} B; "
              f"last bias alone {r['arena_base']:,} B)")
        for p in r["parts"]:
            arena = "over budget" if p["arena_bytes"] is None else f"{p['arena_bytes']:,} B"
            what = p["part"] + (f" {len(p['channels'])}/{p['out_channels']}" if p["channels"] else "")
            gain = "" if p["gain"] is None else f", gain {p['gain']:+.4f}"
            print(f"  {what:14} {p['layer']:28} {arena:>12}{gain}{', chosen' if p['chosen'] else ''}")
        accuracy = ""
        if r["accuracy_before"] is not None:
            accuracy = f", accuracy {r['accuracy_before']:.1%} -> {r['accuracy_after']:.1%}"
        print(f"  choice: {'; '.join(r['chosen'])}: arena {r['arena_choice']:,} B, held-out loss "
              f"{r['loss_before']:.4f} -> {r['loss_after']:.4f}{accuracy}")
    print()
    for t in targets:
        print(f"{'met ' if t['met'] else 'MISSED'} {t['target']}: {t['value']:.2f} (limit {t['limit']})")


if __name__ == "__main__":
    sys.exit(main())
