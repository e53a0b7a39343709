"""The unified view (seed 003): one generic normalization reproduces BN, LN, IN and GN."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from normtext import numpy as ref
from normtext.numpy import unified
from normtext.spec import BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM

SHAPES = [(4, 6, 5), (3, 6, 4, 5), (2, 6, 2, 3, 4)]
# float64 roundoff of a two-pass standardization over at most a few hundred elements
ATOL = 1e-12


def _cases(shape, rng):
    """(spec, kwargs, the built-in it must equal) for BN, LN over 1..ndim-1 axes, IN, GN."""
    x = rng.normal(2, 3, shape)
    t = torch.tensor(x)
    c = shape[1]
    w, b = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
    wt, bt = torch.tensor(w), torch.tensor(b)
    yield BATCH_NORM, {}, TF.batch_norm(t, None, None, training=True), x
    yield BATCH_NORM, dict(weight=w, bias=b), TF.batch_norm(t, None, None, wt, bt, True), x
    for k in range(1, len(shape)):
        ns = shape[-k:]
        lw = rng.uniform(0.5, 1.5, ns)
        yield LAYER_NORM, dict(k=k, weight=lw), TF.layer_norm(t, ns, torch.tensor(lw)), x
    yield INSTANCE_NORM, dict(weight=w, bias=b), TF.instance_norm(t, weight=wt, bias=bt), x
    for g in (1, 2, 3, 6):
        yield GROUP_NORM, dict(groups=g, weight=w, bias=b), TF.group_norm(t, g, wt, bt), x


@pytest.mark.parametrize("shape", SHAPES)
def test_generic_normalization_reproduces_bn_ln_in_gn(shape, rng):
    for spec, kw, want, x in _cases(shape, rng):
        got = unified.normalize(x, spec, **kw)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=ATOL,
                                   err_msg=f"{spec.name} {kw.keys()}")


def test_generic_normalization_equals_the_numpy_references(rng):
    x = rng.normal(size=(3, 6, 4, 4))
    w, b = rng.uniform(0.5, 1.5, 6), rng.normal(size=6)
    np.testing.assert_allclose(unified.normalize(x, BATCH_NORM, weight=w, bias=b),
                               ref.batch_norm(x, weight=w, bias=b, training=True).y, atol=ATOL)
    np.testing.assert_allclose(unified.normalize(x, INSTANCE_NORM, weight=w, bias=b),
                               ref.instance_norm(x, weight=w, bias=b).y, atol=ATOL)
    np.testing.assert_allclose(unified.normalize(x, GROUP_NORM, groups=3, weight=w, bias=b),
                               ref.group_norm(x, 3, w, b).y, atol=ATOL)


@pytest.mark.parametrize("spec,kw,description", [
    (BATCH_NORM, {}, "(N*H*W, C)"), (LAYER_NORM, {"k": 3}, "(C*H*W, N)"),
    (INSTANCE_NORM, {}, "(H*W, N*C)"), (GROUP_NORM, {"groups": 2}, "(C/G*H*W, N*G)")])
def test_reshape_step_gives_seed_003s_matrices(spec, kw, description):
    """Seed 003: BN reshapes NCHW to (NHW, C); LN transposes to (CHW, N); IN and GN change the reshape."""
    shape = (4, 6, 3, 5)
    mv = unified.to_matrix(np.zeros(shape), spec, **kw)
    assert mv.description == description
    n, c, h, w = shape
    rows = {"(N*H*W, C)": n * h * w, "(C*H*W, N)": c * h * w, "(H*W, N*C)": h * w,
            "(C/G*H*W, N*G)": c // 2 * h * w}[description]
    assert mv.matrix.shape == (rows, np.prod(shape) // rows)


@pytest.mark.parametrize("spec,kw", [(BATCH_NORM, {}), (LAYER_NORM, {"k": 2}), (INSTANCE_NORM, {}),
                                     (GROUP_NORM, {"groups": 3})])
def test_reshape_back_is_the_inverse(spec, kw, rng):
    x = rng.normal(size=(2, 6, 3, 4))
    mv = unified.to_matrix(x, spec, **kw)
    np.testing.assert_array_equal(mv.back(mv.matrix), x)


def test_normalized_sets_have_the_specs_sizes():
    shape = (4, 6, 3, 5)
    assert unified.normalized_set(shape, BATCH_NORM, (0, 0, 0, 0)).sum() == 4 * 3 * 5
    assert unified.normalized_set(shape, LAYER_NORM, (0, 0, 0, 0), k=3).sum() == 6 * 3 * 5
    assert unified.normalized_set(shape, INSTANCE_NORM, (0, 0, 0, 0)).sum() == 3 * 5
    mask = unified.normalized_set(shape, GROUP_NORM, (1, 2, 0, 0), groups=3)
    assert mask.sum() == 2 * 3 * 5 and mask[1, 2:4].all() and not mask[0].any()


def test_group_norm_spans_instance_norm_to_layer_norm(rng):
    x = rng.normal(size=(3, 6, 4, 4))
    np.testing.assert_allclose(unified.normalize(x, GROUP_NORM, groups=1),
                               unified.normalize(x, LAYER_NORM, k=3), atol=ATOL)
    np.testing.assert_allclose(unified.normalize(x, GROUP_NORM, groups=6),
                               unified.normalize(x, INSTANCE_NORM), atol=ATOL)


def test_seed_recover_as_in_bn_is_wrong_for_layer_norm(rng):
    """Seed 003 says LN is BN on the transposed matrix, "rest is same": gamma per column is wrong.

    LN's gamma is per element of normalized_shape, i.e. per row of the (C*H*W, N)
    matrix, not per column (sample): a per-column gamma would depend on the sample.
    """
    x = rng.normal(size=(4, 6))
    gamma = rng.uniform(0.5, 1.5, 6)
    want = TF.layer_norm(torch.tensor(x), (6,), torch.tensor(gamma)).numpy()
    np.testing.assert_allclose(unified.normalize(x, LAYER_NORM, weight=gamma), want, atol=ATOL)
    mv = unified.to_matrix(x, LAYER_NORM)                 # (C, N): columns are samples
    x_hat = (mv.matrix - mv.matrix.mean(0)) / np.sqrt(mv.matrix.var(0) + 1e-5)
    assert np.allclose(mv.back(x_hat * gamma[:, None]), want)          # per row: right
    with pytest.raises(ValueError):                                       # per column: no such gamma
        mv.back(x_hat * gamma[None, :])


def test_grouped_spec_needs_groups():
    with pytest.raises(ValueError, match="groups"):
        unified.normalize(np.zeros((2, 6, 3)), GROUP_NORM)
