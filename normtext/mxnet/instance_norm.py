"""InstanceNorm from scratch as a Gluon ``Block``, mirroring ``mxnet.gluon.nn.InstanceNorm`` (1.9.1).

Gluon's defaults differ from PyTorch's ``InstanceNorm2d``:

* ``center=True, scale=False``: ``beta`` is learned, ``gamma`` exists but is
  fixed (``grad_req='null'``) at its initial value 1. Both are *always* applied
  by the operator, so a ``gamma`` set by hand still scales the output;
* no running statistics: training and prediction both use each instance's own
  statistics;
* the docstring of Gluon's block writes ``/ (sqrt(Var) + eps)``, but the
  operator computes ``/ sqrt(Var + eps)`` (measured; see the conventions appendix);
* MXNet's operator accepts float32 only (float64 input raises ``MXNetError``).
"""
from __future__ import annotations

from mxnet import gluon, nd

from ..spec import INSTANCE_NORM
from ..moments import centered_moments
from ._util import compute_dtype, gamma_beta, param


class InstanceNorm(gluon.Block):
    r"""Instance normalization, as :class:`mxnet.gluon.nn.InstanceNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with the statistics over every axis except the batch axis 0 and ``axis``.

    Args:
        axis: the channel axis. Default: 1.
        epsilon: added to the variance. Default: 1e-5.
        center: learn ``beta`` (else it stays at its initial 0). Default: True.
        scale: learn ``gamma`` (else it stays at its initial 1). Default: False.
        in_channels: number of channels; 0 defers it to the first input.

    Example::

        >>> from normtext import mxnet as ntm
        >>> layer = ntm.InstanceNorm(); layer.initialize()
        >>> layer(mx.nd.ones((2, 3, 4, 4))).shape
        (2, 3, 4, 4)
    """

    def __init__(self, axis=1, epsilon=1e-5, center=True, scale=False,
                 beta_initializer="zeros", gamma_initializer="ones", in_channels=0, **kwargs):
        super().__init__(**kwargs)
        self._kwargs = {"eps": epsilon, "axis": axis, "center": center, "scale": scale}
        self._axis, self._epsilon = axis, epsilon
        self.gamma, self.beta = gamma_beta(self, (in_channels,), center=center, scale=scale,
                                           gamma_initializer=gamma_initializer,
                                           beta_initializer=beta_initializer)

    def forward(self, x):
        if self._axis != 1:
            x = x.swapaxes(1, self._axis)
        channels = x.shape[1]
        for p in (self.gamma, self.beta):   # in_channels=0: known only now
            if p.shape[0] == 0:
                p.shape = (channels,)
                p._finish_deferred_init()
        axes = INSTANCE_NORM.reduce_axes(x.ndim, 1)
        view = INSTANCE_NORM.param_shape(x.shape)
        ctx, dtype = x.context, compute_dtype(x.dtype)
        _, centered, var = centered_moments(x.astype(dtype, copy=False), axes)  # biased
        # gamma and beta are always applied; scale/center only decide whether they learn
        y = centered / nd.sqrt(var + self._epsilon) * param(self.gamma, ctx, dtype, view) \
            + param(self.beta, ctx, dtype, view)
        y = y.astype(x.dtype, copy=False)
        return y if self._axis == 1 else y.swapaxes(1, self._axis)

    def __repr__(self):
        content = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{self.__class__.__name__}({content}, in_channels={self.gamma.shape[0]})"
