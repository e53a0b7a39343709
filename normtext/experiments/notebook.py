"""What every chapter notebook needs around its content: the opening setup, the
package's own source shown in the book, and the small tables of the parity and
error checks.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Dict, NamedTuple

import numpy as np
import pandas as pd
import torch

from normtext import mxnet_available, quick_mode
from normtext.experiments.plot import use_book_style
from normtext.experiments.train import seed_everything, torch_device
from normtext.testing.provenance import environment, environment_line

__all__ = ["Setup", "setup", "default_threads", "show_source", "parity_row", "error_of", "error_table"]



class Setup(NamedTuple):
    """What a chapter's first cell unpacks: ``QUICK, HAS_MXNET, DEVICE, rng = setup()``."""

    quick: bool
    has_mxnet: bool
    device: torch.device
    rng: np.random.Generator


def setup(seed: int = 0, threads: int | None = None) -> Setup:
    """A chapter's opening bookkeeping, in one call.

    Sets PyTorch's thread count to ``threads``, or by default to the number of
    CPUs this process may use (importing MXNet sets the OpenMP pool it shares
    with PyTorch to one thread, so a chapter that imports it would otherwise run
    PyTorch on one core, and compare it unfairly with code that uses them all), draws matplotlib figures inline in the book's style (sized for its
    column: :func:`normtext.experiments.plot.use_book_style`), seeds Python, NumPy, PyTorch and
    MXNet with ``seed``, and prints the environment one item a line (versions,
    with a note when MXNet is missing and its cells skip, and the device the
    chapter runs on) and whether the experiments run in quick mode.
    """
    _matplotlib_inline()
    use_book_style()
    seed_everything(seed)             # imports MXNet, when it is installed
    torch.set_num_threads(threads or default_threads())
    device = torch_device()
    has_mxnet = mxnet_available()
    # one item a line: the whole line is wider than the book's text column
    print(environment_line(environment(str(device))).replace(" | ", "\n"))
    quick = quick_mode()
    print("experiments:", "QUICK (fewer data, epochs and seeds: verdicts mean nothing)"
          if quick else "full")
    return Setup(quick, has_mxnet, device, np.random.default_rng(seed))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is set, else the CPUs this process may run on."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _matplotlib_inline() -> None:
    """``%matplotlib inline`` when running under IPython; nothing elsewhere."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")


def show_source(obj, lines: slice | None = None):
    """The source of ``obj`` as a highlighted Markdown code block (Jupyter renders it).

    ``lines`` selects part of it (a slice of source lines).
    """
    from IPython.display import Markdown
    source = inspect.getsource(obj)
    if lines is not None:
        source = "\n".join(source.splitlines()[lines])
    where = f"{inspect.getmodule(obj).__name__}"
    return Markdown(f"From `{where}`:\n\n```python\n{source.rstrip()}\n```")


def parity_row(label: str, result, **columns: Any) -> Dict[str, Any]:
    """One row of a chapter's parity table from a :class:`~normtext.testing.compare.Comparison`.

    ``columns`` (the input's shape, the options) come after the label; then the
    largest relative error of each quantity, and whether all were within tolerance.
    """
    row = {"comparison": label, **columns}
    row.update({r["quantity"]: r["max rel err"] for r in result.rows})
    row["all within tolerance"] = result.ok
    return row


def error_of(f: Callable[[], Any]) -> str:
    """``"ExceptionType: message"`` for what ``f()`` raises, or ``"no error"``."""
    try:
        f()
    except Exception as e:  # noqa: BLE001 - showing the error is the point
        return f"{type(e).__name__}: {e}"
    return "no error"


def error_table(cases: Dict[str, Callable[[Any], Any]], implementations: Dict[str, Any]) -> pd.DataFrame:
    """What each case raises under each implementation: one row per case, one column per implementation.

    ``cases`` maps a description to a function of the implementation (for
    example ``lambda F: F.group_norm(x, 4)`` with ``F`` a functional module).
    """
    return pd.DataFrame({name: {case: error_of(lambda: f(impl)) for case, f in cases.items()}
                         for name, impl in implementations.items()})
