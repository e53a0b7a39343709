"""Fused LayerNorm, RMSNorm and GroupNorm: drop-in replacements for ``torch.nn.functional``'s.

Same names, signatures, defaults and input errors as
:mod:`normtext.torch.functional` (which has PyTorch's), checked before any
arithmetic. The arithmetic is one fused kernel each way, wrapped in a
``torch.autograd.Function``:

* on the CPU, Numba loops (:mod:`normtext.kernels._numba`): parallel over
  rows, statistics and output from a row held in cache, and in the backward
  ``dx`` with per-thread partial sums of ``dgamma``/``dbeta``;
* on CUDA, Triton kernels (:mod:`normtext.kernels.gpu`).

float16 and bfloat16 inputs are computed in float32 and the results cast
back, as PyTorch's kernels accumulate. Empty inputs, other devices and rows
too long for the Triton kernels' registers fall back to
:mod:`normtext.torch.functional`. The backward is differentiable once
(no double backward).

:func:`using` gives the same three functions on a chosen backend, e.g. the
Triton kernels under ``TRITON_INTERPRET=1`` on CPU tensors.
"""
from __future__ import annotations

from math import prod
from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import errors
from ..torch import functional as floor
from ..torch._util import check_floating, check_layer_norm_args, compute_dtype, shape_of
from . import cpu

__all__ = ["layer_norm", "rms_norm", "group_norm", "using"]


def _backend(name: Optional[str], x: Tensor):
    """The module that runs the kernels: ``cpu`` (Numba) or ``gpu`` (Triton), or None (floor)."""
    if name is None:
        name = {"cpu": "cpu", "cuda": "triton"}.get(x.device.type)
    if name == "cpu":
        return cpu
    if name == "triton":
        from . import gpu
        return gpu
    return None


def _always(*args) -> bool:
    return True


def _fits_row(backend, m: int) -> bool:
    """The Triton kernels hold a row in registers (up to 65536 elements); the CPU loops any row."""
    return getattr(backend, "fits_row", _always)(m)


def _compute(t: Optional[Tensor], dtype: torch.dtype, shape=None) -> Optional[Tensor]:
    """``t`` detached, in ``dtype``, viewed as ``shape``, contiguous: copies only where needed.

    (Each torch call costs microseconds of dispatch: the fast path makes none it can skip.)
    """
    if t is None:
        return None
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    if shape is not None:
        t = t.reshape(shape)
    return t if t.is_contiguous() else t.contiguous()


