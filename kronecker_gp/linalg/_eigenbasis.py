r"""Pure functions: exact GP log marginal likelihood on a complete grid.

Everything is computed in the Kronecker eigenbasis of the factor Gram matrices:
with :math:`K_d = U_d W_d U_d^T`, :math:`U = \bigotimes_d U_d` and
:math:`\lambda = \bigotimes_d w_d`, the rotated data :math:`\tilde y = U^T y`
gives :math:`(K + sI)^{-1} y = U \tilde a`, :math:`\tilde a = \tilde y /
(\lambda + s)`.

References
----------
.. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, sec. 5.2.
.. [2] Rasmussen, C. E. and Williams, C. K. I. (2006). Gaussian Processes for
   Machine Learning. MIT Press, eq. 5.8-5.9.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import kron_eigh, kron_matvec, kron_outer

_LOG_2PI = _budgets.LOG_2PI


@dataclass(frozen=True)
class GridPosterior:
    """Factor eigenpairs, noise and the rotated weights of a grid GP.

    Attributes
    ----------
    eigvals : list of ndarray of shape (n_d,)
        Per-factor eigenvalues (clipped at zero).
    eigvecs : list of ndarray of shape (n_d, n_d)
        Per-factor eigenvectors.
    noise : float
        The noise variance ``s``.
    inv_lam : ndarray of shape (N,)
        ``1 / (kron(eigvals) + s)``, the inverse spectrum of ``K + sI``.
    alpha_rot : ndarray of shape (N,) or (N, n_targets)
        ``U^T (K + sI)^{-1} y``, the weights in the eigenbasis (one column per
        target when ``y`` has several).
    """

    eigvals: list[FloatArray]
    eigvecs: list[FloatArray]
    noise: float
    inv_lam: FloatArray
    alpha_rot: FloatArray

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid shape."""
        return tuple(int(w.size) for w in self.eigvals)

    @property
    def n_targets(self) -> int:
        """Number of target columns sharing this factorisation (1 for a vector)."""
        return 1 if self.alpha_rot.ndim == 1 else int(self.alpha_rot.shape[1])

    def alpha(self) -> FloatArray:
        """Return ``(K + sI)^{-1} y`` in the original basis (flat, C order)."""
        return kron_matvec(self.eigvecs, self.alpha_rot)

    def solve(self, b: FloatArray) -> FloatArray:
        """Return ``(K + sI)^{-1} b`` for a flat grid vector or columns."""
        rot = kron_matvec([u.T for u in self.eigvecs], b)
        rot = rot * (self.inv_lam if rot.ndim == 1 else self.inv_lam[:, None])
        return kron_matvec(self.eigvecs, rot)


def factorize(
    grams: Sequence[FloatArray], noise: float, y: FloatArray
) -> tuple[GridPosterior, float]:
    r"""Eigendecompose the factors and return the posterior weights and the LML.

    Parameters
    ----------
    grams : sequence of ndarray of shape (n_d, n_d)
        Factor Gram matrices.
    noise : float
        Noise variance ``s > 0``.
    y : ndarray of shape (N,) or (N, n_targets)
        Targets, flat in C order; columns are independent targets sharing the
        covariance (scikit-learn's multi-output convention).

    Returns
    -------
    post : GridPosterior
        The factorisation.
    lml : float
        :math:`-\tfrac12 y^T (K+sI)^{-1} y - \tfrac12 \log|K+sI|
        - \tfrac N2 \log 2\pi`, summed over the targets.

    Notes
    -----
    Cost :math:`O(\sum_d n_d^3 + T N \sum_d n_d)` for ``T`` targets: the
    eigendecompositions are shared, the rotations are one batched product.
    """
    post = grid_eigen(grams, noise)
    y_rot = kron_matvec([u.T for u in post.eigvecs], y)
    inv_lam = post.inv_lam if y_rot.ndim == 1 else post.inv_lam[:, None]
    alpha_rot = y_rot * inv_lam
    n_targets = 1 if y_rot.ndim == 1 else y_rot.shape[1]
    lml = -0.5 * float(np.vdot(y_rot, alpha_rot))
    lml += 0.5 * n_targets * float(np.sum(np.log(post.inv_lam)))
    lml -= 0.5 * y.size * _LOG_2PI
    return replace(post, alpha_rot=alpha_rot), lml


