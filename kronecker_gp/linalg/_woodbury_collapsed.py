r"""Pure functions: the collapsed Woodbury form of a separable sum on a grid.

One low-rank term of rank one on every axis but ``e`` (a regional effect:
``ConstantKernel`` on the space axes times a time kernel) added to a base
Kronecker term plus noise: every Woodbury contraction of
:mod:`kronecker_gp.linalg._separable_sum` collapses onto axis ``e``, so the
cost is that of one product kernel, :math:`O(\sum_d n_d^3 + N \sum_d n_d)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg._identities import kron_matvec, kron_outer
from kronecker_gp.linalg._separable_sum import (
    Factor,
    LowRank,
    dense_factor,
    mode_diag_weights,
    mode_pair_grams,
)

#: Largest (chunk, m_e, post, rank) block of the collapsed form's variances.
_CHUNK_ENTRIES = 2**22


@dataclass(frozen=True)
class CollapsedWoodbury:
    r"""``A = K_b + sI + U U^T``, ``U`` of rank one on every axis but ``e``.

    :math:`U = (\bigotimes_{d \ne e} l_d) \otimes L_e`.

    One low-rank term whose factors have rank one on every axis but ``e``
    (a ``ConstantKernel`` space factor times a time kernel: a regional
    effect). Everything collapses onto axis ``e``: with
    :math:`\hat w_d = Q_d^T l_d`, :math:`W = Q_e^T L_e` (``n_e x r``),
    :math:`C = I_r + W^T \operatorname{diag}(h) W`,
    :math:`h = \sum_{\text{other axes}} g \prod_{d \ne e} \hat w_d^2`.
    Cost :math:`O(\sum_d n_d^3 + N \sum_d n_d)`, no ``N x r`` array; the
    same methods as :class:`WoodburyGrid`.
    """

    eigvecs: list[FloatArray]
    eigvals: list[FloatArray]
    g: FloatArray
    axis: int
    w: list[FloatArray]  # w[e] is unused (ones)
    we: FloatArray
    cap: FloatArray
    h_mat: FloatArray  # W C^{-1} W^T (n_e x n_e)

    @property
    def _u_factors(self) -> list[FloatArray]:
        return [self.we if d == self.axis else v[:, None] for d, v in enumerate(self.w)]

    @property
    def gw(self) -> FloatArray:
        """``g`` times the rank-one axes' weights (a grid vector)."""
        vecs = [np.ones_like(v) if d == self.axis else v for d, v in enumerate(self.w)]
        return np.asarray(self.g * kron_outer(vecs))

    def rot(self, x: FloatArray) -> FloatArray:
        """Return ``Q^T x``."""
        return kron_matvec([q.T for q in self.eigvecs], x)

    def unrot(self, x: FloatArray) -> FloatArray:
        """Return ``Q x``."""
        return kron_matvec(self.eigvecs, x)

    def cap_solve(self, x: FloatArray) -> FloatArray:
        """Return ``C^{-1} x``."""
        return np.asarray(scipy.linalg.cho_solve((self.cap, True), x))

    def solve_rot(self, x_rot: FloatArray) -> FloatArray:
        """Return ``Q^T A^{-1} Q x_rot`` for rotated columns ``x_rot`` (N, k)."""
        gx = self.g[:, None] * x_rot
        u_t = kron_matvec([f.T for f in self._u_factors], gx)
        return gx - self.g[:, None] * kron_matvec(self._u_factors, self.cap_solve(u_t))

    def solve(self, x: FloatArray) -> FloatArray:
        """Return ``A^{-1} x`` for columns ``x`` of shape (N, k)."""
        return self.unrot(self.solve_rot(self.rot(x)))

    def logdet(self) -> float:
        """Return ``log|A|``."""
        return float(-np.sum(np.log(self.g)) + 2.0 * np.sum(np.log(np.diag(self.cap))))

    def trace_matrix(self, mats: Sequence[Factor], d: int) -> FloatArray:
        """Return ``M`` with ``tr(C^{-1} F^T (x)X F) = <M, X_d>`` (see WoodburyGrid).

        ``mats`` are the rotated factors, dense, diagonal or low rank
        (:func:`~kronecker_gp.linalg._separable_sum.mode_pair_grams`).
        """
        gw = self.gw[:, None]
        e = self.axis
        if d == e:
            return np.asarray(self.h_mat * mode_pair_grams(gw, gw, mats, e, True))
        other = list(mats)
        f = mats[e]
        if not isinstance(f, LowRank) and f.ndim == 1:
            other[e] = np.diag(self.h_mat) * f  # H o diag(f) is diagonal
        else:
            other[e] = self.h_mat * dense_factor(f)
        return mode_pair_grams(gw, gw, other, d, True)

    def f_trace(self) -> float:
        """Return ``tr(C^{-1} F^T F)``."""
        vecs = [
            np.ones_like(v) if d == self.axis else v**2 for d, v in enumerate(self.w)
        ]
        h2 = mode_diag_weights(self.g**2, vecs, self.axis)
        return float(np.diag(self.h_mat) @ h2)

    def low_rank_variance(
        self, rot_terms: Sequence[Sequence[FloatArray]]
    ) -> FloatArray:
        """Return ``v_i^T C^{-1} v_i`` on a test grid (see WoodburyGrid)."""
        e = self.axis
        shape = [int(m.shape[1]) for m in rot_terms[0]]
        pre, post = int(np.prod(shape[:e])), int(np.prod(shape[e + 1 :]))
        n_e, r = self.we.shape
        ts = []
        for term in rot_terms:
            mats = [
                np.eye(n_e) if d == e else (self.w[d][:, None] * m).T
                for d, m in enumerate(term)
            ]
            ts.append(kron_matvec(mats, self.g).reshape(pre, n_e, post))
        out = np.empty((pre, shape[e] * post))
        step = max(1, _CHUNK_ENTRIES // max(1, shape[e] * post * r))
        for lo in range(0, pre, step):
            v = sum(
                np.einsum(
                    "pcq,ci,ca->piqa",
                    t[lo : lo + step],
                    term[e],
                    self.we,
                    optimize=True,
                )
                for t, term in zip(ts, rot_terms)
            )
            flat = np.asarray(v).reshape(-1, r)
            corr = np.sum(flat * self.cap_solve(flat.T).T, axis=1)
            out[lo : lo + step] = corr.reshape(-1, shape[e] * post)
        return out.reshape(-1)


def collapsed_woodbury(
    base: Sequence[tuple[FloatArray, FloatArray]],
    factors: Sequence[FloatArray],
    axis: int,
    noise: float,
) -> CollapsedWoodbury:
    """Factorise the base term plus noise plus one term of rank one off ``axis``.

    Parameters
    ----------
    base : sequence of (eigvals, eigvecs)
        The base term's factor eigenpairs.
    factors : sequence of ndarray of shape (n_d, r_d)
        The low-rank term's factors (:func:`low_rank_factor`), ``r_d = 1``
        for every ``d != axis``.
    axis : int
        The axis ``e`` whose factor may have any rank.
    noise : float
        ``s > 0``.

    Returns
    -------
    CollapsedWoodbury

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ka, kb = [np.cov(rng.random((n, 9))) for n in (3, 4)]
    >>> la, lb = rng.random((3, 1)), rng.random((4, 3))
    >>> base = [np.linalg.eigh(ka), np.linalg.eigh(kb)]
    >>> cw = collapsed_woodbury(base, [la, lb], 1, 0.1)
    >>> A = np.kron(ka, kb) + 0.1 * np.eye(12) + np.kron(la @ la.T, lb @ lb.T)
    >>> bool(np.isclose(cw.logdet(), np.linalg.slogdet(A)[1]))
    True
    >>> b = rng.random((12, 2))
    >>> bool(np.allclose(cw.solve(b), np.linalg.solve(A, b)))
    True
    """
    eigvals = [np.asarray(w) for w, _ in base]
    eigvecs = [np.asarray(u) for _, u in base]
    g = 1.0 / (kron_outer(eigvals) + noise)
    w = [
        np.ones(q.shape[0]) if d == axis else (q.T @ f)[:, 0]
        for d, (q, f) in enumerate(zip(eigvecs, factors, strict=True))
    ]
    we = eigvecs[axis].T @ factors[axis]
    vecs = [np.ones_like(v) if d == axis else v**2 for d, v in enumerate(w)]
    h = mode_diag_weights(g, vecs, axis)
    cap = np.eye(we.shape[1]) + we.T @ (h[:, None] * we)
    chol = scipy.linalg.cholesky(cap, lower=True)
    h_mat = we @ scipy.linalg.cho_solve((chol, True), we.T)
    return CollapsedWoodbury(eigvecs, eigvals, g, axis, w, we, chol, h_mat)
