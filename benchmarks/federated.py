"""Federated adapter training on Fashion-MNIST: the numbers of README
"Federated learning" (issue 16's targets), measured in one run.

Setup: the base model is examples/federated/fashion_cnn_int8.tflite, a small
int8 CNN the factory trained on five of the ten classes (make_model.py).
It is converted for LoRA (rank 4 on its last two layers, cross-entropy,
Adam) and every training step runs in the TFLM interpreter with tflm-train's
kernels. `--pool` images of Fashion-MNIST's training rows 0-49,999 (never
seen by the factory) are split over 100 clients by flwr-datasets'
DirichletPartitioner (`--alpha`, default 1.0, over the labels; at least 10
images each); each round Flower samples 10% of them; each sampled client
trains `--local-epochs` (3) passes over its images, one sample per step, and
sends its adapter delta. The global adapter's accuracy is measured
after every round on `--test` images of the test split. All runs use the
in-process Flower grid (tflm_train/fleet/local_grid.py: the same ServerApp
and ClientApp, no Ray), so their numbers differ only by what the row changes.

Rows: central (upper bound: the same adapter trained on the pooled client
data, `--central-epochs` epochs), local only (lower bound: each of
`--local-clients` clients trains on its own data alone; mean global test
accuracy), FedAvg float32 deltas, int8 deltas, SecAgg+, DP at `--epsilons`
(Flower's client-side fixed clipping + Gaussian noise; epsilon from
dp-accounting, tflm_train/fleet/privacy.py; the row has its own recipe,
`--dp-*` and `--clip`: a smaller adapter, since the noise's norm grows with
the square root of the parameter count, plus the same recipe without noise
and without clipping as references), 20% malicious clients (boosted
sign flip; label flip) against FedAvg, FedMedian, FedTrimmedAvg and Krum, and
30% client dropout.

  python benchmarks/federated.py                    # all rows (see README for the time)
  python benchmarks/federated.py --rows fedavg,int8 --rounds 5
  python benchmarks/federated.py --json out.json    # every row's per-round metrics
"""

from __future__ import annotations

import argparse
import json
import logging
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

# The attack row's default runs (the README's); also possible: clean-{fedmedian,
# trimmedavg,krum}, labelflip-{fedmedian,trimmedavg,krum}.
ATTACK_RUNS = ("signflip-fedavg", "signflip-fedmedian", "signflip-trimmedavg", "signflip-krum", "labelflip-fedavg")
ROWS = ("central", "local", "fedavg", "int8", "secagg", "dp", "attack", "dropout")


