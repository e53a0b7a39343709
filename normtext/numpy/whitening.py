r"""Batch whitening in float64 NumPy: the reference for :mod:`normtext.torch.more`.

BatchNorm standardizes every feature on its own: zero mean, unit variance,
but the features stay correlated. Whitening changes the *normalize* step so
that the output covariance is the identity (Li and Smola's CS 329P notes: "a PCA"). For ``m``
samples of ``d`` features (the rows of ``x``, after the reshape step)

.. math::
    \mu = \tfrac1m \textstyle\sum_i x_i,\qquad
    \Sigma = \tfrac1m (x-\mu)^\top (x-\mu) = U \Lambda U^\top,

and ``y = (x - mu) W^T`` with

* PCA whitening: ``W = (Lambda + eps)^{-1/2} U^T`` (rotate into the
  eigenbasis, then scale each direction),
* ZCA whitening: ``W = U (Lambda + eps)^{-1/2} U^T = (Sigma + eps I)^{-1/2}``
  (rotate back: of all whitening matrices the one whose output stays closest
  to the input, Decorrelated BatchNorm's choice),
* Newton-Schulz (IterNorm): ZCA's ``(Sigma + eps I)^{-1/2}`` approximated with
  matrix products only, no eigendecomposition.

Then ``cov(y) = W Sigma W^T = U Lambda (Lambda + eps)^{-1} U^T``: the identity
up to ``eps / (lambda_min + eps)``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .. import errors


class WhiteningResult(NamedTuple):
    y: np.ndarray       # (m, d) whitened samples
    mean: np.ndarray    # (d,)
    cov: np.ndarray     # (d, d) biased covariance of x
    matrix: np.ndarray  # (d, d) W, with y = (x - mean) @ W.T


def covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased covariance of the rows of ``x`` (two passes: centre first)."""
    mean = x.mean(axis=0)
    xc = x - mean
    return mean, xc.T @ xc / x.shape[0]


def whitening_matrix(cov: np.ndarray, method: str = "zca", eps: float = 1e-5,
                     iterations: Optional[int] = None) -> np.ndarray:
    """``W`` with ``W (cov + eps I) W^T = I``: PCA or ZCA by eigendecomposition, or ZCA by Newton-Schulz."""
    d = cov.shape[0]
    if iterations is not None:
        return newton_schulz_inverse_sqrt(cov + eps * np.eye(d), iterations)
    # Sigma = U Lambda U^T, eigenvalues ascending
    lam, u = np.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]              # principal directions first
    u = u * np.sign(u[np.abs(u).argmax(axis=0), range(d)])  # fix each vector's sign
    scale = 1.0 / np.sqrt(np.clip(lam, 0.0, None) + eps)    # (Lambda + eps)^{-1/2}
    pca = scale[:, None] * u.T                   # W_PCA = (Lambda + eps)^{-1/2} U^T
    return pca if method == "pca" else u @ pca   # W_ZCA = U W_PCA


def newton_schulz_inverse_sqrt(cov: np.ndarray, iterations: int,
                               coupled: bool = True) -> np.ndarray:
    r"""``cov^{-1/2}`` by Newton-Schulz iterations, as in IterNorm (Huang et al., 2019).

    IterNorm's form (``coupled=False``):

    .. math::
        \Sigma_N = \Sigma / \mathrm{tr}(\Sigma),\quad P_0 = I,\quad
        P_{k+1} = \tfrac12 (3 P_k - P_k^3 \Sigma_N),\quad
        \Sigma^{-1/2} \approx P_T / \sqrt{\mathrm{tr}(\Sigma)}.

    Dividing by the trace puts every eigenvalue of ``Sigma_N`` in ``(0, 1]``,
    where the iteration converges; directions with small eigenvalues converge
    last (see :func:`newton_schulz_residual`). In floating point this form is
    unstable: rounding breaks the commutation of ``P_k`` with ``Sigma_N`` and
    the error grows with every step once ``cond(Sigma)`` is in the hundreds.
    The coupled form (default; Higham, *Functions of Matrices*, 2008) carries
    ``Y_k -> Sigma_N^{1/2}`` and ``Z_k -> Sigma_N^{-1/2}`` and is stable;
    in exact arithmetic ``Z_k = P_k``:

    .. math::
        Y_0 = \Sigma_N,\ Z_0 = I,\quad T_k = \tfrac12(3I - Z_k Y_k),\quad
        Y_{k+1} = Y_k T_k,\ Z_{k+1} = T_k Z_k.
    """
    trace = np.trace(cov)
    sigma_n = cov / trace                       # Sigma_N = Sigma / tr(Sigma)
    eye = np.eye(cov.shape[0])
    if coupled:
        y, z = sigma_n, eye                     # Y_0 = Sigma_N, Z_0 = I
        for _ in range(iterations):
            t = 0.5 * (3.0 * eye - z @ y)       # T_k = (3I - Z_k Y_k) / 2
            y, z = y @ t, t @ z                 # Y_{k+1} = Y_k T_k, Z_{k+1} = T_k Z_k
        return z / np.sqrt(trace)               # Sigma^{-1/2} = Z_T / sqrt(tr Sigma)
    p = eye                                     # P_0 = I
    for _ in range(iterations):
        p = 0.5 * (3.0 * p - p @ p @ p @ sigma_n)   # P_{k+1} = (3 P_k - P_k^3 Sigma_N) / 2
    return p / np.sqrt(trace)                   # Sigma^{-1/2} = P_T / sqrt(tr Sigma)


def newton_schulz_residual(eigenvalues: np.ndarray, iterations: int) -> float:
    """``max |lambda p_T(lambda)^2 - 1|``: how far Newton-Schulz whitening is from the identity.

    The iteration acts on each eigenvalue separately (every ``P_k`` is a
    polynomial in ``Sigma``), so the output covariance's eigenvalues are
    ``lambda_N p_T(lambda_N)^2`` with the scalar recurrence
    ``p <- (3p - p^3 lambda_N) / 2``.
    """
    lam = np.asarray(eigenvalues, np.float64)
    lam_n = lam / lam.sum()
    p = np.ones_like(lam_n)
    for _ in range(iterations):
        p = 0.5 * (3.0 * p - p ** 3 * lam_n)
    return float(np.max(np.abs(lam_n * p ** 2 - 1.0)))


def whiten(x: np.ndarray, method: str = "zca", eps: float = 1e-5,
           iterations: Optional[int] = None) -> WhiteningResult:
    """Whiten the rows of ``x`` of shape ``(m, d)``: zero mean and covariance ``I``, in float64."""
    x = np.asarray(x, dtype=np.float64)
    errors.check_whitening(x.shape, training=True, method=method, eps=eps, iterations=iterations)
    mean, cov = covariance(x)
    w = whitening_matrix(cov, method, eps, iterations)
    # y = (x - mu) W^T
    return WhiteningResult((x - mean) @ w.T, mean, cov, w)
