"""How accurate is each implementation? Errors against the float64 reference.

The inputs are adversarial for the variance: ``x = ratio * sigma + sigma * z``
with ``z ~ N(0, 1)``, so the mean is ``ratio`` times the standard deviation.
The implementations compared on the same (rounded) input:

* ``normtext``: :mod:`normtext.torch.functional` (corrected two-pass
  variance, float32 accumulation for float16/bfloat16 input);
* ``PyTorch``: ``torch.nn.functional`` (Welford or two-pass kernels);
* ``plain two-pass``: :func:`plain_two_pass`, normtext's formula without
  the correction of the mean;
* ``naive``: :func:`naive_normalize`, the textbook ``E[x^2] - E[x]^2``, also
  accumulated in float32 for low-precision input, as the built-ins do;
* ``MXNet``: ``mx.nd``'s operators, and ``normtext MXNet``: normtext's Gluon
  blocks (:mod:`normtext.mxnet`), where MXNet is installed.

The error is measured against the float64 reference
(:mod:`normtext.testing.registry`, built on :func:`normtext.numpy.standardize`) applied
to the input *as the implementation sees it*, after rounding to its dtype, so
only the arithmetic is judged, not the rounding of the input.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from normtext import mxnet_available
from normtext.numpy import standardize, standardize_backward
from normtext.testing import registry
from normtext.testing.compare import EPS
from normtext.testing.registry import NormCase
from normtext.torch import functional as F

DTYPES = ("float32", "float16", "bfloat16")
RATIOS = (0.0, 1e2, 1e3, 1e4, 1e5)
ROW_SIZES = (64, 256, 1024, 4096, 16384, 65536)


def adversarial_input(shape, ratio: float, seed: int = 0) -> np.ndarray:
    """float64 ``x`` with mean ``ratio`` times its standard deviation (which is 1)."""
    rng = np.random.default_rng(seed)
    return ratio + rng.standard_normal(shape)


def to_torch(x: np.ndarray, dtype: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))


def _view_and_axes(case: NormCase, x: torch.Tensor):
    """The tensor whose ``axes`` the statistics are taken over (GroupNorm: the (N, G, -1) view)."""
    if case.spec.grouped:
        return x.reshape(x.shape[0], registry.group_count(x.shape[1]), -1), (2,)
    return x, case.spec.reduce_axes(x.ndim, 1)


# The dtype the comparison formulas (naive, plain two-pass) accumulate in: float32 for
# half precision, as the built-ins do. Stated here, not taken from normtext's layers, so
# that the formulas stay fixed yardsticks whatever the layers do.
ACCUMULATE_IN = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _accumulated_view(case: NormCase, x: torch.Tensor):
    """``x`` in float32 when it is float16/bfloat16 (as the built-ins accumulate), viewed for ``case``."""
    return _view_and_axes(case, x.to(ACCUMULATE_IN.get(x.dtype, x.dtype)))


def _normalize_with(case: NormCase, x: torch.Tensor, eps: float, variance) -> torch.Tensor:
    """Normalize with ``variance(v, mean, axes)``; the output in the input's dtype.

    RMSNorm has no mean to subtract: its mean square is the same in every formula.
    """
    v, axes = _accumulated_view(case, x)
    if case.spec.statistic == "mean square":
        y = v * torch.rsqrt(v.square().mean(dim=axes, keepdim=True) + eps)
    else:
        mean = v.mean(dim=axes, keepdim=True)
        y = (v - mean) * torch.rsqrt(variance(v, mean, axes) + eps)
    return y.reshape(x.shape).to(x.dtype)


def one_pass_variance(v, mean, axes):
    return v.square().mean(dim=axes, keepdim=True) - mean.square()  # E[x^2] - E[x]^2


def naive_normalize(case: NormCase, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The one-pass textbook formula ``Var[x] = E[x^2] - E[x]^2``: cancels catastrophically.

    Accumulates in float32 for float16/bfloat16 input (as the built-ins do), and
    returns the output in the input's dtype.
    """
    return _normalize_with(case, x, eps, one_pass_variance)


