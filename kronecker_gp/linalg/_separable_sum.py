r"""Pure functions: sums of Kronecker products plus noise, on a complete grid.

The covariance is :math:`A = \sum_r \bigotimes_d K^r_d + sI`. With two or more
terms it has no Kronecker eigenbasis. It is exact and cheap when every term but
one (the *base* term ``b``) has low-rank factors: with
:math:`K^r_d = L^r_d L^{rT}_d` (eigenvectors times root eigenvalues, the zero
eigenvalues dropped), :math:`U_r = \bigotimes_d L^r_d` and
:math:`U = [U_r]_{r \ne b}` (``N x P``, :math:`P = \sum_{r \ne b} \prod_d
\operatorname{rank} K^r_d`), the Woodbury identity gives, in the base term's
eigenbasis :math:`Q = \bigotimes_d Q_d`, :math:`G = (\Lambda_b + sI)^{-1}`,
:math:`F = G Q^T U`:

.. math::
    A^{-1} = Q\,(G - F C^{-1} F^T)\,Q^T, \quad C = I_P + U^T Q G Q^T U, \quad
    \log|A| = -\textstyle\sum \log G + \log|C|.

``C`` is at least the identity, so the solve is as well conditioned as the
base term's. Cost :math:`O(\sum_{r,d} n_d^3 + P N \sum_d n_d + N P^2 + P^3)`,
memory :math:`O(N P)`. A "regional effect" term, ``ConstantKernel`` on the
space axis times a time kernel, has ``P = n_t`` (or the time factor's rank),
and its contractions collapse onto the time axis:
:mod:`kronecker_gp.linalg._woodbury_collapsed` does it in the cost of one
product kernel, with no ``N x P`` array.

References
----------
Woodbury, M. A. (1950). Inverting modified matrices. Memorandum Report 42,
Statistical Research Group, Princeton University. Rasmussen, C. E. and
Williams, C. K. I. (2006). Gaussian Processes for Machine Learning, A.9.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg._identities import kron_matvec, kron_outer

#: Eigenvalues below this fraction of a factor's largest are dropped from its
#: low-rank factor (the change to the covariance is below 1e-13 relative).
RANK_RTOL = 1e-13


def sum_matvec(term_grams: Sequence[Sequence[FloatArray]], x: FloatArray) -> FloatArray:
    r"""Return :math:`\sum_r (\bigotimes_d K^r_d)\,x` for ``x`` of shape (N,) or (N, k).

    Examples
    --------
    >>> import numpy as np
    >>> a, b = [np.eye(2), np.ones((3, 3))], [np.ones((2, 2)), np.eye(3)]
    >>> x = np.arange(6.0)
    >>> bool(np.allclose(sum_matvec([a, b], x), (np.kron(*a) + np.kron(*b)) @ x))
    True
    """
    out = kron_matvec(term_grams[0], x)
    for grams in term_grams[1:]:
        out = out + kron_matvec(grams, x)
    return out


def low_rank_factor(w: FloatArray, u: FloatArray) -> FloatArray:
    """Return ``L`` with ``L L^T = u diag(w) u^T``, dropping negligible eigenvalues."""
    keep = w > RANK_RTOL * max(float(w.max(initial=0.0)), np.finfo(float).tiny)
    if not keep.any():
        keep[-1] = True  # a zero factor: one zero column keeps shapes valid
    return np.asarray(u[:, keep] * np.sqrt(np.maximum(w[keep], 0.0)))


@dataclass(frozen=True)
class LowRank:
    """A square factor given by a root: ``root @ root.T`` (``n x r``)."""

    root: FloatArray

    @property
    def size(self) -> int:
        """The factor's side ``n``."""
        return int(self.root.shape[0])

    def dense(self) -> FloatArray:
        """Return ``root @ root.T``."""
        return np.asarray(self.root @ self.root.T)


#: A factor of a mode contraction: dense (n, n), diagonal (n,) or low rank.
Factor = FloatArray | LowRank


