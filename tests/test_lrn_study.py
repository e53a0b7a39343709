"""The LRN chapter's study: the load measurement, the alpha scaling and the four arms."""
import numpy as np
import pytest
import torch
from torch import nn

from normtext import torch as nt
from normtext.experiments import lrn_study as study
from normtext.numpy import lrn as lrn_ref

AS_TORCH = lrn_ref.convert_lrn(*lrn_ref.DEFAULTS["paper"][:4], source="paper", target="torch")


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_window_energy_is_the_divisor_of_torchs_lrn(size):
    # (k + alpha/n * energy) ** -beta * a must be torch's LRN, even sizes included
    a = torch.randn(3, 7, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    want = nn.LocalResponseNorm(size, 0.3, 0.75, 2.0)(a)
    got = a / (2.0 + 0.3 / size * study.window_energy(a, size)) ** 0.75
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)     # float64 roundings


def test_lrn_load_reads_each_lrn_layer_in_order():
    torch.manual_seed(0)
    net = study.cnn(study.lrn_after_relu(5, 5e-4, 0.75, 2.0))
    x = torch.randn(16, 1, 8, 8)
    loads = study.lrn_load(net, x)
    assert len(loads) == 3
    # the first LRN sees ReLU(conv1(x)): recompute its load by hand
    a = torch.relu(net[0](x)).detach()
    want = (5e-4 / 5) * study.window_energy(a, 5) / 2.0
    np.testing.assert_allclose(loads[0], want.flatten().numpy(), rtol=1e-6)   # float32
    assert all(len(h) == 0 for m in net.modules() for h in [m._forward_hooks])  # hooks removed


def test_lrn_sits_after_the_relu_and_init_is_he():
    torch.manual_seed(0)
    net = study.cnn(study.lrn_after_relu(5, 5e-4, 0.75, 2.0), channels=(8, 8, 16))
    block = net[1]
    assert isinstance(block, nn.Sequential)
    assert isinstance(block[0], nn.ReLU) and isinstance(block[1], nt.LocalResponseNorm)
    w = net[0].weight.detach()
    # He normal: std sqrt(2 / fan_in) with fan_in = 9; PyTorch's default would be about 0.19
    assert abs(float(w.std()) - (2 / 9) ** 0.5) < 0.15
    assert float(net[0].bias.detach().abs().max()) == 0.0


def test_alexnet_parameters_leave_the_load_negligible_on_standardized_digits():
    # the chapter's premise: with AlexNet's alpha, LRN is a constant k ** -beta here
    digits = study.standardized_digits()
    assert abs(float(digits.X_train.mean())) < 1e-5 and abs(float(digits.X_train.std()) - 1) < 1e-5
    torch.manual_seed(0)
    net = study.cnn(study.lrn_after_relu(AS_TORCH.size, AS_TORCH.alpha, AS_TORCH.beta, AS_TORCH.k))
    loads = study.lrn_load(net, torch.from_numpy(digits.X_train[:256]))
    assert max(float(np.median(l)) for l in loads) < 1e-3


def test_active_alpha_brings_the_first_median_load_to_order_one():
    digits = study.standardized_digits()
    alpha = study.active_alpha(AS_TORCH, digits)
    factor = alpha / AS_TORCH.alpha
    assert factor > 100 and np.isclose(np.log10(factor), round(np.log10(factor)))
    torch.manual_seed(0)
    net = study.cnn(study.lrn_after_relu(AS_TORCH.size, alpha, AS_TORCH.beta, AS_TORCH.k))
    median = float(np.median(study.lrn_load(net, torch.from_numpy(digits.X_train[:256]))[0]))
    assert 10 ** -0.5 <= median <= 10 ** 0.5


def test_builds_give_four_arms_that_differ_only_in_the_norm():
    arms = study.builds(AS_TORCH, 5.0)
    assert list(arms) == ["none", "LRN, AlexNet's alpha", "LRN, scaled alpha", "BatchNorm"]
    nets = {k: b() for k, b in arms.items()}
    alphas = [m.alpha for m in nets["LRN, scaled alpha"].modules() if isinstance(m, nt.LocalResponseNorm)]
    assert alphas == [5.0, 5.0, 5.0]
    assert nets["BatchNorm"][0].bias is None and nets["none"][0].bias is not None


def test_config_has_five_seeds_in_full_mode():
    assert len(study.config(quick=False)["seeds"]) >= 5
    assert len(study.config(quick=True)["seeds"]) >= 2
