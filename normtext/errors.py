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

from math import prod
from typing import Optional, Sequence

Shape = Sequence[int]


def check_floating(dtype_is_floating: bool, dtype_name: str, op: str) -> None:
    """PyTorch's kernels are only defined for floating point input."""
    if not dtype_is_floating:
        raise NotImplementedError(f'"{op}" not implemented for \'{dtype_name}\'')


def check_ndim(ndim: int, allowed: Sequence[int]) -> None:
    """The module-level dimension check of ``BatchNorm1d/2d/3d`` and friends."""
    if ndim not in allowed:
        expected = " or ".join(f"{d}D" for d in allowed)
        raise ValueError(f"expected {expected} input (got {ndim}D input)")


def check_more_than_one_value_per_channel(shape: Shape) -> None:
    """Batch statistics of a single value are meaningless (the variance is 0)."""
    if len(shape) >= 2 and shape[0] * prod(shape[2:]) == 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input size {tuple(shape)}")


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
    for name, s in (("weight", weight), ("bias", bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        check_per_channel(name, s, channels)
    if not training:
        if running_mean is None:
            raise RuntimeError("running_mean must be defined in evaluation mode")
        if running_var is None:
            raise RuntimeError("running_var must be defined in evaluation mode")
