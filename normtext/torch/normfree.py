r"""Training without activation normalization, and norms that need no batch statistics.

Residual networks without BatchNorm train when each residual branch starts
small, so that every block is (close to) the identity at initialization:

* :class:`SkipInit` (De & Smith, 2020): a learnable scalar at the end of each
  residual branch, initialized to zero;
* :func:`fixup_init_` (Zhang, Dauphin & Ma, 2019): zero the last layer of each
  branch and rescale the others by :math:`L^{-1/(2m-2)}`, with the scalar
  :class:`ScalarBias` and :class:`SkipInit` (as a multiplier initialized to one);
* :func:`zero_init_last_norm_` (Goyal et al., 2017): in a *normalized* network,
  set the :math:`\gamma` of the last norm of each branch to zero.

Normalizer-free networks (Brock, De & Smith, 2021; Brock, De, Smith &
Simonyan, 2021) standardize the *weights* instead of the activations
(:class:`ScaledStdConv2d`, with the gain :data:`RELU_GAMMA` of the ReLU) and
clip gradients relative to the weights they update
(:func:`adaptive_clip_grad_`, unit by unit).

Two norms that use no batch statistics either: :func:`spectral_norm`
(Miyato et al., 2018: divide a weight by its largest singular value, estimated
by power iteration with the state of ``torch.nn.utils.parametrizations``) and
:func:`pixel_norm` / :class:`PixelNorm` (Karras et al., 2018: each position's
feature vector divided by its root mean square).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import modules as _nt

__all__ = ["SkipInit", "ScalarBias", "fixup_init_", "zero_init_last_norm_",
           "RELU_GAMMA", "scaled_standardize_weight", "ScaledStdConv2d", "ScaledStdLinear",
           "unitwise_norm", "adaptive_clip_grad_",
           "SpectralNorm", "spectral_norm",
           "pixel_norm", "PixelNorm", "pixel_norm_as_lrn"]


# --- residual branches that start at zero ----------------------------------------------

class SkipInit(nn.Module):
    r"""A learnable scalar :math:`\alpha` that multiplies its input: :math:`y = \alpha x`.

    Put at the end of a residual branch, :math:`h + \alpha f(h)` with
    :math:`\alpha = 0` makes the block the identity at initialization (De &
    Smith, 2020). With ``init=1`` it is Fixup's scalar multiplier.

    Args:
        init: the initial value of ``alpha`` (default 0).

    Example::

        >>> gate = SkipInit()
        >>> gate(torch.ones(2, 3)).abs().sum().item()
        0.0
    """

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def forward(self, input: Tensor) -> Tensor:
        return self.alpha * input

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.3g}"


class ScalarBias(nn.Module):
    r"""A learnable scalar added to its input, initialized to zero (Fixup's bias: :math:`y = x + b`)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, input: Tensor) -> Tensor:
        return input + self.bias


_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _weight_layers(branch: nn.Module) -> list:
    return [m for m in branch.modules() if isinstance(m, _WEIGHT_LAYERS)]


@torch.no_grad()
def fixup_init_(branches: Sequence[nn.Module], classifier: Optional[nn.Module] = None) -> int:
    r"""Fixup initialization (Zhang, Dauphin & Ma, 2019), in place; returns :math:`m`.

    With :math:`L` residual branches of :math:`m` weight layers each (in the
    order of ``branch.modules()``), every weight layer keeps its standard (He)
    initialization, scaled by :math:`L^{-1/(2m-2)}`, except the last one of each
    branch, whose weight (and bias) is set to zero; so is the ``classifier``'s.
    Every branch then outputs zero and every block is the identity at
    initialization, yet the gradients reach all layers (through the zeroed one).
    The scalar biases and multipliers of the paper are :class:`ScalarBias` and
    ``SkipInit(init=1)``, placed by the model.
    """
    layers = [_weight_layers(b) for b in branches]
    if not layers:
        raise ValueError("fixup_init_ needs at least one residual branch")
    m = len(layers[0])
    if m < 2 or any(len(ls) != m for ls in layers):
        raise ValueError(f"every branch needs the same number (>= 2) of weight layers, got "
                         f"{[len(ls) for ls in layers]}")
    scale = len(branches) ** (-1.0 / (2 * m - 2))
    for ls in layers:
        for layer in ls[:-1]:
            layer.weight.mul_(scale)        # W <- L^{-1/(2m-2)} W
        ls[-1].weight.zero_()               # the branch starts at zero
        if ls[-1].bias is not None:
            ls[-1].bias.zero_()
    if classifier is not None:
        for layer in _weight_layers(classifier) or [classifier]:
            layer.weight.zero_()
            if getattr(layer, "bias", None) is not None:
                layer.bias.zero_()
    return m


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm,
          _nt._NormBase, _nt.GroupNorm, _nt.LayerNorm, _nt.RMSNorm)


