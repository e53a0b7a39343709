"""The experiments of the chapter "BatchNorm at inference and in practice".

Every run is small enough for a laptop CPU: scikit-learn's 1,797 8x8 digits,
the book's small CNN (:func:`normtext.experiments.models.small_cnn`) or a
two-hidden-layer MLP, plain loops of SGD with momentum on one thread. Each run
function returns plain numbers (JSON), so :func:`normtext.experiments.train.cached`
stores it; :func:`study` runs a whole experiment over seeds through the cache.

* :func:`base_run`: a BatchNorm CNN trained at batch 32; test accuracy per
  epoch with the running statistics and after precise BN, and in training mode
  at evaluation batch sizes from 1 to the whole test set;
* :func:`renorm_run`: the MLP with BatchNorm or Batch Renormalization trained
  at batch sizes 2 to 32;
* :func:`ghost_run`: the MLP on a small training set with ghost batches of
  several sizes (the noise of batch statistics as a regularizer);
* :func:`frozen_run`: fine-tuning a pretrained CNN at batch 2 with its
  BatchNorms in training mode or frozen;
* :func:`ddp_run`: two data-parallel replicas simulated in one process, whose
  running statistics are rank 0's, as DistributedDataParallel broadcasts them.
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from normtext import quick_mode
from normtext.experiments import data, models
from normtext.experiments.train import cached, seed_everything
from normtext.torch import practice as P

__all__ = ["CONFIG", "config", "digits", "tensors", "cnn", "mlp", "fit", "accuracy",
           "train_mode_accuracy", "state_to_lists", "state_from_lists", "base_run",
           "renorm_schedule", "renorm_run", "ghost_run", "pretrain_run", "frozen_run", "ddp_run",
           "study"]

# One setting per mode, fixed before any run: the full build runs 5 seeds per arm.
CONFIG = {
    "full": dict(seeds=[0, 1, 2, 3, 4], lr=0.05, momentum=0.9, batch=32, epochs=3,
                 eval_batches=[1, 2, 4, 8, 16, 32, 128, 359],
                 renorm_batches=[2, 8, 32], renorm_steps=400, mlp_width=128,
                 ghost_train=256, ghost_batch=64, ghost_sizes=[4, 64], ghost_steps=400,
                 pretrain_epochs=4, finetune_images=100, finetune_batch=2, finetune_steps=200,
                 ddp_batch=16, ddp_epochs=3),
    "quick": dict(seeds=[0, 1], lr=0.05, momentum=0.9, batch=32, epochs=2,
                  eval_batches=[1, 4, 32, 359],
                  renorm_batches=[2, 32], renorm_steps=150, mlp_width=64,
                  ghost_train=256, ghost_batch=64, ghost_sizes=[4, 64], ghost_steps=150,
                  pretrain_epochs=1, finetune_images=100, finetune_batch=2, finetune_steps=60,
                  ddp_batch=16, ddp_epochs=1),
}


def config(quick: Optional[bool] = None) -> dict:
    """The chapter's settings for the current mode (``NORMTEXT_QUICK``), with ``quick`` recorded."""
    quick = quick_mode() if quick is None else quick
    return dict(CONFIG["quick" if quick else "full"], quick=quick)


@functools.lru_cache(maxsize=1)
def digits() -> data.Split:
    """scikit-learn's 8x8 digits, 1,438 for training and 359 for testing."""
    return data.digits_8x8()


def tensors(split: data.Split):
    """``(X_train, y_train, X_test, y_test)`` as torch tensors."""
    return tuple(torch.from_numpy(a) for a in split)


def cnn(norm: Optional[Callable] = models.torch_batch_norm) -> nn.Sequential:
    """The book's small CNN (16-16-32 channels) with ``torch.nn.BatchNorm2d`` after each convolution."""
    return models.small_cnn(norm)


def mlp(norm: Callable[[int], nn.Module], width: int = 128, classes: int = 10) -> nn.Sequential:
    """64 pixels -> two hidden layers of ``width`` units, each Linear -> norm -> ReLU -> 10 logits."""
    return nn.Sequential(nn.Flatten(),
                         nn.Linear(64, width, bias=False), norm(width), nn.ReLU(),
                         nn.Linear(width, width, bias=False), norm(width), nn.ReLU(),
                         nn.Linear(width, classes))


