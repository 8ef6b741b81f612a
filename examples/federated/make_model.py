"""Builds the base model of the federated Fashion-MNIST example.

A small int8 CNN (three 3x3 stride-2 convolutions, 8/16/32 channels, a global
average pool, a 32-unit dense layer and the 10 logits; about 8,000 weights)
trained by "the factory" on the images of FIVE of the ten Fashion-MNIST
classes (T-shirt/top, Trouser, Pullover, Dress, Coat): the devices in the
field then meet all ten (Sandal, Shirt, Sneaker, Bag, Ankle boot are new to
the model), and the fleet learns them with LoRA adapters without sending
images anywhere.

Data: Debian's dataset-fashion-mnist (MIT licence; H. Xiao, K. Rasul,
R. Vollgraf, arXiv:1708.07747). The factory uses rows 50,000-59,999 of the
training split (its classes 0-4 only); the simulated devices hold rows
0-49,999 (benchmarks/federated.py), and every accuracy is measured on the
test split.

Writes examples/federated/fashion_cnn_int8.tflite (full-integer: int8 input
and output, TFLiteConverter with the factory images as representative data).
Regenerate (needs TensorFlow and dataset-fashion-mnist):

  python examples/federated/make_model.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

OUT = Path(__file__).resolve().parent / "fashion_cnn_int8.tflite"
SEED = 3
FACTORY_ROWS = slice(50_000, 60_000)
FACTORY_CLASSES = (0, 1, 2, 3, 4)


def main() -> None:
    import tensorflow as tf
    from factory import train_and_write_int8  # examples/federated/factory.py

    from tflm_train.fleet.datasets import fashion_mnist

    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    train, test = fashion_mnist()
    x, y = train.x[FACTORY_ROWS], train.y[FACTORY_ROWS]
    keep = np.isin(y, FACTORY_CLASSES)
    x, y = x[keep], y[keep]

    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1), name="image"),
        layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv_1"),
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv_2"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv_3"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(32, activation="relu", name="dense"),
        layers.Dense(10, name="logits"),
    ])
    train_and_write_int8(model, x, y, epochs=15, representative_every=10, out=OUT)
    seen = np.isin(test.y, FACTORY_CLASSES)
    _, all_acc = model.evaluate(test.x, test.y, verbose=0)
    _, seen_acc = model.evaluate(test.x[seen], test.y[seen], verbose=0)
    print(f"Keras float: test accuracy {all_acc:.3f} (all ten classes), {seen_acc:.3f} (the factory's five)")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} B)")


if __name__ == "__main__":
    main()
