"""LayerNorm and RMSNorm: float64 reference, PyTorch functional/modules, hand backwards,
errors, the layer-normalized LSTM cell, and the Gluon block.

Parity tolerances come from normtext.testing.compare.tolerance (16 * eps(dtype) * sqrt(m),
m = elements per statistic = prod(normalized_shape)).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from normtext.testing import compare
from normtext import errors
from normtext import numpy as ref
from normtext import torch as nt
from normtext.spec import LAYER_NORM, RMS_NORM
from normtext.torch import functional as NF

# (input shape, normalized_shape): every rank and every trailing length PyTorch accepts,
# including a 1D input, a normalized_shape that is the whole input, and an empty batch.
CASES = [((6,), (6,)), ((4, 5), (5,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)),
         ((2, 3, 4), (2, 3, 4)), ((2, 3, 4, 5), (4, 5)), ((2, 3, 4, 5), (3, 4, 5)),
         ((2, 2, 3, 2, 3), (3, 2, 3)), ((0, 4), (4,)), ((2, 0), (0,))]
NONEMPTY = [c for c in CASES if 0 not in c[0]]  # no empty batch, no empty normalized_shape


def tol(dtype, ns):
    return compare.tolerance(dtype, math.prod(ns))


def rel_err(got, want):
    got = got.detach().double() if isinstance(got, torch.Tensor) else np.asarray(got, np.float64)
    want = want.detach().double() if isinstance(want, torch.Tensor) else np.asarray(want, np.float64)
    got, want = np.asarray(got), np.asarray(want)
    if want.size == 0:
        return 0.0
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


# --- the NumPy reference -----------------------------------------------------------

@pytest.mark.parametrize("shape,ns", NONEMPTY)
def test_reference_layer_norm_normalizes_each_sample(shape, ns, rng):
    x = rng.normal(3.0, 2.0, shape)
    y = ref.layer_norm(x, ns).y
    axes = LAYER_NORM.reduce_axes(len(shape), len(ns))
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    # the biased variance of x_hat is exactly var / (var + eps)
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.var(axis=axes), var / (var + 1e-5), rtol=1e-12)


@pytest.mark.parametrize("shape,ns", NONEMPTY)
def test_reference_rms_norm_has_unit_mean_square(shape, ns, rng):
    x = rng.normal(3.0, 2.0, shape)
    y = ref.rms_norm(x, ns, eps=1e-12).y
    axes = RMS_NORM.reduce_axes(len(shape), len(ns))
    np.testing.assert_allclose((y ** 2).mean(axis=axes), 1, atol=1e-10)


def _numeric(f, a, h=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        a_p, a_m = a.copy(), a.copy()
        a_p[i] += h
        a_m[i] -= h
        g[i] = (f(a_p) - f(a_m)) / (2 * h)
    return g


@pytest.mark.parametrize("shape,ns", [((3, 5), (5,)), ((2, 3, 4), (3, 4))])
def test_reference_backwards_match_finite_differences(shape, ns, rng):
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    gamma, beta = rng.uniform(0.5, 1.5, ns), rng.normal(size=ns)
    # central differences: error O(h^2) + O(eps/h), about 1e-8 at h = 1e-6
    atol = 1e-7
    loss = lambda x_, g_, b_: (ref.layer_norm(x_, ns, g_, b_).y * dy).sum()
    dx, dg, db = ref.layer_norm_backward(dy, ref.layer_norm(x, ns, gamma, beta).cache)
    np.testing.assert_allclose(dx, _numeric(lambda a: loss(a, gamma, beta), x), atol=atol)
    np.testing.assert_allclose(dg, _numeric(lambda a: loss(x, a, beta), gamma), atol=atol)
    np.testing.assert_allclose(db, _numeric(lambda a: loss(x, gamma, a), beta), atol=atol)

    loss = lambda x_, g_: (ref.rms_norm(x_, ns, g_, eps=1e-6).y * dy).sum()
    dx, dg = ref.rms_norm_backward(dy, ref.rms_norm(x, ns, gamma, eps=1e-6).cache)
    np.testing.assert_allclose(dx, _numeric(lambda a: loss(a, gamma), x), atol=atol)
    np.testing.assert_allclose(dg, _numeric(lambda a: loss(x, a), gamma), atol=atol)


# --- functional parity with torch.nn.functional ------------------------------------

def _run(fn, x, dy, *params):
    x = x.clone().requires_grad_(True)
    params = [None if p is None else p.clone().requires_grad_(True) for p in params]
    y = fn(x, *params)
    y.backward(dy)
    return [y, x.grad] + [p.grad for p in params if p is not None]


@pytest.mark.parametrize("shape,ns", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("affine", [True, False])
def test_functional_layer_norm_matches_torch(shape, ns, dtype, affine):
    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    x = torch.randn(shape, generator=g, dtype=dt) * 2 + 1
    dy = torch.randn(shape, generator=g, dtype=dt)
    w = torch.rand(ns, generator=g, dtype=dt) + 0.5 if affine else None
    b = torch.randn(ns, generator=g, dtype=dt) if affine else None
    ours = _run(lambda x_, w_, b_: NF.layer_norm(x_, ns, w_, b_), x, dy, w, b)
    theirs = _run(lambda x_, w_, b_: TF.layer_norm(x_, ns, w_, b_), x, dy, w, b)
    assert ours[0].dtype == theirs[0].dtype and ours[0].shape == theirs[0].shape
    for got, want in zip(ours, theirs):
        assert rel_err(got, want) <= tol(dtype, ns)


@pytest.mark.parametrize("shape,ns", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("eps", [None, 1e-6])
def test_functional_rms_norm_matches_torch(shape, ns, dtype, eps):
    g = torch.Generator().manual_seed(1)
    dt = getattr(torch, dtype)
    x = torch.randn(shape, generator=g, dtype=dt) * 2 + 1
    dy = torch.randn(shape, generator=g, dtype=dt)
    w = torch.rand(ns, generator=g, dtype=dt) + 0.5
    ours = _run(lambda x_, w_: NF.rms_norm(x_, ns, w_, eps), x, dy, w)
    theirs = _run(lambda x_, w_: TF.rms_norm(x_, ns, w_, eps), x, dy, w)
    for got, want in zip(ours, theirs):
        assert rel_err(got, want) <= tol(dtype, ns)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    # long rows with a large mean: where computing in the half dtype itself shows
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 4096, generator=g, dtype=torch.float64) + 8).to(dtype)
    ns = (4096,)
    want = torch.tensor(ref.layer_norm(x.double().numpy(), ns).y)
    got = NF.layer_norm(x, ns)
    assert got.dtype == dtype
    assert rel_err(got, want) <= tol("bfloat16" if dtype == torch.bfloat16 else "float16", ns)
    assert rel_err(got, TF.layer_norm(x, ns)) <= tol(str(dtype).split(".")[1], ns)
    # what the name says: float32 statistics, one rounding at the end
    compare.assert_rounded_from_float32(got, want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_rms_norm_eps_none_is_machine_epsilon_of_the_compute_dtype(dtype):
    # tiny inputs: mean(x^2) ~ 1e-8, so eps = finfo(...).eps decides the output
    x = (torch.randn(3, 16, dtype=torch.float64) * 1e-4).to(dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    eps = torch.finfo(compute).eps
    want = torch.tensor(ref.rms_norm(x.double().numpy(), (16,), eps=eps).y)
    name = str(dtype).split(".")[1]
    assert rel_err(NF.rms_norm(x, [16]), want) <= tol(name, (16,))
    assert rel_err(TF.rms_norm(x, [16]), want) <= tol(name, (16,))  # PyTorch agrees
    # and the wrong epsilon would be visible: float64's eps changes float32's answer
    if dtype == torch.float32:
        other = torch.tensor(ref.rms_norm(x.double().numpy(), (16,), eps=2.2e-16).y)
        assert rel_err(other, want) > 100 * tol(name, (16,))


def test_variance_is_stable_at_large_mean():
    # float32 rows with mean 1e4 and std 1: E[x^2] - E[x]^2 cancels catastrophically
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 4096, generator=g, dtype=torch.float64) + 1e4).float()
    want = ref.layer_norm(x.double().numpy(), (4096,)).y
    # A float32 mean of values near 1e4 is off by about an ulp of 1e4, eps32 * 1e4, in
    # units of the std (1): no float32 algorithm does better, so this is the budget.
    budget = torch.finfo(torch.float32).eps * 1e4
    assert rel_err(NF.layer_norm(x, [4096]), want) <= budget
    assert rel_err(TF.layer_norm(x, [4096]), want) <= budget  # PyTorch's Welford
    naive_var = x.square().mean(-1, keepdim=True) - x.mean(-1, keepdim=True).square()
    naive = (x - x.mean(-1, keepdim=True)) * torch.rsqrt(naive_var.clamp_min(0) + 1e-5)
    assert rel_err(naive, want) > 100 * budget  # the test can tell: E[x^2] - E[x]^2 fails


# --- the hand-written backwards -----------------------------------------------------

@pytest.mark.parametrize("shape,ns", [((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((4,), (4,)),
                                      ((2, 2, 2, 3), (2, 2, 3))])
def test_hand_backwards_pass_gradcheck(shape, ns):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(ns, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(ns, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: nt.layer_norm_hand(a[0], ns, a[1], a[2]), (x, w, b))
    assert torch.autograd.gradcheck(lambda x_: nt.layer_norm_hand(x_, ns), (x,))
    assert torch.autograd.gradcheck(lambda *a: nt.rms_norm_hand(a[0], ns, a[1], 1e-5), (x, w))
    assert torch.autograd.gradcheck(lambda x_: nt.rms_norm_hand(x_, ns), (x,))


@pytest.mark.parametrize("shape,ns", NONEMPTY)
def test_hand_backwards_equal_the_reference(shape, ns, rng):
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    gamma, beta = rng.uniform(0.5, 1.5, ns), rng.normal(size=ns)
    t = lambda a: torch.tensor(a)
    got = _run(lambda x_, w_, b_: nt.layer_norm_hand(x_, ns, w_, b_), t(x), t(dy), t(gamma), t(beta))
    res = ref.layer_norm(x, ns, gamma, beta)
    for g_, w_ in zip(got, (res.y, *ref.layer_norm_backward(dy, res.cache))):
        assert rel_err(g_, w_) <= tol("float64", ns)
    got = _run(lambda x_, w_: nt.rms_norm_hand(x_, ns, w_, 1e-5), t(x), t(dy), t(gamma))
    res = ref.rms_norm(x, ns, gamma, eps=1e-5)
    for g_, w_ in zip(got, (res.y, *ref.rms_norm_backward(dy, res.cache))):
        assert rel_err(g_, w_) <= tol("float64", ns)


# --- errors: the same exception types (and shape messages) as PyTorch ----------------

X = torch.randn(2, 3, 4)
def _raised(f):
    with pytest.raises(Exception) as info:
        f()
    return info.value


@pytest.mark.parametrize("hand", [nt.layer_norm_hand, nt.rms_norm_hand])
def test_hand_versions_check_like_the_functional(hand):
    with pytest.raises(RuntimeError, match="expected input with shape"):
        hand(X, (3,))


def test_half_input_with_float32_parameters_is_allowed():
    x = torch.randn(2, 4).half()
    y = NF.layer_norm(x, (4,), torch.ones(4), torch.zeros(4))
    assert y.dtype == torch.float16
    assert TF.layer_norm(x, (4,), torch.ones(4), torch.zeros(4)).dtype == torch.float16


# --- modules: drop-in replacements --------------------------------------------------

MODULE_KWARGS = [
    ("LayerNorm", {}), ("LayerNorm", {"elementwise_affine": False}),
    ("LayerNorm", {"bias": False}), ("LayerNorm", {"eps": 1e-3}),
    ("RMSNorm", {}), ("RMSNorm", {"elementwise_affine": False}), ("RMSNorm", {"eps": 1e-6}),
]


@pytest.mark.parametrize("name,kwargs", MODULE_KWARGS)
@pytest.mark.parametrize("ns", [5, (5,), [3, 5], torch.Size([2, 3, 5])])
def test_modules_mirror_torch(name, kwargs, ns):
    ours, theirs = getattr(nt, name)(ns, **kwargs), getattr(torch.nn, name)(ns, **kwargs)
    assert repr(ours) == repr(theirs)
    assert ours.normalized_shape == theirs.normalized_shape
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert p.shape == q.shape and torch.equal(p, q)  # same initialization
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())  # both directions
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3, 5)
    assert rel_err(ours(x), theirs(x)) <= tol("float32", ours.normalized_shape)


@pytest.mark.parametrize("shape,ns", NONEMPTY)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_modules_through_the_harness(shape, ns, dtype):
    dt = getattr(torch, dtype)
    ln = lambda: compare.ReferenceLayerNorm(ns)
    for module in (nt.LayerNorm(ns, dtype=dt), torch.nn.LayerNorm(ns, dtype=dt)):
        compare.compare_layers(compare.TorchLayer(module), ln(), shape, dtype=dtype,
                               spec=LAYER_NORM, k=len(ns))
    rms = lambda: compare.ReferenceLayerNorm(ns, eps=None, kind="rms")
    for module in (nt.RMSNorm(ns, dtype=dt), torch.nn.RMSNorm(ns, dtype=dt)):
        compare.compare_layers(compare.TorchLayer(module), rms(), shape, dtype=dtype,
                               spec=RMS_NORM, k=len(ns))


def test_harness_catches_a_wrong_layer_norm():
    # the biased/unbiased slip: torch.var's default is unbiased
    class Unbiased(torch.nn.LayerNorm):
        def forward(self, x):
            mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)
            return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
    with pytest.raises(compare.ToleranceError):
        compare.compare_layers(compare.TorchLayer(Unbiased(8)), compare.ReferenceLayerNorm(8),
                               (4, 8), spec=LAYER_NORM)


def test_layer_norm_is_the_same_in_train_and_eval_and_per_sample():
    m = nt.LayerNorm(10)
    x = torch.randn(16, 10)
    y_train = m.train()(x)
    y_eval = m.eval()(x)
    torch.testing.assert_close(y_train, y_eval, rtol=0, atol=0)  # the same computation
    # a sample alone: the same numbers up to the rounding of a reduction over 10 elements
    assert rel_err(m(x[3:4]), y_eval[3:4]) <= tol("float32", (10,))
    bn = nt.BatchNorm1d(10).train()
    assert rel_err(bn(x)[3:4], bn(x[2:4])[1:2]) > 1e-2  # BN's output depends on the batch


# --- the layer-normalized LSTM cell -------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_lstm_cell_without_normalization_is_torch_lstm_cell(bias, batched):
    torch.manual_seed(0)
    theirs = torch.nn.LSTMCell(5, 7, bias=bias)
    torch.manual_seed(0)
    ours = nt.LayerNormLSTMCell(5, 7, bias=bias, layer_norm=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)  # the same initialization from the same seed
    x = torch.randn(3, 5) if batched else torch.randn(5)
    hx = (torch.randn(3, 7), torch.randn(3, 7)) if batched else (torch.randn(7), torch.randn(7))
    for args in ((x,), (x, hx)):
        for got, want in zip(ours(*args), theirs(*args)):
            assert got.shape == want.shape
            assert rel_err(got, want) <= tol("float32", (12,))  # a sum over I + H = 12 terms
    e1 = _raised(lambda: ours(torch.randn(2, 2, 5)))
    e2 = _raised(lambda: theirs(torch.randn(2, 2, 5)))
    assert type(e1) is type(e2) and str(e1) == str(e2)


def test_lstm_cell_with_normalization_follows_ba_et_al():
    torch.manual_seed(0)
    cell = nt.LayerNormLSTMCell(5, 6).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(0.5, 1.5)
    x, h, c = (torch.randn(4, n, dtype=torch.float64) for n in (5, 6, 6))
    # the equations of Ba et al. (2016), written out with PyTorch's own layer_norm
    ln = lambda v, m: TF.layer_norm(v, m.normalized_shape, m.weight, m.bias)
    gates = ln(x @ cell.weight_ih.t(), cell.ln_ih) + ln(h @ cell.weight_hh.t(), cell.ln_hh) \
        + cell.bias_ih + cell.bias_hh
    i, f, g, o = gates.chunk(4, 1)
    c_want = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_want = torch.sigmoid(o) * torch.tanh(ln(c_want, cell.ln_c))
    h_got, c_got = cell(x, (h, c))
    assert rel_err(c_got, c_want) <= tol("float64", (24,))
    assert rel_err(h_got, h_want) <= tol("float64", (24,))
    x_big = x * 1000  # the gates are normalized: scaling the input changes nothing much
    torch.testing.assert_close(cell(x_big, (h, c))[0], cell(x_big * 3, (h, c))[0],
                               rtol=1e-6, atol=1e-6)


def test_row_lstm_classifier_shapes():
    from normtext.torch.rnn import RowLSTMClassifier
    net = RowLSTMClassifier(28, 16, 10, layer_norm=True)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


# --- MXNet Gluon ------------------------------------------------------------------

@pytest.fixture
def mx():
    return pytest.importorskip("mxnet")


@pytest.mark.parametrize("shape,axis", [((4, 5), -1), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1),
                                        ((3, 6, 2), 1)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_gluon_layer_norm_matches_gluon(mx, shape, axis, center, scale):
    from mxnet.gluon import nn
    from normtext import mxnet as ntm
    ours = ntm.LayerNorm(axis=axis, center=center, scale=scale)
    theirs = nn.LayerNorm(axis=axis, center=center, scale=scale)
    ours.initialize()
    theirs.initialize()
    x = mx.nd.array(np.random.default_rng(0).normal(2, 3, shape))
    dy = mx.nd.array(np.random.default_rng(1).normal(size=shape))
    outs = []
    for block in (ours, theirs):
        x_ = x.copy()
        x_.attach_grad()
        with mx.autograd.record():
            y = block(x_)
        y.backward(dy)
        grads = [block.gamma.grad() if scale else None, block.beta.grad() if center else None]
        outs.append([y, x_.grad] + [g_ for g_ in grads if g_ is not None])
    m = shape[axis]
    for got, want in zip(*outs):
        assert rel_err(got.asnumpy(), want.asnumpy()) <= tol("float32", (m,))
    assert repr(ours) == repr(theirs)
    assert [k.split("_", 1)[1] for k in ours.collect_params()] == \
        [k.split("_", 1)[1] for k in theirs.collect_params()]
    assert [p.grad_req for p in ours.collect_params().values()] == \
        [p.grad_req for p in theirs.collect_params().values()]


def test_gluon_layer_norm_through_the_harness(mx):
    from mxnet.gluon import nn
    from normtext import mxnet as ntm
    for block in (ntm.LayerNorm(), nn.LayerNorm()):
        block.initialize()
        compare.compare_layers(compare.GluonLayer(block), compare.ReferenceLayerNorm(5),
                               (4, 5), spec=LAYER_NORM)


def test_gluon_wrong_in_channels_raises_like_gluon(mx):
    from mxnet.gluon import nn
    from normtext import mxnet as ntm
    x = mx.nd.ones((2, 5))
    errs = []
    for block in (ntm.LayerNorm(in_channels=4), nn.LayerNorm(in_channels=4)):
        block.initialize()
        errs.append(_raised(lambda: block(x).wait_to_read()))
    assert isinstance(errs[0], mx.base.MXNetError) and isinstance(errs[1], mx.base.MXNetError)
    assert "Shape inconsistent" in str(errs[0]) and "Shape inconsistent" in str(errs[1])


# --- the chapter's models and verdict rules -----------------------------------------

@pytest.mark.parametrize("dim", [(28, 28), (27, 31), (8, 5)])
@pytest.mark.parametrize("k,d,s,p", [(3, 1, 1, 0), (5, 1, 2, 2), (3, 2, 3, 1), ((2, 3), (1, 2), (2, 1), (0, 1))])
def test_calc_activation_shape_matches_real_convolutions(dim, k, d, s, p):
    from normtext.experiments.models import calc_activation_shape
    conv = torch.nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
    out = conv(torch.zeros(1, 1, *dim)).shape[2:]
    got = calc_activation_shape(dim, k, d, s, p)
    assert got == tuple(out) and all(type(n) is int for n in got)


def test_tutorial_cnn_runs_and_uses_layer_norm_over_chw():
    from normtext.experiments.models import TutorialCNN
    net = TutorialCNN()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert net.norm1.normalized_shape == (5, 26, 26) and net.norm2.normalized_shape == (10, 24, 24)
    assert isinstance(TutorialCNN(layer_norm=False).norm1, torch.nn.Identity)


@pytest.mark.parametrize("hand,builtin", [(nt.rms_norm_hand, TF.rms_norm),
                                          (nt.layer_norm_hand, TF.layer_norm)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_hand_versions_compute_half_input_in_float32(hand, builtin, dtype, scale):
    # At scale 1e-3, mean(x^2) ~ 1e-6 is far below float16's machine epsilon (~1e-3):
    # an eps taken from the input's dtype, or statistics kept in half precision, move
    # the output by O(1); computed in float32 as PyTorch does, they differ by the final
    # rounding to the half dtype only (its unit roundoff: 2^-11 float16, 2^-8 bfloat16).
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 64, generator=g) * scale).to(dtype).requires_grad_(True)
    w = (torch.rand(64, generator=g) + 0.5).to(dtype).requires_grad_(True)
    dy = torch.randn(4, 64, generator=g).to(dtype)
    got = hand(x, (64,), w)
    want = builtin(x, (64,), w)
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(got, want, rtol=2 * ulp, atol=2 * ulp)
    got_dx, = torch.autograd.grad(got, x, dy)
    want_dx, = torch.autograd.grad(want, x, dy)
    # dx = r * (...) is of order 1/scale: compared relative to its largest value
    assert (got_dx.float() - want_dx.float()).abs().max() <= 8 * ulp * want_dx.float().abs().max()
