"""Federated adapter training on Fashion-MNIST: the numbers of README
"Federated learning" (issue 16's targets), measured in one run.

Setup: the base model is examples/federated/fashion_cnn_int8.tflite, a small
int8 CNN the factory trained on five of the ten classes (make_model.py).
It is converted for LoRA (rank 4 on its last two layers, cross-entropy,
`--optimizer`, default SGD) and every training step runs in the TFLM
interpreter with tflm-train's kernels. `--pool` images of Fashion-MNIST's
training rows 0-49,999 (never seen by the factory) are split over 100
clients by flwr-datasets' DirichletPartitioner (`--alpha`, default 1.0, over
the labels; at least 10 images each); each of `--rounds` (100) rounds samples
10% of them (seeded: every run trains the same clients round by round); each
sampled client trains `--local-epochs` (3) passes over its images, one sample
per step, at lr * lr_decay^(round - 1) (0.02, 0.98), and sends its adapter
delta. The global adapter's accuracy is measured after every round on
`--test` images of the test split; a run's accuracy is the mean of its last
3 rounds. All runs use the in-process Flower grid
(tflm_train/fleet/local_grid.py: the same ServerApp and ClientApp, no Ray),
so their numbers differ only by what the row changes.

Rows: central (upper bound: the same adapter trained on the pooled client
data, `--central-epochs` epochs at a per-epoch decaying lr; the best epoch),
local only (lower bound: each of `--local-clients` clients trains on its own
data alone; mean global test accuracy), FedAvg float32 deltas, int8 deltas,
SecAgg+, DP at `--epsilons` (Flower's client-side fixed clipping + Gaussian
noise; epsilon from dp-accounting, tflm_train/fleet/privacy.py; the row has
its own recipe, `--dp-*` and `--clip`: a smaller adapter, since the noise's
norm grows with the square root of the parameter count, plus the same recipe
without noise and without clipping as references), 20%
malicious clients (boosted sign flip; label flip) against FedAvg, FedMedian,
FedTrimmedAvg, Krum and MultiKrum, and 30% client dropout. At the end it
prints a table of the runs and one of issue 16's targets (met or missed).
`--dataset watch` runs the rows on a natural per-user partition instead
(smartwatch IMU, one client per person; README "Natural per-user partition").

  python benchmarks/federated.py                    # all rows (see README for the time)
  python benchmarks/federated.py --rows fedavg,int8 --rounds 5
  python benchmarks/federated.py --rows attack --json attack.json   # per-round metrics
  python benchmarks/federated.py --report a.json b.json --plot out.png  # merge runs
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "examples" / "federated" / "fashion_cnn_int8.tflite"
CLIENTS = 100
FRACTION = 0.1
# --dataset watch: a natural per-user partition, one client per person (Bench.watch_data).
WATCH_MODEL = ROOT / "examples" / "federated" / "watch_cnn_int8.tflite"
WATCH_FACTORY_USERS = (1,)  # trained the base model (make_watch_model.py): never a client
WATCH_FRACTION = 1 / 3  # 3 of the 9 people a round
MALICIOUS = 0.2
DROPOUT = 0.3
EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0)
DELTA = 1e-5
# The DP row's recipe (README "Federated learning", DP table).
DP_ADAPTER = "lora:1:last:1"
DP_ROUNDS = 40
DP_OPTIMIZER = "sgd"
DP_LR = 0.02
DP_LR_DECAY = 1.0
DP_LOCAL_EPOCHS = 3
DP_CLIP = 0.15  # ~1/20 of a first-round delta's norm (median 3.2): every update is clipped (a direction, step C)
DP_CLIP_QUANTILE = 0.5
DP_NOISE_SEEDS = 2

# The attack row's default runs; also possible: clean-{fedavg,fedmedian,trimmedavg,
# krum,multikrum}, labelflip-{fedmedian,trimmedavg,krum,multikrum}.
ATTACK_RUNS = ("clean-fedavg", "signflip-fedavg", "signflip-fedmedian", "signflip-trimmedavg", "signflip-krum",
               "signflip-multikrum", "labelflip-fedavg", "clean-fedmedian")
ROWS = ("central", "local", "fedavg", "int8", "secagg", "dp", "attack", "dropout")
LAST_ROUNDS = 3  # a federated run's accuracy: the mean of its last rounds' global accuracy

# Issue 16's targets, checked by `summarize`.
FEDAVG_SHARE_OF_CENTRAL = 0.95
INT8_MAX_COST, INT8_MIN_SAVING = 0.005, 3.5
SECAGG_MAX_DIFFERENCE = 0.001
DP_MAX_EPSILON, DP_MIN_SHARE = 8.0, 0.70
ROBUST_MAX_LOSS = 0.02
DROPOUT_MIN_SHARE = 0.8  # "still converges": keeps most of the clean run's gain


def log_quietly() -> None:
    import flwr.common.logger  # noqa: F401  (Flower sets its level on import: set ours after)

    for name in ("flwr", "tflm_train.fleet", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Bench:
    def __init__(self, args):
        import tflm_train as tt
        from tflm_train.fleet.datasets import dirichlet_partition, fashion_mnist

        self.args = args
        self.clients, self.fraction, model, self.classes = CLIENTS, FRACTION, MODEL, 10
        self.final_test = None
        if args.dataset == "watch":
            model = self.watch_data()
        else:
            train, test = fashion_mnist()
            self.x, self.y = train.x[: args.pool], train.y[: args.pool]
            self.test = (test.x[: args.test], test.y[: args.test])
            self.final_test = (test.x, test.y)  # all 10,000: the final adapters, finer than --test
            self.parts = dirichlet_partition(self.y, self.clients, args.alpha, seed=args.seed)
        config = tt.ConvertConfig(method="lora", r=4, targets="last:2", loss="ce",
                                  optimizer=tt.OptimizerConfig(kind=args.optimizer))
        self.model = tt.convert(model.read_bytes(), config).model
        self.results: dict[str, dict] = {"base": {"accuracy": tt.evaluate(tt.TrainableModel(self.model), *self.test)}}

    def watch_data(self) -> Path:
        """The natural per-user partition (--dataset watch): one client per
        participant of the smartwatch study (tflm_train.fleet.datasets.
        watch_exercises), all but the factory's; a client's data are the
        training windows of its own recordings (their first 70%), and the
        global held-out set pools the later 30% of every client's recordings.
        --pool, --test and --alpha do not apply: the people are the split."""
        from tflm_train.fleet.datasets import pooled, watch_exercises

        training, held_out = watch_exercises()
        fleet = [u for u in training if u.user not in WATCH_FACTORY_USERS]
        ends = np.cumsum([len(u.y) for u in fleet])
        self.parts = [np.arange(end - len(u.y), end) for u, end in zip(fleet, ends)]
        self.x, self.y = pooled(fleet).x, pooled(fleet).y
        test = pooled([u for u in held_out if u.user not in WATCH_FACTORY_USERS])
        self.test = (test.x, test.y)
        self.clients, self.fraction, self.classes = len(fleet), WATCH_FRACTION, 7
        return WATCH_MODEL

    def loader(self):
        parts, x, y = self.parts, self.x, self.y

        def load(partition_id: int, num_partitions: int):
            rows = parts[partition_id]
            return x[rows], y[rows]

        return load

    # ---- one federated run ---------------------------------------------------------
    def federated(self, name: str, *, strategy="fedavg", encoding="float32", mods=(), loader=None, dropout=0.0,
                  secagg=None, on_round=None, recipe=None) -> dict:
        from tflm_train.fleet.client_app import make_client_app
        from tflm_train.fleet.local_grid import run_local
        from tflm_train.fleet.server_app import RoundLog, make_server_app

        started = time.monotonic()
        rows = []

        def progress(row):
            if on_round is not None:
                on_round(row)
            rows.append(row)
            extra = f" eps {row['epsilon']:.2f}" if "epsilon" in row else ""
            print(f"  {name:<22} round {row['round']:>2}: accuracy {row.get('accuracy', float('nan')):.4f}"
                  f"{extra}", flush=True)

        round_log = RoundLog(on_round=progress)
        # recipe: the DP row's own model and training (DpRecipe); else the common one
        model = recipe.model if recipe else self.model
        rounds = recipe.rounds if recipe else self.args.rounds
        client = make_client_app(model, loader or self.loader(),
                                 learning_rate=recipe.lr if recipe else self.args.lr,
                                 learning_rate_decay=recipe.lr_decay if recipe else self.args.lr_decay,
                                 local_epochs=recipe.local_epochs if recipe else self.args.local_epochs,
                                 encoding=encoding, dropout=dropout, seed=self.args.seed, mods=list(mods),
                                 secagg=secagg is not None)
        server = make_server_app(model, rounds=rounds, strategy=strategy,
                                 fraction_train=self.fraction, min_train_nodes=2, min_available_nodes=self.clients,
                                 evaluate_data=self.test, secagg=secagg, round_log=round_log,
                                 sampling_seed=self.args.seed)
        # Seeded sampling: every run of one benchmark (SecAgg+ included) trains
        # the same clients round by round, so their differences are the row's.
        run_local(server, client, self.clients)
        final = None
        if self.args.final_test and self.final_test is not None and round_log.final_adapter is not None:
            # The last adapter on the whole test split: resolves 0.01 point where
            # the per-round 1,000 images resolve 0.1.
            from tflm_train.fleet.delta import AdapterLayout
            from tflm_train.fleet.server_app import global_evaluator

            final = global_evaluator(model, AdapterLayout.of_model(model), *self.final_test)(round_log.final_adapter)[1]
            print(f"  {name:<22} final adapter on {len(self.final_test[1])} test images: {final:.4f}", flush=True)
        sizes = [r["delta_bytes"] for r in rows[1:] if r.get("delta_bytes")]
        per_round = [r.get("accuracy") for r in rows]
        result = {
            # one round's accuracy moves with the clients it sampled: quote the last few
            "accuracy": float(np.mean(per_round[-LAST_ROUNDS:])), "final_round": per_round[-1],
            "final_full_test": final,
            "per_round": per_round,
            "delta_bytes": float(np.mean(sizes)) if sizes else None,
            "failures": int(sum(r.get("failures", 0) for r in rows[1:])),
            "seconds": round(time.monotonic() - started, 1), "rounds": rows,
        }
        self.results[name] = result
        return result

    # ---- the rows ------------------------------------------------------------------
    def central(self) -> None:
        """Upper bound: the same adapter, trained on all clients' data pooled."""
        import tflm_train as tt

        model = tt.TrainableModel(self.model)
        started = time.monotonic()
        per_epoch = []
        rng = np.random.default_rng(self.args.seed)
        for epoch in range(self.args.central_epochs):
            lr = self.args.lr * self.args.central_lr_decay ** epoch
            for i in rng.permutation(len(self.x)):
                model.train_step(self.x[i], self.y[i], lr)
            per_epoch.append(tt.evaluate(model, *self.test))
            print(f"  central epoch {len(per_epoch)}: accuracy {per_epoch[-1]:.4f}", flush=True)
        self.results["central"] = {"accuracy": max(per_epoch), "per_epoch": per_epoch,
                                   "seconds": round(time.monotonic() - started, 1)}
        print(f"  base model {self.results['base']['accuracy']:.4f}; central (best epoch) {max(per_epoch):.4f}",
              flush=True)

    def local_only(self) -> None:
        """Lower bound: a client that never shares, trained on its own data for
        as many local epochs as a federated client trains in the whole run
        (rounds x 10%), evaluated on the global test set."""
        import tflm_train as tt

        model = tt.TrainableModel(self.model)
        epochs = max(1, int(round(self.args.rounds * self.fraction * self.args.local_epochs)))
        rng = np.random.default_rng(self.args.seed)
        picked = rng.choice(self.clients, min(self.args.local_clients, self.clients), replace=False)
        accuracies = []
        for pid in picked:
            x, y = self.loader()(int(pid), self.clients)
            model.reset()
            for _ in range(epochs):
                for i in rng.permutation(len(x)):
                    model.train_step(x[i], y[i], self.args.lr)
            accuracies.append(tt.evaluate(model, *self.test))
        self.results["local"] = {"accuracy": float(np.mean(accuracies)), "min": float(np.min(accuracies)),
                                 "max": float(np.max(accuracies)), "clients": len(picked), "epochs": epochs}
        print(f"  local only: mean {np.mean(accuracies):.4f} over {len(picked)} clients", flush=True)

    def fedavg(self) -> None:
        self.federated("fedavg")

    def int8(self) -> None:
        self.federated("fedavg-int8", encoding="int8")

    def secagg(self) -> None:
        from tflm_train.fleet.server_app import SecAggConfig

        self.federated("fedavg-secagg+", secagg=SecAggConfig())

    def dp_recipe(self) -> DpRecipe:
        """The DP row's adapter and client training (--dp-* options): fewer
        trainable parameters than the other rows, since the noise's norm grows
        with the square root of their number."""
        import tflm_train as tt

        method, rank, targets = self.args.dp_adapter.split(":", 2)
        options = {"r": int(rank)} if rank else {}  # rank: lora / adapter only (e.g. "bias::last:1")
        config = tt.ConvertConfig(method=method, targets=targets, loss="ce", **options,
                                  optimizer=tt.OptimizerConfig(kind=self.args.dp_optimizer))
        model = tt.convert(MODEL.read_bytes(), config).model
        return DpRecipe(model=model, rounds=self.args.dp_rounds, lr=self.args.dp_lr, lr_decay=self.args.dp_lr_decay,
                        local_epochs=self.args.dp_local_epochs)

    def dp(self) -> None:
        """Client-level DP at each of --epsilons, plus the same recipe without
        noise (clipping only) and without DP at all (the non-private
        reference the gains are compared with)."""
        from tflm_train.fleet.delta import AdapterLayout
        from tflm_train.fleet.privacy import ClientLevelAccountant, dp_client_mods, dp_strategy, noise_for_epsilon

        recipe = self.dp_recipe()
        sampled = round(self.fraction * self.clients)
        params = AdapterLayout.of_model(recipe.model).param_count
        deltas = self.first_round_deltas(recipe, self.args.dp_norm_clients)
        norms = [float(np.linalg.norm(d)) for d in deltas]
        clip = self.args.clip
        if not clip:
            clip = float(np.quantile(norms, self.args.dp_clip_quantile))
        # The signal of a round: the mean of the clipped deltas (what the noise is added to).
        signal = float(np.linalg.norm(np.mean([d * min(1.0, clip / n) for d, n in zip(deltas, norms)], axis=0)))
        quantile = self.args.dp_clip_quantile
        print(f"  clipping norm C {clip:.3f} (first-round delta norms of {len(norms)} honest clients: median "
              f"{np.median(norms):.3f}, quantile {quantile:g} {np.quantile(norms, quantile):.3f});"
              f" norm of their clipped mean {signal:.3f} ({signal / clip:.2f} C)", flush=True)
        self.results["dp-signal"] = {"first_round_norms": norms, "clipped_mean_norm": signal, "clipping_norm": clip}
        common = {"params": params, "rounds": recipe.rounds, "clipping_norm": clip, "adapter": self.args.dp_adapter}
        result = self.federated("dp-nonprivate", recipe=recipe)
        result.update(common, noise_multiplier=0.0)
        if self.args.clip_only:
            # Clipping without noise: how much of the cost is the clipping.
            strategy = dp_strategy(1e-9, clip, sampled, fraction_train=self.fraction, min_train_nodes=2,
                                   min_available_nodes=self.clients)
            result = self.federated("dp-clip-only", strategy=strategy, mods=dp_client_mods(), recipe=recipe)
            result.update(common, noise_multiplier=0.0)
        for epsilon in self.args.epsilons:
            z = noise_for_epsilon(epsilon, recipe.rounds, self.clients, sampled, DELTA)
            for draw in range(self.args.dp_noise_seeds):
                accountant = ClientLevelAccountant(self.clients, sampled, z, DELTA)

                def account(row, accountant=accountant):
                    if row["round"] > 0:
                        row["epsilon"] = accountant.step()

                # Flower's DP wrapper draws its noise from numpy's global generator:
                # seeded here so that the benchmark repeats (a deployment must not).
                np.random.seed(1000 * self.args.seed + draw)
                strategy = dp_strategy(z, clip, sampled, fraction_train=self.fraction, min_train_nodes=2,
                                       min_available_nodes=self.clients)
                result = self.federated(f"dp-eps{epsilon:g}-noise{draw}", strategy=strategy, mods=dp_client_mods(),
                                        on_round=account, recipe=recipe)
                # The noise on the average: std z*C/m a parameter, norm ~ z*C*sqrt(d)/m.
                result.update(common, noise_multiplier=z, epsilon=accountant.history[-1], delta=DELTA,
                              noise_norm=z * clip * np.sqrt(params) / sampled)
        self.dp_summary()

    def dp_summary(self) -> None:
        """The README's DP table: accuracy = mean of the last three rounds."""
        rows = {k: v for k, v in self.results.items() if k.startswith("dp-") and "per_round" in v}
        if "dp-nonprivate" not in rows:
            return
        base = rows["dp-nonprivate"]["per_round"][0]
        reference = np.mean(rows["dp-nonprivate"]["per_round"][-3:]) - base
        print(f"  DP recipe {self.args.dp_adapter}: base {base:.4f}, non-private gain {reference * 100:+.1f} points")
        for row in rows.values():
            row["last3"] = float(np.mean(row["per_round"][-3:]))
            row["gain_share"] = (row["last3"] - base) / reference if reference > 0 else float("nan")
        # One line per setting; the noisy ones averaged over their noise draws.
        groups: dict[str, list[dict]] = {}
        for name, row in rows.items():
            groups.setdefault(name.split("-noise")[0], []).append(row)
        table = {}
        for name, runs in groups.items():
            row = runs[0]
            last3 = [r["last3"] for r in runs]
            accuracy = float(np.mean(last3))
            share = (accuracy - base) / reference if reference > 0 else float("nan")
            table[name] = {k: row[k] for k in ("noise_multiplier", "clipping_norm", "params", "rounds", "adapter")}
            table[name].update(accuracy=accuracy, gain=accuracy - base, gain_share=share, runs=last3,
                               epsilon=row.get("epsilon"))
            eps = f"eps {row['epsilon']:.2f}" if "epsilon" in row else "no noise"
            spread = f" (runs {', '.join(f'{v:.3f}' for v in last3)})" if len(runs) > 1 else ""
            print(f"  {name:<16} {eps:<10} z {row['noise_multiplier']:.3f} C {row['clipping_norm']:.3f} "
                  f"d {row['params']} rounds {row['rounds']}: accuracy {accuracy:.4f} "
                  f"gain {(accuracy - base) * 100:+.1f} ({share * 100:.0f}% of non-private){spread}", flush=True)
        self.results["dp-table"] = table
        self.dp_cohort_estimate(table)

    def dp_cohort_estimate(self, rows: dict) -> None:
        """If epsilon 8 keeps < 70% of the gain: the cohort (clients a round)
        whose noise on the average at epsilon 8 would be as small as in the
        noisiest run that kept >= 70%. A computed estimate (accountant only):
        it assumes that noise level stays harmless with more clients."""
        from tflm_train.fleet.privacy import cohort_for_noise

        noisy = {k: v for k, v in rows.items() if v.get("epsilon")}
        at8 = [v for v in noisy.values() if round(v["epsilon"]) == 8]
        kept = [v for v in noisy.values() if v["gain_share"] >= 0.7]
        if not at8 or at8[0]["gain_share"] >= 0.7 or not kept:
            return
        sampled = round(self.fraction * self.clients)
        std = max(v["noise_multiplier"] for v in kept) / sampled  # noise std on the average, in units of C
        rounds = at8[0]["rounds"]
        at_rate = cohort_for_noise(8.0, rounds, std, sampling_rate=self.fraction, delta=DELTA)
        try:
            in_fleet = cohort_for_noise(8.0, rounds, std, population=self.clients, delta=DELTA)
        except ValueError:  # not even all 100 clients every round
            in_fleet = (None, None)
        self.results["dp-cohort-estimate"] = {"noise_std_in_C": std, "sampling_rate_10pct": at_rate,
                                              "population_100": in_fleet}
        print(f"  estimate (accountant only): epsilon 8 in {rounds} rounds with noise std {std:.3f} C on the average "
              f"needs {at_rate[0]} clients a round at 10% sampling (z {at_rate[1]:.2f}), "
              f"{in_fleet[0] or 'more than all'} of the {self.clients} (z {in_fleet[1] or float('nan'):.2f})", flush=True)

    def first_round_deltas(self, recipe: DpRecipe, count: int) -> list[np.ndarray]:
        """`count` honest clients' first-round deltas (flattened). The DP
        clipping norm is a quantile of their norms (tuned on the non-private
        setup, as is usual), and their clipped mean is the signal the noise
        is compared with."""
        import tflm_train as tt
        from tflm_train.fleet.client_app import train_locally
        from tflm_train.fleet.delta import AdapterLayout

        layout = AdapterLayout.of_model(recipe.model)
        start = layout.adapter(tt.TrainableModel(recipe.model).save_state())
        deltas = []
        for pid in range(count):
            x, y = self.loader()(pid, self.clients)
            state, _ = train_locally(recipe.model, None, start, x, y, learning_rate=recipe.lr,
                                     local_epochs=recipe.local_epochs, seed=pid)
            end = layout.adapter(state)
            deltas.append(np.concatenate([np.ravel(end[k] - start[k]) for k in layout.names]).astype(np.float64))
        return deltas

    def attack(self) -> None:
        from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

        from tflm_train.fleet.attacks import attack_mod, choose_malicious, label_flipping_loader

        malicious = choose_malicious(self.clients, MALICIOUS, seed=self.args.seed)
        common = dict(fraction_train=self.fraction, fraction_evaluate=0.0, min_train_nodes=2,
                      min_available_nodes=self.clients)
        strategies = {
            "fedavg": lambda: FedAvg(**common),
            "fedmedian": lambda: FedMedian(**common),
            "trimmedavg": lambda: FedTrimmedAvg(**common, beta=self.args.trim_beta),
            "krum": lambda: Krum(**common, num_malicious_nodes=2),
            # Krum's scores, but the mean of the best-scored updates (assuming up
            # to 3 malicious of 10; by default the n - f = 7 best): robust, and far
            # less noisy than Krum's single update.
            "multikrum": lambda: MultiKrum(**common, num_malicious_nodes=3,
                                           num_nodes_to_select=self.args.multikrum_select),
        }
        wanted = self.args.attack_runs.split(",")
        for name, make in strategies.items():
            if f"clean-{name}" in wanted:
                self.federated(f"clean-{name}", strategy=make())
            if f"signflip-{name}" in wanted:
                self.federated(f"signflip-{name}", strategy=make(),
                               mods=[attack_mod(malicious, "sign-flip", self.args.attack_factor)])
            if f"labelflip-{name}" in wanted:
                self.federated(f"labelflip-{name}", strategy=make(),
                               loader=label_flipping_loader(self.loader(), malicious, self.classes))

    def dropout(self) -> None:
        self.federated("fedavg-dropout30", dropout=DROPOUT)


