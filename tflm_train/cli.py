"""The `tflm-train` command.

Every subcommand prints tables and progress on a terminal, or exactly one
JSON object on stdout with --json. Any failure the user can fix (bad file,
unsupported op, wrong data, state of another model) is one line on stderr
and exit code 2 (every such error derives from tflm_train.TflmTrainError);
no traceback unless TFLMT_DEBUG=1.

This module is a thin layer. Each command reads its options, does its work in
a function that returns a result and writes nothing (run_fit, run_evaluate,
run_report; convert's choice of conversion is tflm_train/planning.py), then
writes its output files all or none (tflm_train/outputs.py), then renders
the result as text or as one strict JSON object. The --method choices and
help come from the method registry (converter/methods/).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from tflm_train import __version__
from tflm_train.boards import BOARDS
from tflm_train.converter import methods
from tflm_train.converter.config import LOSSES, OPTIMIZERS, RECOMPUTE_MODES, HEAD_MODES, REGULARIZERS
from tflm_train.errors import TflmTrainError, UserError
from tflm_train.outputs import strict_json, write_all

EXIT_USER_ERROR = 2
# ConvertConfig fields that are one method's own option -> their flag here.
CLI_FLAGS = {"r": "--rank", "lora_alpha": "--alpha", "classes": "--classes", "head_mode": "--head-mode",
             "sparse_weights": "--sparse-weights", "sparse_biases": "--sparse-biases"}


def _method_help() -> str:
    """--method's help: each registered method's one line (its MethodSpec)."""
    return "; ".join(f"{spec.name}: {spec.help}" for spec in methods.specs())


def _default_targets_help() -> str:
    others = [f"{s.name}: {s.default_targets_help}" for s in methods.specs() if s.default_targets_help != "last:2"]
    return "; ".join(["last:2"] + others)


def emit_json(payload: dict) -> None:
    """One JSON object on stdout: strict JSON, non-finite numbers as null."""
    click.echo(strict_json(payload))


def _console():
    from rich.console import Console

    # Pipes and logs get full lines, not the 80 columns rich assumes.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflm-train")
def cli() -> None:
    """Make a .tflite model fine-tune itself on a microcontroller.

    \b
    tflm-train inspect model.tflite
    tflm-train convert model.tflite -o train.tflite --method lora
    tflm-train fit train.tflite --data user.npz --state-out user.state
    tflm-train evaluate train.tflite --data test.npz --state user.state
    tflm-train merge train.tflite --state user.state -o personalized.tflite
    """


# ---- inspect -------------------------------------------------------------------------
@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inspect(model_path: str, as_json: bool) -> None:
    """List a model's operators: index, type, name, shapes, parameters."""
    from tflm_train.inspection import describe

    report = describe(_read(model_path), model_path)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    table = Table(title=f"{model_path}: {len(report['layers'])} operators", title_justify="left")
    for column in ("#", "op", "name", "inputs", "outputs", "dtype", "params"):
        table.add_column(column, justify="right" if column in ("#", "params") else "left")
    for layer in report["layers"]:
        table.add_row(
            str(layer["index"]) + ("*" if layer["adaptable"] else ""),
            layer["op"],
            layer["name"],
            " ".join(_shape(s) for s in layer["input_shapes"]),
            " ".join(_shape(s) for s in layer["output_shapes"]),
            layer["dtype"],
            f"{layer['params']:,}" if layer["params"] else "",
        )
    console = _console()
    console.print(table)
    console.print(f"parameters: {report['params']:,}")
    adaptable = report["adaptable_layers"]
    console.print(
        f"* adaptable layers ({len(adaptable)}; --targets last:N counts these): {', '.join(map(str, adaptable)) or 'none'}"
    )
    if report.get("training"):
        training = report["training"]
        console.print(
            f"converted by tflm-train: method {training['method']}, loss {training['loss']}, "
            f"optimizer {training['optimizer']}; {training['trainable_params']:,} trainable parameters, "
            f"state {training['state_bytes']:,} bytes"
        )


def _shape(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# ---- convert -------------------------------------------------------------------------
@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("-o", "--output", "output_path", required=True, help="Converted .tflite to write.")
@click.option("--method", type=click.Choice(methods.names()), default="lora", show_default=True, help=_method_help())
@click.option("--rank", type=int, default=4, show_default=True, help="LoRA rank, or adapter bottleneck width.")
@click.option("--alpha", type=float, default=None, help="LoRA alpha; scale = alpha / rank.  [default: rank]")
@click.option(
    "--targets",
    default=None,
    help="Layers to adapt: last:N (N of the layers `inspect` marks adaptable), operator indices or names, "
    f"comma-separated.  [default: {_default_targets_help()}]",
)
@click.option("--loss", type=click.Choice(LOSSES), default=None, help="[default: fits the output]")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="For --optimizer momentum.")
@click.option("--accumulate", type=int, default=1, show_default=True, help="Samples per update (batch-N update).")
@click.option("--clip", type=float, default=0.0, show_default=True, help="Clip gradients to this global norm (0: off).")
@click.option("--classes", type=int, default=None, help="--method head: number of classes.")
@click.option("--head-mode", type=click.Choice(HEAD_MODES), default="replace", show_default=True,
              help="--method head: replace the last layer, or append a head after the output.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the adapters' initial values.")
