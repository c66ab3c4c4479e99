"""Structured linear operators and Kronecker identities.

Ordering convention
-------------------
Grids use C order: the last axis varies fastest. For a grid of shape
``(n_1, ..., n_D)`` with values ``Y``, the flat vector is ``y = Y.reshape(-1)``
and the covariance ``K_1 (x) ... (x) K_D`` equals
``np.kron(K_1, np.kron(K_2, ...))``. ``KroneckerProduct(A, B) @ x`` equals
``(A @ x.reshape(A.shape[1], B.shape[1]) @ B.T).reshape(-1)``. Every module
calls :func:`kron_matvec` rather than re-deriving this.

Examples
--------
>>> import numpy as np
>>> from kronecker_gp.linalg import KroneckerProduct
>>> A, B = np.eye(2) * 2.0, np.arange(9.0).reshape(3, 3)
>>> X = np.arange(6.0).reshape(2, 3)
>>> op = KroneckerProduct(A, B)
>>> bool(np.allclose(op @ X.reshape(-1), (A @ X @ B.T).reshape(-1)))
True
"""

from kronecker_gp.linalg._base import StructuredOperator
from kronecker_gp.linalg._block import BlockMatrix
from kronecker_gp.linalg._block_diag import BlockDiagonal
from kronecker_gp.linalg._block_toeplitz import BlockToeplitz
from kronecker_gp.linalg._dense import DenseOperator, DiagonalOperator
from kronecker_gp.linalg._identities import (
    face_split_gram,
    face_split_matvec,
    factor_eigh,
    kron_dense,
    kron_diag,
    kron_eigh,
    kron_logdet,
    kron_matvec,
    kron_outer,
    kron_quad_form,
    kron_solve_shifted,
)
from kronecker_gp.linalg._kron import KroneckerProduct
from kronecker_gp.linalg._kron_sum import KroneckerSum

__all__ = [
    "BlockDiagonal",
    "BlockMatrix",
    "BlockToeplitz",
    "DenseOperator",
    "DiagonalOperator",
    "KroneckerProduct",
    "KroneckerSum",
    "StructuredOperator",
    "face_split_gram",
    "face_split_matvec",
    "factor_eigh",
    "kron_dense",
    "kron_diag",
    "kron_eigh",
    "kron_logdet",
    "kron_matvec",
    "kron_outer",
    "kron_quad_form",
    "kron_solve_shifted",
]
