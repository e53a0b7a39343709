"""InstanceNorm, GroupNorm and LocalResponseNorm: NumPy references, PyTorch drop-ins, Gluon blocks.

Tolerances come from the harness (``compare.tolerance``: 16 eps sqrt(m)), or
are float64 roundoff bounds stated where used.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from normtext.testing import compare
from normtext import errors
from normtext import numpy as ref
from normtext import torch as nt
from normtext.numpy import lrn as ref_lrn
from normtext.spec import GROUP_NORM, INSTANCE_NORM
from normtext.torch import functional as F
from normtext.torch.autograd import NormalizeFunction

IN_CLASSES = {1: (nt.InstanceNorm1d, nn.InstanceNorm1d), 2: (nt.InstanceNorm2d, nn.InstanceNorm2d),
              3: (nt.InstanceNorm3d, nn.InstanceNorm3d)}
IN_SHAPES = [(4, 3, 7), (2, 3, 5, 6), (2, 3, 3, 4, 5)]
GN_SHAPES = [(4, 12), (4, 12, 5), (2, 12, 4, 5), (2, 12, 2, 3, 4)]


def _t(a, dtype=torch.float64):
    return torch.tensor(a, dtype=dtype)


def _fd_grad(f, x, dy, h=1e-6):
    """Central finite differences of sum(f(x) * dy), float64."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = ((f(xp) - f(xm)) * dy).sum() / (2 * h)
    return g


# --- NumPy references ------------------------------------------------------------------

@pytest.mark.parametrize("shape", IN_SHAPES)
def test_instance_norm_reference_matches_torch_with_gradients(shape, rng):
    x, dy = rng.normal(1, 2, shape), rng.normal(size=shape)
    w, b = rng.uniform(0.5, 1.5, shape[1]), rng.normal(size=shape[1])
    res = ref.instance_norm(x, weight=w, bias=b)
    dx, dw, db = ref.instance_norm_backward(dy, res.cache)
    xt, wt, bt = (_t(a).requires_grad_() for a in (x, w, b))
    yt = TF.instance_norm(xt, weight=wt, bias=bt)
    yt.backward(_t(dy))
    # float64 roundoff: a few hundred ulps at most for these sizes
    for got, want in ((res.y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-12)


def test_instance_norm_reference_running_stats_and_eval(rng):
    x = rng.normal(2, 3, (4, 3, 6))
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    res = ref.instance_norm(x, rm, rv, momentum=0.2)
    rmt, rvt = _t(rm), _t(rv)
    TF.instance_norm(_t(x), rmt, rvt, momentum=0.2)
    np.testing.assert_allclose(res.running_mean, rmt.numpy(), atol=1e-14)
    np.testing.assert_allclose(res.running_var, rvt.numpy(), atol=1e-14)
    np.testing.assert_array_equal(rm, np.asarray(rm))  # arguments untouched (copies returned)
    ev = ref.instance_norm(x, rm, rv, use_input_stats=False)
    dy = rng.normal(size=x.shape)
    dx = ref.instance_norm_backward(dy, ev.cache)[0]
    np.testing.assert_allclose(ev.y, TF.instance_norm(_t(x), _t(rm), _t(rv),
                                                      use_input_stats=False).numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, dy / np.sqrt(rv + 1e-5)[None, :, None], atol=1e-12)


@pytest.mark.parametrize("shape", GN_SHAPES)
@pytest.mark.parametrize("groups", [1, 3, 12])
def test_group_norm_reference_matches_torch_with_gradients(shape, groups, rng):
    x, dy = rng.normal(-1, 2, shape), rng.normal(size=shape)
    w, b = rng.uniform(0.5, 1.5, shape[1]), rng.normal(size=shape[1])
    res = ref.group_norm(x, groups, w, b)
    dx, dw, db = ref.group_norm_backward(dy, res.cache)
    xt, wt, bt = (_t(a).requires_grad_() for a in (x, w, b))
    yt = TF.group_norm(xt, groups, wt, bt)
    yt.backward(_t(dy))
    for got, want in ((res.y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-11)


def test_group_norm_reference_per_group_backward_matches_finite_differences(rng):
    x, dy = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3))
    g, b = rng.uniform(0.5, 1.5, 3), rng.normal(size=3)
    res = ref.group_norm(x, 3, g, b, gamma_per="group")
    dx, dg, db = ref.group_norm_backward(dy, res.cache)
    f = lambda xx: ref.group_norm(xx, 3, g, b, gamma_per="group").y
    # central differences with h=1e-6: truncation and roundoff about 1e-9
    np.testing.assert_allclose(dx, _fd_grad(f, x, dy), atol=1e-7)
    fg = lambda gg: ref.group_norm(x, 3, gg, b, gamma_per="group").y
    np.testing.assert_allclose(dg, _fd_grad(fg, g, dy), atol=1e-7)
    np.testing.assert_allclose(db, dy.reshape(2, 3, -1).sum((0, 2)), atol=1e-12)


