r"""Pure functions: a complete-grid GP with known per-cell noise variances.

The covariance is :math:`A = K + D` with :math:`K = \bigotimes_d K_d` and
:math:`D = \operatorname{diag}(d)` (heteroscedastic, e.g. instrument error
bars). ``A`` has no Kronecker eigenbasis, so it is solved by conjugate
gradients preconditioned with :math:`M = K + \bar s I`, inverted exactly in
the factors' eigenbasis, :math:`\bar s` the geometric mean of ``d``. Because
:math:`K \succeq 0`, the eigenvalues of :math:`M^{-1/2} A M^{-1/2}` lie in
:math:`[\min(1, d_{min}/\bar s), \max(1, d_{max}/\bar s)]`: the iteration count
depends on the spread of the noise, not on the kernel's conditioning.

The log determinant is :math:`\log|M| + \log|B|`, :math:`B = M^{-1/2} A
M^{-1/2}`; the first term is exact, the second is estimated by stochastic
Lanczos quadrature of :math:`f(x) = \log x - x + 1` plus the exact
:math:`\operatorname{tr}(B - I) = \sum_i (d_i - \bar s) P_{ii}`,
:math:`P = M^{-1}`. The same Lanczos runs give :math:`B^{-1} z`, hence the
Hutchinson estimate of the gradient's trace correction
:math:`\operatorname{tr}((A^{-1} - P)\,\partial A)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.linalg._eigenbasis import (
    GridPosterior,
    TraceCorrection,
    grid_eigen,
    lml_gradient,
)
from kronecker_gp.linalg._identities import face_split_rows
from kronecker_gp.linalg._krylov import CGRecorder, lanczos_logdet_solve
from kronecker_gp.solvers._eigen_missing import n_test_points, test_rows
from kronecker_gp.solvers._protocol import SolverInfo

_LOG_2PI = _budgets.LOG_2PI
EXACT_VARIANCE_FACTOR = _budgets.EXACT_VARIANCE_FACTOR
VARIANCE_PROBES = _budgets.VARIANCE_PROBES


class CellNoiseSystem(CGRecorder):
    """``A = K + diag(d)`` on a complete grid, with its preconditioner.

    Parameters
    ----------
    grams : sequence of ndarray
        Factor Gram matrices.
    d : ndarray of shape (N,)
        Positive per-cell noise variances (C order).
    tol, max_iter : float, int
        CG settings.
    """

    def __init__(
        self, grams: Sequence[FloatArray], d: FloatArray, *, tol: float, max_iter: int
    ) -> None:
        self.d = np.asarray(d, dtype=np.float64)
        self.s_bar = float(np.exp(np.mean(np.log(self.d))))
        # the preconditioner M = K + s_bar I in the factor eigenbasis
        self.post = grid_eigen(grams, self.s_bar)
        self.lam_k = 1.0 / self.post.inv_lam - self.s_bar
        self.tol, self.max_iter = tol, max_iter
        self.iterations, self.residual = 0, 0.0

    def rot(self, x: FloatArray) -> FloatArray:
        """Return ``U^T x``."""
        return kron_matvec([u.T for u in self.post.eigvecs], x)

    def unrot(self, x: FloatArray) -> FloatArray:
        """Return ``U x``."""
        return kron_matvec(self.post.eigvecs, x)

    def matvec(self, x: FloatArray) -> FloatArray:
        """Return ``(K + D) x`` for ``x`` of shape (N, k)."""
        return self.unrot(self.lam_k[:, None] * self.rot(x)) + self.d[:, None] * x

    def precond(self, r: FloatArray) -> FloatArray:
        """Return ``M^{-1} r``."""
        return self.unrot(self.post.inv_lam[:, None] * self.rot(r))

    def solve(self, b: FloatArray) -> FloatArray:
        """Return ``A^{-1} b`` by preconditioned CG (``b`` of shape (N, k))."""
        return self._run_cg(self.matvec, b, self.precond, "per-cell-noise")

    def _half(self, x: FloatArray) -> FloatArray:
        """Return ``M^{-1/2} x``."""
        return self.unrot(np.sqrt(self.post.inv_lam)[:, None] * self.rot(x))

    def p_diag(self) -> FloatArray:
        """Return the diagonal of ``P = M^{-1}`` (exact, mode products)."""
        return kron_matvec([u * u for u in self.post.eigvecs], self.post.inv_lam)


def cell_noise_factorize(
    grams: Sequence[FloatArray],
    d: FloatArray,
    y: FloatArray,
    *,
    grad_grams: Sequence[FloatArray] | None,
    noise_free: bool,
    need_lml: bool,
    tol: float,
    max_iter: int,
    n_probes: int,
    rng: np.random.Generator,
) -> tuple[GridPosterior, float, FloatArray | None, CellNoiseSystem, SolverInfo]:
    """Weights, estimated LML and gradient for per-cell noise ``d``.

    Returns
    -------
    post : GridPosterior
        Preconditioner eigenpairs (``inv_lam = 1/(lambda + s_bar)``) and
        ``alpha_rot = U^T A^{-1} y``.
    lml : float
        Estimated log marginal likelihood (NaN unless needed).
    grad : ndarray or None
        Gradient w.r.t. the factors' log-hyperparameters and, if
        ``noise_free``, the log of the noise scale (``d = scale * v``).
    system : CellNoiseSystem
        For predictive variances.
    info : SolverInfo
        Iterations, residual, the LML's standard error.
    """
    system = CellNoiseSystem(grams, d, tol=tol, max_iter=max_iter)
    alpha = system.solve(y[:, None])[:, 0]
    post = GridPosterior(
        system.post.eigvals,
        system.post.eigvecs,
        system.s_bar,
        system.post.inv_lam,
        system.rot(alpha),
    )
    info = SolverInfo(path="cell-noise-cg", n_missing=0)
    lml, grad = np.nan, None
    if need_lml or grad_grams is not None:
        probes = rng.choice([-1.0, 1.0], size=(y.size, n_probes))

        def b_matvec(v: FloatArray) -> FloatArray:
            return system._half(system.matvec(system._half(v)))

        tr_f, std, solves, steps = lanczos_logdet_solve(b_matvec, probes)
        p_diag = system.p_diag()
        tr_b = float(np.sum((d - system.s_bar) * p_diag))
        logdet = -float(np.sum(np.log(system.post.inv_lam))) + tr_f + tr_b
        lml = -0.5 * float(y @ alpha) - 0.5 * logdet - 0.5 * y.size * _LOG_2PI
        info.lml_std_error, info.extra["lanczos_steps"] = 0.5 * std, steps
        if grad_grams is not None:
            # tr((A^-1 - P) X) = E[z^T (B^-1 - I) M^-1/2 X M^-1/2 z]
            a_vec = system._half(solves - probes)
            b_vec = system._half(probes)
            corr = TraceCorrection(
                system.rot(a_vec), system.rot(b_vec), -1.0 / n_probes
            )
            grad = lml_gradient(post, grad_grams, noise_free=False, correction=corr)
            if noise_free:
                trace = float(np.sum(d * p_diag)) + float(
                    np.sum(d[:, None] * a_vec * b_vec) / n_probes
                )
                grad = np.append(grad, 0.5 * float(np.sum(d * alpha**2)) - 0.5 * trace)
    info.iterations, info.residual = system.iterations, system.residual
    return post, lml, grad, system, info


def cell_noise_variance_correction(  # noqa: PLR0913 - the estimate's settings
    system: CellNoiseSystem,
    v: list[FloatArray],
    *,
    grid: bool,
    n_samples: int | None = None,
    rng: np.random.Generator | None = None,
    base: FloatArray | None = None,
) -> FloatArray:
    r"""Return :math:`k_i^T (P - A^{-1}) k_i` for test points: exact or estimated.

    The posterior variance is the preconditioner's complete-grid variance
    :math:`k_{**} - k^T P k` (``base``) plus this term. Exactly, each test
    point costs one preconditioned CG solve (in chunks); that is taken while
    the points are at most ``EXACT_VARIANCE_FACTOR`` times the estimate's
    probes ``S = max(n_samples, VARIANCE_PROBES)`` (always when ``n_samples``
    is None). Beyond, the diagonal of :math:`C = K_{*x} (P - A^{-1}) K_{x*}`
    is estimated from ``S`` Rademacher probes over the test points,
    :math:`\hat c_i = S^{-1} \sum_s z_{is} (C z_s)_i` (unbiased; one batched
    CG run and mode products), with standard error
    :math:`(\sum_{j \ne i} C_{ij}^2 / S)^{1/2}`, itself estimated from the
    probes; the ``S`` points whose estimated error is largest relative to
    their variance (``base`` + correction) are then computed exactly. Only
    the correction to the exact preconditioner's variance is estimated: at
    60 x 80 with a 4x noise spread the variance was within 1.8 % (median) of
    the exact one (see ``_budgets.VARIANCE_PROBES``).
    """
    m_pts = n_test_points(v, grid)
    s = None if n_samples is None else max(n_samples, VARIANCE_PROBES)
    if s is None or m_pts <= EXACT_VARIANCE_FACTOR * s:
        return _exact_correction(system, v, grid, np.arange(m_pts))
    gen = np.random.default_rng(0) if rng is None else rng
    z = gen.choice([-1.0, 1.0], size=(m_pts, s))
    w_rot = _cross_transpose(v, grid, z)  # U^T K_{x*} z, (N, S)
    h_rot = system.post.inv_lam[:, None] * w_rot - system.rot(
        system.solve(system.unrot(w_rot))
    )
    terms = z * _cross(v, grid, h_rot)  # z_is (C z_s)_i, (M, S)
    out = np.asarray(np.mean(terms, axis=1))
    error = np.std(terms, axis=1, ddof=1) / np.sqrt(s)
    scale = np.abs(out) if base is None else np.abs(base + out)
    worst = np.sort(np.argsort(-error / np.maximum(scale, np.finfo(float).tiny))[:s])
    out[worst] = _exact_correction(system, v, grid, worst)
    return out


def _exact_correction(
    system: CellNoiseSystem, v: list[FloatArray], grid: bool, points: IntArray
) -> FloatArray:
    """Return the correction at the listed test points, one CG solve each."""
    n = int(np.prod([x.shape[1] for x in v]))
    step = max(1, 2**22 // n)
    out = np.empty(points.size)
    for lo in range(0, points.size, step):
        idx = points[lo : lo + step]
        k_rot = _rows_at(v, grid, idx).T  # U^T k_i as columns
        p_k = system.post.inv_lam[:, None] * k_rot
        a_inv_k = system.rot(system.solve(system.unrot(k_rot)))
        out[lo : lo + idx.size] = np.sum(k_rot * (p_k - a_inv_k), axis=0)
    return out


def _rows_at(v: list[FloatArray], grid: bool, idx: IntArray) -> FloatArray:
    """Explicit rows ``U^T k_i`` for the test points ``idx``."""
    if not grid:
        return face_split_rows([x[idx] for x in v])
    shape = tuple(x.shape[0] for x in v)
    sub = np.unravel_index(idx, shape)
    return face_split_rows([x[i] for x, i in zip(v, sub)])


def _cross_transpose(v: list[FloatArray], grid: bool, z: FloatArray) -> FloatArray:
    """Return ``sum_i z_i U^T k_i`` for every column of ``z`` (mode products)."""
    if grid:
        return kron_matvec([x.T for x in v], z)
    n = int(np.prod([x.shape[1] for x in v]))
    out = np.zeros((n, z.shape[1]))
    step = max(1, 2**22 // n)
    for lo in range(0, z.shape[0], step):
        sl = slice(lo, min(z.shape[0], lo + step))
        out += test_rows(v, False, sl).T @ z[sl]
    return out


def _cross(v: list[FloatArray], grid: bool, h_rot: FloatArray) -> FloatArray:
    """Return ``(U^T k_i)^T h`` for every test point and column of ``h_rot``."""
    if grid:
        return kron_matvec(v, h_rot)
    m_pts = v[0].shape[0]
    n = h_rot.shape[0]
    out = np.empty((m_pts, h_rot.shape[1]))
    step = max(1, 2**22 // n)
    for lo in range(0, m_pts, step):
        sl = slice(lo, min(m_pts, lo + step))
        out[sl] = test_rows(v, False, sl) @ h_rot
    return out


def cell_noise_covariance_correction(
    system: CellNoiseSystem, v: list[FloatArray]
) -> FloatArray:
    r"""Return :math:`K_{x*}^T (P - A^{-1}) K_{x*}` for a few scattered points."""
    k_rot = test_rows(v, False, slice(0, v[0].shape[0])).T
    a_inv_k = system.rot(system.solve(system.unrot(k_rot)))
    return np.asarray(k_rot.T @ (system.post.inv_lam[:, None] * k_rot - a_inv_k))
