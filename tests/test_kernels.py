"""normtext.kernels: the fused LayerNorm, RMSNorm and GroupNorm kernels.

Both backends run here: Numba's CPU loops, and the Triton kernels through
Triton's interpreter on CPU tensors (small shapes; each skips with its reason
when its compiler is not installed). Every output and gradient is checked
against PyTorch's built-in and against
the float64 NumPy reference (:mod:`normtext.numpy`) in float64, float32,
float16 and bfloat16; bad input raises PyTorch's exception type with the
floor's message before any kernel runs; float64 gradients pass ``gradcheck``;
and the numerics chapter's rule holds: the error against float64 is never
more than twice PyTorch's (plus 4 units of the dtype) at means up to 1e5
standard deviations.

Tolerances (:func:`normtext.testing.compare.tolerance`): relative to the
largest value of the quantity, ``16 eps(dtype) sqrt(m)`` for a quantity
reduced over ``m`` elements; float16/bfloat16 are computed in float32 and
rounded once, so ``16 eps(dtype)`` plus float32's tolerance.
"""
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

pytest.importorskip("numba", reason="normtext.kernels runs on the CPU with Numba: "
                                    "pip install 'normtext[kernels]' (numba==0.60.0)")

from normtext import kernels as K  # noqa: E402
from normtext import numpy as ref  # noqa: E402
from normtext.kernels import cpu  # noqa: E402
from normtext.testing import numerics, registry  # noqa: E402
from normtext.testing.compare import tolerance  # noqa: E402
from normtext.torch import functional as floor  # noqa: E402

DTYPES = ("float64", "float32", "float16", "bfloat16")


TRITON_MISSING = "the Triton kernels need triton (pip install triton)"
TRITON_IMPORTED = ("triton was imported before its interpreter could be switched on "
                   "(torch.compile imports it): these cases run in a fresh process instead, "
                   "test_triton_kernels_in_a_fresh_process")


def _triton_in_this_process() -> bool:
    """Whether the interpreted Triton kernels can run here: triton not imported yet, or by us."""
    from normtext.kernels import gpu
    return gpu._INTERPRETED or "triton" not in sys.modules


@pytest.fixture(scope="module")
def triton_kernels():
    """The Triton kernels on CPU tensors, through Triton's interpreter.

    ``TRITON_INTERPRET=1`` must be set before triton is first imported (its
    own library functions are defined then) and while the kernels run: it is
    set for this module's tests and restored after them.
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip(TRITON_MISSING)
    if not _triton_in_this_process():
        pytest.skip(TRITON_IMPORTED)
    from normtext.kernels import gpu
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        gpu.kernels()
        yield K.using("triton")
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


@pytest.fixture(params=["numba", "triton"])
def F(request):
    """The fused functions: Numba's loops, or the Triton kernels under the interpreter."""
    return K if request.param == "numba" else request.getfixturevalue("triton_kernels")


def _assert_close(got, want, dtype, m, what):
    got = np.asarray(got.detach().double().numpy() if torch.is_tensor(got) else got, np.float64)
    want = np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got - want).max()) / scale
    tol = tolerance(dtype, m)
    assert err <= tol, f"{what}: relative error {err:.3g} > tolerance {tol:.3g} ({dtype}, m={m})"


def _assert_against_both(names, ours, builtins, want, dtype):
    """Each of ``ours`` has the built-in's dtype and is close to the float64 value and the built-in's.

    ``want`` pairs each float64 value with the size of the sums behind it.
    """
    for name, got, got_bi, (exact, size) in zip(names, ours, builtins, want):
        assert got.dtype == got_bi.dtype
        _assert_close(got, exact, dtype, size, f"{name} vs float64")
        _assert_close(got, got_bi.detach().double().numpy(), dtype, size, f"{name} vs built-in")


def _inputs(shape, pshape, dtype, affine, seed=0, mean=0.5, bias=True):
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    x = (mean + 2 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dt)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dt)
    w = (1 + 0.3 * torch.randn(pshape, generator=g, dtype=torch.float64)).to(dt) if affine else None
    b = (0.3 * torch.randn(pshape, generator=g, dtype=torch.float64)).to(dt) if affine and bias else None
    return x, dy, w, b


def _grads(fn, x, dy, params):
    x = x.clone().requires_grad_(True)
    params = [None if p is None else p.clone().requires_grad_(True) for p in params]
    y = fn(x, *params)
    leaves = [x] + [p for p in params if p is not None]
    return y, torch.autograd.grad(y, leaves, dy)


