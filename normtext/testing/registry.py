"""The norms that the command-line tools and the numerics chapter iterate over.

Each norm is one row, :class:`NormCase`: the name of its function (the same in
``torch.nn.functional`` and :mod:`normtext.torch.functional`), how to call it in
training mode, the input shapes it is benchmarked on, the module classes the
comparison harness checks, and two float64 NumPy references: the normalize
step built from the family's spec (:func:`normtext.numpy.standardize` over the
spec's axes) and a layer with state for the harness
(:mod:`normtext.testing.compare`). Every row has all of them (a test checks it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as torch_functional

from normtext.numpy import local_response_norm, standardize
from normtext.spec import (BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM, LOCAL_RESPONSE_NORM,
                           RMS_NORM, NormSpec)
from normtext.torch import functional as nt_functional

Shape = Tuple[int, ...]


def group_count(channels: int) -> int:
    """The number of groups GroupNorm uses here: 32 as Wu & He 2018 (fewer for few channels)."""
    return 32 if channels % 32 == 0 and channels > 32 else max(1, channels // 2)


# --- how each norm is called, with the signature of torch.nn.functional ---------------
# F is torch.nn.functional or normtext.torch.functional; weight/bias may be None.

def _call_batch_norm(F, x, weight, bias, eps=1e-5):
    return F.batch_norm(x, None, None, weight, bias, training=True, momentum=0.1, eps=eps)


def _call_layer_norm(F, x, weight, bias, eps=1e-5):
    return F.layer_norm(x, tuple(x.shape[-1:]), weight, bias, eps)


def _call_rms_norm(F, x, weight, bias, eps=1e-6):
    return F.rms_norm(x, tuple(x.shape[-1:]), weight, eps)


def _call_group_norm(F, x, weight, bias, eps=1e-5):
    return F.group_norm(x, group_count(x.shape[1]), weight, bias, eps)


def _call_instance_norm(F, x, weight, bias, eps=1e-5):
    return F.instance_norm(x, None, None, weight, bias, use_input_stats=True, momentum=0.1,
                           eps=eps)


LRN_SIZE = 5  # the window of AlexNet's LRN, the one benchmarked and checked here


def _call_lrn(F, x, weight, bias, eps=None):
    return F.local_response_norm(x, LRN_SIZE)


# --- float64 references, from the spec's axes -----------------------------------------

def _standardize_over(x: np.ndarray, axes, eps: float) -> np.ndarray:
    return standardize(x, tuple(axes), eps).x_hat


def _ref_batch_norm(x, eps=1e-5):
    return _standardize_over(x, BATCH_NORM.reduce_axes(x.ndim, 1), eps)


def _ref_layer_norm(x, eps=1e-5):
    return _standardize_over(x, LAYER_NORM.reduce_axes(x.ndim, 1), eps)


def _ref_instance_norm(x, eps=1e-5):
    return _standardize_over(x, INSTANCE_NORM.reduce_axes(x.ndim, 1), eps)


def _ref_group_norm(x, eps=1e-5):
    n, g = x.shape[0], group_count(x.shape[1])
    view = x.reshape(n, g, -1)  # GroupNorm: the statistics of the view (N, G, C/G * spatial)
    return _standardize_over(view, GROUP_NORM.reduce_axes(3, 1), eps).reshape(x.shape)


def _ref_rms_norm(x, eps=1e-6):
    axes = RMS_NORM.reduce_axes(x.ndim, 1)
    # y = x / sqrt(mean(x^2) + eps)
    return x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)


def _ref_lrn(x, eps=None):
    # no statistic to standardize with: the whole layer (it has no parameters), PyTorch's defaults
    return local_response_norm(x, LRN_SIZE).y


def _m_grouped(shape: Shape) -> int:
    return math.prod(shape) // (shape[0] * group_count(shape[1]))


@dataclass(frozen=True)
class NormCase:
    """One norm, as the tools see it.

    Attributes:
        name: PyTorch's name of the layer family.
        spec: its :class:`~normtext.spec.NormSpec`.
        functional: the function's name in ``torch.nn.functional`` and in
            :mod:`normtext.torch.functional`.
        call: ``(F, x, weight, bias) -> y`` in training mode, for either namespace.
        reference: ``x (float64) -> x_hat``, the float64 normalize step (no affine;
            LocalResponseNorm, which has no statistic to standardize with: its output).
        affine: ``shape -> (weight shape, has bias)``, or ``None`` for no parameters.
        reduction_size: ``shape -> m``, elements per statistic.
        module: ``(namespace, shape) -> module``, for the comparison harness.
        harness_reference: ``(compare module, shape) -> adapter``: the float64
            NumPy reference with state, as :mod:`normtext.testing.compare` provides it.
        check_shape: the input the harness checks (the harness gives ``gamma``
            the size of ``shape[1]``, so LN and RMSNorm are checked on ``(N, D)``).
        cnn_shapes, transformer_shapes: benchmark inputs (full run).
        quick_shapes: the benchmark's ``--quick`` inputs.
        row_shape: ``m -> shape`` with ``m`` elements per statistic, for the
            numerics study of mean and variance (``None``: LocalResponseNorm).
    """

    name: str
    spec: NormSpec
    functional: str
    call: Callable
    reference: Callable
    affine: Optional[Callable[[Shape], Tuple[Shape, bool]]]
    reduction_size: Callable[[Shape], int]
    module: Callable
    harness_reference: Callable
    check_shape: Shape
    cnn_shapes: Tuple[Shape, ...] = ()
    transformer_shapes: Tuple[Shape, ...] = ()
    quick_shapes: Tuple[Shape, ...] = ()
    row_shape: Optional[Callable[[int], Shape]] = None

    @property
    def shapes(self) -> Tuple[Shape, ...]:
        return self.cnn_shapes + self.transformer_shapes


def _channel_affine(shape):
    return (shape[1],), True


def _last_affine(shape):
    return (shape[-1],), True


def _last_weight_only(shape):
    return (shape[-1],), False


# One row per norm, spelled out: the rows look alike because every norm answers the same
# questions (its functions, its parameters, its shapes), which is the point of a registry.
REGISTRY: Dict[str, NormCase] = {
    "BatchNorm": NormCase(
        "BatchNorm", BATCH_NORM, "batch_norm", _call_batch_norm, _ref_batch_norm,
        _channel_affine, lambda s: BATCH_NORM.reduction_size(s),
        module=lambda ns, s: ns.BatchNorm2d(s[1]), check_shape=(8, 6, 5, 5),
        cnn_shapes=((32, 64, 56, 56), (32, 256, 14, 14)),
        quick_shapes=((8, 64, 32, 32),),
        row_shape=lambda m: (m, 4),
        harness_reference=lambda c, s: c.ReferenceBatchNorm(s[1])),
    "LayerNorm": NormCase(
        "LayerNorm", LAYER_NORM, "layer_norm", _call_layer_norm, _ref_layer_norm,
        _last_affine, lambda s: s[-1],
        module=lambda ns, s: ns.LayerNorm(s[-1]), check_shape=(16, 96),
        transformer_shapes=((8, 512, 768), (2, 1024, 4096)),
        quick_shapes=((4, 128, 768),),
        row_shape=lambda m: (4, m),
        harness_reference=lambda c, s: c.ReferenceLayerNorm(s[-1])),
    "RMSNorm": NormCase(
        "RMSNorm", RMS_NORM, "rms_norm", _call_rms_norm, _ref_rms_norm,
        _last_weight_only, lambda s: s[-1],
        module=lambda ns, s: ns.RMSNorm(s[-1]), check_shape=(16, 96),
        transformer_shapes=((8, 512, 768), (2, 1024, 4096)),
        quick_shapes=((4, 128, 768),),
        row_shape=lambda m: (4, m),
        harness_reference=lambda c, s: c.ReferenceLayerNorm(s[-1], eps=None, kind="rms")),
    "GroupNorm": NormCase(
        "GroupNorm", GROUP_NORM, "group_norm", _call_group_norm, _ref_group_norm,
        _channel_affine, _m_grouped,
        module=lambda ns, s: ns.GroupNorm(group_count(s[1]), s[1]), check_shape=(4, 8, 5, 5),
        cnn_shapes=((32, 64, 56, 56), (32, 256, 14, 14)),
        quick_shapes=((8, 64, 32, 32),),
        row_shape=lambda m: (2, 8, m // 2),  # 4 groups of 2 channels: m = 2 * L
        harness_reference=lambda c, s: c.ReferenceGroupNorm(group_count(s[1]), s[1])),
    "InstanceNorm": NormCase(
        "InstanceNorm", INSTANCE_NORM, "instance_norm", _call_instance_norm, _ref_instance_norm,
        _channel_affine, lambda s: INSTANCE_NORM.reduction_size(s),
        module=lambda ns, s: ns.InstanceNorm2d(s[1], affine=True, track_running_stats=True),
        check_shape=(4, 6, 5, 5),
        cnn_shapes=((32, 64, 56, 56), (8, 64, 128, 128)),
        quick_shapes=((8, 64, 32, 32),),
        row_shape=lambda m: (2, 4, m),
        harness_reference=lambda c, s: c.ReferenceInstanceNorm(s[1], affine=True,
                                                               track_running_stats=True)),
    "LocalResponseNorm": NormCase(
        "LocalResponseNorm", LOCAL_RESPONSE_NORM, "local_response_norm", _call_lrn, _ref_lrn,
        None, lambda s: LRN_SIZE,  # no statistics: a windowed sum of squares over 5 channels
        module=lambda ns, s: ns.LocalResponseNorm(LRN_SIZE), check_shape=(4, 8, 5, 5),
        cnn_shapes=((32, 96, 55, 55),),
        harness_reference=lambda c, s: c.ReferenceLocalResponseNorm(LRN_SIZE)),
}


def norms(names: Optional[Sequence[str]] = None) -> List[NormCase]:
    """The rows named, in that order (all, in registry order, by default); unknown: KeyError."""
    return [REGISTRY[n] for n in (REGISTRY if names is None else names)]


# Every row is implemented now; bench.py and two notebooks still call these two names.
def available_norms(names: Optional[Sequence[str]] = None) -> List[NormCase]:
    """The same as :func:`norms`."""
    return norms(names)


def available(case: NormCase | str) -> bool:
    """True for every row of the registry (each has a normtext function; a test checks it)."""
    return (case.name if isinstance(case, NormCase) else case) in REGISTRY


def implementations(case: NormCase):
    """``{"normtext": fn, "built-in": fn}``, each ``(x, weight, bias) -> y``."""
    return {"normtext": lambda x, w, b: case.call(nt_functional, x, w, b),
            "built-in": lambda x, w, b: case.call(torch_functional, x, w, b)}


def make_params(case: NormCase, shape: Shape, device="cpu", dtype=None, seed: int = 0,
                requires_grad: bool = False):
    """Random ``(weight, bias)`` for an input of ``shape`` (``None`` where the norm has none)."""
    if case.affine is None:
        return None, None
    pshape, has_bias = case.affine(shape)
    g = torch.Generator().manual_seed(seed)
    w = (1 + 0.1 * torch.randn(pshape, generator=g)).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(pshape, generator=g)).to(device=device, dtype=dtype) if has_bias else None
    for p in (w, b):
        if p is not None:
            p.requires_grad_(requires_grad)
    return w, b


def numerics_row_shape(case: NormCase, m: int) -> Shape:
    """An input with ``m`` elements per statistic, for the numerics study."""
    shape = case.row_shape(m)
    assert case.reduction_size(shape) == m, (case.name, shape, m)
    return shape