def grid_eigen(grams: Sequence[FloatArray], noise: float) -> GridPosterior:
    """Eigendecompose the factors; the returned weights are zero (no data yet)."""
    ws, us = kron_eigh(grams)
    inv_lam = 1.0 / (kron_outer(ws) + noise)
    return GridPosterior(ws, us, float(noise), inv_lam, np.zeros_like(inv_lam))


def _weights_except(eigvals: Sequence[FloatArray], d: int) -> FloatArray:
    """Outer product of all factors' eigenvalues but ``d`` (ones on axis d)."""
    shape = [w.size for w in eigvals]
    out = np.ones([1 if e == d else n for e, n in enumerate(shape)])
    for e, w in enumerate(eigvals):
        if e != d:
            out = out * w.reshape([-1 if k == e else 1 for k in range(len(shape))])
    return out


def mode_gram(
    a: FloatArray, b: FloatArray, eigvals: Sequence[FloatArray], d: int
) -> FloatArray:
    r"""Return :math:`\sum_k A_{k(d)} \operatorname{diag}(W_{-d}) B_{k(d)}^T`.

    Parameters
    ----------
    a, b : ndarray of shape (N,) or (N, k)
        Rotated grid vectors (columns ``k`` are summed over).
    eigvals : sequence of ndarray
        Per-factor eigenvalues (``W_{-d}`` is the outer product of all but d).
    d : int
        The mode.

    Returns
    -------
    ndarray of shape (n_d, n_d)
        The weighted mode-``d`` cross Gram; one GEMM of :math:`O(N k n_d)`.
    """
    shape = [w.size for w in eigvals]
    w_rest = _weights_except(eigvals, d)
    k = 1 if a.ndim == 1 else a.shape[1]
    w_rest = w_rest.reshape(*w_rest.shape, 1)
    a_g = np.moveaxis(a.reshape(*shape, k), d, 0).reshape(shape[d], -1)
    b_g = np.moveaxis(b.reshape(*shape, k) * w_rest, d, 0).reshape(shape[d], -1)
    return np.asarray(a_g @ b_g.T)


@dataclass(frozen=True)
class TraceCorrection:
    r"""A low-rank term added to the gradient's trace (used for missing cells).

    The term is :math:`c \sum_k \tilde a_k^T (U^T \partial K U) \tilde b_k`.

    Attributes
    ----------
    a, b : ndarray of shape (N, k)
        Rotated vectors.
    scale : float
        The factor ``c`` (``1/n_probes`` for a Hutchinson estimate).
    """

    a: FloatArray
    b: FloatArray
    scale: float = 1.0


