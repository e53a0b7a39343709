"""normtext's Gluon blocks compute float16 in float32, with the corrected two-pass moments."""
import numpy as np
import pytest

from normtext.testing import numerics, registry

pytest.importorskip("mxnet")

NORMS = ["BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm"]


def _input(case, m, mean_over_std, seed=0):
    rng = np.random.default_rng(seed)
    return mean_over_std + rng.standard_normal(registry.REGISTRY[case].row_shape(m))


@pytest.mark.parametrize("name", NORMS)
def test_float16_statistics_do_not_overflow(name):
    # 4096 values near 1e3 sum to 4e6, far beyond float16's largest number (65,504): a
    # float16 accumulator gives inf or NaN; the blocks must accumulate in float32
    case = registry.REGISTRY[name]
    x16 = _input(name, 4096, 1e3).astype(np.float16)
    got = numerics.normtext_mxnet_implementation(case)(x16)
    assert got.dtype == np.float16
    # the reference normalizes the float16 input itself, in float64: what remains is
    # the float32 arithmetic (~1e-7) and the final rounding to float16 (half an ulp)
    want = numerics.reference_output(case, x16.astype(np.float64))
    assert np.isfinite(got).all()
    ulp = float(np.spacing(np.float16(np.abs(want).max())))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=ulp)


@pytest.mark.parametrize("name", NORMS)
def test_float32_large_mean_keeps_rounding_level_error(name):
    # mean 1e4 standard deviations: the rounding of the float32 mean alone would shift
    # every output by ~1e-3; the corrected two-pass moments remove that shift
    case = registry.REGISTRY[name]
    x32 = _input(name, 4096, 1e4).astype(np.float32)
    got = numerics.normtext_mxnet_implementation(case)(x32).astype(np.float64)
    want = numerics.reference_output(case, x32.astype(np.float64))
    # a few float32 roundings of values of order 1, summed over 4096 terms: 1e-5 is
    # 100 times float32's epsilon and 100 times less than the uncorrected shift
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def gluon_errors():
    cases = [registry.REGISTRY[n] for n in NORMS]
    # MXNet 1.9.1 has no bfloat16 on the CPU; the blocks are compared by their outputs
    return numerics.sweep(cases, sizes=(64, 4096), dtypes=("float32", "float16"), grads=False,
                          mxnet=True, seed=0)


@pytest.mark.parametrize("name", NORMS)
def test_gluon_blocks_never_worse_than_twice_pytorch(gluon_errors, name):
    # the factor-2 rule of tests/test_numerics.py, for normtext's Gluon blocks
    t = numerics.factor_check(gluon_errors[gluon_errors.norm == name],
                              candidate="normtext MXNet")
    assert len(t) > 0
    assert t.ok.all(), f"normtext MXNet more than 2x less accurate than PyTorch:\n{t[~t.ok]}"
