"""``LayerNorm``, ``RMSNorm`` and ``GroupNorm`` modules that run the fused kernels.

Each is normtext's PyTorch module (:mod:`normtext.torch.modules`: the
constructor, parameters, ``state_dict`` keys and errors of ``torch.nn``'s) with
its ``forward`` calling :mod:`normtext.kernels.functional`, so a model swaps
``nn.LayerNorm`` for ``normtext.kernels.LayerNorm`` and loads the same weights.
"""
from __future__ import annotations

from torch import Tensor

from ..torch import modules as floor
from . import functional as F

__all__ = ["LayerNorm", "RMSNorm", "GroupNorm"]


class LayerNorm(floor.LayerNorm):
    """:class:`torch.nn.LayerNorm`, computed by the fused kernel (:func:`~normtext.kernels.layer_norm`).

    Example::

        >>> from normtext import kernels
        >>> kernels.LayerNorm(768)(torch.randn(4, 128, 768)).shape
        torch.Size([4, 128, 768])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(floor.RMSNorm):
    """:class:`torch.nn.RMSNorm`, computed by the fused kernel (:func:`~normtext.kernels.rms_norm`).

    Example::

        >>> from normtext import kernels
        >>> kernels.RMSNorm(16)(torch.randn(2, 8, 16)).shape
        torch.Size([2, 8, 16])
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class GroupNorm(floor.GroupNorm):
    """:class:`torch.nn.GroupNorm`, computed by the fused kernel (:func:`~normtext.kernels.group_norm`).

    Example::

        >>> from normtext import kernels
        >>> kernels.GroupNorm(3, 6)(torch.randn(20, 6, 10, 10)).shape
        torch.Size([20, 6, 10, 10])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
