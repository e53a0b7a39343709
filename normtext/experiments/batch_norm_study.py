"""The BatchNorm chapter's experiments: D2L's sigmoid LeNet, in one dimension, on MNIST-1D.

Dive into Deep Learning's BatchNorm section trains LeNet (sigmoid activations,
BatchNorm after every convolution and hidden dense layer, before the
nonlinearity) with SGD at a learning rate of 1.0, batch size 256, for 5 epochs
of 60,000 Fashion-MNIST images: about 1,170 steps. The same network in one
dimension (``Conv1d`` instead of ``Conv2d``) on MNIST-1D (Greydanus's
procedurally generated digits, 40 values per signal, any number of them,
nothing downloaded) takes a few milliseconds per step on a CPU, so every arm
can run over enough seeds for the book's verdict rule.

* :func:`mnist1d_split`: MNIST-1D of a given size as a :class:`~normtext.experiments.data.Split`;
* :func:`lenet1d`: the network, with a norm factory, the norm before or after
  the sigmoid, with or without bias, and optionally :class:`ShiftNoise` after
  every norm (Santurkar et al.'s "noisy BatchNorm");
* :func:`run`: one cached training run of a named arm (:data:`ARMS`).
"""
from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from normtext import quick_mode
from normtext import torch as nt
from normtext.experiments import train
from normtext.experiments.data import Split

__all__ = ["CONFIG", "ARMS", "ShiftNoise", "lenet1d", "mnist1d_split", "generate_mnist1d", "fit", "config", "run", "steps"]


def config(quick: Optional[bool] = None) -> Dict:
    """The chapter's training setup: D2L's learning rate and batch size, about its number of steps.

    Full mode: MNIST-1D's usual 4,000 training and 1,000 test signals, batches
    of 256 (16 steps per epoch) for 19 epochs, 304 SGD steps (a quarter of
    D2L's, so that every arm runs over 5 seeds within the chapter's build time),
    5 seeds per arm. Quick mode (tests): 3 epochs and 2 seeds, enough to run
    every cell, too few to mean anything.
    """
    quick = quick_mode() if quick is None else quick
    return dict(n_train=4000, n_test=1000, batch_size=256, lr=1.0, epochs=3 if quick else 19,
                seeds=[0, 1] if quick else [0, 1, 2, 3, 4],
                sweep_lrs=[0.1, 1.0, 10.0] if quick else [0.03, 0.1, 0.3, 1.0, 3.0, 10.0])


CONFIG = config(False)


def steps(cfg: Dict) -> int:
    """The number of SGD steps of one run (the loader keeps the last, partial batch)."""
    return cfg["epochs"] * math.ceil(cfg["n_train"] / cfg["batch_size"])


@lru_cache(maxsize=4)
def mnist1d_split(n_train: int, n_test: int, seed: int = 42) -> Split:
    """:func:`generate_mnist1d`, cached on disk (generating takes seconds, reading it milliseconds)."""
    arrays = train.cached("mnist1d", dict(n_train=n_train, n_test=n_test, seed=seed),
                          lambda: [a.tolist() for a in generate_mnist1d(n_train, n_test, seed)])
    return Split(*(np.asarray(a, dtype=t) for a, t in zip(arrays, [np.float32, np.int64] * 2)))


def generate_mnist1d(n_train: int, n_test: int, seed: int = 42) -> Split:
    """MNIST-1D generated offline: ``n_train + n_test`` signals of length 40, as (N, 1, 40) float32.

    ``mnist1d.data.make_dataset`` draws every digit from its template with a
    random shift, scale, shear and noise; it seeds NumPy's global generator
    with ``seed``, so the data are the same on every call (the training runs
    reseed before they start).
    """
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    total = n_train + n_test
    args.num_samples = total + (-total) % 10          # make_dataset draws the same number per class
    args.train_split = n_train / args.num_samples
    args.seed = seed
    d = make_dataset(args)
    X = lambda a: np.asarray(a, dtype=np.float32)[:, None, :]
    return Split(X(d["x"])[:n_train], np.asarray(d["y"], dtype=np.int64)[:n_train],
                 X(d["x_test"])[:n_test], np.asarray(d["y_test"], dtype=np.int64)[:n_test])


class ShiftNoise(nn.Module):
    """Santurkar et al.'s injected "covariate shift", after a BatchNorm layer.

    In training, at every step, each channel ``c`` draws a mean ``m_c ~ U(-mean, mean)``
    and a scale ``s_c ~ U(1, scale)``, and every activation of that channel,
    for every sample, becomes ``s_c * x + m_c + e`` with ``e ~ N(0, noise^2)``
    drawn per activation. So the next layer's input has a non-zero mean and a
    non-unit variance that change from step to step. In evaluation the
    layer applies the expected transform, ``E[s] x = (1 + scale) / 2 * x``.
    """

    def __init__(self, mean: float = 1.0, scale: float = 2.0, noise: float = 0.1):
        super().__init__()
        self.mean, self.scale, self.noise = mean, scale, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1 + self.scale) / 2
        shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
        m = (torch.rand(shape, device=x.device) * 2 - 1) * self.mean      # m_c ~ U(-mean, mean)
        s = 1 + torch.rand(shape, device=x.device) * (self.scale - 1)     # s_c ~ U(1, scale)
        return s * x + m + self.noise * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, scale={self.scale}, noise={self.noise}"


