"""The SyncBatchNorm chapter's training experiment: data-parallel runs with BatchNorm or SyncBatchNorm.

:func:`ddp_train` runs inside the processes that
:func:`normtext.distributed.launch` starts (it resolves it by its
``"module:function"`` name), one call per process.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from normtext.experiments.data import digits_8x8
from normtext.distributed import launch, workers
from normtext.experiments.models import normtext_batch_norm, small_cnn
from normtext.experiments.train import cached, train_step
from normtext.torch import SyncBatchNorm


def ddp_cnn(norm: str) -> nn.Sequential:
    """The data-parallel run's network: :func:`small_cnn` with 16-32 channels and BatchNorm.

    ``norm``: ``"bn"`` (normtext's BatchNorm2d) or ``"syncbn"`` (the same
    network after ``SyncBatchNorm.convert_sync_batchnorm``).
    """
    if norm not in ("bn", "syncbn"):
        raise ValueError(f"norm must be 'bn' or 'syncbn', got {norm!r}")
    net = small_cnn(normtext_batch_norm, channels=(16, 32), pool_after=(1,), pooled_side=4)
    return SyncBatchNorm.convert_sync_batchnorm(net) if norm == "syncbn" else net


def ddp_train(configs: Sequence[Dict[str, Any]], epochs: int, per_process_batch: int,
              lr: float = 0.05, n_train: Optional[int] = None) -> List[Optional[Dict[str, Any]]]:
    """Data-parallel training of :func:`ddp_cnn` on scikit-learn's 8x8 digits, once per config.

    ``configs``: dicts with ``norm`` (``"bn"``/``"syncbn"``) and ``seed``. Every
    rank trains on its own shard of each epoch's shuffled training set
    (``DistributedSampler``), DDP averages the gradients; rank 0 evaluates on
    the test set after every epoch (eval mode: running statistics). Returns,
    per config, the histories as lists (rank 0's numbers; other ranks ``None``).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    data = digits_8x8()
    X, y = data.X_train, data.y_train
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    train_set = TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    X_test, y_test = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)
    results = []
    for config in configs:
        torch.manual_seed(config["seed"])       # the same initial weights on every rank
        net = DDP(ddp_cnn(config["norm"]))
        sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=config["seed"],
                                     drop_last=True)
        loader = DataLoader(train_set, batch_size=per_process_batch, sampler=sampler,
                            drop_last=True)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        history = {"label": config["norm"], "loss": [], "train_acc": [], "test_acc": [],
                   "seconds": []}
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            net.train()
            start, stats = time.perf_counter(), torch.zeros(3, dtype=torch.float64)
            for xb, yb in loader:
                stats += torch.tensor([*train_step(net, opt, loss_fn, xb, yb), len(yb)],
                                      dtype=torch.float64)
            seconds = time.perf_counter() - start
            dist.all_reduce(stats)              # loss and accuracy over every rank's samples
            net.eval()
            with torch.no_grad():
                acc = (net.module(X_test).argmax(1) == y_test).double().mean().item()
            history["loss"].append(stats[0].item() / stats[2].item())
            history["train_acc"].append(stats[1].item() / stats[2].item())
            history["test_acc"].append(acc)
            history["seconds"].append(seconds)
        results.append(history if rank == 0 else None)
    return results


class _NotCached(Exception):
    pass


def _lookup(name: str, config: Dict[str, Any]):
    """The cached result of ``(name, config)``, or raise :class:`_NotCached`."""
    def missing():
        raise _NotCached(name)
    return cached(name, config, missing)


def launch_once(k: int, calls: Dict[str, Tuple[str, tuple, dict]],
                cached_calls: Dict[str, Tuple[Dict[str, Any], str, tuple, dict]],
                timeout: float = 600.0) -> Dict[str, Any]:
    """Run several workers in one launch of ``k`` processes (one start-up for all).

    ``calls``: ``{name: (target, args, kwargs)}``, run every time; their
    results are lists by rank. ``cached_calls``: ``{name: (config, target,
    args, kwargs)}``, looked up in the training cache under ``(name, config)``
    first and run only when missing; their result is rank 0's, then cached.
    Targets are ``"module:function"`` names. Returns ``{name: result}``.
    """
    results: Dict[str, Any] = {}
    pending = []
    for name, (config, target, args, kwargs) in cached_calls.items():
        try:
            results[name] = _lookup(name, config)
        except _NotCached:
            pending.append((name, config, target, args, kwargs))
    order = list(calls) + [name for name, *_ in pending]
    jobs = list(calls.values()) + [(t, a, kw) for _, _, t, a, kw in pending]
    if jobs:
        per_rank = launch(workers.several, k, args=(jobs,), timeout=timeout)
        by_name = dict(zip(order, zip(*per_rank)))
        for name in calls:
            results[name] = list(by_name[name])
        for name, config, *_ in pending:
            results[name] = cached(name, config, lambda name=name: by_name[name][0])
    return results
