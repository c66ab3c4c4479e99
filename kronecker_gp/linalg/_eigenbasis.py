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

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._array_api import device, like, namespace, to_numpy
from kronecker_gp._threads import map_chunks
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import (
    face_split_gram,
    face_split_matvec,
    kron_eigh,
    kron_matvec,
    kron_outer,
)

_LOG_2PI = _budgets.LOG_2PI


@dataclass(frozen=True)
class GridPosterior:
    """Factor eigenpairs, noise and the rotated weights of a grid GP.

    Attributes
    ----------
    All arrays live in one array namespace (NumPy, or the data's under
    scikit-learn's ``array_api_dispatch``, e.g. PyTorch on a GPU).

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
        return tuple(int(w.shape[0]) for w in self.eigvals)

    @property
    def xp(self) -> Any:
        """The array namespace of the factorisation."""
        return namespace(self.inv_lam)

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

    def rotate(self, b: FloatArray) -> FloatArray:
        """Return ``U^T b`` for a flat grid vector or columns."""
        return kron_matvec([u.T for u in self.eigvecs], b)


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

    The computation runs in the namespace of ``y`` (NumPy, or e.g. PyTorch
    on a GPU): the small ``grams`` are moved there first, and every
    grid-sized array stays there.

    Cost :math:`O(\sum_d n_d^3 + T N \sum_d n_d)` for ``T`` targets: the
    eigendecompositions are shared, the rotations are one batched product.
    """
    post = grid_eigen([like(g, y, dtype="float64") for g in grams], noise, y.dtype)
    y_rot = post.rotate(y)
    n_targets = 1 if y_rot.ndim == 1 else y_rot.shape[1]
    xp = post.xp
    if xp is np:  # one fused pass, threaded over row chunks
        alpha_rot, quad, log_sum = _weights_and_sums(y_rot, post.inv_lam)
    else:
        inv_lam = post.inv_lam if y_rot.ndim == 1 else post.inv_lam[:, None]
        alpha_rot = y_rot * inv_lam
        quad = _vdot(xp, y_rot, alpha_rot)
        log_sum = float(xp.sum(xp.log(post.inv_lam)))
    lml = -0.5 * quad + 0.5 * n_targets * log_sum
    lml -= 0.5 * int(np.prod(y.shape)) * _LOG_2PI
    return replace(post, alpha_rot=alpha_rot), lml


def _weights_and_sums(
    y_rot: FloatArray, inv_lam: FloatArray
) -> tuple[FloatArray, float, float]:
    """Return ``y_rot * inv_lam``, ``sum(y_rot * that)`` and ``sum(log(inv_lam))``.

    NumPy only: one pass over cache-sized row chunks (instead of four
    grid-sized passes and two temporaries), on the element-wise threads of
    :func:`kronecker_gp._threads.map_chunks`.
    """
    y2 = y_rot.reshape(inv_lam.shape[0], -1)
    out = np.empty_like(y2)

    def run(lo: int, hi: int) -> tuple[float, float]:
        a = np.multiply(y2[lo:hi], inv_lam[lo:hi, None], out=out[lo:hi])
        quad = float(np.einsum("ij,ij->", y2[lo:hi], a))  # no BLAS in a thread
        return quad, float(np.log(inv_lam[lo:hi]).sum())

    parts = map_chunks(run, y2.shape[0], y2.shape[1])
    return (
        out.reshape(y_rot.shape),
        math.fsum(p[0] for p in parts),
        math.fsum(p[1] for p in parts),
    )


def _inverse_spectrum(ws: Sequence[FloatArray], noise: float) -> FloatArray:
    """Return ``1 / (kron_outer(ws) + noise)`` in one threaded pass (NumPy)."""
    head = np.asarray(ws[0], dtype=np.float64)
    rest = kron_outer(ws[1:]) if len(ws) > 1 else np.ones(1)
    out = np.empty((head.size, rest.size))

    def run(lo: int, hi: int) -> None:
        block = np.multiply.outer(head[lo:hi], rest, out=out[lo:hi])
        block += noise
        np.reciprocal(block, out=block)

    map_chunks(run, head.size, rest.size)
    return out.reshape(-1)


def _sum(xp: Any, x: FloatArray) -> float:
    """Return ``sum(x)`` as a float (NumPy: threaded over chunks)."""
    if xp is not np:
        return float(xp.sum(x))
    flat = x.reshape(-1)
    parts = map_chunks(lambda lo, hi: float(flat[lo:hi].sum()), flat.size, 1)
    return math.fsum(parts)


def _vdot(xp: Any, a: FloatArray, b: FloatArray) -> float:
    """Return ``sum(a * b)`` over every entry, as a Python float."""
    if xp is np:
        return float(np.vdot(a, b))
    # one fused reduction, no grid-sized temporary
    return float(xp.vecdot(xp.reshape(a, (-1,)), xp.reshape(b, (-1,))))


