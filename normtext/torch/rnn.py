r"""A layer-normalized LSTM cell (Ba et al., 2016, section 3.1 and appendix).

BatchNorm needs separate statistics for every time step; LayerNorm normalizes
each sample at each step by itself, so one set of gains serves every step and
every sequence length. Following the paper, the input and the recurrent
contributions to the four gates are normalized separately (over all ``4H``
gate pre-activations jointly), and the cell state is normalized before the
output ``tanh``:

.. math::
    (i, f, g, o) &= \mathrm{LN}(W_{ih} x_t) + \mathrm{LN}(W_{hh} h_{t-1}) + b \\
    c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
    h_t &= \sigma(o) \odot \tanh(\mathrm{LN}(c_t))

With ``layer_norm=False`` the cell is exactly :class:`torch.nn.LSTMCell`
(same parameter names, gate order i, f, g, o, and initialization), which is
how the tests check it.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .modules import LayerNorm

__all__ = ["LayerNormLSTMCell", "RowLSTMClassifier"]


class LayerNormLSTMCell(nn.Module):
    r"""An LSTM cell with optional layer normalization, a drop-in for :class:`torch.nn.LSTMCell`.

    Args:
        input_size: features of the input ``x_t``.
        hidden_size: features of ``h`` and ``c``.
        bias: learn ``bias_ih`` and ``bias_hh``. Default: True.
        layer_norm: normalize the gate pre-activations and the cell state. Default: True.
        eps: LayerNorm's epsilon. Default: 1e-5.

    Inputs ``x`` of shape ``(N, input_size)`` or ``(input_size,)`` and an optional
    ``(h, c)``; returns ``(h', c')``.

    Example::

        >>> from normtext.torch.rnn import LayerNormLSTMCell
        >>> cell = LayerNormLSTMCell(28, 64)
        >>> h, c = cell(torch.randn(8, 28))
        >>> h.shape
        torch.Size([8, 64])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 layer_norm: bool = True, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.layer_norm = input_size, hidden_size, layer_norm
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if layer_norm:
            self.ln_ih = LayerNorm(4 * hidden_size, eps=eps, bias=False, **factory)
            self.ln_hh = LayerNorm(4 * hidden_size, eps=eps, bias=False, **factory)
            self.ln_c = LayerNorm(hidden_size, eps=eps, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.LSTMCell's initialization: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for name, p in self.named_parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound)
        if self.layer_norm:
            for ln in (self.ln_ih, self.ln_hh, self.ln_c):
                ln.reset_parameters()

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        if input.dim() not in (1, 2):
            raise ValueError(
                f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            h, c = zeros, zeros
        else:
            h, c = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        wx = x @ self.weight_ih.t()   # W_ih x_t
        wh = h @ self.weight_hh.t()   # W_hh h_{t-1}
        if self.layer_norm:
            wx, wh = self.ln_ih(wx), self.ln_hh(wh)   # LN(W_ih x) + LN(W_hh h)
        gates = wx + wh
        if self.bias_ih is not None:
            gates = gates + self.bias_ih + self.bias_hh
        i, f, g, o = gates.chunk(4, dim=1)            # PyTorch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c) if self.layer_norm else c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}, "
                f"layer_norm={self.layer_norm}")


class RowLSTMClassifier(nn.Module):
    """Reads an image ``(N, 1, H, W)`` row by row (``H`` steps of ``W`` features), classifies ``h_H``.

    The Keras study in senliuy's "Layer Normalization" notes (section 3.2) ran its
    LSTM on IMDB with GloVe embeddings; without a download, the rows of the MNIST
    digits form the sequence instead.
    """

    def __init__(self, input_size: int = 28, hidden_size: int = 64, num_classes: int = 10,
                 layer_norm: bool = True) -> None:
        super().__init__()
        self.cell = LayerNormLSTMCell(input_size, hidden_size, layer_norm=layer_norm)
        self.out = nn.Linear(hidden_size, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        rows = images.flatten(1, -2) if images.dim() == 4 else images   # (N, H, W)
        hx = None
        for t in range(rows.shape[1]):
            hx = self.cell(rows[:, t], hx)
        return self.out(hx[0])
