"""LayerNorm's CPU kernel built in steps, for the performance chapter (book/performance.ipynb).

Each step is a forward and a backward over ``x`` seen as ``(rows, m)``
(contiguous float32 or float64 NumPy arrays), writing into arrays the caller
allocates, so that a benchmark times the loops and nothing else:

1. :func:`naive_forward` / :func:`naive_backward`: the formulas as written,
   one loop over the whole tensor per quantity (mean, variance, x_hat, y; in
   the backward dbeta, dgamma, the two row sums, dx): each loop streams the
   tensor through memory once more.
2. :func:`fused_stats_forward` / :func:`fused_stats_backward`: the loops that
   share an input are merged (the mean and variance of a row in one loop, by
   shifted sums; dbeta and dgamma together; the two row sums together).
3. :func:`one_pass_forward` / :func:`one_pass_backward`: one visit per row
   each way: the row's statistics and output while it is in the cache, and in
   the backward the row sums, dx and the row's share of dgamma and dbeta.
4. :func:`parallel_forward` / :func:`parallel_backward`: step 3 with the rows
   split among threads (``prange``), each thread adding dgamma and dbeta into
   its own partial row, summed at the end: normtext's kernel
   (:mod:`normtext.kernels._numba`), which adds blocked sums and the
   corrected two-pass variance for accuracy.

The statistics are float64; the backward takes ``mean`` and ``rstd`` from the
forward. Steps 1 to 3 run on one thread. This module imports Numba.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import cpu

# as normtext's kernel: sums may be reassociated (vectorised), so that the steps differ
# in the passes they make over memory, not in whether LLVM may vectorise them
_JIT = dict(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
_INLINE = dict(_JIT, inline="always")


@njit(**_JIT)
def naive_forward(x, w, b, eps, y, mean, rstd):
    rows, m = x.shape
    for i in range(rows):                       # pass 1: mu = mean(x)
        s = 0.0
        for j in range(m):
            s += x[i, j]
        mean[i] = s / m
    for i in range(rows):                       # pass 2: var = mean((x - mu)^2)
        s = 0.0
        for j in range(m):
            s += (x[i, j] - mean[i]) ** 2
        rstd[i] = 1.0 / np.sqrt(s / m + eps)
    for i in range(rows):                       # pass 3: x_hat = (x - mu) * rstd
        for j in range(m):
            y[i, j] = (x[i, j] - mean[i]) * rstd[i]
    for i in range(rows):                       # pass 4: y = x_hat * gamma + beta
        for j in range(m):
            y[i, j] = y[i, j] * w[j] + b[j]


@njit(**_JIT)
def naive_backward(dy, x, mean, rstd, w, dx, dw, db):
    rows, m = x.shape
    dw[:] = 0.0
    db[:] = 0.0
    for i in range(rows):                       # dbeta = sum_rows dy
        for j in range(m):
            db[j] += dy[i, j]
    for i in range(rows):                       # dgamma = sum_rows dy * x_hat
        for j in range(m):
            dw[j] += dy[i, j] * (x[i, j] - mean[i]) * rstd[i]
    for i in range(rows):                       # dx = rstd (g - mean(g) - x_hat mean(g x_hat)), g = dy gamma
        s1 = 0.0
        for j in range(m):
            s1 += dy[i, j] * w[j]
        s2 = 0.0
        for j in range(m):
            s2 += dy[i, j] * w[j] * (x[i, j] - mean[i]) * rstd[i]
        for j in range(m):
            xh = (x[i, j] - mean[i]) * rstd[i]
            dx[i, j] = rstd[i] * (dy[i, j] * w[j] - s1 / m - xh * s2 / m)


@njit(**_INLINE)
def _shifted_moments(xr, eps):
    """Mean and 1/sqrt(var + eps) of a row in one loop: sums of d = x - x[0] and of d^2.

    Shifting by one of the row's own values keeps the sums small when the mean
    is large against the spread (E[x^2] - E[x]^2 without the shift loses every
    digit there, book/numerics.ipynb); the loop has no division and vectorises.
    """
    m = xr.shape[0]
    k = xr[0]
    s1, s2 = 0.0, 0.0
    for j in range(m):
        d = xr[j] - k
        s1 += d
        s2 += d * d
    mu = s1 / m
    return k + mu, 1.0 / np.sqrt(max(s2 / m - mu * mu, 0.0) + eps)


@njit(**_JIT)
def fused_stats_forward(x, w, b, eps, y, mean, rstd):
    rows, m = x.shape
    for i in range(rows):                       # pass 1: the mean and variance together
        mean[i], rstd[i] = _shifted_moments(x[i], eps)
    for i in range(rows):                       # pass 2: y = (x - mu) * rstd * gamma + beta
        mu, r = mean[i], rstd[i]
        for j in range(m):
            y[i, j] = (x[i, j] - mu) * r * w[j] + b[j]


@njit(**_JIT)
def fused_stats_backward(dy, x, mean, rstd, w, dx, dw, db):
    rows, m = x.shape
    dw[:] = 0.0
    db[:] = 0.0
    for i in range(rows):                       # dbeta and dgamma in one pass
        mu, r = mean[i], rstd[i]
        for j in range(m):
            db[j] += dy[i, j]
            dw[j] += dy[i, j] * (x[i, j] - mu) * r
    for i in range(rows):                       # the two row sums in one loop, then dx
        mu, r = mean[i], rstd[i]
        s1, s2 = 0.0, 0.0
        for j in range(m):
            g = dy[i, j] * w[j]
            s1 += g
            s2 += g * (x[i, j] - mu) * r
        for j in range(m):
            xh = (x[i, j] - mu) * r
            dx[i, j] = r * (dy[i, j] * w[j] - s1 / m - xh * s2 / m)


@njit(**_JIT)
def _row_forward(xr, w, b, eps, yr):
    mu, r = _shifted_moments(xr, eps)           # the row's statistics ...
    for j in range(xr.shape[0]):                # ... and its output, while it is in cache
        yr[j] = (xr[j] - mu) * r * w[j] + b[j]
    return mu, r


@njit(**_JIT)
def one_pass_forward(x, w, b, eps, y, mean, rstd):
    for i in range(x.shape[0]):
        mean[i], rstd[i] = _row_forward(x[i], w, b, eps, y[i])


@njit(**_JIT)
def _row_backward(dyr, xr, mu, r, w, dxr, dw, db):
    m = xr.shape[0]
    s1, s2 = 0.0, 0.0
    for j in range(m):                          # row sums, and the row's share of dgamma, dbeta
        xh = (xr[j] - mu) * r
        g = dyr[j] * w[j]
        s1 += g
        s2 += g * xh
        db[j] += dyr[j]
        dw[j] += dyr[j] * xh
    for j in range(m):                          # dx, the row still in cache
        xh = (xr[j] - mu) * r
        dxr[j] = r * (dyr[j] * w[j] - s1 / m - xh * s2 / m)


@njit(**_JIT)
def one_pass_backward(dy, x, mean, rstd, w, dx, dw, db):
    dw[:] = 0.0
    db[:] = 0.0
    for i in range(x.shape[0]):
        _row_backward(dy[i], x[i], mean[i], rstd[i], w, dx[i], dw, db)


def parallel_forward(x, w, b, eps, y, mean, rstd):
    """Step 4: normtext's kernel (:func:`normtext.kernels._numba.layer_norm_forward`)."""
    cpu._threads(x.shape[0], x.size)
    cpu.kernels().layer_norm_forward(x, w, b, float(eps), y, mean, rstd)


