"""The Flower ServerApp: the global adapter, aggregated from devices' deltas.

The global model is the adapter (one float32 array per trainable tensor).
Each round, a Flower strategy samples clients and sends them the adapter;
their replies are deltas (delta.py). `DeltaStrategy` wraps any Flower
message-API strategy (FedAvg, FedAdam, FedMedian, Krum, the DP wrappers ...):
it checks each delta against the model (a delta for another base model or
conversion is refused, logged and counted; the round goes on), turns it back
into `global + delta` and hands those to the wrapped strategy, which
aggregates as it always does. Replies that are errors or never come (a client
that failed or timed out) are left out by Flower's strategies: the round
goes on with the rest.

With `secagg=SecAggConfig(...)` the ServerApp runs Flower's SecAgg+ workflow
instead (legacy DefaultWorkflow + SecAggPlusWorkflow, the only form SecAgg+
has in flwr 1.42): clients mask their quantized deltas, the server only ever
holds their sum, unmasked once enough clients took part. `SecureDeltaFedAvg`
sees only that aggregate; it checks the hashes each client reports in its
metrics (not part of the update) and refuses the round's aggregate if any
client's delta was made for another model.

With `sampling_seed`, which clients a round samples depends only on the seed,
the round and the fleet's node ids, on both paths: runs that differ in their
strategy, encoding or secure aggregation then train the same clients round
by round (`seeded_sample`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tflm_train.fleet.client_app import DELTA_RECORD
from tflm_train.fleet.delta import AdapterLayout, Delta, DeltaFormatError, ForeignDeltaError

log = logging.getLogger("tflm_train.fleet")

STRATEGIES = ("fedavg", "fedadam")


@dataclass
class RoundLog:
    """Round-by-round metrics of one federated run (JSON + PNG plot).

    rows[0] is the starting adapter (round 0, global evaluation only); each
    further row holds: sampled clients, replies, failures (errors or timeouts),
    refused deltas, mean delta bytes per client, mean train loss, the global
    held-out metric (when the server has evaluation data) and seconds."""

    metric: str = "accuracy"
    rows: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    on_round: Callable[[dict], None] | None = None
    final_adapter: dict | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.on_round is not None:
            self.on_round(row)

    def to_json(self) -> dict:
        return {"config": self.config, "metric": self.metric, "rounds": self.rows}

    def write(self, directory: str | Path) -> dict[str, Path]:
        """metrics.json and metrics.png in `directory`."""
        from tflm_train.outputs import write_all

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"json": directory / "metrics.json", "png": directory / "metrics.png"}
        write_all({paths["json"]: json.dumps(self.to_json(), indent=2).encode(), paths["png"]: self.plot_png()})
        return paths

    def plot_png(self) -> bytes:
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rounds = [r["round"] for r in self.rows]
        figure, left = plt.subplots(figsize=(7, 4))
        values = [r.get(self.metric) for r in self.rows]
        if any(v is not None for v in values):
            left.plot(rounds, [np.nan if v is None else v for v in values], "o-", color="tab:blue")
            left.set_ylabel(f"global held-out {self.metric}", color="tab:blue")
        losses = [r.get("train_loss") for r in self.rows]
        right = left.twinx()
        right.plot(rounds, [np.nan if v is None else v for v in losses], "s--", color="tab:orange")
        right.set_ylabel("mean client train loss", color="tab:orange")
        left.set_xlabel("round")
        from matplotlib.ticker import MaxNLocator

        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        title = ", ".join(f"{k} {v}" for k, v in self.config.items() if k in ("strategy", "clients", "encoding"))
        left.set_title(f"federated adapter training ({title})" if title else "federated adapter training")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        return buffer.getvalue()


@dataclass
class SecAggConfig:
    """Flower SecAggPlusWorkflow's parameters (see its docstring).

    A client's delta is multiplied by its weight (examples / max_weight,
    at most 1) and then quantized with a step of 2 * clipping_range /
    quantization_range: keep max_weight near the largest client's example
    count (None: Flower's default, 1000) so that small clients' deltas keep
    their precision. The protocol clips every weighted value to
    +-clipping_range without telling anyone (the client logs a warning when
    its delta is cut): 4.0 covers a round's LoRA deltas with room, at a
    step of 1.9e-6 with the default 2**22 levels."""

    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.5
    clipping_range: float = 4.0
    quantization_range: int = 2**22
    max_weight: float | None = None

    def tolerance(self, weights: list[float], max_abs_delta: float) -> float:
        """Bound on |SecAgg+ mean - exact weighted mean| for clients with
        these example counts and deltas up to max_abs_delta: each client's
        stochastic rounding errs by less than a step, and each weight is
        rounded to 1 / quantization_range; the sums are divided by the
        summed weights."""
        max_weight = self.max_weight or 1000.0
        q = self.quantization_range
        total = sum(weights) / max_weight
        rounding = len(weights) * (2 * self.clipping_range / q) / total
        weighting = len(weights) * (0.5 / q) * 2 * max_abs_delta / total
        return rounding + weighting


def global_evaluator(model_bytes: bytes, layout: AdapterLayout, x: np.ndarray, y: np.ndarray):
    """adapter -> (metric name, value) on held-out data, in a TrainableModel."""
    from tflm_train.fitting import evaluate, task_of
    from tflm_train.trainer import TrainableModel

    model = TrainableModel(model_bytes)
    task = task_of(model)

    def evaluate_adapter(adapter: dict[str, np.ndarray]) -> tuple[str, float]:
        model.reset()
        model.load_state(layout.with_adapter(model.save_state(), adapter))
        return task.metric, evaluate(model, x, y, task)

    return evaluate_adapter


class _RoundClock:
    """Shared bookkeeping of both server paths: per-round rows in RoundLog."""

    def __init__(self, layout: AdapterLayout, round_log: RoundLog, evaluate_adapter):
        self.layout, self.log, self.evaluate_adapter = layout, round_log, evaluate_adapter
        self.started = time.monotonic()
        self.pending: dict = {}

    def evaluate(self, server_round: int, adapter: dict[str, np.ndarray]) -> dict:
        row = {"round": server_round, **self.pending}
        self.pending = {}
        if self.evaluate_adapter is not None:
            metric, value = self.evaluate_adapter(adapter)
            row[metric] = value
        row["seconds"] = round(time.monotonic() - self.started, 3)
        self.log.final_adapter = {k: np.asarray(v, np.float32) for k, v in adapter.items()}
        self.log.add(row)
        return row


def _sampling_key(seed: int, server_round: int) -> str:
    return f"tflm-train-sampling:{seed}:{server_round}"


def seeded_sample(seed: int, server_round: int, node_ids, count: int) -> list[int]:
    """The `count` nodes a round samples with `sampling_seed=seed`: a draw
    over the sorted node ids. Flower's message-API strategies sample with
    `random.sample(grid.get_node_ids(), count)`; DeltaStrategy seeds the
    random module with the same key and hands them the sorted ids, so they
    draw exactly these nodes, and the SecAgg+ path calls this directly."""
    return random.Random(_sampling_key(seed, server_round)).sample(sorted(node_ids), count)


class _SortedNodes:
    """A grid whose get_node_ids() is sorted (everything else: the grid's)."""

    def __init__(self, grid):
        self._grid = grid

    def get_node_ids(self):
        return sorted(self._grid.get_node_ids())

    def __getattr__(self, name):
        return getattr(self._grid, name)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _delta_strategy_class():
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import Strategy

    class DeltaStrategy(Strategy):
        """Wraps a Flower message-API strategy so that it aggregates deltas.

        Replies are decoded (delta.py), checked against the model, and turned
        into `global + delta` before `inner.aggregate_train` sees them; a
        foreign or malformed delta is refused: logged, counted, left out."""

        def __init__(self, inner: Strategy, layout: AdapterLayout, clock: _RoundClock | None = None,
                     sampling_seed: int | None = None):
            self.inner, self.layout, self.clock = inner, layout, clock
            self.sampling_seed = sampling_seed
            self.current: dict[str, np.ndarray] | None = None
            self.sampled = 0
            self.nodes: list[int] = []

        def summary(self) -> None:
            self.inner.summary()

        def configure_train(self, server_round, arrays, config, grid):
            self.current = {k: a.numpy() for k, a in arrays.items()}
            if self.sampling_seed is not None:
                # Flower's strategies draw from the random module: seed it for
                # this round and show them the sorted ids (seeded_sample).
                random.seed(_sampling_key(self.sampling_seed, server_round))
                grid = _SortedNodes(grid)
            messages = list(self.inner.configure_train(server_round, arrays, config, grid))
            self.sampled = len(messages)
            self.nodes = sorted(int(m.metadata.dst_node_id) for m in messages)
            return messages

        def decode(self, replies) -> tuple[list, dict]:
            """Replies -> replies holding `global + delta` (what strategies expect)."""
            kept, refused, failures, sizes, losses = [], [], 0, [], []
            for msg in replies:
                if msg.has_error():
                    failures += 1
                    kept.append(msg)  # the inner strategy logs and skips it
                    continue
                node = msg.metadata.src_node_id
                try:
                    record = msg.content.array_records[DELTA_RECORD]
                    blob = record[DELTA_RECORD].numpy().tobytes()
                    delta = Delta.from_bytes(blob, self.layout)
                except (ForeignDeltaError, DeltaFormatError) as error:
                    log.warning("node %s: %s", node, error)
                    refused.append(str(error))
                    continue
                except KeyError:
                    log.warning("node %s: reply holds no tflm-train delta: refused", node)
                    refused.append("no delta in the reply")
                    continue
                metrics = MetricRecord(dict(next(iter(msg.content.metric_records.values()))))
                sizes.append(len(blob))
                losses.append(metrics.get("train-loss"))
                full = delta.apply(self.layout, self.current)
                msg.content = RecordDict({
                    "arrays": ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in full.items()}),
                    "metrics": metrics,
                })
                kept.append(msg)
            stats = {"sampled": self.sampled, "replies": len(kept) - failures, "failures": failures + max(
                0, self.sampled - len(kept) - len(refused)), "refused": len(refused),
                "delta_bytes": _mean(sizes), "train_loss": _mean(losses), "nodes": self.nodes}
            if refused:
                stats["refused_reasons"] = sorted(set(refused))
            return kept, stats

        def aggregate_train(self, server_round, replies):
            kept, stats = self.decode(list(replies))
            if self.clock is not None:
                self.clock.pending = stats
            if not any(not m.has_error() for m in kept):
                log.warning("round %s: no client delta to aggregate; the adapter stays", server_round)
                return None, None
            return self.inner.aggregate_train(server_round, kept)

        def configure_evaluate(self, server_round, arrays, config, grid):
            return self.inner.configure_evaluate(server_round, arrays, config, grid)

        def aggregate_evaluate(self, server_round, replies):
            return self.inner.aggregate_evaluate(server_round, replies)

    return DeltaStrategy


