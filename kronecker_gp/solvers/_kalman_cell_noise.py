r"""Known per-cell noise on the state-space route (complete grids).

With per-cell variances ``d`` the covariance :math:`A = K + D` is not
rotated into independent series. Split it as :math:`A = M + W`,
:math:`M = K + \bar s I` with :math:`\bar s = \min d` (solved exactly by the
Kalman route, :class:`~kronecker_gp.solvers._kalman_missing.SeriesOperator`) and
:math:`W = D - \bar s I = V^2 \succeq 0`. Then, with
:math:`B = I + V M^{-1} V`,

.. math::
    A^{-1} = M^{-1} - M^{-1} V B^{-1} V M^{-1}, \qquad
    \log|A| = \log|M| + \log|B|,

and :math:`1 \le \lambda(B) \le \max d / \min d`: CG on ``B`` (each step one
Kalman pass) needs iterations set by the spread of the noise only.
:math:`\log|M|` is exact; :math:`\log|B|` is Jacobi-scaled stochastic Lanczos
quadrature (exact :math:`\operatorname{diag} B = 1 + W \operatorname{diag}
M^{-1}` from the smoother's variances). The gradient's trace terms are
:math:`\operatorname{tr}(M^{-1} \partial K)` (exact, from the filter's
sensitivities) minus a Hutchinson estimate of
:math:`\operatorname{tr}(B^{-1} V M^{-1} \partial K M^{-1} V)` with the same
probes (polarised quadratic forms), and the data term uses
:math:`\alpha = M^{-1}(M \alpha)`, :math:`M \alpha = y - W \alpha`. The
predictive mean is the Kalman route's with data :math:`M\alpha` (exact); the
variance adds :math:`k_*^T M^{-1} V B^{-1} V M^{-1} k_*`.

Arrays are in series layout (the state-space axis last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg._krylov import CGRecorder, lanczos_logdet_solve
from kronecker_gp.solvers._kalman_missing import (
    SeriesOperator,
    joint_prior,
    stacked_gradient,
)

_LOG_2PI = _budgets.LOG_2PI


class CellNoiseSeries(CGRecorder):
    """``A = M + V^2`` on the Kalman route, with the solves it needs.

    Parameters
    ----------
    op : SeriesOperator
        The algebra of ``M = K + s_bar I`` (its ``noise`` is ``s_bar``).
    d : ndarray of shape (S, n_t)
        Per-cell noise variances (series layout, not rotated), all
        ``>= op.noise``.
    tol, max_iter : float, int
        CG settings for ``B``.
    """

    def __init__(
        self, op: SeriesOperator, d: FloatArray, *, tol: float, max_iter: int
    ) -> None:
        self.op, self.d = op, d
        self.w = np.maximum(d - op.noise, 0.0)
        self.v = np.sqrt(self.w)
        self.tol, self.max_iter = tol, max_iter
        self.iterations, self.residual = 0, 0.0
        self.p_diag = op.diag_inverse()
        self.b_diag = 1.0 + self.w * self.p_diag

    @property
    def shape(self) -> tuple[int, int]:
        """Series layout ``(S, n_t)``."""
        return (self.op.n_series, self.op.times.size)

    def p_solve(self, x: FloatArray) -> FloatArray:
        """Return ``M^{-1} x`` for ``x`` of shape (S, n_t, k)."""
        return self.op.solve(x)

    def b_matvec(self, x: FloatArray) -> FloatArray:
        """Return ``B x = x + V M^{-1} V x`` for flat ``x`` of shape (N, k)."""
        k = x.shape[1]
        v = self.v[:, :, None]
        cube = x.reshape(*self.shape, k)
        return (cube + v * self.p_solve(v * cube)).reshape(-1, k)

    def b_solve(self, b: FloatArray) -> FloatArray:
        """Return ``B^{-1} b`` (flat, (N, k)) by Jacobi-preconditioned CG."""
        inv = 1.0 / self.b_diag.reshape(-1)
        return self._run_cg(self.b_matvec, b, inv, "per-cell-noise")

    def a_solve(self, y: FloatArray) -> tuple[FloatArray, float]:
        """Return ``A^{-1} y`` for ``y`` of shape (S, n_t, k), and ``log|M|``."""
        k = y.shape[2]
        u_rot, logdet_m = self.op.solve_rot_logdet(self.op.rotate(y))
        u = self.op.unrotate(u_rot)
        v = self.v[:, :, None]
        beta = self.b_solve((v * u).reshape(-1, k)).reshape(*self.shape, k)
        return u - self.p_solve(v * beta), logdet_m

    def exact_covariance(self, k_cols: FloatArray) -> FloatArray:
        """Return ``G^T B^{-1} G``, ``G = V M^{-1} K_{x*}`` (``k_cols``: S, n_t, M)."""
        g = (self.v[:, :, None] * self.p_solve(k_cols)).reshape(-1, k_cols.shape[2])
        return np.asarray(g.T @ self.b_solve(g))

    def exact_correction(self, k_cols: FloatArray) -> FloatArray:
        """Return ``g^T B^{-1} g`` with ``g = V M^{-1} k``, ``k`` (S, n_t, M)."""
        g = (self.v[:, :, None] * self.p_solve(k_cols)).reshape(-1, k_cols.shape[2])
        return np.asarray(np.sum(g * self.b_solve(g), axis=0))


@dataclass
class CellNoiseFit:
    """Result of :func:`cell_noise_lml` (gradient parts: theta, space, log-scale)."""

    lml: float
    data_rot: FloatArray  # rotated M alpha: the Kalman route's data for predictions
    std_error: float
    gradient: tuple[FloatArray, FloatArray, float] | None


def cell_noise_lml(
    system: CellNoiseSeries,
    y: FloatArray,
    *,
    n_probes: int,
    rng: np.random.Generator,
    eval_gradient: bool,
    need_lml: bool = True,
) -> CellNoiseFit:
    r"""Estimated log marginal likelihood (and gradient) with per-cell noise.

    Parameters
    ----------
    system : CellNoiseSeries
        The split ``A = M + V^2``.
    y : ndarray of shape (S, n_t)
        Targets, series layout.
    n_probes : int
        Rademacher probes of the log-determinant and trace estimates.
    rng : numpy Generator
        Source of the probes (seeded by the caller).
    eval_gradient : bool
        Also return the gradient w.r.t. the kernels (theta and the rotated
        space Gram, as :func:`~kronecker_gp.solvers._kalman_missing.stacked_gradient`)
        and w.r.t. the log of the noise scale (``d`` proportional to it).
    need_lml : bool, default=True
        If False (and no gradient), skip the estimate (the LML is NaN).

    Returns
    -------
    CellNoiseFit
        The LML's standard error is half the quadrature's over the probes.
    """
    op = system.op
    n = y.size
    alpha, logdet_m = system.a_solve(y[:, :, None])
    m_alpha = y[:, :, None] - system.w[:, :, None] * alpha
    data_rot = op.rotate(m_alpha)[:, :, 0]
    if not (need_lml or eval_gradient):
        return CellNoiseFit(np.nan, data_rot, 0.0, None)
    probes = rng.choice([-1.0, 1.0], size=(n, n_probes))
    scale = 1.0 / np.sqrt(system.b_diag.reshape(-1))

    def scaled(x: FloatArray) -> FloatArray:
        return scale[:, None] * system.b_matvec(scale[:, None] * x)

    tr_f, std, solves, _ = lanczos_logdet_solve(scaled, probes)
    logdet_b = float(np.sum(np.log(system.b_diag))) + tr_f
    quad = float(np.sum(y * alpha[:, :, 0]))
    lml = -0.5 * (quad + logdet_m + logdet_b + n * _LOG_2PI)
    if not eval_gradient:
        return CellNoiseFit(lml, data_rot, 0.5 * std, None)
    shape = (*system.shape, n_probes)
    v = system.v[:, :, None]
    a = v * (scale[:, None] * solves).reshape(shape)  # V B^-1 z (Jacobi-scaled)
    b = v * (scale[:, None] * probes).reshape(shape)  # V z
    zero = np.zeros((*system.shape, 1))
    cols = np.concatenate([zero, m_alpha, a + b, a - b], axis=2)
    f = 0.25 / n_probes
    coef = np.concatenate([[1.0, 1.0], np.full(n_probes, f), np.full(n_probes, -f)])
    full = np.concatenate([[1.0], np.zeros(1 + 2 * n_probes)])
    theta, space, _ = stacked_gradient(op, op.rotate(cols), coef, full)
    # noise scale: dA = D; 0.5 a^T D a - 0.5 (tr(M^-1 D) - tr(B^-1 V M^-1 D M^-1 V))
    pa, pb = system.p_solve(a), system.p_solve(b)
    hutch = float(np.sum(pa * system.d[:, :, None] * pb)) / n_probes
    trace = float(np.sum(system.d * system.p_diag)) - hutch
    g_scale = 0.5 * float(np.sum(system.d * alpha[:, :, 0] ** 2)) - 0.5 * trace
    return CellNoiseFit(lml, data_rot, 0.5 * std, (theta, space, g_scale))


def cell_noise_variance_correction(
    system: CellNoiseSeries,
    project: object,
    n_test: int,
    pred_times: FloatArray,
    *,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Unbiased Monte Carlo estimate of :math:`k_*^T M^{-1} V B^{-1} V M^{-1} k_*`.

    :math:`\zeta = B^{-1} \eta`, :math:`\eta = \xi + V M^{-1} w \sim N(0, B)`
    with :math:`w \sim N(0, M)` an exact prior sample (plus noise
    :math:`\bar s`) and :math:`\xi` white, so :math:`\zeta \sim N(0, B^{-1})`
    and :math:`E[(k_*^T M^{-1} V \zeta)^2]` is the correction; each
    :math:`k_*^T M^{-1} V \zeta` is a predictive mean with data
    :math:`V\zeta`. Relative standard error :math:`\sqrt{2/S}` on the
    correction for ``S = n_samples``; ``project`` maps rotated cross means
    (S, m_t, k) to the test points (n_test, k).
    """
    op = system.op
    w = op.unrotate(op.prior_rot(n_samples, rng))
    v = system.v[:, :, None]
    eta = rng.standard_normal(w.shape) + v * system.p_solve(w)
    zeta = system.b_solve(eta.reshape(-1, n_samples)).reshape(w.shape)
    beta = op.cross_mean(op.rotate(v * zeta), pred_times)
    proj = project(beta)  # type: ignore[operator]
    out = np.asarray(np.mean(np.asarray(proj) ** 2, axis=1))
    assert out.shape == (n_test,)
    return out


