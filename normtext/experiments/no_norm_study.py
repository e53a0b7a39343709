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

from normtext.torch.normfree import (RELU_GAMMA, ScalarBias, ScaledStdConv2d, ScaledStdLinear,
                                     SkipInit, adaptive_clip_grad_, fixup_init_,
                                     zero_init_last_norm_)

__all__ = ["KINDS", "residual_net", "signal_propagation", "train_run"]

#: the variants :func:`residual_net` builds
KINDS = ("plain", "bn", "bn-zero", "gn", "skipinit", "fixup", "nf")


def _layer(kind: str, conv: bool, cin: int, cout: int, gamma: float = 1.0, **kw) -> nn.Module:
    """A 3x3 convolution or a linear layer; scaled-weight-standardized for NF networks."""
    if kind == "nf":
        return (ScaledStdConv2d(cin, cout, 3, padding=1, gamma=gamma, **kw) if conv
                else ScaledStdLinear(cin, cout, gamma=gamma))
    bias = kind not in ("bn", "bn-zero", "gn")          # a norm's beta makes a bias redundant
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias, **kw) if conv else nn.Linear(cin, cout, bias)


def _norm(kind: str, conv: bool, width: int, groups: int) -> list:
    if kind == "gn":
        return [nn.GroupNorm(groups, width)]
    if kind in ("bn", "bn-zero"):
        return [nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)]
    return []


class Branch(nn.Module):
    """relu -> layer -> [norm] -> relu -> layer -> [norm]: the residual branch of every variant.

    Fixup adds its scalar biases before each layer and activation and its scalar
    multiplier at the end; NF's layers are scaled-standardized with the ReLU's gain.
    """

    def __init__(self, width: int, kind: str, groups: int, conv: bool):
        super().__init__()
        gamma = RELU_GAMMA if kind == "nf" else 1.0
        b = (lambda: [ScalarBias()]) if kind == "fixup" else (lambda: [])
        self.body = nn.Sequential(
            nn.ReLU(), *b(), _layer(kind, conv, width, width, gamma), *_norm(kind, conv, width, groups),
            *b(), nn.ReLU(), *b(), _layer(kind, conv, width, width, gamma),
            *_norm(kind, conv, width, groups),
            *([SkipInit(1.0), ScalarBias()] if kind == "fixup" else []))

    def forward(self, x):
        return self.body(x)


class Block(nn.Module):
    """``h + gate(branch(h))``, or NF's ``h + alpha * branch(h / beta)``.

    The gate is SkipInit's learnable scalar (initialized to zero) or nothing.
    """

    def __init__(self, width: int, kind: str, groups: int, conv: bool, beta: float = 1.0,
                 alpha: float = 0.2):
        super().__init__()
        self.kind, self.beta, self.alpha = kind, beta, alpha
        self.branch = Branch(width, kind, groups, conv)
        self.gate = SkipInit() if kind == "skipinit" else nn.Identity()

    def forward(self, h):
        if self.kind == "nf":
            return h + self.alpha * self.branch(h / self.beta)   # Var(h') = beta^2 + alpha^2
        return h + self.gate(self.branch(h))


