"""normtext's PyTorch floor: from-scratch layers that are drop-in replacements.

``from normtext import torch as nt`` then ``nt.BatchNorm2d(16)`` or
``nt.functional.batch_norm(...)``.
"""
from . import functional
from .autograd import NormalizeFunction, batch_norm_train
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["functional", "NormalizeFunction", "batch_norm_train",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]
