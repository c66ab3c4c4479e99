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

__all__ = [
    "CoregionalizationKernel",
    "GraphDiffusionKernel",
    "GraphMaternKernel",
    "KroneckerKernel",
    "chain_laplacian",
    "graph_laplacian",
]