@click.option(
    "--budget-bytes", type=int, default=None, help="--method sparse: pick the layers whose full weights train so that "
    "the measured training arena fits this many bytes."
)
@click.option("--sparse-weights", default="", help="--method sparse: layers whose full weights train (instead of a budget).")
# -- sparse by contribution (issue 17 item 4): which biases train, and the data that ranks the parts
@click.option("--sparse-biases", default="", help="--method sparse: layers whose bias trains (instead of a budget).  "
              "[default: every target layer]")
@click.option("--data", "data_path", default=None, help="--budget-bytes: representative .npz (x, y) whose short trial "
              "fine-tunes rank each layer's bias and weights by held-out loss gain per byte of arena.")
@click.option(
    "--recompute", type=click.Choice(RECOMPUTE_MODES), default="auto", show_default=True,
    help="Recompute the hidden rows of LoRA and adapters in the backward pass instead of keeping them "
    "(auto: where that lowers the activation peak).",
)
@click.option("--board", default=None, help="Pick targets and rank (or layers) so that training fits this board's SRAM.")
@click.option(
    "--regularizer", type=click.Choice(REGULARIZERS), default="none", show_default=True,
    help="Against forgetting: pull the trainable parameters toward their initial values (l2sp), weighted by "
    "the base task's Fisher diagonal (ewc, needs --retain-data). Applied by the optimizer op, on the device too.",
)
@click.option("--reg-lambda", type=float, default=0.0, show_default=True, help="The regularizer's strength.")
@click.option(
    "--retain-data", "retain_path", default=None,
    help="--regularizer ewc: base-task .npz (x, y) the Fisher diagonal is computed from.",
)
@click.option(  # integer training (converter/integer.py)
    "--arithmetic", type=click.Choice(["float", "int8"]), default="float", show_default=True,
    help="int8: integer training for FPU-less chips (LoRA on int8 FULLY_CONNECTED layers, integer SGD).",
)
@click.option("--rounding", type=click.Choice(["stochastic", "nearest"]), default="stochastic", show_default=True,
              help="--arithmetic int8: rounding of the integer SGD update.")
@click.option("--c-array", "c_array", default=None, help="Also write the model as a C header for firmware.")
# -- class weights of binary cross-entropy (streaming wake words: few positive invocations per clip)
@click.option("--pos-weight", type=float, default=1.0, show_default=True,
              help="--loss bce: weight of the positive targets' loss (carried by the loss op).")
@click.option("--neg-weight", type=float, default=1.0, show_default=True,
              help="--loss bce: weight of the negative targets' loss.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def convert(
    model_path: str,
    output_path: str,
    method: str,
    rank: int,
    alpha: float | None,
    targets: str | None,
    loss: str | None,
    optimizer: str,
    momentum: float,
    accumulate: int,
    clip: float,
    classes: int | None,
    head_mode: str,
    seed: int,
    budget_bytes: int | None,
    sparse_weights: str,
    sparse_biases: str,
    data_path: str | None,
    recompute: str,
    board: str | None,
    regularizer: str,
    reg_lambda: float,
    retain_path: str | None,
    arithmetic: str,
    rounding: str,
    c_array: str | None,
    pos_weight: float,
    neg_weight: float,
    as_json: bool,
) -> None:
    """Rewrite MODEL so that it trains itself on the device."""
    from tflm_train.converter import ConvertConfig, OptimizerConfig
    from tflm_train.firmware import c_header
    from tflm_train.planning import plan_convert

    fields = {"r": rank, "lora_alpha": alpha, "classes": classes, "head_mode": head_mode,
              "sparse_weights": sparse_weights, "sparse_biases": sparse_biases}
    spec = methods.get(method)
    for other in methods.specs():  # in the CLI's words; ConvertConfig checks the same
        for option, neutral in other.options.items():
            if option not in spec.options and fields.get(option, neutral) != neutral:
                owners = " / ".join(s.name for s in methods.specs() if option in s.options)
                raise UserError(f"{CLI_FLAGS.get(option, option)} is an option of --method {owners}, not of {method}")
    config = ConvertConfig(
        method=method,
        targets=targets,
        loss=loss,
        optimizer=OptimizerConfig(kind=optimizer, accumulate=accumulate, clip_norm=clip, momentum=momentum),
        seed=seed,
        recompute=recompute,
        regularizer=regularizer,
        reg_lambda=reg_lambda,
        arithmetic=arithmetic,
        rounding=rounding,
        pos_weight=pos_weight,
        neg_weight=neg_weight,
        **fields,
    )
    model_bytes = _read(model_path)
    fisher_note = _ewc_fisher(model_bytes, config, retain_path, board, budget_bytes)
    console = None if as_json else _console()
    model_bytes = _read(model_path)
    representative = None
    if data_path is not None:
        if (budget_bytes is None and board is None) or method != "sparse":
            raise UserError("--data ranks a sparse update: use it with --method sparse --budget-bytes (or --board)")
        from tflm_train.data import check_inputs, load_npz
        from tflm_train.trainer import PlainModel

        dataset = load_npz(data_path)
        representative = (check_inputs(dataset, PlainModel(model_bytes).sample_shape, data_path), dataset.y)
    plan = plan_convert(
        model_bytes, config, board=board, budget_bytes=budget_bytes,
        on_try=None if console is None else (lambda line: console.print(f"  {line}")),
        data=representative,
    )
    files = {output_path: plan.result.model}
    if c_array:
        files[c_array] = c_header(plan.result.model, plan.result.metadata, Path(output_path).stem).encode()
    write_all(files)
    summary = {"output": output_path, **plan.summary()}
    if "regularizer" in plan.result.metadata:
        summary["regularizer"] = plan.result.metadata["regularizer"]
    if fisher_note is not None:
        summary["notes"] = [fisher_note] + list(summary.get("notes", []))
    if as_json:
        emit_json(summary)
    else:
        _render_convert(console, plan, summary, output_path, c_array)


