"""Stateful estimators (``fit`` / ``predict``)."""

from kronecker_gp.models._gp_classifier import KroneckerGPClassifier
from kronecker_gp.models._graph_gp import ProductGraphGP
from kronecker_gp.models._kronecker_gp import KroneckerGP
from kronecker_gp.models._laplace_gp import KroneckerLaplaceGP
from kronecker_gp.models._multitask_gp import MultiTaskGP

__all__ = [
    "KroneckerGP",
    "KroneckerGPClassifier",
    "KroneckerLaplaceGP",
    "MultiTaskGP",
    "ProductGraphGP",
]
