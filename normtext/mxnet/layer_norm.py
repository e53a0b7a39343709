"""LayerNorm from scratch as a Gluon ``Block``, mirroring ``mxnet.gluon.nn.LayerNorm``.

Gluon's LayerNorm differs from PyTorch's in what it normalizes over: **one**
axis (``axis=-1`` by default), with ``gamma``/``beta`` of shape ``(C,)`` for
that axis, where PyTorch takes a trailing ``normalized_shape`` of any length.
Like Gluon's, ``center=False``/``scale=False`` only freeze ``beta``/``gamma``
(``grad_req='null'``): they stay in the formula at their initial 0 and 1.

The variance is taken by the corrected two-pass formula
(:func:`normtext.moments.centered_moments`), float16 in float32. MXNet 1.9.1's
fused ``nd.LayerNorm`` is off by O(1) for float32 rows of mean 1e4 and 65,536
elements; this block is not.
"""
from __future__ import annotations

import mxnet as mx
from mxnet import gluon, nd

from ..moments import centered_moments
from ._util import compute_dtype, gamma_beta, param


class LayerNorm(gluon.Block):
    r"""Layer normalization over one axis, as :class:`mxnet.gluon.nn.LayerNorm` (MXNet 1.9.1).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with the mean and biased variance over ``axis``, per position of every other axis.

    Args:
        axis: the axis normalized over. Default: -1.
        epsilon: added to the variance. Default: 1e-5.
        center: learn ``beta``. Default: True.
        scale: learn ``gamma``. Default: True.
        in_channels: the size of ``axis``; 0 defers it to the first input.

    Example::

        >>> from normtext import mxnet as ntm
        >>> ln = ntm.LayerNorm(); ln.initialize()
        >>> ln(mx.nd.array([[1, 2, 3, 4, 5]])).shape
        (1, 5)
    """

    def __init__(self, axis=-1, epsilon=1e-5, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", in_channels=0, **kwargs):
        super().__init__(**kwargs)
        self._kwargs = {"eps": epsilon, "axis": axis, "center": center, "scale": scale}
        self._axis, self._epsilon, self._center, self._scale = axis, epsilon, center, scale
        self.gamma, self.beta = gamma_beta(self, (in_channels,), center=center, scale=scale,
                                           gamma_initializer=gamma_initializer,
                                           beta_initializer=beta_initializer)

    def _finish_deferred_init(self, channels: int) -> None:
        for p in (self.gamma, self.beta):
            if p.shape[0] == 0:
                p.shape = (channels,)
            if p._deferred_init:  # also when set_data() came before the first input
                p._finish_deferred_init()

    def forward(self, x):
        axis = self._axis % x.ndim
        channels = x.shape[axis]
        self._finish_deferred_init(channels)
        if self.gamma.shape[0] != channels:  # Gluon's own error (an MXNetError is a RuntimeError)
            raise mx.base.MXNetError(f"Shape inconsistent, Provided = [{self.gamma.shape[0]}], "
                                     f"inferred shape=[{channels}]")
        view = tuple(channels if i == axis else 1 for i in range(x.ndim))
        ctx, dtype = x.context, compute_dtype(x.dtype)
        xc = x.astype(dtype, copy=False)
        # mu and sigma^2 over the one axis, per position of the others (two passes: stable)
        _, centered, var = centered_moments(xc, axis)
        y = centered / nd.sqrt(var + self._epsilon)
        # y = gamma * x_hat + beta (a frozen gamma is 1, a frozen beta 0, unless set)
        y = y * param(self.gamma, ctx, dtype, view) + param(self.beta, ctx, dtype, view)
        return y.astype(x.dtype, copy=False)

    def __repr__(self):
        content = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{self.__class__.__name__}({content}, in_channels={self.gamma.shape[0]})"
