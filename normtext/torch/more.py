r"""More normalizations: each changes one step of *reshape, normalize, recover*.

The recipe is the one of Mu Li and Alex Smola's notes for Stanford CS 329P,
Practical Machine Learning (deep network architectures).

* **normalize** step: :func:`cross_norm` / :class:`CrossNorm` (exchange the
  channel statistics of two instances), :func:`batch_whitening` /
  :class:`BatchWhitening` (decorrelate the features, not only standardize them);
* **recover** step: :class:`ConditionalBatchNorm2d` and
  :class:`AdaptiveInstanceNorm2d` (gamma and beta computed from a condition by a
  lookup table, a linear layer or an MLP), with :func:`adain`;
* **weights**: :func:`weight_norm` (Salimans & Kingma) and :class:`WSConv2d`
  (weight standardization, used with GroupNorm);
* **gradients**: :func:`clip_grad_norm_` and :func:`normalize_grad_`.

The per-instance statistics come from :data:`normtext.spec.INSTANCE_NORM`, the
batch statistics from :func:`normtext.torch.functional.batch_norm`; every input
is checked by :mod:`normtext.errors` before any arithmetic.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import errors
from ..spec import INSTANCE_NORM
from . import functional as F
from ..moments import centered_moments
from ._util import check_floating, compute_dtype

__all__ = ["instance_statistics", "adain", "cross_norm", "CrossNorm",
           "batch_whitening", "BatchWhitening", "ConditionalBatchNorm2d",
           "AdaptiveInstanceNorm2d", "WeightNorm", "weight_norm", "standardize_weight",
           "WSConv2d", "clip_grad_norm_", "normalize_grad_"]


# --- the normalize step, with another instance's statistics --------------------------

def instance_statistics(input: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Mean and ``sqrt(var + eps)`` per sample and channel (InstanceNorm's statistics)."""
    axes = INSTANCE_NORM.reduce_axes(input.ndim, 1)
    mean, _, var = centered_moments(input, axes)   # biased, two passes
    return mean, torch.sqrt(var + eps)


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Adaptive instance normalization (Huang & Belongie, 2017).

    .. math::
        \mathrm{AdaIN}(x, s) = \sigma(s)\,\frac{x - \mu(x)}{\sigma(x)} + \mu(s)

    with ``mu`` and ``sigma = sqrt(var + eps)`` per sample and channel over the
    spatial axes: the content is instance-normalized, then *recovered* with the
    style's statistics instead of a learned gamma and beta.

    Args:
        content, style: ``(N, C, *spatial)``; they may differ in spatial size.
    """
    errors.check_spatial_statistics(tuple(content.shape), "adain")
    errors.check_spatial_statistics(tuple(style.shape), "adain")
    errors.check_same_channels(tuple(content.shape), tuple(style.shape))
    check_floating(content, "adain")
    x, s = content.to(compute_dtype(content.dtype)), style.to(compute_dtype(content.dtype))
    mean_x, std_x = instance_statistics(x, eps)
    mean_s, std_s = instance_statistics(s, eps)
    # sigma(s) (x - mu(x)) / sigma(x) + mu(s)
    return ((x - mean_x) / std_x * std_s + mean_s).to(content.dtype)


def cross_norm(input: Tensor, permutation: Optional[Sequence[int]] = None,
               eps: float = 1e-5) -> Tensor:
    r"""CrossNorm (Tang et al., 2021), 2-instance mode: swap channel statistics across the batch.

    .. math::
        y_i = \sigma_{\pi(i)}\,\frac{x_i - \mu_i}{\sigma_i} + \mu_{\pi(i)}

    Sample ``i`` keeps its normalized content and takes the channel-wise mean
    and standard deviation of sample ``pi(i)``: it is :func:`adain` with the
    batch itself, permuted, as the style. For a pair, ``pi`` swaps them.

    Args:
        input: ``(N, C, *spatial)``.
        permutation: ``pi`` as a sequence of ``N`` indices; default the reversed
            batch (``N - 1 - i``), which swaps the two samples of a pair.
        eps: added to the variances.

    Example::

        >>> x = torch.randn(2, 3, 8, 8)
        >>> y = cross_norm(x)          # y[0] has x[1]'s channel means and stds
    """
    errors.check_spatial_statistics(tuple(input.shape), "cross_norm")
    n = input.shape[0]
    perm = list(range(n - 1, -1, -1)) if permutation is None else [int(i) for i in permutation]
    errors.check_permutation(perm, n)
    return adain(input, input[torch.as_tensor(perm, device=input.device)], eps)


class CrossNorm(nn.Module):
    """CrossNorm as a training-time augmentation layer: identity in eval mode.

    In training, with probability ``p`` the statistics of the batch are
    exchanged along a random permutation (``torch.randperm``, so
    ``torch.manual_seed`` makes it reproducible). It has no parameters.
    """

    def __init__(self, p: float = 0.5, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.p, self.eps = p, eps

    def forward(self, input: Tensor) -> Tensor:
        errors.check_spatial_statistics(tuple(input.shape), "CrossNorm")
        if not self.training or self.p == 0.0 or torch.rand(()) >= self.p:
            return input
        perm = torch.randperm(input.shape[0]).tolist()
        return cross_norm(input, perm, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"


# --- the normalize step, decorrelating ------------------------------------------------

def _as_rows(input: Tensor) -> Tensor:
    """The reshape step of the recipe: (N, C, *spatial) -> (N * prod(spatial), C)."""
    return input.movedim(1, -1).reshape(-1, input.shape[1])


def _from_rows(rows: Tensor, shape: torch.Size) -> Tensor:
    """...and back: (N * prod(spatial), C) -> (N, C, *spatial)."""
    return rows.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)


def _whitening_matrix(cov: Tensor, method: str, eps: float, iterations: Optional[int]) -> Tensor:
    """``W`` with ``W (cov + eps I) W^T = I``; see :func:`normtext.numpy.whitening.whitening_matrix`."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    if iterations is not None:
        # coupled Newton-Schulz (stable): Sigma_N = Sigma / tr(Sigma), Y_0 = Sigma_N, Z_0 = I
        sigma = cov + eps * eye
        trace = torch.trace(sigma)
        y, z = sigma / trace, eye
        for _ in range(iterations):
            t = 0.5 * (3.0 * eye - z @ y)                # T_k = (3I - Z_k Y_k) / 2
            y, z = y @ t, t @ z                          # Y -> Sigma_N^{1/2}, Z -> Sigma_N^{-1/2}
        return z / torch.sqrt(trace)                     # Sigma^{-1/2} = Z_T / sqrt(tr Sigma)
    # Sigma = U Lambda U^T (ascending eigenvalues; flipped so principal directions come first)
    lam, u = torch.linalg.eigh(cov)
    lam, u = lam.flip(0), u.flip(1)
    # fix each eigenvector's sign (largest component positive), as the NumPy reference does
    u = u * torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))
    pca = torch.rsqrt(lam.clamp_min(0.0) + eps)[:, None] * u.T   # (Lambda + eps)^{-1/2} U^T
    return pca if method == "pca" else u @ pca                      # ZCA: U (Lambda+eps)^{-1/2} U^T


