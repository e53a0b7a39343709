"""The Transformers chapter's experiments: a character-level language model on Python's help texts.

The data ships with every CPython: :mod:`pydoc_data.topics` holds the text
that ``help("assert")`` and the other help topics print, about 465,000
characters of English prose and code. A small causal Transformer
(:class:`CharTransformer`, built from :mod:`normtext.torch.transformer`)
learns to predict the next character. The samples are windows of *variable*
length, padded on the right to the longest in the batch, as batches of
sentences are in language tasks: the padding does not matter to per-token
norms (LayerNorm, RMSNorm, DyT) and it does to BatchNorm, which is one of the
chapter's questions.

* :func:`corpus`, :func:`encode`, :func:`sample_batch`, :func:`validation_batches`: the data;
* :class:`CharTransformer`: embeddings, blocks, final norm (pre-LN only), output head;
* :func:`train_lm`: one run of Adam with or without warm-up, returning what the
  chapter plots and judges (losses, attention logits, divergence);
* :func:`init_grad_norms`: the gradient norm of each layer at initialization (Xiong et al.);
* :func:`batch_stat_deviation`: how far one batch's statistics fall from the population's.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normtext.torch.transformer import TransformerEncoderLayer, make_norm

PAD = 0
IGNORE = -100   # target of a padded position: cross-entropy skips it


# --- data ---------------------------------------------------------------------------

def corpus() -> str:
    """Python's help topics (``pydoc_data.topics``), in key order, as printable ASCII.

    Characters outside printable ASCII and the newline (a few hundred of
    465,000) become ``"?"``.
    """
    from pydoc_data.topics import topics
    text = "\n".join(topics[k] for k in sorted(topics))
    return "".join(c if (" " <= c <= "~" or c == "\n") else "?" for c in text)


def vocabulary(text: str) -> List[str]:
    """The characters of ``text``, sorted; index 0 is reserved for padding."""
    return ["<pad>"] + sorted(set(text))


def encode(text: str, vocab: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def split(ids: np.ndarray, val_fraction: float = 0.1):
    """The first 90 % of the text for training, the rest for validation (no overlap)."""
    cut = int(len(ids) * (1 - val_fraction))
    return ids[:cut], ids[cut:]


def sample_batch(ids: np.ndarray, rng: np.random.Generator, batch_size: int, max_len: int,
                 min_len: Optional[int] = None):
    """A batch of windows of random length in ``[min_len, max_len]``, right-padded.

    Returns ``(x, y, pad)``: inputs ``(N, T)`` (``PAD`` after the end), targets
    ``(N, T)`` (the next character, ``IGNORE`` at padding) and the padding mask
    ``(N, T)`` (``True`` at padding), with ``T`` the longest window of the batch.
    ``min_len=max_len`` gives fixed-length windows without padding.
    """
    min_len = max(1, max_len // 4) if min_len is None else min_len
    lengths = rng.integers(min_len, max_len + 1, size=batch_size)
    starts = rng.integers(0, len(ids) - max_len - 1, size=batch_size)
    T = int(lengths.max())
    x = np.full((batch_size, T), PAD, dtype=np.int64)
    y = np.full((batch_size, T), IGNORE, dtype=np.int64)
    for i, (s, n) in enumerate(zip(starts, lengths)):
        x[i, :n] = ids[s:s + n]
        y[i, :n] = ids[s + 1:s + n + 1]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return x, y, x == PAD


def validation_batches(ids: np.ndarray, n_batches: int, batch_size: int, max_len: int,
                       seed: int = 12345):
    """A fixed list of validation batches (the same for every run)."""
    rng = np.random.default_rng(seed)
    return [sample_batch(ids, rng, batch_size, max_len) for _ in range(n_batches)]


# --- the model -----------------------------------------------------------------------

class CharTransformer(nn.Module):
    """A causal character-level Transformer: embeddings, ``num_layers`` blocks, a head.

    The blocks are :class:`normtext.torch.transformer.TransformerEncoderLayer`
    with a causal mask and no dropout. A pre-LN stack ends with one more norm
    before the head (the residual stream is never normalized otherwise); a
    post-LN stack's output is already normalized.
    """

    def __init__(self, vocab_size: int, d_model: int = 32, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 128, max_len: int = 64, norm_first: bool = True,
                 norm: str = "layer", qk_norm: Optional[str] = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
                                    norm_first=norm_first, norm=norm, qk_norm=qk_norm)
            for _ in range(num_layers))
        self.norm = make_norm(norm, d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        h = self.embed(x) + self.pos(torch.arange(T, device=x.device))
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        for layer in self.layers:
            # right padding and a causal mask: a real token never sees a padded one
            h = layer(h, src_mask=causal)
        return self.head(self.norm(h))

    def max_attention_logit(self) -> float:
        """The largest absolute attention logit, :math:`|q \\cdot k| / \\sqrt{d_h}`, of the
        last forward pass, over all layers."""
        return max(float(layer.self_attn.last_max_logit) for layer in self.layers)


def lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy per real (unpadded) character, in nats."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                           ignore_index=IGNORE)


def evaluate(model: nn.Module, batches) -> float:
    """Validation loss in nats per character (eval mode: BatchNorm uses running statistics)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y, _ in batches:
            n = int((y != IGNORE).sum())
            total += float(lm_loss(model, x, y)) * n
            count += n
    model.train()
    return total / count


