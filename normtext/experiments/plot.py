"""Figures: training curves with the mean and spread over seeds."""
from __future__ import annotations

from typing import Dict, List, Sequence, Union

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from normtext.experiments.train import History

__all__ = ["COLUMN_INCHES", "DPI", "BOOK_STYLE", "use_book_style", "column_figsize",
           "label_log_axis", "plot_histories"]

#: The book's text column is about 690 screen pixels wide. A figure drawn at
#: ``DPI`` pixels per inch and at most ``COLUMN_INCHES`` wide is shown at its
#: natural size, so its 8-9 pt labels stay 11-12 px tall on the page; a wider
#: one is shrunk to the column and its labels with it.
COLUMN_INCHES = 6.8
DPI = 100

#: matplotlib settings every chapter draws with (applied by :func:`use_book_style`).
BOOK_STYLE = {
    "figure.figsize": (COLUMN_INCHES, 3.0),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.constrained_layout.use": True,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 3,
}


def use_book_style() -> None:
    """Draw every later figure with :data:`BOOK_STYLE` (sized for the book's column)."""
    mpl.rcParams.update(BOOK_STYLE)


def column_figsize(panels: int = 1, height: float = 3.0) -> tuple:
    """The size of a figure of ``panels`` side by side that fills the column, no wider.

    More than three panels side by side leave each too narrow to read: put them
    on two rows (``plt.subplots(2, ...)``) and pass ``height`` for both.
    """
    if panels > 3:
        raise ValueError(f"{panels} panels side by side do not fit the column; use two rows")
    return (COLUMN_INCHES, height)

def label_log_axis(axis) -> None:
    """Label a log-scale axis in plain numbers (0.2, not 2 x 10^-1) at 1-2-5 steps.

    matplotlib labels only the powers of ten of a log axis, so a range within
    a decade or two shows one label or none. Its ``LogLocator`` with 1-2-5
    ``subs`` puts labelled ticks at 1, 2 and 5 times each power of ten, and on
    a range holding at most one of those it falls back to evenly spaced ticks
    (matplotlib's ``AutoLocator``), so every figure gets readable values.
    """
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


_LABELS = {"loss": "training loss", "train_acc": "train accuracy", "test_acc": "test accuracy",
           "seconds": "seconds per epoch"}


def plot_histories(runs: Dict[str, Union[History, List[History]]],
                   metrics: Sequence[str] = ("loss", "test_acc"), title: str = "",
                   logy_loss: bool = False):
    """One panel per metric, one line per label: the mean over runs, the band +-1 std.

    ``runs`` maps a label to a History or to a list of Histories (several seeds).
    Returns the matplotlib Figure.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=column_figsize(len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, hs in runs.items():
            hs = [hs] if isinstance(hs, History) else list(hs)
            values = np.array([getattr(h, metric) for h in hs], dtype=float)
            epochs = np.arange(1, values.shape[1] + 1)
            mean = values.mean(axis=0)
            line, = ax.plot(epochs, mean, marker="o",
                            label=f"{label} (n={len(hs)})" if len(hs) > 1 else label)
            if len(hs) > 1:
                std = values.std(axis=0)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # no epoch 1.5
        ax.set_ylabel(_LABELS.get(metric, metric))
        if metric == "loss" and logy_loss:
            ax.set_yscale("log")
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    return fig
