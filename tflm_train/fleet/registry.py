"""Fleet view on MLflow: which device runs which adapter, with its counters
and metrics, and rolling a device back to an earlier adapter.

MLflow (the optional extra `pip install tflm-train[fleet]`) with its local
SQLite backend keeps everything in one directory (`--fleet DIR`:
DIR/mlflow.db and DIR/artifacts/); `mlflow ui --backend-store-uri
sqlite:///DIR/mlflow.db` browses it. The mapping:

  device report      an MLflow run in experiment "tflm-train-fleet", tagged
                     with the device, the adapter's identity (base-model and
                     layout hash, CRC-32 of its parameters, flash-store
                     sequence number); metrics = the state's lifetime counters
                     (+ held-out accuracy / mse when data is given); the state
                     file is the run's artifact
  adapter versions   registered model "tflm-adapter.<device>": one model
                     version per distinct adapter the device reported
  running adapter    that registered model's alias "current"
  rollback           "current" moved to an earlier version; its state file
                     is written out for the device to load (and commit into
                     its store: tflmt::AdapterStore)
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tflm_train.errors import UserError

EXPERIMENT = "tflm-train-fleet"
MODEL_PREFIX = "tflm-adapter."
CURRENT = "current"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError('the fleet view needs MLflow: pip install "tflm-train[fleet]"') from None
    for name in ("mlflow", "alembic"):  # their INFO lines would mix into our output
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient


@dataclass
class AdapterIdentity:
    """What names an adapter version: the state's hashes, a CRC of its
    parameters (not of its counters, which change without the adapter
    changing) and where the device's store had it."""

    base_model_hash: int
    layout_hash: int
    params_crc: int
    store_sequence: int | None

    @classmethod
    def of(cls, state: bytes, store_sequence: int | None) -> "AdapterIdentity":
        from tflm_train.converter.state_format import HEADER_BYTES, Header

        header = Header.unpack(state)
        params = state[HEADER_BYTES : HEADER_BYTES + 4 * header.param_count]
        return cls(header.base_model_hash, header.layout_hash, zlib.crc32(params) & 0xFFFFFFFF, store_sequence)

    def tags(self) -> dict[str, str]:
        tags = {
            "base_model_hash": f"{self.base_model_hash:016x}",
            "layout_hash": f"{self.layout_hash:08x}",
            "params_crc": f"{self.params_crc:08x}",
        }
        if self.store_sequence is not None:
            tags["store_sequence"] = str(self.store_sequence)
        return tags


class Fleet:
    def __init__(self, directory: str | Path):
        client_class = _mlflow()
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{self.directory / 'mlflow.db'}"
        self.client = client_class(tracking_uri=uri, registry_uri=uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(
                EXPERIMENT, artifact_location=(self.directory / "artifacts").as_uri()
            )
        else:
            self.experiment_id = experiment.experiment_id

    @staticmethod
    def _model_name(device: str) -> str:
        if not _DEVICE_ID.match(device):
            raise UserError(f"device id {device!r}: use letters, digits, '.', '_' or '-' (at most 100)")
        return MODEL_PREFIX + device

    def _current(self, name: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CURRENT)
        except MlflowException:
            return None

    def log(self, device: str, state: bytes, counters: dict, metrics: dict | None = None,
            store_sequence: int | None = None) -> dict:
        """Records one report of `device`; registers its adapter as a new
        version when it differs from the one it ran before."""
        name = self._model_name(device)
        identity = AdapterIdentity.of(state, store_sequence)
        tags = {"device": device, **identity.tags()}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=device)
        run_id = run.info.run_id
        for key, value in {**counters, **(metrics or {})}.items():
            self.client.log_metric(run_id, key, float(value))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "adapter.state"
            path.write_bytes(state)
            self.client.log_artifact(run_id, str(path), "adapter")
        self.client.set_terminated(run_id)

        if not self.client.search_registered_models(f"name = '{name}'"):
            self.client.create_registered_model(name, tags={"device": device})
        current = self._current(name)
        if current is not None and all(current.tags.get(k) == v for k, v in identity.tags().items()):
            version, new = current.version, False
        else:
            version = self.client.create_model_version(
                name, source=f"{run.info.artifact_uri}/adapter", run_id=run_id, tags=identity.tags()
            ).version
            self.client.set_registered_model_alias(name, CURRENT, version)
            new = True
        self.client.set_tag(run_id, "adapter_version", str(version))
        return {"device": device, "run_id": run_id, "adapter_version": int(version), "new_version": new,
                **identity.tags()}

    def devices(self) -> list[dict]:
        """Every device: its current adapter version and its latest report."""
        rows = []
        for model in self.client.search_registered_models(f"name LIKE '{MODEL_PREFIX}%'"):
            device = model.name[len(MODEL_PREFIX):]
            current = self._current(model.name)
            runs = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.device = '{device}'",
                order_by=["attributes.start_time DESC"], max_results=1,
            )
            latest = runs[0] if runs else None
            versions = self.client.search_model_versions(f"name = '{model.name}'")
            rows.append({
                "device": device,
                "adapter_version": int(current.version) if current else None,
                "versions": len(versions),
                **({k: current.tags.get(k) for k in ("store_sequence", "base_model_hash", "layout_hash", "params_crc")}
                   if current else {}),
                "metrics": dict(latest.data.metrics) if latest else {},
            })
        return sorted(rows, key=lambda row: row["device"])

    def rollback(self, device: str, version: int | None = None) -> tuple[int, bytes]:
        """Moves the device's "current" alias to `version` (default: the
        version before the current one); returns it and its state file."""
        name = self._model_name(device)
        current = self._current(name)
        if current is None:
            raise UserError(f"device {device!r} has no adapter in this fleet")
        versions = sorted(int(v.version) for v in self.client.search_model_versions(f"name = '{name}'"))
        if version is None:
            earlier = [v for v in versions if v < int(current.version)]
            if not earlier:
                raise UserError(f"device {device!r} runs its first adapter version ({current.version}): nothing to roll back to")
            version = earlier[-1]
        if version not in versions:
            raise UserError(f"device {device!r} has no adapter version {version} (it has {versions})")
        chosen = self.client.get_model_version(name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(chosen.run_id, "adapter/adapter.state", tmp)
            state = Path(path).read_bytes()
        self.client.set_registered_model_alias(name, CURRENT, str(version))
        self.client.set_model_version_tag(name, str(version), "rolled_back_from", str(current.version))
        return version, state


def default_fleet_dir() -> str:
    return os.environ.get("TFLMT_FLEET", "tflm-fleet")


__all__ = ["AdapterIdentity", "Fleet", "default_fleet_dir"]
