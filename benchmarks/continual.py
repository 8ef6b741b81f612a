"""Continual-learning recipes on the bundled examples, per seed (README numbers).

    python benchmarks/continual.py digits [--seeds 0-4] [--only NAME]
    python benchmarks/continual.py basic_motions

Each recipe converts the int8 example model (`convert --seed s`), fine-tunes it
on the new user's training file (`fit --seed s`) in the TFLM interpreter,
exactly as `tflm-train fit` does (the same functions), and prints the
held-out accuracy of the new user and of the original task for every seed.
Slow (minutes per recipe): not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflm_train import continual, distill, fitting
from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.data import load_npz
from tflm_train.trainer import TrainableModel


@dataclass
class Recipe:
    name: str
    epochs: int
    lr: float
    optimizer: str = "sgd"
    regularizer: str = "none"
    reg_lambda: float = 0.0
    distill: float | None = None  # temperature
    distill_weight: float = 1.0  # on the new user's samples
    replay_distill_weight: float | None = None  # on replayed samples (None: distill_weight)
    replay_bytes: int = 0
    replay_every: int = 1


# The README's rows (the bold one last). A record with its teacher holds the
# float32 target row [label, weight, classes probabilities]: 64 + 48 B per
# digit, 600 + 24 B per BasicMotions window.
RECIPES = {
    "digits": [
        Recipe("plain", 8, 0.02),
        Recipe("distill-new-T2-w1", 8, 0.02, distill=2.0, distill_weight=1.0),
        Recipe("distill-new-T2-w0.2", 8, 0.02, distill=2.0, distill_weight=0.2),
        Recipe("replay300", 12, 0.03, replay_bytes=20400),
        Recipe("replay300-16ep", 16, 0.03, replay_bytes=20400),
        Recipe("replay300-distill-replayed", 16, 0.03, distill=2.0, distill_weight=0.0, replay_distill_weight=0.25,
               replay_bytes=300 * 112),
    ],
    "basic_motions": [
        Recipe("plain", 40, 0.03, optimizer="adam"),
        Recipe("distill-new-T2-w0.25", 40, 0.03, optimizer="adam", distill=2.0, distill_weight=0.25),
        Recipe("replay10-every2", 40, 0.03, optimizer="adam", replay_bytes=6040, replay_every=2),
        Recipe("replay10-every2-distill-replayed", 40, 0.03, optimizer="adam", distill=2.0, distill_weight=0.0,
               replay_distill_weight=0.25, replay_bytes=10 * 624, replay_every=2),
    ],
}


def run(example: str, recipe: Recipe, seed: int) -> tuple[float, float, dict]:
    directory = Path(__file__).resolve().parents[1] / "tflm_train" / "examples" / example
    base = (directory / "model_int8.tflite").read_bytes()
    config = ConvertConfig(
        targets="last:3", seed=seed, optimizer=OptimizerConfig(kind=recipe.optimizer),
        regularizer=recipe.regularizer, reg_lambda=recipe.reg_lambda, distill=recipe.distill,
    )
    if recipe.regularizer == "ewc":
        retain = load_npz(str(directory / "base_retain.npz"))
        config.fisher = continual.fisher_diagonal(base, config, retain.x, retain.y)
    model = TrainableModel(convert(base, config).model)
    task = fitting.task_of(model)
    x, y = fitting.prepare(model, load_npz(str(directory / "user_train.npz")), task, "user_train")
    user_test = fitting.prepare(model, load_npz(str(directory / "user_test.npz")), task, "user_test")
    base_test = fitting.prepare(model, load_npz(str(directory / "base_test.npz")), task, "base_test")
    targets = None
    if recipe.distill is not None:
        targets = distill.soft_targets(y, distill.record_teacher(model, x), recipe.distill_weight)
    replay = None
    if recipe.replay_bytes:
        rx, ry = fitting.prepare(model, load_npz(str(directory / "base_retain.npz")), task, "base_retain")
        if recipe.distill is not None:
            weight = recipe.distill_weight if recipe.replay_distill_weight is None else recipe.replay_distill_weight
            ry = distill.soft_targets(ry, distill.record_teacher(model, rx), weight)
        replay = continual.fill_replay(model, rx, ry, recipe.replay_bytes, recipe.replay_every, seed=seed)
    result = fitting.fit(model, x, y, task, recipe.epochs, recipe.lr, seed,
                         held_out={"user": user_test, "base": base_test}, replay=replay, targets=targets)
    info = {"replay_bytes": replay.bytes_used if replay else 0,
            "record_bytes": replay.record_bytes if replay else 0}
    return result.held_out["user"][1], result.held_out["base"][1], info


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", choices=sorted(RECIPES))
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--only", default=None, help="comma-separated recipe names")
    args = parser.parse_args(argv)
    only = None if args.only is None else set(args.only.split(","))
    for recipe in RECIPES[args.example]:
        if only is not None and recipe.name not in only:
            continue
        start = time.time()
        users, bases = [], []
        for seed in parse_seeds(args.seeds):
            user, base, info = run(args.example, recipe, seed)
            users.append(user)
            bases.append(base)
        print(f"{recipe.name}: new user {' '.join(f'{100 * u:.1f}' for u in users)} (mean {100 * np.mean(users):.1f}); "
              f"original {' '.join(f'{100 * b:.1f}' for b in bases)} (mean {100 * np.mean(bases):.1f}); "
              f"replay {info['replay_bytes']} B ({info['record_bytes']} B/record); {time.time() - start:.0f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
