r"""The dense route: a Cholesky factor of the observed cells' covariance.

Where the observed cells are few (scattered rows that imply a mostly empty
grid, or a tiny problem), one Cholesky factor of
:math:`C = K_{oo} + D_{oo}` on the ``n_o`` observed cells costs
:math:`O(n_o^3)` and :math:`O(n_o^2)` memory, as in
``GaussianProcessRegressor`` (Rasmussen and Williams 2006, Alg. 2.1); the
structured routes would pay for the whole grid. The cost model of
:func:`kronecker_gp.solvers.select_solver` takes it when it is cheaper.

:math:`K_{oo}` is the elementwise product of the factor Grams indexed by each
observed cell's per-axis positions, so no grid-sized array is formed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.solvers._posterior import prior_grid_samples, union_axes
from kronecker_gp.solvers._protocol import Factorization, SolverInfo


@dataclass
class DenseRoute:
    """Data of the dense route: the observed cells of a grid.

    Parameters
    ----------
    coords : list of ndarray
        Training coordinates of every axis.
    y : ndarray of shape (N,)
        Targets (normalised), NaN on missing cells, C order.
    cell_noise : ndarray of shape (N,) or None
        Known per-cell noise variances (scaled by the fitted noise).
    """

    coords: list[FloatArray]
    y: FloatArray
    cell_noise: FloatArray | None = None
    tol: float = 1e-10
    n_probes: int = 32
    observed: IntArray = field(init=False, repr=False)
    index: list[IntArray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Index the observed cells along each axis."""
        shape = tuple(c.shape[0] for c in self.coords)
        self.observed = np.flatnonzero(~np.isnan(self.y))
        self.index = list(np.unravel_index(self.observed, shape))

    @property
    def missing(self) -> IntArray:
        """Flat indices of the missing cells."""
        return np.flatnonzero(np.isnan(self.y))

    def _noise(self, noise: float) -> FloatArray:
        if self.cell_noise is None:
            return np.full(self.observed.size, float(noise))
        return noise * self.cell_noise[self.observed]

    def factorize(
        self,
        kernel: Any,
        noise: float,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> DenseFactorization:
        """Factorise ``K_oo + D_oo``: exact LML and (optionally) its gradient."""
        del need_lml  # the log-determinant comes with the factor
        grams = kernel.factor_grams(self.coords, eval_gradient=eval_gradient)
        mats = [g for g, _ in grams] if eval_gradient else list(grams)
        blocks = [m[np.ix_(i, i)] for m, i in zip(mats, self.index)]
        k_oo = np.prod(blocks, axis=0)
        d = self._noise(noise)
        c = k_oo + np.diag(d)
        try:
            chol = scipy.linalg.cho_factor(c, lower=True)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "the observed cells' covariance is not positive definite; "
                "increase noise."
            ) from None
        y = self.y[self.observed]
        alpha = scipy.linalg.cho_solve(chol, y)
        logdet = 2.0 * float(np.sum(np.log(np.diag(chol[0]))))
        lml = -0.5 * float(y @ alpha) - 0.5 * logdet
        lml -= 0.5 * y.size * _budgets.LOG_2PI
        grad = None
        if eval_gradient:
            grad = self._gradient(chol, alpha, blocks, grams, d, noise_free)
        info = SolverInfo("dense", int(self.y.size - self.observed.size))
        return DenseFactorization(self, chol, alpha, float(noise), lml, grad, info)

    def _gradient(  # noqa: PLR0917 - the factor's pieces
        self,
        chol: tuple[FloatArray, bool],
        alpha: FloatArray,
        blocks: list[FloatArray],
        grams: list[tuple[FloatArray, FloatArray]],
        d: FloatArray,
        noise_free: bool,
    ) -> FloatArray:
        """``1/2 tr((a a^T - C^{-1}) dC)`` for every log-hyperparameter."""
        w = np.outer(alpha, alpha) - scipy.linalg.cho_solve(chol, np.eye(alpha.size))
        parts = []
        for j, ((_, dg), i) in enumerate(zip(grams, self.index)):
            rest = np.ones_like(w)
            for e, b in enumerate(blocks):
                if e != j:
                    rest = rest * b
            for p in range(dg.shape[2]):
                dk = dg[:, :, p][np.ix_(i, i)] * rest
                parts.append(0.5 * float(np.sum(w * dk)))
        if noise_free:
            parts.append(0.5 * float(np.sum(np.diag(w) * d)))
        return np.asarray(parts)


