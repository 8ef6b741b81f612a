"""The natural per-user partition of the federated benchmark
(tflm_train/fleet/datasets.py watch_exercises; benchmarks/federated.py
--dataset watch): smartwatch IMU recordings shipped inside the seglearn wheel,
one client per study participant. The loader keeps every participant's
held-out windows apart from their training windows, and a few federated
rounds of the committed base model (examples/federated/watch_cnn_int8.tflite)
over real participants' data improve its held-out accuracy.

Marked `federated`: needs seglearn, in the `federated` extra (and `test`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tflm_train.errors import UserError
from tflm_train.fleet.datasets import WATCH_EXERCISES, pooled, watch_exercises

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.federated

WATCH_MODEL = ROOT / "examples" / "federated" / "watch_cnn_int8.tflite"
WINDOW = 100


@pytest.fixture(scope="module")
def watch():
    return watch_exercises(window=WINDOW, train_fraction=0.7)


def test_one_partition_per_participant_with_every_exercise(watch):
    training, held_out = watch
    assert [u.user for u in training] == list(range(1, 11)) == [u.user for u in held_out]
    for train, test in zip(training, held_out):
        assert train.x.shape[1:] == (WINDOW, 1, 6) and train.x.dtype == np.float32
        assert len(train.y) == len(train.recording) == len(train.start) == len(train.x)
        # Every participant did all 7 exercises with both arms: 14 recordings,
        # all seven classes in both their training and held-out windows.
        assert len(set(train.recording.tolist())) == 14
        assert set(train.y.tolist()) == set(test.y.tolist()) == set(range(len(WATCH_EXERCISES)))
        # Later 30% of each recording, back-to-back 2 s windows: ~0.2 of the rows.
        assert 0.15 < len(test.y) / (len(train.y) + len(test.y)) < 0.25
        assert len(train.y) >= 150
    # The people are disjoint: a recording belongs to exactly one participant.
    owners = {}
    for u in training + held_out:
        for r in set(u.recording.tolist()):
            assert owners.setdefault(r, u.user) == u.user
    assert len(owners) == 140
    assert sum(len(u.y) for u in training) == len(pooled(training).y)


def test_no_held_out_sample_is_in_a_training_window(watch):
    training, held_out = watch
    for train, test in zip(training, held_out):
        for recording in set(test.recording.tolist()):
            last_train_end = (train.start[train.recording == recording] + WINDOW).max()
            first_test_start = test.start[test.recording == recording].min()
            assert last_train_end <= first_test_start
        # And no window appears twice.
        assert len(set(zip(train.recording.tolist(), train.start.tolist()))) == len(train.y)


def test_missing_package_or_bad_file_is_one_clear_error(monkeypatch, tmp_path):
    import importlib.util

    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="cannot read the smartwatch exercise data"):
        watch_exercises(tmp_path / "bad.npy")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install seglearn"):
        watch_exercises()


def test_fedavg_over_real_participants_beats_the_factory_model(watch):
    """Three participants (2, 3, 4), all sampled, three FedAvg rounds of LoRA
    deltas trained in the TFLM interpreter: the global adapter's accuracy on
    their held-out windows must rise above the base model's (measured: about
    0.54 -> 0.63 on 161 windows; the factory never saw these people)."""
    from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
    from tflm_train.fleet.client_app import make_client_app
    from tflm_train.fleet.local_grid import run_local
    from tflm_train.fleet.server_app import RoundLog, make_server_app

    training, held_out = watch
    people = [u for u in training if u.user in (2, 3, 4)]
    test = pooled([u for u in held_out if u.user in (2, 3, 4)])
    config = ConvertConfig(method="lora", r=4, targets="last:2", loss="ce", optimizer=OptimizerConfig(kind="adam"))
    model = convert(WATCH_MODEL.read_bytes(), config).model
    rounds = []
    round_log = RoundLog(on_round=rounds.append)
    server = make_server_app(model, rounds=3, fraction_train=1.0, min_train_nodes=3, min_available_nodes=3,
                             evaluate_data=(test.x, test.y), round_log=round_log)
    client = make_client_app(model, lambda pid, n: (people[pid].x, people[pid].y), learning_rate=0.003,
                             local_epochs=1)
    run_local(server, client, 3)
    accuracy = [r["accuracy"] for r in rounds]
    assert len(accuracy) == 4  # round 0 is the base model
    assert accuracy[-1] > accuracy[0] + 0.05, accuracy
    assert all(r.get("failures", 0) == 0 for r in rounds[1:])