@torch.no_grad()
def zero_init_last_norm_(branches: Iterable[nn.Module]) -> int:
    r"""Set :math:`\gamma` of the last norm in each residual branch to zero; returns how many.

    Goyal et al. (2017) do this for the last BatchNorm of each ResNet block:
    the branch then outputs :math:`\beta = 0` and the block starts as the
    identity. Works for any norm with an affine ``weight`` (BatchNorm,
    GroupNorm, LayerNorm, RMSNorm, PyTorch's and normtext's).
    """
    count = 0
    for branch in branches:
        norms = [m for m in branch.modules()
                 if isinstance(m, _NORMS) and getattr(m, "weight", None) is not None]
        if not norms:
            raise ValueError(f"no norm with an affine weight in branch {type(branch).__name__}")
        norms[-1].weight.zero_()
        count += 1
    return count


# --- normalizer-free networks: scaled weight standardization --------------------------

#: the gain that restores unit variance after a ReLU of a standard normal input:
#: Var(relu(z)) = (1 - 1/pi) / 2 for z ~ N(0, 1), so gamma = sqrt(2 / (1 - 1/pi)).
RELU_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))


def scaled_standardize_weight(weight: Tensor, gain: Optional[Tensor] = None, gamma: float = 1.0,
                              eps: float = 1e-4) -> Tensor:
    r"""Scaled weight standardization (Brock, De & Smith, 2021), per output unit:

    .. math::
        \hat W_{i,\cdot} = g_i\,\gamma\,\frac{W_{i,\cdot} - \mu_i}{\sqrt{\max(N \sigma_i^2, \epsilon)}}

    with :math:`\mu_i, \sigma_i^2` the mean and (biased) variance of row
    :math:`i` over its fan-in :math:`N` (input channels times kernel positions),
    :math:`g` a learnable gain per output unit and :math:`\gamma` the constant of
    the nonlinearity that precedes the layer (:data:`RELU_GAMMA` for ReLU).
    Each row then has zero mean and squared norm :math:`g_i^2 \gamma^2`, so for
    i.i.d. inputs of variance :math:`1/\gamma^2` the output has variance
    :math:`g_i^2`. The ``eps`` floor is the reference implementation's.
    """
    if weight.dim() < 2 or weight[0].numel() < 2:
        raise ValueError(f"weight standardization needs more than 1 weight per output unit, "
                         f"got weight of shape {tuple(weight.shape)}")
    axes = tuple(range(1, weight.dim()))
    fan_in = weight[0].numel()
    mean = weight.mean(axes, keepdim=True)                           # mu_i
    var = weight.var(axes, keepdim=True, unbiased=False)             # sigma_i^2
    scale = gamma * torch.rsqrt(torch.clamp(var * fan_in, min=eps))  # gamma / sqrt(N sigma_i^2)
    if gain is not None:
        scale = scale * gain.reshape(-1, *([1] * (weight.dim() - 1)))
    return (weight - mean) * scale


