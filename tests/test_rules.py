"""The rules that judge accuracy can fail: each is shown rejecting what it must reject.

Two rules decide every accuracy test of the package:

* the parity harness's tolerance (:func:`normtext.testing.compare.tolerance`,
  applied by :func:`~normtext.testing.compare.compare_layers`):
  ``TOLERANCE_FACTOR * eps(dtype) * sqrt(m)`` relative to the output's scale,
  ``TOLERANCE_FACTOR * eps(dtype) + tolerance("float32", m)`` for float16/bfloat16;
* the numerics rule (:func:`normtext.testing.numerics.factor_check`): normtext's
  error at most ``2 * error(PyTorch) + 4 eps(dtype)``.

Each is pinned at absolute values computed by hand, and run on synthetic
implementations just inside and just outside it. Loosening either rule (the
factor 2 to 20, ``TOLERANCE_FACTOR`` 16 to 160) fails tests here.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from normtext.spec import LAYER_NORM
from normtext.testing import compare, numerics, registry

# --- the harness tolerance, at absolute values ------------------------------------------

# Each value by hand from eps = 2^-52 (float64), 2^-23 (float32), 2^-10 (float16),
# 2^-7 (bfloat16) and 16 = 2^4: exact powers of two, so equality is exact.
PINNED = [
    ("float64", 4096, 2.0 ** 4 * 2.0 ** -52 * 2.0 ** 6),          # 2^-42
    ("float64", 1, 2.0 ** 4 * 2.0 ** -52),                         # 2^-48: m = 1 is one element
    ("float32", 1024, 2.0 ** 4 * 2.0 ** -23 * 2.0 ** 5),           # 2^-14 = 6.103515625e-05
    ("float32", 0, 2.0 ** 4 * 2.0 ** -23),                         # an empty reduction counts as 1
    ("float16", 4096, 2.0 ** 4 * 2.0 ** -10 + 2.0 ** -14 * 2.0),   # 2^-6 + 2^-13
    ("bfloat16", 1024, 2.0 ** 4 * 2.0 ** -7 + 2.0 ** -14),         # 2^-3 + 2^-14
]


@pytest.mark.parametrize("dtype,m,value", PINNED, ids=[f"{d}-{m}" for d, m, _ in PINNED])
def test_tolerance_at_absolute_values(dtype, m, value):
    assert compare.tolerance(dtype, m) == value


def test_tolerance_ratios():
    # sqrt(m) growth: 4x the elements, 2x the tolerance
    assert compare.tolerance("float32", 4096) == 2 * compare.tolerance("float32", 1024)
    # one dtype to the next: the ratio of their epsilons, 2^29
    assert compare.tolerance("float32", 64) == 2.0 ** 29 * compare.tolerance("float64", 64)
    # half precision: the float32 sums' tolerance plus 16 units of its own epsilon
    assert (compare.tolerance("float16", 64) - compare.tolerance("float32", 64)
            == 16 * compare.EPS["float16"])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_tolerance_stays_far_below_the_output_scale(dtype):
    """A relative tolerance of 1 would pass an all-zero output: every tolerance is far below it
    for any reduction PyTorch can index (up to 2^31 elements)."""
    assert compare.tolerance(dtype, 2 ** 31) < 1 / 4
    assert compare.tolerance(dtype, 10 ** 8) < 1 / 6


# --- the harness on implementations a few ulps inside and outside its tolerance --------

class OffBy:
    """The float64 reference LayerNorm with its largest output moved by ``delta`` (absolute)."""

    def __init__(self, n, delta):
        self.inner, self.delta = compare.ReferenceLayerNorm(n), delta
        self.name = f"reference + {delta:.3g}"

    def set_state(self, params):
        self.inner.set_state(params)

    def _shift(self, y):
        y = y.copy()
        i = np.unravel_index(np.argmax(np.abs(y)), y.shape)
        y[i] += math.copysign(self.delta, y[i])
        return y

    def train_step(self, x, dy, dtype):
        out = self.inner.train_step(x, dy, dtype)
        out["output"] = self._shift(out["output"])
        return out

    def running_stats(self):
        return {}

    def eval_output(self, x, dtype):
        return self._shift(self.inner.eval_output(x, dtype))


SHAPE = (16, 96)  # m = 96 elements per statistic
ULPS = 4  # "a few": far above the float64 rounding of the comparison itself (half an ulp)


def _scale(dtype):
    """max |output| of the reference on the harness's inputs for SHAPE, for each step."""
    # replay the harness's random draws (seed 0): parameters, then x and dy per step
    rng = np.random.default_rng(0)
    init = {"gamma": rng.uniform(0.5, 1.5, SHAPE[1]), "beta": rng.normal(0, 1, SHAPE[1])}
    ref = compare.ReferenceLayerNorm(SHAPE[1])
    ref.set_state(init)
    scales = []
    for _ in range(3):
        x = compare._round_to(rng.normal(0, 1, SHAPE), dtype)
        rng.normal(0, 1, SHAPE)
        scales.append(np.abs(ref.eval_output(x, dtype)).max())
    x = compare._round_to(rng.normal(0, 1, SHAPE), dtype)
    scales.append(np.abs(ref.eval_output(x, dtype)).max())
    return min(scales)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_harness_raises_a_few_ulps_beyond_its_tolerance_and_passes_a_few_inside(dtype):
    tol = compare.tolerance(dtype, SHAPE[1])
    scale = _scale(dtype)
    ulp = np.spacing(scale)  # float64 spacing at the output's scale
    run = lambda delta: compare.compare_layers(
        OffBy(SHAPE[1], delta), compare.ReferenceLayerNorm(SHAPE[1]), SHAPE, dtype=dtype,
        spec=LAYER_NORM)
    # within: the largest relative error is (tol * scale - 4 ulps) / scale on every step
    result = run(tol * scale - ULPS * ulp)
    rows = {r["quantity"]: r for r in result.rows}
    assert rows["output"]["tolerance"] == tol
    assert tol - 2 * ULPS * ulp / scale < rows["output"]["max rel err"] <= tol
    # beyond: 4 ulps over the tolerance on the step with the smallest output scale
    with pytest.raises(compare.ToleranceError, match="output"):
        run(tol * scale + ULPS * ulp)