def factor_size(f: Factor) -> int:
    """Return the side of a dense, diagonal (1-D) or :class:`LowRank` factor."""
    return f.size if isinstance(f, LowRank) else int(f.shape[0])


def dense_factor(f: Factor) -> FloatArray:
    """Return a dense, diagonal (1-D) or :class:`LowRank` factor as a matrix."""
    if isinstance(f, LowRank):
        return f.dense()
    return np.diag(f) if f.ndim == 1 else np.asarray(f)


def _apply_axis(x: FloatArray, f: Factor, e: int) -> FloatArray:
    """Multiply axis ``e`` of the grid array ``x`` by the factor ``f``."""
    if isinstance(f, LowRank):
        inner = np.tensordot(f.root.T, x, axes=(1, e))
        return np.moveaxis(np.tensordot(f.root, inner, axes=(1, 0)), 0, e)
    if f.ndim == 1:
        return x * f.reshape([-1 if i == e else 1 for i in range(x.ndim)])
    return np.moveaxis(np.tensordot(f, x, axes=(1, e)), 0, e)


def mode_pair_grams(
    a: FloatArray,
    b: FloatArray,
    mats: Sequence[Factor],
    d: int,
    summed: bool = False,
) -> FloatArray:
    r"""Return per column ``k`` the matrix contracting ``a_k, b_k`` with axis ``d``.

    Here :math:`\otimes X` is ``mats`` with ``mats[d]`` replaced by any
    ``X_d``: :math:`a_k^T (\bigotimes_e X_e) b_k = \sum_{ij} (M_k)_{ij}
    (X_d)_{ij}`. Cost :math:`O(N k \sum_{e \ne d} c_e + N k n_d)`, ``c_e``
    the cost per fibre of factor ``e``: ``n_e`` dense, 1 diagonal, ``2 r``
    low rank.

    Parameters
    ----------
    a, b : ndarray of shape (N, k)
        Grid vectors (C order) as columns.
    mats : sequence of factors
        The other axes' factors: dense (n_e, n_e), diagonal (n_e,) or
        :class:`LowRank` (``mats[d]`` only gives the axis' size).
    d : int
        The free axis.
    summed : bool, default=False
        Return the sum over columns instead, shape (n_d, n_d).

    Returns
    -------
    ndarray of shape (k, n_d, n_d), or (n_d, n_d) if ``summed``

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, X = rng.random((2, 2)), rng.random((3, 3))
    >>> a, b = rng.random((6, 1)), rng.random((6, 1))
    >>> M = mode_pair_grams(a, b, [A, X], 1)
    >>> bool(np.isclose(np.sum(M[0] * X), a[:, 0] @ np.kron(A, X) @ b[:, 0]))
    True
    >>> D = mode_pair_grams(a, b, [np.diag(A), X], 1)  # a diagonal factor
    >>> bool(np.allclose(D, mode_pair_grams(a, b, [np.diag(np.diag(A)), X], 1)))
    True
    """
    sizes = [factor_size(m) for m in mats]
    n_d = sizes[d]
    k = a.shape[1]
    c = b.reshape(*sizes, k)
    for e, f in enumerate(mats):
        if e != d:
            c = _apply_axis(c, f, e)
    a_d = np.moveaxis(a.reshape(*sizes, k), d, 0)
    c_d = np.moveaxis(c, d, 0)
    if summed:
        return np.asarray(a_d.reshape(n_d, -1) @ c_d.reshape(n_d, -1).T)
    a3 = a_d.reshape(n_d, -1, k)
    c3 = c_d.reshape(n_d, -1, k)
    return np.asarray(np.einsum("iqk,jqk->kij", a3, c3, optimize=True))