class ScaledStdConv2d(nn.Conv2d):
    r"""A :class:`torch.nn.Conv2d` whose weight is scaled-standardized at every forward pass.

    Same constructor as ``nn.Conv2d`` plus ``gamma`` (the gain of the preceding
    nonlinearity, default 1) and ``eps`` (1e-4); adds the learnable per-channel
    ``gain`` (shape ``(out_channels,)``, initialized to one). The stored
    ``weight`` is unconstrained; :func:`scaled_standardize_weight` of it is used.

    Example::

        >>> conv = ScaledStdConv2d(16, 32, 3, padding=1, gamma=RELU_GAMMA)
        >>> conv(torch.relu(torch.randn(8, 16, 8, 8))).shape
        torch.Size([8, 32, 8, 8])
    """

    def __init__(self, *args, gamma: float = 1.0, eps: float = 1e-4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gamma, self.eps = float(gamma), float(eps)
        self.gain = nn.Parameter(torch.ones(self.out_channels, device=self.weight.device,
                                            dtype=self.weight.dtype))

    def standardized_weight(self) -> Tensor:
        return scaled_standardize_weight(self.weight, self.gain, self.gamma, self.eps)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma:.4g}, eps={self.eps:g}"


class ScaledStdLinear(nn.Linear):
    r"""A :class:`torch.nn.Linear` with a scaled-standardized weight (see :class:`ScaledStdConv2d`).

    Same constructor as ``nn.Linear`` plus ``gamma`` and ``eps``; adds the
    learnable ``gain`` of shape ``(out_features,)``, initialized to one.
    """

    def __init__(self, *args, gamma: float = 1.0, eps: float = 1e-4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gamma, self.eps = float(gamma), float(eps)
        self.gain = nn.Parameter(torch.ones(self.out_features, device=self.weight.device,
                                            dtype=self.weight.dtype))

    def standardized_weight(self) -> Tensor:
        return scaled_standardize_weight(self.weight, self.gain, self.gamma, self.eps)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma:.4g}, eps={self.eps:g}"


# --- adaptive gradient clipping ----------------------------------------------------------

def unitwise_norm(x: Tensor) -> Tensor:
    """The Frobenius norm of each output unit (row ``x[i]``), broadcastable to ``x``.

    A tensor with at most one dimension (a bias, a gain, a scalar) is one unit.
    """
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters: Union[Tensor, Iterable[Tensor]], clip_factor: float = 0.01,
                        eps: float = 1e-3) -> list[Tensor]:
    r"""Adaptive gradient clipping (Brock, De, Smith & Simonyan, 2021), unit-wise, in place.

    For every unit :math:`i` (row) of every parameter :math:`W` with gradient :math:`G`,

    .. math::
        G_i \leftarrow \begin{cases}
            \lambda \dfrac{\|W_i\|^\star}{\|G_i\|} G_i & \text{if } \dfrac{\|G_i\|}{\|W_i\|^\star} > \lambda \\
            G_i & \text{otherwise,}\end{cases}
        \qquad \|W_i\|^\star = \max(\|W_i\|, \epsilon),

    with :math:`\lambda` = ``clip_factor``. Unlike
    :func:`torch.nn.utils.clip_grad_norm_` the threshold is relative to the
    weight the gradient updates, and each unit is clipped on its own. The paper
    does not clip the final linear layer: leave its parameters out. Returns the
    list of clipping factors (1 where a unit was not clipped), one tensor per
    parameter with a gradient.
    """
    if clip_factor <= 0:
        raise ValueError(f"clip_factor must be positive, got {clip_factor}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    factors = []
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p).clamp(min=eps) * clip_factor      # lambda * ||W_i||*
        grad_norm = unitwise_norm(p.grad)                             # ||G_i||
        factor = torch.where(grad_norm > max_norm,
                             max_norm / grad_norm.clamp(min=torch.finfo(grad_norm.dtype).tiny),
                             torch.ones_like(grad_norm))
        p.grad.mul_(factor)
        factors.append(factor)
    return factors


# --- spectral normalization -------------------------------------------------------------

