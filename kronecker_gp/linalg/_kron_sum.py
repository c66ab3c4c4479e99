"""The Kronecker sum operator (Laplacians of Cartesian product graphs)."""

from __future__ import annotations

from functools import reduce

import numpy as np
import scipy.linalg

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import check_square, check_symmetric
from kronecker_gp.linalg._base import StructuredOperator
from kronecker_gp.linalg._identities import kron_matvec, kron_outer
from kronecker_gp.linalg._kron import KroneckerProduct


class KroneckerSum(StructuredOperator):
    r"""The Kronecker sum ``A_1 (+) ... (+) A_D`` of D >= 2 square factors.

    ``A (+) B = A (x) I_m + I_n (x) B``. The Laplacian of a Cartesian product
    of graphs is the Kronecker sum of the factors' Laplacians.

    Parameters
    ----------
    *factors : array-like of shape (n_d, n_d)
        Square factors in grid axis order.

    Notes
    -----
    The matvec applies each factor along its own mode and adds, cost
    :math:`O(N \sum_d n_d)`. For symmetric factors
    :math:`A_d = U_d W_d U_d^T`, the sum has eigenvectors
    :math:`\bigotimes_d U_d` and eigenvalues :math:`w_1 \oplus \dots
    \oplus w_D` (all sums :math:`w_{1,i} + w_{2,j} + \dots`).

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg import KroneckerSum
    >>> L = np.array([[1.0, -1.0], [-1.0, 1.0]])   # Laplacian of one edge
    >>> op = KroneckerSum(L, L)                     # the 4-cycle's Laplacian
    >>> dense = np.kron(L, np.eye(2)) + np.kron(np.eye(2), L)
    >>> bool(np.allclose(op.to_dense(), dense))
    True
    >>> np.round(np.sort(op.eigh()[0]), 12)
    array([0., 2., 2., 4.])
    """

    def __init__(self, *factors: ArrayLike) -> None:
        if len(factors) < 2:
            raise ValueError(
                f"KroneckerSum needs at least 2 factors; got {len(factors)}."
            )
        mats = []
        for d, f in enumerate(factors):
            a = check_square(f, f"factor {d}").copy()
            a.flags.writeable = False
            mats.append(a)
        self.factors: tuple[FloatArray, ...] = tuple(mats)
        n = int(np.prod([a.shape[0] for a in mats]))
        super().__init__((n, n))

    def _identities_but(self, d: int) -> list[FloatArray]:
        return [a if e == d else np.eye(a.shape[0]) for e, a in enumerate(self.factors)]

    def _matmat(self, x: FloatArray) -> FloatArray:
        # (A (+) B) x = (A (x) I) x + (I (x) B) x; identity modes cost a copy only
        out = np.zeros_like(x, dtype=np.float64)
        for d in range(len(self.factors)):
            out += kron_matvec(self._identities_but(d), x)
        return out

    def _adjoint(self) -> KroneckerSum:
        return KroneckerSum(*[a.T for a in self.factors])

    def to_dense(self) -> FloatArray:
        """Return the explicit sum of Kronecker products (tests and small sizes)."""
        out = np.zeros(self.shape)
        for d in range(len(self.factors)):
            out += reduce(np.kron, self._identities_but(d))  # type: ignore[arg-type]
        return out

    def diagonal(self) -> FloatArray:
        """Return the diagonal, the outer sum of the factors' diagonals."""
        return kron_outer([np.diagonal(a) for a in self.factors], np.add)

    def eigh(self) -> tuple[FloatArray, StructuredOperator]:
        """Return the eigenvalues (outer sum, Kronecker order) and eigenvectors.

        The factors must be symmetric; unlike a covariance, a Kronecker sum may
        have negative eigenvalues, which are kept.
        """
        ws, us = _sym_eigh(self.factors)
        return kron_outer(ws, np.add), KroneckerProduct(*us)

    def solve(self, b: ArrayLike, shift: float = 0.0) -> FloatArray:
        """Return ``(A_1 (+) ... (+) A_D + shift * I)^{-1} b`` via the factor eigh."""
        # (L + sI)^{-1} = U (W_1 (+) ... + sI)^{-1} U^T
        ws, us = _sym_eigh(self.factors)
        lam = kron_outer(ws, np.add) + shift
        if np.any(np.abs(lam) <= 1e-14 * max(1.0, float(np.abs(lam).max()))):
            raise np.linalg.LinAlgError(
                "the Kronecker sum (plus shift) is singular (a graph Laplacian has a "
                "zero eigenvalue); use a positive shift."
            )
        b = np.asarray(b, dtype=np.float64)
        rot = kron_matvec([u.T for u in us], b)
        rot = rot / lam if rot.ndim == 1 else rot / lam[:, None]
        return kron_matvec(us, rot)

    def logdet(self, shift: float = 0.0) -> float:
        """Return ``log det(A_1 (+) ... (+) A_D + shift * I)`` (positive definite)."""
        ws, _ = _sym_eigh(self.factors)
        lam = kron_outer(ws, np.add) + shift
        # same singularity threshold as solve: a Laplacian's zero eigenvalue is ~1e-16
        if np.any(lam <= 1e-14 * max(1.0, float(np.abs(lam).max()))):
            raise np.linalg.LinAlgError(
                "logdet: the Kronecker sum (plus shift) is not positive definite."
            )
        return float(np.sum(np.log(lam)))


def _sym_eigh(
    factors: tuple[FloatArray, ...],
) -> tuple[list[FloatArray], list[FloatArray]]:
    """Eigendecompose symmetric factors without clipping (Laplacians, generators)."""
    ws, us = [], []
    for d, a in enumerate(factors):
        w, u = scipy.linalg.eigh(check_symmetric(a, f"factor {d}"), check_finite=False)
        ws.append(w)
        us.append(u)
    return ws, us