def factor_gradient_matrix(
    post: GridPosterior, d: int, correction: TraceCorrection | None = None
) -> FloatArray:
    r"""Return ``M_d`` with ``dLML/dtheta = sum(dK_d * M_d)`` for factor ``d``.

    Notes
    -----
    With :math:`A = \tilde a` and :math:`G = 1/(\lambda + s)` as grids and
    :math:`W_{-d}` the outer product of the other factors' eigenvalues,

    .. math::
        \frac{\partial L}{\partial \theta} = \tfrac12 \alpha^T \partial K
        \alpha - \tfrac12 \operatorname{tr}((K+sI)^{-1} \partial K)
        = \sum_{ij} (\partial K_d)_{ij} (M_d)_{ij},

    :math:`M_d = \tfrac12 U_d (C_d - \operatorname{diag}(h_d)) U_d^T`,
    :math:`C_d = A_{(d)} \operatorname{diag}(W_{-d}) A_{(d)}^T` (the mode-d
    weighted Gram of :math:`A`) and :math:`h_d = \sum_{-d} G W_{-d}`.
    A :class:`TraceCorrection` adds its symmetrised mode Gram to :math:`C_d`.
    With ``T`` target columns the first term sums over them and ``h_d`` is
    multiplied by ``T``.
    Without a correction both terms are Gram matrices (:math:`W_{-d} \ge 0`,
    :math:`h_d \ge 0`), :math:`M_d = \tfrac12 (B B^T - V V^T)` with
    :math:`B = U_d (A \sqrt{W_{-d}})_{(d)}` and :math:`V = U_d
    \operatorname{diag}(\sqrt{h_d})`: one :math:`N n_d` GEMM and one
    :math:`n_d^3` GEMM plus two SYRKs. Where :math:`A_{(d)}` has more than
    :math:`2 n_d` columns (several targets, or a short axis) the mode Gram
    :math:`C_d` is formed first (one SYRK) and rotated by two :math:`n_d^3`
    GEMMs, which is cheaper. Each hyperparameter of the factor then costs
    :math:`O(n_d^2)`.
    """
    shape = post.shape
    others = tuple(e for e in range(len(shape)) if e != d)
    if correction is None:
        # W_{-d} >= 0 (clipped eigenvalues), h >= 0: both terms are Gram matrices
        w_rest = _weights_except(post.eigvals, d)
        a = post.alpha_rot.reshape(*shape, -1) * np.sqrt(w_rest)[..., None]
        a_d = np.moveaxis(a, d, 0).reshape(shape[d], -1)
        u = post.eigvecs[d]
        h = post.n_targets * np.sum(post.inv_lam.reshape(shape) * w_rest, axis=others)
        if a_d.shape[1] > 2 * shape[d]:
            # many columns (several targets, or a short axis): the mode Gram
            # first (one SYRK, n_d N T flops), then two n_d^3 GEMMs, instead
            # of rotating every column (3 n_d N T flops)
            inner = a_d @ a_d.T
            inner[np.diag_indices_from(inner)] -= h
            return 0.5 * (u @ inner @ u.T)
        b = u @ a_d
        v = u * np.sqrt(h)
        return 0.5 * (b @ b.T - v @ v.T)  # b @ b.T dispatches to SYRK
    inner = mode_gram(post.alpha_rot, post.alpha_rot, post.eigvals, d)
    h = np.sum(
        post.inv_lam.reshape(shape) * _weights_except(post.eigvals, d), axis=others
    )
    inner[np.diag_indices_from(inner)] -= post.n_targets * h
    if correction is not None:
        c = mode_gram(correction.a, correction.b, post.eigvals, d)
        inner += 0.5 * correction.scale * (c + c.T)
    u = post.eigvecs[d]
    return 0.5 * (u @ inner @ u.T)


def lml_gradient(
    post: GridPosterior,
    grad_grams: Sequence[FloatArray],
    *,
    noise_free: bool = True,
    correction: TraceCorrection | None = None,
) -> FloatArray:
    r"""Return the LML gradient w.r.t. every factor's log-hyperparameters and noise.

    Parameters
    ----------
    post : GridPosterior
        From :func:`factorize`.
    grad_grams : sequence of ndarray of shape (n_d, n_d, n_theta_d)
        Gradients of the factor Grams w.r.t. their log-hyperparameters.
    noise_free : bool, default=True
        Append the derivative w.r.t. ``log(noise)``.
    correction : TraceCorrection, optional
        Extra trace term (missing cells).

    Returns
    -------
    ndarray of shape (sum(n_theta_d) + noise_free,)
        The gradient, factors in order, then log-noise.

    Notes
    -----
    For the noise, :math:`\partial K / \partial \log s = sI`, so the entry is
    :math:`\tfrac s2 (\|\alpha\|^2 - \sum_i 1/(\lambda_i + s))`.
    """
    parts = []
    for d, dk in enumerate(grad_grams):
        if dk.shape[2] == 0:
            continue
        m = factor_gradient_matrix(post, d, correction)
        parts.append(np.einsum("ijp,ij->p", dk, m))
    if noise_free:
        s = post.noise
        a2 = float(np.vdot(post.alpha_rot, post.alpha_rot))
        trace = post.n_targets * float(np.sum(post.inv_lam))
        if correction is not None:
            trace -= correction.scale * float(np.sum(correction.a * correction.b))
        parts.append(np.array([0.5 * s * (a2 - trace)]))
    return np.concatenate(parts) if parts else np.zeros(0)