class SpectralNorm(nn.Module):
    r"""A parametrization :math:`W \mapsto W / \sigma(W)`, :math:`\sigma` by power iteration.

    The state and the arithmetic are those of
    ``torch.nn.utils.parametrizations.spectral_norm``: buffers ``_u`` (length
    ``h``) and ``_v`` (length ``w``) of the weight viewed as an :math:`h \times w`
    matrix with ``dim`` first, drawn from :math:`N(0, 1)` and normalized, then 15
    power iterations at construction (and one more when
    :func:`spectral_norm` registers it: ``register_parametrization`` calls it
    once to check it); in training mode every forward pass runs
    ``n_power_iterations`` more,

    .. math::
        u \leftarrow \frac{W v}{\max(\|W v\|, \epsilon)},\qquad
        v \leftarrow \frac{W^\top u}{\max(\|W^\top u\|, \epsilon)},\qquad
        \sigma = u^\top W v ,

    and in evaluation mode none. A one-dimensional weight is divided by its norm.
    """

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, dim: int = 0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        ndim = weight.dim()
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim % ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            mat = self._matrix(weight)
            u = mat.new_empty(mat.shape[0]).normal_(0, 1)   # the same draws, in the same order,
            v = mat.new_empty(mat.shape[1]).normal_(0, 1)   # as torch's parametrization
            self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
            self._power_iteration(mat, 15)

    def _matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    @torch.no_grad()
    def _power_iteration(self, mat: Tensor, n: int) -> None:
        for _ in range(n):
            self._u.copy_(F.normalize(mat @ self._v, dim=0, eps=self.eps))      # u = Wv / |Wv|
            self._v.copy_(F.normalize(mat.mH @ self._u, dim=0, eps=self.eps))   # v = W^T u / |W^T u|

    def forward(self, weight: Tensor) -> Tensor:
        if weight.dim() == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        mat = self._matrix(weight)
        if self.training:
            self._power_iteration(mat, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()    # autograd must not see the in-place updates
        sigma = torch.vdot(u, mat @ v)              # sigma = u^T W v
        return weight / sigma

    def right_inverse(self, value: Tensor) -> Tensor:
        return value


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12, dim: Optional[int] = None) -> nn.Module:
    """Register :class:`SpectralNorm` on ``module.<name>``, as
    ``torch.nn.utils.parametrizations.spectral_norm`` does (same arguments,
    same state-dict keys ``parametrizations.<name>.original`` and
    ``parametrizations.<name>.0._u`` / ``._v``; ``dim`` defaults to 1 for
    transposed convolutions, else 0)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                       nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, name,
                                         SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


# --- pixelwise feature normalization -----------------------------------------------------

def pixel_norm(input: Tensor, eps: float = 1e-8) -> Tensor:
    r"""PixelNorm (Karras et al., 2018): :math:`b_c = a_c / \sqrt{\frac1C \sum_{c'} a_{c'}^2 + \epsilon}`.

    Each position's feature vector (axis 1, the channels) is divided by its root
    mean square: RMSNorm over the channels, without a learnable gain.
    """
    if input.dim() < 2:
        raise ValueError(f"pixel_norm expects the channels on axis 1, got a {input.dim()}D input")
    return input * torch.rsqrt(input.square().mean(1, keepdim=True) + eps)


class PixelNorm(nn.Module):
    """Module form of :func:`pixel_norm`; no parameters, no state."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, input: Tensor) -> Tensor:
        return pixel_norm(input, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


def pixel_norm_as_lrn(num_channels: int, eps: float = 1e-8) -> dict:
    r"""The arguments that make ``torch.nn.LocalResponseNorm`` compute :func:`pixel_norm`.

    PyTorch's LRN is :math:`b_c = a_c (k + \frac{\alpha}{n}\sum_{c' \in W_c} a_{c'}^2)^{-\beta}`
    over the window :math:`W_c = c-\lfloor n/2\rfloor .. c+\lfloor (n-1)/2\rfloor`
    (zero padded). The window covers all :math:`C` channels for every :math:`c`
    when :math:`\lfloor (n-1)/2 \rfloor \ge C-1`, first at :math:`n = 2C-1`;
    then :math:`\alpha/n = 1/C` gives :math:`\alpha = (2C-1)/C`, with
    :math:`\beta = 1/2` and :math:`k = \epsilon`.
    """
    if num_channels < 1:
        raise ValueError(f"num_channels must be positive, got {num_channels}")
    size = 2 * num_channels - 1
    return {"size": size, "alpha": size / num_channels, "beta": 0.5, "k": eps}
