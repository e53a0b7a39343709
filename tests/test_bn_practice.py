"""BatchNorm at inference and in practice: folding, frozen BN, precise BN, Batch Renorm, ghost BN.

Every comparison with a built-in is made here as in the chapter: folding against
the unfolded network and ``torch.nn.utils.fusion``, precise BN against
``torch.optim.swa_utils.update_bn``, the limits of Batch Renorm and ghost BN
against ``torch.nn.BatchNorm``. Tolerances: float32 results that differ only in
rounding are held to ``compare.tolerance("float32", m)`` relative to the
output's scale, m the length of the longest sum (a convolution's fan-in); the
float64 folded weights to a few units of float64 (one rounding each).
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from torch.optim.swa_utils import update_bn

from normtext.experiments import bn_practice as E
from normtext.testing import compare
from normtext.torch import practice as P


def randomized_bn(bn, seed=0, affine_random=True):
    """A BatchNorm in eval mode with random running statistics (and gamma, beta)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 3 + 0.1)
        if bn.affine and affine_random:
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return bn.eval()


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# --- folding ------------------------------------------------------------------------------

LAYERS = [
    (lambda bias: nn.Conv1d(3, 6, 3, bias=bias), nn.BatchNorm1d, (4, 3, 10), False),
    (lambda bias: nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d, (4, 3, 7, 7), False),
    (lambda bias: nn.Conv3d(3, 6, 3, bias=bias), nn.BatchNorm3d, (2, 3, 5, 5, 5), False),
    (lambda bias: nn.Conv2d(6, 6, 3, groups=6, bias=bias), nn.BatchNorm2d, (4, 6, 5, 5), False),
    (lambda bias: nn.Linear(12, 6, bias=bias), nn.BatchNorm1d, (5, 12), True),
]


@pytest.mark.parametrize("make_layer,make_bn,shape,linear", LAYERS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_equals_unfolded_and_torch_fusion(make_layer, make_bn, shape, linear, bias, affine):
    torch.manual_seed(0)
    layer = make_layer(bias).eval()
    bn = randomized_bn(make_bn(6, affine=affine))
    x = torch.randn(shape)
    folded = P.fold_batch_norm(layer, bn)
    want = bn(layer(x))
    fan_in = layer.weight[0].numel()
    tol = compare.tolerance("float32", fan_in)
    assert rel(folded(x), want) < tol
    if linear and not affine:   # torch's fuse_linear_bn_eval needs gamma (see below)
        return
    theirs = (fuse_linear_bn_eval if linear else fuse_conv_bn_eval)(layer, bn)
    assert rel(theirs(x), want) < tol
    # the weights agree with torch's to a few float32 roundings (ours: float64, rounded once)
    assert rel(folded.weight, theirs.weight) < 4 * np.finfo(np.float32).eps
    assert rel(folded.bias, theirs.bias) < 4 * np.finfo(np.float32).eps
    # in float64 the fold is exact up to float64 rounding
    layer64, bn64 = copy.deepcopy(layer).double(), copy.deepcopy(bn).double()
    x64 = x.double()
    assert rel(P.fold_batch_norm(layer64, bn64)(x64), bn64(layer64(x64))) < \
        compare.tolerance("float64", fan_in)
    assert folded is not layer and folded.weight is not layer.weight


@pytest.mark.pinned_torch
def test_torch_fuse_linear_needs_bn_affine():
    """torch 2.13's fuse_linear_bn_eval multiplies by bn.weight, None without affine; ours folds."""
    lin, bn = nn.Linear(4, 3).eval(), randomized_bn(nn.BatchNorm1d(3, affine=False))
    with pytest.raises(TypeError):
        fuse_linear_bn_eval(lin, bn)
    x = torch.randn(5, 4)
    assert rel(P.fold_batch_norm(lin, bn)(x), bn(lin(x))) < compare.tolerance("float32", 4)


@pytest.mark.pinned_torch
def test_fold_errors_match_torch():
    conv, bn = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)
    for ours, theirs in [(lambda: P.fold_batch_norm(conv, bn), lambda: fuse_conv_bn_eval(conv, bn))]:
        with pytest.raises(AssertionError, match="Fusion only for eval!"):
            theirs()
        with pytest.raises(AssertionError, match="Fusion only for eval!"):
            ours()
    untracked = nn.BatchNorm2d(4, track_running_stats=False).eval()
    conv.eval()
    with pytest.raises(AssertionError, match="must not be None"):
        fuse_conv_bn_eval(conv, untracked)
    with pytest.raises(AssertionError, match="must not be None"):
        P.fold_batch_norm(conv, untracked)
    lin, bn3 = nn.Linear(4, 5).eval(), nn.BatchNorm1d(3).eval()
    with pytest.raises(AssertionError, match="linear.out_features == bn.num_features"):
        fuse_linear_bn_eval(lin, bn3)
    with pytest.raises(AssertionError, match="linear.out_features == bn.num_features"):
        P.fold_batch_norm(lin, bn3)
    with pytest.raises(TypeError):
        P.fold_batch_norm(nn.ReLU().eval(), bn3)


