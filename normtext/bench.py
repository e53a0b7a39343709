"""Speed of normtext's layers against the built-ins and against the memory roofline.

Run ``python -m normtext.bench [--quick] [--device cuda] [--out FILE]``.

For every norm normtext implements (:mod:`normtext.registry`) and input shapes
typical of CNNs (``N, C, H, W``) and Transformers (``batch, tokens, width``),
it times, side by side in one run,

* the built-in (``torch.nn.functional``),
* normtext eager: :mod:`normtext.torch.functional`, from tensor operations,
* normtext compiled: ``torch.compile`` of that same function (Inductor fuses
  its operations into a few loops),
* compiled affine: ``torch.compile`` of the norm's last step alone,
  ``y = x * gamma + beta`` with the norm's parameter layout (:func:`affine_step`).
  Every compiled implementation of the norm does at least this work in the
  same framework (the call through the compiled graph, reading ``x`` and
  writing ``y``; in the backward, ``dx`` and the reductions for ``dgamma`` and
  ``dbeta``), so its time is a floor for the compiled path: where the floor is
  slower than the built-in, no from-scratch code compiled this way can match it
  on that machine and shape;
* fused: :mod:`normtext.kernels`, one hand-written kernel each way (Numba on
  the CPU, Triton on CUDA), where the norm has one (LayerNorm, RMSNorm,
  GroupNorm); its first call, which compiles the kernels or loads them from
  Numba's cache, is timed on its own (``first_call_s``).

for the forward pass (training mode, the graph recorded) and for the forward
plus backward pass. Every implementation is timed in each of ``repeats``
rounds, in rotating order, so that a slow moment of a shared machine hits all
of them; a round keeps the fastest of three short blocks of calls; the ratio
to the built-in is taken per round and summarised by its median and
quartiles. Compilation is timed separately (the first call).

The roofline: normalization does a few flops per element and must read and
write every element, so its speed limit is the memory bandwidth. The same run
measures the device's copy bandwidth (``y.copy_(x)``: ``2 * bytes`` moved)
and reports each implementation's *achieved* bandwidth, the least traffic the
operation needs divided by its time, as a fraction of it:

* forward: read ``x``, write ``y`` (plus the parameters);
* forward + backward: also read ``dy`` and ``x`` again, write ``dx`` (plus the
  parameter gradients).

A fused kernel that streams the data once or twice per pass gets close to 1;
eager code that materialises ``x - mean``, its square, ``x_hat`` ... moves many
times the minimum and gets a fraction of it.

On CUDA the results file (``--out``, default ``gpu-bench.json``) records the
GPU's name, the driver, the torch and CUDA versions and the date.
``--json PATH`` writes ``{"provenance": ..., "records": [...]}``: one record
per (norm, shape, pass, implementation) with its ratio to the built-in, the
ratio's quartiles and the achieved fraction of the copy bandwidth
(:func:`records`), and the machine, threads, versions and date once.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from normtext import kernels, mxnet_available
from normtext.testing import registry
from normtext.testing.provenance import environment
from normtext.testing.timing import calibrate, interleaved, per_call, quartiles, sync_for

IMPLS = ("built-in", "normtext eager", "normtext compiled")
FLOOR = "compiled affine"  # the floor of the compiled path, timed beside IMPLS
FUSED = "fused"  # normtext.kernels: Numba on the CPU, Triton on CUDA, where the norm has one
# the implementation names of the --json records
SHORT_NAMES = {"built-in": "built-in", "normtext eager": "eager", "normtext compiled": "compiled",
               FLOOR: "floor", FUSED: "fused"}
PASSES = ("forward", "forward+backward")
QUICK_NORMS = ("BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm")


def copy_bandwidth(device: str = "cpu", nbytes: int = 256 * 2**20, repeats: int = 5,
                   min_time: float = 0.05) -> Dict[str, float]:
    """The device's copy bandwidth in bytes/s: ``y.copy_(x)`` reads and writes ``nbytes``."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    y = torch.empty_like(x)
    sync = sync_for(device)
    fn = lambda: y.copy_(x)
    number = calibrate(fn, sync, min_time)
    rates = [2 * x.numel() * 4 / per_call(fn, number, sync) for _ in range(repeats)]
    lo, med, hi = quartiles(rates)
    return {"bytes_per_s": med, "q1": lo, "q3": hi, "buffer_bytes": x.numel() * 4}


