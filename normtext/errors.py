"""Input checks, with PyTorch's exception types and messages.

Every implementation (NumPy, PyTorch, MXNet) calls these before any
arithmetic, so bad input fails the same way on every floor of the package.
The checks take shapes and flags rather than tensors, so they serve all three
frameworks.

Where PyTorch itself checks, the type and message are PyTorch's (recorded from
torch 2.13.0). Where PyTorch accepts a value silently, normtext is stricter and
says so in the message:

* ``momentum`` outside ``[0, 1]``: PyTorch extrapolates the running statistics;
  normtext raises ``ValueError``.
"""
from __future__ import annotations

from math import isfinite, prod
from typing import Optional, Sequence

Shape = Sequence[int]


# --- Common checks --------------------------------------------------------------------

def _torch_size(shape: Shape) -> str:
    """A shape as Python prints a ``torch.Size``."""
    return "torch.Size([" + ", ".join(str(int(n)) for n in shape) + "])"


def _int_list(shape: Shape) -> str:
    """A shape as PyTorch's C++ messages print it: ``[2, 3]``."""
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def check_floating(dtype_is_floating: bool, dtype_name: str, op: str) -> None:
    """PyTorch's kernels are only defined for floating point input."""
    if not dtype_is_floating:
        raise NotImplementedError(f'"{op}" not implemented for \'{dtype_name}\'')


def check_ndim(ndim: int, allowed: Sequence[int]) -> None:
    """The module-level dimension check of ``BatchNorm1d/2d/3d`` and friends."""
    if ndim not in allowed:
        expected = " or ".join(f"{d}D" for d in allowed)
        raise ValueError(f"expected {expected} input (got {ndim}D input)")


def check_eps(eps: float, training: bool, op: str = "batch_norm") -> None:
    if training and eps <= 0.0:
        raise ValueError(f"{op} eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"{op} eps must be non-negative, but got {eps}")


def check_momentum(momentum: Optional[float]) -> None:
    """Stricter than PyTorch, which accepts any float."""
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"momentum must be in [0, 1] (the weight of the new batch), got {momentum}; "
            "PyTorch accepts it silently and extrapolates the running statistics")


def check_per_channel(name: str, shape: Optional[Shape], channels: int) -> None:
    """A per-channel tensor (weight, bias, running_mean, running_var) of the wrong size."""
    if shape is not None and prod(shape) != channels:
        raise RuntimeError(f"{name} should contain {channels} elements not {prod(shape)}")


# --- BatchNorm (torch.nn.functional.batch_norm, BatchNorm1d/2d/3d) --------------------

def check_more_than_one_value_per_channel(shape: Shape) -> None:
    """Batch statistics of a single value are meaningless (the variance is 0)."""
    if len(shape) >= 2 and shape[0] * prod(shape[2:]) == 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input size {shape}")  # torch.Size prints as PyTorch does


def check_batch_norm(shape: Shape, *, training: bool, eps: float, momentum: Optional[float],
                     dtype_is_floating: bool = True, dtype_name: str = "",
                     running_mean: Optional[Shape] = None, running_var: Optional[Shape] = None,
                     weight: Optional[Shape] = None, bias: Optional[Shape] = None) -> None:
    """Every check of ``torch.nn.functional.batch_norm``, in PyTorch's order.

    ``running_mean`` etc. are the shapes of the tensors passed (``None`` when
    absent).
    """
    if len(shape) < 2:
        raise RuntimeError(
            f"batch_norm expects an input of shape (N, C, *), got {len(shape)}D input")
    if training:
        check_more_than_one_value_per_channel(shape)
    check_eps(eps, training)
    check_momentum(momentum)
    check_floating(dtype_is_floating, dtype_name, "batch_norm")
    channels = shape[1]
    for name, s in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        check_per_channel(name, s, channels)
    if not training:
        if running_mean is None:
            raise RuntimeError("running_mean must be defined in evaluation mode")
        if running_var is None:
            raise RuntimeError("running_var must be defined in evaluation mode")


# --- LayerNorm and RMSNorm (torch.nn.functional.layer_norm / rms_norm) ----------------