def log_quietly() -> None:
    import flwr.common.logger  # noqa: F401  (Flower sets its level on import: set ours after)

    for name in ("flwr", "tflm_train.fleet", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Bench:
    def __init__(self, args):
        import tflm_train as tt
        from tflm_train.fleet.datasets import dirichlet_partition, fashion_mnist

        self.args = args
        train, test = fashion_mnist()
        self.x, self.y = train.x[: args.pool], train.y[: args.pool]
        self.test = (test.x[: args.test], test.y[: args.test])
        self.parts = dirichlet_partition(self.y, CLIENTS, args.alpha, seed=args.seed)
        config = tt.ConvertConfig(method="lora", r=4, targets="last:2", loss="ce",
                                  optimizer=tt.OptimizerConfig(kind=args.optimizer))
        self.model = tt.convert(MODEL.read_bytes(), config).model
        self.classes = 10
        self.results: dict[str, dict] = {}

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
        server = make_server_app(model, rounds=rounds, strategy=strategy, fraction_train=FRACTION,
                                 min_train_nodes=2, min_available_nodes=CLIENTS, evaluate_data=self.test,
                                 secagg=secagg, round_log=round_log, sampling_seed=self.args.seed)
        # Seeded sampling: every run of one benchmark (SecAgg+ included) trains
        # the same clients round by round, so their differences are the row's.
        run_local(server, client, CLIENTS)
        sizes = [r["delta_bytes"] for r in rows[1:] if r.get("delta_bytes")]
        result = {
            "accuracy": rows[-1]["accuracy"], "per_round": [r.get("accuracy") for r in rows],
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
        base = tt.evaluate(model, *self.test)
        started = time.monotonic()
        per_epoch = []
        rng = np.random.default_rng(self.args.seed)
        for epoch in range(self.args.central_epochs):
            lr = self.args.lr * self.args.central_lr_decay ** epoch
            for i in rng.permutation(len(self.x)):
                model.train_step(self.x[i], self.y[i], lr)
            per_epoch.append(tt.evaluate(model, *self.test))
            print(f"  central epoch {len(per_epoch)}: accuracy {per_epoch[-1]:.4f}", flush=True)
        self.results["base"] = {"accuracy": base}
        self.results["central"] = {"accuracy": max(per_epoch), "per_epoch": per_epoch,
                                   "seconds": round(time.monotonic() - started, 1)}
        print(f"  base model {base:.4f}; central (best epoch) {max(per_epoch):.4f}", flush=True)

    def local_only(self) -> None:
        """Lower bound: a client that never shares, trained on its own data for
        as many local epochs as a federated client trains in the whole run
        (rounds x 10%), evaluated on the global test set."""
        import tflm_train as tt

        model = tt.TrainableModel(self.model)
        epochs = max(1, int(round(self.args.rounds * FRACTION * self.args.local_epochs)))
        rng = np.random.default_rng(self.args.seed)
        picked = rng.choice(CLIENTS, self.args.local_clients, replace=False)
        accuracies = []
        for pid in picked:
            x, y = self.loader()(int(pid), CLIENTS)
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
        sampled = round(FRACTION * CLIENTS)
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
            strategy = dp_strategy(1e-9, clip, sampled, fraction_train=FRACTION, min_train_nodes=2,
                                   min_available_nodes=CLIENTS)
            result = self.federated("dp-clip-only", strategy=strategy, mods=dp_client_mods(), recipe=recipe)
            result.update(common, noise_multiplier=0.0)
        for epsilon in self.args.epsilons:
            z = noise_for_epsilon(epsilon, recipe.rounds, CLIENTS, sampled, DELTA)
            for draw in range(self.args.dp_noise_seeds):
                accountant = ClientLevelAccountant(CLIENTS, sampled, z, DELTA)

                def account(row, accountant=accountant):
                    if row["round"] > 0:
                        row["epsilon"] = accountant.step()

                # Flower's DP wrapper draws its noise from numpy's global generator:
                # seeded here so that the benchmark repeats (a deployment must not).
                np.random.seed(1000 * self.args.seed + draw)
                strategy = dp_strategy(z, clip, sampled, fraction_train=FRACTION, min_train_nodes=2,
                                       min_available_nodes=CLIENTS)
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
        sampled = round(FRACTION * CLIENTS)
        std = max(v["noise_multiplier"] for v in kept) / sampled  # noise std on the average, in units of C
        rounds = at8[0]["rounds"]
        at_rate = cohort_for_noise(8.0, rounds, std, sampling_rate=FRACTION, delta=DELTA)
        try:
            in_fleet = cohort_for_noise(8.0, rounds, std, population=CLIENTS, delta=DELTA)
        except ValueError:  # not even all 100 clients every round
            in_fleet = (None, None)
        self.results["dp-cohort-estimate"] = {"noise_std_in_C": std, "sampling_rate_10pct": at_rate,
                                              "population_100": in_fleet}
        print(f"  estimate (accountant only): epsilon 8 in {rounds} rounds with noise std {std:.3f} C on the average "
              f"needs {at_rate[0]} clients a round at 10% sampling (z {at_rate[1]:.2f}), "
              f"{in_fleet[0] or 'more than all'} of the {CLIENTS} (z {in_fleet[1] or float('nan'):.2f})", flush=True)

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
            x, y = self.loader()(pid, CLIENTS)
            state, _ = train_locally(recipe.model, None, start, x, y, learning_rate=recipe.lr,
                                     local_epochs=recipe.local_epochs, seed=pid)
            end = layout.adapter(state)
            deltas.append(np.concatenate([np.ravel(end[k] - start[k]) for k in layout.names]).astype(np.float64))
        return deltas

    def attack(self) -> None:
        from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

        from tflm_train.fleet.attacks import attack_mod, choose_malicious, label_flipping_loader

        malicious = choose_malicious(CLIENTS, MALICIOUS, seed=self.args.seed)
        common = dict(fraction_train=FRACTION, fraction_evaluate=0.0, min_train_nodes=2,
                      min_available_nodes=CLIENTS)
        strategies = {
            "fedavg": lambda: FedAvg(**common),
            "fedmedian": lambda: FedMedian(**common),
            "trimmedavg": lambda: FedTrimmedAvg(**common, beta=0.2),
            "krum": lambda: Krum(**common, num_malicious_nodes=2),
        }
        wanted = self.args.attack_runs.split(",")
        for name, make in strategies.items():
            if f"clean-{name}" in wanted and name != "fedavg":
                self.federated(f"clean-{name}", strategy=make())
            if f"signflip-{name}" in wanted:
                self.federated(f"signflip-{name}", strategy=make(),
                               mods=[attack_mod(malicious, "sign-flip", self.args.attack_factor)])
            if f"labelflip-{name}" in wanted:
                self.federated(f"labelflip-{name}", strategy=make(),
                               loader=label_flipping_loader(self.loader(), malicious, self.classes))

    def dropout(self) -> None:
        self.federated("fedavg-dropout30", dropout=DROPOUT)


@dataclass
class DpRecipe:
    """The DP row's converted model and client training."""

    model: bytes
    rounds: int
    lr: float
    lr_decay: float
    local_epochs: int


def plot_rounds(curves: dict[str, list[float]], base: float, central: float | None, path: Path) -> None:
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
    axis.set_title("Fashion-MNIST, 100 clients, 10% a round, LoRA deltas (TFLM interpreter)")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pool", type=int, default=10_000, help="client images (training rows 0..pool-1)")
    parser.add_argument("--test", type=int, default=1_000, help="held-out test images")
    parser.add_argument("--optimizer", default="adam", choices=("sgd", "adam"), help="the devices' optimizer")
    parser.add_argument("--lr", type=float, default=0.003, help="the devices' learning rate")
    parser.add_argument("--lr-decay", type=float, default=1.0,
                        help="per-round factor of the devices' learning rate (round r: lr * decay^(r-1))")
    parser.add_argument("--clip", type=float, default=DP_CLIP,
                        help="DP row: clipping norm of a client's delta (0: --dp-clip-quantile of first-round norms)")
    parser.add_argument("--attack-factor", type=float, default=4.0, help="sign-flip boost")
    parser.add_argument("--local-epochs", type=int, default=3, help="a client's passes over its data per round")
    parser.add_argument("--attack-runs", default=",".join(ATTACK_RUNS),
                        help="the attack row's runs: {clean,signflip,labelflip}-{fedavg,fedmedian,trimmedavg,krum}")
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
    parser.add_argument("--central-epochs", type=int, default=3)
    parser.add_argument("--central-lr-decay", type=float, default=1.0,
                        help="per-epoch factor of the central run's learning rate")
    parser.add_argument("--local-clients", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the label split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the per-round accuracy of every run")
    args = parser.parse_args()
    log_quietly()
    bench = Bench(args)
    started = time.monotonic()
    for row in args.rows.split(","):
        if row not in ROWS:
            parser.error(f"unknown row {row!r}")
        print(f"== {row}", flush=True)
        run = bench.local_only if row == "local" else getattr(bench, row)
        run()
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rounds"} for k, v in bench.results.items()}
    print(json.dumps(summary, indent=1, default=float))
    print(f"total {time.monotonic() - started:.0f} s")
    if args.plot:
        curves = {k: v["per_round"] for k, v in bench.results.items() if "per_round" in v}
        plot_rounds(curves, bench.results.get("base", {}).get("accuracy", curves and next(iter(curves.values()))[0]),
                    bench.results.get("central", {}).get("accuracy"), args.plot)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "results": bench.results}, indent=1,
                                        default=lambda o: str(o) if isinstance(o, Path) else float(o)))


if __name__ == "__main__":
    main()