def batch_whitening(input: Tensor, running_mean: Optional[Tensor] = None,
                    running_cov: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                    bias: Optional[Tensor] = None, training: bool = False,
                    momentum: float = 0.1, eps: float = 1e-5, method: str = "zca",
                    iterations: Optional[int] = None) -> Tensor:
    r"""Batch whitening: the normalize step of BatchNorm with the full covariance.

    .. math::
        \hat x = W (x - \mu),\quad W\,(\Sigma + \epsilon I)\,W^\top = I,\qquad
        y = \gamma \hat x + \beta

    The input is reshaped to rows of ``C`` features (``(N, C, H, W)`` gives
    ``N*H*W`` rows, BatchNorm's reshape), the rows' mean ``mu`` and biased
    covariance ``Sigma`` are taken in training (and the running estimates
    updated in place, the covariance with Bessel's correction, as
    :func:`~normtext.torch.functional.batch_norm` does for the variance), the
    running estimates in evaluation. ``W`` is the ZCA matrix
    ``(Sigma + eps I)^{-1/2}`` (Decorrelated BN), the PCA matrix
    ``(Lambda + eps)^{-1/2} U^T``, or with ``iterations`` the ZCA matrix
    approximated by that many Newton-Schulz steps (IterNorm). Autograd
    differentiates through ``torch.linalg.eigh``, whose gradient is unstable
    when two eigenvalues (nearly) coincide; the Newton-Schulz path uses only
    matrix products.

    Args:
        input: ``(N, C)`` or ``(N, C, *spatial)``; training needs
            ``N * prod(spatial) > C``.
        running_mean: ``(C,)``; running_cov: ``(C, C)``; or ``None``.
        weight, bias: ``(C,)`` gamma and beta (the recover step), or ``None``.
        method: ``"zca"`` or ``"pca"``.
        iterations: Newton-Schulz steps instead of an eigendecomposition (ZCA only).
    """
    errors.check_whitening(tuple(input.shape), training=training, method=method, eps=eps,
                           iterations=iterations)
    errors.check_momentum(momentum)
    check_floating(input, "batch_whitening")
    c = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean)):
        errors.check_per_channel(name, None if t is None else tuple(t.shape), c)
    errors.check_per_channel("running_cov", None if running_cov is None
                             else tuple(running_cov.shape), c * c)
    if not training and (running_mean is None or running_cov is None):
        raise RuntimeError("running_mean and running_cov must be defined in evaluation mode")

    x = _as_rows(input.to(compute_dtype(input.dtype)))      # reshape: (m, C)
    if training:
        mean = x.mean(dim=0)                                 # mu = 1/m sum x_i
        xc = x - mean
        cov = xc.T @ xc / x.shape[0]                         # Sigma = 1/m (x-mu)^T (x-mu)
        m = x.shape[0]
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            if running_cov is not None:
                running_cov.mul_(1 - momentum).add_(
                    (cov * (m / (m - 1))).to(running_cov.dtype), alpha=momentum)
    else:
        mean, cov = running_mean.to(x.dtype), running_cov.to(x.dtype)
        xc = x - mean
    w = _whitening_matrix(cov, method, eps, iterations)
    y = xc @ w.T                                             # x_hat = (x - mu) W^T
    if weight is not None:
        y = y * weight.to(y.dtype)                           # recover: gamma x_hat + beta
    if bias is not None:
        y = y + bias.to(y.dtype)
    return _from_rows(y, input.shape).to(input.dtype)        # reshape back


