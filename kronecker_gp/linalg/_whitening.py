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
from kronecker_gp.linalg._eigenbasis import (
    GridPosterior,
    TraceCorrection,
    mode_gram,
)
from kronecker_gp.linalg._identities import kron_outer


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


def axis_noise_gradient(
    post: GridPosterior,
    noise_axes: Sequence[int],
    *,
    correction: TraceCorrection | None = None,
) -> FloatArray:
    r"""Return the LML gradient w.r.t. the per-axis log noise variances.

    Parameters
    ----------
    post : GridPosterior
        The whitened problem (noise 1) with its weights
        :math:`\tilde a = U^T (\tilde K_{oo} + I)^{-1} \tilde y` (zero-padded).
    noise_axes : sequence of int
        The axes whose variances are differentiated, in this order.
    correction : TraceCorrection, optional
        The missing-cell trace term of the whitened problem.

    Returns
    -------
    ndarray of shape (sum(n_d for d in noise_axes),)

    Notes
    -----
    For :math:`\eta_{d,i} = \log v_{d,i}`, :math:`\partial C / \partial
    \eta_{d,i} = D E_{d,i}` with :math:`E_{d,i}` the indicator of slice ``i``
    of axis ``d``. With :math:`\alpha = D^{-1/2} \tilde\alpha`,
    :math:`D \alpha^2 = \tilde\alpha^2` and :math:`\operatorname{diag}
    (C^{-1}) D = \operatorname{diag}((\tilde K + I)^{-1})`, so

    .. math::
        \frac{\partial L}{\partial \eta_{d,i}} = \tfrac12 \sum_{j \in
        \text{slice } i} \bigl(\tilde\alpha_j^2 - [(\tilde K + I)^{-1}]_{jj}
        \bigr).

    Summed over a slice, the other factors' eigenvectors cancel
    (:math:`U_e^T U_e = I`): with :math:`A = \tilde a` and :math:`G =
    1/(\lambda + 1)` as grids, the gradient is
    :math:`\tfrac12 \operatorname{diag}(U_d (A_{(d)} A_{(d)}^T -
    \operatorname{diag}(h_d)) U_d^T)`, :math:`h_d = \sum_{-d} G`: the
    :math:`M_d` of :func:`~kronecker_gp.linalg._eigenbasis.
    factor_gradient_matrix` with unit weights in place of the other factors'
    eigenvalues, and a missing-cell correction enters as there. Cost per
    noise axis: one GEMM of :math:`O(N n_d)` (:math:`\operatorname{diag}(U_d
    A_{(d)} A_{(d)}^T U_d^T)` is the row norms of :math:`U_d A_{(d)}`), plus
    :math:`O(n_d^3 + k N n_d)` with a correction of ``k`` columns; never an
    :math:`N \times N` array. On missing cells
    :math:`\tilde\alpha` and the zero-padded :math:`(\tilde K_{oo} + I)^{-1}`
    vanish (exactly with the exact correction; the Hutchinson estimate is
    unbiased there, as for the iid noise gradient).

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg._eigenbasis import factorize
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.standard_normal((3, 3)), rng.standard_normal((4, 4))
    >>> grams, y = [a @ a.T, b @ b.T], rng.standard_normal(12)
    >>> post, _ = factorize(grams, 1.0, y)
    >>> inv = np.linalg.inv(np.kron(*grams) + np.eye(12))
    >>> cell = ((inv @ y) ** 2 - np.diag(inv)).reshape(3, 4)
    >>> bool(np.allclose(axis_noise_gradient(post, [1]), 0.5 * cell.sum(axis=0)))
    True
    """
    shape = post.shape
    weights = [np.ones(n) for n in shape]
    alpha, inv = post.alpha_rot.reshape(shape), post.inv_lam.reshape(shape)
    parts = []
    for d in noise_axes:
        others = tuple(e for e in range(len(shape)) if e != d)
        u, h = post.eigvecs[d], inv.sum(axis=others)
        a = np.moveaxis(alpha, d, 0).reshape(shape[d], -1)
        if correction is None:
            # diag(U_d A A^T U_d^T) = row norms of U_d A: one GEMM, no n_d^3
            b = u @ a
            parts.append(0.5 * (np.einsum("ij,ij->i", b, b) - (u * u) @ h))
            continue
        inner = a @ a.T - np.diag(h)
        c = mode_gram(correction.a, correction.b, weights, d)
        inner += 0.5 * correction.scale * (c + c.T)
        parts.append(0.5 * np.einsum("ij,ij->i", u @ inner, u))
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


def kronecker_noise_factors(
    variances: FloatArray, rtol: float = 1e-12
) -> list[FloatArray] | None:
    r"""Return per-axis vectors whose Kronecker product is ``variances``, or None.

    Parameters
    ----------
    variances : ndarray of shape (n_1, ..., n_D)
        Positive per-cell variances on a grid (no NaN).
    rtol : float, default=1e-12
        Tolerance of the test, relative to the largest absolute log-variance.

    Returns
    -------
    list of ndarray of shape (n_d,) or None
        One vector per axis (the first carries the scale, the others have
        geometric mean 1) when :math:`\log V` is a sum of per-axis terms to
        ``rtol``; None otherwise.

    Notes
    -----
    :math:`V = \bigotimes_d v_d` exactly when :math:`\log V_{i_1 \dots i_D} =
    \sum_d \log v_{d, i_d}` (a rank-one grid of positive values); the
    per-axis terms are the log grid's axis means. Cost :math:`O(N D)`.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.outer([1.0, 4.0], [0.5, 1.0, 2.0])
    >>> [x.tolist() for x in kronecker_noise_factors(v)]
    [[1.0, 4.0], [0.5, 1.0, 2.0]]
    >>> v[0, 0] *= 1.01
    >>> kronecker_noise_factors(v) is None
    True
    """
    logs = np.log(np.asarray(variances, dtype=float))
    n_axes = logs.ndim
    total = float(logs.mean())
    parts = []
    fitted = np.full(logs.shape, -(n_axes - 1) * total)
    for d in range(n_axes):
        others = tuple(e for e in range(n_axes) if e != d)
        part = logs.mean(axis=others)
        parts.append(part)
        fitted = fitted + part.reshape([-1 if e == d else 1 for e in range(n_axes)])
    if np.abs(logs - fitted).max() > rtol * max(1.0, float(np.abs(logs).max())):
        return None
    parts[0] = parts[0] - (n_axes - 1) * total
    return [np.exp(x) for x in balance_log_variances(parts)]
