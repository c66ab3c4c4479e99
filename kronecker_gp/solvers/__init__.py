"""Solvers: one class per route, and the one function that picks the route.

:func:`select_solver` is the only place where a route is chosen: from the
data's structure (complete grid, missing cells, per-cell noise; an axis that
Kalman filtering can solve) and the cost model of
:mod:`kronecker_gp.solvers._cost` (exact where affordable). Each route's
``factorize(kernel, noise, ...)`` returns a
:class:`~kronecker_gp.solvers._protocol.Factorization`.

============================  ==========================================
route (``solver_info_.path``)  structure
============================  ==========================================
``complete``                   complete grid, eigen route
``schur-exact`` / ``-cg``      missing cells, Schur complement on them
``cell-noise-cg``              per-cell noise, complete grid
``cell-noise-schur-*``         per-cell noise and missing cells
``state-space``                complete grid, a Markov axis by Kalman passes
``state-space-schur-*``        missing cells on the Kalman route
``state-space-cell-noise-cg``  per-cell noise on the Kalman route
``spacetime-kalman``           missing cells or per-cell noise with a
                               Markov axis: one Kalman filter over every
                               site's state (exact, any missing pattern)
``dense``                      few observed cells (scattered rows): one
                               Cholesky factor of their covariance
``axis-noise`` / ``-schur-*``  noise varying along axes (``noise_axes``):
                               whitened into the factors, eigen route
``cell-noise-kronecker``       per-cell noise that is a Kronecker product
                               (complete grid, no Kalman axis): the same
                               exact whitened route
``separable-sum-*``            a ``SeparableSum`` kernel (Woodbury or CG)
============================  ==========================================

With missing cells or per-cell noise, the cost model compares the structured
route above with the spatio-temporal filter (a Markov axis,
:math:`O(n_t (n_s d)^3)`) and the dense route (:math:`O(n_o^3)` for ``n_o``
observed cells), and takes the cheapest once the structured route costs more
than ``ROUTE_SWITCH_FLOPS``.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._array_api import is_numpy
from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray
from kronecker_gp.kernels import SeparableSum
from kronecker_gp.kernels._markov import is_markov_kernel, kernel_to_state_space
from kronecker_gp.linalg import kron_outer
from kronecker_gp.linalg._chunked import is_dask_array
from kronecker_gp.linalg._spacetime import spacetime_cost, spacetime_memory
from kronecker_gp.linalg._whitening import kronecker_noise_factors
from kronecker_gp.solvers._axis_noise import AxisNoiseRoute
from kronecker_gp.solvers._cost import choose_schur_method, eigen_solve_flops
from kronecker_gp.solvers._dask import dask_route
from kronecker_gp.solvers._dense import DenseRoute, dense_bytes, dense_flops
from kronecker_gp.solvers._eigen import GridSolver, array_api_route
from kronecker_gp.solvers._kalman import StateSpaceRoute
from kronecker_gp.solvers._multi_target import MultiTargetRoute
from kronecker_gp.solvers._separable_sum import separable_sum_route
from kronecker_gp.solvers._spacetime import SpaceTimeRoute

__all__ = ["RouteChoice", "SolverOptions", "select_solver"]

METHODS = ("auto", "exact", "cg")


@dataclass(frozen=True)
class SolverOptions:
    """Numerical settings shared by every route.

    Attributes
    ----------
    method : {"auto", "exact", "cg"}
        Exact or iterative inference on missing cells (``"auto"``: cost model).
    tol : float
        CG relative residual.
    max_iter : int
        CG iteration cap.
    n_probes : int
        Probe vectors of the stochastic estimates.
    seed : int
        Seed of the probes (estimated objectives are deterministic).
    """

    method: str = "auto"
    tol: float = 1e-10
    max_iter: int = 2000
    n_probes: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the method."""
        if self.method not in METHODS:
            raise ValueError(
                f'solver must be "auto", "exact" or "cg"; got {self.method!r}.'
            )

    def route_kwargs(self) -> dict[str, Any]:
        """Return the settings as keyword arguments of a route's constructor."""
        return asdict(self)

    def for_search(self) -> SolverOptions:
        """Return the looser settings of the hyperparameter search's evaluations."""
        return replace(
            self,
            tol=max(self.tol, _budgets.SEARCH_CG_TOL),
            n_probes=min(self.n_probes, _budgets.SEARCH_PROBES),
        )


