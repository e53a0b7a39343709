"""``lrn``: local response normalization from NDArray operations, mirroring ``mxnet.nd.LRN``.

MXNet's convention (measured on 1.9.1): ``alpha`` is divided by ``nsize`` and
the window is symmetric, ``c - (nsize-1)//2 .. c + (nsize-1)//2``, so an even
``nsize`` sums ``nsize - 1`` channels; ``knorm`` defaults to 2 (PyTorch's ``k``
to 1). The input must be 4D, as for ``nd.LRN``.
"""
from __future__ import annotations

from mxnet import nd
from mxnet.base import MXNetError


def lrn(data, nsize: int, alpha: float = 1e-4, beta: float = 0.75, knorm: float = 2.0):
    r"""``b_c = a_c / (knorm + alpha/nsize * sum_{|j-c| <= (nsize-1)//2} a_j^2)^beta``, as ``nd.LRN``.

    Example::

        >>> from normtext.mxnet.lrn import lrn
        >>> lrn(mx.nd.ones((1, 6, 2, 2)), nsize=5).shape
        (1, 6, 2, 2)
    """
    if data.ndim != 4:
        raise MXNetError(f"Check failed: dim == ndim() (4 vs. {data.ndim}) : dimension do not "
                         f"match target dimension 4 vs {data.ndim}")
    half = (nsize - 1) // 2
    c = data.shape[1]
    sq = data * data
    if half > 0:  # zero-pad the channel axis on both sides
        zeros = nd.zeros((data.shape[0], half) + data.shape[2:], ctx=data.context, dtype=data.dtype)
        sq = nd.concat(zeros, sq, zeros, dim=1)
    window_sum = nd.add_n(*[nd.slice_axis(sq, axis=1, begin=o, end=o + c)
                            for o in range(2 * half + 1)])
    # b = a / (knorm + alpha / n * sum a^2)^beta
    return data / (knorm + alpha / nsize * window_sum) ** beta