def test_fold_linear_into_single_feature_bn():
    lin, bn = nn.Linear(4, 5).eval(), randomized_bn(nn.BatchNorm1d(1))
    x = torch.randn(3, 4)
    want = bn(lin(x).reshape(-1, 1)).reshape(3, 5)
    assert rel(P.fold_batch_norm(lin, bn)(x), want) < compare.tolerance("float32", 4)
    assert rel(fuse_linear_bn_eval(lin, bn)(x), want) < compare.tolerance("float32", 4)


def test_fold_sequential_folds_only_what_follows_a_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4)),
                        nn.Flatten(), nn.Linear(4 * 25, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            randomized_bn(m, seed=m.num_features)
    net.eval()
    folded = P.fold_sequential(net)
    x = torch.randn(3, 1, 5, 5)
    assert rel(folded(x), net(x)) < compare.tolerance("float32", 36)
    kinds = [type(m).__name__ for m in folded.modules()]
    assert kinds.count("BatchNorm2d") == 1 and "BatchNorm1d" not in kinds  # the one after a ReLU stays
    with pytest.raises(AssertionError, match="Fusion only for eval!"):
        P.fold_sequential(net.train())


def test_group_and_layer_norm_are_not_affine_at_inference():
    """BatchNorm in eval is an affine map of x (so it folds); GroupNorm and LayerNorm are not."""
    torch.manual_seed(0)
    x1, x2 = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    mix = lambda f: (f(0.3 * x1 + 0.7 * x2) - (0.3 * f(x1) + 0.7 * f(x2))).abs().max().item()
    bn = randomized_bn(nn.BatchNorm2d(4)).double()
    assert mix(bn) < 1e-12
    assert mix(nn.GroupNorm(2, 4).double()) > 0.1
    assert mix(nn.LayerNorm([4, 3, 3]).double()) > 0.1


# --- frozen BatchNorm ---------------------------------------------------------------------

def test_frozen_batch_norm_semantics():
    bn = randomized_bn(nn.BatchNorm2d(5))
    frozen = P.FrozenBatchNorm2d.from_batch_norm(bn)
    assert list(frozen.parameters()) == []
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert repr(frozen) == "FrozenBatchNorm2d(5, eps=1e-05)"
    x = torch.randn(4, 5, 3, 3, requires_grad=True)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen.train()   # training mode changes nothing: statistics and affine are fixed
    y = frozen(x)
    y.sum().backward()
    assert rel(y, bn(x)) < compare.tolerance("float32", 1)
    assert x.grad is not None
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a BatchNorm2d's state_dict loads (num_batches_tracked is dropped)
    fresh = P.FrozenBatchNorm2d(5)
    fresh.load_state_dict(bn.state_dict())
    assert torch.equal(fresh(x), frozen(x))


@pytest.mark.pinned_torch
def test_frozen_batch_norm_errors_like_batch_norm_2d():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(5)(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        P.FrozenBatchNorm2d(5)(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        P.FrozenBatchNorm2d.from_batch_norm(nn.BatchNorm2d(5, track_running_stats=False))


def test_freeze_batch_norm_replaces_every_bn2d():
    torch.manual_seed(0)
    net = E.cnn()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomized_bn(m, seed=m.num_features)
    net.eval()
    x = torch.randn(3, 1, 8, 8)
    want = net(x)
    frozen = P.freeze_batch_norm(copy.deepcopy(net)).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, P.FrozenBatchNorm2d) for m in frozen.modules()) == 3
    assert rel(frozen(x), want) < compare.tolerance("float32", 16 * 9)
    assert isinstance(P.freeze_batch_norm(nn.BatchNorm2d(3)), P.FrozenBatchNorm2d)
    frozen64 = P.FrozenBatchNorm2d.from_batch_norm(randomized_bn(nn.BatchNorm2d(3)).double())
    assert frozen64.running_var.dtype == torch.float64


# --- precise BN ---------------------------------------------------------------------------

def test_precise_batch_norm_equals_update_bn():
    torch.manual_seed(0)
    net = E.cnn()
    net.train()
    for _ in range(3):
        net(torch.randn(16, 1, 8, 8) * 2 + 1)
    batches = [torch.randn(8, 1, 8, 8) * 3 - 1 for _ in range(5)]
    ours, theirs = copy.deepcopy(net).eval(), copy.deepcopy(net).eval()
    P.precise_batch_norm(ours, batches)
    update_bn(batches, theirs)
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=compare.tolerance("float32", 5), atol=0, msg=k)
    assert not ours.training and not any(m.training for m in ours.modules())
    assert all(m.momentum == 0.1 for m in P.batch_norm_modules(ours))
    # the buffers are the average of each batch's statistics, as in update_bn
    with torch.no_grad():
        z = [ours[0](b) for b in batches]   # the first convolution's outputs, BN's inputs
    torch.testing.assert_close(ours[1].running_mean, torch.stack([t.mean((0, 2, 3)) for t in z]).mean(0))
    torch.testing.assert_close(ours[1].running_var, torch.stack([t.var((0, 2, 3)) for t in z]).mean(0))


