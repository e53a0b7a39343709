"""The mean and variance every normalization layer of normtext takes, for any array library.

One function serves the PyTorch layers (:mod:`normtext.torch`) and the Gluon
blocks (:mod:`normtext.mxnet`): it uses only ``mean(axis=..., keepdims=True)``,
subtraction and ``** 2``, which ``torch.Tensor`` and ``mxnet.nd.NDArray``
(and ``numpy.ndarray``) all provide.
"""
from __future__ import annotations


def centered_moments(x, axes):
    """``(mean, x - mean, var)`` over ``axes`` (kept), by two passes with a correction.

    Two passes (the mean, then the mean of squared deviations) never subtract
    ``E[x]^2`` from ``E[x^2]``. What error is left is the rounding of the mean
    itself: it shifts every deviation by the same amount. The mean of the
    deviations (small numbers, hence accurate) measures that shift and removes
    it, the corrected two-pass algorithm of Chan, Golub & LeVeque (1983). It
    keeps float32 errors at the rounding level even when the mean is 1e5
    standard deviations (book/numerics.ipynb).
    """
    mean = x.mean(axis=axes, keepdims=True)
    deviation = x - mean
    shift = deviation.mean(axis=axes, keepdims=True)  # 0 but for the rounding of ``mean``
    deviation = deviation - shift
    var = (deviation ** 2).mean(axis=axes, keepdims=True)
    return mean + shift, deviation, var
