"""Federated rounds with the fleet's Flower ServerApp and ClientApp
(tflm_train/fleet/): FedAvg aggregates exactly the weighted mean of the
clients' local training in the TFLM interpreter; only deltas reach the
server; failing, late and foreign clients do not stop a round; FedAdam
runs; SecAgg+ gives the FedAvg aggregate within its quantization while the
server only ever receives masked vectors; `tflm-train fleet simulate` runs
Flower's simulation engine and writes the metrics.

The rounds run on local_grid.LocalGrid (Flower's Grid interface, the
ClientApps called in this process) except the `fleet simulate` test, which
starts Flower's simulation engine (Ray)."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest

from tflm_train.cli import main
from tflm_train.converter import ConvertConfig, convert
from tflm_train.fleet.client_app import (DELTA_RECORD, client_seed, make_client_app, round_learning_rate,
                                         train_locally)
from tflm_train.fleet.delta import AdapterLayout, Delta
from tflm_train.fleet.local_grid import run_local
from tflm_train.fleet.server_app import RoundLog, SecAggConfig, make_server_app, seeded_sample
from tflm_train.trainer import TrainableModel

pytestmark = pytest.mark.federated

LR = 0.05


@pytest.fixture(scope="module")
def fleet(digits, tmp_path_factory):
    """A converted digits model and 4 clients' data (uneven sizes)."""
    model = convert(digits.int8_model, ConvertConfig()).model
    x, y = digits.user_train.x, digits.user_train.y
    cuts = [0, 10, 24, 40, 64]
    shares = [(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]
    return model, shares, (digits.user_test.x[:150], digits.user_test.y[:150])


def _load(shares):
    return lambda partition_id, num_partitions: shares[partition_id]


def _expected_fedavg(model, shares, start: dict, server_round: int = 1, seed: int = 0) -> dict:
    """The weighted mean of each client's adapter after local training, computed
    here without Flower: train_locally is the client's device step."""
    layout = AdapterLayout.of_model(model)
    total = sum(len(x) for x, _ in shares)
    mean = {name: np.zeros_like(value) for name, value in start.items()}
    for pid, (x, y) in enumerate(shares):
        state, _ = train_locally(model, None, start, x, y, learning_rate=LR, local_epochs=1,
                                 seed=client_seed(seed, server_round, pid))
        for name, value in layout.adapter(state).items():
            mean[name] += value * (len(x) / total)
    return mean


def _initial_adapter(model) -> dict:
    return AdapterLayout.of_model(model).adapter(TrainableModel(model).save_state())


def test_fedavg_round_is_the_weighted_mean_of_device_training_and_only_deltas_travel(fleet):
    model, shares, test = fleet
    layout = AdapterLayout.of_model(model)
    received = []
    round_log = RoundLog()
    server = make_server_app(model, rounds=1, fraction_train=1.0, evaluate_data=test, round_log=round_log,
                             learning_rate=LR)
    run_local(server, make_client_app(model, _load(shares)), 4,
              on_message=lambda reply: received.append(copy.deepcopy(reply.content)))

    expected = _expected_fedavg(model, shares, _initial_adapter(model))
    for name in layout.names:
        np.testing.assert_allclose(round_log.final_adapter[name], expected[name], rtol=0, atol=2e-7)
    # What reached the server: per client one delta record (its bytes) and metrics, nothing else.
    assert len(received) == 4
    for content in received:
        assert list(content.array_records) == [DELTA_RECORD]
        arrays = content.array_records[DELTA_RECORD]
        assert list(arrays) == [DELTA_RECORD] and arrays[DELTA_RECORD].numpy().dtype == np.uint8
        assert len(arrays[DELTA_RECORD].numpy()) == 32 + 4 * len(layout.slots) + 4 * layout.param_count
        assert set(content.metric_records["metrics"]) == {"num-examples", "train-loss", "delta-bytes"}
    start, after = round_log.rows
    assert (after["sampled"], after["replies"], after["failures"], after["refused"]) == (4, 4, 0, 0)
    assert after["accuracy"] != start["accuracy"]


def test_failing_late_and_foreign_clients_do_not_stop_the_round(fleet):
    model, shares, _ = fleet
    inner = make_client_app(model, _load(shares), encoding="int8")
    # Load the interpreter before the timed rounds (the first client would pay it).
    train_locally(model, None, _initial_adapter(model), *shares[3], learning_rate=LR, local_epochs=1, seed=0)

    def flaky(msg, context):
        pid = context.node_config["partition-id"]
        if pid == 0:
            raise RuntimeError("device lost power")
        if pid == 1:
            time.sleep(2.2)  # misses the 2 s round timeout
        reply = inner(msg, context)
        if pid == 2 and reply.has_content() and DELTA_RECORD in reply.content.array_records:
            # A device running another base model: its delta names that model's hash.
            record = reply.content.array_records[DELTA_RECORD]
            blob = bytearray(record[DELTA_RECORD].numpy().tobytes())
            blob[8:16] = (0x1234567890ABCDEF).to_bytes(8, "little")
            from flwr.app import Array

            record[DELTA_RECORD] = Array(np.frombuffer(bytes(blob), np.uint8).copy())
        return reply

    round_log = RoundLog()
    server = make_server_app(model, rounds=2, fraction_train=1.0, round_timeout=2.0, round_log=round_log,
                             learning_rate=LR)
    run_local(server, flaky, 4)
    for row in round_log.rows[1:]:
        assert (row["sampled"], row["replies"], row["failures"], row["refused"]) == (4, 1, 2, 1), row
        assert "another base model (its hash 1234567890abcdef" in row["refused_reasons"][0]
    # The one good client's delta (int8) moved the adapter.
    start = _initial_adapter(model)
    moved = max(float(np.abs(round_log.final_adapter[n] - start[n]).max()) for n in start)
    assert moved > 1e-3


def test_simulated_dropout_and_fedadam(fleet):
    model, shares, test = fleet
    round_log = RoundLog()
    server = make_server_app(model, rounds=3, strategy="fedadam", fraction_train=1.0, server_learning_rate=0.01,
                             evaluate_data=test, round_log=round_log, learning_rate=LR)
    run_local(server, make_client_app(model, _load(shares), dropout=0.3, seed=3), 4)
    rows = round_log.rows[1:]
    assert len(rows) == 3 and sum(r["failures"] for r in rows) > 0
    assert all(r["replies"] + r["failures"] == 4 for r in rows)
    # FedAdam's step: at most eta per value per round (Adam's normalized update).
    start = _initial_adapter(model)
    steps = [float(np.abs(round_log.final_adapter[n] - start[n]).max()) for n in start]
    assert 0 < max(steps) <= 3 * 0.01 * 1.0001


def test_secagg_plus_matches_fedavg_and_the_server_sees_only_masked_vectors(fleet):
    model, shares, _ = fleet
    plain = RoundLog()
    run_local(make_server_app(model, rounds=1, fraction_train=1.0, round_log=plain, learning_rate=LR),
              make_client_app(model, _load(shares)), 4)

    config = SecAggConfig(max_weight=24.0)  # the largest client's examples
    secure = RoundLog()
    received = []
    run_local(make_server_app(model, rounds=1, fraction_train=1.0, round_log=secure, secagg=config,
                              learning_rate=LR),
              make_client_app(model, _load(shares), secagg=True), 4,
              on_message=lambda reply: received.append(copy.deepcopy(reply.content)))

    start = _initial_adapter(model)
    max_delta = max(float(np.abs(plain.final_adapter[n] - start[n]).max()) for n in start)
    tolerance = config.tolerance([len(x) for x, _ in shares], 2 * max_delta) + 1e-7
    difference = max(float(np.abs(secure.final_adapter[n] - plain.final_adapter[n]).max()) for n in start)
    assert difference <= tolerance, (difference, tolerance)
    assert max_delta > 100 * tolerance  # the comparison is not trivially loose
    assert secure.rows[1]["replies"] == 4 and secure.rows[1]["refused"] == 0

    # Everything the server received: four protocol stages x four clients, no
    # ArrayRecord with values; the vectors are masked (spread over the 2**32
    # modulus, while unmasked ones stay below the 2**22 quantization range x weight).
    assert len(received) == 16
    masked = []
    for content in received:
        assert all(len(record) == 0 for record in content.array_records.values())
        configs = content.config_records.get("secaggplus_configs")
        if configs is not None and "masked_params" in configs:
            from flwr.common import bytes_to_ndarray

            masked.append(np.concatenate([bytes_to_ndarray(b).reshape(-1) for b in configs["masked_params"]]))
    assert len(masked) == 4
    for vector in masked:
        assert vector.max() > 2**31 and np.mean(vector > 2**31) > 0.3


def test_seeded_sampling_picks_the_same_clients_with_and_without_secagg(fleet, caplog):
    """With sampling_seed, the plain FedAvg path and the SecAgg+ path train the
    same clients round by round (seeded_sample), so their results compare,
    and after three rounds the adapters agree within SecAgg+'s quantization.
    A clipping range too small for the deltas (the protocol clips silently)
    is reported by the clients."""
    model, shares, _ = fleet
    logs = {}
    for name in ("plain", "secure"):
        logs[name] = RoundLog()
        secagg = SecAggConfig(max_weight=24.0) if name == "secure" else None
        run_local(make_server_app(model, rounds=3, fraction_train=0.75, round_log=logs[name], secagg=secagg,
                                  learning_rate=LR, sampling_seed=11),
                  make_client_app(model, _load(shares), secagg=secagg is not None), 4)
    plain, secure = ([row["nodes"] for row in logs[name].rows[1:]] for name in ("plain", "secure"))
    node_ids = [1000 + i for i in range(4)]  # local_grid's node ids
    assert plain == secure == [sorted(seeded_sample(11, r, node_ids, 3)) for r in (1, 2, 3)]
    assert len({tuple(nodes) for nodes in plain}) > 1  # the draw changes from round to round
    start = _initial_adapter(model)
    difference = max(float(np.abs(logs["secure"].final_adapter[n] - logs["plain"].final_adapter[n]).max())
                     for n in start)
    moved = max(float(np.abs(logs["plain"].final_adapter[n] - start[n]).max()) for n in start)
    assert difference < 1e-4 * moved, (difference, moved)
    assert "SecAgg+ clips this delta" not in caplog.text

    run_local(make_server_app(model, rounds=1, fraction_train=0.75, learning_rate=LR, sampling_seed=11,
                              secagg=SecAggConfig(max_weight=24.0, clipping_range=0.01)),
              make_client_app(model, _load(shares), secagg=True), 4)
    assert "SecAgg+ clips this delta" in caplog.text


def test_learning_rate_decay_reaches_the_devices(fleet):
    """Round r trains at lr * decay**(r - 1): with a decay of 1e-9 the second
    round leaves the adapter where the first put it; without decay it moves."""
    assert round_learning_rate(0.1, 0.5, 1) == 0.1 and round_learning_rate(0.1, 0.5, 3) == 0.025
    model, shares, _ = fleet
    finals = {}
    for decay in (1e-9, 1.0):
        per_round = RoundLog()
        run_local(make_server_app(model, rounds=2, fraction_train=1.0, round_log=per_round, learning_rate=LR,
                                  learning_rate_decay=decay),
                  make_client_app(model, _load(shares)), 4)
        finals[decay] = per_round.final_adapter
    first_round = _expected_fedavg(model, shares, _initial_adapter(model))
    for name, value in first_round.items():
        np.testing.assert_allclose(finals[1e-9][name], value, atol=1e-6)
    assert max(float(np.abs(finals[1.0][n] - first_round[n]).max()) for n in first_round) > 1e-3


def test_fleet_simulate_runs_flowers_simulation_engine(fleet, tmp_path, capsys):
    model, shares, test = fleet
    (tmp_path / "train.tflite").write_bytes(model)
    x = np.concatenate([s[0] for s in shares])
    y = np.concatenate([s[1] for s in shares])
    np.savez(tmp_path / "data.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=test[0], y=test[1])
    args = ["fleet", "simulate", str(tmp_path / "train.tflite"), "--data", str(tmp_path / "data.npz"),
            "--test", str(tmp_path / "test.npz"), "--clients", "4", "--rounds", "2", "--fraction", "0.5",
            "--partition", "dirichlet:0.5", "--encoding", "int8", "--lr", str(LR), "-o", str(tmp_path / "out"),
            "--json"]
    assert main(args) == 0, capsys.readouterr().err
    payload = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["rounds"] == payload["rounds"] and written["config"]["engine"] == "flower"
    assert (tmp_path / "out" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(written["config"]["samples_per_client"]) == 64
    rows = payload["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        assert row["sampled"] == 2 and row["replies"] == 2 and row["delta_bytes"] == 360
    assert rows[2]["accuracy"] != rows[0]["accuracy"]


def test_fleet_simulate_errors_are_one_line(fleet, digits, tmp_path, capsys):
    model, _, _ = fleet
    (tmp_path / "train.tflite").write_bytes(model)
    (tmp_path / "plain.tflite").write_bytes(digits.int8_model)
    np.savez(tmp_path / "data.npz", x=digits.user_train.x, y=digits.user_train.y)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((8, 3), np.float32), y=np.zeros(8, np.int32))
    common = ["--data", str(tmp_path / "data.npz"), "--engine", "local", "-o", str(tmp_path / "out")]
    cases = [
        ["fleet", "simulate", str(tmp_path / "train.tflite"), *common, "--partition", "dirichlet:x"],
        ["fleet", "simulate", str(tmp_path / "train.tflite"), *common, "--clients", "65", "--partition", "iid"],
        ["fleet", "simulate", str(tmp_path / "plain.tflite"), *common],
        ["fleet", "simulate", str(tmp_path / "train.tflite"), "--data", str(tmp_path / "wrong.npz"),
         "--engine", "local", "-o", str(tmp_path / "out")],
        ["fleet", "simulate", str(tmp_path / "train.tflite"), *common, "--secagg", "--strategy", "fedadam"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("tflm-train: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
