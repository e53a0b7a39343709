"""InstanceNorm in float64 NumPy: forward and a backward derived by hand.

Conventions are PyTorch's (``torch.nn.functional.instance_norm``): the
statistics of each (sample, channel) pair are taken over the spatial axes;
with ``running_mean``/``running_var`` the running estimates are updated with
the *average over the batch* of the per-instance mean and unbiased variance.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .. import errors
from ..spec import INSTANCE_NORM
from .standardize import mean_over, standardize, standardize_backward


# The reference spells out each norm whole, running statistics and recover step included,
# although numpy/batch_norm.py has the same shape: a reader checks one function against
# one formula without following helpers.
class InstanceNormResult(NamedTuple):
    y: np.ndarray
    running_mean: Optional[np.ndarray]  # updated copies; the inputs are not modified
    running_var: Optional[np.ndarray]
    cache: dict                         # what instance_norm_backward needs


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5) -> InstanceNormResult:
    r"""Instance normalization of ``x`` of shape ``(N, C, *)``, in float64.

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}
                 \gamma_c + \beta_c

    where :math:`x_{nc}` is the spatial map of channel ``c`` of sample ``n``.
    With ``use_input_stats=False`` the running estimates normalize instead.
    """
    x = np.asarray(x, dtype=np.float64)
    shape = lambda a: None if a is None else np.shape(a)
    errors.check_instance_norm(x.shape, use_input_stats=use_input_stats,
                               running_mean=shape(running_mean), running_var=shape(running_var),
                               weight=shape(weight), bias=shape(bias))
    axes = INSTANCE_NORM.reduce_axes(x.ndim, 1)       # the spatial axes
    view = INSTANCE_NORM.param_shape(x.shape)         # (1, C, 1, ...)
    as_view = lambda a: np.asarray(a, dtype=np.float64).reshape(view)

    if use_input_stats:
        x_hat, mean, var, inv_std = standardize(x, axes, eps)
        m = INSTANCE_NORM.reduction_size(x.shape)
        if m == 0 or x.shape[0] == 0:  # no instances or no values: the estimates stay
            momentum = 0.0
        if running_mean is not None:
            # running = (1 - momentum) running + momentum * mean over n of mu_nc
            batch_mean = mean_over(mean.reshape(x.shape[0], x.shape[1]), (0,)).reshape(-1)
            running_mean = (1 - momentum) * np.asarray(running_mean, np.float64) \
                + momentum * batch_mean
            unbiased = var.reshape(x.shape[0], x.shape[1]) * (m / max(m - 1, 1))
            running_var = (1 - momentum) * np.asarray(running_var, np.float64) \
                + momentum * mean_over(unbiased, (0,)).reshape(-1)
    else:
        mean, var = as_view(running_mean), as_view(running_var)
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat = (x - mean) * inv_std

    gamma = np.ones(view) if weight is None else as_view(weight)
    beta = np.zeros(view) if bias is None else as_view(bias)
    y = gamma * x_hat + beta  # the recover step
    cache = dict(x_hat=x_hat, inv_std=inv_std, gamma=gamma, axes=axes,
                 training=use_input_stats)
    return InstanceNormResult(y, running_mean, running_var, cache)


def instance_norm_backward(dy, cache: dict):
    """Gradients ``(dx, dweight, dbias)`` of :func:`instance_norm`.

    The normalize step is :func:`~normtext.numpy.standardize.standardize` over
    the spatial axes, so ``dx`` is its backward; gamma and beta are per channel,
    so their gradients sum over the batch *and* the spatial axes.
    """
    dy = np.asarray(dy, dtype=np.float64)
    x_hat, axes = cache["x_hat"], cache["axes"]
    param_axes = (0, *axes)
    d_gamma = (dy * x_hat).sum(axis=param_axes)   # dL/dgamma_c = sum_{n,s} dy x_hat
    d_beta = dy.sum(axis=param_axes)              # dL/dbeta_c  = sum_{n,s} dy
    d_x_hat = dy * cache["gamma"]
    if cache["training"]:
        dx = standardize_backward(d_x_hat, x_hat, cache["inv_std"], axes)
    else:
        dx = d_x_hat * cache["inv_std"]
    return dx, d_gamma, d_beta
