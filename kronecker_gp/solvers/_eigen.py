"""The eigen routes: complete grids, missing cells, per-cell noise.

:class:`GridSolver` holds the data and settings of every route that rotates
the grid by the factors' eigenvectors; its :meth:`GridSolver.factorize`
returns an :class:`EigenFactorization`, which predicts and samples on each of
those routes (complete grid, Schur complement on the missing cells, per-cell
noise, both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp._array_api import device, like, namespace, to_numpy
from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.kernels import SeparableSum
from kronecker_gp.linalg import kron_matvec, kron_outer
from kronecker_gp.linalg._eigenbasis import (
    GridPosterior,
    TraceCorrection,
    factorize,
    grid_eigen,
    grid_moments,
    lml_gradient,
    point_moments,
)
from kronecker_gp.solvers._cell_noise import (
    CellNoiseSystem,
    cell_noise_covariance_correction,
    cell_noise_factorize,
    cell_noise_variance_correction,
)
from kronecker_gp.solvers._cell_noise_missing import (
    ObservedCellNoiseSystem,
    cell_noise_missing_factorize,
    observed_variance_correction,
)
from kronecker_gp.solvers._eigen_missing import (
    SchurSystem,
    covariance_correction,
    missing_factorize,
    variance_correction,
)
from kronecker_gp.solvers._posterior import factor_sqrt, union_axes
from kronecker_gp.solvers._protocol import Factorization, SolverInfo

#: What the array-API path takes, for every error message that refuses an input.
ARRAY_API_SUPPORTED = (
    "with array_api_dispatch, a non-NumPy Y is fitted on a complete grid (no NaN), "
    "one target, scalar iid noise (learned or fixed) and a product kernel (the "
    "eigen route, in Y's namespace)"
)


def array_api_route(
    grid: Grid,
    kernel: Any,
    y: Any,
    *,
    cell_noise: Any,
    noise_axes: Any,
    state_space: Any,
    options: Any,
) -> tuple[GridSolver, str]:
    """Return the eigen route for targets in a non-NumPy namespace, or raise.

    Under scikit-learn's ``array_api_dispatch`` the complete-grid eigen route
    runs in the namespace (and on the device) of ``y``. The other routes run
    on NumPy arrays only; rather than copying a device array to the host,
    they raise.

    Raises
    ------
    ValueError
        For missing cells (NaN), per-cell or per-axis noise, several targets,
        a ``SeparableSum`` kernel, or an axis named for Kalman filtering.
    """
    xp = namespace(y)
    what = f"{type(y).__name__} Y"
    if cell_noise is not None or noise_axes is not None:
        raise ValueError(
            f"per-cell or per-axis noise with a {what}: {ARRAY_API_SUPPORTED}. "
            "Give NumPy arrays for these routes."
        )
    if y.ndim != 1:
        raise ValueError(f"several targets with a {what}: {ARRAY_API_SUPPORTED}.")
    if isinstance(kernel, SeparableSum):
        raise ValueError(
            f"a SeparableSum kernel with a {what}: {ARRAY_API_SUPPORTED}. Give "
            "NumPy arrays for the separable-sum routes."
        )
    if state_space is not None and not isinstance(state_space, str):
        raise ValueError(
            f"state_space={state_space!r} names a Kalman axis, with a {what}: "
            f"{ARRAY_API_SUPPORTED}. Pass state_space=None (or 'auto', which takes "
            "the eigen route for such arrays)."
        )
    if not bool(xp.all(xp.isfinite(y))):
        raise ValueError(
            f"{what} holds NaN or infinite values: missing cells take the "
            f"Schur-complement route, on NumPy arrays only; {ARRAY_API_SUPPORTED}."
        )
    solver = GridSolver(
        y,
        None,
        **options.route_kwargs(),
        coords=list(grid.coords),
    )
    reason = (
        f"a {what} under array_api_dispatch: every axis through its "
        f"eigendecomposition in {xp.__name__}, on {device(y)}, in {y.dtype}"
    )
    return solver, reason


def namespace_info(y: Any) -> dict[str, Any]:
    """Return ``solver_info_.extra`` entries naming a non-NumPy namespace (else {})."""
    xp = namespace(y)
    if xp is np:
        return {}
    info: dict[str, Any] = {
        "namespace": xp.__name__,
        "device": str(device(y)),
        "dtype": str(y.dtype),
    }
    if y.dtype == xp.float32:
        info["accuracy"] = FLOAT32_NOTE
    return info


#: The stated accuracy of the float32 array-API path (tests/test_array_api.py).
FLOAT32_NOTE = (
    "float32 (factor eigendecompositions in float64, grid-sized work in float32): "
    "LML within 1e-5 relative of the float64 value, alpha_ within 1e-4 and the "
    "predicted mean within 1e-3 of their largest magnitude, predicted variances "
    "within 1e-5 of the prior variance, the gradient within 1e-3 of its norm "
    "(so an optimum only to float32's resolution); give float64 arrays for exact "
    "results"
)


@dataclass
class SolveResult:
    """Output of :meth:`GridSolver.solve`."""

    post: GridPosterior
    lml: float
    grad: FloatArray | None
    system: SchurSystem | CellNoiseSystem | None
    info: SolverInfo
    correction: TraceCorrection | None = None


@dataclass
class GridSolver:
    """Targets on a grid (zeros on missing cells) and the settings to solve them.

    Parameters
    ----------
    y : ndarray of shape (N,) or (N, n_targets)
        Targets in C order, zero on missing cells. Several target columns
        (sharing the covariance) are taken on a complete grid with iid noise,
        where one eigendecomposition serves them all.
    missing : ndarray of int or None
        Flat indices of missing cells; None for a complete grid.
    method : {"auto", "exact", "cg"}
        Missing-cell solver (see
        :class:`~kronecker_gp.solvers._eigen_missing.SchurSystem`).
    tol, max_iter : float, int
        CG settings.
    n_probes : int
        Probe vectors for the stochastic estimates on the CG path.
    seed : int
        Seed of the probes: every evaluation uses the same probes, so the
        estimated objective is a deterministic function of theta.
    cell_noise : ndarray of shape (N,) or None
        Known per-cell noise variances ``v``; the noise is then ``noise * v``
        (``noise`` a learned scale). Entries on missing cells are ignored.
    block_axis : int or None
        Axis of the missing-cell block-Jacobi factor on the CG path. None
        until the first CG-path solve chooses it; later solves keep it, so
        the estimated LML is one function of theta during an optimisation.
    """

    y: FloatArray
    missing: IntArray | None
    method: str = "auto"
    tol: float = 1e-10
    max_iter: int = 2000
    n_probes: int = 32
    seed: int = 0
    cell_noise: FloatArray | None = None
    block_axis: int | None = None
    coords: list[FloatArray] = field(default_factory=list)

    def factorize(
        self,
        kernel: Any,
        noise: float,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> EigenFactorization:
        """Factorise at the kernel's hyperparameters on the training grid."""
        if eval_gradient:
            pairs = kernel.factor_grams(self.coords, eval_gradient=True)
            res = self.solve(
                [k for k, _ in pairs],
                noise,
                [g for _, g in pairs],
                noise_free=noise_free,
            )
        else:
            res = self.solve(
                kernel.factor_grams(self.coords),
                noise,
                noise_free=noise_free,
                need_lml=need_lml,
            )
        return EigenFactorization(
            self, res.post, res.system, float(noise), res.lml, res.grad, res.info
        )

    def solve(
        self,
        grams: Sequence[FloatArray],
        noise: float,
        grad_grams: Sequence[FloatArray] | None = None,
        *,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> SolveResult:
        """Factorise, and return weights, LML and (optionally) its gradient."""
        want_grad = grad_grams is not None
        if self.y.ndim == 2 and (
            self.cell_noise is not None or self.missing is not None
        ):
            raise ValueError(
                "several target columns are solved together on a complete grid with "
                "iid noise only; select_solver wraps one route per target otherwise."
            )
        if self.cell_noise is not None and self.missing is not None:
            post, lml, grad, on_obs, info = cell_noise_missing_factorize(
                grams,
                noise * self.cell_noise,
                self.y,
                self.missing,
                grad_grams=grad_grams,
                noise_free=noise_free,
                need_lml=need_lml,
                method=self.method,
                tol=self.tol,
                max_iter=self.max_iter,
                n_probes=self.n_probes,
                rng=np.random.default_rng(self.seed),
            )
            return SolveResult(post, lml, grad, on_obs, info)
        if self.cell_noise is not None:
            post, lml, grad, cells, info = cell_noise_factorize(
                grams,
                noise * self.cell_noise,
                self.y,
                grad_grams=grad_grams,
                noise_free=noise_free,
                need_lml=need_lml,
                tol=self.tol,
                max_iter=self.max_iter,
                n_probes=self.n_probes,
                rng=np.random.default_rng(self.seed),
            )
            return SolveResult(post, lml, grad, cells, info)
        if self.missing is None or self.missing.size == 0:
            post, lml = factorize(grams, noise, self.y)
            grad = (
                lml_gradient(post, grad_grams, noise_free=noise_free)
                if grad_grams is not None
                else None
            )
            info = SolverInfo("complete", 0, extra=namespace_info(self.y))
            return SolveResult(post, lml, grad, None, info)
        post, lml, system, corr, info = missing_factorize(
            grid_eigen(grams, noise),
            self.y,
            self.missing,
            method=self.method,
            tol=self.tol,
            max_iter=self.max_iter,
            n_probes=self.n_probes,
            rng=np.random.default_rng(self.seed),
            eval_gradient=want_grad,
            need_lml=need_lml,
            block_axis=self.block_axis,
        )
        self.block_axis = info.extra.get("block_axis", self.block_axis)
        grad = None
        if grad_grams is not None:
            grad = lml_gradient(
                post, grad_grams, noise_free=noise_free, correction=corr
            )
        return SolveResult(post, lml, grad, system, info, corr)


@dataclass
class EigenFactorization(Factorization):
    """Predictions and samples of the eigen routes at fixed hyperparameters.

    The complete-grid moments come from the eigenbasis; a missing-cell or
    per-cell-noise ``system`` adds its correction to the variances and
    covariances, and replaces the weights of Matheron's rule.
    """

    solver: GridSolver
    post: GridPosterior
    system: SchurSystem | CellNoiseSystem | None
    noise: float
    lml: float
    grad: FloatArray | None
    info: SolverInfo

    def spectrum(self) -> list[FloatArray]:
        """Return the factors' eigenvalues (NumPy arrays, whatever the namespace)."""
        return [to_numpy(w) for w in self.post.eigvals]

    def alpha(self) -> FloatArray:
        """Return ``(K + noise)^{-1} y`` on the training grid (zero where missing)."""
        return self.post.alpha()

    def _rotated(self, cross: list[FloatArray]) -> list[FloatArray]:
        return [c @ u for c, u in zip(cross, self.post.eigvecs)]

    def _cross(self, kernel: Any, coords: Sequence[FloatArray]) -> list[FloatArray]:
        """Return the cross-covariances to the training axes, as the eigenbasis sees.

        The kernels evaluate them in NumPy (they are small); they are moved to
        the factorisation's namespace.
        """
        ref = self.post.inv_lam
        return [
            like(k(t, c), ref)
            for k, t, c in zip(kernel.kernels, coords, self.solver.coords)
        ]

    def _same_axes(self, test: Grid) -> list[bool]:
        """Which test axes equal the training axes (their cross Gram is K_d)."""
        return [
            t.shape == c.shape and np.array_equal(t, c)
            for t, c in zip(test.coords, self.solver.coords)
        ]

    def _train_values(self, f: FloatArray) -> FloatArray:
        """Prior draws at the training cells, as the eigenbasis sees them."""
        return f

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variances (``std``) or covariance (``cov``) at points."""
        kernels = kernel.kernels
        cross = self._cross(kernel, parts)
        prior: FloatArray | None = None
        if cov:
            prior = np.ones((parts[0].shape[0], parts[0].shape[0]))
            for k, p in zip(kernels, parts):
                prior = prior * k(p)
        elif std:
            prior = np.ones(parts[0].shape[0])
            for k, p in zip(kernels, parts):
                prior = prior * k.diag(p)
        if prior is not None:
            prior = like(prior, self.post.inv_lam)
        v = self._rotated(cross)
        mean, second = point_moments(self.post, v, prior, full_cov=cov)
        if self.system is not None and second is not None:
            if cov:
                second = second + self._covariance_correction(v)
            else:
                second = second + self._variance_correction(v, grid=False)
                second = np.maximum(second, 0.0)  # a Monte Carlo correction
        return mean, second

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variance on a test grid (mode products only)."""
        kernels = kernel.kernels
        same = self._same_axes(test)
        # on the training coordinates K_d U_d = U_d diag(w_d): neither the cross
        # Gram (n_d^2 kernel evaluations, on the CPU) nor a GEMM is needed
        need_cross = self.system is not None or not all(same)
        cross: list[Any] = (
            self._cross(kernel, test.coords) if need_cross else [None] * len(same)
        )
        ref = self.post.inv_lam
        prior = None
        if std:
            prior = kron_outer(
                [like(k.diag(t), ref) for k, t in zip(kernels, test.coords)]
            )
        v = [
            u * w if s else c @ u
            for c, u, w, s in zip(cross, self.post.eigvecs, self.post.eigvals, same)
        ]
        mean, var = grid_moments(self.post, v, prior)
        if self.system is not None and var is not None:
            var = var + self._variance_correction(
                self._rotated(cross), grid=True, base=var
            )
            var = np.maximum(var, 0.0)  # a Monte Carlo correction can overshoot
        return mean, var

    def _covariance_correction(self, v: list[FloatArray]) -> FloatArray:
        if isinstance(self.system, CellNoiseSystem):
            return cell_noise_covariance_correction(self.system, v)
        assert self.system is not None
        return covariance_correction(self.system, v)

    def _variance_correction(
        self, v: list[FloatArray], *, grid: bool, base: FloatArray | None = None
    ) -> FloatArray:
        rng = np.random.default_rng(self.solver.seed)
        n_samples = int(self.solver.n_probes)
        if isinstance(self.system, ObservedCellNoiseSystem):
            return observed_variance_correction(
                self.system, v, grid=grid, n_samples=n_samples, rng=rng
            )
        if isinstance(self.system, CellNoiseSystem):
            return cell_noise_variance_correction(
                self.system, v, grid=grid, n_samples=n_samples, rng=rng, base=base
            )
        assert self.system is not None
        return variance_correction(
            self.system, v, grid=grid, n_samples=n_samples, rng=rng
        )

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        r"""Posterior samples on a grid by Matheron's rule.

        :math:`f_* + K_{*x} (K + D)^{-1} (y - f_x - \varepsilon)` with
        :math:`(f_*, f_x)` a joint prior sample on the union of the test and
        training axes (exact, at the cost of a fit on that union grid); with
        missing cells only the observed residuals enter.
        """
        solver = self.solver
        xp, ref = self.post.xp, self.post.inv_lam
        union, idx_train, idx_test = union_axes(solver.coords, test.coords)
        shape = tuple(u.shape[0] for u in union)
        n_targets = 1 if solver.y.ndim == 1 else int(solver.y.shape[1])
        n_draws = n_samples * n_targets  # independent draws for every target
        # the normal draws come from NumPy's generator (the same draws in every
        # namespace) and are moved to the data's
        roots = [like(factor_sqrt(g), ref) for g in kernel.factor_grams(union)]
        z = rng.standard_normal((int(np.prod(shape)), n_draws))
        f = xp.reshape(kron_matvec(roots, like(z, ref)), (*shape, n_draws))
        f_train = self._train_values(
            xp.reshape(_take_axes(f, idx_train), (-1, n_draws))
        )
        f_test = xp.reshape(_take_axes(f, idx_test), (-1, n_draws))
        scale = 1.0 if solver.cell_noise is None else solver.cell_noise[:, None]
        eps = np.sqrt(self.noise * scale) * rng.standard_normal(tuple(f_train.shape))
        # column t * n_samples + s is sample s of target t
        n_train = int(f_train.shape[0])
        y_cols = xp.reshape(solver.y, (n_train, n_targets, 1))
        y_cols = xp.broadcast_to(y_cols, (n_train, n_targets, n_samples))
        resid = xp.reshape(y_cols, (n_train, n_draws)) - f_train - like(eps, ref)
        cross = self._cross(kernel, test.coords)
        if solver.missing is not None:
            resid[solver.missing] = 0.0  # only the observed residuals enter
        resid_rot = self.post.rotate(resid)
        if self.system is None:
            weights = self.post.inv_lam[:, None] * resid_rot
        elif isinstance(self.system, CellNoiseSystem):
            weights = self.system.rot(self.system.solve(resid))
        else:
            weights = self.system.observed_solve_rot(resid_rot)
        draws = f_test + kron_matvec(self._rotated(cross), weights)
        if n_targets == 1 and solver.y.ndim == 1:
            return draws
        return xp.reshape(draws, (-1, n_targets, n_samples))


def _take_axes(f: FloatArray, idx: Sequence[IntArray]) -> FloatArray:
    """Return ``f[np.ix_(*idx, :)]``: the sub-grid at per-axis positions ``idx``."""
    xp = namespace(f)
    for d, i in enumerate(idx):
        f = xp.take(f, i if xp is np else xp.asarray(i, device=device(f)), axis=d)
    return f