# --- training ------------------------------------------------------------------------

def lr_at(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up from ``lr / warmup`` to ``lr`` over ``warmup`` steps, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


def train_lm(config: Dict, seed: int, data=None) -> Dict:
    """Train one :class:`CharTransformer` and return its measurements (JSON-serializable).

    ``config`` keys: ``d_model, nhead, num_layers, dim_feedforward, max_len,
    norm_first, norm, qk_norm`` (the model), ``lr, warmup, steps, batch_size,
    val_batches, log_every`` (the run). Adam with betas (0.9, 0.98) as Vaswani
    et al. and Xiong et al.; no gradient clipping, no dropout. ``seed`` fixes
    the initialization and the order of the batches, so two configurations run
    with one seed see the same data. A run whose loss becomes NaN or infinite
    stops and is marked diverged (its losses are then reported as the loss of
    predicting uniformly, ``log(vocabulary size)``).

    Returns ``{"val_loss", "train_loss" (a curve, one point per log_every
    steps), "max_logit" (curve), "final_max_logit", "diverged", "seconds"}``.
    """
    ids, vocab_size = data if data is not None else default_data()
    train_ids, val_ids = split(ids)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model: one thread is as fast and does not contend
    try:
        torch.manual_seed(seed)
        model = CharTransformer(vocab_size, config["d_model"], config["nhead"],
                                config["num_layers"], config["dim_feedforward"], config["max_len"],
                                config["norm_first"], config["norm"], config.get("qk_norm"))
        opt = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(0.9, 0.98))
        rng = np.random.default_rng(seed)
        val = validation_batches(val_ids, config["val_batches"], config["batch_size"],
                                 config["max_len"])
        curve, logits, window, logit_window = [], [], [], []
        diverged, start = False, time.perf_counter()
        for step in range(config["steps"]):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, config["lr"], config["warmup"])
            x, y, _ = sample_batch(train_ids, rng, config["batch_size"], config["max_len"])
            loss = lm_loss(model, x, y)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            window.append(loss.item())
            logit_window.append(model.max_attention_logit())
            if len(window) == config["log_every"]:
                curve.append(float(np.mean(window)))
                logits.append(float(np.max(logit_window)))
                window, logit_window = [], []
        uniform = math.log(vocab_size)
        val_loss = uniform if diverged else evaluate(model, val)
        if not math.isfinite(val_loss):
            diverged, val_loss = True, uniform
        return {"val_loss": val_loss, "train_loss": curve, "max_logit": logits,
                "final_max_logit": logits[-1] if logits else float("nan"),
                "diverged": diverged, "seconds": time.perf_counter() - start}
    finally:
        torch.set_num_threads(threads)


_DATA = {}


def default_data():
    """``(ids, vocabulary size)`` of :func:`corpus`, computed once per process."""
    if "ids" not in _DATA:
        text = corpus()
        vocab = vocabulary(text)
        _DATA["ids"], _DATA["vocab_size"] = encode(text, vocab), len(vocab)
    return _DATA["ids"], _DATA["vocab_size"]


# --- measurements at initialization -------------------------------------------------

def init_grad_norms(norm_first: bool, seed: int, config: Dict, n_batches: int = 4,
                    data=None) -> List[float]:
    """The gradient norm of each layer's second feed-forward weight at initialization.

    Xiong et al. (2020) measure :math:`\\|\\partial L / \\partial W^{2}\\|` of the
    feed-forward sublayer of every layer of a freshly initialized model
    (their Figure 3). Here: the mean over ``n_batches`` training batches of
    that norm, one value per layer, bottom layer first.
    """
    ids, vocab_size = data if data is not None else default_data()
    train_ids, _ = split(ids)
    torch.manual_seed(seed)
    model = CharTransformer(vocab_size, config["d_model"], config["nhead"], config["num_layers"],
                            config["dim_feedforward"], config["max_len"], norm_first, "layer")
    rng = np.random.default_rng(seed)
    norms = np.zeros(config["num_layers"])
    for _ in range(n_batches):
        x, y, _ = sample_batch(train_ids, rng, config["batch_size"], config["max_len"])
        model.zero_grad()
        lm_loss(model, x, y).backward()
        norms += [float(layer.linear2.weight.grad.norm()) for layer in model.layers]
    return (norms / n_batches).tolist()


