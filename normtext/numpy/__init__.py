"""The float64 NumPy reference: forward and a backward derived by hand.

Every other implementation in normtext is checked against these functions.
:mod:`normtext.numpy.unified` is the whole family as one function of a
:class:`~normtext.spec.NormSpec`; :mod:`normtext.numpy.whitening` decorrelates
as well as standardizes.
"""
from .batch_norm import BatchNormResult, batch_norm, batch_norm_backward
from .group_norm import group_norm, group_norm_backward
from .instance_norm import instance_norm, instance_norm_backward
from .layer_norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from .lrn import convert_lrn, local_response_norm, local_response_norm_backward
from .standardize import standardize, standardize_backward

__all__ = ["standardize", "standardize_backward",
           "batch_norm", "batch_norm_backward", "BatchNormResult",
           "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward",
           "instance_norm", "instance_norm_backward", "group_norm", "group_norm_backward",
           "local_response_norm", "local_response_norm_backward", "convert_lrn"]