@dataclass(frozen=True)
class RouteChoice:
    """The route :func:`select_solver` chose.

    Attributes
    ----------
    solver : GridSolver or StateSpaceRoute
        The route, holding the data, the grid and the options.
    grid : Grid
        The training grid in the route's order (a Kalman axis sorted).
    route : str
        ``"eigen"`` or ``"state-space"``.
    reason : str
        Why, in one sentence.
    note : str
        A warning to give if this route is the one taken (empty: none).
    """

    solver: Any
    grid: Grid
    route: str
    reason: str
    note: str = ""


def markov_axis(grid: Grid, kernel: Any, state_space: Any, min_size: int) -> int | None:
    """Return the axis to solve by Kalman filtering, or None.

    ``"auto"`` takes the longest axis with 1-D coordinates, a Markov kernel and
    at least ``min_size`` points; an int names the axis (checked); None never.
    """
    if state_space is None:
        return None
    candidates = [
        d
        for d, (c, k) in enumerate(zip(grid.coords, kernel.kernels))
        if c.shape[1] == 1 and is_markov_kernel(k)
    ]
    if isinstance(state_space, str) and state_space == "auto":
        big = [d for d in candidates if grid.shape[d] >= min_size]
        return max(big, key=lambda d: grid.shape[d]) if big else None
    if (
        isinstance(state_space, bool)
        or not isinstance(state_space, numbers.Integral)
        or not (0 <= int(state_space) < len(grid.shape))
    ):
        raise ValueError(
            f'state_space must be "auto", None or an axis index in '
            f"[0, {len(grid.shape)}); got {state_space!r}."
        )
    if state_space not in candidates:
        raise ValueError(
            f"state_space={state_space}: axis {state_space} needs 1-D coordinates "
            f"and a Markov kernel; got {kernel.kernels[state_space]!r}. Use "
            "Matern(nu=0.5), Matern(nu=1.5) or Matern(nu=2.5), optionally times "
            "ConstantKernel, or sums of these."
        )
    return int(state_space)


def sort_axis(
    grid: Grid, y: FloatArray, axis: int, cell_noise: FloatArray | None = None
) -> tuple[Grid, FloatArray, FloatArray | None]:
    """Sort the coordinates of ``axis`` increasingly, with ``y`` and ``cell_noise``.

    ``y`` and ``cell_noise`` are flat in C order, shape ``(N,)`` or
    ``(N, n_targets)``.
    """
    order = np.argsort(grid.coords[axis][:, 0], kind="stable")
    if np.all(order == np.arange(order.size)):
        return grid, y, cell_noise
    coords = list(grid.coords)
    coords[axis] = coords[axis][order]

    def take(x: FloatArray) -> FloatArray:
        cells = x.reshape(*grid.shape, -1)
        return np.take(cells, order, axis=axis).reshape(x.shape)

    return Grid(coords), take(y), None if cell_noise is None else take(cell_noise)


