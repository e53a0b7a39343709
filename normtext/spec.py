"""The normalization family as data.

Every normalization layer is *reshape, normalize, recover, reshape back*
(Li and Smola's CS 329P notes, Practical Machine Learning). The members of the family differ only in

* which axes of the input the statistics are taken over (``reduce_axes``),
* which axes the learnable scale ``gamma`` and shift ``beta`` span
  (``affine_axes``),
* whether the layer keeps running statistics for inference, and
* what it computes over those axes (mean and variance, a mean square, or a
  windowed sum of squares).

A :class:`NormSpec` states this once. The NumPy reference, the PyTorch layers
and the MXNet Gluon blocks all read it, so a new norm is a new spec, not a new
copy of the arithmetic.

Axes are numbered for an input of shape ``(N, C, *spatial)``. ``k`` is the
number of trailing axes in ``normalized_shape`` (LayerNorm, RMSNorm); the other
norms ignore it. A grouped norm (GroupNorm) takes its statistics on the view
``x.reshape(N, G, -1)``, so its ``reduce_axes`` refer to that view.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Sequence, Tuple

Axes = Tuple[int, ...]
AxesRule = Callable[[int, int], Axes]


def _batch_and_spatial(ndim: int, k: int) -> Axes:
    return (0, *range(2, ndim))


def _spatial(ndim: int, k: int) -> Axes:
    return tuple(range(2, ndim))


def _channel(ndim: int, k: int) -> Axes:
    return (1,)


def _trailing(ndim: int, k: int) -> Axes:
    return tuple(range(ndim - k, ndim))


def _within_group(ndim: int, k: int) -> Axes:
    return (2,)  # on the view (N, G, C/G * prod(spatial))


def _none(ndim: int, k: int) -> Axes:
    return ()


@dataclass(frozen=True)
class NormSpec:
    """One member of the normalization family.

    Attributes:
        name: the layer's name, as PyTorch spells it.
        statistics_over: the set each statistic is taken over, in words.
        reduce_axes: ``(ndim, k) -> axes`` of the statistics.
        affine_axes: ``(ndim, k) -> axes`` that ``gamma`` and ``beta`` span.
        statistic: what is computed over those axes.
        tracks_running_stats: the PyTorch default for keeping running
            statistics (``None``: the layer has no such option).
        grouped: statistics are taken on the view ``(N, G, -1)``.
        windowed: each statistic covers a window of its reduce axis (LRN's
            ``size`` neighbouring channels, fewer at the edges), not all of it.
        across_processes: the statistics are summed over all processes.
    """

    name: str
    statistics_over: str
    reduce_axes: AxesRule
    affine_axes: AxesRule
    statistic: str = "mean and variance"
    tracks_running_stats: bool | None = None
    grouped: bool = False
    windowed: bool = False
    across_processes: bool = False

    def param_shape(self, input_shape: Sequence[int], k: int = 1) -> tuple[int, ...]:
        """The shape that broadcasts ``gamma``/``beta`` against the input.

        >>> BATCH_NORM.param_shape((8, 3, 32, 32))
        (1, 3, 1, 1)
        """
        axes = self.affine_axes(len(input_shape), k)
        return tuple(n if i in axes else 1 for i, n in enumerate(input_shape))

    def stats_shape(self, input_shape: Sequence[int], k: int = 1) -> tuple[int, ...]:
        """The shape of the mean and variance, before ``keepdims`` is dropped.

        >>> BATCH_NORM.stats_shape((8, 3, 32, 32))
        (1, 3, 1, 1)
        """
        axes = self.reduce_axes(len(input_shape), k)
        return tuple(1 if i in axes else n for i, n in enumerate(input_shape))

    def reduction_size(self, input_shape: Sequence[int], k: int = 1) -> int:
        """How many elements each statistic is taken over (``m`` in the papers).

        >>> BATCH_NORM.reduction_size((8, 3, 32, 32))
        8192
        """
        axes = self.reduce_axes(len(input_shape), k)
        return prod([input_shape[i] for i in axes])   # a list: torch.compile cannot trace a generator


BATCH_NORM = NormSpec(
    "BatchNorm", "N and every spatial axis, per channel",
    reduce_axes=_batch_and_spatial, affine_axes=_channel, tracks_running_stats=True)
SYNC_BATCH_NORM = NormSpec(
    "SyncBatchNorm", "N and every spatial axis of every process, per channel",
    reduce_axes=_batch_and_spatial, affine_axes=_channel, tracks_running_stats=True,
    across_processes=True)
LAYER_NORM = NormSpec(
    "LayerNorm", "the trailing normalized_shape axes, per sample",
    reduce_axes=_trailing, affine_axes=_trailing)
RMS_NORM = NormSpec(
    "RMSNorm", "the trailing normalized_shape axes, per sample",
    reduce_axes=_trailing, affine_axes=_trailing, statistic="mean square")
INSTANCE_NORM = NormSpec(
    "InstanceNorm", "every spatial axis, per sample and channel",
    reduce_axes=_spatial, affine_axes=_channel, tracks_running_stats=False)
GROUP_NORM = NormSpec(
    "GroupNorm", "C/G channels and every spatial axis, per sample and group",
    reduce_axes=_within_group, affine_axes=_channel, grouped=True)
LOCAL_RESPONSE_NORM = NormSpec(
    "LocalResponseNorm", "a window of neighbouring channels, per sample and position",
    reduce_axes=_channel, affine_axes=_none, statistic="windowed sum of squares",
    windowed=True)

FAMILY = (BATCH_NORM, LAYER_NORM, INSTANCE_NORM, GROUP_NORM, SYNC_BATCH_NORM,
          LOCAL_RESPONSE_NORM, RMS_NORM)


def family_table(input_shape: Sequence[int] = (8, 6, 4, 4), groups: int = 2, k: int = 3):
    """The family as rows of a table, computed from the specs for one input shape."""
    rows = []
    n, c = input_shape[0], input_shape[1]
    for spec in FAMILY:
        if spec.grouped:
            view = (n, groups, prod(input_shape) // (n * groups))
            m = spec.reduction_size(view, k)
        elif spec.windowed:
            # overlapping windows of `size` neighbours along the reduce axis (the channels):
            # no statistic covers the whole axis unless size >= C
            m = f"window: size ≤ {c}"
        else:
            m = spec.reduction_size(input_shape, k)
        gamma = [input_shape[i] for i in spec.affine_axes(len(input_shape), k)]
        rows.append({
            "norm": spec.name,
            "statistics over": spec.statistics_over,
            "statistic": spec.statistic,
            "elements per statistic": m,
            "gamma/beta shape": tuple(gamma) if gamma else "none",
            "running stats (default)": {True: "yes", False: "optional, off",
                                        None: "no"}[spec.tracks_running_stats],
        })
    return rows