def _ewc_fisher(model_bytes: bytes, config, retain_path: str | None, board: str | None, budget_bytes: int | None):
    """For --regularizer ewc: computes the Fisher diagonal into config.fisher
    (measured in the interpreter, tflm_train/continual.py); returns a note."""
    if config.regularizer != "ewc":
        if retain_path is not None:
            raise UserError("--retain-data is the Fisher data of --regularizer ewc (fit has its own --retain-data)")
        return None
    if retain_path is None:
        raise UserError("--regularizer ewc needs --retain-data D.npz: base-task samples for its Fisher diagonal")
    if board is not None or budget_bytes is not None:
        raise UserError("--regularizer ewc fixes the adapters before the board fit: use --targets and --rank with it")
    from tflm_train import continual
    from tflm_train.memory import check_prepares

    check_prepares(model_bytes)  # a corrupt model can crash stock kernels: find out in a child first
    config.fisher, samples = continual.fisher_from_npz(model_bytes, config, retain_path)
    return (
        f"EWC: Fisher diagonal from {samples} samples of {retain_path} (mean {float(config.fisher.mean()):.3g}, "
        f"max {float(config.fisher.max()):.3g}), stored in the model ({4 * config.fisher.size:,} bytes of flash)"
    )


def _render_convert(console, plan, summary: dict, output_path: str, c_array: str | None) -> None:
    for note in summary["notes"]:
        console.print(f"  {note}")
    console.print(
        f"wrote {output_path} ({summary['model_bytes']:,} bytes): {summary['trainable_params']:,} trainable "
        f"parameters, training state {summary['state_bytes']:,} bytes ({summary['optimizer']})"
    )
    if plan.picked is not None:
        console.print(f"for {plan.board}: picked {plan.picked}; measured training arena {plan.arena_bytes_training:,} B")
    if plan.budget_bytes is not None:
        if plan.sparse is not None:
            chosen = plan.sparse
            how = ("by held-out loss gain per byte (trial fine-tunes on --data)" if chosen["ranking"] == "contribution"
                   else "from the output back (no --data: contribution not measured)")
            console.print(f"sparse choice, {how}:")
            console.print(f"  biases of: {', '.join(chosen['bias_layers'])}")
            console.print(f"  full weights of: {', '.join(chosen['weight_layers']) or 'none'}")
            if chosen["loss_before"] is not None:
                accuracy = ""
                if chosen["accuracy_before"] is not None:
                    accuracy = f", accuracy {chosen['accuracy_before']:.1%} -> {chosen['accuracy_after']:.1%}"
                console.print(f"  trial of the choice: held-out loss {chosen['loss_before']:.4f} -> "
                              f"{chosen['loss_after']:.4f}{accuracy}")
        console.print(
            f"measured training arena {plan.arena_bytes_training:,} B, within the {plan.budget_bytes:,}-byte budget"
        )
    if c_array:
        console.print(f"wrote {c_array}")


# ---- fit -----------------------------------------------------------------------------------
@dataclass
class FitRun:
    """What `fit` did: the result, the state to save, the numbers to print."""

    result: object  # tflm_train.fitting.FitResult
    payload: dict
    state: bytes
    samples: int
    epochs: int
    held_out: list[str] = field(default_factory=list)
    retain: str | None = None  # --retain-data: the original task's file


# ---- streaming models: clip files (tflm_train/streaming.py, docs/streaming.md) -----------------
def _streaming_options(command):
    """fit / evaluate options of the detection rule, for clip files."""
    for option in reversed([
        click.option("--manifest", default=None, help="Clip files: microWakeWord JSON manifest giving the detection "
                     "rule (micro.sliding_window_size, micro.probability_cutoff)."),
        click.option("--window", type=int, default=None, help="Clip files: probabilities averaged per detection "
                     "(overrides the manifest).  [default: 1]"),
        click.option("--cutoff", type=float, default=None, help="Clip files: a window mean above this is a "
                     "detection (overrides the manifest).  [default: 0.5]"),
    ]):
        command = option(command)
    return command