def select_solver(
    grid: Grid,
    kernel: Any,
    y: FloatArray,
    *,
    cell_noise: FloatArray | None = None,
    state_space: Any = "auto",
    state_space_min_size: int = 2000,
    options: SolverOptions | None = None,
    noise_axes: tuple[int, ...] | None = None,
) -> RouteChoice:
    """Choose the route for these data: the one place that does.

    Parameters
    ----------
    grid : Grid
        The training grid.
    kernel : KroneckerKernel
        The product kernel (its factors decide which axes are Markov).
    y : ndarray of shape (N,) or (N, n_targets)
        Targets in C order (normalised), NaN on missing cells. Several
        columns are targets sharing the covariance (summed likelihoods): on a
        complete grid with iid noise the eigen route takes them together,
        otherwise each target gets its own route
        (:class:`~kronecker_gp.solvers._multi_target.MultiTargetRoute`).
    cell_noise : ndarray of shape y.shape or None, default=None
        Known per-cell noise variances (normalised), ignored where ``y`` is NaN.
    state_space : "auto", int or None, default="auto"
        The estimator's ``state_space`` parameter.
    state_space_min_size : int, default=2000
        Smallest axis ``"auto"`` solves by filtering.
    options : SolverOptions, default=None
        Numerical settings (defaults if None).
    noise_axes : tuple of int or None, default=None
        Axes along which the noise variance varies (the estimator's
        ``noise_axes``): the axis-noise route, exact, whatever the other
        settings.

    Returns
    -------
    RouteChoice

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF
    >>> from kronecker_gp._grid import Grid
    >>> from kronecker_gp.kernels import KroneckerKernel
    >>> grid = Grid([np.arange(4.0)[:, None], np.arange(5.0)[:, None]])
    >>> kernel = KroneckerKernel([RBF(), RBF()], axes=[[0], [1]])
    >>> y = np.zeros(20)
    >>> y[3] = np.nan
    >>> choice = select_solver(grid, kernel, y)
    >>> choice.route, choice.solver.missing.tolist()
    ('eigen', [3])
    """
    options = options or SolverOptions()
    if is_dask_array(y):  # larger than memory: the eigen route chunk by chunk
        route = dask_route(
            grid,
            kernel,
            y,
            cell_noise=cell_noise,
            options=options,
            state_space=state_space,
            noise_axes=noise_axes,
        )
        return RouteChoice(route, grid, "dask", "a dask.array Y: eigen route, chunked")
    if not is_numpy(y):  # array_api_dispatch (the estimator checked it)
        solver, why = array_api_route(
            grid,
            kernel,
            y,
            cell_noise=cell_noise,
            noise_axes=noise_axes,
            state_space=state_space,
            options=options,
        )
        return RouteChoice(solver, grid, "eigen", why)
    route_for = _choose_route if y.ndim == 1 else _multi_target_route
    choice = route_for(
        grid,
        kernel,
        y,
        cell_noise=cell_noise,
        state_space=state_space,
        state_space_min_size=state_space_min_size,
        options=options,
        noise_axes=noise_axes,
    )
    if choice.note:
        warnings.warn(choice.note, UserWarning, stacklevel=3)
    return choice


def _choose_route(
    grid: Grid,
    kernel: Any,
    y: FloatArray,
    *,
    cell_noise: FloatArray | None,
    state_space: Any,
    state_space_min_size: int,
    options: SolverOptions,
    noise_axes: tuple[int, ...] | None = None,
) -> RouteChoice:
    """Return the structured route, or a cheaper exact one the cost model finds."""
    missing = np.isnan(y)
    if missing.all():
        raise ValueError("Y has no observed cell; nothing to fit.")
    if isinstance(kernel, SeparableSum):
        route, why = separable_sum_route(
            grid, y, cell_noise, options, kernel, state_space, noise_axes
        )
        return RouteChoice(route, grid, "separable-sum", why)
    known = _separable_cell_noise(
        grid,
        kernel,
        cell_noise,
        missing,
        state_space=state_space,
        min_size=state_space_min_size,
    )
    if noise_axes is not None or known is not None:  # whitened into the factors
        return _axis_noise_route(grid, y, missing, noise_axes, options, known=known)
    choice = _structured_route(
        grid,
        kernel,
        y,
        cell_noise=cell_noise,
        state_space=state_space,
        state_space_min_size=state_space_min_size,
        options=options,
    )
    if not (missing.any() or cell_noise is not None) or options.method == "cg":
        return choice
    n_missing = int(missing.sum())
    current, estimated = _route_flops(choice, n_missing, options)
    explicit = not isinstance(state_space, str) and state_space is not None
    both = cell_noise is not None and n_missing > 0
    if current <= _budgets.ROUTE_SWITCH_FLOPS and not (explicit and both or estimated):
        return choice
    candidates = [
        _spacetime_candidate(
            grid,
            kernel,
            y,
            cell_noise=cell_noise,
            state_space=state_space,
            options=options,
        ),
        _dense_candidate(grid, kernel, y, cell_noise),
    ]
    structured = current
    # an exact candidate replaces an estimating structured route (CG with
    # stochastic log-determinants) up to EXACT_PREFERENCE times its work
    limit = _budgets.EXACT_PREFERENCE * current if estimated else current
    if explicit and both:
        # an axis named for Kalman filtering, with both per-cell noise and
        # missing cells: only the spatio-temporal filter takes that
        if candidates[0] is None:
            raise ValueError(
                "the per-series state-space route takes per-cell noise or missing "
                "cells, not both, and the spatio-temporal filter does not fit in "
                "memory here; this fit has both. Pass state_space=None."
            )
        choice, current = candidates[0]
        candidates = []
    affordable = [c for c in candidates if c is not None and c[1] < limit]
    if affordable:
        choice, current = min(affordable, key=lambda c: c[1])
    if choice.route in ("dense", "spacetime-kalman"):
        how = "estimated LML" if estimated else "exact"
        choice = replace(
            choice,
            reason=f"{choice.reason}, against {structured:.2g} on the structured "
            f"route ({how})",
        )
    return choice


