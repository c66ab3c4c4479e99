r"""Predictions with missing cells on the state-space route.

Variances, covariances and posterior samples given the observed cells, from
the fitted :class:`~kronecker_gp.solvers._kalman_missing.SSMSchurSystem`: the
complete-grid quantities plus the missing-cell corrections
:math:`g^T P_{mm}^{-1} g`, :math:`g_j = k_*^T P e_j` (a predictive mean with
data :math:`e_j`), or Matheron's rule for samples.
"""

from __future__ import annotations

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.solvers._kalman_missing import (
    SSMSchurSystem,
    column_chunks,
    joint_prior,
)


def _g_columns(
    system: SSMSchurSystem, cols: FloatArray, pred_times: FloatArray
) -> FloatArray:
    """Rotated cross means of the padded columns ``E_m cols``, (S, m_t, k)."""
    op = system.op
    return op.cross_mean(op.rotate(system.pad(cols)), pred_times)


def covariance_correction(
    system: SSMSchurSystem, project: object, n_test: int, pred_times: FloatArray
) -> FloatArray:
    r"""Missing-cell correction :math:`G^T P_{mm}^{-1} G` of a (small) covariance.

    ``project`` and ``pred_times`` as in :func:`variance_correction`; ``G``
    is formed by ``m`` predictive-mean passes, so the cost is :math:`O(m N
    d^2)` and the memory :math:`O(m\, n_{test})`.
    """
    m = system.n_missing
    n_cells = system.op.n_series * system.op.times.size
    g = np.empty((n_test, m))
    for sl in column_chunks(m, max(n_cells, n_test)):
        g[:, sl] = project(_g_columns(system, np.eye(m)[:, sl], pred_times))  # type: ignore[operator]
    return np.asarray(g @ system.pmm_solve(g.T))


def _exact_variance_affordable(m: int, n_test: int, n_cells: int) -> bool:
    """Whether ``g`` (n_test x m) and its ``m`` predictive passes are affordable."""
    return m * n_test <= 2**24 and m * n_cells <= 2**26


def variance_correction(
    system: SSMSchurSystem,
    project: object,
    n_test: int,
    pred_times: FloatArray,
    *,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Missing-cell correction :math:`g^T P_{mm}^{-1} g` of the predictive variance.

    Parameters
    ----------
    system : SSMSchurSystem
        The fitted missing-cell system.
    project : callable
        ``beta (S, m_t, k) -> (n_test, k)``: maps rotated cross means at the
        test times to the test points (mode products with the space
        cross-covariances).
    n_test : int
        Number of test points.
    pred_times : ndarray
        Test times (unique for points, the axis for a grid).
    n_samples : int
        Monte Carlo samples when the exact correction is too costly.
    rng : numpy Generator
        Source of the Monte Carlo samples.

    Returns
    -------
    ndarray of shape (n_test,)
        Exact while ``m * n_test <= 2^24`` and ``m N <= 2^26`` (``g`` formed by
        ``m`` predictive-mean passes), else the unbiased Monte Carlo estimate
        :math:`\frac1S \sum_s (g^T \zeta_s)^2`, :math:`\zeta_s = P_{mm}^{-1}
        \eta_s`, :math:`\eta_s = (P w_s)_m`, :math:`w_s \sim N(0, A)`, whose
        relative standard error on the correction is :math:`\sqrt{2/S}`.
    """
    m = system.n_missing
    n_cells = system.op.n_series * system.op.times.size
    proj = project  # type: ignore[assignment]
    if _exact_variance_affordable(m, n_test, n_cells):
        g = np.empty((n_test, m))
        for sl in column_chunks(m, max(n_cells, n_test)):
            g[:, sl] = proj(_g_columns(system, np.eye(m)[:, sl], pred_times))  # type: ignore[operator]
        return system.schur.quad_forms(g.T)
    w_rot = system.op.prior_rot(n_samples, rng)
    eta = system.take(system.op.unrotate(system.op.solve_rot(w_rot)))
    zeta = system.pmm_solve(eta)
    proj_z = proj(_g_columns(system, zeta, pred_times))  # type: ignore[operator]
    return np.asarray(np.mean(proj_z**2, axis=1))


def matheron_samples(
    system: SSMSchurSystem,
    y: FloatArray,
    test_times: FloatArray,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Posterior samples at the training sites and ``test_times`` (Matheron's rule).

    :math:`f_* + K_{*x} A_{oo}^{-1} (y_o - f_o - \varepsilon_o)` with
    :math:`(f_*, f_x)` a joint prior sample on the merged timeline and the
    observed-cell solve through the Schur complement; exact in distribution
    (to the CG tolerance on the CG path).

    Parameters
    ----------
    system : SSMSchurSystem
        The fitted missing-cell system.
    y : ndarray of shape (S, n_t)
        Targets in series layout, zero on missing cells.
    test_times : ndarray of shape (m,)
        Sample times, any order.
    n_samples : int
        Number of samples.
    rng : numpy Generator
        Source of randomness.

    Returns
    -------
    ndarray of shape (S, m, n_samples)
        Samples in series layout (latent function, noise excluded).
    """
    op = system.op
    f_train, f_test = joint_prior(op, test_times, n_samples, rng)
    eps = np.sqrt(op.noise) * rng.standard_normal(f_train.shape)
    resid = y[:, :, None] - f_train - eps
    resid[system.s_idx, system.t_idx] = 0.0
    r = system.observed_residual(resid)  # A_oo^{-1} resid = P r
    beta = op.cross_mean(op.rotate(r), test_times)
    return f_test + op.unrotate(op.weights[:, None, None] * beta)
