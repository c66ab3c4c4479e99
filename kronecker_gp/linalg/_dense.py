"""Dense and diagonal operators: the leaves of structured expressions."""

from __future__ import annotations

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.linalg._base import StructuredOperator


class DenseOperator(StructuredOperator):
    """Wrap a dense matrix as a :class:`StructuredOperator`.

    Parameters
    ----------
    matrix : array-like of shape (n_rows, n_cols)
        The matrix. It is copied and must be finite.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg import DenseOperator
    >>> op = DenseOperator([[2.0, 1.0], [1.0, 2.0]])
    >>> op @ np.ones(2)
    array([3., 3.])
    """

    def __init__(self, matrix: ArrayLike) -> None:
        self.matrix = as_float_array(matrix, "matrix", ndim=2).copy()
        self.matrix.flags.writeable = False
        super().__init__(self.matrix.shape)

    def _matmat(self, x: FloatArray) -> FloatArray:
        return self.matrix @ x

    def _adjoint(self) -> DenseOperator:
        return DenseOperator(self.matrix.T)

    def to_dense(self) -> FloatArray:
        """Return a copy of the wrapped matrix."""
        return self.matrix.copy()

    def diagonal(self) -> FloatArray:
        """Return the main diagonal."""
        return np.diag(self.matrix).copy()


class DiagonalOperator(StructuredOperator):
    """A diagonal matrix stored as its diagonal.

    Parameters
    ----------
    diag : array-like of shape (n,)
        The diagonal entries.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg import DiagonalOperator
    >>> op = DiagonalOperator([1.0, 2.0, 4.0])
    >>> op.solve(np.ones(3))
    array([1.  , 0.5 , 0.25])
    """

    def __init__(self, diag: ArrayLike) -> None:
        self.diag = as_float_array(diag, "diag", ndim=1).copy()
        self.diag.flags.writeable = False
        n = self.diag.shape[0]
        super().__init__((n, n))

    def _matmat(self, x: FloatArray) -> FloatArray:
        return self.diag[:, None] * x

    def _adjoint(self) -> DiagonalOperator:
        return self

    def to_dense(self) -> FloatArray:
        """Return ``np.diag(diag)``."""
        return np.diag(self.diag)

    def diagonal(self) -> FloatArray:
        """Return a copy of the diagonal."""
        return self.diag.copy()

    def eigh(self) -> tuple[FloatArray, StructuredOperator]:
        """Return the diagonal and the identity (unsorted, in storage order)."""
        return self.diag.copy(), DiagonalOperator(np.ones_like(self.diag))

    def solve(self, b: ArrayLike, shift: float = 0.0) -> FloatArray:
        """Return ``(D + shift * I)^{-1} b``."""
        # (D + sI)^{-1} b = b / (d + s)
        d = self.diag + shift
        if np.any(d == 0):
            raise np.linalg.LinAlgError("solve: the diagonal (plus shift) has zeros.")
        b = np.asarray(b, dtype=float)
        return b / d if b.ndim == 1 else b / d[:, None]

    def logdet(self, shift: float = 0.0) -> float:
        """Return ``sum(log(diag + shift))``."""
        d = self.diag + shift
        if np.any(d <= 0):
            raise np.linalg.LinAlgError(
                "logdet: the diagonal (plus shift) is not positive; increase the shift."
            )
        return float(np.sum(np.log(d)))
