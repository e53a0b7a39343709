"""SyncBatchNorm (normtext.torch.sync) on real processes, and the launcher that starts them.

The proof: k processes holding b samples each, with normtext's SyncBatchNorm,
compute what one BatchNorm computes on the concatenated k*b samples: output,
input gradient, gamma/beta gradients (summed over processes, as DDP's average
is up to 1/k), running statistics (on every process) and the evaluation
output, within the harness's float32 tolerance 16 eps sqrt(m) for the global
reduction size m. Each ``launch`` starts fresh Python processes (seconds each on
a small machine), so all cases of one world size share one launch.
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from torch import nn

from normtext import torch as nt
from normtext.distributed import workers as workers
from normtext.testing.compare import TorchLayer, compare_layers
from normtext.distributed import LaunchTimeout, WorkerError, launch

K2_CASES = {
    "NC equal": {"batches": [4, 4], "features": (5,), "steps": 3},
    "NC unequal": {"batches": [3, 6], "features": (5,), "steps": 3},
    "NC one sample on a process": {"batches": [1, 2], "features": (3,), "steps": 2},
    "NCHW equal": {"batches": [2, 2], "features": (4, 3, 5), "steps": 2},
    "NCHW unequal": {"batches": [1, 3], "features": (4, 3, 3), "steps": 2},
    "NC momentum None": {"batches": [5, 3], "features": (3,), "steps": 3, "momentum": None},
    "NCHW empty slice on a process": {"batches": [0, 3], "features": (3, 2, 2), "steps": 2},
}
K4_CASES = {
    "NCHW unequal": {"batches": [1, 2, 3, 2], "features": (3, 4, 4), "steps": 2},
    "NC two process groups": {"batches": [2, 3, 4, 1], "features": (4,), "steps": 2,
                              "groups": [[0, 1], [2, 3]]},
}


@pytest.fixture(scope="module")
def k2_runs():
    return launch(workers.sync_bn_run, 2, args=(list(K2_CASES.values()),), timeout=240)


@pytest.fixture(scope="module")
def k4_runs():
    return launch(workers.sync_bn_run, 4, args=(list(K4_CASES.values()),), timeout=240)


@pytest.mark.parametrize("name", list(K2_CASES))
def test_two_processes_equal_one_batch_norm_on_the_concatenated_batch(k2_runs, name):
    i = list(K2_CASES).index(name)
    for comparison in workers.check_equivalence(K2_CASES[name], [r[i] for r in k2_runs]):
        comparison.assert_ok()


@pytest.mark.parametrize("name", list(K4_CASES))
def test_four_processes_equal_one_batch_norm_per_group(k4_runs, name):
    i = list(K4_CASES).index(name)
    comparisons = workers.check_equivalence(K4_CASES[name], [r[i] for r in k4_runs])
    assert len(comparisons) == len(K4_CASES[name].get("groups", [0]))
    for comparison in comparisons:
        comparison.assert_ok()


def test_against_the_float64_reference(k2_runs):
    i = list(K2_CASES).index("NCHW unequal")
    for comparison in workers.check_equivalence(K2_CASES["NCHW unequal"], [r[i] for r in k2_runs],
                                                reference="float64"):
        comparison.assert_ok()


def test_the_check_can_fail(k2_runs):
    """Per-process statistics (what plain BN under DDP computes) are caught by the same check."""
    i = list(K2_CASES).index("NC unequal")
    runs = [r[i] for r in k2_runs]
    case = K2_CASES["NC unequal"]
    data = workers.case_data(case)
    x, gamma, beta = data["x"][0], data["gamma"], data["beta"]
    local = [x[s] for s in workers.rank_slices(case["batches"])]
    wrong = [dict(r, steps=[dict(r["steps"][0], output=(xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5)
                                 * gamma + beta)] + r["steps"][1:]) for r, xs in zip(runs, local)]
    [comparison] = workers.check_equivalence(case, wrong)
    assert not comparison.ok
    assert [r["quantity"] for r in comparison.rows if not r["ok"]] == ["output"]


# --- the launcher -------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_killed_worker_is_reported_and_nothing_is_left_behind():
    with pytest.raises(WorkerError) as info:
        launch(workers.die, 2, kwargs={"victim": 1}, timeout=120)
    err = info.value
    assert err.rank == 1
    assert "worker 1 of 2" in str(err) and "SIGKILL" in str(err)
    assert len(err.pids) == 2 and not any(_alive(pid) for pid in err.pids)
    assert _port_is_free(err.port)


def test_an_error_in_every_worker_is_raised_not_hung():
    """One sample in all: every process learns the global count, so all raise together."""
    case = {"batches": [1, 0], "features": (3,), "steps": 1}
    with pytest.raises(WorkerError, match="Expected more than 1 value per channel") as info:
        launch(workers.sync_bn_run, 2, args=([case],), timeout=120)
    assert not any(_alive(pid) for pid in info.value.pids)


def test_a_hanging_run_times_out():
    with pytest.raises(LaunchTimeout) as info:
        launch(workers.sleep, 2, args=(600,), timeout=8)
    assert not any(_alive(pid) for pid in info.value.pids)
    assert _port_is_free(info.value.port)


def test_only_importable_functions_are_launched():
    with pytest.raises(ValueError, match="importable"):
        launch(lambda: 0, 2)


# --- the module without a process group ----------------------------------------------------

def test_without_a_process_group_it_is_batch_norm():
    compare_layers(TorchLayer(nt.SyncBatchNorm(4)), TorchLayer(nn.BatchNorm2d(4)),
                   (6, 4, 3, 3), steps=3).assert_ok()


def test_state_dict_and_repr_like_torch():
    ours, theirs = nt.SyncBatchNorm(5, momentum=None), nn.SyncBatchNorm(5, momentum=None)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    assert ours.process_group is None


def test_convert_sync_batchnorm_like_torch():
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Sequential(nt.BatchNorm2d(4, momentum=None)), nn.Flatten(),
                             nn.Linear(4, 2), nn.BatchNorm1d(2, affine=False))
    source = net().eval()
    ours = nt.SyncBatchNorm.convert_sync_batchnorm(source)
    theirs = nn.SyncBatchNorm.convert_sync_batchnorm(net().eval())
    converted = [type(m).__name__ for m in ours.modules() if isinstance(m, nt.SyncBatchNorm)]
    assert len(converted) == 3
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours[1].weight is source[1].weight          # shared, not copied
    assert not ours[1].training and ours[3][0].momentum is None and not ours[6].affine
    # a BatchNorm itself is returned as a new SyncBatchNorm
    assert isinstance(nt.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(3)), nt.SyncBatchNorm)


def test_empty_global_batch_is_batch_norms_empty_batch():
    """No process holds a sample: nothing to normalize, the running statistics stay (as in
    BatchNorm), the parameters get zero gradients; the count 1 is still refused."""
    from normtext.torch.sync import SyncBatchNormFunction
    weight, bias = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    mean, var = torch.full((3,), 0.5), torch.full((3,), 2.0)
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    y = SyncBatchNormFunction.apply(x, weight, bias, mean, var, 1e-5, 0.1, None, 1)
    y.sum().backward()
    assert y.shape == x.grad.shape == x.shape
    assert torch.equal(mean, torch.full((3,), 0.5)) and torch.equal(var, torch.full((3,), 2.0))
    assert torch.equal(weight.grad, torch.zeros(3)) and torch.equal(bias.grad, torch.zeros(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        SyncBatchNormFunction.apply(torch.randn(1, 3), weight, bias, mean, var, 1e-5, 0.1, None, 1)


def test_global_statistics_are_accurate_far_from_zero():
    """The float64 combination n, S, Q keeps the variance at mean 1e4, std 1 (world size 1)."""
    from normtext.torch.sync import global_batch_stats
    x = torch.randn(64, 3, 8, 8, dtype=torch.float64) + 1e4
    n, mean, var = global_batch_stats(x.float())
    want = x.float().double().var(dim=(0, 2, 3), unbiased=False)
    assert n == 64 * 64
    torch.testing.assert_close(var, want, rtol=1e-4, atol=0)


# --- MXNet: gluon.contrib.nn.SyncBatchNorm on CPU contexts ----------------------------------

def test_mxnet_sync_batch_norm_on_cpu_contexts():
    """Equal batches: Gluon BatchNorm on the concatenated batch. Unequal batches (MXNet 1.9.1):
    the unweighted average over contexts of E[x] and E[x^2], not the global batch's statistics."""
    pytest.importorskip("mxnet")
    from normtext.distributed.gluon_sync import run_isolated
    equal = {"batches": [4, 4], "features": (3, 2, 2), "steps": 2}
    unequal = {"batches": [3, 5], "features": (3,), "steps": 1}
    runs_equal, runs_unequal = run_isolated([equal, unequal], timeout=180)
    for reference in ("gluon", "float64-mxnet"):
        for comparison in workers.check_equivalence(equal, runs_equal, reference=reference):
            comparison.assert_ok()
    [comparison] = workers.check_equivalence(unequal, runs_unequal, reference="gluon")
    assert not comparison.ok
    d = workers.case_data(unequal)
    x, slices = d["x"][0], workers.rank_slices(unequal["batches"])
    e_x = np.mean([x[s].mean(0) for s in slices], axis=0)
    e_x2 = np.mean([(x[s] ** 2).mean(0) for s in slices], axis=0)
    model = (x - e_x) / np.sqrt(e_x2 - e_x ** 2 + 1e-5) * d["gamma"] + d["beta"]
    got = np.concatenate([r["steps"][0]["output"] for r in runs_unequal])
    np.testing.assert_allclose(got, model, rtol=0, atol=16 * np.finfo(np.float32).eps * np.abs(model).max())
