"""Half precision: normtext computes the statistics of float16/bfloat16 input in float32.

Each test checks what that sentence says, not only that an output is close to
a float64 truth (any normalized output is within a few units of its scale):

* the output is the float32 computation rounded once to the half dtype
  (:func:`normtext.testing.compare.assert_rounded_from_float32`): it differs
  from the exact value rounded in no more elements than float32's own error
  explains. (PyTorch's CPU BatchNorm and InstanceNorm do not meet this rule
  for half input: they subtract the mean in the half dtype, and 80 % of their
  elements differ; its LayerNorm and GroupNorm do.)
* a reference that accumulates its sums in the half dtype, step by step, is
  measurably wrong on the same input (long rows, a large mean), by more than
  the harness's tolerance; normtext is within it;
* ``eps=None`` in RMSNorm is float32's epsilon for half-precision input,
  checked on an input whose exact output is known.
"""
import math

import pytest
import torch

from normtext import torch as nt
from normtext.testing import compare, registry
from normtext.torch import functional as NF

HALF = [torch.float16, torch.bfloat16]
STATISTICS = [c.name for c in registry.norms() if c.row_shape is not None]
M = 4096  # elements per statistic: a long row
# mean / std of the input: large enough that a half-precision running sum loses its digits
# (the float16 sum of 4096 values near 8 reaches 32768, where float16 numbers are 32 apart)
INPUTS = [(8.0, 1.0), (100.0, 2.0)]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _input(case, dtype, loc, scale, seed=0):
    shape = registry.numerics_row_shape(case, M)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + loc).to(dtype)


def _rows(case, x):
    """``x`` as ``(rows, m)``: each row the elements of one statistic (GroupNorm: of one group)."""
    if case.spec.grouped:
        x = x.reshape(x.shape[0], registry.group_count(x.shape[1]), -1)
        axes = (2,)
    else:
        axes = case.spec.reduce_axes(x.ndim, 1)
    rest = [d for d in range(x.ndim) if d not in axes]
    v = x.permute(*rest, *axes)
    return v.reshape(-1, math.prod(x.shape[d] for d in axes)), (x.shape, rest, axes)


def _sum_in_dtype(rows: torch.Tensor) -> torch.Tensor:
    """The row sums, accumulated one element at a time in the rows' own dtype (each step rounded)."""
    acc = torch.zeros(rows.shape[0], dtype=rows.dtype)
    for j in range(rows.shape[1]):
        acc = acc + rows[:, j]  # a float16/bfloat16 add: the running sum is rounded every step
    return acc


