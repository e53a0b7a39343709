"""The book's figure helpers (normtext.experiments.plot)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from normtext.experiments.plot import label_log_axis  # noqa: E402


def visible_labels(ax, lo, hi):
    """The y tick labels matplotlib draws inside [lo, hi], after a draw."""
    ax.figure.canvas.draw()
    return [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks())
            if lo <= v <= hi]


@pytest.mark.parametrize("lo, hi, labels", [
    (0.5, 5, ["0.5", "1", "2", "5"]),                     # 1, 2, 5 times powers of ten
    (0.02, 30, ["0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10", "20"]),
    (1.8, 3.2, ["1.8", "2", "2.2", "2.4", "2.6", "2.8", "3", "3.2"]),  # within a decade
])
def test_label_log_axis_labels_ticks_in_plain_numbers(lo, hi, labels):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [lo, hi])
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    label_log_axis(ax.yaxis)
    assert ax.get_yscale() == "log"
    assert visible_labels(ax, lo, hi) == labels
    plt.close(fig)