def _like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` with the shape and dtype of ``like``."""
    t = t.view(like.shape)
    return t if t.dtype == like.dtype else t.to(like.dtype)


def _grad_like(g: Tensor, like: Optional[Tensor], needed: bool) -> Optional[Tensor]:
    return _like(g, like) if needed and like is not None else None


# --- LayerNorm ------------------------------------------------------------------------

class LayerNormFunction(torch.autograd.Function):
    """Fused LayerNorm over the trailing ``m`` elements: ``(x, weight, bias, m, eps, backend)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, m, eps, backend):
        cdt = compute_dtype(x.dtype)
        x2 = _compute(x, cdt, (-1, m))
        y, mean, rstd = backend.layer_norm_forward(x2, _compute(weight, cdt), _compute(bias, cdt),
                                                   eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.m, ctx.backend = m, backend
        ctx.bias = None if bias is None else (bias.shape, bias.dtype)
        return _like(y, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        cdt = compute_dtype(x.dtype)
        dx, dw, db = ctx.backend.layer_norm_backward(
            _compute(dy, cdt, (-1, ctx.m)), _compute(x, cdt, (-1, ctx.m)), mean, rstd,
            _compute(weight, cdt))
        need = ctx.needs_input_grad
        dbias = None
        if need[2]:
            shape, dtype = ctx.bias
            dbias = db.view(shape) if db.dtype == dtype else db.view(shape).to(dtype)
        return (_like(dx, x) if need[0] else None,
                _grad_like(dw, weight, need[1]), dbias, None, None, None)


def _layer_norm(backend_name, input: Tensor, normalized_shape, weight: Optional[Tensor] = None,
                bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    ns = check_layer_norm_args(input, normalized_shape, weight, bias)
    backend = _backend(backend_name, input)
    if backend is None or input.numel() == 0 or not _fits_row(backend, prod(ns)):
        return floor.layer_norm(input, list(ns), weight, bias, eps)
    return LayerNormFunction.apply(input, weight, bias, prod(ns), eps, backend)


def layer_norm(input: Tensor, normalized_shape: list[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    r"""Fused layer normalization, as :func:`torch.nn.functional.layer_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    over the trailing ``normalized_shape`` axes; ``weight`` and ``bias`` have
    that shape. One kernel computes the statistics and the output of each row
    (the corrected two-pass variance, in cache); the backward computes ``dx``
    and the parameter gradients in one more.

    Example::

        >>> from normtext import kernels
        >>> x = torch.randn(4, 128, 768)
        >>> kernels.layer_norm(x, [768]).shape
        torch.Size([4, 128, 768])
    """
    return _layer_norm(None, input, normalized_shape, weight, bias, eps)


# --- RMSNorm --------------------------------------------------------------------------

class RMSNormFunction(torch.autograd.Function):
    """Fused RMSNorm over the trailing ``m`` elements: ``(x, weight, m, eps, backend)``."""

    @staticmethod
    def forward(ctx, x, weight, m, eps, backend):
        cdt = compute_dtype(x.dtype)
        y, rstd = backend.rms_norm_forward(_compute(x, cdt, (-1, m)), _compute(weight, cdt), eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.m, ctx.backend = m, backend
        return _like(y, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        cdt = compute_dtype(x.dtype)
        dx, dw = ctx.backend.rms_norm_backward(
            _compute(dy, cdt, (-1, ctx.m)), _compute(x, cdt, (-1, ctx.m)), rstd,
            _compute(weight, cdt))
        need = ctx.needs_input_grad
        return (_like(dx, x) if need[0] else None,
                _grad_like(dw, weight, need[1]), None, None, None)


def _rms_norm(backend_name, input: Tensor, normalized_shape, weight: Optional[Tensor] = None,
              eps: Optional[float] = None) -> Tensor:
    ns = errors.check_normalized_shape_type(normalized_shape, "rms_norm")
    errors.check_layer_norm(tuple(input.shape), ns, weight=shape_of(weight), op="rms_norm")
    check_floating(input, "rms_norm")
    backend = _backend(backend_name, input)
    if backend is None or input.numel() == 0 or not _fits_row(backend, prod(ns)):
        return floor.rms_norm(input, list(ns), weight, eps)
    if eps is None:
        eps = torch.finfo(compute_dtype(input.dtype)).eps
    return RMSNormFunction.apply(input, weight, prod(ns), eps, backend)


def rms_norm(input: Tensor, normalized_shape: list[int], weight: Optional[Tensor] = None,
             eps: Optional[float] = None) -> Tensor:
    r"""Fused root-mean-square normalization, as :func:`torch.nn.functional.rms_norm`.

    .. math::
        y = \frac{x}{\sqrt{\frac1m\sum_i x_i^2 + \epsilon}} * \gamma

    ``eps=None`` is the machine epsilon of the dtype computed in (float32 for
    float16/bfloat16 input), as PyTorch.

    Example::

        >>> from normtext import kernels
        >>> kernels.rms_norm(torch.randn(2, 8, 16), [16]).shape
        torch.Size([2, 8, 16])
    """
    return _rms_norm(None, input, normalized_shape, weight, eps)


# --- GroupNorm ------------------------------------------------------------------------

class GroupNormFunction(torch.autograd.Function):
    """Fused GroupNorm: ``(x, groups, weight, bias, eps, backend)``."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps, backend):
        cdt = compute_dtype(x.dtype)
        n, c = x.shape[0], x.shape[1]
        x3 = _compute(x, cdt, (n * groups, c // groups, -1))
        y, mean, rstd = backend.group_norm_forward(x3, groups, _compute(weight, cdt),
                                                   _compute(bias, cdt), eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.backend, ctx.has_bias = groups, backend, bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return _like(y, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        cdt = compute_dtype(x.dtype)
        # The steps of LayerNormFunction.backward, with GroupNorm's views and argument
        # positions: a shared helper would take more parameters than it saves lines.
        n, c, g = x.shape[0], x.shape[1], ctx.groups
        view = (n * g, c // g, -1)
        dx, dw, db = ctx.backend.group_norm_backward(
            _compute(dy, cdt, view), _compute(x, cdt, view), mean, rstd, g, _compute(weight, cdt))
        need = ctx.needs_input_grad
        dbias = db.to(ctx.bias_dtype) if ctx.has_bias and need[3] else None
        return (_like(dx, x) if need[0] else None, None,
                _grad_like(dw, weight, need[2]), dbias, None, None)


def _group_norm(backend_name, input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
                bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    errors.check_group_norm(tuple(input.shape), num_groups,
                            weight=shape_of(weight), bias=shape_of(bias))
    check_floating(input, "GroupNormKernelImpl")
    backend = _backend(backend_name, input)
    if (backend is None or input.numel() == 0 or not getattr(backend, "fits_group", _always)(
            input.shape[1] // num_groups, prod(input.shape[2:]))):
        return floor.group_norm(input, num_groups, weight, bias, eps)
    return GroupNormFunction.apply(input, num_groups, weight, bias, eps, backend)


def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    r"""Fused group normalization, as :func:`torch.nn.functional.group_norm`.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma + \beta

    Each sample's ``C`` channels form ``num_groups`` groups of consecutive
    channels; a group (its channels times every position) is one row of the
    kernel. ``weight`` and ``bias`` are per channel, ``(C,)``.

    Example::

        >>> from normtext import kernels
        >>> kernels.group_norm(torch.randn(2, 6, 4, 4), 3).shape
        torch.Size([2, 6, 4, 4])
    """
    return _group_norm(None, input, num_groups, weight, bias, eps)


def using(backend: str) -> SimpleNamespace:
    """``layer_norm``, ``rms_norm`` and ``group_norm`` on one backend: ``"cpu"`` (Numba) or ``"triton"``.

    The default functions choose by the input's device; this fixes the choice,
    e.g. to run the Triton kernels on CPU tensors under ``TRITON_INTERPRET=1``.
    """
    if backend not in ("cpu", "triton"):
        raise ValueError(f"backend must be 'cpu' or 'triton', got {backend!r}")

    def ln(input, normalized_shape, weight=None, bias=None, eps=1e-5):
        return _layer_norm(backend, input, normalized_shape, weight, bias, eps)

    def rms(input, normalized_shape, weight=None, eps=None):
        return _rms_norm(backend, input, normalized_shape, weight, eps)

    def gn(input, num_groups, weight=None, bias=None, eps=1e-5):
        return _group_norm(backend, input, num_groups, weight, bias, eps)

    return SimpleNamespace(layer_norm=ln, rms_norm=rms, group_norm=gn)