def _np(t):
    return None if t is None else t.double().numpy()


# --- LayerNorm --------------------------------------------------------------------------
# Row lengths 300 (> the 256-element block, with a remainder) and 7 (a remainder only).

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,ns", [((3, 5, 300), (300,)), ((4, 2, 7), (2, 7))])
def test_layer_norm_matches_builtin_and_float64(F, dtype, affine, shape, ns):
    x, dy, w, b = _inputs(shape, ns, dtype, affine)
    y, grads = _grads(lambda x, w, b: F.layer_norm(x, ns, w, b), x, dy, [w, b])
    y_bi, grads_bi = _grads(lambda x, w, b: TF.layer_norm(x, ns, w, b), x, dy, [w, b])
    assert y.dtype == x.dtype and y.shape == x.shape
    r = ref.layer_norm(_np(x), ns, _np(w), _np(b))
    dx, dw, db = ref.layer_norm_backward(_np(dy), r.cache)
    m, numel = math.prod(ns), x.numel()
    want = [(r.y, m), (dx, m)] + ([(dw, numel), (db, numel)] if affine else [])
    names = ["output", "input grad", "weight grad", "bias grad"]
    _assert_against_both(names, [y, *grads], [y_bi, *grads_bi], want, dtype)


def test_layer_norm_half_input_float32_parameters():
    """Mixed precision, as PyTorch allows it: float16 input, float32 gamma and beta."""
    x, dy, w, b = _inputs((4, 64), (64,), "float16", True)
    w, b = w.float(), b.float()
    y, (dx, dw, db) = _grads(lambda x, w, b: K.layer_norm(x, (64,), w, b), x, dy, [w, b])
    y_bi, (dx_bi, dw_bi, db_bi) = _grads(lambda x, w, b: TF.layer_norm(x, (64,), w, b), x, dy,
                                         [w, b])
    assert (y.dtype, dx.dtype, dw.dtype, db.dtype) == (y_bi.dtype, dx_bi.dtype, dw_bi.dtype,
                                                       db_bi.dtype)
    _assert_close(y, y_bi.detach().double().numpy(), "float16", 64, "output")
    r = ref.layer_norm(_np(x), (64,), _np(w), _np(b))
    _, dw64, db64 = ref.layer_norm_backward(_np(dy), r.cache)
    # float32 gradients of gamma and beta, from x_hat computed in float32: float32's tolerance
    # against float64; PyTorch's mixed-precision kernel rounds x_hat to float16 on the way
    # (3.9e-4 for gamma, 2.7e-4 for beta from float64 here), so against it the tolerance is float16's
    for got, exact, bi in ((dw, dw64, dw_bi), (db, db64, db_bi)):
        _assert_close(got, exact, "float32", x.numel(), "parameter grad vs float64")
        _assert_close(got, bi.double().numpy(), "float16", x.numel(), "parameter grad vs built-in")


# --- RMSNorm ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,ns", [((3, 5, 300), (300,)), ((4, 2, 7), (2, 7))])
def test_rms_norm_matches_builtin_and_float64(F, dtype, affine, shape, ns):
    x, dy, w, _ = _inputs(shape, ns, dtype, affine)
    y, grads = _grads(lambda x, w: F.rms_norm(x, ns, w), x, dy, [w])
    y_bi, grads_bi = _grads(lambda x, w: TF.rms_norm(x, ns, w), x, dy, [w])
    eps = torch.finfo(torch.float64 if dtype == "float64" else torch.float32).eps
    r = ref.rms_norm(_np(x), ns, _np(w), eps=eps)
    dx, dw = ref.rms_norm_backward(_np(dy), r.cache)
    m, numel = math.prod(ns), x.numel()
    want = [(r.y, m), (dx, m)] + ([(dw, numel)] if affine else [])
    _assert_against_both(["output", "input grad", "weight grad"], [y, *grads],
                         [y_bi, *grads_bi], want, dtype)


