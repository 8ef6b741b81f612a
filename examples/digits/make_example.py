"""Builds the bundled example: a digit classifier and one new writer's data.

Real data: scikit-learn's 8x8 handwritten digits (1,797 images from 43
writers, UCI, CC BY 4.0). The base model is an int8 MLP (64-32-16-10) trained
on the digits as they are. The "new writer" slants their digits (a shear
applied to held-out digits), which the base model reads poorly: the case on-device fine-tuning is for. Files written to
tflm_train/examples/digits/ (a few tens of KB, committed):

  model_int8.tflite   full-integer model (TFLiteConverter, int8 in and out)
  model_float.tflite  the same network in float32
  user_train.npz      64 of the new writer's digits, to fine-tune on
  user_test.npz       held-out digits of the new writer
  base_test.npz       held-out digits in the original style (forgetting check)
  base_retain.npz     300 of the base model's own training digits: the
                      original-task samples a device ships with, for replay
                      and EWC (`--retain-only` writes just this file, no TF)

Regenerate (needs TensorFlow and scikit-learn; pip install -e .[examples]):
  python examples/digits/make_example.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[2] / "tflm_train" / "examples" / "digits"
SEED = 7


def new_writer_style(images: np.ndarray) -> np.ndarray:
    """Slanted digits: a shear to the right, recentred."""
    styled = []
    shear = np.array([[1.0, 0.0], [-0.45, 1.0]])  # (row, col) <- slant right
    for image in images.reshape(-1, 8, 8):
        slanted = ndimage.affine_transform(image, shear, offset=(0.0, 1.6), order=1, mode="constant")
        styled.append(np.clip(slanted, 0, 16))
    return np.asarray(styled, np.float32).reshape(-1, 64)


RETAIN = 300  # base-training digits shipped for replay / EWC (the representative set)


def splits():
    """(x, y, base_train, base_test, user) indices, the same on every run."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # [0, 1]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(SEED).permutation(len(x))
    base_idx, user_idx = order[:1200], order[1200:]
    return digits, x, y, base_idx[:1000], base_idx[1000:], user_idx


def write_retain(x, y, base_train) -> None:
    """Original-task samples the model was trained on: never the base_test digits."""
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "base_retain.npz", x=x[base_train[:RETAIN]], y=y[base_train[:RETAIN]])


def main() -> None:
    import sys

    digits, x, y, base_train, base_test, user_idx = splits()
    write_retain(x, y, base_train)
    if "--retain-only" in sys.argv[1:]:
        print(f"wrote {OUT / 'base_retain.npz'}")
        return
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    user_x = new_writer_style(digits.data[user_idx]) / 16.0
    user_y = y[user_idx]

    model = tf.keras.Sequential(
        [
            tf.keras.Input((64,), name="pixels"),
            tf.keras.layers.Dense(32, activation="relu", name="dense_1"),
            tf.keras.layers.Dense(16, activation="relu", name="dense_2"),
            tf.keras.layers.Dense(10, name="logits"),
            tf.keras.layers.Softmax(name="probabilities"),
        ]
    )
    model.compile(tf.keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[base_train], y[base_train], epochs=60, batch_size=32, verbose=0)

    def representative():
        for i in base_train[:300]:
            yield [x[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_model = converter.convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8_model = converter.convert()

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "model_int8.tflite").write_bytes(int8_model)
    (OUT / "model_float.tflite").write_bytes(float_model)
    np.savez_compressed(OUT / "user_train.npz", x=user_x[:64], y=user_y[:64])
    np.savez_compressed(OUT / "user_test.npz", x=user_x[64:], y=user_y[64:])
    np.savez_compressed(OUT / "base_test.npz", x=x[base_test], y=y[base_test])
    keras_user = model.evaluate(user_x[64:], user_y[64:], verbose=0)[1]
    keras_base = model.evaluate(x[base_test], y[base_test], verbose=0)[1]
    print(f"Keras float accuracy: original style {keras_base:.3f}, new writer {keras_user:.3f}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