class BatchWhitening(nn.Module):
    """Batch whitening as a layer: BatchNorm with a covariance matrix instead of variances.

    Parameters ``weight``/``bias`` ``(C,)`` and buffers ``running_mean`` ``(C,)``,
    ``running_cov`` ``(C, C)``, named as BatchNorm's. Accepts ``(N, C)`` and
    ``(N, C, *spatial)``. See :func:`batch_whitening`.

    Example::

        >>> layer = BatchWhitening(3, method="zca")
        >>> y = layer(torch.randn(64, 3) @ torch.randn(3, 3))   # cov(y) ~ I
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, method: str = "zca", iterations: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        errors.check_momentum(momentum)
        errors.check_whitening((num_features + 1, num_features), training=True, method=method,
                               eps=eps, iterations=iterations)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.method, self.iterations = affine, method, iterations
        self.weight = nn.Parameter(torch.ones(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **factory)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_cov", torch.eye(num_features, **factory))

    def forward(self, input: Tensor) -> Tensor:
        return batch_whitening(input, self.running_mean, self.running_cov, self.weight,
                               self.bias, self.training, self.momentum, self.eps,
                               self.method, self.iterations)

    def extra_repr(self) -> str:
        it = "" if self.iterations is None else f", iterations={self.iterations}"
        return f"{self.num_features}, eps={self.eps}, method={self.method!r}{it}"


# --- the recover step, from a condition ----------------------------------------------

class ConditionalBatchNorm2d(nn.Module):
    r"""BatchNorm whose gamma and beta are looked up by class (de Vries et al., 2017; Miyato & Koyama, 2018).

    .. math::
        y = \gamma_{c}\,\frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} + \beta_{c}

    The normalize step is :class:`torch.nn.BatchNorm2d`'s (shared statistics,
    running estimates for eval) without its affine; the recover step takes row
    ``c`` of two embedding tables, one per class, instead of one gamma and beta.
    An embedding is a linear layer applied to a one-hot vector, so this is
    the CS 329P notes' "gamma, beta from a linear layer" for a class condition.

    Shapes: ``input`` ``(N, C, H, W)``, ``condition`` ``(N,)`` int64 classes.
    Parameters ``gamma.weight`` (init 1) and ``beta.weight`` (init 0), ``(num_classes, C)``.
    """

    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        errors.check_momentum(momentum)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, input: Tensor, condition: Tensor) -> Tensor:
        errors.check_ndim(input.dim(), (4,))
        errors.check_condition(input.shape[0], condition.shape[0] if condition.dim() else 1)
        # normalize: BatchNorm without affine
        x_hat = F.batch_norm(input, self.running_mean, self.running_var, None, None,
                             self.training, self.momentum, self.eps)
        # recover: gamma_c x_hat + beta_c, one row of each table per sample
        gamma = self.gamma(condition)[:, :, None, None]
        beta = self.beta(condition)[:, :, None, None]
        return gamma * x_hat + beta


class AdaptiveInstanceNorm2d(nn.Module):
    r"""InstanceNorm whose gamma and beta are computed from a condition vector by a network.

    .. math::
        (\gamma, \beta) = f(z),\qquad
        y = \gamma\,\frac{x - \mu(x)}{\sigma(x)} + \beta

    with ``f`` a linear layer (``hidden=None``), as StyleGAN's "learned AdaIN"
    maps a style vector to per-channel scales and shifts, or a one-hidden-layer
    MLP. ``gamma`` is predicted as ``1 + f(z)[:C]`` so that a zero output starts
    as plain InstanceNorm.

    Shapes: ``input`` ``(N, C, H, W)``, ``condition`` ``(N, condition_features)``.
    """

    def __init__(self, num_features: int, condition_features: int,
                 hidden: Optional[int] = None, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        out = 2 * num_features
        self.net = (nn.Linear(condition_features, out) if hidden is None else
                    nn.Sequential(nn.Linear(condition_features, hidden), nn.ReLU(),
                                  nn.Linear(hidden, out)))

    def forward(self, input: Tensor, condition: Tensor) -> Tensor:
        errors.check_ndim(input.dim(), (4,))
        errors.check_spatial_statistics(tuple(input.shape), "AdaptiveInstanceNorm2d")
        errors.check_condition(input.shape[0], condition.shape[0])
        mean, std = instance_statistics(input, self.eps)
        x_hat = (input - mean) / std                       # normalize: per sample and channel
        params = self.net(condition)[:, :, None, None]     # recover: (gamma, beta) = f(z)
        gamma, beta = 1.0 + params[:, :self.num_features], params[:, self.num_features:]
        return gamma * x_hat + beta


# --- normalizing the weights -----------------------------------------------------------

def _norm_except_dim(v: Tensor, dim: Optional[int]) -> Tensor:
    """||v|| over every axis but ``dim`` (keepdims); over all axes for ``None``."""
    if dim is None:
        return v.norm()
    axes = tuple(i for i in range(v.dim()) if i != dim)
    if not axes:                                   # a 1-D weight along dim 0: |v| entrywise
        return v.abs()
    return torch.linalg.vector_norm(v, dim=axes, keepdim=True)


class WeightNorm(nn.Module):
    r"""The parametrization ``w = g v / ||v||`` (Salimans & Kingma, 2016).

    ``forward(g, v)`` computes the weight; ``right_inverse(w)`` gives the
    initial ``g = ||w||`` and ``v = w``, so registering it leaves the layer's
    function unchanged. Used through :func:`weight_norm`.
    """

    def __init__(self, dim: Optional[int] = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        # w = g * v / ||v||: direction from v, length from g
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: Tensor):
        return _norm_except_dim(weight, self.dim), weight


def weight_norm(module: nn.Module, name: str = "weight", dim: Optional[int] = 0) -> nn.Module:
    r"""Weight normalization, as :func:`torch.nn.utils.parametrizations.weight_norm`.

    .. math::
        \mathbf{w} = g\,\frac{\mathbf{v}}{\lVert\mathbf{v}\rVert}

    The weight is replaced by a magnitude ``g`` (one per slice along ``dim``:
    per output unit for ``dim=0``) and a direction ``v``, registered with
    :func:`torch.nn.utils.parametrize.register_parametrization` under PyTorch's
    names (``parametrizations.weight.original0`` is ``g``, ``original1`` is
    ``v``), so state dicts load in both directions.

    ``dim=None`` takes one norm over the whole tensor. Like PyTorch, ``dim=-1``
    also means the whole tensor (not the last axis); other negative dims count
    from the end.
    """
    if not hasattr(module, name):
        raise ValueError(f"Module '{module}' does not have a parameter, a buffer, "
                         f"or a parametrized element with name '{name}'")
    ndim = getattr(module, name).dim()
    if dim is not None:
        errors.check_dim(dim, ndim)
        dim = None if dim == -1 else dim % ndim      # PyTorch's quirk: -1 means "all"
    parametrize.register_parametrization(module, name, WeightNorm(dim), unsafe=True)
    return module


def standardize_weight(weight: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Weight standardization (Qiao et al., 2019): per output channel, zero mean and unit variance.

    .. math::
        \hat W_{o,\cdot} = \frac{W_{o,\cdot} - \mathrm{mean}(W_{o,\cdot})}
                              {\sqrt{\mathrm{Var}(W_{o,\cdot}) + \epsilon}}

    over the fan-in (input channels and kernel positions) of output channel
    ``o``, with the biased variance. It is BatchNorm's normalize step applied to
    the weight, with the fan-in as the "batch".
    """
    errors.check_fan_in(tuple(weight.shape))
    axes = tuple(range(1, weight.dim()))
    _, centered, var = centered_moments(weight, axes)
    return centered * torch.rsqrt(var + eps)


