"""The Transformer block from scratch and the norms that live in it (normtext.torch.transformer),
and the Transformers chapter's study (normtext.experiments.transformer_study).

Tolerances: every compared quantity is float32 and ends in a reduction over at
most ``dim_feedforward`` elements (the second linear layer), after the
LayerNorm that keeps activations O(1); the book's float32 tolerance for a
reduction over m elements, ``16 * eps32 * sqrt(m)``, is applied relative to
the largest magnitude of the expected tensor.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from normtext import torch as nt
from normtext.experiments import transformer_study as ts
from normtext.testing.compare import tolerance
from normtext.torch.transformer import (AdaLNZeroBlock, DynamicTanh, LlamaRMSNorm,
                                        MultiheadSelfAttention, SequenceBatchNorm,
                                        TransformerEncoderLayer, make_norm)

D, H, FF, N, T = 32, 4, 64, 5, 7


def assert_close_rel(got, want, m=FF, dtype="float32"):
    """|got - want| <= tolerance(dtype, m) * max|want| (the scale of the compared tensor)."""
    got, want = got.detach(), want.detach()
    tol = tolerance(dtype, m) * max(float(want.abs().max()), 1e-30)
    err = float((got - want).abs().max())
    assert err <= tol, f"max abs error {err:.3g} > {tol:.3g}"


def pair(norm_first, batch_first, seed=0, **kw):
    torch.manual_seed(seed)
    theirs = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=batch_first,
                                        norm_first=norm_first, **kw)
    torch.manual_seed(seed)
    ours = TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=batch_first,
                                   norm_first=norm_first, **kw)
    return ours, theirs


def masks(kind):
    causal_float = nn.Transformer.generate_square_subsequent_mask(T)
    padding = torch.zeros(N, T, dtype=torch.bool)
    padding[0, 5:] = True
    padding[3, 2:] = True
    return {"none": (None, None), "causal float": (causal_float, None),
            "causal bool": (causal_float.isinf(), None), "padding": (None, padding),
            "causal and padding": (causal_float.isinf(), padding)}[kind]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mask", ["none", "causal float", "causal bool", "padding",
                                  "causal and padding"])
def test_block_equals_torch_forward_and_backward(norm_first, batch_first, mask):
    ours, theirs = pair(norm_first, batch_first)
    ours.load_state_dict(theirs.state_dict())
    src_mask, padding = masks(mask)
    shape = (N, T, D) if batch_first else (T, N, D)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    outs, grads = [], []
    for block in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = block(xi, src_mask=src_mask, src_key_padding_mask=padding)
        (y * g).sum().backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in block.parameters()])
    assert_close_rel(outs[0], outs[1])
    for got, want in zip(*grads):
        assert_close_rel(got, want)


@pytest.mark.parametrize("norm_first", [False, True])
def test_block_equals_torch_in_eval_mode_and_unbatched(norm_first):
    # eval mode under no_grad takes PyTorch's fused fast path
    ours, theirs = pair(norm_first, True)
    ours.load_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(N, T, D)
    with torch.no_grad():
        assert_close_rel(ours(x), theirs(x))
        assert_close_rel(ours(x[0]), theirs(x[0]))          # unbatched (T, E)
        causal = nn.Transformer.generate_square_subsequent_mask(T)
        assert_close_rel(ours(x, is_causal=True), theirs(x, src_mask=causal, is_causal=True))


def test_same_seed_same_initial_weights_and_state_dict_both_ways():
    ours, theirs = pair(True, True, bias=True, activation="gelu")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), k
    theirs.load_state_dict(TransformerEncoderLayer(D, H, FF, batch_first=True).state_dict())


def test_gelu_and_no_bias_match_torch():
    ours, theirs = pair(False, True, bias=False, activation="gelu")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(N, T, D)
    assert_close_rel(ours(x), theirs(x))


@pytest.mark.parametrize("build, call", [
    (lambda cls: cls(30, 4), None),                             # d_model not divisible by nhead
    (lambda cls: cls(D, H, FF, batch_first=True), torch.randn(2, 3, D - 2)),   # wrong width
    (lambda cls: cls(D, H, activation="tanh"), None),           # unknown activation
])
def test_errors_are_pytorchs(build, call):
    def error(cls):
        try:
            block = build(cls)
            block(call)
        except Exception as e:  # noqa: BLE001 - the type is what is compared
            return type(e), str(e)
        return None

    theirs, ours = error(nn.TransformerEncoderLayer), error(TransformerEncoderLayer)
    assert theirs is not None and ours is not None
    assert ours[0] is theirs[0], (ours, theirs)
    assert ours[1] == theirs[1]


def test_make_norm_kinds_and_error():
    assert isinstance(make_norm("layer", 8), nt.LayerNorm)
    assert isinstance(make_norm("rms", 8), nt.RMSNorm)
    assert isinstance(make_norm("dyt", 8), DynamicTanh)
    assert isinstance(make_norm("batch", 8), SequenceBatchNorm)
    assert isinstance(make_norm(lambda d: nn.Identity(), 8), nn.Identity)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("group", 8)
    with pytest.raises(ValueError, match="qk_norm"):
        MultiheadSelfAttention(8, 2, qk_norm="batch")


# --- Dynamic Tanh ---------------------------------------------------------------------

def test_dynamic_tanh_formula_parameters_and_elementwise():
    dyt = DynamicTanh(6)
    assert [n for n, _ in dyt.named_parameters()] == ["alpha", "weight", "bias"]
    assert dyt.alpha.item() == 0.5 and dyt.weight.shape == (6,)
    with torch.no_grad():
        dyt.weight.uniform_(0.5, 2)
        dyt.bias.uniform_(-1, 1)
        dyt.alpha.fill_(1.7)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    dyt = dyt.double()
    with torch.no_grad():
        want = dyt.weight * torch.tanh(dyt.alpha * x) + dyt.bias
        torch.testing.assert_close(dyt(x), want, rtol=0, atol=0)
    # no statistic: the Jacobian of one token is diagonal (a LayerNorm's is not)
    jac = torch.autograd.functional.jacobian(dyt, x[0, 0])
    assert torch.count_nonzero(jac - torch.diag(torch.diagonal(jac))) == 0
    jac_ln = torch.autograd.functional.jacobian(nt.LayerNorm(6).double(), x[0, 0])
    assert torch.count_nonzero(jac_ln - torch.diag(torch.diagonal(jac_ln))) > 0


# --- RMSNorm in half precision ----------------------------------------------------------

def rms_reference(x, weight, eps):
    x64 = x.double()
    return weight.double() * x64 / torch.sqrt(x64.square().mean(-1, keepdim=True) + eps)


@pytest.mark.parametrize("dtype, name", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16")])
def test_llama_rms_norm_upcast_is_accurate_in_half_precision(dtype, name):
    d = 512
    g = torch.Generator().manual_seed(0)
    # activations up to a few hundred, as in the residual stream of a large model
    x = (torch.randn(8, d, generator=g) * 100).to(dtype)
    norm = LlamaRMSNorm(d, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(d, generator=g) + 0.5)
    want = rms_reference(x, norm.weight, 1e-6)
    got = norm(x)
    assert got.dtype == dtype
    # two roundings to the half dtype (x_hat, then gamma * x_hat) on top of float32 statistics
    assert_close_rel(got.double(), want, m=d, dtype=name)
    torch.testing.assert_close(got, nn.RMSNorm(d, eps=1e-6, dtype=dtype).to(dtype)(x) * norm.weight,
                               rtol=0, atol=2 * float(want.abs().max()) * (
                                   2 ** -10 if dtype == torch.float16 else 2 ** -7))
    if dtype == torch.float16:
        # without the upcast the float16 squares overflow: the output collapses to zero
        naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        assert float((naive.double() - want / norm.weight.double()).abs().max()) > 1.0


def test_llama_rms_norm_float32_equals_normtext_and_torch():
    x = torch.randn(4, 7, 48)
    ours = LlamaRMSNorm(48, eps=1e-6)
    assert_close_rel(ours(x), nt.RMSNorm(48, eps=1e-6)(x), m=48)
    assert_close_rel(ours(x), nn.RMSNorm(48, eps=1e-6)(x), m=48)


# --- QK-norm ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_qk_norm_bounds_the_attention_logits(kind):
    torch.manual_seed(0)
    plain, normed = MultiheadSelfAttention(D, H), MultiheadSelfAttention(D, H, qk_norm=kind)
    normed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        for m in (plain, normed):
            m.in_proj_weight.mul_(30)                # large projections: logits grow
    x = torch.randn(N, T, D)
    plain(x), normed(x)
    head_dim = D // H
    # |q_hat . k_hat| <= |q_hat||k_hat| = head_dim, divided by sqrt(head_dim)
    assert float(normed.last_max_logit) <= math.sqrt(head_dim) * (1 + 1e-5)
    assert float(plain.last_max_logit) > 10 * math.sqrt(head_dim)


def test_block_without_qk_norm_has_no_extra_parameters():
    block = TransformerEncoderLayer(D, H, FF, qk_norm="layer")
    extra = set(block.state_dict()) - set(nn.TransformerEncoderLayer(D, H, FF).state_dict())
    assert extra == {"self_attn.q_norm.weight", "self_attn.q_norm.bias",
                     "self_attn.k_norm.weight", "self_attn.k_norm.bias"}


# --- adaLN-Zero ---------------------------------------------------------------------------

def test_adaln_zero_starts_as_identity_and_learns():
    torch.manual_seed(0)
    block = AdaLNZeroBlock(D, H, cond_dim=10, dim_feedforward=FF)
    x, c = torch.randn(N, T, D), torch.randn(N, 10)
    torch.testing.assert_close(block(x, c), x, rtol=0, atol=0)
    loss = (block(x, c) - torch.randn(N, T, D)).square().mean()
    loss.backward()
    moved = {n for n, p in block.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # only the gates' modulation gets a gradient at the first step: the branches' outputs
    # are multiplied by a zero gate, so their own weights do not move yet
    assert moved == {"adaLN_modulation.1.weight", "adaLN_modulation.1.bias"}
    torch.optim.SGD(block.parameters(), lr=0.1).step()
    assert float((block(x, c) - x).abs().max()) > 1e-3


def test_adaln_zero_is_a_conditional_affine_of_a_plain_layer_norm():
    """With the gates fixed open and no condition, the block is a pre-LN block (no affine)."""
    torch.manual_seed(0)
    block = AdaLNZeroBlock(D, H, cond_dim=4, dim_feedforward=FF)
    with torch.no_grad():
        block.adaLN_modulation[1].bias.view(6, D)[2].fill_(1.0)   # gate 1 = 1
        block.adaLN_modulation[1].bias.view(6, D)[5].fill_(1.0)   # gate 2 = 1
    x = torch.randn(N, T, D)
    ln = nn.LayerNorm(D, eps=1e-6, elementwise_affine=False)
    h = x + block.self_attn(ln(x))
    want = h + block.linear2(nn.functional.gelu(block.linear1(ln(h)), approximate="tanh"))
    assert_close_rel(block(x, torch.zeros(N, 4)), want)


# --- BatchNorm over tokens ----------------------------------------------------------------

def test_sequence_batch_norm_is_batch_norm_1d_over_all_positions():
    ours, theirs = SequenceBatchNorm(D), nn.BatchNorm1d(D)
    x = torch.randn(N, T, D) * 3 + 1
    for _ in range(3):
        assert_close_rel(ours(x), theirs(x.transpose(1, 2)).transpose(1, 2), m=N * T)
    assert_close_rel(ours.bn.running_var, theirs.running_var, m=N * T)
    ours.eval(), theirs.eval()
    assert_close_rel(ours(x), theirs(x.transpose(1, 2)).transpose(1, 2), m=N * T)
    assert list(ours.bn.state_dict()) == list(theirs.state_dict())


# --- the study -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return ts.default_data()


def test_corpus_is_printable_and_deterministic(data):
    text = ts.corpus()
    assert len(text) > 100_000 and text == ts.corpus()
    assert all(" " <= c <= "~" or c == "\n" for c in set(text))
    ids, vocab_size = data
    assert ids.min() >= 1 and ids.max() < vocab_size   # 0 is the padding index


def test_batches_are_padded_on_the_right(data):
    ids, _ = data
    x, y, pad = ts.sample_batch(ids, np.random.default_rng(0), 8, 16)
    assert x.shape == y.shape == pad.shape and x.shape[1] <= 16
    lengths = (~pad).sum(1)
    for i, n in enumerate(lengths):
        assert not pad[i, :n].any() and pad[i, n:].all()
        assert (y[i, n:] == ts.IGNORE).all() and (y[i, :n - 1] == x[i, 1:n]).all()
    x2, _, pad2 = ts.sample_batch(ids, np.random.default_rng(0), 8, 16, min_len=16)
    assert x2.shape == (8, 16) and not pad2.any()


@pytest.mark.parametrize("norm, padding_matters", [("layer", False), ("dyt", False),
                                                   ("batch", True)])
def test_padding_reaches_only_a_batch_norm(data, norm, padding_matters):
    """Per-token norms never see the padding of a causal model; BatchNorm's statistics do."""
    _, vocab_size = data
    torch.manual_seed(0)
    model = ts.CharTransformer(vocab_size, 16, 2, 1, 32, 16, norm=norm)
    x = torch.randint(1, vocab_size, (4, 12))
    longer = torch.cat([x, torch.zeros(4, 4, dtype=torch.long)], 1)   # 4 more padded positions
    a, b = model(x), model(longer)[:, :12]
    differs = float((a - b).abs().max()) > 1e-4
    assert differs == padding_matters


