"""Fused normalization kernels written from scratch: Numba on the CPU, Triton on the GPU.

``from normtext import kernels`` then ``kernels.layer_norm(x, [768], w, b)`` or
``kernels.LayerNorm(768)``: drop-in replacements for ``torch.nn.functional``'s
``layer_norm``, ``rms_norm``, ``group_norm`` and ``torch.nn``'s modules, with
the same errors, computed by one fused kernel each way
(:mod:`normtext.kernels.functional`).

Numba (the ``kernels`` extra) is imported on the first call on a CPU tensor,
Triton on the first call on a CUDA tensor; :func:`numba_available` and
:func:`triton_available` say whether they are installed.
"""
import importlib.util

from . import functional
from .cpu import numba_available, numba_cache_dir
from .functional import group_norm, layer_norm, rms_norm, using
from .modules import GroupNorm, LayerNorm, RMSNorm

__all__ = ["functional", "layer_norm", "rms_norm", "group_norm", "using", "LayerNorm",
           "RMSNorm", "GroupNorm", "numba_available", "numba_cache_dir", "triton_available"]


def triton_available() -> bool:
    """Whether Triton is installed (its kernels run on CUDA, or on the CPU under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None  # without importing it
