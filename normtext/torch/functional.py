"""From-scratch normalization functions with the signatures of ``torch.nn.functional``.

Built from tensor operations only; autograd derives the backward. Each
function reads its norm's spec (:mod:`normtext.spec`) for the axes, checks its
input with :mod:`normtext.errors` before any arithmetic, and can replace its
``torch.nn.functional`` namesake in existing code.
"""
from __future__ import annotations

from math import prod
from typing import Optional

import torch
from torch import Tensor

from .. import errors
from ..moments import centered_moments
from ..spec import BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM, RMS_NORM
from ._util import _dtype_name, check_floating, check_layer_norm_args, compute_dtype, shape_of

__all__ = ["batch_norm", "layer_norm", "rms_norm", "instance_norm", "group_norm",
           "local_response_norm"]


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
        input.shape, training=training, eps=eps, momentum=momentum,
        running_mean=shape_of(running_mean), running_var=shape_of(running_var),
        weight=shape_of(weight), bias=shape_of(bias))
    check_floating(input, "batch_norm")

    axes = BATCH_NORM.reduce_axes(input.ndim, 1)
    view = BATCH_NORM.param_shape(input.shape)
    x = input.to(compute_dtype(input.dtype))

    if training:
        # mu_B = 1/m sum x;  sigma_B^2 = 1/m sum (x - mu_B)^2   (two passes: stable)
        mean, centered, var = centered_moments(x, axes)
        update_running_stats(running_mean, running_var, mean, var,
                             BATCH_NORM.reduction_size(input.shape), momentum)
    else:
        centered = x - running_mean.to(x.dtype).reshape(view)
        var = running_var.to(x.dtype).reshape(view)

    # x_hat = (x - mu) / sqrt(sigma^2 + eps)
    y = centered * torch.rsqrt(var + eps)
    # y = gamma * x_hat + beta: the recover step
    if weight is not None:
        y = y * weight.to(x.dtype).reshape(view)
    if bias is not None:
        y = y + bias.to(x.dtype).reshape(view)
    return y.to(input.dtype)


