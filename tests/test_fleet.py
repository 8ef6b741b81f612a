"""The fleet view on MLflow (tflm_train/fleet/registry.py, `tflm-train fleet`): devices
log their adapters (version = store sequence number + hashes + parameter CRC),
counters and metrics; adapters are registered model versions; a device is
rolled back to an earlier version and gets that version's exact state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tflm_train.cli import main
from tflm_train.converter import ConvertConfig, convert
from tflm_train.episodes import Verdict, restore
from tflm_train.trainer import TrainableModel

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def adapters(digits, tmp_path_factory):
    """A converted model and three states of one device's life."""
    root = tmp_path_factory.mktemp("fleet")
    converted = convert(digits.int8_model, ConvertConfig()).model
    (root / "train.tflite").write_bytes(converted)
    model = TrainableModel(converted)
    states = []
    for part in range(3):
        for i in range(part * 20, part * 20 + 20):
            model.train_step(digits.user_train.x[i], digits.user_train.y[i], 0.02)
        states.append(model.save_state())
    restore(model, states[-1], Verdict.REJECT)  # a rejected episode: same adapter, a counter more
    states.append(model.save_state())
    for i, state in enumerate(states):
        (root / f"s{i}.state").write_bytes(state)
    np.savez(root / "heldout.npz", x=digits.user_test.x[:32], y=digits.user_test.y[:32])
    return root, states


def _json(capsys, args) -> dict:
    assert main(args + ["--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_log_list_and_roll_back_a_device(adapters, tmp_path, capsys):
    root, states = adapters
    fleet = ["--fleet", str(tmp_path / "fleet")]
    model = ["--model", str(root / "train.tflite")]
    first = _json(capsys, ["fleet", "log", "dev-1", *model, "--state", str(root / "s0.state"), "--sequence", "1",
                           "--data", str(root / "heldout.npz"), *fleet])
    assert first["adapter_version"] == 1 and first["new_version"] and 0 <= first["metrics"]["accuracy"] <= 1
    second = _json(capsys, ["fleet", "log", "dev-1", *model, "--state", str(root / "s1.state"), "--sequence", "2",
                            *fleet])
    third = _json(capsys, ["fleet", "log", "dev-1", *model, "--state", str(root / "s2.state"), "--sequence", "3",
                           *fleet])
    assert (second["adapter_version"], third["adapter_version"]) == (2, 3)
    # Same adapter, more counters (a rejected episode): a report, no new version.
    again = _json(capsys, ["fleet", "log", "dev-1", *model, "--state", str(root / "s3.state"), "--sequence", "3",
                           *fleet])
    assert again["adapter_version"] == 3 and not again["new_version"]
    assert again["counters"]["rejected_episodes"] == 1
    _json(capsys, ["fleet", "log", "dev-2", *model, "--state", str(root / "s0.state"), *fleet])

    listed = {row["device"]: row for row in _json(capsys, ["fleet", "list", *fleet])["devices"]}
    assert set(listed) == {"dev-1", "dev-2"}
    assert listed["dev-1"]["adapter_version"] == 3 and listed["dev-1"]["versions"] == 3
    assert listed["dev-1"]["store_sequence"] == "3"
    assert listed["dev-1"]["metrics"]["rejected_episodes"] == 1
    assert listed["dev-1"]["params_crc"] == third["params_crc"] != first["params_crc"]

    # Roll back: to the version before, then to an explicit one.
    out = tmp_path / "back.state"
    assert _json(capsys, ["fleet", "rollback", "dev-1", "-o", str(out), *fleet])["adapter_version"] == 2
    assert out.read_bytes() == states[1]
    assert _json(capsys, ["fleet", "rollback", "dev-1", "--to", "1", "-o", str(out), *fleet])["adapter_version"] == 1
    assert out.read_bytes() == states[0]
    listed = {row["device"]: row for row in _json(capsys, ["fleet", "list", *fleet])["devices"]}
    assert listed["dev-1"]["adapter_version"] == 1
    assert main(["fleet", "list", *fleet]) == 0
    assert "dev-1" in capsys.readouterr().out


def test_fleet_errors_are_one_line(adapters, tmp_path, capsys):
    root, _ = adapters
    fleet = ["--fleet", str(tmp_path / "fleet")]
    cases = [
        ["fleet", "rollback", "nobody", "-o", str(tmp_path / "x.state"), *fleet],
        ["fleet", "log", "bad/name", "--model", str(root / "train.tflite"), "--state", str(root / "s0.state"), *fleet],
        ["fleet", "log", "dev", "--model", str(root / "train.tflite"), *fleet],
    ]
    _json(capsys, ["fleet", "log", "solo", "--model", str(root / "train.tflite"), "--state", str(root / "s0.state"),
                   *fleet])
    cases.append(["fleet", "rollback", "solo", "-o", str(tmp_path / "x.state"), *fleet])  # nothing earlier
    cases.append(["fleet", "rollback", "solo", "--to", "7", "-o", str(tmp_path / "x.state"), *fleet])
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("tflm-train: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "x.state").exists()
