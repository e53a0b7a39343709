"""Parity checks for the weight and gradient normalizations of :mod:`normtext.torch.more`.

They are not layers with running statistics, so instead of
:func:`normtext.testing.compare.compare_layers` they fill the same
:class:`~normtext.testing.compare.Comparison` table, with the same tolerance rule
``16 * eps(dtype) * sqrt(m)`` (:func:`normtext.testing.compare.tolerance`), ``m`` the
number of terms in the largest reduction involved.
"""
from __future__ import annotations

import copy
from math import prod
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm

from normtext.testing.compare import Comparison, tolerance
from normtext.torch.more import clip_grad_norm_, weight_norm


def compare_weight_norm(make_module: Callable, input_shape, dim: Optional[int] = 0,
                        dtype: str = "float32", seed: int = 0, check: bool = True) -> Comparison:
    """``normtext.torch.more.weight_norm`` vs ``torch.nn.utils.parametrizations.weight_norm``.

    Both wrap copies of one module; compared: the output, the input gradient,
    and the gradients of ``g`` (``original0``), ``v`` (``original1``) and the
    bias for a random output gradient. ``m`` is the number of weights.
    """
    torch.manual_seed(seed)
    t = getattr(torch, dtype)
    ours = make_module().to(t)
    theirs = copy.deepcopy(ours)
    m = ours.weight.numel()
    weight_norm(ours, dim=dim)
    torch_weight_norm(theirs, dim=dim)
    x = torch.randn(*input_shape, dtype=t)
    result = Comparison("normtext weight_norm", "torch parametrizations.weight_norm", dtype)
    outs = {}
    for name, module in (("ours", ours), ("theirs", theirs)):
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        torch.manual_seed(seed + 1)
        y.backward(torch.randn_like(y))
        p = module.parametrizations.weight
        outs[name] = {"output": y, "input grad": xi.grad, "g grad": p.original0.grad,
                      "v grad": p.original1.grad, "bias grad": getattr(module, "bias").grad}
    tol = tolerance(dtype, m)
    for q in outs["ours"]:
        if outs["ours"][q] is not None:
            result.add(q, _np(outs["ours"][q]), _np(outs["theirs"][q]), tol)
    return result.assert_ok() if check else result


def compare_clip_grad_norm(shapes=((64, 32), (64,), (10, 64), (10,)), max_norm: float = 1.0,
                           norm_type: float = 2.0, dtype: str = "float32", seed: int = 0,
                           check: bool = True) -> Comparison:
    """``normtext.torch.more.clip_grad_norm_`` vs ``torch.nn.utils.clip_grad_norm_``.

    Random gradients of the given shapes (scaled so that clipping happens for
    the default ``max_norm``); compared: the returned total norm and every
    clipped gradient. ``m`` is the total number of gradient entries.
    """

    rng = np.random.default_rng(seed)
    t = getattr(torch, dtype)
    grads = [rng.normal(0, 1, s) for s in shapes]

    def params():
        ps = [torch.zeros(s, dtype=t, requires_grad=True) for s in shapes]
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g, dtype=t)
        return ps

    ours, theirs = params(), params()
    n_ours = clip_grad_norm_(ours, max_norm, norm_type)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    m = sum(prod(s) for s in shapes)
    tol = tolerance(dtype, m)
    result = Comparison("normtext clip_grad_norm_", "torch.nn.utils.clip_grad_norm_", dtype)
    result.add("total norm", _np(n_ours), _np(n_theirs), tol)
    result.add("clipped grads", np.concatenate([_np(p.grad).ravel() for p in ours]),
               np.concatenate([_np(p.grad).ravel() for p in theirs]), tol)
    return result.assert_ok() if check else result


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").double().numpy()