def traffic_bytes(case: registry.NormCase, shape, itemsize: int, backward: bool) -> int:
    """The least data the pass must move: every tensor read or written once."""
    numel = math.prod(shape)
    params = 0
    if case.affine is not None:
        pshape, has_bias = case.affine(shape)
        params = math.prod(pshape) * (2 if has_bias else 1) * itemsize
    forward = 2 * numel * itemsize + params          # read x, write y, read gamma/beta
    if not backward:
        return forward
    return forward + 3 * numel * itemsize + params   # read dy and x, write dx; write dgamma/dbeta


# --- one benchmark case --------------------------------------------------------------

def affine_step(case: registry.NormCase) -> Callable:
    """``(x, weight, bias) -> x * weight + bias``, the parameters laid out as the norm's spec says.

    The last step of every affine norm, without the statistics: the least work
    a compiled implementation of the norm can do.
    """
    def affine(x, weight, bias):
        view = case.spec.param_shape(x.shape)
        y = x * weight.reshape(view)
        return y if bias is None else y + bias.reshape(view)
    return affine


def inductor_loops(case: registry.NormCase, shape, fn: Optional[Callable] = None) -> Dict[str, int]:
    """How many parallel loops Inductor generates for a norm on the CPU, forward and backward.

    Compiles ``fn`` (default: normtext's function for ``case``), runs one
    forward and backward pass, and counts the ``#pragma omp for`` loops in the
    C++ it generated for each graph (the backward graph is the one that takes
    ``tangents``). On a memory-bound operation each loop over a tensor larger
    than the cache streams it from memory once more; PyTorch's CPU LayerNorm
    kernel makes one loop over the rows in each direction.

    The code is generated for at least two threads: for one thread Inductor
    writes serial loops, without the pragma to count.
    """
    from torch._inductor import config as inductor_config
    from torch._inductor.utils import run_and_get_code
    fn = fn or registry.implementations(case)["normtext"]
    x, w, b, dy = _inputs(case, shape)
    torch._dynamo.reset()
    forward_backward = _pass_fn(torch.compile(fn), x, w, b, dy, backward=True)
    with inductor_config.patch({"cpp.threads": max(2, torch.get_num_threads())}):
        _, sources = run_and_get_code(forward_backward)
    counts = {"forward": 0, "backward": 0}
    for source in sources:
        graph = "backward" if "tangents_" in source else "forward"
        counts[graph] += source.count("#pragma omp for")
    return counts


