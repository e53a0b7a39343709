"""Empty inputs behave as PyTorch's: every norm, every floor where the framework allows it.

Measured on torch 2.13.0 (CPU), an empty batch (``N = 0``, or a spatial axis of
size 0) in training mode

* gives an empty output and an empty input gradient,
* gives parameter gradients of zeros (not ``None``: the parameters took part),
* leaves ``running_mean`` and ``running_var`` as they were and still counts the
  batch in ``num_batches_tracked`` (BatchNorm, SyncBatchNorm).

Three corners where PyTorch itself misbehaves are pinned as PyTorch does them,
beside what normtext does instead (book/conventions.md, "Empty batches"):
InstanceNorm with running statistics writes NaN into them on ``N = 0``;
InstanceNorm with ``affine=True`` raises ``IndexError`` on ``N = 0``; GroupNorm's
weight gradient is NaN when the spatial axes are empty. normtext keeps the
estimates and gives zeros, as BatchNorm does.

MXNet 1.9.1's NDArray cannot hold an empty batch at all (a 0 in a shape means
"unknown"), so the Gluon blocks have no empty case to mirror.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from normtext import numpy as ref
from normtext import torch as nt

# (name, torch.nn layer, normtext layer, input shape, training)
EMPTY = [
    ("BatchNorm1d N=0", lambda: nn.BatchNorm1d(3), lambda: nt.BatchNorm1d(3), (0, 3), True),
    ("BatchNorm1d N=0 L", lambda: nn.BatchNorm1d(3), lambda: nt.BatchNorm1d(3), (0, 3, 4), True),
    ("BatchNorm1d L=0", lambda: nn.BatchNorm1d(3), lambda: nt.BatchNorm1d(3), (2, 3, 0), True),
    ("BatchNorm2d N=0", lambda: nn.BatchNorm2d(3), lambda: nt.BatchNorm2d(3), (0, 3, 4, 4), True),
    ("BatchNorm2d H=0", lambda: nn.BatchNorm2d(3), lambda: nt.BatchNorm2d(3), (2, 3, 0, 4), True),
    ("BatchNorm3d N=0", lambda: nn.BatchNorm3d(3), lambda: nt.BatchNorm3d(3), (0, 3, 2, 2, 2), True),
    ("BatchNorm2d momentum None", lambda: nn.BatchNorm2d(3, momentum=None),
     lambda: nt.BatchNorm2d(3, momentum=None), (0, 3, 4, 4), True),
    ("BatchNorm2d no affine", lambda: nn.BatchNorm2d(3, affine=False),
     lambda: nt.BatchNorm2d(3, affine=False), (0, 3, 4, 4), True),
    ("BatchNorm2d no running stats", lambda: nn.BatchNorm2d(3, track_running_stats=False),
     lambda: nt.BatchNorm2d(3, track_running_stats=False), (0, 3, 4, 4), True),
    ("BatchNorm2d eval", lambda: nn.BatchNorm2d(3), lambda: nt.BatchNorm2d(3), (0, 3, 4, 4), False),
    ("SyncBatchNorm N=0", lambda: nn.SyncBatchNorm(3), lambda: nt.SyncBatchNorm(3), (0, 3, 4, 4), True),
    ("SyncBatchNorm NC", lambda: nn.SyncBatchNorm(3), lambda: nt.SyncBatchNorm(3), (0, 3), True),
    ("InstanceNorm2d N=0", lambda: nn.InstanceNorm2d(3), lambda: nt.InstanceNorm2d(3), (0, 3, 4, 4), True),
    ("InstanceNorm2d H=0 affine", lambda: nn.InstanceNorm2d(3, affine=True),
     lambda: nt.InstanceNorm2d(3, affine=True), (2, 3, 0, 4), True),
    ("InstanceNorm2d H=0 running stats", lambda: nn.InstanceNorm2d(3, track_running_stats=True),
     lambda: nt.InstanceNorm2d(3, track_running_stats=True), (2, 3, 0, 4), True),
    ("InstanceNorm2d N=0 eval", lambda: nn.InstanceNorm2d(3, track_running_stats=True),
     lambda: nt.InstanceNorm2d(3, track_running_stats=True), (0, 3, 4, 4), False),
    ("InstanceNorm1d unbatched L=0", lambda: nn.InstanceNorm1d(3, affine=True),
     lambda: nt.InstanceNorm1d(3, affine=True), (3, 0), True),
    ("InstanceNorm3d N=0", lambda: nn.InstanceNorm3d(3), lambda: nt.InstanceNorm3d(3), (0, 3, 2, 2, 2), True),
    ("GroupNorm N=0", lambda: nn.GroupNorm(3, 6), lambda: nt.GroupNorm(3, 6), (0, 6, 4, 4), True),
    ("GroupNorm NC N=0", lambda: nn.GroupNorm(3, 6), lambda: nt.GroupNorm(3, 6), (0, 6), True),
    ("GroupNorm N=0 L=0", lambda: nn.GroupNorm(3, 6), lambda: nt.GroupNorm(3, 6), (0, 6, 0), True),
    ("LayerNorm N=0", lambda: nn.LayerNorm(4), lambda: nt.LayerNorm(4), (0, 4), True),
    ("LayerNorm T=0", lambda: nn.LayerNorm(4), lambda: nt.LayerNorm(4), (2, 0, 4), True),
    ("LayerNorm normalized_shape [0]", lambda: nn.LayerNorm([0]), lambda: nt.LayerNorm([0]),
     (2, 0), True),
    ("LayerNorm normalized_shape [0, 4]", lambda: nn.LayerNorm([0, 4]),
     lambda: nt.LayerNorm([0, 4]), (2, 0, 4), True),
    ("RMSNorm N=0", lambda: nn.RMSNorm(4), lambda: nt.RMSNorm(4), (0, 4), True),
    ("RMSNorm normalized_shape [0]", lambda: nn.RMSNorm([0]), lambda: nt.RMSNorm([0]), (2, 0), True),
    ("LocalResponseNorm N=0", lambda: nn.LocalResponseNorm(2), lambda: nt.LocalResponseNorm(2),
     (0, 3, 4, 4), True),
    ("LocalResponseNorm C=0", lambda: nn.LocalResponseNorm(2), lambda: nt.LocalResponseNorm(2),
     (2, 0, 4), True),
]


def _pair(make_theirs, make_ours):
    """Two layers with the same parameters and running statistics away from their defaults."""
    theirs, ours = make_theirs(), make_ours()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in theirs.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.numel():
                t.fill_(7)                                      # num_batches_tracked
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _step(layer, shape, training):
    layer.train(training)
    x = torch.randn(shape).requires_grad_(True)
    y = layer(x)
    y.sum().backward()
    return y, x.grad


# torch 2.14 refuses a GroupNorm input without spatial elements; 2.13 accepts it (see conftest).
PINNED_TORCH = {"GroupNorm N=0 L=0"}


@pytest.mark.parametrize("name, make_theirs, make_ours, shape, training",
                         [pytest.param(*c, marks=pytest.mark.pinned_torch) if c[0] in PINNED_TORCH
                          else c for c in EMPTY], ids=[c[0] for c in EMPTY])
def test_empty_input_like_torch(name, make_theirs, make_ours, shape, training):
    theirs, ours = _pair(make_theirs, make_ours)
    before = {k: v.clone() for k, v in theirs.state_dict().items()}
    y_theirs, dx_theirs = _step(theirs, shape, training)
    y_ours, dx_ours = _step(ours, shape, training)

    assert y_ours.shape == y_theirs.shape == shape and y_ours.dtype == y_theirs.dtype
    assert dx_ours.shape == dx_theirs.shape == shape
    for (key, p_theirs), (_, p_ours) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert p_ours.grad is not None, f"{key}: torch gives zeros, not None"
        assert torch.equal(p_ours.grad, p_theirs.grad), key
        assert torch.equal(p_ours.grad, torch.zeros_like(p_ours)), key
    for key, want in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], want), key
        if "running" in key:                                    # left as they were
            assert torch.equal(want, before[key]), key
    counts = "BatchNorm" in name and "num_batches_tracked" in before and training
    if counts:                                                  # ... but the batch is counted
        assert ours.num_batches_tracked.item() == before["num_batches_tracked"].item() + 1


def test_empty_batch_no_longer_poisons_batch_norm():
    """The symptom as first seen: NaN running statistics, then NaN in every evaluation."""
    bn = nt.BatchNorm2d(3)
    bn(torch.randn(0, 3, 4, 4))
    bn.eval()
    assert torch.isfinite(bn(torch.randn(2, 3, 4, 4))).all()
    assert torch.equal(bn.running_mean, torch.zeros(3))
    assert torch.equal(bn.running_var, torch.ones(3))


def test_functional_empty_batch_leaves_running_stats():
    for fn, x in ((nt.functional.batch_norm, torch.randn(0, 3)),
                  (nt.functional.batch_norm, torch.randn(2, 3, 0))):
        mean, var = torch.full((3,), 0.5), torch.full((3,), 2.0)
        want_mean, want_var = mean.clone(), var.clone()
        torch.nn.functional.batch_norm(x, want_mean, want_var, training=True, momentum=1.0)
        fn(x, mean, var, training=True, momentum=1.0)
        assert torch.equal(mean, want_mean) and torch.equal(var, want_var)
        assert torch.equal(mean, torch.full((3,), 0.5))


# --- where PyTorch misbehaves: pinned, beside normtext's choice ----------------------------

def test_instance_norm_empty_batch_keeps_running_stats_where_torch_writes_nan():
    theirs, ours = _pair(lambda: nn.InstanceNorm2d(3, track_running_stats=True),
                         lambda: nt.InstanceNorm2d(3, track_running_stats=True))
    before = ours.running_mean.clone(), ours.running_var.clone()
    _step(theirs, (0, 3, 4, 4), True)
    _step(ours, (0, 3, 4, 4), True)
    assert torch.isnan(theirs.running_mean).all() and torch.isnan(theirs.running_var).all()
    assert torch.equal(ours.running_mean, before[0]) and torch.equal(ours.running_var, before[1])


def test_instance_norm_affine_empty_batch_works_where_torch_raises():
    x = torch.randn(0, 3, 4, 4)
    with pytest.raises(IndexError):
        nn.InstanceNorm2d(3, affine=True)(x)
    layer = nt.InstanceNorm2d(3, affine=True)
    y, dx = _step(layer, (0, 3, 4, 4), True)
    assert y.shape == dx.shape == x.shape
    assert torch.equal(layer.weight.grad, torch.zeros(3))
    assert torch.equal(layer.bias.grad, torch.zeros(3))


@pytest.mark.pinned_torch   # torch 2.14 refuses GroupNorm input without spatial elements
def test_group_norm_empty_spatial_axes_weight_grad_is_zero_where_torch_gives_nan():
    theirs, ours = nn.GroupNorm(3, 6), nt.GroupNorm(3, 6)
    _step(theirs, (2, 6, 0), True)
    _step(ours, (2, 6, 0), True)
    assert torch.isnan(theirs.weight.grad).all()
    assert torch.equal(theirs.bias.grad, torch.zeros(6))
    assert torch.equal(ours.weight.grad, torch.zeros(6))
    assert torch.equal(ours.bias.grad, torch.zeros(6))


# --- the NumPy reference ------------------------------------------------------------------

REFERENCE_SHAPES = [(0, 6, 4, 4), (2, 6, 0, 4), (0, 6)]


@pytest.mark.parametrize("shape", REFERENCE_SHAPES)
def test_reference_on_empty_input_without_warnings_or_nan(shape):
    x, c = np.zeros(shape), shape[1]
    w, b = np.full(c, 1.5), np.full(c, 0.5)
    mean, var = np.full(c, 0.25), np.full(c, 2.0)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")                 # numpy's "Mean of empty slice" among them
        results = []
        if len(shape) > 2:
            r = ref.batch_norm(x, mean, var, w, b, training=True)
            results.append((r, ref.batch_norm_backward(np.ones(shape), r.cache), 2))
            r = ref.instance_norm(x, mean, var, w, b)
            results.append((r, ref.instance_norm_backward(np.ones(shape), r.cache), 2))
            r = ref.local_response_norm(x, 2)
            assert r.y.shape == shape
            assert ref.local_response_norm_backward(np.ones(shape), r.cache).shape == shape
        r = ref.group_norm(x, 3, w, b)
        results.append((r, ref.group_norm_backward(np.ones(shape), r.cache), 2))
        r = ref.layer_norm(x, shape[-1:], np.ones(shape[-1]), np.zeros(shape[-1]))
        results.append((r, ref.layer_norm_backward(np.ones(shape), r.cache), 2))
        r = ref.rms_norm(x, shape[-1:], np.ones(shape[-1]))
        results.append((r, ref.rms_norm_backward(np.ones(shape), r.cache), 1))
    for r, grads, n_params in results:
        assert r.y.shape == shape and grads[0].shape == shape
        for g in grads[1:1 + n_params]:
            np.testing.assert_array_equal(g, np.zeros_like(g))
        if getattr(r, "running_mean", None) is not None:
            np.testing.assert_array_equal(r.running_mean, mean)
            np.testing.assert_array_equal(r.running_var, var)


def test_mxnet_ndarray_cannot_hold_an_empty_batch():
    mx = pytest.importorskip("mxnet")
    with pytest.raises(mx.base.MXNetError, match="inferring shapes failed"):
        mx.nd.zeros((0, 3, 4, 4))
