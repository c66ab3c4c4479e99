r"""Block-Jacobi factor of the missing-cell Schur complement along one grid axis.

The missing cells are grouped by their indices on every axis but one (``axis``),
so each group is one grid line along ``axis``; each group is cut into runs of
at most ``block_size`` consecutive cells. The diagonal blocks of
:math:`P_{mm}` on these runs are exact and cheap: for a run ``t`` on the line
``o``,

.. math::
    (P_{mm})_{tt} = U_a[t, :] \operatorname{diag}(h_o) U_a[t, :]^T, \qquad
    h_o = \Big(\big(\textstyle\bigotimes_{d \ne a} U_d^{\circ 2}\big)
    \otimes I\Big) \frac{1}{\lambda + s} \Big|_o

(``U_a`` the eigenvectors of the blocking axis, :math:`U_d^{\circ 2}` the
elementwise squares of the others). With :math:`C = L L^T` the block-diagonal
part, :math:`\log|P_{mm}| = \log|C| + \log|L^{-1} P_{mm} L^{-T}|`: the first
term is exact and the second has unit diagonal *blocks*, so the stochastic
estimate of it only sees the correlations between runs (a Jacobi scaling
leaves the within-run correlations to the estimator too). The same factor
preconditions CG on :math:`P_{mm}`.

Cost: one grid rotation for :math:`h`, :math:`O(m b n_a)` for the blocks and
:math:`O(m b^2)` for their Cholesky factors and inverses (``b`` the block
size); memory :math:`O(m b)`; each application :math:`O(m b k)` for ``k``
columns.
"""

from __future__ import annotations

import numpy as np

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.models._likelihood import GridPosterior

#: Cells per diagonal block (a run along the blocking axis is cut into pieces
#: of at most this many cells).
BLOCK_SIZE = 64
#: Blocks formed at once (bounds the work array to BATCH x b x n_axis floats).
_BATCH = 64


class BlockJacobi:
    r"""Inverse Cholesky factors of the diagonal blocks of :math:`P_{mm}`.

    Parameters
    ----------
    post : GridPosterior
        Complete-grid eigenpairs and noise.
    missing : ndarray of int
        Flat C-order indices of the missing cells (at least one).
    axis : int or None, default=None
        Blocking axis; None picks the longest axis (the last among equals),
        a choice that does not depend on the hyperparameters, so the
        estimator is the same function of theta throughout an optimisation.
    block_size : int, default=None
        Largest block; None means ``BLOCK_SIZE`` (64).

    Attributes
    ----------
    axis : int
    logdet : float
        :math:`\log|C|`, the log-determinant of the block-diagonal part.
    n_blocks : int
    """

    def __init__(
        self,
        post: GridPosterior,
        missing: IntArray,
        *,
        axis: int | None = None,
        block_size: int | None = None,
    ) -> None:
        block_size = BLOCK_SIZE if block_size is None else block_size
        shape = post.shape
        if axis is None:
            axis = len(shape) - 1 - int(np.argmax(shape[::-1]))
        self.axis = axis
        self.m = int(np.size(missing))
        idx = np.unravel_index(np.asarray(missing, dtype=np.intp), shape)
        line = np.ravel_multi_index(
            [i for d, i in enumerate(idx) if d != axis],
            [n for d, n in enumerate(shape) if d != axis],
        )
        self._pos = _runs(line, idx[axis], block_size)
        lines = line[np.maximum(self._pos[:, 0], 0)]
        h = _line_weights(post, axis)[lines]
        self._linv = np.empty((len(self._pos),) + (self._pos.shape[1],) * 2)
        self.logdet = 0.0
        u = post.eigvecs[axis]
        for lo in range(0, len(self._pos), _BATCH):
            sl = slice(lo, lo + _BATCH)
            self.logdet += self._factor(sl, u, idx[axis], h[sl])

    @property
    def n_blocks(self) -> int:
        """Number of diagonal blocks."""
        return int(self._pos.shape[0])

    def _factor(
        self, sl: slice, u: FloatArray, along: IntArray, h: FloatArray
    ) -> float:
        pos = self._pos[sl]
        pad = pos < 0
        rows = u[along[np.where(pad, 0, pos)]]  # (nb, b, n_axis)
        rows[pad] = 0.0
        blocks = (rows * h[:, None, :]) @ rows.transpose(0, 2, 1)
        i = np.arange(pos.shape[1])
        blocks[:, i, i] = np.where(pad, 1.0, blocks[:, i, i])  # padding: identity
        try:
            chol = np.linalg.cholesky(blocks)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "the missing-cell system is singular; increase noise."
            ) from None
        self._linv[sl] = np.linalg.inv(chol)
        return 2.0 * float(np.sum(np.log(np.einsum("kii->ki", chol))))

    def _gather(self, v: FloatArray) -> FloatArray:
        out = v[np.maximum(self._pos, 0)]  # (nb, b, k)
        out[self._pos < 0] = 0.0
        return out

    def _scatter(self, blocks: FloatArray) -> FloatArray:
        valid = self._pos >= 0
        out = np.empty((self.m, blocks.shape[2]))
        out[self._pos[valid]] = blocks[valid]
        return out

    def half_inv(self, v: FloatArray) -> FloatArray:
        """Return ``L^{-1} v`` for ``v`` of shape (m, k)."""
        return self._scatter(self._linv @ self._gather(v))

    def half_inv_t(self, v: FloatArray) -> FloatArray:
        """Return ``L^{-T} v`` for ``v`` of shape (m, k)."""
        return self._scatter(self._linv.transpose(0, 2, 1) @ self._gather(v))

    def solve(self, v: FloatArray) -> FloatArray:
        """Return ``C^{-1} v = L^{-T} L^{-1} v`` (the CG preconditioner)."""
        g = self._linv @ self._gather(v)
        return self._scatter(self._linv.transpose(0, 2, 1) @ g)


def _runs(line: IntArray, along: IntArray, block_size: int) -> IntArray:
    """Positions (into the missing cells) of each block, padded with -1."""
    order = np.lexsort((along, line))
    starts = np.flatnonzero(np.r_[True, line[order][1:] != line[order][:-1]])
    sizes = np.diff(np.r_[starts, order.size])
    n_chunks = -(-sizes // block_size)
    width = int(min(block_size, sizes.max()))
    pos = np.full((int(n_chunks.sum()), width), -1, dtype=np.intp)
    row = 0
    for start, size, n in zip(starts, sizes, n_chunks):
        bounds = np.linspace(0, size, n + 1).round().astype(np.intp)
        for a, b in zip(bounds[:-1], bounds[1:]):
            pos[row, : b - a] = order[start + a : start + b]
            row += 1
    return pos


def _line_weights(post: GridPosterior, axis: int) -> FloatArray:
    """Return ``h`` of shape (N / n_axis, n_axis): one row per grid line."""
    mats = [
        np.eye(u.shape[0]) if d == axis else u * u for d, u in enumerate(post.eigvecs)
    ]
    h = kron_matvec(mats, post.inv_lam).reshape(post.shape)
    return np.moveaxis(h, axis, -1).reshape(-1, post.shape[axis])
