"""Functions that run inside the processes :func:`normtext.distributed.launch` starts.

Spawned processes import what they run by name, so the SyncBatchNorm chapter
and its tests keep their per-process code here, in the package:

* :func:`hello`, :func:`die`, :func:`sleep`: the smallest workers, for the
  launcher's own checks (a result per rank, a killed worker, a hang);
* :func:`sync_bn_run` and :func:`check_equivalence`: the proof that k processes
  with SyncBatchNorm compute what one BatchNorm computes on the concatenated batch;
* :func:`all_reduce_timing`: what the communication costs on this machine;
* :func:`builtin_sync_bn_on_cpu`: what ``torch.nn.SyncBatchNorm`` does on CPU tensors.

The SyncBatchNorm chapter's training experiment runs in the same processes,
from :func:`normtext.experiments.data_parallel.ddp_train`.

Every worker reads its rank from ``torch.distributed``, so the same function
runs under ``torchrun`` too.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from normtext.distributed.launch import resolve
from normtext.testing import timing
from normtext.testing.compare import (Comparison, GluonLayer, ReferenceBatchNorm, TorchLayer,
                                      tolerance)
from normtext.torch import BatchNorm2d, SyncBatchNorm


def _rank_world():
    return dist.get_rank(), dist.get_world_size()


# --- the launcher's own checks ------------------------------------------------------

def hello() -> Dict[str, Any]:
    """Each rank's view of the group, and an all_reduce of the ranks (0 + 1 + ... + k-1)."""
    rank, world = _rank_world()
    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return {"rank": rank, "world_size": world, "pid": os.getpid(),
            "backend": dist.get_backend(), "sum_of_ranks": t.item()}


def several(calls: Sequence[tuple]) -> List[Any]:
    """Run several workers one after another in the same processes (one start-up for all).

    ``calls``: ``(target, args, kwargs)`` with ``target`` as ``"module:function"``.
    """
    return [resolve(target)(*args, **kwargs) for target, args, kwargs in calls]


def die(victim: int = 1) -> int:
    """Rank ``victim`` kills itself with SIGKILL; the others wait in an all_reduce that never completes."""
    rank, _ = _rank_world()
    dist.barrier()
    if rank == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(torch.ones(1))  # blocks: the victim never joins
    return rank


def sleep(seconds: float) -> int:
    """Sleep, then return the rank (a worker that outlives a short timeout)."""
    time.sleep(seconds)
    return _rank_world()[0]


# --- the equivalence proof ------------------------------------------------------------

def case_data(case: Dict[str, Any], seed: int = 0) -> Dict[str, Any]:
    """The global data of one case, the same in every process (a seeded generator).

    ``case``: ``batches`` (samples per rank), ``features`` (``(C,)`` or
    ``(C, H, W)``), ``steps``, optionally ``loc``/``scale`` of the inputs.
    Returns gamma, beta, per step the global input and output gradient
    (float32 values kept as float64), and an evaluation input.
    """
    rng = np.random.default_rng(seed)
    c = case["features"][0]
    shape = (sum(case["batches"]), *case["features"])
    f32 = lambda a: a.astype(np.float32).astype(np.float64)
    loc, scale = case.get("loc", 0.0), case.get("scale", 1.0)
    return {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 1, c),
            "x": [f32(rng.normal(loc, scale, shape)) for _ in range(case["steps"])],
            "dy": [f32(rng.normal(0, 1, shape)) for _ in range(case["steps"])],
            "x_eval": f32(rng.normal(loc, scale, shape))}


def rank_slices(batches: Sequence[int]) -> List[slice]:
    ends = np.cumsum([0, *batches])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def _groups(case, world: int) -> List[List[int]]:
    return [list(g) for g in case.get("groups", [list(range(world))])]


