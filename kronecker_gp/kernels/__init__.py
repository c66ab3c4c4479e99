"""Scikit-learn kernels for grids: per-axis factors and their product.

Stationary kernels (``RBF``, ``Matern``...) come from
``sklearn.gaussian_process.kernels``; this module adds the product over axes.
"""

from kronecker_gp.kernels._kronecker import KroneckerKernel

__all__ = ["KroneckerKernel"]
