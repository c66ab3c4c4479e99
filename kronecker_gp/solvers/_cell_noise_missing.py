r"""Pure functions: known per-cell noise on a grid with missing cells.

The observed cells ``o`` (the missing ones ``m`` carry no data) have covariance
:math:`A_{oo} = K_{oo} + D_{oo}`, :math:`D = \operatorname{diag}(d)` the known
per-cell noise variances. It has neither a Kronecker eigenbasis (``D`` is not a
multiple of ``I``) nor the complete-grid structure that
:mod:`~kronecker_gp.solvers._cell_noise` preconditions with, so it is solved by
conjugate gradients **on the observed cells** preconditioned with
:math:`M_{oo} = (K + \bar s I)_{oo}`, :math:`\bar s` the geometric mean of the
observed ``d``. :math:`M_{oo}^{-1}` is applied exactly through the
missing-cell Schur complement of :mod:`~kronecker_gp.solvers._eigen_missing`,

.. math::
    E_o M_{oo}^{-1} E_o^T = Z = P - P E_m P_{mm}^{-1} E_m^T P,
    \qquad P = (K + \bar s I)^{-1},

(``P`` by the factor eigendecompositions, :math:`P_{mm}` by Cholesky or by
Jacobi-CG to ``INNER_TOL``, see ``solver``). Because
:math:`A_{oo} - M_{oo} = D_{oo} - \bar s I` is diagonal and :math:`K_{oo}
\succeq 0`, the eigenvalues of :math:`M_{oo}^{-1} A_{oo}` lie in
:math:`[\min(1, d_{min}/\bar s), \max(1, d_{max}/\bar s)]`: the outer iteration
count depends only on the spread of the noise, as on the complete grid, and
not on the missing pattern or the kernel's conditioning (the Schur solve
inside absorbs those).

Why not pad the missing cells with a noise value and solve on the complete
grid: the posterior is then exact only in the limit of infinite padding noise,
where the preconditioner bound above blows up. Why not precondition with
:math:`P_{oo}` alone (no inner solve): on a 60 x 80 grid with 30 % missing it
needs ten times more iterations (494 vs 48) than the Schur preconditioner.

With :math:`G = E_o^T Z (K + \bar s I)^{1/2}` (so :math:`G G^T = M_{oo}^{-1}`)
and :math:`W = D_{oo} - \bar s I`,

.. math::
    \log|A_{oo}| = \log|M_{oo}| + \log|\hat C|, \qquad
    \hat C = I_N + G^T W G, \qquad A_{oo}^{-1} = G \hat C^{-1} G^T.

:math:`\log|M_{oo}| = \log|K + \bar s I| + \log|P_{mm}|` comes from the
missing-cell path (exact, or stochastic Lanczos quadrature); :math:`\log|\hat
C|` is estimated by stochastic Lanczos quadrature of :math:`f(x) = \log x - x +
1` plus :math:`\operatorname{tr}(\hat C - I) = \operatorname{tr}(W
M_{oo}^{-1})` (exact on the exact Schur path, a Hutchinson estimate on the CG
path). The same Lanczos runs give :math:`\hat C^{-1} z`, hence the gradient's
trace :math:`\operatorname{tr}(A_{oo}^{-1} X) = \operatorname{tr}(M_{oo}^{-1}
X) + E[(G(\hat C^{-1} z - z))^T X\, G z]`. ``solver_info_.lml_std_error``
bounds the estimator's standard error (its parts added conservatively).

Predictions reuse the complete-grid formulas with the weights
:math:`\alpha = E_o A_{oo}^{-1} y_o`; the predictive variance adds
:math:`k^T P k - k_o^T A_{oo}^{-1} k_o`, exact (one nested CG solve per test
point) for few test points and otherwise the missing-cell correction plus an
unbiased Monte Carlo estimate of :math:`k^T M_{oo}^{-1} W A_{oo}^{-1} k`.

Cost: every outer iteration applies :math:`P_{mm}^{-1}` once, i.e. a Cholesky
solve (exact Schur path) or about 5-10 inner Jacobi-CG iterations of two grid
rotations each; memory is :math:`O(N k)` for ``k`` probe vectors (times the
Lanczos steps), plus the ``m x N`` arrays of the exact Schur path.

References
----------
.. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, sec. 5.3.
.. [2] Ubaru, S., Chen, J. and Saad, Y. (2017). Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature. SIAM J. Matrix Anal. Appl. 38(4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import face_split_matvec, kron_matvec
from kronecker_gp.linalg._eigenbasis import (
    GridPosterior,
    TraceCorrection,
    grid_eigen,
    lml_gradient,
)
from kronecker_gp.linalg._krylov import lanczos_logdet_solve
from kronecker_gp.solvers._cell_noise import (
    CellNoiseSystem,
    cell_noise_variance_correction,
)
from kronecker_gp.solvers._eigen_missing import (
    SchurSystem,
    missing_factorize,
    n_test_points,
    variance_correction,
)
from kronecker_gp.solvers._protocol import SolverInfo

_LOG_2PI = _budgets.LOG_2PI

#: Relative residual of the inner P_mm solves (Schur CG path only). The outer
#: CG tolerates this inexact preconditioner: on a 60 x 80 grid with 30 %
#: missing it converges to 1e-10 in the same 48 iterations for any inner
#: tolerance from 1e-12 to 1e-3, and on 200 x 250 in 47 from 1e-8 to 1e-4
#: (the outer residual is recomputed, so a stall would warn); 1e-6 keeps a
#: margin at 3/4 of the 1e-8 cost.
INNER_TOL = 1e-6
#: Inner tolerance inside the Lanczos runs: they stop at a 1e-6 residual and
#: feed estimates whose sampling error is far larger; on the same grid the LML
#: estimate changes by 3e-9 relative between 1e-8 and 1e-4, at half the cost.
LANCZOS_INNER_TOL = 1e-4
#: Residual at which the Lanczos solves stop (they only feed Hutchinson
#: estimates): on 100 x 125 with 30 % missing, 20 steps instead of 30 at 1e-6,
#: changing the LML by 4e-7 and the gradient by 1e-3 (standard errors ~1).
LANCZOS_TOL = 1e-4
#: Predictive variances are exact (one nested CG solve per test point) while
#: test points x (flops of one grid rotation) stays below this or the test
#: points are no more than the samples; above it the observed-cell part of the
#: correction is sampled (:func:`observed_variance_correction_mc`, whose cost
#: is that of ``n_samples`` exact points). On a 40 x 60 grid the exact
#: variance costs about 15 ms per test point.
EXACT_VARIANCE_WORK = 2**26
#: Columns unrotated at once when summing diagonals of low-rank terms.
_CHUNK = 256


class ObservedCellNoiseSystem(CellNoiseSystem):
    """``A_oo = K_oo + D_oo`` on the observed cells, with its preconditioner.

    Vectors are full-grid (C order) and vanish on the missing cells; the
    interface is that of :class:`CellNoiseSystem` (``rot``, ``unrot``,
    ``matvec``, ``precond``, ``solve``, ``post``), so the predictive-variance
    helpers of the complete-grid path apply unchanged.

    Parameters
    ----------
    base : GridPosterior
        Eigenpairs of ``K + s_bar I`` on the full grid (weights ignored).
    d : ndarray of shape (N,)
        Noise variances, positive on the observed cells (ignored elsewhere).
    schur : SchurSystem
        The missing-cell system of ``base``.
    tol, max_iter : float, int
        Outer CG settings.
    """

    def __init__(
        self,
        base: GridPosterior,
        d: FloatArray,
        schur: SchurSystem,
        *,
        tol: float,
        max_iter: int,
    ) -> None:
        self.observed = np.ones(d.size, dtype=bool)
        self.observed[schur.missing] = False
        self.d = np.where(self.observed, d, 0.0)
        self.s_bar = float(base.noise)
        self.post = base
        self.lam_k = 1.0 / base.inv_lam - self.s_bar
        self.sqrt_lam = np.sqrt(1.0 / base.inv_lam)
        self.schur = schur
        self.tol, self.max_iter = tol, max_iter
        self.iterations, self.residual = 0, 0.0

    def matvec(self, x: FloatArray) -> FloatArray:
        """Return ``(K_oo + D_oo) x_o`` (zero-padded) for ``x`` of shape (N, k)."""
        x = self.observed[:, None] * x
        kx = self.unrot(self.lam_k[:, None] * self.rot(x))
        return self.observed[:, None] * kx + self.d[:, None] * x

    def precond(self, r: FloatArray) -> FloatArray:
        """Return ``M_oo^{-1} r_o`` (zero-padded) by the Schur complement."""
        z = self.unrot(self.schur.observed_solve_rot(self.rot(r)))
        return self.observed[:, None] * z

    def solve(self, b: FloatArray) -> FloatArray:
        """Return ``A_oo^{-1} b_o`` (zero-padded) by preconditioned CG."""
        b = self.observed[:, None] * b
        return self._run_cg(self.matvec, b, self.precond, "observed-cell noise")

    def g_rot(self, x: FloatArray) -> FloatArray:
        """Return ``U^T G x`` (zero on missing cells) for ``x`` of shape (N, k)."""
        return self.schur.observed_solve_rot(self.sqrt_lam[:, None] * self.rot(x))

    def c_hat(self, x: FloatArray) -> FloatArray:
        """Return ``(I + G^T W G) x`` for ``x`` of shape (N, k), ``W = D_oo - s_bar I``.

        ``G^T W G`` is nearly diagonal in the cell basis (where ``W`` is
        diagonal), not in the eigenbasis, so probes live in the cell basis.
        """
        w = np.where(self.observed, self.d - self.s_bar, 0.0)
        wgx = w[:, None] * self.unrot(self.g_rot(x))
        back = self.schur.observed_solve_rot(self.rot(wgx))
        return x + self.unrot(self.sqrt_lam[:, None] * back)


def cell_noise_missing_factorize(
    grams: Sequence[FloatArray],
    d: FloatArray,
    y: FloatArray,
    missing: IntArray,
    *,
    grad_grams: Sequence[FloatArray] | None,
    noise_free: bool,
    need_lml: bool,
    method: str,
    tol: float,
    max_iter: int,
    n_probes: int,
    rng: np.random.Generator,
) -> tuple[
    GridPosterior, float, FloatArray | None, ObservedCellNoiseSystem, SolverInfo
]:
    """Weights, estimated LML and gradient for per-cell noise with missing cells.

    Parameters
    ----------
    grams : sequence of ndarray
        Factor Gram matrices of the full grid.
    d : ndarray of shape (N,)
        Per-cell noise variances, positive on the observed cells.
    y : ndarray of shape (N,)
        Targets, zero on the missing cells.
    missing : ndarray of int
        Flat C-order indices of the missing cells (at least one).
    grad_grams : sequence of ndarray or None
        Factor Gram gradients, or None for no gradient.
    noise_free : bool
        Append the derivative w.r.t. the log noise scale (``d = scale * v``).
    need_lml : bool
        Estimate the LML (otherwise NaN unless a gradient is asked for).
    method : {"auto", "exact", "cg"}
        How :math:`P_{mm}` is solved (see :class:`SchurSystem`).
    tol, max_iter : float, int
        Outer CG settings.
    n_probes : int
        Probe vectors of each stochastic estimate.
    rng : numpy.random.Generator
        Source of the probes.

    Returns
    -------
    post : GridPosterior
        Eigenpairs of ``K + s_bar I`` and ``alpha_rot = U^T alpha``, ``alpha``
        equal to :math:`A_{oo}^{-1} y_o` on the observed cells and zero
        elsewhere.
    lml : float
        Estimated log marginal likelihood of the observed cells (or NaN).
    grad : ndarray or None
        Estimated gradient.
    system : ObservedCellNoiseSystem
        For predictive variances and samples.
    info : SolverInfo
        Path, outer and inner CG iterations, residual, LML standard error.
    """
    observed = np.ones(y.size, dtype=bool)
    observed[missing] = False
    s_bar = float(np.exp(np.mean(np.log(d[observed]))))
    base = grid_eigen(grams, s_bar)
    want = need_lml or grad_grams is not None
    inner = max(INNER_TOL, tol)
    m_res = None
    if want:
        m_res = missing_factorize(
            base,
            y,
            missing,
            method=method,
            tol=inner,
            max_iter=max_iter,
            n_probes=n_probes,
            rng=rng,
            eval_gradient=True,
        )
        schur = m_res[2]
    else:
        schur = SchurSystem(base, missing, method=method, tol=inner, max_iter=max_iter)
    system = ObservedCellNoiseSystem(base, d, schur, tol=tol, max_iter=max_iter)
    alpha = system.solve(y[:, None])[:, 0]
    post = GridPosterior(
        base.eigvals, base.eigvecs, s_bar, base.inv_lam, system.rot(alpha)
    )
    info = SolverInfo(
        path=f"cell-noise-schur-{schur.method}", n_missing=schur.n_missing
    )
    lml, grad = np.nan, None
    if m_res is not None:
        lml, grad = _lml_and_gradient(
            system,
            post,
            y,
            alpha,
            m_res=m_res,
            grad_grams=grad_grams,
            noise_free=noise_free,
            n_probes=n_probes,
            rng=rng,
            info=info,
        )
    info.iterations, info.residual = system.iterations, system.residual
    info.extra["inner_iterations"] = schur.iterations
    info.extra["s_bar"] = s_bar
    return post, lml, grad, system, info


def _lml_and_gradient(
    system: ObservedCellNoiseSystem,
    post: GridPosterior,
    y: FloatArray,
    alpha: FloatArray,
    *,
    m_res: tuple[GridPosterior, float, SchurSystem, TraceCorrection | None, SolverInfo],
    grad_grams: Sequence[FloatArray] | None,
    noise_free: bool,
    n_probes: int,
    rng: np.random.Generator,
    info: SolverInfo,
) -> tuple[float, FloatArray | None]:
    """Estimated LML and gradient from the Schur results and a Lanczos run."""
    m_post, m_lml, _, m_corr, m_info = m_res
    assert m_corr is not None
    n_obs = int(system.observed.sum())
    # log|M_oo| from the homoscedastic observed-cell LML of missing_factorize
    y_rot = system.rot(y[:, None])[:, 0]
    logdet_m = -2.0 * m_lml - float(y_rot @ m_post.alpha_rot) - n_obs * _LOG_2PI
    w = np.where(system.observed, system.d - system.s_bar, 0.0)
    tr_w, tr_d, std_w = _weighted_traces(system, m_corr, w, system.d)
    probes = rng.choice([-1.0, 1.0], size=(y.size, n_probes))
    inner, system.schur.tol = system.schur.tol, max(system.schur.tol, LANCZOS_INNER_TOL)
    try:
        tr_f, std_f, solves, steps = lanczos_logdet_solve(
            system.c_hat, probes, tol=LANCZOS_TOL
        )
    finally:
        system.schur.tol = inner
    logdet = logdet_m + tr_f + tr_w
    lml = -0.5 * float(y @ alpha) - 0.5 * logdet - 0.5 * n_obs * _LOG_2PI
    # the Schur SLQ and the Hutchinson trace share probes: add their errors
    std_m = 2.0 * m_info.lml_std_error
    info.lml_std_error = 0.5 * float(np.hypot(std_m + std_w, std_f))
    info.extra["lanczos_steps"] = steps
    if grad_grams is None:
        return lml, None
    # tr(A^-1 X) - tr(M^-1 X) = E[(G(C^-1 z - z))^T X (G z)]
    a_c, b_c = system.g_rot(solves - probes), system.g_rot(probes)
    corr = TraceCorrection(
        np.hstack([m_corr.scale * m_corr.a, -a_c / n_probes]),
        np.hstack([m_corr.b, b_c]),
        1.0,
    )
    grad = lml_gradient(post, grad_grams, noise_free=False, correction=corr)
    if noise_free:
        d = system.d
        ua, ub = system.unrot(a_c), system.unrot(b_c)
        trace = tr_d + float(np.sum(d[:, None] * ua * ub)) / n_probes
        grad = np.append(grad, 0.5 * float(np.sum(d * alpha**2)) - 0.5 * trace)
    return lml, grad


def _weighted_traces(
    system: ObservedCellNoiseSystem,
    corr: TraceCorrection,
    w1: FloatArray,
    w2: FloatArray,
) -> tuple[float, float, float]:
    r"""Return :math:`\operatorname{tr}(M_{oo}^{-1} \operatorname{diag}(w))`, two ``w``.

    ``w`` vanishes on the missing cells. With :math:`Z = P - P E_m
    P_{mm}^{-1} E_m^T P`, the trace is :math:`\sum_i w_i P_{ii} - c \sum_j
    \sum_i w_i (U a_j)_i (U b_j)_i` for the Schur correction ``(a, b, c)``:
    exact on the exact path, a Hutchinson estimate on the CG path. Also
    returns the standard error of the first trace (zero when exact).
    """
    p_diag = system.p_diag()
    k = corr.a.shape[1]
    e1, e2 = np.empty(k), np.empty(k)
    for lo in range(0, k, _CHUNK):
        sl = slice(lo, min(k, lo + _CHUNK))
        prod = system.unrot(corr.a[:, sl]) * system.unrot(corr.b[:, sl])
        e1[sl], e2[sl] = w1 @ prod, w2 @ prod
    tr1 = float(w1 @ p_diag) - corr.scale * float(e1.sum())
    tr2 = float(w2 @ p_diag) - corr.scale * float(e2.sum())
    std = 0.0
    if system.schur.method != "exact" and k > 1:
        std = corr.scale * np.sqrt(k) * float(e1.std(ddof=1))
    return tr1, tr2, std


def observed_variance_correction(
    system: ObservedCellNoiseSystem,
    v: list[FloatArray],
    *,
    grid: bool,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Return :math:`k_i^T P k_i - k_{i,o}^T A_{oo}^{-1} k_{i,o}` for test points.

    The posterior variance is the complete-grid variance of ``K + s_bar I``
    minus this. Exact (one preconditioned CG solve per test point) while
    ``M N sum(n_d) <= 2^26`` or ``M <= n_samples``; above that it is split as
    :math:`k^T (P - Z) k + k^T (Z - A_{oo}^{-1}) k`, the first part by the
    missing-cell path (:func:`~kronecker_gp.solvers._eigen_missing.variance_correction`,
    exact or Monte Carlo) and the second by the unbiased Monte Carlo estimate
    of :func:`observed_variance_correction_mc`.

    Parameters
    ----------
    system : ObservedCellNoiseSystem
        The fitted observed-cell system.
    v : list of ndarray
        ``V_d = k_d(test_d, train_d) U_d`` per test point (``grid=False``) or
        per test-grid axis (``grid=True``).
    grid : bool
        Whether ``v`` describes a test grid.
    n_samples : int
        Monte Carlo samples.
    rng : numpy.random.Generator
        Source of the samples.

    Returns
    -------
    ndarray of shape (M,)
    """
    n = int(np.prod(system.post.shape))
    rotation = n * sum(int(x.shape[1]) for x in v)
    m_pts = n_test_points(v, grid)
    if m_pts * rotation <= EXACT_VARIANCE_WORK or m_pts <= n_samples:
        return cell_noise_variance_correction(system, v, grid=grid)
    schur = variance_correction(
        system.schur, v, grid=grid, n_samples=n_samples, rng=rng
    )
    cells, _ = observed_variance_correction_mc(
        system, v, grid=grid, n_samples=n_samples, rng=rng
    )
    return np.asarray(schur + cells)