def _is_clip_file(path: str) -> bool:
    from tflm_train.streaming import is_clip_file

    return is_clip_file(path)


def _fit_clips(model_bytes, data_path, eval_paths, epochs, lr, initial, seed, state_out, rule_options, as_json):
    from tflm_train import streaming

    rule = streaming.detection_rule(*rule_options)
    result, payload, state = streaming.run_fit_clips(model_bytes, data_path, eval_paths, epochs, lr, initial, seed, rule)
    write_all({state_out: state} if state_out else {})
    if as_json:
        emit_json(payload)
        return
    console = _console()
    console.print(
        f"{result.clips} clips x {epochs} epochs: {result.steps} trained invocations "
        f"({result.trained_invocations} of {result.invocations} per epoch); mean loss {payload['loss_first']:.4f} "
        f"in the first epoch, {payload['loss_last']:.4f} in the last"
    )
    console.print(f"detection rule: mean of the last {rule.window} probabilities > {rule.cutoff:g} ({rule.source})")
    console.print(f"{data_path} before: {result.before.line()}")
    console.print(f"{data_path} after:  {result.after.line()}")
    for path, (before, after) in result.held_out.items():
        console.print(f"{path} before: {before.line()}")
        console.print(f"{path} after:  {after.line()}")
    console.print(f"training memory (measured, TFLM arena): {payload['arena_bytes']:,} bytes, of which "
                  f"training state {payload['state_bytes']:,}")
    if state_out:
        console.print(f"state saved to {state_out}")


def _evaluate_clips(model_bytes, data_path, state, rule_options, as_json):
    from tflm_train import streaming

    rule = streaming.detection_rule(*rule_options)
    outcome = streaming.run_evaluate_clips(model_bytes, data_path, state, rule)
    if as_json:
        emit_json(outcome)
        return
    found = streaming.Detections(outcome["positives"], outcome["detected"], outcome["negatives"],
                                 outcome["false_accepts"])
    _console().print(f"{found.line()} ({outcome['clips']} clips, {outcome['invocations']} invocations; "
                     f"mean of the last {rule.window} probabilities > {rule.cutoff:g}, {rule.source})")


@dataclass
class ContinualOptions:
    """fit's options against forgetting (tflm_train/continual.py)."""

    retain_path: str | None = None  # original-task .npz: metric before / after
    replay_path: str | None = None  # original-task .npz offered to the replay buffer
    replay_bytes: int | None = None  # the buffer's byte budget
    replay_every: int = 1  # one replayed sample per this many new ones


def run_fit(
    model_bytes: bytes, data_path: str, eval_paths, epochs: int, lr: float, state_in: bytes | None, seed: int,
    on_step=None, on_start=None, warn=None, continual: ContinualOptions | None = None,
) -> FitRun:
    """Trains a converted model on an .npz through the interpreter (no output written)."""
    from tflm_train import fitting
    from tflm_train.data import load_npz
    from tflm_train.memory import smallest_arena
    from tflm_train.runtime import check_integrity
    from tflm_train.trainer import TrainableModel

    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    if not (lr >= 0):
        raise UserError("--lr must be >= 0")
    # A damaged model can crash stock kernels: refused by its checksum, or (no checksum) run in a child first.
    check_integrity(model_bytes, guard="all")
    model = TrainableModel(model_bytes)
    if model.streams and warn is not None:
        warn(
            "keeps a stream in resource variables, so each sample is fed as the next frame of one stream; "
            "give a clip file instead (docs/streaming.md), which trains clip by clip"
        )
    if state_in is not None:
        model.load_state(state_in)
    task = fitting.task_of(model)
    x, y = fitting.prepare(model, load_npz(data_path), task, data_path)
    held_out = {path: fitting.prepare(model, load_npz(path), task, path) for path in eval_paths}
    continual = continual or ContinualOptions()
    if continual.retain_path is not None:
        held_out[continual.retain_path] = fitting.prepare(model, load_npz(continual.retain_path), task,
                                                          continual.retain_path)
    replay = _replay_buffer(model, task, continual, seed)
    if on_start is not None:
        on_start(epochs * len(x))
    result = fitting.fit(model, x, y, task, epochs, lr, seed, held_out=held_out, on_step=on_step, replay=replay)
    header = model.state_header()
    payload = {
        "steps": result.steps,
        "loss_first": result.epoch_losses[0],
        "loss_last": result.epoch_losses[-1],
        "metric": result.metric,
        "metric_before": result.metric_before,
        "metric_after": result.metric_after,
        "optimizer_steps": header.step,
        "skipped_updates": header.skipped,
        "skipped_samples": header.skipped_samples,
        "arena_bytes": smallest_arena(model_bytes),
        "state_bytes": model.info.state_bytes,
    }
    evals = {path: scores for path, scores in result.held_out.items() if path in eval_paths}
    if evals:
        payload["eval"] = [
            {"data": path, "metric_before": before, "metric_after": after} for path, (before, after) in evals.items()
        ]
    if continual.retain_path is not None:
        before, after = result.held_out[continual.retain_path]
        # Forgetting: how much the original task lost (accuracy: points; mse: how much it rose).
        payload["retain"] = {"data": continual.retain_path, "metric_before": before, "metric_after": after,
                             "forgetting": before - after if result.metric == "accuracy" else after - before}
    if replay is not None:
        payload["replay"] = {"data": continual.replay_path, "budget_bytes": continual.replay_bytes,
                             "bytes": replay.bytes_used, "record_bytes": replay.record_bytes,
                             "capacity": replay.capacity, "held": replay.count, "offered": replay.seen,
                             "every": replay.every, "steps": result.replay_steps}
    return FitRun(result, payload, model.save_state(), len(x), epochs, list(eval_paths), continual.retain_path)