def batch_stat_deviation(features: Tensor, pad: Tensor, batch_size: int,
                         include_padding: bool) -> Dict[str, float]:
    """How far per-batch BatchNorm statistics fall from the population's, per feature.

    ``features`` is ``(B, T, d)`` activations of ``B`` sequences with padding
    mask ``pad`` ``(B, T)``. The population mean and variance are taken over
    every real token; each batch of ``batch_size`` sequences gets its own,
    over its real tokens or, with ``include_padding``, over all its positions
    (what :class:`torch.nn.BatchNorm1d` computes on a padded batch). Returns
    the median over batches and features of ``|mu_B - mu| / sigma`` and
    ``|sigma_B^2 / sigma^2 - 1|``.
    """
    d = features.shape[-1]
    real = features[~pad].double()
    mu, var = real.mean(0), real.var(0, unbiased=False)
    dmu, dvar = [], []
    for i in range(0, features.shape[0] - batch_size + 1, batch_size):
        f, p = features[i:i + batch_size].double(), pad[i:i + batch_size]
        rows = f.reshape(-1, d) if include_padding else f[~p]
        dmu.append(((rows.mean(0) - mu).abs() / var.sqrt()).numpy())
        dvar.append((rows.var(0, unbiased=False) / var - 1).abs().numpy())
    return {"mean deviation": float(np.median(np.concatenate(dmu))),
            "variance deviation": float(np.median(np.concatenate(dvar)))}


# --- the chapter's runs ----------------------------------------------------------------

#: The model of every run: small enough that one run takes seconds on one CPU thread.
MODEL = dict(d_model=32, nhead=4, num_layers=2, dim_feedforward=64, max_len=32)


def base_config(quick: bool) -> Dict:
    """The run every arm starts from: pre-LN, LayerNorm, Adam at 1e-3, no warm-up.

    Full build: 200 steps of 16 windows of 8 to 32 characters; quick mode: 40.
    """
    steps = 40 if quick else 200
    return dict(MODEL, norm_first=True, norm="layer", qk_norm=None, lr=1e-3, warmup=0,
                steps=steps, batch_size=16, val_batches=8, log_every=10 if not quick else 5)


def arms(quick: bool) -> Dict[str, Dict]:
    """The chapter's configurations, each a change to :func:`base_config`.

    Warm-up, where used, is linear over the first tenth of the run. The high
    learning rate of the QK-norm runs is ten times the base rate.
    """
    base = base_config(quick)
    warm = base["steps"] // 10
    changes = {
        "post-LN, warm-up": dict(norm_first=False, warmup=warm),
        "post-LN, no warm-up": dict(norm_first=False),
        "pre-LN, no warm-up": {},
        "pre-DyT, no warm-up": dict(norm="dyt"),
        "pre-BatchNorm, no warm-up": dict(norm="batch"),
        "pre-LN, lr x10": dict(lr=10 * base["lr"]),
        "pre-LN + QK-norm, lr x10": dict(lr=10 * base["lr"], qk_norm="layer"),
    }
    return {name: dict(base, **change) for name, change in changes.items()}


def run_arms(configs: Dict[str, Dict], seeds: Sequence[int], cached=None) -> Dict[str, Dict[int, Dict]]:
    """``{arm: {seed: train_lm(config, seed)}}``; with ``cached`` (``experiments.train.cached``)
    each run is stored on disk, keyed by its configuration and seed."""
    out = {}
    for name, config in configs.items():
        out[name] = {}
        for seed in seeds:
            if cached is None:
                out[name][seed] = train_lm(config, seed)
            else:
                out[name][seed] = cached("transformer-lm", dict(config, seed=seed),
                                         lambda c=config, s=seed: train_lm(c, s))
    return out


def metric(runs: Dict[int, Dict], key: str = "val_loss") -> Dict[int, float]:
    """``{seed: value}`` of one arm, for :func:`normtext.experiments.verdict.paired_verdict`."""
    return {seed: float(r[key]) for seed, r in runs.items()}
