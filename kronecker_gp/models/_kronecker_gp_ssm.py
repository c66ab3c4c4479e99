"""KroneckerGP's state-space route: the estimator side (a mixin).

The numerics live in :mod:`kronecker_gp.solvers._kalman` and
:mod:`kronecker_gp.solvers._kalman_series`; this mixin chooses the axis, checks
that the route applies, and maps the estimator's methods onto it.
"""

from __future__ import annotations

import numbers
import time
from typing import Any

import numpy as np

from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray
from kronecker_gp.kernels._markov import is_markov_kernel
from kronecker_gp.linalg import kron_outer
from kronecker_gp.solvers._kalman import StateSpaceRoute
from kronecker_gp.solvers._protocol import SolverInfo


def sort_axis(
    grid: Grid, y: FloatArray, axis: int, cell_noise: FloatArray | None = None
) -> tuple[Grid, FloatArray, FloatArray | None]:
    """Sort the coordinates of ``axis`` increasingly, with ``y`` and ``cell_noise``.

    ``y`` and ``cell_noise`` are flat in C order.
    """
    order = np.argsort(grid.coords[axis][:, 0], kind="stable")
    if np.all(order == np.arange(order.size)):
        return grid, y, cell_noise
    coords = list(grid.coords)
    coords[axis] = coords[axis][order]

    def take(x: FloatArray) -> FloatArray:
        return np.take(x.reshape(grid.shape), order, axis=axis).reshape(-1)

    return Grid(coords), take(y), None if cell_noise is None else take(cell_noise)


