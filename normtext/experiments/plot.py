"""Figures: training curves with the mean and spread over seeds."""
from __future__ import annotations

from typing import Dict, List, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np

from normtext.experiments.train import History

_LABELS = {"loss": "training loss", "train_acc": "train accuracy", "test_acc": "test accuracy",
           "seconds": "seconds per epoch"}


def plot_histories(runs: Dict[str, Union[History, List[History]]],
                   metrics: Sequence[str] = ("loss", "test_acc"), title: str = "",
                   logy_loss: bool = False):
    """One panel per metric, one line per label: the mean over runs, the band +-1 std.

    ``runs`` maps a label to a History or to a list of Histories (several seeds).
    Returns the matplotlib Figure.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, hs in runs.items():
            hs = [hs] if isinstance(hs, History) else list(hs)
            values = np.array([getattr(h, metric) for h in hs], dtype=float)
            epochs = np.arange(1, values.shape[1] + 1)
            mean = values.mean(axis=0)
            line, = ax.plot(epochs, mean, marker="o", ms=3,
                            label=f"{label} (n={len(hs)})" if len(hs) > 1 else label)
            if len(hs) > 1:
                std = values.std(axis=0)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_LABELS.get(metric, metric))
        if metric == "loss" and logy_loss:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