def _multi_target_route(
    grid: Grid,
    kernel: Any,
    y: FloatArray,
    *,
    cell_noise: FloatArray | None,
    state_space: Any,
    state_space_min_size: int,
    options: SolverOptions,
    noise_axes: tuple[int, ...] | None = None,
) -> RouteChoice:
    """Return the route of several target columns sharing one covariance."""
    missing = np.isnan(y)
    empty = np.flatnonzero(missing.all(axis=0))
    if empty.size:
        raise ValueError(
            f"Y has no observed cell for target {int(empty[0])}; nothing to fit it on."
        )
    n_targets = y.shape[1]
    separable_sum = isinstance(kernel, SeparableSum)
    plain = cell_noise is None and noise_axes is None and not separable_sum
    if plain and not missing.any():
        first = _structured_route(
            grid,
            kernel,
            y[:, 0],
            cell_noise=None,
            state_space=state_space,
            state_space_min_size=state_space_min_size,
            options=options,
        )
        if first.route == "eigen":
            choice = _eigen_route(grid, y, missing, None, options)
            return replace(
                choice,
                reason=f"{n_targets} targets on a complete grid: one "
                "eigendecomposition of every axis serves them all",
            )
    # each target on its own route; every axis a Kalman route might sort is
    # sorted first, so that the targets' routes share one grid
    if state_space is not None and not separable_sum:
        for d, (c, k) in enumerate(zip(grid.coords, kernel.kernels)):
            if c.shape[1] == 1 and is_markov_kernel(k):
                grid, y, cell_noise = sort_axis(grid, y, d, cell_noise)
    choices = [
        _choose_route(
            grid,
            kernel,
            y[:, t],
            cell_noise=None if cell_noise is None else cell_noise[:, t],
            state_space=state_space,
            state_space_min_size=state_space_min_size,
            options=options,
            noise_axes=noise_axes,
        )
        for t in range(n_targets)
    ]
    for other in choices[1:]:
        if any(
            not np.array_equal(a, b)
            for a, b in zip(other.grid.coords, choices[0].grid.coords)
        ):  # pragma: no cover - the sort above makes every grid the same
            raise RuntimeError("the targets' routes disagree on the training grid.")
    route = MultiTargetRoute(
        [c.solver for c in choices],
        cell_noise,
        np.isnan(y),
        tol=options.tol,
        n_probes=options.n_probes,
    )
    kinds = sorted({c.route for c in choices})
    reason = (
        f"{n_targets} targets with different missing cells or per-cell noise: one "
        f"route per target ({', '.join(kinds)}), likelihoods summed"
    )
    notes = sorted({c.note for c in choices if c.note})
    return RouteChoice(route, choices[0].grid, "multi-target", reason, " ".join(notes))


