"""The small shared base of the Laplace estimators (grid, kernel, theta, fit)."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import RBF, CompoundKernel, ConstantKernel, Kernel
from sklearn.utils.validation import check_is_fitted

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid, check_coords, drop_empty_slices, grid_from_rows
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import KroneckerKernel, SeparableSum
from kronecker_gp.likelihoods import Likelihood
from kronecker_gp.models._base import build_kernel, check_grid_targets, resolve_axes
from kronecker_gp.models._optimize import check_optimizer_params, maximise_lml
from kronecker_gp.solvers._laplace import (
    DENSE_MAX_CELLS,
    LaplaceOptions,
    LaplaceProblem,
    laplace_factorize,
    laplace_lml,
)
from kronecker_gp.solvers._laplace_predict import latent_moments, latent_samples


class LaplaceGPBase(BaseEstimator):
    """Fitting and latent predictions shared by the Laplace estimators.

    Subclasses set ``_likelihood()``, ``_encode_y(y)`` (observed values to
    the likelihood's scale) and ``_mean_offset(y, offset)`` (the constant
    prior mean), and define their constructor parameters.
    """

    kernels: Any
    axes: Any
    optimizer: Any
    n_restarts_optimizer: Any
    random_state: Any
    n_probes: int
    cg_tol: float

    # ------------------------------------------------------------ hooks
    def _likelihood(self) -> Likelihood:
        raise NotImplementedError

    def _learn_likelihood_params(self) -> bool:
        return True

    def _mean_offset(self, y: FloatArray, offset: FloatArray) -> float:
        return 0.0

    # ------------------------------------------------------------ setup
    def _resolve_axes(self, n_features: int) -> list[list[int]]:
        return resolve_axes(self.kernels, self.axes, n_features)

    def _build_kernel(self, axes: list[list[int]]) -> KroneckerKernel:
        if isinstance(self.kernels, SeparableSum):
            raise TypeError(
                f"kernels: {type(self).__name__} takes a product kernel; a "
                "SeparableSum (sum of product kernels) is supported by KroneckerGP "
                "only."
            )
        given = [self.kernels] if isinstance(self.kernels, Kernel) else self.kernels
        if isinstance(given, Sequence) and any(
            isinstance(k, CompoundKernel) for k in given
        ):
            raise ValueError(
                "kernels cannot hold a CompoundKernel: each grid axis takes one "
                "scalar kernel."
            )
        if self.kernels is None:
            # sklearn's GPC default, once per axis
            default = ConstantKernel(1.0, "fixed") * RBF(1.0, "fixed")
            return KroneckerKernel([clone(default) for _ in axes], axes=axes)
        if isinstance(self.kernels, Kernel) and not isinstance(
            self.kernels, KroneckerKernel
        ):
            return KroneckerKernel([clone(self.kernels)], axes=axes)
        return build_kernel(self.kernels, axes)

    def _options(self, search: bool = False) -> LaplaceOptions:
        # the search may stop Newton earlier on the iterative routes only (on
        # the dense route the last steps cost little)
        loose = search and self.grid_.size > DENSE_MAX_CELLS
        return LaplaceOptions(
            newton_tol=_budgets.LAPLACE_SEARCH_NEWTON_TOL if loose else 1e-20,
            cg_tol=max(self.cg_tol, 1e-6) if search else self.cg_tol,
            n_probes=min(self.n_probes, 8) if search else self.n_probes,
            random_state=(
                self.random_state if isinstance(self.random_state, int) else 0
            ),
        )

    # ------------------------------------------------------------ fitting
    def _fit_rows(
        self, X: FloatArray, y: FloatArray, exposure: ArrayLike | None
    ) -> Any:
        axes = self._resolve_axes(X.shape[1])
        grid, cell = grid_from_rows(X, axes, complete=False)
        y_grid = np.full(grid.size, np.nan)
        y_grid[cell] = y
        expo = np.ones(grid.size)
        if exposure is not None:
            e = _check_exposure(exposure, y.shape)
            expo[cell] = e
        return self._fit(grid, y_grid, np.log(expo), axes)

    def _fit_coords(
        self, coords: Sequence[ArrayLike], Y: ArrayLike, exposure: ArrayLike | None
    ) -> Any:
        grid, Yg, axes = check_grid_targets(coords, Y, self.axes)
        expo = np.ones(grid.shape)
        if exposure is not None:
            expo = _check_exposure(exposure, grid.shape, allow_nan=True)
            expo = np.where(np.isnan(Yg), 1.0, expo)
        self.n_features_in_ = int(sum(grid.widths))
        grid, Yg, expo = drop_empty_slices(grid, Yg, expo)
        return self._fit(
            grid, np.asarray(Yg).reshape(-1), np.log(expo).reshape(-1), axes
        )

    def _fit(
        self, grid: Grid, y: FloatArray, log_exposure: FloatArray, axes: list[list[int]]
    ) -> Any:
        t0 = time.perf_counter()
        check_optimizer_params(self.optimizer, self.n_restarts_optimizer)
        kernel = self._build_kernel(axes)
        if len(kernel.kernels) != len(grid.shape):
            raise ValueError(
                f"kernels has {len(kernel.kernels)} entries but the grid has "
                f"{len(grid.shape)} axes; give one kernel per axis."
            )
        self.likelihood_ = self._likelihood()
        obs = ~np.isnan(y)
        if not obs.any():
            raise ValueError("y has no observed value (all NaN).")
        self.likelihood_.check_y(y[obs])
        self.axes_, self.grid_, self.kernel_ = axes, grid, kernel
        self.prior_mean_ = float(self._mean_offset(y[obs], log_exposure[obs]))
        self._y, self._offset = y, log_exposure + self.prior_mean_
        self._lik_params = np.asarray(self.likelihood_.initial_params(), dtype=float)
        self._a_last: FloatArray | None = None
        if self.optimizer is not None and self._bounds().shape[0] > 0:
            theta = maximise_lml(
                self._lml_at,
                self._theta(),
                self._bounds(),
                optimizer=self.optimizer,
                n_restarts=int(self.n_restarts_optimizer),
                random_state=self.random_state,
                name=type(self).__name__,
            )
            self._set_theta(theta)
            self._warn_at_bounds()
        grams = self.kernel_.factor_grams(grid.coords)
        # the LML (a stochastic log-determinant on large grids) is computed
        # on first access of log_marginal_likelihood_value_
        self._res = laplace_factorize(
            grams,
            self._problem(),
            opts=self._options(),
            a0=self._a_last,
            need_lml=False,
        )
        self.theta_ = self._theta()
        self.kernels_ = list(self.kernel_.kernels)
        self.likelihood_params_ = np.exp(self._lik_params)
        self.solver_info_ = dict(self._res.info)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _warn_at_bounds(self) -> None:
        """Warn (ConvergenceWarning) for each hyperparameter left at a bound."""
        theta, bounds = self._theta(), self._bounds()
        names = [
            (h.name, d)
            for h in self.kernel_.hyperparameters
            if not h.fixed
            for d in range(h.n_elements)
        ]
        names += [(n, 0) for n in self.likelihood_.param_names[: self._n_lik()]]
        for (name, d), value, (lo, hi) in zip(names, theta, bounds):
            for side, b in (("lower", lo), ("upper", hi)):
                if np.isclose(value, b):
                    warnings.warn(
                        f"{name} (element {d}) ended at its {side} bound "
                        f"{np.exp(b):.3g} after the optimisation; widen its "
                        "bounds and refit if that bound is not a real limit.",
                        ConvergenceWarning,
                        stacklevel=4,
                    )

    @property
    def log_marginal_likelihood_value_(self) -> float:
        """Laplace approximate LML at ``theta_`` (computed on first access)."""
        if not hasattr(self, "_res"):
            raise AttributeError("log_marginal_likelihood_value_ is set by fit.")
        return float(laplace_lml(self._res))

    @property
    def lml_std_error_(self) -> float:
        """Standard error of an estimated LML (0 when exact)."""
        laplace_lml(self._res)
        return float(self._res.lml_std_error)

    def _problem(self) -> LaplaceProblem:
        return LaplaceProblem(self._y, self._offset, self.likelihood_, self._lik_params)

    # ------------------------------------------------------------ theta
    def _n_lik(self) -> int:
        return len(self._lik_params) if self._learn_likelihood_params() else 0

    def _bounds(self) -> FloatArray:
        kb = np.asarray(self.kernel_.bounds, dtype=float).reshape(-1, 2)
        lb = np.tile(np.log([1e-3, 1e5]), (self._n_lik(), 1))
        return np.vstack([kb, lb])

    def _theta(self) -> FloatArray:
        return np.concatenate(
            [np.asarray(self.kernel_.theta, float), self._lik_params[: self._n_lik()]]
        )

    def _set_theta(self, theta: FloatArray) -> None:
        n_k = len(self.kernel_.theta)
        self.kernel_.theta = theta[:n_k]
        if self._n_lik():
            self._lik_params = np.asarray(theta[n_k:], dtype=float)

    def _lml_at(
        self, theta: FloatArray, eval_gradient: bool
    ) -> tuple[float, FloatArray]:
        self._set_theta(theta)
        pairs = self.kernel_.factor_grams(self.grid_.coords, eval_gradient=True)
        res = laplace_factorize(
            [k for k, _ in pairs],
            self._problem(),
            grad_grams=[g for _, g in pairs] if eval_gradient else None,
            opts=self._options(search=True),
            a0=self._a_last,
        )
        self._a_last = res.grad_logp
        if not eval_gradient:
            return res.lml, np.zeros(0)
        assert res.grad is not None
        return res.lml, res.grad[: len(theta)]

    def log_marginal_likelihood(
        self,
        theta: ArrayLike | None = None,
        eval_gradient: bool = False,
        clone_kernel: bool = True,
    ) -> float | tuple[float, FloatArray]:
        """Return the Laplace approximate log marginal likelihood of ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n_theta,), default=None
            Log-hyperparameters (kernels' thetas, then the likelihood's
            learned log-parameters). ``None`` returns the fitted value.
        eval_gradient : bool, default=False
            Also return the gradient w.r.t. ``theta``.
        clone_kernel : bool, default=True
            As in scikit-learn: ``False`` leaves ``theta`` set on ``kernel_``
            (and the likelihood parameters) afterwards; the stored posterior
            is not refitted.

        Returns
        -------
        lml : float
        grad : ndarray of shape (n_theta,), if ``eval_gradient``

        Raises
        ------
        ValueError
            If ``theta`` has the wrong length, or a gradient is asked without it.
        """
        check_is_fitted(self)
        if theta is None:
            if eval_gradient:
                raise ValueError("Gradient can only be evaluated for theta!=None")
            return self.log_marginal_likelihood_value_
        theta = as_float_array(theta, "theta", ndim=1)
        saved, a_saved = self._theta(), self._a_last
        if theta.shape[0] != saved.shape[0]:
            raise ValueError(
                f"theta must have {saved.shape[0]} entries (the free "
                f"log-hyperparameters); got {theta.shape[0]}."
            )
        self._a_last = None
        try:
            self._set_theta(theta)
            pairs = self.kernel_.factor_grams(self.grid_.coords, eval_gradient=True)
            res = laplace_factorize(
                [k for k, _ in pairs],
                self._problem(),
                grad_grams=[g for _, g in pairs] if eval_gradient else None,
                opts=self._options(),
            )
        finally:
            if clone_kernel:
                self._set_theta(saved)
            self._a_last = a_saved
        if not eval_gradient:
            return np.float64(res.lml)  # as sklearn (keeps float64 under NEP 50)
        assert res.grad is not None
        return np.float64(res.lml), res.grad[: theta.shape[0]]

    # ------------------------------------------------------------ latent
    def _check_X(self, X: ArrayLike) -> FloatArray:
        check_is_fitted(self)
        X = as_float_array(X, "X", ndim=2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input."
            )
        return X

    def _latent_points(
        self, X: FloatArray, return_var: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        # one-entry cache: predict, score and predict_latent on the same rows
        # (a held-out set) share the variances' solves
        key = (id(self._res), X.shape, hashlib.sha1(X.tobytes()).hexdigest())
        cached = getattr(self, "_latent_cache", None)
        if (
            cached is not None
            and cached[0] == key
            and (cached[2] is not None or not return_var)
        ):
            return cached[1], cached[2] if return_var else None
        parts = [X[:, cols] for cols in self.axes_]
        cross = [
            np.asarray(k(p, c))
            for k, p, c in zip(self.kernel_.kernels, parts, self.grid_.coords)
        ]
        prior = np.asarray(self.kernel_.diag(X)) if return_var else None
        mean, var, _ = latent_moments(self._res, cross, prior, grid=False)
        self._latent_cache = (key, mean, var)
        return mean, var

    def _latent_grid(
        self, coords: Sequence[ArrayLike], return_var: bool
    ) -> tuple[FloatArray, FloatArray | None, Grid]:
        check_is_fitted(self)
        test = Grid(check_coords(coords))
        if test.widths != self.grid_.widths:
            raise ValueError(
                f"coords must give {len(self.grid_.widths)} axes with "
                f"{self.grid_.widths} columns each (as in training); got "
                f"{test.widths}."
            )
        cross = [
            np.asarray(k(t, c))
            for k, t, c in zip(self.kernel_.kernels, test.coords, self.grid_.coords)
        ]
        prior = None
        if return_var:
            diags = [
                np.asarray(k.diag(t)) for k, t in zip(self.kernel_.kernels, test.coords)
            ]
            prior = np.ravel(_outer(diags))
        mean, var, _ = latent_moments(self._res, cross, prior, grid=True)
        return mean, var, test

    def sample_latent_grid(
        self, n_samples: int = 1, random_state: int | None = 0
    ) -> FloatArray:
        """Draw latent fields on the training grid from the Laplace posterior.

        Parameters
        ----------
        n_samples : int, default=1
            Number of draws.
        random_state : int or None, default=0
            Seed.

        Returns
        -------
        ndarray of shape (*grid_.shape, n_samples)
            Latent values (without the prior mean ``prior_mean_`` and offsets).
        """
        check_is_fitted(self)
        draws = latent_samples(self._res, n_samples, random_state)
        return draws.reshape(*self.grid_.shape, int(n_samples))


def _outer(vectors: list[FloatArray]) -> FloatArray:
    out = vectors[0]
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return np.asarray(out)


def _check_exposure(
    exposure: ArrayLike, shape: tuple[int, ...], allow_nan: bool = False
) -> FloatArray:
    e = as_float_array(exposure, "exposure", allow_nan=allow_nan)
    if e.shape != shape:
        raise ValueError(f"exposure must have shape {shape} (like y); got {e.shape}.")
    if np.any(e[~np.isnan(e)] <= 0):
        raise ValueError("exposure must be positive on every observed cell.")
    return e
