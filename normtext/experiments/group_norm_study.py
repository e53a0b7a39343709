"""The GroupNorm chapter's batch-size study: BatchNorm against GroupNorm at equal numbers of steps.

Wu and He train for a fixed number of *epochs* at every batch size, with the
learning rate scaled linearly with the batch. On a network and data set this
small, fixed epochs give a batch of 64 thirty-two times fewer steps than a
batch of 2, and the large-batch runs are undertrained whatever the norm. Here
every run takes the same number of SGD steps with the same learning rate, so
two runs at different batch sizes differ in how many images each step
averages over (and, for BatchNorm, how many its statistics are taken over),
and so also in how many images they see in all.

Each seed's network draws its batches from its own permutations of the
training set, redrawn every epoch; an incomplete last batch is dropped, so
that every BatchNorm step sees exactly ``batch_size`` images. Both norms use
the same batches and the same initial convolution weights for a given seed,
so the two arms can be compared seed by seed. Test accuracy is measured once,
after the last step, in evaluation mode (BatchNorm then uses its running
statistics, estimated from batches of ``batch_size``).

The networks of all seeds train at once, packed side by side into one network
whose convolutions are grouped, one group per seed (:func:`packed_cnn`): each
seed's network sees only its own images and parameters, computes what
:func:`~normtext.experiments.models.small_cnn` computes, and a tiny model's
Python overhead is paid once per step instead of once per seed.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from normtext import quick_mode
from normtext.experiments.models import small_cnn
from normtext.experiments.train import cached, seed_everything

__all__ = ["NORMS", "config", "norm_factory", "batch_indices", "packed_cnn", "pack",
           "train_steps", "run"]

#: The two arms. PyTorch's built-in layers train the networks (normtext's are
#: checked equal to them in the chapter, and the built-ins are faster on a CPU).
NORMS = ("BatchNorm", "GroupNorm")


def config(quick: Optional[bool] = None) -> Dict:
    """The study's settings: full mode, or quick mode (fewer steps, sizes and seeds)."""
    quick = quick_mode() if quick is None else quick
    if quick:
        return dict(batch_sizes=[2, 32, 64], steps=30, lr=0.1, groups=4, seeds=[0, 1], quick=True)
    return dict(batch_sizes=[2, 4, 8, 32, 64], steps=500, lr=0.1, groups=4,
                seeds=[0, 1, 2, 3, 4], quick=False)