class StateSpaceMixin:
    """Methods of :class:`KroneckerGP` for the Kalman-filter route."""

    state_space: Any
    state_space_min_size: int
    #: set by fit: the eigen route's posterior and missing-cell / per-cell-noise
    #: system (None on the state-space route)
    _post: Any
    _system: Any

    def _state_space_axis(self, grid: Grid, kernel: Any) -> int | None:
        choice = self.state_space
        if choice is None:
            return None
        candidates = [
            d
            for d, (c, k) in enumerate(zip(grid.coords, kernel.kernels))
            if c.shape[1] == 1 and is_markov_kernel(k)
        ]
        if choice == "auto":
            big = [d for d in candidates if grid.shape[d] >= self.state_space_min_size]
            return max(big, key=lambda d: grid.shape[d]) if big else None
        if (
            isinstance(choice, bool)
            or not isinstance(choice, numbers.Integral)
            or not (0 <= int(choice) < len(grid.shape))
        ):
            raise ValueError(
                f'state_space must be "auto", None or an axis index in '
                f"[0, {len(grid.shape)}); got {choice!r}."
            )
        if choice not in candidates:
            raise ValueError(
                f"state_space={choice}: axis {choice} needs 1-D coordinates and a "
                f"Markov kernel; got {kernel.kernels[choice]!r}. Use Matern(nu=0.5), "
                "Matern(nu=1.5) or Matern(nu=2.5), optionally times ConstantKernel, "
                "or sums of these."
            )
        return int(choice)

    def _make_route(
        self, grid: Grid, axis: int, cell_noise: FloatArray | None
    ) -> StateSpaceRoute:
        solver = self._solver  # type: ignore[attr-defined]
        if cell_noise is not None and solver.missing is not None:
            raise ValueError(
                "the state-space route takes per-cell noise or missing cells, not "
                "both; this fit has both. Pass state_space=None."
            )
        missing = None
        if solver.missing is not None:
            missing = np.zeros(grid.shape, dtype=bool)
            missing.reshape(-1)[solver.missing] = True
        return StateSpaceRoute(
            axis,
            grid.coords[axis][:, 0],
            solver.y.reshape(grid.shape),
            missing=missing,
            method=solver.method,
            tol=solver.tol,
            max_iter=solver.max_iter,
            n_probes=solver.n_probes,
            seed=solver.seed,
            cell_noise=(
                None
                if solver.cell_noise is None
                else solver.cell_noise.reshape(grid.shape)
            ),
        )

    def _space_grams(self, coords: list[FloatArray], eval_gradient: bool) -> list[Any]:
        route = self._ssm  # type: ignore[attr-defined]
        kernels = self.kernel_.kernels  # type: ignore[attr-defined]
        return [
            k(c, eval_gradient=eval_gradient)
            for d, (k, c) in enumerate(zip(kernels, coords))
            if d != route.axis
        ]

    def _ssm_lml(self, eval_gradient: bool) -> tuple[float, FloatArray]:
        route = self._ssm  # type: ignore[attr-defined]
        kernel_t = self.kernel_.kernels[route.axis]  # type: ignore[attr-defined]
        grams = self._space_grams(self.grid_.coords, eval_gradient)  # type: ignore[attr-defined]
        noise = self.noise_  # type: ignore[attr-defined]
        free = self._noise_log_bounds is not None  # type: ignore[attr-defined]
        if not eval_gradient:
            lml, _, state = route.lml(grams, kernel_t, noise)
            self._ssm_std_error = (
                0.0 if state.info is None else state.info.lml_std_error
            )
            return lml, np.zeros(0)
        lml, parts, _ = route.lml(
            [k for k, _ in grams],
            kernel_t,
            noise,
            [g for _, g in grams],
            noise_free=free,
        )
        return lml, np.concatenate(parts)

    def _finish_state_space(self, t0: float) -> Any:
        route = self._ssm  # type: ignore[attr-defined]
        kernel_t = self.kernel_.kernels[route.axis]  # type: ignore[attr-defined]
        grams = self._space_grams(self.grid_.coords, False)  # type: ignore[attr-defined]
        lml, _, state = route.lml(grams, kernel_t, self.noise_, need_lml=False)  # type: ignore[attr-defined]
        self._ssm_state = state
        self._post, self._system = None, None
        # an estimated LML (missing cells, CG path) is computed on first access
        self._lml_value = None if np.isnan(lml) else lml
        self.solver_info_ = state.info or SolverInfo(
            "state-space", 0, extra={"axis": route.axis}
        )
        self.solver_info_.extra["n_series"] = state.weights.size
        self.theta_ = self._theta()  # type: ignore[attr-defined]
        self.kernels_ = list(self.kernel_.kernels)  # type: ignore[attr-defined]
        if route.cell_noise is not None:
            self.noise_variances_ = self.noise_ * route.cell_noise  # type: ignore[attr-defined]
        self._alpha_cache = route.alpha(state, kernel_t)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _ssm_cross(
        self, parts: list[FloatArray], with_var: bool
    ) -> tuple[list[FloatArray], FloatArray | None, FloatArray]:
        """Space cross-covariances, space prior diagonal and the time column."""
        route = self._ssm  # type: ignore[attr-defined]
        kernels = self.kernel_.kernels  # type: ignore[attr-defined]
        coords = self.grid_.coords  # type: ignore[attr-defined]
        space = [d for d in range(len(kernels)) if d != route.axis]
        cross = [kernels[d](parts[d], coords[d]) for d in space]
        prior = None
        if with_var:
            diags = [kernels[d].diag(parts[d]) for d in space]
            prior = diags[0] if diags else np.ones(parts[route.axis].shape[0])
            for extra in diags[1:]:
                prior = prior * extra
        return cross, prior, parts[route.axis][:, 0]

    def _ssm_predict(
        self, X: FloatArray, return_std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        route = self._ssm  # type: ignore[attr-defined]
        parts = [X[:, cols] for cols in self.axes_]  # type: ignore[attr-defined]
        cross, prior, times = self._ssm_cross(parts, return_std)
        kernel_t = self.kernel_.kernels[route.axis]  # type: ignore[attr-defined]
        return route.predict_points(self._ssm_state, kernel_t, cross, prior, times)

    def _ssm_predict_cov(self, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        route = self._ssm  # type: ignore[attr-defined]
        kernels = self.kernel_.kernels  # type: ignore[attr-defined]
        parts = [X[:, cols] for cols in self.axes_]  # type: ignore[attr-defined]
        route.check_cov_size(X.shape[0], self.grid_.size)  # type: ignore[attr-defined]
        cross, _, times = self._ssm_cross(parts, False)
        space_prior = np.ones((X.shape[0], X.shape[0]))
        for d, k in enumerate(kernels):
            if d != route.axis:
                space_prior = space_prior * k(parts[d])
        mean, _ = route.predict_points(
            self._ssm_state, kernels[route.axis], cross, None, times
        )
        cov = route.covariance_points(
            self._ssm_state, kernels[route.axis], cross, space_prior, times
        )
        return mean, cov

    def _ssm_predict_grid(
        self, test: Grid, return_std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        route = self._ssm  # type: ignore[attr-defined]
        kernels = self.kernel_.kernels  # type: ignore[attr-defined]
        coords = self.grid_.coords  # type: ignore[attr-defined]
        space = [d for d in range(len(kernels)) if d != route.axis]
        cross = [kernels[d](test.coords[d], coords[d]) for d in space]
        prior = None
        if return_std:
            prior = kron_outer(
                [kernels[d].diag(test.coords[d]) for d in space] or [np.ones(1)]
            )
        return route.predict_grid(
            self._ssm_state,
            kernels[route.axis],
            cross,
            prior,
            test.coords[route.axis][:, 0],
            test.shape,
        )

    def _ssm_sample_grid(
        self, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        route = self._ssm  # type: ignore[attr-defined]
        coords = self.grid_.coords  # type: ignore[attr-defined]
        for d, (tr, te) in enumerate(zip(coords, test.coords)):
            if d != route.axis and not np.array_equal(tr, te):
                raise ValueError(
                    "sample_grid on the state-space route draws at the training "
                    f"coordinates of every other axis; axis {d} differs. Pass the "
                    "training coordinates there (any times are allowed)."
                )
        kernel_t = self.kernel_.kernels[route.axis]  # type: ignore[attr-defined]
        return route.sample_grid(
            self._ssm_state, kernel_t, test.coords[route.axis][:, 0], n_samples, rng
        )
