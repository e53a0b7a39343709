"""``torch.nn``-compatible modules around :mod:`normtext.torch.functional`.

Constructor arguments, parameter and buffer names, ``state_dict`` keys and
train/eval behaviour are those of ``torch.nn``, so each class is a drop-in
replacement: ``load_state_dict`` works in both directions.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import errors
from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _BatchNorm(nn.Module):
    """What BatchNorm1d/2d/3d share; they differ only in the input ranks they accept."""

    _accepted_ndim: tuple = ()
    _version = 2  # state_dicts with num_batches_tracked, as torch.nn's version 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        errors.check_momentum(momentum)
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        # gamma and beta: one per channel
        self.weight = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.empty(num_features, **factory)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        errors.check_ndim(input.dim(), self._accepted_ndim)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                # momentum=None: the cumulative average, each batch weighted 1/t
                factor = 1.0 / float(self.num_batches_tracked)
        # batch statistics in training, and in eval when nothing was tracked
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(input,
                            self.running_mean if track else None,
                            self.running_var if track else None,
                            self.weight, self.bias, use_batch_stats, factor, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # state_dicts saved before num_batches_tracked existed (version < 2) load with 0
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats \
                and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization over a 2D or 3D input, as :class:`torch.nn.BatchNorm1d`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The mean and the biased variance are taken per channel over the batch (and
    the length) in training; the running estimates, updated with ``momentum``
    (the weight of the new batch; ``None`` for a cumulative average) and the
    unbiased variance, normalize in evaluation.

    Args:
        num_features: ``C`` of an input ``(N, C)`` or ``(N, C, L)``.
        eps: added to the variance. Default: 1e-5.
        momentum: weight of the new batch in the running estimates. Default: 0.1.
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: True.
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked``. Default: True.
        bias: with ``affine``, learn beta too (keyword only). Default: True.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, L)`
        - Output: same shape as the input

    Example::

        >>> from normtext import torch as nt
        >>> m = nt.BatchNorm1d(100)
        >>> m(torch.randn(20, 100)).shape
        torch.Size([20, 100])
    """
    _accepted_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization over a 4D input ``(N, C, H, W)``, as :class:`torch.nn.BatchNorm2d`.

    The statistics of each channel are taken over ``N``, ``H`` and ``W``; see
    :class:`BatchNorm1d` for the formula and the arguments.

    Example::

        >>> from normtext import torch as nt
        >>> m = nt.BatchNorm2d(3)
        >>> m(torch.randn(8, 3, 5, 5)).shape
        torch.Size([8, 3, 5, 5])
    """
    _accepted_ndim = (4,)


class BatchNorm3d(_BatchNorm):
    r"""Batch normalization over a 5D input ``(N, C, D, H, W)``, as :class:`torch.nn.BatchNorm3d`.

    The statistics of each channel are taken over ``N``, ``D``, ``H`` and ``W``;
    see :class:`BatchNorm1d` for the formula and the arguments.

    Example::

        >>> from normtext import torch as nt
        >>> m = nt.BatchNorm3d(3)
        >>> m(torch.randn(4, 3, 2, 5, 5)).shape
        torch.Size([4, 3, 2, 5, 5])
    """
    _accepted_ndim = (5,)


# --- LayerNorm and RMSNorm ----------------------------------------------------------

import numbers  # noqa: E402

__all__ += ["LayerNorm", "RMSNorm"]


class LayerNorm(nn.Module):
    r"""Layer normalization over the trailing ``normalized_shape`` axes, as :class:`torch.nn.LayerNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The mean and the biased variance are taken per sample over the last
    ``len(normalized_shape)`` axes; ``gamma`` and ``beta`` have the shape
    ``normalized_shape``. The same computation serves training and evaluation:
    there are no running statistics.

    Args:
        normalized_shape: an int (the last axis) or the trailing shape.
        eps: added to the variance. Default: 1e-5.
        elementwise_affine: learn ``weight`` (gamma, initialized to ones) and
            ``bias`` (beta, zeros). Default: True.
        bias: with ``elementwise_affine``, learn beta too. Default: True.

    Shape:
        - Input: :math:`(N, *)` ending in ``normalized_shape``
        - Output: same shape as the input

    Example::

        >>> from normtext import torch as nt
        >>> m = nt.LayerNorm([5, 10, 10])   # over C, H, W of an (N, 5, 10, 10) input
        >>> m(torch.randn(20, 5, 10, 10)).shape
        torch.Size([20, 5, 10, 10])
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class RMSNorm(nn.Module):
    r"""Root-mean-square normalization, as :class:`torch.nn.RMSNorm`.

    .. math::
        y = \frac{x}{\sqrt{\frac1m\sum_i x_i^2 + \epsilon}} * \gamma

    over the trailing ``normalized_shape`` axes: no mean is subtracted and
    there is no ``bias``.

    Args:
        normalized_shape: an int (the last axis) or the trailing shape.
        eps: added to the mean square; ``None`` (default) is
            ``torch.finfo(dtype).eps`` of the dtype computed in.
        elementwise_affine: learn ``weight`` (gamma, ones). Default: True.

    Example::

        >>> from normtext import torch as nt
        >>> nt.RMSNorm(16)(torch.randn(2, 8, 16)).shape
        torch.Size([2, 8, 16])
    """

    def __init__(self, normalized_shape, eps: Optional[float] = None,
                 elementwise_affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device,
                                                   dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