def norm_factory(norm: str, groups: int):
    """``(num_features, spatial_dims) -> module`` for ``small_cnn``: BatchNorm2d or GroupNorm."""
    if norm == "BatchNorm":
        return lambda c, _: nn.BatchNorm2d(c)
    if norm == "GroupNorm":
        return lambda c, _: nn.GroupNorm(groups, c)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` indices into ``n`` examples: consecutive batches of
    permutations redrawn every epoch, an incomplete last batch of each epoch dropped."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    rows = [rng.permutation(n)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
            for _ in range(epochs)]
    return np.concatenate(rows)[:steps]


def packed_cnn(k: int, norm: str, groups: int, channels: Sequence[int] = (16, 16, 32),
               num_classes: int = 10) -> nn.Sequential:
    """``k`` copies of ``small_cnn`` (default settings) side by side in one network.

    Input ``(N, k, 8, 8)``: channel ``j`` is the batch of network ``j``; output
    ``(N, k * num_classes, 1, 1)``. Every convolution has ``groups=k``, every
    BatchNorm channel belongs to one network, and GroupNorm has ``k * groups``
    groups, ``groups`` per network, so no statistic or weight is shared.
    """
    layers, c_in = [], 1
    for i, c in enumerate(channels):
        layers.append(nn.Conv2d(k * c_in, k * c, 3, padding=1, groups=k, bias=False))
        layers.append(nn.BatchNorm2d(k * c) if norm == "BatchNorm" else nn.GroupNorm(k * groups, k * c))
        layers.append(nn.ReLU())
        if i == 1:
            layers.append(nn.MaxPool2d(2))
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(k * c_in, k * num_classes, 1, groups=k)]
    return nn.Sequential(*layers)


@torch.no_grad()
def pack(nets: Sequence[nn.Sequential], norm: str, groups: int) -> nn.Sequential:
    """The packed network whose slice ``j`` holds the weights of ``nets[j]`` (each a ``small_cnn``)."""
    packed = packed_cnn(len(nets), norm, groups)
    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.GroupNorm)
    layers = [m for m in packed if isinstance(m, kinds)]
    for j, net in enumerate(nets):
        for dst, src in zip(layers, [m for m in net if isinstance(m, kinds)]):
            for name, t in list(src.named_parameters()) + list(src.named_buffers()):
                if t.dim() == 0:      # BatchNorm's step counter: the same in every network
                    getattr(dst, name).copy_(t)
                    continue
                n = len(t)            # the rows of network j: output channels, or norm channels
                getattr(dst, name)[j * n:(j + 1) * n] = t.reshape(n, *getattr(dst, name).shape[1:])
    return packed


def train_steps(norm: str, batch_size: int, data, cfg: Dict, seeds: Sequence[int]) -> Dict:
    """Train one ``small_cnn`` per seed with ``norm`` for ``cfg['steps']`` SGD steps.

    Returns ``{"test_acc": {seed: accuracy}, "loss": {seed: mean training loss
    over the last tenth of the steps}, "images": images each network saw}``.
    """
    k = len(seeds)
    nets = []
    for s in seeds:   # the same initial convolution weights as small_cnn built after seeding
        seed_everything(s)
        nets.append(small_cnn(norm_factory(norm, cfg["groups"])))
    net = pack(nets, norm, cfg["groups"])
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"])
    X, y = torch.from_numpy(data.X_train[:, 0]), torch.from_numpy(data.y_train)
    idx = torch.from_numpy(np.stack([batch_indices(len(X), batch_size, cfg["steps"], s)
                                     for s in seeds], axis=2))          # (steps, B, k)
    losses = []
    net.train()
    for rows in idx:
        logits = net(X[rows]).reshape(batch_size * k, -1)           # X[rows]: (B, k, 8, 8)
        # the sum over networks of each one's mean loss: each gets its own gradient
        per_net = nn.functional.cross_entropy(logits, y[rows].reshape(-1), reduction="none")
        per_net = per_net.reshape(batch_size, k).mean(0)
        opt.zero_grad()
        per_net.sum().backward()
        opt.step()
        losses.append(per_net.detach().numpy())
    net.eval()
    Xt = torch.from_numpy(data.X_test[:, 0])
    with torch.no_grad():
        pred = net(Xt[:, None].expand(-1, k, -1, -1)).reshape(len(Xt), k, -1).argmax(-1)
    acc = (pred.numpy() == data.y_test[:, None]).mean(0)
    tail = np.mean(losses[-max(1, len(losses) // 10):], axis=0)
    return dict(test_acc={s: float(a) for s, a in zip(seeds, acc)},
                loss={s: float(v) for s, v in zip(seeds, tail)}, images=int(idx[:, :, 0].numel()))


def run(norm: str, batch_size: int, data, cfg: Dict) -> Dict:
    """:func:`train_steps` for all of ``cfg['seeds']``, cached on disk by its configuration
    and normtext's code, with one PyTorch thread (tiny models: more threads only contend)."""
    key = dict(norm=norm, batch_size=batch_size, n_train=len(data.X_train),
               **{k: v for k, v in cfg.items() if k != "batch_sizes"})

    def fit():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return train_steps(norm, batch_size, data, cfg, cfg["seeds"])
        finally:
            torch.set_num_threads(before)

    result = cached("gn-equal-steps", key, fit)
    # JSON turns the seeds into strings; give them back as integers
    return {k: ({int(s): v for s, v in result[k].items()} if isinstance(result[k], dict)
                else result[k]) for k in result}
