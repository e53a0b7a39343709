"""MXNet's SyncBatchNorm (``mxnet.gluon.contrib.nn.SyncBatchNorm``) on several CPU contexts.

MXNet synchronizes inside one process: a single Python thread runs the block
on ``k`` contexts (devices), and the engine's operators meet at a barrier to
pool their sums. On CPU contexts the engine runs operators on
``MXNET_CPU_WORKER_NTHREADS`` worker threads (read once when mxnet is
imported; default 1). With one thread, the operator of context 0 occupies it
while waiting at the barrier for context 1; if the Python thread then issues a
*synchronous* operation before context 1's operator (here: copying a NumPy
output gradient into a new NDArray between the contexts' ``backward()``
calls), that operation waits for the worker thread and the process hangs
forever. With at least ``k`` worker threads, or with every input prepared
before the first SyncBatchNorm operator, it runs. :func:`run_isolated` runs the
layer in a fresh Python process with the variable set and a timeout, so that
the hang can be shown without waiting for it.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from normtext.distributed.workers import case_data, rank_slices

WORKER_THREADS_VAR = "MXNET_CPU_WORKER_NTHREADS"


def gluon_sync_bn_run(case: Dict[str, Any], seed: int = 0,
                      backward: str = "joint") -> List[Dict[str, Any]]:
    """Train Gluon's contrib SyncBatchNorm on ``k = len(case["batches"])`` CPU contexts.

    The data are :func:`normtext.distributed.workers.case_data`'s; context ``i`` gets
    the slice of rank ``i``. Returns, per context, the same dict as one rank of
    :func:`normtext.distributed.workers.sync_bn_run` (outputs, input gradients, the
    context's gamma/beta gradients, running statistics, evaluation output), so
    :func:`normtext.distributed.workers.check_equivalence` can compare it.

    ``backward``: ``"joint"``, one ``autograd.backward`` call for the
    outputs of all contexts; ``"loop"``, one ``y.backward(head)`` per context
    with every head gradient made beforehand; ``"loop-copy"``, the same loop
    with each head copied from NumPy just before its ``backward`` (the pattern
    that hangs with one CPU worker thread).
    """
    # MXNet is optional, and its engine reads MXNET_CPU_WORKER_NTHREADS when it is imported
    import mxnet as mx
    from mxnet import autograd
    from mxnet.gluon.contrib.nn import SyncBatchNorm

    k = len(case["batches"])
    data = case_data(case, seed)
    ctxs = [mx.cpu(i) for i in range(k)]
    c = case["features"][0]
    # Gluon's momentum weighs the old running value: PyTorch's m is Gluon's 1 - m
    layer = SyncBatchNorm(in_channels=c, num_devices=k, momentum=1 - case.get("momentum", 0.1))
    layer.initialize(ctx=ctxs)
    layer.gamma.set_data(mx.nd.array(data["gamma"]))
    layer.beta.set_data(mx.nd.array(data["beta"]))
    slices = rank_slices(case["batches"])
    per_ctx: List[Dict[str, Any]] = [{"steps": []} for _ in ctxs]
    for x, dy in zip(data["x"], data["dy"]):
        xs = [mx.nd.array(x[s], ctx=cx) for s, cx in zip(slices, ctxs)]
        for a in xs:
            a.attach_grad()
        with autograd.record():
            ys = [layer(a) for a in xs]
        if backward == "loop-copy":
            for yv, s, cx in zip(ys, slices, ctxs):
                yv.backward(mx.nd.array(dy[s], ctx=cx))   # a synchronous copy between contexts
        else:
            heads = [mx.nd.array(dy[s], ctx=cx) for s, cx in zip(slices, ctxs)]
            if backward == "joint":
                autograd.backward(ys, heads)
            else:
                for yv, head in zip(ys, heads):
                    yv.backward(head)
        for out, cx, a, yv in zip(per_ctx, ctxs, xs, ys):
            out["steps"].append({
                "output": yv.asnumpy().astype(np.float64),
                "input grad": a.grad.asnumpy().astype(np.float64),
                "gamma grad": layer.gamma.grad(cx).asnumpy().astype(np.float64),
                "beta grad": layer.beta.grad(cx).asnumpy().astype(np.float64)})
    for out, cx, s in zip(per_ctx, ctxs, slices):
        out["running_mean"] = layer.running_mean.data(cx).asnumpy().astype(np.float64)
        out["running_var"] = layer.running_var.data(cx).asnumpy().astype(np.float64)
        y = layer(mx.nd.array(data["x_eval"][s], ctx=cx))   # not recording: inference
        out["eval output"] = y.asnumpy().astype(np.float64)
    return per_ctx


def run_isolated(case, seed: int = 0, worker_threads: Optional[int] = None,
                 timeout: float = 120.0, backward: str = "joint"):
    """:func:`gluon_sync_bn_run` in a fresh Python process with ``MXNET_CPU_WORKER_NTHREADS`` set.

    ``case`` is one case (the result is one run) or a list of cases with the
    same number of contexts (a list of runs, one process start for all).
    ``worker_threads`` defaults to the number of contexts; ``backward`` as in
    :func:`gluon_sync_bn_run`. Raises
    :class:`TimeoutError` when the process does not finish in ``timeout``
    seconds (it is killed), :class:`RuntimeError` when it fails.
    """
    cases = case if isinstance(case, list) else [case]
    k = len(cases[0]["batches"])
    env = dict(os.environ, **{WORKER_THREADS_VAR: str(worker_threads or k)})
    with tempfile.TemporaryDirectory(prefix="normtext-mx-") as tmp:
        request, answer = os.path.join(tmp, "in.pkl"), os.path.join(tmp, "out.pkl")
        with open(request, "wb") as f:
            pickle.dump({"cases": cases, "seed": seed, "backward": backward}, f)
        try:
            proc = subprocess.run([sys.executable, "-m", "normtext.distributed.gluon_sync", request, answer],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:   # subprocess.run kills the child
            raise TimeoutError(
                f"MXNet SyncBatchNorm on {k} CPU contexts with {WORKER_THREADS_VAR}="
                f"{env[WORKER_THREADS_VAR]} and backward={backward!r} did not finish in {timeout:g} s (killed)") from None
        if proc.returncode != 0:
            raise RuntimeError(f"the MXNet process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(answer, "rb") as f:
            runs = pickle.load(f)
    return runs if isinstance(case, list) else runs[0]


def _main(argv: Sequence[str]) -> int:
    request, answer = argv
    with open(request, "rb") as f:
        job = pickle.load(f)
    result = [gluon_sync_bn_run(case, job["seed"], backward=job.get("backward", "joint"))
              for case in job["cases"]]
    with open(answer, "wb") as f:
        pickle.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
