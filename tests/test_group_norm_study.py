"""The GroupNorm chapter's batch-size study: equal steps, and packed seeds that compute what
separate networks compute."""
import numpy as np
import pytest
import torch

from normtext.experiments import data
from normtext.experiments import group_norm_study as GS
from normtext.experiments.models import small_cnn
from normtext.testing.compare import tolerance


def test_batch_indices_equal_steps_whole_batches_and_fresh_permutations():
    idx = GS.batch_indices(10, 4, steps=7, seed=0)
    assert idx.shape == (7, 4)                       # the same number of steps at any batch size
    # two batches per epoch (the incomplete third dropped): each epoch's 8 indices are distinct
    for epoch in range(3):
        rows = idx[2 * epoch:2 * epoch + 2].ravel()
        assert len(set(rows.tolist())) == len(rows)
    assert not np.array_equal(idx[0:2], idx[2:4])   # a new permutation every epoch
    np.testing.assert_array_equal(idx, GS.batch_indices(10, 4, steps=7, seed=0))
    with pytest.raises(ValueError):
        GS.batch_indices(10, 11, steps=1, seed=0)


@pytest.mark.parametrize("norm", GS.NORMS)
def test_packed_network_computes_what_each_small_cnn_computes(norm):
    nets = []
    for s in (0, 1, 2):
        torch.manual_seed(s)
        nets.append(small_cnn(GS.norm_factory(norm, 4)))
    packed = GS.pack(nets, norm, 4)
    x = torch.randn(6, 3, 8, 8)
    out = packed(x).reshape(6, 3, 10)                # training mode: batch statistics
    for j, net in enumerate(nets):
        with torch.no_grad():
            want = net(x[:, j:j + 1])
        # float32, grouped and plain convolutions sum in different orders: 16 eps sqrt(m) of the
        # largest reduction (the last convolution's 16 * 9 inputs), relative to the output's scale
        err = float((out[:, j].detach() - want).abs().max() / want.abs().max())
        assert err < tolerance("float32", 16 * 9), (j, err)
    # a gradient reaches each network's slice only from its own loss
    out[:, 1].sum().backward()
    first = packed[0].weight.grad.reshape(3, 16, -1)
    assert float(first[0].abs().max()) == 0 and float(first[2].abs().max()) == 0
    assert float(first[1].abs().max()) > 0


@pytest.mark.parametrize("norm", GS.NORMS)
def test_packed_training_step_matches_separate_training(norm):
    """One SGD step of the packed seeds equals one step of each seed's own network."""
    lr = 0.1
    nets = []
    for s in (0, 1):
        torch.manual_seed(s)
        nets.append(small_cnn(GS.norm_factory(norm, 4)))
    packed = GS.pack(nets, norm, 4)
    x, y = torch.randn(4, 2, 8, 8), torch.randint(0, 10, (4, 2))
    logits = packed(x).reshape(8, 10)
    per_net = torch.nn.functional.cross_entropy(logits, y.reshape(-1), reduction="none")
    per_net.reshape(4, 2).mean(0).sum().backward()
    torch.optim.SGD(packed.parameters(), lr=lr).step()
    for j, net in enumerate(nets):
        torch.nn.functional.cross_entropy(net(x[:, j:j + 1]), y[:, j]).backward()
        torch.optim.SGD(net.parameters(), lr=lr).step()
        after = GS.pack(nets, norm, 4)
        for a, b in zip(packed.parameters(), after.parameters()):
            n = a.shape[0] // 2
            err = float((a[j * n:(j + 1) * n] - b[j * n:(j + 1) * n]).detach().abs().max())
            assert err < 1e-6, err   # float32 weights of order 0.1-1 after one step


def test_run_is_cached_and_pairs_the_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    digits = data.digits_8x8()
    cfg = dict(GS.config(quick=True), steps=3, seeds=[0, 1])
    first = GS.run("BatchNorm", 4, digits, cfg)
    assert set(first["test_acc"]) == {0, 1} and first["images"] == 12
    assert len(list(tmp_path.iterdir())) == 1
    assert GS.run("BatchNorm", 4, digits, cfg) == first          # read back from the cache
    other = GS.run("GroupNorm", 4, digits, cfg)
    assert set(other["test_acc"]) == set(first["test_acc"])      # the same seeds: paired


def test_full_config_runs_five_seeds_and_the_batch_sizes_the_chapter_reads():
    cfg = GS.config(quick=False)
    assert len(cfg["seeds"]) >= 5
    assert {2, 32, 64} <= set(cfg["batch_sizes"])
    assert {2, 32, 64} <= set(GS.config(quick=True)["batch_sizes"])
    with pytest.raises(ValueError):
        GS.norm_factory("LayerNorm", 4)
