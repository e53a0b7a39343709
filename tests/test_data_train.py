"""Loaders that need no download, the IDX reader, the training loops and the cache."""
import json

import numpy as np
import pytest
import torch

from normtext.experiments import data, models, train


def test_mnist_5k_split_is_stratified_and_scaled():
    d = data.mnist_5k()
    assert d.X_train.shape == (4000, 1, 28, 28) and d.X_test.shape == (1000, 1, 28, 28)
    assert d.X_train.dtype == np.float32 and 0 <= d.X_train.min() and d.X_train.max() <= 1
    assert np.all(np.bincount(d.y_test) == 100)
    again = data.mnist_5k()
    assert np.array_equal(d.y_train, again.y_train)  # the split is fixed by the seed


def test_digits_8x8():
    d = data.digits_8x8()
    assert d.X_train.shape[1:] == (1, 8, 8) and len(d.X_train) + len(d.X_test) == 1797


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    data.write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    data.write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    X, y = data.load_idx(tmp_path, "t10k")
    assert X.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal((X[:, 0] * 255).round().astype(np.uint8), images)
    np.testing.assert_array_equal(y, labels)


def test_idx_rejects_truncated_and_foreign_files(tmp_path):
    data.write_idx(tmp_path / "a", np.zeros((2, 3), np.uint8))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "b").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        data.read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x89PNG" + raw)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        data.load_idx(tmp_path, "train")


def test_lenet_output_shapes():
    for norm in (None, models.torch_batch_norm, models.normtext_batch_norm):
        net = models.lenet(norm)
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_training_learns_and_is_reproducible():
    d = data.mnist_5k().subset(512, 200)
    run = lambda: train.train_torch(lambda: models.lenet(models.normtext_batch_norm), d, epochs=3, lr=1.0,
                                    batch_size=64, device="cpu", seed=3, progress=False)
    h1, h2 = run(), run()
    assert h1.loss == h2.loss  # same seed, same numbers
    assert h1.loss[-1] < h1.loss[0] and h1.test_acc[-1] > 0.3  # chance is 0.1
    assert h1.device == "cpu" and len(h1.seconds) == 3


def test_cache_reuses_and_keys_by_config(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    calls = []
    def run():
        calls.append(1)
        h = train.History(label="x")
        h.log(1.0, 0.5, 0.4, 0.1)
        return {"runs": [h]}
    a = train.cached("exp", {"lr": 1}, run)
    b = train.cached("exp", {"lr": 1}, run)
    train.cached("exp", {"lr": 2}, run)
    assert len(calls) == 2 and b["runs"][0].loss == a["runs"][0].loss == [1.0]
    assert isinstance(b["runs"][0], train.History)
    assert len(list(tmp_path.glob("exp-*.json"))) == 2
    json.loads(next(tmp_path.glob("exp-*.json")).read_text())


def test_gluon_training_runs():
    pytest.importorskip("mxnet")
    from normtext.experiments import gluon_models as gmodels
    d = data.mnist_5k().subset(256, 100)
    net = gmodels.lenet(gmodels.normtext_batch_norm)
    h = train.train_gluon(net, d, epochs=1, lr=0.5, batch_size=64, seed=0, progress=False)
    assert len(h.loss) == 1 and np.isfinite(h.loss[0]) and h.device == "cpu(0)"


def test_gluon_epoch_timing_pairs_the_epochs_of_the_two_networks(tmp_path, capsys):
    pytest.importorskip("mxnet")
    from normtext.experiments import gluon_models as gmodels
    assert gmodels.main(["--rounds", "2", "--json", str(tmp_path / "lenet.json")]) == 0
    res = json.loads((tmp_path / "lenet.json").read_text())
    built_in, ours = res["seconds_built_in"], res["seconds_normtext"]
    assert len(built_in) == len(ours) == 2 and min(built_in + ours) > 0
    # the ratio is taken per round, then summarised: not a ratio of the medians
    ratios = sorted(t / t0 for t, t0 in zip(ours, built_in))
    assert res["ratio"] == pytest.approx(sum(ratios) / 2)
    assert res["ratio_q1"] <= res["ratio"] <= res["ratio_q3"]
    assert res["environment"]["torch"] == torch.__version__
    assert capsys.readouterr().out.strip() == gmodels.describe(res)


def test_train_step_returns_the_summed_loss_and_the_correct_count():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    X, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with torch.no_grad():
        logits = net(X)
        want_loss = torch.nn.functional.cross_entropy(logits, y).item() * 8
        want_correct = (logits.argmax(1) == y).sum().item()
    before = net.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss, correct = train.train_step(net, opt, torch.nn.CrossEntropyLoss(), X, y)
    assert loss == pytest.approx(want_loss, rel=1e-6) and correct == want_correct
    assert not torch.equal(net.weight, before)          # the step was taken
