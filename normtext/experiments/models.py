"""Small PyTorch models the chapters train.

A *norm factory* is a callable ``(num_features, spatial_dims) -> nn.Module``
(``spatial_dims`` is 2 after a convolution, 0 after a dense layer), so one
model definition serves every norm and both the built-in and the from-scratch
layers.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import nn
from torch.nn import functional as F

from normtext import torch as nt

NormFactory = Callable[[int, int], nn.Module]


def torch_batch_norm(num_features: int, spatial_dims: int) -> nn.Module:
    """PyTorch's built-in BatchNorm."""
    return nn.BatchNorm2d(num_features) if spatial_dims == 2 else nn.BatchNorm1d(num_features)


def normtext_batch_norm(num_features: int, spatial_dims: int) -> nn.Module:
    """normtext's from-scratch BatchNorm."""
    return nt.BatchNorm2d(num_features) if spatial_dims == 2 else nt.BatchNorm1d(num_features)


def lenet(norm: Optional[NormFactory] = None, activation: Callable[[], nn.Module] = nn.Sigmoid,
          norm_after_activation: bool = False, bias: bool = True, in_size: int = 28) -> nn.Sequential:
    """LeNet-5 as in Dive into Deep Learning's BatchNorm section: two 5x5 convolutions, max pooling, three dense layers.

    Args:
        norm: a norm factory, placed after every convolution and hidden dense
            layer, or ``None`` for the plain network.
        activation: the nonlinearity (D2L uses the sigmoid).
        norm_after_activation: place the norm after the nonlinearity instead of before it.
        bias: give the convolutions and dense layers a bias (BN makes it redundant).
        in_size: the side of the square input (28 for MNIST).
    """
    side = ((in_size - 4) // 2 - 4) // 2  # two 5x5 valid convolutions, two 2x2 pools

    def block(layer, features, spatial_dims):
        parts = [layer]
        normed = [norm(features, spatial_dims)] if norm is not None else []
        parts += ([activation()] + normed) if norm_after_activation else (normed + [activation()])
        return parts

    return nn.Sequential(
        *block(nn.Conv2d(1, 6, kernel_size=5, bias=bias), 6, 2),
        nn.MaxPool2d(kernel_size=2, stride=2),
        *block(nn.Conv2d(6, 16, kernel_size=5, bias=bias), 16, 2),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        *block(nn.Linear(16 * side * side, 120, bias=bias), 120, 0),
        *block(nn.Linear(120, 84, bias=bias), 84, 0),
        nn.Linear(84, 10))


# --- the small CNN of the GroupNorm, LRN, More normalizations and SyncBatchNorm chapters ---

def normtext_group_norm(num_groups: int) -> NormFactory:
    """A factory of normtext's GroupNorm with ``num_groups`` groups (after convolutions only)."""
    def factory(num_features: int, spatial_dims: int) -> nn.Module:
        return nt.GroupNorm(num_groups, num_features)
    return factory


def small_cnn(norm: Optional[NormFactory] = None, *, channels: Sequence[int] = (16, 16, 32),
              pool_after: Sequence[int] = (1,), pooled_side: int = 1,
              conv: Callable[..., nn.Module] = nn.Conv2d, conv_bias: Optional[bool] = None,
              in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """The book's small CNN for digits: 3x3 convolution blocks, average pooling, a linear classifier.

    Each block is a 3x3 convolution (padding 1), the norm and a ReLU, followed
    by a 2x2 max pooling when its index is in ``pool_after``; the head averages
    each channel down to ``pooled_side x pooled_side`` and classifies. The
    chapters use three settings:

    * GroupNorm and LRN on 8x8 digits: the defaults, 16-16-32 channels, one
      pooling after the second block, global average pooling;
    * weight standardization on 28x28 MNIST: ``channels=(8, 16), pool_after=(0, 1),
      pooled_side=4, conv=WSConv2d``;
    * SyncBatchNorm's data-parallel run on 8x8 digits: ``channels=(16, 32),
      pool_after=(1,), pooled_side=4`` (the 4x4 pooling keeps every position).

    Args:
        norm: a norm factory ``(num_features, spatial_dims) -> module``, or ``None``.
        channels: the output channels of each convolution block.
        pool_after: the blocks followed by a 2x2 max pooling.
        pooled_side: the side of the adaptive average pooling before the classifier.
        conv: the convolution class (``WSConv2d`` for weight standardization).
        conv_bias: ``None`` gives the convolutions a bias only without a norm (a
            norm that subtracts a mean and adds beta makes it redundant); pass
            ``True`` for a norm without a shift, such as LRN.
    """
    bias = norm is None if conv_bias is None else conv_bias
    layers, c_in = [], in_channels
    for i, c_out in enumerate(channels):
        layers.append(conv(c_in, c_out, kernel_size=3, padding=1, bias=bias))
        if norm is not None:
            layers.append(norm(c_out, 2))
        layers.append(nn.ReLU())
        if i in pool_after:
            layers.append(nn.MaxPool2d(2))
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pooled_side), nn.Flatten(),
                         nn.Linear(c_in * pooled_side ** 2, num_classes))


