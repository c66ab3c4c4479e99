"""The block-diagonal operator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.linalg._base import StructuredOperator
from kronecker_gp.linalg._dense import DenseOperator


def _as_operator(
    block: ArrayLike | StructuredOperator, name: str
) -> StructuredOperator:
    if isinstance(block, StructuredOperator):
        return block
    return DenseOperator(np.atleast_2d(as_float_array(block, name)))


class BlockDiagonal(StructuredOperator):
    """A block-diagonal matrix ``diag(B_1, ..., B_K)`` of arrays or operators.

    Parameters
    ----------
    blocks : sequence of array-like or StructuredOperator
        The diagonal blocks; rectangular blocks are allowed for products, while
        ``eigh``, ``solve`` and ``logdet`` need square blocks.

    Notes
    -----
    Every structured method works block by block: the matvec costs the sum of
    the blocks' matvecs, ``solve`` and ``logdet`` the sum of the blocks' own.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.linalg
    >>> from kronecker_gp.linalg import BlockDiagonal
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> B = np.array([[5.0, 6.0], [7.0, 8.0]])
    >>> scipy.linalg.block_diag(A, B)
    array([[1., 2., 0., 0.],
           [3., 4., 0., 0.],
           [0., 0., 5., 6.],
           [0., 0., 7., 8.]])
    >>> op = BlockDiagonal([A, B])
    >>> bool(np.array_equal(op.to_dense(), scipy.linalg.block_diag(A, B)))
    True
    >>> op @ np.ones(4)
    array([ 3.,  7., 11., 15.])
    """

    def __init__(self, blocks: Sequence[ArrayLike | StructuredOperator]) -> None:
        if isinstance(blocks, np.ndarray) or len(blocks) == 0:
            raise ValueError(
                "blocks must be a non-empty list of matrices or operators; got "
                f"{type(blocks).__name__} of length {len(blocks)}."
            )
        self.blocks: tuple[StructuredOperator, ...] = tuple(
            _as_operator(b, f"blocks[{i}]") for i, b in enumerate(blocks)
        )
        rows = [b.shape[0] for b in self.blocks]
        cols = [b.shape[1] for b in self.blocks]
        self._row_split = np.cumsum(rows)[:-1]
        self._col_split = np.cumsum(cols)[:-1]
        super().__init__((int(sum(rows)), int(sum(cols))))

    def _matmat(self, x: FloatArray) -> FloatArray:
        parts = np.split(x, self._col_split, axis=0)
        return np.concatenate([b @ p for b, p in zip(self.blocks, parts)], axis=0)

    def _adjoint(self) -> BlockDiagonal:
        # .H, not .T: scipy's .T is a plain LinearOperator that _as_operator rejects
        return BlockDiagonal([b.H for b in self.blocks])

    def to_dense(self) -> FloatArray:
        """Return ``scipy.linalg.block_diag`` of the dense blocks."""
        return np.asarray(scipy.linalg.block_diag(*[b.to_dense() for b in self.blocks]))

    def diagonal(self) -> FloatArray:
        """Return the concatenated diagonals of the blocks."""
        self._require_square_blocks("diagonal")
        return np.concatenate([b.diagonal() for b in self.blocks])

    def _require_square_blocks(self, what: str) -> None:
        for i, b in enumerate(self.blocks):
            if b.shape[0] != b.shape[1]:
                raise ValueError(
                    f"{what} needs square blocks; blocks[{i}] is {b.shape}."
                )

    def eigh(self) -> tuple[FloatArray, StructuredOperator]:
        """Return the blocks' eigenvalues, concatenated, and a block-diagonal basis."""
        self._require_square_blocks("eigh")
        pairs = [b.eigh() for b in self.blocks]
        return np.concatenate([w for w, _ in pairs]), BlockDiagonal(
            [v for _, v in pairs]
        )

    def solve(self, b: ArrayLike, shift: float = 0.0) -> FloatArray:
        """Return ``(diag(B_k) + shift * I)^{-1} b``, block by block."""
        self._require_square_blocks("solve")
        parts = np.split(np.asarray(b, dtype=float), self._col_split, axis=0)
        return np.concatenate(
            [blk.solve(p, shift) for blk, p in zip(self.blocks, parts)], axis=0
        )

    def logdet(self, shift: float = 0.0) -> float:
        """Return ``sum_k log det(B_k + shift * I)``."""
        # log|diag(B_1, ..., B_K)| = sum_k log|B_k|
        self._require_square_blocks("logdet")
        return float(sum(b.logdet(shift) for b in self.blocks))