def fit(net: nn.Module, X: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int,
        lr: float, momentum: float, seed: int, params=None,
        on_epoch: Optional[Callable[[int], None]] = None) -> nn.Module:
    """SGD with momentum on cross-entropy for ``steps`` steps of ``batch_size`` samples.

    The data are reshuffled every epoch (a seeded generator) and the last
    incomplete batch of an epoch is dropped, so that no batch has one sample.
    ``on_epoch(epoch)`` is called after each full pass. One thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(net.parameters() if params is None else params, lr=lr,
                              momentum=momentum)
        per_epoch = len(X) // batch_size
        step, epoch = 0, 0
        net.train()
        while step < steps:
            order = torch.randperm(len(X), generator=g)
            for i in range(per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                loss = nn.functional.cross_entropy(net(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step == steps:
                    break
            epoch += 1
            if on_epoch is not None and step % per_epoch == 0:
                on_epoch(epoch)
                net.train()
    finally:
        torch.set_num_threads(threads)
    return net


@torch.no_grad()
def accuracy(net: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in evaluation mode (BatchNorm normalizes with its running statistics)."""
    net.eval()
    return float((net(X).argmax(1) == y).float().mean())


@torch.no_grad()
def train_mode_accuracy(net: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int,
                        seed: int = 0) -> float:
    """Accuracy when the model is (wrongly) left in training mode and fed batches of ``batch_size``.

    Each BatchNorm then normalizes with the statistics of the test batch it is
    given. A copy of ``net`` runs, so its running statistics stay untouched.
    """
    net = copy.deepcopy(net).train()
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    chunks = list(order.split(batch_size))
    if batch_size > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]   # no batch of one from a remainder
    correct = 0
    for idx in chunks:
        correct += int((net(X[idx]).argmax(1) == y[idx]).sum())
    return correct / len(X)


def state_to_lists(net: nn.Module) -> Dict[str, list]:
    """A ``state_dict`` as nested lists (for the JSON cache)."""
    return {k: v.tolist() for k, v in net.state_dict().items()}


def state_from_lists(net: nn.Module, state: Dict[str, list]) -> nn.Module:
    """Load :func:`state_to_lists`'s output back into ``net``; return ``net``."""
    ref = net.state_dict()
    net.load_state_dict({k: torch.tensor(v, dtype=ref[k].dtype) for k, v in state.items()})
    return net


def _batches(X: torch.Tensor, batch_size: int, seed: int) -> List[torch.Tensor]:
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    return [X[idx] for idx in order.split(batch_size)]


# --- the base network: train/eval gap and precise BN -------------------------------------

