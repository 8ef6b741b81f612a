"""Splitting an in-memory data set over simulated clients with flwr-datasets'
partitioners (no downloads: the labels become a `datasets.Dataset` in memory).

Specs (`--partition`):
  iid              IidPartitioner: equal random shares
  dirichlet:ALPHA  DirichletPartitioner by label (smaller ALPHA: more skewed
                   label mixes per client; 0.3 is strongly non-IID)
  shard:K          ShardPartitioner: K label-sorted shards per client
  natural          NaturalIdPartitioner by a per-sample id (e.g. the user who
                   made the sample): pass `ids`
"""

from __future__ import annotations

import numpy as np

from tflm_train.errors import UserError

PARTITION_HELP = "iid, dirichlet:ALPHA (by label), shard:K (label shards per client) or natural (per-sample ids)"


def _partitioner(spec: str, clients: int, seed: int):
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner, ShardPartitioner

    kind, _, argument = spec.partition(":")
    try:
        if kind == "iid" and not argument:
            return IidPartitioner(num_partitions=clients)
        if kind == "dirichlet":
            alpha = float(argument)
            if not alpha > 0:
                raise ValueError
            return DirichletPartitioner(num_partitions=clients, partition_by="label", alpha=alpha,
                                        min_partition_size=1, self_balancing=True, seed=seed)
        if kind == "shard":
            return ShardPartitioner(num_partitions=clients, partition_by="label",
                                    num_shards_per_partition=int(argument), shuffle=True, seed=seed)
        if kind == "natural" and not argument:
            return NaturalIdPartitioner(partition_by="id")
    except ValueError:
        pass
    raise UserError(f"--partition {spec!r}: use {PARTITION_HELP}")


def partition_indices(labels: np.ndarray, clients: int, spec: str = "iid", *, seed: int = 0,
                      ids: np.ndarray | None = None) -> list[np.ndarray]:
    """Sample indices of each client's share (a list of `clients` arrays;
    for "natural", one array per distinct id and `clients` is ignored)."""
    from datasets import Dataset

    labels = np.asarray(labels)
    if clients < 1 and spec != "natural":
        raise UserError("--clients must be at least 1")
    if spec.startswith(("dirichlet", "shard")) and labels.dtype.kind not in "iu":
        raise UserError(f"--partition {spec}: needs class labels (integers); regression data: use iid")
    if spec == "natural" and ids is None:
        raise UserError("--partition natural needs per-sample ids")
    if spec != "natural" and len(labels) < clients:
        raise UserError(f"{len(labels)} samples cannot be split over {clients} clients")
    columns = {"label": labels.tolist(), "index": np.arange(len(labels)).tolist()}
    if ids is not None:
        columns["id"] = [str(i) for i in np.asarray(ids)]
    dataset = Dataset.from_dict(columns)
    partitioner = _partitioner(spec, clients, seed)
    partitioner.dataset = dataset
    return [np.asarray(partitioner.load_partition(i)["index"], np.int64) for i in range(partitioner.num_partitions)]


__all__ = ["PARTITION_HELP", "partition_indices"]
