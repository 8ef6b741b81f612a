"""A poisoning harness: a chosen fraction of the fleet's clients send
poisoned updates, to measure what robust aggregation buys.

Attacks (the honest training runs first, in the TFLM interpreter, as on every
device; the attack changes what leaves the device or what it trains on):

  sign-flip    the client sends -factor x its honest delta (factor 1: the
               plain sign flip; larger: a boosted one that pulls the average
               backwards)
  scale        the client sends factor x its honest delta (an over-weighted
               update that drags the average towards its own adapter)
  label-flip   the client's local labels are remapped c -> classes - 1 - c
               before training (data poisoning: its delta is an honest update
               on wrong labels)

The delta attacks are a Flower client mod (`attack_mod`): pass it in
`make_client_app(..., mods=[...])`, where it sees the reply as the full
adapter, inside the delta encoding, so the poisoned delta is encoded and
sent like an honest one. Label flipping wraps the client's data loader
(`label_flipping_loader`). Which clients are malicious is fixed for the whole
run (`choose_malicious`): an attacker owns devices, not rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

ATTACKS = ("sign-flip", "scale", "label-flip")
DELTA_ATTACKS = ("sign-flip", "scale")


def choose_malicious(num_clients: int, fraction: float, seed: int = 0) -> frozenset[int]:
    """round(fraction * num_clients) partition ids, drawn once (seeded)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"malicious fraction {fraction}: use a value in [0, 1]")
    count = int(round(fraction * num_clients))
    rng = np.random.default_rng(seed)
    return frozenset(int(i) for i in rng.choice(num_clients, size=count, replace=False))


def poison_delta(delta: np.ndarray, kind: str, factor: float) -> np.ndarray:
    """The update a malicious client sends instead of its honest `delta`."""
    if kind == "sign-flip":
        return -float(factor) * np.asarray(delta, np.float32)
    if kind == "scale":
        return float(factor) * np.asarray(delta, np.float32)
    raise ValueError(f"delta attack {kind!r}: use one of {', '.join(DELTA_ATTACKS)}")


def flip_labels(y: np.ndarray, classes: int) -> np.ndarray:
    """c -> classes - 1 - c: every label wrong, the class balance kept."""
    y = np.asarray(y)
    return (classes - 1 - y).astype(y.dtype)


def label_flipping_loader(load_partition: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
                          malicious: Iterable[int], classes: int):
    """Wraps a ClientApp's data loader: malicious clients get flipped labels."""
    malicious = frozenset(malicious)

    def load(partition_id: int, num_partitions: int):
        x, y = load_partition(partition_id, num_partitions)
        return (x, flip_labels(y, classes)) if partition_id in malicious else (x, y)

    return load


def attack_mod(malicious: Iterable[int], kind: str, factor: float = 1.0):
    """A Flower client mod: on a malicious node (by its "partition-id"), the
    train reply's adapter `end` becomes `start + poison(end - start)`, where
    `start` is the adapter the round sent. Honest nodes pass through."""
    from flwr.app import Array, ArrayRecord, MessageType

    if kind not in DELTA_ATTACKS:
        raise ValueError(f"delta attack {kind!r}: use one of {', '.join(DELTA_ATTACKS)}")
    malicious = frozenset(malicious)

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if (msg.metadata.message_type != MessageType.TRAIN or reply.has_error()
                or int(context.node_config.get("partition-id", -1)) not in malicious):
            return reply
        start = next(iter(msg.content.array_records.values()))
        key, end = next(iter(reply.content.array_records.items()))
        poisoned = {}
        for name in end:
            honest = end[name].numpy().astype(np.float32) - start[name].numpy().astype(np.float32)
            poisoned[name] = Array(start[name].numpy().astype(np.float32) + poison_delta(honest, kind, factor))
        reply.content.array_records[key] = ArrayRecord(poisoned)
        return reply

    return mod


__all__ = ["ATTACKS", "DELTA_ATTACKS", "attack_mod", "choose_malicious", "flip_labels", "label_flipping_loader",
           "poison_delta"]
