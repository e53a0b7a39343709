"""GroupNorm from scratch as a Gluon ``Block``, mirroring ``mxnet.gluon.nn.GroupNorm`` (1.9.1).

In MXNet 1.9.1 ``gamma`` and ``beta`` have one entry **per group**
(shape ``(num_groups,)``), where the paper (Wu & He, 2018) and PyTorch have one
per channel. A per-group gamma equals a per-channel one that repeats each
group's value ``C/G`` times (:func:`per_channel`); the converse holds only when
the per-channel values are constant within each group. As with InstanceNorm,
gamma and beta are always applied; ``scale``/``center`` decide only whether
they learn.
"""
from __future__ import annotations

import numpy as np
from mxnet import gluon, nd
from mxnet.base import MXNetError

from ..spec import GROUP_NORM
from ..moments import centered_moments
from ._util import compute_dtype, gamma_beta, param


def per_channel(gamma_per_group, num_channels: int) -> np.ndarray:
    """A per-group gamma (or beta) as the per-channel vector PyTorch's GroupNorm needs."""
    g = np.asarray(gamma_per_group)
    return np.repeat(g, num_channels // len(g))


class GroupNorm(gluon.Block):
    r"""Group normalization, as :class:`mxnet.gluon.nn.GroupNorm` (gamma and beta per group).

    .. math::
        x' = x.\mathrm{reshape}(N, G, -1),\quad
        y = \frac{x' - \mathrm{E}[x']}{\sqrt{\mathrm{Var}[x'] + \epsilon}} \gamma_g + \beta_g

    Args:
        num_groups: ``G``, which must divide the channels. Default: 1.
        epsilon: added to the variance. Default: 1e-5.
        center, scale: learn ``beta``, ``gamma``. Default: True.

    Example::

        >>> from normtext import mxnet as ntm
        >>> layer = ntm.GroupNorm(num_groups=2); layer.initialize()
        >>> layer.gamma.shape
        (2,)
    """

    def __init__(self, num_groups=1, epsilon=1e-5, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._kwargs = {"eps": epsilon, "num_groups": num_groups, "center": center,
                        "scale": scale}
        self._num_groups, self._epsilon = num_groups, epsilon
        self._center, self._scale = center, scale
        self.gamma, self.beta = gamma_beta(self, (num_groups,), center=center, scale=scale,
                                           gamma_initializer=gamma_initializer,
                                           beta_initializer=beta_initializer)

    def forward(self, x):
        g = self._num_groups
        if x.shape[1] % g != 0:
            raise MXNetError(f"Check failed: dshape[1] % num_groups == 0 "
                             f"({x.shape[1] % g} vs. 0) : # of channels must be divisible by "
                             "# of groups")
        ctx, dtype = x.context, compute_dtype(x.dtype)
        # reshape: (N, C, *) -> (N, G, C/G * prod(spatial)); float16 in float32
        xg = x.astype(dtype, copy=False).reshape((x.shape[0], g, -1))
        axes = GROUP_NORM.reduce_axes(3, 1)
        _, centered, var = centered_moments(xg, axes)
        x_hat = centered / nd.sqrt(var + self._epsilon)
        # recover with one gamma and beta per group, then reshape back
        per_group = (1, g, 1)
        y = x_hat * param(self.gamma, ctx, dtype, per_group) + param(self.beta, ctx, dtype, per_group)
        return y.reshape(x.shape).astype(x.dtype, copy=False)

    def __repr__(self):
        content = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{self.__class__.__name__}({content})"
