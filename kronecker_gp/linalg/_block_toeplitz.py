"""The block-Toeplitz operator, multiplied through FFTs."""

from __future__ import annotations

import numpy as np
import scipy.fft

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.linalg._base import StructuredOperator


def _as_blocks(a: ArrayLike, name: str) -> FloatArray:
    """Return a sequence of blocks as an array of shape (n_blocks, p, q)."""
    arr = as_float_array(a, name, ndim=(1, 3))
    if arr.ndim == 1:
        arr = arr[:, None, None]
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(
            f"{name} must hold at least one non-empty block; got shape {arr.shape}."
        )
    return arr


class BlockToeplitz(StructuredOperator):
    r"""A block-Toeplitz matrix: blocks constant along each block diagonal.

    Block :math:`(i, j)` is :math:`T_{i-j}`: the blocks of the first block
    column are :math:`T_0, T_1, \dots` and those of the first block row
    :math:`T_0, T_{-1}, \dots`. This is the covariance of a stationary
    multi-output sequence on a regular grid, :math:`\operatorname{Cov}(y_{t+k},
    y_t) = T_k`, and with 1x1 blocks it is :func:`scipy.linalg.toeplitz`.

    Parameters
    ----------
    first_column : array-like of shape (m, p, q) or (m,)
        The blocks :math:`T_0, \dots, T_{m-1}` of the first block column; a 1-D
        array gives 1x1 blocks (a scalar Toeplitz matrix).
    first_row : array-like of shape (n, p, q) or (n,), default=None
        The blocks :math:`T_0, T_{-1}, \dots, T_{-(n-1)}` of the first block
        row; ``first_row[0]`` must equal ``first_column[0]``. ``None`` gives the
        symmetric case :math:`T_{-k} = T_k^T` (square blocks needed), as for a
        covariance.

    Attributes
    ----------
    first_column : ndarray of shape (m, p, q)
        Read-only copy of the first block column.
    first_row : ndarray of shape (n, p, q)
        Read-only copy of the first block row.

    Raises
    ------
    ValueError
        If the blocks are not 3-D (or 1-D), their shapes disagree, the diagonal
        blocks differ, or ``first_row`` is omitted with rectangular blocks.

    Notes
    -----
    The matrix is embedded in a block circulant of :math:`L \ge m + n - 1`
    blocks, whose product with a vector is a block-wise circular convolution:

    .. math::
        y_i = \sum_j T_{i-j} x_j = \mathcal F^{-1}\big(\hat T_f \hat x_f\big)_i,

    one real FFT of the blocks (once, at construction) and per product two
    FFTs plus :math:`L` small block products: :math:`O(L p q (k + \log L))`
    for :math:`k` right-hand sides, where the dense product costs
    :math:`O(m n p q k)`. ``eigh``, ``solve`` and ``logdet`` use the dense
    fallbacks of :class:`StructuredOperator`; Toeplitz structure does not make
    them cheap in general, so use ``scipy.sparse.linalg.cg`` on the operator
    for large solves.

    Examples
    --------
    With 1x1 blocks this is a Toeplitz matrix:

    >>> import numpy as np
    >>> import scipy.linalg
    >>> from kronecker_gp.linalg import BlockToeplitz
    >>> op = BlockToeplitz([4.0, 2.0, 1.0])
    >>> bool(np.array_equal(op.to_dense(), scipy.linalg.toeplitz([4.0, 2.0, 1.0])))
    True

    ``np.kron`` of a 2x2 Toeplitz matrix and a 2x2 matrix is block Toeplitz with
    blocks ``t_k B``:

    >>> A = np.array([[1.0, 2.0], [3.0, 1.0]])  # Toeplitz: constant diagonal
    >>> B = np.array([[0.0, 5.0], [6.0, 7.0]])
    >>> op = BlockToeplitz([A[0, 0] * B, A[1, 0] * B], first_row=[B, A[0, 1] * B])
    >>> bool(np.array_equal(op.to_dense(), np.kron(A, B)))
    True
    >>> x = np.arange(4.0)
    >>> bool(np.allclose(op @ x, np.kron(A, B) @ x))
    True

    A multi-output covariance, symmetric by default:

    >>> T0 = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> T1 = np.array([[1.0, 0.2], [0.3, 0.5]])
    >>> op = BlockToeplitz([T0, T1])
    >>> bool(np.array_equal(op.to_dense(), np.block([[T0, T1.T], [T1, T0]])))
    True
    """

    def __init__(
        self, first_column: ArrayLike, first_row: ArrayLike | None = None
    ) -> None:
        col = _as_blocks(first_column, "first_column")
        if first_row is None:
            if col.shape[1] != col.shape[2]:
                raise ValueError(
                    "first_row may be omitted (symmetric case, T_{-k} = T_k^T) only "
                    f"with square blocks; first_column has {col.shape[1:]} blocks. "
                    "Pass first_row."
                )
            row = np.concatenate([col[:1], np.transpose(col[1:], (0, 2, 1))])
        else:
            row = _as_blocks(first_row, "first_row")
            if row.shape[1:] != col.shape[1:]:
                raise ValueError(
                    f"first_row has blocks of shape {row.shape[1:]} but first_column "
                    f"has {col.shape[1:]}; all blocks must have the same shape."
                )
            if not np.array_equal(row[0], col[0]):
                raise ValueError(
                    "first_row[0] must equal first_column[0] (both are the diagonal "
                    "block T_0); got different blocks."
                )
        col.flags.writeable = False
        row.flags.writeable = False
        self.first_column: FloatArray = col
        self.first_row: FloatArray = row
        m, n = col.shape[0], row.shape[0]
        p, q = col.shape[1], col.shape[2]
        self._n_fft = scipy.fft.next_fast_len(m + n - 1, real=True)
        # circulant embedding: c[k] = T_k (k < m), c[L - k] = T_{-k} (0 < k < n)
        c = np.zeros((self._n_fft, p, q))
        c[:m] = col
        if n > 1:
            c[self._n_fft - n + 1 :] = row[:0:-1]
        self._c_hat = scipy.fft.rfft(c, axis=0)
        super().__init__((m * p, n * q))

    @property
    def block_shape(self) -> tuple[int, int]:
        """The number of block rows and block columns."""
        return self.first_column.shape[0], self.first_row.shape[0]

    def _matmat(self, x: FloatArray) -> FloatArray:
        # y_i = sum_j T_{i-j} x_j: block-wise circular convolution via the FFT
        m, n = self.block_shape
        _, p, q = self.first_column.shape
        k = x.shape[1]
        x_hat = scipy.fft.rfft(
            np.asarray(x, dtype=np.float64).reshape(n, q, k), n=self._n_fft, axis=0
        )
        y = scipy.fft.irfft(np.matmul(self._c_hat, x_hat), n=self._n_fft, axis=0)
        return np.ascontiguousarray(y[:m].reshape(m * p, k))

    def _adjoint(self) -> BlockToeplitz:
        # (A^T)_ij = (A_ji)^T = T_{j-i}^T: first column T_{-k}^T, first row T_k^T
        return BlockToeplitz(
            np.transpose(self.first_row, (0, 2, 1)),
            first_row=np.transpose(self.first_column, (0, 2, 1)),
        )

    def to_dense(self) -> FloatArray:
        """Return ``np.block([[T_{i-j}]])`` (tests and small sizes only)."""
        m, n = self.block_shape
        return np.block(
            [
                [
                    self.first_column[i - j] if i >= j else self.first_row[j - i]
                    for j in range(n)
                ]
                for i in range(m)
            ]
        )

    def diagonal(self) -> FloatArray:
        """Return the main diagonal, ``diag(T_0)`` repeated, for square blocks.

        Returns
        -------
        ndarray of shape (n,)
            The diagonal of the (square) operator.
        """
        self._require_square("diagonal")
        m, n = self.block_shape
        p, q = self.first_column.shape[1:]
        if m != n or p != q:
            return super().diagonal()
        # diag of a block Toeplitz with square blocks: diag(T_0) in every block
        return np.tile(np.diag(self.first_column[0]), m)


__all__ = ["BlockToeplitz"]
