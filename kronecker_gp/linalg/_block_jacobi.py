r"""Block-Jacobi factor of the missing-cell Schur complement along grid axes.

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
columns. Choosing the axis (:func:`best_axis`) forms the blocks of every axis
once more.

On grids of three or more axes a block may also run over a *pair* of axes
``(a, b)`` (the cells of one line of the ``a x b`` sub-grid, ``b`` fastest,
:math:`U_a \otimes U_b` in place of :math:`U_a`): on a multi-task grid with
whole-task gaps, tasks x consecutive times hold the strongest couplings,
which single-axis blocks split (10 x 60 x 60, 30 % missing: 9 Lanczos steps
instead of 15).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.linalg._eigenbasis import GridPosterior

#: Cells per diagonal block (a run along the blocking axis is cut into pieces
#: of at most this many cells). 500 x 500, 30 % missing, 8 probes, start theta
#: of ``bench_missing.py``, one process (load 5): blocks of 16 / 32 / 64 took
#: 0.32 / 0.70 / 1.46 s to build along the time axis, and the estimator
#: needed 7 Lanczos steps with standard error 1.54 / 1.48 / 1.52 in each case
#: (10 x 60 x 60 multi-task, blocks over tasks x times: 9 steps, 0.39 / 0.32 /
#: 0.36), so the smallest of them (session 6; it was 64).
BLOCK_SIZE = 16
#: Blocks formed at once (bounds the work array to BATCH x b x n_axis floats).
_BATCH = 64
#: Largest sub-grid of a pair of blocking axes (its eigenvector Kronecker
#: product, ``n_a n_b x n_a n_b``, is formed explicitly: 8 MB at 1024).
PAIR_MAX_CELLS = 1024


class BlockJacobi:
    r"""Inverse Cholesky factors of the diagonal blocks of :math:`P_{mm}`.

    Parameters
    ----------
    post : GridPosterior
        Complete-grid eigenpairs and noise.
    missing : ndarray of int
        Flat C-order indices of the missing cells (at least one).
    axis : int, tuple of int or None, default=None
        Blocking axis, or a pair of axes ``(a, b)`` whose sub-grid forms the
        lines (cells ordered with ``b`` fastest, so a block spans all of
        ``b`` over a run of ``a``: e.g. every task at a few consecutive
        times); None picks it with :func:`best_axis` (the choice whose
        blocks capture most of the squared correlations of :math:`P_{mm}`).
        Callers that evaluate many hyperparameters fix the axis after the
        first choice, so that the estimator stays one function of theta.
    block_size : int, default=None
        Largest block; None means ``BLOCK_SIZE`` (64).

    Attributes
    ----------
    axis : int or tuple of int
    logdet : float
        :math:`\log|C|`, the log-determinant of the block-diagonal part.
    n_blocks : int
    """

    def __init__(
        self,
        post: GridPosterior,
        missing: IntArray,
        *,
        axis: int | tuple[int, ...] | None = None,
        block_size: int | None = None,
    ) -> None:
        block_size = BLOCK_SIZE if block_size is None else block_size
        idx = np.unravel_index(np.asarray(missing, dtype=np.intp), post.shape)
        if axis is None:
            axis = best_axis(post, idx, block_size)
        axes = _check_axes(axis, len(post.shape))
        self.axis: int | tuple[int, ...] = axes[0] if len(axes) == 1 else axes
        self.m = int(np.size(missing))
        self.logdet = 0.0
        layout = _Layout(post, idx, axes, block_size)
        self._pos = layout.pos
        self._linv = np.empty((layout.n_blocks,) + (layout.pos.shape[1],) * 2)
        for sl, blocks in layout.batches():
            try:
                chol = np.linalg.cholesky(blocks)
            except np.linalg.LinAlgError:
                raise np.linalg.LinAlgError(
                    "the missing-cell system is singular; increase noise."
                ) from None
            self._linv[sl] = np.linalg.inv(chol)
            self.logdet += 2.0 * float(np.sum(np.log(np.einsum("kii->ki", chol))))

    @property
    def n_blocks(self) -> int:
        """Number of diagonal blocks."""
        return int(self._pos.shape[0])

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


def best_axis(
    post: GridPosterior, idx: tuple[IntArray, ...], block_size: int | None = None
) -> int | tuple[int, ...]:
    r"""Return the blocking axis whose blocks hold most of :math:`P_{mm}`'s coupling.

    The score of a choice is :math:`\sum_{i \ne j} P_{ij}^2 / (P_{ii} P_{jj})`
    over the pairs of cells that share a block: the squared correlations the
    block factor removes from the stochastic estimate (whose variance is a
    sum of such squared off-diagonal terms). The candidates are every axis
    and, on grids of three or more axes, every pair of axes whose sub-grid
    has at most ``PAIR_MAX_CELLS`` cells (the larger axis first, so that a
    block spans the smaller one: a multi-task grid's tasks at consecutive
    times). Ties go to the later single axis.
    """
    block_size = BLOCK_SIZE if block_size is None else block_size
    shape = post.shape
    candidates: list[tuple[int, ...]] = [(d,) for d in reversed(range(len(shape)))]
    if len(shape) >= 3:
        for a in range(len(shape)):
            for b in range(a + 1, len(shape)):
                if shape[a] * shape[b] <= PAIR_MAX_CELLS:
                    candidates.append((a, b) if shape[a] >= shape[b] else (b, a))
    scores = []
    for axes in candidates:
        score = 0.0
        layout = _Layout(post, idx, axes, block_size)
        for _, blocks in layout.batches():
            d = np.sqrt(np.einsum("kii->ki", blocks))
            corr = blocks / d[:, :, None] / d[:, None, :]
            score += float(np.sum(corr**2)) - float(np.sum(d > 0))
        scores.append(score)
    best = candidates[int(np.argmax(scores))]
    return best[0] if len(best) == 1 else best


def _check_axes(axis: int | tuple[int, ...], n_axes: int) -> tuple[int, ...]:
    axes: tuple[int, ...] = (axis,) if np.ndim(axis) == 0 else tuple(axis)  # type: ignore[assignment,arg-type]
    if (
        not 1 <= len(axes) <= n_axes
        or len(set(axes)) != len(axes)
        or not all(isinstance(a, (int, np.integer)) and 0 <= a < n_axes for a in axes)
    ):
        raise ValueError(
            f"axis must be a grid axis in [0, {n_axes}) or a tuple of distinct "
            f"axes; got {axis!r}."
        )
    return tuple(int(a) for a in axes)


class _Layout:
    """Which missing cells form each block, and the blocks in batches."""

    def __init__(
        self,
        post: GridPosterior,
        idx: tuple[IntArray, ...],
        axes: tuple[int, ...],
        block_size: int,
    ) -> None:
        shape = post.shape
        other = [d for d in range(len(shape)) if d not in axes]
        if other:
            line = np.ravel_multi_index(
                [idx[d] for d in other], [shape[d] for d in other]
            )
        else:
            line = np.zeros(idx[0].size, dtype=np.intp)
        along = np.ravel_multi_index([idx[d] for d in axes], [shape[d] for d in axes])
        self.pos = _runs(line, along, block_size)
        self.h = _line_weights(post, axes)[line[self.pos[:, 0]]]
        self.along = along
        self.u = post.eigvecs[axes[0]]
        for d in axes[1:]:  # rows of the sub-grid's eigenvectors, last fastest
            self.u = np.asarray(np.kron(self.u, post.eigvecs[d]), dtype=np.float64)

    @property
    def n_blocks(self) -> int:
        return int(self.pos.shape[0])

    def batches(self) -> Iterator[tuple[slice, FloatArray]]:
        """Yield ``(slice, blocks)``; padded cells get an identity row/column."""
        for lo in range(0, self.n_blocks, _BATCH):
            sl = slice(lo, lo + _BATCH)
            pos = self.pos[sl]
            pad = pos < 0
            rows = self.u[self.along[np.where(pad, 0, pos)]]  # (nb, b, n_axis)
            rows[pad] = 0.0
            blocks = (rows * self.h[sl, None, :]) @ rows.transpose(0, 2, 1)
            i = np.arange(pos.shape[1])
            blocks[:, i, i] = np.where(pad, 1.0, blocks[:, i, i])
            yield sl, blocks


def _runs(line: IntArray, along: IntArray, block_size: int) -> IntArray:
    """Positions (into the missing cells) of each block, padded with -1.

    The first entry of every row is a real cell.
    """
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


def _line_weights(post: GridPosterior, axes: tuple[int, ...]) -> FloatArray:
    """Return ``h`` of shape (N / n_B, n_B): one row per line of the sub-grid.

    ``n_B`` is the size of the sub-grid of ``axes`` (in that order, the last
    fastest), the rows follow the other axes in C order.
    """
    mats = [
        np.eye(u.shape[0]) if d in axes else u * u for d, u in enumerate(post.eigvecs)
    ]
    h = kron_matvec(mats, post.inv_lam).reshape(post.shape)
    n_b = int(np.prod([post.shape[d] for d in axes]))
    tail = list(range(len(post.shape) - len(axes), len(post.shape)))
    return np.moveaxis(h, list(axes), tail).reshape(-1, n_b)
