"""Small helpers shared by the PyTorch layers."""
from __future__ import annotations

import torch

from .. import errors

# Half-precision inputs are normalized in float32 and cast back, as PyTorch's
# own kernels accumulate (a float16 sum of thousands of terms loses digits).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def shape_of(t):
    return None if t is None else tuple(t.shape)


def check_floating(input: torch.Tensor, op: str) -> None:
    errors.check_floating(input.is_floating_point(), _dtype_name(input.dtype), op)


def _dtype_name(dtype: torch.dtype) -> str:
    # PyTorch's kernel errors name the scalar type as C++ does: 'Long', 'Int', 'Bool'
    return {torch.int64: "Long", torch.int32: "Int", torch.int16: "Short",
            torch.int8: "Char", torch.uint8: "Byte", torch.bool: "Bool"}.get(dtype, str(dtype))
