"""A hand-written backward for the *normalize* step, as a ``torch.autograd.Function``.

:mod:`normtext.torch.functional` lets autograd differentiate through the mean
and the variance. This module writes the same gradient by hand, the formula of
:func:`normtext.numpy.standardize_backward`, so that it can be checked with
:func:`torch.autograd.gradcheck` and read as code. The axes come from a norm's
spec, so the one Function serves BatchNorm, LayerNorm, InstanceNorm and
GroupNorm (on the grouped view).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import errors
from ..spec import BATCH_NORM
from ..moments import centered_moments
from ._util import shape_of

__all__ = ["NormalizeFunction", "batch_norm_train"]


class NormalizeFunction(torch.autograd.Function):
    r"""``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with statistics over ``axes``.

    ``weight`` and ``bias`` are already shaped to broadcast against ``x``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                axes: Tuple[int, ...], eps: float) -> Tensor:
        _, centered, var = centered_moments(x, axes)
        inv_std = torch.rsqrt(var + eps)
        x_hat = centered * inv_std
        ctx.axes = axes
        ctx.save_for_backward(x_hat, inv_std, weight, bias)
        y = x_hat if weight is None else x_hat * weight
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, dy: Tensor):
        x_hat, inv_std, weight, bias = ctx.saved_tensors
        axes = ctx.axes
        # The parameter gradients sum over every axis they are broadcast along.
        # sum_to_size does exactly that (and nothing when no axis is broadcast;
        # sum(dim=()) would instead sum over everything).
        d_weight = d_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            d_weight = (dy * x_hat).sum_to_size(weight.shape)  # sum dy x_hat
        if bias is not None and ctx.needs_input_grad[2]:
            d_bias = dy.sum_to_size(bias.shape)                # sum dy
        g = dy if weight is None else dy * weight                                # dL/dx_hat
        # dL/dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))
        dx = inv_std * (g - g.mean(dim=axes, keepdim=True)
                        - x_hat * (g * x_hat).mean(dim=axes, keepdim=True))
        return dx, d_weight, d_bias, None, None


def batch_norm_train(input: Tensor, weight: Optional[Tensor] = None,
                     bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Training-mode BatchNorm through :class:`NormalizeFunction` (no running statistics)."""
    errors.check_batch_norm(tuple(input.shape), training=True, eps=eps, momentum=None,
                            weight=shape_of(weight), bias=shape_of(bias))
    view = BATCH_NORM.param_shape(input.shape)
    axes = BATCH_NORM.reduce_axes(input.ndim, 1)
    shaped = lambda p: None if p is None else p.reshape(view)
    return NormalizeFunction.apply(input, shaped(weight), shaped(bias), axes, eps)
