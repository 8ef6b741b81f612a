"""`tflm-train episodes` and `tflm-train fleet`: the device lifecycle on the CLI.

Registered on the main group at the end of tflm_train/cli.py.
"""

from __future__ import annotations

import click

from tflm_train.errors import UserError


def run_episodes(model_bytes: bytes, data_paths, heldout_path: str, heldout_size: int, epochs: int, lr: float,
                 state_in: bytes | None, seed: int) -> tuple[dict, bytes]:
    """One episode per data file, each accepted, rejected or rolled back."""
    import numpy as np

    from tflm_train import episodes, fitting
    from tflm_train.data import load_npz
    from tflm_train.memory import check_prepares
    from tflm_train.trainer import TrainableModel

    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    if heldout_size < 1:
        raise UserError("--heldout-size must be at least 1")
    if not (lr >= 0):
        raise UserError("--lr must be >= 0")
    check_prepares(model_bytes)
    model = TrainableModel(model_bytes)
    if state_in is not None:
        model.load_state(state_in)
    task = fitting.task_of(model)
    hx, hy = fitting.prepare(model, load_npz(heldout_path), task, heldout_path)
    heldout = (hx[:heldout_size], hy[:heldout_size])
    rng = np.random.default_rng(seed)
    results = []
    for path in data_paths:
        x, y = fitting.prepare(model, load_npz(path), task, path)
        order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])
        result = episodes.run_episode(model, x[order], y[order], heldout, lr,
                                      metric=lambda m: fitting.evaluate(m, *heldout, task))
        results.append({"data": path, **result.to_json()})
    payload = {
        "metric": task.metric,
        "heldout": heldout_path,
        "heldout_samples": len(heldout[0]),
        "episodes": results,
        "counters": episodes.counters(model.state_header()),
    }
    return payload, model.save_state()


def _render_episodes(payload: dict, state_out: str | None) -> None:
    from tflm_train.cli import _console

    console = _console()
    accuracy = payload["metric"] == "accuracy"
    for i, episode in enumerate(payload["episodes"], 1):
        def metric(value):
            if value is None:
                return "-"
            return f"{100 * value:.1f}%" if accuracy else f"{value:.4g}"

        verdict = {"accept": "[green]accepted[/green]", "reject": "[yellow]rejected[/yellow]"}.get(
            episode["verdict"], f"[red]rolled back ({episode['verdict'].replace('_', ' ')})[/red]")
        console.print(
            f"episode {i} ({episode['data']}, {episode['steps']} steps): {verdict}; held-out loss "
            f"{episode['heldout_before']:.4f} -> {episode['heldout_after']:.4f}, {payload['metric']} "
            f"{metric(episode['metric_before'])} -> {metric(episode['metric_after'])}"
        )
    console.print(counters_line(payload["counters"]))
    if state_out:
        console.print(f"committed state saved to {state_out}")


def counters_line(counters: dict) -> str:
    return (
        f"counters: {counters['optimizer_steps']} optimizer steps, {counters['skipped_updates']} skipped updates, "
        f"{counters['skipped_samples']} skipped samples, {counters['rejected_episodes']} rejected episodes, "
        f"{counters['rollbacks']} rollbacks"
    )


def state_counters(model_bytes: bytes, state: bytes) -> dict:
    """The lifetime counters of a state file, checked against the model."""
    from tflm_train.converter.model_ir import Model
    from tflm_train.converter.state_format import validate
    from tflm_train.converter.training_info import training_info
    from tflm_train.episodes import counters

    info = training_info(Model.from_bytes(model_bytes))
    if info is None:
        raise UserError("--state applies to converted models only")
    return counters(validate(state, info.expected_header(), info.state_bytes))


def register(cli: click.Group) -> None:
    from tflm_train.cli import _read, emit_json
    from tflm_train.outputs import write_all

    @cli.command()
    @click.argument("model_path", metavar="MODEL")
    @click.option("--data", "data_paths", multiple=True, required=True,
                  help=".npz of new data: one episode per file (repeatable, in order).")
    @click.option("--heldout", "heldout_path", required=True,
                  help=".npz: the held-out buffer an episode must not do worse on.")
    @click.option("--heldout-size", type=int, default=32, show_default=True, help="Samples of --heldout used.")
    @click.option("--epochs", type=int, default=2, show_default=True, help="Passes over each episode's data.")
    @click.option("--lr", type=float, default=0.02, show_default=True, help="Learning rate.")
    @click.option("--state-in", default=None, help="The committed state to start from.")
    @click.option("--state-out", default=None, help="Save the committed state (with its counters) here.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed for the sample order.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def episodes(model_path, data_paths, heldout_path, heldout_size, epochs, lr, state_in, state_out, seed, as_json):
        """Train a converted MODEL in episodes: commit each only if the held-out check is not worse;
        roll back a diverging one (as tflmt::EpisodeMonitor does on the device)."""
        payload, state = run_episodes(_read(model_path), data_paths, heldout_path, heldout_size, epochs, lr,
                                      _read(state_in) if state_in else None, seed)
        if state_out:
            write_all({state_out: state})
        if as_json:
            emit_json(payload)
        else:
            _render_episodes(payload, state_out)

    from tflm_train.fleet import cli as fleet_cli

    fleet_cli.register(cli, _read, emit_json)