def base_run(seed: int, cfg: dict) -> dict:
    """Train the BatchNorm CNN at batch ``cfg['batch']``; measure what the chapter discusses.

    Returns, per epoch, the test accuracy with the running statistics
    (``ema``) and after recomputing them over the training set (``precise``);
    at the end, the accuracy in training mode for each evaluation batch size,
    and the trained weights.
    """
    Xtr, ytr, Xte, yte = tensors(digits())
    seed_everything(seed)
    net = cnn()
    ema, precise = [], []

    def measure(epoch):
        ema.append(accuracy(net, Xte, yte))
        twin = P.precise_batch_norm(copy.deepcopy(net), _batches(Xtr, cfg["batch"], seed))
        precise.append(accuracy(twin, Xte, yte))

    steps = cfg["epochs"] * (len(Xtr) // cfg["batch"])
    fit(net, Xtr, ytr, steps=steps, batch_size=cfg["batch"], lr=cfg["lr"],
        momentum=cfg["momentum"], seed=seed, on_epoch=measure)
    train_mode = {str(b): train_mode_accuracy(net, Xte, yte, b, seed) for b in cfg["eval_batches"]}
    return {"ema": ema, "precise": precise, "eval": ema[-1], "train_mode": train_mode,
            "steps": steps, "state": state_to_lists(net)}


# --- batch renormalization against BatchNorm, batch sizes 2 to 32 ----------------------

def renorm_schedule(steps: int) -> dict:
    """Ioffe's schedule (warm-up 5k, d_max at 25k, r_max at 40k steps) compressed to ``steps``.

    The ramp ends at half the run, so the second half trains with the full
    bounds (r_max = 3, d_max = 5); the paper's ratios 5 : 25 : 40 are kept.
    """
    r_full = steps // 2
    return dict(warmup=r_full * 5 // 40, d_full=r_full * 25 // 40, r_full=r_full)


def renorm_run(seed: int, batch_size: int, arm: str, cfg: dict) -> dict:
    """The MLP with BatchNorm (``arm='bn'``) or Batch Renormalization (``'renorm'``) at one batch size."""
    Xtr, ytr, Xte, yte = tensors(digits())
    schedule = renorm_schedule(cfg["renorm_steps"])
    norm = (lambda c: nn.BatchNorm1d(c)) if arm == "bn" else \
        (lambda c: P.BatchRenorm1d(c, **schedule))
    seed_everything(seed)
    net = mlp(norm, cfg["mlp_width"])
    fit(net, Xtr, ytr, steps=cfg["renorm_steps"], batch_size=batch_size, lr=cfg["lr"],
        momentum=cfg["momentum"], seed=seed)
    return {"eval": accuracy(net, Xte, yte),
            "train_mode": train_mode_accuracy(net, Xte, yte, max(batch_size, 2), seed)}


# --- ghost batches: the noise of batch statistics as a regularizer -----------------------

def ghost_run(seed: int, ghost: int, cfg: dict) -> dict:
    """The MLP with ghost batch norm (``ghost`` samples per ghost batch) on a small training set.

    Batches of ``cfg['ghost_batch']`` samples from the first ``cfg['ghost_train']``
    training digits: only the size of the slices that BatchNorm takes its
    statistics over changes between arms, not the gradient step.
    """
    Xtr, ytr, Xte, yte = tensors(digits().subset(cfg["ghost_train"], len(digits().X_test)))
    seed_everything(seed)
    net = mlp(lambda c: P.GhostBatchNorm1d(c, virtual_batch_size=ghost), cfg["mlp_width"])
    fit(net, Xtr, ytr, steps=cfg["ghost_steps"], batch_size=cfg["ghost_batch"], lr=cfg["lr"],
        momentum=cfg["momentum"], seed=seed)
    train_acc, test_acc = accuracy(net, Xtr, ytr), accuracy(net, Xte, yte)
    with torch.no_grad():
        test_loss = float(nn.functional.cross_entropy(net.eval()(Xte), yte))
    return {"train": train_acc, "test": test_acc, "gap": train_acc - test_acc, "test_loss": test_loss}


# --- fine-tuning with BatchNorm in training mode or frozen --------------------------------

def _classes(X, y, labels):
    keep = torch.isin(y, torch.tensor(labels))
    return X[keep], y[keep]


def pretrain_run(seed: int, cfg: dict) -> dict:
    """The CNN trained on the digits 0-4 at batch ``cfg['batch']``: its weights."""
    Xtr, ytr, _, _ = tensors(digits())
    X, y = _classes(Xtr, ytr, [0, 1, 2, 3, 4])
    seed_everything(seed)
    net = cnn()
    fit(net, X, y, steps=cfg["pretrain_epochs"] * (len(X) // cfg["batch"]),
        batch_size=cfg["batch"], lr=cfg["lr"], momentum=cfg["momentum"], seed=seed)
    return {"state": state_to_lists(net)}


def frozen_run(seed: int, arm: str, cfg: dict, pretrained: dict) -> dict:
    """Fine-tune the pretrained CNN on a few images of the digits 5-9 at batch ``cfg['finetune_batch']``.

    A new linear head is trained with the whole network. ``arm='train'``
    leaves the BatchNorms as they are (batch statistics, running estimates
    updated, gamma and beta learned); ``arm='frozen'`` replaces them by
    :class:`~normtext.torch.practice.FrozenBatchNorm2d` (the pretrained
    statistics, gamma and beta, fixed).
    """
    Xtr, ytr, Xte, yte = tensors(digits())
    X, y = _classes(Xtr, ytr, [5, 6, 7, 8, 9])
    X, y = X[:cfg["finetune_images"]], y[:cfg["finetune_images"]] - 5
    Xt, yt = _classes(Xte, yte, [5, 6, 7, 8, 9])
    net = state_from_lists(cnn(), pretrained["state"])
    seed_everything(seed)
    net[-1] = nn.Linear(net[-1].in_features, 5)
    if arm == "frozen":
        P.freeze_batch_norm(net)
    fit(net, X, y, steps=cfg["finetune_steps"], batch_size=cfg["finetune_batch"], lr=cfg["lr"] / 5,
        momentum=cfg["momentum"], seed=seed)
    return {"test": accuracy(net, Xt, yt - 5)}


# --- DistributedDataParallel's buffers, simulated -----------------------------------------

def ddp_run(seed: int, cfg: dict) -> dict:
    """Two data-parallel replicas in one process, each with half of every batch; rank 0 keeps the buffers.

    The training set is sharded without shuffling across ranks: rank 0 holds
    the digits 0-4, rank 1 the digits 5-9 (data stored sorted by class and
    split in two). Each step, each rank normalizes its own half batch with its
    own statistics and the gradients are summed, as under DDP; DDP's
    ``broadcast_buffers=True`` then makes rank 0's running statistics everyone's.
    Returns the test accuracy with those buffers, after precise BN over the
    whole training set, and the distance of the running means to the precise ones.
    """
    Xtr, ytr, Xte, yte = tensors(digits())
    shards = [_classes(Xtr, ytr, [0, 1, 2, 3, 4]), _classes(Xtr, ytr, [5, 6, 7, 8, 9])]
    n = min(len(s[0]) for s in shards)
    seed_everything(seed)
    net = cnn()
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    g = torch.Generator().manual_seed(seed)
    b = cfg["ddp_batch"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net.train()
        for _ in range(cfg["ddp_epochs"]):
            orders = [torch.randperm(len(s[0]), generator=g)[:n] for s in shards]
            for i in range(n // b):
                opt.zero_grad()
                buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k
                           or "num_batches" in k}
                for rank in (1, 0):   # rank 0 last: its buffer update is the one that stays
                    net.load_state_dict(buffers, strict=False)
                    idx = orders[rank][i * b:(i + 1) * b]
                    X, y = shards[rank][0][idx], shards[rank][1][idx]
                    (nn.functional.cross_entropy(net(X), y) / 2).backward()   # all-reduce: mean
                opt.step()
    finally:
        torch.set_num_threads(threads)
    rank0 = accuracy(net, Xte, yte)
    twin = P.precise_batch_norm(copy.deepcopy(net), _batches(Xtr, 2 * b, seed))
    gap = max(float((a.running_mean - t.running_mean).abs().max())
              for a, t in zip(P.batch_norm_modules(net), P.batch_norm_modules(twin)))
    return {"rank0": rank0, "precise": accuracy(twin, Xte, yte), "mean_gap": gap}


# --- running a study through the cache ----------------------------------------------------

def study(name: str, run: Callable[..., dict], cfg: dict, keys: Sequence[tuple] = ((),),
          extra: Optional[Callable[[int], tuple]] = None) -> Dict[tuple, dict]:
    """``{(seed, *key): run(seed, *key, cfg, *extra(seed))}`` over ``cfg['seeds']``, each run cached.

    The cache key holds the whole configuration, the run's arguments and the
    normtext source, so a changed setting or a changed layer reruns. Each run
    uses one thread: the models are tiny, and idle worker threads would only
    spin.
    """
    def one_thread(call):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return call()
        finally:
            torch.set_num_threads(threads)

    out = {}
    for seed in cfg["seeds"]:
        for key in keys:
            more = extra(seed) if extra is not None else ()
            out[(seed, *key)] = cached(f"bn-practice-{name}",
                                       dict(cfg, seed=seed, key=list(key)),
                                       lambda: one_thread(lambda: run(seed, *key, cfg, *more)))
    return out
