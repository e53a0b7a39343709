"""Code from the source documents, kept as their authors wrote it so the book can test it.

Only what stops the code from running is changed, and each change is marked.
The book shows where this code disagrees with the frameworks; normtext's own
implementations live in :mod:`normtext.numpy`, :mod:`normtext.torch` and
:mod:`normtext.mxnet`.
"""
from __future__ import annotations

import torch
from torch import nn


def d2l_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    """Dive into Deep Learning's ``batch_norm`` (PyTorch edition), unchanged.

    Two conventions differ from ``torch.nn.BatchNorm``: ``momentum`` weighs the
    *old* value (D2L passes 0.9), and ``moving_var`` accumulates the *biased*
    batch variance. Prediction mode is detected with ``torch.is_grad_enabled()``,
    not with ``module.training``.
    """
    if not torch.is_grad_enabled():  # In prediction mode
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            mean = X.mean(dim=0)
            var = ((X - mean)**2).mean(dim=0)
        else:
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean)**2).mean(dim=(0, 2, 3), keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    Y = gamma * X_hat + beta
    return Y, moving_mean, moving_var


# the harness's names -> the D2L module's attribute names
D2L_NAMES = {"gamma": "gamma", "beta": "beta",
             "running_mean": "moving_mean", "running_var": "moving_var"}


class D2LBatchNorm(nn.Module):
    """The D2L ``BatchNorm`` module that wraps :func:`d2l_batch_norm` (as on d2l.ai).

    Its parameters are named ``gamma``/``beta`` and its state ``moving_mean``/
    ``moving_var`` (plain attributes, not buffers: ``state_dict`` misses them),
    of shape (1, C) or (1, C, 1, 1). Compare it with
    ``TorchLayer(module, names=D2L_NAMES)``.
    """

    def __init__(self, num_features, num_dims):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        Y, self.moving_mean, self.moving_var = d2l_batch_norm(
            X, self.gamma, self.beta, self.moving_mean,
            self.moving_var, eps=1e-5, momentum=0.9)
        return Y
