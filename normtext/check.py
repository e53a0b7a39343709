"""Parity of every normtext layer with PyTorch's and with the float64 reference.

Run ``python -m normtext.check [--device cuda|cpu] [--dtype float32 ...]``.

For every norm of the registry (:mod:`normtext.testing.registry`) it runs the
comparison harness (:func:`normtext.testing.compare.compare_layers`: outputs, input
and parameter gradients over several training steps, running statistics,
evaluation output, each against the tolerance :func:`normtext.testing.compare.tolerance`) for

* normtext's module against ``torch.nn``'s, both on the device, and
* normtext's module against the float64 NumPy reference (on the CPU),

and, for information, PyTorch's module against the same reference. It prints a
pass/fail table and exits with status 1 when a normtext comparison fails. A
dtype the device does not implement for a layer (``NotImplementedError``, e.g.
PyTorch's LocalResponseNorm in float16 on the CPU) is shown as ``n/a`` and not
counted. It needs neither Jupyter nor MXNet.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as tnn

from normtext import torch as nt
from normtext.spec import NormSpec
from normtext.testing import compare, registry
from normtext.testing.provenance import environment


@dataclass
class Check:
    """One comparison: two adapter factories and the input they see."""

    norm: str
    candidate: Callable        # () -> harness adapter
    reference: Callable        # () -> harness adapter
    shape: tuple
    spec: NormSpec
    groups: Optional[int] = None
    counts: bool = True        # False: shown for information, not part of the exit status
    builtin: Optional[Callable] = None  # () -> PyTorch's adapter: does the device support a dtype?


def default_checks(device: str = "cpu", norms: Optional[Sequence[str]] = None) -> List[Check]:
    """The comparisons for every norm of the registry (or those named in ``norms``)."""
    checks = []
    for case in registry.norms(norms):
        shape = case.check_shape
        groups = registry.group_count(shape[1]) if case.spec.grouped else None
        ours = lambda case=case, shape=shape: compare.TorchLayer(
            case.module(nt, shape), name=f"normtext.{type(case.module(nt, shape)).__name__}",
            device=device)
        theirs = lambda case=case, shape=shape: compare.TorchLayer(
            case.module(tnn, shape), device=device)
        common = dict(shape=shape, spec=case.spec, groups=groups, builtin=theirs)
        checks.append(Check(case.name, ours, theirs, **common))
        ref = lambda case=case, shape=shape: case.harness_reference(compare, shape)
        checks.append(Check(case.name, ours, ref, **common))
        checks.append(Check(case.name, theirs, ref, counts=False, **common))
    return checks


def run_checks(checks: Sequence[Check], dtypes: Sequence[str] = ("float32",),
               steps: int = 3) -> List[dict]:
    """Run every check in every dtype; one row per comparison."""
    rows = []
    for c in checks:
        for dtype in dtypes:
            cand, ref = _in_dtype(c.candidate(), dtype), _in_dtype(c.reference(), dtype)
            kwargs = {"groups": c.groups} if c.groups is not None else {}
            start = time.perf_counter()
            unsupported = False
            try:
                result = compare.compare_layers(cand, ref, c.shape, steps=steps, dtype=dtype,
                                                spec=c.spec, check=False, **kwargs)
                worst = max(result.rows, key=lambda r: r["max rel err"] / r["tolerance"])
                ok, detail = result.ok, (f"{worst['quantity']}: {worst['max rel err']:.1e} "
                                         f"/ tol {worst['tolerance']:.1e}")
            except Exception as e:  # a crash is a failure too, and says why
                ok, detail = False, f"{type(e).__name__}: {e}"[:120]
                # ... unless PyTorch itself does not implement this dtype on this device
                unsupported = isinstance(e, NotImplementedError) and _builtin_lacks(c, dtype)
            rows.append({"norm": c.norm, "candidate": cand.name, "reference": ref.name,
                         "dtype": dtype, "shape": "x".join(map(str, c.shape)), "ok": ok,
                         "counts": c.counts and not unsupported, "unsupported": unsupported,
                         "worst": detail,
                         "seconds": time.perf_counter() - start})
    return rows


def _in_dtype(adapter, dtype: str):
    """A PyTorch module's parameters and buffers in ``dtype``, as a user runs it (``.half()``)."""
    if isinstance(adapter, compare.TorchLayer):
        adapter.module.to(getattr(torch, dtype))
    return adapter


def _builtin_lacks(c: Check, dtype: str) -> bool:
    """Whether PyTorch's own layer raises NotImplementedError for ``dtype`` here."""
    if c.builtin is None:
        return False
    x = np.random.default_rng(0).normal(size=c.shape)
    try:
        _in_dtype(c.builtin(), dtype).train_step(x, x, dtype)
    except NotImplementedError:
        return True
    except Exception:
        return False
    return False


def format_table(rows: Sequence[dict]) -> str:
    cols = [("norm", 17), ("candidate", 26), ("reference", 47), ("dtype", 8), ("result", 6),
            ("worst quantity: rel err / tolerance", 44)]
    lines = ["  ".join(n.ljust(w) for n, w in cols), "  ".join("-" * w for _, w in cols)]
    for r in rows:
        if r.get("unsupported"):
            result = "n/a"
        elif r["counts"]:
            result = "pass" if r["ok"] else "FAIL"
        else:
            result = "ok" if r["ok"] else "info"

        cells = [r["norm"], r["candidate"], r["reference"], r["dtype"], result, r["worst"]]
        lines.append("  ".join(str(c).ljust(w) for c, (_, w) in zip(cells, cols)))
    return "\n".join(lines)


def exit_status(rows: Sequence[dict]) -> int:
    """1 when a counted comparison failed (or nothing was checked), else 0."""
    counted = [r for r in rows if r["counts"]]
    return 0 if counted and all(r["ok"] for r in counted) else 1


def main(argv: Optional[Sequence[str]] = None, checks: Optional[Sequence[Check]] = None) -> int:
    """The command line; ``checks`` replaces the default comparisons (for tests)."""
    p = argparse.ArgumentParser(prog="python -m normtext.check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", nargs="*", default=["float32"],
                   choices=["float64", "float32", "float16", "bfloat16"])
    p.add_argument("--norms", nargs="*", help="restrict to these norms (registry names)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here", file=sys.stderr)
        return 2
    # provenance: versions from package metadata, without importing MXNet
    env = environment(args.device)
    print(f"normtext.check | {env.get('gpu') or 'CPU ' + env['cpu']} | torch {env['torch']} | "
          f"{env['date']}")
    if checks is None:
        checks = default_checks(args.device, args.norms)
    rows = run_checks(checks, args.dtype)
    print(format_table(rows))
    status = exit_status(rows)
    failed = sum(1 for r in rows if r["counts"] and not r["ok"])
    counted = sum(1 for r in rows if r["counts"])
    print(f"{counted - failed}/{counted} normtext comparisons pass on {args.device}"
          + ("" if status == 0 else " -- FAILED"))
    return status


if __name__ == "__main__":
    sys.exit(main())
