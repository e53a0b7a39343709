"""The *normalize* step shared by BN, LN, IN and GN, in float64, with its backward.

For the ``m`` elements ``x_i`` that one statistic is taken over,

.. math::
    \\mu = \\frac1m\\sum_i x_i,\\qquad
    \\sigma^2 = \\frac1m\\sum_i (x_i-\\mu)^2,\\qquad
    \\hat x_i = \\frac{x_i-\\mu}{\\sqrt{\\sigma^2+\\epsilon}}.

Which elements form one set is the only thing that distinguishes the norms; it
arrives here as ``axes`` (from :mod:`normtext.spec`).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np


class Standardized(NamedTuple):
    x_hat: np.ndarray    # (x - mean) / sqrt(var + eps), the shape of x
    mean: np.ndarray     # keepdims shape
    var: np.ndarray      # biased variance, keepdims shape
    inv_std: np.ndarray  # 1 / sqrt(var + eps), keepdims shape


def mean_over(x: np.ndarray, axes: Tuple[int, ...]) -> np.ndarray:
    """``x.mean(axes)``, except that an empty set of values has mean 0, not NaN and a warning.

    An empty batch has nothing to normalize; its (absent) statistics must not
    reach the running estimates, which the callers skip for ``m = 0``.
    """
    m = int(np.prod([x.shape[a] for a in axes]))
    return x.sum(axis=axes, keepdims=True) / max(m, 1)


def standardize(x: np.ndarray, axes: Tuple[int, ...], eps: float) -> Standardized:
    """Two-pass mean and variance: never E[x^2] - E[x]^2, which cancels catastrophically."""
    mean = mean_over(x, axes)
    # sigma^2 = mean((x - mu)^2), the biased variance every norm normalizes with
    var = mean_over((x - mean) ** 2, axes)
    # 1 / sqrt(sigma^2 + eps)
    inv_std = 1.0 / np.sqrt(var + eps)
    return Standardized((x - mean) * inv_std, mean, var, inv_std)


def standardize_backward(d_x_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray,
                         axes: Tuple[int, ...]) -> np.ndarray:
    """Gradient through x_hat = (x - mu) / sqrt(sigma^2 + eps), with mu and sigma^2 from x.

    Differentiating through the mean and the variance gives

    .. math::
        \\frac{\\partial L}{\\partial x_i} = \\frac{1}{\\sqrt{\\sigma^2+\\epsilon}}
        \\Big(g_i - \\overline{g} - \\hat x_i\\,\\overline{g\\,\\hat x}\\Big),
        \\qquad g = \\frac{\\partial L}{\\partial \\hat x},

    where the bars are means over the same ``m`` elements: the first term is the
    direct path, the second the path through mu, the third through sigma^2.
    """
    # mean of g over the set: the gradient that flows back through mu
    g_mean = mean_over(d_x_hat, axes)
    # mean of g * x_hat: the gradient that flows back through sigma^2
    g_x_hat_mean = mean_over(d_x_hat * x_hat, axes)
    return inv_std * (d_x_hat - g_mean - x_hat * g_x_hat_mean)