def test_precise_batch_norm_leaves_dropout_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.BatchNorm1d(8))
    plain = nn.Sequential(copy.deepcopy(net[0]), nn.Identity(), copy.deepcopy(net[2]))
    batches = [torch.randn(10, 6) for _ in range(4)]
    P.precise_batch_norm(net.eval(), batches)
    update_bn(batches, plain)
    torch.testing.assert_close(net[2].running_var, plain[2].running_var)
    assert not net[1].training


# --- batch renormalization ----------------------------------------------------------------

def test_renorm_limits_schedule():
    assert P.renorm_limits(0) == (1.0, 0.0)
    assert P.renorm_limits(5000) == (1.0, 0.0)
    assert P.renorm_limits(25000)[1] == 5.0 and P.renorm_limits(40000)[0] == 3.0
    r, d = P.renorm_limits(22500)
    assert r == pytest.approx(1 + 2 * 17500 / 35000) and d == pytest.approx(5 * 17500 / 20000)
    assert P.renorm_limits(10 ** 6) == (3.0, 5.0)
    assert E.renorm_schedule(400) == dict(warmup=25, d_full=125, r_full=200)


@pytest.mark.parametrize("cls,ref,shape", [(P.BatchRenorm1d, nn.BatchNorm1d, (8, 5)),
                                           (P.BatchRenorm1d, nn.BatchNorm1d, (4, 5, 6)),
                                           (P.BatchRenorm2d, nn.BatchNorm2d, (4, 5, 3, 3))])
def test_batch_renorm_without_correction_is_batch_norm(cls, ref, shape):
    torch.manual_seed(0)
    ours, theirs = cls(5, r_max=1.0, d_max=0.0), ref(5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    m = shape[0] * int(np.prod(shape[2:]))
    for _ in range(3):
        x = (torch.randn(shape) * 2 + 1).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        dy = torch.randn(shape)
        a, b = ours(x), theirs(x2)
        a.backward(dy)
        b.backward(dy)
        tol = compare.tolerance("float32", m)
        assert rel(a, b) < tol and rel(x.grad, x2.grad) < tol
        assert rel(ours.weight.grad, theirs.weight.grad) < tol
        ours.weight.grad = theirs.weight.grad = None
        for k in ("running_mean", "running_var"):
            assert rel(getattr(ours, k), getattr(theirs, k)) < tol
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    assert rel(ours(x), theirs(x)) < compare.tolerance("float32", 1)


def test_batch_renorm_unclipped_trains_with_population_statistics():
    """With bounds wide enough, the training output is the evaluation output (before the update)."""
    torch.manual_seed(0)
    brn = P.BatchRenorm1d(4, r_max=1e6, d_max=1e6, warmup=0, r_full=1, d_full=1)
    with torch.no_grad():
        brn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        brn.running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 4.0]))
        brn.num_batches_tracked.fill_(5)
    x = torch.randn(6, 4) * 3
    want = copy.deepcopy(brn).eval()(x)
    got = brn(x)
    assert rel(got, want) < compare.tolerance("float32", 6)
    # r and d are constants for the gradient: dL/dx is that of (x - mu_B)/sigma_B * r + d
    x = x.clone().requires_grad_()
    brn2 = P.BatchRenorm1d(4, r_max=1e6, d_max=1e6, warmup=0, r_full=1, d_full=1)
    with torch.no_grad():   # the statistics brn had before its update
        brn2.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        brn2.running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 4.0]))
        brn2.num_batches_tracked.fill_(5)
    dy = torch.randn(6, 4)
    brn2(x).backward(dy)
    xd = x.detach().clone().requires_grad_()
    var, mean = torch.var_mean(xd, 0, correction=0)
    std = torch.sqrt(var + 1e-5)
    run_std = torch.sqrt(brn.running_var.new_tensor([2.0, 0.5, 1.0, 4.0]) + 1e-5)  # before the update
    r = (std / run_std).detach()
    d = ((mean - torch.tensor([0.5, -1.0, 2.0, 0.0])) / run_std).detach()
    ((xd - mean) / std * r + d).backward(dy)
    assert rel(x.grad, xd.grad) < compare.tolerance("float32", 6)


