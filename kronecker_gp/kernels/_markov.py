r"""Pure functions: Markov kernels on one axis as linear-Gaussian state-space models.

A stationary kernel :math:`k(\tau)` on a 1-D axis is *Markov* when
:math:`f(t) = H x(t)` for a finite-dimensional state obeying the linear SDE
:math:`\dot x = F x + L w(t)`, :math:`w` white noise with spectral density
:math:`Q_c`. Then :math:`k(\tau) = H e^{F|\tau|} P_\infty H^T` with the
stationary covariance :math:`P_\infty` (the solution of
:math:`F P_\infty + P_\infty F^T + L Q_c L^T = 0`), and sampling the process
at increasing times :math:`t_1 \le \dots \le t_n` is the discrete model
:math:`x_k = A_k x_{k-1} + q_k`, :math:`q_k \sim N(0, Q_k)` with

.. math::
    A_k = e^{F \Delta_k}, \qquad Q_k = P_\infty - A_k P_\infty A_k^T,
    \qquad \Delta_k = t_k - t_{k-1}.

The Matern kernels with :math:`\nu = p + 1/2`, :math:`p \in \{0, 1, 2\}`
(scikit-learn's ``Matern(nu=0.5 | 1.5 | 2.5)``), times ``ConstantKernel``, and
sums of such terms are exactly Markov; a sum stacks the terms' states
(block-diagonal :math:`F`, :math:`P_\infty`; :math:`H` the sum of the blocks'
first coordinates), a bare ``ConstantKernel`` term is a random constant
(:math:`F = 0`, :math:`Q_c = 0`).

With :math:`\lambda = \sqrt{2\nu}/\ell` and :math:`D = \operatorname{diag}(1,
\lambda, \lambda^2, \dots)` a Matern block is :math:`F = \lambda D F_1
D^{-1}`, :math:`P_\infty = \sigma^2 D P_1 D` for fixed :math:`F_1, P_1`, so
with :math:`E = \operatorname{diag}(0, 1, 2, \dots)`

.. math::
    \frac{\partial A}{\partial \log \lambda} = E A - A E + \Delta F A, \qquad
    \frac{\partial P_\infty}{\partial \log \lambda} = E P_\infty + P_\infty E,

and :math:`\partial \log \lambda / \partial \log \ell = -1`. :math:`F +
\lambda I` is nilpotent (the characteristic polynomial is
:math:`(s + \lambda)^{p+1}`), so :math:`A = e^{-\lambda \Delta}
\sum_{j \le p} (\Delta (F + \lambda I))^j / j!` in closed form, vectorised
over gaps.

References
----------
.. [1] Särkkä, S. and Solin, A. (2019). Applied Stochastic Differential
   Equations. Cambridge University Press, sec. 6.2 and 12.3.
.. [2] Hartikainen, J. and Särkkä, S. (2010). Kalman filtering and smoothing
   solutions to temporal Gaussian process regression models. IEEE MLSP.
.. [3] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, ch. 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.special import gamma
from sklearn.gaussian_process.kernels import (
    ConstantKernel,
    Kernel,
    Matern,
    Product,
    Sum,
)

from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg.kalman._model import StateSpaceModel

__all__ = [
    "MARKOV_NUS",
    "StateSpaceModel",
    "is_markov_kernel",
    "kernel_to_state_space",
]

#: The Matern smoothness values with an exact state-space form (``nu = p + 1/2``).
MARKOV_NUS = (0.5, 1.5, 2.5)

_MARKOV_HINT = (
    "Use a Markov kernel on this axis: Matern(nu=0.5), Matern(nu=1.5) or "
    "Matern(nu=2.5), optionally times ConstantKernel, or a sum of such terms "
    "(e.g. ConstantKernel(1.0) * Matern(length_scale=10.0, nu=1.5)); otherwise "
    "solve this axis by eigendecomposition."
)


@dataclass(frozen=True)
class _Term:
    """One additive term: ``variance * Matern(nu, ell)`` or a bare constant."""

    nu: float | None
    length_scale: float
    ell_index: int | None
    variance: float
    var_indices: tuple[int, ...]

    @property
    def dim(self) -> int:
        return 1 if self.nu is None else int(self.nu + 0.5)

    @property
    def lam(self) -> float:
        return (
            0.0
            if self.nu is None
            else float(np.sqrt(2.0 * self.nu)) / self.length_scale
        )


def _unsupported(kernel: Kernel, node: object, why: str) -> ValueError:
    return ValueError(
        f"kernel {kernel!r} has no exact state-space form: {why} "
        f"({type(node).__name__}). {_MARKOV_HINT}"
    )


def _leaf_terms(kernel: Kernel, node: Kernel, offset: int) -> list[_Term]:
    n_theta = int(np.asarray(node.theta).size)
    if isinstance(node, ConstantKernel):
        idx = (offset,) if n_theta else ()
        return [_Term(None, 1.0, None, float(node.constant_value), idx)]
    if isinstance(node, Matern):
        if node.nu not in MARKOV_NUS:
            raise _unsupported(
                kernel,
                node,
                f"Matern with nu={node.nu} is not Markov with a finite state",
            )
        ell = np.atleast_1d(np.asarray(node.length_scale, dtype=float))
        if ell.size != 1:
            raise _unsupported(
                kernel,
                node,
                f"a state-space axis is 1-D, but length_scale has {ell.size} entries",
            )
        return [
            _Term(float(node.nu), float(ell[0]), offset if n_theta else None, 1.0, ())
        ]
    raise _unsupported(kernel, node, "this kernel is not Markov")


def _multiply(kernel: Kernel, left: list[_Term], right: list[_Term]) -> list[_Term]:
    out = []
    for a in left:
        for b in right:
            if a.nu is not None and b.nu is not None:
                raise _unsupported(
                    kernel, Product, "a product of two Matern kernels is not supported"
                )
            m = a if a.nu is not None else b
            out.append(
                _Term(
                    m.nu,
                    m.length_scale,
                    m.ell_index,
                    a.variance * b.variance,
                    a.var_indices + b.var_indices,
                )
            )
    return out


def _terms(kernel: Kernel, node: Kernel, offset: int) -> list[_Term]:
    """Expand ``node`` into additive terms; theta indices start at ``offset``."""
    if isinstance(node, (Sum, Product)):
        left = _terms(kernel, node.k1, offset)
        right = _terms(kernel, node.k2, offset + int(np.asarray(node.k1.theta).size))
        return left + right if isinstance(node, Sum) else _multiply(kernel, left, right)
    return _leaf_terms(kernel, node, offset)


def _block(term: _Term) -> tuple[FloatArray, FloatArray, float]:
    """Return ``(F, Pinf, qc)`` of one term (Särkkä and Solin 2019, sec. 12.3)."""
    if term.nu is None:
        return np.zeros((1, 1)), np.full((1, 1), term.variance), 0.0
    d, lam, var, nu = term.dim, term.lam, term.variance, term.nu
    f = np.diag(np.ones(d - 1), 1)
    f[-1] = [-comb(d, j) * lam ** (d - j) for j in range(d)]
    scale = lam ** np.arange(d)
    pinf = var * np.outer(scale, scale) * _P1[d]
    qc = var * 2.0 * np.sqrt(np.pi) * lam ** (2 * nu) * gamma(nu + 0.5) / gamma(nu)
    return f, pinf, float(qc)


#: Stationary covariance of the unit-rate, unit-variance Matern blocks (D = I).
_P1 = {
    1: np.ones((1, 1)),
    2: np.eye(2),
    3: np.array(
        [[1.0, 0.0, -1.0 / 3.0], [0.0, 1.0 / 3.0, 0.0], [-1.0 / 3.0, 0.0, 1.0]]
    ),
}


def kernel_to_state_space(kernel: Kernel) -> StateSpaceModel:
    r"""Convert a 1-D Markov scikit-learn kernel to a state-space model.

    Parameters
    ----------
    kernel : sklearn Kernel
        ``Matern`` with ``nu`` in {0.5, 1.5, 2.5}, ``ConstantKernel``, products
        of one Matern with constants, and sums of such terms.

    Returns
    -------
    StateSpaceModel
        The model, with derivatives w.r.t. ``kernel.theta`` (free
        log-hyperparameters in scikit-learn's order).

    Raises
    ------
    ValueError
        If the kernel (or a part of it) has no exact finite state-space form;
        the message names the Markov kernels to use instead.

    Notes
    -----
    Per Matern block with :math:`\lambda = \sqrt{2\nu}/\ell` and variance
    :math:`\sigma^2` (Hartikainen and Särkkä 2010):

    * :math:`\nu = 1/2`: :math:`F = -\lambda`, :math:`P_\infty = \sigma^2`;
    * :math:`\nu = 3/2`: :math:`F = [[0, 1], [-\lambda^2, -2\lambda]]`,
      :math:`P_\infty = \sigma^2 \operatorname{diag}(1, \lambda^2)`;
    * :math:`\nu = 5/2`: :math:`F = [[0, 1, 0], [0, 0, 1], [-\lambda^3,
      -3\lambda^2, -3\lambda]]`, :math:`P_\infty = \sigma^2 [[1, 0,
      -\lambda^2/3], [0, \lambda^2/3, 0], [-\lambda^2/3, 0, \lambda^4]]`;

    :math:`H = [1, 0, \dots]`, :math:`L = [0, \dots, 1]^T` and
    :math:`Q_c = 2\sigma^2 \sqrt{\pi} \lambda^{2\nu}
    \Gamma(\nu + 1/2) / \Gamma(\nu)`. Cost :math:`O(d^2 n_\theta)`.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.linalg import expm
    >>> from sklearn.gaussian_process.kernels import ConstantKernel, Matern
    >>> kernel = ConstantKernel(2.0) * Matern(length_scale=3.0, nu=1.5)
    >>> ssm = kernel_to_state_space(kernel)
    >>> ssm.state_dim, ssm.n_theta
    (2, 2)
    >>> tau = 1.7
    >>> value = (ssm.H @ expm(ssm.F * tau) @ ssm.Pinf @ ssm.H.T).item()
    >>> bool(np.isclose(value, kernel(np.array([[0.0]]), np.array([[tau]])).item()))
    True
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(
            f"kernel must be a scikit-learn Kernel; got {type(kernel).__name__}."
        )
    terms = _terms(kernel, kernel, 0)
    blocks = [_block(t) for t in terms]
    dims = [t.dim for t in terms]
    d, n_theta = sum(dims), int(np.asarray(kernel.theta).size)
    starts = tuple(int(s) for s in np.cumsum([0, *dims[:-1]]))
    f, pinf = np.zeros((d, d)), np.zeros((d, d))
    ell_masks, var_masks = np.zeros((n_theta, d)), np.zeros((n_theta, d))
    exponents, lams = np.zeros(d), np.zeros(d)
    el, qc = np.zeros((d, len(terms))), np.zeros(len(terms))
    dqc = np.zeros((n_theta, len(terms)))
    for b, (term, (fb, pb, qb), s) in enumerate(zip(terms, blocks, starts)):
        sl = slice(s, s + term.dim)
        f[sl, sl], pinf[sl, sl], qc[b] = fb, pb, qb
        el[s + term.dim - 1, b] = 1.0
        exponents[sl], lams[sl] = np.arange(term.dim), term.lam
        if term.ell_index is not None:
            ell_masks[term.ell_index, sl] = 1.0
            dqc[term.ell_index, b] -= 2.0 * (term.nu or 0.0) * qb
        for j in term.var_indices:
            var_masks[j, sl] += 1.0
            dqc[j, b] += qb
    ef = exponents[:, None] * f - f * exponents[None, :] + f
    ep = exponents[:, None] * pinf + pinf * exponents[None, :]
    h = np.zeros((1, d))
    h[0, list(starts)] = 1.0
    return StateSpaceModel(
        F=f,
        L=el,
        Qc=np.diag(qc),
        Pinf=pinf,
        H=h,
        dF=-ell_masks[:, :, None] * ef,
        dQc=dqc[:, :, None] * np.eye(len(terms)),
        dPinf=var_masks[:, :, None] * pinf - ell_masks[:, :, None] * ep,
        exponents=exponents,
        lams=lams,
        block_starts=starts,
        ell_masks=ell_masks,
        var_masks=var_masks,
    )


def is_markov_kernel(kernel: Kernel) -> bool:
    """Return whether :func:`kernel_to_state_space` accepts ``kernel``.

    Parameters
    ----------
    kernel : sklearn Kernel
        Any kernel.

    Returns
    -------
    bool
        True for ``Matern(nu=0.5 | 1.5 | 2.5)`` times constants and sums of
        such terms on a 1-D axis.

    Examples
    --------
    >>> from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern
    >>> is_markov_kernel(ConstantKernel(2.0) * Matern(nu=2.5)), is_markov_kernel(RBF())
    (True, False)
    """
    try:
        kernel_to_state_space(kernel)
    except (TypeError, ValueError):
        return False
    return True

