"""Pure functions: posterior moments and samples from a grid factorisation."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import (
    face_split_gram,
    face_split_matvec,
    factor_eigh,
    kron_matvec,
)
from kronecker_gp.linalg._eigenbasis import GridPosterior


def _clip_variance(var: FloatArray) -> FloatArray:
    """Set tiny negative variances (round-off) to zero, warning as sklearn does."""
    if np.any(var < 0):
        warnings.warn(
            "Predicted variances smaller than 0; setting those variances to 0.",
            RuntimeWarning,
            stacklevel=3,
        )
        var = np.maximum(var, 0.0)
    return var


def grid_moments(
    post: GridPosterior,
    cross: Sequence[FloatArray],
    prior_diag: FloatArray | None,
    same: Sequence[bool] | None = None,
) -> tuple[FloatArray, FloatArray | None]:
    r"""Posterior mean and variance on a test grid, by mode products.

    Parameters
    ----------
    post : GridPosterior
        The training factorisation.
    cross : sequence of ndarray of shape (m_d, n_d)
        Per-axis cross-covariances ``k_d(test_d, train_d)``.
    prior_diag : ndarray of shape (M,) or None
        Prior variances on the test grid (flat); None skips the variance.

    Returns
    -------
    mean : ndarray of shape (M,) or (M, n_targets)
        One column per target where ``post`` holds several.
    var : ndarray of shape (M,) or None
        Shared by every target.

    Notes
    -----
    With :math:`V_d = K_{*d} U_d`, the mean is :math:`(\bigotimes V_d)
    \tilde a` and the variance reduction is :math:`(\bigotimes V_d \circ V_d)
    (\lambda + s)^{-1}`: cost :math:`O(\sum_d m_d n_d^2 + M \sum_d n_d)`.
    """
    same = same or [False] * len(cross)
    # on the training coordinates K_d U_d = U_d diag(w_d): no GEMM
    v = [
        u * w if s else c @ u
        for c, u, w, s in zip(cross, post.eigvecs, post.eigvals, same)
    ]
    mean = kron_matvec(v, post.alpha_rot)
    if prior_diag is None:
        return mean, None
    reduction = kron_matvec([x * x for x in v], post.inv_lam)
    return mean, _clip_variance(prior_diag - reduction)


def point_moments(
    post: GridPosterior,
    cross: Sequence[FloatArray],
    prior: FloatArray | None,
    *,
    full_cov: bool,
) -> tuple[FloatArray, FloatArray | None]:
    r"""Posterior mean and variance (or covariance) at scattered points.

    Parameters
    ----------
    post : GridPosterior
        The training factorisation.
    cross : sequence of ndarray of shape (M, n_d)
        Per-axis cross-covariances ``k_d(x_i[axes_d], train_d)``; row ``i`` of
        the full cross-covariance is ``kron(cross_1[i], ..., cross_D[i])``.
    prior : ndarray of shape (M,) or (M, M) or None
        Prior variances (or covariance if ``full_cov``).
    full_cov : bool
        Return the full posterior covariance.

    Returns
    -------
    mean : ndarray of shape (M,) or (M, n_targets)
        One column per target where ``post`` holds several.
    var_or_cov : ndarray of shape (M,) or (M, M), or None
        Shared by every target.

    Notes
    -----
    Cost :math:`O(M N)` for mean and variance, :math:`O(M^2 N)` for the
    covariance; never an :math:`N \times N` array.
    """
    v = [c @ u for c, u in zip(cross, post.eigvecs)]
    if post.alpha_rot.ndim == 1:
        mean = face_split_matvec(v, post.alpha_rot)
    else:  # several targets: one mean column each, the variance is shared
        mean = np.stack([face_split_matvec(v, a) for a in post.alpha_rot.T], axis=1)
    if prior is None:
        return mean, None
    if full_cov:
        cov = prior - face_split_gram(v, post.inv_lam)
        cov = 0.5 * (cov + cov.T)
        return mean, cov
    return mean, _clip_variance(
        prior - face_split_matvec([x * x for x in v], post.inv_lam)
    )


def factor_sqrt(gram: FloatArray) -> FloatArray:
    """Return ``L`` with ``L L^T = gram`` from the clipped eigendecomposition."""
    w, u = factor_eigh(gram, "prior factor")
    return u * np.sqrt(w)


def prior_grid_samples(
    grams: Sequence[FloatArray], n_samples: int, rng: np.random.Generator
) -> FloatArray:
    r"""Draw prior samples ``(x)_d L_d z`` on a grid; returns shape (N, n_samples).

    Notes
    -----
    :math:`\operatorname{Cov}((\bigotimes_d L_d) z) = \bigotimes_d L_d L_d^T`;
    cost :math:`O(\sum_d n_d^3 + N \sum_d n_d)` per batch of samples.
    """
    roots = [factor_sqrt(g) for g in grams]
    z = rng.standard_normal((int(np.prod([r.shape[1] for r in roots])), n_samples))
    return kron_matvec(roots, z)


def union_axes(
    train: Sequence[FloatArray], test: Sequence[FloatArray]
) -> tuple[list[FloatArray], list[IntArray], list[IntArray]]:
    """Return each axis' union of training and test coordinates, with indices.

    For Matheron's rule: a joint prior sample on the union grid gives the
    training and test values of one draw. Returns the union coordinates and,
    per axis, the positions of the training and of the test coordinates in it.
    """
    union, idx_train, idx_test = [], [], []
    for tr, te in zip(train, test):
        both, inv = np.unique(np.vstack([tr, te]), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        union.append(both)
        idx_train.append(inv[: tr.shape[0]])
        idx_test.append(inv[tr.shape[0] :])
    return union, idx_train, idx_test
