"""One test per row of book/conventions.md: every default and convention that differs.

Each test checks the frameworks themselves (so a change in PyTorch or MXNet
shows up here) and, where normtext mirrors the behaviour, normtext too. Each
asserts both sides of the difference: the conversion that makes the two agree,
and that ignoring the difference changes the result.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from normtext import numpy as ref
from normtext import torch as nt
from normtext.numpy.lrn import convert_lrn, window

RNG = np.random.default_rng(0)
X2 = RNG.normal(3, 2, (8, 3)).astype(np.float32)
X4 = RNG.normal(1, 2, (2, 6, 5, 5)).astype(np.float32)
F32 = dict(rtol=1e-5, atol=1e-5)  # float32 results of O(1) magnitude, a few roundings apart


@pytest.fixture
def mx():
    return pytest.importorskip("mxnet")


def _gluon_train_step(mx, block, x):
    with mx.autograd.record():
        y = block(mx.nd.array(x))
    y.backward()
    return y


# --- BatchNorm -------------------------------------------------------------------------

def test_bn_momentum_weighs_the_new_batch_in_torch_and_the_old_value_in_gluon(mx):
    t = nn.BatchNorm1d(3, momentum=0.1)
    t(torch.tensor(X2))
    same_number, converted = mx.gluon.nn.BatchNorm(in_channels=3, momentum=0.1), \
        mx.gluon.nn.BatchNorm(in_channels=3, momentum=0.9)
    for b in (same_number, converted):
        b.initialize()
        _gluon_train_step(mx, b, X2)
    np.testing.assert_allclose(converted.running_mean.data().asnumpy(), t.running_mean.numpy(), **F32)
    assert not np.allclose(same_number.running_mean.data().asnumpy(), t.running_mean.numpy(), rtol=0.1)


def test_bn_running_var_is_unbiased_in_torch_and_biased_in_gluon(mx):
    t = nn.BatchNorm1d(3, momentum=1.0)           # running_var = the batch's estimate
    t(torch.tensor(X2))
    g = mx.gluon.nn.BatchNorm(in_channels=3, momentum=0.0)
    g.initialize()
    _gluon_train_step(mx, g, X2)
    m = len(X2)
    np.testing.assert_allclose(t.running_var.numpy(), X2.var(0, ddof=1), **F32)
    np.testing.assert_allclose(g.running_var.data().asnumpy(), X2.var(0), **F32)
    np.testing.assert_allclose(t.running_var.numpy(), g.running_var.data().asnumpy() * m / (m - 1), **F32)


def test_bn_gluon_updates_running_stats_in_backward_not_forward(mx):
    g = mx.gluon.nn.BatchNorm(in_channels=3)
    g.initialize()
    with mx.autograd.record():
        y = g(mx.nd.array(X2))
    assert np.all(g.running_mean.data().asnumpy() == 0)   # forward alone: unchanged
    y.backward()
    assert not np.all(g.running_mean.data().asnumpy() == 0)
    t = nn.BatchNorm1d(3)
    t(torch.tensor(X2))                                    # PyTorch: in the forward
    assert not torch.all(t.running_mean == 0)


def test_bn_raw_mxnet_operator_defaults_eps_1e3_and_fix_gamma(mx):
    nd = mx.nd
    gamma, beta = nd.array([2.0, 3.0, 4.0]), nd.zeros(3)
    with mx.autograd.train_mode():
        y = nd.BatchNorm(nd.array(X2), gamma, beta, nd.zeros(3), nd.ones(3)).asnumpy()
    x_hat = lambda eps: (X2 - X2.mean(0)) / np.sqrt(X2.var(0) + eps)
    np.testing.assert_allclose(y, x_hat(1e-3), **F32)      # gamma ignored, eps = 1e-3
    assert not np.allclose(y, x_hat(1e-5) * [2, 3, 4], **F32)


def test_bn_batch_of_one_raises_in_torch_and_is_silent_in_gluon(mx):
    x = X2[:1]
    for layer in (nn.BatchNorm1d(3), nt.BatchNorm1d(3)):
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            layer(torch.tensor(x))
    g = mx.gluon.nn.BatchNorm(in_channels=3)
    g.initialize()
    y = _gluon_train_step(mx, g, x)
    assert np.all(y.asnumpy() == 0)                        # every value is its own mean


# --- LayerNorm, RMSNorm ----------------------------------------------------------------

def test_ln_torch_normalizes_trailing_shape_gluon_one_axis(mx):
    t = torch.tensor(X4)
    g = mx.gluon.nn.LayerNorm()                           # axis=-1
    g.initialize()
    y = g(mx.nd.array(X4)).asnumpy()
    np.testing.assert_allclose(y, TF.layer_norm(t, (5,)).numpy(), **F32)
    assert not np.allclose(y, TF.layer_norm(t, (6, 5, 5)).numpy(), **F32)
    assert g.gamma.shape == (5,) and nn.LayerNorm((6, 5, 5)).weight.shape == (6, 5, 5)


def test_rms_norm_eps_none_is_the_dtype_machine_epsilon():
    x = torch.tensor(X2) * 1e-3                           # mean square ~1e-5: eps matters
    m = nn.RMSNorm(3)
    assert m.eps is None
    exact = nn.RMSNorm(3, eps=torch.finfo(torch.float32).eps)(x)
    torch.testing.assert_close(m(x), exact)
    assert not torch.allclose(m(x), nn.RMSNorm(3, eps=1e-5)(x), rtol=1e-2)


# --- InstanceNorm -----------------------------------------------------------------------

def test_in_torch_defaults_no_affine_no_running_stats():
    for layer in (nn.InstanceNorm2d(6), nt.InstanceNorm2d(6)):
        assert layer.affine is False and layer.track_running_stats is False
        assert list(layer.state_dict()) == [] and list(layer.parameters()) == []
    x = torch.tensor(X4)
    # eval without tracked statistics still uses each instance's own: same as training
    m = nt.InstanceNorm2d(6).eval()
    torch.testing.assert_close(m(x), TF.instance_norm(x))
    # with BatchNorm's defaults the same input would normalize differently in eval
    tracked = nt.InstanceNorm2d(6, track_running_stats=True).eval()
    assert not torch.allclose(tracked(x), m(x))


def test_in_gluon_defaults_center_true_scale_false(mx):
    from normtext import mxnet as ntm
    for block in (mx.gluon.nn.InstanceNorm(in_channels=6), ntm.InstanceNorm(in_channels=6)):
        block.initialize()
        assert block.gamma.grad_req == "null" and block.beta.grad_req == "write"
        # gamma is fixed, not absent: a gamma set by hand still scales the output
        block.gamma.set_data(mx.nd.full((6,), 2.0))
        y = block(mx.nd.array(X4)).asnumpy()
        np.testing.assert_allclose(y.std(axis=(2, 3)), 2.0, rtol=1e-4)


def test_in_gluon_computes_sqrt_var_plus_eps_not_its_docstrings_formula(mx):
    from normtext import mxnet as ntm
    xd = X4.astype(np.float64)
    mean, var = xd.mean((2, 3), keepdims=True), xd.var((2, 3), keepdims=True)
    for block in (mx.gluon.nn.InstanceNorm(epsilon=0.5), ntm.InstanceNorm(epsilon=0.5)):
        block.initialize()
        y = block(mx.nd.array(X4)).asnumpy()
        np.testing.assert_allclose(y, (xd - mean) / np.sqrt(var + 0.5), **F32)
        assert not np.allclose(y, (xd - mean) / (np.sqrt(var) + 0.5), **F32)
    assert "\\sqrt{Var[data, \\bar{C}]} + \\epsilon" in mx.gluon.nn.InstanceNorm.__doc__


def test_in_running_var_averages_per_instance_unbiased_variances():
    x = torch.tensor(X4[:, :, :2, :3])                    # m = 6 per instance
    for f in (TF.instance_norm, nt.functional.instance_norm):
        rm, rv = torch.zeros(6), torch.ones(6)
        f(x, rm, rv, momentum=1.0)
        per_instance = x.reshape(2, 6, -1).var(2, unbiased=True).mean(0)
        pooled = x.transpose(0, 1).reshape(6, -1).var(1, unbiased=True)
        torch.testing.assert_close(rv, per_instance)
        assert not torch.allclose(rv, pooled, rtol=1e-2)  # what BatchNorm's statistic would be


def test_in_momentum_none_freezes_running_stats():
    x = torch.tensor(X4)
    for cls in (nn.InstanceNorm2d, nt.InstanceNorm2d):
        m = cls(6, track_running_stats=True, momentum=None)
        m(x)
        assert torch.all(m.running_mean == 0) and int(m.num_batches_tracked) == 0
    b = nn.BatchNorm2d(6, momentum=None)                  # BatchNorm: a cumulative average
    b(x)
    assert not torch.all(b.running_mean == 0)


# --- GroupNorm --------------------------------------------------------------------------

def test_gn_gamma_is_per_channel_in_torch_and_per_group_in_gluon(mx):
    from normtext import mxnet as ntm
    from normtext.mxnet.group_norm import per_channel
    g = mx.gluon.nn.GroupNorm(num_groups=3)
    g.initialize()
    gamma, beta = np.array([0.5, 1.0, 2.0]), np.array([-1.0, 0.0, 1.0])
    g(mx.nd.array(X4))
    g.gamma.set_data(mx.nd.array(gamma))
    g.beta.set_data(mx.nd.array(beta))
    assert g.gamma.shape == ntm.GroupNorm(3).gamma.shape == (3,)
    assert nn.GroupNorm(3, 6).weight.shape == (6,)
    y = g(mx.nd.array(X4)).asnumpy()
    want = TF.group_norm(torch.tensor(X4), 3, torch.tensor(per_channel(gamma, 6), dtype=torch.float32),
                         torch.tensor(per_channel(beta, 6), dtype=torch.float32))
    np.testing.assert_allclose(y, want.numpy(), **F32)
    with pytest.raises(RuntimeError, match="vector of size equal to the number of channels"):
        TF.group_norm(torch.tensor(X4), 3, torch.tensor(gamma, dtype=torch.float32))


def test_gn_indivisible_channels_fail_in_torch_init_in_gluon_forward(mx):
    with pytest.raises(ValueError, match="must be divisible"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="must be divisible"):
        nt.GroupNorm(4, 6)
    g = mx.gluon.nn.GroupNorm(num_groups=4)                # no channel count: nothing to check yet
    g.initialize()
    with pytest.raises(mx.base.MXNetError, match="divisible"):
        g(mx.nd.array(X4)).wait_to_read()


@pytest.mark.pinned_torch   # torch 2.14 prints the bias's own shape
def test_gn_torch_bias_error_prints_the_weights_shape():
    x = torch.tensor(X4)
    for f in (TF.group_norm, nt.functional.group_norm):
        with pytest.raises(RuntimeError, match=r"got bias of shape \[6\]"):
            f(x, 2, torch.ones(6), torch.ones(5))


# --- LocalResponseNorm ------------------------------------------------------------------

def _paper_lrn(a, n, alpha, beta, k):
    """AlexNet's formula, written out: sum over max(0, i-n/2)..min(N-1, i+n/2), alpha not / n."""
    out = np.empty_like(a)
    for i in range(a.shape[1]):
        lo, hi = max(0, i - n // 2), min(a.shape[1] - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return out


def test_lrn_paper_alpha_is_not_divided_by_n():
    a = X4.astype(np.float64)
    want = _paper_lrn(a, 5, 1e-2, 0.75, 2.0)
    p = convert_lrn(5, 1e-2, 0.75, 2.0, source="paper", target="torch")
    assert (p.size, p.alpha) == (5, 5e-2)
    got = TF.local_response_norm(torch.tensor(a), p.size, p.alpha, p.beta, p.k).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(ref.local_response_norm(a, 5, 1e-2, 0.75, 2.0, "paper").y, want,
                               rtol=1e-12)
    naive = TF.local_response_norm(torch.tensor(a), 5, 1e-2, 0.75, 2.0).numpy()
    assert not np.allclose(naive, want, rtol=1e-4)


def test_lrn_default_k_is_1_in_torch_and_2_in_mxnet(mx):
    x = mx.nd.array(X4)
    mx_default = mx.nd.LRN(x, nsize=5).asnumpy()
    np.testing.assert_allclose(
        TF.local_response_norm(torch.tensor(X4), 5, k=2.0).numpy(), mx_default, **F32)
    assert not np.allclose(TF.local_response_norm(torch.tensor(X4), 5).numpy(), mx_default, **F32)
    from normtext.mxnet import lrn
    np.testing.assert_allclose(lrn(x, nsize=5).asnumpy(), mx_default, **F32)


def test_lrn_even_size_windows_differ_and_convert(mx):
    assert window(4, "torch") == (2, 1) and window(4, "mxnet") == (1, 1)
    x = mx.nd.array(X4)
    want = mx.nd.LRN(x, nsize=4, alpha=0.4, knorm=1.0).asnumpy()
    p = convert_lrn(4, 0.4, 0.75, 1.0, source="mxnet", target="torch")
    assert p.size == 3 and p.alpha == pytest.approx(0.3)
    got = TF.local_response_norm(torch.tensor(X4), p.size, p.alpha, p.beta, p.k).numpy()
    np.testing.assert_allclose(got, want, **F32)
    naive = TF.local_response_norm(torch.tensor(X4), 4, 0.4, 0.75, 1.0).numpy()
    assert not np.allclose(naive, want, **F32)


def test_lrn_torch_even_size_has_no_mxnet_or_paper_equivalent():
    for target in ("mxnet", "paper"):
        with pytest.raises(ValueError, match="no .* size has that window"):
            convert_lrn(4, 1e-4, 0.75, 1.0, source="torch", target=target)
    with pytest.raises(ValueError, match="odd n"):
        window(4, "paper")


@pytest.mark.parametrize("source", ["paper", "torch", "mxnet"])
@pytest.mark.parametrize("target", ["paper", "torch", "mxnet"])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_lrn_conversion_round_trips_for_odd_sizes(source, target, size):
    a = X4.astype(np.float64)
    p = convert_lrn(size, 0.3, 0.75, 2.0, source=source, target=target)
    np.testing.assert_allclose(
        ref.local_response_norm(a, p.size, p.alpha, p.beta, p.k, target).y,
        ref.local_response_norm(a, size, 0.3, 0.75, 2.0, source).y, rtol=1e-13)
    back = convert_lrn(*p[:4], source=target, target=source)
    assert back.size == size and back.alpha == pytest.approx(0.3)


def test_lrn_torch_averages_integer_input_with_truncation():
    x = torch.tensor([[[1], [2], [2]]])                   # squares 1, 4, 4
    y = TF.local_response_norm(x, 2, alpha=1.0, beta=1.0, k=0.0)
    # channel 1 averages (1 + 4) / 2 = 2.5, truncated to 2: y = 2 / 2 = 1 (not 2 / 2.5)
    assert y[0, 1, 0].item() == 1.0
    assert nt.functional.local_response_norm(x, 2, alpha=1.0, beta=1.0, k=0.0)[0, 1, 0].item() == 1.0
    assert TF.local_response_norm(x.double(), 2, alpha=1.0, beta=1.0, k=0.0)[0, 1, 0].item() == 0.8


# --- SyncBatchNorm ------------------------------------------------------------------------

def test_syncbn_without_a_process_group_acts_as_batch_norm_on_cpu():
    x = torch.tensor(X4)
    sync, bn = nn.SyncBatchNorm(6), nn.BatchNorm2d(6)
    torch.testing.assert_close(sync(x), bn(x))                  # no error, no synchronization
    torch.testing.assert_close(sync.running_var, bn.running_var)
