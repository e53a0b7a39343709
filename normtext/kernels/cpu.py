"""The CPU backend of :mod:`normtext.kernels`: torch tensors in, Numba loops, torch tensors out.

Each function takes and returns contiguous tensors in the *compute* dtype
(float32 or float64; :mod:`normtext.kernels.functional` converts
float16/bfloat16 at the boundary, Numba having no bfloat16) and hands their
memory to the loops of :mod:`normtext.kernels._numba` through ``.numpy()``
views, without copies.

Numba is imported on first use. Its cache of compiled loops goes to
``$NUMBA_CACHE_DIR`` when set, else ``$NORMTEXT_CACHE/numba``, else
``_build/numba-cache`` of the checkout normtext runs from, else
``~/.cache/normtext/numba``: never into the source tree.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

_KERNELS = None


def numba_cache_dir() -> Path:
    """Where Numba's compiled loops are cached (see the module docstring for the order)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    if os.environ.get("NORMTEXT_CACHE"):
        return Path(os.environ["NORMTEXT_CACHE"]) / "numba"
    root = Path(__file__).resolve().parents[2]
    if (root / "_config.yml").exists() and (root / "normtext").is_dir():  # a checkout of the book
        return root / "_build" / "numba-cache"
    return Path.home() / ".cache" / "normtext" / "numba"


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def kernels():
    """The compiled loops (:mod:`normtext.kernels._numba`), importing Numba on first use."""
    global _KERNELS
    if _KERNELS is None:
        cache = numba_cache_dir()
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))
        try:
            import numba
        except ImportError as e:
            raise ImportError(
                "normtext.kernels needs Numba on the CPU: pip install 'normtext[kernels]' "
                "(numba 0.60 is the last release for numpy 1.23)") from e
        numba.config.CACHE_DIR = str(cache)  # also when numba was imported before us
        _launch_threads_passive()
        from . import _numba
        _KERNELS = _numba
    return _KERNELS


def _launch_threads_passive() -> None:
    """Start Numba's thread pool with OpenMP threads that sleep, not spin, when idle.

    PyTorch brings its own OpenMP runtime and Numba loads the system's: two
    pools of threads in one process. An OpenMP thread spins for a while after
    each parallel region, so each pool's idle threads would take the cores the
    other pool's next region needs. ``OMP_WAIT_POLICY=PASSIVE``, read once
    when Numba's runtime loads, makes Numba's threads sleep instead; PyTorch's
    runtime, loaded earlier, keeps its own setting. A policy the user set is
    left alone.
    """
    from numba.np.ufunc import parallel
    if os.environ.get("OMP_WAIT_POLICY") is not None:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        parallel._launch_threads()
    finally:
        del os.environ["OMP_WAIT_POLICY"]


@lru_cache(maxsize=64)
def _constant(value: float, n: int, dtype: torch.dtype) -> np.ndarray:
    return np.full(n, value, dtype=torch.empty(0, dtype=dtype).numpy().dtype)


def _array(t: Tensor, dtype: torch.dtype) -> np.ndarray:
    """A tensor's memory as a NumPy array (no copy when it is contiguous and of ``dtype``)."""
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    return (t if t.is_contiguous() else t.contiguous()).numpy()


def _param(t: Optional[Tensor], n: int, dtype: torch.dtype, absent: float) -> np.ndarray:
    """The parameter as a flat array; an absent one as ones (gamma) or zeros (beta)."""
    if t is None:
        return _constant(absent, n, dtype)
    return _array(t, dtype).reshape(-1)


# Below this many elements a call runs on one thread: waking Numba's sleeping threads
# (OMP_WAIT_POLICY=PASSIVE, _launch_threads_passive) costs more than the loop saves.
# Measured on a 2-core CPU: LayerNorm forward of 1 x 64 in 2.8 us on one thread,
# 5.1 us on two; the threshold is a 256 KiB float32 tensor, tens of microseconds of work.
SERIAL_BELOW = 2 ** 16


def _threads(rows: int, numel: int = SERIAL_BELOW) -> int:
    """Follow torch's thread setting (``torch.set_num_threads``); at most one part per row.

    Small inputs (``numel`` below :data:`SERIAL_BELOW`) get one thread.
    """
    import numba
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    n = max(1, min(n, rows)) if numel >= SERIAL_BELOW else 1
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n


