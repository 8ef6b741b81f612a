"""Integer training through convolutions against float training: the numbers
of README "Integer training" (convolutions).

  python benchmarks/integer_conv.py            # BasicMotions, 5 seeds (~1 min)
  python benchmarks/integer_conv.py --cnn      # + the CNN reference models (TensorFlow, ~10 min)

BasicMotions: --method bias on conv_1, conv_2 and logits (last:3), SGD, 12
windows x 40 epochs, lr 0.03; the same seed for convert and fit in both
arithmetics, so data, sample order and schedule are the same. The CNN models
(tests/cnn_models.py, trained on their synthetic data): bias on last:3, 24
samples with permuted labels x 4 epochs, lr 0.01, as tests/test_cnn_models.py,
then 20 epochs at lr 0.05, which moves held-out accuracy on the new labels;
loss capped at 16 ln 2 (the integer loss's floor p >= 2^-16) for both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOTIONS = ROOT / "tflm_train/examples/basic_motions"


def basic_motions(seeds=range(5), epochs: int = 40, lr: float = 0.03) -> None:
    from tflm_train.converter.config import ConvertConfig
    from tflm_train.converter.convert import convert

    from tflm_train import fitting
    from tflm_train.data import load_npz
    from tflm_train.trainer import TrainableModel

    base = (MOTIONS / "model_int8.tflite").read_bytes()
    results = {"float": [], "int8": []}
    for seed in seeds:
        row = []
        for arithmetic in ("float", "int8"):
            config = ConvertConfig(method="bias", targets="last:3", arithmetic=arithmetic, seed=seed)
            model = TrainableModel(convert(base, config).model)
            task = fitting.task_of(model)

            def data(name, model=model, task=task):
                return fitting.prepare(model, load_npz(MOTIONS / f"{name}.npz"), task, name)

            fitting.fit(model, *data("user_train"), task, epochs, lr, seed=seed)
            user, kept = fitting.evaluate(model, *data("user_test"), task), fitting.evaluate(model, *data("base_test"), task)
            results[arithmetic].append((user, kept))
            row.append(f"{arithmetic} {100 * user:.1f}% / {100 * kept:.1f}%")
        print(f"seed {seed}: user_test / base_test: " + ", ".join(row), flush=True)
    for arithmetic, values in results.items():
        v = np.array(values) * 100
        print(f"BasicMotions bias last:3 {arithmetic}: user_test mean {v[:, 0].mean():.1f}% "
              f"({v[:, 0].min():.1f}-{v[:, 0].max():.1f}), base_test mean {v[:, 1].mean():.1f}%")
    gaps = [100 * (i[0] - f[0]) for f, i in zip(results["float"], results["int8"])]
    print(f"int8 - float on user_test per seed: {', '.join(f'{g:+.1f}' for g in gaps)} points")


def cnn_models(names=("ds_cnn_s", "mobilenet_v1_025_vww", "tiny_conv", "resnet8"), epochs: int = 4, lr: float = 0.01) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import cnn_models as built_models
    from tflm_train.converter.config import ConvertConfig
    from tflm_train.converter.convert import convert
    from tflm_train.converter.errors import ConversionError

    from tflm_train.trainer import TrainableModel

    cap = 16 * np.log(2)
    for name in names:
        built = getattr(built_models, name)(trained=True)
        x, y = built.sample_data(24, seed=11)
        labels = (y.astype(int) + 1) % int(built.num_outputs)
        held_x, held_y = built.sample_data(48, seed=12)
        held_labels = (held_y.astype(int) + 1) % int(built.num_outputs)
        for arithmetic in ("float", "int8"):
            try:
                result = convert(built.int8_model, ConvertConfig(method="bias", targets="last:3", arithmetic=arithmetic))
            except ConversionError as error:
                print(f"{name} {arithmetic}: refused: {error}")
                continue
            model = TrainableModel(result.model)

            def loss(model=model, x=x, labels=labels):
                return np.mean([min(model.evaluate_loss(s, l), cap) for s, l in zip(x, labels)])

            before = loss()
            for _ in range(epochs):
                for s, l in zip(x, labels):
                    model.train_step(s, l, lr)
            after = loss()
            accuracy = np.mean([np.argmax(model.predict(s)) == l for s, l in zip(held_x, held_labels)])
            print(f"{name} {arithmetic}, {epochs} epochs, lr {lr:g}: capped loss {before:.4f} -> {after:.4f} (ratio {after / before:.4f}), "
                  f"held-out accuracy on the new labels {100 * accuracy:.1f}%", flush=True)


if __name__ == "__main__":
    if "--cnn-only" not in sys.argv[1:]:
        basic_motions()
    if "--cnn" in sys.argv[1:] or "--cnn-only" in sys.argv[1:]:
        cnn_models()  # the schedule of tests/test_cnn_models.py
        cnn_models(("ds_cnn_s", "mobilenet_v1_025_vww", "tiny_conv"), epochs=20, lr=0.05)  # one that moves accuracy
