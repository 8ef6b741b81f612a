"""The fleet's ServerApp and ClientApp as a Flower App for the deployment
runtime (SuperLink + SuperNodes): module-level `server` and `client`,
configured at run time from the run config (`[tool.flwr.app.config]` in the
App's pyproject.toml, or `flwr run --run-config`):

  model            path of the converted .tflite (on every machine)
  data             path of a training .npz shared by all SuperNodes; each trains
                   on its share: partition `partition-id` of `num-partitions`
                   (its --node-config) under the spec `partition` (partition.py).
                   A SuperNode whose --node-config has `data=PATH` trains on
                   that file instead: the device's own data.
  test             optional held-out .npz for the server's global metric
  metrics          optional path: the server writes the RoundLog JSON there
  rounds, strategy, fraction-train, min-nodes, round-timeout,
  learning-rate, learning-rate-decay, local-epochs, encoding, top-k (0: dense), server-learning-rate,
  seed (the data split, the clients' data order and, when given, the server's client sampling)

A Flower App directory needs only a pyproject.toml naming
`serverapp = "<module>:server"` and `clientapp = "<module>:client"` and a module
doing `from tflm_train.fleet.app import client, server`; see
tests/test_fleet_deployment.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

_CLIENTS: dict[tuple, ClientApp] = {}


def _setting(config, key: str, default):
    value = config.get(key, default)
    return type(default)(value) if default is not None else value


def _client_for(context) -> ClientApp:
    """The ClientApp for this run's configuration (built once per process)."""
    from tflm_train.data import load_npz
    from tflm_train.fleet.client_app import make_client_app
    from tflm_train.fleet.partition import partition_indices

    config = context.run_config
    own_data = context.node_config.get("data")
    key = tuple(sorted((k, str(v)) for k, v in config.items())) + (own_data,)
    if key not in _CLIENTS:
        data = load_npz(str(own_data or config["data"]))
        spec = str(config.get("partition", "iid"))
        shares: dict[int, list] = {}

        def load_partition(partition_id: int, num_partitions: int):
            if own_data:
                return data.x, data.y
            if num_partitions not in shares:
                shares[num_partitions] = partition_indices(data.y, num_partitions, spec,
                                                           seed=_setting(config, "seed", 0))
            share = shares[num_partitions][partition_id]
            return data.x[share], data.y[share]

        top_k = _setting(config, "top-k", 0.0)
        _CLIENTS[key] = make_client_app(
            str(config["model"]), load_partition,
            learning_rate=_setting(config, "learning-rate", 0.02),
            learning_rate_decay=_setting(config, "learning-rate-decay", 1.0),
            local_epochs=_setting(config, "local-epochs", 1),
            encoding=_setting(config, "encoding", "float32"),
            top_k=top_k or None,
            seed=_setting(config, "seed", 0),
        )
    return _CLIENTS[key]


client = ClientApp()


@client.train()
def _train(msg, context):
    return _client_for(context)(msg, context)


@client.evaluate()
def _evaluate(msg, context):
    return _client_for(context)(msg, context)


server = ServerApp()


@server.main()
def _main(grid, context) -> None:
    from tflm_train.data import load_npz
    from tflm_train.fleet.server_app import RoundLog, make_server_app

    config = context.run_config
    test = None
    if config.get("test"):
        held_out = load_npz(str(config["test"]))
        test = (np.asarray(held_out.x), np.asarray(held_out.y))
    round_log = RoundLog()
    app = make_server_app(
        str(config["model"]),
        rounds=_setting(config, "rounds", 3),
        strategy=_setting(config, "strategy", "fedavg"),
        fraction_train=_setting(config, "fraction-train", 1.0),
        min_train_nodes=_setting(config, "min-nodes", 2),
        min_available_nodes=_setting(config, "min-nodes", 2),
        round_timeout=_setting(config, "round-timeout", 120.0),
        server_learning_rate=_setting(config, "server-learning-rate", 0.01),
        evaluate_data=test,
        round_log=round_log,
        sampling_seed=int(config["seed"]) if "seed" in config else None,
    )
    app(grid, context)
    if config.get("metrics"):
        Path(str(config["metrics"])).write_text(json.dumps(round_log.to_json(), indent=2))


__all__ = ["client", "server"]