def update_running_stats(running_mean: Optional[Tensor], running_var: Optional[Tensor],
                         mean: Tensor, var: Tensor, count: int, momentum: float) -> None:
    r"""The running estimates' update, in place and outside autograd.

    .. math::
        \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu_B,\qquad
        \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\frac{n}{n-1}\sigma_B^2

    with ``m = momentum`` and ``n = count`` values behind each batch statistic
    (Bessel's correction: the running variance estimates the population's).
    ``mean`` and ``var`` hold one value per channel. An empty batch
    (``count == 0``) has no statistics and leaves the estimates as they are, as
    PyTorch's BatchNorm does. BatchNorm, InstanceNorm and SyncBatchNorm all
    update through this function.
    """
    if count == 0:
        return
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(
                mean.reshape(-1).to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            unbiased = var.reshape(-1) * (count / max(count - 1, 1))
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


# --- LayerNorm and RMSNorm ----------------------------------------------------------

def layer_norm(input: Tensor, normalized_shape: list[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    r"""Layer normalization over the trailing axes, as :func:`torch.nn.functional.layer_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The mean and the biased variance are taken per sample over the last
    ``len(normalized_shape)`` axes, whose sizes must equal ``normalized_shape``.
    Nothing depends on the other samples, so training and evaluation compute the
    same thing and nothing is stored.

    Args:
        input: ``(*, *normalized_shape)``.
        normalized_shape: the trailing shape to normalize over (a list, tuple or
            ``torch.Size``; the modules also accept an int).
        weight, bias: gamma and beta of shape ``normalized_shape``, or ``None``.
        eps: added to the variance for numerical stability.

    Example::

        >>> from normtext import torch as nt
        >>> x = torch.randn(20, 5, 10, 10)
        >>> nt.functional.layer_norm(x, [5, 10, 10]).shape
        torch.Size([20, 5, 10, 10])
    """
    ns = check_layer_norm_args(input, normalized_shape, weight, bias)

    axes = LAYER_NORM.reduce_axes(input.ndim, len(ns))
    x = input.to(compute_dtype(input.dtype))
    # mu = 1/m sum x;  sigma^2 = 1/m sum (x - mu)^2 over the trailing axes (two passes: stable)
    _, centered, var = centered_moments(x, axes)
    # x_hat = (x - mu) / sqrt(sigma^2 + eps)
    y = centered * torch.rsqrt(var + eps)
    # y = gamma * x_hat + beta; gamma and beta broadcast over the leading axes
    if weight is not None:
        y = y * weight.to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y.to(input.dtype)


def rms_norm(input: Tensor, normalized_shape: list[int], weight: Optional[Tensor] = None,
             eps: Optional[float] = None) -> Tensor:
    r"""Root-mean-square normalization, as :func:`torch.nn.functional.rms_norm`.

    .. math::
        y = \frac{x}{\sqrt{\frac1m\sum_i x_i^2 + \epsilon}} * \gamma

    over the trailing ``normalized_shape`` axes: LayerNorm without the mean
    and without beta. ``eps=None`` means the machine epsilon of the dtype the
    statistic is computed in (``float32`` for float16/bfloat16 input), as PyTorch.

    Example::

        >>> from normtext import torch as nt
        >>> nt.functional.rms_norm(torch.randn(2, 8, 16), [16]).shape
        torch.Size([2, 8, 16])
    """
    ns = errors.check_normalized_shape_type(normalized_shape, "rms_norm")
    errors.check_layer_norm(tuple(input.shape), ns, weight=shape_of(weight), op="rms_norm")
    check_floating(input, "rms_norm")

    axes = RMS_NORM.reduce_axes(input.ndim, len(ns))
    x = input.to(compute_dtype(input.dtype))
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    # x_hat = x / sqrt(mean(x^2) + eps): no mean is subtracted, so one pass suffices
    y = x * torch.rsqrt(x.square().mean(dim=axes, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(x.dtype)
    return y.to(input.dtype)


# --- InstanceNorm, GroupNorm, LocalResponseNorm ------------------------------------------


def instance_norm(input: Tensor, running_mean: Optional[Tensor] = None,
                  running_var: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                  bias: Optional[Tensor] = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    r"""Instance normalization of each channel of each sample, as :func:`torch.nn.functional.instance_norm`.

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}
                 * \gamma_c + \beta_c

    The mean and biased variance of the spatial map :math:`x_{nc}` normalize it
    (``use_input_stats=True``). When ``running_mean``/``running_var`` are given
    they are updated **in place** with the batch average of the per-instance mean
    and *unbiased* variance; with ``use_input_stats=False`` they normalize instead.

    Args:
        input: ``(N, C, *)`` with more than one spatial element per channel.
        running_mean, running_var: ``(C,)`` buffers or ``None`` (both or neither).
        weight, bias: ``(C,)`` gamma and beta, or ``None``.
        use_input_stats: normalize with each instance's own statistics.
        momentum: weight of the new batch in the running estimates.
        eps: added to the variance.

    Example::

        >>> from normtext import torch as nt
        >>> y = nt.functional.instance_norm(torch.randn(2, 3, 8, 8))
        >>> y.shape
        torch.Size([2, 3, 8, 8])
    """
    errors.check_instance_norm(
        tuple(input.shape), use_input_stats=use_input_stats,
        running_mean=shape_of(running_mean), running_var=shape_of(running_var),
        weight=shape_of(weight), bias=shape_of(bias))
    check_floating(input, "batch_norm")
    axes = INSTANCE_NORM.reduce_axes(input.ndim, 1)     # the spatial axes
    view = INSTANCE_NORM.param_shape(input.shape)        # (1, C, 1, ...)
    x = input.to(compute_dtype(input.dtype))
    if use_input_stats:
        # mu_nc = mean_s x_ncs;  sigma_nc^2 = mean_s (x_ncs - mu_nc)^2
        mean, centered, var = centered_moments(x, axes)
        if running_mean is not None:
            # the running estimates average the instances' statistics over the batch;
            # a batch without instances has none (count 0 leaves the estimates alone)
            n, c = input.shape[0], input.shape[1]
            m = INSTANCE_NORM.reduction_size(input.shape) if n > 0 else 0
            update_running_stats(running_mean, running_var, mean.reshape(n, c).mean(0),
                                 var.reshape(n, c).mean(0), m, momentum)
    else:
        centered = x - running_mean.to(x.dtype).reshape(view)
        var = running_var.to(x.dtype).reshape(view)
    y = centered * torch.rsqrt(var + eps)                 # x_hat
    if weight is not None:
        y = y * weight.to(x.dtype).reshape(view)          # gamma * x_hat
    if bias is not None:
        y = y + bias.to(x.dtype).reshape(view)            # + beta
    return y.to(input.dtype)


def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    r"""Group normalization, as :func:`torch.nn.functional.group_norm`.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma + \beta

    The ``C`` channels of each sample are split into ``num_groups`` groups of
    consecutive channels; each group's mean and biased variance are taken over
    its channels and every position. ``weight`` and ``bias`` are per channel.

    Args:
        input: ``(N, C, *)`` with ``C`` divisible by ``num_groups``.
        num_groups: ``G``; 1 gives LayerNorm over ``(C, *)``, ``C`` gives InstanceNorm.
        weight, bias: ``(C,)`` gamma and beta, or ``None``.
        eps: added to the variance.

    Example::

        >>> from normtext import torch as nt
        >>> nt.functional.group_norm(torch.randn(2, 6, 4, 4), 3).shape
        torch.Size([2, 6, 4, 4])
    """
    errors.check_group_norm(tuple(input.shape), num_groups,
                            weight=shape_of(weight), bias=shape_of(bias))
    check_floating(input, "GroupNormKernelImpl")
    x = input.to(compute_dtype(input.dtype))
    n = input.shape[0]
    # reshape: (N, C, *) -> (N, G, C/G * prod(spatial)), sized explicitly for empty inputs
    xg = x.reshape(n, num_groups, prod(input.shape[1:]) // num_groups)
    axes = GROUP_NORM.reduce_axes(xg.ndim, 1)
    _, centered, var = centered_moments(xg, axes)
    # normalize, then reshape back
    y = (centered * torch.rsqrt(var + eps)).reshape(input.shape)
    view = GROUP_NORM.param_shape(input.shape)          # per channel: (1, C, 1, ...)
    if weight is not None:
        y = y * weight.to(x.dtype).reshape(view)
    if bias is not None:
        y = y + bias.to(x.dtype).reshape(view)
    return y.to(input.dtype)


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Tensor:
    r"""Local response normalization across channels, as :func:`torch.nn.functional.local_response_norm`.

    .. math::
        b_c = a_c \left(k + \frac{\alpha}{n} \sum_{c'=\max(0, c-\lfloor n/2 \rfloor)}
              ^{\min(C-1, c+\lfloor (n-1)/2 \rfloor)} a_{c'}^2\right)^{-\beta}

    PyTorch's convention: ``alpha`` is divided by ``n = size`` and the window
    holds ``n`` channels, one more before ``c`` than after it when ``n`` is
    even. :func:`normtext.numpy.lrn.convert_lrn` converts from AlexNet's and
    MXNet's conventions.

    Example::

        >>> from normtext import torch as nt
        >>> nt.functional.local_response_norm(torch.randn(2, 6, 4, 4), 5).shape
        torch.Size([2, 6, 4, 4])
    """
    errors.check_local_response_norm(input.dim(), size, empty=input.numel() == 0)
    if input.numel() == 0:
        return input
    # PyTorch averages with avg_pool2d (3D) or avg_pool3d: their dtype support is LRN's.
    # CPU autocast runs avg_pool3d in float32, so there half input is accepted and the
    # output is float32.
    pool = "avg_pool2d" if input.dim() == 3 else "avg_pool3d_out_frame"
    low = (torch.float16, torch.bfloat16)
    autocast_float32 = input.dim() > 3 and input.is_floating_point() and \
        input.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    if (not input.is_floating_point() and input.dtype != torch.int64) or \
            (input.dim() > 3 and input.dtype in low and not autocast_float32):
        names = {torch.float16: "Half", torch.bfloat16: "BFloat16"}
        errors.check_floating(False, names.get(input.dtype) or _dtype_name(input.dtype), pool)
    lo, hi = size // 2, (size - 1) // 2
    a = input.to(compute_dtype(input.dtype)) if input.is_floating_point() else input
    # zero-pad the channel axis, then sum every window of n neighbours
    sq = torch.nn.functional.pad(a.square().movedim(1, -1), (lo, hi)).movedim(-1, 1)
    window_sum = sq.unfold(1, size, 1).sum(-1)
    if input.is_floating_point():
        mean_sq = window_sum / size
    else:  # int64: PyTorch's integer average pooling truncates, then computes in float32
        mean_sq = torch.div(window_sum, size, rounding_mode="floor").to(torch.get_default_dtype())
        a = a.to(mean_sq.dtype)
    # b = a / (k + alpha/n * sum a^2)^beta
    y = a / (mean_sq * alpha + k).pow(beta)
    if autocast_float32:
        return y.float()
    return y.to(input.dtype) if input.is_floating_point() else y
