"""Training loops for PyTorch and Gluon, a device picker, and a result cache.

Both loops print a tqdm progress bar and return a :class:`History`: per epoch
the mean training loss, train and test accuracy and seconds, plus the device.
:mod:`normtext.experiments.plot` draws histories.

:func:`cached` stores the result of a long run on disk, keyed by its
configuration and by the source code of normtext, so that a rebuild of the book
does not retrain what has not changed, and a change to the package retrains.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from normtext import mxnet_available, quick_mode
from normtext.experiments.data import gluon_loader, torch_loader


@dataclass
class History:
    """What one training run measured, epoch by epoch."""

    label: str = ""
    device: str = "cpu"
    seed: Optional[int] = None
    loss: List[float] = field(default_factory=list)
    train_acc: List[float] = field(default_factory=list)
    test_acc: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)

    def log(self, loss, train_acc, test_acc, seconds):
        self.loss.append(float(loss))
        self.train_acc.append(float(train_acc))
        self.test_acc.append(float(test_acc))
        self.seconds.append(float(seconds))

    def summary(self) -> str:
        return (f"{self.label}: loss {self.loss[-1]:.4f}, train acc {self.train_acc[-1]:.3f}, "
                f"test acc {self.test_acc[-1]:.3f}, {np.mean(self.seconds):.2f} s/epoch on {self.device}")


def seed_everything(seed: int) -> None:
    """Fix Python's, NumPy's, PyTorch's and (when present) MXNet's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if mxnet_available():
        import mxnet as mx
        mx.random.seed(seed)


