"""The solver protocol: what a route returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SolverInfo:
    """What a missing-cell solve did (stored as ``KroneckerGP.solver_info_``)."""

    path: str
    n_missing: int
    iterations: int = 0
    residual: float = 0.0
    lml_std_error: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