@pytest.mark.parametrize("convention", ["paper", "torch", "mxnet"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn_reference_backward_matches_finite_differences(convention, size, rng):
    if convention == "paper" and size % 2 == 0:
        pytest.skip("the paper's window is defined for odd n")
    x, dy = rng.normal(0, 2, (2, 6, 3)), rng.normal(size=(2, 6, 3))
    kw = dict(size=size, alpha=0.3, beta=0.75, k=1.5, convention=convention)
    res = ref.local_response_norm(x, **kw)
    dx = ref.local_response_norm_backward(dy, res.cache)
    np.testing.assert_allclose(dx, _fd_grad(lambda xx: ref.local_response_norm(xx, **kw).y, x, dy),
                               atol=1e-7)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
def test_lrn_reference_torch_convention_matches_torch(size, rng):
    x, dy = rng.normal(0, 2, (2, 7, 3, 2)), rng.normal(size=(2, 7, 3, 2))
    res = ref.local_response_norm(x, size, alpha=0.5, beta=0.75, k=1.0)
    xt = _t(x).requires_grad_()
    yt = TF.local_response_norm(xt, size, alpha=0.5, beta=0.75, k=1.0)
    yt.backward(_t(dy))
    np.testing.assert_allclose(res.y, yt.detach().numpy(), atol=1e-13)
    np.testing.assert_allclose(ref.local_response_norm_backward(dy, res.cache), xt.grad.numpy(),
                               atol=1e-12)


# --- PyTorch functional ----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 4), (2, 3, 2, 3, 4), (1, 3, 7)])
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm_functional_matches_torch(shape, use_input_stats, rng):
    x = _t(rng.normal(1, 2, shape))
    c = shape[1]
    w, b = _t(rng.uniform(0.5, 1.5, c)), _t(rng.normal(size=c))
    rm, rv = _t(rng.normal(size=c)), _t(rng.uniform(0.5, 2, c))
    rm2, rv2 = rm.clone(), rv.clone()
    got = F.instance_norm(x, rm, rv, w, b, use_input_stats, 0.3, 1e-3)
    want = TF.instance_norm(x, rm2, rv2, w, b, use_input_stats, 0.3, 1e-3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(rm, rm2, rtol=0, atol=1e-14)  # updated in place like torch's
    torch.testing.assert_close(rv, rv2, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape", GN_SHAPES + [(1, 6, 5), (0, 6, 3)])
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_functional_matches_torch(shape, groups, rng):
    if shape[1] % groups:
        pytest.skip("not divisible")
    x = _t(rng.normal(3, 2, shape))
    w, b = _t(rng.uniform(0.5, 1.5, shape[1])), _t(rng.normal(size=shape[1]))
    torch.testing.assert_close(F.group_norm(x, groups, w, b, 1e-4),
                               TF.group_norm(x, groups, w, b, 1e-4), rtol=0, atol=1e-12)
    torch.testing.assert_close(F.group_norm(x, groups), TF.group_norm(x, groups),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 7, 5), (2, 7, 3, 4), (2, 7, 2, 3, 4), (1, 7, 2, 2, 2, 2),
                                   (0, 7, 3)])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8, 20])
def test_lrn_functional_matches_torch(shape, size, rng):
    x = _t(rng.normal(0, 3, shape))
    torch.testing.assert_close(F.local_response_norm(x, size, 0.2, 0.6, 1.5),
                               TF.local_response_norm(x, size, 0.2, 0.6, 1.5), rtol=0, atol=1e-13)
    torch.testing.assert_close(F.local_response_norm(x, size), TF.local_response_norm(x, size),
                               rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_keep_their_dtype_and_match_torch(dtype, rng):
    x = torch.tensor(rng.normal(size=(2, 6, 8, 8)), dtype=dtype)
    x3 = x.reshape(2, 6, 64)  # PyTorch's LRN supports half precision on 3D input only
    for ours, theirs in ((F.instance_norm(x), TF.instance_norm(x)),
                         (F.group_norm(x, 3), TF.group_norm(x, 3)),
                         (F.local_response_norm(x3, 3), TF.local_response_norm(x3, 3))):
        assert ours.dtype == theirs.dtype == dtype
        # both compute in float32 and round once to dtype: one ulp of dtype apart at most
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=2 * torch.finfo(dtype).eps,
                                   atol=2 * torch.finfo(dtype).eps)