def test_model_is_causal(data):
    _, vocab_size = data
    torch.manual_seed(0)
    model = ts.CharTransformer(vocab_size, 16, 2, 2, 32, 16)
    x = torch.randint(1, vocab_size, (2, 10))
    y = x.clone()
    y[:, 6] = (y[:, 6] % (vocab_size - 1)) + 1
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert float((a[:, 6:] - b[:, 6:]).abs().max()) > 1e-4


def test_train_lm_learns_and_records(data):
    config = dict(d_model=16, nhead=2, num_layers=1, dim_feedforward=32, max_len=16,
                  norm_first=True, norm="layer", qk_norm=None, lr=3e-3, warmup=5, steps=40,
                  batch_size=8, val_batches=2, log_every=10)
    a = ts.train_lm(config, seed=0, data=data)
    assert not a["diverged"] and len(a["train_loss"]) == 4 and len(a["max_logit"]) == 4
    assert a["train_loss"][-1] < a["train_loss"][0] - 0.3
    assert a["val_loss"] < math.log(data[1])          # better than uniform
    b = ts.train_lm(config, seed=0, data=data)
    assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]   # seeded


def test_lr_schedule():
    assert ts.lr_at(0, 1.0, 10) == pytest.approx(0.1)
    assert ts.lr_at(9, 1.0, 10) == 1.0 and ts.lr_at(50, 1.0, 10) == 1.0
    assert ts.lr_at(0, 1.0, 0) == 1.0