def _replay_buffer(model, task, options: ContinualOptions, seed: int):
    """The replay buffer --replay-data asks for, filled (or None)."""
    if options.replay_path is None:
        if options.replay_bytes is not None or options.replay_every != 1:
            raise UserError("--replay-bytes and --replay-every need --replay-data")
        return None
    if options.replay_bytes is None:
        raise UserError("--replay-data needs --replay-bytes N: the replay buffer's byte budget")
    from tflm_train import continual, fitting
    from tflm_train.data import load_npz

    x, y = fitting.prepare(model, load_npz(options.replay_path), task, options.replay_path)
    return continual.fill_replay(model, x, y, options.replay_bytes, options.replay_every, seed=seed)


@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_path", required=True, help=".npz with x (samples) and y (labels or targets).")
@click.option(
    "--eval-data", "eval_paths", multiple=True, help="Held-out .npz (repeatable): its metric before and after, too."
)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate (a model input).")
@click.option("--state-in", default=None, help="Start from this saved state.")
@click.option("--state-out", default=None, help="Save the trained state here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the sample order (and the replay buffer).")
@click.option("--plot", default=None, help="Write the loss curve and metrics as a PNG.")
@click.option(
    "--retain-data", "retain_path", default=None,
    help="Original-task .npz: its metric before and after, i.e. what fine-tuning made the model forget.",
)
@click.option(
    "--replay-data", "replay_path", default=None,
    help="Original-task .npz offered to a replay buffer (reservoir sampling, as device/replay.h does); "
    "replayed samples train between the new ones.",
)
@click.option("--replay-bytes", type=int, default=None, help="The replay buffer's byte budget (int8 records for an int8 model).")
@click.option("--replay-every", type=int, default=1, show_default=True, help="One replayed sample per this many new ones.")
@_streaming_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit(
    model_path: str,
    data_path: str,
    eval_paths: tuple[str, ...],
    epochs: int,
    lr: float,
    state_in: str | None,
    state_out: str | None,
    seed: int,
    plot: str | None,
    retain_path: str | None,
    replay_path: str | None,
    replay_bytes: int | None,
    replay_every: int,
    manifest: str | None,
    window: int | None,
    cutoff: float | None,
    as_json: bool,
) -> None:
    """Fine-tune a converted MODEL on local data, in the TFLM interpreter.

    A clip file (streaming models, docs/streaming.md) trains clip by clip."""
    model_bytes = _read(model_path)
    initial = _read(state_in) if state_in else None
    if _is_clip_file(data_path):
        if retain_path or replay_path or plot:
            raise UserError("--retain-data, --replay-data and --plot take x/y samples, not clip files")
        _fit_clips(model_bytes, data_path, eval_paths, epochs, lr, initial, seed, state_out,
                   (manifest, window, cutoff), as_json)
        return
    continual = ContinualOptions(retain_path, replay_path, replay_bytes, replay_every)

    def warn(message: str) -> None:
        click.echo(f"tflm-train: warning: {model_path} {message}", err=True)

    arguments = (model_bytes, data_path, eval_paths, epochs, lr, initial, seed)
    if as_json or not sys.stderr.isatty():
        run = run_fit(*arguments, warn=warn, continual=continual)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=_console().__class__(stderr=True),
            transient=True,
        ) as progress:
            bar = progress.add_task("fit", total=None, loss=float("nan"))
            run = run_fit(
                *arguments, warn=warn, continual=continual,
                on_start=lambda total: progress.update(bar, total=total),
                on_step=lambda step, loss: progress.update(bar, completed=step, loss=loss),
            )
    files = {}
    if state_out:
        files[state_out] = run.state
    if plot:
        from tflm_train.plots import fit_png

        groups = {"training data": (run.result.metric_before, run.result.metric_after)}
        for path, (before, after) in run.result.held_out.items():
            groups[Path(path).stem] = (before, after)
        files[plot] = fit_png(run.result, title=Path(model_path).name, groups=groups)
    write_all(files)  # only now, all or nothing: the work above succeeded
    if as_json:
        emit_json(run.payload)
    else:
        _render_fit(_console(), run, data_path, state_out, plot)


