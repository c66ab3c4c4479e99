"""KroneckerGP's prediction and sampling methods (a mixin).

Posterior means, standard deviations and covariances at scattered points
and on grids, and posterior (or prior) samples, on every route: complete
grids, missing cells, per-cell noise and the state-space route.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from kronecker_gp._grid import Grid, check_coords
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.linalg import kron_matvec, kron_outer
from kronecker_gp.models._contract import prior_predict, prior_predict_grid
from kronecker_gp.models._kronecker_gp_setup import SetupMixin
from kronecker_gp.models._kronecker_gp_ssm import StateSpaceMixin
from kronecker_gp.solvers._cell_noise import (
    CellNoiseSystem,
    cell_noise_covariance_correction,
    cell_noise_variance_correction,
)
from kronecker_gp.solvers._cell_noise_missing import (
    ObservedCellNoiseSystem,
    observed_variance_correction,
)
from kronecker_gp.solvers._eigen import GridSolver
from kronecker_gp.solvers._eigen_missing import (
    covariance_correction,
    variance_correction,
)
from kronecker_gp.solvers._posterior import (
    grid_moments,
    point_moments,
    prior_grid_samples,
)


class PredictionMixin(SetupMixin, StateSpaceMixin):
    """Prediction and sampling methods of :class:`KroneckerGP`."""

    kernel_: KroneckerKernel
    grid_: Grid
    axes_: list[list[int]]
    noise_: float
    n_probes: int
    y_train_mean_: float
    y_train_std_: float
    _solver: GridSolver
    _ssm: Any

    def _check_X(self, X: ArrayLike) -> FloatArray:
        return np.asarray(validate_data(self, X, reset=False, dtype=np.float64))

    def _scale(
        self, mean: FloatArray, var: FloatArray | None, *, as_std: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        # as_std: sqrt before scaling, so std * y_train_std_ cannot overflow
        mean = mean * self.y_train_std_ + self.y_train_mean_
        if var is None:
            return mean, None
        if as_std:
            return mean, np.sqrt(var) * self.y_train_std_
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
        y_mean : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,), optional
        y_cov : ndarray of shape (n_samples, n_samples), optional

        Notes
        -----
        Cost :math:`O(M N)` for ``M`` points (:math:`O(M^2 N)` with the
        covariance); no :math:`N \times N` array is formed.
        """
        if return_std and return_cov:
            raise RuntimeError(
                "At most one of return_std or return_cov can be requested."
            )
        if not hasattr(self, "kernel_"):  # unfitted: the prior, as sklearn
            X = self._check_X(X)
            kernel = self._build_kernel(self._resolve_axes(X.shape[1]))
            return prior_predict(kernel, X, return_std, return_cov)  # type: ignore[no-any-return]
        check_is_fitted(self)
        X = self._check_X(X)
        if self._ssm is not None:
            if return_cov:
                return self._scale(*self._ssm_predict_cov(X))  # type: ignore[return-value]
            mean, std = self._scale(*self._ssm_predict(X, return_std), as_std=True)
            return mean if std is None else (mean, std)
        parts = [X[:, cols] for cols in self.axes_]
        cross = [
            k(p, c) for k, p, c in zip(self.kernel_.kernels, parts, self.grid_.coords)
        ]
        prior: FloatArray | None = None
        if return_cov:
            prior = np.asarray(self.kernel_(X))
        elif return_std:
            prior = self.kernel_.diag(X)
        mean, second = point_moments(self._post, cross, prior, full_cov=return_cov)
        if self._system is not None and second is not None:
            v = [c @ u for c, u in zip(cross, self._post.eigvecs)]
            if return_cov:
                second = second + self._covariance_correction(v)
            else:
                second = second + self._variance_correction(v, grid=False)
        mean, second = self._scale(mean, second, as_std=return_std)
        return mean if second is None else (mean, second)

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
        mean : ndarray of shape (m_1, ..., m_D)
        std : ndarray of shape (m_1, ..., m_D), optional

        Notes
        -----
        Mode products only: :math:`O(\sum_d m_d n_d^2 + M \sum_d n_d)`.
        """
        if not hasattr(self, "kernel_"):  # unfitted: the prior on the grid
            grid = Grid(check_coords(coords))
            kernel = self._build_kernel(grid.block_axes())
            self._check_params(kernel, len(grid.shape))
            return prior_predict_grid(kernel.kernels, grid.coords, return_std)  # type: ignore[no-any-return]
        check_is_fitted(self)
        test = self._check_test_coords(coords)
        if self._ssm is not None:
            mean, var = self._ssm_predict_grid(test, return_std)
            mean = mean * self.y_train_std_ + self.y_train_mean_
            if var is None:
                return mean
            return mean, np.sqrt(var) * self.y_train_std_
        cross = [
            k(t, c)
            for k, t, c in zip(self.kernel_.kernels, test.coords, self.grid_.coords)
        ]
        prior = None
        if return_std:
            prior = kron_outer(
                [k.diag(t) for k, t in zip(self.kernel_.kernels, test.coords)]
            )
        same = [
            t.shape == c.shape and np.array_equal(t, c)
            for t, c in zip(test.coords, self.grid_.coords)
        ]
        mean, var = grid_moments(self._post, cross, prior, same=same)
        if self._system is not None and var is not None:
            v = [c @ u for c, u in zip(cross, self._post.eigvecs)]
            var = var + self._variance_correction(v, grid=True)
        mean, std = self._scale(mean, var, as_std=True)
        if std is None:
            return mean.reshape(test.shape)
        return mean.reshape(test.shape), std.reshape(test.shape)

    def _covariance_correction(self, v: list[FloatArray]) -> FloatArray:
        if isinstance(self._system, CellNoiseSystem):
            return cell_noise_covariance_correction(self._system, v)
        assert self._system is not None
        return covariance_correction(self._system, v)

    def _variance_correction(self, v: list[FloatArray], *, grid: bool) -> FloatArray:
        if isinstance(self._system, ObservedCellNoiseSystem):
            return observed_variance_correction(
                self._system,
                v,
                grid=grid,
                n_samples=int(self.n_probes),
                rng=np.random.default_rng(self._solver.seed),
            )
        if isinstance(self._system, CellNoiseSystem):
            return cell_noise_variance_correction(self._system, v, grid=grid)
        assert self._system is not None
        return variance_correction(
            self._system,
            v,
            grid=grid,
            n_samples=int(self.n_probes),
            rng=np.random.default_rng(self._solver.seed),
        )

    def _check_test_coords(self, coords: Sequence[ArrayLike]) -> Grid:
        test = Grid(check_coords(coords))
        if test.widths != self.grid_.widths:
            raise ValueError(
                f"coords must give {len(self.grid_.widths)} axes with "
                f"{self.grid_.widths} columns each (as in training); got {test.widths}."
            )
        return test

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
        ndarray of shape (n_points, n_samples)
            The samples (latent function, noise excluded).
        """
        rng = check_random_state(random_state)
        if hasattr(self, "kernel_"):
            mean, cov = self.predict(X, return_cov=True)
        else:
            X = as_float_array(X, "X", ndim=2)
            axes = self._resolve_axes(X.shape[1])
            kernel = self._build_kernel(axes)
            mean, cov = np.zeros(X.shape[0]), kernel(X)
        return rng.multivariate_normal(mean, cov, n_samples).T

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
            The samples (latent function, noise excluded).

        Notes
        -----
        Prior samples are :math:`(\bigotimes_d L_d) z` with factor square roots
        :math:`L_d L_d^T = K_d`. Posterior samples use Matheron's rule,
        :math:`f_* + K_{*x} (K + sI)^{-1} (y - f_x - \varepsilon)`, with
        :math:`(f_*, f_x)` a joint prior sample on the union of the test and
        training axes: exact, at the cost of a fit on that union grid.
        """
        rng = np.random.default_rng(random_state)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer; got {n_samples!r}."
            )
        if not hasattr(self, "kernel_"):
            grid = Grid(check_coords(coords))
            kernel = self._build_kernel(grid.block_axes())
            z = prior_grid_samples(kernel.factor_grams(grid.coords), n_samples, rng)
            return z.reshape(*grid.shape, n_samples)
        test = self._check_test_coords(coords)
        if self._ssm is not None:
            draws = self._ssm_sample_grid(test, int(n_samples), rng)
            return draws * self.y_train_std_ + self.y_train_mean_
        return self._posterior_grid_samples(test, n_samples, rng)

    def _posterior_grid_samples(
        self, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        union, idx_train, idx_test = [], [], []
        for tr, te in zip(self.grid_.coords, test.coords):
            both, inv = np.unique(np.vstack([tr, te]), axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            union.append(both)
            idx_train.append(inv[: tr.shape[0]])
            idx_test.append(inv[tr.shape[0] :])
        shape = tuple(u.shape[0] for u in union)
        f = prior_grid_samples(self.kernel_.factor_grams(union), n_samples, rng)
        f = f.reshape(*shape, n_samples)
        f_train = f[np.ix_(*idx_train, np.arange(n_samples))].reshape(-1, n_samples)
        f_test = f[np.ix_(*idx_test, np.arange(n_samples))].reshape(-1, n_samples)
        noise = self.noise_ * (
            1.0 if self._solver.cell_noise is None else self._solver.cell_noise[:, None]
        )
        eps = np.sqrt(noise) * rng.standard_normal(f_train.shape)
        resid = self._solver.y[:, None] - f_train - eps
        cross = [
            k(t, c)
            for k, t, c in zip(self.kernel_.kernels, test.coords, self.grid_.coords)
        ]
        v = [c @ u for c, u in zip(cross, self._post.eigvecs)]
        if self._system is not None:
            # Matheron's rule with the observed cells only: A_oo^{-1} r_o, padded
            resid[self._solver.missing] = 0.0
        resid_rot = kron_matvec([u.T for u in self._post.eigvecs], resid)
        if self._system is None:
            weights = self._post.inv_lam[:, None] * resid_rot
        elif isinstance(self._system, CellNoiseSystem):
            weights = self._system.rot(self._system.solve(resid))
        else:
            weights = self._system.observed_solve_rot(resid_rot)
        sample = f_test + kron_matvec(v, weights)
        sample = sample * self.y_train_std_ + self.y_train_mean_
        return sample.reshape(*test.shape, n_samples)
