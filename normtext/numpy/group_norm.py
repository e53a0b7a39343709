"""GroupNorm in float64 NumPy: forward and a backward derived by hand.

The channels of each sample are split into ``G`` groups of ``C/G``
consecutive channels; the statistics of one group are taken over its channels
and every spatial position, i.e. over axis 2 of the view ``x.reshape(N, G, -1)``
(Li and Smola's CS 329P notes: "split C into s*g, put s with the spatial axes, g with the batch").

``gamma_per="channel"`` is PyTorch's and the paper's affine (one gamma and beta
per channel); ``gamma_per="group"`` is MXNet Gluon 1.9.1's (one per group).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import errors
from ..spec import GROUP_NORM
from .standardize import standardize, standardize_backward


class GroupNormResult(NamedTuple):
    y: np.ndarray
    cache: dict


def _affine_view(x_shape, num_groups, gamma_per):
    """The shape gamma and beta broadcast with, on the input (channel) or the grouped view (group)."""
    if gamma_per == "channel":
        return (1, x_shape[1]) + (1,) * (len(x_shape) - 2)
    if gamma_per == "group":
        return (1, num_groups, 1)
    raise ValueError(f"gamma_per must be 'channel' or 'group', got {gamma_per!r}")


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5,
               gamma_per: str = "channel") -> GroupNormResult:
    r"""Group normalization of ``x`` of shape ``(N, C, *)``, in float64.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} \gamma + \beta

    with the mean and biased variance of each sample's group ``g``.
    """
    x = np.asarray(x, dtype=np.float64)
    shape = lambda a: None if a is None else np.shape(a)
    if gamma_per == "channel":
        errors.check_group_norm(x.shape, num_groups, weight=shape(weight), bias=shape(bias))
    else:
        errors.check_group_norm(x.shape, num_groups)
    n = x.shape[0]
    # reshape: (N, C, *) -> (N, G, C/G * prod(spatial)), sized explicitly for empty inputs
    per_group = int(np.prod(x.shape[1:])) // num_groups
    xg = x.reshape(n, num_groups, per_group)
    axes = GROUP_NORM.reduce_axes(xg.ndim, 1)            # (2,): within a group
    x_hat_g, _, _, inv_std = standardize(xg, axes, eps)  # normalize
    view = _affine_view(x.shape, num_groups, gamma_per)
    as_view = lambda a: np.asarray(a, dtype=np.float64).reshape(view)
    gamma = np.ones(view) if weight is None else as_view(weight)
    beta = np.zeros(view) if bias is None else as_view(bias)
    if gamma_per == "channel":
        x_hat = x_hat_g.reshape(x.shape)                 # reshape back, then recover
        y = gamma * x_hat + beta
    else:
        y = (gamma * x_hat_g + beta).reshape(x.shape)    # recover per group, reshape back
        x_hat = x_hat_g.reshape(x.shape)
    cache = dict(x_hat=x_hat, inv_std=inv_std, gamma=gamma, num_groups=num_groups,
                 gamma_per=gamma_per)
    return GroupNormResult(y, cache)


def group_norm_backward(dy, cache: dict):
    """Gradients ``(dx, dweight, dbias)`` of :func:`group_norm`.

    ``dx`` is the standardize backward on the grouped view; gamma's gradient
    sums ``dy * x_hat`` over every axis gamma is broadcast along.
    """
    dy = np.asarray(dy, dtype=np.float64)
    x_hat, g = cache["x_hat"], cache["num_groups"]
    n, per_group = dy.shape[0], int(np.prod(dy.shape[1:])) // g
    if cache["gamma_per"] == "channel":
        param_axes = (0, *range(2, dy.ndim))
        d_gamma = (dy * x_hat).sum(axis=param_axes)      # sum over n and positions
        d_beta = dy.sum(axis=param_axes)
        d_x_hat = (dy * cache["gamma"]).reshape(n, g, per_group)
    else:
        dyg, xg = dy.reshape(n, g, per_group), x_hat.reshape(n, g, per_group)
        d_gamma = (dyg * xg).sum(axis=(0, 2))            # one gamma per group
        d_beta = dyg.sum(axis=(0, 2))
        d_x_hat = dyg * cache["gamma"]
    dx = standardize_backward(d_x_hat, x_hat.reshape(n, g, per_group), cache["inv_std"], (2,))
    return dx.reshape(dy.shape), d_gamma, d_beta