def central_name(results: dict) -> str:
    """The upper bound: the best of the central runs (central, central-adam ...)."""
    names = [name for name in results if name.startswith("central")]
    return max(names, key=lambda name: results[name]["accuracy"]) if names else "central"


def _gain(results: dict, name: str) -> float | None:
    run, base = results.get(name), results.get("base")
    return None if run is None or base is None else run["accuracy"] - base["accuracy"]


def summarize(results: dict) -> tuple[list[list[str]], list[list[str]]]:
    """The README's two tables from a benchmark's results: every run (accuracy,
    gain over the base model, share of the central gain, bytes a client sends
    per round) and the targets (measured, met or missed)."""
    central = central_name(results)
    central_gain = _gain(results, central)

    def pct(value):
        return "" if value is None else f"{100 * value:.1f}%"

    def points(value):
        return "" if value is None else f"{100 * value:+.1f}"

    runs = []
    for name, run in results.items():
        if "accuracy" not in run:  # the DP row's tables and measurements
            continue
        gain = _gain(results, name) if name != "base" else None
        share = gain / central_gain if gain is not None and central_gain else None
        size = run.get("delta_bytes")
        runs.append([name, pct(run["accuracy"]), points(gain), pct(share) if name != central else "100%",
                     "" if size is None else f"{size:,.0f}", "" if "epsilon" not in run else f"{run['epsilon']:.2f}"])

    targets = []

    def target(text, measured, met):
        targets.append([text, measured, "met" if met else "**missed**"])

    fedavg = _gain(results, "fedavg")
    # The plain FedAvg runs: the default one and longer ones (--suffix=-200rounds ...).
    plain = {name: _gain(results, name) for name in results if re.fullmatch(r"fedavg(-\d+rounds)?", name)}
    if plain and central_gain:
        target(f"FedAvg >= {FEDAVG_SHARE_OF_CENTRAL:.0%} of the central gain",
               "; ".join(f"{name}: {pct(gain / central_gain)} ({points(gain)} of {points(central_gain)} points)"
                         for name, gain in plain.items()),
               max(plain.values()) >= FEDAVG_SHARE_OF_CENTRAL * central_gain)
    if "fedavg-int8" in results and "fedavg" in results:
        cost = results["fedavg"]["accuracy"] - results["fedavg-int8"]["accuracy"]
        saving = results["fedavg"]["delta_bytes"] / results["fedavg-int8"]["delta_bytes"]
        target(f"int8 deltas cost <= {100 * INT8_MAX_COST:.1f} point, >= {INT8_MIN_SAVING}x fewer bytes",
               f"cost {100 * cost:.1f} points, {saving:.2f}x fewer bytes",
               cost <= INT8_MAX_COST and saving >= INT8_MIN_SAVING)
    if "fedavg-secagg+" in results and "fedavg" in results:
        plain, secure = results["fedavg"], results["fedavg-secagg+"]
        difference = abs(secure["accuracy"] - plain["accuracy"])
        measured = f"{100 * difference:.2f} points (last {LAST_ROUNDS} rounds)"
        met = difference <= SECAGG_MAX_DIFFERENCE
        if plain.get("final_full_test") is not None and secure.get("final_full_test") is not None:
            full = abs(secure["final_full_test"] - plain["final_full_test"])
            measured += f"; final adapters on the whole test split: {100 * full:.2f} points"
            met = full <= SECAGG_MAX_DIFFERENCE  # the finer measure decides when there is one
        target(f"SecAgg+ within {100 * SECAGG_MAX_DIFFERENCE:.1f} point of FedAvg", measured, met)
    # The DP row's settings (its noise draws averaged) against its own non-private run.
    private = [(row["epsilon"], name, row) for name, row in results.get("dp-table", {}).items()
               if row.get("epsilon") is not None and row["epsilon"] <= DP_MAX_EPSILON + 0.01]
    if private:
        epsilon, name, row = max(private, key=lambda item: item[0])
        target(f"epsilon <= {DP_MAX_EPSILON:g} keeps >= {DP_MIN_SHARE:.0%} of the non-private gain",
               f"epsilon {epsilon:.2f} ({row['params']} parameters): {pct(row['gain_share'])} of the same "
               f"adapter's non-private gain ({points(row['gain'])} points)", row["gain_share"] >= DP_MIN_SHARE)
    # The attack rows' clean reference: "clean-fedavg" when they ran with their
    # own settings (e.g. fewer rounds), else the main FedAvg run.
    clean_name = "clean-fedavg" if "clean-fedavg" in results else "fedavg"
    if "signflip-fedavg" in results and clean_name in results:
        clean, clean_gain = results[clean_name]["accuracy"], _gain(results, clean_name)
        robust = {name: results[name]["accuracy"] for name in results
                  if name.startswith(("signflip-", "labelflip-")) and not name.endswith("-fedavg")}
        attacked = _gain(results, "signflip-fedavg")
        best = max(robust, key=robust.get) if robust else None
        measured = f"FedAvg keeps {pct(attacked / clean_gain)} of its gain"
        if best is not None:
            measured += f"; best robust {best} {pct(robust[best])} vs clean {clean_name} {pct(clean)}"
        target(f"20% malicious: FedAvg loses most of its gain, a robust strategy within "
               f"{100 * ROBUST_MAX_LOSS:.0f} points of clean", measured,
               attacked < 0.5 * clean_gain and best is not None and clean - robust[best] <= ROBUST_MAX_LOSS)
    if "fedavg-dropout30" in results and fedavg:
        share = _gain(results, "fedavg-dropout30") / fedavg
        target("30% client dropout still converges", f"keeps {pct(share)} of the clean gain",
               share >= DROPOUT_MIN_SHARE)
    return runs, targets


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def print_tables(results: dict) -> None:
    runs, targets = summarize(results)
    print(markdown(["run", f"accuracy (last {LAST_ROUNDS} rounds)", "gain (points)", "share of central gain",
                    "bytes per client per round", "epsilon"], runs))
    print()
    print(markdown(["target", "measured", ""], targets))