class WSConv2d(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` that convolves with its standardized weight.

    Same constructor (plus ``ws_eps``) and parameters as ``nn.Conv2d``; the
    stored ``weight`` is unconstrained, the one used is
    :func:`standardize_weight` of it. Pair it with GroupNorm for micro-batches,
    as Qiao et al. do.
    """

    def __init__(self, *args, ws_eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        errors.check_fan_in(tuple(self.weight.shape))
        self.ws_eps = ws_eps

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, standardize_weight(self.weight, self.ws_eps), self.bias)


# --- normalizing the gradients -------------------------------------------------------

def _grads(parameters: Union[Tensor, Iterable[Tensor]]) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Union[Tensor, Iterable[Tensor]], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    r"""Clip the gradients' total norm in place, as :func:`torch.nn.utils.clip_grad_norm_`.

    .. math::
        \lVert g\rVert = \Big\lVert \big(\lVert g_1\rVert, \dots, \lVert g_k\rVert\big)\Big\rVert,
        \qquad g_i \leftarrow g_i \min\!\Big(1, \frac{\text{max\_norm}}{\lVert g\rVert + 10^{-6}}\Big)

    The norm is over all gradients together, as if concatenated into one
    vector, so clipping rescales every gradient by the same factor and keeps
    the update's direction. ``norm_type=inf`` takes the largest absolute
    entry. Returns the total norm before clipping.
    """
    errors.check_max_norm(max_norm)
    grads = _grads(parameters)
    if not grads:
        return torch.tensor(0.0)
    norm_type = float(norm_type)
    # ||g|| = || (||g_1||, ..., ||g_k||) ||
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite:
        errors.check_finite_norm(float(total), norm_type)
    # scale = min(1, max_norm / (||g|| + 1e-6)), applied to every gradient
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def normalize_grad_(parameters: Union[Tensor, Iterable[Tensor]], eps: float = 1e-8) -> list[Tensor]:
    r"""Per-layer normalized gradients: ``g_i <- g_i / (||g_i|| + eps)``, in place.

    Unlike :func:`clip_grad_norm_` every parameter tensor gets its own factor,
    so every layer's update has length about ``lr`` whatever the size of its
    gradient (the block-normalized gradient of Yu et al., 2017): the direction
    of the overall update changes, the direction within each layer does not.
    Returns the norms before normalization.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    norms = []
    for g in _grads(parameters):
        n = torch.linalg.vector_norm(g)
        g.div_(n + eps)                                       # g_i / (||g_i|| + eps)
        norms.append(n)
    return norms