def observed_variance_correction_mc(
    system: ObservedCellNoiseSystem,
    v: list[FloatArray],
    *,
    grid: bool,
    n_samples: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    r"""Monte Carlo estimate of :math:`k^T (M_{oo}^{-1} - A_{oo}^{-1}) k`.

    Since :math:`M_{oo}^{-1} - A_{oo}^{-1} = M_{oo}^{-1} W A_{oo}^{-1}`
    (:math:`W = A_{oo} - M_{oo} = D_{oo} - \bar s I`), Rademacher vectors
    :math:`u` on the observed cells give the unbiased estimate
    :math:`E[(k^T M_{oo}^{-1} u)(k^T A_{oo}^{-1} W u)]`. Both factors are
    localised around the test point in the cell basis, which keeps the
    variance low: on a 10 x 12 grid it is 36 times smaller than that of
    coupled Gaussian draws :math:`(k^T \zeta_M)^2 - (k^T \zeta_A)^2`. Each
    sample costs one outer CG solve (batched over samples), one Schur apply
    and one mode product over the test points.

    Returns
    -------
    estimate : ndarray of shape (M,)
    std_error : ndarray of shape (M,)
        Per-point standard error of the estimate.
    """
    u = rng.choice([-1.0, 1.0], size=(system.d.size, n_samples))
    u = system.observed[:, None] * u
    w = np.where(system.observed, system.d - system.s_bar, 0.0)
    m_u_rot = system.schur.observed_solve_rot(system.rot(u))
    a_wu_rot = system.rot(system.solve(w[:, None] * u))

    def project(w_rot: FloatArray) -> FloatArray:
        if grid:
            return kron_matvec(v, w_rot)
        return np.column_stack([face_split_matvec(v, w) for w in w_rot.T])

    terms = project(m_u_rot) * project(a_wu_rot)
    return terms.mean(axis=1), terms.std(axis=1, ddof=1) / np.sqrt(n_samples)
