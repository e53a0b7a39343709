r"""BatchNorm at inference and in practice: folding, freezing, re-estimating, renormalizing.

* :func:`fold_batch_norm` / :func:`fold_sequential`: merge an evaluation-mode
  BatchNorm into the convolution or linear layer before it (one affine map
  instead of two), as :func:`torch.nn.utils.fusion.fuse_conv_bn_eval` and
  :func:`~torch.nn.utils.fusion.fuse_linear_bn_eval` do;
* :class:`FrozenBatchNorm2d` / :func:`freeze_batch_norm`: statistics *and*
  affine fixed, with the semantics of ``torchvision.ops.FrozenBatchNorm2d``
  (buffers ``weight``, ``bias``, ``running_mean``, ``running_var``; no
  parameters), used to fine-tune detectors at small batch;
* :func:`precise_batch_norm`: recompute the running statistics of every
  BatchNorm of a model from data ("precise BN"), the buffers
  :func:`torch.optim.swa_utils.update_bn` computes, without switching the
  other layers (dropout) to training;
* :class:`BatchRenorm1d` / :class:`BatchRenorm2d` (Ioffe, 2017) with the
  clipping schedule of :func:`renorm_limits`;
* :class:`GhostBatchNorm1d` / :class:`GhostBatchNorm2d` (Hoffer et al., 2017):
  batch statistics over fixed-size slices ("ghost batches") of the batch.

The layers keep ``torch.nn.BatchNorm``'s parameter and buffer names, so their
``state_dict`` loads into a BatchNorm and back. Bad input fails as in PyTorch
(:mod:`normtext.errors`).
"""
from __future__ import annotations

import copy
from typing import Iterable, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import errors
from ._util import check_floating
from .modules import BatchNorm2d, _BatchNorm