@pytest.mark.pinned_torch
def test_batch_renorm_errors_match_batch_norm():
    for ours, theirs, x in [(P.BatchRenorm1d(3), nn.BatchNorm1d(3), torch.randn(1, 3)),
                            (P.BatchRenorm2d(3), nn.BatchNorm2d(3), torch.randn(2, 3, 4))]:
        with pytest.raises(ValueError) as want:
            theirs(x)
        with pytest.raises(ValueError) as got:
            ours(x)
        assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match="r_max >= 1"):
        P.BatchRenorm1d(3, r_max=0.5)


# --- ghost batch normalization ------------------------------------------------------------

@pytest.mark.parametrize("n", [12, 10])
def test_ghost_batch_norm_is_batch_norm_per_slice(n):
    torch.manual_seed(0)
    ghost = P.GhostBatchNorm2d(3, virtual_batch_size=4)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 1.5)
        ghost.bias.normal_()
    x = torch.randn(n, 3, 4, 4) * 2 + 1
    want = torch.cat([TF.batch_norm(c, None, None, ghost.weight, ghost.bias, True)
                      for c in x.split(4)])
    assert rel(ghost(x), want) < compare.tolerance("float32", 64)
    m = [len(c) * 16 for c in x.split(4)]
    means = torch.stack([c.mean((0, 2, 3)) for c in x.split(4)]).mean(0)
    variances = torch.stack([c.var((0, 2, 3)) for c in x.split(4)]).mean(0)   # unbiased
    assert rel(ghost.running_mean, 0.1 * means) < compare.tolerance("float32", max(m))
    assert rel(ghost.running_var, 0.9 + 0.1 * variances) < compare.tolerance("float32", max(m))
    ghost.eval()
    bn = nn.BatchNorm2d(3).eval()
    bn.load_state_dict(ghost.state_dict())
    assert rel(ghost(x), bn(x)) < compare.tolerance("float32", 1)


def test_one_ghost_batch_is_batch_norm():
    torch.manual_seed(0)
    ghost, bn = P.GhostBatchNorm1d(5, virtual_batch_size=64), nn.BatchNorm1d(5)
    x = torch.randn(20, 5) * 3
    assert rel(ghost(x), bn(x)) < compare.tolerance("float32", 20)
    assert rel(ghost.running_var, bn.running_var) < compare.tolerance("float32", 20)
    assert list(ghost.state_dict()) == list(bn.state_dict())


@pytest.mark.pinned_torch
def test_ghost_batch_of_one_is_refused_as_by_batch_norm():
    with pytest.raises(ValueError) as want:
        nn.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError) as got:
        P.GhostBatchNorm1d(3, virtual_batch_size=4)(torch.randn(9, 3))   # 4 + 4 + 1
    assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match="virtual_batch_size"):
        P.GhostBatchNorm1d(3, virtual_batch_size=0)


# --- the chapter's helpers ----------------------------------------------------------------

def test_train_mode_accuracy_leaves_the_model_alone():
    torch.manual_seed(0)
    net = E.mlp(nn.BatchNorm1d, width=8)
    X, y = torch.randn(9, 1, 8, 8), torch.randint(0, 10, (9,))
    before = copy.deepcopy(net.state_dict())
    E.train_mode_accuracy(net, X, y, batch_size=2)   # 2+2+2+2+1: the one merges, no error
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    state = E.state_to_lists(net)
    assert torch.equal(E.state_from_lists(E.mlp(nn.BatchNorm1d, width=8), state)[1].weight,
                       net[1].weight)


def test_gluon_global_stats_equals_frozen_batch_norm():
    """Gluon's BatchNorm(use_global_stats=True) in training computes FrozenBatchNorm2d's map."""
    mx = pytest.importorskip("mxnet")
    from mxnet import autograd, gluon
    gbn = gluon.nn.BatchNorm(in_channels=4, use_global_stats=True)
    gbn.initialize()
    rng = np.random.default_rng(0)
    values = {k: rng.uniform(0.5, 2.0, 4).astype(np.float32)
              for k in ("gamma", "beta", "running_mean", "running_var")}
    for k, v in values.items():
        getattr(gbn, k).set_data(mx.nd.array(v))
    x = rng.normal(1, 2, (3, 4, 5, 5)).astype(np.float32)
    with autograd.record(train_mode=True):
        y = gbn(mx.nd.array(x)).asnumpy()
    frozen = P.FrozenBatchNorm2d(4)
    for ours, theirs in [("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                         ("running_var", "running_var")]:
        getattr(frozen, ours).copy_(torch.tensor(values[theirs]))
    got = frozen(torch.tensor(x)).numpy()
    assert np.abs(got - y).max() / np.abs(y).max() < compare.tolerance("float32", 1)
