"""normtext's PyTorch floor: from-scratch layers that are drop-in replacements.

``from normtext import torch as nt`` then ``nt.BatchNorm2d(16)`` or
``nt.functional.batch_norm(...)``. :mod:`normtext.torch.more` holds the
further normalizations (CrossNorm, whitening, conditional BN and AdaIN, weight
normalization and standardization, gradient normalization).
"""
from . import functional, more
from .autograd import NormalizeFunction, batch_norm_train
from .layer_norm import RMSNormFunction, layer_norm_hand, rms_norm_hand
from .modules import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d,
                      InstanceNorm2d, InstanceNorm3d, LayerNorm, LocalResponseNorm, RMSNorm)
from .rnn import LayerNormLSTMCell
from .sync import SyncBatchNorm

__all__ = ["functional", "more",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm",
           "LayerNorm", "RMSNorm", "LayerNormLSTMCell",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "GroupNorm",
           "LocalResponseNorm",
           "NormalizeFunction", "batch_norm_train", "RMSNormFunction",
           "layer_norm_hand", "rms_norm_hand"]
