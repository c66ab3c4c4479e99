"""KroneckerGP: exact GP regression on complete grids."""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from kronecker_gp import _budgets
from kronecker_gp._array_api import is_numpy, like, namespace, to_numpy
from kronecker_gp._grid import Grid, check_coords, drop_empty_slices, grid_from_rows
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.linalg import kron_outer
from kronecker_gp.linalg._chunked import is_dask_array
from kronecker_gp.linalg._whitening import balance_log_variances
from kronecker_gp.models._base import (
    ARRAY_API_SUPPORTED,
    array_api_normalisation,
    build_kernel,
    check_array_api_grid,
    check_grid_targets,
    check_test_coords,
    host_coords,
    resolve_axes,
    uses_array_api,
)
from kronecker_gp.models._contract import (
    check_conditioning,
    lml_float,
    prior_predict,
    prior_predict_grid,
    query_lml,
    safe_normalisation,
    validate_targets_with_nan,
    warn_conditioning_bound,
)
from kronecker_gp.models._optimize import (
    check_optimizer_params,
    kernel_labels,
    log_noise_bounds,
    maximise_lml,
    param_label,
)
from kronecker_gp.solvers import SolverOptions, select_solver
from kronecker_gp.solvers._axis_noise import axis_noise_start, check_noise_axes
from kronecker_gp.solvers._dask import check_dask_grid, dask_normalisation
from kronecker_gp.solvers._posterior import prior_grid_samples
from kronecker_gp.solvers._protocol import Factorization

#: fit(X, y) warns when the grid spanned by the rows is this many times larger.
SPARSE_GRID_RATIO = 20