def _structured_route(
    grid: Grid,
    kernel: Any,
    y: FloatArray,
    *,
    cell_noise: FloatArray | None,
    state_space: Any,
    state_space_min_size: int,
    options: SolverOptions,
) -> RouteChoice:
    """Return the eigen or per-series Kalman route for these data."""
    missing = np.isnan(y)
    axis = markov_axis(grid, kernel, state_space, state_space_min_size)
    note = ""
    if axis is not None and cell_noise is not None and missing.any():
        # the per-series Kalman route takes per-cell noise or missing cells,
        # not both; the spatio-temporal filter takes both (see select_solver)
        note = (
            f"axis {axis} has {grid.shape[axis]} points, but per-cell noise together "
            "with missing cells is not taken by the per-series state-space route, "
            "and the spatio-temporal filter was estimated dearer: that axis goes "
            "through its eigendecomposition (cubic in its length)."
        )
        axis = None
    if axis is None:
        return replace(_eigen_route(grid, y, missing, cell_noise, options), note=note)
    grid, y, cell_noise = sort_axis(grid, y, axis, cell_noise)
    missing = np.isnan(y)
    route = StateSpaceRoute(
        axis,
        grid.coords[axis][:, 0],
        np.where(missing, 0.0, y).reshape(grid.shape),
        missing=missing.reshape(grid.shape) if missing.any() else None,
        **options.route_kwargs(),
        cell_noise=None if cell_noise is None else cell_noise.reshape(grid.shape),
        coords=list(grid.coords),
    )
    reason = (
        f"axis {axis} ({grid.shape[axis]} points) has a Markov kernel: Kalman "
        "passes, linear in its length, instead of its eigendecomposition"
    )
    return RouteChoice(route, grid, "state-space", reason)


def _eigen_route(
    grid: Grid,
    y: FloatArray,
    missing: Any,
    cell_noise: FloatArray | None,
    options: SolverOptions,
) -> RouteChoice:
    idx = np.flatnonzero(missing)
    solver = GridSolver(
        np.where(missing, 0.0, y),
        idx if idx.size else None,
        **options.route_kwargs(),
        cell_noise=cell_noise,
        coords=list(grid.coords),
    )
    reason = "every axis through its eigendecomposition"
    if idx.size:
        reason += "; missing cells through the Schur complement (see the method)"
    return RouteChoice(solver, grid, "eigen", reason)


def _separable_cell_noise(
    grid: Grid,
    kernel: Any,
    cell_noise: FloatArray | None,
    missing: Any,
    *,
    state_space: Any,
    min_size: int,
) -> list[FloatArray] | None:
    """Per-axis vectors of known per-cell noise that is a Kronecker product.

    Only on a complete grid that the eigen route takes (no Kalman axis): the
    exact whitened route then replaces CG with estimated likelihoods.
    """
    if cell_noise is None or missing.any():
        return None
    if markov_axis(grid, kernel, state_space, min_size) is not None:
        return None
    return kronecker_noise_factors(cell_noise.reshape(grid.shape))


def _axis_noise_route(
    grid: Grid,
    y: FloatArray,
    missing: Any,
    noise_axes: tuple[int, ...] | None,
    options: SolverOptions,
    *,
    known: list[FloatArray] | None = None,
) -> RouteChoice:
    idx = np.flatnonzero(missing)
    axes = tuple(range(len(grid.shape))) if noise_axes is None else noise_axes
    route = AxisNoiseRoute(
        np.where(missing, 0.0, y),
        idx if idx.size else None,
        tuple(int(d) for d in axes),
        **options.route_kwargs(),
        coords=list(grid.coords),
        known=known,
        cell_noise=None if known is None else kron_outer(known),
    )
    reason = (
        f"noise varying along axes {list(axes)}: whitened into the factors, "
        "every axis through its eigendecomposition"
    )
    if known is not None:
        reason = f"per-cell noise is a Kronecker product (to 1e-12): {reason}"
    if idx.size:
        reason += "; missing cells through the Schur complement (see the method)"
    return RouteChoice(route, grid, "axis-noise", reason)


