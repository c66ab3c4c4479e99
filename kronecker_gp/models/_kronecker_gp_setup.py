"""KroneckerGP's configuration helpers (a mixin): axes, kernels, checks, solver.

Turns the constructor parameters into the fitted objects: which columns
form each axis, the product kernel, parameter validation, target
normalisation and the grid solver with its per-cell noise.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.models._contract import safe_normalisation
from kronecker_gp.models._optimize import check_optimizer_params
from kronecker_gp.solvers._eigen import GridSolver


class SetupMixin:
    """Configuration helpers of :class:`KroneckerGP`."""

    kernels: Any
    axes: Any
    noise: Any
    noise_bounds: Any
    optimizer: Any
    n_restarts_optimizer: int
    normalize_y: bool
    random_state: Any
    solver: str
    cg_tol: float
    cg_max_iter: int
    n_probes: int
    y_train_mean_: float
    y_train_std_: float

    def _resolve_axes(self, n_features: int) -> list[list[int]]:
        if self.axes is not None:
            return [
                [int(a)] if isinstance(a, numbers.Integral) else list(a)
                for a in self.axes
            ]
        if self.kernels is None:
            return [list(range(n_features))]
        if isinstance(self.kernels, KroneckerKernel):
            return self.kernels.resolved_axes
        n_k = len(self.kernels)
        if n_k == 1:
            return [list(range(n_features))]
        if n_k != n_features:
            raise ValueError(
                f"{n_k} kernels but X has {n_features} columns; pass axes=[[...], ...] "
                "to say which columns each kernel uses."
            )
        return [[j] for j in range(n_features)]

    def _build_kernel(self, axes: list[list[int]]) -> KroneckerKernel:
        if self.kernels is None:
            return KroneckerKernel([ConstantKernel(1.0) * RBF(1.0)], axes=axes)
        if isinstance(self.kernels, KroneckerKernel):
            return clone(self.kernels).set_params(axes=axes)
        if isinstance(self.kernels, Kernel) or not isinstance(self.kernels, Sequence):
            raise TypeError(
                "kernels must be a list of scikit-learn kernels (one per axis), a "
                f"KroneckerKernel or None; got {type(self.kernels).__name__}."
            )
        return KroneckerKernel([clone(k) for k in self.kernels], axes=axes)

    def _check_params(self, kernel: KroneckerKernel, n_axes: int) -> None:
        if len(kernel.kernels) != n_axes:
            raise ValueError(
                f"kernels has {len(kernel.kernels)} entries but the grid has {n_axes} "
                "axes; give one kernel per axis."
            )
        noise = self.noise
        if not np.isscalar(noise):
            return self._check_optimizer_params()
        if (
            isinstance(noise, bool)
            or not isinstance(noise, numbers.Real)
            or not (np.isfinite(noise) and noise > 0)
        ):
            raise ValueError(f"noise must be a positive finite number; got {noise!r}.")
        self._check_optimizer_params()

    def _check_optimizer_params(self) -> None:
        check_optimizer_params(self.optimizer, self.n_restarts_optimizer)

    def _normalisation(self, y: FloatArray) -> tuple[float, float]:
        if not self.normalize_y:
            return 0.0, 1.0
        return safe_normalisation(y)  # NaN cells ignored, no overflow

    def _make_solver(
        self, y: FloatArray, cell_noise: FloatArray | None = None
    ) -> GridSolver:
        missing = np.flatnonzero(np.isnan(y))
        if missing.size == y.size:
            raise ValueError("Y has no observed cell; nothing to fit.")
        if cell_noise is not None:
            cell_noise = self._check_cell_noise(cell_noise, missing)
        y = np.where(np.isnan(y), 0.0, (y - self.y_train_mean_) / self.y_train_std_)
        if self.solver not in ("auto", "exact", "cg"):
            raise ValueError(
                f'solver must be "auto", "exact" or "cg"; got {self.solver!r}.'
            )
        seed = (
            self.random_state if isinstance(self.random_state, numbers.Integral) else 0
        )
        return GridSolver(
            y,
            missing if missing.size else None,
            method=self.solver,
            tol=float(self.cg_tol),
            max_iter=int(self.cg_max_iter),
            n_probes=int(self.n_probes),
            seed=int(seed),
            cell_noise=cell_noise,
        )

    def _check_cell_noise(self, v: FloatArray, missing: IntArray) -> FloatArray:
        # values on missing cells carry no information: accept NaN or anything
        v = v.copy()
        v[missing] = np.nan
        seen = v[~np.isnan(v)]
        n_nan = v.size - missing.size - seen.size
        if n_nan or np.any(seen <= 0):
            raise ValueError(
                "noise given per cell must be positive and finite on every observed "
                f"cell; got min {float(seen.min(initial=np.inf))!r} and {n_nan} NaN on "
                "observed cells. Give NaN (or any value) only where Y is NaN."
            )
        return v / self.y_train_std_**2