# --- GroupNorm --------------------------------------------------------------------------
# (3, 6, 7, 11): 3 groups of 2 channels of 77 positions; (2, 4, 20, 20): 400 > 256 positions;
# (5, 6): no spatial axes, 2 groups of 3 channels (with 2 elements per group the
# input gradient is zero but for rounding: nothing to compare).

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,groups", [((3, 6, 7, 11), 3), ((2, 4, 20, 20), 2), ((5, 6), 2)])
def test_group_norm_matches_builtin_and_float64(F, dtype, affine, shape, groups):
    x, dy, w, b = _inputs(shape, (shape[1],), dtype, affine)
    y, grads = _grads(lambda x, w, b: F.group_norm(x, groups, w, b), x, dy, [w, b])
    y_bi, grads_bi = _grads(lambda x, w, b: TF.group_norm(x, groups, w, b), x, dy, [w, b])
    r = ref.group_norm(_np(x), groups, _np(w), _np(b))
    dx, dw, db = ref.group_norm_backward(_np(dy), r.cache)
    m, numel = x.numel() // (shape[0] * groups), x.numel()
    want = [(r.y, m), (dx, m)] + ([(dw, numel), (db, numel)] if affine else [])
    names = ["output", "input grad", "weight grad", "bias grad"]
    _assert_against_both(names, [y, *grads], [y_bi, *grads_bi], want, dtype)


def test_group_norm_weight_without_bias():
    x, dy, w, _ = _inputs((2, 4, 5, 5), (4,), "float64", True)
    y, (dx, dw) = _grads(lambda x, w: K.group_norm(x, 2, w, None), x, dy, [w])
    y_bi, (dx_bi, dw_bi) = _grads(lambda x, w: TF.group_norm(x, 2, w, None), x, dy, [w])
    for got, want in ((y, y_bi), (dx, dx_bi), (dw, dw_bi)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# --- layouts, threads, edge cases -------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 3])
def test_fewer_rows_than_threads_and_uneven_split(rows, monkeypatch):
    """The backward keeps one partial dgamma per thread; 1 or 3 rows on 2 threads."""
    monkeypatch.setattr(cpu, "SERIAL_BELOW", 0)  # split even these small inputs
    x, dy, w, b = _inputs((rows, 260), (260,), "float64", True)
    _, grads = _grads(lambda x, w, b: K.layer_norm(x, (260,), w, b), x, dy, [w, b])
    _, grads_bi = _grads(lambda x, w, b: TF.layer_norm(x, (260,), w, b), x, dy, [w, b])
    for got, want in zip(grads, grads_bi):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_small_inputs_run_on_one_thread_large_ones_on_torchs_threads():
    """Waking a second thread costs more than a small loop saves: below SERIAL_BELOW, one part."""
    import numba
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert cpu._threads(rows=64, numel=64 * 64) == 1
        assert numba.get_num_threads() == 1
        want = min(2, numba.config.NUMBA_NUM_THREADS)
        assert cpu._threads(rows=64, numel=cpu.SERIAL_BELOW) == want
        assert numba.get_num_threads() == want
        assert cpu._threads(rows=1, numel=cpu.SERIAL_BELOW) == 1  # at most one part per row
    finally:
        torch.set_num_threads(old)


def test_non_contiguous_input():
    x = torch.randn(300, 6, dtype=torch.float64).t()  # (6, 300), a transposed view
    torch.testing.assert_close(K.layer_norm(x, (300,)), TF.layer_norm(x, (300,)),
                               rtol=1e-12, atol=1e-12)
    xg = torch.randn(2, 5, 5, 4, dtype=torch.float64).permute(0, 3, 1, 2)  # channels_last view
    torch.testing.assert_close(K.group_norm(xg, 2), TF.group_norm(xg, 2), rtol=1e-12, atol=1e-12)


def test_empty_input_follows_the_builtin():
    x = torch.randn(0, 8)
    assert K.layer_norm(x, (8,)).shape == (0, 8)
    assert K.rms_norm(x, (8,)).shape == (0, 8)
    assert K.group_norm(torch.randn(0, 4, 3), 2).shape == (0, 4, 3)


def test_nan_and_inf_propagate_as_in_pytorch():
    """fastmath keeps NaN and inf semantics (no nnan/ninf): a NaN row stays NaN, others are finite."""
    x = torch.randn(3, 300)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    for fn in (lambda t: K.layer_norm(t, (300,)), lambda t: K.rms_norm(t, (300,))):
        y = fn(x)
        assert torch.isfinite(y[0]).all()
        assert torch.isnan(y[1]).all() and not torch.isfinite(y[2]).all()


def test_modules_are_drop_in():
    """Same parameters and state_dict keys as torch.nn; the same output."""
    torch.manual_seed(0)
    pairs = [(K.LayerNorm(12), torch.nn.LayerNorm(12), (3, 12)),
             (K.RMSNorm(12), torch.nn.RMSNorm(12), (3, 12)),
             (K.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4), (3, 4, 5))]
    for ours, theirs, shape in pairs:
        assert list(ours.state_dict()) == list(theirs.state_dict())
        with torch.no_grad():
            for p in theirs.parameters():
                p.uniform_(0.5, 1.5)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(shape)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)  # float32: 16 eps sqrt(m)


