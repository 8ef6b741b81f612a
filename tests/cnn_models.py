"""Reference TinyML networks, built with Keras and converted to .tflite, for tests.

The convolutional converter work is tested against the models people actually
deploy, so this module rebuilds them from their published descriptions (the
MLPerf Tiny v1.x reference models and the papers they come from):

  ds_cnn_s()               keyword spotting, DS-CNN-S  (Zhang et al. 2017, "Hello Edge")
  mobilenet_v1_025_vww()   visual wake words, MobileNetV1 alpha 0.25 (Howard et al. 2017)
  resnet8()                CIFAR-10 image classification, MLPerf Tiny ResNet-8
  fc_autoencoder()         anomaly detection (ToyADMOS), MLPerf Tiny FC autoencoder
  tiny_conv()              a 16x16 classifier with one of each common op, for fast unit tests
  conv1d_sensor()          a 1-D conv over a 100-step, 6-axis sensor window (as CONV_2D)

Each builder returns a `BuiltModel`: the Keras model, float32 and full-integer
int8 .tflite bytes (int8 inputs and outputs, per-channel weights) and the
shapes a test needs. Builds are seeded, so the bytes are the same on every run
of one TensorFlow version, and cached per process (functools.lru_cache), so a
pytest session pays for each model once. Treat the returned Keras model as
read-only: it is shared by every caller of the cached builder.

Weights are random unless `trained=True`: the tests check operators, shapes and
gradients, which do not need a useful network. Two things keep a random
network representative of a trained one all the same:
  * BatchNormalization statistics are set from a batch of the synthetic data
    (`_set_batchnorm_statistics`) and gamma/beta are randomised, so activations have
    trained-like scales, the int8 ranges are not degenerate, and the BN folding
    the converter does is not a no-op;
  * the representative dataset for int8 calibration comes from the same
    synthetic distribution as `BuiltModel.sample_inputs`, so test inputs stay
    inside the calibrated ranges.
`trained=True` adds a few epochs of Adam on `synthetic_data` (3 to 20 s a
model on 2 cores), for tests that need a model whose predictions mean
something: the classifiers then score 0.9 to 1.0 on held-out synthetic data.

Dropout and the L2 weight penalties of the reference training scripts are left
out: neither exists in a converted inference graph.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from lazy_tensorflow import keras, tf  # TensorFlow loads when a model is built

# Samples fed to the int8 calibrator. With 32, test inputs often fell outside
# the calibrated ranges of the autoencoder (max error 0.9 against 0.2 at 100);
# each costs one float inference, 3 s for all models at 100.
REPRESENTATIVE_SAMPLES = 100


@dataclass(frozen=True)
class BuiltModel:
    name: str
    keras_model: object = field(repr=False)
    float_model: bytes = field(repr=False)
    int8_model: bytes = field(repr=False)
    input_shape: tuple  # one example, no batch dimension
    num_outputs: int  # classes, or reconstructed features for the autoencoder
    task: str  # "classification" (softmax output) or "reconstruction" (linear output, MSE)
    seed: int
    build_seconds: float  # Keras build + BN calibration + optional training
    convert_seconds: float  # both TFLiteConverter runs

    def sample_inputs(self, n: int, seed: int = 1) -> np.ndarray:
        """n float32 inputs from the distribution the int8 model was calibrated on."""
        return synthetic_data(self.name, n, seed)[0]

    def sample_data(self, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): y is a class index for classifiers, x itself for the autoencoder."""
        return synthetic_data(self.name, n, seed)


# ---- synthetic data ----------------------------------------------------------------------------
# Classifier inputs are class prototypes plus noise. The prototypes are smooth
# (a coarse random grid, upsampled) so that convolutions and pooling can tell
# classes apart the way they would real spectrograms or images, and scaled to
# roughly unit variance, like normalised MFCCs or images mapped to [-1, 1].
# The prototypes depend only on the model name, so every call with any seed
# draws from the same task.

_SPECS: dict[str, tuple[tuple[int, ...], int, str]] = {}  # name -> (input shape, outputs, task)


def _register(name: str, input_shape: tuple[int, ...], outputs: int, task: str) -> None:
    _SPECS[name] = (tuple(input_shape), outputs, task)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cell: int = 4) -> np.ndarray:
    """Random values on a grid `cell` times coarser, repeated up to `shape` (H, W, C)."""
    h, w, c = shape
    coarse = rng.normal(size=(-(-h // cell), -(-w // cell), c))
    return np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:h, :w, :]


def _name_seed(name: str) -> int:
    # A stable hash: Python's hash() of a str changes between processes.
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name))