def check_normalized_shape_type(normalized_shape, op: str = "layer_norm") -> tuple:
    """``normalized_shape`` must be a sequence of ints (the functional form; modules accept an int).

    Returns it as a tuple of Python ints. PyTorch's ``TypeError`` comes from its
    argument parser.
    """
    if isinstance(normalized_shape, (str, bytes)) or not hasattr(normalized_shape, "__iter__"):
        raise TypeError(f"{op}(): argument 'normalized_shape' (position 2) must be tuple of "
                        f"ints, not {type(normalized_shape).__name__}")
    out = []
    for pos, n in enumerate(normalized_shape):
        if isinstance(n, bool) or not hasattr(n, "__index__"):
            raise TypeError(f"{op}(): argument 'normalized_shape' (position 2) must be tuple of "
                            f"ints, but found element of type {type(n).__name__} at pos {pos}")
        out.append(int(n.__index__()))
    return tuple(out)


def check_layer_norm(shape: Shape, normalized_shape: Shape, *,
                     weight: Optional[Shape] = None, bias: Optional[Shape] = None,
                     op: str = "layer_norm") -> None:
    """Every shape check of ``layer_norm`` (``op="layer_norm"``) or ``rms_norm``, in PyTorch's order.

    ``shape`` is the input's shape, ``weight``/``bias`` the shapes of the
    tensors passed (``None`` when absent). The statistics are taken over the
    trailing ``len(normalized_shape)`` axes, which must equal ``normalized_shape``.
    """
    ns = tuple(normalized_shape)
    if len(ns) == 0:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at "
            "least one element, but got normalized_shape = []")
    for name, s in (("weight", weight), ("bias", bias)):
        if s is not None and tuple(s) != ns:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of "
                f"shape {_int_list(s)} and normalized_shape = {_int_list(ns)}")
    if op == "rms_norm" and len(ns) > len(shape):
        raise ValueError(f"Input tensor must have at least {len(ns)} dimensions, "
                         f"but got {len(shape)}")
    if len(ns) > len(shape) or tuple(shape[len(shape) - len(ns):]) != ns:
        # PyTorch words the two messages slightly differently: "[*, 4]" and "[*4]"
        sep = ", " if op == "layer_norm" else ""
        raise RuntimeError(
            f"Given normalized_shape={_int_list(ns)}, expected input with shape "
            f"[*{sep}{', '.join(str(n) for n in ns)}], but got input of size{_int_list(shape)}")


def check_layer_norm_dtypes(input_dtype: str, weight_dtype: Optional[str],
                            bias_dtype: Optional[str]) -> None:
    """PyTorch's CPU ``layer_norm`` wants gamma/beta in the input's dtype.

    The one exception: float16/bfloat16 input with float32 gamma and beta
    (mixed precision). ``dtype`` arguments are names such as ``"float32"``.
    """
    params = [d for d in (weight_dtype, bias_dtype) if d is not None]
    if all(d == input_dtype for d in params):
        return
    if input_dtype in ("float16", "bfloat16") and all(d == "float32" for d in params):
        return
    raise RuntimeError(
        f"mixed dtype (CPU): expect parameter to have scalar type of {input_dtype} "
        f"(got {', '.join(params)})")


# --- InstanceNorm (torch.nn.functional.instance_norm, InstanceNorm1d/2d/3d) -----------

