"""Small Gluon models (the Gluon side of :mod:`normtext.experiments.models`), and their speed.

``python -m normtext.experiments.gluon_models [--rounds N] [--json PATH]``
times the BatchNorm chapter's Gluon LeNet an epoch at a time with Gluon's
BatchNorm and with normtext's (:func:`time_epochs`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Callable, Dict, List, Optional, Sequence

from mxnet import gluon, init
from mxnet.gluon import nn

from normtext.experiments import data, train
from normtext.mxnet.batch_norm import BatchNorm
from normtext.testing.provenance import environment
from normtext.testing.timing import quartiles


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


MODEL = "LeNet with BatchNorm (Gluon), 4,000 digits, batch 256"


def time_epochs(*, rounds: int = 7, batch_size: int = 256, lr: float = 1.0,
                seed: int = 0) -> dict:
    """Seconds per training epoch of :func:`lenet` with Gluon's BatchNorm and with normtext's.

    On the 4,000 training digits of :func:`normtext.experiments.data.mnist_5k`,
    batch 256, SGD at D2L's learning rate, each epoch as
    :func:`normtext.experiments.train.train_gluon` runs it. After a warm-up
    epoch each, the two networks train an epoch in turn for ``rounds`` rounds,
    the first of each pair alternating, and the ratio normtext/Gluon is taken
    per round: a slow moment of a shared machine hits both sides of a pair.
    """
    digits = data.mnist_5k()
    train.seed_everything(seed)
    loader = data.gluon_loader(digits.X_train, digits.y_train, batch_size, shuffle=True)
    ctx = train.mxnet_context()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    runs = {}
    for name, norm in (("built-in", gluon_batch_norm), ("normtext", normtext_batch_norm)):
        net = lenet(norm, ctx=ctx)
        runs[name] = (net, gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr}))

    def epoch(name: str) -> float:
        net, trainer = runs[name]
        return train.gluon_epoch(net, loader, trainer, loss_fn, ctx)[2]

    for name in runs:
        epoch(name)  # warm-up: allocation, first-call setup
    seconds: Dict[str, List[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            seconds[name].append(epoch(name))
    q1, ratio, q3 = quartiles([t / t0 for t, t0 in zip(seconds["normtext"], seconds["built-in"])])
    return {"model": MODEL, "rounds": rounds, "seconds_built_in": seconds["built-in"],
            "seconds_normtext": seconds["normtext"],
            "median_s_built_in": statistics.median(seconds["built-in"]),
            "median_s_normtext": statistics.median(seconds["normtext"]),
            "ratio": ratio, "ratio_q1": q1, "ratio_q3": q3}


def describe(result: dict) -> str:
    """One line: the median seconds per epoch of each and the paired ratio with its quartiles."""
    return (f"{result['model']}: seconds per epoch, Gluon's BatchNorm "
            f"{result['median_s_built_in']:.2f}, normtext's {result['median_s_normtext']:.2f}; "
            f"normtext/Gluon {result['ratio']:.2f} [{result['ratio_q1']:.2f}-"
            f"{result['ratio_q3']:.2f}] over {result['rounds']} paired epochs")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m normtext.experiments.gluon_models",
                                description="Seconds per LeNet epoch, Gluon's BatchNorm and normtext's.")
    p.add_argument("--rounds", type=int, default=7, help="paired epochs (default 7)")
    p.add_argument("--json", metavar="PATH", help="also write the result, with the environment")
    args = p.parse_args(argv)
    result = time_epochs(rounds=args.rounds)
    print(describe(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment("cpu"), **result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
