"""The unified view: every norm of the family is *reshape, normalize, recover, reshape back*.

The notes on Li and Smola's Stanford course Practical Machine Learning describe BatchNorm in
four steps and say that the other norms change only the first:

1. **reshape** the input into a matrix whose *columns* are the sets that share
   one mean and variance (BatchNorm: ``(N*H*W, C)``; LayerNorm: ``(C*H*W, N)``;
   InstanceNorm: ``(H*W, N*C)``; GroupNorm, after splitting ``C`` into
   ``G * C/G``: ``(C/G*H*W, N*G)``);
2. **normalize** every column to mean 0 and variance 1;
3. **recover** with the learnable scale and shift;
4. **reshape back**.

:func:`normalize` does exactly this for any :class:`~normtext.spec.NormSpec`,
reading the reduction axes (and, for GroupNorm, the grouping reshape) from the
spec. It is deliberately generic, float64 NumPy, and slow; the tests and the
unified-view chapter assert that it reproduces BN, LN, IN and GN.

One correction to the seed: the recover step is *not* "the same as BN" for
every norm. Only for BatchNorm are gamma and beta per column of the matrix; for
LayerNorm they are per *row* (one per element of ``normalized_shape``) and for
GroupNorm per channel, i.e. per block of rows. So :func:`normalize` recovers
after reshaping back, on the input's own layout, with gamma/beta broadcast
along the spec's ``affine_axes``.
"""
from __future__ import annotations

from math import prod
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .standardize import standardize
from ..spec import NormSpec


class MatrixView(NamedTuple):
    """The reshape step: ``matrix`` has one column per set of statistics."""

    matrix: np.ndarray                       # (m, number of sets)
    back: Callable[[np.ndarray], np.ndarray]  # the inverse: a matrix of that shape -> input layout
    description: str                         # e.g. "(N*H*W, C)"


def _axis_names(ndim: int) -> list[str]:
    spatial = {0: [], 1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(ndim - 2)
    if spatial is None:
        spatial = [f"S{i}" for i in range(ndim - 2)]
    return ["N", "C", *spatial]


def to_matrix(x: np.ndarray, spec: NormSpec, *, k: int = 1,
              groups: Optional[int] = None) -> MatrixView:
    """Step 1, *reshape*: the input as a matrix whose columns are the normalized sets.

    For a grouped spec (GroupNorm) the input is first viewed as
    ``(N, G, C/G * prod(spatial))``, the "split C into s*g" of Li and Smola's CS 329P notes.
    """
    x = np.asarray(x)
    shape = x.shape
    names = _axis_names(x.ndim)
    if spec.grouped:
        if groups is None:
            raise ValueError(f"{spec.name} needs groups=")
        view = x.reshape(shape[0], groups, -1)
        names = ["N", "G", "*".join(["C/G", *names[2:]])]
    else:
        view = x
    reduce = tuple(spec.reduce_axes(view.ndim, k))
    keep = tuple(i for i in range(view.ndim) if i not in reduce)
    # move the reduced axes to the front: they become the rows of the matrix
    order = reduce + keep
    moved = view.transpose(order)
    m = prod(view.shape[i] for i in reduce)
    matrix = moved.reshape(m, -1)
    moved_shape = moved.shape
    inverse = np.argsort(order)

    def back(mat: np.ndarray) -> np.ndarray:
        # step 4, *reshape back*: undo the flattening, the transpose and the grouping
        return np.asarray(mat).reshape(moved_shape).transpose(inverse).reshape(shape)

    rows = "*".join(names[i] for i in reduce) or "1"
    cols = "*".join(names[i] for i in keep) or "1"
    return MatrixView(matrix, back, f"({rows}, {cols})")


def normalize(x, spec: NormSpec, *, k: int = 1, groups: Optional[int] = None,
              weight=None, bias=None, eps: float = 1e-5) -> np.ndarray:
    """Any of BN (training), LN, IN (training) and GN as the four steps, in float64.

    Args:
        x: input ``(N, C, *)``.
        spec: the norm (:data:`~normtext.spec.BATCH_NORM`, ``LAYER_NORM``, ...).
        k: for LayerNorm, the number of trailing axes in ``normalized_shape``.
        groups: for GroupNorm, ``G``.
        weight, bias: gamma and beta of the spec's parameter shape (or ``None``).
        eps: added to the variance.
    """
    x = np.asarray(x, dtype=np.float64)
    mv = to_matrix(x, spec, k=k, groups=groups)                 # 1. reshape
    x_hat = standardize(mv.matrix, (0,), eps).x_hat              # 2. normalize each column
    y = mv.back(x_hat)                                            # 4. reshape back
    # 3. recover, on the input's layout: gamma and beta span the spec's affine axes
    pshape = spec.param_shape(x.shape, k)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(pshape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(pshape)
    return y


def statistics_sets(shape: Sequence[int], spec: NormSpec, *, k: int = 1,
                    groups: Optional[int] = None) -> np.ndarray:
    """An integer label per input element: elements with the same label share a mean and variance."""
    ids = np.arange(prod(shape)).reshape(shape)
    mv = to_matrix(ids, spec, k=k, groups=groups)
    labels = np.broadcast_to(np.arange(mv.matrix.shape[1]), mv.matrix.shape)
    return mv.back(np.ascontiguousarray(labels))


def normalized_set(shape: Sequence[int], spec: NormSpec, index: Tuple[int, ...], *,
                   k: int = 1, groups: Optional[int] = None) -> np.ndarray:
    """A boolean mask of the elements normalized together with the element at ``index``."""
    labels = statistics_sets(shape, spec, k=k, groups=groups)
    return labels == labels[tuple(index)]
