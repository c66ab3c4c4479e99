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
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.linalg._eigenbasis import (
    GridPosterior,
    TraceCorrection,
    grid_eigen,
    lml_gradient,
)
from kronecker_gp.linalg._krylov import CGRecorder, lanczos_logdet_solve
from kronecker_gp.solvers._eigen_missing import n_test_points, test_rows
from kronecker_gp.solvers._protocol import SolverInfo

_LOG_2PI = _budgets.LOG_2PI


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


def cell_noise_variance_correction(
    system: CellNoiseSystem, v: list[FloatArray], *, grid: bool
) -> FloatArray:
    r"""Return :math:`k_i^T (P - A^{-1}) k_i` for test points (exact, by CG).

    The posterior variance is the preconditioner's complete-grid variance
    :math:`k_{**} - k^T P k` plus this term. Test points are processed in
    chunks; each costs one preconditioned CG solve.
    """
    m_pts = n_test_points(v, grid)
    n = int(np.prod([x.shape[1] for x in v]))
    step = max(1, 2**22 // n)
    out = np.empty(m_pts)
    for lo in range(0, m_pts, step):
        sl = slice(lo, min(m_pts, lo + step))
        k_rot = test_rows(v, grid, sl).T  # U^T k_i as columns
        k = system.unrot(k_rot)
        p_k = system.post.inv_lam[:, None] * k_rot
        a_inv_k = system.rot(system.solve(k))
        out[sl] = np.sum(k_rot * (p_k - a_inv_k), axis=0)
    return out


def cell_noise_covariance_correction(
    system: CellNoiseSystem, v: list[FloatArray]
) -> FloatArray:
    r"""Return :math:`K_{x*}^T (P - A^{-1}) K_{x*}` for a few scattered points."""
    k_rot = test_rows(v, False, slice(0, v[0].shape[0])).T
    a_inv_k = system.rot(system.solve(system.unrot(k_rot)))
    return np.asarray(k_rot.T @ (system.post.inv_lam[:, None] * k_rot - a_inv_k))
