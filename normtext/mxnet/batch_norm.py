"""BatchNorm from scratch as a Gluon ``Block``, mirroring ``mxnet.gluon.nn.BatchNorm``.

Gluon's conventions differ from PyTorch's, and this block keeps Gluon's:

* ``momentum`` is the weight of the **old** value:
  ``running = momentum * running + (1 - momentum) * batch`` (default 0.9);
* the running variance is the **biased** batch variance;
* ``center=False`` freezes beta but still adds it; ``scale=False`` ignores gamma;
* the running statistics change when the gradient flows back (``backward()``
  inside ``autograd.record()``), not in the forward pass.

The last point is mirrored with an identity :class:`mxnet.autograd.Function`
placed on the output, whose backward performs the update. One difference
remains: MXNet's engine runs that Python backward asynchronously, so read the
running statistics after ``mx.nd.waitall()`` (Gluon's fused operator needs no
such call; the training loops and the harness of normtext make it).
"""
from __future__ import annotations

import mxnet as mx
from mxnet import autograd, gluon, nd

from .. import errors
from ..spec import BATCH_NORM
from ..moments import centered_moments
from ._util import compute_dtype, param


class _UpdateRunningStatsOnBackward(autograd.Function):
    """Identity on the output; its backward folds the batch statistics into the running ones."""

    def __init__(self, block: "BatchNorm", mean: nd.NDArray, var: nd.NDArray):
        super().__init__()
        self._block, self._mean, self._var = block, mean, var

    def forward(self, y):
        return y.copy()

    def backward(self, dy):
        m, b = self._block._momentum, self._block
        ctx = dy.context
        # running = momentum * running + (1 - momentum) * batch   (Gluon: momentum weighs the old)
        for p, batch in ((b.running_mean, self._mean), (b.running_var, self._var)):
            old = p.data(ctx)
            p.set_data(m * old + (1 - m) * batch.astype(old.dtype, copy=False))
        return dy


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

        # the channel axis may be anywhere: statistics over every other axis
        axes = tuple(i for i in range(x.ndim) if i != axis)
        view = tuple(channels if i == axis else 1 for i in range(x.ndim))
        ctx, dtype = x.context, compute_dtype(x.dtype)
        xc = x.astype(dtype, copy=False)  # float16 is normalized in float32
        if training:
            # biased, as Gluon stores it
            mean, centered, var = centered_moments(xc, axes)
        else:
            mean = param(self.running_mean, ctx, dtype, view)
            var = param(self.running_var, ctx, dtype, view)
            centered = xc - mean

        y = centered / nd.sqrt(var + self._epsilon)
        if self._scale:
            y = y * param(self.gamma, ctx, dtype, view)
        # Gluon adds beta even with center=False (it is then only frozen at its
        # initial value), while scale=False ignores gamma's value (fix_gamma): mirror both
        y = (y + param(self.beta, ctx, dtype, view)).astype(x.dtype, copy=False)
        if training and autograd.is_recording():
            y = _UpdateRunningStatsOnBackward(self, mean.reshape(-1).detach(),
                                              var.reshape(-1).detach())(y)
        return y

    def __repr__(self):
        return (f"{self.__class__.__name__}(axis={self._axis}, eps={self._epsilon}, "
                f"momentum={self._momentum}, fix_gamma={not self._scale}, "
                f"use_global_stats={self._use_global_stats}, "
                f"in_channels={self.gamma.shape[0] or None})")