def grid_eigen(
    grams: Sequence[FloatArray], noise: float, dtype: Any = None
) -> GridPosterior:
    """Eigendecompose the factors; the returned weights are zero (no data yet).

    The factors' namespace (NumPy, or the data's) is kept. With ``dtype``
    (float32 data in a non-NumPy namespace) the eigenpairs, computed in the
    grams' float64, are cast to it: only the grid-sized work runs in float32.
    """
    ws, us = kron_eigh(grams)
    xp = namespace(*ws)
    if dtype is not None and xp is not np and dtype != ws[0].dtype:
        ws = [xp.astype(w, dtype) for w in ws]
        us = [xp.astype(u, dtype) for u in us]
    if xp is np:
        inv_lam = _inverse_spectrum(ws, noise)
    else:
        inv_lam = 1.0 / (kron_outer(ws) + noise)
    return GridPosterior(ws, us, float(noise), inv_lam, xp.zeros_like(inv_lam))


def clip_variance(var: FloatArray) -> FloatArray:
    """Set tiny negative variances (round-off) to zero, warning as sklearn does."""
    xp = namespace(var)
    if bool(xp.any(var < 0)):
        warnings.warn(
            "Predicted variances smaller than 0; setting those variances to 0.",
            RuntimeWarning,
            stacklevel=3,
        )
        var = xp.where(var < 0, xp.zeros_like(var), var)
    return var


def grid_moments(
    post: GridPosterior, v: Sequence[FloatArray], prior_diag: FloatArray | None
) -> tuple[FloatArray, FloatArray | None]:
    r"""Posterior mean and variance on a test grid, by mode products.

    Parameters
    ----------
    post : GridPosterior
        The training factorisation.
    v : sequence of ndarray of shape (m_d, n_d)
        Rotated per-axis cross-covariances :math:`V_d = K_{*d} U_d`, in the
        factorisation's namespace.
    prior_diag : ndarray of shape (M,) or None
        Prior variances on the test grid (flat); None skips the variance.

    Returns
    -------
    mean : ndarray of shape (M,) or (M, n_targets)
        One column per target where ``post`` holds several.
    var : ndarray of shape (M,) or None
        Shared by every target; round-off below zero is clipped.

    Notes
    -----
    The mean is :math:`(\bigotimes V_d) \tilde a` and the variance
    reduction :math:`(\bigotimes V_d \circ V_d) (\lambda + s)^{-1}`: cost
    :math:`O(M \sum_d n_d)` after the :math:`O(\sum_d m_d n_d^2)` rotations.
    """
    mean = kron_matvec(v, post.alpha_rot)
    if prior_diag is None:
        return mean, None
    reduction = kron_matvec([x * x for x in v], post.inv_lam)
    return mean, clip_variance(prior_diag - reduction)


def point_moments(
    post: GridPosterior,
    v: Sequence[FloatArray],
    prior: FloatArray | None,
    *,
    full_cov: bool,
) -> tuple[FloatArray, FloatArray | None]:
    r"""Posterior mean and variance (or covariance) at scattered points.

    Parameters
    ----------
    post : GridPosterior
        The training factorisation.
    v : sequence of ndarray of shape (M, n_d)
        Rotated per-axis cross-covariances :math:`V_d = K_{*d} U_d`; row
        ``i`` of the point's rotated cross-covariance is
        ``kron(v_1[i], ..., v_D[i])``.
    prior : ndarray of shape (M,) or (M, M) or None
        Prior variances (or covariance if ``full_cov``).
    full_cov : bool
        Return the full posterior covariance.

    Returns
    -------
    mean : ndarray of shape (M,) or (M, n_targets)
    var_or_cov : ndarray of shape (M,) or (M, M), or None
        Shared by every target.

    Notes
    -----
    Cost :math:`O(M N)` for mean and variance, :math:`O(M^2 N)` for the
    covariance; never an :math:`N \times N` array.
    """
    xp = post.xp
    if post.alpha_rot.ndim == 1:
        mean = face_split_matvec(v, post.alpha_rot)
    else:  # several targets: one mean column each, the variance is shared
        cols = [
            face_split_matvec(v, post.alpha_rot[:, t]) for t in range(post.n_targets)
        ]
        mean = xp.stack(cols, axis=1)
    if prior is None:
        return mean, None
    if full_cov:
        cov = prior - face_split_gram(v, post.inv_lam)
        return mean, 0.5 * (cov + cov.T)
    reduction = face_split_matvec([x * x for x in v], post.inv_lam)
    return mean, clip_variance(prior - reduction)


def _weights_except(eigvals: Sequence[FloatArray], d: int) -> FloatArray:
    """Outer product of all factors' eigenvalues but ``d`` (ones on axis d)."""
    xp = namespace(*eigvals)
    shape = [int(w.shape[0]) for w in eigvals]
    out: Any = 1.0
    for e, w in enumerate(eigvals):
        if e != d:
            axes = tuple(-1 if k == e else 1 for k in range(len(shape)))
            out = out * xp.reshape(w, axes)
    if isinstance(out, float):  # one axis: nothing to multiply
        ones = xp.ones_like(eigvals[d])
        return xp.reshape(ones[:1], tuple(1 for _ in shape))
    return xp.reshape(out, tuple(1 if e == d else n for e, n in enumerate(shape)))


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
    xp = namespace(a, b)
    shape = tuple(int(w.shape[0]) for w in eigvals)
    w_rest = _weights_except(eigvals, d)
    k = 1 if a.ndim == 1 else int(a.shape[1])
    w_rest = xp.reshape(w_rest, (*w_rest.shape, 1))
    a_g = _unfold(xp, xp.reshape(a, (*shape, k)), d)
    b_g = _unfold(xp, xp.reshape(b, (*shape, k)) * w_rest, d)
    return a_g @ b_g.T


