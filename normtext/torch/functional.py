"""From-scratch normalization functions with the signatures of ``torch.nn.functional``.

Built from tensor operations only; autograd derives the backward. Each
function reads its norm's spec (:mod:`normtext.spec`) for the axes, checks its
input with :mod:`normtext.errors` before any arithmetic, and can replace its
``torch.nn.functional`` namesake in existing code.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import errors
from ..spec import BATCH_NORM
from ._util import check_floating, compute_dtype, shape_of

__all__ = ["batch_norm"]


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    r"""Batch normalization for each channel across a batch, as :func:`torch.nn.functional.batch_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    In training the mean and the biased variance are taken per channel over
    ``N`` and the spatial axes, and ``running_mean``/``running_var`` (when given)
    are updated **in place**:
    ``running = (1 - momentum) * running + momentum * batch_statistic``, with
    the unbiased variance ``var * m / (m - 1)``. In evaluation the running
    estimates normalize.

    Args:
        input: ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        running_mean, running_var: ``(C,)`` buffers, or ``None`` in training.
        weight, bias: ``(C,)`` gamma and beta, or ``None``.
        training: use (and update) the batch statistics.
        momentum: weight of the new batch in the running estimates.
        eps: added to the variance for numerical stability.

    Example::

        >>> from normtext import torch as nt
        >>> x = torch.randn(8, 3, 4, 4)
        >>> mean, var = torch.zeros(3), torch.ones(3)
        >>> y = nt.functional.batch_norm(x, mean, var, training=True)
        >>> y.shape
        torch.Size([8, 3, 4, 4])
    """
    errors.check_batch_norm(
        tuple(input.shape), training=training, eps=eps, momentum=momentum,
        running_mean=shape_of(running_mean), running_var=shape_of(running_var),
        weight=shape_of(weight), bias=shape_of(bias))
    check_floating(input, "batch_norm")

    axes = BATCH_NORM.reduce_axes(input.ndim, 1)
    view = BATCH_NORM.param_shape(input.shape)
    x = input.to(compute_dtype(input.dtype))

    if training:
        # mu_B = 1/m sum x;  sigma_B^2 = 1/m sum (x - mu_B)^2   (two passes: stable)
        mean = x.mean(dim=axes, keepdim=True)
        var = (x - mean).square().mean(dim=axes, keepdim=True)
        _update_running_stats(running_mean, running_var, mean, var,
                              BATCH_NORM.reduction_size(input.shape), momentum)
    else:
        mean = running_mean.to(x.dtype).reshape(view)
        var = running_var.to(x.dtype).reshape(view)

    # x_hat = (x - mu) / sqrt(sigma^2 + eps)
    y = (x - mean) * torch.rsqrt(var + eps)
    # y = gamma * x_hat + beta: the recover step
    if weight is not None:
        y = y * weight.to(x.dtype).reshape(view)
    if bias is not None:
        y = y + bias.to(x.dtype).reshape(view)
    return y.to(input.dtype)


def _update_running_stats(running_mean, running_var, mean, var, m, momentum):
    """running = (1 - momentum) running + momentum batch, in place and outside autograd."""
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(
                mean.reshape(-1).to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            # Bessel's correction: the running estimate is of the population variance
            unbiased = var.reshape(-1) * (m / max(m - 1, 1))
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
