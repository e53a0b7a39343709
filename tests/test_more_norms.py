"""More normalizations (book/more-norms): CrossNorm, AdaIN, batch whitening, conditional
BatchNorm, learned AdaIN, weight normalization, weight standardization, gradient clipping
and per-layer gradient normalization.

Each method is tested by its defining property or by parity with a built-in, with
tolerances from normtext.testing.compare.tolerance (16 * eps(dtype) * sqrt(m), m the number of
terms in the largest reduction), plus bad-input tests comparing exception types with
PyTorch's where PyTorch has the same check.
"""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from normtext.testing import compare
from normtext import errors
from normtext.testing.compare_more import compare_clip_grad_norm, compare_weight_norm
from normtext.numpy import whitening as W
from normtext.torch import more as M

EPS64 = float(np.finfo(np.float64).eps)


def rel_err(got, want):
    got = np.asarray(got.detach().double() if isinstance(got, torch.Tensor) else got, np.float64)
    want = np.asarray(want.detach().double() if isinstance(want, torch.Tensor) else want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


def stats(x):
    """Per sample and channel mean and biased variance over the spatial axes, float64."""
    x = x.double()
    axes = tuple(range(2, x.dim()))
    return x.mean(axes), x.var(axes, unbiased=False)


# --- CrossNorm and AdaIN ----------------------------------------------------------------

@pytest.mark.parametrize("perm", [None, [1, 2, 0, 3], [3, 2, 1, 0]])
def test_cross_norm_output_has_the_other_instances_statistics(perm):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 5, dtype=torch.float64) * torch.rand(4, 3, 1, 1) * 3 \
        + torch.randn(4, 3, 1, 1) * 5
    eps = 1e-5
    y = M.cross_norm(x, perm, eps)
    pi = list(range(3, -1, -1)) if perm is None else perm
    mean_x, var_x = stats(x)
    mean_y, var_y = stats(y)
    m = 6 * 5
    tol = compare.tolerance("float64", m)
    # mean(y_i) = mu_pi(i);  var(y_i) = (var_pi(i) + eps) var_i / (var_i + eps)
    assert rel_err(mean_y, mean_x[pi]) <= tol
    assert rel_err(var_y, (var_x[pi] + eps) * var_x / (var_x + eps)) <= tol
    # the content is kept: the instance-normalized maps are those of x
    y0 = M.cross_norm(x, perm, eps=0.0)
    torch.testing.assert_close(TF.instance_norm(y0, eps=0.0), TF.instance_norm(x, eps=0.0),
                               rtol=0, atol=tol * 10)


def test_cross_norm_swaps_a_pair_and_is_an_involution_up_to_eps():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 2 + 1
    y = M.cross_norm(x, eps=0.0)
    torch.testing.assert_close(M.cross_norm(y, eps=0.0), x, rtol=0,
                               atol=compare.tolerance("float64", 64) * 10)


def test_adain_matches_torch_instance_norm_recovered_with_style_statistics():
    torch.manual_seed(2)
    content = torch.randn(3, 4, 7, 7)
    style = torch.randn(3, 4, 5, 9) * 2 + 3
    eps = 1e-5
    mean_s, var_s = stats(style)
    want = TF.instance_norm(content.double(), eps=eps) * torch.sqrt(var_s + eps)[..., None, None] \
        + mean_s[..., None, None]
    assert rel_err(M.adain(content, style, eps), want) <= compare.tolerance("float32", 49)


def test_cross_norm_module_identity_in_eval_and_exchange_in_training():
    torch.manual_seed(3)
    x = torch.randn(5, 3, 4, 4) * torch.rand(5, 3, 1, 1) + torch.randn(5, 3, 1, 1)
    layer = M.CrossNorm(p=1.0).eval()
    assert torch.equal(layer(x), x)
    layer.train()
    y = layer(x)
    mean_x, _ = stats(x)
    mean_y, _ = stats(y)
    # every output mean row is one of the input rows (a permutation of the batch)
    for i in range(5):
        assert min(rel_err(mean_y[i], mean_x[j]) for j in range(5)) <= compare.tolerance("float32", 16)
    assert torch.equal(M.CrossNorm(p=0.0).train()(x), x)