def normalize_accumulating_in_half(case, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The normalize step with every sum accumulated in ``x.dtype`` (what normtext must not do)."""
    rows, _ = _rows(case, x)
    m = rows.shape[1]
    if case.spec.statistic == "mean square":
        ms = _sum_in_dtype(rows * rows) / m
        y = rows * torch.rsqrt(ms + eps)[:, None]
    else:
        mean = _sum_in_dtype(rows) / m
        centered = rows - mean[:, None]
        var = _sum_in_dtype(centered * centered) / m
        y = centered * torch.rsqrt(var + eps)[:, None]
    return y  # (rows, m), in x.dtype


def _truth_rows(case, x):
    """The float64 reference output of the normalize step, as ``(rows, m)``."""
    exact = torch.from_numpy(case.reference(x.double().numpy(), eps=_eps(case)))
    return _rows(case, exact)[0]


def _eps(case):
    return 1e-6 if case.spec.statistic == "mean square" else 1e-5


def _rel_err(got, want) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


@pytest.mark.parametrize("loc,scale", INPUTS, ids=["mean8", "mean100"])
@pytest.mark.parametrize("dtype", HALF, ids=_name)
@pytest.mark.parametrize("norm", STATISTICS)
def test_half_input_is_the_float32_result_rounded_once(norm, dtype, loc, scale):
    case = registry.REGISTRY[norm]
    x = _input(case, dtype, loc, scale)
    y = case.call(NF, x, None, None)
    assert y.dtype == dtype
    compare.assert_rounded_from_float32(y, case.reference(x.double().numpy(), eps=_eps(case)))


@pytest.mark.parametrize("dtype", HALF, ids=_name)
@pytest.mark.parametrize("norm", STATISTICS)
def test_accumulating_in_half_precision_fails_the_tolerance_normtext_meets(norm, dtype):
    case = registry.REGISTRY[norm]
    x = _input(case, dtype, *INPUTS[0])
    truth = _truth_rows(case, x)
    tol = compare.tolerance(_name(dtype), M)
    in_half = normalize_accumulating_in_half(case, x, _eps(case))
    # the half-precision sums are measurably wrong: the harness would reject such a layer
    assert _rel_err(in_half, truth) > tol, (_rel_err(in_half, truth), tol)
    ours = _rows(case, case.call(NF, x, None, None))[0]
    assert _rel_err(ours, truth) <= tol
    # and what distinguishes them is where the sums are accumulated: the same steps with the
    # sums in float32, rounded to the half dtype at the end, are within the tolerance
    in_float = normalize_accumulating_in_half(case, x.float(), _eps(case)).to(dtype)
    assert _rel_err(in_float, truth) <= tol


def test_the_rounding_rule_rejects_a_half_precision_computation():
    """The rule itself can fail: the same formula evaluated in float16 breaks it."""
    case = registry.REGISTRY["LayerNorm"]
    x = _input(case, torch.float16, *INPUTS[0])
    exact = case.reference(x.double().numpy(), eps=1e-5)
    mean = x.mean(-1, keepdim=True)  # PyTorch accumulates in float32, then rounds: float16 steps
    y16 = (x - mean) * torch.rsqrt((x - mean).square().mean(-1, keepdim=True) + 1e-5)
    with pytest.raises(compare.ToleranceError, match="not the float32 result rounded once"):
        compare.assert_rounded_from_float32(y16, exact)


def test_differing_fraction_is_float32_error_over_half_precision_spacing():
    # 2 * 16 * 2^-23 / 2^-10 and / 2^-7
    assert compare.differing_fraction("float16") == 2 ** -8
    assert compare.differing_fraction("bfloat16") == 2 ** -11


# --- RMSNorm's eps=None: float32's epsilon for half input, on an exactly known output ---------

# A constant row x = c gives y = c / sqrt(c^2 + eps). With c^2 = eps / 2 that is 1/sqrt(3) exactly,
# and with c^2 = eps / 4, 1/sqrt(5): c = 2^-12 for float32's eps 2^-23, c = 2^-27 for float64's 2^-52.
EXACT_RMS = {torch.float16: (2.0 ** -12, 1 / math.sqrt(3)),   # computed in float32
             torch.bfloat16: (2.0 ** -12, 1 / math.sqrt(3)),  # computed in float32
             torch.float32: (2.0 ** -12, 1 / math.sqrt(3)),
             torch.float64: (2.0 ** -27, 1 / math.sqrt(5))}


@pytest.mark.parametrize("dtype", list(EXACT_RMS), ids=_name)
def test_rms_norm_module_default_eps_gives_the_exact_output(dtype):
    c, exact = EXACT_RMS[dtype]
    x = torch.full((3, 16), c, dtype=dtype)
    for layer in (nt.RMSNorm(16, dtype=dtype), torch.nn.RMSNorm(16, dtype=dtype)):
        y = layer(x)
        assert y.dtype == dtype
        # the exact value rounded to dtype, up to the float32/float64 rounding of rsqrt:
        # one unit in the last place of dtype
        want = torch.tensor(exact, dtype=torch.float64)
        ulp = torch.finfo(dtype).eps * 0.5  # spacing of dtype just below 1: 2^-p
        assert float((y.detach().double() - want).abs().max()) <= ulp, (type(layer).__module__, y[0, 0])


def test_rms_norm_default_eps_is_not_the_half_dtype_epsilon():
    """The exact output above tells float32's eps from float16's: 1/sqrt(3) vs about 2^-7."""
    c, exact = EXACT_RMS[torch.float16]
    with_f16_eps = c / math.sqrt(c * c + torch.finfo(torch.float16).eps)
    with_f64_eps = c / math.sqrt(c * c + torch.finfo(torch.float64).eps)
    assert abs(with_f16_eps - exact) > 0.5 and abs(with_f64_eps - exact) > 0.4
    y = NF.rms_norm(torch.full((2, 16), c, dtype=torch.float16), [16])
    assert abs(float(y[0, 0]) - exact) <= 2 ** -11
