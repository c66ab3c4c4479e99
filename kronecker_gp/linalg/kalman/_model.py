"""Linear-Gaussian state-space models of one axis and their discretisation."""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray


@dataclass(frozen=True)
class StateSpaceModel:
    r"""A continuous-time linear-Gaussian state-space model and its derivatives.

    Attributes
    ----------
    F : ndarray of shape (d, d)
        Feedback matrix (block diagonal over the kernel's additive terms).
    L : ndarray of shape (d, m)
        Noise effect matrix, one column per term.
    Qc : ndarray of shape (m, m)
        Diagonal spectral density of the white noise.
    Pinf : ndarray of shape (d, d)
        Stationary state covariance; ``H expm(F |tau|) Pinf H^T = k(tau)``.
    H : ndarray of shape (1, d)
        Measurement matrix.
    dF, dQc, dPinf : ndarray of shape (n_theta, ...)
        Derivatives of ``F``, ``Qc`` and ``Pinf`` w.r.t. the kernel's free
        log-hyperparameters, in the order of ``kernel.theta``.
    exponents : ndarray of shape (d,)
        :math:`E`: the power of :math:`\lambda` scaling each state.
    lams : ndarray of shape (d,)
        Each state's block rate :math:`\lambda` (0 for a constant block).
    block_starts : tuple of int
        First state index of every block.
    ell_masks, var_masks : ndarray of shape (n_theta, d)
        Which states' blocks depend on each hyperparameter through a length
        scale or through a variance.
    """

    F: FloatArray
    L: FloatArray
    Qc: FloatArray
    Pinf: FloatArray
    H: FloatArray
    dF: FloatArray
    dQc: FloatArray
    dPinf: FloatArray
    exponents: FloatArray
    lams: FloatArray
    block_starts: tuple[int, ...]
    ell_masks: FloatArray
    var_masks: FloatArray

    @property
    def state_dim(self) -> int:
        """The state dimension ``d``."""
        return int(self.F.shape[0])

    @property
    def n_theta(self) -> int:
        """The number of free log-hyperparameters."""
        return int(self.dF.shape[0])


def _transition(model: StateSpaceModel, gaps: FloatArray) -> FloatArray:
    """Return ``expm(F * gap)`` for every gap, shape (G, d, d), in closed form."""
    d = model.state_dim
    out = np.zeros((gaps.size, d, d))
    ends = (*model.block_starts[1:], d)
    for s, e in zip(model.block_starts, ends):
        lam, n = model.lams[s], e - s
        nil = model.F[s:e, s:e] + lam * np.eye(n)
        powers = [np.linalg.matrix_power(nil, j) / factorial(j) for j in range(n)]
        coef = np.exp(-lam * gaps)[:, None] * gaps[:, None] ** np.arange(n)
        out[:, s:e, s:e] = np.einsum("gj,jab->gab", coef, np.stack(powers))
    return out


def discretize(
    model: StateSpaceModel, gaps: ArrayLike, *, eval_gradient: bool = False
) -> tuple[FloatArray, ...]:
    r"""Return the discrete transitions and process noises for time gaps.

    Parameters
    ----------
    model : StateSpaceModel
        From :func:`kernel_to_state_space`.
    gaps : array-like of shape (G,)
        Non-negative time gaps (unique values suffice: a regular grid has one).
    eval_gradient : bool, default=False
        Also return the derivatives w.r.t. the log-hyperparameters.

    Returns
    -------
    A : ndarray of shape (G, d, d)
        :math:`e^{F \Delta}`.
    Q : ndarray of shape (G, d, d)
        :math:`P_\infty - A P_\infty A^T`.
    dA, dQ : ndarray of shape (G, n_theta, d, d)
        Their derivatives, if ``eval_gradient``.

    Notes
    -----
    Closed forms, vectorised over the gaps: :math:`A = e^{-\lambda \Delta}
    \sum_{j<d_b} (\Delta N)^j / j!` per block with the nilpotent :math:`N =
    F + \lambda I`, :math:`\partial A / \partial \log \ell = -(E A - A E +
    \Delta F A)` and :math:`\partial Q = \partial P_\infty - \partial A
    P_\infty A^T - A \partial P_\infty A^T - A P_\infty \partial A^T`.
    Cost :math:`O(G (d^3 + n_\theta d^3))`.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.linalg import expm
    >>> from sklearn.gaussian_process.kernels import Matern
    >>> from kronecker_gp.kernels._markov import kernel_to_state_space
    >>> ssm = kernel_to_state_space(Matern(length_scale=2.0, nu=2.5))
    >>> A, Q = discretize(ssm, [0.5, 3.0])
    >>> bool(np.allclose(A[1], expm(ssm.F * 3.0)))
    True
    """
    gaps = np.asarray(gaps, dtype=np.float64).reshape(-1)
    a = _transition(model, gaps)
    apa = a @ model.Pinf @ a.transpose(0, 2, 1)
    q = model.Pinf - 0.5 * (apa + apa.transpose(0, 2, 1))
    if not eval_gradient:
        return a, q
    e = model.exponents
    rate = e[:, None] * a - a * e[None, :] + gaps[:, None, None] * (model.F @ a)
    da = -model.ell_masks[None, :, :, None] * rate[:, None]
    cross = da @ (model.Pinf @ a.transpose(0, 2, 1))[:, None]
    dq = model.dPinf - a[:, None] @ model.dPinf @ a.transpose(0, 2, 1)[:, None]
    dq = dq - cross - cross.transpose(0, 1, 3, 2)
    return a, q, da, dq
