"""The fleet's ServerApp and ClientApp in Flower's deployment runtime: a real
`flower-superlink` and two `flower-supernode` processes on 127.0.0.1 (insecure
mode), two rounds submitted with `flwr run`, every process stopped after.

Bounded: each wait has a timeout, the processes are killed (their whole
process groups) whatever happens, and every listening socket they open is
checked to be on the loopback interface."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, convert

pytestmark = [pytest.mark.federated, pytest.mark.slow]

# Flower's console scripts, run by this interpreter (the venv that has
# tflm-train), because the SuperLink and SuperNodes start `flwr-serverapp` /
# `flwr-clientapp` / `flower-superexec` processes by name.
ENTRY_POINTS = {
    "flower-superlink": "flwr.superlink.cli:flower_superlink",
    "flower-supernode": "flwr.supernode.cli:flower_supernode",
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flwr-serverapp": "flwr.superlink.cli:flwr_serverapp",
    "flwr-clientapp": "flwr.supernode.cli:flwr_clientapp",
    "flwr": "flwr.cli.app:app",
}
RUN_TIMEOUT = 300  # seconds for the whole federated run (two rounds take ~30 s unloaded)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _shims(directory: Path) -> None:
    directory.mkdir()
    for name, target in ENTRY_POINTS.items():
        module, function = target.split(":")
        script = directory / name
        script.write_text(
            "#!/bin/sh\n"
            f'exec "{sys.executable}" -c "import sys; sys.argv[0] = \'{name}\'; '
            f'from {module} import {function} as main; sys.exit(main())" "$@"\n'
        )
        script.chmod(0o755)


def _listening_addresses(groups: set[int]) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that processes of
    these process groups hold (Linux /proc)."""
    inodes = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            group = int(stat.rsplit(")", 1)[1].split()[2])
            if group not in groups:
                continue
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host = fields[1].split(":")[0]
                addresses.append(host)
    return addresses


def _is_loopback(hex_host: str) -> bool:
    if len(hex_host) == 8:  # IPv4, little-endian
        return bytes.fromhex(hex_host)[::-1][0] == 127
    raw = bytes.fromhex(hex_host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return words == bytes(15) + b"\x01" or (words[:12] == bytes(10) + b"\xff\xff" and words[12] == 127)


def test_two_rounds_on_a_superlink_and_two_supernodes(digits, tmp_path):
    model = tmp_path / "train.tflite"
    model.write_bytes(convert(digits.int8_model, ConvertConfig()).model)
    # Each SuperNode trains on its own file: the device's own data.
    for node in range(2):
        np.savez(tmp_path / f"node{node}.npz", x=digits.user_train.x[node::2], y=digits.user_train.y[node::2])
    np.savez(tmp_path / "test.npz", x=digits.user_test.x[:200], y=digits.user_test.y[:200])

    bin_dir, home, app = tmp_path / "bin", tmp_path / "flwr-home", tmp_path / "app"
    _shims(bin_dir)
    link_port = _free_port()
    home.mkdir()
    (home / "config.toml").write_text(textwrap.dedent(f"""\
        [superlink]
        default = "test"

        [superlink.test]
        address = "127.0.0.1:{link_port}"
        insecure = true
        """))
    app.mkdir()
    # Flower checks the component names statically: plain assignments.
    (app / "fleetapp.py").write_text("from tflm_train.fleet import app as fleet\n\n"
                                     "client = fleet.client\nserver = fleet.server\n")
    (app / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "tflm-fleet-test"
        version = "1.0.0"
        dependencies = []

        [tool.flwr.app]
        publisher = "tflmtrain"

        [tool.flwr.app.components]
        serverapp = "fleetapp:server"
        clientapp = "fleetapp:client"

        [tool.flwr.app.config]
        model = "{model}"
        test = "{tmp_path / 'test.npz'}"
        metrics = "{tmp_path / 'metrics.json'}"
        rounds = 2
        fraction-train = 1.0
        min-nodes = 2
        encoding = "int8"
        round-timeout = 120.0
        """))
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FLWR_HOME=str(home),
               FLWR_TELEMETRY_ENABLED="0", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    processes: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> None:
        with open(tmp_path / log, "w") as out:
            processes.append(subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))

    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        start(["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(link_port),
               "--disable-runtime-dependency-installation"], "superlink.log")
        _wait_for_port(link_port, deadline)
        for node in range(2):
            start(["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                   "--host", "127.0.0.1", "--port", str(_free_port()), "--max-retries", "20",
                   "--node-config", f'partition-id={node} num-partitions=2 data="{tmp_path / f"node{node}.npz"}"'],
                  f"supernode{node}.log")
        run = subprocess.run(["flwr", "run", str(app), "test", "--stream"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=max(10.0, deadline - time.monotonic()))
        groups = {p.pid for p in processes}
        addresses = _listening_addresses(groups)
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("*.log")))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + logs
    assert addresses and all(_is_loopback(a) for a in addresses), addresses
    rounds = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for row in rounds[1:]:
        # Both SuperNodes trained and sent an int8 delta; none failed or was refused.
        assert (row["sampled"], row["replies"], row["failures"], row["refused"]) == (2, 2, 0, 0), row
        assert row["delta_bytes"] == 360  # 296 LoRA values as int8: 32 + 4 x (4 + 4) + 296 bytes
    assert rounds[2]["accuracy"] != rounds[0]["accuracy"]  # the global adapter changed
    assert all(process.poll() is not None for process in processes)