@dataclass
class DenseFactorization(Factorization):
    """The dense route at fixed hyperparameters."""

    route: DenseRoute
    chol: tuple[FloatArray, bool]
    alpha_obs: FloatArray
    noise: float
    lml: float
    grad: FloatArray | None
    info: SolverInfo

    def alpha(self) -> FloatArray:
        """Return ``(K + noise)^{-1} y`` on the training grid (zero where missing)."""
        out = np.zeros(self.route.y.size)
        out[self.route.observed] = self.alpha_obs
        return out

    def _cross(self, kernel: Any, parts: list[FloatArray]) -> FloatArray:
        """``k(points, observed cells)``, shape (M, n_o)."""
        out = np.ones((parts[0].shape[0], self.route.observed.size))
        for k, p, c, i in zip(
            kernel.kernels, parts, self.route.coords, self.route.index
        ):
            out *= k(p, c)[:, i]
        return out

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variances (``std``) or covariance (``cov``) at points."""
        cross = self._cross(kernel, parts)
        mean = cross @ self.alpha_obs
        if not (std or cov):
            return mean, None
        v = scipy.linalg.solve_triangular(self.chol[0], cross.T, lower=True)
        if cov:
            prior_cov = np.ones((mean.size, mean.size))
            for k, p in zip(kernel.kernels, parts):
                prior_cov = prior_cov * k(p)
            return mean, prior_cov - v.T @ v
        prior = np.ones(mean.size)
        for k, p in zip(kernel.kernels, parts):
            prior = prior * k.diag(p)
        return mean, np.maximum(prior - np.sum(v * v, axis=0), 0.0)

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variance on a test grid, in chunks of cells."""
        n_o = self.route.observed.size
        step = max(1, _budgets.CHUNK_ENTRIES // max(2 * n_o, 1))
        means, variances = [], []
        for lo in range(0, test.size, step):
            cells = np.arange(lo, min(test.size, lo + step))
            idx = np.unravel_index(cells, test.shape)
            parts = [c[i] for c, i in zip(test.coords, idx)]
            mean, var = self.predict_points(kernel, parts, std=std, cov=False)
            means.append(mean)
            variances.append(var)
        mean = np.concatenate(means)
        return mean, np.concatenate(variances) if std else None  # type: ignore[arg-type]

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Posterior samples by Matheron's rule on the union of the axes."""
        route = self.route
        union, idx_train, idx_test = union_axes(route.coords, test.coords)
        shape = tuple(u.shape[0] for u in union)
        f = prior_grid_samples(kernel.factor_grams(union), n_samples, rng)
        f = f.reshape(*shape, n_samples)
        obs_idx = tuple(t[i] for t, i in zip(idx_train, route.index))
        f_obs = f[obs_idx]  # (n_o, n_samples)
        f_test = f[np.ix_(*idx_test, np.arange(n_samples))].reshape(-1, n_samples)
        d = route._noise(self.noise)
        eps = np.sqrt(d)[:, None] * rng.standard_normal(f_obs.shape)
        resid = route.y[route.observed][:, None] - f_obs - eps
        weights = scipy.linalg.cho_solve(self.chol, resid)
        out = np.empty_like(f_test)
        step = max(1, _budgets.CHUNK_ENTRIES // max(route.observed.size, 1))
        for lo in range(0, test.size, step):
            cells = np.arange(lo, min(test.size, lo + step))
            idx = np.unravel_index(cells, test.shape)
            parts = [c[i] for c, i in zip(test.coords, idx)]
            out[cells] = f_test[cells] + self._cross(kernel, parts) @ weights
        return out


def dense_flops(n_observed: int, n_theta: int) -> float:
    """Return the dense route's flops of one LML + gradient (``n_o^3`` terms)."""
    n = float(n_observed)
    return n**3 / 3.0 + n**3 + (n_theta + 1) * 2.0 * n * n


def dense_bytes(n_observed: int) -> float:
    """Return the dense route's memory: a few ``n_o x n_o`` arrays."""
    return 8.0 * 4.0 * float(n_observed) ** 2
