"""LayerNorm and RMSNorm in float64 NumPy, with backwards derived by hand.

LayerNorm is BatchNorm's transpose (Li and Smola's CS 329P notes): the statistics are taken per
*sample* over the trailing ``normalized_shape`` axes, so nothing depends on the
batch and nothing is stored for inference. RMSNorm drops the mean: it divides
by the root mean square and has no shift.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from .. import errors
from ..spec import LAYER_NORM, RMS_NORM
from .standardize import standardize, standardize_backward


class NormResult(NamedTuple):
    y: np.ndarray
    cache: dict  # what the backward needs


def _trailing(x: np.ndarray, normalized_shape: Sequence[int], weight, bias, op: str):
    ns = tuple(int(n) for n in normalized_shape)
    shape = lambda a: None if a is None else np.shape(a)
    errors.check_layer_norm(x.shape, ns, weight=shape(weight), bias=shape(bias), op=op)
    spec = LAYER_NORM if op == "layer_norm" else RMS_NORM
    return ns, spec.reduce_axes(x.ndim, len(ns))


def layer_norm(x, normalized_shape: Sequence[int], weight=None, bias=None,
               eps: float = 1e-5) -> NormResult:
    r"""Layer normalization of each sample over its trailing ``normalized_shape`` axes.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with the mean and the biased variance taken over the last
    ``len(normalized_shape)`` axes (two passes: never E[x^2] - E[x]^2), and
    ``gamma``, ``beta`` of shape ``normalized_shape``.
    """
    x = np.asarray(x, dtype=np.float64)
    ns, axes = _trailing(x, normalized_shape, weight, bias, "layer_norm")
    x_hat, _, _, inv_std = standardize(x, axes, eps)
    gamma = np.ones(ns) if weight is None else np.asarray(weight, np.float64)
    beta = np.zeros(ns) if bias is None else np.asarray(bias, np.float64)
    y = gamma * x_hat + beta  # gamma, beta broadcast over the leading (batch) axes
    return NormResult(y, dict(x_hat=x_hat, inv_std=inv_std, gamma=gamma, axes=axes))


def layer_norm_backward(dy, cache: dict):
    """Gradients ``(dx, dweight, dbias)`` of :func:`layer_norm`, derived by hand.

    The normalize step is the one every norm shares
    (:func:`~normtext.numpy.standardize.standardize_backward`); gamma and beta
    collect their gradient over the leading axes, the ones they are broadcast along.
    """
    dy = np.asarray(dy, dtype=np.float64)
    axes, x_hat = cache["axes"], cache["x_hat"]
    lead = tuple(range(dy.ndim - len(axes)))
    d_gamma = (dy * x_hat).sum(axis=lead)  # dL/dgamma = sum over samples of dy * x_hat
    d_beta = dy.sum(axis=lead)             # dL/dbeta  = sum over samples of dy
    dx = standardize_backward(dy * cache["gamma"], x_hat, cache["inv_std"], axes)
    return dx, d_gamma, d_beta


def rms_norm(x, normalized_shape: Sequence[int], weight=None,
             eps: Optional[float] = None) -> NormResult:
    r"""Root-mean-square normalization (Zhang and Sennrich, 2019), as ``torch.nn.functional.rms_norm``.

    .. math::
        y = \frac{x}{\sqrt{\frac1m\sum_i x_i^2 + \epsilon}} \gamma

    over the trailing ``normalized_shape`` axes. ``eps=None`` is float64's
    machine epsilon here; the adapters pass the epsilon of the dtype they
    compare (PyTorch uses ``finfo(dtype).eps`` of the dtype it computes in).
    """
    x = np.asarray(x, dtype=np.float64)
    ns, axes = _trailing(x, normalized_shape, weight, None, "rms_norm")
    eps = float(np.finfo(np.float64).eps) if eps is None else eps
    # r = 1 / sqrt(mean(x^2) + eps): no mean is subtracted
    inv_rms = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    x_hat = x * inv_rms
    gamma = np.ones(ns) if weight is None else np.asarray(weight, np.float64)
    return NormResult(gamma * x_hat, dict(x_hat=x_hat, inv_rms=inv_rms, gamma=gamma, axes=axes))


def rms_norm_backward(dy, cache: dict):
    r"""Gradients ``(dx, dweight)`` of :func:`rms_norm`, derived by hand.

    With :math:`\hat x = x r`, :math:`r = (\overline{x^2} + \epsilon)^{-1/2}` and
    :math:`g = \partial L / \partial \hat x`,
    :math:`\partial r / \partial x_i = -r^3 x_i / m`, so

    .. math::
        \frac{\partial L}{\partial x_i} = r\,\big(g_i - \hat x_i\,\overline{g\,\hat x}\big):

    LayerNorm's formula without the term for the mean.
    """
    dy = np.asarray(dy, dtype=np.float64)
    axes, x_hat = cache["axes"], cache["x_hat"]
    lead = tuple(range(dy.ndim - len(axes)))
    d_gamma = (dy * x_hat).sum(axis=lead)
    g = dy * cache["gamma"]
    dx = cache["inv_rms"] * (g - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
    return dx, d_gamma