def mode_diag_weights(g: FloatArray, diags: Sequence[FloatArray], d: int) -> FloatArray:
    r"""Return the weights of axis ``d``'s diagonal in a weighted Kronecker trace.

    :math:`h_i = \sum_{j: j_d = i} g_j \prod_{e \ne d} (\text{diags}_e)_{j_e}`.

    Then :math:`\operatorname{tr}(\operatorname{diag}(g) \bigotimes_e X_e)
    = \sum_i h_i (X_d)_{ii}` when ``diags[e]`` is the diagonal of ``X_e``.
    """
    shape = [int(v.size) for v in diags]
    vecs = [np.ones(s) if e == d else v for e, (s, v) in enumerate(zip(shape, diags))]
    w = (g * kron_outer(vecs)).reshape(shape)
    return np.asarray(np.moveaxis(w, d, 0).reshape(shape[d], -1).sum(axis=1))


def nearest_kronecker_weights(
    term_grams: Sequence[Sequence[FloatArray]], sweeps: int = 20
) -> list[FloatArray]:
    r"""Return per-axis weights of the Kronecker product nearest a sum of them.

    :math:`\bigotimes_d \sum_r w_{dr} K^r_d` is the Kronecker product
    nearest (Frobenius norm) to :math:`\sum_r
    \bigotimes_d K^r_d` within the span of each axis' factors, by alternating
    least squares on the ``R x R`` Gram matrices :math:`G_d = [\langle K^r_d,
    K^{r'}_d \rangle]` (Van Loan and Pitsianis 1993; exact for ``D = 2``
    up to the sweeps' convergence). For positive semi-definite factors the
    weights are non-negative, so the product is positive semi-definite: a
    preconditioner for the sum. Cost :math:`O(R^2 \sum_d n_d^2)`.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.diag([1.0, 2.0]), np.diag([3.0, 1.0])
    >>> w = nearest_kronecker_weights([[a, b], [2 * a, b]])
    >>> x = [w[0][0] * a + w[0][1] * 2 * a, w[1][0] * b + w[1][1] * b]
    >>> bool(np.allclose(np.kron(*x), 3 * np.kron(a, b)))
    True
    """
    n_d = len(term_grams[0])
    grams = [
        np.array([[np.sum(ka[d] * kb[d]) for kb in term_grams] for ka in term_grams])
        for d in range(n_d)
    ]
    w = [np.ones(len(term_grams)) for _ in range(n_d)]
    for _ in range(sweeps):
        for d in range(n_d):
            new = np.ones(len(term_grams))
            for e in range(n_d):
                if e != d:
                    norm = float(w[e] @ grams[e] @ w[e])
                    new = new * (grams[e] @ w[e]) / max(norm, np.finfo(float).tiny)
            w[d] = np.maximum(new, 0.0)
    return w


