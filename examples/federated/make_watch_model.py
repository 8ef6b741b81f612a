"""Builds the base model of the federated smartwatch example (a natural
per-user partition: one client per person).

Data: seglearn's watch_dataset.npy (shipped inside the seglearn wheel on PyPI,
BSD-3-Clause; D. M. Burns et al., Physiol. Meas. 2018, arXiv:1802.01489):
6-axis smartwatch IMU at 50 Hz, 10 participants, 7 shoulder exercises, each
done with both arms. tflm_train.fleet.datasets.watch_exercises cuts it into
2 s windows.

"The factory" trains on participant 1 alone (all of their windows): a
pilot user. The fleet is participants 2-10, nine people whose bodies, arm
movements and watch fit the model has never seen; they adapt it with LoRA
adapters without sending their recordings anywhere (benchmarks/federated.py
--dataset watch). Participant 1 is never a client and never in the held-out
set.

The model: a small int8 1-D CNN over [100 time steps, 1, 6 channels]: three
5x1 stride-2 convolutions (16, 16, 32 channels), a global average pool, a
32-unit dense layer and the 7 logits (about 5,700 weights).

Writes examples/federated/watch_cnn_int8.tflite (full-integer: int8 input
and output, TFLiteConverter with the factory's windows as representative
data). Regenerate (needs TensorFlow and seglearn):

  python examples/federated/make_watch_model.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUT = Path(__file__).resolve().parent / "watch_cnn_int8.tflite"
SEED = 3
FACTORY_USERS = (1,)


def main() -> None:
    import tensorflow as tf
    from factory import train_and_write_int8  # examples/federated/factory.py

    from tflm_train.fleet.datasets import WATCH_EXERCISES, pooled, watch_exercises

    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    training, held_out = watch_exercises()
    factory = pooled([u for u in training + held_out if u.user in FACTORY_USERS])
    fleet_test = pooled([u for u in held_out if u.user not in FACTORY_USERS])
    x, y = factory.x, factory.y

    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input(x.shape[1:], name="imu"),
        layers.Conv2D(16, (5, 1), strides=(2, 1), padding="same", activation="relu", name="conv_1"),
        layers.Conv2D(16, (5, 1), strides=(2, 1), padding="same", activation="relu", name="conv_2"),
        layers.Conv2D(32, (5, 1), strides=(2, 1), padding="same", activation="relu", name="conv_3"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(32, activation="relu", name="dense"),
        layers.Dense(len(WATCH_EXERCISES), name="logits"),
    ])
    train_and_write_int8(model, x, y, epochs=30, representative_every=2, out=OUT)
    _, factory_acc = model.evaluate(x, y, verbose=0)
    _, fleet_acc = model.evaluate(fleet_test.x, fleet_test.y, verbose=0)
    print(f"Keras float: accuracy {factory_acc:.3f} on the factory's windows, {fleet_acc:.3f} on the fleet's "
          f"held-out windows ({len(fleet_test.y)})")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} B)")


if __name__ == "__main__":
    main()
