"""The LayerNorm chapter's networks (normtext.experiments.layer_norm_study).

Tolerances: float32 outputs of normalizations over at most 16 channels;
``16 * eps32 * sqrt(m)`` (normtext.testing.compare.tolerance) for m = 16,
about 8e-6, on values of order 1.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from normtext.experiments import layer_norm_study as S
from normtext.experiments.train import History
from normtext.testing.compare import tolerance

TOL = tolerance("float32", 16)


def test_channel_layer_norm_normalizes_each_position_over_its_channels():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 4) * 3 + 2
    y = S.ChannelLayerNorm(6)(x)
    mean, var = y.mean(1), y.var(1, unbiased=False)
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=TOL)
    torch.testing.assert_close(var, torch.ones_like(var), rtol=0, atol=1e-4)  # eps=1e-5 / var ~ 9
    # not GroupNorm(1, C), which takes one statistic over the whole (C, H, W)
    whole = nn.GroupNorm(1, 6, affine=False)(x)
    assert (whole - y).abs().max() > 0.1
    # and it is LayerNorm(C) applied to the channels-last tensor, position by position
    want = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, want, rtol=0, atol=TOL)
    # a position's output does not depend on the other positions
    x2 = x.clone()
    x2[..., 0, 0] += 100
    y2 = S.ChannelLayerNorm(6)(x2)
    torch.testing.assert_close(y2[..., 1:, :], y[..., 1:, :], rtol=0, atol=0)


@pytest.mark.parametrize("dense", [None, "bn", "ln"])
@pytest.mark.parametrize("conv", [None, "channels", "chw"])
def test_keras_lenet_places_the_norms_after_the_tanh(dense, conv):
    net = S.keras_lenet(dense, conv)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    kinds = [type(m) for m in net]
    conv_norms = [m for m in net if isinstance(m, S.ChannelLayerNorm)
                  or (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 3)]
    assert len(conv_norms) == (0 if conv is None else 2)
    if conv == "chw":
        assert [m.normalized_shape for m in conv_norms] == [(6, 24, 24), (16, 8, 8)]
    if conv == "channels":
        assert [m.norm.normalized_shape for m in conv_norms] == [(6,), (16,)]
    dense_norms = [m for m in net if isinstance(m, nn.BatchNorm1d)
                   or (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1)]
    assert [m.num_features if isinstance(m, nn.BatchNorm1d) else m.normalized_shape[0]
            for m in dense_norms] == ([] if dense is None else [120, 84])
    for i, m in enumerate(net):   # every norm follows a tanh
        if m in conv_norms or m in dense_norms:
            assert kinds[i - 1] is nn.Tanh


def test_measures():
    h = History(loss=[2.0, 1.0, 0.0], train_acc=[0.5, 0.9, 0.95], test_acc=[0.5, 0.8, 0.9])
    assert S.loss_auc(h) == pytest.approx(1.0)
    assert S.generalization_gap(h) == pytest.approx(0.05)