def check_instance_norm(shape: Shape, *, use_input_stats: bool,
                        running_mean: Optional[Shape] = None, running_var: Optional[Shape] = None,
                        weight: Optional[Shape] = None, bias: Optional[Shape] = None,
                        dtype_is_floating: bool = True, dtype_name: str = "") -> None:
    """Every check of ``torch.nn.functional.instance_norm``, in PyTorch's order.

    PyTorch runs InstanceNorm as BatchNorm on the view ``(1, N*C, *)`` with the
    per-channel tensors repeated ``N`` times, so its size messages count
    ``N*C`` elements: "weight should contain 12 elements not 10" for N=2, C=6
    and a weight of 5.
    """
    if use_input_stats and prod(shape[2:]) == 1:
        raise ValueError("Expected more than 1 spatial element when training, "
                         f"got input size {_torch_size(shape)}")
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError("Expected running_mean and running_var to be defined "
                           "when use_input_stats is false")
    n, c = shape[0], shape[1]
    for name, s in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if s is not None and prod(s) != c:
            raise RuntimeError(f"{name} should contain {n * c} elements not {n * prod(s)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    check_floating(dtype_is_floating, dtype_name, "batch_norm")


def check_num_features(input_channels: int, num_features: int, feature_dim: int,
                       affine: bool) -> bool:
    """InstanceNorm modules: a channel count other than ``num_features``.

    With ``affine`` PyTorch raises ``ValueError``; without, it only warns
    (``num_features`` is unused). Returns whether to warn.
    """
    if input_channels == num_features:
        return False
    if affine:
        raise ValueError(f"expected input's size at dim={feature_dim} to match num_features"
                         f" ({num_features}), but got: {input_channels}.")
    return True


# --- GroupNorm ------------------------------------------------------------------------

def check_group_norm(shape: Shape, num_groups: int, *, weight: Optional[Shape] = None,
                     bias: Optional[Shape] = None, dtype_is_floating: bool = True,
                     dtype_name: str = "") -> None:
    """Every check of ``torch.nn.functional.group_norm``, in PyTorch's order.

    ``num_groups=0`` raises Python's ``ZeroDivisionError``, as PyTorch does.
    PyTorch's message for a wrong ``bias`` prints the *weight's* shape (``[0]``
    without a weight); normtext reproduces it.
    """
    if len(shape) < 2:
        raise RuntimeError(
            f"Expected at least 2 dimensions for input tensor but received {len(shape)}")
    # PyTorch's _verify_batch_size on [N*C//G, G, *spatial]
    size = [shape[0] * shape[1] // num_groups, num_groups] + list(shape[2:])
    if prod(size[:1] + size[2:]) == 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got input size {size}")
    if num_groups <= 0:
        raise RuntimeError(f"Expected num groups to be greater than 0, got {num_groups}")
    if shape[1] % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {_int_list(shape)} and num_groups={num_groups}")
    for name, s in (("weight", weight), ("bias", bias)):
        if s is not None and (len(s) != 1 or s[0] != shape[1]):
            shown = s if name == "weight" else (weight if weight is not None else (0,))
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in "
                f"input, but got {name} of shape {_int_list(shown)} and input of shape "
                f"{_int_list(shape)}")
    check_floating(dtype_is_floating, dtype_name, "GroupNormKernelImpl")


def check_groups_divide_channels(num_channels: int, num_groups: int) -> None:
    """The constructor check of ``torch.nn.GroupNorm`` (``num_groups=0``: ZeroDivisionError)."""
    if num_channels % num_groups != 0:
        raise ValueError(
            f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")


# --- LocalResponseNorm ----------------------------------------------------------------

def check_local_response_norm(ndim: int, size: int, empty: bool = False) -> None:
    """The checks of ``torch.nn.functional.local_response_norm`` (an empty input skips the size check).

    The odd spacing in the first message is PyTorch's (a line continuation inside
    its f-string).
    """
    if ndim < 3:
        raise ValueError("Expected 3D or higher dimensionality                          "
                         f"input (got {ndim} dimensions)")
    if empty:
        return
    if isinstance(size, bool) or not isinstance(size, int):
        pos = 3 if ndim == 3 else 5
        raise TypeError(f"pad(): argument 'pad' failed to unpack the object at pos {pos} with "
                        f"error \"type must be tuple of ints,but got {type(size).__name__}\"")
    if size <= -2:  # PyTorch's padding step has already gone negative
        raise RuntimeError("pad should be at most half of effective kernel size, but got pad=0, "
                           f"kernel_size={size} and dilation=1")
    if size <= 0:
        if ndim == 3:  # PyTorch pools with avg_pool2d on 3D input, avg_pool3d otherwise
            raise RuntimeError(f"kernel size should be greater than zero, but got kH: {size} kW: 1")
        raise RuntimeError(
            f"kernel size should be greater than zero, but got kT: {size} kH: 1 kW: 1")


# --- SyncBatchNorm (normtext.torch.sync) ----------------------------------------------

def check_sync_batch_norm_input(ndim: int, shape: Shape) -> None:
    """The input checks of ``torch.nn.SyncBatchNorm.forward``: at least 2D, channels > 0."""
    if ndim < 2:
        raise ValueError(f"expected at least 2D input (got {ndim}D input)")
    if shape[1] == 0:
        raise ValueError("SyncBatchNorm number of input channels should be non-zero")


# --- more normalizations (CrossNorm, whitening, conditional norms, weights, gradients) ---
# Where PyTorch has the same check the type and message are PyTorch's; the others are
# stricter than anything built in and say why.

def check_spatial_statistics(shape: Shape, op: str) -> None:
    """Per-instance channel statistics (InstanceNorm, CrossNorm, AdaIN) need spatial axes."""
    if len(shape) < 3:
        raise ValueError(f"{op} expects an input of shape (N, C, *spatial), "
                         f"got {len(shape)}D input")
    if prod(shape[2:]) == 1:
        # torch.nn.functional.instance_norm's message
        raise ValueError("Expected more than 1 spatial element when training, "
                         f"got input size {tuple(shape)}")


def check_permutation(permutation: Sequence[int], n: int) -> None:
    """CrossNorm exchanges statistics along a permutation of the batch."""
    if sorted(int(i) for i in permutation) != list(range(n)):
        raise ValueError(f"permutation must be a permutation of range({n}), "
                         f"got {list(int(i) for i in permutation)}")


def check_same_channels(content: Shape, style: Shape, op: str = "adain") -> None:
    """AdaIN takes its statistics from a second input with the same batch and channels."""
    if tuple(content[:2]) != tuple(style[:2]):
        raise ValueError(f"{op}: content {tuple(content)} and style {tuple(style)} must agree "
                         "in batch size and channels (N, C)")


def check_condition(batch: int, condition_batch: int) -> None:
    """A conditional norm needs one condition per sample."""
    if batch != condition_batch:
        raise ValueError(f"got {condition_batch} conditions for a batch of {batch} samples")


def check_whitening(shape: Shape, *, training: bool, method: str, eps: float,
                    iterations: Optional[int]) -> None:
    """Batch whitening: no built-in exists, so every check is normtext's own.

    In training the covariance of ``m`` samples of ``d`` features has rank at
    most ``m - 1``; with ``m <= d`` it is singular and the output cannot have
    the identity covariance, so normtext refuses instead of whitening silently
    into the ``eps`` regularizer.
    """
    if len(shape) < 2:
        raise ValueError(f"batch whitening expects an input of shape (N, C, *), "
                         f"got {len(shape)}D input")
    if method not in ("zca", "pca"):
        raise ValueError(f"method must be 'zca' or 'pca', got {method!r}")
    if iterations is not None and (int(iterations) != iterations or iterations < 1):
        raise ValueError(f"iterations must be a positive integer or None, got {iterations}")
    if iterations is not None and method != "zca":
        raise ValueError("the Newton-Schulz iteration computes the ZCA matrix; "
                         "use method='zca' with iterations")
    # eps = 0 is allowed: with m > d samples the covariance is (almost surely) full rank
    check_eps(eps, False, op="batch_whitening")
    m, d = shape[0] * prod(shape[2:]), shape[1]
    if training and m <= d:
        raise ValueError(f"batch whitening needs more samples than features: got {m} samples "
                         f"(N * spatial) for {d} features, so the covariance is singular")


def check_dim(dim: int, ndim: int) -> None:
    """PyTorch's message for a dimension outside ``[-ndim, ndim - 1]``."""
    if not -ndim <= dim <= ndim - 1:
        raise IndexError(f"Dimension out of range (expected to be in range of "
                         f"[{-ndim}, {ndim - 1}], but got {dim})")


def check_fan_in(weight: Shape) -> None:
    """Weight standardization needs more than one weight per output channel."""
    if len(weight) < 2 or prod(weight[1:]) < 2:
        raise ValueError(f"weight standardization needs more than 1 weight per output "
                         f"channel, got weight of shape {tuple(weight)}")


def check_max_norm(max_norm: float) -> None:
    """Stricter than PyTorch, which flips the gradients' sign for a negative max_norm."""
    if max_norm < 0:
        raise ValueError(f"max_norm must be non-negative, got {max_norm}; PyTorch accepts "
                         "it silently and reverses the direction of every gradient")


def check_finite_norm(total_norm: float, norm_type: float) -> None:
    """torch.nn.utils.clip_grad_norm_(..., error_if_nonfinite=True)'s check."""
    if not isfinite(total_norm):
        raise RuntimeError(
            f"The total norm of order {float(norm_type)} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
