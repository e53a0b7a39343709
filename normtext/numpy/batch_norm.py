"""BatchNorm in float64 NumPy: the reference every other implementation is checked against.

Conventions are PyTorch's (``momentum`` is the weight of the new batch, the
running variance is unbiased); :mod:`normtext.mxnet` converts for Gluon.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .. import errors
from ..spec import BATCH_NORM
from .standardize import standardize, standardize_backward


class BatchNormResult(NamedTuple):
    y: np.ndarray
    running_mean: Optional[np.ndarray]  # updated copies; the inputs are not modified
    running_var: Optional[np.ndarray]
    cache: dict                         # what batch_norm_backward needs


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5,
               unbiased_running_var=True) -> BatchNormResult:
    r"""Batch normalization of ``x`` of shape ``(N, C, *)``, in float64.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with the mean and biased variance taken per channel over N and the spatial
    axes in training, and the running estimates in evaluation. In training the
    running estimates are updated as PyTorch does::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

    ``unbiased_running_var=False`` stores the biased variance instead, as MXNet
    Gluon does. Returns a :class:`BatchNormResult`; unlike PyTorch it does not modify its
    arguments, so the reference has no hidden state.
    """
    x = np.asarray(x, dtype=np.float64)
    shape = lambda a: None if a is None else np.shape(a)
    errors.check_batch_norm(x.shape, training=training, eps=eps, momentum=momentum,
                            running_mean=shape(running_mean), running_var=shape(running_var),
                            weight=shape(weight), bias=shape(bias))
    axes = BATCH_NORM.reduce_axes(x.ndim, 1)
    view = BATCH_NORM.param_shape(x.shape)
    as_view = lambda a: np.asarray(a, dtype=np.float64).reshape(view)

    if training:
        x_hat, mean, var, inv_std = standardize(x, axes, eps)
        m = BATCH_NORM.reduction_size(x.shape)
        if m == 0:  # an empty batch has no statistics: the estimates stay, as in PyTorch
            momentum = 0.0
        if running_mean is not None:
            running_mean = (1 - momentum) * np.asarray(running_mean, np.float64) \
                + momentum * mean.reshape(-1)
        if running_var is not None:
            # the running estimate is of the population variance: Bessel's m / (m - 1)
            bessel = m / (m - 1) if unbiased_running_var else 1.0
            running_var = (1 - momentum) * np.asarray(running_var, np.float64) \
                + momentum * var.reshape(-1) * bessel
    else:
        mean, var = as_view(running_mean), as_view(running_var)
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat = (x - mean) * inv_std

    gamma = np.ones(view) if weight is None else as_view(weight)
    beta = np.zeros(view) if bias is None else as_view(bias)
    y = gamma * x_hat + beta  # the recover step
    cache = dict(x_hat=x_hat, inv_std=inv_std, gamma=gamma, axes=axes, training=training)
    return BatchNormResult(y, running_mean, running_var, cache)


def batch_norm_backward(dy, cache: dict):
    """Gradients ``(dx, dweight, dbias)`` of :func:`batch_norm`, derived by hand.

    In training the statistics depend on ``x``, so the gradient flows back through
    them (:func:`~normtext.numpy.standardize.standardize_backward`); in evaluation
    they are constants and ``dx = dy * gamma / sqrt(running_var + eps)``.
    """
    dy = np.asarray(dy, dtype=np.float64)
    axes, x_hat = cache["axes"], cache["x_hat"]
    d_gamma = (dy * x_hat).sum(axis=axes)   # dL/dgamma = sum dy * x_hat
    d_beta = dy.sum(axis=axes)              # dL/dbeta  = sum dy
    d_x_hat = dy * cache["gamma"]
    if cache["training"]:
        dx = standardize_backward(d_x_hat, x_hat, cache["inv_std"], axes)
    else:
        dx = d_x_hat * cache["inv_std"]
    return dx, d_gamma, d_beta
