"""The performance chapter's LayerNorm kernel in steps: every step computes the same as the float64 reference."""
import numpy as np
import pytest

pytest.importorskip("numba")
from normtext.kernels import steps  # noqa: E402


def reference(x, w, b, dy, eps=1e-5):
    """LayerNorm forward and backward in float64, from the formulas."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    mu = x.mean(1, keepdims=True)
    r = 1 / np.sqrt(((x - mu) ** 2).mean(1, keepdims=True) + eps)
    xh = (x - mu) * r
    g = dy * w
    dx = r * (g - g.mean(1, keepdims=True) - xh * (g * xh).mean(1, keepdims=True))
    return xh * w + b, dx, (dy * xh).sum(0), dy.sum(0)


@pytest.mark.parametrize("name", list(steps.STEPS))
@pytest.mark.parametrize("rows,m", [(7, 300), (33, 768)])
def test_step_matches_float64_reference(name, rows, m):
    rng = np.random.default_rng(rows)
    x = rng.normal(3, 2, (rows, m)).astype(np.float32)
    w, b = rng.normal(1, 0.1, m).astype(np.float32), rng.normal(0, 0.1, m).astype(np.float32)
    dy = rng.normal(size=(rows, m)).astype(np.float32)
    got = steps.run_step(name, x, w, b, dy)
    # float32 outputs of size ~1 from sums of up to 768 terms: a few ulps (1.2e-7) times sqrt(m)
    # for y and dx; dgamma/dbeta are sums over rows of size ~sqrt(rows): scaled by that
    for label, a, e in zip(("y", "dx", "dgamma", "dbeta"), got, reference(x, w, b, dy)):
        scale = max(1.0, np.abs(e).max())
        np.testing.assert_allclose(a, e, rtol=0, atol=2e-5 * scale, err_msg=f"{name}: {label}")


def test_a_wrong_step_is_caught():
    """The check above can fail: a backward that forgets the mean of g is off by far more than it allows."""
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(5, 64)).astype(np.float32), rng.normal(size=(5, 64)).astype(np.float32)
    w, b = np.ones(64, np.float32), np.zeros(64, np.float32)
    _, dx, _, _ = steps.run_step("3 one pass each way", x, w, b, dy)
    _, dx_ref, _, _ = reference(x, w, b, dy)
    wrong = dx + (dy * w).mean(1, keepdims=True)  # as if the mean of g were not subtracted
    assert np.abs(wrong - dx_ref).max() > 100 * 2e-5
    np.testing.assert_allclose(dx, dx_ref, atol=2e-5)
