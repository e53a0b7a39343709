"""The local response normalization chapter's study: does LRN act at all, and does it help?

LRN divides each activation by ``(k + s * sum of squares in its window) ** beta``.
Whether that is a normalization or a constant depends on the size of
``s * sum a^2`` next to ``k``: :func:`lrn_load` measures that ratio on a
network's own activations. The training comparison puts LRN where AlexNet put
it (after the ReLU), with ``alpha`` scaled (:func:`active_alpha`) so that the
ratio is of order one on this network, and compares it with no normalization,
with LRN at AlexNet's ``alpha`` and with BatchNorm over seeds, under the
book's one rule.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from normtext import quick_mode
from normtext import torch as nt
from normtext.experiments import data, models, train

__all__ = ["config", "standardized_digits", "lrn_after_relu", "cnn", "window_energy", "lrn_load",
           "active_alpha", "builds", "run"]


def config(quick: Optional[bool] = None) -> Dict:
    """The study's settings: full mode 5 seeds and 5 epochs; quick mode 2 seeds and 2 epochs."""
    quick = quick_mode() if quick is None else quick
    return dict(seeds=[0, 1] if quick else [0, 1, 2, 3, 4], epochs=2 if quick else 5,
                lr=0.01, batch_size=32, optimizer="adam", channels=(8, 8, 16))


def standardized_digits() -> data.Split:
    """scikit-learn's 8x8 digits, shifted and scaled by the training set's pixel mean and std.

    With inputs of mean 0 and variance 1 and He initialization, the activations
    of every layer have a variance of order one, so the network trains without
    normalization, and ``s * sum a^2`` has a scale that does not depend on the
    pixel range.
    """
    d = data.digits_8x8()
    mean, std = float(d.X_train.mean()), float(d.X_train.std())
    return d._replace(X_train=((d.X_train - mean) / std).astype(np.float32),
                      X_test=((d.X_test - mean) / std).astype(np.float32))


def lrn_after_relu(size: int, alpha: float, beta: float, k: float) -> models.NormFactory:
    """A norm factory for ``small_cnn`` that applies ReLU, then LRN (PyTorch's convention).

    ``small_cnn`` puts the norm between the convolution and its ReLU; this one
    gives ``conv -> ReLU -> LRN -> ReLU``, AlexNet's order (the second ReLU
    does nothing: LRN divides by a positive number, so its output is >= 0).
    """
    def factory(num_features: int, spatial_dims: int) -> nn.Module:
        return nn.Sequential(nn.ReLU(), nt.LocalResponseNorm(size, alpha, beta, k))
    return factory


def cnn(norm: Optional[models.NormFactory], *, channels=(8, 8, 16), conv_bias: bool = True) -> nn.Sequential:
    """``small_cnn`` with He-normal convolution weights and zero biases.

    PyTorch's default initialization (uniform, a third of He's variance) lets
    the signal fade over three ReLU layers and a global average: without a
    norm, SGD then sits at the chance loss of 2.3 for several epochs.
    """
    net = models.small_cnn(norm, channels=channels, conv_bias=conv_bias)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def window_energy(a: torch.Tensor, size: int) -> torch.Tensor:
    """``sum_{j=c-floor(n/2)}^{c+floor((n-1)/2)} a_j^2`` for every channel c (PyTorch's window)."""
    sq, channels = a.square(), a.shape[1]
    energy = torch.zeros_like(a)
    for d in range(-(size // 2), (size - 1) // 2 + 1):
        lo, hi = max(0, -d), min(channels, channels - d)      # channels c with 0 <= c + d < C
        energy[:, lo:hi] += sq[:, lo + d:hi + d]
    return energy


@torch.no_grad()
def lrn_load(net: nn.Module, X: torch.Tensor) -> List[np.ndarray]:
    """For every LRN layer of ``net`` (in order), ``s * sum a^2 / k`` at every element of its input.

    ``s = alpha / size`` is PyTorch's scale. Where this ratio is small against 1
    the layer's divisor is about ``k ** beta``: a constant, not a normalization.
    """
    loads, hooks = [], []
    for m in net.modules():
        if isinstance(m, (nt.LocalResponseNorm, nn.LocalResponseNorm)):
            def hook(mod, inputs, output):
                s = mod.alpha / mod.size
                loads.append((s * window_energy(inputs[0], mod.size) / mod.k).flatten().numpy())
            hooks.append(m.register_forward_hook(hook))
    try:
        net.eval()(X)
    finally:
        for h in hooks:
            h.remove()
    return loads


def active_alpha(params, digits: data.Split, *, channels=(8, 8, 16), seed: int = 0,
                 images: int = 256) -> float:
    """``params.alpha`` times the power of ten that brings the median load of the first LRN to about 1.

    Measured at initialization (seed ``seed``) on ``images`` training images.
    """
    torch.manual_seed(seed)
    net = cnn(lrn_after_relu(params.size, params.alpha, params.beta, params.k), channels=channels)
    median = float(np.median(lrn_load(net, torch.from_numpy(digits.X_train[:images]))[0]))
    return params.alpha * 10.0 ** round(-math.log10(median))


def builds(params, alpha: float, channels=(8, 8, 16)) -> Dict[str, Callable[[], nn.Module]]:
    """The four arms, in the order of the chapter's figure.

    No normalization; LRN after each ReLU with ``params`` as given (the
    control: with a small load it only rescales); the same with ``alpha`` in
    place of ``params.alpha`` (see :func:`active_alpha`); BatchNorm after each
    convolution. LRN has no shift, so its networks keep the convolutions'
    biases, as the plain one does; BatchNorm's does not need them.
    """
    given = lrn_after_relu(params.size, params.alpha, params.beta, params.k)
    scaled = lrn_after_relu(params.size, alpha, params.beta, params.k)
    return {"none": lambda: cnn(None, channels=channels),
            "LRN, AlexNet's alpha": lambda: cnn(given, channels=channels),
            "LRN, scaled alpha": lambda: cnn(scaled, channels=channels),
            "BatchNorm": lambda: cnn(models.normtext_batch_norm, channels=channels, conv_bias=False)}


def run(params, alpha: float, digits: data.Split, cfg: Dict, device=None) -> Dict[str, List[train.History]]:
    """Train every arm of :func:`builds` for every seed of ``cfg`` (cached): ``{arm: [History]}``."""
    return train.cached_seeds(
        "lrn-study", builds(params, alpha, cfg["channels"]), digits, seeds=cfg["seeds"],
        key={"alpha": params.alpha, "scaled_alpha": alpha, "size": params.size,
             "beta": params.beta, "k": params.k, "channels": list(cfg["channels"])},
        device=device, threads=1, epochs=cfg["epochs"], lr=cfg["lr"],
        batch_size=cfg["batch_size"], optimizer=cfg["optimizer"])
