r"""Laplace predictions on a grid: latent moments at points or grids, samples.

Given a :class:`~kronecker_gp.solvers._laplace.LaplaceResult` (the mode and
its curvature system), the predictive latent mean is :math:`k_*^T a` and the
variance :math:`k_{**} - k_*^T (K + W^{-1})^{-1} k_*` (Rasmussen and Williams
2006, eqs. 3.21 and 3.24), exact (one solve per test point) or by Monte Carlo
above a work budget; samples of the latent field come from the system's
perturbation (or Matheron) sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import face_split_matvec, kron_matvec
from kronecker_gp.linalg._identities import face_split_rows

if TYPE_CHECKING:
    from kronecker_gp.solvers._laplace import LaplaceResult

#: Rows of a cross-covariance block formed at once in predictions (entries).
CHUNK_ENTRIES = 2**22
#: Predictive variances are exact (one CG column per point) while
#: n_points * n_cells stays below this; beyond, they are Monte Carlo estimates.
EXACT_VARIANCE_WORK = 2**27


def _apply_cross(
    cross: Sequence[FloatArray], x: FloatArray, *, grid: bool
) -> FloatArray:
    """Cross-covariance times grid vectors: Kronecker (grid) or face-split (points)."""
    if grid:
        return kron_matvec(cross, x)
    if x.ndim == 1:
        return face_split_matvec(cross, x)
    return np.column_stack([face_split_matvec(cross, c) for c in x.T])


def latent_moments(
    res: LaplaceResult,
    cross: Sequence[FloatArray],
    prior_diag: FloatArray | None,
    *,
    grid: bool,
    n_samples: int = 256,
    random_state: int = 0,
) -> tuple[FloatArray, FloatArray | None, bool]:
    r"""Return the Laplace predictive latent mean and variance at test points.

    .. math::
        m_* = k_*^T a, \qquad
        v_* = k_{**} - k_*^T W k_* + k_*^T W \Sigma W k_*

    (Rasmussen and Williams 2006, eqs. 3.21 and 3.24 with
    :math:`(K + W^{-1})^{-1} = W - W \Sigma W`).

    Parameters
    ----------
    res : LaplaceResult
        The fitted approximation.
    cross : list of ndarray
        Per-axis cross-covariances, (n_test_d, n_d) for a test grid or
        (M, n_d) for M test points.
    prior_diag : ndarray of shape (M,) or None
        Prior variances :math:`k_{**}`; None skips the variance.
    grid : bool
        Whether ``cross`` describes a test grid (Kronecker) or points.
    n_samples : int, default=256
        Monte Carlo samples of the last term when the exact computation (one
        solve per test point) exceeds ``EXACT_VARIANCE_WORK``; its relative
        standard error is about :math:`\sqrt{2 / n}`.
    random_state : int, default=0
        Seed of those samples.

    Returns
    -------
    mean : ndarray of shape (M,)
    var : ndarray of shape (M,) or None
    exact : bool
        False when the variance was estimated by Monte Carlo.
    """
    a, w, system = res.grad_logp, res.w, res.system
    mean = _apply_cross(cross, a, grid=grid)
    if prior_diag is None:
        return mean, None, True
    m = mean.size
    exact = system.dense or m * w.size <= EXACT_VARIANCE_WORK
    if not exact:
        # r = R (f0 + W^-1/2 e), f0 ~ N(0, K), e ~ N(0, I), has covariance
        # R (K + W^-1) R = R, so k*^T r samples the whole subtracted term
        # (no cancellation between k*^T W k* and k*^T W Sigma W k*)
        rng = np.random.default_rng(random_state)
        f0 = system.to_data(rng.standard_normal((system.s.size, n_samples)))
        c = np.sqrt(np.maximum(w, 0.0))[:, None] * f0
        c += rng.standard_normal((w.size, n_samples))
        h = _apply_cross(cross, system.r_half(c), grid=grid)
        return mean, np.maximum(prior_diag - np.mean(h * h, axis=1), 0.0), False
    scaled = system.route == "scaled"
    sw = np.sqrt(np.maximum(w, 0.0))
    var = prior_diag.copy()
    if not scaled:
        var -= _apply_cross([c * c for c in cross], w, grid=grid)
    # a quadratic form b^T A^-1 b from CG to residual r has relative error
    # of order r^2 cond(A): sqrt(cg_tol) keeps it at the solves' accuracy
    rtol = float(np.sqrt(system.opts.cg_tol))
    step = max(1, CHUNK_ENTRIES // w.size)  # rows of k* per solve
    shape = tuple(c.shape[0] for c in cross)
    for lo in range(0, m, step):
        idx = np.arange(lo, min(m, lo + step))
        if grid:
            mats = [c[i] for c, i in zip(cross, np.unravel_index(idx, shape))]
        else:
            mats = [c[idx] for c in cross]
        if scaled:
            # k*^T R k* = |B^-1/2 W^1/2 k*|^2: no cancellation where W K >> 1
            # (to cg_tol: B is less well conditioned than the whitened A, and
            # the prior variance minus this term can cancel)
            half = (face_split_rows(mats) * sw).T
            var[idx] -= np.sum(half * system.b_solve(half), axis=0)
        else:
            cols = (face_split_rows(mats) * w).T
            var[idx] += np.sum(cols * system.sigma(cols, rtol), axis=0)
    return mean, np.maximum(var, 0.0), True


def latent_samples(
    res: LaplaceResult, n_samples: int, random_state: int | None = 0
) -> FloatArray:
    r"""Draw latent fields on the training grid from :math:`N(\hat f, \Sigma)`.

    Parameters
    ----------
    res : LaplaceResult
        The fitted approximation.
    n_samples : int
        Number of draws.
    random_state : int or None, default=0
        Seed.

    Returns
    -------
    ndarray of shape (N, n_samples)
    """
    rng = np.random.default_rng(random_state)
    return res.f[:, None] + res.system.sample_data(int(n_samples), rng)
