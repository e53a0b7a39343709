"""BatchNorm from scratch as a Gluon ``Block``, mirroring ``mxnet.gluon.nn.BatchNorm``.

Gluon's conventions differ from PyTorch's, and this block keeps Gluon's:

* ``momentum`` is the weight of the **old** value:
  ``running = momentum * running + (1 - momentum) * batch`` (default 0.9);
* the running variance is the **biased** batch variance;
* ``center=False`` freezes beta but still adds it; ``scale=False`` ignores gamma;
* the running statistics change when the gradient flows back (``backward()``
  inside ``autograd.record()``), not in the forward pass.

The last point is mirrored by a side branch of the output (times zero) whose
backward writes the new running statistics (:func:`_update_on_backward`).
Like every MXNet operation it runs asynchronously: ``asnumpy()`` or
``mx.nd.waitall()`` waits for it.

Speed: the per-channel sums and broadcasts are matrix products with vectors of
ones, and the arithmetic runs as two hybridized blocks. Written the obvious
way (``x.mean(axis=(0, 2, 3))``, broadcasting, ``** 2``, the update on the
output's path), the block trained the BatchNorm chapter's LeNet about five
times slower than ``gluon.nn.BatchNorm``: MXNet 1.9.1's reduce over several
axes, its ``** 2`` and the backward of its broadcast operators are 5 to 20
times slower than a matrix product, and a Python ``autograd.Function``
doing the update cost about 0.4 of the built-in's epoch time on its own.
"""
from __future__ import annotations

import functools

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from .. import errors
from ..spec import BATCH_NORM
from ._util import compute_dtype, param


# Per-channel sums and broadcasts as matrix products with vectors of ones, on x seen as
# (pre, C, post): BLAS does them, and their backward is again a product. MXNet 1.9.1's
# reduce over axes (0, 2, 3) and the backward of its broadcast operators (a reduce
# again) cost 5 to 15 times more on LeNet's shapes.

def _channel_sum(F, t, ones_pre, ones_post):
    """(pre, C, post) -> (1, C): the sum over every axis but the channel's."""
    return F.dot(ones_pre, F.reshape(F.dot(t, ones_post), shape=(0, -1)))


def _broadcast(F, v, ones_pre, ones_post):
    """(1, C) -> (pre, C, post)."""
    return F.dot(F.expand_dims(F.dot(ones_pre, v, transpose_a=True), axis=2), ones_post,
                 transpose_b=True)


@functools.lru_cache(maxsize=64)
def _constants(pre: int, post: int, ctx, dtype) -> tuple:
    """Ones (1, pre) and (post, 1), and 1/n as a (1, 1) array."""
    return (nd.ones((1, pre), ctx=ctx, dtype=dtype), nd.ones((post, 1), ctx=ctx, dtype=dtype),
            nd.full((1, 1), 1.0 / (pre * post), ctx=ctx, dtype=dtype))


class _Statistics(gluon.HybridBlock):
    """The batch mean and biased variance per channel, and x minus an estimate of the mean.

    The corrected two-pass algorithm (Chan, Golub & LeVeque, 1983; as in
    :func:`normtext.moments.centered_moments`): ``d = x - m`` with ``m`` the mean
    as computed, ``shift = E[d]`` (0 but for the rounding of ``m``), then
    ``mean = m + shift`` and ``Var = E[d^2] - shift^2``. ``shift^2`` is at the
    rounding level, so the subtraction cancels nothing, and no second pass over
    ``d`` is needed: the shift is taken out in the affine step instead.
    """

    def hybrid_forward(self, F, x, ones_pre, ones_post, inv_n):
        m = F.broadcast_mul(_channel_sum(F, x, ones_pre, ones_post), inv_n)
        d = x - _broadcast(F, m, ones_pre, ones_post)
        shift = F.broadcast_mul(_channel_sum(F, d, ones_pre, ones_post), inv_n)
        var = F.broadcast_mul(_channel_sum(F, F.square(d), ones_pre, ones_post), inv_n) - F.square(shift)
        return d, shift, m + shift, var


class _Affine(gluon.HybridBlock):
    """y = centered * scale + offset, per channel (scale = gamma / sqrt(Var[x] + eps))."""

    def hybrid_forward(self, F, centered, scale, offset, ones_pre, ones_post):
        return (centered * _broadcast(F, scale, ones_pre, ones_post)
                + _broadcast(F, offset, ones_pre, ones_post))


def _update_on_backward(block, batch_mean, batch_var, ctx):
    """A (1, C) array of zeros to add to the output, whose backward updates the running statistics.

    running = momentum * running + (1 - momentum) * batch  (Gluon: momentum weighs the old).
    The new values are computed now; the backward writes them, without Python: each
    running statistic's memory is made the *gradient buffer* of a leaf ``t`` (of ones),
    and ``make_loss(t * new)``, whose backward ignores the gradient that reaches it and
    sends 1, gives ``t`` the gradient ``new``. Its output enters the block's output times 0.
    """
    m = block._momentum
    out = None
    for p, batch in ((block.running_mean, batch_mean), (block.running_var, batch_var)):
        running = p.data(ctx)
        new = (m * running + (1 - m) * batch.astype(running.dtype, copy=False)).detach()
        leaf = nd.ones(running.shape, ctx=ctx, dtype=running.dtype)
        autograd.mark_variables([leaf], [running], grad_reqs="write")
        term = nd.make_loss(leaf * new)
        out = term if out is None else out + term
    return out


