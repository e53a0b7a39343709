"""The experiments of book/no-normalization: residual networks with and without normalization.

:func:`residual_net` builds one small pre-activation-style residual network in
several variants that differ only in what keeps each residual branch in check:
BatchNorm or GroupNorm (optionally with the last gamma of each branch zeroed),
SkipInit's zero-initialized scalar, Fixup's initialization, or the
normalizer-free recipe (scaled weight standardization, the variance-tracking
``h + alpha * f(h / beta)`` and adaptive gradient clipping). :func:`signal_propagation`
measures what each variant does to the activations at initialization;
:func:`train_run` trains one variant from one seed and returns plain numbers
(cacheable with :func:`normtext.experiments.train.cached`).
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from normtext.torch.normfree import (RELU_GAMMA, ScalarBias, ScaledStdConv2d, SkipInit,
                                     adaptive_clip_grad_, fixup_init_, zero_init_last_norm_)

__all__ = ["KINDS", "residual_net", "signal_propagation", "train_run"]

#: the variants :func:`residual_net` builds
KINDS = ("plain", "bn", "bn-zero", "gn", "skipinit", "fixup", "nf")


class Branch(nn.Module):
    """relu -> conv -> [norm] -> relu -> conv -> [norm]; the residual branch of every variant."""

    def __init__(self, width: int, kind: str, groups: int, gamma: float = 1.0):
        super().__init__()
        norm = kind in ("bn", "bn-zero", "gn")
        conv = (lambda: ScaledStdConv2d(width, width, 3, padding=1, gamma=gamma)) if kind == "nf" \
            else (lambda: nn.Conv2d(width, width, 3, padding=1, bias=not norm))
        make_norm = (lambda: nn.GroupNorm(groups, width)) if kind == "gn" else \
            (lambda: nn.BatchNorm2d(width))
        fixup = kind == "fixup"
        self.body = nn.Sequential(
            nn.ReLU(), *([ScalarBias()] if fixup else []), conv(), *([make_norm()] if norm else []),
            *([ScalarBias()] if fixup else []),
            nn.ReLU(), *([ScalarBias()] if fixup else []), conv(), *([make_norm()] if norm else []),
            *([SkipInit(1.0), ScalarBias()] if fixup else []))

    def forward(self, x):
        return self.body(x)


class Block(nn.Module):
    """``h + gate(branch(h / beta))``: gate is SkipInit's alpha, NF's fixed alpha, or nothing."""

    def __init__(self, width: int, kind: str, groups: int, beta: float = 1.0, alpha: float = 0.2):
        super().__init__()
        self.kind, self.beta, self.alpha = kind, beta, alpha
        self.branch = Branch(width, kind, groups, gamma=RELU_GAMMA if kind == "nf" else 1.0)
        self.gate = SkipInit() if kind == "skipinit" else nn.Identity()

    def forward(self, h):
        if self.kind == "nf":
            return h + self.alpha * self.branch(h / self.beta)   # Var(h') = beta^2 + alpha^2
        return h + self.gate(self.branch(h))


class ResidualNet(nn.Module):
    """stem conv (stride 2) -> ``depth`` residual blocks -> relu -> global average pool -> linear."""

    def __init__(self, kind: str, depth: int = 4, width: int = 16, num_classes: int = 10,
                 in_channels: int = 1, groups: int = 4, alpha: float = 0.2):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.stem = (ScaledStdConv2d(in_channels, width, 3, stride=2, padding=1) if kind == "nf"
                     else nn.Conv2d(in_channels, width, 3, stride=2, padding=1))
        # NF: the expected variance of h_i is 1 + i alpha^2 (unit-variance stem assumed)
        self.blocks = nn.ModuleList(
            Block(width, kind, groups, beta=math.sqrt(1 + i * alpha ** 2), alpha=alpha)
            for i in range(depth))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)

    def features(self, x) -> List[torch.Tensor]:
        """The stem's output and every block's output."""
        h = self.stem(x)
        out = [h]
        for block in self.blocks:
            h = block(h)
            out.append(h)
        return out

    def forward(self, x):
        return self.fc(self.head(self.features(x)[-1]))


def residual_net(kind: str, depth: int = 4, width: int = 16, **kwargs) -> ResidualNet:
    """A :class:`ResidualNet` of the given kind, with that kind's initialization applied.

    Every convolution starts from He's initialization (normal, fan-in, gain
    :math:`\sqrt 2`; biases zero), which the unnormalized variants need: PyTorch's
    default (variance :math:`1/(3 N)`) shrinks the signal at every layer.
    ``bn-zero`` is BatchNorm with the last gamma of each branch set to zero;
    ``fixup`` applies :func:`~normtext.torch.normfree.fixup_init_` (the branches'
    last convolutions and the classifier start at zero).
    """
    net = ResidualNet(kind, depth, width, **kwargs)
    for m in net.modules():                 # He initialization of every convolution, as in ResNets
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if kind == "bn-zero":
        zero_init_last_norm_(b.branch for b in net.blocks)
    elif kind == "fixup":
        fixup_init_([b.branch for b in net.blocks], net.fc)
    return net


@torch.no_grad()
def signal_propagation(kind: str, depth: int, *, width: int = 16, batch: int = 64, side: int = 8,
                       seed: int = 0) -> Dict[str, list]:
    """Brock et al.'s signal-propagation statistics at initialization, per residual stage.

    For a unit-variance Gaussian input (training mode, so BatchNorm uses batch
    statistics): ``mean_var``, the variance of each channel averaged over
    channels, and ``mean_sq_mean``, the squared mean of each channel averaged
    over channels, for the stem's output and every block's.
    """
    torch.manual_seed(seed)
    net = residual_net(kind, depth, width).train()
    x = torch.randn(batch, 1, side, side)
    rows = {"mean_var": [], "mean_sq_mean": []}
    for h in net.features(x):
        rows["mean_var"].append(float(h.var(dim=(0, 2, 3), unbiased=False).mean()))
        rows["mean_sq_mean"].append(float(h.mean(dim=(0, 2, 3)).square().mean()))
    return rows


def train_run(kind: str, data, *, batch_size: int, steps: int, seed: int, lr: float = 0.05,
              momentum: float = 0.9, depth: int = 4, width: int = 16, clip_factor: float = 0.01,
              threads: Optional[int] = 1) -> dict:
    """Train one variant with SGD for ``steps`` steps from ``seed``; plain numbers back.

    The same seed gives both arms of a comparison the same data order (and the
    same initial weights where their layers coincide). NF runs clip every
    parameter but the classifier's with :func:`adaptive_clip_grad_`. Returns the
    test accuracy (evaluation mode), the mean training loss of the last tenth of
    the steps, whether the loss became non-finite, the fraction of units AGC
    clipped (NF) and the seconds taken.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)
        net = residual_net(kind, depth, width)
        clipped = [p for name, p in net.named_parameters() if not name.startswith("fc.")]
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
        loss_fn = nn.CrossEntropyLoss()
        X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
        gen = torch.Generator().manual_seed(seed)
        order = torch.empty(0, dtype=torch.long)
        losses, clip_fraction, diverged = [], [], False
        start = time.perf_counter()
        net.train()
        for step in range(steps):
            if len(order) < batch_size:           # a fresh permutation each epoch, seeded
                order = torch.cat([order, torch.randperm(len(X), generator=gen)])
            idx, order = order[:batch_size], order[batch_size:]
            loss = loss_fn(net(X[idx]), y[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad()
            loss.backward()
            if kind == "nf":
                factors = adaptive_clip_grad_(clipped, clip_factor)
                units = torch.cat([f.flatten() for f in factors])
                clip_fraction.append(float((units < 1).float().mean()))
            opt.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        net.eval()
        with torch.no_grad():
            logits = net(torch.from_numpy(data.X_test))
            acc = float((logits.argmax(1).numpy() == data.y_test).mean()) if not diverged else 0.0
        tail = losses[-max(1, steps // 10):]
        return {"kind": kind, "batch_size": batch_size, "seed": seed, "steps": steps,
                "test_acc": acc, "train_loss": float(np.mean(tail)) if not diverged else float("nan"),
                "diverged": diverged,
                "clip_fraction": float(np.mean(clip_fraction)) if clip_fraction else None,
                "seconds": seconds}
    finally:
        torch.set_num_threads(old_threads)
