"""The Kronecker product operator."""

from __future__ import annotations

from functools import reduce

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.linalg._base import StructuredOperator
from kronecker_gp.linalg._identities import (
    kron_diag,
    kron_eigh,
    kron_logdet,
    kron_matvec,
    kron_outer,
    kron_solve_shifted,
)


class KroneckerProduct(StructuredOperator):
    r"""The Kronecker product ``A_1 (x) A_2 (x) ... (x) A_D`` of D >= 2 factors.

    Only the factors are stored: memory is :math:`O(\sum_d n_d^2)` where the
    dense matrix needs :math:`O(N^2)`, :math:`N = \prod_d n_d`.

    Parameters
    ----------
    *factors : array-like of shape (m_d, n_d)
        The factors, in the grid's axis order (C order: the last factor's index
        varies fastest). Rectangular factors are allowed for products; ``eigh``,
        ``solve`` and ``logdet`` need square symmetric factors.

    Attributes
    ----------
    factors : tuple of ndarray
        Read-only copies of the factors.

    Notes
    -----
    ``A (x) B @ vec(X) = vec(A X B^T)`` (row-major ``vec``), applied one mode at
    a time: cost :math:`O(N \sum_d n_d)`. The eigendecomposition, solve and
    log-determinant come from the factors' eigendecompositions,
    :math:`O(\sum_d n_d^3)`.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg import KroneckerProduct
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> B = np.array([[0.0, 5.0], [6.0, 7.0]])
    >>> np.kron(A, B)
    array([[ 0.,  5.,  0., 10.],
           [ 6.,  7., 12., 14.],
           [ 0., 15.,  0., 20.],
           [18., 21., 24., 28.]])
    >>> op = KroneckerProduct(A, B)
    >>> bool(np.array_equal(op.to_dense(), np.kron(A, B)))
    True
    >>> x = np.arange(4.0)
    >>> bool(np.allclose(op @ x, np.kron(A, B) @ x))
    True
    """

    def __init__(self, *factors: ArrayLike) -> None:
        if len(factors) < 2:
            raise ValueError(
                f"KroneckerProduct needs at least 2 factors; got {len(factors)}."
            )
        mats = []
        for d, f in enumerate(factors):
            a = as_float_array(f, f"factor {d}", ndim=2).copy()
            a.flags.writeable = False
            mats.append(a)
        self.factors: tuple[FloatArray, ...] = tuple(mats)
        rows = int(np.prod([a.shape[0] for a in mats]))
        cols = int(np.prod([a.shape[1] for a in mats]))
        self._eig: tuple[list[FloatArray], list[FloatArray]] | None = None
        super().__init__((rows, cols))

    def _matmat(self, x: FloatArray) -> FloatArray:
        return kron_matvec(self.factors, x)

    def _adjoint(self) -> KroneckerProduct:
        # (A (x) B)^T = A^T (x) B^T
        return KroneckerProduct(*[a.T for a in self.factors])

    def to_dense(self) -> FloatArray:
        """Return ``np.kron(A_1, np.kron(A_2, ...))`` (tests and small sizes only)."""
        return np.asarray(reduce(np.kron, self.factors))  # type: ignore[arg-type]

    def diagonal(self) -> FloatArray:
        """Return the diagonal, ``diag(A_1) (x) ... (x) diag(A_D)``."""
        self._require_square("diagonal")
        if all(a.shape[0] == a.shape[1] for a in self.factors):
            return kron_diag(self.factors)
        # square product of rectangular factors: entry i is prod_d A_d[r_d(i), c_d(i)]
        idx = np.arange(self.shape[0])
        rows = np.unravel_index(idx, [a.shape[0] for a in self.factors])
        cols = np.unravel_index(idx, [a.shape[1] for a in self.factors])
        return np.prod([a[r, c] for a, r, c in zip(self.factors, rows, cols)], axis=0)

    def _eigenpairs(self) -> tuple[list[FloatArray], list[FloatArray]]:
        if self._eig is None:
            self._require_square("eigh")
            self._eig = kron_eigh(self.factors)
        return self._eig

    def eigh(self) -> tuple[FloatArray, StructuredOperator]:
        """Return the eigenvalues (Kronecker order) and eigenvectors as an operator.

        Returns
        -------
        eigvals : ndarray of shape (N,)
            ``kron(w_1, ..., w_D)``: not sorted.
        eigvecs : KroneckerProduct
            ``U_1 (x) ... (x) U_D``.
        """
        # A_d = U_d W_d U_d^T  =>  (x)_d A_d = ((x) U_d) ((x) W_d) ((x) U_d)^T
        ws, us = self._eigenpairs()
        return kron_outer(ws), KroneckerProduct(*us)

    def solve(self, b: ArrayLike, shift: float = 0.0) -> FloatArray:
        """Return ``(A_1 (x) ... (x) A_D + shift * I)^{-1} b`` via the factor eigh."""
        # (K + sI)^{-1} = U (W + sI)^{-1} U^T
        ws, us = self._eigenpairs()
        return kron_solve_shifted(kron_outer(ws), us, shift, b)

    def logdet(self, shift: float = 0.0) -> float:
        """Return ``log det(A_1 (x) ... (x) A_D + shift * I)``."""
        # log|A (x) B + sI| = sum_ij log(a_i b_j + s)
        ws, _ = self._eigenpairs()
        return kron_logdet(ws, shift)
