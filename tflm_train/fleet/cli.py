"""`tflm-train fleet log|list|rollback` (tflm_train/fleet.py; needs the
`fleet` extra: MLflow)."""

from __future__ import annotations

import click

from tflm_train.errors import UserError

_FLEET_OPTION = dict(default=None, help="Fleet directory (MLflow SQLite + artifacts) [default: $TFLMT_FLEET or ./tflm-fleet].")


def _fleet(directory: str | None):
    from tflm_train.fleet import Fleet, default_fleet_dir

    return Fleet(directory or default_fleet_dir())


def _adapter_from_flash(model_bytes: bytes, image: bytes, slot_bytes: int) -> tuple[bytes, int]:
    from tflm_train.adapter_store import current_adapter
    from tflm_train.converter.model_ir import Model
    from tflm_train.converter.training_info import training_info

    info = training_info(Model.from_bytes(model_bytes))
    if info is None:
        raise UserError("--model must be a converted model")
    expected = info.expected_header()
    stored = current_adapter(image, slot_bytes, expected.base_model_hash, expected.layout_hash)
    if stored is None:
        raise UserError("the flash dump holds no committed adapter of this model (the device runs the factory adapter)")
    return stored.state, stored.sequence


def register(cli: click.Group, read, emit_json) -> None:
    @cli.group()
    def fleet() -> None:
        """Which device runs which adapter (MLflow tracking + model registry); roll a device back."""

    @fleet.command("log")
    @click.argument("device")
    @click.option("--model", "model_path", required=True, help="The converted model the device runs.")
    @click.option("--state", "state_path", default=None, help="The device's exported state.")
    @click.option("--flash", "flash_path", default=None, help="Or: a dump of the device's adapter store region.")
    @click.option("--slot-bytes", type=int, default=None, help="With --flash: bytes per store slot.")
    @click.option("--sequence", type=int, default=None, help="With --state: the store's sequence number.")
    @click.option("--data", "data_path", default=None, help="Held-out .npz: log the adapter's accuracy / mse too.")
    @click.option("--fleet", "fleet_dir", **_FLEET_OPTION)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def fleet_log(device, model_path, state_path, flash_path, slot_bytes, sequence, data_path, fleet_dir, as_json):
        """Record DEVICE's adapter (version, counters, metrics); register it if new."""
        from tflm_train.lifecycle_cli import state_counters

        model_bytes = read(model_path)
        if (state_path is None) == (flash_path is None):
            raise UserError("give the adapter as --state FILE or --flash DUMP --slot-bytes N")
        if flash_path is not None:
            if slot_bytes is None or sequence is not None:
                raise UserError("--flash needs --slot-bytes (the sequence number is read from the dump)")
            state, sequence = _adapter_from_flash(model_bytes, read(flash_path), slot_bytes)
        else:
            state = read(state_path)
        counters = state_counters(model_bytes, state)
        metrics = {}
        if data_path is not None:
            from tflm_train.cli import run_evaluate

            outcome = run_evaluate(model_bytes, data_path, state)
            metrics[outcome["metric"]] = outcome["value"]
        result = _fleet(fleet_dir).log(device, state, counters, metrics, sequence)
        result.update(counters=counters, metrics=metrics)
        if as_json:
            emit_json(result)
        else:
            what = "new adapter version" if result["new_version"] else "still adapter version"
            click.echo(f"{device}: {what} {result['adapter_version']} (parameters CRC {result['params_crc']}"
                       + (f", store sequence {sequence}" if sequence is not None else "") + ")")

    @fleet.command("list")
    @click.option("--fleet", "fleet_dir", **_FLEET_OPTION)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def fleet_list(fleet_dir, as_json):
        """Every device, the adapter version it runs and its latest counters and metrics."""
        rows = _fleet(fleet_dir).devices()
        if as_json:
            emit_json({"devices": rows})
            return
        from rich.table import Table

        from tflm_train.cli import _console

        table = Table(title="fleet", title_justify="left")
        for column in ("device", "adapter version", "store seq", "params CRC", "rejected", "rollbacks",
                       "skipped samples", "metric"):
            table.add_column(column)
        for row in rows:
            m = row["metrics"]
            metric = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if k in ("accuracy", "mse")) or "-"
            table.add_row(row["device"], f"{row['adapter_version']} of {row['versions']}",
                          str(row.get("store_sequence") or "-"), str(row.get("params_crc") or "-"),
                          str(int(m.get("rejected_episodes", 0))), str(int(m.get("rollbacks", 0))),
                          str(int(m.get("skipped_samples", 0))), metric)
        _console().print(table)

    @fleet.command("rollback")
    @click.argument("device")
    @click.option("--to", "version", type=int, default=None, help="Adapter version [default: the one before].")
    @click.option("-o", "--output", "output_path", required=True, help="Write that version's state here (for the device).")
    @click.option("--fleet", "fleet_dir", **_FLEET_OPTION)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def fleet_rollback(device, version, output_path, fleet_dir, as_json):
        """Point DEVICE back at an earlier adapter version and write its state."""
        from tflm_train.outputs import check_writable, write_all

        check_writable(output_path)  # before the registry changes
        chosen, state = _fleet(fleet_dir).rollback(device, version)
        write_all({output_path: state})
        if as_json:
            emit_json({"device": device, "adapter_version": chosen, "output": output_path})
        else:
            click.echo(f"{device}: current adapter is now version {chosen}; its state is in {output_path}")
