"""`tflm-train demo`: the bundled example, end to end.

A digit classifier (int8, trained on scikit-learn's handwritten digits) meets
a new writer whose strokes are slanted and bold. The demo converts it for
LoRA training, fine-tunes it on 64 of the writer's digits inside the TFLM
interpreter, and reports - all measured - accuracy on the writer's held-out
digits and on the original style (forgetting), the training memory, and the
merged model. It does what these commands do:

  tflm-train convert model_int8.tflite -o digits_train.tflite --targets last:3
  tflm-train fit digits_train.tflite --data user_train.npz --epochs 8 --lr 0.02 --state-out user.state
  tflm-train evaluate digits_train.tflite --data user_test.npz --state user.state
  tflm-train merge digits_train.tflite --state user.state -o digits_personalized.tflite
"""

from __future__ import annotations

from pathlib import Path

from tflm_train import fitting
from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.merge import merge
from tflm_train.data import load_npz
from tflm_train.memory import smallest_arena
from tflm_train.outputs import strict_json, write_all
from tflm_train.plots import fit_png
from tflm_train.trainer import PlainModel, TrainableModel

EPOCHS = 8
LEARNING_RATE = 0.02


def example_dir() -> Path:
    import tflm_train

    # Every package directory: an editable install spreads the package over
    # site-packages and the checkout.
    for root in tflm_train.__path__:
        candidate = Path(root) / "examples" / "digits"
        if (candidate / "model_int8.tflite").is_file():
            return candidate
    raise FileNotFoundError("the bundled example is missing from the tflm_train package")


def run_demo(out_dir: Path, as_json: bool = False, console=None) -> dict:
    source = example_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    say = console.print if console is not None else (lambda *a, **k: None)

    base_bytes = (source / "model_int8.tflite").read_bytes()
    config = ConvertConfig(method="lora", r=4, targets="last:3")
    converted = convert(base_bytes, config)
    train_path = out_dir / "digits_train.tflite"
    files = {train_path: converted.model}  # written together at the end, all or nothing
    say(f"[bold]1. convert[/bold] model_int8.tflite -> {train_path}")
    for note in converted.metadata["notes"]:
        say(f"   {note}")

    model = TrainableModel(converted.model)
    task = fitting.task_of(model)
    sets = {name: load_npz(source / f"{name}.npz") for name in ("user_train", "user_test", "base_test")}
    prepared = {name: fitting.prepare(model, data, task, name) for name, data in sets.items()}
    before = {name: fitting.evaluate(model, *prepared[name], task) for name in ("user_test", "base_test")}

    say(f"[bold]2. fit[/bold] {len(sets['user_train'])} of the new writer's digits, {EPOCHS} epochs, lr {LEARNING_RATE}")
    x, y = prepared["user_train"]
    result = fitting.fit(model, x, y, task, EPOCHS, LEARNING_RATE, seed=0)
    after = {name: fitting.evaluate(model, *prepared[name], task) for name in ("user_test", "base_test")}
    state = model.save_state()
    files[out_dir / "user.state"] = state

    merged = merge(converted.model, state)
    files[out_dir / "digits_personalized.tflite"] = merged
    merged_model = PlainModel(merged)
    merged_accuracy = fitting.evaluate(merged_model, *prepared["user_test"], fitting.Task("accuracy", classes=10))

    files[out_dir / "fit.png"] = fit_png(
        result,
        title="digits, new writer",
        groups={
            "new writer\n(held out)": (before["user_test"], after["user_test"]),
            "original style\n(forgetting)": (before["base_test"], after["base_test"]),
            "training\nsamples": (result.metric_before, result.metric_after),
        },
    )
    write_all({str(path): data for path, data in files.items()})
    arena_inference = smallest_arena(base_bytes)
    arena_training = smallest_arena(converted.model)
    summary = {
        "accuracy_new_writer_before": before["user_test"],
        "accuracy_new_writer_after": after["user_test"],
        "accuracy_original_style_before": before["base_test"],
        "accuracy_original_style_after": after["base_test"],
        "accuracy_merged_new_writer": merged_accuracy,
        "test_samples": len(prepared["user_test"][0]),
        "steps": result.steps,
        "loss_first": result.epoch_losses[0],
        "loss_last": result.epoch_losses[-1],
        "trainable_params": model.info.param_count,
        "state_bytes": model.info.state_bytes,
        "arena_bytes_inference": arena_inference,
        "arena_bytes_training": arena_training,
        "out_dir": str(out_dir),
    }
    if as_json:
        print(strict_json(summary))
        return summary
    say(
        f"   loss {summary['loss_first']:.3f} (first epoch) -> {summary['loss_last']:.3f} (last epoch), "
        f"{result.steps} training steps in the TFLM interpreter"
    )
    say("[bold]3. results[/bold] (measured in the TFLM interpreter)")
    say(
        f"   new writer, {summary['test_samples']} held-out digits: accuracy "
        f"{100 * before['user_test']:.1f}% -> [bold green]{100 * after['user_test']:.1f}%[/bold green]"
    )
    say(
        f"   original style, {len(prepared['base_test'][0])} digits:    accuracy "
        f"{100 * before['base_test']:.1f}% -> {100 * after['base_test']:.1f}%"
    )
    say(f"   merged plain .tflite (builtin ops only), new writer: {100 * merged_accuracy:.1f}%")
    say(
        f"   memory: tensor arena {arena_inference:,} B for inference, {arena_training:,} B for training "
        f"(state {summary['state_bytes']:,} B: {summary['trainable_params']:,} trainable parameters)"
    )
    say(f"   files in {out_dir}/: digits_train.tflite, user.state, digits_personalized.tflite, fit.png")
    return summary