def test_double_backward_is_refused():
    x = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(K.layer_norm(x, (8,)).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        dx.sum().backward()


# --- gradcheck --------------------------------------------------------------------------

def test_triton_gradcheck_float64_and_long_rows_fall_back(triton_kernels):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
    T = triton_kernels
    assert torch.autograd.gradcheck(lambda x, w, b: T.layer_norm(x, (5, 3), w, b),
                                    (r(2, 5, 3), r(5, 3), r(5, 3)))
    assert torch.autograd.gradcheck(lambda x, w: T.rms_norm(x, (7,), w), (r(3, 7), r(7)))
    assert torch.autograd.gradcheck(lambda x, w, b: T.group_norm(x, 2, w, b),
                                    (r(2, 4, 3), r(4), r(4)))
    from normtext.kernels import gpu
    x = torch.randn(1, gpu.MAX_ROW + 1)  # longer than a program's registers: the floor's answer
    torch.testing.assert_close(T.layer_norm(x, x.shape[-1:]), floor.layer_norm(x, x.shape[-1:]))


def test_using_refuses_unknown_backends():
    with pytest.raises(ValueError, match="backend"):
        K.using("cuda")


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: K.layer_norm(x, (5, 3), w, b),
                                    (r(2, 5, 3), r(5, 3), r(5, 3)))
    assert torch.autograd.gradcheck(lambda x, w: K.rms_norm(x, (7,), w), (r(3, 7), r(7)))
    assert torch.autograd.gradcheck(lambda x, w, b: K.group_norm(x, 2, w, b),
                                    (r(2, 4, 3), r(4), r(4)))


# --- input errors: PyTorch's exception type, the floor's message, before any arithmetic --

BAD_INPUTS = [
    ("layer_norm", lambda F: F.layer_norm(torch.randn(2, 5), (4,))),
    ("layer_norm", lambda F: F.layer_norm(torch.randn(2, 4), (4,), torch.ones(3))),
    ("layer_norm", lambda F: F.layer_norm(torch.randn(2, 4), (4,), None, torch.ones(5))),
    ("layer_norm", lambda F: F.layer_norm(torch.randn(2, 4), ())),
    ("layer_norm", lambda F: F.layer_norm(torch.randn(2, 4), 4.0)),
    ("layer_norm", lambda F: F.layer_norm(torch.ones(2, 4, dtype=torch.long), (4,))),
    ("layer_norm", lambda F: F.layer_norm(torch.randn(2, 4), (4,), torch.ones(4).double())),
    ("rms_norm", lambda F: F.rms_norm(torch.randn(2, 5), (4,))),
    ("rms_norm", lambda F: F.rms_norm(torch.randn(4), (2, 4))),
    ("rms_norm", lambda F: F.rms_norm(torch.randn(2, 4), (4,), torch.ones(3))),
    ("rms_norm", lambda F: F.rms_norm(torch.ones(2, 4, dtype=torch.int32), (4,))),
    ("group_norm", lambda F: F.group_norm(torch.randn(2, 6, 3), 4)),
    ("group_norm", lambda F: F.group_norm(torch.randn(2, 6, 3), 3, torch.ones(5))),
    ("group_norm", lambda F: F.group_norm(torch.randn(2, 6, 3), 3, None, torch.ones(5))),
    ("group_norm", lambda F: F.group_norm(torch.randn(6), 3)),
    ("group_norm", lambda F: F.group_norm(torch.randn(1, 2, 1), 2)),
    ("group_norm", lambda F: F.group_norm(torch.randn(2, 6, 3), 0)),
    ("group_norm", lambda F: F.group_norm(torch.ones(2, 6, 3, dtype=torch.long), 3)),
]


@pytest.mark.parametrize("name,call", BAD_INPUTS, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(BAD_INPUTS)])
def test_bad_input_raises_like_pytorch_before_any_kernel(name, call, monkeypatch):
    with pytest.raises(Exception) as theirs:
        call(TF)
    with pytest.raises(Exception) as floor_err:
        call(floor)

    def no_kernels():
        raise AssertionError("a kernel ran on bad input")
    monkeypatch.setattr(cpu, "kernels", no_kernels)
    with pytest.raises(theirs.type) as ours:
        call(K)
    assert type(ours.value) is theirs.type
    assert str(ours.value) == str(floor_err.value)


