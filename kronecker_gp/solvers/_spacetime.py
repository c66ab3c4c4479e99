r"""The spatio-temporal Kalman route: missing cells on a Markov time axis, exactly.

With a Markov time kernel the whole field is one linear-Gaussian state-space
model whose state holds every site's time state (Särkkä, Solin and
Hartikainen 2013; the numerics in :mod:`kronecker_gp.linalg._spacetime`).
Each time step observes whichever sites it has, so any missing pattern and
per-cell noise are exact at :math:`O(n_t (n_s d)^3)` for ``n_s`` sites (the
product of the other axes) and state order ``d``: far below the Schur
complement's cost when there are tens to a few hundred sites and many missing
cells. The cost model of :func:`kronecker_gp.solvers.select_solver` picks it.

Likelihood, gradient, means and variances on grids and at points come from
the filter and smoother (new sites by kriging the on-site state, new times
merged into the timeline). The weights ``alpha_``, covariances at points and
samples off the training grid come from the Schur route of the same data
(``fallback``), factorised on first use at the same hyperparameters: exact
too, at that route's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.kernels._markov import kernel_to_state_space
from kronecker_gp.linalg import kron_dense, kron_outer
from kronecker_gp.linalg._identities import face_split_rows
from kronecker_gp.linalg._spacetime import (
    spacetime_krige,
    spacetime_lml,
    spacetime_posterior,
    spacetime_sample,
)
from kronecker_gp.linalg.kalman._model import discretize
from kronecker_gp.solvers._protocol import Factorization, SolverInfo


@dataclass
class SpaceTimeRoute:
    """Data and settings of the spatio-temporal Kalman route.

    Parameters
    ----------
    axis : int
        The time axis (1-D coordinates, Markov kernel), sorted.
    coords : list of ndarray
        Training coordinates of every axis.
    y : ndarray of shape (N,)
        Targets (normalised), NaN on missing cells, C order.
    cell_noise : ndarray of shape (N,) or None
        Known per-cell noise variances (scaled by the fitted noise).
    fallback : GridSolver or StateSpaceRoute
        The Schur route of the same data, for weights, covariances and
        samples off the training grid.
    """

    axis: int
    coords: list[FloatArray]
    y: FloatArray
    cell_noise: FloatArray | None
    fallback: Any
    tol: float = 1e-10
    n_probes: int = 32
    _shape: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        """Record the grid shape."""
        self._shape = tuple(c.shape[0] for c in self.coords)

    @property
    def missing(self) -> IntArray:
        """Flat indices of the missing cells."""
        return np.flatnonzero(np.isnan(self.y))

    @property
    def times(self) -> FloatArray:
        """The time axis' coordinates."""
        return self.coords[self.axis][:, 0]

    def to_series(self, x: FloatArray) -> FloatArray:
        """Return a flat grid vector as ``(n_s, n_t)``, time last."""
        moved = np.moveaxis(x.reshape(self._shape), self.axis, -1)
        return moved.reshape(-1, self._shape[self.axis])

    def from_series(self, x: FloatArray, shape: tuple[int, ...]) -> FloatArray:
        """Inverse of :meth:`to_series` for a grid of ``shape``, flat."""
        rest = [n for d, n in enumerate(shape) if d != self.axis]
        moved = x.reshape(*rest, shape[self.axis])
        return np.moveaxis(moved, -1, self.axis).reshape(-1)

    def noise_cells(self, noise: float) -> FloatArray | float:
        """Noise variances as the filter takes them (a scalar or per cell)."""
        if self.cell_noise is None:
            return float(noise)
        v = np.where(np.isnan(self.cell_noise), 1.0, self.cell_noise)
        return noise * self.to_series(v)

    def factorize(
        self,
        kernel: Any,
        noise: float,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> SpaceTimeFactorization:
        """Factorise at the kernel's hyperparameters: exact LML and gradient."""
        model = time_model(kernel.kernels[self.axis], self.times, eval_gradient)
        space = [d for d in range(len(self.coords)) if d != self.axis]
        grams = [
            kernel.kernels[d](self.coords[d], eval_gradient=eval_gradient)
            for d in space
        ]
        Y, nz = self.to_series(self.y), self.noise_cells(noise)
        info = SolverInfo(
            "spacetime-kalman", int(self.missing.size), extra={"axis": self.axis}
        )
        if not eval_gradient:
            k_s = kron_dense(list(grams))
            # exact and one filter pass: computed here even when not asked
            # for, so that no first read of the LML costs more than the fit
            value = spacetime_lml(Y, k_s, noise=nz, **model)
            assert isinstance(value, float)  # no gradient asked for
            return SpaceTimeFactorization(self, kernel, noise, value, None, info)
        k_s = kron_dense([k for k, _ in grams])
        dk_s = _space_derivatives([k for k, _ in grams], [g for _, g in grams])
        out = spacetime_lml(Y, k_s, noise=nz, eval_gradient=True, dK_s=dk_s, **model)
        assert isinstance(out, tuple)
        lml, grad = out
        grad = _axis_order(grad, [g.shape[2] for _, g in grams], space, self.axis)
        if not noise_free:
            grad = grad[:-1]
        return SpaceTimeFactorization(self, kernel, noise, float(lml), grad, info)


def time_model(kernel_t: Any, times: FloatArray, eval_gradient: bool) -> dict[str, Any]:
    """Return the filter's time model (``A``, ``Q``, ``P_inf``, ``H``, derivatives)."""
    ssm = kernel_to_state_space(kernel_t)
    gaps, inverse = np.unique(np.diff(times), return_inverse=True)
    out = discretize(ssm, gaps, eval_gradient=eval_gradient)
    model: dict[str, Any] = {
        "A": out[0][inverse],
        "Q": out[1][inverse],
        "P_inf": ssm.Pinf,
        "H": ssm.H,
    }
    if eval_gradient:
        model.update(dA=out[2][inverse], dQ=out[3][inverse], dP_inf=ssm.dPinf)
    return model


def _space_derivatives(grams: list[FloatArray], grads: list[FloatArray]) -> FloatArray:
    """Stack ``d K_s / d theta`` for every space factor's log-parameters."""
    n_s = int(np.prod([g.shape[0] for g in grams]))
    out = []
    for j, dg in enumerate(grads):
        for p in range(dg.shape[2]):
            mats = [dg[:, :, p] if i == j else g for i, g in enumerate(grams)]
            out.append(kron_dense(mats))
    return np.asarray(out).reshape(-1, n_s, n_s)


def _axis_order(
    grad: FloatArray, sizes: list[int], space: list[int], axis: int
) -> FloatArray:
    """Reorder ``[space params, time params, log noise]`` to the axes' order."""
    n_space = int(sum(sizes))
    blocks, lo = {}, 0
    for d, n in zip(space, sizes):
        blocks[d] = grad[lo : lo + n]
        lo += n
    blocks[axis] = grad[n_space:-1]
    ordered = [blocks[d] for d in sorted(blocks)]
    return np.concatenate([*ordered, grad[-1:]])


@dataclass
class SpaceTimeFactorization(Factorization):
    """The spatio-temporal route at fixed hyperparameters."""

    route: SpaceTimeRoute
    kernel: Any
    noise: float
    lml: float
    grad: FloatArray | None
    info: SolverInfo
    _fallback: Factorization | None = field(default=None, repr=False)

    def _schur(self) -> Factorization:
        """Return the Schur route's factorisation at these hyperparameters (once)."""
        if self._fallback is None:
            self._fallback = self.route.fallback.factorize(
                self.kernel, self.noise, need_lml=False
            )
        return self._fallback

    def alpha(self) -> FloatArray:
        """Return ``(K + noise)^{-1} y`` (from the Schur route, exact)."""
        return self._schur().alpha()

    def _space_gram(self, kernel: Any) -> FloatArray:
        """Return the space Gram ``K_s`` over the training sites (other axes)."""
        route = self.route
        return kron_dense(
            [
                kernel.kernels[d](route.coords[d])
                for d in range(len(route.coords))
                if d != route.axis
            ]
        )

    def _model(self, kernel: Any, times: FloatArray) -> dict[str, Any]:
        return time_model(kernel.kernels[self.route.axis], times, False)

    def _space_cross(
        self, kernel: Any, test_coords: list[FloatArray]
    ) -> tuple[FloatArray, FloatArray]:
        """Cross Gram (new sites x sites) and prior diagonal of a test space grid."""
        route = self.route
        space = [d for d in range(len(route.coords)) if d != route.axis]
        cross = [kernel.kernels[d](test_coords[d], route.coords[d]) for d in space]
        diag = [kernel.kernels[d].diag(test_coords[d]) for d in space]
        return kron_dense(cross), kron_outer(diag)

    def _moments(
        self,
        kernel: Any,
        times: FloatArray,
        sites: tuple[FloatArray, FloatArray] | None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Posterior on the union timeline: (mean, var, union times)."""
        route = self.route
        union = np.union1d(route.times, times)
        Y = np.full((route.to_series(route.y).shape[0], union.size), np.nan)
        at = np.searchsorted(union, route.times)
        Y[:, at] = route.to_series(route.y)
        nz = route.noise_cells(self.noise)
        if not np.isscalar(nz):
            full = np.ones_like(Y)
            full[:, at] = nz
            nz = full
        model = self._model(kernel, union)
        k_s = self._space_gram(kernel)
        if sites is None:
            mean, var = spacetime_posterior(Y, k_s, noise=nz, **model)
        else:
            mean, var = spacetime_krige(Y, k_s, sites[0], sites[1], noise=nz, **model)
        return mean, var, union

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variance on a test grid (smoother, kriging)."""
        route = self.route
        same_sites = all(
            t.shape == c.shape and np.array_equal(t, c)
            for d, (t, c) in enumerate(zip(test.coords, route.coords))
            if d != route.axis
        )
        sites = None if same_sites else self._space_cross(kernel, test.coords)
        times = test.coords[route.axis][:, 0]
        mean, var, union = self._moments(kernel, times, sites)
        cols = np.searchsorted(union, times)
        mean = route.from_series(mean[:, cols], test.shape)
        if not std:
            return mean, None
        return mean, route.from_series(np.maximum(var[:, cols], 0.0), test.shape)

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variances at points (kriging each point's site)."""
        if cov:
            return self._schur().predict_points(kernel, parts, std=False, cov=True)
        route = self.route
        space = [d for d in range(len(route.coords)) if d != route.axis]
        times = parts[route.axis][:, 0]
        union_size = np.union1d(route.times, times).size
        step = max(1, _budgets.CHUNK_ENTRIES // max(4 * union_size, 1))
        means, variances = [], []
        for lo in range(0, times.size, step):
            sl = slice(lo, lo + step)
            rows = [kernel.kernels[d](parts[d][sl], route.coords[d]) for d in space]
            cross = face_split_rows(rows) if rows else np.ones((len(times[sl]), 1))
            prior = np.ones(cross.shape[0])
            for d in space:
                prior = prior * kernel.kernels[d].diag(parts[d][sl])
            mean, var, union = self._moments(kernel, times[sl], (cross, prior))
            cols = np.searchsorted(union, times[sl])
            pick = np.arange(cols.size)
            means.append(mean[pick, cols])
            variances.append(np.maximum(var[pick, cols], 0.0))
        mean = np.concatenate(means)
        return mean, np.concatenate(variances) if std else None

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Posterior samples: FFBS on the training grid, else the Schur route."""
        route = self.route
        same = all(
            t.shape == c.shape and np.array_equal(t, c)
            for t, c in zip(test.coords, route.coords)
        )
        if not same:
            return self._schur().sample_grid(kernel, test, n_samples, rng)
        k_s = self._space_gram(kernel)
        draws = spacetime_sample(
            route.to_series(route.y),
            k_s,
            noise=route.noise_cells(self.noise),
            n_samples=n_samples,
            random_state=rng,
            **self._model(kernel, route.times),
        )
        draws = np.asarray(draws)  # (n_samples, n_s, n_t)
        out = np.empty((test.size, n_samples))
        for s in range(n_samples):
            out[:, s] = route.from_series(draws[s], test.shape)
        return out