# --- LayerNorm chapter: the LayerNorm tutorial's CNN, corrected, and the Keras study's networks ---

def calc_activation_shape(dim, ksize, dilation=(1, 1), stride=(1, 1), padding=(0, 0)):
    """The (H, W) a ``Conv2d``/``MaxPool2d`` produces from ``dim`` (the LayerNorm tutorial's helper, corrected).

    The output size per axis is ``floor((d + 2p - dilation * (k - 1) - 1) / stride) + 1``
    (the formula in ``torch.nn.Conv2d``'s documentation). The tutorial divided with ``/``
    and returned floats, which ``torch.nn.LayerNorm`` rejects; ``//`` floors and
    keeps ints. Scalars are accepted for every argument, as ``Conv2d`` does.
    """
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    dim, ksize, dilation, stride, padding = map(pair, (dim, ksize, dilation, stride, padding))

    def shape_each_dim(i):
        odim_i = dim[i] + 2 * padding[i] - dilation[i] * (ksize[i] - 1) - 1
        return odim_i // stride[i] + 1   # floor division: the tutorial's "/" gave floats

    return shape_each_dim(0), shape_each_dim(1)


class TutorialCNN(nn.Module):
    """The LayerNorm tutorial's two-convolution network with LayerNorm over (C, H, W), made to run.

    The tutorial's code fails in five places: ``torch.nn.Conv2D`` and ``torch.nn.Dense``
    do not exist (``Conv2d``, ``Linear``), ``__init__`` never calls
    ``super().__init__()``, ``forward`` reads the undefined ``input`` instead of
    ``inputs``, ``calc_activation_shape`` returns floats, and the dense layer gets
    a 4D tensor (no flatten). It also ends in a sigmoid, which does not fit a
    10-class softmax cross-entropy: the corrected model returns logits.

    Args:
        idim: the input's (H, W).
        in_channels: 1 for MNIST (the tutorial's 3 is for RGB).
        num_classes: outputs.
        layer_norm: ``False`` replaces both LayerNorms by the identity (the baseline).
        norm: a ``normalized_shape -> module`` factory (default ``normtext.torch.LayerNorm``).
    """

    def __init__(self, idim=(28, 28), in_channels: int = 1, num_classes: int = 10,
                 layer_norm: bool = True, norm=None):
        super().__init__()
        if norm is None:
            norm = nt.LayerNorm
        make = norm if layer_norm else (lambda shape: nn.Identity())
        self.layer1 = nn.Conv2d(in_channels, 5, 3)
        ln_shape = calc_activation_shape(idim, 3)       # the output of the convolution
        self.norm1 = make([5, *ln_shape])               # normalize over C, H and W
        self.layer2 = nn.Conv2d(5, 10, 3)
        ln_shape = calc_activation_shape(ln_shape, 3)
        self.norm2 = make([10, *ln_shape])
        self.layer3 = nn.Linear(10 * ln_shape[0] * ln_shape[1], num_classes)

    def forward(self, inputs):
        x = F.relu(self.norm1(self.layer1(inputs)))
        x = F.relu(self.norm2(self.layer2(x)))
        return self.layer3(x.flatten(1))                # logits: the loss applies the softmax