def _route_flops(
    choice: RouteChoice, n_missing: int, options: SolverOptions
) -> tuple[float, bool]:
    """Flops of one LML + gradient on the chosen eigen or Kalman route.

    Also returns whether that route estimates the LML (CG with stochastic
    log-determinants: per-cell noise, or the iterative Schur method).
    """
    shape = choice.grid.shape
    n = int(np.prod(shape))
    if choice.route == "eigen":
        solve = eigen_solve_flops(shape)
        setup = 10.0 * float(sum(s**3 for s in shape))
    else:
        other = [s for d, s in enumerate(shape) if d != choice.solver.axis]
        solve = float(n) * (4.0 * sum(other) + _budgets.KALMAN_CELL_FLOPS * 4.0)
        setup = 10.0 * float(sum(s**3 for s in other))
    cell_noise = getattr(choice.solver, "cell_noise", None) is not None
    if n_missing == 0:  # per-cell noise, complete grid: CG with estimates
        return setup + (1 + options.n_probes) * _budgets.CG_ITERATIONS * solve, True
    pick = choose_schur_method(options.method, n_missing, n, solve, options.n_probes)
    work = pick.exact_flops if pick.method == "exact" else pick.iterative_flops
    if cell_noise:  # CG with estimates, each iteration one missing-cell solve
        step = solve + 2.0 * n_missing**2 if pick.method == "exact" else work
        work += (1 + options.n_probes) * _budgets.CG_ITERATIONS * step
    return setup + work, cell_noise or pick.method != "exact"


def _spacetime_candidate(
    grid: Grid,
    kernel: Any,
    y: FloatArray,
    *,
    cell_noise: FloatArray | None,
    state_space: Any,
    options: SolverOptions,
) -> tuple[RouteChoice, float] | None:
    """Return the spatio-temporal route and its flops, where it applies and fits.

    ``grid``, ``y`` and ``cell_noise`` are the data as given (unsorted).
    """
    if state_space is None:
        return None
    axes = [
        d
        for d, (c, k) in enumerate(zip(grid.coords, kernel.kernels))
        if c.shape[1] == 1
        and is_markov_kernel(k)
        and (isinstance(state_space, str) or d == int(state_space))
    ]
    if not axes:
        return None
    n_theta = int(np.asarray(kernel.theta).size) + 1
    costs = {}
    for d in axes:
        n_t = grid.shape[d]
        order = kernel_to_state_space(kernel.kernels[d]).state_dim
        costs[d] = spacetime_cost(grid.size // n_t, n_t, order, n_theta)
        costs[d] += n_t * _budgets.KALMAN_STEP_FLOPS
    axis = min(costs, key=costs.__getitem__)
    n_s = grid.size // grid.shape[axis]
    order = kernel_to_state_space(kernel.kernels[axis]).state_dim
    memory = spacetime_memory(n_s, grid.shape[axis], order)
    if memory > _budgets.MEMORY_FRACTION * _budgets.available_memory():
        return None
    grid, y, cell_noise = sort_axis(grid, y, axis, cell_noise)
    fallback = _structured_route(
        grid,
        kernel,
        y,
        cell_noise=cell_noise,
        state_space=None,
        state_space_min_size=0,
        options=options,
    )
    route = SpaceTimeRoute(
        axis,
        list(grid.coords),
        y,
        cell_noise,
        fallback.solver,
        tol=options.tol,
        n_probes=options.n_probes,
    )
    reason = (
        f"missing cells or per-cell noise with a Markov axis {axis}: one Kalman "
        f"filter over the {n_s} sites' states, estimated {costs[axis]:.2g} flops"
    )
    return RouteChoice(route, grid, "spacetime-kalman", reason), costs[axis]


def _dense_candidate(
    grid: Grid, kernel: Any, y: FloatArray, cell_noise: FloatArray | None
) -> tuple[RouteChoice, float] | None:
    """Return the dense route and its flops where its memory fits."""
    n_obs = int(np.sum(~np.isnan(y)))
    if dense_bytes(n_obs) > _budgets.MEMORY_FRACTION * _budgets.available_memory():
        return None
    flops = dense_flops(n_obs, int(np.asarray(kernel.theta).size))
    route = DenseRoute(list(grid.coords), y, cell_noise)
    reason = (
        f"{n_obs} observed cells of {grid.size}: one Cholesky factor of their "
        f"covariance, estimated {flops:.2g} flops"
    )
    return RouteChoice(route, grid, "dense", reason), flops