def _exact_affordable(n_test: int, n_cells: int) -> bool:
    """Whether the test points' covariance columns (n_cells x n_test) are cheap."""
    return n_test * n_cells <= 2**24


def cell_noise_correction(  # noqa: PLR0917 - the route's prediction inputs
    system: CellNoiseSeries,
    project: object,
    k_columns: object,
    n_test: int,
    pred_times: FloatArray,
    *,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Variance correction: exact while cheap, else by Monte Carlo (see below).

    ``k_columns()`` gives the rotated cross-covariance columns (S, n_t, n_test)
    of the test points; exactly, the correction costs one Kalman pass over
    them and a CG solve with ``B`` per column; above 2^24 entries it is
    :func:`cell_noise_variance_correction`.
    """
    if _exact_affordable(n_test, system.d.size):
        cols = system.op.unrotate(k_columns())  # type: ignore[operator]
        return system.exact_correction(cols)
    return cell_noise_variance_correction(
        system, project, n_test, pred_times, n_samples=n_samples, rng=rng
    )


def cell_noise_samples(
    system: CellNoiseSeries,
    y: FloatArray,
    test_times: FloatArray,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Posterior samples at the training sites and ``test_times`` (Matheron's rule).

    :math:`f_* + K_{*x} A^{-1} (y - f_x - \varepsilon)` with :math:`(f_*,
    f_x)` a joint prior sample on the merged timeline and
    :math:`\varepsilon \sim N(0, D)`; :math:`K_{*x} A^{-1} r` is the Kalman
    route's predictive mean with data :math:`M A^{-1} r = r - W A^{-1} r`.
    Exact in distribution to the CG tolerance. Returns (S, m, n_samples).
    """
    op = system.op
    f_train, f_test = joint_prior(op, test_times, n_samples, rng)
    eps = np.sqrt(system.d)[:, :, None] * rng.standard_normal(f_train.shape)
    resid = y[:, :, None] - f_train - eps
    a_resid, _ = system.a_solve(resid)
    data = resid - system.w[:, :, None] * a_resid
    beta = op.cross_mean(op.rotate(data), test_times)
    return f_test + op.unrotate(op.weights[:, None, None] * beta)
