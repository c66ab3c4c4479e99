"""Scikit-learn kernels for grids: per-axis factors and their product.

Stationary kernels (``RBF``, ``Matern``...) come from
``sklearn.gaussian_process.kernels``; this module adds the product over axes.
"""

from kronecker_gp.kernels._graph import (
    GraphDiffusionKernel,
    GraphMaternKernel,
    chain_laplacian,
    graph_laplacian,
)
from kronecker_gp.kernels._kronecker import KroneckerKernel
from kronecker_gp.kernels._multitask import CoregionalizationKernel
from kronecker_gp.kernels._separable_sum import SeparableSum

__all__ = [
    "CoregionalizationKernel",
    "GraphDiffusionKernel",
    "GraphMaternKernel",
    "KroneckerKernel",
    "SeparableSum",
    "chain_laplacian",
    "graph_laplacian",
]
