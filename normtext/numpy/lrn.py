r"""Local response normalization in float64 NumPy, in all three conventions, with a converter.

AlexNet's LRN (Krizhevsky et al., 2012; the survey "The evolution of normalization: six key
PyTorch normalization layers" reproduces it) divides each activation by a
power of the summed squares of its neighbours across channels at the same
position, a "lateral inhibition":

.. math::
    b_c = a_c \Big/ \Big(k + s \sum_{j=c-\mathrm{lo}}^{c+\mathrm{hi}} a_j^2\Big)^{\beta}

(channels outside ``0..C-1`` count as zero). Three conventions fill in ``s``
and the window ``lo..hi`` differently for a "size" ``n``:

============  ==============  ===================================  =========
convention    ``s``           window ``(lo, hi)``                  default k
============  ==============  ===================================  =========
``"paper"``   ``alpha``       ``(n//2, n//2)``, odd ``n`` only     2
``"torch"``   ``alpha / n``   ``(n//2, (n-1)//2)``                 1
``"mxnet"``   ``alpha / n``   ``((n-1)//2, (n-1)//2)``             2
============  ==============  ===================================  =========

For odd ``n`` the windows agree and only ``s`` differs (AlexNet's
``alpha=1e-4`` is PyTorch's ``alpha=5e-4`` with ``size=5``). For even ``n``
PyTorch's window is asymmetric (``n`` channels, one more before than after)
and MXNet's is symmetric with ``n - 1`` channels while it still divides by ``n``
(measured on mxnet 1.9.1). :func:`convert_lrn` maps parameters between the
conventions, and says when no equivalent exists.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import errors

CONVENTIONS = ("paper", "torch", "mxnet")


class LRNParams(NamedTuple):
    """LRN hyperparameters in one convention."""

    size: int
    alpha: float
    beta: float
    k: float
    convention: str


#: Each convention's defaults (the paper's are AlexNet's values; MXNet's ``nsize`` has none).
DEFAULTS = {
    "paper": LRNParams(5, 1e-4, 0.75, 2.0, "paper"),
    "torch": LRNParams(5, 1e-4, 0.75, 1.0, "torch"),  # size is required in PyTorch
    "mxnet": LRNParams(5, 1e-4, 0.75, 2.0, "mxnet"),  # nsize is required in MXNet
}


def window(size: int, convention: str) -> tuple[int, int]:
    """``(lo, hi)``: the channels ``c - lo .. c + hi`` summed for channel ``c``."""
    _check_convention(convention)
    if size < 1:
        raise ValueError(f"LRN size must be positive, got {size}")
    if convention == "paper":
        if size % 2 == 0:
            raise ValueError(f"the AlexNet paper's window is defined for odd n, got n={size}")
        return size // 2, size // 2
    if convention == "torch":
        return size // 2, (size - 1) // 2
    return (size - 1) // 2, (size - 1) // 2


def scale(alpha: float, size: int, convention: str) -> float:
    """``s``, the factor of the summed squares: ``alpha`` (paper) or ``alpha / n``."""
    _check_convention(convention)
    return alpha if convention == "paper" else alpha / size


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def window_sum(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``sum_{j=c-lo}^{c+hi} v_j`` along axis 1, with zeros outside the channels."""
    c = v.shape[1]
    pad = [(0, 0)] * v.ndim
    pad[1] = (lo, hi)
    padded = np.pad(v, pad)
    # a cumulative sum turns each window into one difference
    csum = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
    return csum[:, lo + hi + 1:lo + hi + 1 + c] - csum[:, :c]


class LRNResult(NamedTuple):
    y: np.ndarray
    cache: dict


def local_response_norm(a, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0, convention: str = "torch") -> LRNResult:
    r"""LRN of ``a`` of shape ``(N, C, *)`` in float64, across channels, in ``convention``."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 3:
        errors.check_local_response_norm(a.ndim, size)
    lo, hi = window(size, convention)
    s = scale(alpha, size, convention)
    # d_c = k + s * sum_{j in W(c)} a_j^2
    d = k + s * window_sum(a * a, lo, hi)
    # b_c = a_c * d_c^(-beta)
    y = a * d ** (-beta)
    return LRNResult(y, dict(a=a, d=d, lo=lo, hi=hi, s=s, beta=beta))


def local_response_norm_backward(dy, cache: dict) -> np.ndarray:
    r"""``dL/da`` of :func:`local_response_norm`, derived by hand.

    With :math:`b_i = a_i d_i^{-\beta}` and :math:`d_i = k + s\sum_{j\in W(i)} a_j^2`,

    .. math::
        \frac{\partial L}{\partial a_j} = g_j d_j^{-\beta}
        - 2\beta s\, a_j \sum_{i:\, j \in W(i)} g_i a_i d_i^{-\beta-1}.

    ``j`` lies in ``W(i) = [i-lo, i+hi]`` exactly when ``i`` lies in
    ``[j-hi, j+lo]``: the second sum is a window sum with the window mirrored.
    """
    g = np.asarray(dy, dtype=np.float64)
    a, d, beta, s = cache["a"], cache["d"], cache["beta"], cache["s"]
    direct = g * d ** (-beta)                                     # through a_j itself
    through_d = window_sum(g * a * d ** (-beta - 1), cache["hi"], cache["lo"])  # mirrored window
    return direct - 2 * beta * s * a * through_d


def convert_lrn(size: int, alpha: float, beta: float, k: float, *, source: str,
                target: str) -> LRNParams:
    """Parameters in ``target``'s convention that compute exactly what ``source``'s do.

    Raises ``ValueError`` when ``target`` cannot express ``source``'s window
    (PyTorch's asymmetric window of an even size has no MXNet or paper
    equivalent).

    >>> convert_lrn(5, 1e-4, 0.75, 2.0, source="paper", target="torch")
    LRNParams(size=5, alpha=0.0005, beta=0.75, k=2.0, convention='torch')
    >>> convert_lrn(4, 1e-4, 0.75, 2.0, source="mxnet", target="torch").size
    3
    """
    lo, hi = window(size, source)
    s = scale(alpha, size, source)
    # the target size whose window is (lo, hi): n = lo + hi + 1 covers it in every convention
    n = lo + hi + 1
    try:
        matches = window(n, target) == (lo, hi)
    except ValueError:
        matches = False
    if not matches:
        raise ValueError(f"{source} LRN with size={size} sums channels c-{lo}..c+{hi}; "
                         f"no {target} size has that window")
    # s = alpha' (paper) or alpha' / n (torch, mxnet)
    new_alpha = s if target == "paper" else s * n
    return LRNParams(n, new_alpha, beta, k, target)
