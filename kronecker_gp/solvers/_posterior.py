"""Pure functions: prior samples and axis unions for a grid factorisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import (
    factor_eigh,
    kron_matvec,
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