def _render_fit(console, run: FitRun, data_path: str, state_out: str | None, plot: str | None) -> None:
    result, payload = run.result, run.payload
    console.print(
        f"{result.steps} steps ({run.epochs} epochs x {run.samples} samples): mean loss {payload['loss_first']:.4f} "
        f"in the first epoch, {payload['loss_last']:.4f} in the last"
    )
    console.print(_metric_line(result.metric, result.metric_before, result.metric_after, data_path))
    for path, (before, after) in result.held_out.items():
        if path != run.retain:
            console.print(_metric_line(result.metric, before, after, path))
    if "retain" in payload:
        retain = payload["retain"]
        console.print(_metric_line(result.metric, retain["metric_before"], retain["metric_after"], run.retain)
                      + " (original task: " + _forgetting(result.metric, retain["forgetting"]) + ")")
    if "replay" in payload:
        replay = payload["replay"]
        console.print(
            f"replay buffer: {replay['held']} of {replay['offered']} original-task samples in {replay['bytes']:,} "
            f"bytes ({replay['record_bytes']} per sample), {replay['steps']} replayed steps (one per "
            f"{replay['every']} new)"
        )
    console.print(
        f"training memory (measured, TFLM arena): {payload['arena_bytes']:,} bytes, of which "
        f"training state {payload['state_bytes']:,}"
    )
    if payload["skipped_updates"] or payload["skipped_samples"]:
        console.print(
            f"[yellow]skipped: {payload['skipped_updates']} updates (not finite), "
            f"{payload['skipped_samples']} samples (non-finite or out-of-range values)[/yellow]"
        )
    if state_out:
        console.print(f"state saved to {state_out}")
    if plot:
        console.print(f"plot saved to {plot}")


def _forgetting(metric: str, forgetting: float) -> str:
    if forgetting == 0:
        return "nothing forgotten"
    if metric == "accuracy":
        return f"forgot {100 * forgetting:.1f} points" if forgetting > 0 else f"gained {-100 * forgetting:.1f} points"
    return f"mse rose by {forgetting:.5g}" if forgetting > 0 else f"mse fell by {-forgetting:.5g}"


def _metric_line(metric: str, before: float, after: float, where: str) -> str:
    if metric == "accuracy":
        return f"accuracy on {where}: {100 * before:.1f}% before, {100 * after:.1f}% after"
    return f"mse on {where}: {before:.5g} before, {after:.5g} after"


# ---- evaluate ----------------------------------------------------------------------------------
def run_evaluate(model_bytes: bytes, data_path: str, state: bytes | None) -> dict:
    """The model's metric on an .npz: {"metric", "value", "n"}."""
    from tflm_train import fitting
    from tflm_train.converter.model_ir import Model
    from tflm_train.converter.training_info import training_info
    from tflm_train.data import load_npz
    from tflm_train.runtime import check_integrity
    from tflm_train.trainer import PlainModel, TrainableModel

    converted = training_info(Model.from_bytes(model_bytes)) is not None
    data = load_npz(data_path)
    # A damaged model can crash stock kernels: refused by its checksum, or (no checksum) run in a child first.
    check_integrity(model_bytes, guard="all")
    if converted:
        model = TrainableModel(model_bytes)
        if state is not None:
            model.load_state(state)
        task = fitting.task_of(model)
    else:
        if state is not None:
            raise UserError("--state applies to converted models only")
        model = PlainModel(model_bytes)
        task = fitting.plain_task(model, data.y)
    x, y = fitting.prepare(model, data, task, data_path)
    outcome = {"metric": task.metric, "value": fitting.evaluate(model, x, y, task), "n": len(x)}
    if converted and state is not None:  # the lifetime counters the state carries (lifecycle)
        from tflm_train.episodes import counters

        outcome["counters"] = counters(model.state_header())
    return outcome


@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_path", required=True, help=".npz with x and y.")
@click.option("--state", "state_path", default=None, help="Converted models: evaluate with this state.")
@_streaming_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(model_path: str, data_path: str, state_path: str | None, manifest: str | None, window: int | None,
             cutoff: float | None, as_json: bool) -> None:
    """Accuracy or MSE of any model (original, converted, merged) on data;
    detections per clip on a clip file (streaming models, docs/streaming.md)."""
    if _is_clip_file(data_path):
        _evaluate_clips(_read(model_path), data_path, _read(state_path) if state_path else None,
                        (manifest, window, cutoff), as_json)
        return
    outcome = run_evaluate(_read(model_path), data_path, _read(state_path) if state_path else None)
    if as_json:
        emit_json(outcome)
    elif outcome["metric"] == "accuracy":
        _console().print(f"accuracy {100 * outcome['value']:.2f}% on {outcome['n']} samples")
    else:
        _console().print(f"mse {outcome['value']:.6g} on {outcome['n']} samples")
    if "counters" in outcome and not as_json:
        _console().print(_lifecycle_cli.counters_line(outcome["counters"]))


