"""Conversions keep a trained model's state: every parameter and buffer value, the
training flags and the evaluation output.

``SyncBatchNorm.convert_sync_batchnorm`` converts BatchNorm layers only (torch.nn's
and normtext's), as :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` does;
``state_dict`` round trips between normtext and torch.nn work in both directions.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from normtext import torch as nt
from normtext.testing.compare import tolerance


def _net(norms) -> nn.Sequential:
    """A small CNN with one norm layer of each kind after its convolutions."""
    torch.manual_seed(0)
    layers = []
    for i, norm in enumerate(norms):
        layers += [nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1), norm(4), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


MIXED = [nn.BatchNorm2d, nt.BatchNorm2d, lambda c: nt.BatchNorm2d(c, momentum=None),
         lambda c: nt.InstanceNorm2d(c, affine=True, track_running_stats=True),
         lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True),
         lambda c: nt.GroupNorm(2, c), lambda c: nn.GroupNorm(2, c),
         lambda c: nt.LayerNorm([c, 5, 5]), lambda c: nn.LayerNorm([c, 5, 5])]
BATCH_NORMS = (nn.BatchNorm2d, nt.BatchNorm2d)


def _trained(norms) -> nn.Sequential:
    """Parameters and running statistics away from their initial values."""
    net = _net(norms)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(6, 1, 5, 5, generator=gen) * 2 + 1
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def _snapshot(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _eval_output(net: nn.Module) -> torch.Tensor:
    x = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(2)) * 2 + 1
    was = [m.training for m in net.modules()]
    net.eval()
    with torch.no_grad():
        y = net(x)
    for m, t in zip(net.modules(), was):
        m.training = t
    return y


def assert_same_state(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


def assert_same_eval_output(got: torch.Tensor, want: torch.Tensor) -> None:
    # float32, no reduction changed: the BN eval formula may round differently
    # (torch.nn folds gamma into 1/sigma first), a few ulps of the output's scale
    atol = tolerance("float32", 1) * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


# --- SyncBatchNorm.convert_sync_batchnorm -------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_convert_sync_batchnorm_keeps_state_flags_and_eval_output(training):
    net = _trained(MIXED).train(training)
    net[4].eval()                                 # one layer's flag differs from the rest
    before, kinds = _snapshot(net), [type(m) for m in net]
    flags = [m.training for m in net.modules()]
    want = _eval_output(net)

    out = nt.SyncBatchNorm.convert_sync_batchnorm(net)

    for m, kind in zip(out, kinds):
        if issubclass(kind, BATCH_NORMS):
            assert type(m) is nt.SyncBatchNorm
        else:                                     # InstanceNorm, GroupNorm, LayerNorm, conv...
            assert type(m) is kind
    assert sum(type(m) is nt.SyncBatchNorm for m in out) == 3
    assert [m.training for m in out.modules()] == flags
    assert_same_state(_snapshot(out), before)
    assert out[7].momentum is None and out[7].num_batches_tracked.item() == 3
    assert_same_eval_output(_eval_output(out), want)


def test_convert_sync_batchnorm_leaves_instance_norm_alone():
    """InstanceNorm shares BatchNorm's base (as in torch.nn), not its statistics."""
    for layer in (nt.InstanceNorm1d(3), nt.InstanceNorm2d(3, affine=True),
                  nt.InstanceNorm3d(3, track_running_stats=True), nt.GroupNorm(1, 3),
                  nt.LayerNorm(3), nt.RMSNorm(3), nt.LocalResponseNorm(2)):
        assert nt.SyncBatchNorm.convert_sync_batchnorm(layer) is layer
    assert not isinstance(nt.InstanceNorm2d(3), nt.modules._BatchNorm)
    assert isinstance(nt.InstanceNorm2d(3), nt.modules._NormBase)
    assert isinstance(nt.SyncBatchNorm(3), nt.modules._BatchNorm)


def test_convert_sync_batchnorm_matches_torch_on_torch_nn_layers():
    """On a network of torch.nn layers both conversions convert the same layers."""
    norms = [nn.BatchNorm2d, lambda c: nn.InstanceNorm2d(c, affine=True),
             lambda c: nn.GroupNorm(2, c), nn.BatchNorm2d]
    ours = nt.SyncBatchNorm.convert_sync_batchnorm(_trained(norms))
    theirs = nn.SyncBatchNorm.convert_sync_batchnorm(_trained(norms))
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert_same_state(_snapshot(ours), _snapshot(theirs))


def test_torch_convert_sync_batchnorm_leaves_normtext_layers_alone():
    """torch.nn's conversion recognizes torch.nn's BatchNorm only (documented in the book)."""
    net = _trained([nt.BatchNorm2d, nn.BatchNorm2d])
    out = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert type(out[1]) is nt.BatchNorm2d and type(out[4]) is nn.SyncBatchNorm


# --- state_dict round trips between normtext and torch.nn ---------------------------------

NORM_PAIRS = [(nn.BatchNorm2d, nt.BatchNorm2d),
              (lambda c: nn.BatchNorm2d(c, momentum=None), lambda c: nt.BatchNorm2d(c, momentum=None)),
              (lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True),
               lambda c: nt.InstanceNorm2d(c, affine=True, track_running_stats=True)),
              (lambda c: nn.GroupNorm(2, c), lambda c: nt.GroupNorm(2, c)),
              (lambda c: nn.LayerNorm([c, 5, 5]), lambda c: nt.LayerNorm([c, 5, 5])),
              (lambda c: nn.RMSNorm([c, 5, 5]), lambda c: nt.RMSNorm([c, 5, 5])),
              (lambda c: nn.SyncBatchNorm(c), lambda c: nt.SyncBatchNorm(c))]
TORCH_NORMS = [t for t, _ in NORM_PAIRS]
OUR_NORMS = [o for _, o in NORM_PAIRS]


@pytest.mark.parametrize("direction", ["normtext -> torch.nn", "torch.nn -> normtext"])
def test_state_dict_round_trip_keeps_values_and_eval_output(direction):
    source_norms, target_norms = ((OUR_NORMS, TORCH_NORMS) if direction.startswith("normtext")
                                  else (TORCH_NORMS, OUR_NORMS))
    source = _trained(source_norms).eval()
    target = _net(target_norms).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    assert_same_state(_snapshot(target), _snapshot(source))
    assert_same_eval_output(_eval_output(target), _eval_output(source))
    back = _net(source_norms).eval()                      # ... and back again
    back.load_state_dict(target.state_dict(), strict=True)
    assert_same_state(_snapshot(back), _snapshot(source))


@pytest.mark.parametrize("edit", ["missing key", "unexpected key", "wrong shape"])
def test_strict_loading_refuses_like_torch(edit):
    state = _trained(TORCH_NORMS).state_dict()
    if edit == "missing key":
        del state["1.running_var"]
    elif edit == "unexpected key":
        state["1.extra"] = torch.zeros(1)
    else:
        state["1.running_var"] = torch.ones(5)
    with pytest.raises(RuntimeError) as theirs:
        _net(TORCH_NORMS).load_state_dict(state)
    with pytest.raises(RuntimeError) as ours:
        _net(OUR_NORMS).load_state_dict(state)
    assert str(ours.value) == str(theirs.value)
