r"""A Transformer encoder block from scratch, and the normalizations that live in it.

* :class:`TransformerEncoderLayer`: the block of :class:`torch.nn.TransformerEncoderLayer`
  (same constructor, parameter names and ``state_dict`` keys, so weights load
  both ways), with the LayerNorm after the residual sum (post-LN,
  ``norm_first=False``) or before each sublayer (pre-LN, ``norm_first=True``).
  Two additions: ``norm`` swaps the LayerNorm for RMSNorm, Dynamic Tanh or a
  BatchNorm over tokens, and ``qk_norm`` normalizes queries and keys.
* :class:`MultiheadSelfAttention`: the attention of :class:`torch.nn.MultiheadAttention`
  (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) written out, with QK-norm.
* :class:`DynamicTanh`: ``weight * tanh(alpha * x) + bias`` (Zhu et al., 2025).
* :class:`LlamaRMSNorm`: RMSNorm as LLaMA-style models write it, statistics in float32.
* :class:`SequenceBatchNorm`: BatchNorm over every token of a ``(..., d)`` batch.
* :class:`AdaLNZeroBlock`: a pre-LN block whose norms are modulated by a
  condition, with a zero-initialized modulation so that it starts as the identity
  (Peebles and Xie, 2023).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modules import BatchNorm1d, LayerNorm, RMSNorm

__all__ = ["TransformerEncoderLayer", "MultiheadSelfAttention", "DynamicTanh", "LlamaRMSNorm",
           "SequenceBatchNorm", "AdaLNZeroBlock", "make_norm", "NORMS"]


class DynamicTanh(nn.Module):
    r"""Dynamic Tanh, a drop-in replacement of LayerNorm without statistics (Zhu et al., 2025).

    .. math::
        y = \gamma * \tanh(\alpha x) + \beta

    with one learnable scalar :math:`\alpha` (initialized to ``alpha_init_value``)
    and per-feature :math:`\gamma` (ones) and :math:`\beta` (zeros) of shape
    ``normalized_shape``. Each element is squashed on its own: nothing is
    reduced over the features, the batch or the sequence.

    Args:
        normalized_shape: an int (the last axis) or the trailing shape.
        alpha_init_value: the initial :math:`\alpha`. Default: 0.5 (the paper's
            default outside large language models).

    Example::

        >>> DynamicTanh(16)(torch.randn(2, 8, 16)).shape
        torch.Size([2, 8, 16])
    """

    def __init__(self, normalized_shape, alpha_init_value: float = 0.5, device=None,
                 dtype=None) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.alpha_init_value = alpha_init_value
        factory = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init_value), **factory))
        self.weight = nn.Parameter(torch.ones(self.normalized_shape, **factory))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape, **factory))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias   # gamma tanh(alpha x) + beta

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha_init_value={self.alpha_init_value}"


class LlamaRMSNorm(nn.Module):
    r"""RMSNorm as LLaMA-style language models write it: statistics in float32.

    .. math::
        y = \gamma * \mathrm{cast}\!\left(\frac{x}{\sqrt{\frac1d\sum_i x_i^2 + \epsilon}}\right)

    The input is cast to float32 for the mean square and the division, the
    result is cast back to the input's dtype, and only then multiplied by
    ``weight`` (kept in the model's dtype). Without the upcast, a float16
    square overflows from :math:`|x| > 256` and a bfloat16 mean of many
    squares loses most of its digits.

    Args:
        dim: the size of the last axis.
        eps: added to the mean square. Default: 1e-6 (the first LLaMA's; LLaMA 2 uses 1e-5).
    """

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()                                                       # upcast
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # x / rms(x)
        return self.weight * y.type_as(x)                                     # cast back, then gamma

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SequenceBatchNorm(nn.Module):
    r"""BatchNorm over every token of a ``(..., d)`` batch: one mean and variance per feature.

    The leading axes (batch and sequence) are flattened, so the statistics are
    taken over all :math:`N \cdot T` positions, padding included, as
    :class:`torch.nn.BatchNorm1d` does on a padded ``(N, d, T)`` batch. This is
    the naive way to put BatchNorm into a Transformer; the parameters and
    buffers are those of ``BatchNorm1d`` (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.bn = BatchNorm1d(num_features, eps=eps, momentum=momentum, device=device,
                              dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


NORMS = ("layer", "rms", "dyt", "batch")


def make_norm(kind: Union[str, Callable[[int], nn.Module]], d: int, eps: float = 1e-5,
              bias: bool = True, device=None, dtype=None) -> nn.Module:
    """The normalization of a block by name: ``"layer"``, ``"rms"``, ``"dyt"`` or ``"batch"``.

    A callable is called with ``d`` and returned as is.
    """
    factory = {"device": device, "dtype": dtype}
    if callable(kind):
        return kind(d)
    if kind == "layer":
        return LayerNorm(d, eps=eps, bias=bias, **factory)
    if kind == "rms":
        return RMSNorm(d, eps=eps, **factory)
    if kind == "dyt":
        return DynamicTanh(d, **factory)
    if kind == "batch":
        return SequenceBatchNorm(d, eps=eps, **factory)
    raise ValueError(f"norm must be one of {NORMS} or a callable, got {kind!r}")


class MultiheadSelfAttention(nn.Module):
    r"""Self-attention with the parameters of :class:`torch.nn.MultiheadAttention`, written out.

    .. math::
        [Q, K, V] = x W_{in}^T + b_{in},\quad
        \mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^T}{\sqrt{d_h}} + M\right) V_h,\quad
        y = [\mathrm{head}_1, \dots, \mathrm{head}_H]\, W_{out}^T + b_{out}

    ``qk_norm`` (``"layer"`` or ``"rms"``) normalizes each head's query and key
    vectors over :math:`d_h` before the dot product (QK-norm), which bounds
    the attention logits by :math:`\sqrt{d_h}` times the norms' gains. The
    largest absolute logit of the last call is kept in ``last_max_logit``.

    Input ``(N, T, E)`` (batch first; the encoder layer transposes for
    ``batch_first=False``). ``attn_mask`` is ``(T, T)`` or ``(N * H, T, T)``,
    boolean (``True`` = masked) or additive float; ``key_padding_mask`` is
    ``(N, T)``, ``True`` at padding.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 qk_norm: Optional[str] = None, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        assert self.head_dim * num_heads == embed_dim, "embed_dim must be divisible by num_heads"
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if qk_norm is None:
            self.q_norm = self.k_norm = None
        elif qk_norm in ("layer", "rms"):
            self.q_norm = make_norm(qk_norm, self.head_dim, eps=1e-6, **factory)
            self.k_norm = make_norm(qk_norm, self.head_dim, eps=1e-6, **factory)
        else:
            raise ValueError(f"qk_norm must be None, 'layer' or 'rms', got {qk_norm!r}")
        self.last_max_logit = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # as torch.nn.MultiheadAttention: Xavier for the input projection, zero biases
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        N, T, E = x.shape
        assert E == self.embed_dim, \
            f"was expecting embedding dimension of {self.embed_dim}, but got {E}"
        H, Dh = self.num_heads, self.head_dim
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)           # x W_in^T + b_in
        q, k, v = (t.reshape(N, T, H, Dh).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)                           # QK-norm over d_h
        logits = q @ k.transpose(-2, -1) / math.sqrt(Dh)                    # Q K^T / sqrt(d_h)
        self.last_max_logit = logits.detach().abs().amax()
        if attn_mask is not None:
            mask = attn_mask.reshape(-1, H, T, T) if attn_mask.dim() == 3 else attn_mask
            logits = (logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool
                      else logits + mask)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask.bool()[:, None, None, :], float("-inf"))
        attn = F.dropout(logits.softmax(dim=-1), self.dropout, self.training)
        out = (attn @ v).transpose(1, 2).reshape(N, T, E)                    # concat heads
        return self.out_proj(out)


def _activation(activation: Union[str, Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise RuntimeError(f"activation should be relu/gelu, not {activation}")
    return activation


class TransformerEncoderLayer(nn.Module):
    r"""The encoder block of :class:`torch.nn.TransformerEncoderLayer`, from scratch.

    Post-LN (``norm_first=False``, the original Transformer)::

        x = norm1(x + self_attn(x))
        x = norm2(x + ff(x))

    Pre-LN (``norm_first=True``)::

        x = x + self_attn(norm1(x))
        x = x + ff(norm2(x))

    with ``ff(x) = linear2(dropout(activation(linear1(x))))``. The constructor,
    defaults, parameter names and ``state_dict`` keys are PyTorch's, so
    ``load_state_dict`` works in both directions.

    The arguments ``d_model``, ``nhead``, ``dim_feedforward``, ``dropout``,
    ``activation``, ``layer_norm_eps``, ``batch_first``, ``norm_first`` and ``bias``
    are PyTorch's. Two more choose the normalization: ``norm`` is ``"layer"``
    (default, PyTorch's), ``"rms"``, ``"dyt"`` (:class:`DynamicTanh`), ``"batch"``
    (:class:`SequenceBatchNorm`) or a callable ``d -> module``; ``qk_norm`` is
    ``None`` (default), ``"layer"`` or ``"rms"`` and normalizes queries and keys per head.

    Shape:
        - Input: :math:`(T, N, E)`, or :math:`(N, T, E)` with ``batch_first=True``, or
          unbatched :math:`(T, E)`
        - Output: same shape as the input

    Example::

        >>> block = TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        >>> block.load_state_dict(torch.nn.TransformerEncoderLayer(
        ...     32, 4, 64, dropout=0.0, batch_first=True).state_dict())
        <All keys matched successfully>
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1,
                 activation: Union[str, Callable[[Tensor], Tensor]] = F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True,
                 norm: Union[str, Callable[[int], nn.Module]] = "layer",
                 qk_norm: Optional[str] = None, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadSelfAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                qk_norm=qk_norm, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = make_norm(norm, d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = make_norm(norm, d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.batch_first = batch_first
        self.activation = _activation(activation)

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        unbatched = src.dim() == 2
        x = src.unsqueeze(0) if unbatched else (src if self.batch_first else src.transpose(0, 1))
        if unbatched and src_key_padding_mask is not None:
            src_key_padding_mask = src_key_padding_mask.unsqueeze(0)
        if is_causal and src_mask is None:
            T = x.shape[1]
            src_mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask)  # pre-LN
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask))  # post-LN
            x = self.norm2(x + self._ff_block(x))
        if unbatched:
            return x.squeeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _sa_block(self, x: Tensor, attn_mask: Optional[Tensor],
                  key_padding_mask: Optional[Tensor]) -> Tensor:
        return self.dropout1(self.self_attn(x, attn_mask, key_padding_mask))

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class AdaLNZeroBlock(nn.Module):
    r"""A pre-LN Transformer block conditioned by adaLN-Zero (Peebles and Xie, 2023).

    A condition vector :math:`c` (a class or time embedding) is mapped to six
    vectors per sample, :math:`(\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2)
    = W\,\mathrm{SiLU}(c) + b`, and the block computes

    .. math::
        x &\leftarrow x + \alpha_1 \odot \mathrm{Attn}\big(\mathrm{LN}(x)(1 + \gamma_1) + \beta_1\big) \\
        x &\leftarrow x + \alpha_2 \odot \mathrm{MLP}\big(\mathrm{LN}(x)(1 + \gamma_2) + \beta_2\big)

    with LayerNorms without affine parameters: the condition supplies the
    affine (a conditional normalization, per sample). :math:`W` and :math:`b`
    start at zero, so every gate :math:`\alpha` is zero and the block starts as
    the identity, whatever its other weights.

    Shape: ``x`` is ``(N, T, d_model)``, ``c`` is ``(N, cond_dim)``.
    """

    def __init__(self, d_model: int, nhead: int, cond_dim: int, dim_feedforward: int = 2048,
                 eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.norm1 = LayerNorm(d_model, eps=eps, elementwise_affine=False, **factory)
        self.self_attn = MultiheadSelfAttention(d_model, nhead, **factory)
        self.norm2 = LayerNorm(d_model, eps=eps, elementwise_affine=False, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, **factory)
        self.linear2 = nn.Linear(dim_feedforward, d_model, **factory)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * d_model, **factory))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)   # the "Zero": every gate starts at 0
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = \
            self.adaLN_modulation(c)[:, None, :].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1                   # LN(x)(1 + gamma) + beta
        x = x + gate1 * self.self_attn(h)                           # gated residual
        h = self.norm2(x) * (1 + scale2) + shift2
        x = x + gate2 * self.linear2(F.gelu(self.linear1(h), approximate="tanh"))
        return x