def test_lrn_integer_input_gives_float_like_torch():
    x = torch.arange(24).reshape(2, 6, 2)
    ours, theirs = F.local_response_norm(x, 3), TF.local_response_norm(x, 3)
    assert ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs)


def test_normalize_function_serves_instance_and_group_norm(rng):
    """The hand-written backward of torch/autograd.py, on IN's axes and GN's grouped view."""
    x = _t(rng.normal(size=(2, 6, 3, 2))).requires_grad_()
    w = _t(rng.uniform(0.5, 1.5, 6)).requires_grad_()
    b = _t(rng.normal(size=6)).requires_grad_()
    view = INSTANCE_NORM.param_shape(x.shape)
    axes = INSTANCE_NORM.reduce_axes(x.ndim, 1)
    assert torch.autograd.gradcheck(
        lambda x, w, b: NormalizeFunction.apply(x, w.reshape(view), b.reshape(view), axes, 1e-5),
        (x, w, b))
    torch.testing.assert_close(NormalizeFunction.apply(x, w.reshape(view), b.reshape(view), axes, 1e-5),
                               TF.instance_norm(x, weight=w, bias=b))
    grouped = lambda x: NormalizeFunction.apply(x.reshape(2, 3, -1), None, None,
                                                GROUP_NORM.reduce_axes(3, 1), 1e-5).reshape(x.shape)
    assert torch.autograd.gradcheck(grouped, (x,))
    torch.testing.assert_close(grouped(x), TF.group_norm(x, 3))


# --- errors: the exception type and message are PyTorch's --------------------------------

def _same_error(ours, theirs):
    with pytest.raises(Exception) as want:
        theirs()
    with pytest.raises(want.type) as got:
        ours()
    assert str(got.value) == str(want.value)


def test_references_raise_the_same_errors():
    with pytest.raises(ValueError, match="spatial element"):
        ref.instance_norm(np.ones((2, 3, 1)))
    with pytest.raises(RuntimeError, match="divisible by num_groups"):
        ref.group_norm(np.ones((2, 6, 3)), 4)
    with pytest.raises(ValueError, match="3D or higher"):
        ref.local_response_norm(np.ones((2, 6)), 3)


def test_instance_norm_channel_mismatch_without_affine_warns_like_torch():
    x = torch.randn(2, 4, 4, 4)
    with pytest.warns(UserWarning, match="does not match num_features"):
        y = nt.InstanceNorm2d(3)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(y, nn.InstanceNorm2d(3)(x))


# --- modules: drop-in replacements --------------------------------------------------------

@pytest.mark.parametrize("shape", IN_SHAPES)
@pytest.mark.parametrize("kwargs", [{}, {"affine": True}, {"affine": True, "track_running_stats": True},
                                    {"track_running_stats": True, "momentum": 0.3}])
def test_instance_norm_module_matches_torch_and_reference(shape, kwargs):
    ours_cls, theirs_cls = IN_CLASSES[len(shape) - 2]
    compare.compare_layers(compare.TorchLayer(ours_cls(3, **kwargs)),
                           compare.TorchLayer(theirs_cls(3, **kwargs)), shape, spec=INSTANCE_NORM)
    compare.compare_layers(compare.TorchLayer(ours_cls(3, **kwargs).double()),
                           compare.ReferenceInstanceNorm(3, **kwargs), shape, spec=INSTANCE_NORM,
                           dtype="float64")


@pytest.mark.parametrize("shape", GN_SHAPES)
def test_group_norm_module_matches_torch_and_reference(shape):
    compare.compare_layers(compare.TorchLayer(nt.GroupNorm(3, 12)),
                           compare.TorchLayer(nn.GroupNorm(3, 12)), shape, spec=GROUP_NORM, groups=3)
    compare.compare_layers(compare.TorchLayer(nt.GroupNorm(3, 12).double()),
                           compare.ReferenceGroupNorm(3, 12), shape, spec=GROUP_NORM, groups=3,
                           dtype="float64")


