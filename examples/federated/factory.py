"""What both federated factory scripts (make_model.py, make_watch_model.py)
do after defining their Keras model: train it the same way and write it as a
full-integer .tflite (int8 input and output), the form the fleet's devices run."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_and_write_int8(model, x: np.ndarray, y: np.ndarray, *, epochs: int, representative_every: int,
                         out: Path) -> None:
    """Adam 3e-3, batch 32, cross-entropy on logits; then TFLiteConverter's
    full-integer quantization calibrated on every `representative_every`-th
    training sample."""
    import tensorflow as tf

    model.compile(tf.keras.optimizers.Adam(3e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)

    def representative():
        for i in range(0, len(x), representative_every):
            yield [x[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    out.write_bytes(converter.convert())