@dataclass
class DpRecipe:
    """The DP row's converted model and client training."""

    model: bytes
    rounds: int
    lr: float
    lr_decay: float
    local_epochs: int


def plot_rounds(curves: dict[str, list[float]], base: float, central: float | None, path: Path,
                title: str = "Fashion-MNIST, 100 clients, 10% a round, LoRA deltas (TFLM interpreter)") -> None:
    """Global held-out accuracy per round of each run, with the base model
    and the central upper bound as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name, values in curves.items():
        axis.plot(range(len(values)), values, label=name, linewidth=1.4)
    axis.axhline(base, color="gray", linestyle=":", label="base model")
    if central is not None:
        axis.axhline(central, color="black", linestyle="--", label="central (upper bound)")
    axis.set_xlabel("round")
    axis.set_ylabel("global held-out accuracy")
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


WATCH_TITLE = "Smartwatch IMU, 9 people (one client each), 3 a round, LoRA deltas (TFLM interpreter)"


def plot_results(results: dict, path: Path, title: str | None = None) -> None:
    curves = {k: v["per_round"] for k, v in results.items() if "per_round" in v}
    base = results.get("base", {}).get("accuracy", curves and next(iter(curves.values()))[0])
    central = results.get(central_name(results), {}).get("accuracy")
    plot_rounds(curves, base, central, path, *([title] if title else []))


def with_suffix(results: dict, suffix: str) -> dict:
    return {(k if k == "base" or not suffix else k + suffix): v for k, v in results.items()}


def write_json(path: Path, args, results: dict) -> None:
    path.write_text(json.dumps({"args": vars(args), "results": with_suffix(results, args.suffix)}, indent=1,
                               default=lambda o: str(o) if isinstance(o, Path) else float(o)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "watch"),
                        help="fashion-mnist (100 clients, Dirichlet label split) or watch (smartwatch IMU, "
                             "one client per person)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--pool", type=int, default=10_000, help="client images (training rows 0..pool-1)")
    parser.add_argument("--test", type=int, default=1_000, help="held-out test images")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"), help="the devices' optimizer")
    parser.add_argument("--lr", type=float, default=0.02, help="the devices' learning rate")
    parser.add_argument("--lr-decay", type=float, default=0.98,
                        help="per-round factor of the devices' learning rate (round r: lr * decay^(r-1))")
    parser.add_argument("--clip", type=float, default=DP_CLIP,
                        help="DP row: clipping norm of a client's delta (0: --dp-clip-quantile of first-round norms)")
    parser.add_argument("--attack-factor", type=float, default=4.0, help="sign-flip boost")
    parser.add_argument("--trim-beta", type=float, default=0.2, help="FedTrimmedAvg's trimmed fraction per side")
    parser.add_argument("--multikrum-select", type=int, default=7,
                        help="MultiKrum: the best-scored updates averaged a round (n - f = 7 of 10)")
    parser.add_argument("--local-epochs", type=int, default=3, help="a client's passes over its data per round")
    parser.add_argument("--attack-runs", default=",".join(ATTACK_RUNS),
                        help="the attack row's runs: {clean,signflip,labelflip}-{fedavg,fedmedian,trimmedavg,krum,multikrum}")
    parser.add_argument("--epsilons", type=lambda s: [float(v) for v in s.split(",")], default=list(EPSILONS),
                        help="the DP row's target epsilons (delta 1e-5)")
    parser.add_argument("--no-clip-only", dest="clip_only", action="store_false",
                        help="DP row: skip the run with clipping and no noise")
    parser.add_argument("--dp-adapter", default=DP_ADAPTER,
                        help="DP row: METHOD:RANK:TARGETS of its adapter (fewer parameters: less noise)")
    parser.add_argument("--dp-rounds", type=int, default=DP_ROUNDS, help="DP row: rounds")
    parser.add_argument("--dp-optimizer", default=DP_OPTIMIZER, choices=("sgd", "adam"))
    parser.add_argument("--dp-lr", type=float, default=DP_LR)
    parser.add_argument("--dp-lr-decay", type=float, default=DP_LR_DECAY)
    parser.add_argument("--dp-local-epochs", type=int, default=DP_LOCAL_EPOCHS)
    parser.add_argument("--dp-clip-quantile", type=float, default=DP_CLIP_QUANTILE,
                        help="DP row with --clip 0: the clipping norm is this quantile of first-round delta norms")
    parser.add_argument("--dp-noise-seeds", type=int, default=DP_NOISE_SEEDS,
                        help="DP row: runs per epsilon, each with its own (seeded) noise draw")
    parser.add_argument("--dp-norm-clients", type=int, default=10,
                        help="DP row: clients whose first-round delta norms set the clipping norm")
    parser.add_argument("--central-epochs", type=int, default=10)
    parser.add_argument("--central-lr-decay", type=float, default=0.75,
                        help="per-epoch factor of the central run's learning rate")
    parser.add_argument("--final-test", action="store_true",
                        help="also evaluate each run's final adapter on the whole test split (10,000 images)")
    parser.add_argument("--local-clients", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the label split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suffix", default="", help="appended to every run's name (e.g. -adam), so that --report "
                        "can merge runs of other settings")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the per-round accuracy of every run")
    parser.add_argument("--report", type=Path, nargs="+", default=None,
                        help="print the tables (and --plot) from earlier --json files, merged; runs nothing")
    args = parser.parse_args()
    if args.report:
        results = {}
        for path in args.report:
            results.update(json.loads(path.read_text())["results"])
        print_tables(results)
        if args.plot:
            plot_results(results, args.plot, WATCH_TITLE if args.dataset == "watch" else None)
        return
    log_quietly()
    bench = Bench(args)
    started = time.monotonic()
    for row in args.rows.split(","):
        if row not in ROWS:
            parser.error(f"unknown row {row!r}")
        print(f"== {row}", flush=True)
        run = bench.local_only if row == "local" else getattr(bench, row)
        run()
        if args.json:  # after every row: a long run that is stopped keeps what it measured
            write_json(args.json, args, bench.results)
    results = with_suffix(bench.results, args.suffix)
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rounds"} for k, v in results.items()}
    print(json.dumps(summary, indent=1, default=float))
    print(f"total {time.monotonic() - started:.0f} s")
    print_tables(results)
    if args.plot:
        plot_results(results, args.plot, WATCH_TITLE if args.dataset == "watch" else None)
    if args.json:
        write_json(args.json, args, bench.results)


if __name__ == "__main__":
    main()