def synthetic_data(name: str, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n float32 examples for the named model: (x, class ids) or, for the autoencoder, (x, x)."""
    input_shape, outputs, task = _SPECS[name]
    task_rng = np.random.default_rng(_name_seed(name))
    rng = np.random.default_rng(seed)
    if task == "reconstruction":
        # Normal machine sounds on an 8-dimensional manifold: the bottleneck
        # width of the autoencoder, so it can learn them.
        mixing = task_rng.normal(size=(8, input_shape[0])) / np.sqrt(8)
        x = np.tanh(rng.normal(size=(n, 8)) @ mixing) + 0.05 * rng.normal(size=(n, input_shape[0]))
        x = x.astype(np.float32)
        return x, x
    spatial = input_shape if len(input_shape) == 3 else (input_shape[0], 1, input_shape[1])
    cell = max(1, min(spatial[0], spatial[1]) // 4)
    prototypes = np.stack([_smooth_field(task_rng, spatial, cell) for _ in range(outputs)])
    y = rng.integers(0, outputs, n)
    x = prototypes[y] + 0.5 * rng.normal(size=(n, *spatial))
    return x.reshape(n, *input_shape).astype(np.float32), y.astype(np.int32)


# ---- building blocks ---------------------------------------------------------------------------
class _Seeds:
    """Hands each layer its own seeded initializer.

    Seeding every initializer, rather than calling keras.utils.set_random_seed,
    leaves the global random state of the test session alone.
    """

    def __init__(self, seed: int):
        self._next = seed * 1000

    def _seed(self) -> int:
        self._next += 1
        return self._next

    def he(self):
        return keras.initializers.HeNormal(seed=self._seed())

    def glorot(self):
        return keras.initializers.GlorotUniform(seed=self._seed())

    def bias(self):
        # Not zeros: the converter drops an all-zero FULLY_CONNECTED bias
        # (the optional input becomes -1), which a trained model never has.
        return keras.initializers.RandomNormal(stddev=0.05, seed=self._seed())


def _conv_bn_relu(x, seeds: _Seeds, filters: int, kernel, strides, name: str, relu: bool = True):
    # No conv bias: BN's beta is the bias, and the converter folds both into one.
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, kernel_initializer=seeds.he(), name=name
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _depthwise_separable(x, seeds: _Seeds, filters: int, strides, name: str):
    """DepthwiseConv2D 3x3 + BN + ReLU, then pointwise Conv2D 1x1 + BN + ReLU."""
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, depthwise_initializer=seeds.he(), name=f"{name}_dw"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn_relu(x, seeds, filters, 1, 1, f"{name}_pw")


def _classifier_head(x, seeds: _Seeds, classes: int, pool: str):
    """Pool to 1x1, Dense, Softmax.

    pool="average" is what the MLPerf Tiny references do: AveragePooling2D
    over the whole feature map (AVERAGE_POOL_2D), then Flatten. At batch 1 the
    Flatten of a 1x1 map disappears: FULLY_CONNECTED takes the [1, 1, 1, C]
    tensor directly. pool="global" is GlobalAveragePooling2D, which converts to
    MEAN over axes [1, 2] (keep_dims false) instead.
    """
    if pool == "average":
        x = keras.layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="avg_pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    elif pool == "global":
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    else:
        raise ValueError(f"pool must be 'average' or 'global', not {pool!r}")
    x = keras.layers.Dense(classes, kernel_initializer=seeds.glorot(), bias_initializer=seeds.bias(), name="logits")(x)
    return keras.layers.Softmax(name="probabilities")(x)


def _batchnorm_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _randomize_batchnorm(model, seed: int) -> None:
    """Gamma and beta a trained layer could have, so the folded weights differ from the conv's own."""
    rng = np.random.default_rng(seed + 99)
    for layer in _batchnorm_layers(model):
        width = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, width).astype(np.float32))
        layer.beta.assign(rng.normal(0.0, 0.2, width).astype(np.float32))


def _set_batchnorm_statistics(model, x: np.ndarray) -> None:
    """Sets every BN layer's moving mean/variance to the statistics of its input on x.

    One forward pass in training mode with momentum 0: each layer normalises
    with, and stores, the statistics of its own input, the layers before it
    already normalising, which is the same as calibrating them one at a time.
    Needed after training too: a few epochs leave the moving averages (momentum
    0.99) far from the statistics the trained weights produce.
    """
    layers = _batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def _train(model, name: str, task: str, epochs: int, seed: int) -> None:
    x, y = synthetic_data(name, 256, seed + 7)
    loss = "sparse_categorical_crossentropy" if task == "classification" else "mse"
    model.compile(keras.optimizers.Adam(3e-3), loss)
    # shuffle=False: the order is the only unseeded randomness fit() would add.
    model.fit(x, y, epochs=epochs, batch_size=32, shuffle=False, verbose=0)
    if _batchnorm_layers(model):
        _set_batchnorm_statistics(model, x)


