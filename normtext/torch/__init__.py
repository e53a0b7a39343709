"""normtext's PyTorch floor: from-scratch layers that are drop-in replacements.

``from normtext import torch as nt`` then ``nt.BatchNorm2d(16)`` or
``nt.functional.batch_norm(...)``.
"""
from . import functional
from .autograd import NormalizeFunction, batch_norm_train
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["functional", "NormalizeFunction", "batch_norm_train",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]

from .layer_norm import RMSNormFunction, layer_norm_hand, rms_norm_hand  # noqa: E402
from .modules import LayerNorm, RMSNorm  # noqa: E402
from .rnn import LayerNormLSTMCell  # noqa: E402
__all__ += ["LayerNorm", "RMSNorm", "LayerNormLSTMCell", "RMSNormFunction",
            "layer_norm_hand", "rms_norm_hand"]
from .sync import SyncBatchNorm  # noqa: E402,F401  (issue 5)
__all__ += ["SyncBatchNorm"]
from .modules import (GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,  # noqa: E402
                      LocalResponseNorm)  # (issue 4)
__all__ += ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "GroupNorm", "LocalResponseNorm"]
from . import more  # noqa: E402,F401  CrossNorm, whitening, conditional BN/AdaIN, WN, WS, grad norms (issue 7)