# Shapes, allocations and partial sums are handled in NumPy: each of its calls
# costs a fraction of a torch operator's dispatch, and per call that adds up.

# --- LayerNorm ------------------------------------------------------------------------

def layer_norm_forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """``x``: ``(rows, m)`` contiguous. Returns ``(y, mean, rstd)``, the statistics in float64."""
    K = kernels()
    xn = x.numpy()
    rows, m = xn.shape
    _threads(rows, xn.size)
    y = np.empty_like(xn)
    mean = np.empty(rows)
    rstd = np.empty(rows)
    K.layer_norm_forward(xn, _param(weight, m, x.dtype, 1.0), _param(bias, m, x.dtype, 0.0),
                         float(eps), y, mean, rstd)
    return torch.from_numpy(y), torch.from_numpy(mean), torch.from_numpy(rstd)


def layer_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor,
                        weight: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)`` (the parameter gradients flat, in the compute dtype)."""
    K = kernels()
    xn = x.numpy()
    rows, m = xn.shape
    parts = _threads(rows, xn.size)
    dx = np.empty_like(xn)
    dw_part = np.zeros((parts, m), xn.dtype)
    db_part = np.zeros((parts, m), xn.dtype)
    K.layer_norm_backward(dy.numpy(), xn, mean.numpy(), rstd.numpy(),
                          _param(weight, m, x.dtype, 1.0), dx, dw_part, db_part)
    return (torch.from_numpy(dx), torch.from_numpy(dw_part.sum(0)),
            torch.from_numpy(db_part.sum(0)))


# --- RMSNorm --------------------------------------------------------------------------

def rms_norm_forward(x: Tensor, weight: Optional[Tensor], eps: float) -> Tuple[Tensor, Tensor]:
    # Laid out as layer_norm_forward (views, thread count, outputs) on purpose: each
    # wrapper reads whole next to the kernel it launches.
    K = kernels()
    xn = x.numpy()
    rows, m = xn.shape
    _threads(rows, xn.size)
    y = np.empty_like(xn)
    rstd = np.empty(rows)
    K.rms_norm_forward(xn, _param(weight, m, x.dtype, 1.0), float(eps), y, rstd)
    return torch.from_numpy(y), torch.from_numpy(rstd)


def rms_norm_backward(dy: Tensor, x: Tensor, rstd: Tensor,
                      weight: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    K = kernels()
    xn = x.numpy()
    rows, m = xn.shape
    dx = np.empty_like(xn)
    dw_part = np.zeros((_threads(rows, xn.size), m), xn.dtype)
    K.rms_norm_backward(dy.numpy(), xn, rstd.numpy(), _param(weight, m, x.dtype, 1.0), dx,
                        dw_part)
    return torch.from_numpy(dx), torch.from_numpy(dw_part.sum(0))


# --- GroupNorm ------------------------------------------------------------------------

def group_norm_forward(x: Tensor, groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """``x``: ``(N * G, C / G, L)`` contiguous."""
    K = kernels()
    xn = x.numpy()
    rows, c = xn.shape[0], groups * xn.shape[1]
    _threads(rows, xn.size)
    y = np.empty_like(xn)
    mean = np.empty(rows)
    rstd = np.empty(rows)
    K.group_norm_forward(xn, _param(weight, c, x.dtype, 1.0), _param(bias, c, x.dtype, 0.0),
                         groups, float(eps), y, mean, rstd)
    return torch.from_numpy(y), torch.from_numpy(mean), torch.from_numpy(rstd)


def group_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, groups: int,
                        weight: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)``; the parameter gradients are per channel, ``(C,)``."""
    K = kernels()
    xn = x.numpy()
    rows, cg, _ = xn.shape
    n, c = rows // groups, groups * cg
    _threads(rows, xn.size)
    dx = np.empty_like(xn)
    ds = np.empty((n, c))
    db = np.empty((n, c))
    K.group_norm_backward(dy.numpy(), xn, mean.numpy(), rstd.numpy(),
                          _param(weight, c, x.dtype, 1.0), groups, dx, ds, db)
    return (torch.from_numpy(dx), torch.from_numpy(ds.sum(0).astype(xn.dtype)),
            torch.from_numpy(db.sum(0).astype(xn.dtype)))
