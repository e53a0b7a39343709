"""``torch.nn``-compatible modules around :mod:`normtext.torch.functional`.

Constructor arguments, parameter and buffer names, ``state_dict`` keys and
train/eval behaviour are those of ``torch.nn``, so each class is a drop-in
replacement: ``load_state_dict`` works in both directions.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from .. import errors
from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "RMSNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "GroupNorm",
           "LocalResponseNorm"]


# --- the common base of BatchNorm and InstanceNorm ------------------------------------

def _affine_parameters(module: nn.Module, shape, weight: bool, bias: bool, factory: dict) -> None:
    """Register gamma (``weight``) and beta (``bias``) of ``shape``, or None, as torch.nn's norms do."""
    module.register_parameter(
        "weight", nn.Parameter(torch.empty(shape, **factory)) if weight else None)
    module.register_parameter(
        "bias", nn.Parameter(torch.empty(shape, **factory)) if weight and bias else None)


def _reset_affine(module: nn.Module) -> None:
    """gamma = 1 and beta = 0: a fresh layer is a plain standardization."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


class _NormBase(nn.Module):
    """Per-channel gamma and beta and the running estimates, as ``torch.nn``'s ``_NormBase``.

    BatchNorm, SyncBatchNorm and InstanceNorm share these parameters and
    buffers (names, initialization, ``state_dict`` keys) and the momentum rule
    of :meth:`_running_stats_factor`; they differ in which axes the statistics
    are taken over and in their defaults. The subclasses say which input ranks
    they accept in ``_accepted_ndim``.
    """

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
        _affine_parameters(self, num_features, affine, bias, factory)
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
        _reset_affine(self)

    def _check_input_dim(self, input: Tensor) -> None:
        errors.check_ndim(input.dim(), self._accepted_ndim)

    def _running_stats_factor(self, counted: bool) -> float:
        """The weight of this batch in the running estimates: the momentum rule.

        ``momentum``, or with ``momentum=None`` the cumulative average: the
        ``t``-th batch counted in ``num_batches_tracked`` weighs ``1/t``.
        ``counted``: this batch is to be counted (BatchNorm in training;
        InstanceNorm never counts, so its ``None`` means 0 and the estimates
        stay as they are, as in PyTorch). The count itself goes up in
        :meth:`_count_batch`, after the batch was accepted.
        """
        if self.momentum is not None:
            return self.momentum
        if counted and self.num_batches_tracked is not None:
            return 1.0 / (float(self.num_batches_tracked) + 1.0)   # 1/t
        return 0.0

    def _count_batch(self) -> None:
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)

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


# --- BatchNorm1d/2d/3d ------------------------------------------------------------------

class _BatchNorm(_NormBase):
    """What BatchNorm1d/2d/3d (and SyncBatchNorm) share; they differ only in the input ranks."""

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        counted = self.training and self.track_running_stats
        # batch statistics in training, and in eval when nothing was tracked
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        output = F.batch_norm(input,
                              self.running_mean if track else None,
                              self.running_var if track else None,
                              self.weight, self.bias, use_batch_stats,
                              self._running_stats_factor(counted), self.eps)
        if counted:  # only once the input was accepted: a refused call changes nothing
            self._count_batch()
        return output


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
        _affine_parameters(self, self.normalized_shape, elementwise_affine, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

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
        _reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


# --- InstanceNorm1d/2d/3d ------------------------------------------------------------

class _InstanceNorm(_NormBase):
    """What InstanceNorm1d/2d/3d share: the parameters and buffers of ``_NormBase``, other defaults.

    As in ``torch.nn``: ``affine=False`` and ``track_running_stats=False`` by
    default; an input without the batch axis is normalized as a batch of one;
    ``momentum=None`` leaves the running statistics unchanged (PyTorch passes
    0.0, and InstanceNorm never counts ``num_batches_tracked``).
    """

    _no_batch_dim: int = 0

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device, dtype, bias=bias)

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats,
                               self._running_stats_factor(counted=False), self.eps)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        feature_dim = input.dim() - self._no_batch_dim
        if errors.check_num_features(input.size(feature_dim), self.num_features, feature_dim,
                                     self.affine):
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. "
                          "You can silence this warning by not passing in num_features, "
                          "which is not used because affine=False", stacklevel=2)
        if input.dim() == self._no_batch_dim:  # (C, *): a batch of one
            return self._apply_instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._apply_instance_norm(input)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # checkpoints from before PyTorch 0.4 carry running stats that are not tracked
        version = local_metadata.get("version", None)
        if version is None and not self.track_running_stats:
            keys = [prefix + k for k in ("running_mean", "running_var") if prefix + k in state_dict]
            if keys:
                error_msgs.append(
                    "Unexpected running stats buffer(s) {names} for {klass} with "
                    "track_running_stats=False. If state_dict is a checkpoint saved before "
                    "0.4.0, this may be expected because {klass} does not track running stats "
                    "by default since 0.4.0. Please remove these keys from state_dict. If the "
                    "running stats are actually needed, instead set track_running_stats=True "
                    "in {klass} to enable them. See the documentation of {klass} for "
                    "details.".format(names=" and ".join(f'"{k}"' for k in keys),
                                      klass=self.__class__.__name__))
                for key in keys:
                    state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)


class InstanceNorm1d(_InstanceNorm):
    r"""Instance normalization over a 2D (unbatched) or 3D input, as :class:`torch.nn.InstanceNorm1d`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The mean and the biased variance are taken per sample and channel over the
    length. Unlike BatchNorm the defaults are ``affine=False`` and
    ``track_running_stats=False``: the layer has no parameters and uses each
    instance's own statistics in training and in evaluation.

    Args:
        num_features: ``C`` of an input ``(N, C, L)`` or ``(C, L)``.
        eps: added to the variance. Default: 1e-5.
        momentum: weight of the new batch in the running estimates. Default: 0.1.
        affine: learnable per-channel ``weight`` and ``bias``. Default: False.
        track_running_stats: keep running estimates and normalize with them in
            evaluation. Default: False.

    Example::

        >>> from normtext import torch as nt
        >>> nt.InstanceNorm1d(4)(torch.randn(2, 4, 10)).shape
        torch.Size([2, 4, 10])
    """
    _accepted_ndim = (2, 3)
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    r"""Instance normalization over a 3D (unbatched) or 4D input, as :class:`torch.nn.InstanceNorm2d`.

    Statistics per sample and channel over ``H`` and ``W``; see :class:`InstanceNorm1d`.

    Example::

        >>> from normtext import torch as nt
        >>> nt.InstanceNorm2d(3, affine=True)(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """
    _accepted_ndim = (3, 4)
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    r"""Instance normalization over a 4D (unbatched) or 5D input, as :class:`torch.nn.InstanceNorm3d`.

    Statistics per sample and channel over ``D``, ``H`` and ``W``; see :class:`InstanceNorm1d`.

    Example::

        >>> from normtext import torch as nt
        >>> nt.InstanceNorm3d(3)(torch.randn(2, 3, 4, 4, 4)).shape
        torch.Size([2, 3, 4, 4, 4])
    """
    _accepted_ndim = (4, 5)
    _no_batch_dim = 4


# --- GroupNorm and LocalResponseNorm ----------------------------------------------------

class GroupNorm(nn.Module):
    r"""Group normalization, as :class:`torch.nn.GroupNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The channels are split into ``num_groups`` groups; the statistics of each
    sample's group are taken over its ``C/G`` channels and every position, in
    training and evaluation alike. ``weight`` and ``bias`` are per channel
    (MXNet Gluon 1.9.1 has them per group: see :mod:`normtext.mxnet.group_norm`).

    Args:
        num_groups: ``G``, which must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance. Default: 1e-5.
        affine: learnable per-channel ``weight`` and ``bias``. Default: True.
        bias: with ``affine``, learn ``bias`` too (keyword only). Default: True.

    Example::

        >>> from normtext import torch as nt
        >>> nt.GroupNorm(3, 6)(torch.randn(20, 6, 10, 10)).shape
        torch.Size([20, 6, 10, 10])
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        errors.check_groups_divide_channels(num_channels, num_groups)
        factory = {"device": device, "dtype": dtype}
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        _affine_parameters(self, num_channels, affine, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")


class LocalResponseNorm(nn.Module):
    r"""Local response normalization across channels, as :class:`torch.nn.LocalResponseNorm`.

    .. math::
        b_c = a_c \left(k + \frac{\alpha}{n} \sum_{c'} a_{c'}^2\right)^{-\beta}

    over the ``n = size`` channels ``c - n//2 .. c + (n-1)//2``. No parameters.

    Example::

        >>> from normtext import torch as nt
        >>> nt.LocalResponseNorm(2)(torch.randn(32, 5, 24, 24)).shape
        torch.Size([32, 5, 24, 24])
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input: Tensor) -> Tensor:
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return "{size}, alpha={alpha}, beta={beta}, k={k}".format(**self.__dict__)
