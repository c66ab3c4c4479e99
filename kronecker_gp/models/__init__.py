"""Stateful estimators (``fit`` / ``predict``)."""

from kronecker_gp.models._kronecker_gp import KroneckerGP

__all__ = ["KroneckerGP"]
