"""KroneckerGP: exact GP regression on complete grids."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils.validation import check_is_fitted

from kronecker_gp._grid import Grid, check_coords, drop_empty_slices, grid_from_rows
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.models._contract import (
    check_conditioning,
    lml_float,
    query_lml,
    validate_targets_with_nan,
)
from kronecker_gp.models._kronecker_gp_predict import PredictionMixin
from kronecker_gp.models._kronecker_gp_ssm import _sort_axis
from kronecker_gp.models._optimize import (
    kernel_labels,
    log_noise_bounds,
    maximise_lml,
    param_label,
)
from kronecker_gp.models._solver import SolveResult

#: fit(X, y) warns when the grid spanned by the rows is this many times larger.
SPARSE_GRID_RATIO = 20
#: CG tolerance floor of the hyperparameter search's likelihood evaluations.
SEARCH_CG_TOL = 1e-6
#: Probe count cap of the search's stochastic estimates (CG paths): the
#: probes' Lanczos runs dominate an evaluation, and the (seeded, hence
#: deterministic) estimated objective with 8 probes has its optimum within
#: the estimates' error of the one with 32 (see BENCHMARKS.md, issue 3).
SEARCH_PROBES = 8


class KroneckerGP(PredictionMixin, RegressorMixin, BaseEstimator):
    r"""Exact Gaussian-process regression on a grid with a product kernel.

    The covariance of the targets on a grid of ``D`` axes is
    ``K_1 (x) ... (x) K_D + noise * I`` where ``K_d`` is the Gram matrix of the
    ``d``-th kernel on the ``d``-th axis' coordinates. Inference uses the
    eigendecompositions of the small factors: the results equal those of
    :class:`sklearn.gaussian_process.GaussianProcessRegressor` with the product
    kernel and ``alpha=noise``, at a fraction of the cost and memory.

    Parameters
    ----------
    kernels : list of sklearn Kernel, KroneckerKernel or None, default=None
        One kernel per grid axis. ``None`` means one factor
        ``ConstantKernel(1.0) * RBF(1.0)`` over all columns, so that any ``X``
        is a one-axis grid (an ordinary exact GP).
    axes : list of list of int, default=None
        Column groups of ``X``, one per kernel. ``None`` gives one column per
        kernel when ``len(kernels) == n_features``, or all columns when there
        is one kernel. :meth:`fit_grid` derives the axes from ``coords``.
    noise : float or array-like, default=1.0
        Variance of the iid Gaussian noise added to the Kronecker product
        (the initial value when it is optimised; with ``normalize_y``, in
        normalised units, as sklearn's ``alpha``). An array gives known
        per-cell noise variances in data units, shaped like ``Y``
        (:meth:`fit_grid`) or ``y`` (:meth:`fit`); the noise is then
        ``noise_ * noise`` with the common scale ``noise_`` learned within
        ``noise_bounds`` (start 1; ``"fixed"`` keeps 1). Where ``Y`` is NaN
        (a missing cell) the array may hold NaN or any finite value, which is
        ignored; every observed cell needs a positive finite variance. That
        system is solved by CG preconditioned with the Kronecker eigenbasis of
        ``K + s I`` (``s`` the geometric mean of the observed variances) to
        ``cg_tol``; with missing cells the CG runs on the observed cells and
        the preconditioner is inverted through the Schur complement of
        ``solver``. The LML and gradient are estimated as on the ``"cg"`` path.
    noise_bounds : pair of float or "fixed", default=(1e-6, 1e5)
        Bounds on ``noise`` during optimisation; ``"fixed"`` keeps it.
    optimizer : "fmin_l_bfgs_b", callable or None, default="fmin_l_bfgs_b"
        As in ``GaussianProcessRegressor``: maximise the log marginal
        likelihood with L-BFGS-B, a callable
        ``optimizer(obj_func, initial_theta, bounds) -> (theta, func_min)``, or
        ``None`` to keep every hyperparameter as given.
    n_restarts_optimizer : int, default=0
        Extra optimiser runs from log-uniform starts within the bounds.
    normalize_y : bool, default=False
        Subtract the mean and divide by the standard deviation of ``y`` before
        fitting (predictions are transformed back).
    random_state : int, RandomState instance or None, default=None
        Seeds the optimiser restarts and (an int) the probe vectors of the
        stochastic estimates; other values use seed 0, so repeated fits and
        likelihood evaluations are deterministic.
    solver : {"auto", "exact", "cg"}, default="auto"
        How missing cells are handled (a complete grid needs no solver). Both
        use the Schur complement :math:`P_{mm}` of :math:`(K + sI)^{-1}` on the
        missing cells. ``"exact"`` forms and factors it (exact LML and
        gradient; cost :math:`O(m^2 N)` for ``m`` missing cells); ``"cg"``
        solves by block-Jacobi-preconditioned CG to ``cg_tol`` and, above the
        exact bounds below (under them it still factors :math:`P_{mm}` for the
        log-determinant), estimates :math:`\log|P_{mm}|` by stochastic Lanczos
        quadrature and the gradient's trace term by Hutchinson's estimator
        with ``n_probes`` probes (``solver_info_.lml_std_error`` gives the
        LML's standard error). ``"auto"`` is exact while ``m <= 3000``,
        ``m N <= 2^24`` and ``m^2 N <= 2^31`` (about a second of work). With
        per-cell ``noise`` the same choice inverts the observed-cell
        preconditioner (CG to 1e-6 inside), and the LML and gradient are
        always estimated. On the state-space route (below) the exact path is
        taken up to 256 missing cells.
    cg_tol : float, default=1e-10
        Relative residual at which CG stops (``"cg"``); the posterior mean is
        then accurate to about ``cg_tol`` times the condition number of
        :math:`P_{mm}` (typically 10-100). The hyperparameter search's
        evaluations stop at ``max(cg_tol, 1e-6)`` instead (``SEARCH_CG_TOL``):
        the likelihood and gradient then move by about ``1e-6`` relative at
        most (``1e-12`` measured on the ozone data), far below the stochastic
        estimates' error; the fitted weights and likelihood use ``cg_tol``.
    cg_max_iter : int, default=2000
        CG iteration cap; reaching it warns with the residual.
    n_probes : int, default=32
        Probe vectors (and Monte Carlo samples for large predictive-variance
        grids) on the ``"cg"`` path. The hyperparameter search's evaluations
        use at most 8 (``SEARCH_PROBES``): the estimated objective is seeded,
        so it stays a smooth deterministic function of theta, and its optimum
        moved by 3e-4 nats of LML (standard error 0.15) at 200 x 250 with
        30 % missing while the search ran 3x faster; the fitted likelihood
        and its standard error use ``n_probes``.
    state_space : "auto", int or None, default="auto"
        Solve one long 1-D axis by Kalman filtering and smoothing instead of an
        eigendecomposition (exact, :math:`O(n_t)` instead of :math:`O(n_t^3)`):
        the other axes are rotated away by their eigendecompositions, leaving
        independent series. The axis' kernel must be Markov: ``Matern`` with
        ``nu`` in {0.5, 1.5, 2.5}, times ``ConstantKernel``, or sums of these.
        ``"auto"`` picks the longest such axis with at least
        ``state_space_min_size`` points; an int names the axis; ``None`` never
        uses the route. Missing cells work on it through the same Schur
        complement as on the eigen route, each complete-grid solve being one
        Kalman pass per rotated series (``solver``, ``cg_tol``, ``n_probes``
        apply; the exact path is taken up to 256 missing cells). Per-cell
        ``noise`` on a complete grid is solved by CG on
        :math:`I + V M^{-1} V` (:math:`M = K + \min(d) I` by Kalman passes,
        :math:`V^2 = D - \min(d) I`; iterations set by the noise spread) with
        an estimated LML; per-cell noise together with missing cells is not
        taken ("auto" then falls back to the eigen route, with a warning).
        ``sample_grid`` draws at the training coordinates of the other axes;
        ``predict(return_cov=True)`` costs one Kalman pass per point.
    state_space_min_size : int, default=2000
        Smallest axis that ``state_space="auto"`` solves by filtering.
    verbose : int, default=0
        If positive, print the log marginal likelihood at each optimiser step.

    Attributes
    ----------
    kernel_ : KroneckerKernel
        The fitted product kernel.
    kernels_ : list of Kernel
        Its per-axis factors.
    noise_ : float
        The fitted noise variance (with per-cell ``noise``: the fitted scale).
    noise_variances_ : ndarray of shape grid_.shape
        With per-cell ``noise`` only: ``noise_ * noise`` on the training grid
        (NaN on missing cells).
    theta_ : ndarray
        Fitted log-hyperparameters: the factors' thetas, then ``log(noise_)``
        unless the noise is fixed.
    axes_ : list of list of int
        Column groups used for each factor.
    grid_ : Grid
        The training grid (sorted per-axis coordinates, C order).
    alpha_ : ndarray of shape (n_cells,)
        ``(K + noise I)^{-1} y`` on the training grid, flat in C order.
    log_marginal_likelihood_value_ : float
        Log marginal likelihood at ``theta_``.
    n_features_in_ : int
        Number of columns of ``X``.
    y_train_mean_, y_train_std_ : float
        Normalisation applied to ``y`` (0 and 1 without ``normalize_y``).
    fit_time_ : float
        Wall time of the last ``fit`` in seconds.
    solver_info_ : SolverInfo
        The path taken (``"complete"``, ``"schur-exact"``, ``"schur-cg"``,
        ``"cell-noise-cg"``, or with per-cell noise and missing cells
        ``"cell-noise-schur-exact"`` / ``"cell-noise-schur-cg"``),
        number of missing cells, CG iterations and residual, and the standard
        error of an estimated LML.

    Notes
    -----
    Fitting costs :math:`O(\sum_d n_d^3 + N \sum_d n_d)` time and
    :math:`O(N + \sum_d n_d^2)` memory for :math:`N = \prod_d n_d` cells.

    References
    ----------
    .. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
       Models. PhD thesis, University of Cambridge.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF, Matern
    >>> from kronecker_gp import KroneckerGP
    >>> sites, days = np.linspace(0, 1, 20), np.arange(30.0)
    >>> Y = np.sin(6 * sites)[:, None] * np.cos(days / 5)[None, :]
    >>> gp = KroneckerGP([RBF(0.3), Matern(5.0, nu=1.5)], noise=1e-2)
    >>> gp = gp.fit_grid([sites, days], Y)
    >>> mean = gp.predict_grid([sites, days])
    >>> mean.shape
    (20, 30)
    >>> bool(np.abs(mean - Y).max() < 0.1)
    True
    """

    _last_solve: tuple[FloatArray, SolveResult] | None
    _lml_value: float | None

    def __init__(
        self,
        kernels: Sequence[Kernel] | KroneckerKernel | None = None,
        *,
        axes: Sequence[Sequence[int]] | None = None,
        noise: float = 1.0,
        noise_bounds: tuple[float, float] | str = (1e-6, 1e5),
        optimizer: str | Callable[..., Any] | None = "fmin_l_bfgs_b",
        n_restarts_optimizer: int = 0,
        normalize_y: bool = False,
        random_state: int | np.random.RandomState | None = None,
        solver: str = "auto",
        cg_tol: float = 1e-10,
        cg_max_iter: int = 2000,
        n_probes: int = 32,
        state_space: str | int | None = "auto",
        state_space_min_size: int = 2000,
        verbose: int = 0,
    ) -> None:
        self.kernels = kernels
        self.axes = axes
        self.noise = noise
        self.noise_bounds = noise_bounds
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.normalize_y = normalize_y
        self.random_state = random_state
        self.solver = solver
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.n_probes = n_probes
        self.state_space = state_space
        self.state_space_min_size = state_space_min_size
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, X: ArrayLike, y: ArrayLike) -> KroneckerGP:
        """Fit on rows ``X`` that lie on a grid, in any row order.

        The grid is the Cartesian product of the unique values of each column
        group (``axes``); cells without a row are missing, and the posterior is
        the exact GP posterior given the rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows whose column groups (``axes``) lie on a Cartesian product.
        y : array-like of shape (n_samples,)
            Targets; NaN marks a missing observation, exactly as NaN in
            ``Y`` does for :meth:`fit_grid` (the cell is missing, and grid
            slices left without an observation are dropped).

        Returns
        -------
        self : KroneckerGP
            The fitted estimator.

        Raises
        ------
        ValueError
            If ``X`` repeats a grid cell, ``X`` has NaN or infinite values,
            ``y`` has infinite values or no finite one.

        Warns
        -----
        UserWarning
            If the grid spanned by the rows has over 20 times more cells than
            there are rows (scattered data).
        """
        X, y = validate_targets_with_nan(self, X, y)
        axes = self._resolve_axes(X.shape[1])
        grid, cell = grid_from_rows(X, axes, complete=False)
        if grid.size > SPARSE_GRID_RATIO * X.shape[0]:
            warnings.warn(
                f"The {X.shape[0]} rows of X span a grid of {grid.size} cells "
                f"({' x '.join(map(str, grid.shape))}), {grid.size / X.shape[0]:.0f}x "
                "more than the data; the fit will be slow. Round or bin the "
                "coordinates onto a coarser grid, or use GaussianProcessRegressor.",
                UserWarning,
                stacklevel=2,
            )
        y_grid = np.full(grid.size, np.nan)
        y_grid[cell] = y
        if np.isscalar(self.noise):
            grid, Y = drop_empty_slices(grid, y_grid.reshape(grid.shape))
            return self._fit(grid, np.asarray(Y).reshape(-1), axes)
        v = as_float_array(self.noise, "noise", ndim=1)
        if v.shape != y.shape:
            raise ValueError(
                "noise must be a scalar or an array with same number of entries as "
                f"y ({y.shape[0]}); got shape {v.shape}."
            )
        cells = np.full(grid.size, np.nan)
        cells[cell] = v
        grid, Y, V = drop_empty_slices(
            grid, y_grid.reshape(grid.shape), cells.reshape(grid.shape)
        )
        return self._fit(
            grid, np.asarray(Y).reshape(-1), axes, np.asarray(V).reshape(-1)
        )

    def fit_grid(self, coords: Sequence[ArrayLike], Y: ArrayLike) -> KroneckerGP:
        """Fit on a grid given by per-axis coordinates and grid-shaped targets.

        Parameters
        ----------
        coords : list of array-like
            One array per axis, each of shape (n_d,) or (n_d, p_d).
        Y : array-like of shape (n_1, ..., n_D)
            Targets on the grid; NaN marks a missing cell. Axis slices with no
            observed cell are dropped from the training grid (``grid_`` holds
            the kept coordinates); the other missing cells are handled exactly
            by the Schur-complement solver (see ``solver``).

        Returns
        -------
        self : KroneckerGP
            The fitted estimator.

        Raises
        ------
        ValueError
            If shapes disagree, coordinates repeat or values are not finite,
            or a per-cell ``noise`` is not positive on an observed cell.

        Examples
        --------
        Known per-cell noise variances with missing cells (NaN in ``Y``; the
        variance there is ignored):

        >>> import numpy as np
        >>> from sklearn.gaussian_process.kernels import RBF
        >>> from kronecker_gp import KroneckerGP
        >>> x, t = np.linspace(0, 1, 8), np.arange(10.0)
        >>> Y = np.sin(4 * x)[:, None] + 0.1 * np.cos(t)[None, :]
        >>> var = np.full(Y.shape, 1e-2)
        >>> var[:, 5:] = 4e-2  # a noisier instrument in the second half
        >>> Y[2, 3] = Y[5, 7] = np.nan
        >>> gp = KroneckerGP([RBF(0.3), RBF(3.0)], noise=var, optimizer=None)
        >>> gp = gp.fit_grid([x, t], Y)
        >>> gp.solver_info_.path
        'cell-noise-schur-exact'
        >>> bool(np.isnan(gp.noise_variances_[2, 3]))
        True
        >>> truth = np.sin(4 * x[2]) + 0.1 * np.cos(t[3])
        >>> bool(abs(gp.predict_grid([x, t])[2, 3] - truth) < 0.1)
        True
        """
        grid = Grid(check_coords(coords))
        Y = as_float_array(Y, "Y", allow_nan=True)
        if Y.shape != grid.shape:
            raise ValueError(
                f"Y must have the grid's shape {grid.shape} (one axis per coords "
                f"entry); got {Y.shape}."
            )
        axes = grid.block_axes()
        if self.axes is not None and [list(a) for a in self.axes] != axes:
            raise ValueError(
                f"axes={self.axes!r} does not match the coords' column blocks {axes}; "
                "leave axes=None with fit_grid."
            )
        self.n_features_in_ = int(sum(grid.widths))
        if np.isscalar(self.noise):
            grid, Y = drop_empty_slices(grid, Y)
            return self._fit(grid, np.asarray(Y).reshape(-1), axes)
        v = as_float_array(self.noise, "noise", allow_nan=True)
        if v.shape != Y.shape:
            raise ValueError(
                f"noise given per cell must have Y's shape {Y.shape}; got {v.shape}."
            )
        grid, Y, v = drop_empty_slices(grid, Y, v)
        return self._fit(
            grid, np.asarray(Y).reshape(-1), axes, np.asarray(v).reshape(-1)
        )

    def _fit(
        self,
        grid: Grid,
        y: FloatArray,
        axes: list[list[int]],
        cell_noise: FloatArray | None = None,
    ) -> KroneckerGP:
        t0 = time.perf_counter()
        kernel = self._build_kernel(axes)
        self._check_params(kernel, len(grid.shape))
        self.axes_ = axes
        self.grid_ = grid
        self._ssm = None
        ssm_axis = self._state_space_axis(grid, kernel)
        if (
            ssm_axis is not None
            and self.state_space == "auto"
            and cell_noise is not None
            and np.isnan(y).any()
        ):
            # the filtering route takes per-cell noise or missing cells, not
            # both: "auto" falls back to the eigen route (an explicit axis raises)
            warnings.warn(
                f"axis {ssm_axis} has {grid.shape[ssm_axis]} points, but per-cell "
                "noise together with missing cells is not taken by the "
                "state-space route: that axis goes through its eigendecomposition "
                "(cubic in its length).",
                UserWarning,
                stacklevel=3,
            )
            ssm_axis = None
        if ssm_axis is not None:
            grid, y, cell_noise = _sort_axis(grid, y, ssm_axis, cell_noise)
            self.grid_ = grid
        self.y_train_mean_, self.y_train_std_ = self._normalisation(y)
        self._solver = self._make_solver(y, cell_noise)
        self._last_solve = None  # never reuse a factorisation of other data
        if ssm_axis is not None:
            self._ssm = self._make_route(grid, ssm_axis, cell_noise)
        self.kernel_ = kernel
        self.noise_ = float(self.noise) if cell_noise is None else 1.0
        self._noise_log_bounds = log_noise_bounds(self.noise_bounds)
        if self.optimizer is not None and self._bounds().shape[0] > 0:
            self._optimise()
        if self._ssm is not None:
            return self._finish_state_space(t0)
        # an estimated LML (missing cells, CG path) is computed on first access
        last = getattr(self, "_last_solve", None)
        self._last_solve = None
        if (
            last is not None
            and last[1].system is None
            and np.array_equal(last[0], self._theta())
        ):
            res = last[1]  # the optimiser's last evaluation was at theta_
        else:
            res = self._solve(self.kernel_.factor_grams(grid.coords), need_lml=False)
        self._post, self._system = res.post, res.system
        self._lml_value = None if np.isnan(res.lml) else res.lml
        self.solver_info_ = res.info
        self.theta_ = self._theta()
        if cell_noise is not None:
            observed_noise = np.where(np.isnan(y), np.nan, cell_noise)
            self.noise_variances_ = (self.noise_ * observed_noise).reshape(grid.shape)
        self.kernels_ = list(self.kernel_.kernels)
        self._alpha_cache = None
        self.fit_time_ = time.perf_counter() - t0
        return self

    @property
    def alpha_(self) -> FloatArray:
        """``(K + noise I)^{-1} y`` on the training grid (computed on first access)."""
        if getattr(self, "_alpha_cache", None) is None:
            if not hasattr(self, "_post"):
                raise AttributeError("alpha_")
            self._alpha_cache = self._post.alpha()
        return self._alpha_cache

    # ------------------------------------------------------- hyperparameters
    def _bounds(self) -> FloatArray:
        parts = [np.asarray(self.kernel_.bounds, dtype=float).reshape(-1, 2)]
        if self._noise_log_bounds is not None:
            parts.append(self._noise_log_bounds.reshape(1, 2))
        return np.vstack(parts)

    def _theta(self) -> FloatArray:
        theta = np.asarray(self.kernel_.theta, dtype=float)
        if self._noise_log_bounds is None:
            return theta.copy()
        return np.append(theta, np.log(self.noise_))

    def _set_theta(self, theta: FloatArray) -> None:
        n_k = len(self.kernel_.theta)
        self.kernel_.theta = theta[:n_k]
        if self._noise_log_bounds is not None:
            self.noise_ = float(np.exp(theta[n_k]))

    def _solve(
        self,
        grams: Sequence[FloatArray],
        grad_grams: Sequence[FloatArray] | None = None,
        *,
        need_lml: bool = True,
    ) -> SolveResult:
        try:
            res = self._solver.solve(
                grams,
                self.noise_,
                grad_grams,
                noise_free=self._noise_log_bounds is not None,
                need_lml=need_lml,
            )
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(
                f"{exc} The factorisation failed at theta={self._theta()!r}; increase "
                "noise or its lower bound."
            ) from None
        if self._solver.cell_noise is None:
            check_conditioning(
                res.post.eigvals, self.noise_, self.kernel_, "KroneckerGP"
            )
        return res

    def _lml_at(
        self, theta: FloatArray, eval_gradient: bool
    ) -> tuple[float, FloatArray]:
        self._set_theta(theta)
        if self._ssm is not None:
            return self._ssm_lml(eval_gradient)
        if not eval_gradient:
            return self._solve(
                self.kernel_.factor_grams(self.grid_.coords)
            ).lml, np.zeros(0)
        pairs = self.kernel_.factor_grams(self.grid_.coords, eval_gradient=True)
        res = self._solve([k for k, _ in pairs], [g for _, g in pairs])
        self._last_solve = (self._theta(), res)
        assert res.grad is not None
        return res.lml, res.grad

    def _optimise(self) -> None:
        # the search's CG solves stop at max(cg_tol, SEARCH_CG_TOL) and its
        # estimates use at most SEARCH_PROBES probes; fit then solves once
        # more at cg_tol at the optimum, and estimates with n_probes
        solver, route = self._solver, self._ssm
        fit_tol, fit_probes = solver.tol, solver.n_probes
        solver.tol = max(fit_tol, SEARCH_CG_TOL)
        solver.n_probes = min(fit_probes, SEARCH_PROBES)
        if route is not None:
            route.tol, route.n_probes = solver.tol, solver.n_probes
        try:
            theta = maximise_lml(
                self._lml_at,
                self._theta(),
                self._bounds(),
                optimizer=self.optimizer,
                n_restarts=int(self.n_restarts_optimizer),
                random_state=self.random_state,
                verbose=self.verbose,
                name=type(self).__name__,
                labels=kernel_labels(self.kernel_)
                + param_label("noise", 1, self.noise_bounds),
            )
        finally:
            solver.tol, solver.n_probes = fit_tol, fit_probes
            if route is not None:
                route.tol, route.n_probes = fit_tol, fit_probes
        self._set_theta(theta)

    def log_marginal_likelihood(
        self,
        theta: ArrayLike | None = None,
        eval_gradient: bool = False,
        clone_kernel: bool = True,
    ) -> float | tuple[float, FloatArray]:
        """Return the exact log marginal likelihood of ``theta`` on the training grid.

        Parameters
        ----------
        theta : array-like of shape (n_theta,), default=None
            Log-hyperparameters (factors' thetas, then log-noise unless fixed).
            ``None`` returns the fitted value.
        eval_gradient : bool, default=False
            Also return the gradient w.r.t. ``theta``.
        clone_kernel : bool, default=True
            As in ``GaussianProcessRegressor``: True leaves every fitted
            attribute unchanged; False moves ``kernel_`` (and ``noise_``) to
            ``theta`` afterwards, without refitting (``alpha_`` and the
            stored factorisation keep the fitted values).

        Returns
        -------
        lml : numpy.float64
            The log marginal likelihood.
        grad : ndarray of shape (n_theta,)
            Its gradient, if ``eval_gradient``.

        Raises
        ------
        ValueError
            If ``theta`` has the wrong length or ``eval_gradient`` without theta.
        """
        check_is_fitted(self, "theta_")  # requires_fit=False skips the plain check
        if theta is None:
            if eval_gradient:
                raise ValueError("Gradient can only be evaluated for theta!=None")
            return lml_float(self.log_marginal_likelihood_value_)
        theta = as_float_array(theta, "theta", ndim=1)
        saved = self._theta()
        if theta.shape[0] != saved.shape[0]:
            free = [h.name for h in self.kernel_.hyperparameters if not h.fixed]
            raise ValueError(
                f"theta must have {saved.shape[0]} entries (the free "
                f"log-hyperparameters {free}"
                f"{' + log(noise)' if self._noise_log_bounds is not None else ''}); "
                f"got {theta.shape[0]}."
            )
        return query_lml(
            self,
            theta,
            eval_gradient=eval_gradient,
            clone_kernel=clone_kernel,
            names=["kernel_", "kernels_", "noise_", "_last_solve", "_ssm_std_error"],
        )

    @property
    def log_marginal_likelihood_value_(self) -> float:
        """Log marginal likelihood at ``theta_`` (estimated on the CG path)."""
        if getattr(self, "_lml_value", None) is None:
            if not hasattr(self, "_solver"):
                raise AttributeError("log_marginal_likelihood_value_ is set by fit.")
            if self._ssm is not None:
                self._lml_value = self._ssm_lml(False)[0]
                self.solver_info_.lml_std_error = self._ssm_std_error
                return float(self._lml_value)
            res = self._solve(self.kernel_.factor_grams(self.grid_.coords))
            self._lml_value = float(res.lml)
            self.solver_info_.lml_std_error = res.info.lml_std_error
            self.solver_info_.extra.update(res.info.extra)
        assert self._lml_value is not None
        return float(self._lml_value)

    def __sklearn_tags__(self) -> Any:
        """Declare a single-output regressor that predicts from the prior unfitted."""
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = False
        return tags