def test_cross_norm_bad_input():
    with pytest.raises(ValueError):                       # no spatial axes
        M.cross_norm(torch.randn(4, 3))
    # a single spatial element: the same exception type as torch's instance_norm
    x = torch.randn(2, 3, 1)
    with pytest.raises(ValueError) as theirs:
        TF.instance_norm(x, use_input_stats=True)
    with pytest.raises(type(theirs.value), match="more than 1 spatial element"):
        M.cross_norm(x)
    with pytest.raises(ValueError, match="permutation"):
        M.cross_norm(torch.randn(3, 2, 4, 4), [0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        M.cross_norm(torch.randn(3, 2, 4, 4), [0, 1])
    with pytest.raises(ValueError, match="batch size and channels"):
        M.adain(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="probability"):
        M.CrossNorm(p=1.5)
    with pytest.raises(NotImplementedError):
        M.adain(torch.ones(2, 3, 4, 4, dtype=torch.long), torch.ones(2, 3, 4, 4, dtype=torch.long))


# --- batch whitening --------------------------------------------------------------------

def correlated(m, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(m, d, generator=g, dtype=torch.float64) @ mix + 3.0
    return x.to(dtype)


def identity_tolerance(x64, dtype, eps):
    """How far cov(y) may be from I: the eps bias plus rounding amplified by cond(Sigma).

    cov(y) = U Lambda (Lambda + eps)^-1 U^T deviates from I by eps / (lambda_min + eps)
    in exact arithmetic. The eigendecomposition is backward stable: it is exact for
    Sigma + E with |E| ~ u |Sigma|, which moves cov(y) by |W E W^T| ~ u cond(Sigma); the
    products over m samples and d features add u sqrt(m) d. The harness's rule
    16 u sqrt(m) carries the constant; times d * cond covers both.
    """
    _, cov = W.covariance(np.asarray(x64, np.float64))
    lam = np.linalg.eigvalsh(cov)
    d, m = cov.shape[0], x64.shape[0]
    return eps / (lam[0] + eps) + compare.tolerance(dtype, m) * d * lam[-1] / lam[0]


def max_dev_from_identity(y):
    y = np.asarray(y, np.float64)
    yc = y - y.mean(axis=0)
    cov = yc.T @ yc / y.shape[0]
    return float(np.abs(cov - np.eye(cov.shape[0])).max())


@pytest.mark.parametrize("method", ["zca", "pca"])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_numpy_whitening_gives_identity_covariance(method, eps):
    x = correlated(400, 12).numpy()
    r = W.whiten(x, method, eps)
    assert max_dev_from_identity(r.y) <= identity_tolerance(x, "float64", eps)
    assert np.abs(r.y.mean(axis=0)).max() <= compare.tolerance("float64", 400) * np.abs(x).max()


def test_standardizing_alone_does_not_pass_the_identity_check():
    """The check can fail: BatchNorm's per-feature standardization leaves correlations."""
    x = correlated(400, 12).numpy()
    z = (x - x.mean(0)) / x.std(0)
    assert max_dev_from_identity(z) > 100 * identity_tolerance(x, "float64", 0.0)


def test_zca_is_symmetric_and_pca_rows_are_orthogonal():
    x = correlated(300, 6).numpy()
    _, cov = W.covariance(x)
    zca, pca = W.whitening_matrix(cov, "zca", 0.0), W.whitening_matrix(cov, "pca", 0.0)
    tol = compare.tolerance("float64", 300) * np.linalg.cond(cov)
    assert rel_err(zca, zca.T) <= tol
    # W_PCA W_PCA^T = Lambda^-1: diagonal
    g = pca @ pca.T
    assert np.abs(g - np.diag(np.diag(g))).max() <= tol * np.abs(g).max()
    # both whiten: W Sigma W^T = I; ZCA is the PCA output rotated back by U
    for w in (zca, pca):
        assert np.abs(w @ cov @ w.T - np.eye(6)).max() <= tol


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["zca", "pca"])
def test_torch_whitening_matches_reference_and_whitens(dtype, method):
    x64 = correlated(256, 8, seed=1)
    x = x64.to(getattr(torch, dtype))
    y = M.batch_whitening(x, training=True, method=method, eps=0.0)
    want = W.whiten(x.double().numpy(), method, 0.0).y
    tol = identity_tolerance(x64.numpy(), dtype, 0.0)
    assert rel_err(y, want) <= tol
    assert max_dev_from_identity(y.double().numpy()) <= tol


@pytest.mark.parametrize("iterations", [5, 10, 40])
def test_newton_schulz_reaches_the_predicted_residual(iterations):
    """After T steps cov(y)'s eigenvalues are lambda p_T(lambda)^2 (scalar recurrence)."""
    x = correlated(256, 8, seed=2)
    _, cov = W.covariance(x.numpy())
    predicted = W.newton_schulz_residual(np.linalg.eigvalsh(cov), iterations)
    y = M.batch_whitening(x, training=True, iterations=iterations, eps=0.0)
    dev = max_dev_from_identity(y.numpy())
    tol = identity_tolerance(x.numpy(), "float64", 0.0)
    assert dev <= predicted + tol                 # |entries| <= spectral norm
    ref = W.whiten(x.numpy(), "zca", 0.0, iterations).y
    assert rel_err(y, ref) <= tol
    if iterations == 40:                          # converged: the eigendecomposition's ZCA
        assert predicted <= tol
        assert rel_err(y, W.whiten(x.numpy(), "zca", 0.0).y) <= tol


def test_uncoupled_newton_schulz_diverges_where_coupled_converges():
    """IterNorm's one-matrix form is unstable in floating point (why the coupled form is used)."""
    x = correlated(512, 8, seed=0).numpy()
    _, cov = W.covariance(x)
    with np.errstate(over="ignore", invalid="ignore"):
        unstable = W.newton_schulz_inverse_sqrt(cov, 40, coupled=False)
    stable = W.newton_schulz_inverse_sqrt(cov, 40, coupled=True)
    assert not np.isfinite(unstable).all() or np.abs(unstable @ cov @ unstable - np.eye(8)).max() > 1
    assert np.abs(stable @ cov @ stable - np.eye(8)).max() <= identity_tolerance(x, "float64", 0.0)


def test_whitening_4d_reshapes_channels_to_columns():
    torch.manual_seed(4)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    x = x + 0.8 * x[:, :1]                      # correlate every channel with channel 0
    y = M.batch_whitening(x, training=True, eps=0.0)
    rows = y.movedim(1, -1).reshape(-1, 3)
    assert max_dev_from_identity(rows.numpy()) <= identity_tolerance(
        x.movedim(1, -1).reshape(-1, 3).numpy(), "float64", 0.0)


def test_whitening_layer_running_statistics_and_eval():
    x = correlated(200, 5, seed=3)
    layer = M.BatchWhitening(5, momentum=1.0, eps=0.0).double()
    layer.train()(x)
    torch.testing.assert_close(layer.running_mean, x.mean(0))
    torch.testing.assert_close(layer.running_cov, torch.cov(x.T))   # unbiased, like BN's var
    with torch.no_grad():
        y = layer.eval()(x)
    # whitened with the unbiased covariance: cov(y) = (m - 1) / m I
    yc = y - y.mean(0)
    cov_y = (yc.T @ yc / 200).numpy()
    assert np.abs(cov_y - 199 / 200 * np.eye(5)).max() <= identity_tolerance(x.numpy(), "float64", 0.0)


@pytest.mark.parametrize("iterations", [None, 8])
def test_whitening_gradcheck(iterations):
    x = correlated(12, 3, seed=5).requires_grad_(True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(3, dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: M.batch_whitening(x, None, None, w, b, training=True, eps=1e-3,
                                          iterations=iterations)
    assert torch.autograd.gradcheck(f, (x, w, b))


def test_whitening_bad_input():
    with pytest.raises(ValueError, match="more samples than features"):
        M.batch_whitening(torch.randn(4, 4), training=True)
    with pytest.raises(ValueError, match="more samples than features"):
        M.batch_whitening(torch.randn(1, 8, 2, 2), training=True)     # 4 rows, 8 features
    with pytest.raises(ValueError, match="method"):
        M.batch_whitening(torch.randn(20, 4), training=True, method="cholesky")
    with pytest.raises(ValueError, match="zca"):
        M.batch_whitening(torch.randn(20, 4), training=True, method="pca", iterations=3)
    with pytest.raises(ValueError, match="iterations"):
        M.batch_whitening(torch.randn(20, 4), training=True, iterations=0)
    with pytest.raises(ValueError, match="2D|1D"):
        M.batch_whitening(torch.randn(20), training=True)
    with pytest.raises(RuntimeError, match="evaluation mode"):
        M.batch_whitening(torch.randn(20, 4), training=False)
    with pytest.raises(RuntimeError, match="running_cov"):
        M.batch_whitening(torch.randn(20, 4), torch.zeros(4), torch.eye(3), training=True)
    with pytest.raises(ValueError):
        W.whiten(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="eps"):
        M.batch_whitening(torch.randn(20, 4), training=True, eps=-1.0)


# --- the recover step from a condition ----------------------------------------------------

def test_conditional_batch_norm_picks_gamma_beta_by_class():
    torch.manual_seed(6)
    cbn = M.ConditionalBatchNorm2d(4, num_classes=3).double()
    with torch.no_grad():
        cbn.gamma.weight.copy_(torch.rand(3, 4) + 0.5)
        cbn.beta.weight.copy_(torch.randn(3, 4))
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    c = torch.tensor([2, 0, 1, 1, 0, 2])
    bn = nn.BatchNorm2d(4, affine=False).double()
    y, x_hat = cbn(x, c), bn(x)
    want = cbn.gamma.weight[c][:, :, None, None] * x_hat + cbn.beta.weight[c][:, :, None, None]
    assert rel_err(y, want) <= compare.tolerance("float64", 6 * 25)
    # the normalize step and its running statistics are BatchNorm's
    torch.testing.assert_close(cbn.running_mean, bn.running_mean)
    torch.testing.assert_close(cbn.running_var, bn.running_var)
    # the same normalized sample under another class gets that class's gamma, beta
    y_other = cbn(x, torch.tensor([0, 0, 1, 1, 0, 2]))
    bn(x)                                   # the same second update of the running statistics
    assert not torch.allclose(y_other[0], y[0])
    torch.testing.assert_close(y_other[1:], y[1:])
    # eval mode: running statistics, still per-class recovery
    cbn.eval(); bn.eval()
    want = cbn.gamma.weight[c][:, :, None, None] * bn(x) + cbn.beta.weight[c][:, :, None, None]
    assert rel_err(cbn(x, c), want) <= compare.tolerance("float64", 6 * 25)


def test_learned_adain_output_statistics_are_the_predicted_gamma_beta():
    torch.manual_seed(7)
    layer = M.AdaptiveInstanceNorm2d(4, condition_features=5, hidden=16).double()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64) * 2 + 1
    z = torch.randn(3, 5, dtype=torch.float64)
    y = layer(x, z)
    params = layer.net(z)
    gamma, beta = 1 + params[:, :4], params[:, 4:]
    mean_y, var_y = stats(y)
    _, var_x = stats(x)
    tol = compare.tolerance("float64", 36)
    assert rel_err(mean_y, beta) <= tol
    assert rel_err(var_y, gamma ** 2 * var_x / (var_x + layer.eps)) <= tol
    y.sum().backward()
    assert all(p.grad is not None for p in layer.net.parameters())


def test_learned_adain_with_zero_network_is_instance_norm():
    layer = M.AdaptiveInstanceNorm2d(3, condition_features=2)
    nn.init.zeros_(layer.net.weight); nn.init.zeros_(layer.net.bias)
    x = torch.randn(2, 3, 5, 5)
    assert rel_err(layer(x, torch.randn(2, 2)), TF.instance_norm(x)) <= compare.tolerance("float32", 25)


def test_conditional_norms_bad_input():
    cbn = M.ConditionalBatchNorm2d(4, num_classes=3)
    x = torch.randn(2, 4, 3, 3)
    # a class outside the table: the same exception as nn.Embedding
    with pytest.raises(IndexError) as theirs:
        nn.Embedding(3, 4)(torch.tensor([3]))
    with pytest.raises(type(theirs.value)):
        cbn(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="conditions for a batch"):
        cbn(x, torch.tensor([0, 1, 2]))
    # wrong rank: the same exception type as nn.BatchNorm2d
    with pytest.raises(ValueError) as theirs:
        nn.BatchNorm2d(4)(torch.randn(2, 4, 3))
    with pytest.raises(type(theirs.value), match="expected 4D input"):
        cbn(torch.randn(2, 4, 3), torch.tensor([0, 1]))
    ada = M.AdaptiveInstanceNorm2d(4, 5)
    with pytest.raises(ValueError, match="conditions for a batch"):
        ada(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="spatial element"):
        ada(torch.randn(2, 4, 1, 1), torch.randn(2, 5))


# --- weight normalization and weight standardization ------------------------------------------

WN_CASES = [(lambda: nn.Linear(20, 7), (5, 20), 0), (lambda: nn.Linear(20, 7), (5, 20), 1),
            (lambda: nn.Linear(20, 7), (5, 20), None), (lambda: nn.Linear(20, 7), (5, 20), -1),
            (lambda: nn.Conv2d(3, 6, 3), (2, 3, 8, 8), 0),
            (lambda: nn.Conv2d(3, 6, 3), (2, 3, 8, 8), -3)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make,shape,dim", WN_CASES)
def test_weight_norm_parity_with_torch_forward_and_gradients(make, shape, dim, dtype):
    compare_weight_norm(make, shape, dim, dtype=dtype)     # raises on a tolerance exceeded


def test_weight_norm_state_dicts_interchange_and_g_is_the_norm():
    from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm
    torch.manual_seed(8)
    ours, theirs = M.weight_norm(nn.Conv2d(3, 5, 3)), torch_weight_norm(nn.Conv2d(3, 5, 3))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(ours(x), theirs(x))
    with torch.no_grad():
        ours.parametrizations.weight.original0.mul_(3.0)
    # ||w_o|| = g_o: the length lives in g, the direction in v
    norms = torch.linalg.vector_norm(ours.weight, dim=(1, 2, 3))
    torch.testing.assert_close(norms, ours.parametrizations.weight.original0.reshape(-1))


def test_weight_norm_bad_input():
    from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm
    for kwargs in ({"name": "foo"}, {"dim": 2}, {"dim": -3}):
        with pytest.raises(Exception) as theirs:
            torch_weight_norm(nn.Linear(3, 4), **kwargs)
        with pytest.raises(type(theirs.value)) as ours:
            M.weight_norm(nn.Linear(3, 4), **kwargs)
        assert str(ours.value) == str(theirs.value)


def test_weight_standardization_zero_mean_unit_variance_per_output_channel():
    torch.manual_seed(9)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 5 + 2
    eps = 1e-5
    w_hat = M.standardize_weight(w, eps)
    mean = w_hat.mean(dim=(1, 2, 3))
    var = w_hat.var(dim=(1, 2, 3), unbiased=False)
    var_w = w.var(dim=(1, 2, 3), unbiased=False)
    tol = compare.tolerance("float64", 36)
    assert mean.abs().max() <= tol
    assert rel_err(var, var_w / (var_w + eps)) <= tol        # = 1 - eps / (var + eps)
    assert (var - 1).abs().max() <= eps / var_w.min() + tol


def test_ws_conv_is_invariant_to_scaling_and_shifting_each_filter():
    torch.manual_seed(10)
    conv = M.WSConv2d(3, 4, 3, ws_eps=0.0).double()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    y = conv(x)
    want = TF.conv2d(x, M.standardize_weight(conv.weight, 0.0), conv.bias)
    torch.testing.assert_close(y, want)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(4, 1, 1, 1, dtype=torch.float64) * 10 + 0.1).add_(
            torch.randn(4, 1, 1, 1, dtype=torch.float64))
    assert rel_err(conv(x), y) <= compare.tolerance("float64", 27) * 10
    # a plain convolution with the same weights is not invariant (the test can fail)
    plain = TF.conv2d(x, conv.weight, conv.bias)
    assert rel_err(plain, y) > 1e-3


def test_weight_standardization_bad_input():
    with pytest.raises(ValueError, match="more than 1 weight"):
        M.WSConv2d(1, 4, 1)
    with pytest.raises(ValueError, match="more than 1 weight"):
        M.standardize_weight(torch.randn(4))


# --- gradient clipping and normalization --------------------------------------------------

@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])                # clipped, and left alone
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_grad_norm_parity_with_torch(norm_type, max_norm, dtype):
    compare_clip_grad_norm(max_norm=max_norm, norm_type=norm_type, dtype=dtype)


def test_clip_grad_norm_result_has_max_norm_and_keeps_direction():
    torch.manual_seed(12)
    ps = [torch.zeros(5, requires_grad=True), torch.zeros(3, 2, requires_grad=True)]
    for p in ps:
        p.grad = torch.randn_like(p, dtype=torch.float64).float() * 10
    before = torch.cat([p.grad.reshape(-1) for p in ps])
    total = M.clip_grad_norm_(ps, 1.0)
    after = torch.cat([p.grad.reshape(-1) for p in ps])
    torch.testing.assert_close(torch.linalg.vector_norm(after), torch.tensor(1.0),
                               rtol=compare.tolerance("float32", 11) + 1e-6 / float(total), atol=0)
    torch.testing.assert_close(after / after.norm(), before / before.norm())


def test_clip_grad_norm_with_mxnet_clip_global_norm():
    mx = pytest.importorskip("mxnet")
    rng = np.random.default_rng(13)
    grads = [rng.normal(0, 1, s).astype(np.float32) for s in ((20, 10), (10,), (3, 20))]
    arrays = [mx.nd.array(g) for g in grads]
    total_mx = mx.gluon.utils.clip_global_norm(arrays, 1.0)
    ps = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = torch.tensor(g)
    total = float(M.clip_grad_norm_(ps, 1.0))
    # MXNet divides by (norm + 1e-8), PyTorch by (norm + 1e-6): a relative difference of
    # about 1e-6 / norm on top of float32 rounding
    tol = compare.tolerance("float32", 430) + 1e-6 / total
    assert abs(total - total_mx) / total <= tol
    for p, a in zip(ps, arrays):
        assert rel_err(p.grad, a.asnumpy()) <= tol


def test_normalize_grad_gives_each_layer_a_unit_gradient():
    torch.manual_seed(14)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    net(torch.randn(4, 6)).pow(2).sum().backward()
    before = [p.grad.clone() for p in net.parameters()]
    norms = M.normalize_grad_(net.parameters())
    for b, p, n in zip(before, net.parameters(), norms):
        torch.testing.assert_close(n, torch.linalg.vector_norm(b))
        torch.testing.assert_close(torch.linalg.vector_norm(p.grad), torch.tensor(1.0),
                                   rtol=compare.tolerance("float32", p.numel()) + 1e-8 / float(n),
                                   atol=0)
        torch.testing.assert_close(p.grad / p.grad.norm(), b / b.norm())


def test_gradient_normalization_bad_input():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(type(theirs.value)) as ours:
        M.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)
    p.grad = torch.ones(3)
    torch.nn.utils.clip_grad_norm_([p], -1.0)                # PyTorch accepts it silently...
    assert (p.grad < 0).all()                                 # ...and flips the gradient
    with pytest.raises(ValueError, match="max_norm must be non-negative"):
        M.clip_grad_norm_([p], -1.0)                          # normtext refuses
    with pytest.raises(ValueError, match="eps"):
        M.normalize_grad_([p], eps=0.0)
    assert float(M.clip_grad_norm_([], 1.0)) == 0.0           # no gradients: norm 0, as torch
    assert float(torch.nn.utils.clip_grad_norm_([], 1.0)) == 0.0


# --- gradients through the from-scratch code (autograd, checked numerically) --------------

def test_gradcheck_cross_norm_adain_weight_standardization_weight_norm():
    torch.manual_seed(15)
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: M.cross_norm(x, [2, 0, 1]), (x,))
    assert torch.autograd.gradcheck(M.adain, (x, s))
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(M.standardize_weight, (w,))
    g = torch.rand(4, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(M.WeightNorm(0), (g, w))
