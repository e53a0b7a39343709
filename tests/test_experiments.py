"""The experiments' shared helpers: the verdict rule, the small CNN, the notebook bookkeeping."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from normtext import torch as nt
from normtext.experiments import data, data_parallel, models, notebook, train
from normtext.torch import more as M

from normtext.experiments.verdict import paired_verdict, verdict_rows
from normtext.testing.provenance import environment, environment_line
from normtext.testing.timing import best_of, calibrate, interleaved, measure, per_call, quartiles, repeat

# --- the verdict rule ----------------------------------------------------------------------

# a - b per seed: 1, 2, 3, 6. Mean 3; deviations -2, -1, 0, 3, so the sample variance is
# 14 / 3 and s = 2.1602; t(0.975, 3 degrees of freedom) = 3.182446 from a t table.
HAND_DIFFS = [1.0, 2.0, 3.0, 6.0]
HAND_HALF = 3.182446 * math.sqrt(14 / 3) / 2


def test_interval_matches_a_hand_computation():
    v = paired_verdict(HAND_DIFFS, [0.0] * 4, quick=False)
    assert v.n == 4 and v.mean == pytest.approx(3.0)
    assert v.resolution == pytest.approx(HAND_HALF, rel=1e-6)
    assert (v.low, v.high) == pytest.approx((3.0 - HAND_HALF, 3.0 + HAND_HALF), rel=1e-6)
    # the interval [-0.44, 6.44] contains 0: the claim a > b is not settled
    assert v.outcome == "inconclusive"


@pytest.mark.parametrize("shift, kind, threshold, outcome", [
    (+0.10, "greater", 0.0, "reproduced"),     # a clearly above b
    (-0.10, "greater", 0.0, "contradicted"),   # a clearly below b
    (+0.01, "greater", 0.0, "inconclusive"),   # within the noise
    (+0.10, "greater", 0.5, "contradicted"),   # above b, but by far less than claimed
    (-0.10, "less", 0.0, "reproduced"),
    (+0.10, "less", 0.0, "contradicted"),
    (+0.001, "equal", 0.05, "reproduced"),     # the interval lies inside +-0.05
    (+0.50, "equal", 0.05, "contradicted"),
    (+0.05, "equal", 0.05, "inconclusive"),    # the interval straddles the margin
])
def test_each_outcome(shift, kind, threshold, outcome):
    b = np.array([0.80, 0.85, 0.90, 0.82, 0.88])
    noise = np.array([0.01, -0.01, 0.02, -0.02, 0.0])   # mean 0, s = 0.0158
    v = paired_verdict(b + shift + noise, b, kind=kind, threshold=threshold, quick=False)
    assert v.outcome == outcome, str(v)


def test_pairing_by_seed_matters():
    # the arms differ by exactly +1 seed by seed, but the seeds themselves spread by 10
    b = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    a = b + 1.0 + np.array([0.1, -0.1, 0.0, 0.05, -0.05])
    paired = paired_verdict(a, b, quick=False)
    assert paired.outcome == "reproduced" and paired.resolution < 0.2
    # the same numbers out of seed order: the differences now carry the seeds' spread
    unpaired = paired_verdict(a, b[::-1], quick=False)
    assert unpaired.outcome == "inconclusive" and unpaired.resolution > 10
    # mappings are paired by seed, whatever their order
    by_seed = paired_verdict(dict(enumerate(a)), dict(reversed(list(enumerate(b)))), quick=False)
    assert by_seed == paired


def test_refuses_what_it_cannot_judge():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_verdict([0.9], [0.8])
    with pytest.raises(ValueError, match="different seeds"):
        paired_verdict({0: 0.9, 1: 0.8}, {0: 0.7, 2: 0.8})
    with pytest.raises(ValueError, match="same order"):
        paired_verdict([0.9, 0.8, 0.7], [0.8, 0.7])
    with pytest.raises(ValueError, match="positive threshold"):
        paired_verdict([0.9, 0.8], [0.8, 0.7], kind="equal")
    with pytest.raises(ValueError, match="kind"):
        paired_verdict([0.9, 0.8], [0.8, 0.7], kind="better")


def test_str_and_rows_carry_the_numbers_and_the_quick_label():
    v = paired_verdict(HAND_DIFFS, [0.0] * 4, claim="A beats B", quick=True)
    line = str(v)
    assert "\n" not in line and line.startswith("inconclusive: A beats B")
    assert "95% CI [-0.437, +6.44]" in line and "4 seeds" in line and "means nothing" in line
    assert "means nothing" not in str(paired_verdict(HAND_DIFFS, [0.0] * 4, quick=False))
    row, = verdict_rows([v])
    assert row["verdict"].startswith("inconclusive") and "quick" in row["verdict"]
    assert row["resolves"] == pytest.approx(HAND_HALF, rel=1e-6)


def test_quick_label_follows_the_environment(monkeypatch):
    monkeypatch.setenv("NORMTEXT_QUICK", "1")
    assert paired_verdict([1.0, 2.0], [0.0, 0.0]).quick
    monkeypatch.setenv("NORMTEXT_QUICK", "0")
    assert not paired_verdict([1.0, 2.0], [0.0, 0.0]).quick


# --- timing and provenance (shared by the benchmark, the chapters and the workers) ----------

def test_timing_calls_the_function_as_often_as_it_says():
    calls = []
    fn = lambda: calls.append(1)
    assert per_call(fn, 7) >= 0 and len(calls) == 7
    calls.clear()
    best_of(fn, 4, blocks=3)
    assert len(calls) == 12
    calls.clear()
    barriers = []
    times = repeat(fn, 5, warmup=2, before_each=lambda: barriers.append(len(calls)))
    assert len(times) == 5 and len(calls) == 7
    assert barriers == [2, 3, 4, 5, 6]          # before every timed call, none before the warm-up
    calls.clear()
    number = calibrate(fn, min_time=0.0)
    assert number == 1 and len(calls) == 3      # two warm-up calls and one timed


def test_quartiles_are_sorted_and_exact_on_a_known_series():
    assert quartiles([5.0, 1.0, 3.0, 2.0, 4.0]) == (2.0, 3.0, 4.0)
    assert quartiles([0.5]) == (0.5, 0.5, 0.5)
    q1, med, q3 = measure(lambda: sum(range(100)), repeats=4, min_time=1e-4)
    assert 0 < q1 <= med <= q3
    with pytest.raises(ValueError):
        quartiles([])


def test_environment_dict_and_its_line():
    env = environment("cpu")
    for key in ("date", "normtext", "python", "numpy", "torch", "mxnet", "device", "cpu",
                "torch_threads"):
        assert key in env
    line = environment_line(env)
    assert "\n" not in line and line.startswith(f"normtext {env['normtext']} |")
    assert f"torch {env['torch']}" in line and "| device: CPU (" in line
    assert ("mxnet " + str(env["mxnet"])) in line if env["mxnet"] else "not installed" in line
    missing = environment_line(dict(env, mxnet=None))
    assert "mxnet not installed" in missing and "skipped" in missing


# --- the small CNN ---------------------------------------------------------------------------

def test_small_cnn_settings_of_the_chapters():
    gn = models.small_cnn(models.normtext_group_norm(4))          # GroupNorm and LRN chapters
    assert gn(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert [m.out_channels for m in gn if isinstance(m, nn.Conv2d)] == [16, 16, 32]
    assert all(m.bias is None for m in gn if isinstance(m, nn.Conv2d))   # the norm has a shift
    plain = models.small_cnn(None)
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Conv2d))
    ws = models.small_cnn(lambda c, d: nn.GroupNorm(4, c), channels=(8, 16), pool_after=(0, 1),
                          pooled_side=4, conv=M.WSConv2d)          # weight standardization, 28x28
    assert sum(isinstance(m, nn.MaxPool2d) for m in ws) == 2
    assert ws(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_ws_gn_network_trains_a_step_with_batch_of_one():
    torch.manual_seed(11)
    net = models.small_cnn(lambda c, d: nn.GroupNorm(4, c), channels=(8, 16), pool_after=(0, 1),
                           pooled_side=4, conv=M.WSConv2d)
    x, y = torch.randn(1, 1, 28, 28), torch.tensor([3])
    loss = TF.cross_entropy(net(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_ddp_cnn_converts_only_for_syncbn():
    bn, sync = data_parallel.ddp_cnn("bn"), data_parallel.ddp_cnn("syncbn")
    assert sum(isinstance(m, nt.BatchNorm2d) for m in bn) == 2
    assert sum(isinstance(m, nt.SyncBatchNorm) for m in sync) == 2
    assert not any(isinstance(m, nt.SyncBatchNorm) for m in bn)
    assert bn(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
    with pytest.raises(ValueError, match="'bn' or 'syncbn'"):
        data_parallel.ddp_cnn("gn")


# --- the notebook bookkeeping ----------------------------------------------------------------

def test_setup_seeds_prints_the_environment_and_returns_the_flags(capsys, monkeypatch):
    monkeypatch.setenv("NORMTEXT_QUICK", "1")
    first = notebook.setup(seed=3)
    draw = torch.randn(4)
    out = capsys.readouterr().out
    second = notebook.setup(seed=3)
    torch.testing.assert_close(torch.randn(4), draw)           # the same seed, the same draws
    lines = out.splitlines()
    assert lines[0].startswith("normtext ") and any(l.startswith("device: ") for l in lines)
    assert max(map(len, lines)) <= 80                           # one item a line fits the column
    assert "QUICK" in out and first.quick and isinstance(first.device, torch.device)
    assert first.rng.standard_normal() == second.rng.standard_normal()
    assert ("mxnet not installed" in out) == (not first.has_mxnet)   # said once, in the versions
    # MXNet's import (in seed_everything) sets the shared OpenMP pool to one thread:
    # setup() gives PyTorch the machine's CPUs back, or the count asked for
    assert torch.get_num_threads() == notebook.default_threads()
    notebook.setup(seed=3, threads=1)
    assert torch.get_num_threads() == 1
    notebook.setup(seed=3)
    assert torch.get_num_threads() == notebook.default_threads()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_parity_row_and_error_table():
    class Result:
        rows = [{"quantity": "output", "max rel err": 1e-7}, {"quantity": "grad input", "max rel err": 2e-7}]
        ok = True
    row = notebook.parity_row("ours vs theirs", Result(), input="(N,C)")
    assert list(row) == ["comparison", "input", "output", "grad input", "all within tolerance"]
    assert row["grad input"] == 2e-7 and row["all within tolerance"] is True
    assert notebook.error_of(lambda: 1) == "no error"
    assert notebook.error_of(lambda: int("x")).startswith("ValueError: invalid literal")
    table = notebook.error_table({"negative": lambda f: f(-1.0), "positive": lambda f: f(4.0)},
                                 {"math": math.sqrt, "numpy": np.sqrt})
    assert table.loc["negative", "math"] == "ValueError: math domain error"
    assert table.loc["positive", "math"] == table.loc["positive", "numpy"] == "no error"


def _fake_fit(calls):
    def fit(build, data, *, seed, label, progress, epochs):
        calls.append((label, seed))
        h = train.History(label=label, seed=seed)
        for e in range(epochs):
            h.log(1.0 / (e + 1 + seed), 0.5, 0.5 + 0.01 * seed + 0.1 * (label == "b"), 0.1)
        return h
    return fit


def test_cached_runs_are_computed_once_and_paired_by_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMTEXT_CACHE", str(tmp_path))
    digits = data.digits_8x8().subset(20, 10)
    calls = []
    run = lambda: train.cached_seeds("fake", {"a": None, "b": None}, digits, seeds=[0, 1, 2],
                                     fit=_fake_fit(calls), epochs=2)
    first = run()
    assert len(calls) == 6
    again = run()                                               # every run from the cache
    assert len(calls) == 6 and again == first
    assert train.per_seed(first["b"]) == {0: 0.6, 1: pytest.approx(0.61), 2: pytest.approx(0.62)}
    v = paired_verdict(train.per_seed(first["b"]), train.per_seed(first["a"]), quick=False)
    assert v.outcome == "reproduced" and v.mean == pytest.approx(0.1)
    with pytest.raises(ValueError, match="own seed"):
        train.per_seed(first["a"] + first["a"][:1])


def test_summarize_uses_the_sample_standard_deviation():
    hs = []
    for seed, acc in enumerate([0.8, 0.9]):
        h = train.History(label="x", seed=seed)
        h.log(0.5, 0.9, acc, 1.0)
        hs.append(h)
    table = train.summarize({"x": hs})
    assert table.loc["x", "seeds"] == 2 and table.loc["x", "final test acc"] == pytest.approx(0.85)
    assert table.loc["x", "std over seeds"] == pytest.approx(np.std([0.8, 0.9], ddof=1))


def test_say_picks_the_sentence_of_the_outcome():
    sentences = dict(reproduced="A wins.", contradicted="B wins.", inconclusive="No winner.")
    a, b = [0.9, 0.92, 0.91], [0.8, 0.81, 0.79]
    assert paired_verdict(a, b, quick=False).say(**sentences) == "A wins."
    assert paired_verdict(b, a, quick=False).say(**sentences) == "B wins."
    assert paired_verdict([0.9, 0.7], [0.8, 0.8], quick=False).say(**sentences) == "No winner."
    assert "means nothing" in paired_verdict(a, b, quick=True).say(**sentences)
    assert train.summarize({}).empty


def test_interleaved_rotates_the_order_every_round():
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times, numbers = interleaved(calls, repeats=2, min_time=0.0)
    assert numbers == {"a": 1, "b": 1} and [len(t) for t in times.values()] == [2, 2]
    rounds = order[6:]                      # after calibrate's three calls of each
    assert rounds == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3


def test_environment_line_counts_threads_in_words():
    env = environment("cpu")
    assert environment_line(dict(env, torch_threads=1)).endswith(f"CPU ({env['cpu']}, 1 thread)")
    assert environment_line(dict(env, torch_threads=4)).endswith(f"CPU ({env['cpu']}, 4 threads)")