def sync_bn_run(cases: Sequence[Dict[str, Any]], seed: int = 0, layer: str = "normtext",
                device: Optional[str] = None) -> List[Dict[str, Any]]:
    """Train a SyncBatchNorm on this rank's slice of each case; return what it computed.

    ``case["groups"]`` (optional) splits the ranks into process groups, each
    pooling its own statistics (the ``process_group`` argument). ``layer``:
    ``"normtext"`` or ``"builtin"`` (``torch.nn.SyncBatchNorm``, which needs
    GPU tensors); ``device``: default ``cpu``, ``"cuda"`` means this rank's GPU.
    """
    layer_class = SyncBatchNorm if layer == "normtext" else torch.nn.SyncBatchNorm
    if device == "cuda":
        device = f"cuda:{dist.get_rank() % torch.cuda.device_count()}"
    device = torch.device(device or "cpu")

    rank, world = _rank_world()
    runs = []
    for case in cases:
        if len(case["batches"]) != world:
            raise ValueError(f"case has {len(case['batches'])} batches for {world} processes")
        data = case_data(case, seed)
        mine = rank_slices(case["batches"])[rank]
        group = None
        if "groups" in case:   # every rank creates every group, in the same order
            for ranks in _groups(case, world):
                g = dist.new_group(ranks)
                if rank in ranks:
                    group = g
        bn = layer_class(case["features"][0], momentum=case.get("momentum", 0.1),
                           process_group=group).to(device)
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(data["gamma"]))
            bn.bias.copy_(torch.from_numpy(data["beta"]))
        tensor = lambda a: torch.tensor(a, dtype=torch.float32, device=device)
        as_np = lambda t: t.detach().double().cpu().numpy()
        steps = []
        for x, dy in zip(data["x"], data["dy"]):
            bn.zero_grad(set_to_none=True)
            xt = tensor(x[mine]).requires_grad_(True)
            y = bn(xt)
            y.backward(tensor(dy[mine]))
            steps.append({"output": as_np(y), "input grad": as_np(xt.grad),
                          "gamma grad": as_np(bn.weight.grad), "beta grad": as_np(bn.bias.grad)})
        bn.eval()
        with torch.no_grad():
            y_eval = bn(tensor(data["x_eval"][mine]))
        runs.append({"steps": steps, "running_mean": as_np(bn.running_mean),
                     "running_var": as_np(bn.running_var), "eval output": as_np(y_eval)})
    return runs