def DeltaStrategy(inner, layout: AdapterLayout, clock: _RoundClock | None = None,  # noqa: N802 (a class, built lazily)
                  sampling_seed: int | None = None):
    """Wraps a Flower message-API strategy so that it aggregates deltas."""
    return _delta_strategy_class()(inner, layout, clock, sampling_seed)


def build_strategy(name: str, *, fraction_train: float, min_train_nodes: int, min_available_nodes: int,
                   server_learning_rate: float = 0.01):
    """Flower's FedAvg or FedAdam, sampling `fraction_train` of the clients a
    round (at least `min_train_nodes`), no client-side evaluation."""
    from flwr.serverapp.strategy import FedAdam, FedAvg

    common = dict(fraction_train=fraction_train, fraction_evaluate=0.0, min_train_nodes=min_train_nodes,
                  min_available_nodes=min_available_nodes)
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedadam":
        # eta: the server's step on the averaged delta (Adam's moment scaling
        # makes it a step size in parameter units); tau: Adam's epsilon.
        return FedAdam(**common, eta=server_learning_rate, eta_l=server_learning_rate, tau=1e-4)
    raise ValueError(f"strategy {name!r}: use one of {', '.join(STRATEGIES)} (or pass a Flower Strategy)")


def make_server_app(
    model: bytes | str | Path,
    *,
    rounds: int = 3,
    strategy="fedavg",
    fraction_train: float = 0.1,
    min_train_nodes: int = 2,
    min_available_nodes: int = 2,
    round_timeout: float = 120.0,
    server_learning_rate: float = 0.01,
    learning_rate: float | None = None,
    learning_rate_decay: float | None = None,
    local_epochs: int | None = None,
    evaluate_data: tuple[np.ndarray, np.ndarray] | None = None,
    secagg: SecAggConfig | None = None,
    round_log: RoundLog | None = None,
    sampling_seed: int | None = None,
):
    """A Flower `ServerApp` that trains the model's adapter over a fleet.

    model                the converted .tflite; the global adapter starts as its initial adapter
    rounds               federated rounds
    strategy             "fedavg", "fedadam", or any Flower message-API Strategy
                         object (FedMedian, Krum, DP wrappers ...): it is wrapped in
                         DeltaStrategy; its own sampling settings then apply
    fraction_train, min_train_nodes, min_available_nodes
                         client sampling per round (for the named strategies)
    round_timeout        seconds to wait for replies; late clients are left out
    server_learning_rate FedAdam's eta
    learning_rate, learning_rate_decay, local_epochs
                         sent to the clients in the train config (override theirs;
                         round r trains at learning_rate * decay**(r - 1))
    evaluate_data        (x, y) held out on the server: the global adapter's metric
                         after every round (and before the first: round 0)
    secagg               SecAggConfig: Flower's SecAgg+ workflow with FedAvg
                         (`strategy` must be "fedavg"); clients need secagg=True
    round_log            a RoundLog collecting the rows (its on_round is called
                         after each round: progress displays)
    sampling_seed        seeds which clients each round samples (seeded_sample),
                         the same on the plain and the SecAgg+ path; None: Flower's
                         own unseeded draw
    """
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import ServerApp

    from tflm_train.fleet.client_app import _read_model
    from tflm_train.trainer import TrainableModel

    model_bytes = _read_model(model)
    layout = AdapterLayout.of_model(model_bytes)
    round_log = round_log if round_log is not None else RoundLog()
    train_config = {}
    if learning_rate is not None:
        train_config["learning-rate"] = float(learning_rate)
    if learning_rate_decay is not None:
        train_config["learning-rate-decay"] = float(learning_rate_decay)
    if local_epochs is not None:
        train_config["local-epochs"] = int(local_epochs)
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        initial_model = TrainableModel(model_bytes)
        initial = layout.adapter(initial_model.save_state())
        evaluate_adapter = None
        if evaluate_data is not None:
            evaluate_adapter = global_evaluator(model_bytes, layout, *evaluate_data)
            round_log.metric = evaluate_adapter(initial)[0]
        clock = _RoundClock(layout, round_log, evaluate_adapter)
        if secagg is not None:
            _run_secagg(grid, context, layout, clock, initial, secagg, rounds=rounds, strategy=strategy,
                        fraction_train=fraction_train, min_train_nodes=min_train_nodes,
                        min_available_nodes=min_available_nodes, round_timeout=round_timeout,
                        train_config=train_config, sampling_seed=sampling_seed)
            return
        inner = strategy if not isinstance(strategy, str) else build_strategy(
            strategy, fraction_train=fraction_train, min_train_nodes=min_train_nodes,
            min_available_nodes=min_available_nodes, server_learning_rate=server_learning_rate)
        wrapped = DeltaStrategy(inner, layout, clock, sampling_seed)

        def evaluate_fn(server_round: int, arrays) -> MetricRecord:
            adapter = {k: a.numpy() for k, a in arrays.items()}
            row = clock.evaluate(server_round, adapter)
            return MetricRecord({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None})

        wrapped.start(
            grid,
            ArrayRecord({k: Array(v) for k, v in initial.items()}),
            num_rounds=rounds,
            timeout=round_timeout,
            train_config=ConfigRecord(dict(train_config)),
            evaluate_fn=evaluate_fn,
        )

    return app


