"""The lifecycle on the device path: tests/store/device_lifecycle_main.cc runs
episodes with the real TFLM MicroInterpreter (built from TFLM_DIR), our
kernels, tflmt::Trainer, EpisodeMonitor, Trainer::Restore and AdapterStore;
every verdict, step count, held-out loss and counter, and the final state,
must equal tflm_train.episodes' on the wheel. Needs a tflite-micro checkout in
TFLM_DIR, like tests/device/test_device_run.py (CI has none; the monitor's
twin test and the store's power-cut test run there)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.state_format import HEADER_BYTES, Header

from tflm_train.episodes import counters, run_episode
from tflm_train.trainer import TrainableModel

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,  # compiles TFLM once (cached)
    pytest.mark.skipif(not os.environ.get("TFLM_DIR"), reason="set TFLM_DIR to a tflite-micro checkout"),
]


@pytest.fixture(scope="module")
def lifecycle_binary(tmp_path_factory) -> Path:
    from host_tflm import link_host_program

    return link_host_program(ROOT / "tests/store/device_lifecycle_main.cc", tmp_path_factory.mktemp("lifecycle") / "device_lifecycle")


def _tmtd(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    x = np.asarray(x, "<f4").reshape(len(x), -1)
    header = np.array([0, 1, len(x), x.shape[1], 0], "<u4").tobytes()
    path.write_bytes(b"TMTD" + header[4:] + x.tobytes() + np.asarray(y, "<i4").tobytes())


def test_device_episodes_match_the_host(lifecycle_binary, digits, tmp_path):
    converted = convert(digits.int8_model, ConvertConfig()).model
    (tmp_path / "model.tflite").write_bytes(converted)
    x, y = digits.user_train.x, digits.user_train.y.astype(np.int32)
    heldout = (digits.user_test.x[:32], digits.user_test.y[:32].astype(np.int32))
    poisoned = ((y + 3) % 10).astype(np.int32)
    plan = [("good", x[:32], y[:32], 0.02), ("poisoned", x[32:], poisoned[32:], 0.02),
            ("huge_lr", x[32:], y[32:], 0.5), ("good2", x[32:], y[32:], 0.02)]
    _tmtd(tmp_path / "heldout.tmtd", *heldout)
    args = []
    for name, ex, ey, lr in plan:
        _tmtd(tmp_path / f"{name}.tmtd", ex, ey)
        args.append(f"{tmp_path / name}.tmtd:{lr}")
    run = subprocess.run([str(lifecycle_binary), str(tmp_path / "model.tflite"), str(tmp_path / "heldout.tmtd"),
                          *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.split("\n")

    model = TrainableModel(converted)
    host = [run_episode(model, ex, ey, heldout, lr) for _, ex, ey, lr in plan]
    device = [line.split() for line in lines if line.startswith("episode ")]
    assert [d[1] for d in device] == [h.verdict.name.lower() for h in host]
    assert host[0].accepted and host[1].verdict.name == "REJECT" and host[2].verdict.rolled_back
    assert [int(d[2]) for d in device] == [h.steps for h in host]
    assert [float(d[3]) for d in device] == [np.float32(h.heldout_before) for h in host]
    host_counters = counters(model.state_header())
    device_counters = [int(v) for v in next(line for line in lines if line.startswith("counters")).split()[1:]]
    assert device_counters == list(host_counters.values())
    assert (tmp_path / "model.tflite.state").read_bytes() == model.save_state()
    reboot = next(line for line in lines if line.startswith("reboot")).split()
    # One commit per episode (accepted, or the committed adapter again with its
    # counters raised); the rebooted device predicts the same and has the counters.
    assert reboot[2] == str(len(plan)) and reboot[4] == "1"
    assert [int(v) for v in reboot[6:]] == list(host_counters.values())
    assert Header.unpack(model.save_state()).rollbacks == 1


def test_device_distillation_episodes_match_the_host(lifecycle_binary, digits, tmp_path):
    """`convert --distill 2` on the real MicroInterpreter: Trainer::RecordTeacher
    before each episode and Trainer::SetDistillTarget per step give the
    host's verdicts, steps and counters, and the same adapter (to float
    rounding: the device's softmax uses the kernels' exp, the host numpy's)."""
    converted = convert(digits.int8_model, ConvertConfig(distill=2.0)).model
    (tmp_path / "model.tflite").write_bytes(converted)
    x, y = digits.user_train.x, digits.user_train.y.astype(np.int32)
    heldout = (digits.user_test.x[:32], digits.user_test.y[:32].astype(np.int32))
    poisoned = ((y + 3) % 10).astype(np.int32)
    plan = [("good", x[:32], y[:32], 0.02), ("poisoned", x[32:], poisoned[32:], 0.02)]
    _tmtd(tmp_path / "heldout.tmtd", *heldout)
    args = []
    for name, ex, ey, lr in plan:
        _tmtd(tmp_path / f"{name}.tmtd", ex, ey)
        args.append(f"{tmp_path / name}.tmtd:{lr}")
    run = subprocess.run([str(lifecycle_binary), str(tmp_path / "model.tflite"), str(tmp_path / "heldout.tmtd"),
                          "distill=0.5", *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.split("\n")
    model = TrainableModel(converted)
    host = [run_episode(model, ex, ey, heldout, lr, distill_weight=0.5) for _, ex, ey, lr in plan]
    device = [line.split() for line in lines if line.startswith("episode ")]
    assert [d[1] for d in device] == [h.verdict.name.lower() for h in host] == ["accept", "reject"]
    assert [int(d[2]) for d in device] == [h.steps for h in host]
    host_counters = counters(model.state_header())
    device_counters = [int(v) for v in next(line for line in lines if line.startswith("counters")).split()[1:]]
    assert device_counters == list(host_counters.values())
    params = model.info.param_count
    device_state = (tmp_path / "model.tflite.state").read_bytes()
    got = np.frombuffer(device_state, "<f4", count=params, offset=HEADER_BYTES)
    want = np.frombuffer(model.save_state(), "<f4", count=params, offset=HEADER_BYTES)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6)
    # The distillation changed the adapter (else this compares nothing new).
    plain = TrainableModel(convert(digits.int8_model, ConvertConfig()).model)
    run_episode(plain, x[:32], y[:32], heldout, 0.02)
    plain_params = np.frombuffer(plain.save_state(), "<f4", count=params, offset=HEADER_BYTES)
    assert not np.allclose(plain_params, want, rtol=1e-3, atol=1e-5)
