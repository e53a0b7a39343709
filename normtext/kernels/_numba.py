"""The fused CPU loops, compiled by Numba: one parallel loop over rows each way.

Every kernel works on a view of contiguous float32 or float64 data with one
row per statistic (LayerNorm and RMSNorm: a sample's trailing
``normalized_shape``, ``(rows, m)``; GroupNorm: a sample's group, its ``C/G``
channels of ``L`` positions, ``(rows, C/G, L)``, consecutive in memory). A row
of a few thousand elements stays in the core's cache, so the loops may read it
several times (statistics, then output) while main memory sees it once: a
*two-pass-in-cache* kernel. ``prange`` splits the rows among Numba's threads.

Accuracy (book/numerics.ipynb):

* the variance is the corrected two-pass one (Chan, Golub & LeVeque):
  ``mu``, then ``d = x - mu``, ``var = mean(d^2) - mean(d)^2``, where
  ``mean(d)``, zero but for the rounding of ``mu``, corrects the mean;
* sums are *blocked*: each block of :data:`BLOCK` elements is summed in the
  row's dtype by vectorised code (several partial sums, reassociated by
  ``fastmath``), and the block sums are added in float64;
* the statistics are kept in float64 and the mean is subtracted as
  ``(x - hi) - lo`` (:func:`_split`), as accurately as in float64.

``fastmath`` is limited to reassociation, contraction (FMA) and the sign of
zero: ``nnan`` and ``ninf`` stay off, so NaN and inf propagate as in PyTorch.

Absent parameters are passed as ones (gamma) and zeros (beta): one code path,
and a row of parameters costs nothing next to a row of data.

This module imports Numba; :mod:`normtext.kernels.cpu` imports it on first use
and points Numba's cache at the build folder first.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

BLOCK = 256  # elements summed in the row's dtype before the float64 total
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_JIT = dict(fastmath=FASTMATH, cache=True, nogil=True)
_INLINE = dict(_JIT, inline="always")
# Without reassociation: elementwise loops need none to vectorise, and with it LLVM may
# rewrite (x - hi) - lo as x - (hi + lo), undoing the split of the mean (_split).
_EXACT = dict(_JIT, fastmath=FASTMATH - {"reassoc"})

# Every blocked loop below has inner loops of the constant trip count BLOCK (the
# remainder gets its own call): LLVM vectorises those. With a bound of
# min(b0 + BLOCK, m) the same loop ran 15 times slower. The parallel loops only
# call row functions (not inlined): compiled alone, their loops vectorise; inlined
# into the parallel loop, the LayerNorm backward ran three times as slow.


@njit(**_INLINE)
def _split(v, mean):
    """The float64 ``mean`` as ``hi + lo`` in ``v``'s dtype: ``(x - hi) - lo`` keeps its digits.

    ``x - hi`` is exact for ``x`` near ``hi`` (Sterbenz), so the deviation is
    as accurate as if the mean had been subtracted in float64. Rounding the
    mean to float32 instead would shift every deviation by up to half an ulp
    of the mean: at a mean of 1e4 standard deviations, 5e-4 of the output.
    """
    hi = v.dtype.type(mean)
    return hi, v.dtype.type(mean - hi)


@njit(**_INLINE)
def _sum_block(v, a, n):
    s = np.float32(0.0)  # unifies with v's dtype: float32 or float64
    for k in range(n):
        s += v[a + k]
    return s


@njit(**_INLINE)
def _sum(v, m):
    """``sum(v[:m])``: blocks in ``v``'s dtype, their sums in float64."""
    total = 0.0
    full = m // BLOCK * BLOCK
    for b0 in range(0, full, BLOCK):
        total += _sum_block(v, b0, BLOCK)
    return total + _sum_block(v, full, m - full)


@njit(**_INLINE)
def _centered_block(v, a, n, mean):
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for k in range(n):
        d = v[a + k] - mean
        s1 += d
        s2 += d * d
    return s1, s2


