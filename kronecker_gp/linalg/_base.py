"""The structured-operator base class."""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import check_symmetric


class StructuredOperator(LinearOperator):  # type: ignore[misc]
    """A matrix known through its structure, never stored densely.

    Subclasses implement ``_matmat``, ``_adjoint`` and ``to_dense`` and override
    the five structured methods below where the structure makes them cheap. The
    defaults here form the dense matrix; they exist so that every operator has
    the full surface and are meant for small operators and tests only.

    Operators are immutable once built. Because this class is a
    :class:`scipy.sparse.linalg.LinearOperator`, scipy's iterative solvers
    (``cg``, ``minres``, ``eigsh``...) accept any subclass directly.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__(dtype=np.dtype(np.float64), shape=shape)

    # -- the surface every operator has -----------------------------------------
    def to_dense(self) -> FloatArray:
        """Return the operator as a dense ndarray (for tests and small sizes)."""
        return np.asarray(self._matmat(np.eye(self.shape[1])))

    def diagonal(self) -> FloatArray:
        """Return the main diagonal as an ndarray."""
        return np.diag(self.to_dense()).copy()

    def eigh(self) -> tuple[FloatArray, StructuredOperator]:
        """Return ``(eigenvalues, eigenvectors)`` of a symmetric operator.

        The eigenvectors come back as an operator so that structured subclasses
        never form them densely.
        """
        self._require_square("eigh")
        w, v = scipy.linalg.eigh(check_symmetric(self.to_dense(), "operator"))
        # local import: _dense subclasses this module's class
        from kronecker_gp.linalg._dense import DenseOperator  # noqa: PLC0415

        return w, DenseOperator(v)

    def solve(self, b: ArrayLike, shift: float = 0.0) -> FloatArray:
        """Return ``(A + shift * I)^{-1} b`` for a vector or matrix ``b``."""
        self._require_square("solve")
        a = self.to_dense() + shift * np.eye(self.shape[0])
        return np.asarray(scipy.linalg.solve(a, np.asarray(b, dtype=float)))

    def logdet(self, shift: float = 0.0) -> float:
        """Return ``log det(A + shift * I)`` of a positive-definite operator."""
        self._require_square("logdet")
        sign, value = np.linalg.slogdet(self.to_dense() + shift * np.eye(self.shape[0]))
        if sign <= 0:
            raise np.linalg.LinAlgError(
                "logdet: the operator (plus shift) is not positive definite; "
                "increase the shift or the noise."
            )
        return float(value)

    # -- helpers ----------------------------------------------------------------
    def _require_square(self, what: str) -> None:
        if self.shape[0] != self.shape[1]:
            raise ValueError(
                f"{what} needs a square operator; {type(self).__name__} has shape "
                f"{self.shape}."
            )

    def _matvec(self, x: FloatArray) -> FloatArray:
        return self._matmat(np.reshape(x, (-1, 1))).reshape(-1)

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} {type(self).__name__}>"