def test_init_grad_norms_one_per_layer(data):
    config = dict(d_model=16, nhead=2, num_layers=3, dim_feedforward=32, max_len=16,
                  batch_size=4)
    norms = ts.init_grad_norms(False, 0, config, n_batches=1, data=data)
    assert len(norms) == 3 and all(n > 0 for n in norms)


def test_batch_stat_deviation_sees_the_padding():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 10, 4, generator=g) + 2.0
    pad = torch.zeros(64, 10, dtype=torch.bool)
    pad[::2, 5:] = True
    feats[pad] = 0.0                                  # what padded positions might hold
    masked = ts.batch_stat_deviation(feats, pad, 8, include_padding=False)
    padded = ts.batch_stat_deviation(feats, pad, 8, include_padding=True)
    assert masked["mean deviation"] < 0.3 < padded["mean deviation"]
    assert masked["variance deviation"] < padded["variance deviation"]


@pytest.mark.parametrize("quick", [True, False])
def test_arms_change_only_what_they_name(quick):
    base, arms = ts.base_config(quick), ts.arms(quick)
    assert base["norm_first"] and base["norm"] == "layer" and base["warmup"] == 0
    changed = {name: {k for k in base if config[k] != base[k]} for name, config in arms.items()}
    assert changed == {"post-LN, warm-up": {"norm_first", "warmup"},
                       "post-LN, no warm-up": {"norm_first"}, "pre-LN, no warm-up": set(),
                       "pre-DyT, no warm-up": {"norm"}, "pre-BatchNorm, no warm-up": {"norm"},
                       "pre-LN, lr x10": {"lr"}, "pre-LN + QK-norm, lr x10": {"lr", "qk_norm"}}
    assert arms["post-LN, warm-up"]["warmup"] == base["steps"] // 10
    assert arms["pre-LN, lr x10"]["lr"] == pytest.approx(10 * base["lr"])


def test_run_arms_pairs_seeds_and_caches_each_run(monkeypatch):
    calls = []
    monkeypatch.setattr(ts, "train_lm", lambda config, seed: {"val_loss": config["lr"] + seed})

    def fake_cached(name, config, run):
        calls.append((name, config["seed"], config["lr"]))
        return run()

    out = ts.run_arms({"a": {"lr": 1.0}, "b": {"lr": 2.0}}, [0, 3], cached=fake_cached)
    assert ts.metric(out["a"]) == {0: 1.0, 3: 4.0} and ts.metric(out["b"]) == {0: 2.0, 3: 5.0}
    assert calls == [("transformer-lm", 0, 1.0), ("transformer-lm", 3, 1.0),
                     ("transformer-lm", 0, 2.0), ("transformer-lm", 3, 2.0)]