def _run_secagg(grid, context, layout, clock, initial, config: SecAggConfig, *, rounds, strategy, fraction_train,
                min_train_nodes, min_available_nodes, round_timeout, train_config, sampling_seed=None) -> None:
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    if strategy != "fedavg":
        raise ValueError("secure aggregation (SecAgg+) runs with FedAvg: use strategy='fedavg'")
    legacy_strategy = _secure_fedavg_class()(
        layout, clock, initial, train_config, sampling_seed,
        fraction_fit=fraction_train, fraction_evaluate=0.0, min_fit_clients=min_train_nodes,
        min_evaluate_clients=0, min_available_clients=min_available_nodes,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds, round_timeout=round_timeout),
                           strategy=legacy_strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=config.num_shares, reconstruction_threshold=config.reconstruction_threshold,
        max_weight=config.max_weight or 1000.0, clipping_range=config.clipping_range,
        quantization_range=config.quantization_range, timeout=round_timeout,
    ))
    workflow(grid, legacy)


def _secure_fedavg_class():
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    class SecureDeltaFedAvg(LegacyFedAvg):
        """FedAvg over SecAgg+: it receives only the unmasked aggregate of the
        clients' deltas (the workflow puts that same aggregate in every
        result) and adds it to the global adapter. It reads the hashes the
        clients report in their metrics, never an individual update."""

        def __init__(self, layout, clock, initial, train_config, sampling_seed=None, **kwargs):
            super().__init__(**kwargs)
            self.layout, self.clock, self.train_config = layout, clock, train_config
            self.sampling_seed = sampling_seed
            self.current = {k: np.asarray(v, np.float32) for k, v in initial.items()}
            self.nodes: list[int] = []

        def initialize_parameters(self, client_manager):
            return ndarrays_to_parameters([self.current[n] for n in self.layout.names])

        def configure_fit(self, server_round, parameters, client_manager):
            if self.sampling_seed is None:
                pairs = super().configure_fit(server_round, parameters, client_manager)
            else:
                pairs = self._seeded_pairs(server_round, parameters, client_manager)
            for _, fit_ins in pairs:
                fit_ins.config = {**fit_ins.config, **self.train_config, "server-round": server_round}
            self.sampled = len(pairs)
            self.nodes = sorted(int(proxy.node_id) for proxy, _ in pairs)
            return pairs

        def _seeded_pairs(self, server_round, parameters, client_manager):
            """The nodes the message-API path samples in this round (same count rule)."""
            from flwr.common import FitIns

            count, at_least = self.num_fit_clients(client_manager.num_available())
            client_manager.wait_for(at_least)
            proxies = {int(proxy.node_id): proxy for proxy in client_manager.all().values()}
            chosen = seeded_sample(self.sampling_seed, server_round, proxies, count)
            config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn is not None else {}
            return [(proxies[node], FitIns(parameters, dict(config))) for node in chosen]

        def aggregate_fit(self, server_round, results, failures):
            expected = (f"{self.layout.base_model_hash:016x}", f"{self.layout.layout_hash:08x}")
            foreign = [(res.metrics.get("base-model-hash"), res.metrics.get("layout-hash")) for _, res in results
                       if (res.metrics.get("base-model-hash"), res.metrics.get("layout-hash")) != expected]
            stats = {"sampled": getattr(self, "sampled", len(results)), "replies": len(results),
                     "failures": len(failures), "refused": len(foreign),
                     "delta_bytes": _mean(res.metrics.get("delta-bytes") for _, res in results),
                     "train_loss": _mean(res.metrics.get("train-loss") for _, res in results),
                     "nodes": self.nodes}
            self.clock.pending = stats
            if foreign:
                # The masked sum cannot be taken apart: refuse the round.
                log.warning("round %s: %d client(s) sent deltas for another model or conversion (%s; this fleet's "
                            "base model %s, layout %s): the round's aggregate is refused", server_round, len(foreign),
                            foreign[0], *expected)
                return None, {}
            if not results:
                return None, {}
            # SecAggPlusWorkflow has put the unmasked weighted mean of the
            # deltas into every result: there is nothing else to read.
            mean_delta = parameters_to_ndarrays(results[0][1].parameters)
            self.current = {slot.name: self.current[slot.name] + np.asarray(d, np.float32).reshape(slot.shape)
                            for slot, d in zip(self.layout.slots, mean_delta)}
            return ndarrays_to_parameters([self.current[n] for n in self.layout.names]), {}

        def evaluate(self, server_round, parameters):
            arrays = parameters_to_ndarrays(parameters)
            adapter = {slot.name: np.asarray(a, np.float32).reshape(slot.shape)
                       for slot, a in zip(self.layout.slots, arrays)}
            row = self.clock.evaluate(server_round, adapter)
            return None if self.clock.evaluate_adapter is None else (0.0, {
                k: v for k, v in row.items() if isinstance(v, (int, float))})

        def configure_evaluate(self, server_round, parameters, client_manager):
            return []

    return SecureDeltaFedAvg


__all__ = ["DeltaStrategy", "RoundLog", "STRATEGIES", "SecAggConfig", "build_strategy", "global_evaluator",
           "make_server_app"]
