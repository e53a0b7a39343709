"""The float64 NumPy reference: forward and a backward derived by hand.

Every other implementation in normtext is checked against these functions.
"""
from .batch_norm import BatchNormResult, batch_norm, batch_norm_backward
from .standardize import standardize, standardize_backward

__all__ = ["batch_norm", "batch_norm_backward", "BatchNormResult",
           "standardize", "standardize_backward"]

from .layer_norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward  # noqa: E402
__all__ += ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward"]
from .group_norm import group_norm, group_norm_backward  # noqa: E402  (issue 4)
from .instance_norm import instance_norm, instance_norm_backward  # noqa: E402
from .lrn import convert_lrn, local_response_norm, local_response_norm_backward  # noqa: E402
__all__ += ["instance_norm", "instance_norm_backward", "group_norm", "group_norm_backward",
            "local_response_norm", "local_response_norm_backward", "convert_lrn"]