# ---- merge -------------------------------------------------------------------------------------
@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--state", "state_path", required=True, help="Trained state to fold in.")
@click.option("-o", "--output", "output_path", required=True, help="Plain .tflite to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def merge(model_path: str, state_path: str, output_path: str, as_json: bool) -> None:
    """Fold a trained state (LoRA, bias, head, sparse) into a plain inference .tflite."""
    from tflm_train.converter.merge import merge as run_merge

    merged = run_merge(_read(model_path), _read(state_path))
    write_all({output_path: merged})
    if as_json:
        emit_json({"output": output_path, "model_bytes": len(merged)})
    else:
        _console().print(f"wrote {output_path} ({len(merged):,} bytes, builtin ops only)")


# ---- report ------------------------------------------------------------------------------------
def run_report(model_bytes: bytes, board: str | None):
    """Measures a converted model's memory; with a board, whether it fits.

    Returns (Report, JSON payload, board profile or None, problems)."""
    from tflm_train import boards
    from tflm_train.memory_report import fits
    from tflm_train.memory_report import report as measure

    profile = None
    if board is not None:
        try:
            profile = boards.board(board)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    result = measure(model_bytes)
    payload = result.to_json()
    problems = fits(result, profile) if profile is not None else []
    if profile is not None:
        payload["board"] = {"name": profile.name, "sram_bytes": profile.sram_bytes,
                            "flash_bytes": profile.flash_bytes, "fits": not problems}
    return result, payload, profile, problems


@cli.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--board", default=None, help="Check the fit: " + ", ".join(BOARDS) + ".")
@click.option("--plot", default=None, help="Write the memory breakdown as a PNG bar chart.")
@click.option("--target", "device_core", type=click.Choice(["cortex-m4", "cortex-m55"]), default=None,
              help="Also measure on this core under QEMU: 32-bit arena, instructions (needs TFLM_DIR).")
@click.option("--state", "state_path", default=None, help="Also show this state's counters (skipped, rejected, rollbacks).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def report(model_path: str, board: str | None, plot: str | None, as_json: bool, device_core: str | None,
           state_path: str | None = None) -> None:
    """Training and inference memory of a converted MODEL, measured in TFLM."""
    from tflm_train.memory_report import breakdown_png

    counters = _lifecycle_cli.state_counters(_read(model_path), _read(state_path)) if state_path else None
    result, payload, profile, problems = run_report(_read(model_path), board)
    if counters is not None:
        payload["counters"] = counters
    if device_core:  # tflm_train/device_run.py
        from tflm_train import device_run, qemu

        try:
            payload["device"] = device_run.device_report(_read(model_path), device_core, None)
        except qemu.DeviceError as exc:
            raise UserError(str(exc)) from None
    if plot:  # only now that every measurement succeeded
        write_all({plot: breakdown_png(result, title=Path(model_path).name)})
    if as_json:
        emit_json(payload)
    else:
        from rich.table import Table

        console = _console()
        table = Table(title=f"{model_path}: training memory (measured tensor arena)", title_justify="left")
        table.add_column("part")
        table.add_column("bytes", justify="right")
        for name, size in result.breakdown.items():
            table.add_row(name, f"{size:,}")
        table.add_row("[bold]training arena[/bold]", f"[bold]{result.arena_bytes_training:,}[/bold]")
        table.add_row("inference arena (base model)", f"{result.arena_bytes_inference:,}")
        console.print(table)
        console.print(
            f"flash: {result.flash_bytes:,} bytes of model; parameters: {result.base_params:,} base, "
            f"{result.trainable_params:,} trainable ({payload['base_to_trainable']:.0f}:1); optimizer state "
            f"{result.optimizer_state_bytes:,} bytes; live activations at the step's peak (computed): "
            f"{result.live_peak_bytes:,} bytes"
        )
        console.print("(breakdown parts are computed from the graph at the peak; everything else is the measured rest)")
        if profile is not None:
            if problems:
                console.print(f"[red]does not fit {profile.description}[/red]")
            else:
                headroom = profile.sram_bytes - result.arena_bytes_training
                console.print(f"fits {profile.description}: {headroom:,} bytes of SRAM left for the firmware")
        if plot:
            console.print(f"plot saved to {plot}")
        for line in device_run.device_report_lines(payload["device"]) if device_core else []:
            console.print(line)
        if counters is not None:
            console.print(_lifecycle_cli.counters_line(counters))
    if problems:
        raise UserError("; ".join(problems))

# ---- selfcheck / demo ------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def selfcheck(as_json: bool) -> None:
    """Run a training kernel inside the TFLM interpreter and check its numbers."""
    from tflm_train import selfcheck as check

    result = check.run()
    if as_json:
        emit_json(result)
    else:
        verdict = "ok" if result["ok"] else "WRONG"
        click.echo(
            f"{result['kernel']} inside the tflite-micro interpreter: "
            f"max relative error vs numpy {result['max_relative_error']:.2e} ({verdict})"
        )
    if not result["ok"]:
        raise UserError("kernel self-check failed: results differ from numpy")


@cli.command()
@click.option("--out", "out_dir", default="tflm-train-demo", show_default=True, help="Where to write the files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def demo(out_dir: str, as_json: bool) -> None:
    """Convert and fine-tune the bundled example end to end."""
    from tflm_train.demo import run_demo

    run_demo(Path(out_dir), as_json=as_json, console=None if as_json else _console())


# ---- device: QEMU runs and host_trainer data (tflm_train/device_run.py) -----------------------
@cli.group()
def device() -> None:
    """Train on Cortex-M under QEMU; write data files for firmware."""


@device.command("run")
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_path", required=True, help=".npz with x and y (samples train in file order).")
@click.option("--target", "core", type=click.Choice(["cortex-m4", "cortex-m3", "cortex-m55"]), default="cortex-m4",
              show_default=True, help="Core (QEMU board mps2-an386, mps2-an385, mps3-an547).")
@click.option("--steps", type=int, default=None, help="Training steps.  [default: one per sample]")
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate.")
@click.option("--tflm-dir", default=None, help="tflite-micro checkout.  [default: $TFLM_DIR]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def device_run_command(model_path: str, data_path: str, core: str, steps: int | None, lr: float,
                       tflm_dir: str | None, as_json: bool) -> None:
    """Train a converted MODEL on a Cortex-M core in QEMU and compare every
    step with the same training in the TFLM x86 interpreter."""
    from tflm_train.device_run import device_run
    from tflm_train.qemu import DeviceError

    try:
        result = device_run(_read(model_path), data_path, core, steps, lr, tflm_dir)
    except DeviceError as exc:
        raise UserError(str(exc)) from None
    payload = result.to_json()
    if as_json:
        emit_json(payload)
    else:
        from rich.table import Table

        console = _console()
        table = Table(title=f"{model_path} on {core} (QEMU {payload['board']}) vs x86", title_justify="left")
        for column in ("step", "x86 loss", "device loss", "bits", "instructions"):
            table.add_column(column, justify="right")
        for i, (a, b) in enumerate(zip(result.host_losses, result.device.losses)):
            same = "same" if i not in result.differing_losses else "[red]differ[/red]"
            table.add_row(str(i), f"{a:.9g}", f"{b:.9g}", same, f"{result.device.step_instructions[i]:,}")
        console.print(table)
        state = "identical" if result.state_identical else \
            f"[red]differs[/red] (max |difference| {payload['max_state_difference']:.3g})"
        console.print(f"final state: {state}; CRC-32 {payload['state_crc32']} on the device, "
                      f"{payload['host_state_crc32']} on x86")
        console.print(f"arena used (32-bit, arena_used_bytes): {payload['arena_used_bytes']:,} bytes")
        console.print(f"one inference: {payload['infer_instructions']:,} instructions; mean training step: "
                      f"{sum(result.device.step_instructions) // max(1, len(result.device.step_instructions)):,} "
                      "instructions (QEMU -icount: instructions, not cycles)")
    if not result.identical:
        raise UserError(f"{core} differs from x86: {len(result.differing_losses)} of {result.steps} losses, "
                        f"state {'identical' if result.state_identical else 'different'}")


@device.command("data")
@click.argument("data_path", metavar="DATA")
@click.option("--model", "model_path", required=True, help="Converted model the data is for (checks shapes).")
@click.option("-o", "--output", "output_path", required=True, help="TMTD file to write (host_trainer's format).")
def device_data_command(data_path: str, model_path: str, output_path: str) -> None:
    """Write DATA (.npz) as the TMTD file tflm_ops/examples/host_trainer reads."""
    from tflm_train.device_run import load_training_data, write_tmtd

    data = load_training_data(_read(model_path), data_path)
    write_all({output_path: write_tmtd(data)})
    click.echo(f"wrote {output_path}: {len(data)} samples of {data.x.shape[1]} values")


# ---- lifecycle: episodes, fleet (tflm_train/lifecycle_cli.py) ---------------------------------
from tflm_train import lifecycle_cli as _lifecycle_cli  # noqa: E402  (needs the helpers above)

_lifecycle_cli.register(cli)


def main(argv: list[str] | None = None) -> int:
    debug = os.environ.get("TFLMT_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="tflm-train", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("tflm-train: aborted", err=True)
        return 130
    except click.exceptions.ClickException as exc:  # usage errors
        click.echo(f"tflm-train: error: {exc.format_message()}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except TflmTrainError as exc:  # anything the user can fix
        if debug:
            raise
        click.echo(f"tflm-train: error: {exc}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        click.echo("tflm-train: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: still one line, but say it is ours
        if debug:
            raise
        click.echo(
            f"tflm-train: internal error: {type(exc).__name__}: {exc} (rerun with TFLMT_DEBUG=1 for a traceback)",
            err=True,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
