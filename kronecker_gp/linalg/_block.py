"""The block matrix operator: the structured twin of ``np.block``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp.linalg._base import StructuredOperator
from kronecker_gp.linalg._dense import DenseOperator

Block = ArrayLike | StructuredOperator | None


def _as_block(block: object, name: str) -> StructuredOperator | None:
    """Return ``block`` as an operator (``None`` stays a zero block) or raise."""
    if block is None or isinstance(block, StructuredOperator):
        return block
    try:
        arr = np.asarray(block, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be an array, a StructuredOperator or None (a zero block); "
            f"got {type(block).__name__}."
        ) from None
    if arr.ndim > 2:
        raise ValueError(
            f"{name} must be at most 2-D, as in np.block; got {arr.shape}."
        )
    return DenseOperator(np.atleast_2d(arr))


def _check_grid(blocks: object) -> list[list[object]]:
    """Return ``blocks`` as a rectangular list of lists or raise ``ValueError``."""
    if (
        isinstance(blocks, np.ndarray)
        or not isinstance(blocks, Sequence)
        or len(blocks) == 0
        or not all(
            isinstance(row, Sequence) and not isinstance(row, np.ndarray)
            for row in blocks
        )
    ):
        raise ValueError(
            "blocks must be a non-empty list of block rows (lists), as in "
            f"np.block([[A, B], [C, D]]); got {type(blocks).__name__}."
        )
    widths = {len(row) for row in blocks}
    if len(widths) != 1 or 0 in widths:
        raise ValueError(
            "blocks must be rectangular: every block row needs the same, non-zero "
            f"number of blocks; got row lengths {[len(r) for r in blocks]}. Use None "
            "for a zero block."
        )
    return [list(row) for row in blocks]


def _sizes(grid: list[list[StructuredOperator | None]], axis: int) -> list[int]:
    """Return the block-row heights (axis 0) or block-column widths (axis 1)."""
    n_outer = len(grid) if axis == 0 else len(grid[0])
    sizes = []
    for k in range(n_outer):
        line = grid[k] if axis == 0 else [row[k] for row in grid]
        seen = {(idx, b.shape[axis]) for idx, b in enumerate(line) if b is not None}
        if not seen:
            what = "block row" if axis == 0 else "block column"
            raise ValueError(
                f"{what} {k} of blocks holds only None, so its size is unknown; "
                "give at least one block (e.g. np.zeros((rows, cols)))."
            )
        sizes.append(min(seen)[1])
        for idx, size in sorted(seen):
            if size != sizes[-1]:
                i, j = (k, idx) if axis == 0 else (idx, k)
                dim = "rows" if axis == 0 else "columns"
                raise ValueError(
                    f"blocks[{i}][{j}] has {size} {dim} but the other blocks in its "
                    f"{'block row' if axis == 0 else 'block column'} have "
                    f"{sizes[-1]}; all blocks in a block row share their number of "
                    "rows and all in a block column their number of columns."
                )
    return sizes


def _transpose(block: StructuredOperator | None) -> StructuredOperator | None:
    """Return the transpose of a real block (``None`` stays a zero block)."""
    return None if block is None else block.H


class BlockMatrix(StructuredOperator):
    r"""A matrix of blocks that are arrays, structured operators or zeros.

    The structured twin of :func:`numpy.block`: ``BlockMatrix(blocks).to_dense()``
    equals ``np.block`` of the dense blocks, with ``None`` standing for a zero
    block, and the product is computed block by block without forming it.

    Parameters
    ----------
    blocks : list of list of (array-like, StructuredOperator or None)
        Block rows, as in ``np.block([[A, B], [C, D]])``. All blocks in a block
        row have the same number of rows and all in a block column the same
        number of columns; ``None`` is a zero block whose shape is inferred (each
        block row and block column needs at least one non-``None`` block).

    Attributes
    ----------
    blocks : tuple of tuple of (StructuredOperator or None)
        The blocks; arrays are wrapped in :class:`DenseOperator`.
    row_sizes, col_sizes : tuple of int
        Block-row heights and block-column widths.

    Raises
    ------
    ValueError
        If ``blocks`` is not a rectangular nested list or the block sizes
        disagree.
    TypeError
        If a block is neither an array, an operator nor ``None``.

    Notes
    -----
    Block row :math:`i` of the product is :math:`\sum_j A_{ij} x_j` over the
    non-zero blocks: the cost is the sum of the blocks' matvecs. The transpose
    is the block matrix of transposed blocks, :math:`(A^T)_{ij} = A_{ji}^T`.
    ``eigh``, ``solve`` and ``logdet`` use the dense fallbacks of
    :class:`StructuredOperator` (small matrices and tests only); for block
    diagonals use :class:`BlockDiagonal` and for Kronecker products
    :class:`KroneckerProduct`, whose structure makes them cheap.

    Examples
    --------
    The two block matrices every tutorial shows. A block diagonal built from two
    2x2 blocks:

    >>> import numpy as np
    >>> from kronecker_gp.linalg import BlockMatrix
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> B = np.array([[0.0, 5.0], [6.0, 7.0]])
    >>> Z = np.zeros((2, 2))
    >>> np.block([[A, Z], [Z, B]])
    array([[1., 2., 0., 0.],
           [3., 4., 0., 0.],
           [0., 0., 0., 5.],
           [0., 0., 6., 7.]])
    >>> op = BlockMatrix([[A, None], [None, B]])
    >>> bool(np.array_equal(op.to_dense(), np.block([[A, Z], [Z, B]])))
    True
    >>> op @ np.ones(4)
    array([ 3.,  7.,  5., 13.])

    The Kronecker product of two 2x2 matrices is the block matrix
    ``[[a_11 B, a_12 B], [a_21 B, a_22 B]]``:

    >>> np.kron(A, B)
    array([[ 0.,  5.,  0., 10.],
           [ 6.,  7., 12., 14.],
           [ 0., 15.,  0., 20.],
           [18., 21., 24., 28.]])
    >>> kron = BlockMatrix([[A[i, j] * B for j in range(2)] for i in range(2)])
    >>> bool(np.array_equal(kron.to_dense(), np.kron(A, B)))
    True

    Blocks may themselves be structured operators:

    >>> from kronecker_gp.linalg import KroneckerProduct
    >>> op = BlockMatrix([[KroneckerProduct(A, B), None], [None, A]])
    >>> op.shape
    (6, 6)
    """

    def __init__(self, blocks: Sequence[Sequence[Block]]) -> None:
        grid = _check_grid(blocks)
        ops = [
            [_as_block(b, f"blocks[{i}][{j}]") for j, b in enumerate(row)]
            for i, row in enumerate(grid)
        ]
        self.blocks: tuple[tuple[StructuredOperator | None, ...], ...] = tuple(
            tuple(row) for row in ops
        )
        self.row_sizes: tuple[int, ...] = tuple(_sizes(ops, 0))
        self.col_sizes: tuple[int, ...] = tuple(_sizes(ops, 1))
        self._row_split = np.cumsum(self.row_sizes)[:-1]
        self._col_split = np.cumsum(self.col_sizes)[:-1]
        super().__init__((int(sum(self.row_sizes)), int(sum(self.col_sizes))))

    @property
    def block_shape(self) -> tuple[int, int]:
        """The number of block rows and block columns."""
        return len(self.row_sizes), len(self.col_sizes)

    def _matmat(self, x: FloatArray) -> FloatArray:
        # (A x)_i = sum_j A_ij x_j over the non-zero blocks
        parts = np.split(np.asarray(x, dtype=np.float64), self._col_split, axis=0)
        out = []
        for row, rows in zip(self.blocks, self.row_sizes):
            acc = np.zeros((rows, x.shape[1]))
            for b, p in zip(row, parts):
                if b is not None:
                    acc += b @ p
            out.append(acc)
        return np.concatenate(out, axis=0)

    def _adjoint(self) -> BlockMatrix:
        # (A^T)_ij = (A_ji)^T; real operators, so .H is the transpose
        n_rows, n_cols = self.block_shape
        return BlockMatrix(
            [
                [_transpose(self.blocks[i][j]) for i in range(n_rows)]
                for j in range(n_cols)
            ]
        )

    def to_dense(self) -> FloatArray:
        """Return ``np.block`` of the dense blocks (zeros for ``None``)."""
        return np.block(
            [
                [
                    np.zeros((r, c)) if b is None else b.to_dense()
                    for b, c in zip(row, self.col_sizes)
                ]
                for row, r in zip(self.blocks, self.row_sizes)
            ]
        )

    def diagonal(self) -> FloatArray:
        """Return the main diagonal; block by block when the diagonal blocks are square.

        Returns
        -------
        ndarray of shape (n,)
            The diagonal of the (square) block matrix.
        """
        self._require_square("diagonal")
        if self.row_sizes != self.col_sizes:
            return super().diagonal()
        # diag(A) = concat_i diag(A_ii)
        diags = [self.blocks[i][i] for i in range(len(self.row_sizes))]
        return np.concatenate(
            [
                np.zeros(n) if b is None else b.diagonal()
                for b, n in zip(diags, self.row_sizes)
            ]
        )


__all__ = ["BlockMatrix"]