@njit(**_JIT)
def _moments(v, eps):
    """``(mean, 1 / sqrt(var + eps))`` of the row ``v`` in float64: corrected two-pass, in cache."""
    m = v.shape[0]
    mu = v.dtype.type(_sum(v, m) / m)                 # mu = 1/m sum x, in the row's dtype
    t1 = 0.0
    t2 = 0.0
    full = m // BLOCK * BLOCK
    for b0 in range(0, full, BLOCK):                  # d = x - mu: sum d, sum d^2
        s1, s2 = _centered_block(v, b0, BLOCK, mu)
        t1 += s1
        t2 += s2
    s1, s2 = _centered_block(v, full, m - full, mu)
    t1 += s1
    t2 += s2
    shift = t1 / m                                    # mean(d): the rounding of mu
    var = max(t2 / m - shift * shift, 0.0)            # sigma^2 = mean(d^2) - mean(d)^2
    return mu + shift, 1.0 / np.sqrt(var + eps)


@njit(**_INLINE)
def _square_block(v, a, n):
    s = np.float32(0.0)
    for k in range(n):
        s += v[a + k] * v[a + k]
    return s


@njit(**_INLINE)
def _chunk(rows, parts, k):
    """Rows ``[r0, r1)`` of part ``k`` of ``parts`` (one part per thread)."""
    return (rows * k) // parts, (rows * (k + 1)) // parts


# --- LayerNorm ------------------------------------------------------------------------

@njit(**_EXACT)
def _layer_norm_forward_row(xr, w, b, eps, yr):
    """One row: ``(mean, rstd)`` in float64, and ``y = x_hat * gamma + beta``."""
    mu, rs = _moments(xr, eps)
    hi, lo = _split(xr, mu)
    rs_t = xr.dtype.type(rs)
    for i in range(xr.shape[0]):
        yr[i] = ((xr[i] - hi) - lo) * rs_t * w[i] + b[i]
    return mu, rs


@njit(parallel=True, **_JIT)
def layer_norm_forward(x, w, b, eps, y, mean, rstd):
    """``y = (x - mu) * rstd * w + b`` per row; ``mean`` and ``rstd`` (float64) for the backward.

    The parallel loops only call row functions: compiled alone, their inner
    loops vectorise; inlined into the parallel loop, the same code ran up to
    three times as slow.
    """
    for r in prange(x.shape[0]):
        mean[r], rstd[r] = _layer_norm_forward_row(x[r], w, b, eps, y[r])


@njit(**_INLINE)
def _layer_norm_backward_block(xr, gr, w, hi, lo, rs, a, n):
    """Over ``[a, a + n)``: ``(sum g, sum g * x_hat)`` with ``g = dy * w``."""
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for k in range(n):
        i = a + k
        xh = ((xr[i] - hi) - lo) * rs
        g = gr[i] * w[i]
        s1 += g
        s2 += g * xh
    return s1, s2


@njit(**_JIT)
def _layer_norm_backward_row(xr, gr, dxr, w, mean, rstd, dwp, dbp):
    """One row: ``dx``, and ``dy * x_hat``, ``dy`` added to the thread's partials."""
    m = xr.shape[0]
    hi, lo = _split(xr, mean)
    rs = xr.dtype.type(rstd)
    # pass 1 (the row from memory): sum g and sum g * x_hat, blocked
    t1 = 0.0
    t2 = 0.0
    full = m // BLOCK * BLOCK
    for b0 in range(0, full, BLOCK):
        s1, s2 = _layer_norm_backward_block(xr, gr, w, hi, lo, rs, b0, BLOCK)
        t1 += s1
        t2 += s2
    s1, s2 = _layer_norm_backward_block(xr, gr, w, hi, lo, rs, full, m - full)
    c1 = xr.dtype.type((t1 + s1) / m)
    c2 = xr.dtype.type((t2 + s2) / m)
    # pass 2 (the row from cache): dx = rstd * (g - mean(g) - x_hat * mean(g x_hat))
    for i in range(m):
        xh = ((xr[i] - hi) - lo) * rs
        dxr[i] = rs * (gr[i] * w[i] - c1 - xh * c2)
    # the parameter partials, a loop of their own (fewer arrays: it vectorises)
    for i in range(m):
        xh = ((xr[i] - hi) - lo) * rs
        dwp[i] += gr[i] * xh      # dgamma = sum over rows of dy * x_hat
        dbp[i] += gr[i]           # dbeta = sum over rows of dy


