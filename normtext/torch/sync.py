"""SyncBatchNorm from scratch on ``torch.distributed``: BatchNorm whose batch spans processes.

In data-parallel training every process sees only its own slice of the batch.
Plain BatchNorm then normalizes with per-process statistics; SyncBatchNorm
takes them over the union of all the slices, so the layer computes exactly what
one BatchNorm would compute on the concatenated global batch.

What crosses the network, per layer and step (``C`` channels):

* forward: one ``all_reduce`` (sum) of ``2C + 1`` numbers per process: the
  count ``n_p``, the per-channel sums ``S_p = sum x`` and the per-channel sums
  of squares ``Q_p = M2_p + n_p mean_p^2``, where ``M2_p`` is the local sum of
  squared deviations taken in two passes. The global statistics follow in
  float64::

      n = sum n_p,  mean = S / n,  var = (Q - S^2 / n) / n

  (the sum-of-squares formula, not Chan et al.'s pairwise update: sums let one
  ``all_reduce`` serve unequal batch sizes, and its cancellation in
  ``Q - S^2/n`` is safe only because it runs in float64, which keeps it below
  float32's resolution while ``|mean| / std < 1e4``.)
* backward: one ``all_reduce`` of ``2C`` numbers, ``sum dy`` and
  ``sum dy * x_hat`` per channel, because the input gradient of a normalized
  value depends on the whole batch::

      dx = gamma / sigma * (dy - sum(dy) / n - x_hat * sum(dy x_hat) / n)

The gamma and beta gradients stay local: DistributedDataParallel averages them
across processes like every other parameter gradient.

:class:`SyncBatchNorm` mirrors :class:`torch.nn.SyncBatchNorm` (constructor,
``process_group``, parameter and buffer names, running-statistics convention,
:meth:`SyncBatchNorm.convert_sync_batchnorm`). Unlike the built-in it runs on
the CPU with the gloo backend as well as on GPUs with NCCL.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import errors
from ..spec import SYNC_BATCH_NORM
from . import functional as F
from ._util import check_floating, compute_dtype
from .modules import _BatchNorm

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "global_batch_stats"]


def global_batch_stats(x: Tensor, process_group=None, world_size: int = 1):
    """Per-channel ``(count, mean, biased var)`` of ``x`` over every process, in float64.

    ``x`` has shape ``(N, C, *)``; the statistics are over ``N`` and the
    spatial axes of all processes' inputs. One ``all_reduce`` of ``2C + 1``
    float64 numbers per process.
    """
    axes = SYNC_BATCH_NORM.reduce_axes(x.ndim, 1)
    n_local = x.numel() // x.shape[1] if x.shape[1] else 0
    # two passes on the local slice: mean_p, then M2_p = sum (x - mean_p)^2
    mean_p = x.sum(dim=axes) / max(n_local, 1)
    m2_p = (x - mean_p.reshape(SYNC_BATCH_NORM.stats_shape(x.shape))).square().sum(dim=axes)
    mean_p, m2_p = mean_p.double(), m2_p.double()
    count = torch.full((1,), float(n_local), dtype=torch.float64, device=x.device)
    # [n_p | S_p = n_p mean_p | Q_p = M2_p + n_p mean_p^2]: sums over processes are meaningful
    packed = torch.cat([count, n_local * mean_p, m2_p + n_local * mean_p.square()])
    if world_size > 1:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=process_group)
    channels = x.shape[1]
    n, s, q = packed[0], packed[1:1 + channels], packed[1 + channels:]
    mean = s / n.clamp(min=1)
    # M2 = Q - S^2 / n  (float64: the cancellation costs eps64 * mean^2 / var)
    var = ((q - s * mean) / n.clamp(min=1)).clamp(min=0)
    return int(n.item()), mean, var


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm with statistics and gradient sums reduced over a process group."""

    @staticmethod
    def forward(ctx, input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                running_mean: Optional[Tensor], running_var: Optional[Tensor],
                eps: float, momentum: float, process_group, world_size: int) -> Tensor:
        x = input.to(compute_dtype(input.dtype))
        view = SYNC_BATCH_NORM.stats_shape(x.shape)
        n, mean64, var64 = global_batch_stats(x, process_group, world_size)
        # every process knows the global count now, so all raise together (no hang);
        # an empty global batch (n = 0) is BatchNorm's empty batch: nothing to update
        if n == 1:
            raise ValueError("Expected more than 1 value per channel when training, "
                             f"got input size {tuple(input.shape)} on each of "
                             f"{world_size} process(es) (global count {n})")
        F.update_running_stats(running_mean, running_var, mean64, var64, n, momentum)
        mean, var = mean64.to(x.dtype).reshape(view), var64.to(x.dtype).reshape(view)
        inv_std = torch.rsqrt(var + eps)                      # 1 / sqrt(sigma^2 + eps)
        x_hat = (x - mean) * inv_std                          # normalize with global stats
        y = x_hat
        if weight is not None:
            y = y * weight.to(x.dtype).reshape(view)          # recover: gamma x_hat + beta
        if bias is not None:
            y = y + bias.to(x.dtype).reshape(view)
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.n, ctx.process_group, ctx.world_size = n, process_group, world_size
        ctx.has_bias = bias is not None
        return y.to(input.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x_hat, inv_std, weight = ctx.saved_tensors
        axes = SYNC_BATCH_NORM.reduce_axes(x_hat.ndim, 1)
        view = SYNC_BATCH_NORM.stats_shape(x_hat.shape)
        g = dy.to(x_hat.dtype)
        # the two per-channel sums of the local slice
        sum_dy = g.sum(dim=axes)                              # sum dy
        sum_dy_xhat = (g * x_hat).sum(dim=axes)               # sum dy x_hat
        d_input = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            both = torch.cat([sum_dy, sum_dy_xhat]).double()
            if ctx.world_size > 1:                           # the 2C numbers of the backward
                dist.all_reduce(both, op=dist.ReduceOp.SUM, group=ctx.process_group)
            c = sum_dy.numel()
            mean_dy = (both[:c] / ctx.n).to(g.dtype).reshape(view)
            mean_dy_xhat = (both[c:] / ctx.n).to(g.dtype).reshape(view)
            scale = inv_std if weight is None else inv_std * weight.to(g.dtype).reshape(view)
            # dx = gamma / sigma * (dy - mean(dy) - x_hat * mean(dy x_hat)), means over all processes
            d_input = (scale * (g - mean_dy - x_hat * mean_dy_xhat)).to(dy.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            d_weight = sum_dy_xhat.to(weight.dtype)            # local: DDP averages it
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = sum_dy.to(dy.dtype)
        return d_input, d_weight, d_bias, None, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    r"""Batch normalization with statistics over every process, as :class:`torch.nn.SyncBatchNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    where the mean and the biased variance of each channel are taken over the
    batch and spatial axes of the inputs of *all* processes of
    ``process_group``. In training mode, inside an initialized
    ``torch.distributed`` process group of more than one process, the layer
    synchronizes (gloo on the CPU, NCCL on GPUs); otherwise it is plain
    BatchNorm, exactly as the built-in falls back. The running estimates
    (``momentum`` weighs the new batch; ``None``: cumulative average) use the
    global unbiased variance, so they are identical on every process.

    Args:
        num_features: ``C`` of an input ``(N, C, *)``.
        eps: added to the variance. Default: 1e-5.
        momentum: weight of the new batch in the running estimates. Default: 0.1.
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: True.
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked``. Default: True.
        process_group: the group whose batches are pooled. Default: the world.
        bias: with ``affine``, learn beta too (keyword only). Default: True.

    Shape:
        - Input: :math:`(N, C, *)`, any number of spatial axes
        - Output: same shape as the input

    Example (in each of k processes started by :func:`normtext.distributed.launch`
    or ``torchrun``)::

        from normtext import torch as nt
        net = nt.SyncBatchNorm.convert_sync_batchnorm(net)
        ddp = torch.nn.parallel.DistributedDataParallel(net)
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Optional[Any] = None, device=None, dtype=None,
                 *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype, bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        errors.check_sync_batch_norm_input(input.dim(), tuple(input.shape))

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        counted = self.training and self.track_running_stats
        factor = self._running_stats_factor(counted)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        running_mean = self.running_mean if not self.training or self.track_running_stats else None
        running_var = self.running_var if not self.training or self.track_running_stats else None
        group, world_size = self._group()
        if not (bn_training and self.training and world_size > 1):
            output = F.batch_norm(input, running_mean, running_var, self.weight, self.bias,
                                  bn_training, factor, self.eps)
        else:
            check_floating(input, "batch_norm")
            output = SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean,
                                                 running_var, self.eps, factor, group, world_size)
        if counted:  # only once the input was accepted
            self._count_batch()
        return output

    def _group(self):
        """The process group to pool over and its size (1: nothing to synchronize)."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None, 1
        group = self.process_group or dist.group.WORLD
        return group, dist.get_world_size(group)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", process_group=..." if self.process_group else "")

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Replace every BatchNorm*d (torch.nn's or normtext's) in ``module`` by a SyncBatchNorm.

        Parameters, buffers, ``training`` and ``qconfig`` carry over (the
        tensors are shared, not copied), as in
        :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`. When ``module``
        itself is a BatchNorm, the new layer is returned. Only BatchNorm
        layers convert: InstanceNorm shares BatchNorm's parameters and buffers
        (both derive from ``_NormBase``) but not its statistics, and stays as
        it is, as do GroupNorm and LayerNorm.
        """
        out = module
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, _BatchNorm)):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group,
                      bias=module.bias is not None)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out
