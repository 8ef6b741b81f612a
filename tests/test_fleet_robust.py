"""Poisoning at small scale (tflm_train/fleet/attacks.py): a third of a
10-client fleet sends boosted sign-flipped deltas; plain FedAvg loses the
adapter's gain, Flower's FedMedian and Krum keep it. Every client trains the
digits example's LoRA adapter in the TFLM interpreter, on the in-process
Flower grid (the same ServerApp / ClientApp as a deployment)."""

from __future__ import annotations

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, convert

pytestmark = pytest.mark.federated

CLIENTS = 10
ROUNDS = 3


@pytest.fixture(scope="module")
def fleet(digits):
    """The new writer's digits: 400 spread over 10 clients, 133 held out."""
    model = convert(digits.int8_model, ConvertConfig(method="lora", r=4, targets="last:3")).model
    x, y = digits.user_test.x, digits.user_test.y
    order = np.random.default_rng(0).permutation(len(x))
    train, held_out = order[:400], order[400:]
    parts = np.array_split(train, CLIENTS)
    return model, (x, y), parts, (x[held_out], y[held_out])


def _run(fleet, strategy, mods=(), loader=None) -> float:
    from tflm_train.fleet.client_app import make_client_app
    from tflm_train.fleet.local_grid import run_local
    from tflm_train.fleet.server_app import RoundLog, make_server_app

    model, (x, y), parts, held_out = fleet

    def load(pid, count):
        return x[parts[pid]], y[parts[pid]]

    log = RoundLog()
    client = make_client_app(model, loader or load, learning_rate=0.02, local_epochs=2, mods=list(mods))
    server = make_server_app(model, rounds=ROUNDS, strategy=strategy, evaluate_data=held_out, round_log=log)
    run_local(server, client, CLIENTS)
    return log.rows[0]["accuracy"], log.rows[-1]["accuracy"]


def _all(name):
    """Flower's strategy `name`, every client every round (deterministic)."""
    import flwr.serverapp.strategy as s

    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=CLIENTS, min_available_nodes=CLIENTS)
    extra = {"Krum": {"num_malicious_nodes": 3}, "FedTrimmedAvg": {"beta": 0.3}}.get(name, {})
    return getattr(s, name)(**common, **extra)


def test_robust_strategies_hold_against_sign_flipping(fleet):
    from tflm_train.fleet.attacks import attack_mod, choose_malicious

    malicious = choose_malicious(CLIENTS, 0.3, seed=1)
    assert len(malicious) == 3
    attack = [attack_mod(malicious, "sign-flip", 4.0)]
    base, clean = _run(fleet, _all("FedAvg"))
    assert clean > base + 0.08, f"the clean fleet learns nothing ({base:.3f} -> {clean:.3f})"
    _, poisoned = _run(fleet, _all("FedAvg"), attack)
    # FedAvg follows the boosted flips: most of the gain is lost.
    assert poisoned < base + 0.5 * (clean - base), (base, clean, poisoned)
    for name in ("FedMedian", "Krum"):
        _, robust = _run(fleet, _all(name), attack)
        # A robust rule keeps a good part of the gain (a median or one
        # chosen client's update learns slower than the mean of ten).
        assert robust > base + 0.4 * (clean - base) and robust > poisoned + 0.05, (name, base, clean, poisoned, robust)


def test_label_flipping_clients_train_on_wrong_labels(fleet):
    from tflm_train.fleet.attacks import flip_labels, label_flipping_loader

    _, (x, y), parts, _ = fleet

    def load(pid, count):
        return x[parts[pid]], y[parts[pid]]

    loader = label_flipping_loader(load, {2, 5}, classes=10)
    for pid in range(CLIENTS):
        _, got = loader(pid, CLIENTS)
        want = flip_labels(y[parts[pid]], 10) if pid in (2, 5) else y[parts[pid]]
        np.testing.assert_array_equal(got, want)
    assert (flip_labels(np.arange(10), 10) == np.arange(9, -1, -1)).all()


def test_attack_mod_poisons_only_malicious_clients():
    """The mod rewrites the reply's adapter as start + poison(end - start),
    on the malicious node only."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

    from tflm_train.fleet.attacks import attack_mod, poison_delta
    from tflm_train.fleet.local_grid import run_local  # noqa: F401  (sets up Flower's task identity below)
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    start = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([[0.5]], np.float32)}
    end = {"a": np.array([1.5, 1.0], np.float32), "b": np.array([[0.25]], np.float32)}

    def app(msg, context):
        return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in end.items()}),
                                   "metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    mod = attack_mod({1}, "scale", 3.0)
    for pid in (0, 1):
        msg = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in start.items()}),
                                  "config": ConfigRecord({})}), dst_node_id=5, message_type=MessageType.TRAIN)
        context = Context(run_id=1, node_id=5, node_config={"partition-id": pid}, state=RecordDict(), run_config={})
        reply = mod(msg, context, app)
        got = {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}
        for k in start:
            want = end[k] if pid == 0 else start[k] + poison_delta(end[k] - start[k], "scale", 3.0)
            np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="delta attack"):
        attack_mod({1}, "label-flip")
