"""The float64 NumPy reference: forward and a backward derived by hand.

Every other implementation in normtext is checked against these functions.
"""
from .batch_norm import BatchNormResult, batch_norm, batch_norm_backward
from .standardize import standardize, standardize_backward

__all__ = ["batch_norm", "batch_norm_backward", "BatchNormResult",
           "standardize", "standardize_backward"]

from .layer_norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward  # noqa: E402
__all__ += ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]