def torch_device(prefer: str | None = None):
    """CUDA when present (or when asked for), else the CPU."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mxnet_context():
    """``mx.gpu()`` when MXNet sees a GPU, else ``mx.cpu()``.

    MXNet's last GPU wheels target compute capability <= 8.6; on newer GPUs
    (Hopper) MXNet runs on the CPU.
    """
    import mxnet as mx
    try:
        return mx.gpu() if mx.context.num_gpus() > 0 else mx.cpu()
    except mx.MXNetError:
        return mx.cpu()


def train_torch(net, data, *, epochs: int, lr: float, batch_size: int, device=None,
                seed: int = 0, label: str = "", progress: bool = True, optimizer: str = "sgd"):
    """Train a PyTorch classifier with cross-entropy; ``data`` is a :class:`normtext.experiments.data.Split`.

    ``net`` is a module, or better a function that builds one: it is then built
    after the generators are seeded, so the initialization is reproducible too.
    """

    device = torch_device() if device is None else torch.device(device)
    seed_everything(seed)
    net = (net if isinstance(net, nn.Module) else net()).to(device)
    train_iter = torch_loader(data.X_train, data.y_train, batch_size, shuffle=True, seed=seed)
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    history = History(label=label, device=str(device), seed=seed)
    for _ in tqdm(range(epochs), desc=label or "train", disable=not progress, leave=False):
        net.train()
        start, total, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for X, y in train_iter:
            batch_loss, batch_correct = train_step(net, opt, loss_fn, X.to(device), y.to(device))
            loss_sum += batch_loss
            correct += batch_correct
            total += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        history.log(loss_sum / total, correct / total,
                    evaluate_torch(net, data.X_test, data.y_test, device), seconds)
    return history


def train_step(net, opt, loss_fn, X, y) -> tuple:
    """One optimizer step on the batch ``(X, y)``: the summed loss and the number of correct labels."""
    logits = net(X)
    loss = loss_fn(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item() * len(y), (logits.argmax(1) == y).sum().item()


def evaluate_torch(net, X, y, device, batch_size: int = 1000) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            logits = net(torch.from_numpy(X[i:i + batch_size]).to(device))
            correct += (logits.argmax(1).cpu().numpy() == y[i:i + batch_size]).sum()
    return correct / len(X)


def train_gluon(net, data, *, epochs: int, lr: float, batch_size: int, ctx=None,
                seed: int = 0, label: str = "", progress: bool = True):
    """Train a Gluon classifier with softmax cross-entropy and SGD.

    ``net`` is an initialized block, or a function that builds and initializes
    one after the generators are seeded.
    """
    from mxnet import gluon

    ctx = mxnet_context() if ctx is None else ctx
    seed_everything(seed)
    net = net if isinstance(net, gluon.Block) else net()
    train_iter = gluon_loader(data.X_train, data.y_train, batch_size, shuffle=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = History(label=label, device=str(ctx), seed=seed)
    for _ in tqdm(range(epochs), desc=label or "train", disable=not progress, leave=False):
        loss, accuracy, seconds = gluon_epoch(net, train_iter, trainer, loss_fn, ctx)
        history.log(loss, accuracy, evaluate_gluon(net, data.X_test, data.y_test, ctx), seconds)
    return history


def gluon_epoch(net, train_iter, trainer, loss_fn, ctx) -> tuple:
    """One epoch of SGD in Gluon: ``(mean loss, accuracy, seconds)`` (also what the benchmark times).

    train_torch's loop in Gluon's words: the two frameworks share no step to factor out.
    """
    import mxnet as mx
    from mxnet import autograd

    start, total, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
    for X, y in train_iter:
        X, y = X.as_in_context(ctx), y.as_in_context(ctx)
        with autograd.record():
            logits = net(X)
            loss = loss_fn(logits, y)
        loss.backward()
        trainer.step(len(y))
        loss_sum += loss.sum().asscalar()
        correct += (logits.argmax(axis=1) == y).sum().asscalar()
        total += len(y)
    mx.nd.waitall()
    return loss_sum / total, correct / total, time.perf_counter() - start


def evaluate_gluon(net, X, y, ctx, batch_size: int = 1000) -> float:
    import mxnet as mx
    correct = 0
    for i in range(0, len(X), batch_size):
        logits = net(mx.nd.array(X[i:i + batch_size], ctx=ctx))  # not recording: predict mode
        correct += (logits.argmax(axis=1).asnumpy().astype(np.int64) == y[i:i + batch_size]).sum()
    return correct / len(X)


# --- runs over seeds, cached, and their summaries -------------------------------------

def cached_train(name: str, build: Callable, data, *, seed: int, label: str,
                 key: Optional[Dict[str, Any]] = None, fit: Callable = train_torch,
                 threads: Optional[int] = None, **train_kwargs) -> History:
    """``fit(build, data, seed=seed, label=label, **train_kwargs)``, computed once and cached.

    The cache key is ``name``, ``key`` (what else distinguishes the run, such as
    a norm's settings), the label, the seed, the training arguments, the data's
    size and the quick-mode flag: everything but ``build`` itself, which the
    label must name. ``fit`` is :func:`train_torch` or :func:`train_gluon`;
    ``threads`` runs it with that many PyTorch threads (tiny models run faster
    on one, and do not contend with other processes).
    """
    config = dict(key or {}, label=label, seed=seed, n_train=len(data.X_train),
                  n_test=len(data.X_test), quick=quick_mode(),
                  **{k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                     for k, v in train_kwargs.items()})

    def run():
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return fit(build, data, seed=seed, label=label, progress=False, **train_kwargs)
        finally:
            torch.set_num_threads(before)

    return cached(name, config, run)


def cached_seeds(name: str, builds: Dict[str, Callable], data, *, seeds: Sequence[int],
                 **kwargs) -> Dict[str, List[History]]:
    """:func:`cached_train` for every build (by label) and seed: ``{label: [History per seed]}``.

    Every build runs the same seeds, so the arms can be compared seed by seed
    (:func:`normtext.experiments.verdict.paired_verdict` with :func:`per_seed`).
    """
    return {label: [cached_train(name, build, data, seed=s, label=label, **kwargs) for s in seeds]
            for label, build in builds.items()}


def per_seed(histories: Sequence[History], metric: Callable[[History], float] = None) -> Dict[int, float]:
    """``{seed: metric(history)}``, by default the final test accuracy, for a paired verdict."""
    metric = metric or (lambda h: h.test_acc[-1])
    seeds = [h.seed for h in histories]
    if None in seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"each history needs its own seed to be paired, got {seeds}")
    return {h.seed: float(metric(h)) for h in histories}


def summarize(runs: Dict[str, List[History]]):
    """One row per label: seeds, mean training loss over all epochs, final loss, final test
    accuracy (mean and sample standard deviation over seeds), seconds per epoch, device.

    Returns a ``pandas.DataFrame`` indexed by the label.
    """
    rows = []
    for label, hs in runs.items():
        acc = np.array([h.test_acc[-1] for h in hs])
        rows.append({"run": label, "seeds": len(hs),
                     "mean train loss": float(np.mean([np.mean(h.loss) for h in hs])),
                     "final train loss": float(np.mean([h.loss[-1] for h in hs])),
                     "final test acc": float(acc.mean()),
                     "std over seeds": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
                     "s / epoch": float(np.mean([np.median(h.seconds) for h in hs])),
                     "device": hs[0].device})
    columns = ["run", "seeds", "mean train loss", "final train loss", "final test acc",
               "std over seeds", "s / epoch", "device"]
    return pd.DataFrame(rows, columns=columns).set_index("run")


# --- the cache -----------------------------------------------------------------------

def _source_hash() -> str:
    """A digest of every .py file of normtext: any code change invalidates the cache."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """``$NORMTEXT_CACHE``, else ``~/.cache/normtext`` (the Makefile points it into _build/)."""
    return Path(os.environ.get("NORMTEXT_CACHE", Path.home() / ".cache" / "normtext"))


def cached(name: str, config: Dict[str, Any], run: Callable[[], Any]):
    """``run()``'s result, computed once per (name, config, normtext source, platform).

    The result must be JSON-serializable or a :class:`History` or a list/dict of
    them. The config should name everything that changes the result
    (epochs, seeds, quick mode, device).
    """
    key_data = json.dumps({"name": name, "config": config, "source": _source_hash(),
                           "python": platform.python_version()}, sort_keys=True, default=str)
    key = hashlib.sha256(key_data.encode()).hexdigest()[:20]
    path = cache_dir() / f"{name}-{key}.json"
    if path.exists():
        return _decode(json.loads(path.read_text()))
    result = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_encode(result)))
    tmp.replace(path)
    return result


def _encode(obj):
    if isinstance(obj, History):
        return {"__history__": asdict(obj)}
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _decode(obj):
    if isinstance(obj, dict):
        if "__history__" in obj:
            return History(**obj["__history__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj
