"""The all_reduce cost model of the SyncBatchNorm chapter: formulas, the fit, ResNet-50's layers."""
import numpy as np
import pytest

from normtext.distributed import comm_cost

SIZES = 8 * np.array([1, 129, 1025, 2 ** 13, 2 ** 16, 2 ** 18])   # bytes, as the chapter times them


def _measurements(alpha, beta, noise=0.0, seed=0, ks=(2, 4)):
    rng = np.random.default_rng(seed)
    return [(k, float(n), comm_cost.ring_all_reduce_seconds(n, k, alpha, beta)
             * float(np.exp(rng.normal(0, noise)))) for k in ks for n in SIZES]


def test_ring_and_tree_formulas():
    assert comm_cost.ring_all_reduce_seconds(1000, 1, 1e-5, 1e-9) == 0.0
    assert comm_cost.ring_all_reduce_seconds(1000, 4, 1e-5, 1e-9) == pytest.approx(6e-5 + 1.5e-6)
    assert comm_cost.tree_all_reduce_seconds(1000, 5, 1e-5, 1e-9) == pytest.approx(6 * (1e-5 + 1e-6))


def test_fit_recovers_exact_parameters():
    alpha, beta = comm_cost.fit_ring(_measurements(5e-5, 1e-9))
    # float64 least squares on six orders of magnitude: a few hundred ulps at most
    assert alpha == pytest.approx(5e-5, rel=1e-9)
    assert beta == pytest.approx(1e-9, rel=1e-9)


def _ratios(points, fits):
    """Model over measurement for every point, with ``fits[k] = (alpha, beta)``."""
    return np.array([comm_cost.ring_all_reduce_seconds(n, k, *fits[k]) / t for k, n, t in points])


@pytest.mark.parametrize("seed", range(5))
def test_fitted_line_passes_through_its_points(seed):
    # Timings scatter multiplicatively (10 % here) over six orders of magnitude of
    # message size: the fit must follow the small messages as closely as the large
    # ones. With 10 % noise the honest fit stays within a factor of about 1.3 of
    # every point; 1.5 leaves room for the draws of five seeds.
    points = _measurements(5e-5, 1e-9, noise=0.1, seed=seed)
    alpha, beta = comm_cost.fit_ring(points)
    ratios = _ratios(points, {2: (alpha, beta), 4: (alpha, beta)})
    assert np.all((ratios > 1 / 1.5) & (ratios < 1.5)), ratios
    assert alpha > 0 and beta > 0


def test_per_k_fit_follows_oversubscribed_processes():
    # Measured on a 2-core machine: 4 processes wait for each other's time slices,
    # so each ring step of k=4 takes about 6 times as long as one of k=2. One
    # (alpha, beta) for both k put the k=2 line about 4x above its own points (the
    # chapter's figure once showed that); a fit per k follows each k's points.
    points = (_measurements(1.5e-4, 1e-9, noise=0.1, seed=1, ks=(2,))
              + _measurements(9e-4, 1.5e-9, noise=0.1, seed=2, ks=(4,)))
    joint = comm_cost.fit_ring(points)
    joint_ratios = _ratios(points, {2: joint, 4: joint})
    assert max(joint_ratios.max(), 1 / joint_ratios.min()) > 2   # one model cannot follow both k
    fits = comm_cost.fit_ring_by_k(points)
    assert sorted(fits) == [2, 4]
    ratios = _ratios(points, fits)
    assert np.all((ratios > 1 / 1.5) & (ratios < 1.5)), ratios
    assert fits[4][0] / fits[2][0] == pytest.approx(6, rel=0.3)


def test_fit_never_returns_negative_parameters():
    # pure latency with a little jitter: the free fit's beta would be negative
    points = [(k, float(n), 2 * (k - 1) * 1e-4 * j)
              for k in (2, 4) for n, j in zip(SIZES, (1.1, 1.05, 1.0, 1.0, 0.95, 0.9))]
    alpha, beta = comm_cost.fit_ring(points)
    assert alpha > 0 and beta == 0.0
    with pytest.raises(ValueError):
        comm_cost.fit_ring([(2, 8.0, 0.0), (2, 16.0, 1e-4)])


def test_resnet50_layers_and_step_cost():
    channels = comm_cost.resnet50_bn_channels()
    assert len(channels) == 53 and sum(channels) == 26560
    # per layer one all_reduce of 2C + 1 and one of 2C float64 numbers
    t = comm_cost.sync_bn_step_seconds([64], 2, 0.0, 1.0)
    assert t == pytest.approx(8 * (129 + 128) * 2 * 1 / 2)
