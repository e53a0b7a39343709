"""The LayerNorm chapter's measures of a training run.

The chapter tests the source documents' claims about convergence ("BN
converges faster than LN", "LN helps the LSTM") with the book's one verdict
rule (:mod:`normtext.experiments.verdict`), seed by seed, on these measures.
"""
from __future__ import annotations

import numpy as np

from normtext.experiments.train import History


def loss_auc(h: History) -> float:
    """The mean training loss over all epochs (the area under the loss curve): lower is faster."""
    return float(np.mean(h.loss))


def generalization_gap(h: History) -> float:
    """Final training accuracy minus final test accuracy: smaller means less overfitting."""
    return float(h.train_acc[-1] - h.test_acc[-1])
