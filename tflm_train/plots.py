"""PNG plots for `fit --plot`."""

from __future__ import annotations

import numpy as np


def plot_fit(result, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tflm_train.converter.model_ir import write_atomic

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    steps = np.arange(1, result.steps + 1)
    left.plot(steps, result.losses, color="#9ecae1", linewidth=0.8, label="loss per step")
    per_epoch = result.steps // max(len(result.epoch_losses), 1)
    if per_epoch:
        ends = per_epoch * np.arange(1, len(result.epoch_losses) + 1)
        left.plot(ends, result.epoch_losses, "o-", color="#08519c", label="epoch mean")
    left.set_xlabel("training step (one sample each, in the TFLM interpreter)")
    left.set_ylabel("loss")
    left.set_title(f"{title} fine-tuning" if title else "fine-tuning")
    left.legend()
    values = [result.metric_before, result.metric_after]
    if result.metric == "accuracy":
        values = [100 * v for v in values]
    bars = right.bar(["before", "after"], values, color=["#bdbdbd", "#31a354"])
    right.bar_label(bars, fmt="%.1f" + ("%%" if result.metric == "accuracy" else ""))
    right.set_ylabel("accuracy (%)" if result.metric == "accuracy" else "mse")
    right.set_title(result.metric)
    figure.tight_layout()
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
