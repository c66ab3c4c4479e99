r"""Pure functions: exact GP algebra for ``C (x) R + S (x) O`` and missing cells.

The covariance of ``T`` outputs at ``n`` inputs, stacked task-major (the
``(T, n)`` grid ``Y`` flattened in C order), is

.. math:: \Sigma = C \otimes R + S \otimes O

with ``C`` the task (signal) covariance, ``R`` the input Gram, ``S`` the noise
task covariance and ``O`` the noise input covariance (usually ``I``); ``S`` and
``O`` are positive definite. With the generalised eigenpairs
:math:`C V_1 = S V_1 \operatorname{diag}(w_1)`, :math:`V_1^T S V_1 = I` and
:math:`R V_2 = O V_2 \operatorname{diag}(w_2)`, :math:`V_2^T O V_2 = I`,

.. math::
    \Sigma^{-1} = (V_1 \otimes V_2)\,(w_1 \otimes w_2 + 1)^{-1}\,
    (V_1 \otimes V_2)^T, \qquad
    \log|\Sigma| = n \log|S| + T \log|O| + \textstyle\sum \log(w_1 \otimes w_2 + 1).

For ICM with per-task noise (:math:`C = B`, :math:`R = K`,
:math:`S = \operatorname{diag}(\sigma^2)`, :math:`O = I`) this is the noise
whitening of Rakitsch et al. (2013): :math:`\tilde B = S^{-1/2} B S^{-1/2}`,
then the eigendecompositions of :math:`\tilde B` and :math:`K`. Everything
costs :math:`O(T^3 + n^3 + T n (T + n))`; no :math:`Tn \times Tn` array is
formed.

Missing outputs (heterotopic data, ``m`` cells of the ``(T, n)`` grid) use the
Schur complement of the complete-grid inverse :math:`P = \Sigma^{-1}`: with
:math:`Z = P E_m` and :math:`C_m = E_m^T P E_m` (``m x m``), the zero-padded
:math:`\Sigma_{oo}^{-1}` is :math:`P - Z C_m^{-1} Z^T` and
:math:`\log|\Sigma_{oo}| = \log|\Sigma| + \log|C_m|`.

References
----------
.. [1] Rakitsch, B., Lippert, C., Borgwardt, K. and Stegle, O. (2013). It is all
   in the noise: Efficient multi-task Gaussian process inference with
   structured residuals. NeurIPS 26.
.. [2] Stegle, O., Lippert, C., Mooij, J. M., Lawrence, N. D. and Borgwardt, K.
   (2011). Efficient inference in matrix-variate Gaussian models with iid
   observation noise. NeurIPS 24.
.. [3] Rasmussen, C. E. and Williams, C. K. I. (2006). Gaussian Processes for
   Machine Learning. MIT Press, eq. 5.9 (the gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid
from kronecker_gp._typing import BoolArray, FloatArray, IntArray
from kronecker_gp.linalg import face_split_gram, factor_eigh
from kronecker_gp.linalg._schur import MissingCellSchur
from kronecker_gp.solvers._protocol import Factorization, SolverInfo

_LOG_2PI = _budgets.LOG_2PI
#: Largest (m, T, test-chunk) intermediate built at once in the variance.
_CHUNK_ENTRIES = 2**23


def whitened_eigh(
    c: FloatArray, s: FloatArray | None, name: str
) -> tuple[FloatArray, FloatArray, float]:
    r"""Generalised eigenpairs of ``(c, s)`` by whitening with ``s``.

    Parameters
    ----------
    c : ndarray of shape (k, k)
        Symmetric positive semi-definite matrix.
    s : ndarray of shape (k,) or (k, k), or None
        Positive-definite metric: a diagonal (1-D), a full matrix, or ``None``
        for the identity.
    name : str
        Name of ``c`` for error messages.

    Returns
    -------
    w : ndarray of shape (k,)
        Eigenvalues (clipped at zero).
    v : ndarray of shape (k, k)
        ``v^T c v = diag(w)`` and ``v^T s v = I``.
    logdet_s : float
        ``log|s|``.

    Raises
    ------
    ValueError
        If ``s`` is not positive definite or ``c`` is not PSD.

    Notes
    -----
    With :math:`s = L L^T`, :math:`\tilde c = L^{-1} c L^{-T} = U W U^T` and
    :math:`v = L^{-T} U`; for diagonal ``s`` this is
    :math:`s^{-1/2} c\, s^{-1/2}` (Rakitsch et al. 2013). Cost :math:`O(k^3)`.

    Examples
    --------
    >>> import numpy as np
    >>> c, s = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, 4.0])
    >>> w, v, logdet = whitened_eigh(c, s, "c")
    >>> bool(np.allclose(v.T @ c @ v, np.diag(w)))
    True
    >>> bool(np.allclose(v.T @ np.diag(s) @ v, np.eye(2)))
    True
    """
    if s is None:
        w, u = factor_eigh(c, name)
        return w, u, 0.0
    if s.ndim == 1:
        if np.any(s <= 0):
            raise ValueError(f"the noise of {name} must be positive; got {s!r}.")
        d = np.sqrt(s)
        w, u = factor_eigh(c / np.outer(d, d), f"whitened {name}")
        return w, u / d[:, None], float(np.sum(np.log(s)))
    try:
        low = scipy.linalg.cholesky(s, lower=True)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the noise covariance paired with {name} is not positive definite; "
            "increase its diagonal (noise or kappa)."
        ) from None
    half = scipy.linalg.solve_triangular(low, c, lower=True)
    tilde = scipy.linalg.solve_triangular(low, half.T, lower=True)
    w, u = factor_eigh(0.5 * (tilde + tilde.T), f"whitened {name}")
    v = scipy.linalg.solve_triangular(low.T, u, lower=False)
    return w, v, float(2.0 * np.sum(np.log(np.diag(low))))


@dataclass(frozen=True)
class TwoKronEigen:
    """Generalised eigenpairs of ``C (x) R + S (x) O`` (see the module notes).

    Attributes
    ----------
    w1, v1 : ndarray of shape (T,), (T, T)
        Task eigenpairs: ``v1^T C v1 = diag(w1)``, ``v1^T S v1 = I``.
    w2, v2 : ndarray of shape (n,), (n, n)
        Input eigenpairs: ``v2^T R v2 = diag(w2)``, ``v2^T O v2 = I``.
    logdet_s, logdet_o : float
        ``log|S|`` and ``log|O|``.
    """

    w1: FloatArray
    v1: FloatArray
    w2: FloatArray
    v2: FloatArray
    logdet_s: float
    logdet_o: float

    @property
    def inv_lam(self) -> FloatArray:
        """``1 / (w1 (x) w2 + 1)`` as a (T, n) grid."""
        return 1.0 / (np.outer(self.w1, self.w2) + 1.0)

    def logdet(self) -> float:
        """Return ``log|C (x) R + S (x) O|``."""
        # log|S (x) O| + sum log(w1 (x) w2 + 1)
        t, n = self.w1.size, self.w2.size
        lam = np.outer(self.w1, self.w2) + 1.0
        return n * self.logdet_s + t * self.logdet_o + float(np.sum(np.log(lam)))

    def rotate(self, y: FloatArray) -> FloatArray:
        """Return ``v1^T Y v2`` for a (T, n) grid or a stack (k, T, n)."""
        return np.matmul(np.matmul(self.v1.T, y), self.v2)

    def unrotate(self, a: FloatArray) -> FloatArray:
        """Return ``v1 A v2^T`` for a (T, n) grid or a stack (k, T, n)."""
        return np.matmul(np.matmul(self.v1, a), self.v2.T)

    def solve(self, y: FloatArray) -> FloatArray:
        """Return ``Sigma^{-1} y`` for a (T, n) grid or a stack (k, T, n)."""
        # Sigma^{-1} = (V1 (x) V2) diag(inv_lam) (V1 (x) V2)^T
        return self.unrotate(self.inv_lam * self.rotate(y))


def two_kron_eigh(
    c: FloatArray,
    r: FloatArray,
    s: FloatArray | None,
    o: FloatArray | None = None,
) -> TwoKronEigen:
    r"""Factorise ``C (x) R + S (x) O`` through two small generalised eigenproblems.

    Parameters
    ----------
    c : ndarray of shape (T, T)
        Task (signal) covariance, PSD.
    r : ndarray of shape (n, n)
        Input Gram, PSD.
    s : ndarray of shape (T,) or (T, T)
        Noise task covariance, positive definite (1-D: diagonal).
    o : ndarray of shape (n,) or (n, n), default=None
        Noise input covariance, positive definite; ``None`` is the identity.

    Returns
    -------
    TwoKronEigen
        The eigenpairs.

    Notes
    -----
    Cost :math:`O(T^3 + n^3)`: one whitened eigendecomposition per side
    (:func:`whitened_eigh`).

    Examples
    --------
    >>> import numpy as np
    >>> c, r = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.5], [0.5, 1.0]])
    >>> eig = two_kron_eigh(c, r, np.array([0.1, 0.2]))
    >>> dense = np.kron(c, r) + np.kron(np.diag([0.1, 0.2]), np.eye(2))
    >>> bool(np.isclose(eig.logdet(), np.linalg.slogdet(dense)[1]))
    True
    """
    w1, v1, logdet_s = whitened_eigh(c, s, "the task covariance")
    w2, v2, logdet_o = whitened_eigh(r, o, "the input Gram matrix")
    return TwoKronEigen(w1, v1, w2, v2, logdet_s, logdet_o)


@dataclass(frozen=True)
class MissingCells:
    r"""The Schur-complement correction for missing cells of the (T, n) grid.

    Attributes
    ----------
    tasks, inputs : ndarray of int of shape (m,)
        Grid coordinates of the missing cells.
    schur : MissingCellSchur
        The factored :math:`C_m = E_m^T \Sigma^{-1} E_m` (exact variant).
    z_hat : ndarray of shape (m, T, n)
        Rotated ``Z L^{-T}`` (``Z = Sigma^{-1} E_m``, ``C_m = L L^T``), one
        (T, n) grid per column.
    """

    tasks: IntArray
    inputs: IntArray
    schur: MissingCellSchur
    z_hat: FloatArray

    def logdet(self) -> float:
        """Return ``log|C_m|``."""
        return self.schur.logdet()


@dataclass(frozen=True)
class MultiTaskPosterior:
    """Eigenpairs, rotated weights and the missing-cell correction.

    Attributes
    ----------
    eig : TwoKronEigen
        Complete-grid eigenpairs.
    alpha_rot : ndarray of shape (T, n)
        ``v1^{-1} A v2^{-T}``, the rotated weights: ``A = v1 alpha_rot v2^T``
        is ``Sigma_oo^{-1} y`` zero-padded on missing cells.
    missing : MissingCells or None
        The Schur-complement correction (None for complete data).
    """

    eig: TwoKronEigen
    alpha_rot: FloatArray
    missing: MissingCells | None

    def alpha(self) -> FloatArray:
        """Return ``Sigma_oo^{-1} y`` as a (T, n) grid, zeros on missing cells."""
        return self.eig.unrotate(self.alpha_rot)


@dataclass(frozen=True)
class _TwoKronSolve:
    """The complete-grid solve of ``C (x) R + S (x) O`` on flat grid columns."""

    eig: TwoKronEigen

    def solve_full(self, x: FloatArray) -> FloatArray:
        """Return ``Sigma^{-1} X`` for grid columns ``X`` (T n, k)."""
        grids = np.ascontiguousarray(x.T).reshape(x.shape[1], *self.eig.inv_lam.shape)
        return self.eig.solve(grids).reshape(x.shape[1], -1).T

    def columns(self, cells: IntArray) -> FloatArray:
        """Return ``Sigma^{-1} E_cells`` (T n, k): the rotated columns come free."""
        g = self.eig.inv_lam
        t, j = np.unravel_index(cells, g.shape)
        rot = g[None] * (self.eig.v1[t][:, :, None] * self.eig.v2[j][:, None, :])
        return self.eig.unrotate(rot).reshape(cells.size, -1).T


def missing_cells(eig: TwoKronEigen, tasks: IntArray, inputs: IntArray) -> MissingCells:
    r"""Build ``C_m``, its Cholesky factor and the rotated ``Z L^{-T}``.

    Notes
    -----
    :math:`C_m` is the Schur complement of
    :class:`~kronecker_gp.linalg._schur.MissingCellSchur` over the two-Kronecker
    solve. Its columns :math:`\Sigma^{-1} E_m` come rotated for free
    (:math:`G \circ (V_1[t_a] \otimes V_2[j_a])`), so it is formed either as
    the Gram ``F diag(G) F^T`` of the rows ``F_a = V_1[t_a] (x) V_2[j_a]``,
    :math:`O(m^2 T n)`, or by mode products of those columns,
    :math:`O(m T n (T + n))`, whichever is cheaper; then :math:`O(m^3)` for
    the factor. Memory :math:`O(m T n)`.
    """
    g = eig.inv_lam
    m = tasks.size
    two = _TwoKronSolve(eig)
    schur = MissingCellSchur(
        two.solve_full,
        np.ravel_multi_index((tasks, inputs), g.shape),
        g.size,
        columns=two.columns,
    )
    a1, a2 = eig.v1[tasks], eig.v2[inputs]  # rows of V1 (x) V2 at the cells
    if m <= sum(g.shape):
        # C_m = F diag(inv_lam) F^T, F_a = kron(V1[t_a], V2[j_a]): one GEMM
        c_m = face_split_gram([a1, a2], g.reshape(-1))
        schur.set_pmm(0.5 * (c_m + c_m.T))
    # rotated Z columns: inv_lam * outer(V1[t_a], V2[j_a]); then L^{-1} mixes them
    z = g[None] * (a1[:, :, None] * a2[:, None, :])
    z_hat = schur.half_inv(z.reshape(m, -1))
    return MissingCells(tasks, inputs, schur, z_hat.reshape(z.shape))


def schur_solve_rot(
    eig: TwoKronEigen, missing: MissingCells | None, y_rot: FloatArray
) -> FloatArray:
    r"""Return the rotated ``Sigma_oo^{-1} y`` (zero-padded) from the rotated ``y``.

    Parameters
    ----------
    eig : TwoKronEigen
        Complete-grid eigenpairs.
    missing : MissingCells or None
        The missing-cell correction.
    y_rot : ndarray of shape (T, n)
        ``v1^T Y v2`` of the zero-filled targets.

    Returns
    -------
    ndarray of shape (T, n)
        ``A_rot`` with ``v1 A_rot v2^T`` the zero-padded solution.

    Notes
    -----
    :math:`\Sigma_{oo}^{-1} y = P y - Z C_m^{-1} Z^T y` (padded), with
    :math:`Z^T y = (P y)_m`; cost :math:`O(T n (T + n) + m T n)`.
    """
    alpha_rot = eig.inv_lam * y_rot
    if missing is None:
        return alpha_rot
    r = eig.unrotate(alpha_rot)[missing.tasks, missing.inputs]
    u = missing.schur.half_inv(r)
    return alpha_rot - np.tensordot(u, missing.z_hat, axes=1)


def multitask_factorize(
    eig: TwoKronEigen, y: FloatArray, observed: BoolArray | None = None
) -> tuple[MultiTaskPosterior, float]:
    r"""Return the posterior weights and the exact log marginal likelihood.

    Parameters
    ----------
    eig : TwoKronEigen
        From :func:`two_kron_eigh`.
    y : ndarray of shape (T, n)
        Targets on the grid (values on missing cells are ignored).
    observed : ndarray of bool of shape (T, n), default=None
        Observed cells; ``None`` means all.

    Returns
    -------
    post : MultiTaskPosterior
        The factorisation.
    lml : float
        :math:`-\tfrac12 y_o^T \Sigma_{oo}^{-1} y_o - \tfrac12 \log|\Sigma_{oo}|
        - \tfrac{N_o}2 \log 2\pi`.

    Notes
    -----
    Complete data: :math:`O(T n (T + n))` after the eigendecompositions. With
    ``m`` missing cells, add :math:`O(m^2 T n + m^3)` for the Schur complement
    (``m`` complete-grid solves, formed in the eigenbasis).
    """
    y = np.where(observed, y, 0.0) if observed is not None else y
    y_rot = eig.rotate(y)
    logdet = eig.logdet()
    missing = None
    n_obs = y.size
    if observed is not None and not observed.all():
        tasks, inputs = np.nonzero(~observed)
        missing = missing_cells(eig, tasks, inputs)
        logdet += missing.logdet()
        n_obs -= tasks.size
    alpha_rot = schur_solve_rot(eig, missing, y_rot)
    quad = float(np.sum(y_rot * alpha_rot))
    lml = -0.5 * quad - 0.5 * logdet - 0.5 * n_obs * _LOG_2PI
    return MultiTaskPosterior(eig, alpha_rot, missing), lml


def gradient_matrices(post: MultiTaskPosterior, which: str) -> FloatArray:
    r"""Return ``M`` with ``dLML = sum(dX * M)`` for ``X`` one of ``C, R, S, O``.

    Parameters
    ----------
    post : MultiTaskPosterior
        From :func:`multitask_factorize`.
    which : {"C", "R", "S", "O"}
        The Kronecker factor whose derivative is taken.

    Returns
    -------
    ndarray of shape (T, T) for C and S, (n, n) for R and O
        The symmetric gradient matrix.

    Notes
    -----
    :math:`\partial L = \tfrac12 a^T \partial\Sigma\, a - \tfrac12
    \operatorname{tr}(\Sigma_{oo}^{-1} \partial\Sigma_{oo})`. For
    :math:`\partial\Sigma = \partial C \otimes R`, in the eigenbasis
    (:math:`\hat A` the rotated weights, :math:`G = (w_1 \otimes w_2 + 1)^{-1}`):

    .. math::
        M_C = \tfrac12 V_1 \big(\hat A \operatorname{diag}(w_2) \hat A^T
        - \operatorname{diag}(G w_2)
        + \textstyle\sum_a \hat Z_a \operatorname{diag}(w_2) \hat Z_a^T\big) V_1^T,

    the last sum being the missing-cell correction. ``R`` swaps the roles of
    the sides; ``S`` and ``O`` replace ``w`` by ones. Cost :math:`O(T^2 n)`
    for ``C``/``S`` and :math:`O(T n^2 + n^3)` for ``R``/``O``, plus
    :math:`O(m T n (T + n))` with missing cells.
    """
    eig, a, g = post.eig, post.alpha_rot, post.eig.inv_lam
    z = post.missing.z_hat if post.missing is not None else None
    if which in ("C", "S"):
        w = eig.w2 if which == "C" else np.ones_like(eig.w2)
        inner = (a * w) @ a.T - np.diag(g @ w)
        if z is not None:
            # sum_a Z_a diag(w) Z_a^T as one GEMM over the (a, n) pairs
            inner += np.tensordot(z * w, z, axes=([0, 2], [0, 2]))
        v = eig.v1
    else:
        w = eig.w1 if which == "R" else np.ones_like(eig.w1)
        inner = (a.T * w) @ a - np.diag(w @ g)
        if z is not None:
            # sum_a Z_a^T diag(w) Z_a as one GEMM over the (a, i) pairs
            inner += np.tensordot(z * w[None, :, None], z, axes=([0, 1], [0, 1]))
        v = eig.v2
    return 0.5 * (v @ inner @ v.T)


def trace_matrix(
    eig: TwoKronEigen, missing: MissingCells | None, side: str, other_rot: FloatArray
) -> FloatArray:
    r"""Return ``T`` with ``tr(Sigma_oo^{-1} dSigma_oo) = sum(dX * T)``.

    Parameters
    ----------
    eig : TwoKronEigen
        Eigenpairs of ``Sigma``.
    missing : MissingCells or None
        The missing-cell correction.
    side : {"task", "input"}
        ``"task"``: :math:`d\Sigma = dX \otimes F`; ``"input"``:
        :math:`d\Sigma = F \otimes dX`.
    other_rot : ndarray
        The fixed factor ``F`` in the eigenbasis of the other side:
        ``v2^T F v2`` (n, n) for ``"task"``, ``v1^T F v1`` (T, T) for
        ``"input"``.

    Returns
    -------
    ndarray of shape (T, T) for "task", (n, n) for "input"

    Notes
    -----
    For ``"task"``, :math:`T = V_1 (\operatorname{diag}(G \operatorname{diag}
    F_{rot}) - \sum_a \hat Z_a F_{rot} \hat Z_a^T) V_1^T`; ``"input"``
    swaps the sides. Cost :math:`O(T^2 n)` or :math:`O(T n^2 + n^3)`, plus
    :math:`O(m T n (T + n))` with missing cells.
    """
    g = eig.inv_lam
    d = np.diag(other_rot)
    if side == "task":
        inner = np.diag(g @ d)
        if missing is not None:
            zf = np.matmul(missing.z_hat, other_rot)
            inner -= np.tensordot(zf, missing.z_hat, axes=([0, 2], [0, 2]))
        return eig.v1 @ inner @ eig.v1.T
    inner = np.diag(d @ g)
    if missing is not None:
        fz = np.matmul(other_rot, missing.z_hat)
        inner -= np.tensordot(missing.z_hat, fz, axes=([0, 1], [0, 1]))
    return eig.v2 @ inner @ eig.v2.T


def predict_moments(
    post: MultiTaskPosterior,
    b: FloatArray,
    cross: FloatArray,
    prior_diag: FloatArray | None,
) -> tuple[FloatArray, FloatArray | None]:
    r"""Posterior mean and variance of every task's latent function at test inputs.

    Parameters
    ----------
    post : MultiTaskPosterior
        The training factorisation.
    b : ndarray of shape (T, T)
        Task covariance ``C`` (the cross-covariance is ``b (x) k(x*, X)``).
    cross : ndarray of shape (m, n)
        ``k(x*, X)`` for the input kernel.
    prior_diag : ndarray of shape (m,) or None
        ``k(x*, x*)``; None skips the variance.

    Returns
    -------
    mean : ndarray of shape (m, T)
    var : ndarray of shape (m, T) or None

    Notes
    -----
    Mean :math:`K_* A^T B`. Variance :math:`B_{tt} k_{**} - c_t^T
    \Sigma_{oo}^{-1} c_t` with :math:`c_t = B_{:t} \otimes k_*`: in the
    eigenbasis, :math:`\sum_{ik} G_{ik} (V_1^T B)_{it}^2 (K_* V_2)_{*k}^2` minus
    the missing-cell term :math:`\sum_a ((V_1^T B)_{:t}^T \hat Z_a (K_* V_2)^T)^2`.
    Cost :math:`O(m n (n + T))`, plus :math:`O(m\, m_{miss} T n)` with missing
    cells.
    """
    mean = cross @ post.alpha().T @ b
    if prior_diag is None:
        return mean, None
    p1 = post.eig.v1.T @ b  # (T_i, T_t)
    q = cross @ post.eig.v2  # (m, n)
    reduction = ((q * q) @ post.eig.inv_lam.T) @ (p1 * p1)
    if post.missing is not None:
        z = post.missing.z_hat
        step = max(1, _CHUNK_ENTRIES // max(1, z.shape[0] * z.shape[1]))
        for lo in range(0, q.shape[0], step):
            rows = slice(lo, lo + step)
            proj = np.einsum("it,aik,mk->amt", p1, z, q[rows], optimize=True)
            reduction[rows] -= np.sum(proj**2, axis=0)
    var = prior_diag[:, None] * np.diag(b)[None, :] - reduction
    return mean, var


def predict_joint_covariance(
    post: MultiTaskPosterior,
    b: FloatArray,
    cross: FloatArray,
    prior: FloatArray,
) -> FloatArray:
    r"""Joint posterior covariance of all tasks at a few test inputs.

    Parameters
    ----------
    post : MultiTaskPosterior
        The training factorisation.
    b : ndarray of shape (T, T)
        Task covariance.
    cross : ndarray of shape (m, n)
        ``k(x*, X)``.
    prior : ndarray of shape (m, m)
        ``k(x*, x*)``.

    Returns
    -------
    ndarray of shape (m, T, m, T)
        :math:`\operatorname{Cov}[f_t(x_i), f_u(x_j)]`: the bilinear form of
        :func:`predict_moments`' variance, :math:`B_{tu} k_{ij} - \sum_{ik}
        G_{ik} (V_1^T B)_{it} (V_1^T B)_{iu} (K_* V_2)_{ik} (K_* V_2)_{jk}`
        plus the missing-cell term. Cost :math:`O(T m^2 (n + T^2))`, memory
        :math:`O(m^2 T^2)`.
    """
    p1 = post.eig.v1.T @ b  # (T_i, T)
    q = cross @ post.eig.v2  # (m, n)
    m, t = q.shape[0], b.shape[0]
    red = np.zeros((m, t, m, t))
    for i, g in enumerate(post.eig.inv_lam):
        red += np.einsum("mn,t,u->mtnu", (q * g) @ q.T, p1[i], p1[i])
    if post.missing is not None:
        proj = np.einsum("it,aik,mk->amt", p1, post.missing.z_hat, q, optimize=True)
        red -= np.einsum("amt,anu->mtnu", proj, proj)
    return np.asarray(np.einsum("tu,mn->mtnu", b, prior) - red)


class MultiTaskFactorization(Factorization):
    r"""A multi-task fit at fixed hyperparameters (scattered inputs; immutable).

    The :class:`~kronecker_gp.solvers._protocol.Factorization` of the
    multi-task routes. The input kernels and the training inputs are part of
    it (cloned at their fitted hyperparameters), so the protocol's ``kernel``
    argument is ignored and ``parts`` is ``[X]``, the query inputs. Means
    have shape (M, T), variances (M, T) and joint covariances (M, T, M, T),
    in the solver's (normalised) units. Subclasses supply :meth:`alpha` and
    :meth:`predict_points`; grids are their rows.
    """

    lml: float
    grad: FloatArray | None
    info: SolverInfo
    #: Standard error of an estimated LML (0 when exact).
    lml_stderr: float = 0.0

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and (if asked) variances at the rows of ``test``, flat.

        Flat in C order over (grid cell, task).
        """
        mean, var = self.predict_points(kernel, [test.to_rows()], std=std, cov=False)
        return mean.reshape(-1), None if var is None else var.reshape(-1)

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Return joint posterior samples at the rows of ``test`` (cell, task), flat.

        Shape ``(test.size * T, n_samples)``, from the joint covariance (small
        grids: memory :math:`O((M T)^2)`).
        """
        mean, joint = self.predict_points(kernel, [test.to_rows()], std=False, cov=True)
        assert joint is not None
        size = mean.size
        draws = rng.multivariate_normal(
            mean.reshape(-1), joint.reshape(size, size), n_samples
        )
        return np.asarray(draws.T)


class ICMFactorization(MultiTaskFactorization):
    """The exact intrinsic-coregionalisation route (two-Kronecker algebra + Schur).

    Parameters
    ----------
    post : MultiTaskPosterior
        The factorisation of :func:`multitask_factorize`.
    lml : float
        Exact log marginal likelihood.
    grad : ndarray or None
        Its gradient.
    task_cov : ndarray of shape (T, T)
        Task covariance ``B`` at these hyperparameters.
    kernel : sklearn Kernel
        Input kernel at these hyperparameters (cloned).
    X_train : ndarray of shape (n, n_features)
        Training inputs.
    """

    def __init__(
        self,
        post: MultiTaskPosterior,
        lml: float,
        grad: FloatArray | None,
        *,
        task_cov: FloatArray,
        kernel: Kernel,
        X_train: FloatArray,
    ) -> None:
        self.post, self.lml, self.grad = post, lml, grad
        self.task_cov = task_cov
        self.kernel = kernel.clone_with_theta(kernel.theta)
        self.X_train = X_train
        n_missing = 0 if post.missing is None else int(post.missing.tasks.size)
        self.info = SolverInfo("icm-exact", n_missing)

    def alpha(self) -> FloatArray:
        """Return ``Sigma_oo^{-1} y`` as a (T, n) grid, zeros on missing cells."""
        return self.post.alpha()

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean (M, T) and variances (M, T) or joint covariance."""
        X = parts[0]
        cross = np.asarray(self.kernel(X, self.X_train))
        if cov:
            mean = predict_moments(self.post, self.task_cov, cross, None)[0]
            prior = np.asarray(self.kernel(X))
            joint = predict_joint_covariance(self.post, self.task_cov, cross, prior)
            return mean, joint
        prior_diag = self.kernel.diag(X) if std else None
        return predict_moments(self.post, self.task_cov, cross, prior_diag)


__all__ = [
    "ICMFactorization",
    "MissingCells",
    "MultiTaskFactorization",
    "missing_cells",
    "schur_solve_rot",
    "trace_matrix",
    "MultiTaskPosterior",
    "TwoKronEigen",
    "gradient_matrices",
    "multitask_factorize",
    "predict_joint_covariance",
    "predict_moments",
    "two_kron_eigh",
    "whitened_eigh",
]