@njit(parallel=True, **_JIT)
def layer_norm_backward(dy, x, mean, rstd, w, dx, dw_part, db_part):
    """``dx`` per row and per-thread partial sums of ``dgamma``, ``dbeta``.

    With ``g = dy * w`` and ``x_hat = (x - mu) * rstd`` (means over the row):
    ``dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))``. The rows are
    split into ``dw_part.shape[0]`` contiguous parts, one per thread; each part
    adds into its own row of ``dw_part``/``db_part`` (no two threads write the
    same memory), and the caller sums the partials: PyTorch's CPU kernel does
    the same.
    """
    rows = x.shape[0]
    parts = dw_part.shape[0]
    for k in prange(parts):
        r0, r1 = _chunk(rows, parts, k)
        for r in range(r0, r1):
            _layer_norm_backward_row(x[r], dy[r], dx[r], w, mean[r], rstd[r], dw_part[k],
                                     db_part[k])


# --- RMSNorm --------------------------------------------------------------------------

@njit(**_JIT)
def _rms_norm_forward_row(xr, w, eps, yr):
    m = xr.shape[0]
    total = 0.0
    full = m // BLOCK * BLOCK
    for b0 in range(0, full, BLOCK):
        total += _square_block(xr, b0, BLOCK)
    total += _square_block(xr, full, m - full)
    rs = 1.0 / np.sqrt(total / m + eps)          # 1 / sqrt(mean(x^2) + eps)
    rs_t = xr.dtype.type(rs)
    for i in range(m):
        yr[i] = xr[i] * rs_t * w[i]
    return rs


@njit(parallel=True, **_JIT)
def rms_norm_forward(x, w, eps, y, rstd):
    """``y = x * rstd * w`` with ``rstd = 1 / sqrt(mean(x^2) + eps)`` per row."""
    for r in prange(x.shape[0]):
        rstd[r] = _rms_norm_forward_row(x[r], w, eps, y[r])


@njit(**_INLINE)
def _rms_norm_backward_block(xr, gr, w, rs, a, n):
    s2 = np.float32(0.0)
    for k in range(n):
        i = a + k
        s2 += gr[i] * w[i] * (xr[i] * rs)
    return s2


@njit(**_JIT)
def _rms_norm_backward_row(xr, gr, dxr, w, rstd, dwp):
    m = xr.shape[0]
    rs = xr.dtype.type(rstd)
    t2 = 0.0
    full = m // BLOCK * BLOCK
    for b0 in range(0, full, BLOCK):
        t2 += _rms_norm_backward_block(xr, gr, w, rs, b0, BLOCK)
    t2 += _rms_norm_backward_block(xr, gr, w, rs, full, m - full)
    c2 = xr.dtype.type(t2 / m)
    for i in range(m):
        dxr[i] = rs * (gr[i] * w[i] - xr[i] * rs * c2)
    for i in range(m):
        dwp[i] += gr[i] * (xr[i] * rs)


@njit(parallel=True, **_JIT)
def rms_norm_backward(dy, x, rstd, w, dx, dw_part):
    """``dx = rstd * (g - x_hat * mean(g * x_hat))``, ``g = dy * w``, ``x_hat = x * rstd``; partial ``dgamma``."""
    rows = x.shape[0]
    parts = dw_part.shape[0]
    for k in prange(parts):
        r0, r1 = _chunk(rows, parts, k)
        for r in range(r0, r1):
            _rms_norm_backward_row(x[r], dy[r], dx[r], w, rstd[r], dw_part[k])


# --- GroupNorm ------------------------------------------------------------------------
# x is viewed as (N * G, C/G, L): a row is one sample's group, C/G channels of L
# positions; channel c of the input is channel c % (C/G) of group c // (C/G).

