"""The LayerNorm chapter's experiments: runs over several seeds, and verdicts computed from them.

A seed's claim such as "BN converges faster than LN" is split into parts, each
a comparison of two groups of runs. A part **holds** when the claimed
difference is larger than the spread of the seeds (the +-1 std bands of the
two groups do not overlap), is **contradicted** when the opposite difference is
that large, and is **unclear** otherwise. A claim is *reproduced* when every
part holds, *not reproduced* when none does, and *mixed* otherwise. The rules
are fixed before any run, and the chapter applies them to the numbers it prints.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np

from normtext.experiments.train import History, seed_everything, train_torch


def train_seeds(build: Callable[[], "object"], data, *, seeds: Sequence[int], epochs: int,
                batch_size: int, lr: float = 1e-3, optimizer: str = "adam",
                label: str = "") -> List[History]:
    """One :class:`History` per seed; the model is built *after* seeding, so its
    initialization differs between seeds and repeats for the same seed."""
    histories = []
    for seed in seeds:
        seed_everything(seed)
        net = build()
        histories.append(train_torch(net, data, epochs=epochs, lr=lr, batch_size=batch_size,
                                     seed=seed, label=label, optimizer=optimizer))
    return histories


def loss_auc(h: History) -> float:
    """The mean training loss over all epochs: lower means faster convergence."""
    return float(np.mean(h.loss))


def stats(values: Sequence[float]) -> tuple:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std())


def compare_groups(better: Sequence[float], worse: Sequence[float]) -> str:
    """Does ``better`` have the lower values? 'holds', 'contradicted' or 'unclear'.

    The difference of the means must exceed the sum of the two standard
    deviations (their +-1 std bands do not overlap).
    """
    (mb, sb), (mw, sw) = stats(better), stats(worse)
    if mw - mb > sb + sw:
        return "holds"
    if mb - mw > sb + sw:
        return "contradicted"
    return "unclear"


def verdict(parts: Sequence[str]) -> str:
    """'reproduced' when every part holds, 'not reproduced' when none does, else 'mixed'."""
    held = [p == "holds" for p in parts]
    if all(held):
        return "reproduced"
    if not any(held):
        return "not reproduced"
    return "mixed"


def summarize(runs: Dict[str, List[History]]) -> List[dict]:
    """Per label: loss AUC, final training loss and final test accuracy (mean +- std over seeds)."""
    rows = []
    for label, hs in runs.items():
        auc, final, acc = (stats([f(h) for h in hs]) for f in
                           (loss_auc, lambda h: h.loss[-1], lambda h: h.test_acc[-1]))
        rows.append({"run": label, "seeds": len(hs),
                     "mean train loss": f"{auc[0]:.3f} ± {auc[1]:.3f}",
                     "final train loss": f"{final[0]:.3f} ± {final[1]:.3f}",
                     "final test acc": f"{acc[0]:.3f} ± {acc[1]:.3f}",
                     "s/epoch": f"{np.mean([np.mean(h.seconds) for h in hs]):.2f}"})
    return rows
