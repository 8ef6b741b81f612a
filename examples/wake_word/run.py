"""Adapts the shipped hey_jarvis (pymicro-wakeword 2.5.0) to a voice it misses,
with the tflm-train command line, and measures it on held-out clips.

    python examples/wake_word/run.py [--cache DIR] [--epochs N] [--lr F] ...

1. synthesizes the clips with espeak-ng (examples/wake_word/data.py; cached in
   DIR, default ~/.cache/tflm-train/wake_word, so a second run starts at 2);
2. writes them as clip files (docs/streaming.md);
3. `tflm-train convert` hey_jarvis for training;
4. `tflm-train fit` on the adapted voice's training clips plus a few clips of
   the voices the model already knows (against forgetting), reporting the
   held-out clips before and after;
5. `tflm-train merge` and `tflm-train evaluate` the merged plain .tflite;
6. prints detections and false accepts, per voice.

Everything runs in the TFLM interpreter on the int8 model. The speech is
synthesized (espeak-ng), not recorded.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402  (the example's own module)


def tflm_train(*args: str) -> dict:
    """Runs one tflm-train command with --json; its JSON, or exits with its error."""
    exe = shutil.which("tflm-train", path=str(Path(sys.executable).parent)) or shutil.which("tflm-train")
    command = [exe] if exe else [sys.executable, "-c", "from tflm_train.cli import main; main()"]
    run = subprocess.run([*command, *args, "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"tflm-train {args[0]} failed: {run.stderr.strip() or run.stdout.strip()}")
    return json.loads(run.stdout)


def clip_file(path: Path, clips: data.Clips) -> Path:
    """The clip-file format of docs/streaming.md: int8 features (the model's
    own input values), lengths, per-invocation labels (-1: no label)."""
    np.savez(path, features=clips.features, lengths=clips.lengths, labels=clips.labels.astype(np.float32))
    return path


def rates(per_clip: list[bool], clips: data.Clips, voices: list[str] | None = None) -> tuple[str, str]:
    """Detections on positive clips and false accepts on negative ones, for
    the clips of `voices` (all when None)."""
    hit = np.asarray(per_clip, bool)
    keep = np.array([voices is None or v in voices for v in clips.voices])
    pos, neg = keep & clips.is_positive, keep & ~clips.is_positive

    def fmt(n: int, d: int) -> str:
        return f"{n}/{d} ({100 * n / d:.1f}%)" if d else "-"

    return fmt(int(hit[pos].sum()), int(pos.sum())), fmt(int(hit[neg].sum()), int(neg.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tflm-train" / "wake_word")
    parser.add_argument("--work", type=Path, default=None, help="where the run's files go (default CACHE/run)")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--targets", default="last:5")
    parser.add_argument("--rank", default="8")
    parser.add_argument("--epochs", default="4")
    parser.add_argument("--lr", default="0.01")
    parser.add_argument("--pos-weight", default="2")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--regularizer", default="none", help="none, l2sp (toward the shipped weights) or ewc")
    parser.add_argument("--reg-lambda", default="0")
    args = parser.parse_args()

    models = importlib.resources.files("pymicro_wakeword") / "models"
    base, manifest = Path(str(models / "hey_jarvis.tflite")), Path(str(models / "hey_jarvis.json"))
    rule = json.loads(manifest.read_text())["micro"]
    work = args.work or args.cache / "run"
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    print(f"1. clips (espeak-ng speech, synthesized; cache {args.cache})")
    scale, zero_point = 0.10196078568696976, -128  # hey_jarvis' int8 input quantization
    clips = data.load_or_build(args.cache, scale, zero_point, log=print)
    train = data.Clips.concat([clips["adapt_train"], clips["known_train"]])
    held = {"adapt_test": clips["adapt_test"], "known_test": clips["known_test"]}
    paths = {name: clip_file(work / f"{name}.npz", c) for name, c in {"train": train, **held}.items()}
    print(f"   adapted voice {data.ADAPTED_VOICE}: {len(clips['adapt_train'])} training clips, "
          f"{len(held['adapt_test'])} held out; known voices {', '.join(data.KNOWN_VOICES)}: "
          f"{len(clips['known_train'])} training clips, {len(held['known_test'])} held out")

    print(f"2. convert {base.name}: {args.method} on {args.targets}, bce, positive weight {args.pos_weight}")
    converted = work / "hey_jarvis_train.tflite"
    convert_args = ["convert", str(base), "-o", str(converted), "--method", args.method, "--targets", args.targets,
                    "--loss", "bce", "--pos-weight", args.pos_weight]
    if args.method in ("lora", "adapter"):
        convert_args += ["--rank", args.rank]
    if args.regularizer != "none":
        convert_args += ["--regularizer", args.regularizer, "--reg-lambda", args.reg_lambda]
    tflm_train(*convert_args)

    print(f"3. fit {len(train)} clips, {args.epochs} epochs, lr {args.lr} "
          f"(detection rule from {manifest.name}: mean of {rule['sliding_window_size']} > {rule['probability_cutoff']})")
    state = work / "hey_jarvis.state"
    fit = tflm_train("fit", str(converted), "--data", str(paths["train"]), "--eval-data", str(paths["adapt_test"]),
                     "--eval-data", str(paths["known_test"]), "--manifest", str(manifest), "--epochs", args.epochs,
                     "--lr", args.lr, "--seed", args.seed, "--state-out", str(state))
    print(f"   loss {fit['loss_first']:.4f} (first epoch) -> {fit['loss_last']:.4f} (last), "
          f"{fit['steps']:,} training invocations, {fit['epochs'] * fit['invocations_per_epoch']:,} in all")
    evals = {Path(e["data"]).stem: e for e in fit["eval"]}

    print("4. merge into a plain .tflite and evaluate it")
    merged = work / "hey_jarvis_merged.tflite"
    tflm_train("merge", str(converted), "--state", str(state), "-o", str(merged))
    merged_eval = {name: tflm_train("evaluate", str(merged), "--data", str(paths[name]), "--manifest", str(manifest))
                   for name in held}
    report = tflm_train("report", str(converted))

    print("5. held-out clips (TFLM interpreter, int8 model)")
    print(f"   {'clips':38s} {'detections before':>18s} {'after':>18s} {'merged':>18s} | "
          f"{'false accepts before':>20s} {'after':>16s} {'merged':>16s}")
    rows = [("adapt_test", f"adapted voice {data.ADAPTED_VOICE}", None),
            ("known_test", "known voices, all", None)]
    rows += [("known_test", f"  {v}", [v]) for v in data.KNOWN_VOICES]
    summary = {}
    for name, title, voices in rows:
        c = held[name]
        before = rates(evals[name]["before"]["per_clip"], c, voices)
        after = rates(evals[name]["after"]["per_clip"], c, voices)
        plain = rates(merged_eval[name]["per_clip"] if "per_clip" in merged_eval[name]
                      else merged_eval[name]["detections"]["per_clip"], c, voices)
        summary[title.strip()] = {"detections": [before[0], after[0], plain[0]],
                                  "false_accepts": [before[1], after[1], plain[1]]}
        print(f"   {title:38s} {before[0]:>18s} {after[0]:>18s} {plain[0]:>18s} | "
              f"{before[1]:>20s} {after[1]:>16s} {plain[1]:>16s}")
    arena = report.get("arena_bytes_training"), report.get("arena_bytes_inference")
    print(f"   training arena {arena[0]:,} B (inference {arena[1]:,} B), state {fit['state_bytes']:,} B; "
          f"{time.time() - started:.0f} s")
    (work / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "results": summary, "arena": arena}, indent=1))


if __name__ == "__main__":
    main()
