"""PNG plots for `fit --plot` and the demo."""

from __future__ import annotations

import io

import numpy as np


def plot_fit(result, path: str, title: str = "", groups: dict[str, tuple[float, float]] | None = None) -> None:
    """Writes fit_png(...) to path."""
    from tflm_train.converter.model_ir import write_atomic

    write_atomic(path, fit_png(result, title, groups))


def fit_png(result, title: str = "", groups: dict[str, tuple[float, float]] | None = None) -> bytes:
    """PNG: loss per step (and per epoch) beside the metric before and after.

    `groups` names the data each before/after pair was measured on; by
    default the fit's own metric on its training data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if groups is None:
        groups = {"training data": (result.metric_before, result.metric_after)}
    percent = result.metric == "accuracy"
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1.2]})
    steps = np.arange(1, result.steps + 1)
    left.plot(steps, result.losses, color="#9ecae1", linewidth=0.8, label="loss per step")
    per_epoch = result.steps // max(len(result.epoch_losses), 1)
    if per_epoch:
        ends = per_epoch * np.arange(1, len(result.epoch_losses) + 1)
        left.plot(ends, result.epoch_losses, "o-", color="#08519c", label="epoch mean")
    left.set_xlabel("training step (one sample each, in the TFLM interpreter)")
    left.set_ylabel("loss")
    left.set_title(f"{title}: fine-tuning" if title else "fine-tuning")
    left.legend()

    positions = np.arange(len(groups))
    befores = [100 * b if percent else b for b, _ in groups.values()]
    afters = [100 * a if percent else a for _, a in groups.values()]
    fmt = "%.1f%%" if percent else "%.3g"
    bars = right.bar(positions - 0.2, befores, 0.4, color="#bdbdbd", label="before")
    right.bar_label(bars, fmt=fmt, fontsize=8)
    bars = right.bar(positions + 0.2, afters, 0.4, color="#31a354", label="after")
    right.bar_label(bars, fmt=fmt, fontsize=8)
    right.set_xticks(positions, list(groups), fontsize=8)
    right.set_ylabel("accuracy (%)" if percent else result.metric)
    if percent:
        right.set_ylim(0, 125)
    right.set_title(result.metric)
    right.legend(fontsize=8, loc="upper center", ncols=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
