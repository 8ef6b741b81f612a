"""`tflm-train fleet log|list|rollback` (the MLflow fleet view,
tflm_train/fleet/registry.py; the `fleet` extra) and `tflm-train fleet
simulate` (federated training on Flower; the `federated` extra)."""

from __future__ import annotations

import click

from tflm_train.errors import UserError

_FLEET_OPTION = dict(default=None, help="Fleet directory (MLflow SQLite + artifacts) [default: $TFLMT_FLEET or ./tflm-fleet].")


def _fleet(directory: str | None):
    from tflm_train.fleet.registry import Fleet, default_fleet_dir

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
        """Which device runs which adapter (MLflow), roll a device back; federated training (Flower)."""

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

    register_simulate(fleet, read, emit_json)


def register_simulate(fleet: click.Group, read, emit_json) -> None:
    """`tflm-train fleet simulate`: federated training over simulated clients (Flower)."""
    from tflm_train.fleet.partition import PARTITION_HELP

    @fleet.command("simulate")
    @click.argument("model_path", metavar="MODEL")
    @click.option("--data", "data_path", required=True, help="Training .npz (x, y), split over the clients.")
    @click.option("--test", "test_path", default=None, help="Held-out .npz: the global adapter's metric every round.")
    @click.option("--clients", type=click.IntRange(min=1), default=100, show_default=True, help="Simulated clients.")
    @click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Federated rounds.")
    @click.option("--partition", default="dirichlet:0.3", show_default=True, help=PARTITION_HELP + ".")
    @click.option("--fraction", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1, show_default=True,
                  help="Fraction of the clients sampled per round.")
    @click.option("--min-clients", type=click.IntRange(min=1), default=2, show_default=True,
                  help="At least this many clients per round.")
    @click.option("--strategy", type=click.Choice(["fedavg", "fedadam"]), default="fedavg", show_default=True)
    @click.option("--server-lr", "server_lr", type=float, default=0.01, show_default=True, help="FedAdam's step size.")
    @click.option("--encoding", type=click.Choice(["float32", "int8"]), default="float32", show_default=True,
                  help="How clients encode their adapter delta.")
    @click.option("--top-k", "top_k", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
                  help="Send only this fraction of each tensor's largest changes.")
    @click.option("--lr", type=float, default=0.02, show_default=True, help="Clients' learning rate.")
    @click.option("--lr-decay", "lr_decay", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0,
                  show_default=True, help="Per-round factor: round r trains at lr * decay^(r-1).")
    @click.option("--local-epochs", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
                  help="Probability that a sampled client fails its round (simulated).")
    @click.option("--secagg", is_flag=True, help="Secure aggregation (Flower's SecAgg+ workflow; FedAvg only).")
    @click.option("--engine", type=click.Choice(["flower", "local"]), default="flower", show_default=True,
                  help="flower: Flower's simulation engine (Ray); local: the same apps in this process.")
    @click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True,
                  help="CPUs for Flower's simulation engine (one ClientApp actor each).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("-o", "--out", "out_dir", default="fleet-sim", show_default=True,
                  help="Directory for metrics.json and metrics.png.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def fleet_simulate(model_path, data_path, test_path, clients, rounds, partition, fraction, min_clients, strategy,
                       server_lr, encoding, top_k, lr, lr_decay, local_epochs, dropout, secagg, engine, cpus, seed, out_dir,
                       as_json):
        """Federated adapter training of MODEL (converted) over simulated clients, on Flower."""
        import importlib.util
        import sys
        from pathlib import Path

        from tflm_train import fitting
        from tflm_train.data import load_npz
        from tflm_train.trainer import TrainableModel

        if importlib.util.find_spec("flwr") is None:
            raise UserError('fleet simulate needs Flower: pip install "tflm-train[federated]"')
        if secagg and strategy != "fedavg":
            raise UserError("--secagg runs with --strategy fedavg")
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out_dir}: not a directory")
        model_bytes = read(model_path)
        model = TrainableModel(model_bytes)
        task = fitting.task_of(model)
        x, y = fitting.prepare(model, load_npz(data_path), task, data_path)
        test = fitting.prepare(model, load_npz(test_path), task, test_path) if test_path else None
        del model

        from tflm_train.fleet.server_app import SecAggConfig
        from tflm_train.fleet.simulate import simulate

        arguments = dict(test=test, clients=clients, rounds=rounds, partition=partition, fraction=fraction,
                         min_clients=min_clients, strategy=strategy, encoding=encoding, top_k=top_k,
                         learning_rate=lr, learning_rate_decay=lr_decay, local_epochs=local_epochs,
                         server_learning_rate=server_lr,
                         dropout=dropout, secagg=SecAggConfig() if secagg else None, seed=seed, engine=engine,
                         cpus=cpus)
        if as_json or not sys.stderr.isatty():
            round_log = simulate(model_bytes, x, y, **arguments)
        else:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("federated rounds"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                          console=Console(stderr=True, highlight=False), transient=True) as progress:
                bar = progress.add_task("rounds", total=rounds, status="starting the simulation engine")

                def on_round(row: dict) -> None:
                    status = _row_status(row, task.metric)
                    progress.update(bar, completed=row["round"], status=status)
                    if row["round"]:
                        progress.console.print(f"round {row['round']}: {status}")

                round_log = simulate(model_bytes, x, y, on_round=on_round, **arguments)
        paths = round_log.write(out)
        payload = {**round_log.to_json(), "metrics_json": str(paths["json"]), "plot": str(paths["png"])}
        if as_json:
            emit_json(payload)
            return
        last = round_log.rows[-1] if round_log.rows else {}
        first = round_log.rows[0] if round_log.rows else {}
        metric = round_log.metric
        if metric in last and metric in first:
            click.echo(f"global held-out {metric}: {first[metric]:.4f} -> {last[metric]:.4f} after {rounds} rounds")
        click.echo(f"round-by-round metrics: {paths['json']}, plot: {paths['png']}")


def _row_status(row: dict, metric: str) -> str:
    parts = []
    if "sampled" in row:
        parts.append(f"{row['replies']}/{row['sampled']} clients")
        if row.get("failures"):
            parts.append(f"{row['failures']} failed")
        if row.get("refused"):
            parts.append(f"{row['refused']} refused")
        if row.get("delta_bytes"):
            parts.append(f"{row['delta_bytes']:.0f} B/delta")
    if row.get(metric) is not None:
        parts.append(f"{metric} {row[metric]:.4f}")
    return ", ".join(parts)
