"""BatchNorm: the float64 reference, the PyTorch functional and modules, the hand-written backward.

Parity tolerances come from normtext.testing.compare.tolerance (16 * eps(dtype) * sqrt(m),
m = elements per statistic); float64 comparisons use the same rule.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from normtext.testing import compare
from normtext import numpy as ref
from normtext import torch as nt
from normtext.spec import BATCH_NORM

from conftest import BN_SHAPES

TORCH_MODULES = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d,
                 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}
OUR_MODULES = {2: nt.BatchNorm1d, 3: nt.BatchNorm1d, 4: nt.BatchNorm2d, 5: nt.BatchNorm3d}


def tol64(shape):
    return compare.tolerance("float64", BATCH_NORM.reduction_size(shape))


# --- the NumPy reference -----------------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
def test_reference_normalizes_each_channel(shape, rng):
    x = rng.normal(3.0, 2.0, shape)
    y = ref.batch_norm(x, training=True).y
    axes = BATCH_NORM.reduce_axes(len(shape), 1)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    m = BATCH_NORM.reduction_size(shape)
    # biased variance 1 up to eps: var(x_hat) = var / (var + eps)
    np.testing.assert_allclose(y.var(axis=axes), 1, atol=1e-5 * m)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_reference_backward_matches_finite_differences(shape, training, rng):
    x = rng.normal(size=shape)
    C = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.normal(size=C)
    rm, rv = rng.normal(size=C), rng.uniform(0.5, 2, C)
    dy = rng.normal(size=shape)
    loss = lambda x_, g_, b_: (ref.batch_norm(x_, rm, rv, g_, b_, training=training).y * dy).sum()
    res = ref.batch_norm(x, rm, rv, gamma, beta, training=training)
    dx, dg, db = ref.batch_norm_backward(dy, res.cache)

    def numeric(f, a, h=1e-6):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            a_p, a_m = a.copy(), a.copy()
            a_p[i] += h
            a_m[i] -= h
            g[i] = (f(a_p) - f(a_m)) / (2 * h)
        return g
    # central differences have error O(h^2) + O(eps/h): about 1e-8 here
    np.testing.assert_allclose(dx, numeric(lambda a: loss(a, gamma, beta), x), atol=1e-6)
    np.testing.assert_allclose(dg, numeric(lambda a: loss(x, a, beta), gamma), atol=1e-6)
    np.testing.assert_allclose(db, numeric(lambda a: loss(x, gamma, a), beta), atol=1e-6)


def test_reference_does_not_modify_its_arguments(rng):
    rm, rv = np.zeros(3), np.ones(3)
    res = ref.batch_norm(rng.normal(size=(4, 3)), rm, rv, training=True)
    assert np.all(rm == 0) and np.all(rv == 1)
    assert not np.allclose(res.running_mean, 0)


# --- PyTorch: functional -------------------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_functional_matches_torch_in_float64(shape, training, affine):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1
    C = shape[1]
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5 if affine else None
    b = torch.randn(C, generator=g, dtype=torch.float64) if affine else None
    ours_stats = [torch.randn(C, dtype=torch.float64, generator=g), torch.rand(C, dtype=torch.float64, generator=g) + 0.5]
    theirs_stats = [s.clone() for s in ours_stats]
    y_ours = nt.functional.batch_norm(x, *ours_stats, w, b, training, 0.3, 1e-3)
    y_theirs = TF.batch_norm(x, *theirs_stats, w, b, training, 0.3, 1e-3)
    t = tol64(shape)
    torch.testing.assert_close(y_ours, y_theirs, rtol=0, atol=t * y_theirs.abs().max().item())
    for ours, theirs in zip(ours_stats, theirs_stats):  # in-place running-stat update
        torch.testing.assert_close(ours, theirs, rtol=0, atol=t * theirs.abs().max().item())


def test_functional_running_var_is_unbiased():
    x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)  # biased var 1, unbiased 2
    rm, rv = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    nt.functional.batch_norm(x, rm, rv, training=True, momentum=1.0)
    assert rm.item() == 2.0 and rv.item() == 2.0


def test_functional_without_running_stats_in_training():
    x = torch.randn(5, 3)
    torch.testing.assert_close(nt.functional.batch_norm(x, None, None, training=True),
                               TF.batch_norm(x, None, None, training=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_functional_low_precision_accumulates_in_float32(dtype):
    # A seeded input: rounded to float16/bfloat16, x takes a few dozen distinct values per
    # channel, so when one of them lands within float32's error of a rounding boundary all
    # its copies miss the exact rounding together (about 1 input in 300 then fails the
    # 0.05 % count below, with 0.3-0.9 % of the elements one unit off).
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 4, 8, 8, generator=g) * 2 + 100).to(dtype)
    y = nt.functional.batch_norm(x, None, None, training=True)
    assert y.dtype == dtype
    truth = ref.batch_norm(x.double().numpy(), training=True).y
    m = BATCH_NORM.reduction_size(x.shape)
    name = "float16" if dtype == torch.float16 else "bfloat16"
    err = np.abs(y.double().numpy() - truth).max() / np.abs(truth).max()
    assert err <= compare.tolerance(name, m)
    # what the name says: the statistics in float32 and one rounding at the end, so almost
    # every element is the exact value rounded (a float16 computation misses ~40 % of them)
    compare.assert_rounded_from_float32(y, truth)
    # and never worse than PyTorch's own kernel by more than a factor of 2
    theirs = TF.batch_norm(x, None, None, training=True).double().numpy()
    assert err <= 2 * np.abs(theirs - truth).max() / np.abs(truth).max() + compare.EPS[name]


# --- PyTorch: modules ----------------------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_module_matches_torch_through_training_and_eval(shape, momentum):
    C = shape[1]
    ours = OUR_MODULES[len(shape)](C, momentum=momentum)
    theirs = TORCH_MODULES[len(shape)](C, momentum=momentum)
    compare.compare_layers(compare.TorchLayer(ours), compare.TorchLayer(theirs), shape,
                           steps=4, spec=BATCH_NORM)
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 4


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_module_matches_float64_reference(shape):
    ours = OUR_MODULES[len(shape)](shape[1])
    compare.compare_layers(compare.TorchLayer(ours), compare.ReferenceBatchNorm(shape[1]), shape)


@pytest.mark.parametrize("kwargs", [dict(), dict(affine=False), dict(track_running_stats=False),
                                    dict(bias=False), dict(momentum=None, eps=1e-3)])
def test_module_state_dict_and_repr_match_torch(kwargs):
    ours, theirs = nt.BatchNorm2d(5, **kwargs), torch.nn.BatchNorm2d(5, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert repr(ours) == repr(theirs)
    # drop-in: state dicts load across in both directions
    theirs.train()(torch.randn(4, 5, 3, 3))
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 5, 3, 3)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_module_loads_state_dict_without_num_batches_tracked():
    sd = torch.nn.BatchNorm1d(3).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1  # as saved before num_batches_tracked existed
    m = nt.BatchNorm1d(3)
    m.load_state_dict(sd)
    assert m.num_batches_tracked.item() == 0


def test_eval_without_running_stats_uses_batch_statistics():
    x = torch.randn(6, 3, 4, 4)
    ours = nt.BatchNorm2d(3, track_running_stats=False).eval()
    theirs = torch.nn.BatchNorm2d(3, track_running_stats=False).eval()
    torch.testing.assert_close(ours(x), theirs(x))


# --- the hand-written backward -----------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
def test_hand_written_backward_passes_gradcheck(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    w = (torch.rand(shape[1], dtype=torch.float64, generator=g) + 0.5).requires_grad_()
    b = torch.randn(shape[1], dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: nt.batch_norm_train(*a, eps=1e-3), (x, w, b))


def test_hand_written_backward_equals_autograd_of_functional():
    x = torch.randn(8, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(8, 4, 5, 5, dtype=torch.float64)
    grads_hand = torch.autograd.grad(nt.batch_norm_train(x, w), (x, w), dy)
    grads_auto = torch.autograd.grad(nt.functional.batch_norm(x, None, None, w, training=True), (x, w), dy)
    for a, b in zip(grads_hand, grads_auto):
        torch.testing.assert_close(a, b)


# --- bad input (the parity with torch's errors: tests/test_input_checks.py) -------------

@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_momentum_outside_unit_interval_is_rejected(momentum):
    # PyTorch accepts these silently; normtext raises ValueError (documented in errors.py)
    with pytest.raises(ValueError, match="momentum must be in"):
        nt.BatchNorm1d(3, momentum=momentum)
    with pytest.raises(ValueError, match="momentum must be in"):
        nt.functional.batch_norm(torch.randn(4, 3), None, None, training=True, momentum=momentum)


def test_errors_come_before_arithmetic():
    rm = torch.zeros(3)
    with pytest.raises(ValueError):
        nt.functional.batch_norm(torch.randn(1, 3), rm, torch.ones(3), training=True)
    assert torch.all(rm == 0)  # the running mean was not touched


def test_reference_raises_the_same_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ref.batch_norm(np.ones((1, 3)), training=True)
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 4"):
        ref.batch_norm(np.ones((2, 3)), np.zeros(4), np.ones(3), training=True)
