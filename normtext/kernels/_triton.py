"""The fused GPU kernels, in Triton: one program per row, the whole row in registers.

The same algorithms as the CPU loops (:mod:`normtext.kernels._numba`), written
the way Triton's fused LayerNorm tutorial writes them: a program loads one row
(a block of the next power of two, masked), reduces it with ``tl.sum`` (a
tree: accurate) and writes the output; the backward's programs each take a
contiguous range of rows and keep partial sums of ``dgamma``/``dbeta`` in
registers, written once per program and summed afterwards.

Accuracy: the corrected two-pass variance (``mean``, then ``d = x - mean``,
``var = mean(d^2) - mean(d)^2``), and the correction ``shift = mean(d)`` kept
beside the mean and subtracted separately, ``(x - mean) - shift``. Inputs are
float32 or float64 (float16/bfloat16 are converted by the caller) and the
arithmetic is in their dtype.

GroupNorm's row is a 2D tile ``(C/G, L)``: per-channel sums are reductions
along its second axis.

This module imports Triton; with ``TRITON_INTERPRET=1`` set before the import
the kernels run on CPU tensors through Triton's interpreter (the tests do so).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def layer_norm_forward_kernel(X, W, B, Y, Mean, Shift, Rstd, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * N + cols, mask=mask, other=0.0)
    mean = tl.sum(x, axis=0) / N                      # mu = 1/m sum x
    d = tl.where(mask, x - mean, 0.0)                 # d = x - mu
    shift = tl.sum(d, axis=0) / N                     # mean(d): the rounding of mu
    var = tl.maximum(tl.sum(d * d, axis=0) / N - shift * shift, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=mask, other=0.0)
    b = tl.load(B + cols, mask=mask, other=0.0)
    tl.store(Y + row * N + cols, (d - shift) * rstd * w + b, mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Shift + row, shift)
    tl.store(Rstd + row, rstd)


@triton.jit
def layer_norm_backward_kernel(DY, X, W, Mean, Shift, Rstd, DX, DWp, DBp, N, rows,
                               rows_per_program, BLOCK: tl.constexpr):
    # Each kernel is written out whole, as Triton's own tutorials write them: the
    # preamble it shares with the RMSNorm backward is a few loads, and a helper
    # would hide the memory traffic a reader of a kernel wants to see.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0)
    dw = w * 0.0
    db = w * 0.0
    r0 = pid * rows_per_program
    r1 = tl.minimum(r0 + rows_per_program, rows)
    for r in range(r0, r1):
        x = tl.load(X + r * N + cols, mask=mask, other=0.0)
        dy = tl.load(DY + r * N + cols, mask=mask, other=0.0)
        mean = tl.load(Mean + r)
        shift = tl.load(Shift + r)
        rstd = tl.load(Rstd + r)
        xh = tl.where(mask, ((x - mean) - shift) * rstd, 0.0)
        g = dy * w
        c1 = tl.sum(g, axis=0) / N
        c2 = tl.sum(g * xh, axis=0) / N
        # dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
        tl.store(DX + r * N + cols, rstd * (g - c1 - xh * c2), mask=mask)
        dw += dy * xh
        db += dy
    tl.store(DWp + pid * N + cols, dw, mask=mask)
    tl.store(DBp + pid * N + cols, db, mask=mask)


@triton.jit
def rms_norm_forward_kernel(X, W, Y, Rstd, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * N + cols, mask=mask, other=0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)   # 1 / sqrt(mean(x^2) + eps)
    w = tl.load(W + cols, mask=mask, other=0.0)
    tl.store(Y + row * N + cols, x * rstd * w, mask=mask)
    tl.store(Rstd + row, rstd)


@triton.jit
def rms_norm_backward_kernel(DY, X, W, Rstd, DX, DWp, N, rows, rows_per_program,
                             BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0)
    dw = w * 0.0
    r0 = pid * rows_per_program
    r1 = tl.minimum(r0 + rows_per_program, rows)
    for r in range(r0, r1):
        x = tl.load(X + r * N + cols, mask=mask, other=0.0)
        dy = tl.load(DY + r * N + cols, mask=mask, other=0.0)
        rstd = tl.load(Rstd + r)
        xh = x * rstd
        g = dy * w
        c2 = tl.sum(g * xh, axis=0) / N
        tl.store(DX + r * N + cols, rstd * (g - xh * c2), mask=mask)
        dw += dy * xh
    tl.store(DWp + pid * N + cols, dw, mask=mask)


@triton.jit
def group_norm_forward_kernel(X, W, B, Y, Mean, Shift, Rstd, G, CG, L, eps,
                              BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)                            # one (sample, group)
    c = tl.arange(0, BLOCK_C)[:, None]
    pos = tl.arange(0, BLOCK_L)[None, :]
    mask = (c < CG) & (pos < L)
    offs = row * CG * L + c * L + pos
    m = CG * L
    x = tl.load(X + offs, mask=mask, other=0.0)
    mean = tl.sum(tl.sum(x, axis=1), axis=0) / m
    d = tl.where(mask, x - mean, 0.0)
    shift = tl.sum(tl.sum(d, axis=1), axis=0) / m
    var = tl.maximum(tl.sum(tl.sum(d * d, axis=1), axis=0) / m - shift * shift, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    channel = (row % G) * CG + c                      # per-channel gamma and beta
    w = tl.load(W + channel, mask=c < CG, other=0.0)
    b = tl.load(B + channel, mask=c < CG, other=0.0)
    tl.store(Y + offs, (d - shift) * rstd * w + b, mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Shift + row, shift)
    tl.store(Rstd + row, rstd)


@triton.jit
def group_norm_backward_kernel(DY, X, W, Mean, Shift, Rstd, DX, DS, DB, G, CG, L,
                               BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    row = tl.program_id(0)
    c1d = tl.arange(0, BLOCK_C)
    c = c1d[:, None]
    pos = tl.arange(0, BLOCK_L)[None, :]
    mask = (c < CG) & (pos < L)
    offs = row * CG * L + c * L + pos
    m = CG * L
    x = tl.load(X + offs, mask=mask, other=0.0)
    dy = tl.load(DY + offs, mask=mask, other=0.0)
    mean = tl.load(Mean + row)
    shift = tl.load(Shift + row)
    rstd = tl.load(Rstd + row)
    xh = tl.where(mask, ((x - mean) - shift) * rstd, 0.0)
    ds = tl.sum(dy * xh, axis=1)                      # per channel: sum dy * x_hat
    db = tl.sum(dy, axis=1)                           # per channel: sum dy
    channel = (row % G) * CG + c1d
    w1 = tl.load(W + channel, mask=c1d < CG, other=0.0)
    c1 = tl.sum(w1 * db, axis=0) / m                  # mean(g), g = dy * gamma_c
    c2 = tl.sum(w1 * ds, axis=0) / m                  # mean(g * x_hat)
    w = tl.load(W + (row % G) * CG + c, mask=c < CG, other=0.0)
    tl.store(DX + offs, rstd * (dy * w - c1 - xh * c2), mask=mask)
    n = row // G
    out = n * G * CG + channel
    tl.store(DS + out, ds, mask=c1d < CG)
    tl.store(DB + out, db, mask=c1d < CG)
