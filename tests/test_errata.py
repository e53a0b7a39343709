"""Proofs of the errata of the seed documents (book/errata.md).

Each test runs a seed's code or claim as the seed wrote it and shows the error,
then the correction and that the correction works. Tests of errata that other
test files already prove are named in book/errata.md, not repeated here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------
# Seed 000: "Layer normalization in machine learning (with a PyTorch example)"
# --------------------------------------------------------------------------------------

# The seed's example, as printed (only the two imports it relies on are added).
SEED_000 = '''
import torch
import torch.nn.functional as F

class Network(torch.nn.Module):
    @staticmethod
    def calc_activation_shape(
        dim, ksize, dilation=(1, 1), stride=(1, 1), padding=(0, 0)
    ):
        def shape_each_dim(i):
            odim_i = dim[i] + 2 * padding[i] - dilation[i] * (ksize[i] - 1) - 1
            return (odim_i / stride[i]) + 1

        return shape_each_dim(0), shape_each_dim(1)

    def __init__(self, idim, num_classes=10):
        self.layer1 = torch.nn.Conv2D(3, 5, 3)
        ln_shape = Network.calc_activation_shape(idim, 3) # <--- Calculate the shape of output of Convolution
        self.norm1 = torch.nn.LayerNorm([5, *ln_shape]) # <--- Normalize activations over C, H, and W (see fig.above)
        self.layer2 = torch.nn.Conv2D(5, 10, 3)
        ln_shape = Network.calc_activation_shape(ln_shape, 3)
        self.norm2 = torch.nn.LayerNorm([10, *ln_shape])
        self.layer3 = torch.nn.Dense(num_classes)

    def __call__(self, inputs):
        x = F.relu(self.norm1(self.layer1(input)))
        x = F.relu(self.norm2(self.layer2(x)))
        x = F.sigmoid(self.layer3(x))
        return x
'''

# Each correction, in the order in which the errors surface when the code is run.
SEED_000_FIXES = [
    ("torch.nn.Conv2D", "torch.nn.Conv2d"),
    ("num_classes=10):\n", "num_classes=10):\n        super().__init__()\n"),
    ("calc_activation_shape(idim, 3)", "calc_activation_shape(idim, (3, 3))"),
    ("calc_activation_shape(ln_shape, 3)", "calc_activation_shape(ln_shape, (3, 3))"),
    ("(odim_i / stride[i]) + 1", "(odim_i // stride[i]) + 1"),
    ("torch.nn.Dense(num_classes)",
     "torch.nn.Linear(10 * ln_shape[0] * ln_shape[1], num_classes)"),
    ("self.layer1(input)", "self.layer1(inputs)"),
    ("F.sigmoid(self.layer3(x))", "self.layer3(x.flatten(1))"),
    ("def __call__(self, inputs)", "def forward(self, inputs)"),
]


def _seed_000(n_fixes: int):
    source = SEED_000
    for old, new in SEED_000_FIXES[:n_fixes]:
        assert old in source, old
        source = source.replace(old, new)
    namespace: dict = {}
    exec(compile(source, "<seed 000>", "exec"), namespace)
    return namespace["Network"]


def _run_seed_000(n_fixes: int):
    net = _seed_000(n_fixes)((32, 32))
    return net(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("n_fixes, error, message", [
    (0, AttributeError, "has no attribute 'Conv2D'"),
    (1, AttributeError, r"cannot assign module before Module.__init__\(\) call"),
    (2, TypeError, "'int' object is not subscriptable"),
    (4, TypeError, "must be tuple of ints,but got float"),
    (5, AttributeError, "has no attribute 'Dense'"),
    (6, TypeError, "invalid combination of arguments"),  # conv2d(<built-in function input>)
    (7, RuntimeError, "mat1 and mat2 shapes cannot be multiplied"),  # no flatten
])
def test_seed_000_errors_surface_one_after_another(n_fixes, error, message):
    with pytest.raises(error, match=message):
        _run_seed_000(n_fixes)


def test_seed_000_corrected_network_runs_and_layer_norm_normalizes_c_h_w():
    torch.manual_seed(0)
    Network = _seed_000(len(SEED_000_FIXES))
    net = Network((32, 32))
    x = torch.randn(4, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (4, 10)
    # norm1 normalizes each sample over (C, H, W) = (5, 30, 30), as the seed's text says
    assert tuple(net.norm1.normalized_shape) == (5, 30, 30)
    a = net.layer1(x)
    h = net.norm1(a)
    torch.testing.assert_close(h.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    # the variance after the norm is v / (v + eps), v the variance before it; float32 sums
    # over 4,500 values of size ~1 agree to ~1e-6 relative, 1e-5 leaves room for their order
    v = a.var(dim=(1, 2, 3), unbiased=False)
    torch.testing.assert_close(h.var(dim=(1, 2, 3), unbiased=False), v / (v + net.norm1.eps),
                               rtol=1e-5, atol=0)


@pytest.mark.parametrize("dim, k, stride, padding, dilation", [
    (32, 3, 1, 0, 1), (32, 3, 2, 0, 1), (31, 5, 2, 1, 1), (28, 3, 3, 2, 2)])
def test_seed_000_shape_formula_needs_floor_division(dim, k, stride, padding, dilation):
    conv = nn.Conv2d(1, 1, k, stride=stride, padding=padding, dilation=dilation)
    actual = conv(torch.zeros(1, 1, dim, dim)).shape[-1]
    calc = _seed_000(len(SEED_000_FIXES)).calc_activation_shape
    seed = _seed_000(4).calc_activation_shape  # '/' as printed, ksize as a pair
    args = ((dim, dim), (k, k), (dilation, dilation), (stride, stride), (padding, padding))
    assert calc(*args) == (actual, actual)
    assert all(isinstance(v, float) for v in seed(*args))
    if (dim + 2 * padding - dilation * (k - 1) - 1) % stride:
        assert seed(*args)[0] != actual  # a fractional "shape"


# --------------------------------------------------------------------------------------
# Seed 002: "Six key PyTorch normalization layers"
# --------------------------------------------------------------------------------------

SEED_002_SNIPPETS = {
    "BN": "import torch.nn as nn\n norm = nn.BatchNorm2d(num_features=64)\n",
    "LN": "import torch.nn as nn\n norm = nn.LayerNorm(256)\n",
    "IN": "import torch.nn as nn\n norm = nn.InstanceNorm2d(num_features=64)\n",
    "GN": "import torch.nn as nn\n norm = nn.GroupNorm(num_groups=4, num_channels=64)\n",
    "SyncBN": "import torch.nn as nn\n norm = nn.SyncBatchNorm(num_features=64)\n",
    "LRN": "import torch.nn as nn\n norm = LocalResponseNorm(size=2)\n",
}


@pytest.mark.parametrize("name", SEED_002_SNIPPETS)
def test_seed_002_snippets_are_indented_and_do_not_parse(name):
    with pytest.raises(IndentationError, match="unexpected indent"):
        compile(SEED_002_SNIPPETS[name], f"<seed 002 {name}>", "exec")
    fixed = "\n".join(line.strip() for line in SEED_002_SNIPPETS[name].splitlines())
    namespace: dict = {}
    if name == "LRN":
        with pytest.raises(NameError, match="LocalResponseNorm"):
            exec(fixed, namespace)
        fixed = fixed.replace("LocalResponseNorm", "nn.LocalResponseNorm")
    exec(fixed, namespace)
    assert isinstance(namespace["norm"], nn.Module)


def test_seed_002_instance_norm_has_no_learnable_scale_and_shift_by_default():
    """The seed: IN 're-parameterizes with learnable scale and shift'. Not by default."""
    norm = nn.InstanceNorm2d(num_features=64)
    assert norm.weight is None and norm.bias is None and not list(norm.parameters())
    assert not norm.track_running_stats
    assert len(list(nn.InstanceNorm2d(64, affine=True).parameters())) == 2


def test_seed_002_running_estimates_are_an_ema_not_the_training_set_mean():
    """The seed: at test time BN uses 'the moving average over the whole training set'."""
    torch.manual_seed(0)
    batches = [torch.randn(16, 3) * 2 + 3 * i for i in range(6)]  # drifting means
    bn = nn.BatchNorm1d(3)  # momentum=0.1
    for b in batches:
        bn(b)
    ema = torch.zeros(3)
    for b in batches:
        ema = 0.9 * ema + 0.1 * b.mean(0)
    torch.testing.assert_close(bn.running_mean, ema)
    whole = torch.cat(batches).mean(0)
    assert (bn.running_mean - whole).abs().min() > 1  # far from the training-set mean
    cumulative = nn.BatchNorm1d(3, momentum=None)  # PyTorch's cumulative average
    for b in batches:
        cumulative(b)
    torch.testing.assert_close(cumulative.running_mean, whole)


def test_seed_002_lrn_size_2_window_is_one_sided():
    """size=2: PyTorch's window for channel c is c-1..c, not centred on c."""
    x = torch.zeros(1, 5, 1, 1)
    x[0, 3] = 10.0
    y = nn.LocalResponseNorm(size=2)(x)
    # the big activation at channel 3 suppresses channel 4 (window 3..4) and itself,
    # but not channel 2 (window 1..2): the window is asymmetric
    y_unit = nn.LocalResponseNorm(size=2)(torch.ones(1, 5, 1, 1) + x)
    assert y_unit[0, 4] < y_unit[0, 2]
    assert y[0, 3] < x[0, 3]


