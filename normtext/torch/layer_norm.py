"""LayerNorm and RMSNorm with hand-written backwards, checked with ``gradcheck``.

:func:`layer_norm_hand` is the shared :class:`~normtext.torch.autograd.NormalizeFunction`
pointed at the trailing axes: LayerNorm needs no backward of its own.
RMSNorm's normalize step has no mean, so it gets its own small Function,
the formula of :func:`normtext.numpy.rms_norm_backward`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import errors
from ..spec import LAYER_NORM, RMS_NORM
from ._util import compute_dtype, shape_of
from .autograd import NormalizeFunction

__all__ = ["layer_norm_hand", "RMSNormFunction", "rms_norm_hand"]


def layer_norm_hand(input: Tensor, normalized_shape: Sequence[int],
                    weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                    eps: float = 1e-5) -> Tensor:
    """LayerNorm through :class:`NormalizeFunction` (the hand-written backward)."""
    ns = errors.check_normalized_shape_type(normalized_shape, "layer_norm")
    errors.check_layer_norm(tuple(input.shape), ns, weight=shape_of(weight),
                            bias=shape_of(bias), op="layer_norm")
    k = len(ns)
    if k == input.ndim:
        # one sample: give it a batch axis, so that gamma/beta have an axis to sum over
        return layer_norm_hand(input.unsqueeze(0), ns, weight, bias, eps).squeeze(0)
    # gamma and beta as (1, ..., 1, *normalized_shape): they broadcast over the samples
    view = LAYER_NORM.param_shape(input.shape, k)
    shaped = lambda p: None if p is None else p.reshape(view)
    return NormalizeFunction.apply(input, shaped(weight), shaped(bias),
                                   LAYER_NORM.reduce_axes(input.ndim, k), eps)


class RMSNormFunction(torch.autograd.Function):
    r"""``y = gamma * x / sqrt(mean(x^2) + eps)`` over ``axes``, backward by hand."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], axes, eps: float) -> Tensor:
        inv_rms = torch.rsqrt(x.square().mean(dim=axes, keepdim=True) + eps)
        x_hat = x * inv_rms
        ctx.axes = axes
        ctx.save_for_backward(x_hat, inv_rms, weight)
        return x_hat if weight is None else x_hat * weight

    @staticmethod
    def backward(ctx, dy: Tensor):
        x_hat, inv_rms, weight = ctx.saved_tensors
        axes = ctx.axes
        d_weight = None
        if weight is not None and ctx.needs_input_grad[1]:
            lead = tuple(range(dy.ndim - weight.ndim))
            d_weight = (dy * x_hat).sum(dim=lead) if lead else dy * x_hat   # sum dy x_hat
        g = dy if weight is None else dy * weight                          # dL/dx_hat
        # dL/dx = (1/r) * (g - x_hat * mean(g * x_hat)), 1/r = inv_rms
        dx = inv_rms * (g - x_hat * (g * x_hat).mean(dim=axes, keepdim=True))
        return dx, d_weight, None, None


def rms_norm_hand(input: Tensor, normalized_shape: Sequence[int],
                  weight: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    """RMSNorm through :class:`RMSNormFunction` (the hand-written backward).

    Half-precision input is computed in float32 and rounded back, and
    ``eps=None`` is float32's machine epsilon then, as in
    :func:`normtext.torch.functional.rms_norm` and PyTorch.
    """
    ns = errors.check_normalized_shape_type(normalized_shape, "rms_norm")
    errors.check_layer_norm(tuple(input.shape), ns, weight=shape_of(weight), op="rms_norm")
    x = input.to(compute_dtype(input.dtype))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    w = None if weight is None else weight.to(x.dtype)
    y = RMSNormFunction.apply(x, w, RMS_NORM.reduce_axes(input.ndim, len(ns)), eps)
    return y.to(input.dtype)