__all__ = ["fold_batch_norm", "fold_sequential", "FrozenBatchNorm2d", "freeze_batch_norm",
           "precise_batch_norm", "batch_norm_modules", "renorm_limits",
           "BatchRenorm1d", "BatchRenorm2d", "GhostBatchNorm1d", "GhostBatchNorm2d"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _is_batch_norm(module: nn.Module) -> bool:
    """torch.nn's BatchNorm1d/2d/3d and SyncBatchNorm, and normtext's (renorm and ghost included)."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, _BatchNorm))


def batch_norm_modules(model: nn.Module) -> list:
    """Every BatchNorm of ``model`` (torch.nn's and normtext's) that keeps running statistics."""
    return [m for m in model.modules() if _is_batch_norm(m) and m.track_running_stats]


# --- folding ----------------------------------------------------------------------------

def fold_batch_norm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    r"""A copy of ``layer`` (``Conv1d/2d/3d`` or ``Linear``) that also does ``bn``'s evaluation-mode affine map.

    In evaluation, BatchNorm is the per-channel affine map
    :math:`y = s\,(z - \mu) + \beta` with :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`.
    Applied to :math:`z = W x + b` it gives one layer with

    .. math::
        W' = s \odot W \ (\text{per output channel}), \qquad b' = s\,(b - \mu) + \beta .

    The new weights are computed in float64 and rounded once to the layer's
    dtype. Both modules must be in evaluation mode and ``bn`` must keep running
    statistics (``AssertionError`` otherwise, as ``torch.nn.utils.fusion``).

    Example::

        >>> conv, bn = nn.Conv2d(3, 8, 3).eval(), nn.BatchNorm2d(8).eval()
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(fold_batch_norm(conv, bn)(x), bn(conv(x)), atol=1e-6)
        True
    """
    if layer.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    if not isinstance(layer, _FOLDABLE):
        raise TypeError(f"can fold a BatchNorm into Conv1d/2d/3d or Linear, not {type(layer).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    out_channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if isinstance(layer, nn.Linear) and out_channels != bn.num_features and bn.num_features != 1:
        raise AssertionError(
            f"To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={out_channels} and bn.num_features={bn.num_features}")
    folded = copy.deepcopy(layer)
    w = layer.weight.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)                               # s = gamma / sqrt(var + eps)
    s_out = s.expand(out_channels) if s.numel() == 1 else s
    new_w = w * s_out.reshape(-1, *([1] * (w.dim() - 1)))              # W' = s W (per output channel)
    new_b = (b - mean) * s + beta                                      # b' = s (b - mu) + beta
    new_b = new_b.expand(out_channels) if new_b.numel() == 1 else new_b
    folded.weight = nn.Parameter(new_w.to(layer.weight.dtype), layer.weight.requires_grad)
    folded.bias = nn.Parameter(new_b.to(layer.weight.dtype).clone(), layer.weight.requires_grad)
    return folded


def fold_sequential(model: nn.Sequential) -> nn.Sequential:
    """An evaluation-mode copy of ``model`` with every (Conv/Linear, BatchNorm) pair folded into one layer.

    Only a BatchNorm that directly follows a convolution or linear layer is
    folded; a BatchNorm after an activation stays (it cannot be moved across
    the nonlinearity). Nested ``nn.Sequential`` blocks are folded too.
    """
    if model.training:
        raise AssertionError("Fusion only for eval!")
    layers = []
    for module in model:
        if isinstance(module, nn.Sequential):
            module = fold_sequential(module)
        if _is_batch_norm(module) and layers and isinstance(layers[-1], _FOLDABLE):
            layers[-1] = fold_batch_norm(layers[-1], module)
        else:
            layers.append(copy.deepcopy(module))
    return nn.Sequential(*layers).eval()


# --- frozen BatchNorm -------------------------------------------------------------------

class FrozenBatchNorm2d(nn.Module):
    r"""BatchNorm2d whose statistics and affine parameters are fixed.

    .. math::
        y = \frac{x - \mathrm{running\_mean}}{\sqrt{\mathrm{running\_var} + \epsilon}}
            \cdot \mathrm{weight} + \mathrm{bias}

    in training and in evaluation alike: ``weight``, ``bias``, ``running_mean``
    and ``running_var`` are *buffers*, not parameters, so no optimizer changes
    them and no forward pass updates them (the semantics of
    ``torchvision.ops.FrozenBatchNorm2d``). A BatchNorm2d's ``state_dict``
    loads into it (its ``num_batches_tracked`` is dropped).

    Args:
        num_features: ``C`` of an input ``(N, C, H, W)``.
        eps: added to the variance. Default: 1e-5.

    Shape:
        - Input: :math:`(N, C, H, W)`; output: the same.

    Example::

        >>> frozen = FrozenBatchNorm2d.from_batch_norm(nn.BatchNorm2d(8).eval())
        >>> frozen(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, bn: nn.Module) -> "FrozenBatchNorm2d":
        """The frozen copy of a BatchNorm's evaluation-mode map (its running statistics, gamma and beta)."""
        if bn.running_mean is None:
            raise ValueError("a BatchNorm with track_running_stats=False has no statistics to freeze")
        frozen = cls(bn.num_features, bn.eps).to(bn.running_mean)   # its device and dtype
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
        if bn.weight is not None:
            frozen.weight.copy_(bn.weight.detach())
        if bn.bias is not None:
            frozen.bias.copy_(bn.bias.detach())
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        errors.check_ndim(x.dim(), (4,))
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # gamma / sqrt(var + eps)
        shift = self.bias - self.running_mean * scale                    # beta - mu * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batch_norm(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``BatchNorm2d`` of ``model`` by its :class:`FrozenBatchNorm2d`; return ``model``.

    ``model`` itself may be a BatchNorm2d: then its frozen copy is returned.
    """
    if isinstance(model, (nn.BatchNorm2d, BatchNorm2d)) or \
            (isinstance(model, _BatchNorm) and model._accepted_ndim == (4,)):
        return FrozenBatchNorm2d.from_batch_norm(model)
    for name, child in model.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(model, name, new)
    return model


# --- precise BN -------------------------------------------------------------------------

@torch.no_grad()
def precise_batch_norm(model: nn.Module, batches: Iterable, device=None) -> nn.Module:
    """Recompute every BatchNorm's running statistics from ``batches``; return ``model``.

    The statistics are reset and re-estimated as the plain average, over the
    batches, of each batch's mean and unbiased variance (``momentum=None``):
    the buffers of :func:`torch.optim.swa_utils.update_bn`. Unlike ``update_bn``
    only the BatchNorms run in training mode, every other layer (dropout)
    stays as it was, and no graph is recorded. Each element of ``batches`` is
    an input tensor or a tuple whose first element is one.
    """
    bns = batch_norm_modules(model)
    saved = {m: (m.momentum, m.training) for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None       # cumulative average: batch t weighs 1/t
        m.train()
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(x if device is None else x.to(device))
    finally:
        for m, (momentum, training) in saved.items():
            m.momentum = momentum
            m.train(training)
    return model


# --- batch renormalization --------------------------------------------------------------

def renorm_limits(step: int, *, r_max: float = 3.0, d_max: float = 5.0, warmup: int = 5000,
                  r_full: int = 40000, d_full: int = 25000) -> Tuple[float, float]:
    """Batch Renormalization's clipping bounds ``(r_max, d_max)`` at training step ``step``.

    Ioffe (2017) trains with plain BatchNorm (``r_max = 1``, ``d_max = 0``) for
    the first ``warmup`` steps, then relaxes the bounds gradually until
    ``r_max`` is reached at step ``r_full`` and ``d_max`` at ``d_full``. The
    relaxation is linear here.
    """
    def ramp(start, end, full):
        if step <= warmup:
            return start
        if step >= full:
            return end
        return start + (end - start) * (step - warmup) / (full - warmup)
    return ramp(1.0, r_max, r_full), ramp(0.0, d_max, d_full)


class _BatchRenorm(_BatchNorm):
    r"""Batch Renormalization: BatchNorm whose training output uses the population's statistics.

    With the batch's mean :math:`\mu_B` and :math:`\sigma_B = \sqrt{\sigma_B^2 + \epsilon}`
    (biased variance) and the running :math:`\mu` and :math:`\sigma = \sqrt{\mathrm{running\_var} + \epsilon}`,

    .. math::
        r = \operatorname{clip}_{[1/r_{max},\, r_{max}]}\Big(\frac{\sigma_B}{\sigma}\Big),\quad
        d = \operatorname{clip}_{[-d_{max},\, d_{max}]}\Big(\frac{\mu_B - \mu}{\sigma}\Big),\quad
        y = \gamma\Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta ,

    where :math:`r` and :math:`d` are constants for the gradient. Unclipped,
    :math:`\frac{x - \mu_B}{\sigma_B} r + d = \frac{x - \mu}{\sigma}`: the output
    of training equals that of evaluation. The bounds follow
    :func:`renorm_limits` of the number of training batches seen. The running
    estimates are updated as BatchNorm's (``momentum``, unbiased variance; the
    paper averages :math:`\sigma_B` instead of the variance), so with
    ``r_max=1, d_max=0`` the layer *is* ``torch.nn.BatchNorm``.

    Args:
        num_features, eps, momentum, affine: as ``torch.nn.BatchNorm``.
        r_max, d_max: the final bounds (the paper: 3 and 5).
        warmup, r_full, d_full: the schedule in training steps (the paper: 5000,
            40000 and 25000); see :func:`renorm_limits`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, *, r_max: float = 3.0, d_max: float = 5.0,
                 warmup: int = 5000, r_full: int = 40000, d_full: int = 25000,
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        if r_max < 1 or d_max < 0:
            raise ValueError(f"need r_max >= 1 and d_max >= 0, got {r_max} and {d_max}")
        self.r_max, self.d_max = r_max, d_max
        self.warmup, self.r_full, self.d_full = warmup, r_full, d_full

    def limits(self) -> Tuple[float, float]:
        """The bounds for the next training step."""
        return renorm_limits(int(self.num_batches_tracked), r_max=self.r_max, d_max=self.d_max,
                             warmup=self.warmup, r_full=self.r_full, d_full=self.d_full)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        errors.check_batch_norm(x.shape, training=self.training, eps=self.eps,
                                momentum=self.momentum, running_mean=tuple(self.running_mean.shape),
                                running_var=tuple(self.running_var.shape))
        check_floating(x, "batch_norm")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            axes = (0,) + tuple(range(2, x.dim()))
            var, mean = torch.var_mean(x, axes, correction=0, keepdim=True)  # mu_B, biased variance
            std = torch.sqrt(var + self.eps)                           # sigma_B
            run_std = torch.sqrt(self.running_var + self.eps).reshape(shape)
            r_max, d_max = self.limits()
            r = (std / run_std).detach().clamp(1 / r_max, r_max)      # r = clip(sigma_B / sigma)
            d = ((mean - self.running_mean.reshape(shape)) / run_std).detach().clamp(-d_max, d_max)
            x_hat = (x - mean) * (r / std) + d                         # (x - mu_B)/sigma_B * r + d
            m = x.numel() // x.shape[1]
            factor = self._running_stats_factor(True)
            with torch.no_grad():                                      # BatchNorm's update
                self.running_mean.lerp_(mean.reshape(-1), factor)
                self.running_var.lerp_(var.reshape(-1) * m / (m - 1), factor)
            self._count_batch()
        else:
            x_hat = (x - self.running_mean.reshape(shape)) * torch.rsqrt(
                self.running_var.reshape(shape) + self.eps)
        if self.weight is not None:
            x_hat = x_hat * self.weight.reshape(shape)
        if self.bias is not None:
            x_hat = x_hat + self.bias.reshape(shape)
        return x_hat

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r_max={self.r_max}, d_max={self.d_max}"


class BatchRenorm1d(_BatchRenorm):
    """Batch Renormalization of a 2D or 3D input ``(N, C[, L])``; see :class:`_BatchRenorm`.

    Example::

        >>> m = BatchRenorm1d(16, warmup=100, r_full=800, d_full=500)
        >>> m(torch.randn(4, 16)).shape
        torch.Size([4, 16])
    """
    _accepted_ndim = (2, 3)


class BatchRenorm2d(_BatchRenorm):
    """Batch Renormalization of a 4D input ``(N, C, H, W)``; see :class:`_BatchRenorm`."""
    _accepted_ndim = (4,)


# --- ghost batch normalization ----------------------------------------------------------

class _GhostBatchNorm(_BatchNorm):
    r"""BatchNorm whose training statistics come from slices of ``virtual_batch_size`` samples.

    Hoffer, Hubara and Soudry (2017) normalize each "ghost batch" of a large
    batch with its own mean and variance, which keeps the noise of small-batch
    statistics while the gradient step uses the whole batch. The running
    estimates are updated once per batch, with the average over the ghost
    batches of their means and unbiased variances. With one ghost batch
    (``virtual_batch_size >= N``) the layer is ``torch.nn.BatchNorm``; in
    evaluation it always is. A batch that does not divide evenly leaves a
    smaller last ghost batch.

    Args:
        num_features, eps, momentum, affine, track_running_stats: as ``torch.nn.BatchNorm``.
        virtual_batch_size: samples per ghost batch.
    """

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be positive, got {virtual_batch_size}")
        self.virtual_batch_size = virtual_batch_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        n, v = x.shape[0], self.virtual_batch_size
        for size in {min(v, n), n % v or v}:   # every ghost batch needs more than one value per channel
            errors.check_batch_norm(torch.Size((size,) + tuple(x.shape[1:])), training=True, eps=self.eps,
                                    momentum=self.momentum)
        check_floating(x, "batch_norm")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if n % v == 0:   # equal ghost batches: one view (N/v, v, C, ...), statistics over axis 1 and space
            y, means, variances = self._normalize(x.reshape(n // v, v, *x.shape[1:]), ghost_axis=True)
            y = y.reshape(x.shape)
        else:            # a smaller last ghost batch: one slice at a time
            parts = [self._normalize(g, ghost_axis=False) for g in x.split(v)]
            y = torch.cat([p[0] for p in parts])
            means = torch.cat([p[1] for p in parts])
            variances = torch.cat([p[2] for p in parts])
        if self.track_running_stats:
            factor = self._running_stats_factor(True)
            with torch.no_grad():   # the average over ghost batches of their statistics
                self.running_mean.lerp_(means.mean(0), factor)
                self.running_var.lerp_(variances.mean(0), factor)
            self._count_batch()
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y

    def _normalize(self, g: Tensor, ghost_axis: bool):
        """Standardized ghost batches, their means and unbiased variances (one row per ghost batch)."""
        first = 1 if ghost_axis else 0          # the axis of the samples within a ghost batch
        axes = (first,) + tuple(range(first + 2, g.dim()))
        var, mean = torch.var_mean(g, axes, correction=0, keepdim=True)  # per ghost batch and channel
        y = (g - mean) * torch.rsqrt(var + self.eps)                   # (x - mu_g) / sqrt(var_g + eps)
        m = g[0].numel() // g.shape[first + 1] if ghost_axis else g.numel() // g.shape[1]
        channels = g.shape[first + 1]
        return y, mean.reshape(-1, channels), var.reshape(-1, channels) * m / (m - 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost batch normalization of a 2D or 3D input ``(N, C[, L])``; see :class:`_GhostBatchNorm`.

    Example::

        >>> m = GhostBatchNorm1d(16, virtual_batch_size=8)
        >>> m(torch.randn(32, 16)).shape
        torch.Size([32, 16])
    """
    _accepted_ndim = (2, 3)


class GhostBatchNorm2d(_GhostBatchNorm):
    """Ghost batch normalization of a 4D input ``(N, C, H, W)``; see :class:`_GhostBatchNorm`."""
    _accepted_ndim = (4,)