def parallel_backward(dy, x, mean, rstd, w, dx, dw, db):
    """Step 4: normtext's kernel, its per-thread partial rows of dgamma and dbeta summed here."""
    parts = cpu._threads(x.shape[0], x.size)
    dw_part = np.zeros((parts, x.shape[1]), x.dtype)
    db_part = np.zeros((parts, x.shape[1]), x.dtype)
    cpu.kernels().layer_norm_backward(dy, x, mean, rstd, w, dx, dw_part, db_part)
    dw[:] = dw_part.sum(0)
    db[:] = db_part.sum(0)


STEPS = {
    "1 naive loops": (naive_forward, naive_backward),
    "2 fused statistics": (fused_stats_forward, fused_stats_backward),
    "3 one pass each way": (one_pass_forward, one_pass_backward),
    "4 parallel, partial sums": (parallel_forward, parallel_backward),
}


def run_step(name: str, x, w, b, dy, eps: float = 1e-5):
    """``(y, dx, dw, db)`` of the step ``name`` (a key of :data:`STEPS`), on fresh outputs."""
    forward, backward = STEPS[name]
    rows, m = x.shape
    y, dx = np.empty_like(x), np.empty_like(x)
    mean, rstd = np.empty(rows), np.empty(rows)
    dw, db = np.empty(m, x.dtype), np.empty(m, x.dtype)
    forward(x, w, b, eps, y, mean, rstd)
    backward(dy, x, mean, rstd, w, dx, dw, db)
    return y, dx, dw, db
