"""Predictions and samples of the state-space (Kalman) route, hyperparameters fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import kron_outer
from kronecker_gp.solvers._protocol import Factorization, SolverInfo

if TYPE_CHECKING:  # the route imports this module to build its factorisations
    from kronecker_gp.solvers._kalman import SSMState, StateSpaceRoute


@dataclass
class KalmanFactorization(Factorization):
    """The state-space route's fitted state, with the estimator's prediction calls.

    The axis ``route.axis`` is solved by Kalman filtering; the other axes
    enter through their cross-covariances with the training coordinates.
    """

    route: StateSpaceRoute
    state: SSMState
    kernel_t: Kernel
    lml: float
    grad: FloatArray | None
    info: SolverInfo

    def alpha(self) -> FloatArray:
        """Return ``(K + noise)^{-1} y`` on the training grid (zero where missing)."""
        return self.route.alpha(self.state, self.kernel_t)

    def _space(self, kernel: Any) -> list[int]:
        return [d for d in range(len(kernel.kernels)) if d != self.route.axis]

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variances (``std``) or covariance (``cov``) at points."""
        route, kernels, coords = self.route, kernel.kernels, self.route.coords
        space = self._space(kernel)
        cross = [kernels[d](parts[d], coords[d]) for d in space]
        times = parts[route.axis][:, 0]
        n_pts = times.size
        if cov:
            route.check_cov_size(n_pts, int(np.prod([c.shape[0] for c in coords])))
            space_prior = np.ones((n_pts, n_pts))
            for d in space:
                space_prior = space_prior * kernels[d](parts[d])
            mean, _ = route.predict_points(
                self.state, self.kernel_t, cross, None, times
            )
            return mean, route.covariance_points(
                self.state, self.kernel_t, cross, space_prior, times
            )
        prior = None
        if std:
            prior = np.ones(n_pts)
            for d in space:
                prior = prior * kernels[d].diag(parts[d])
        return route.predict_points(self.state, self.kernel_t, cross, prior, times)

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variance on a test grid, flat in C order."""
        route, kernels, coords = self.route, kernel.kernels, self.route.coords
        space = self._space(kernel)
        # None: the training coordinates (the route rotates K_d U_d = U_d W_d)
        cross = [
            None
            if test.coords[d].shape == coords[d].shape
            and np.array_equal(test.coords[d], coords[d])
            else kernels[d](test.coords[d], coords[d])
            for d in space
        ]
        prior = None
        if std:
            prior = kron_outer(
                [kernels[d].diag(test.coords[d]) for d in space] or [np.ones(1)]
            )
        mean, var = route.predict_grid(
            self.state,
            self.kernel_t,
            cross,
            prior,
            test.coords[route.axis][:, 0],
            test.shape,
        )
        return mean.reshape(-1), None if var is None else var.reshape(-1)

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Posterior samples at the training coordinates of the other axes."""
        route = self.route
        for d, (tr, te) in enumerate(zip(route.coords, test.coords)):
            if d != route.axis and not np.array_equal(tr, te):
                raise ValueError(
                    "sample_grid on the state-space route draws at the training "
                    f"coordinates of every other axis; axis {d} differs. Pass the "
                    "training coordinates there (any times are allowed)."
                )
        draws = route.sample_grid(
            self.state, self.kernel_t, test.coords[route.axis][:, 0], n_samples, rng
        )
        return np.asarray(draws).reshape(test.size, n_samples)