class KroneckerGP(RegressorMixin, BaseEstimator):
    r"""Exact Gaussian-process regression on a grid with a product kernel.

    The covariance of the targets on a grid of ``D`` axes is
    ``K_1 (x) ... (x) K_D + noise * I`` where ``K_d`` is the Gram matrix of the
    ``d``-th kernel on the ``d``-th axis' coordinates. Inference uses the
    eigendecompositions of the small factors: the results equal those of
    :class:`sklearn.gaussian_process.GaussianProcessRegressor` with the product
    kernel and ``alpha=noise``, at a fraction of the cost and memory.

    Parameters
    ----------
    kernels : list of sklearn Kernel, KroneckerKernel, SeparableSum or None, \
default=None
        One kernel per grid axis. ``None`` means one factor
        ``ConstantKernel(1.0) * RBF(1.0)`` over all columns, so that any ``X``
        is a one-axis grid (an ordinary exact GP). A
        :class:`~kronecker_gp.kernels.SeparableSum` is a sum of such products
        (e.g. a regional day effect plus a local field): exact by a Woodbury
        identity where every term but one is low-rank, else preconditioned
        CG with the LML's standard error in ``solver_info_``.
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
        On a complete grid whose per-cell variances are an exact Kronecker
        product of per-axis vectors (log-variances a sum of per-axis terms to
        ``1e-12``) and no Kalman axis, the exact whitened route of
        ``noise_axes`` is taken instead (``solver_info_.path ==
        "cell-noise-kronecker"``; exact LML and gradient).
    noise_bounds : pair of float or "fixed", default=(1e-6, 1e5)
        Bounds on ``noise`` during optimisation; ``"fixed"`` keeps it.
    noise_axes : sequence of int or None, default=None
        Axes along which the noise variance varies (per site, per task, per
        day): the noise covariance is then a Kronecker product of per-axis
        diagonals, ``D_1 (x) D_2 (x) ...`` (identity off these axes), one
        variance per slice of each noise axis, every one learned within
        ``noise_bounds`` (``theta_`` lists their logs after the kernel's). The
        noise is whitened into the factors (Rakitsch et al. 2013), so the
        likelihood, its gradient and the predictions stay exact at the
        complete-grid cost, with missing cells too (``solver_info_.path``
        ``"axis-noise"`` or ``"axis-noise-schur-*"``; ``state_space`` does
        not apply). ``noise`` then gives the start: a scalar (every cell's
        variance; the first noise axis' entries start there, the others' at
        1), an array of the axis' length for one noise axis, or one such
        array per noise axis; units as a scalar ``noise`` (normalised with
        ``normalize_y``). With several noise axes the product has one
        redundant scale: the first noise axis carries it and the others'
        variances are normalised to geometric mean 1 (the per-cell
        variances and the likelihood are unchanged). ``None``: iid noise, or
        per-cell noise given as an array shaped like ``Y``.
    optimizer : "fmin_l_bfgs_b", callable or None, default="fmin_l_bfgs_b"
        As in ``GaussianProcessRegressor``: maximise the log marginal
        likelihood with L-BFGS-B, a callable
        ``optimizer(obj_func, initial_theta, bounds) -> (theta, func_min)``, or
        ``None`` to keep every hyperparameter as given.
    n_restarts_optimizer : int, default=0
        Extra optimiser runs from log-uniform starts within the bounds.
    normalize_y : bool, default=False
        Subtract the mean and divide by the standard deviation of ``y`` before
        fitting (predictions are transformed back); per target with several.
    n_targets : int or None, default=None
        Number of target columns, as in ``GaussianProcessRegressor``: it sets
        the shape of predictions and samples before ``fit`` (the prior), and
        ``fit`` checks it against ``y``. Several targets (``y`` of shape
        ``(n_samples, n_targets)``, or ``Y`` of shape ``grid.shape +
        (n_targets,)``) share the kernel and the noise; the log marginal
        likelihood is the sum over targets, each target may miss its own
        cells, and predictions gain a last axis of length ``n_targets``. On a
        complete grid one eigendecomposition of every axis serves all targets;
        otherwise each target is solved on its own route.
    random_state : int, RandomState instance or None, default=None
        Seeds the optimiser restarts and (an int) the probe vectors of the
        stochastic estimates; other values use seed 0, so repeated fits and
        likelihood evaluations are deterministic.
    solver : {"auto", "exact", "cg"}, default="auto"
        How missing cells are handled (a complete grid needs no solver). The
        route is chosen in one place,
        :func:`kronecker_gp.solvers.select_solver`, by a cost model (estimated
        flops and bytes of each candidate for this grid, this missing pattern
        and this machine's memory; ``solver_info_.extra["route_reason"]`` says
        why). The structured routes use the Schur complement :math:`P_{mm}`
        of :math:`(K + sI)^{-1}` on the ``m`` missing cells: ``"exact"`` forms
        it by mode products (``m`` complete-grid solves) and factors it (exact
        LML and gradient); ``"cg"`` solves by block-Jacobi-preconditioned CG to
        ``cg_tol`` and estimates :math:`\log|P_{mm}|` by stochastic Lanczos
        quadrature and the gradient's trace term by Hutchinson's estimator
        with ``n_probes`` probes (``solver_info_.lml_std_error`` gives the
        LML's standard error; while the exact factor is cheap it is used for
        the log-determinant). ``"auto"`` takes the exact method wherever the
        cost model finds it affordable (budgets in
        :mod:`kronecker_gp._budgets`), and, where cheaper, two exact routes
        instead: one Kalman filter over every site's state when an axis has
        a Markov kernel (``solver_info_.path == "spacetime-kalman"``), or a
        dense Cholesky factor of the observed cells when they are few
        (``"dense"``, e.g. scattered rows). With per-cell ``noise`` on the
        structured routes the LML and gradient are estimated.
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
    noise_ : float or list of ndarray
        The fitted noise variance (with per-cell ``noise``: the fitted scale;
        with ``noise_axes``: one array of variances per noise axis, in
        normalised units as ``theta_``).
    noise_per_axis_ : list of ndarray of shape (n_d,)
        With ``noise_axes`` only: the fitted per-axis variances in data units
        (the first noise axis carries the scale).
    noise_variances_ : ndarray of shape grid_.shape
        With per-cell ``noise``: ``noise_ * noise`` on the training grid (NaN
        on missing cells); with ``noise_axes``: the fitted per-cell variances
        ``kron(noise_per_axis_)`` (every cell) in data units.
    theta_ : ndarray
        Fitted log-hyperparameters: the factors' thetas, then ``log(noise_)``
        (with ``noise_axes``: each noise axis' log-variances in order) unless
        the noise is fixed.
    axes_ : list of list of int
        Column groups used for each factor.
    grid_ : Grid
        The training grid (sorted per-axis coordinates, C order).
    alpha_ : ndarray of shape (n_cells,) or (n_cells, n_targets)
        ``(K + noise I)^{-1} y`` on the training grid, flat in C order.
    log_marginal_likelihood_value_ : float
        Log marginal likelihood at ``theta_``.
    n_features_in_ : int
        Number of columns of ``X``.
    y_train_mean_, y_train_std_ : float or ndarray of shape (n_targets,)
        Normalisation applied to ``y`` (0 and 1 without ``normalize_y``), one
        entry per target with several.
    fit_time_ : float
        Wall time of the last ``fit`` in seconds.
    solver_info_ : SolverInfo
        The path taken (``"complete"``, ``"schur-exact"``, ``"schur-cg"``,
        ``"cell-noise-cg"``, or with per-cell noise and missing cells
        ``"cell-noise-schur-exact"`` / ``"cell-noise-schur-cg"``; with
        ``noise_axes`` ``"axis-noise"`` / ``"axis-noise-schur-*"``; separable
        per-cell noise ``"cell-noise-kronecker"``), number of missing cells,
        CG iterations and residual, and the standard error of an estimated
        LML.

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

    Noise that differs between sites (two kinds of instrument), learned:

    >>> rng = np.random.default_rng(0)
    >>> sd = np.where(np.arange(20) < 10, 0.1, 0.5)
    >>> Y_noisy = Y + sd[:, None] * rng.standard_normal(Y.shape)
    >>> gp = KroneckerGP([RBF(0.3), Matern(5.0, nu=1.5)], noise=0.1, noise_axes=[0])
    >>> gp = gp.fit_grid([sites, days], Y_noisy)
    >>> gp.solver_info_.path
    'axis-noise'
    >>> var = gp.noise_per_axis_[0]
    >>> bool(var[10:].mean() > 10 * var[:10].mean())  # true ratio 25
    True
    """

    _last_fact: tuple[FloatArray, Factorization] | None
    _alpha_cache: FloatArray | None
    _lml_value: float | None

    def __init__(
        self,
        kernels: Sequence[Kernel] | KroneckerKernel | None = None,
        *,
        axes: Sequence[Sequence[int]] | None = None,
        noise: float = 1.0,
        noise_bounds: tuple[float, float] | str = (1e-6, 1e5),
        noise_axes: Sequence[int] | None = None,
        optimizer: str | Callable[..., Any] | None = "fmin_l_bfgs_b",
        n_restarts_optimizer: int = 0,
        normalize_y: bool = False,
        n_targets: int | None = None,
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
        self.noise_axes = noise_axes
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.normalize_y = normalize_y
        self.n_targets = n_targets
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
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets; NaN marks a missing observation, exactly as NaN in
            ``Y`` does for :meth:`fit_grid` (the cell is missing, and grid
            slices left without an observation in any target are dropped).
            Several columns are targets sharing the kernel and noise.

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
        if is_dask_array(y):
            raise TypeError(
                "fit(X, y) takes rows in memory; give a dask.array on a grid to "
                "fit_grid(coords, Y) instead (grids larger than memory)."
            )
        if uses_array_api(X, y):
            raise ValueError(
                f"fit(X, y) takes NumPy rows; {ARRAY_API_SUPPORTED}. Give the grid "
                "to fit_grid(coords, Y)."
            )
        X, y = validate_targets_with_nan(self, X, y, multi_output=True)
        y = self._check_n_targets(y, y.ndim - 1)
        axes = resolve_axes(self.kernels, self.axes, X.shape[1])
        grid, cell = grid_from_rows(X, axes, complete=False)
        if grid.size > SPARSE_GRID_RATIO * X.shape[0]:
            warnings.warn(
                f"The {X.shape[0]} rows of X span a grid of {grid.size} cells "
                f"({' x '.join(map(str, grid.shape))}), {grid.size / X.shape[0]:.0f}x "
                "more than the data: the grid structure does not help here, and the "
                "cost model fits such rows on their own covariance (the dense route, "
                "as GaussianProcessRegressor) where that is cheaper. Round or bin "
                "the coordinates onto a coarser grid to use the grid's structure.",
                UserWarning,
                stacklevel=2,
            )
        targets = y.shape[1:]
        y_grid = np.full((grid.size, *targets), np.nan)
        y_grid[cell] = y
        if np.isscalar(self.noise) or self.noise_axes is not None:
            grid, Y = self._drop_empty(grid, y_grid.reshape(*grid.shape, *targets))
            return self._fit(grid, np.asarray(Y).reshape(-1, *targets), axes)
        v = as_float_array(self.noise, "noise", ndim=None)
        if v.shape == y.shape[:1] and targets:
            v = np.repeat(v[:, None], targets[0], axis=1)  # the same for every target
        if v.shape != y.shape:
            raise ValueError(
                "noise must be a scalar or an array with same number of entries as "
                f"y ({y.shape[0]}); got shape {v.shape}."
            )
        cells = np.full((grid.size, *targets), np.nan)
        cells[cell] = v
        grid, Y, V = drop_empty_slices(
            grid,
            y_grid.reshape(*grid.shape, *targets),
            cells.reshape(*grid.shape, *targets),
        )
        return self._fit(
            grid,
            np.asarray(Y).reshape(-1, *targets),
            axes,
            np.asarray(V).reshape(-1, *targets),
        )

    def fit_grid(self, coords: Sequence[ArrayLike], Y: ArrayLike) -> KroneckerGP:
        """Fit on a grid given by per-axis coordinates and grid-shaped targets.

        Parameters
        ----------
        coords : list of array-like
            One array per axis, each of shape (n_d,) or (n_d, p_d).
        Y : array-like of shape (n_1, ..., n_D) or (n_1, ..., n_D, n_targets)
            Targets on the grid; NaN marks a missing cell. Axis slices with no
            observed cell (in any target) are dropped from the training grid
            (``grid_`` holds the kept coordinates); the other missing cells
            are handled exactly by the Schur-complement solver (see
            ``solver``). A last axis holds several targets (see
            ``n_targets``); each may miss its own cells. Under scikit-learn's
            ``array_api_dispatch`` a non-NumPy ``Y`` (PyTorch, CuPy,
            ``array_api_strict``; complete grid, one target, scalar noise) is
            fitted in its namespace and on its device, float32 staying float32
            (``solver_info_.extra`` says so); ``alpha_``, ``predict``,
            ``predict_grid`` and ``sample_grid`` then return arrays there.

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
        >>> gp.solver_info_.path  # so few cells: one exact Cholesky factor
        'dense'
        >>> bool(np.isnan(gp.noise_variances_[2, 3]))
        True
        >>> truth = np.sin(4 * x[2]) + 0.1 * np.cos(t[3])
        >>> bool(abs(gp.predict_grid([x, t])[2, 3] - truth) < 0.1)
        True
        """
        if is_dask_array(Y):  # larger than memory: chunk by chunk (solvers/_dask.py)
            grid, lazy, axes = check_dask_grid(
                coords, Y, self.axes, self.noise, self.noise_axes
            )
            self.n_features_in_ = int(sum(grid.widths))
            return self._fit(grid, self._check_n_targets(lazy, 0), axes)
        if uses_array_api(Y):  # array_api_dispatch: the eigen route in Y's namespace
            grid, y, axes = check_array_api_grid(
                coords, Y, self.axes, self.noise, self.noise_axes
            )
            self.n_features_in_ = int(sum(grid.widths))
            return self._fit(grid, self._check_n_targets(y, 0), axes)
        grid, Y, axes = check_grid_targets(coords, Y, self.axes, multi_output=True)
        self.n_features_in_ = int(sum(grid.widths))
        n_axes = len(grid.shape)
        v = None
        if not np.isscalar(self.noise) and self.noise_axes is None:
            v = as_float_array(self.noise, "noise", allow_nan=True)
            if Y.ndim > n_axes and v.shape == grid.shape:
                v = np.repeat(v[..., None], Y.shape[-1], axis=-1)  # every target
            if v.shape != Y.shape:
                raise ValueError(
                    f"noise given per cell must have Y's shape {Y.shape}; got "
                    f"{v.shape}."
                )
        Y = self._check_n_targets(Y, Y.ndim - n_axes)
        if v is not None:
            v = v.reshape(Y.shape)
        targets = Y.shape[n_axes:]
        if v is None:
            grid, Y = self._drop_empty(grid, Y)
            return self._fit(grid, np.asarray(Y).reshape(-1, *targets), axes)
        grid, Y, v = drop_empty_slices(grid, Y, v)
        return self._fit(
            grid,
            np.asarray(Y).reshape(-1, *targets),
            axes,
            np.asarray(v).reshape(-1, *targets),
        )

    def _check_n_targets(self, Y: FloatArray, has_targets: int) -> FloatArray:
        """Check ``n_targets`` against the targets axis of ``Y``; drop it if 1 long.

        ``has_targets`` is 1 when the last axis of ``Y`` holds the targets.
        """
        n_targets = self.n_targets
        if n_targets is not None and (
            isinstance(n_targets, bool)
            or not isinstance(n_targets, numbers.Integral)
            or n_targets < 1
        ):
            raise ValueError(
                f"n_targets must be a positive integer or None; got {n_targets!r}."
            )
        seen = int(Y.shape[-1]) if has_targets else 1
        if n_targets is not None and seen != n_targets:
            raise ValueError(
                "The number of targets seen in `y` is different from the parameter "
                f"`n_targets`. Got {seen} != {n_targets}."
            )
        if seen > 1 and self.noise_axes is not None:
            raise ValueError(
                "noise_axes takes one target; got Y with "
                f"{seen} targets. Fit each target on its own, or make the targets a "
                "grid axis (e.g. with a CoregionalizationKernel) and list that axis "
                "in noise_axes."
            )
        # one target column is the single-output case (scikit-learn squeezes it)
        return Y[..., 0] if has_targets and seen == 1 else Y

    def _fit(
        self,
        grid: Grid,
        y: FloatArray,
        axes: list[list[int]],
        cell_noise: FloatArray | None = None,
    ) -> KroneckerGP:
        """Validate, choose the route, optimise theta, factorise, store."""
        t0 = time.perf_counter()
        for name in ("noise_variances_", "noise_per_axis_"):  # a refit's own only
            self.__dict__.pop(name, None)
        self._noise_axes = None if self.noise_axes is None else self._axis_init[0]
        kernel = build_kernel(self.kernels, axes)
        self._check_params(kernel, len(grid.shape))
        self.axes_ = axes
        self.y_train_mean_, self.y_train_std_ = self._normalisation(y)
        if is_numpy(y) or (self.y_train_mean_, self.y_train_std_) != (0.0, 1.0):
            y = (y - self.y_train_mean_) / self.y_train_std_  # (a device copy saved)
        if cell_noise is not None:
            cell_noise = self._check_cell_noise(cell_noise, np.isnan(y))
        choice = select_solver(
            grid,
            kernel,
            y,
            cell_noise=cell_noise,
            state_space=self.state_space,
            state_space_min_size=int(self.state_space_min_size),
            options=self._options(),
            noise_axes=self._noise_axes,
        )
        self.grid_, self._route = choice.grid, choice.solver
        self._last_fact = None
        self.kernel_ = kernel
        if self._noise_axes is not None:
            self.noise_ = self._noise_from_log(self._axis_init[1])
        else:
            self.noise_ = float(self.noise) if cell_noise is None else 1.0
        self._noise_log_bounds = log_noise_bounds(self.noise_bounds)
        if self.optimizer is not None and self._bounds().shape[0] > 0:
            self._optimise()
        self._fact = self._fitted_factorization()
        self._alpha_cache = None  # alpha_ of this fit, on first access
        # an estimated LML (CG paths) is computed on first access, see the property
        self._lml_value = None if np.isnan(self._fact.lml) else float(self._fact.lml)
        self.solver_info_ = self._fact.info
        self.solver_info_.extra.update(route=choice.route, route_reason=choice.reason)
        self.theta_ = self._theta()
        if cell_noise is not None:
            self.noise_variances_ = self._noise_variances()
        if self._noise_axes is not None:
            self._store_axis_noise()
        self.kernels_ = list(self.kernel_.kernels)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _normalisation(self, y: FloatArray) -> tuple[Any, Any]:
        """Return the mean and scale of ``y`` (per target column), or 0 and 1."""
        if is_dask_array(y):  # one pass over the chunks, also checks finiteness
            return dask_normalisation(y, normalize=bool(self.normalize_y))
        if not is_numpy(y):  # array_api_dispatch: also checks finiteness
            return array_api_normalisation(y, normalize=bool(self.normalize_y))
        if y.ndim == 1:
            return safe_normalisation(y) if self.normalize_y else (0.0, 1.0)
        if not self.normalize_y:
            return np.zeros(y.shape[1]), np.ones(y.shape[1])
        stats = np.array([safe_normalisation(col) for col in y.T])
        return stats[:, 0], stats[:, 1]

    def _options(self) -> SolverOptions:
        seed = (
            self.random_state if isinstance(self.random_state, numbers.Integral) else 0
        )
        return SolverOptions(
            method=self.solver,
            tol=float(self.cg_tol),
            max_iter=int(self.cg_max_iter),
            n_probes=int(self.n_probes),
            seed=int(seed),
        )

    def _noise_variances(self) -> FloatArray:
        """``noise_ * noise`` on the training grid in data units, NaN where missing."""
        route = self._route
        cells = np.asarray(route.cell_noise, dtype=float).reshape(self.grid_.size, -1)
        missing = np.zeros(cells.size, dtype=bool)
        if getattr(route, "missing", None) is not None:
            missing = np.asarray(route.missing).reshape(-1)
            if missing.dtype != bool:
                flags = np.zeros(cells.size, dtype=bool)
                flags[missing] = True
                missing = flags
        missing = missing.reshape(cells.shape)
        out = np.where(missing, np.nan, self.noise_ * cells * self.y_train_std_**2)
        targets = cells.shape[1:] if cells.shape[1] > 1 else ()
        return out.reshape(*self.grid_.shape, *targets)

    def _fitted_factorization(self) -> Factorization:
        last, self._last_fact = self._last_fact, None
        if last is not None and np.array_equal(last[0], self._theta()):
            if not np.isnan(last[1].lml) and last[1].info.lml_std_error == 0:
                self._check_conditioning(last[1])
                return last[1]  # the optimiser's last evaluation was at theta_
        return self._factorize(need_lml=False)

    @property
    def alpha_(self) -> FloatArray:
        """``(K + noise I)^{-1} y`` on the training grid (computed on first access)."""
        cached: FloatArray | None = getattr(self, "_alpha_cache", None)
        if cached is None:
            if not hasattr(self, "_fact"):
                raise AttributeError("alpha_")
            cached = self._alpha_cache = self._fact.alpha()
        return cached

    # ------------------------------------------------------------ parameters
    def _check_params(self, kernel: KroneckerKernel, n_axes: int) -> None:
        if len(kernel.kernels) != n_axes:
            raise ValueError(
                f"kernels has {len(kernel.kernels)} entries but the grid has {n_axes} "
                "axes; give one kernel per axis."
            )
        noise = self.noise
        if np.isscalar(noise) and (
            isinstance(noise, bool)
            or not isinstance(noise, numbers.Real)
            or not (np.isfinite(noise) and noise > 0)
        ):
            raise ValueError(f"noise must be a positive finite number; got {noise!r}.")
        check_optimizer_params(self.optimizer, self.n_restarts_optimizer)

    def _check_cell_noise(self, v: FloatArray, missing: Any) -> FloatArray:
        # values on missing cells carry no information: accept NaN or anything
        v = v.copy()
        v[missing] = np.nan
        seen = v[~np.isnan(v)]
        n_nan = v.size - int(np.sum(missing)) - seen.size
        if n_nan or np.any(seen <= 0):
            raise ValueError(
                "noise given per cell must be positive and finite on every observed "
                f"cell; got min {float(seen.min(initial=np.inf))!r} and {n_nan} NaN on "
                "observed cells. Give NaN (or any value) only where Y is NaN."
            )
        return v / self.y_train_std_**2

    # ------------------------------------------------------------ axis noise
    def _drop_empty(self, grid: Grid, Y: FloatArray) -> tuple[Grid, FloatArray]:
        """Drop empty slices; with ``noise_axes``, check them and align the start.

        Stores ``_axis_init``: the checked axes and the start log-variances on
        the kept slices (normalised units, the first axis carrying the scale).
        """
        if self.noise_axes is None:
            out = drop_empty_slices(grid, Y)
            return out[0], out[1]
        axes = check_noise_axes(self.noise_axes, len(grid.shape))
        starts = axis_noise_start(self.noise, axes, grid.shape)
        spread = [
            np.broadcast_to(
                v.reshape([-1 if e == d else 1 for e in range(len(grid.shape))]),
                grid.shape,
            )
            for d, v in zip(axes, starts)
        ]
        grid, Y, *kept = drop_empty_slices(grid, Y, *spread)
        logs = [
            np.log(np.moveaxis(k, d, 0).reshape(k.shape[d], -1)[:, 0])
            for d, k in zip(axes, kept)
        ]
        self._axis_init = (axes, np.concatenate(logs))
        return grid, Y

    def _n_noise(self) -> int:
        """Return the number of noise log-variances in theta (noise learned)."""
        if getattr(self, "_noise_axes", None) is None:
            return 1
        return int(sum(v.size for v in self.noise_))

    def _log_noise(self) -> FloatArray:
        if getattr(self, "_noise_axes", None) is None:
            return np.log(np.atleast_1d(float(self.noise_)))
        return np.log(np.concatenate(self.noise_))

    def _noise_from_log(self, log_noise: FloatArray) -> Any:
        """``noise_`` from its log entries: a float, or per-axis arrays (balanced)."""
        if getattr(self, "_noise_axes", None) is None:
            return float(np.exp(log_noise[0]))
        assert self._noise_axes is not None
        sizes = [self.grid_.shape[d] for d in self._noise_axes]
        parts = np.split(np.asarray(log_noise, dtype=float), np.cumsum(sizes)[:-1])
        return [np.exp(x) for x in balance_log_variances(parts)]

    def _store_axis_noise(self) -> None:
        """Set ``noise_per_axis_`` and ``noise_variances_`` in data units."""
        per_axis = [v.copy() for v in self.noise_]
        per_axis[0] = per_axis[0] * self.y_train_std_**2
        self.noise_per_axis_ = per_axis
        full = [np.ones(n) for n in self.grid_.shape]
        assert self._noise_axes is not None
        for d, v in zip(self._noise_axes, per_axis):
            full[d] = v
        self.noise_variances_ = kron_outer(full).reshape(self.grid_.shape)

    # ------------------------------------------------------- hyperparameters
    def _bounds(self) -> FloatArray:
        parts = [np.asarray(self.kernel_.bounds, dtype=float).reshape(-1, 2)]
        if self._noise_log_bounds is not None:
            parts.append(np.tile(self._noise_log_bounds, (self._n_noise(), 1)))
        return np.vstack(parts)

    def _theta(self) -> FloatArray:
        theta = np.asarray(self.kernel_.theta, dtype=float)
        if self._noise_log_bounds is None:
            return theta.copy()
        return np.append(theta, self._log_noise())

    def _set_theta(self, theta: FloatArray) -> None:
        n_k = len(self.kernel_.theta)
        self.kernel_.theta = theta[:n_k]
        if self._noise_log_bounds is not None:
            self.noise_ = self._noise_from_log(theta[n_k:])

    def _factorize(
        self,
        *,
        eval_gradient: bool = False,
        need_lml: bool = True,
        route: Any = None,
        check: bool = True,
    ) -> Factorization:
        """Factorise at the current hyperparameters, with a remedy on failure.

        ``check`` tests the conditioning of ``K + noise I`` (an error with the
        condition number where results would be meaningless). The search's
        evaluations skip it: the eigen routes stay accurate at the bounds'
        corners the line search probes, and an error there would end the
        search at its start; the fitted hyperparameters are checked.
        """
        try:
            fact = (route or self._route).factorize(
                self.kernel_,
                self.noise_,
                eval_gradient=eval_gradient,
                noise_free=self._noise_log_bounds is not None,
                need_lml=need_lml,
            )
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(
                f"{exc} The factorisation failed at theta={self._theta()!r}; increase "
                "noise or its lower bound."
            ) from None
        if check:
            self._check_conditioning(fact)
        return fact

    def _check_conditioning(self, fact: Factorization) -> None:
        spectrum = fact.spectrum()
        cell_noise = self._route.cell_noise
        if self._noise_axes is not None and spectrum is not None:  # whitened: noise 1
            check_conditioning(spectrum, 1.0, self.kernel_, "KroneckerGP")
            return
        if spectrum is not None and cell_noise is None:
            check_conditioning(spectrum, self.noise_, self.kernel_, "KroneckerGP")
            return
        # a Kalman axis or per-cell noise: only a bound on the condition number
        low = high = self.noise_
        if self._noise_axes is not None:  # per-axis variances: the cells' range
            low = float(np.prod([np.min(v) for v in self.noise_]))
            high = float(np.prod([np.max(v) for v in self.noise_]))
        if cell_noise is not None:
            seen = np.asarray(cell_noise, dtype=float)
            seen = seen[np.isfinite(seen)]
            low, high = self.noise_ * float(seen.min()), self.noise_ * float(seen.max())
        products = getattr(self.kernel_, "products", None)  # SeparableSum terms
        terms = products() if callable(products) else [self.kernel_]
        diags = [
            [
                np.asarray(k.diag(c), dtype=float)
                for k, c in zip(t.kernels, self.grid_.coords)
            ]
            for t in terms
        ]
        warn_conditioning_bound(diags, low, high, self.kernel_, "KroneckerGP")

    def _lml_at(
        self, theta: FloatArray, eval_gradient: bool
    ) -> tuple[float, FloatArray]:
        self._set_theta(theta)
        search = getattr(self, "_search_route", None)
        fact = self._factorize(
            eval_gradient=eval_gradient, route=search, check=search is None
        )
        if not eval_gradient:
            return fact.lml, np.zeros(0)
        self._last_fact = (self._theta(), fact)
        assert fact.grad is not None
        return fact.lml, fact.grad

    def _optimise(self) -> None:
        # the search's CG solves stop at max(cg_tol, SEARCH_CG_TOL) and its
        # estimates use at most SEARCH_PROBES probes; fit then factorises once
        # more at cg_tol at the optimum, and estimates with n_probes
        fit = self._options()
        search = fit.for_search()
        self._search_route = replace(
            self._route, tol=search.tol, n_probes=search.n_probes
        )
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
                + param_label("noise", self._n_noise(), self.noise_bounds),
            )
        finally:
            # keep what the search settled (the block-Jacobi axis), at fit settings
            self._route = replace(
                self._search_route, tol=fit.tol, n_probes=fit.n_probes
            )
            del self._search_route
        if self._last_fact is not None and (search.tol, search.n_probes) != (
            fit.tol,
            fit.n_probes,
        ):
            self._last_fact = None  # evaluated at the search's looser settings
        self._set_theta(theta)

    def log_marginal_likelihood(
        self,
        theta: ArrayLike | None = None,
        eval_gradient: bool = False,
        clone_kernel: bool = True,
    ) -> Any:
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
            The log marginal likelihood (estimated, with
            ``solver_info_.lml_std_error``, where the route is iterative).
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
                f"{self._noise_theta_label()}); "
                f"got {theta.shape[0]}."
            )
        return query_lml(
            self,
            theta,
            eval_gradient=eval_gradient,
            clone_kernel=clone_kernel,
            names=["kernel_", "kernels_", "noise_", "_last_fact"],
        )

    def _noise_theta_label(self) -> str:
        """Name the noise entries of theta in an error message (none if fixed)."""
        if self._noise_log_bounds is None:
            return ""
        if getattr(self, "_noise_axes", None) is None:
            return " + log(noise)"
        return f" + {self._n_noise()} per-axis noise log-variances"

    @property
    def log_marginal_likelihood_value_(self) -> float:
        """Log marginal likelihood at ``theta_``.

        Exact routes compute it during ``fit``. Where the route estimates it
        (iterative paths: ``solver_info_.lml_std_error > 0``) it is computed on
        first access, which costs about ``n_probes`` times a fit with fixed
        hyperparameters (the probes' Lanczos runs); a fit that optimised the
        hyperparameters has paid that cost already in each evaluation.
        """
        if getattr(self, "_lml_value", None) is None:
            if not hasattr(self, "_route"):
                raise AttributeError("log_marginal_likelihood_value_ is set by fit.")
            fact = self._factorize(need_lml=True, check=False)  # fit checked it
            self._lml_value = float(fact.lml)
            self.solver_info_.lml_std_error = fact.info.lml_std_error
            self.solver_info_.extra.update(fact.info.extra)
        assert self._lml_value is not None
        return float(self._lml_value)

    # ------------------------------------------------------------ prediction
    def _check_X(self, X: ArrayLike) -> FloatArray:
        if uses_array_api(X):  # query points are evaluated by the kernels in NumPy
            X = to_numpy(X)
        return np.asarray(validate_data(self, X, reset=False, dtype=np.float64))

    def _scale(
        self, mean: FloatArray, var: FloatArray | None, *, as_std: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        # as_std: sqrt before scaling, so std * y_train_std_ cannot overflow
        mean = mean * self.y_train_std_ + self.y_train_mean_
        if var is None:
            return mean, None
        var = _per_target(var, mean, cov=not as_std)
        if as_std:
            return mean, namespace(var).sqrt(var) * self.y_train_std_
        return mean, var * self.y_train_std_**2

    def predict(
        self, X: ArrayLike, return_std: bool = False, return_cov: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        r"""Predict the latent function at arbitrary points (on or off the grid).

        Before ``fit`` this is the prior (zero mean, the kernels as given), as
        in ``GaussianProcessRegressor``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query points, columns as in ``fit`` (for :meth:`fit_grid`: the
            per-axis coordinates concatenated in axis order).
        return_std : bool, default=False
            Also return the posterior standard deviation (noise excluded).
        return_cov : bool, default=False
            Also return the posterior covariance (noise excluded).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_targets)
        y_std : ndarray of shape (n_samples,) or (n_samples, n_targets), optional
        y_cov : ndarray of shape (n_samples, n_samples) or \
(n_samples, n_samples, n_targets), optional

        Notes
        -----
        Cost :math:`O(M N)` for ``M`` points (:math:`O(M^2 N)` with the
        covariance); no :math:`N \times N` array is formed. Means and standard
        deviations are computed in chunks of points whose temporaries stay
        near ``CHUNK_ENTRIES`` (64 MB), so memory does not grow with ``M``
        (about 48 KB per point at 1000 x 1000 before).
        """
        if return_std and return_cov:
            raise RuntimeError(
                "At most one of return_std or return_cov can be requested."
            )
        if not hasattr(self, "kernel_"):  # unfitted: the prior, as sklearn
            X = self._check_X(X)
            kernel = build_kernel(
                self.kernels, resolve_axes(self.kernels, self.axes, X.shape[1])
            )
            prior = prior_predict(kernel, X, return_std, return_cov)
            return self._prior_targets(prior)  # type: ignore[no-any-return]
        check_is_fitted(self)
        X = self._check_X(X)
        parts = [X[:, cols] for cols in self.axes_]
        if return_cov:
            mean, cov = self._fact.predict_points(
                self.kernel_, parts, std=False, cov=True
            )
            mean, cov = self._scale(mean, cov)
            return mean, cov  # type: ignore[return-value]
        # per point: the cross-covariance rows, their rotations and squares
        # (each sum(n_d) long); grid-sized work is chunked inside the routes
        step = max(1, _budgets.CHUNK_ENTRIES // (6 * sum(self.grid_.shape)))
        means: list[FloatArray] = []
        stds: list[FloatArray] = []
        for lo in range(0, X.shape[0], step):
            chunk = [p[lo : lo + step] for p in parts]
            mean, var = self._fact.predict_points(
                self.kernel_, chunk, std=return_std, cov=False
            )
            mean, std = self._scale(mean, var, as_std=True)
            means.append(mean)
            if std is not None:
                stds.append(std)
        mean = _concat(means) if means else np.zeros((0, *self._targets()))
        if not return_std:
            return mean
        return mean, _concat(stds) if stds else np.zeros(mean.shape)

    def predict_grid(
        self, coords: Sequence[ArrayLike], return_std: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        r"""Predict the latent function on a grid, returning grid-shaped arrays.

        Before ``fit`` this is the prior (zero mean, the kernels as given).

        Parameters
        ----------
        coords : list of array-like
            Per-axis test coordinates, each (m_d,) or (m_d, p_d), in the
            training axes' order.
        return_std : bool, default=False
            Also return the posterior standard deviation (noise excluded).

        Returns
        -------
        mean : ndarray of shape (m_1, ..., m_D) (+ (n_targets,) with several)
        std : ndarray of the same shape, optional

        Notes
        -----
        Mode products only: :math:`O(\sum_d m_d n_d^2 + M \sum_d n_d)`.
        """
        if not hasattr(self, "kernel_"):  # unfitted: the prior on the grid
            grid = Grid(check_coords(coords))
            kernel = build_kernel(self.kernels, grid.block_axes())
            self._check_params(kernel, len(grid.shape))
            prior = prior_predict_grid(kernel.kernels, grid.coords, return_std)
            return self._prior_targets(prior)  # type: ignore[no-any-return]
        check_is_fitted(self)
        test = check_test_coords(self.grid_, host_coords(coords))
        mean, var = self._fact.predict_grid(self.kernel_, test, std=return_std)
        mean, std = self._scale(mean, var, as_std=True)
        shape = (*test.shape, *self._targets())
        xp = namespace(mean)  # the fitted Y's (NumPy, or e.g. PyTorch on a GPU)
        if std is None:
            return xp.reshape(mean, shape)
        return xp.reshape(mean, shape), xp.reshape(std, shape)

    # ----------------------------------------------------------------- sampling
    def sample_y(
        self, X: ArrayLike, n_samples: int = 1, random_state: Any = 0
    ) -> FloatArray:
        """Draw posterior (after fit) or prior (before fit) samples at points ``X``.

        Parameters
        ----------
        X : array-like of shape (n_points, n_features)
            Query points.
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=0
            As in ``GaussianProcessRegressor.sample_y``.

        Returns
        -------
        ndarray of shape (n_points, n_samples) or (n_points, n_targets, n_samples)
            The samples (latent function, noise excluded).
        """
        rng = check_random_state(random_state)
        if hasattr(self, "kernel_"):
            mean, cov = self.predict(X, return_cov=True)
            if not is_numpy(mean):  # M points: drawn in NumPy, returned as fitted
                draws = rng.multivariate_normal(
                    to_numpy(mean), to_numpy(cov), n_samples
                )
                return like(draws.T, mean)
        else:
            X = as_float_array(X, "X", ndim=2)
            axes = resolve_axes(self.kernels, self.axes, X.shape[1])
            kernel = build_kernel(self.kernels, axes)
            mean, cov = self._prior_targets((np.zeros(X.shape[0]), kernel(X)))
        if mean.ndim == 1:
            return rng.multivariate_normal(mean, cov, n_samples).T
        return np.stack(
            [
                rng.multivariate_normal(mean[:, t], cov[..., t], n_samples).T
                for t in range(mean.shape[1])
            ],
            axis=1,
        )

    def sample_grid(
        self,
        coords: Sequence[ArrayLike],
        n_samples: int = 1,
        random_state: int | np.random.Generator | None = None,
    ) -> FloatArray:
        r"""Draw exact posterior (after fit) or prior samples on a grid.

        Parameters
        ----------
        coords : list of array-like
            Per-axis coordinates of the sample grid.
        n_samples : int, default=1
            Number of samples.
        random_state : int, Generator or None, default=None
            Seed for reproducible samples.

        Returns
        -------
        ndarray of shape (m_1, ..., m_D, n_samples)
            The samples (latent function, noise excluded); with several
            targets ``(m_1, ..., m_D, n_targets, n_samples)``.

        Notes
        -----
        Prior samples are :math:`(\bigotimes_d L_d) z` with factor square roots
        :math:`L_d L_d^T = K_d`. Posterior samples use Matheron's rule,
        :math:`f_* + K_{*x} (K + sI)^{-1} (y - f_x - \varepsilon)`, with
        :math:`(f_*, f_x)` a joint prior sample on the union of the test and
        training axes: exact, at the cost of a fit on that union grid (on the
        state-space route: forward filtering, backward sampling).
        """
        rng = np.random.default_rng(random_state)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer; got {n_samples!r}."
            )
        if not hasattr(self, "kernel_"):
            grid = Grid(check_coords(coords))
            kernel = build_kernel(self.kernels, grid.block_axes())
            targets = self._targets()  # unfitted: from n_targets
            n_draws = int(n_samples) * int(np.prod(targets))
            z = prior_grid_samples(kernel.factor_grams(grid.coords), n_draws, rng)
            return z.reshape(*grid.shape, *targets, n_samples)
        test = check_test_coords(self.grid_, host_coords(coords))
        draws = self._fact.sample_grid(self.kernel_, test, int(n_samples), rng)
        xp = namespace(draws)
        if xp is not np:  # one target (array_api_dispatch): Python float scales
            draws = draws * self.y_train_std_ + self.y_train_mean_
            return xp.reshape(draws, (*test.shape, int(n_samples)))
        std = np.asarray(self.y_train_std_)[..., None]
        draws = draws * std + np.asarray(self.y_train_mean_)[..., None]
        return draws.reshape(*test.shape, *self._targets(), int(n_samples))

    def _targets(self) -> tuple[int, ...]:
        """Return the targets axis of predictions: ``(n_targets,)``, or ``()``."""
        if hasattr(self, "kernel_"):
            return tuple(int(n) for n in np.shape(self.y_train_mean_))
        n_targets = int(self.n_targets or 1)
        return (n_targets,) if n_targets > 1 else ()

    def _prior_targets(self, prior: Any) -> Any:
        """Repeat single-target prior predictions over ``n_targets`` (as sklearn)."""
        targets = self._targets()
        if not targets:
            return prior
        if not isinstance(prior, tuple):
            return np.zeros((*prior.shape, *targets))
        mean, second = prior
        return np.zeros((*mean.shape, *targets)), np.repeat(
            second[..., None], targets[0], axis=-1
        )

    def __sklearn_tags__(self) -> Any:
        """Declare a (multi-output) regressor that predicts from the prior unfitted."""
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags


def _concat(parts: list[Any]) -> Any:
    """Concatenate prediction chunks in their namespace."""
    xp = namespace(*parts)
    return np.concatenate(parts) if xp is np else xp.concat(parts)


def _per_target(second: FloatArray, mean: FloatArray, *, cov: bool) -> FloatArray:
    """Give variances (or a covariance) shared by every target the targets axis."""
    shared = second.ndim == (2 if cov else 1)
    if mean.ndim == 1 or not shared:
        return second
    return np.repeat(second[..., None], mean.shape[-1], axis=-1)
