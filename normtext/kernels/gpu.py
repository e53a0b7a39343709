"""The GPU backend of :mod:`normtext.kernels`: the Triton kernels of :mod:`normtext.kernels._triton`.

The same functions, arguments and results as :mod:`normtext.kernels.cpu`
(contiguous tensors in the compute dtype, float32 or float64), so
:mod:`normtext.kernels.functional` runs either. ``mean`` is a ``(2, rows)``
tensor here: the mean and its correction, subtracted one after the other.

A row is held in registers whole, up to :data:`MAX_ROW` elements; for
longer rows (:func:`fits_row`, :func:`fits_group`) the caller falls back to
the floor. On
CPU tensors the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1``, set before Triton is imported).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import Tensor

MAX_ROW = 65536  # elements of one row (or one GroupNorm group) held in registers
_MODULE = None
_INTERPRETED = False


def kernels():
    """The Triton kernels, importing Triton on first use."""
    global _MODULE, _INTERPRETED
    if _MODULE is None:
        try:
            from . import _triton
        except ImportError as e:
            raise ImportError("normtext.kernels needs Triton on the GPU: pip install triton") from e
        _MODULE = _triton
        _INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # read by triton.jit at import
    return _MODULE


def fits_row(m: int) -> bool:
    """Whether a LayerNorm/RMSNorm row of ``m`` elements fits in one program's registers."""
    return m <= MAX_ROW


def fits_group(channels_per_group: int, length: int) -> bool:
    """Whether a GroupNorm group, padded to a ``(2^a, 2^b)`` tile, fits in one program."""
    import triton
    return (triton.next_power_of_2(channels_per_group) *
            triton.next_power_of_2(max(length, 1))) <= MAX_ROW


def _check_device(x: Tensor) -> None:
    kernels()
    if x.device.type == "cpu" and not _INTERPRETED:
        raise RuntimeError("the Triton kernels run on CUDA tensors, or on CPU tensors under "
                           "Triton's interpreter (TRITON_INTERPRET=1 before importing triton)")


def _block(n: int) -> int:
    import triton
    if n > MAX_ROW:
        raise NotImplementedError(f"rows of {n} elements: the Triton kernels hold at most "
                                  f"{MAX_ROW} in registers")
    return triton.next_power_of_2(max(n, 1))


def _warps(block: int) -> int:
    return min(max(block // 256, 1), 8)


def _param(t: Optional[Tensor], n: int, like: Tensor, value: float) -> Tensor:
    if t is None:
        return torch.full((n,), value, dtype=like.dtype, device=like.device)
    return t.detach().reshape(-1).to(like.dtype).contiguous()


def _programs(rows: int, x: Tensor) -> int:
    """Programs of the backward (each keeps one partial dgamma): a few per multiprocessor."""
    if x.device.type == "cuda":
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        return max(1, min(rows, 4 * sms))
    return max(1, min(rows, 4))


def layer_norm_forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    _check_device(x)
    K = kernels()
    rows, m = x.shape
    block = _block(m)
    y = torch.empty_like(x)
    mean = torch.empty(2, rows, dtype=x.dtype, device=x.device)
    rstd = torch.empty(rows, dtype=x.dtype, device=x.device)
    K.layer_norm_forward_kernel[(rows,)](x, _param(weight, m, x, 1.0), _param(bias, m, x, 0.0), y,
                                         mean[0], mean[1], rstd, m, eps, BLOCK=block,
                                         num_warps=_warps(block))
    return y, mean, rstd


def _backward_buffers(x: Tensor, partials: int):
    """Programs, rows per program, dx, and ``partials`` per-program partial sums of width m.

    Each program of a backward kernel takes ``per`` consecutive rows and writes
    its own row of partial dgamma (and dbeta); they are summed after the launch.
    """
    rows, m = x.shape
    programs = _programs(rows, x)
    parts = tuple(torch.empty(programs, m, dtype=x.dtype, device=x.device)
                  for _ in range(partials))
    return programs, -(-rows // programs), torch.empty_like(x), parts


def layer_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor,
                        weight: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    K = kernels()
    rows, m = x.shape
    block = _block(m)
    programs, per, dx, (dw_part, db_part) = _backward_buffers(x, 2)
    K.layer_norm_backward_kernel[(programs,)](dy, x, _param(weight, m, x, 1.0), mean[0], mean[1],
                                              rstd, dx, dw_part, db_part, m, rows, per,
                                              BLOCK=block, num_warps=_warps(block))
    return dx, dw_part.sum(0), db_part.sum(0)


def rms_norm_forward(x: Tensor, weight: Optional[Tensor], eps: float) -> Tuple[Tensor, Tensor]:
    _check_device(x)
    K = kernels()
    rows, m = x.shape
    block = _block(m)
    y = torch.empty_like(x)
    rstd = torch.empty(rows, dtype=x.dtype, device=x.device)
    K.rms_norm_forward_kernel[(rows,)](x, _param(weight, m, x, 1.0), y, rstd, m, eps,
                                       BLOCK=block, num_warps=_warps(block))
    return y, rstd


def rms_norm_backward(dy: Tensor, x: Tensor, rstd: Tensor,
                      weight: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    K = kernels()
    rows, m = x.shape
    block = _block(m)
    programs, per, dx, (dw_part,) = _backward_buffers(x, 1)
    K.rms_norm_backward_kernel[(programs,)](dy, x, _param(weight, m, x, 1.0), rstd, dx, dw_part,
                                            m, rows, per, BLOCK=block, num_warps=_warps(block))
    return dx, dw_part.sum(0)


def _gn_blocks(cg: int, length: int) -> Tuple[int, int]:
    import triton
    bc, bl = triton.next_power_of_2(cg), triton.next_power_of_2(max(length, 1))
    if bc * bl > MAX_ROW:
        raise NotImplementedError(f"groups of {cg} x {length} elements: the Triton kernels hold "
                                  f"at most {MAX_ROW} in registers")
    return bc, bl


def group_norm_forward(x: Tensor, groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    _check_device(x)
    K = kernels()
    rows, cg, length = x.shape
    c = groups * cg
    bc, bl = _gn_blocks(cg, length)
    y = torch.empty_like(x)
    mean = torch.empty(2, rows, dtype=x.dtype, device=x.device)
    rstd = torch.empty(rows, dtype=x.dtype, device=x.device)
    K.group_norm_forward_kernel[(rows,)](x, _param(weight, c, x, 1.0), _param(bias, c, x, 0.0), y,
                                         mean[0], mean[1], rstd, groups, cg, length, eps,
                                         BLOCK_C=bc, BLOCK_L=bl, num_warps=_warps(bc * bl))
    return y, mean, rstd


def group_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, groups: int,
                        weight: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    K = kernels()
    rows, cg, length = x.shape
    n, c = rows // groups, groups * cg
    bc, bl = _gn_blocks(cg, length)
    dx = torch.empty_like(x)
    ds = torch.empty(n, c, dtype=x.dtype, device=x.device)
    db = torch.empty(n, c, dtype=x.dtype, device=x.device)
    K.group_norm_backward_kernel[(rows,)](dy, x, _param(weight, c, x, 1.0), mean[0], mean[1],
                                          rstd, dx, ds, db, groups, cg, length,
                                          BLOCK_C=bc, BLOCK_L=bl, num_warps=_warps(bc * bl))
    return dx, ds.sum(0), db.sum(0)
