"""One federated run over simulated clients (`tflm-train fleet simulate`).

The data set is split over `clients` with flwr-datasets' partitioners
(partition.py); each client's ClientApp trains the converted model in the
TFLM interpreter; the ServerApp aggregates their deltas with the chosen
strategy. Engines:

  flower  Flower's simulation engine (`flwr.simulation.run_simulation`, Ray
          actors). Kept small for a laptop / CI machine: `cpus` CPUs for Ray
          (default 1), one CPU per ClientApp actor, so clients train one
          after another in `cpus` actor processes.
  local   the same apps on local_grid.LocalGrid in this process (no Ray).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np

from tflm_train.fleet.server_app import RoundLog, SecAggConfig

ENGINES = ("flower", "local")


@contextlib.contextmanager
def quiet_flower(enabled: bool = True):
    """Flower and Ray log every message at INFO; a progress display replaces them."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("flwr", "ray", "tflm_train.fleet")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def simulate(
    model_bytes: bytes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    clients: int = 100,
    rounds: int = 10,
    partition: str = "dirichlet:0.3",
    ids: np.ndarray | None = None,
    fraction: float = 0.1,
    min_clients: int = 2,
    strategy="fedavg",
    encoding: str = "float32",
    top_k: float | None = None,
    learning_rate: float = 0.02,
    learning_rate_decay: float = 1.0,
    local_epochs: int = 1,
    server_learning_rate: float = 0.01,
    dropout: float = 0.0,
    secagg: SecAggConfig | None = None,
    seed: int = 0,
    engine: str = "flower",
    cpus: int = 1,
    round_timeout: float = 120.0,
    client_mods=(),
    partition_hook: Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    on_round: Callable[[dict], None] | None = None,
    quiet: bool = True,
) -> RoundLog:
    """Runs `rounds` of federated adapter training; returns the RoundLog
    (round 0: the starting adapter's held-out metric when `test` is given).

    `strategy` is "fedavg", "fedadam" or a Flower message-API Strategy
    (FedMedian, Krum, DP wrappers ...); `client_mods` are Flower client mods
    that see the full adapter (fixedclipping_mod, an attack harness);
    `partition_hook(partition_id, x, y) -> (x, y)` changes a client's data
    (e.g. flipped labels for chosen clients). The client sampling
    is seeded by `seed` (server_app.seeded_sample over the sorted node ids);
    with engine "local" the node ids are fixed, so runs sample the same
    clients round by round; Flower's engine gives its nodes random ids, so
    which clients a round samples differs between its runs."""
    from tflm_train.fleet.client_app import make_client_app
    from tflm_train.fleet.partition import partition_indices
    from tflm_train.fleet.server_app import make_server_app

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    x, y = np.asarray(x), np.asarray(y)
    with quiet_flower(quiet):
        shares = partition_indices(y, clients, partition, seed=seed, ids=ids)
    clients = len(shares)
    data = [(x[share], y[share]) for share in shares]
    if secagg is not None and secagg.max_weight is None:  # see SecAggConfig: precision of small clients
        secagg = dataclasses.replace(secagg, max_weight=float(max(len(share) for share in shares)))

    def load_partition(partition_id: int, num_partitions: int):
        x_part, y_part = data[partition_id]
        return partition_hook(partition_id, x_part, y_part) if partition_hook else (x_part, y_part)

    round_log = RoundLog(on_round=on_round, config={
        "clients": clients, "rounds": rounds, "partition": partition, "fraction": fraction,
        "strategy": strategy if isinstance(strategy, str) else type(strategy).__name__, "encoding": encoding,
        "top_k": top_k, "learning_rate": learning_rate,
        "learning_rate_decay": learning_rate_decay, "local_epochs": local_epochs, "dropout": dropout,
        "secagg": secagg is not None, "engine": engine, "seed": seed,
        "samples_per_client": [int(len(s)) for s in shares],
    })
    client = make_client_app(model_bytes, load_partition, learning_rate=learning_rate,
                             learning_rate_decay=learning_rate_decay, local_epochs=local_epochs,
                             encoding=encoding, top_k=top_k, dropout=dropout, seed=seed,
                             secagg=secagg is not None, mods=client_mods)
    server = make_server_app(model_bytes, rounds=rounds, strategy=strategy, fraction_train=fraction,
                             min_train_nodes=min(min_clients, clients), min_available_nodes=min(min_clients, clients),
                             round_timeout=round_timeout, server_learning_rate=server_learning_rate,
                             evaluate_data=test, secagg=secagg, round_log=round_log, sampling_seed=seed)
    with quiet_flower(quiet):
        if engine == "local":
            from tflm_train.fleet.local_grid import run_local

            run_local(server, client, clients)
        else:
            _run_flower_simulation(server, client, clients, cpus, quiet)
    return round_log


def block_tensorflow() -> None:
    """Flower's simulation package imports TensorFlow when it is installed
    (for a GPU memory setting); it costs seconds per process and nothing here
    uses it. Run in every Ray worker at start-up (worker_process_setup_hook)."""
    sys.modules.setdefault("tensorflow", None)  # `import tensorflow` now fails fast


@contextlib.contextmanager
def _flower_simulation_without_tensorflow():
    blocked = "tensorflow" not in sys.modules
    if blocked:
        sys.modules["tensorflow"] = None
    try:
        from flwr.simulation import run_simulation

        yield run_simulation
    finally:
        if blocked and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]  # other code in this process may still want it


def _run_flower_simulation(server, client, clients: int, cpus: int, quiet: bool) -> None:
    import ray

    # Ray on a small machine: `cpus` CPUs (one per ClientApp actor), no
    # dashboard, and no TensorFlow import in its workers. Started here because
    # Flower's backend passes its own runtime_env; it uses a running Ray as is.
    started = not ray.is_initialized()
    if started:
        pythonpath = os.pathsep.join(p for p in sys.path if p)
        ray.init(num_cpus=cpus, num_gpus=0, include_dashboard=False, log_to_driver=not quiet,
                 logging_level=logging.ERROR if quiet else logging.INFO,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath},
                              "worker_process_setup_hook": "tflm_train.fleet.simulate.block_tensorflow"})
    try:
        with _flower_simulation_without_tensorflow() as run_simulation:
            run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                           verbose_logging=not quiet)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


__all__ = ["ENGINES", "quiet_flower", "simulate"]
