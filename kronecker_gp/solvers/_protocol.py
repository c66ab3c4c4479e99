"""The solver protocol: what every route returns, and its report.

A route (a solver object chosen by :func:`kronecker_gp.solvers.select_solver`)
holds the training data, grid and numerical settings; its
``factorize(kernel, noise, ...)`` returns a :class:`Factorization`: the log
marginal likelihood and its gradient at these hyperparameters, and everything
prediction and sampling need. Estimators store one factorisation per fit and
call it; they never look at which route made it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray


@dataclass
class SolverInfo:
    """What a solve did (stored as ``KroneckerGP.solver_info_``).

    Attributes
    ----------
    path : str
        The route's label (e.g. ``"complete"``, ``"schur-exact"``).
    n_missing : int
        Missing cells of the training grid.
    iterations : int
        CG iterations of the worst solve (0 on exact paths).
    residual : float
        Worst relative CG residual reached.
    lml_std_error : float
        Standard error of an estimated LML (0 when exact).
    extra : dict
        Route-specific details; ``extra["route"]`` and ``extra["reason"]`` say
        which route the cost model chose and why.
    """

    path: str
    n_missing: int
    iterations: int = 0
    residual: float = 0.0
    lml_std_error: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Factorization(ABC):
    """The result of one ``factorize``: LML, gradient, predictions, samples.

    Every array is in the solver's (normalised) units; the estimator scales
    back. ``lml`` is NaN when it was not asked for (an estimate skipped).
    """

    lml: float
    grad: FloatArray | None
    info: SolverInfo

    def spectrum(self) -> list[FloatArray] | None:
        """Return the factors' eigenvalues where the route has them (else None)."""
        return None

    @abstractmethod
    def alpha(self) -> FloatArray:
        """Return the weights ``(K + noise)^{-1} y`` on the training grid, flat."""

    @abstractmethod
    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and (if asked) variances or covariance at points.

        ``parts[d]`` holds the points' coordinates of axis ``d``.
        """

    @abstractmethod
    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and (if asked) variance on a grid, flat in C order."""

    @abstractmethod
    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Return posterior samples on a grid, shape ``(test.size, n_samples)``."""