# --- the numerics rule: 3x PyTorch's error fails, 1.5x passes ------------------------------

def _pytorch_and_synthetic(multiples, ratio=1e4, m=4096, dtype="float32"):
    """Errors of PyTorch's LayerNorm and of synthetic implementations ``k`` times as wrong.

    A synthetic output is ``truth + k * (pytorch - truth)``: the same error pattern,
    ``k`` times larger, measured with the numerics study's own error measure.
    """
    case = registry.REGISTRY["LayerNorm"]
    x = numerics.to_torch(numerics.adversarial_input(registry.numerics_row_shape(case, m), ratio),
                          dtype)
    seen = x.double().numpy()
    truth = numerics.reference_output(case, seen)
    theirs = torch.nn.functional.layer_norm(x, (m,)).double().numpy()
    base = {"norm": case.name, "m": m, "ratio": ratio, "dtype": dtype, "seed": 0}
    rows = [dict(base, impl="PyTorch", out_err=numerics._rel_err(theirs, truth))]
    for k in multiples:
        synthetic = truth + k * (theirs - truth)
        rows.append(dict(base, impl=f"{k}x", out_err=numerics._rel_err(synthetic, truth)))
    return pd.DataFrame(rows)


def test_factor_rule_fails_three_times_pytorchs_error_and_passes_one_and_a_half():
    df = _pytorch_and_synthetic([3.0, 1.5])
    pytorch_err = float(df[df.impl == "PyTorch"].out_err.iloc[0])
    # the data can decide: PyTorch's error is far above the 4-ulp floor of the rule
    assert pytorch_err > 100 * numerics.ULP_FLOOR * compare.EPS["float32"]
    three = numerics.factor_check(df, candidate="3.0x")
    assert len(three) == 1 and not three.ok.any(), three.to_string()
    one_and_a_half = numerics.factor_check(df, candidate="1.5x")
    assert len(one_and_a_half) == 1 and one_and_a_half.ok.all(), one_and_a_half.to_string()


def test_factor_rule_bound_is_twice_the_baseline_plus_four_ulps():
    """The bound at absolute values: 2 * 1e-3 + 4 * 2^-23 for float32 errors."""
    df = pd.DataFrame([
        {"norm": "n", "dtype": "float32", "m": 64, "ratio": 0.0, "seed": 0, "impl": "PyTorch",
         "out_err": 1e-3},
        {"norm": "n", "dtype": "float32", "m": 64, "ratio": 0.0, "seed": 0, "impl": "normtext",
         "out_err": 2e-3}])
    t = numerics.factor_check(df)
    assert t.bound.iloc[0] == 2 * 1e-3 + 4 * 2.0 ** -23
    assert t.ok.iloc[0]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_factor_rule_floor_is_four_ulps_of_the_dtype(dtype):
    """Against an exact baseline (error 0) the bound is the floor: 4 ulps pass, 5 fail."""
    eps = compare.EPS[dtype]
    rows = [{"norm": "n", "dtype": dtype, "m": 64, "ratio": 0.0, "seed": s, "impl": impl, "out_err": e}
            for s, err in enumerate((4 * eps, 5 * eps))
            for impl, e in (("PyTorch", 0.0), ("normtext", err))]
    t = numerics.factor_check(pd.DataFrame(rows)).sort_values("seed")
    assert list(t.ok) == [True, False]