def _frozen_function(keras_model):
    """The model at batch size 1 as a concrete function with its weights made constants.

    Why not TFLiteConverter.from_keras_model: it exports a SavedModel and loads
    it back (about 15 s for MobileNet on 2 cores, against 3 s here), and it
    keeps the batch dimension dynamic, which turns every Flatten into
    SHAPE + STRIDED_SLICE + PACK + RESHAPE. A microcontroller model has batch 1.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *keras_model.inputs[0].shape[1:]), tf.float32, name=keras_model.inputs[0].name)
    function = tf.function(lambda x: keras_model(x, training=False)).get_concrete_function(spec)
    return convert_variables_to_constants_v2(function)


def to_tflite(keras_model, representative: np.ndarray | None = None, frozen=None) -> bytes:
    """Float32 .tflite, or full-integer int8 (int8 in and out) calibrated on `representative`.

    The converter's defaults: per-channel int8 weights and int32 biases for
    CONV_2D (axis 0), DEPTHWISE_CONV_2D (axis 3) and, with TF 2.21,
    FULLY_CONNECTED too (axis 0); per-tensor activations.
    """
    # An empty tf.Module as the trackable object: without one, TF takes its
    # deprecated conversion path (and warns); the frozen function has no
    # variables for it to track.
    frozen = frozen or _frozen_function(keras_model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    if representative is not None:

        def dataset():
            for sample in representative:
                yield [sample[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": they come from the
        # representative dataset instead.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def _finish(name: str, model, seed: int, trained: bool, epochs: int, started: float) -> BuiltModel:
    input_shape, outputs, task = _SPECS[name]
    if _batchnorm_layers(model):
        _randomize_batchnorm(model, seed)
        _set_batchnorm_statistics(model, synthetic_data(name, 64, seed + 3)[0])
    if trained:
        _train(model, name, task, epochs, seed)
    built = time.perf_counter()
    frozen = _frozen_function(model)
    float_model = to_tflite(model, frozen=frozen)
    int8_model = to_tflite(model, synthetic_data(name, REPRESENTATIVE_SAMPLES, seed + 5)[0], frozen=frozen)
    return BuiltModel(
        name=name,
        keras_model=model,
        float_model=float_model,
        int8_model=int8_model,
        input_shape=input_shape,
        num_outputs=outputs,
        task=task,
        seed=seed,
        build_seconds=built - started,
        convert_seconds=time.perf_counter() - built,
    )


# ---- the models --------------------------------------------------------------------------------
_register("ds_cnn_s", (49, 10, 1), 12, "classification")
_register("mobilenet_v1_025_vww", (96, 96, 1), 2, "classification")
_register("resnet8", (32, 32, 3), 10, "classification")
_register("fc_autoencoder", (640,), 640, "reconstruction")
_register("tiny_conv", (16, 16, 1), 4, "classification")
_register("conv1d_sensor", (100, 1, 6), 6, "classification")
_register("ds_cnn_small", (49, 10, 1), 12, "classification")


@functools.lru_cache(maxsize=None)
def ds_cnn_s(trained: bool = False, pool: str = "average", seed: int = 0) -> BuiltModel:
    """DS-CNN-S keyword spotting: 49 MFCC frames x 10 coefficients, 12 classes.

    Conv 64 (10x4) stride 2, then 4 depthwise-separable blocks of 64 channels
    at 25x5, average pool to 1x1, Dense 12, Softmax (~23k parameters).
    """
    started = time.perf_counter()
    seeds = _Seeds(seed)
    inputs = keras.Input((49, 10, 1), name="mfcc")
    x = _conv_bn_relu(inputs, seeds, 64, (10, 4), (2, 2), "conv_1")
    for block in range(1, 5):
        x = _depthwise_separable(x, seeds, 64, 1, f"ds_{block}")
    outputs = _classifier_head(x, seeds, 12, pool)
    model = keras.Model(inputs, outputs, name="ds_cnn_s")
    return _finish("ds_cnn_s", model, seed, trained, 4, started)


@functools.lru_cache(maxsize=None)
def ds_cnn_small(trained: bool = False, channels: int = 32, blocks: int = 2, seed: int = 0) -> BuiltModel:
    """A small DS-CNN for the sparse-update budget case (issue 17): DS-CNN-S's
    layout with `channels` channels and `blocks` depthwise-separable blocks
    (TFLM inference arena about 13.5 KB at the defaults, against 24 KB)."""
    started = time.perf_counter()
    seeds = _Seeds(seed)
    inputs = keras.Input((49, 10, 1), name="mfcc")
    x = _conv_bn_relu(inputs, seeds, channels, (10, 4), (2, 2), "conv_1")
    for block in range(1, blocks + 1):
        x = _depthwise_separable(x, seeds, channels, 1, f"ds_{block}")
    outputs = _classifier_head(x, seeds, 12, "average")
    model = keras.Model(inputs, outputs, name="ds_cnn_small")
    return _finish("ds_cnn_small", model, seed, trained, 4, started)


# MobileNetV1 pointwise widths (at alpha 1) and depthwise strides of its 13 blocks.
_MOBILENET_V1_BLOCKS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]  # fmt: skip


@functools.lru_cache(maxsize=None)
def mobilenet_v1_025_vww(trained: bool = False, pool: str = "average", seed: int = 0) -> BuiltModel:
    """MobileNetV1, alpha 0.25, for visual wake words: 96x96 grayscale, person / no person.

    Conv 8 3x3 stride 2, 13 depthwise-separable blocks (16 ... 256 channels,
    down to 3x3), average pool, Dense 2, Softmax (~210k parameters). Every
    convolution is padding="same", as in the MLPerf Tiny reference: no PAD
    operators (keras.applications.MobileNet would add ZeroPadding2D -> PAD).
    MLPerf's VWW model takes RGB; grayscale keeps the input 9 KB for tests.
    """
    started = time.perf_counter()
    seeds = _Seeds(seed)
    alpha = 0.25
    inputs = keras.Input((96, 96, 1), name="image")
    x = _conv_bn_relu(inputs, seeds, int(32 * alpha), 3, 2, "conv_1")
    for block, (filters, stride) in enumerate(_MOBILENET_V1_BLOCKS, start=1):
        x = _depthwise_separable(x, seeds, int(filters * alpha), stride, f"ds_{block}")
    outputs = _classifier_head(x, seeds, 2, pool)
    model = keras.Model(inputs, outputs, name="mobilenet_v1_025_vww")
    return _finish("mobilenet_v1_025_vww", model, seed, trained, 2, started)


@functools.lru_cache(maxsize=None)
def resnet8(trained: bool = False, pool: str = "average", seed: int = 0) -> BuiltModel:
    """MLPerf Tiny ResNet-8 for CIFAR-10: 32x32x3, 10 classes (~78k parameters).

    Conv 16 3x3, then three residual stacks of two 3x3 convs (16, 32, 64
    channels; strides 1, 2, 2). The first stack adds its input as it is; the
    others bring the shortcut to the new shape with a strided 1x1 conv (no BN,
    as in the reference). Add, ReLU; average pool, Dense 10, Softmax.
    """
    started = time.perf_counter()
    seeds = _Seeds(seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = _conv_bn_relu(inputs, seeds, 16, 3, 1, "conv_1")
    for stack, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        name = f"stack_{stack}"
        y = _conv_bn_relu(x, seeds, filters, 3, stride, f"{name}_a")
        y = _conv_bn_relu(y, seeds, filters, 3, 1, f"{name}_b", relu=False)
        if stride != 1 or x.shape[-1] != filters:
            x = keras.layers.Conv2D(
                filters,
                1,
                strides=stride,
                padding="same",
                kernel_initializer=seeds.he(),
                bias_initializer=seeds.bias(),
                name=f"{name}_shortcut",
            )(x)
        x = keras.layers.Add(name=f"{name}_add")([x, y])
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    outputs = _classifier_head(x, seeds, 10, pool)
    model = keras.Model(inputs, outputs, name="resnet8")
    return _finish("resnet8", model, seed, trained, 2, started)


@functools.lru_cache(maxsize=None)
def fc_autoencoder(trained: bool = False, seed: int = 0) -> BuiltModel:
    """MLPerf Tiny anomaly detection autoencoder: 640 log-mel features (5 frames x 128 bins) in and out.

    Dense 128 x4, bottleneck Dense 8, Dense 128 x4, each with BN + ReLU, then a
    linear Dense 640: the reconstruction, trained with MSE (~266k parameters).
    The anomaly score is the reconstruction error.
    """
    started = time.perf_counter()
    seeds = _Seeds(seed)
    inputs = keras.Input((640,), name="features")
    x = inputs
    for index, units in enumerate([128] * 4 + [8] + [128] * 4, start=1):
        x = keras.layers.Dense(units, kernel_initializer=seeds.glorot(), name=f"dense_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"dense_{index}_bn")(x)
        x = keras.layers.ReLU(name=f"dense_{index}_relu")(x)
    outputs = keras.layers.Dense(
        640, kernel_initializer=seeds.glorot(), bias_initializer=seeds.bias(), name="reconstruction"
    )(x)
    model = keras.Model(inputs, outputs, name="fc_autoencoder")
    return _finish("fc_autoencoder", model, seed, trained, 10, started)


def _conv(x, seeds: _Seeds, filters: int, kernel, name: str, strides=1, padding: str = "same"):
    """Conv2D with a bias and a fused ReLU: a layer without BN."""
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        activation="relu",
        kernel_initializer=seeds.he(),
        bias_initializer=seeds.bias(),
        name=name,
    )(x)


@functools.lru_cache(maxsize=None)
def tiny_conv(trained: bool = False, seed: int = 0) -> BuiltModel:
    """A 16x16x1, 4-class network with one of each common op, for fast unit tests.

    CONV_2D 3x3 (ReLU), DEPTHWISE_CONV_2D 3x3 (ReLU), MAX_POOL_2D 2x2,
    CONV_2D 1x1 (VALID, ReLU), MEAN (GlobalAveragePooling2D), FULLY_CONNECTED,
    SOFTMAX (372 parameters). No BN, so the Keras weights are the .tflite weights.
    """
    started = time.perf_counter()
    seeds = _Seeds(seed)
    inputs = keras.Input((16, 16, 1), name="image")
    x = _conv(inputs, seeds, 8, 3, "conv_1")
    x = keras.layers.DepthwiseConv2D(
        3,
        padding="same",
        activation="relu",
        depthwise_initializer=seeds.he(),
        bias_initializer=seeds.bias(),
        name="dw_1",
    )(x)
    x = keras.layers.MaxPooling2D(2, name="max_pool")(x)
    x = _conv(x, seeds, 16, 1, "conv_2", padding="valid")
    outputs = _classifier_head(x, seeds, 4, "global")
    model = keras.Model(inputs, outputs, name="tiny_conv")
    return _finish("tiny_conv", model, seed, trained, 15, started)


@functools.lru_cache(maxsize=None)
def conv1d_sensor(trained: bool = False, seed: int = 0) -> BuiltModel:
    """A 1-D conv net over 100 time steps x 6 IMU axes (accel + gyro), 6 activity classes.

    Written as Conv2D over a [100, 1, 6] input with (k, 1) kernels, which is
    plain CONV_2D / MAX_POOL_2D in TFLite: CONV_2D 5x1 (SAME), MAX_POOL_2D 2x1,
    CONV_2D 5x1 stride 2x1, MEAN, FULLY_CONNECTED, SOFTMAX (~3.3k parameters).
    Keras Conv1D over [100, 6] converts to the same CONV_2D, but with a
    RESHAPE before and after each convolution.
    """
    started = time.perf_counter()
    seeds = _Seeds(seed)
    inputs = keras.Input((100, 1, 6), name="imu")
    x = _conv(inputs, seeds, 16, (5, 1), "conv_1")
    x = keras.layers.MaxPooling2D((2, 1), name="max_pool_1")(x)
    x = _conv(x, seeds, 32, (5, 1), "conv_2", strides=(2, 1))
    outputs = _classifier_head(x, seeds, 6, "global")
    model = keras.Model(inputs, outputs, name="conv1d_sensor")
    return _finish("conv1d_sensor", model, seed, trained, 10, started)


ALL_BUILDERS = {
    "tiny_conv": tiny_conv,
    "conv1d_sensor": conv1d_sensor,
    "ds_cnn_s": ds_cnn_s,
    "resnet8": resnet8,
    "fc_autoencoder": fc_autoencoder,
    "mobilenet_v1_025_vww": mobilenet_v1_025_vww,
}


# ---- inspection --------------------------------------------------------------------------------
def operator_names(model_bytes: bytes) -> list[str]:
    """The operators of subgraph 0 in execution order: builtin names, custom codes as they are."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    kinds = []
    for code in model.operatorCodes:
        # Codes below 127 may sit only in the deprecated int8 field.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            kinds.append(custom.decode() if isinstance(custom, bytes) else str(custom))
        else:
            kinds.append(names[builtin])
    return [kinds[op.opcodeIndex] for op in model.subgraphs[0].operators]
