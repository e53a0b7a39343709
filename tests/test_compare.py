"""The harness must fail when a layer is wrong: a harness that cannot fail proves nothing."""
import numpy as np
import pytest
import torch

from normtext.testing import compare
from normtext import torch as nt
from normtext.experiments.sources import D2L_NAMES, D2LBatchNorm


def test_harness_catches_the_biased_running_variance():
    with pytest.raises(compare.ToleranceError, match="running_var"):
        compare.compare_layers(compare.TorchLayer(D2LBatchNorm(3, 2), names=D2L_NAMES),
                               compare.TorchLayer(torch.nn.BatchNorm1d(3)), (8, 3))


def test_harness_reports_training_quantities_equal_for_d2l_layer():
    result = compare.compare_layers(compare.TorchLayer(D2LBatchNorm(3, 2), names=D2L_NAMES),
                                    compare.TorchLayer(torch.nn.BatchNorm1d(3)), (8, 3), check=False)
    rows = {r["quantity"]: r for r in result.rows}
    assert rows["output"]["ok"] and rows["input grad"]["ok"] and rows["running_mean"]["ok"]
    assert not rows["running_var"]["ok"] and not rows["eval output"]["ok"]
    # biased vs unbiased: the running variances differ by far more than rounding
    assert rows["running_var"]["max rel err"] > 100 * rows["running_var"]["tolerance"]


def test_d2l_layer_detects_prediction_mode_by_grad_mode_not_eval():
    """Seed 003's code uses batch statistics in eval() unless gradients are off."""
    torch.manual_seed(0)
    m = D2LBatchNorm(3, 2).eval()
    x = torch.randn(16, 3) * 5 + 3
    y = m(x)  # eval() but grad enabled: still batch statistics
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    # one update from (0, 1) with D2L's momentum 0.9 and the biased variance
    moving_mean = 0.1 * x.mean(0)
    moving_var = 0.9 + 0.1 * x.var(0, unbiased=False)
    with torch.no_grad():
        y = m(x)  # now the moving averages, as in prediction mode
    torch.testing.assert_close(y, (x - moving_mean) / torch.sqrt(moving_var + 1e-5))
    # and that is far from standardized: the batch mean is ~3, the moving mean ~0.3
    assert y.mean(0).abs().min() > 0.5


def test_harness_catches_a_wrong_momentum_convention():
    ours = nt.BatchNorm1d(3, momentum=0.9)  # Gluon's number in PyTorch's meaning
    with pytest.raises(compare.ToleranceError, match="running_mean"):
        compare.compare_layers(compare.TorchLayer(ours),
                               compare.ReferenceBatchNorm(3, momentum=0.9, convention="mxnet"), (8, 3))


def test_tolerance_scales_with_dtype_and_size():
    assert compare.tolerance("float16", 100) > compare.tolerance("float32", 100) > compare.tolerance("float64", 100)
    assert compare.tolerance("float32", 400) == pytest.approx(2 * compare.tolerance("float32", 100))


def test_comparison_flags_nan():
    c = compare.Comparison("a", "b", "float32")
    c.add("output", np.array([np.nan, 1.0]), np.array([0.0, 1.0]), 1e-3)
    with pytest.raises(compare.ToleranceError):
        c.assert_ok()


def test_comparison_table_keeps_worst_step():
    c = compare.Comparison("a", "b", "float32")
    c.add("output", np.array([1.0]), np.array([1.0]), 1e-3)
    c.add("output", np.array([1.1]), np.array([1.0]), 1e-3)
    assert not c.ok and c.table.loc["output", "max abs err"] == abs(1.1 - 1.0)  # exactly, in float64