def check_equivalence(case: Dict[str, Any], per_rank: Sequence[Dict[str, Any]],
                      reference: str = "torch", seed: int = 0, candidate: str = "SyncBatchNorm"):
    """Compare what the ranks computed with one BatchNorm on each group's concatenated batch.

    ``per_rank``: this case's entry of :func:`sync_bn_run` from every rank.
    Outputs and input gradients are concatenated over the ranks of a group;
    gamma/beta gradients are summed over them (the gradient of the summed
    loss, which DDP averages); the running statistics must agree on every rank.
    ``reference``: ``"torch"`` (``torch.nn.BatchNorm`` in float32),
    ``"float64"`` (the NumPy reference), ``"gluon"`` (``gluon.nn.BatchNorm``)
    or ``"float64-mxnet"`` (the NumPy reference in Gluon's convention: biased
    running variance). Returns one
    :class:`normtext.compare.Comparison` per group (not yet asserted), with
    the harness's float32 tolerance for the group's reduction size.
    """

    data = case_data(case, seed)
    slices = rank_slices(case["batches"])
    comparisons = []
    for ranks in _groups(case, len(case["batches"])):
        idx = np.concatenate([np.arange(slices[r].start, slices[r].stop) for r in ranks])
        c = case["features"][0]
        momentum = case.get("momentum", 0.1)
        if reference == "torch":
            cls = torch.nn.BatchNorm1d if len(case["features"]) <= 2 else (
                torch.nn.BatchNorm2d if len(case["features"]) == 3 else torch.nn.BatchNorm3d)
            ref = TorchLayer(cls(c, momentum=momentum),
                             name="torch.nn BatchNorm on the concatenated batch")
        elif reference == "gluon":
            import mxnet as mx
            block = mx.gluon.nn.BatchNorm(in_channels=c, momentum=1 - momentum)
            block.initialize(ctx=mx.cpu())
            ref = GluonLayer(block, name="Gluon BatchNorm on the concatenated batch")
        elif reference in ("float64", "float64-mxnet"):
            convention = "mxnet" if reference == "float64-mxnet" else "torch"
            ref = ReferenceBatchNorm(c, momentum=momentum if convention == "torch" else 1 - momentum,
                                     convention=convention)
            ref.name = f"float64 BatchNorm on the concatenated batch ({convention} convention)"
        else:
            raise ValueError(f"unknown reference {reference!r}")
        ref.set_state({"gamma": data["gamma"], "beta": data["beta"]})
        m = len(idx) * int(np.prod(case["features"][1:]))
        tol = tolerance("float32", m)
        batches = [case["batches"][r] for r in ranks]
        result = Comparison(f"{candidate}, {len(ranks)} processes, batches {batches}",
                            ref.name, "float32")
        for step, (x, dy) in enumerate(zip(data["x"], data["dy"])):
            want = ref.train_step(x[idx], dy[idx], "float32")
            got = {q: np.concatenate([per_rank[r]["steps"][step][q] for r in ranks])
                   for q in ("output", "input grad")}
            got.update({q: sum(per_rank[r]["steps"][step][q] for r in ranks)
                        for q in ("gamma grad", "beta grad")})
            for q in ("output", "input grad", "gamma grad", "beta grad"):
                result.add(q, got[q], want[q], tol)
        want = ref.running_stats()
        for q in ("running_mean", "running_var"):
            for r in ranks:   # the same on every rank of the group
                result.add(q, per_rank[r][q], want[q], tol)
        result.add("eval output", np.concatenate([per_rank[r]["eval output"] for r in ranks]),
                   ref.eval_output(data["x_eval"][idx], "float32"), tol)
        comparisons.append(result)
    return comparisons


# --- what it costs ----------------------------------------------------------------------

def all_reduce_timing(sizes: Sequence[int], repeats: int = 50, dtype: str = "float64",
                      layer_shape: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Median seconds of one ``all_reduce`` of each size, and of a BatchNorm2d step.

    Each size is timed ``repeats`` times after a warm-up, between barriers;
    the median over repeats is taken on every rank and the maximum over ranks
    returned (a collective ends when its slowest member ends). With
    ``layer_shape`` (this rank's ``(N, C, H, W)``) the forward+backward of
    normtext's BatchNorm2d and SyncBatchNorm are timed as well.
    """

    def median_time(fn):
        times = timing.repeat(fn, repeats, warmup=3, before_each=dist.barrier)
        t = torch.tensor([float(np.median(times))])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.item()

    out: Dict[str, Any] = {"sizes": list(sizes), "all_reduce_s": []}
    for n in sizes:
        buf = torch.zeros(n, dtype=getattr(torch, dtype))
        out["all_reduce_s"].append(median_time(lambda: dist.all_reduce(buf)))
    if layer_shape is not None:
        x = torch.randn(*layer_shape, requires_grad=True)
        dy = torch.randn(*layer_shape)
        for name, layer in (("BatchNorm2d", BatchNorm2d(layer_shape[1])),
                            ("SyncBatchNorm", SyncBatchNorm(layer_shape[1]))):
            out[f"{name}_s"] = median_time(lambda: layer(x).backward(dy))
    return out


def builtin_sync_bn_on_cpu() -> str:
    """What ``torch.nn.SyncBatchNorm`` does with CPU tensors inside a gloo process group."""
    try:
        sync_bn_run([{"batches": [4] * _rank_world()[1], "features": (3,), "steps": 1}],
                    layer="builtin")
    except Exception as e:  # noqa: BLE001 - the point is to show it
        return f"{type(e).__name__}: {e}"
    return "no error"