def test_harness_catches_a_group_norm_with_the_wrong_groups():
    with pytest.raises(compare.ToleranceError, match="output"):
        compare.compare_layers(compare.TorchLayer(nt.GroupNorm(4, 12)),
                               compare.TorchLayer(nn.GroupNorm(3, 12)), (2, 12, 4, 4),
                               spec=GROUP_NORM, groups=3)


@pytest.mark.parametrize("cls", ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"])
def test_instance_norm_unbatched_input(cls, rng):
    ours, theirs = getattr(nt, cls)(3, affine=True), getattr(nn, cls)(3, affine=True)
    x = torch.tensor(rng.normal(size=(3,) + (4,) * (int(cls[-2]))), dtype=torch.float32)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("make", [
    lambda m: m.InstanceNorm2d(3), lambda m: m.InstanceNorm2d(3, affine=True),
    lambda m: m.InstanceNorm2d(3, affine=True, track_running_stats=True),
    lambda m: m.InstanceNorm1d(3, affine=True, bias=False, momentum=None),
    lambda m: m.GroupNorm(2, 6), lambda m: m.GroupNorm(2, 6, affine=False),
    lambda m: m.GroupNorm(3, 6, eps=1e-3, bias=False), lambda m: m.LocalResponseNorm(3),
    lambda m: m.LocalResponseNorm(4, alpha=1e-3, beta=0.5, k=2.0)])
def test_state_dict_and_repr_match_torch(make):
    ours, theirs = make(nt), make(nn)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


def test_instance_norm_momentum_none_keeps_running_stats_like_torch(rng):
    x = torch.tensor(rng.normal(2, 1, (4, 3, 8)), dtype=torch.float32)
    ours = nt.InstanceNorm1d(3, track_running_stats=True, momentum=None)
    theirs = nn.InstanceNorm1d(3, track_running_stats=True, momentum=None)
    for m in (ours, theirs):
        m(x)
        m(x)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 0
    assert torch.all(ours.running_mean == 0)


def test_lrn_module_matches_torch(rng):
    x = torch.tensor(rng.normal(size=(2, 6, 5, 5)), dtype=torch.float32)
    for size in (2, 5):
        torch.testing.assert_close(nt.LocalResponseNorm(size, 1e-2)(x),
                                   nn.LocalResponseNorm(size, 1e-2)(x))


# --- MXNet Gluon --------------------------------------------------------------------------

@pytest.fixture
def mx():
    return pytest.importorskip("mxnet")


@pytest.mark.parametrize("kwargs", [{}, {"scale": True}, {"center": False}, {"epsilon": 0.3}])
@pytest.mark.parametrize("shape", [(2, 3, 6), (2, 3, 4, 5)])
def test_gluon_instance_norm_matches_gluon(mx, kwargs, shape):
    from normtext import mxnet as ntm
    ours, theirs = ntm.InstanceNorm(in_channels=3, **kwargs), mx.gluon.nn.InstanceNorm(in_channels=3, **kwargs)
    ours.initialize()
    theirs.initialize()
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    assert {k.split("_")[-1]: p.grad_req for k, p in ours.collect_params().items()} == \
        {k.split("_")[-1]: p.grad_req for k, p in theirs.collect_params().items()}
    compare.compare_layers(compare.GluonLayer(ours), compare.GluonLayer(theirs), shape,
                           spec=INSTANCE_NORM)
    # Gluon applies gamma and beta always; only those with scale/center learn
    learn = [p for p, flag in (("gamma", kwargs.get("scale", False)),
                               ("beta", kwargs.get("center", True))) if flag]
    ref_layer = compare.ReferenceInstanceNorm(3, eps=kwargs.get("epsilon", 1e-5), affine=True,
                                              learn=learn)
    compare.compare_layers(compare.GluonLayer(ours), ref_layer, shape, spec=INSTANCE_NORM)


def test_gluon_instance_norm_other_axis_and_deferred_init(mx):
    from normtext import mxnet as ntm
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 5, 4, 3)))
    ours, theirs = ntm.InstanceNorm(axis=3, scale=True), mx.gluon.nn.InstanceNorm(axis=3, scale=True)
    ours.initialize()
    theirs.initialize()
    np.testing.assert_allclose(ours(x).asnumpy(), theirs(x).asnumpy(), atol=1e-5)
    assert ours.gamma.shape == theirs.gamma.shape == (3,)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 4, 5)])