# --------------------------------------------------------------------------------------
# Seed 003: Stanford Practical Machine Learning notes
# --------------------------------------------------------------------------------------

def test_seed_003_smoothness_with_squares_needs_beta_squared():
    """The notes write ||grad f(x) - grad f(y)||^2 <= beta ||x - y||^2 for beta-smoothness.

    For f(x) = beta/2 ||x||^2, which is beta-smooth, the squared form needs beta**2.
    """
    beta = 4.0
    x, y = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    grad = lambda v: beta * v  # noqa: E731
    lhs = (grad(x) - grad(y)).norm() ** 2
    assert lhs > beta * (x - y).norm() ** 2            # the notes' inequality fails
    assert (grad(x) - grad(y)).norm() <= beta * (x - y).norm() * (1 + 1e-12)  # the definition
    torch.testing.assert_close(lhs, beta ** 2 * (x - y).norm() ** 2)


def test_seed_003_normalize_divides_by_the_standard_deviation_not_the_variance():
    """The notes: 'subtract the mean, divide by the variance'; and gamma = variance recovers."""
    torch.manual_seed(0)
    x = torch.randn(256, 3, dtype=torch.float64) * torch.tensor([0.5, 2.0, 5.0]) + 3
    mean, var = x.mean(0), x.var(0, unbiased=False)
    by_var = (x - mean) / var
    assert not torch.allclose(by_var.var(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=0.1)
    eps = 1e-5
    y = F.batch_norm(x, None, None, training=True, eps=eps)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + eps))
    # recover: gamma = sqrt(var + eps), beta = mean gives x back; gamma = var does not
    back = F.batch_norm(x, None, None, weight=torch.sqrt(var + eps), bias=mean, training=True, eps=eps)
    torch.testing.assert_close(back, x)
    wrong = F.batch_norm(x, None, None, weight=var, bias=mean, training=True, eps=eps)
    assert (wrong - x).abs().max() > 1


