"""Training without normalization (book/no-normalization): SkipInit, Fixup, zero-gamma BN,
scaled weight standardization, adaptive gradient clipping, spectral normalization, PixelNorm.

Each piece is tested by its defining property (an identity block at initialization, the
unit-wise clipping rule written out element by element in float64) or by parity with a
PyTorch built-in (spectral_norm's parametrization, LocalResponseNorm, clip_grad_norm_).
Tolerances come from normtext.testing.compare.tolerance: 16 * eps(dtype) * sqrt(m), m the
number of terms in the largest reduction.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn
from torch.nn.utils import parametrizations

from normtext import torch as nt
from normtext.experiments.data import digits_8x8
from normtext.experiments.no_norm_study import KINDS, residual_net, signal_propagation, train_run
from normtext.testing.compare import tolerance
from normtext.torch import normfree as NF


def max_rel(got, want):
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max().clamp(min=1e-300))


# --- zero-initialized residual branches -----------------------------------------------

def test_skipinit_is_zero_at_init_and_learns():
    gate = NF.SkipInit()
    x = torch.randn(4, 3, requires_grad=True)
    y = gate(x)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert gate.alpha.grad.item() == pytest.approx(x.sum().item(), rel=1e-6)  # dy/dalpha = x
    assert torch.equal(x.grad, torch.zeros_like(x))                            # dy/dx = alpha = 0
    assert NF.SkipInit(1.0)(x).equal(x)


@pytest.mark.parametrize("kind", ["skipinit", "fixup", "bn-zero"])
def test_every_block_is_the_identity_at_init(kind):
    torch.manual_seed(0)
    net = residual_net(kind, depth=6).train()
    feats = net.features(torch.randn(8, 1, 8, 8))
    for before, after in zip(feats[:-1], feats[1:]):
        assert torch.equal(before, after)       # exactly: every branch outputs zero


@pytest.mark.parametrize("kind", ["plain", "bn", "gn", "nf"])
def test_other_blocks_are_not_the_identity(kind):
    torch.manual_seed(0)
    feats = residual_net(kind, depth=3).train().features(torch.randn(8, 1, 8, 8))
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(feats[:-1], feats[1:]))


def test_fixup_scales_and_zeroes():
    def branches():
        torch.manual_seed(0)
        return [nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
                              nn.ReLU(), nn.Conv2d(4, 4, 3)) for _ in range(5)]
    before, after, fc = branches(), branches(), nn.Linear(4, 3)
    assert NF.fixup_init_(after, fc) == 3
    scale = 5 ** (-1 / (2 * 3 - 2))                     # L^{-1/(2m-2)}, L = 5, m = 3
    for b0, b1 in zip(before, after):
        for i in (0, 2):
            torch.testing.assert_close(b1[i].weight, b0[i].weight * scale, rtol=0, atol=0)
        assert torch.count_nonzero(b1[4].weight) == 0 and torch.count_nonzero(b1[4].bias) == 0
    assert torch.count_nonzero(fc.weight) == 0 and torch.count_nonzero(fc.bias) == 0
    with pytest.raises(ValueError, match="same number"):
        NF.fixup_init_([nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 2)])


@pytest.mark.parametrize("norm", [lambda: nn.BatchNorm2d(4), lambda: nt.BatchNorm2d(4),
                                  lambda: nn.GroupNorm(2, 4), lambda: nt.GroupNorm(2, 4)])
def test_zero_init_last_norm(norm):
    branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), norm(), nn.ReLU(),
                           nn.Conv2d(4, 4, 3, padding=1), norm())
    assert NF.zero_init_last_norm_([branch]) == 1
    assert torch.count_nonzero(branch[1].weight) == 4       # the first norm is untouched
    assert torch.equal(branch(torch.randn(2, 4, 5, 5)), torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match="no norm"):
        NF.zero_init_last_norm_([nn.Sequential(nn.Linear(2, 2))])


# --- scaled weight standardization ----------------------------------------------------

def test_relu_gamma_restores_unit_variance():
    # Var(relu(z)) for z ~ N(0, 1): E[relu^2] = 1/2, E[relu] = 1/sqrt(2 pi)
    var = 0.5 - 1 / (2 * math.pi)
    assert NF.RELU_GAMMA ** 2 * var == pytest.approx(1.0, rel=1e-15)


def test_scaled_ws_rows_and_variance():
    torch.manual_seed(0)
    conv = NF.ScaledStdConv2d(32, 64, 3, padding=1, bias=False, gamma=NF.RELU_GAMMA).double()
    with torch.no_grad():
        conv.weight.mul_(7).add_(3)                  # any scale and offset: WS removes both
        conv.gain.uniform_(0.5, 2)
    w = conv.standardized_weight()
    n = 32 * 9
    rows = w.flatten(1)
    assert rows.mean(1).abs().max() < 1e-15 * n
    torch.testing.assert_close(rows.norm(dim=1), conv.gain * NF.RELU_GAMMA, rtol=1e-12, atol=0)
    # with the reference standardization of the more-norms chapter (eps negligible here)
    want = NF.RELU_GAMMA / math.sqrt(n) * nt.more.standardize_weight(conv.weight, eps=0.0)
    torch.testing.assert_close(w, want * conv.gain.view(-1, 1, 1, 1), rtol=1e-12, atol=1e-14)
    # relu of unit Gaussians in, unit variance (times gain^2) out: a statistical check,
    # 8 * 32 * 32 = 8192 outputs per channel, so a 5 % band is many standard errors wide
    with torch.no_grad():
        conv.gain.fill_(1.0)
        y = conv(torch.relu(torch.randn(8, 32, 32, 32, dtype=torch.float64)))
    per_channel = y.var(dim=(0, 2, 3))
    assert per_channel.mean().item() == pytest.approx(1.0, abs=0.05)
    assert set(dict(conv.named_parameters())) == {"weight", "gain"}


def test_scaled_ws_rejects_single_weight_rows():
    with pytest.raises(ValueError, match="more than 1 weight"):
        NF.scaled_standardize_weight(torch.randn(4, 1, 1, 1))


def test_nf_network_tracks_its_expected_variance():
    stats = signal_propagation("nf", depth=12, batch=64, seed=0)
    stem = stats["mean_var"][0]
    for i, var in enumerate(stats["mean_var"]):
        expected = stem + i * 0.2 ** 2      # Var(h_i) = Var(h_0) + i alpha^2
        assert var == pytest.approx(expected, rel=0.15), (i, var, expected)
    plain_bn = signal_propagation("bn", depth=12, batch=64, seed=0)["mean_var"]
    assert plain_bn[-1] > 5 * plain_bn[0]   # BN's residual stream grows with depth


# --- adaptive gradient clipping ----------------------------------------------------------

def agc_by_definition(w: np.ndarray, g: np.ndarray, lam: float, eps: float) -> np.ndarray:
    """The paper's rule, unit by unit, in float64 (a unit is a row; <= 1-D: the whole tensor)."""
    w, g = w.astype(np.float64), g.astype(np.float64).copy()
    units = [np.s_[...]] if w.ndim <= 1 else [np.s_[i] for i in range(w.shape[0])]
    for u in units:
        wn = max(np.linalg.norm(w[u]), eps)
        gn = np.linalg.norm(g[u])
        if gn / wn > lam:
            g[u] = lam * wn / gn * g[u]
    return g