def plain_two_pass(case: NormCase, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Two passes without the correction: the mean, then the mean of ``(x - mean)^2``.

    Stable (no ``E[x^2] - E[x]^2``), but the float32 rounding of the mean
    shifts every deviation by the same amount. normtext's layers add a third,
    cheap reduction that measures and removes that shift
    (:func:`normtext.moments.centered_moments`); this is the formula
    without it, kept to show what the correction buys.
    """
    return _normalize_with(case, x, eps,
                           lambda v, mean, axes: (v - mean).square().mean(dim=axes, keepdim=True))


def naive_variance_min(case: NormCase, x: torch.Tensor) -> float:
    """The smallest variance the naive formula computes (negative: it broke)."""
    v, axes = _accumulated_view(case, x)
    return float(one_pass_variance(v, v.mean(dim=axes, keepdim=True), axes).min())


def torch_implementations(case: NormCase) -> Dict[str, Callable]:
    """``name -> (x) -> y``: normtext, PyTorch, the naive and the plain two-pass formulas (no affine)."""
    impls = registry.implementations(case)
    eps = 1e-6 if case.spec.statistic == "mean square" else 1e-5
    return {"normtext": lambda x: impls["normtext"](x, None, None),
            "PyTorch": lambda x: impls["built-in"](x, None, None),
            "naive": lambda x: naive_normalize(case, x, eps),
            "plain two-pass": lambda x: plain_two_pass(case, x, eps)}


def mxnet_implementation(case: NormCase) -> Optional[Callable]:
    """MXNet's operator for this norm as ``(x: np.ndarray float32/16) -> np.ndarray``, or None."""
    if not mxnet_available():
        return None
    import mxnet as mx
    nd = mx.nd

    def ones(n, dt):
        return nd.ones((n,), dtype=dt), nd.zeros((n,), dtype=dt)

    if case.name == "LayerNorm":
        def f(x):
            g, b = ones(x.shape[-1], x.dtype)
            return nd.LayerNorm(nd.array(x, dtype=x.dtype), g, b, axis=-1, eps=1e-5).asnumpy()
    elif case.name == "BatchNorm":
        def f(x):
            c = x.shape[1]
            g, b = ones(c, "float32")  # MXNet's BatchNorm keeps float32 parameters for float16
            mm, mv = nd.zeros((c,)), nd.ones((c,))
            with mx.autograd.train_mode():  # batch statistics, as in training
                return nd.BatchNorm(nd.array(x, dtype=x.dtype), g, b, mm, mv, eps=1e-5,
                                    fix_gamma=False).asnumpy()
    elif case.name == "GroupNorm":
        def f(x):
            groups = registry.group_count(x.shape[1])
            g, b = ones(groups, x.dtype)  # MXNet 1.9.1: gamma/beta per group
            return nd.GroupNorm(nd.array(x, dtype=x.dtype), g, b, num_groups=groups,
                                eps=1e-5).asnumpy()
    elif case.name == "InstanceNorm":
        def f(x):
            g, b = ones(x.shape[1], x.dtype)
            return nd.InstanceNorm(nd.array(x, dtype=x.dtype), g, b, eps=1e-5).asnumpy()
    else:
        return None
    return f


def normtext_mxnet_implementation(case: NormCase) -> Optional[Callable]:
    """normtext's own Gluon block for this norm (training mode), or None.

    Looked up by name in :mod:`normtext.mxnet`; gamma = 1 and beta = 0, so only
    the normalize step is measured, as for the other implementations.
    """
    if not mxnet_available():
        return None
    import mxnet as mx
    from normtext import mxnet as ntm  # imports mxnet: lazy, as mxnet itself
    make = {"BatchNorm": lambda x: ntm.BatchNorm(),
            "LayerNorm": lambda x: ntm.LayerNorm(axis=-1),
            "GroupNorm": lambda x: ntm.GroupNorm(num_groups=registry.group_count(x.shape[1])),
            "InstanceNorm": lambda x: ntm.InstanceNorm(scale=True)}.get(case.name)
    if make is None:  # RMSNorm, LocalResponseNorm: Gluon 1.9.1 has no such block
        return None

    def f(x):
        block = make(x)
        block.initialize(ctx=mx.cpu())
        if x.dtype != np.float32:
            block.cast(x.dtype)
        with mx.autograd.train_mode():  # batch statistics, as in training
            return block(mx.nd.array(x, dtype=x.dtype)).asnumpy()
    return f


def reference_output(case: NormCase, x64: np.ndarray) -> np.ndarray:
    eps = 1e-6 if case.spec.statistic == "mean square" else 1e-5
    return case.reference(x64, eps=eps)


def reference_input_grad(case: NormCase, x64: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dL/dx of the normalize step (no affine), by the hand-derived float64 backward."""
    if case.spec.statistic == "mean square":
        axes = case.spec.reduce_axes(x64.ndim, 1)
        inv = 1.0 / np.sqrt((x64 * x64).mean(axis=axes, keepdims=True) + 1e-6)
        x_hat = x64 * inv
        # dL/dx = inv_rms * (g - x_hat * mean(g * x_hat))
        return inv * (dy - x_hat * (dy * x_hat).mean(axis=axes, keepdims=True))
    if case.spec.grouped:
        n, g = x64.shape[0], registry.group_count(x64.shape[1])
        view, dv, axes = x64.reshape(n, g, -1), dy.reshape(n, g, -1), (2,)
    else:
        view, dv, axes = x64, dy, case.spec.reduce_axes(x64.ndim, 1)
    s = standardize(view, axes, 1e-5)
    return standardize_backward(dv, s.x_hat, s.inv_std, axes).reshape(x64.shape)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, np.float64)
    if not np.isfinite(got).all():
        return math.inf
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got - want)))
    return err / scale if scale > 0 else err


def measure(case: NormCase, m: int, ratio: float, dtype: str, seed: int = 0,
            grads: bool = True, mxnet: bool = True) -> List[dict]:
    """Errors of every implementation for one norm, row size, mean/std ratio and dtype.

    Returns one row per implementation: ``out_err`` and ``grad_err`` (max abs
    error over max abs value of the float64 reference; ``inf`` for NaN/inf
    output), ``nan`` (any non-finite output), ``representable`` (False when the
    input itself overflows the dtype, e.g. float16 beyond 65504).
    """
    shape = registry.numerics_row_shape(case, m)
    x64 = adversarial_input(shape, ratio, seed)
    xt = to_torch(x64, dtype)
    representable = bool(torch.isfinite(xt).all())
    seen = xt.double().numpy()  # the input as the implementations see it
    want = reference_output(case, seen) if representable else None
    dy64 = np.random.default_rng(seed + 1).standard_normal(shape)
    dyt = to_torch(dy64, dtype)
    want_dx = (reference_input_grad(case, seen, dyt.double().numpy())
               if grads and representable else None)
    rows = []
    base = {"norm": case.name, "m": m, "ratio": ratio, "dtype": dtype, "seed": seed,
            "representable": representable}
    for name, fn in torch_implementations(case).items():
        row = dict(base, impl=name, out_err=math.nan, grad_err=math.nan, nan=False)
        if representable:
            x = xt.clone().requires_grad_(grads)
            y = fn(x)
            out = y.detach().double().numpy()
            row["nan"] = not np.isfinite(out).all()
            row["out_err"] = _rel_err(out, want)
            if grads:
                (dx,) = torch.autograd.grad(y, x, dyt)
                row["grad_err"] = _rel_err(dx.double().numpy(), want_dx)
        if name == "naive" and representable:
            row["naive_min_var"] = naive_variance_min(case, xt)
        rows.append(row)
    mx_impls = {}
    if mxnet and dtype in ("float32", "float16"):  # MXNet 1.9.1 has no bfloat16 on the CPU
        mx_impls = {"MXNet": mxnet_implementation(case),
                    "normtext MXNet": normtext_mxnet_implementation(case)}
    for mx_name, f in mx_impls.items():
        if f is None:
            continue
        row = dict(base, impl=mx_name, out_err=math.nan, grad_err=math.nan, nan=False)
        if representable:
            try:
                out = f(seen.astype(dtype)).astype(np.float64)
            except Exception as e:  # MXNet does not support this dtype for this operator
                row["unsupported"] = f"{type(e).__name__}: {str(e).splitlines()[-1][:80]}"
            else:
                row["nan"] = not np.isfinite(out).all()
                row["out_err"] = _rel_err(out, want)
        rows.append(row)
    return rows


def sweep(cases: Sequence[NormCase], sizes=ROW_SIZES, ratios=RATIOS, dtypes=DTYPES,
          grads: bool = True, mxnet: bool = True, seed: int = 0):
    """:func:`measure` over a grid; a pandas DataFrame, one row per measurement."""
    rows = []
    for case in cases:
        for dtype in dtypes:
            for m in sizes:
                for ratio in ratios:
                    rows += measure(case, m, ratio, dtype, seed=seed, grads=grads, mxnet=mxnet)
    return pd.DataFrame(rows)


def eps_sweep(case: NormCase, sigmas: Sequence[float], eps: float = 1e-5, m: int = 1024,
              center: float = 1.0, seed: int = 0) -> List[dict]:
    """Output and gradient size of normtext's float32 layer as the variance goes to 0.

    ``x = center + sigma * z``; ``sigma = 0`` is a constant input. Reports the
    largest output, the largest input gradient for a unit output gradient, and
    the float64 prediction ``sigma / sqrt(sigma^2 + eps)`` (the output scale) and
    ``1 / sqrt(sigma^2 + eps)`` (the gradient scale).
    """
    rows = []
    shape = registry.numerics_row_shape(case, m)
    z = np.random.default_rng(seed).standard_normal(shape)
    dy = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(shape)).float()
    for sigma in sigmas:
        x = torch.from_numpy(center + sigma * z).float().requires_grad_(True)
        y = case.call(F, x, None, None, eps=eps)
        (dx,) = torch.autograd.grad(y, x, dy)
        var = float(x.detach().double().var(unbiased=False))  # what float32 x really holds
        rows.append({"sigma": sigma, "eps": eps, "max |y|": float(y.detach().abs().max()),
                     "max |dx|": float(dx.abs().max()),
                     "predicted |y| scale": math.sqrt(var / (var + eps)),
                     "predicted dx scale": 1 / math.sqrt(var + eps),
                     "finite": bool(torch.isfinite(y).all() and torch.isfinite(dx).all())})
    return rows


ULP_FLOOR = 4  # errors below 4 units of the dtype's epsilon are the rounding of the output itself


def factor_check(df, candidate: str = "normtext", baseline: str = "PyTorch", factor: float = 2.0,
                 quantity: str = "out_err"):
    """Rows where ``candidate``'s error exceeds ``factor`` times ``baseline``'s.

    The bound is ``factor * err(baseline) + ULP_FLOOR * eps(dtype)``: an error
    of a few units in the last place is the rounding of the output and cannot
    be ranked (a ``1 ulp`` against a ``0.4 ulp`` error is not "2.5 times worse").
    Returns the table with columns ``candidate``, ``baseline``, ``bound`` and ``ok``.
    """
    t = df.pivot_table(index=["norm", "dtype", "m", "ratio", "seed"], columns="impl",
                       values=quantity, dropna=False)
    t = t[[candidate, baseline]].dropna().reset_index()
    floor = t["dtype"].map(lambda d: ULP_FLOOR * EPS[d])
    t["bound"] = factor * t[baseline] + floor
    t["ok"] = t[candidate] <= t["bound"]
    return t
