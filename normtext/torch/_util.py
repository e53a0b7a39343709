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


def _dtype_str(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_layer_norm_args(input: torch.Tensor, normalized_shape, weight, bias) -> tuple:
    """LayerNorm's input checks, in PyTorch's order; returns ``normalized_shape`` as a tuple.

    One function for every LayerNorm of normtext (the floor's and the fused
    kernels'), so that they refuse the same inputs with the same messages.
    """
    ns = errors.check_normalized_shape_type(normalized_shape, "layer_norm")
    errors.check_layer_norm(tuple(input.shape), ns, weight=shape_of(weight),
                            bias=shape_of(bias), op="layer_norm")
    if weight is not None or bias is not None:
        errors.check_layer_norm_dtypes(
            _dtype_str(input.dtype), None if weight is None else _dtype_str(weight.dtype),
            None if bias is None else _dtype_str(bias.dtype))
    check_floating(input, "LayerNormKernelImpl")
    return ns
