"""A cost model of all_reduce, to say what SyncBatchNorm's communication costs on many processes.

The classic latency-bandwidth (alpha-beta) model of a ring all_reduce
{Patarasuk and Yuan 2009; Thakur et al. 2005}: ``k`` processes, a message of
``n`` bytes, ``alpha`` seconds of latency per message, ``beta`` seconds per
byte. The ring does a reduce-scatter then an all-gather, ``k - 1`` steps each,
every step sending a chunk of ``n / k`` bytes::

    T(n, k) = 2 (k - 1) alpha + 2 (k - 1) / k * n * beta

Assumptions: every link has the same alpha and beta, the steps do not overlap
with each other or with computation, the reduction arithmetic is free, and no
other traffic shares the links. Libraries switch to tree algorithms for small
messages (latency ``~ 2 log2(k) alpha``); the ring is the pessimistic case for
SyncBatchNorm's small messages and the usual one for large gradients.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np


def ring_all_reduce_seconds(n_bytes: float, k: int, alpha: float, beta: float) -> float:
    """``2 (k-1) alpha + 2 (k-1)/k n beta``: one ring all_reduce of ``n_bytes`` over ``k`` processes."""
    if k <= 1:
        return 0.0
    return 2 * (k - 1) * alpha + 2 * (k - 1) / k * n_bytes * beta


def tree_all_reduce_seconds(n_bytes: float, k: int, alpha: float, beta: float) -> float:
    """A reduce then a broadcast along a binary tree: ``2 ceil(log2 k) (alpha + n beta)``."""
    if k <= 1:
        return 0.0
    return 2 * int(np.ceil(np.log2(k))) * (alpha + n_bytes * beta)


def fit_ring(measurements: Iterable[Tuple[int, float, float]]) -> Tuple[float, float]:
    """``(alpha, beta)`` of the ring model from ``(k, n_bytes, seconds)`` triples.

    The fit minimizes the *relative* error of every point (a least-squares fit
    of ``T / t = 1``, with ``alpha, beta >= 0``): timings scatter
    multiplicatively, and the messages span six orders of magnitude, so an
    absolute fit would let the largest messages decide the latency. All
    triples share one ``alpha`` and ``beta``; where the processes of some
    ``k`` share cores, their latency differs and :func:`fit_ring_by_k` fits
    each ``k`` on its own.
    """
    measurements = list(measurements)
    rows = np.array([(2 * (k - 1), 2 * (k - 1) / k * n) for k, n, _ in measurements], float)
    times = np.array([t for _, _, t in measurements], float)
    if len(times) < 2 or np.any(times <= 0):
        raise ValueError("need at least two measurements, every time > 0")
    weighted = rows / times[:, None]
    scale = weighted.max(axis=0)            # columns of one size, for a well-conditioned solve
    scale[scale == 0] = 1.0
    a, b = _nonnegative_lstsq(weighted / scale, np.ones(len(times)))
    return float(a / scale[0]), float(b / scale[1])


def _nonnegative_lstsq(m: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    """Least squares of two coefficients, both ``>= 0`` (the best of the free and one-sided fits)."""
    (a, b), *_ = np.linalg.lstsq(m, y, rcond=None)
    if a >= 0 and b >= 0:
        return float(a), float(b)
    candidates = [(max(float(m[:, i] @ y / (m[:, i] @ m[:, i])), 0.0), i) for i in (0, 1)]
    best = min(candidates, key=lambda c: float(np.sum((m[:, c[1]] * c[0] - y) ** 2)))
    return (best[0], 0.0) if best[1] == 0 else (0.0, best[0])


def fit_ring_by_k(measurements: Iterable[Tuple[int, float, float]]) -> Dict[int, Tuple[float, float]]:
    """``{k: (alpha, beta)}``: :func:`fit_ring` on the measurements of each ``k`` separately.

    On one machine with fewer cores than processes the latency per ring step
    grows with ``k`` (the processes wait for each other's time slices), which
    the model's single ``alpha`` cannot describe: a joint fit then misses
    every ``k``'s points.
    """
    by_k: Dict[int, list] = {}
    for k, n, t in measurements:
        by_k.setdefault(k, []).append((k, n, t))
    return {k: fit_ring(rows) for k, rows in sorted(by_k.items())}


def resnet50_bn_channels() -> List[int]:
    """The channels of ResNet-50's 53 BatchNorm layers, from its architecture.

    A 64-channel stem, then stages of (3, 4, 6, 3) bottleneck blocks of widths
    64, 128, 256, 512 (three BNs per block: width, width, 4 x width) and one
    projection shortcut (a BN of 4 x width) per stage.
    """
    channels = [64]
    for blocks, width in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        channels += [width, width, 4 * width] * blocks + [4 * width]
    return channels


def sync_bn_step_seconds(channels: Sequence[int], k: int, alpha: float, beta: float,
                         bytes_per_number: int = 8, model=ring_all_reduce_seconds) -> float:
    """Communication time of one training step of SyncBatchNorm layers with ``channels``.

    Per layer, one all_reduce of ``2C + 1`` numbers in the forward pass and one
    of ``2C`` in the backward pass (normtext's layer: float64, 8 bytes each).
    """
    return sum(model((2 * c + 1) * bytes_per_number, k, alpha, beta)
               + model(2 * c * bytes_per_number, k, alpha, beta) for c in channels)
