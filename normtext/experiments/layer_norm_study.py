"""The LayerNorm chapter's networks and measures.

The chapter tests the source documents' claims about convergence ("BN
converges faster than LN", "LN helps the LSTM", "LN after the convolutions
fails to converge") with the book's one verdict rule
(:mod:`normtext.experiments.verdict`), seed by seed, on these measures.

senliuy's Keras study put ``keras_layer_normalization.LayerNormalization``
after its layers. That layer normalizes the *last* axis only: after a dense
layer the features, after a Keras convolution (channels last) the channels of
each position. :func:`keras_lenet` builds the study's LeNet with that
per-position LayerNorm after the convolutions (``conv_norm="channels"``), or
with a LayerNorm over the whole (C, H, W) feature map (``conv_norm="chw"``),
the variant the LayerNorm tutorial uses.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from torch import Tensor, nn

from normtext.experiments.train import History

__all__ = ["ChannelLayerNorm", "keras_lenet", "loss_auc", "generalization_gap"]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position of an ``(N, C, H, W)`` tensor.

    What Keras's per-feature LayerNorm (``axis=-1``) computes after a
    channels-last convolution: one mean and variance per sample *and position*,
    over the ``C`` channels, with ``gamma`` and ``beta`` of shape ``(C,)``.

    Args:
        num_channels: ``C``.
        eps: added to the variance.

    Example::

        >>> import torch
        >>> y = ChannelLayerNorm(6)(torch.randn(2, 6, 5, 5))
        >>> bool(y.mean(1).abs().max() < 1e-5)
        True
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -> (N, H, W, C): normalize the last axis -> back
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def keras_lenet(dense_norm: Optional[str] = None, conv_norm: Optional[str] = None) -> nn.Sequential:
    """senliuy's Keras LeNet in PyTorch: conv 6@5x5, pool, conv 16@5x5, pool, dense 120, 84, 10, tanh.

    The norms are PyTorch's built-in layers (the chapter shows them equal to
    normtext's), placed where the study's Keras code adds them: after the tanh.

    Args:
        dense_norm: ``None``, ``"bn"`` or ``"ln"`` after each hidden dense layer.
        conv_norm: ``None``; ``"channels"``, a LayerNorm over the channels of
            each position (what the Keras layer computes after a convolution);
            or ``"chw"``, a LayerNorm over the whole ``(C, H, W)`` map.
    """
    dense = {None: None, "bn": nn.BatchNorm1d, "ln": nn.LayerNorm}[dense_norm]
    conv = {None: None, "channels": lambda c, hw: ChannelLayerNorm(c),
            "chw": lambda c, hw: nn.LayerNorm([c, hw, hw])}[conv_norm]
    after_dense = lambda n: [dense(n)] if dense is not None else []
    after_conv = lambda c, hw: [conv(c, hw)] if conv is not None else []
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), *after_conv(6, 24), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), *after_conv(16, 8), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), nn.Tanh(), *after_dense(120),
        nn.Linear(120, 84), nn.Tanh(), *after_dense(84),
        nn.Linear(84, 10))   # the softmax is in the loss


def loss_auc(h: History) -> float:
    """The mean training loss over all epochs (the area under the loss curve): lower is faster."""
    return float(np.mean(h.loss))


def generalization_gap(h: History) -> float:
    """Final training accuracy minus final test accuracy: smaller means less overfitting."""
    return float(h.train_acc[-1] - h.test_acc[-1])
