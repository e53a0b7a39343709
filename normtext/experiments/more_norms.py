"""The small experiments of book/more-norms: conditional generators, gradient normalization.

Each function trains one model from a seed and returns plain numbers (and
arrays as lists) so that :func:`normtext.experiments.train.cached` can store the result.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from normtext.experiments.train import evaluate_torch, seed_everything
from normtext.testing import timing
from normtext.torch import functional as F
from normtext.torch.more import (AdaptiveInstanceNorm2d, ConditionalBatchNorm2d, batch_whitening,
                                 clip_grad_norm_, normalize_grad_)


def class_mean_bounds(data) -> dict:
    """Per-pixel MSE on the test digits of the best constant answers, from the training set.

    ``global``: every test image predicted by the mean training image (the best a
    generator that ignores the class can do on average); ``class``: by the mean
    training image of its class (the best a generator from noise and the class can do).
    """
    Xtr, Xte = data.X_train.reshape(len(data.X_train), -1), data.X_test.reshape(len(data.X_test), -1)
    glob = ((Xte - Xtr.mean(0)) ** 2).mean()
    means = np.stack([Xtr[data.y_train == c].mean(0) for c in range(10)])
    cls = ((Xte - means[data.y_test]) ** 2).mean()
    return {"global": float(glob), "class": float(cls)}


def make_generator(norm: str, z_dim: int = 16, width: int = 32, num_classes: int = 10):
    """A generator of 8x8 digits from noise ``z`` and a class, the class entering only through norms.

    ``norm``: ``"bn"`` (plain BatchNorm: the class is ignored), ``"cbn"``
    (:class:`~normtext.torch.more.ConditionalBatchNorm2d`: gamma/beta looked up
    per class) or ``"adain"`` (:class:`~normtext.torch.more.AdaptiveInstanceNorm2d`:
    gamma/beta from an MLP on a learned class embedding).
    """

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(z_dim, width * 2 * 2)
            self.up1 = nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1)   # 2 -> 4
            self.up2 = nn.ConvTranspose2d(width // 2, 1, 4, stride=2, padding=1)       # 4 -> 8
            if norm == "bn":
                self.norms = nn.ModuleList([nn.BatchNorm2d(width), nn.BatchNorm2d(width // 2)])
            elif norm == "cbn":
                self.norms = nn.ModuleList([ConditionalBatchNorm2d(width, num_classes),
                                            ConditionalBatchNorm2d(width // 2, num_classes)])
            elif norm == "adain":
                self.embed = nn.Embedding(num_classes, 8)
                self.norms = nn.ModuleList([AdaptiveInstanceNorm2d(width, 8, hidden=32),
                                            AdaptiveInstanceNorm2d(width // 2, 8, hidden=32)])
            else:
                raise ValueError(f"norm must be 'bn', 'cbn' or 'adain', got {norm!r}")

        def _norm(self, i, h, c):
            if norm == "bn":
                return self.norms[i](h)
            cond = c if norm == "cbn" else self.embed(c)
            return self.norms[i](h, cond)

        def forward(self, z, c):
            h = self.fc(z).reshape(-1, width, 2, 2)
            h = torch.relu(self._norm(0, h, c))
            h = torch.relu(self._norm(1, self.up1(h), c))
            return torch.sigmoid(self.up2(h))

    return Generator()


def train_generator(norm: str, data, *, epochs: int, seed: int, lr: float = 3e-3,
                    batch_size: int = 64, z_dim: int = 16) -> dict:
    """Train :func:`make_generator` with Adam to map (noise, class) to digits of that class (MSE).

    Returns the test MSE (fresh noise, the test digits' classes), the training
    loss per epoch, and 10 generated digits per class (eval mode) as lists.
    """

    seed_everything(seed)
    gen = make_generator(norm, z_dim=z_dim)
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    X = torch.from_numpy(data.X_train)
    y = torch.from_numpy(data.y_train)
    g = torch.Generator().manual_seed(seed)
    losses, start = [], time.perf_counter()
    for _ in range(epochs):
        gen.train()
        perm = torch.randperm(len(X), generator=g)
        total = 0.0
        for i in range(0, len(X) - batch_size + 1, batch_size):   # full batches only (BN)
            idx = perm[i:i + batch_size]
            out = gen(torch.randn(len(idx), z_dim, generator=g), y[idx])
            loss = torch.nn.functional.mse_loss(out, X[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / (len(X) // batch_size * batch_size))
    gen.eval()
    with torch.no_grad():
        Xte, yte = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)
        test_mse = torch.nn.functional.mse_loss(gen(torch.randn(len(Xte), z_dim, generator=g), yte),
                                                Xte).item()
        classes = torch.arange(10).repeat_interleave(10)
        samples = gen(torch.randn(100, z_dim, generator=g), classes)[:, 0].numpy()
    return {"norm": norm, "seed": seed, "test_mse": test_mse, "loss": losses,
            "samples": samples.tolist(), "seconds": time.perf_counter() - start}


def mlp(width: int = 128):
    """A three-layer ReLU perceptron for the 8x8 digits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def train_with_gradient_rule(rule: str, data, *, lr: float, epochs: int, seed: int,
                             batch_size: int = 64, max_norm: float = 1.0) -> dict:
    """SGD on :func:`mlp` with the gradients left alone, clipped, or normalized per layer.

    ``rule``: ``"plain"``, ``"clip"`` (:func:`~normtext.torch.more.clip_grad_norm_`
    to ``max_norm``) or ``"normalize"`` (:func:`~normtext.torch.more.normalize_grad_`).
    Returns the test accuracy, the final training loss (``nan`` once it diverged)
    and the total gradient norm before the rule, per step.
    """

    seed_everything(seed)
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    g = torch.Generator().manual_seed(seed)
    grad_norms, loss_sum, count = [], 0.0, 0
    for epoch in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        loss_sum, count = 0.0, 0
        for i in range(0, len(X), batch_size):
            idx = perm[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            total = torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(p.grad) for p in net.parameters()]))
            grad_norms.append(float(total))
            if rule == "clip":
                clip_grad_norm_(net.parameters(), max_norm)
            elif rule == "normalize":
                normalize_grad_(net.parameters())
            elif rule != "plain":
                raise ValueError(f"rule must be 'plain', 'clip' or 'normalize', got {rule!r}")
            opt.step()
            loss_sum += loss.item() * len(idx)
            count += len(idx)
    final_loss = loss_sum / count
    acc = evaluate_torch(net, data.X_test, data.y_test, torch.device("cpu"))
    return {"rule": rule, "lr": lr, "seed": seed, "test_acc": float(acc),
            "final_loss": final_loss if np.isfinite(final_loss) else float("nan"),
            "grad_norms": grad_norms}


def time_normalize_step(d: int, m: int, method: str, repeats: int = 5,
                        iterations: Optional[int] = None, seed: int = 0) -> float:
    """Seconds of one forward normalize step on ``(m, d)`` float32 rows, the fastest of ``repeats``.

    The minimum, not the mean: on a shared machine other processes only ever
    add time, so the fastest run is the least disturbed estimate.

    ``method``: ``"bn"`` (per-feature standardization,
    :func:`normtext.torch.functional.batch_norm`), ``"zca"`` / ``"pca"``
    (:func:`~normtext.torch.more.batch_whitening`, eigendecomposition) or
    ``"newton-schulz"`` (ZCA by ``iterations`` Newton-Schulz steps).
    """

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=gen) @ (torch.eye(d) + 0.1 * torch.randn(d, d, generator=gen))
    if method == "bn":
        fn = lambda: F.batch_norm(x, None, None, training=True)
    elif method == "newton-schulz":
        fn = lambda: batch_whitening(x, training=True, iterations=iterations or 5)
    else:
        fn = lambda: batch_whitening(x, training=True, method=method)
    with torch.no_grad():
        return min(timing.repeat(fn, repeats, warmup=1))