class BatchNorm(gluon.Block):
    r"""Batch normalization, as :class:`mxnet.gluon.nn.BatchNorm` (MXNet 1.9.1).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Args:
        axis: the channel axis. Default: 1.
        momentum: weight of the old running value. Default: 0.9.
        epsilon: added to the variance. Default: 1e-5.
        center: learn ``beta``; with False it is frozen at its initial value
            (0) but still added, as in Gluon. Default: True.
        scale: learn ``gamma``; with False gamma's value is ignored (MXNet's
            ``fix_gamma``). Default: True.
        use_global_stats: normalize with the running statistics in training too.
        in_channels: number of channels; 0 defers it to the first input.

    Parameters are named ``gamma``, ``beta``, ``running_mean``, ``running_var``
    (with the block's prefix), like Gluon's.

    Example::

        >>> from normtext import mxnet as ntm
        >>> bn = ntm.BatchNorm(); bn.initialize()
        >>> bn(mx.nd.ones((4, 3, 2, 2))).shape
        (4, 3, 2, 2)
    """

    def __init__(self, axis=1, momentum=0.9, epsilon=1e-5, center=True, scale=True,
                 use_global_stats=False, beta_initializer="zeros", gamma_initializer="ones",
                 running_mean_initializer="zeros", running_variance_initializer="ones",
                 in_channels=0, **kwargs):
        super().__init__(**kwargs)
        errors.check_momentum(momentum)
        self._axis, self._momentum, self._epsilon = axis, momentum, epsilon
        self._use_global_stats = use_global_stats
        self._center, self._scale = center, scale
        get = lambda name, init, learn: self.params.get(
            name, grad_req="write" if learn else "null", shape=(in_channels,), init=init,
            allow_deferred_init=True, differentiable=learn)
        self.gamma = get("gamma", gamma_initializer, scale)
        self.beta = get("beta", beta_initializer, center)
        self.running_mean = get("running_mean", running_mean_initializer, False)
        self.running_var = get("running_var", running_variance_initializer, False)
        # the arithmetic, as two hybridized blocks without parameters (MXNet runs each as
        # one cached graph); the running statistics change between them, in backward()
        self._statistics, self._affine = _Statistics(), _Affine()
        self._statistics.hybridize(static_alloc=True)
        self._affine.hybridize(static_alloc=True)

    def _finish_deferred_init(self, channels: int) -> None:
        # in_channels=0: the shapes are known only now, from the first input
        for p in (self.gamma, self.beta, self.running_mean, self.running_var):
            if p.shape[0] == 0:
                p.shape = (channels,)
                p._finish_deferred_init()

    def forward(self, x):
        axis = self._axis % x.ndim
        channels = x.shape[axis]
        training = autograd.is_training() and not self._use_global_stats
        if training:
            errors.check_more_than_one_value_per_channel(
                (x.shape[0], channels, *[n for i, n in enumerate(x.shape) if i not in (0, axis)]))
        errors.check_eps(self._epsilon, training, "BatchNorm")
        self._finish_deferred_init(channels)
        errors.check_per_channel("gamma", self.gamma.shape, channels)

        # the channel axis may be anywhere: view x as (pre, C, post)
        pre = int(np.prod(x.shape[:axis], dtype=np.int64))
        post = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        ctx, dtype = x.context, compute_dtype(x.dtype)
        ones_pre, ones_post, inv_n = _constants(pre, post, ctx, dtype)
        x3 = x.astype(dtype, copy=False).reshape((pre, channels, post))  # float16 in float32
        if training:
            # centered = x - mean + shift: the shift is subtracted in the affine step
            centered, shift, mean, var = self._statistics(x3, ones_pre, ones_post, inv_n)
        else:
            mean = param(self.running_mean, ctx, dtype, (1, channels))
            var = param(self.running_var, ctx, dtype, (1, channels))
            centered = x3 - mean.reshape((1, channels, 1))

        inv_std = nd.rsqrt(var + self._epsilon)
        # Gluon adds beta even with center=False (it is then only frozen at its
        # initial value), while scale=False ignores gamma's value (fix_gamma): mirror both
        scale = inv_std * param(self.gamma, ctx, dtype, (1, channels)) if self._scale else inv_std
        # y = (centered - shift) * scale + beta = centered * scale + (beta - shift * scale)
        offset = param(self.beta, ctx, dtype, (1, channels))
        if training:
            offset = offset - shift * scale
        if training and autograd.is_recording():
            # a side branch, 0 * (...), whose backward writes the running statistics
            update = _update_on_backward(self, mean.reshape(-1).detach(), var.reshape(-1).detach(), ctx)
            offset = offset + (update * 0).astype(dtype, copy=False).reshape((1, channels))
        y = self._affine(centered, scale, offset, ones_pre, ones_post)
        return y.reshape(x.shape).astype(x.dtype, copy=False)

    def __repr__(self):
        return (f"{self.__class__.__name__}(axis={self._axis}, eps={self._epsilon}, "
                f"momentum={self._momentum}, fix_gamma={not self._scale}, "
                f"use_global_stats={self._use_global_stats}, "
                f"in_channels={self.gamma.shape[0] or None})")