NormFactory = Callable[[int], nn.Module]


def lenet1d(norm: Optional[NormFactory] = None, *, after_activation: bool = False,
            bias: bool = True, noise: bool = False, xavier: bool = False,
            length: int = 40) -> nn.Sequential:
    """D2L's LeNet with ``Conv1d``: two 5-tap convolutions (6 and 16 channels), two poolings,
    dense layers of 120 and 84, sigmoid activations.

    Args:
        norm: a factory ``num_features -> module`` placed after every convolution
            and hidden dense layer (``nn.BatchNorm1d`` accepts both (N, C, L)
            and (N, C)), or ``None`` for the plain network.
        after_activation: put the norm after the sigmoid instead of before it.
        bias: give the convolutions and dense layers a bias.
        noise: put a :class:`ShiftNoise` right after every norm.
        xavier: initialize the weights with Xavier's uniform distribution and
            the biases with 0, as D2L's plain LeNet is initialized (PyTorch's
            default draws smaller weights, and the plain sigmoid network then
            sits on a plateau for hundreds of steps).
        length: the signals' length (40 for MNIST-1D).
    """
    side = ((length - 4) // 2 - 4) // 2

    def block(layer, features):
        normed = [norm(features)] if norm is not None else []
        normed += [ShiftNoise()] if noise and norm is not None else []
        return [layer, nn.Sigmoid(), *normed] if after_activation else [layer, *normed, nn.Sigmoid()]

    net = nn.Sequential(
        *block(nn.Conv1d(1, 6, kernel_size=5, bias=bias), 6), nn.MaxPool1d(2),
        *block(nn.Conv1d(6, 16, kernel_size=5, bias=bias), 16), nn.MaxPool1d(2),
        nn.Flatten(),
        *block(nn.Linear(16 * side, 120, bias=bias), 120),
        *block(nn.Linear(120, 84, bias=bias), 84),
        nn.Linear(84, 10))
    if xavier:
        for m in net:
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return net


#: The chapter's arms: a name -> the keyword arguments of :func:`lenet1d`.
ARMS: Dict[str, Dict] = {
    "BN": dict(norm=nn.BatchNorm1d),
    "no BN": dict(norm=None, xavier=True),
    "no BN, default init": dict(norm=None),
    "from-scratch BN": dict(norm=nt.BatchNorm1d),
    "BN + injected shift": dict(norm=nn.BatchNorm1d, noise=True),
    "BN after the sigmoid": dict(norm=nn.BatchNorm1d, after_activation=True),
    "BN, gamma/beta frozen": dict(norm=lambda c: nn.BatchNorm1d(c, affine=False)),
    "BN, no bias": dict(norm=nn.BatchNorm1d, bias=False),
}


def run(arm: str, seed: int, cfg: Optional[Dict] = None, lr: Optional[float] = None) -> train.History:
    """One cached run of the arm ``arm`` (a key of :data:`ARMS`): SGD on MNIST-1D, one thread."""
    cfg = config() if cfg is None else cfg
    data = mnist1d_split(cfg["n_train"], cfg["n_test"])
    return train.cached_train("bn-lenet1d", lambda: lenet1d(**ARMS[arm]), data, seed=seed, label=arm,
                              fit=fit, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                              lr=cfg["lr"] if lr is None else lr, threads=1)


def fit(build: Callable[[], nn.Module], data: Split, *, epochs: int, lr: float, batch_size: int,
        seed: int = 0, label: str = "", progress: bool = False) -> train.History:
    """SGD with cross-entropy, as :func:`normtext.experiments.train.train_torch`, on the CPU, without a
    ``DataLoader``: the signals are tiny, so batches are sliced from one tensor in a seeded order
    (a ``DataLoader`` would spend most of the time collating them sample by sample).
    """
    train.seed_everything(seed)
    net = build()
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    X_test, y_test = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    history = train.History(label=label, device="cpu", seed=seed)
    for _ in range(epochs):
        net.train()
        start, correct, loss_sum = time.perf_counter(), 0, 0.0
        for idx in torch.randperm(len(y), generator=order).split(batch_size):
            batch_loss, batch_correct = train.train_step(net, opt, loss_fn, X[idx], y[idx])
            loss_sum += batch_loss
            correct += batch_correct
        seconds = time.perf_counter() - start
        net.eval()
        with torch.no_grad():
            test_acc = (net(X_test).argmax(1) == y_test).float().mean().item()
        history.log(loss_sum / len(y), correct / len(y), test_acc, seconds)
    return history