@pytest.mark.parametrize("shape", [(), (7,), (6, 5), (8, 3, 3, 3), (4, 2, 3)])
@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0])
def test_agc_matches_its_definition(shape, lam):
    torch.manual_seed(0)
    w = torch.randn(shape) * torch.rand(shape) * 2
    if len(shape) >= 2:
        w[0] = 0.0                                    # a zero unit: eps takes over
    p = nn.Parameter(w.clone())
    p.grad = torch.randn(shape) * 0.3
    want = agc_by_definition(w.numpy(), p.grad.numpy(), lam, 1e-3)
    NF.adaptive_clip_grad_([p], clip_factor=lam, eps=1e-3)
    m = int(np.prod(shape[1:])) if len(shape) >= 2 else max(1, int(np.prod(shape)))
    np.testing.assert_allclose(p.grad.numpy(), want, rtol=tolerance("float32", m), atol=0)


def test_agc_clips_some_units_only():
    torch.manual_seed(0)
    p = nn.Parameter(torch.ones(3, 4))
    p.grad = torch.tensor([[0.001] * 4, [1.0] * 4, [0.0] * 4])   # ratios 0.001, 1, 0
    factors = NF.adaptive_clip_grad_(p, clip_factor=0.01)
    assert factors[0].flatten().tolist() == pytest.approx([1.0, 0.01, 1.0])
    torch.testing.assert_close(p.grad[1].norm(), 0.01 * p.data[1].norm())
    assert p.grad[0].equal(torch.full((4,), 0.001)) and p.grad[2].equal(torch.zeros(4))
    with pytest.raises(ValueError, match="clip_factor"):
        NF.adaptive_clip_grad_(p, clip_factor=0.0)