@njit(**_EXACT)
def _group_norm_forward_row(xr, w, b, c0, eps, yr):
    """One (sample, group) ``(C/G, L)``: its statistics, then per channel the affine step."""
    cg, length = xr.shape
    mu, rs = _moments(xr.reshape(cg * length), eps)
    hi, lo = _split(xr, mu)
    rs_t = xr.dtype.type(rs)
    for j in range(cg):
        a = rs_t * w[c0 + j]       # y = (x - mu) * (rstd * gamma_c) + beta_c
        sh = b[c0 + j]
        xc = xr[j]
        yc = yr[j]
        for i in range(length):
            yc[i] = ((xc[i] - hi) - lo) * a + sh
    return mu, rs


@njit(parallel=True, **_JIT)
def group_norm_forward(x, w, b, groups, eps, y, mean, rstd):
    """Per (sample, group): the statistics of its ``C/G * L`` elements; per channel: the affine step."""
    cg = x.shape[1]
    for r in prange(x.shape[0]):
        mean[r], rstd[r] = _group_norm_forward_row(x[r], w, b, (r % groups) * cg, eps, y[r])


@njit(**_INLINE)
def _group_norm_backward_block(xc, gc, hi, lo, rs, a, n):
    """Over ``[a, a + n)`` of one channel: ``(sum dy, sum dy * x_hat)``."""
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for k in range(n):
        i = a + k
        s1 += gc[i]
        s2 += gc[i] * (((xc[i] - hi) - lo) * rs)
    return s1, s2


@njit(**_JIT)
def _group_norm_backward_row(xr, gr, dxr, w, c0, mean, rstd, dsr, dbr):
    """One (sample, group): ``dx``, and per channel ``sum dy * x_hat`` into ``dsr``, ``sum dy`` into ``dbr``."""
    cg, length = xr.shape
    m = cg * length
    full = length // BLOCK * BLOCK
    hi, lo = _split(xr, mean)
    rs = xr.dtype.type(rstd)
    t1 = 0.0
    t2 = 0.0
    for j in range(cg):
        xc = xr[j]
        gc = gr[j]
        sd = 0.0
        sx = 0.0
        for b0 in range(0, full, BLOCK):
            s1, s2 = _group_norm_backward_block(xc, gc, hi, lo, rs, b0, BLOCK)
            sd += s1
            sx += s2
        s1, s2 = _group_norm_backward_block(xc, gc, hi, lo, rs, full, length - full)
        sd += s1
        sx += s2
        dsr[c0 + j] = sx
        dbr[c0 + j] = sd
        t1 += w[c0 + j] * sd          # sum g = sum_c gamma_c * sum dy
        t2 += w[c0 + j] * sx          # sum g x_hat = sum_c gamma_c * sum dy x_hat
    c1 = xr.dtype.type(t1 / m)
    c2 = xr.dtype.type(t2 / m)
    for j in range(cg):
        xc = xr[j]
        gc = gr[j]
        dxc = dxr[j]
        gamma = w[c0 + j]
        for i in range(length):
            xh = ((xc[i] - hi) - lo) * rs
            dxc[i] = rs * (gc[i] * gamma - c1 - xh * c2)


@njit(parallel=True, **_JIT)
def group_norm_backward(dy, x, mean, rstd, w, groups, dx, ds, db):
    """``dx`` per row; ``ds[n, c] = sum_l dy * x_hat`` and ``db[n, c] = sum_l dy`` per channel.

    ``dgamma = ds.sum(0)`` and ``dbeta = db.sum(0)`` (the caller sums over the
    samples; each row writes its own channels, so no partials are needed).
    With ``g = dy * gamma_c`` and means over the group's ``M = C/G * L``
    elements, ``dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))``.
    """
    cg = x.shape[1]
    for r in prange(x.shape[0]):
        n = r // groups
        _group_norm_backward_row(x[r], dy[r], dx[r], w, (r % groups) * cg, mean[r], rstd[r],
                                 ds[n], db[n])


def threads() -> int:
    """Numba's thread count: the number of partial sums the backward kernels keep."""
    return get_num_threads()