def _unfold(xp: Any, grid: FloatArray, d: int) -> FloatArray:
    """Return the mode-``d`` unfolding ``(n_d, rest)`` of a grid array."""
    return xp.reshape(xp.moveaxis(grid, d, 0), (int(grid.shape[d]), -1))


def _marginal(
    xp: Any, grid: FloatArray, eigvals: Sequence[FloatArray], d: int
) -> FloatArray:
    """Return ``sum(grid * W_{-d}, axis=others)``: one matrix-vector product per axis.

    Each other axis is contracted with its eigenvalues by a GEMV on a
    reshaped view (the BLAS's threads, no grid-sized temporary), the last
    axis first.
    """
    out = grid
    for e in reversed(range(len(eigvals))):
        if e == d:
            continue
        dims = tuple(int(n) for n in out.shape)
        pre, n, post = math.prod(dims[:e]), dims[e], math.prod(dims[e + 1 :])
        w = eigvals[e]
        if post == 1:
            red = xp.reshape(out, (pre, n)) @ w
        elif pre == 1:
            red = w @ xp.reshape(out, (n, post))
        else:
            red = xp.matmul(xp.reshape(w, (1, n)), xp.reshape(out, (pre, n, post)))
        out = xp.reshape(red, dims[:e] + dims[e + 1 :])
    return out


def _scaled(xp: Any, grid: FloatArray, scale: FloatArray) -> FloatArray:
    """Return ``grid * scale[..., None]`` (NumPy: threaded over axis-0 chunks)."""
    if xp is not np:
        return grid * scale[..., None]
    out = np.empty(grid.shape)
    factor = scale[..., None]
    per_row = factor.shape[0] > 1

    def run(lo: int, hi: int) -> None:
        np.multiply(grid[lo:hi], factor[lo:hi] if per_row else factor, out=out[lo:hi])

    map_chunks(run, int(grid.shape[0]), math.prod(grid.shape[1:]))
    return out


def _minus_diagonal(xp: Any, inner: FloatArray, h: FloatArray) -> FloatArray:
    """Return ``inner - diag(h)`` (in place for NumPy)."""
    if xp is np:
        inner[np.diag_indices_from(inner)] -= h
        return inner
    n = int(inner.shape[0])
    return inner - xp.eye(n, dtype=inner.dtype, device=device(inner)) * h[:, None]


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
    xp = post.xp
    shape = post.shape
    inv_lam = xp.reshape(post.inv_lam, shape)
    if correction is None:
        # W_{-d} >= 0 (clipped eigenvalues), h >= 0: both terms are Gram matrices
        w_rest = _weights_except(post.eigvals, d)
        a = _scaled(xp, xp.reshape(post.alpha_rot, (*shape, -1)), xp.sqrt(w_rest))
        a_d = _unfold(xp, a, d)
        u = post.eigvecs[d]
        h = post.n_targets * _marginal(xp, inv_lam, post.eigvals, d)
        if a_d.shape[1] > 2 * shape[d]:
            # many columns (several targets, or a short axis): the mode Gram
            # first (one SYRK, n_d N T flops), then two n_d^3 GEMMs, instead
            # of rotating every column (3 n_d N T flops)
            inner = _minus_diagonal(xp, a_d @ a_d.T, h)
            return 0.5 * (u @ inner @ u.T)
        b = u @ a_d
        v = u * xp.sqrt(h)
        return 0.5 * (b @ b.T - v @ v.T)  # b @ b.T dispatches to SYRK
    inner = mode_gram(post.alpha_rot, post.alpha_rot, post.eigvals, d)
    h = _marginal(xp, inv_lam, post.eigvals, d)
    inner = _minus_diagonal(xp, inner, post.n_targets * h)
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
    xp = post.xp
    parts = []
    for d, dk in enumerate(grad_grams):
        if dk.shape[2] == 0:
            continue
        # M_d is n_d x n_d: on the host, with the kernels' NumPy gradients
        m = to_numpy(factor_gradient_matrix(post, d, correction))
        parts.append(np.einsum("ijp,ij->p", dk, m))
    if noise_free:
        s = post.noise
        a2 = _vdot(xp, post.alpha_rot, post.alpha_rot)
        trace = post.n_targets * _sum(xp, post.inv_lam)
        if correction is not None:
            trace -= correction.scale * float(xp.sum(correction.a * correction.b))
        parts.append(np.array([0.5 * s * (a2 - trace)]))
    return np.concatenate(parts) if parts else np.zeros(0)