@dataclass(frozen=True)
class WoodburyGrid:
    """``A = K_b + sI + U U^T`` in the base term's eigenbasis (see the module).

    Attributes
    ----------
    eigvecs : list of ndarray of shape (n_d, n_d)
        The base term's factor eigenvectors ``Q_d``.
    eigvals : list of ndarray of shape (n_d,)
        Their eigenvalues (clipped at zero).
    g : ndarray of shape (N,)
        ``1 / (kron(eigvals) + s)``.
    f : ndarray of shape (N, P)
        ``G Q^T U``.
    cap : ndarray of shape (P, P)
        Cholesky factor (lower) of ``C = I + U^T Q G Q^T U``.
    """

    eigvecs: list[FloatArray]
    eigvals: list[FloatArray]
    g: FloatArray
    f: FloatArray
    cap: FloatArray

    def rot(self, x: FloatArray) -> FloatArray:
        """Return ``Q^T x``."""
        return kron_matvec([q.T for q in self.eigvecs], x)

    def unrot(self, x: FloatArray) -> FloatArray:
        """Return ``Q x``."""
        return kron_matvec(self.eigvecs, x)

    def cap_solve(self, x: FloatArray) -> FloatArray:
        """Return ``C^{-1} x``."""
        if not self.cap.size:  # no low-rank term
            return np.asarray(x)
        return np.asarray(scipy.linalg.cho_solve((self.cap, True), x))

    def solve_rot(self, x_rot: FloatArray) -> FloatArray:
        """Return ``Q^T A^{-1} Q x_rot`` for rotated columns ``x_rot`` (N, k)."""
        return self.g[:, None] * x_rot - self.f @ self.cap_solve(self.f.T @ x_rot)

    def solve(self, x: FloatArray) -> FloatArray:
        """Return ``A^{-1} x`` for columns ``x`` of shape (N, k)."""
        return self.unrot(self.solve_rot(self.rot(x)))

    def logdet(self) -> float:
        """Return ``log|A|``."""
        return float(-np.sum(np.log(self.g)) + 2.0 * np.sum(np.log(np.diag(self.cap))))

    def trace_matrix(self, mats: Sequence[FloatArray], d: int) -> FloatArray:
        r"""Return the matrix ``M`` of the trace term on axis ``d``.

        :math:`\operatorname{tr}(C^{-1} F^T (\otimes X) F) = \langle M, X_d
        \rangle`.

        ``mats`` are the rotated factors of the other axes (as in
        :func:`mode_pair_grams`).
        """
        if not self.f.shape[1]:
            return np.zeros((mats[d].shape[0],) * 2)
        fc = self.cap_solve(self.f.T).T
        return mode_pair_grams(fc, self.f, mats, d, summed=True)

    def f_trace(self) -> float:
        """Return ``tr(C^{-1} F^T F)``."""
        return float(np.sum(self.cap_solve(self.f.T).T * self.f))

    def low_rank_variance(
        self, rot_terms: Sequence[Sequence[FloatArray]]
    ) -> FloatArray:
        r"""Return the low-rank correction of the variances on a test grid.

        :math:`v_i^T C^{-1} v_i`, :math:`v_i = F^T \tilde k_i`.

        ``rot_terms[r][d]`` is :math:`Q_d^T K^r_d(\text{train}, \text{test})`.
        """
        if not self.f.shape[1]:
            return np.zeros(int(np.prod([m.shape[1] for m in rot_terms[0]])))
        v = np.sum([kron_matvec([m.T for m in t], self.f) for t in rot_terms], axis=0)
        return np.asarray(np.sum(v * self.cap_solve(v.T).T, axis=1))


def woodbury_grid(
    base: Sequence[tuple[FloatArray, FloatArray]],
    low_rank: Sequence[Sequence[FloatArray]],
    noise: float,
) -> WoodburyGrid:
    r"""Factorise :math:`\bigotimes_d K_d + sI + \sum_r \bigotimes_d L^r_d L^{rT}_d`.

    Parameters
    ----------
    base : sequence of (eigvals, eigvecs)
        The base term's factor eigenpairs.
    low_rank : sequence of sequence of ndarray of shape (n_d, r_d)
        Each other term's low-rank factors (:func:`low_rank_factor`).
    noise : float
        ``s > 0``.

    Returns
    -------
    WoodburyGrid

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ka, kb = [np.cov(rng.random((n, 9))) for n in (2, 3)]
    >>> la, lb = rng.random((2, 1)), rng.random((3, 2))
    >>> wb = woodbury_grid([np.linalg.eigh(ka), np.linalg.eigh(kb)], [[la, lb]], 0.1)
    >>> A = np.kron(ka, kb) + 0.1 * np.eye(6) + np.kron(la @ la.T, lb @ lb.T)
    >>> bool(np.isclose(wb.logdet(), np.linalg.slogdet(A)[1]))
    True
    """
    eigvals = [np.asarray(w) for w, _ in base]
    eigvecs = [np.asarray(u) for _, u in base]
    g = 1.0 / (kron_outer(eigvals) + noise)
    blocks = []
    for factors in low_rank:
        rotated = [q.T @ f for q, f in zip(eigvecs, factors, strict=True)]
        size = int(np.prod([f.shape[1] for f in factors]))
        blocks.append(kron_matvec(rotated, np.eye(size)))
    u_rot = np.hstack(blocks) if blocks else np.zeros((g.size, 0))
    f = g[:, None] * u_rot
    cap = np.eye(u_rot.shape[1]) + u_rot.T @ f
    chol = scipy.linalg.cholesky(cap, lower=True) if cap.size else cap
    return WoodburyGrid(eigvecs, eigvals, g, f, chol)
