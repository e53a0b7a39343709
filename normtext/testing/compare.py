"""The comparison harness: one call checks a from-scratch layer against a built-in.

:func:`compare_layers` runs two layers side by side on the same inputs and
parameters for several training steps, then in evaluation mode, and compares

* the output, the input gradient and the gamma/beta gradients of every step,
* the running statistics after the steps,
* the evaluation-mode output.

It returns a :class:`Comparison` (a table of max absolute and relative errors,
each against an explicit tolerance) and raises :class:`ToleranceError` when a
tolerance is exceeded. The book prints the table; the tests assert it.

Layers from any framework take part through a small adapter
(:class:`TorchLayer`, :class:`GluonLayer`, :class:`ReferenceBatchNorm`) that
speaks NumPy float64 arrays.

Tolerances
----------
Each quantity is a reduction over the ``m`` elements that one statistic is
taken over, followed by a few elementwise operations. With rounding errors of
random sign, the error of such a sum grows like ``eps * sqrt(m)`` relative to
its magnitude, so the tolerance on ``max|got - want| / max|want|`` is

    tol = TOLERANCE_FACTOR * finfo(dtype).eps * sqrt(m)

with ``TOLERANCE_FACTOR = 16`` covering the handful of operations per element
(subtract, square, rsqrt, multiply, add) and the two rounding of inputs. It is
fixed here, before any comparison, and is the same for every norm.

Half precision (float16, bfloat16) is computed in float32 and rounded back, by
normtext's layers as by PyTorch's kernels, so its tolerance is float32's for
the sums plus ``TOLERANCE_FACTOR`` units of its own epsilon for the elementwise
roundings (see :func:`tolerance`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from normtext import numpy as reference
from normtext.spec import BATCH_NORM, NormSpec

TOLERANCE_FACTOR = 16.0

# The machine epsilon of each dtype the harness knows, by name (bfloat16: 8 bits of precision).
EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps),
       "float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0 ** -7}

QUANTITIES = ("output", "input grad", "gamma grad", "beta grad",
              "running_mean", "running_var", "eval output")


# The dtypes that are computed in float32 and rounded back (normtext's layers, PyTorch's kernels).
LOW_PRECISION = ("float16", "bfloat16")


def tolerance(dtype: str, m: int) -> float:
    """The relative tolerance for a quantity reduced over ``m`` elements in ``dtype``.

    ``TOLERANCE_FACTOR * eps(dtype) * sqrt(m)``; for float16 and bfloat16
    ``TOLERANCE_FACTOR * eps(dtype) + tolerance("float32", m)``.
    """
    if dtype in LOW_PRECISION:
        # The sums run in float32 and carry float32's error; the half dtype adds only the
        # rounding of each element (the output, the few elementwise steps done in it), a
        # fixed number of its units whatever m is. The sqrt(m) rule would describe sums
        # *in* half precision and, at m = 4096, allow 1.0 (float16) or 8.0 (bfloat16):
        # errors as large as the output itself (an all-zero output has relative error 1),
        # so it could never fail. This keeps the tolerance near 1/64 (float16) and 1/8
        # (bfloat16) of the output's scale, and below 1/6 of it for any m up to 10^8.
        return TOLERANCE_FACTOR * EPS[dtype] + tolerance("float32", m)
    return TOLERANCE_FACTOR * EPS[dtype] * math.sqrt(max(m, 1))


class ToleranceError(AssertionError):
    """A compared quantity differs by more than its tolerance."""


def differing_fraction(dtype: str) -> float:
    """The largest fraction of elements a half-precision result may round differently.

    A layer that computes in float32 and rounds once to float16/bfloat16 returns
    its float32 result rounded. That is the exact value rounded, except where
    the float32 result lies within its error (``TOLERANCE_FACTOR`` units of
    float32's epsilon) of a midpoint between two neighbours in ``dtype``: then
    it rounds to the other one. Midpoints are ``eps(dtype)`` apart in relative
    terms, so that happens to about ``2 * TOLERANCE_FACTOR * eps(float32) /
    eps(dtype)`` of the elements (0.4 % for float16, 0.05 % for bfloat16;
    normtext's layers stay below 0.1 % and 0.02 % on rows of 4096). Computing in
    the half dtype itself rounds every intermediate step: 10 % to 90 % of the
    elements then differ.
    """
    return 2 * TOLERANCE_FACTOR * EPS["float32"] / EPS[dtype]


def rounding_errors(got: torch.Tensor, exact) -> Dict[str, float]:
    """How a half-precision ``got`` departs from ``exact`` (float64) rounded to its dtype.

    Returns ``units at scale``, the largest ``|got - round(exact)|`` in units of
    ``eps(dtype) * max|exact|`` (one unit in the last place of the largest
    output), and ``fraction differing``, the fraction of elements with
    ``got != round(exact)``.
    """
    exact = torch.as_tensor(exact, dtype=torch.float64)
    if exact.numel() == 0:
        return {"units at scale": 0.0, "fraction differing": 0.0}
    diff = (got.double() - exact.to(got.dtype).double()).abs()
    unit = torch.finfo(got.dtype).eps * float(exact.abs().max())
    return {"units at scale": float(diff.max()) / unit if unit > 0 else float(diff.max() > 0),
            "fraction differing": float((diff > 0).double().mean())}


def assert_rounded_from_float32(got: torch.Tensor, exact) -> Dict[str, float]:
    """Raise :class:`ToleranceError` unless ``got`` is ``exact`` computed in float32, rounded once.

    ``got`` (float16/bfloat16) must be within one unit of its dtype at the
    output's scale of ``exact`` rounded to its dtype, and differ from it in no
    more than :func:`differing_fraction` of the elements.
    """
    dtype = str(got.dtype).replace("torch.", "")
    errs = rounding_errors(got, exact)
    if errs["units at scale"] > 1 or errs["fraction differing"] > differing_fraction(dtype):
        raise ToleranceError(
            f"{dtype} result is not the float32 result rounded once: "
            f"{errs['fraction differing']:.2%} of the elements differ from the exact value rounded "
            f"(allowed: {differing_fraction(dtype):.2%}), by up to {errs['units at scale']:.2f} "
            f"units of {dtype} at the output's scale (allowed: 1)")
    return errs


@dataclass
class Comparison:
    """Max absolute and relative errors per quantity, with the tolerance each was held to."""

    candidate: str
    reference: str
    dtype: str
    rows: List[dict] = field(default_factory=list)

    def add(self, quantity: str, got: np.ndarray, want: np.ndarray, tol: float) -> None:
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            raise ToleranceError(f"{quantity}: shape {got.shape} != {want.shape}")
        abs_err = float(np.max(np.abs(got - want))) if got.size else 0.0
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
        ok = bool(np.isfinite(got).all() and rel_err <= tol)
        for row in self.rows:  # several steps: keep the worst of each quantity
            if row["quantity"] == quantity:
                if rel_err > row["max rel err"] or not ok:
                    row.update({"max abs err": abs_err, "max rel err": rel_err, "ok": ok and row["ok"]})
                return
        self.rows.append({"quantity": quantity, "max abs err": abs_err, "max rel err": rel_err,
                          "tolerance": tol, "ok": ok})

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows).set_index("quantity")

    def assert_ok(self) -> "Comparison":
        bad = [r for r in self.rows if not r["ok"]]
        if bad:
            lines = ", ".join(f"{r['quantity']}: rel err {r['max rel err']:.3g} > tol "
                              f"{r['tolerance']:.3g}" for r in bad)
            raise ToleranceError(f"{self.candidate} vs {self.reference} ({self.dtype}): {lines}")
        return self

    def __str__(self) -> str:
        head = f"{self.candidate} vs {self.reference} ({self.dtype})"
        body = "\n".join(f"  {r['quantity']:<13} abs {r['max abs err']:.2e}  rel "
                         f"{r['max rel err']:.2e}  tol {r['tolerance']:.1e}  "
                         f"{'ok' if r['ok'] else 'FAIL'}" for r in self.rows)
        return f"{head}\n{body}"

    def _repr_html_(self) -> str:
        caption = f"<b>{self.candidate}</b> vs <b>{self.reference}</b> ({self.dtype})"
        return caption + self.table.to_html(float_format=lambda v: f"{v:.2e}")


# --- adapters: every layer speaks float64 NumPy to the harness ----------------------

class TorchLayer:
    """A ``torch.nn`` module (ours or PyTorch's) seen by the harness.

    ``names`` maps the harness's names (gamma, beta, running_mean, running_var)
    to the module's attributes; the default is PyTorch's (weight, bias, ...).
    """

    TORCH_NAMES = {"gamma": "weight", "beta": "bias",
                   "running_mean": "running_mean", "running_var": "running_var"}

    def __init__(self, module, name: Optional[str] = None, device: str = "cpu",
                 names: Optional[Dict[str, str]] = None):
        self.module, self.device = module.to(device), device
        self.names = names or self.TORCH_NAMES
        self.name = name or f"{type(module).__module__.split('.')[0]}.{type(module).__name__}"

    def _get(self, key):
        return getattr(self.module, self.names[key], None)

    def set_state(self, params: Dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for key, value in params.items():
                t = self._get(key)
                if t is not None:
                    t.copy_(torch.as_tensor(value).reshape(t.shape))

    def _tensor(self, a, dtype):
        return torch.tensor(a, dtype=getattr(torch, dtype), device=self.device)

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        self.module.train()
        self.module.zero_grad(set_to_none=True)
        xt = self._tensor(x, dtype).requires_grad_(True)
        y = self.module(xt)
        y.backward(self._tensor(dy, dtype))
        out = {"output": y, "input grad": xt.grad}
        for key, quantity in (("gamma", "gamma grad"), ("beta", "beta grad")):
            p = self._get(key)
            if p is not None and p.requires_grad:
                out[quantity] = p.grad.reshape(-1)
        return {k: _np(v) for k, v in out.items()}

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {k: _np(self._get(k).reshape(-1)) for k in ("running_mean", "running_var")
                if self._get(k) is not None}

    def eval_output(self, x, dtype: str) -> np.ndarray:
        self.module.eval()
        with torch.no_grad():
            return _np(self.module(self._tensor(x, dtype)))


class GluonLayer:
    """An MXNet Gluon block (ours or Gluon's) seen by the harness; initialize it first."""

    def __init__(self, block, name: Optional[str] = None, ctx=None):
        import mxnet as mx
        self.mx, self.block = mx, block
        self.ctx = ctx or mx.cpu()
        self.name = name or f"{type(block).__module__.split('.')[0]}.{type(block).__name__}"

    def set_state(self, params: Dict[str, np.ndarray]) -> None:
        for key, value in params.items():
            p = getattr(self.block, key, None)
            if p is not None:
                p.set_data(self.mx.nd.array(value, ctx=self.ctx, dtype=p.dtype))

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        nd, autograd = self.mx.nd, self.mx.autograd
        xn = nd.array(x, ctx=self.ctx, dtype=dtype)
        xn.attach_grad()
        with autograd.record():
            y = self.block(xn)
        y.backward(nd.array(dy, ctx=self.ctx, dtype=dtype))
        nd.waitall()  # MXNet's engine runs the backward (and the statistics update) asynchronously
        out = {"output": y, "input grad": xn.grad}
        for key, name in (("gamma", "gamma grad"), ("beta", "beta grad")):
            p = getattr(self.block, key, None)
            if p is not None and p.grad_req != "null":
                out[name] = p.grad(self.ctx)
        return {k: v.asnumpy().astype(np.float64) for k, v in out.items()}

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {k: getattr(self.block, k).data(self.ctx).asnumpy().astype(np.float64)
                for k in ("running_mean", "running_var")
                if getattr(self.block, k, None) is not None}  # LayerNorm keeps none

    def eval_output(self, x, dtype: str) -> np.ndarray:
        y = self.block(self.mx.nd.array(x, ctx=self.ctx, dtype=dtype))  # not recording: eval
        return y.asnumpy().astype(np.float64)


class _PerChannelReference:
    """What the float64 BatchNorm and InstanceNorm references share: their state.

    gamma = 1, beta = 0, running mean 0 and running variance 1, one per
    channel, in float64, as the layers they stand for start.
    """

    def _start_state(self, num_features: int) -> None:
        self.state = {"gamma": np.ones(num_features), "beta": np.zeros(num_features),
                      "running_mean": np.zeros(num_features), "running_var": np.ones(num_features)}

    def set_state(self, params: Dict[str, np.ndarray]) -> None:
        self.state.update({k: np.asarray(v, np.float64) for k, v in params.items()})


class ReferenceBatchNorm(_PerChannelReference):
    """The float64 NumPy BatchNorm with state, in PyTorch's or Gluon's convention."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 convention: str = "torch", affine: bool = True):
        if convention not in ("torch", "mxnet"):
            raise ValueError(f"convention must be 'torch' or 'mxnet', got {convention!r}")
        self.name = f"float64 reference ({convention} convention)"
        self.eps, self.convention, self.affine = eps, convention, affine
        # Gluon's momentum weighs the old value: convert to the weight of the new batch
        self.new_batch_weight = momentum if convention == "torch" else 1.0 - momentum
        self._start_state(num_features)

    def _forward(self, x, training):
        s = self.state
        return reference.batch_norm(
            x, s["running_mean"], s["running_var"], s["gamma"] if self.affine else None,
            s["beta"] if self.affine else None, training=training,
            momentum=self.new_batch_weight, eps=self.eps,
            unbiased_running_var=self.convention == "torch")

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        res = self._forward(x, training=True)
        self.state["running_mean"], self.state["running_var"] = res.running_mean, res.running_var
        dx, dgamma, dbeta = reference.batch_norm_backward(dy, res.cache)
        out = {"output": res.y, "input grad": dx}
        if self.affine:
            out.update({"gamma grad": dgamma, "beta grad": dbeta})
        return out

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {k: self.state[k] for k in ("running_mean", "running_var")}

    def eval_output(self, x, dtype: str) -> np.ndarray:
        return self._forward(x, training=False).y


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").double().numpy()


def _round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """x as the candidate sees it after the cast to ``dtype``, back in float64."""
    if dtype == "bfloat16":  # NumPy has no bfloat16: round through torch
        return torch.tensor(x).to(torch.bfloat16).double().numpy()
    return x.astype(dtype).astype(np.float64)


def compare_layers(candidate, reference_layer, shape: Sequence[int], *, steps: int = 3,
                   dtype: str = "float32", seed: int = 0, loc: float = 0.0, scale: float = 1.0,
                   spec: NormSpec = BATCH_NORM, k: int = 1, check: bool = True,
                   groups: Optional[int] = None, param_size: Optional[int] = None) -> Comparison:
    """Run two layers side by side and compare everything they compute.

    Args:
        candidate, reference_layer: adapters (:class:`TorchLayer`,
            :class:`GluonLayer`, :class:`ReferenceBatchNorm`) around layers with
            the same number of channels; their parameters are set to the same
            random gamma and beta first.
        shape: the input shape ``(N, C, *)``.
        steps: training steps (each: forward, backward with a random output
            gradient, running-statistics update) before the evaluation pass.
        dtype: the dtype the layers compute in; it decides the tolerance.
        loc, scale: the inputs are ``normal(loc, scale)``.
        spec, k: the norm, to size the tolerance by its reduction size.
        check: raise :class:`ToleranceError` when a tolerance is exceeded.
        groups: for a grouped spec (GroupNorm), ``G``: the statistics are taken on
            the view ``(N, G, -1)``, which sizes the tolerance.
        param_size: the length of gamma/beta when it is not the spec's
            (MXNet's GroupNorm: one per group).
    """
    rng = np.random.default_rng(seed)
    # gamma/beta span the spec's affine axes: (C,) for BN/IN/GN, normalized_shape for LN
    channels = tuple(shape[i] for i in spec.affine_axes(len(shape), k)) or shape[1]
    if param_size is not None:
        channels = param_size
    init = {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 1, channels)}
    for layer in (candidate, reference_layer):
        layer.set_state(init)
    if spec.grouped and groups is not None:
        m = spec.reduction_size((shape[0], groups, math.prod(shape) // (shape[0] * groups)), k)
    else:
        m = spec.reduction_size(shape, k)
    tol = tolerance(dtype, m)
    result = Comparison(candidate.name, reference_layer.name, dtype)
    for _ in range(steps):
        x = _round_to(rng.normal(loc, scale, shape), dtype)
        dy = _round_to(rng.normal(0, 1, shape), dtype)
        got, want = candidate.train_step(x, dy, dtype), reference_layer.train_step(x, dy, dtype)
        for q in QUANTITIES:
            if q in got or q in want:
                if q not in got or q not in want:
                    raise ToleranceError(f"{q}: computed by only one of the two layers")
                result.add(q, got[q], want[q], tol)
    got, want = candidate.running_stats(), reference_layer.running_stats()
    for q in ("running_mean", "running_var"):
        if q in want:
            result.add(q, got[q], want[q], tol)
    x = _round_to(rng.normal(loc, scale, shape), dtype)
    result.add("eval output", candidate.eval_output(x, dtype), reference_layer.eval_output(x, dtype), tol)
    return result.assert_ok() if check else result


class ReferenceLayerNorm:
    """The float64 NumPy LayerNorm (``kind="layer"``) or RMSNorm (``kind="rms"``) for the harness.

    Stateless apart from gamma and beta: the evaluation output is the training
    formula, and there are no running statistics to compare. For RMSNorm,
    ``eps=None`` is the machine epsilon of the dtype passed to ``train_step``
    and ``eval_output`` in the dtype the candidate computes in (float32 for
    half precision), as PyTorch does.
    """

    def __init__(self, normalized_shape, eps: Optional[float] = 1e-5, kind: str = "layer",
                 elementwise_affine: bool = True, bias: bool = True):
        if kind not in ("layer", "rms"):
            raise ValueError(f"kind must be 'layer' or 'rms', got {kind!r}")
        ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.ns, self.eps, self.kind = ns, eps, kind
        self.affine, self.has_bias = elementwise_affine, elementwise_affine and bias and kind == "layer"
        self.name = f"float64 reference {'LayerNorm' if kind == 'layer' else 'RMSNorm'}"
        self.state = {"gamma": np.ones(ns), "beta": np.zeros(ns)}

    def set_state(self, params: Dict[str, np.ndarray]) -> None:
        self.state.update({k: np.asarray(v, np.float64).reshape(self.ns) for k, v in params.items()})

    def _eps(self, dtype: str) -> float:
        if self.eps is not None:
            return self.eps
        return EPS["float32" if dtype in ("float16", "bfloat16") else dtype]

    def _forward(self, x, dtype):
        gamma = self.state["gamma"] if self.affine else None
        if self.kind == "rms":
            return reference.rms_norm(x, self.ns, gamma, eps=self._eps(dtype))
        beta = self.state["beta"] if self.has_bias else None
        return reference.layer_norm(x, self.ns, gamma, beta, eps=self.eps)

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        res = self._forward(x, dtype)
        if self.kind == "rms":
            dx, dgamma = reference.rms_norm_backward(dy, res.cache)
            dbeta = None
        else:
            dx, dgamma, dbeta = reference.layer_norm_backward(dy, res.cache)
        out = {"output": res.y, "input grad": dx}
        if self.affine:  # flattened, as TorchLayer reports parameter gradients
            out["gamma grad"] = dgamma.reshape(-1)
        if self.has_bias:
            out["beta grad"] = dbeta.reshape(-1)
        return out

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {}

    def eval_output(self, x, dtype: str) -> np.ndarray:
        return self._forward(x, dtype).y


class ReferenceInstanceNorm(_PerChannelReference):
    """The float64 NumPy InstanceNorm with state, in PyTorch's convention.

    ``affine`` and ``track_running_stats`` as in ``torch.nn.InstanceNorm2d``
    (both default False); Gluon's InstanceNorm is ``affine=True`` here (its
    gamma and beta are always applied), without running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 learn: Sequence[str] = ("gamma", "beta")):
        self.name = "float64 reference InstanceNorm"
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.learn = tuple(learn) if affine else ()  # Gluon's scale=False: learn=("beta",)
        self.track = track_running_stats
        self._start_state(num_features)

    def _forward(self, x, training):
        s = self.state
        rm, rv = (s["running_mean"], s["running_var"]) if self.track else (None, None)
        return reference.instance_norm(
            x, rm, rv, s["gamma"] if self.affine else None, s["beta"] if self.affine else None,
            use_input_stats=training or not self.track, momentum=self.momentum, eps=self.eps)

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        res = self._forward(x, training=True)
        if self.track:
            self.state["running_mean"], self.state["running_var"] = res.running_mean, res.running_var
        dx, dgamma, dbeta = reference.instance_norm_backward(dy, res.cache)
        out = {"output": res.y, "input grad": dx}
        grads = {"gamma": ("gamma grad", dgamma), "beta": ("beta grad", dbeta)}
        out.update(dict(grads[p] for p in self.learn))
        return out

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {k: self.state[k] for k in ("running_mean", "running_var")} if self.track else {}

    def eval_output(self, x, dtype: str) -> np.ndarray:
        return self._forward(x, training=False).y


class ReferenceGroupNorm:
    """The float64 NumPy GroupNorm; ``gamma_per="group"`` for Gluon 1.9.1's convention.

    ``learn`` names the parameters whose gradients are compared (Gluon's
    ``scale=False`` keeps gamma fixed: pass ``learn=("beta",)``).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 gamma_per: str = "channel", affine: bool = True,
                 learn: Sequence[str] = ("gamma", "beta")):
        self.name = f"float64 reference GroupNorm (gamma per {gamma_per})"
        self.num_groups, self.eps, self.gamma_per, self.affine = num_groups, eps, gamma_per, affine
        self.learn = tuple(learn) if affine else ()
        size = num_channels if gamma_per == "channel" else num_groups
        self.state = {"gamma": np.ones(size), "beta": np.zeros(size)}

    def set_state(self, params: Dict[str, np.ndarray]) -> None:
        self.state.update({k: np.asarray(v, np.float64) for k, v in params.items()
                           if k in ("gamma", "beta")})

    def _forward(self, x):
        s = self.state
        return reference.group_norm(x, self.num_groups, s["gamma"] if self.affine else None,
                                    s["beta"] if self.affine else None, eps=self.eps,
                                    gamma_per=self.gamma_per)

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        res = self._forward(x)
        dx, dgamma, dbeta = reference.group_norm_backward(dy, res.cache)
        # the harness's result, as ReferenceInstanceNorm.train_step builds it: only the
        # parameters the layer learns (Gluon's scale=False learns no gamma) get a row
        out = {"output": res.y, "input grad": dx}
        grads = {"gamma": ("gamma grad", dgamma), "beta": ("beta grad", dbeta)}
        out.update(dict(grads[p] for p in self.learn))
        return out

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {}

    def eval_output(self, x, dtype: str) -> np.ndarray:
        return self._forward(x).y


class ReferenceLocalResponseNorm:
    """The float64 NumPy LocalResponseNorm: no parameters, no running statistics.

    ``size``, ``alpha``, ``beta``, ``k`` and ``convention`` as
    :func:`normtext.numpy.local_response_norm` (PyTorch's by default).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 convention: str = "torch"):
        self.name = f"float64 reference LocalResponseNorm ({convention} convention)"
        self.params = dict(size=size, alpha=alpha, beta=beta, k=k, convention=convention)

    def set_state(self, params: Dict[str, np.ndarray]) -> None:
        pass  # nothing to learn: gamma and beta offered by the harness are ignored

    def train_step(self, x, dy, dtype: str) -> Dict[str, np.ndarray]:
        res = reference.local_response_norm(x, **self.params)
        return {"output": res.y, "input grad": reference.local_response_norm_backward(dy, res.cache)}

    def running_stats(self) -> Dict[str, np.ndarray]:
        return {}

    def eval_output(self, x, dtype: str) -> np.ndarray:
        return reference.local_response_norm(x, **self.params).y
