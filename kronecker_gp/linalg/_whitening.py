r"""Pure functions: Kronecker-structured noise whitened into the factors.

With a noise covariance that is a Kronecker product of per-axis diagonals,
:math:`D = \bigotimes_d D_d` (:math:`D_d = I` on axes without noise
structure),

.. math::
    K + D = D^{1/2} (\tilde K + I) D^{1/2}, \qquad
    \tilde K = \bigotimes_d D_d^{-1/2} K_d D_d^{-1/2},

so the whitened problem is a complete-grid GP with noise 1 on the whitened
targets :math:`\tilde y = D^{-1/2} y`, solved exactly in the eigenbasis of
the whitened factors (:mod:`~kronecker_gp.linalg._eigenbasis`), and
:math:`\log|K + D| = \log|\tilde K + I| + \sum \log D`. These functions hold
the parts specific to the noise: the whitening, the log-determinant of
:math:`D` on the observed cells and the gradient with respect to the per-axis
log-variances.

References
----------
.. [1] Rakitsch, B., Lippert, C., Borgwardt, K. and Stegle, O. (2013). It is
   all in the noise: Efficient multi-task Gaussian process inference with
   structured residuals. NeurIPS 26.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg._eigenbasis import GridPosterior, TraceCorrection
from kronecker_gp.linalg._identities import kron_matvec, kron_outer

#: Columns of a trace correction unrotated per pass (bounds (N, k) temporaries).
CORRECTION_COLUMNS = 64


def whiten_factors(
    grams: Sequence[FloatArray], variances: Sequence[FloatArray]
) -> list[FloatArray]:
    r"""Return :math:`D_d^{-1/2} G_d D_d^{-1/2}` for every factor (or its gradient).

    Parameters
    ----------
    grams : sequence of ndarray of shape (n_d, n_d) or (n_d, n_d, p_d)
        Factor Gram matrices, or their gradients (the last axis is scaled
        along).
    variances : sequence of ndarray of shape (n_d,)
        Per-axis noise variances (ones on axes without noise structure).

    Returns
    -------
    list of ndarray
        The whitened factors, shaped as ``grams``.

    Examples
    --------
    >>> import numpy as np
    >>> g = whiten_factors([np.ones((2, 2))], [np.array([1.0, 4.0])])[0]
    >>> g.tolist()
    [[1.0, 0.5], [0.5, 0.25]]
    """
    out = []
    for g, v in zip(grams, variances):
        s = 1.0 / np.sqrt(np.asarray(v, dtype=float))
        scale = s[:, None] * s[None, :]
        out.append(g * (scale if g.ndim == 2 else scale[:, :, None]))
    return out


def observed_log_noise(
    variances: Sequence[FloatArray], missing: IntArray | None
) -> float:
    r"""Return :math:`\sum_{i \in o} \log D_{ii}` over the observed cells.

    Notes
    -----
    On a complete grid :math:`\sum \log D = \sum_d (N / n_d) \sum_i \log
    v_{d,i}` (:math:`O(\sum_d n_d)`); the missing cells' terms are then
    subtracted (:math:`O(m D)`).

    Examples
    --------
    >>> import numpy as np
    >>> v = [np.array([1.0, np.e]), np.array([np.e, np.e, 1.0])]
    >>> round(observed_log_noise(v, None), 12)
    7.0
    >>> round(observed_log_noise(v, np.array([3])), 12)
    5.0
    """
    logs = [np.log(np.asarray(v, dtype=float)) for v in variances]
    shape = tuple(x.size for x in logs)
    n = int(np.prod(shape))
    total = float(sum(n // x.size * np.sum(x) for x in logs))
    if missing is None or missing.size == 0:
        return total
    idx = np.unravel_index(missing, shape)
    return total - float(sum(np.sum(x[i]) for x, i in zip(logs, idx)))


def inverse_diagonal(
    post: GridPosterior, correction: TraceCorrection | None = None
) -> FloatArray:
    r"""Return :math:`\operatorname{diag}(A^{-1})` for :math:`A = U \Lambda U^T + sI`.

    Parameters
    ----------
    post : GridPosterior
        The complete-grid eigenbasis.
    correction : TraceCorrection, optional
        The missing-cell term: the returned diagonal is then that of the
        zero-padded :math:`A_{oo}^{-1} = P - U Z Z^T U^T` (exact) or its
        Hutchinson estimate, :math:`\operatorname{diag}(P) - c \sum_k (U a_k)
        \circ (U b_k)`.

    Returns
    -------
    ndarray of shape (N,)
        Flat in C order.

    Notes
    -----
    :math:`\operatorname{diag}(U G U^T) = (\bigotimes_d U_d \circ U_d) g` for
    diagonal :math:`G`: mode products, :math:`O(N \sum_d n_d)`; a correction
    of ``k`` columns adds :math:`O(k N \sum_d n_d)`.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg._eigenbasis import grid_eigen
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.standard_normal((3, 3)), rng.standard_normal((4, 4))
    >>> grams = [a @ a.T, b @ b.T]
    >>> dense = np.linalg.inv(np.kron(*grams) + np.eye(12))
    >>> bool(np.allclose(inverse_diagonal(grid_eigen(grams, 1.0)), np.diag(dense)))
    True
    """
    diag = kron_matvec([u * u for u in post.eigvecs], post.inv_lam)
    if correction is None:
        return np.asarray(diag)
    k = correction.a.shape[1]
    for lo in range(0, k, CORRECTION_COLUMNS):
        sl = slice(lo, lo + CORRECTION_COLUMNS)
        ua = kron_matvec(post.eigvecs, correction.a[:, sl])
        ub = ua if correction.b is correction.a else None
        if ub is None:
            ub = kron_matvec(post.eigvecs, correction.b[:, sl])
        diag -= correction.scale * np.einsum("ik,ik->i", ua, ub)
    return np.asarray(diag)


def axis_noise_gradient(
    post: GridPosterior,
    noise_axes: Sequence[int],
    *,
    correction: TraceCorrection | None = None,
    missing: IntArray | None = None,
) -> FloatArray:
    r"""Return the LML gradient w.r.t. the per-axis log noise variances.

    Parameters
    ----------
    post : GridPosterior
        The whitened problem (noise 1) with its weights
        :math:`\tilde a = U^T (\tilde K_{oo} + I)^{-1} \tilde y`.
    noise_axes : sequence of int
        The axes whose variances are differentiated, in this order.
    correction : TraceCorrection, optional
        The missing-cell trace term of the whitened problem.
    missing : ndarray of int, optional
        Flat indices of the missing cells (they carry no noise term).

    Returns
    -------
    ndarray of shape (sum(n_d for d in noise_axes),)

    Notes
    -----
    For :math:`\eta_{d,i} = \log v_{d,i}`, :math:`\partial C / \partial
    \eta_{d,i} = D E_{d,i}` with :math:`E_{d,i}` the indicator of slice ``i``
    of axis ``d`` (observed cells). With :math:`\alpha = D^{-1/2}
    \tilde\alpha`, :math:`D \alpha^2 = \tilde\alpha^2` and
    :math:`\operatorname{diag}(C^{-1}) D = \operatorname{diag}((\tilde K +
    I)^{-1})`, so

    .. math::
        \frac{\partial L}{\partial \eta_{d,i}} = \tfrac12 \sum_{j \in
        \text{slice}} \bigl(\tilde\alpha_j^2 - [(\tilde K + I)^{-1}]_{jj}\bigr),

    two mode products and ``D`` reductions: :math:`O(N \sum_d n_d)`, never an
    :math:`N \times N` array.
    """
    shape = post.shape
    alpha = kron_matvec(post.eigvecs, post.alpha_rot)
    cell = alpha * alpha - inverse_diagonal(post, correction)
    if missing is not None and missing.size:
        cell[missing] = 0.0  # exact zero already; an estimate is masked
    grid = cell.reshape(shape)
    parts = []
    for d in noise_axes:
        others = tuple(e for e in range(len(shape)) if e != d)
        parts.append(0.5 * grid.sum(axis=others))
    return np.concatenate(parts) if parts else np.zeros(0)


def noise_vectors(
    shape: Sequence[int], noise_axes: Sequence[int], variances: Sequence[FloatArray]
) -> list[FloatArray]:
    """Return one variance vector per grid axis (ones off ``noise_axes``).

    Examples
    --------
    >>> import numpy as np
    >>> [v.tolist() for v in noise_vectors((2, 3), [1], [np.array([1.0, 2.0, 3.0])])]
    [[1.0, 1.0], [1.0, 2.0, 3.0]]
    """
    out = [np.ones(int(n)) for n in shape]
    for d, v in zip(noise_axes, variances):
        out[d] = np.asarray(v, dtype=float)
    return out


def inverse_sqrt_noise(variances: Sequence[FloatArray]) -> FloatArray:
    r"""Return the flat :math:`D^{-1/2}` (C order) of per-axis variances, O(N)."""
    return kron_outer([1.0 / np.sqrt(np.asarray(v, dtype=float)) for v in variances])


def balance_log_variances(log_variances: Sequence[FloatArray]) -> list[FloatArray]:
    r"""Fix the scale of a product of per-axis variances: first axis absolute.

    :math:`D_1 \otimes D_2 = (c D_1) \otimes (D_2 / c)` for any :math:`c > 0`;
    the log-variances of every axis after the first are shifted to mean zero
    (geometric mean 1) and the first axis takes the shifts, so the product,
    and with it the likelihood, is unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = balance_log_variances([np.zeros(2), np.array([1.0, 3.0])])
    >>> a.tolist(), b.tolist()
    ([2.0, 2.0], [-1.0, 1.0])
    """
    parts = [np.array(x, dtype=float) for x in log_variances]
    for k in range(1, len(parts)):
        shift = float(np.mean(parts[k]))
        parts[k] -= shift
        parts[0] += shift
    return parts
