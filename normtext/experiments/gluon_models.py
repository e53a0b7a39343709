"""Small Gluon models the chapters train (the Gluon side of :mod:`normtext.experiments.models`)."""
from __future__ import annotations

from typing import Callable, Optional

from mxnet import gluon, init
from mxnet.gluon import nn

from normtext.mxnet.batch_norm import BatchNorm


def gluon_batch_norm() -> gluon.Block:
    """Gluon's built-in BatchNorm (its channel count is inferred on first use)."""
    return nn.BatchNorm()


def normtext_batch_norm() -> gluon.Block:
    """normtext's from-scratch Gluon BatchNorm."""
    return BatchNorm()


def lenet(norm: Optional[Callable[[], gluon.Block]] = None, activation: str = "sigmoid",
          ctx=None) -> nn.Sequential:
    """LeNet-5 as in Dive into Deep Learning's BatchNorm section, in Gluon, initialized with Xavier on ``ctx``."""
    net = nn.Sequential()

    def block(layer):
        net.add(layer)
        if norm is not None:
            net.add(norm())
        net.add(nn.Activation(activation))

    block(nn.Conv2D(6, kernel_size=5))
    net.add(nn.MaxPool2D(pool_size=2, strides=2))
    block(nn.Conv2D(16, kernel_size=5))
    net.add(nn.MaxPool2D(pool_size=2, strides=2))
    block(nn.Dense(120))
    block(nn.Dense(84))
    net.add(nn.Dense(10))
    net.initialize(init.Xavier(), ctx=ctx)
    return net
