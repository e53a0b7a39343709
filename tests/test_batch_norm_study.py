"""The BatchNorm chapter's experiment helpers: MNIST-1D, the 1-D LeNet, the injected shift, the loop."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from normtext import torch as nt
from normtext.experiments import batch_norm_study as S
from normtext.experiments.data import Split

pytest.importorskip("mnist1d")


def test_config_matches_d2l_rate_and_batch_and_runs_five_seeds_in_full_mode():
    full, quick = S.config(False), S.config(True)
    assert (full["lr"], full["batch_size"]) == (1.0, 256)
    assert len(full["seeds"]) >= 5 and len(quick["seeds"]) >= 2
    assert S.steps(full) == full["epochs"] * math.ceil(full["n_train"] / 256)
    assert S.steps(quick) < S.steps(full)


def test_mnist1d_is_generated_offline_deterministically_and_split_exactly():
    a = S.generate_mnist1d(300, 100)
    b = S.generate_mnist1d(300, 100)
    assert a.X_train.shape == (300, 1, 40) and a.X_test.shape == (100, 1, 40)
    assert a.X_train.dtype == np.float32 and a.y_train.dtype == np.int64
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert set(np.unique(a.y_train)) == set(range(10))
    # another seed draws other signals
    assert not np.array_equal(a.X_train, S.generate_mnist1d(300, 100, seed=1).X_train)


def test_mnist1d_split_reads_back_what_was_generated(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    S.mnist1d_split.cache_clear()
    first = S.mnist1d_split(200, 50)
    S.mnist1d_split.cache_clear()
    again = S.mnist1d_split(200, 50)                 # from the disk cache this time
    S.mnist1d_split.cache_clear()
    assert list(tmp_path.glob("mnist1d-*.json"))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype


@pytest.mark.parametrize("arm", sorted(S.ARMS))
def test_every_arm_builds_a_lenet_with_ten_logits(arm):
    torch.manual_seed(0)
    net = S.lenet1d(**S.ARMS[arm])
    assert net(torch.randn(8, 1, 40)).shape == (8, 10)


def test_lenet1d_places_the_norm_before_or_after_the_sigmoid():
    before = [type(m) for m in S.lenet1d(nn.BatchNorm1d)]
    after = [type(m) for m in S.lenet1d(nn.BatchNorm1d, after_activation=True)]
    assert before[:3] == [nn.Conv1d, nn.BatchNorm1d, nn.Sigmoid]
    assert after[:3] == [nn.Conv1d, nn.Sigmoid, nn.BatchNorm1d]
    assert sum(t is nn.BatchNorm1d for t in before) == 4
    assert not any(t is nn.BatchNorm1d for t in S.lenet1d(None))


def test_lenet1d_noise_follows_every_norm_and_only_with_a_norm():
    net = S.lenet1d(nn.BatchNorm1d, noise=True)
    kinds = [type(m) for m in net]
    for i, k in enumerate(kinds):
        if k is nn.BatchNorm1d:
            assert kinds[i + 1] is S.ShiftNoise
    assert not any(isinstance(m, S.ShiftNoise) for m in S.lenet1d(None, noise=True))


def test_xavier_init_zeroes_biases_and_bias_false_removes_them():
    net = S.lenet1d(None, xavier=True)
    for m in net:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            assert m.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    layers = [m for m in S.lenet1d(nn.BatchNorm1d, bias=False) if isinstance(m, (nn.Conv1d, nn.Linear))]
    assert all(m.bias is None for m in layers[:-1])      # every layer followed by a norm
    assert layers[-1].bias is not None                     # the output layer keeps its bias


def test_shift_noise_draws_a_new_channel_mean_and_scale_each_step():
    torch.manual_seed(0)
    noise = S.ShiftNoise(mean=1.0, scale=2.0, noise=0.0).train()
    x = torch.randn(512, 3, 40)
    y1, y2 = noise(x), noise(x)
    # with noise=0 each channel is s_c x + m_c exactly: recover s_c and m_c by least squares
    for y in (y1, y2):
        for c in range(3):
            A = torch.stack([x[:, c].flatten(), torch.ones(x[:, c].numel())], 1).double()
            s, m = torch.linalg.lstsq(A, y[:, c].flatten().double().unsqueeze(1)).solution.flatten()
            assert 1 <= s <= 2 and -1 <= m <= 1
    assert not torch.equal(y1, y2)                   # the draw changes from step to step
    # in evaluation the expected scale, (1 + 2) / 2, and nothing random
    noise.eval()
    torch.testing.assert_close(noise(x), 1.5 * x)


def test_shift_noise_adds_per_activation_noise_of_the_given_size():
    torch.manual_seed(0)
    x = torch.zeros(4096, 2, 8)
    y = S.ShiftNoise(mean=0.0, scale=1.0, noise=0.1).train()(x)
    # s_c x = 0 and m_c = 0: what is left is the per-activation noise, std 0.1
    assert abs(float(y.std()) - 0.1) < 0.005        # 65,536 draws: std error about 3e-4


def _tiny_data(n_train=512, n_test=128):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n_train + n_test)
    X = (rng.normal(size=(n_train + n_test, 1, 40)) * 0.3 + y[:, None, None] / 5).astype(np.float32)
    return Split(X[:n_train], y[:n_train].astype(np.int64), X[n_train:], y[n_train:].astype(np.int64))


def test_fit_is_reproducible_and_logs_every_epoch():
    data = _tiny_data()
    build = lambda: S.lenet1d(nn.BatchNorm1d)
    a = S.fit(build, data, epochs=3, lr=0.5, batch_size=64, seed=3)
    b = S.fit(build, data, epochs=3, lr=0.5, batch_size=64, seed=3)
    c = S.fit(build, data, epochs=3, lr=0.5, batch_size=64, seed=4)
    assert len(a.loss) == len(a.test_acc) == 3 and a.seed == 3
    assert a.loss == b.loss and a.test_acc == b.test_acc       # same seed, same run, bit for bit
    assert a.loss != c.loss
    assert all(0 <= v <= 1 for v in a.test_acc)


def test_fit_learns_an_easy_task_with_batch_norm():
    # the class is a shift of the whole signal: BN LeNet learns it in a few epochs
    h = S.fit(lambda: S.lenet1d(nn.BatchNorm1d), _tiny_data(1024, 256), epochs=8, lr=1.0,
              batch_size=64, seed=0)
    assert h.loss[-1] < h.loss[0]
    assert h.test_acc[-1] > 0.3                                  # chance is 0.1


def test_run_caches_by_arm_seed_and_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    monkeypatch.setattr(S, "mnist1d_split", lambda n_train, n_test: _tiny_data(n_train, n_test))
    cfg = dict(S.config(True), n_train=256, n_test=64, epochs=1, batch_size=64)
    first = S.run("BN", 0, cfg)
    assert S.run("BN", 0, cfg).loss == first.loss                 # read back from the cache
    assert len(list(tmp_path.glob("bn-lenet1d-*.json"))) == 1
    S.run("BN", 0, cfg, lr=0.1)
    S.run("from-scratch BN", 0, cfg)
    assert len(list(tmp_path.glob("bn-lenet1d-*.json"))) == 3


def test_from_scratch_arm_uses_the_package_layer():
    net = S.lenet1d(**S.ARMS["from-scratch BN"])
    assert any(isinstance(m, nt.BatchNorm1d) for m in net)
    frozen = S.lenet1d(**S.ARMS["BN, gamma/beta frozen"])
    assert all(m.weight is None for m in frozen if isinstance(m, nn.BatchNorm1d))