# --- the numerics rule ------------------------------------------------------------------

FUSED = {"LayerNorm": lambda x: K.layer_norm(x, x.shape[-1:]),
         "RMSNorm": lambda x: K.rms_norm(x, x.shape[-1:], eps=1e-6),
         "GroupNorm": lambda x: K.group_norm(x, registry.group_count(x.shape[1]))}


def _errors(norm, dtype, m, ratio, seed=0):
    """Errors against float64 of the fused kernel and of PyTorch, as numerics.measure takes them."""
    case = registry.REGISTRY[norm]
    shape = registry.numerics_row_shape(case, m)
    x64 = numerics.adversarial_input(shape, ratio, seed)
    xt = numerics.to_torch(x64, dtype)
    if not torch.isfinite(xt).all():  # the input overflows the dtype: nothing to judge
        return []
    seen = xt.double().numpy()
    want = numerics.reference_output(case, seen)
    dyt = numerics.to_torch(np.random.default_rng(seed + 1).standard_normal(shape), dtype)
    want_dx = numerics.reference_input_grad(case, seen, dyt.double().numpy())
    impls = {"fused": FUSED[norm], "PyTorch": numerics.torch_implementations(case)["PyTorch"]}
    rows = []
    for impl, fn in impls.items():
        x = xt.clone().requires_grad_(True)
        y = fn(x)
        (dx,) = torch.autograd.grad(y, x, dyt)
        rows.append({"norm": norm, "dtype": dtype, "m": m, "ratio": ratio, "seed": seed,
                     "impl": impl, "out_err": numerics._rel_err(y.detach().double().numpy(), want),
                     "grad_err": numerics._rel_err(dx.double().numpy(), want_dx)})
    return rows


# The numerics chapter's means (0 ... 1e5 standard deviations) at a short and a long row.
NUMERIC_SIZES = (256, 16384)


@pytest.fixture(scope="module")
def fused_errors():
    import pandas as pd
    rows = []
    for norm in FUSED:
        for dtype in numerics.DTYPES:
            for m in NUMERIC_SIZES:
                for ratio in numerics.RATIOS:
                    rows += _errors(norm, dtype, m, ratio)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("quantity", ["out_err", "grad_err"])
@pytest.mark.parametrize("norm", list(FUSED))
def test_never_more_than_twice_pytorchs_error(fused_errors, norm, quantity):
    t = numerics.factor_check(fused_errors[fused_errors.norm == norm], candidate="fused",
                              quantity=quantity)
    assert set(t.dtype) == set(numerics.DTYPES)  # float16 cells beyond 65504 are dropped
    bad = t[~t.ok]
    assert bad.empty, f"fused kernel more than 2x less accurate than PyTorch:\n{bad.to_string()}"


def test_the_numerics_rule_can_fail(fused_errors):
    """The check has teeth: the textbook one-pass variance breaks it at large means."""
    case = registry.REGISTRY["LayerNorm"]
    x = numerics.to_torch(numerics.adversarial_input((4, 4096), 1e4), "float32")
    naive = numerics._rel_err(numerics.naive_normalize(case, x).double().numpy(),
                              numerics.reference_output(case, x.double().numpy()))
    pytorch = fused_errors.query("norm == 'LayerNorm' and dtype == 'float32' and ratio == 1e4 "
                                 "and impl == 'PyTorch'").out_err.max()
    assert naive > 2 * pytorch + numerics.ULP_FLOOR * np.finfo(np.float32).eps


def test_numba_cache_is_not_in_the_source_tree():
    from pathlib import Path
    import normtext
    source = Path(normtext.__file__).resolve().parent
    assert source not in cpu.numba_cache_dir().resolve().parents


def test_triton_kernels_in_a_fresh_process():
    """Where triton was imported before this module (a full test run), the Triton cases
    run in a fresh interpreter with TRITON_INTERPRET=1 set from the start."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip(TRITON_MISSING)
    if _triton_in_this_process():
        pytest.skip("the Triton cases ran in this process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:randomly",
                          "-p", "no:cacheprovider", "-k", "triton and not fresh_process"],
                         env=env, capture_output=True, text=True, timeout=1800)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