def test_gluon_group_norm_matches_gluon_and_reference(mx, groups, shape):
    from normtext import mxnet as ntm
    ours, theirs = ntm.GroupNorm(num_groups=groups), mx.gluon.nn.GroupNorm(num_groups=groups)
    ours.initialize()
    theirs.initialize()
    assert repr(ours) == repr(theirs)
    assert ours.gamma.shape == theirs.gamma.shape == (groups,)
    kw = dict(spec=GROUP_NORM, groups=groups, param_size=groups)
    compare.compare_layers(compare.GluonLayer(ours), compare.GluonLayer(theirs), shape, **kw)
    compare.compare_layers(compare.GluonLayer(ours),
                           compare.ReferenceGroupNorm(groups, 6, gamma_per="group"), shape, **kw)


def test_gluon_group_norm_rejects_indivisible_channels_like_gluon(mx):
    from normtext import mxnet as ntm
    x = mx.nd.ones((2, 6, 3))
    for block in (ntm.GroupNorm(4), mx.gluon.nn.GroupNorm(4)):
        block.initialize()
        with pytest.raises(mx.base.MXNetError, match="divisible by # of groups"):
            block(x).wait_to_read()


@pytest.mark.parametrize("nsize", [1, 2, 3, 4, 5, 6, 7])
def test_gluon_lrn_matches_nd_lrn(mx, nsize):
    from normtext.mxnet import lrn
    a = np.random.default_rng(nsize).normal(0, 3, (2, 7, 3, 3)).astype(np.float32)
    x = mx.nd.array(a)
    for kw in ({}, {"alpha": 0.5, "beta": 0.6, "knorm": 1.0}):
        got, want = lrn(x, nsize=nsize, **kw).asnumpy(), mx.nd.LRN(x, nsize=nsize, **kw).asnumpy()
        np.testing.assert_allclose(got, want, rtol=compare.tolerance("float32", nsize), atol=0)
        np.testing.assert_allclose(
            ref.local_response_norm(a, nsize, kw.get("alpha", 1e-4), kw.get("beta", 0.75),
                                    kw.get("knorm", 2.0), convention="mxnet").y,
            want, rtol=compare.tolerance("float32", nsize), atol=0)
    # gradients through the NDArray operations equal MXNet's backward
    grads = []
    for f in (lambda x: lrn(x, nsize=nsize, alpha=0.5), lambda x: mx.nd.LRN(x, nsize=nsize, alpha=0.5)):
        xx = mx.nd.array(a)
        xx.attach_grad()
        with mx.autograd.record():
            y = f(xx)
        y.backward(mx.nd.ones_like(y))
        grads.append(xx.grad.asnumpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=0,
                               atol=compare.tolerance("float32", nsize) * np.abs(grads[1]).max())


def test_gluon_lrn_rejects_non_4d_like_mxnet(mx):
    from normtext.mxnet import lrn
    with pytest.raises(mx.base.MXNetError, match="4 vs. 3"):
        lrn(mx.nd.ones((2, 6, 3)), nsize=3)


def test_errors_module_is_framework_agnostic():
    with pytest.raises(RuntimeError, match="divisible"):
        errors.check_group_norm((2, 6, 4), 4)
    assert ref_lrn.window(4, "torch") == (2, 1)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool,
                                   torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 3, 4)])
def test_lrn_dtype_support_matches_torch(dtype, shape):
    """PyTorch's LRN pools with avg_pool2d/3d: int64 is averaged with truncation, half fails in 4D."""
    x = (torch.arange(np.prod(shape)).reshape(shape) % 7).to(dtype)
    try:
        want = TF.local_response_norm(x, 3, alpha=1.0)
    except NotImplementedError:
        _same_error(lambda: F.local_response_norm(x, 3, alpha=1.0),
                    lambda: TF.local_response_norm(x, 3, alpha=1.0))
        return
    got = F.local_response_norm(x, 3, alpha=1.0)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want)


def test_normalize_function_weight_broadcast_along_no_axis(rng):
    """A weight of the input's full shape is broadcast along no axis: its
    gradient is dy * x_hat itself, with nothing summed (sum over dim=() would
    sum over everything)."""
    x = _t(rng.normal(size=(3, 4, 5))).requires_grad_()
    w = _t(rng.uniform(0.5, 1.5, (3, 4, 5))).requires_grad_()
    b = _t(rng.normal(size=(3, 4, 5))).requires_grad_()
    f = lambda x, w, b: NormalizeFunction.apply(x, w, b, (1, 2), 1e-5)
    assert torch.autograd.gradcheck(f, (x, w, b))
    f(x, w, b).sum().backward()
    assert w.grad.shape == w.shape and b.grad.shape == b.shape
