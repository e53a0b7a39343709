"""Small helpers shared by the PyTorch layers."""
from __future__ import annotations

import torch

# Half-precision inputs are normalized in float32 and cast back, as PyTorch's
# own kernels accumulate (a float16 sum of thousands of terms loses digits).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def centered_moments(x: torch.Tensor, axes):
    """``(mean, x - mean, var)`` over ``axes`` (kept), by two passes with a correction.

    Two passes (the mean, then the mean of squared deviations) never subtract
    ``E[x]^2`` from ``E[x^2]``. What error is left is the rounding of the mean
    itself: it shifts every deviation by the same amount. The mean of the
    deviations (small numbers, hence accurate) measures that shift and removes
    it, the corrected two-pass algorithm of Chan, Golub & LeVeque (1983). It
    keeps float32 errors at the rounding level even when the mean is 1e5
    standard deviations (book/numerics.ipynb).
    """
    mean = x.mean(dim=axes, keepdim=True)
    deviation = x - mean
    shift = deviation.mean(dim=axes, keepdim=True)  # 0 but for the rounding of ``mean``
    deviation = deviation - shift
    var = deviation.square().mean(dim=axes, keepdim=True)
    return mean + shift, deviation, var


def shape_of(t):
    return None if t is None else tuple(t.shape)


def check_floating(input: torch.Tensor, op: str) -> None:
    from .. import errors
    errors.check_floating(input.is_floating_point(), _dtype_name(input.dtype), op)


def _dtype_name(dtype: torch.dtype) -> str:
    # PyTorch's kernel errors name the scalar type as C++ does: 'Long', 'Int', 'Bool'
    return {torch.int64: "Long", torch.int32: "Int", torch.int16: "Short",
            torch.int8: "Char", torch.uint8: "Byte", torch.bool: "Bool"}.get(dtype, str(dtype))