def test_agc_versus_clip_grad_norm():
    # one unit: AGC is clip_grad_norm_ with max_norm = lambda * max(||W||, eps)
    torch.manual_seed(0)
    w, g = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    a.grad, b.grad = g.clone(), g.clone()
    NF.adaptive_clip_grad_(a, clip_factor=0.05)
    nn.utils.clip_grad_norm_(b, max_norm=0.05 * w.norm().item())
    # clip_grad_norm_ divides by (total_norm + 1e-6): a relative difference of 1e-6 / ||g||
    torch.testing.assert_close(a.grad, b.grad, rtol=2e-6 / g.norm().item(), atol=0)
    # several units of different scale: clip_grad_norm_ keeps the direction of the whole
    # gradient; AGC changes it, clipping each unit relative to its own weights
    w = torch.stack([torch.full((5,), 10.0), torch.full((5,), 0.1)]).double()
    g = torch.full((2, 5), 0.5, dtype=torch.float64)
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    a.grad, b.grad = g.clone(), g.clone()
    NF.adaptive_clip_grad_(a, clip_factor=0.1)
    nn.utils.clip_grad_norm_(b, max_norm=0.1)
    assert a.grad[0].equal(g[0])                                  # ratio 0.05 < 0.1: untouched
    torch.testing.assert_close(a.grad[1].norm(), 0.1 * w[1].norm())
    cos = lambda x, y: float((x * y).sum() / (x.norm() * y.norm()))
    assert cos(b.grad, g) == pytest.approx(1.0, abs=1e-12)       # same direction, shorter
    assert cos(a.grad, g) < 0.8                                   # a different direction


# --- spectral normalization against torch's parametrization ------------------------------

def _pair(make, seed=0, **kw):
    torch.manual_seed(seed)
    theirs = make()
    ours = make()
    ours.load_state_dict(theirs.state_dict())
    torch.manual_seed(seed + 1)
    parametrizations.spectral_norm(theirs, **kw)
    torch.manual_seed(seed + 1)
    NF.spectral_norm(ours, **kw)
    return ours, theirs


MAKERS = {"linear": (lambda: nn.Linear(20, 12), (5, 20)),
          "conv": (lambda: nn.Conv2d(3, 8, 3), (2, 3, 7, 7)),
          "conv_transpose": (lambda: nn.ConvTranspose2d(8, 3, 3), (2, 8, 5, 5)),
          "float64": (lambda: nn.Linear(6, 30).double(), (4, 6))}


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("n_iter", [1, 3])
def test_spectral_norm_matches_torch(name, n_iter):
    make, shape = MAKERS[name]
    ours, theirs = _pair(make, n_power_iterations=n_iter)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    po, pt = ours.parametrizations.weight[0], theirs.parametrizations.weight[0]
    dtype = str(po._u.dtype).split(".")[-1]
    m = max(po._v.numel(), po._u.numel())
    tol = tolerance(dtype, m)
    # the same draws and the same 15 initial iterations: the same state
    assert po.dim == pt.dim and po._u.shape == pt._u.shape
    torch.testing.assert_close(po._u, pt._u, rtol=tol, atol=tol)
    # (reading ours.weight in training mode would run one more iteration on one side only)
    x = torch.randn(shape, dtype=ours.parametrizations.weight.original.dtype)
    for step in range(4):                     # training: each forward pass iterates n_iter times
        yo, yt = ours(x), theirs(x)
        torch.testing.assert_close(yo, yt, rtol=tol, atol=tol * yt.abs().max().item())
        yo.square().sum().backward()
        yt.square().sum().backward()
        go = ours.parametrizations.weight.original.grad
        gt = theirs.parametrizations.weight.original.grad
        assert max_rel(go, gt) < tol
        for v in ("_u", "_v"):
            torch.testing.assert_close(getattr(po, v), getattr(pt, v), rtol=tol, atol=tol)
    assert max_rel(ours.weight, theirs.weight) < tol
    # sigma of the normalized weight is 1 up to the power iteration's convergence
    mat = ours.weight.detach().movedim(po.dim, 0).flatten(1)
    assert torch.linalg.matrix_norm(mat, 2).item() == pytest.approx(1.0, abs=0.05)
    # evaluation mode: no iteration, the state stays
    u = po._u.clone()
    ours.eval()
    ours(x)
    assert po._u.equal(u)