def _inputs(case: registry.NormCase, shape, device: str = "cpu",
            dtype: torch.dtype = torch.float32):
    """``(x, weight, bias, dy)`` for one case, seeded; ``x`` and the parameters require grad."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    dy = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    w, b = registry.make_params(case, shape, device=device, dtype=dtype, requires_grad=True)
    return x, w, b, dy


def _pass_fn(fn: Callable, x, w, b, dy, backward: bool) -> Callable:
    inputs = tuple(t for t in (x, w, b) if t is not None)
    if not backward:
        return lambda: fn(x, w, b)
    # torch.autograd.grad: the gradients are returned, not accumulated into .grad
    return lambda: torch.autograd.grad(fn(x, w, b), inputs, dy)


def fused_implementation(case: registry.NormCase, device: str = "cpu") -> Optional[Callable]:
    """``(x, weight, bias) -> y`` by :mod:`normtext.kernels`, or None.

    None when the kernels have no such norm, or their compiler for ``device``
    (Numba on the CPU, Triton on CUDA) is not installed.
    """
    if not hasattr(kernels.functional, case.functional):
        return None
    ready = kernels.triton_available() if device.startswith("cuda") else kernels.numba_available()
    if not ready:
        return None
    return lambda x, w, b: case.call(kernels.functional, x, w, b)


def bench_case(case: registry.NormCase, shape, *, device: str = "cpu",
               dtype: torch.dtype = torch.float32, repeats: int = 5, min_time: float = 0.02,
               compile: bool = True, bandwidth: Optional[float] = None,
               candidate: Optional[Callable] = None, fused: bool = True) -> List[dict]:
    """Time every implementation of one norm on one input shape; one row per (pass, impl).

    ``candidate``: ``(x, weight, bias) -> y`` to time instead of normtext's
    function, eager and compiled (to try a variant of the formula).
    ``fused``: also time :mod:`normtext.kernels` where it has the norm; its
    first call (Numba's or Triton's compilation, or loading it from the cache)
    is timed on its own and reported as ``first_call_s``.
    """
    impls = registry.implementations(case)
    if candidate is not None:
        impls["normtext"] = candidate
    fns: Dict[str, Callable] = {"built-in": impls["built-in"], "normtext eager": impls["normtext"]}
    compile_s = None
    x, w, b, dy = _inputs(case, shape, device, dtype)
    sync = sync_for(device)
    if compile:
        torch._dynamo.reset()  # a fresh cache: this case's compile time is its own
        compiled = torch.compile(impls["normtext"])
        sync()
        start = time.perf_counter()
        _pass_fn(compiled, x, w, b, dy, backward=True)()  # compiles the forward and backward graphs
        sync()
        compile_s = time.perf_counter() - start
        fns["normtext compiled"] = compiled
        if case.affine is not None:
            fns[FLOOR] = torch.compile(affine_step(case))
    first_call_s = None
    kernel = fused_implementation(case, device) if fused else None
    if kernel is not None:
        sync()
        start = time.perf_counter()
        _pass_fn(kernel, x, w, b, dy, backward=True)()  # compiles (or loads) forward and backward
        sync()
        first_call_s = time.perf_counter() - start
        fns[FUSED] = kernel

    rows = []
    itemsize = torch.empty((), dtype=dtype).element_size()
    # the roofline of this working set: a copy of a tensor the size of x, timed in the
    # same rounds (on a CPU a small x stays in cache, which is faster than DRAM)
    x_copy, y_copy = x.detach().clone(), torch.empty_like(x.detach())
    copy_call = lambda: y_copy.copy_(x_copy)
    same_size_bw = None
    for backward in (False, True):
        pass_name = PASSES[backward]
        calls = {name: _pass_fn(fn, x, w, b, dy, backward) for name, fn in fns.items()}
        if same_size_bw is None:
            calls["copy"] = copy_call
        times, numbers = interleaved(calls, repeats, sync, min_time)
        names = list(calls)
        if "copy" in times:
            same_size_bw = 2 * x.numel() * itemsize / statistics.median(times.pop("copy"))
            names.remove("copy")
        nbytes = traffic_bytes(case, shape, itemsize, backward)
        for name in names:
            ratios = [t / t0 for t, t0 in zip(times[name], times["built-in"])]
            q1, med, q3 = quartiles(times[name])
            r1, rmed, r3 = quartiles(ratios)
            row = {"norm": case.name, "shape": "x".join(map(str, shape)), "pass": pass_name,
                   "impl": name, "median_s": med, "q1_s": q1, "q3_s": q3,
                   "ratio": rmed, "ratio_q1": r1, "ratio_q3": r3, "bytes": nbytes,
                   "achieved_bytes_per_s": nbytes / med,
                   "copy_bytes_per_s_same_size": same_size_bw,
                   "roofline_fraction": nbytes / med / same_size_bw,
                   "roofline_fraction_large_copy": (nbytes / med / bandwidth) if bandwidth else None,
                   "compile_s": compile_s if name == "normtext compiled" else None,
                   "first_call_s": first_call_s if name == FUSED else None,
                   "repeats": repeats, "calls_per_repeat": numbers[name]}
            rows.append(row)
    return rows


# --- MXNet Gluon (CPU): the built-in block, hybridized and not, and normtext's block ------

MXNET_IMPLS = ("Gluon built-in", "Gluon built-in hybridized", "normtext Gluon")


def _gluon_blocks(name: str, shape):
    """``(Gluon's block factory, normtext's block factory)`` for a norm, or None."""
    from mxnet import gluon
    from normtext import mxnet as ntm
    groups = registry.group_count(shape[1])
    table = {
        "BatchNorm": (lambda: gluon.nn.BatchNorm(), lambda: ntm.BatchNorm()),
        "LayerNorm": (lambda: gluon.nn.LayerNorm(), lambda: ntm.LayerNorm()),
        "GroupNorm": (lambda: gluon.nn.GroupNorm(num_groups=groups),
                      lambda: ntm.GroupNorm(num_groups=groups)),
        "InstanceNorm": (lambda: gluon.nn.InstanceNorm(), lambda: ntm.InstanceNorm()),
    }
    if name not in table or not hasattr(ntm, name):
        return None
    return table[name]


def bench_mxnet_case(case: registry.NormCase, shape, *, repeats: int = 5,
                     min_time: float = 0.02) -> List[dict]:
    """Gluon's block (eager and ``hybridize()``-d) against normtext's Gluon block, on the CPU.

    normtext's Gluon blocks are ``Block``s, not ``HybridBlock``s (the
    BatchNorm hybridizes its arithmetic inside, in sub-blocks), so
    ``hybridize()`` does not apply to them. Training mode
    (``autograd.record()``); the ratio is to Gluon's block without hybridization.
    """
    import mxnet as mx
    from mxnet import autograd
    factories = _gluon_blocks(case.name, shape)
    if factories is None:
        return []
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.standard_normal(shape), dtype="float32")
    dy = mx.nd.array(rng.standard_normal(shape), dtype="float32")
    x.attach_grad()
    blocks = {}
    for name, make in zip(MXNET_IMPLS, (factories[0], factories[0], factories[1])):
        block = make()
        block.initialize(ctx=mx.cpu())
        if name.endswith("hybridized"):
            block.hybridize(static_alloc=True, static_shape=True)
        blocks[name] = block
    sync = mx.nd.waitall

    def forward(block):
        def f():
            with autograd.record():
                block(x).wait_to_read()
        return f

    def forward_backward(block):
        def f():
            with autograd.record():
                y = block(x)
            y.backward(dy)
        return f

    rows = []
    for backward, make_call in ((False, forward), (True, forward_backward)):
        calls = {name: make_call(b) for name, b in blocks.items()}
        times, numbers = interleaved(calls, repeats, sync, min_time)
        names = list(calls)
        for name in names:
            ratios = [t / t0 for t, t0 in zip(times[name], times["Gluon built-in"])]
            q1, med, q3 = quartiles(times[name])
            r1, rmed, r3 = quartiles(ratios)
            rows.append({"norm": case.name, "shape": "x".join(map(str, shape)),
                         "pass": PASSES[backward], "impl": name, "median_s": med, "q1_s": q1,
                         "q3_s": q3, "ratio": rmed, "ratio_q1": r1, "ratio_q3": r3,
                         "repeats": repeats, "calls_per_repeat": numbers[name]})
    return rows


def format_mxnet_table(results: dict) -> str:
    """The MXNet rows as text: time of Gluon's block and ratios to it."""
    rows = results.get("mxnet_rows") or []
    if not rows:
        return ""
    cols, widths = ["norm", "shape", "pass", "Gluon ms", "hybridized/Gluon",
                    "normtext/Gluon"], [12, 14, 16, 9, 18, 18]
    lines = ["MXNet Gluon on the CPU (normtext's blocks are Blocks: hybridize() does not apply)",
             "  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    by_key: Dict[tuple, Dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["norm"], r["shape"], r["pass"]), {})[r["impl"]] = r
    for (norm, shape, p), d in by_key.items():
        fr = lambda r: f"{r['ratio']:.2f} [{r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}]"
        cells = [norm, shape, p, f"{1e3 * d['Gluon built-in']['median_s']:.3f}",
                 fr(d["Gluon built-in hybridized"]), fr(d["normtext Gluon"])]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


# --- the whole run -----------------------------------------------------------------

def run(*, quick: bool = False, device: str = "cpu", dtype: str = "float32",
        norms: Optional[Sequence[str]] = None, shapes: Optional[Dict[str, Sequence]] = None,
        repeats: Optional[int] = None, min_time: Optional[float] = None,
        compile: bool = True, bandwidth_bytes: Optional[int] = None, mxnet: bool = False,
        fused: bool = True, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Benchmark every available norm; returns ``{"environment", "bandwidth", "rows"}``.

    ``shapes`` maps a norm's name to the shapes to time (default: the registry's
    quick or full shapes); ``norms`` restricts the norms. ``mxnet``: also the
    Gluon blocks (``"mxnet_rows"``; a whole network's epochs, Gluon's BatchNorm
    against normtext's, are timed by ``python -m normtext.experiments.gluon_models``).
    """
    if quick:
        norms = norms or QUICK_NORMS
    repeats = repeats or (7 if quick else 11)
    min_time = min_time or (0.005 if quick else 0.03)
    torch_dtype = getattr(torch, dtype)
    if bandwidth_bytes is None:
        bandwidth_bytes = (2**30 if device.startswith("cuda") else
                           (64 if quick else 256) * 2**20)
    progress(f"copy bandwidth on {device} ({bandwidth_bytes / 2**20:.0f} MiB buffer)")
    bw = copy_bandwidth(device, bandwidth_bytes, repeats=repeats)
    rows: List[dict] = []
    for case in registry.available_norms(norms):
        case_shapes = (shapes or {}).get(case.name) or (case.quick_shapes if quick else case.shapes)
        for shape in case_shapes:
            progress(f"{case.name} {tuple(shape)}")
            rows += bench_case(case, tuple(shape), device=device, dtype=torch_dtype,
                               repeats=repeats, min_time=min_time, compile=compile,
                               bandwidth=bw["bytes_per_s"], fused=fused)
    mxnet_rows: List[dict] = []
    if mxnet:
        if not mxnet_available():
            progress("MXNet is not installed: no Gluon rows")
        else:
            for case in registry.available_norms(norms):
                for shape in (shapes or {}).get(case.name) or (
                        case.quick_shapes if quick else case.shapes):
                    progress(f"MXNet {case.name} {tuple(shape)}")
                    mxnet_rows += bench_mxnet_case(case, tuple(shape), repeats=repeats,
                                                   min_time=min_time)
    bw_end = copy_bandwidth(device, bandwidth_bytes, repeats=repeats)
    bw["bytes_per_s_at_end"] = bw_end["bytes_per_s"]
    env = environment(device)
    env.update({"dtype": dtype, "quick": quick, "repeats": repeats, "min_time_s": min_time})
    out = {"environment": env, "bandwidth": bw, "rows": rows}
    if mxnet:
        out["mxnet_rows"] = mxnet_rows
    return out


# --- output ------------------------------------------------------------------------

def table_rows(results: dict) -> List[dict]:
    """One row per (norm, shape, pass): time of the built-in, ratios and roofline fractions."""
    out: Dict[tuple, dict] = {}
    for r in results["rows"]:
        key = (r["norm"], r["shape"], r["pass"])
        row = out.setdefault(key, {"norm": r["norm"], "shape": r["shape"], "pass": r["pass"]})
        short = {"built-in": "built-in", "normtext eager": "eager",
                 "normtext compiled": "compiled", FLOOR: "affine", FUSED: "fused"}[r["impl"]]
        if r["impl"] == "built-in":
            row["built-in ms"] = 1e3 * r["median_s"]
            row["built-in ms IQR"] = 1e3 * (r["q3_s"] - r["q1_s"])
        else:
            row[f"{short} / built-in"] = r["ratio"]
            row[f"{short} ratio IQR"] = (r["ratio_q1"], r["ratio_q3"])
        row[f"{short} % of copy BW"] = (100 * r["roofline_fraction"]
                                        if r["roofline_fraction"] is not None else None)
        if r["compile_s"] is not None:
            row["compile s"] = r["compile_s"]
        if r.get("first_call_s") is not None:
            row["fused first call s"] = r["first_call_s"]
    return list(out.values())


def format_table(results: dict) -> str:
    """The ratio table as text."""
    env, bw = results["environment"], results["bandwidth"]
    where = env.get("gpu") or f"CPU {env['cpu']}, {env['torch_threads']} threads"
    head = (f"normtext.bench | {where} | torch {env['torch']} | {env['dtype']} | {env['date']}\n"
            f"copy bandwidth: {bw['bytes_per_s'] / 1e9:.2f} GB/s at start, "
            f"{bw['bytes_per_s_at_end'] / 1e9:.2f} GB/s at end "
            f"(median of {env['repeats']}; {bw['buffer_bytes'] / 2**20:.0f} MiB buffer)\n"
            f"ratios: time / built-in time, median [quartiles] over {env['repeats']} paired rounds\n"
            f"affine/bi: y = x * gamma + beta alone, compiled: the floor of the compiled path\n"
            f"fused/bi: normtext.kernels (Numba on the CPU, Triton on CUDA); 1st s: its first "
            f"call (compilation, or loading it from the cache)\n"
            f"%BW: least traffic (bytes read + written once) / time / bandwidth of a copy of x "
            f"timed in the same rounds\n")
    cols = ["norm", "shape", "pass", "built-in ms", "eager/bi", "compiled/bi", "affine/bi",
            "fused/bi", "%BW bi", "%BW eager", "%BW comp", "%BW fused", "compile s", "1st s"]
    widths = [12, 14, 16, 11, 18, 18, 18, 18, 7, 9, 8, 9, 9, 6]
    fmt_ratio = lambda row, k: (f"{row[k + ' / built-in']:.2f} [{row[k + ' ratio IQR'][0]:.2f}-"
                                f"{row[k + ' ratio IQR'][1]:.2f}]"
                                if k + " / built-in" in row else "-")
    fmt_pct = lambda v: "-" if v is None else f"{v:.0f}"
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in table_rows(results):
        cells = [row["norm"], row["shape"], row["pass"], f"{row['built-in ms']:.3f}",
                 fmt_ratio(row, "eager"), fmt_ratio(row, "compiled"), fmt_ratio(row, "affine"),
                 fmt_ratio(row, "fused"),
                 fmt_pct(row.get("built-in % of copy BW")), fmt_pct(row.get("eager % of copy BW")),
                 fmt_pct(row.get("compiled % of copy BW")), fmt_pct(row.get("fused % of copy BW")),
                 f"{row['compile s']:.1f}" if row.get("compile s") is not None else "-",
                 f"{row['fused first call s']:.1f}" if row.get("fused first call s") is not None
                 else "-"]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return head + "\n".join(lines)


def write(results: dict, path: str) -> None:
    """Save the results: ``.csv`` (one row per measurement, provenance as columns) or JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".csv"):
        env = {f"env_{k}": v for k, v in results["environment"].items()}
        env["env_copy_bytes_per_s"] = results["bandwidth"]["bytes_per_s"]
        rows = [{**r, **env} for r in results["rows"]]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def provenance(results: dict) -> dict:
    """Where and when a run was made, once per ``--json`` file: the machine, threads, versions, date."""
    env = dict(results["environment"])
    env["cpu_model"] = _cpu_model()
    for package in ("numba", "triton", "llvmlite"):
        try:
            env[package] = __import__(package).__version__
        except ImportError:
            env[package] = None
    env["copy_bytes_per_s"] = results["bandwidth"]["bytes_per_s"]
    return env


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def records(results: dict) -> List[dict]:
    """One record per (norm, shape, pass, implementation), as ``--json`` writes them.

    ``ratio``: median time over the built-in's, per paired round, with its
    quartiles ``ratio_q1``/``ratio_q3``; ``copy_fraction``: the least traffic
    of the pass over its median time, as a fraction of the bandwidth of a
    copy of ``x`` timed in the same rounds.
    """
    return [{"norm": r["norm"], "shape": r["shape"], "pass": r["pass"],
             "implementation": SHORT_NAMES[r["impl"]], "ratio": r["ratio"],
             "ratio_q1": r["ratio_q1"], "ratio_q3": r["ratio_q3"],
             "copy_fraction": r["roofline_fraction"], "median_s": r["median_s"],
             "first_call_s": r.get("first_call_s") if r["impl"] == FUSED else r.get("compile_s")}
            for r in results["rows"]]


def write_json(results: dict, path: str) -> None:
    """``{"provenance": {...}, "records": [...]}``: :func:`provenance` once, :func:`records`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"provenance": provenance(results), "records": records(results)}, f, indent=1)


def read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m normtext.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one small shape per norm, fewer repeats (< 2 min on a 2-core CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--norms", nargs="*", help="restrict to these norms (registry names)")
    p.add_argument("--repeats", type=int, help="paired rounds per measurement")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--mxnet", action="store_true",
                   help="also time Gluon's blocks (eager, hybridized) and normtext's (CPU)")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's; 1 is steadier on a busy machine)")
    p.add_argument("--out", help="results file (.json or .csv); on CUDA default gpu-bench.json")
    p.add_argument("--json", metavar="PATH",
                   help="write one record per (norm, shape, pass, implementation) and the "
                        "provenance once")
    p.add_argument("--no-fused", action="store_true", help="skip normtext.kernels")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = run(quick=args.quick, device=args.device, dtype=args.dtype, norms=args.norms,
                  repeats=args.repeats, compile=not args.no_compile, mxnet=args.mxnet,
                  fused=not args.no_fused,
                  progress=lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
    results["environment"]["wall_s"] = time.perf_counter() - start
    print(format_table(results))
    if args.mxnet:
        print(format_mxnet_table(results))
    print(f"total {results['environment']['wall_s']:.0f} s")
    out = args.out or ("gpu-bench.json" if args.device.startswith("cuda") else None)
    if out:
        write(results, out)
        print(f"results written to {out}")
    if args.json:
        write_json(results, args.json)
        print(f"records written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