def test_seed_003_layer_norm_is_transposed_batch_norm_except_for_gamma_and_beta():
    """'LN transposes X (n x p -> p x n), rest is the same as BN': true for the statistics.

    The learnable scale and shift are not: after the transpose BN's gamma/beta would
    have one entry per *sample* (n), LN's have one per *feature* (p).
    """
    torch.manual_seed(0)
    x = torch.randn(8, 6, dtype=torch.float64) * 3 + 1
    ln = F.layer_norm(x, (6,))
    bn_t = F.batch_norm(x.T, None, None, training=True).T
    torch.testing.assert_close(bn_t, ln)
    assert nn.LayerNorm(6).weight.shape == (6,)          # p
    assert nn.BatchNorm1d(x.T.shape[1]).weight.shape == (8,)  # n: depends on the batch


# --------------------------------------------------------------------------------------
# Seed 004: Dive into Deep Learning (MXNet, 2019), batch normalization
# --------------------------------------------------------------------------------------

def _seed_004(mx):
    """The seed's batch_norm and BatchNorm block, as printed (without gluonbook)."""
    from mxnet import autograd, init, nd
    from mxnet.gluon import nn as gnn

    def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
        if not autograd.is_training():
            X_hat = (X - moving_mean) / nd.sqrt(moving_var + eps)
        else:
            assert len(X.shape) in (2, 4)
            if len(X.shape) == 2:
                mean = X.mean(axis=0)
                var = ((X - mean) ** 2).mean(axis=0)
            else:
                mean = X.mean(axis=(0, 2, 3), keepdims=True)
                var = ((X - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
            X_hat = (X - mean) / nd.sqrt(var + eps)
            moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
            moving_var = momentum * moving_var + (1.0 - momentum) * var
        Y = gamma * X_hat + beta
        return Y, moving_mean, moving_var

    class BatchNorm(gnn.Block):
        def __init__(self, num_features, num_dims, **kwargs):
            super(BatchNorm, self).__init__(**kwargs)
            if num_dims == 2:
                shape = (1, num_features)
            else:
                shape = (1, num_features, 1, 1)
            self.gamma = self.params.get('gamma', shape=shape, init=init.One())
            self.beta = self.params.get('beta', shape=shape, init=init.Zero())
            self.moving_mean = nd.zeros(shape)
            self.moving_var = nd.zeros(shape)

        def forward(self, X):
            if self.moving_mean.context != X.context:
                self.moving_mean = self.moving_mean.copyto(X.context)
                self.moving_var = self.moving_var.copyto(X.context)
            Y, self.moving_mean, self.moving_var = batch_norm(
                X, self.gamma.data(), self.beta.data(), self.moving_mean,
                self.moving_var, eps=1e-5, momentum=0.9)
            return Y

    return BatchNorm


def test_seed_004_moving_stats_start_at_zero_and_are_not_parameters():
    mx = pytest.importorskip("mxnet")
    from mxnet import autograd, nd
    from mxnet.gluon import nn as gnn
    BatchNorm = _seed_004(mx)
    ours, gluon = BatchNorm(3, num_dims=2), gnn.BatchNorm(in_channels=3)
    ours.initialize()
    gluon.initialize()
    x = nd.array(np.random.default_rng(0).normal(3, 2, size=(16, 3)))
    with autograd.record():  # training mode: both update their running statistics
        loss = ours(x).sum() + gluon(x).sum()
    loss.backward()  # Gluon's BatchNorm updates its running statistics here
    var = x.asnumpy().var(0)  # biased, as both Gluon and the seed use
    np.testing.assert_allclose(ours.moving_var.asnumpy().ravel(), 0.1 * var, rtol=1e-5)
    np.testing.assert_allclose(gluon.running_var.data().asnumpy(), 0.9 * 1 + 0.1 * var, rtol=1e-5)
    # the seed's statistics are plain attributes: collect_params() (and so
    # save_parameters/load_parameters) does not see them; Gluon's are parameters
    assert not any("moving" in k or "running" in k for k in ours.collect_params().keys())
    assert any(k.endswith("running_var") for k in gluon.collect_params().keys())
    # and gamma/beta have shape (1, C) instead of Gluon's (C,)
    assert ours.gamma.shape == (1, 3) and gluon.gamma.shape == (3,)


def test_seed_004_autograd_is_training_is_the_right_switch_in_mxnet():
    """Unlike seed 003's torch.is_grad_enabled(), MXNet's is_training() follows the mode."""
    mx = pytest.importorskip("mxnet")
    from mxnet import autograd, nd
    BatchNorm = _seed_004(mx)
    layer = BatchNorm(3, num_dims=2)
    layer.initialize()
    x = nd.array(np.random.default_rng(1).normal(3, 2, size=(16, 3)))
    with autograd.record(train_mode=False):  # recording gradients, prediction mode
        y = layer(x)
    np.testing.assert_allclose(layer.moving_mean.asnumpy(), 0.0)  # not updated
    # prediction with moving statistics still at zero: x / sqrt(eps), far from standardized
    assert float(nd.abs(y).mean().asscalar()) > 100


def test_seed_004_fashion_mnist_is_replaced_by_data_that_installs_with_pip():
    """gb.load_data_fashion_mnist downloads; normtext's loaders read installed data."""
    from normtext.experiments import data
    split = data.mnist_5k()
    assert split.X_train.shape[1:] == (1, 28, 28)  # LeNet's input, like Fashion-MNIST's
    assert len(split.y_train) + len(split.y_test) == 5000
    assert sorted(set(split.y_train.tolist())) == list(range(10))
