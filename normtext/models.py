"""Small PyTorch models the chapters train.

A *norm factory* is a callable ``(num_features, spatial_dims) -> nn.Module``
(``spatial_dims`` is 2 after a convolution, 0 after a dense layer), so one
model definition serves every norm and both the built-in and the from-scratch
layers.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

NormFactory = Callable[[int, int], nn.Module]


def torch_batch_norm(num_features: int, spatial_dims: int) -> nn.Module:
    """PyTorch's built-in BatchNorm."""
    return nn.BatchNorm2d(num_features) if spatial_dims == 2 else nn.BatchNorm1d(num_features)


def normtext_batch_norm(num_features: int, spatial_dims: int) -> nn.Module:
    """normtext's from-scratch BatchNorm."""
    from . import torch as nt
    return nt.BatchNorm2d(num_features) if spatial_dims == 2 else nt.BatchNorm1d(num_features)


def lenet(norm: Optional[NormFactory] = None, activation: Callable[[], nn.Module] = nn.Sigmoid,
          norm_after_activation: bool = False, bias: bool = True, in_size: int = 28) -> nn.Sequential:
    """LeNet-5 as in D2L (seed 004): two 5x5 convolutions, max pooling, three dense layers.

    Args:
        norm: a norm factory, placed after every convolution and hidden dense
            layer, or ``None`` for the plain network.
        activation: the nonlinearity (the seed uses the sigmoid).
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