class ResidualNet(nn.Module):
    """stem -> ``depth`` residual blocks -> relu -> (global average pool) -> linear classifier.

    ``conv=False`` (the default, and the chapter's experiment): a residual MLP on
    the flattened image, the stem a linear layer. ``conv=True``: a residual CNN,
    the stem a 3x3 convolution with stride 2.
    """

    def __init__(self, kind: str, depth: int = 4, width: int = 64, num_classes: int = 10,
                 in_features: int = 64, groups: int = 8, alpha: float = 0.2, conv: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.conv = kind, conv
        if conv:
            self.stem = _layer(kind, True, in_features, width, stride=2)
        else:
            self.stem = nn.Sequential(nn.Flatten(), _layer(kind, False, in_features, width))
        # NF: the expected variance of h_i is 1 + i alpha^2 (unit-variance stem assumed)
        self.blocks = nn.ModuleList(
            Block(width, kind, groups, conv, beta=math.sqrt(1 + i * alpha ** 2), alpha=alpha)
            for i in range(depth))
        self.head = nn.Sequential(nn.ReLU(), *([nn.AdaptiveAvgPool2d(1), nn.Flatten()] if conv else []))
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


def residual_net(kind: str, depth: int = 4, width: int = 64, **kwargs) -> ResidualNet:
    """A :class:`ResidualNet` of the given kind, with that kind's initialization applied.

    Every convolution and hidden linear layer starts from He's initialization
    (normal, fan-in, gain :math:`\\sqrt 2`; biases zero), which the unnormalized
    variants need: PyTorch's default (variance :math:`1/(3 N)`) shrinks the
    signal at every layer. ``bn-zero`` is BatchNorm with the last gamma of each
    branch set to zero; ``fixup`` applies :func:`~normtext.torch.normfree.fixup_init_`
    (the branches' last layers and the classifier start at zero).
    """
    net = ResidualNet(kind, depth, width, **kwargs)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not net.fc:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if kind == "bn-zero":
        zero_init_last_norm_(b.branch for b in net.blocks)
    elif kind == "fixup":
        fixup_init_([b.branch for b in net.blocks], net.fc)
    return net


@torch.no_grad()
def signal_propagation(kind: str, depth: int, *, batch: int = 256, seed: int = 0,
                       **kwargs) -> Dict[str, list]:
    """Brock et al.'s signal-propagation statistics at initialization, per residual stage.

    For a unit-variance Gaussian input (training mode, so BatchNorm uses batch
    statistics): ``mean_var``, the variance of each channel (feature) over the
    batch (and positions), averaged over channels, and ``mean_sq_mean``, the
    squared mean of each channel averaged over channels, for the stem's output
    and every block's.
    """
    torch.manual_seed(seed)
    net = residual_net(kind, depth, **kwargs).train()
    x = torch.randn(batch, 1, 8, 8)
    rows = {"mean_var": [], "mean_sq_mean": []}
    for h in net.features(x):
        axes = (0, 2, 3) if h.dim() == 4 else (0,)
        rows["mean_var"].append(float(h.var(dim=axes, unbiased=False).mean()))
        rows["mean_sq_mean"].append(float(h.mean(dim=axes).square().mean()))
    return rows


def train_run(kind: str, data, *, batch_size: int, steps: int, seed: int, lr: float = 0.05,
              momentum: float = 0.9, depth: int = 4, width: int = 64, clip_factor: float = 0.01,
              threads: Optional[int] = 1, **net_kwargs) -> dict:
    """Train one variant with SGD for ``steps`` steps from ``seed``; plain numbers back.

    The same seed gives both arms of a comparison the same data order (and the
    same initial weights where their layers coincide). NF runs clip every
    parameter but the classifier's with :func:`adaptive_clip_grad_`. Returns the
    test accuracy (evaluation mode), the mean training loss of the last tenth of
    the steps and over all steps, whether the loss became non-finite, the fraction of units AGC
    clipped (NF) and the seconds taken. A run whose loss becomes non-finite stops
    there and is evaluated as it is.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)
        net = residual_net(kind, depth, width, **net_kwargs)
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
            # a diverged run is scored with the network it left behind (about chance level)
            acc = float((logits.argmax(1).numpy() == data.y_test).mean())
        tail = losses[-max(1, steps // 10):]
        return {"kind": kind, "batch_size": batch_size, "seed": seed, "steps": steps,
                "test_acc": acc, "train_loss": float(np.mean(tail)) if not diverged else float("nan"),
                "mean_loss": float(np.mean(losses)) if not diverged else float("nan"),
                "diverged": diverged,
                "clip_fraction": float(np.mean(clip_fraction)) if clip_fraction else None,
                "seconds": seconds}
    finally:
        torch.set_num_threads(old_threads)


#: the four arms of the chapter's experiment, in the order of its tables
ARMS = ("bn", "gn", "skipinit", "nf")
ARM_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm (8 groups)", "skipinit": "SkipInit",
             "nf": "NF (scaled WS + AGC)", "plain": "no normalization", "fixup": "Fixup",
             "bn-zero": "BatchNorm, last gamma zero"}
#: learning rate and AGC clip factor per (arm, batch size), chosen on a pilot seed
#: (100, never used for a verdict) as the grid point with the lowest mean training loss
#: over the run: lr in {0.003, 0.01, 0.03, 0.1, 0.3, 1}, and for NF lambda in {0.01, 0.04, 0.16}
#: (None: no clipping).
#: :func:`pilot` reruns that selection.
HYPER = {("bn", 8): (0.01, None), ("gn", 8): (0.01, None), ("skipinit", 8): (0.03, None),
         ("nf", 8): (0.1, 0.01), ("bn", 128): (0.1, None), ("gn", 128): (0.1, None),
         ("skipinit", 128): (0.3, None), ("nf", 128): (1.0, 0.01)}
LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
CLIP_GRID = (0.01, 0.04, 0.16)
PILOT_SEED = 100


def config(quick: bool) -> dict:
    """The experiment's settings: the full build runs 5 seeds, quick mode 2 and fewer steps."""
    return {"arms": list(ARMS), "batch_sizes": [8, 128], "depth": 4, "width": 64,
            "steps": 60 if quick else 300, "seeds": [0, 1] if quick else [0, 1, 2, 3, 4],
            "momentum": 0.9, "quick": quick}


def hyper(arm: str, batch_size: int) -> dict:
    """The learning rate (and NF's clip factor) of one arm at one batch size."""
    lr, clip = HYPER[(arm, batch_size)]
    return {"lr": lr} if clip is None else {"lr": lr, "clip_factor": clip}


def run_all(cfg: dict, data, cache) -> Dict[tuple, dict]:
    """Every (arm, batch size, seed) run of :func:`config`, each through ``cache(name, config, run)``."""
    runs = {}
    for arm in cfg["arms"]:
        for b in cfg["batch_sizes"]:
            for seed in cfg["seeds"]:
                key = dict(arm=arm, batch_size=b, seed=seed, steps=cfg["steps"], depth=cfg["depth"],
                           width=cfg["width"], momentum=cfg["momentum"], **hyper(arm, b))
                runs[(arm, b, seed)] = cache(
                    "no-norm-run", key,
                    lambda: train_run(arm, data, batch_size=b, steps=cfg["steps"], seed=seed,
                                      momentum=cfg["momentum"], depth=cfg["depth"],
                                      width=cfg["width"], **hyper(arm, b)))
    return runs


def pilot(data, batch_sizes=(8, 128), steps: int = 300, report=print) -> Dict[tuple, tuple]:
    """Rerun the selection of :data:`HYPER` on the pilot seed: {(arm, batch): (lr, clip)}.

    ``report`` receives one line per trial (the grid point, the mean training
    loss, the test accuracy).
    """
    chosen = {}
    for b in batch_sizes:
        for arm in ARMS:
            finite = []
            for lr in LR_GRID:
                for clip in (CLIP_GRID if arm == "nf" else (0.01,)):
                    r = train_run(arm, data, batch_size=b, steps=steps, seed=PILOT_SEED, lr=lr,
                                  clip_factor=clip)
                    if report is not None:
                        report(f"{arm} B={b} lr={lr} clip={clip}: mean loss {r['mean_loss']:.4f}, "
                               f"final loss {r['train_loss']:.4f}, test acc {r['test_acc']:.3f}, "
                               f"clipped {r['clip_fraction']}")
                    if not r["diverged"]:
                        finite.append(((lr, clip), r["mean_loss"]))
            (lr, clip), _ = min(finite, key=lambda t: t[1])
            chosen[(arm, b)] = (lr, clip if arm == "nf" else None)
    return chosen
