"""Small helpers shared by the Gluon blocks (the MXNet side of :mod:`normtext.torch._util`)."""
from __future__ import annotations

import numpy as np


def compute_dtype(dtype) -> np.dtype:
    """float16 is normalized in float32 and cast back, as normtext's PyTorch layers do.

    MXNet 1.9.1's ``mean`` of a float16 array sums in float16: a row of 65,536
    values of size 1e3 overflows float16's largest number (65,504). MXNet has
    no bfloat16 on the CPU, so float16 is the only low-precision case.
    """
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def param(p, ctx, dtype, shape):
    """A parameter's value on ``ctx``, in the compute dtype, reshaped to broadcast."""
    return p.data(ctx).astype(dtype, copy=False).reshape(shape)


def gamma_beta(block, shape, *, center: bool, scale: bool, gamma_initializer,
               beta_initializer):
    """Declare ``gamma`` and ``beta`` of ``shape`` as Gluon's norm blocks do.

    A gamma that is not learned (``scale=False``) keeps its initial value, one,
    with ``grad_req="null"``; likewise beta with ``center=False``.
    """
    gamma = block.params.get("gamma", grad_req="write" if scale else "null", shape=shape,
                             init=gamma_initializer, allow_deferred_init=True)
    beta = block.params.get("beta", grad_req="write" if center else "null", shape=shape,
                            init=beta_initializer, allow_deferred_init=True)
    return gamma, beta