def test_spectral_norm_state_dict_round_trip_and_errors():
    ours, theirs = _pair(lambda: nn.Linear(7, 5))
    theirs(torch.randn(3, 7))
    ours.load_state_dict(theirs.state_dict())
    assert ours.parametrizations.weight[0]._v.equal(theirs.parametrizations.weight[0]._v)
    v = torch.randn(6)
    torch.testing.assert_close(NF.SpectralNorm(v)(v), v / v.norm())
    for bad, exc in [(dict(dim=2), IndexError), (dict(n_power_iterations=0), ValueError)]:
        with pytest.raises(exc) as theirs_err:
            parametrizations.spectral_norm(nn.Linear(3, 3), **bad)
        with pytest.raises(exc) as ours_err:
            NF.spectral_norm(nn.Linear(3, 3), **bad)
        assert str(ours_err.value) == str(theirs_err.value)
    with pytest.raises(ValueError, match="no parameter"):
        NF.spectral_norm(nn.Linear(3, 3), name="gamma")


# --- PixelNorm as LocalResponseNorm ------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 1, 9), (4, 3, 5, 5), (2, 16, 4, 4), (2, 5, 3, 3, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_norm_is_lrn_over_all_channels(shape, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype) * 3
    C = shape[1]
    want = nn.LocalResponseNorm(**NF.pixel_norm_as_lrn(C, eps=1e-8))(x)
    got = NF.PixelNorm(1e-8)(x)
    tol = tolerance(str(dtype).split(".")[-1], 2 * C)
    assert max_rel(got, want) < tol
    # by definition: each position's vector has root mean square 1 (exactly so with eps = 0)
    rms = NF.pixel_norm(x, eps=0.0).double().square().mean(1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=tol, atol=0)
    # and it is RMSNorm over the channels, without a gain
    moved = TF.rms_norm(x.movedim(1, -1), (C,), eps=1e-8).movedim(-1, 1)
    assert max_rel(got, moved) < tol


def test_lrn_window_must_cover_every_channel():
    torch.manual_seed(0)
    x, C = torch.randn(2, 6, 3, 3, dtype=torch.float64), 6
    pn = NF.pixel_norm(x)
    # any window of at least 2C - 1 channels with alpha = size / C works
    for size in (2 * C - 1, 2 * C + 3):
        y = TF.local_response_norm(x, size, alpha=size / C, beta=0.5, k=1e-8)
        assert max_rel(y, pn) < 1e-13
    # size = C misses channels at the edges: only the middle channel sees them all
    y = TF.local_response_norm(x, C, alpha=1.0, beta=0.5, k=1e-8)
    err = (y - pn).abs().amax(dim=(0, 2, 3))
    assert err[C // 2] < 1e-13 and (err[: C // 2] > 1e-3).all() and (err[C // 2 + 1:] > 1e-3).all()


def test_pixel_norm_rejects_1d():
    with pytest.raises(ValueError, match="axis 1"):
        NF.pixel_norm(torch.randn(5))
    with pytest.raises(ValueError):
        NF.pixel_norm_as_lrn(0)


# --- the study ---------------------------------------------------------------------------

def test_train_run_is_reproducible_and_reports():
    data = digits_8x8().subset(200, 100)
    a = train_run("nf", data, batch_size=16, steps=6, seed=3)
    b = train_run("nf", data, batch_size=16, steps=6, seed=3)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert 0 <= a["clip_fraction"] <= 1 and not a["diverged"]
    c = train_run("bn", data, batch_size=16, steps=6, seed=3)
    assert c["clip_fraction"] is None and 0 <= c["test_acc"] <= 1
    with pytest.raises(ValueError, match="kind"):
        residual_net("layer")
    assert set(KINDS) >= {"bn", "gn", "skipinit", "nf"}


def test_scaled_std_linear_is_linear_with_the_standardized_weight():
    torch.manual_seed(0)
    layer = NF.ScaledStdLinear(12, 5, gamma=NF.RELU_GAMMA)
    x = torch.randn(3, 12)
    want = TF.linear(x, NF.scaled_standardize_weight(layer.weight, layer.gain, NF.RELU_GAMMA), layer.bias)
    assert torch.equal(layer(x), want)
    assert set(dict(layer.named_parameters())) == {"weight", "bias", "gain"}


def test_run_all_runs_every_arm_through_the_cache():
    data = digits_8x8().subset(100, 50)
    cfg = {"arms": ["bn", "nf"], "batch_sizes": [8], "seeds": [0, 1], "steps": 3, "depth": 2,
           "width": 16, "momentum": 0.9}
    calls = []

    def cache(name, config, run):
        calls.append(config)
        return run()
    from normtext.experiments.no_norm_study import hyper, run_all
    runs = run_all(cfg, data, cache)
    assert set(runs) == {(a, 8, s) for a in ("bn", "nf") for s in (0, 1)}
    assert all(c["lr"] == hyper(c["arm"], 8)["lr"] for c in calls)      # the config names the lr
    assert runs[("nf", 8, 0)]["kind"] == "nf" and runs[("bn", 8, 1)]["seed"] == 1
