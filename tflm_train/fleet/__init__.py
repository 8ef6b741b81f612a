"""Fleets of devices: the MLflow fleet view and federated adapter training.

Modules (each imports its optional dependency only when used, so that
`import tflm_train.fleet` needs neither Flower nor MLflow):

  registry     which device runs which adapter, rollback (MLflow: the `fleet` extra)
  cli          `tflm-train fleet log|list|rollback|simulate`
  delta        the adapter delta a device sends: AdapterLayout, Delta, ForeignDeltaError
  client_app   the Flower ClientApp: local training in the TFLM interpreter (`federated` extra)
  server_app   the Flower ServerApp: FedAvg / FedAdam / any Flower strategy over deltas, SecAgg+
  partition    splitting a data set over simulated clients (flwr-datasets partitioners)
  local_grid   a one-process Flower Grid: the same ServerApp and ClientApp without Ray
  simulate     one federated run in Flower's simulation engine (or the local grid), metrics
  privacy      client-level DP: Flower's clipping mod + DP wrapper, epsilon from dp-accounting
  attacks      poisoning harness: sign-flipped / scaled deltas, label flipping
  datasets     Fashion-MNIST from Debian's IDX files, Dirichlet split (benchmarks/federated.py)

docs/federated.md describes the delta format and the API.
"""

from __future__ import annotations

import importlib

# name -> module that defines it, imported on first use (PEP 562).
_LAZY = {
    "AdapterIdentity": "registry",
    "Fleet": "registry",
    "default_fleet_dir": "registry",
    "AdapterLayout": "delta",
    "Delta": "delta",
    "ForeignDeltaError": "delta",
    "make_client_app": "client_app",
    "make_server_app": "server_app",
    "RoundLog": "server_app",
    "LocalGrid": "local_grid",
    "simulate": "simulate",
    "partition_indices": "partition",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tflm_train.fleet' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tflm_train.fleet.{module}"), name)


__all__ = sorted(_LAZY)
