r"""KroneckerGP on a grid with one long Markov axis, solved by Kalman filtering.

The grid's covariance is :math:`K_{rest} \otimes K_t + sI` after moving the
state-space axis ``t`` last; :math:`K_{rest} = \bigotimes_e K_e` is rotated
away with its factors' eigendecompositions, leaving
:math:`S = \prod_e n_e` independent series solved exactly by the functions in
:mod:`kronecker_gp.solvers._kalman_series` in :math:`O(S n_t d^3)`.

The space gradient needs the full rotated matrix :math:`G` (not only its
diagonal), because the eigenvectors move with the space hyperparameters: for
factor ``e``, :math:`\partial L / \partial \theta = \sum_{ij} (\partial K_e)_{ij}
(U_e \Gamma_e U_e^T)_{ij}` with :math:`\Gamma_e` the contraction of :math:`G`
over the other factors' axes weighted by their eigenvalues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp._typing import BoolArray, FloatArray, IntArray
from kronecker_gp.linalg import kron_eigh, kron_matvec, kron_outer
from kronecker_gp.linalg._identities import face_split_rows
from kronecker_gp.solvers._kalman_cell_noise import (
    CellNoiseSeries,
    cell_noise_correction,
    cell_noise_lml,
    cell_noise_samples,
)
from kronecker_gp.solvers._kalman_factorization import KalmanFactorization
from kronecker_gp.solvers._kalman_missing import (
    SeriesOperator,
    SSMSchurSystem,
    ssm_missing_lml,
)
from kronecker_gp.solvers._kalman_missing_predict import (
    covariance_correction,
    matheron_samples,
    variance_correction,
)
from kronecker_gp.solvers._kalman_series import (
    ssm_grid_moments,
    ssm_log_marginal_likelihood,
    ssm_predict,
    ssm_sample,
    ssm_solve,
)
from kronecker_gp.solvers._protocol import SolverInfo


def _project(v: Sequence[FloatArray], time_major: FloatArray) -> FloatArray:
    """Return ``kron(v) @ time_major.T``, shape (M_space, m), C order.

    One space factor: one GEMM with the transposed operand (no copy).
    """
    if len(v) == 1:
        return np.asarray(v[0] @ time_major.T)
    return kron_matvec(v, time_major.T)


def _project_runs(v: Sequence[FloatArray], time_major: FloatArray) -> FloatArray:
    """:func:`_project` computed once per run of equal consecutive rows.

    On a regular axis the smoother's ``gamma`` is the same at every step of
    its frozen interior (the steps copy one row), so the product runs on
    the few distinct rows and the columns are repeated: one GEMM of
    :math:`M S r` for ``r`` runs instead of :math:`M S m`.
    """
    m = int(time_major.shape[0])
    if m < 3:
        return _project(v, time_major)
    starts = np.concatenate([[True], np.any(time_major[1:] != time_major[:-1], axis=1)])
    if 2 * int(np.count_nonzero(starts)) > m:
        return _project(v, time_major)
    run = np.cumsum(starts) - 1
    return _project(v, time_major[starts])[:, run]


def contract_space_gradient(
    g: FloatArray, eigvals: Sequence[FloatArray], e: int
) -> FloatArray:
    """Contract the rotated ``(S, S)`` gradient matrix onto factor ``e``.

    Returns ``Gamma_e[i, j] = sum_rest G[(.., i, ..), (.., j, ..)] prod w_f``
    over the other factors' (diagonal) indices.
    """
    shape = [w.size for w in eigvals]
    letters = [chr(ord("a") + f) for f in range(len(shape))]
    cols = list(letters)
    cols[e] = "z"
    subs = ["".join(letters) + "".join(cols)]
    ops: list[FloatArray] = [g.reshape(*shape, *shape)]
    for f, w in enumerate(eigvals):
        if f != e:
            subs.append(letters[f])
            ops.append(w)
    return np.asarray(np.einsum(",".join(subs) + "->" + letters[e] + "z", *ops))


@dataclass
class SSMState:
    """What prediction needs after a state-space fit."""

    eigvals: list[FloatArray]
    eigvecs: list[FloatArray]
    y_rot: FloatArray
    weights: FloatArray
    noise: float
    system: SSMSchurSystem | None = None
    info: SolverInfo | None = None
    cell: CellNoiseSeries | None = None


@dataclass
class StateSpaceRoute:
    """Targets on a grid whose axis ``axis`` is solved by Kalman filtering.

    Parameters
    ----------
    axis : int
        The state-space axis.
    times : ndarray of shape (n_t,)
        Its sorted coordinates.
    y : ndarray of shape grid shape
        Targets (normalised), zero on missing cells.
    missing : ndarray of bool of the grid shape or None
        Missing cells (solved through the Schur complement of
        :mod:`kronecker_gp.solvers._kalman_missing`); None for a complete grid.
    method : {"auto", "exact", "cg"}
        Missing-cell solver (see
        :class:`~kronecker_gp.solvers._kalman_missing.SSMSchurSystem`).
    tol, max_iter : float, int
        CG settings.
    n_probes : int
        Probes of the stochastic estimates (CG path).
    seed : int
        Seed of the probes (the estimated objective is deterministic).
    cell_noise : ndarray of the grid shape or None
        Known per-cell noise variances (scaled by the fitted noise), solved by
        :mod:`kronecker_gp.solvers._kalman_cell_noise`; complete grids only.
    """

    axis: int
    times: FloatArray
    y: FloatArray
    missing: BoolArray | None = None
    method: str = "auto"
    tol: float = 1e-10
    max_iter: int = 2000
    n_probes: int = 32
    seed: int = 0
    cell_noise: FloatArray | None = None
    coords: list[FloatArray] = field(default_factory=list)
    _cells: tuple[IntArray, IntArray] | None = field(default=None, repr=False)

    def factorize(
        self,
        kernel: Any,
        noise: float,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> KalmanFactorization:
        """Factorise at the kernel's hyperparameters on the training grid."""
        kernel_t = kernel.kernels[self.axis]
        grams = [
            k(c, eval_gradient=eval_gradient)
            for d, (k, c) in enumerate(zip(kernel.kernels, self.coords))
            if d != self.axis
        ]
        if eval_gradient:
            lml, parts, state = self.lml(
                [k for k, _ in grams],
                kernel_t,
                noise,
                [g for _, g in grams],
                noise_free=noise_free,
            )
            grad = np.concatenate(parts) if parts else np.zeros(0)
        else:
            lml, _, state = self.lml(grams, kernel_t, noise, need_lml=need_lml)
            grad = None
        info = state.info or SolverInfo("state-space", 0, extra={"axis": self.axis})
        info.extra["n_series"] = state.weights.size
        return KalmanFactorization(self, state, kernel_t, float(lml), grad, info)

    def __post_init__(self) -> None:
        if self.missing is not None and self.missing.any():
            moved = np.moveaxis(self.missing, self.axis, -1).reshape(
                -1, self.times.size
            )
            s_idx, t_idx = np.nonzero(moved)
            self._cells = (s_idx.astype(np.intp), t_idx.astype(np.intp))

    def _series(self) -> FloatArray:
        """Return the targets as (S, n_t), the state-space axis last."""
        return np.moveaxis(self.y, self.axis, -1).reshape(-1, self.times.size)

    def space_eigen(self, space_grams: Sequence[FloatArray], noise: float) -> SSMState:
        """Eigendecompose the other factors and rotate the targets.

        With missing cells the rotated data are set later (to the padded
        ``U^T r`` of :func:`~kronecker_gp.solvers._kalman_missing.ssm_missing_lml`).
        """
        if space_grams:
            ws, us = kron_eigh(space_grams)
        else:
            ws, us = [np.ones(1)], [np.ones((1, 1))]
        y_rot = (
            kron_matvec([u.T for u in us], self._series())
            if self._cells is None
            else np.empty((0, 0))
        )
        return SSMState(ws, us, y_rot, kron_outer(ws), float(noise))

    def lml(
        self,
        space_grams: Sequence[FloatArray],
        kernel_t: Kernel,
        noise: float,
        space_grad_grams: Sequence[FloatArray] | None = None,
        *,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> tuple[float, list[FloatArray] | None, SSMState]:
        """Return the exact LML, per-factor gradients (axis order) and the state.

        The gradient list holds one array per grid axis (the state-space axis
        included), then the log-noise entry if ``noise_free``. With missing
        cells the LML and gradient are those of the observed cells (exact on
        the exact path, estimated on the CG path; see ``state.info``).
        """
        state = self.space_eigen(space_grams, noise)
        want = space_grad_grams is not None
        args = (kernel_t, self.times, state.y_rot, state.weights, noise)
        if self.cell_noise is not None:
            lml, grad = self._cell_noise_lml(state, kernel_t, noise, want, need_lml)
        elif self._cells is None:
            if not want:
                return float(ssm_log_marginal_likelihood(*args)), None, state  # type: ignore[arg-type]
            lml, g = ssm_log_marginal_likelihood(*args, eval_gradient=True)  # type: ignore[misc]
            grad = (g.theta, g.space, g.log_noise)
        else:
            op = SeriesOperator(
                kernel_t, self.times, state.eigvecs, state.weights, float(noise)
            )
            system = SSMSchurSystem(
                op,
                *self._cells,
                method=self.method,
                tol=self.tol,
                max_iter=self.max_iter,
                n_probes=self.n_probes,
            )
            fit = ssm_missing_lml(
                system,
                self._series(),
                n_probes=self.n_probes,
                rng=np.random.default_rng(self.seed),
                eval_gradient=want,
                need_lml=need_lml,
            )
            lml, grad = fit.lml, fit.gradient  # type: ignore[assignment]
            state.y_rot, state.system = fit.r_rot, system
            state.info = SolverInfo(
                f"state-space-schur-{system.method}",
                system.n_missing,
                iterations=system.iterations,
                residual=system.residual,
                lml_std_error=fit.std_error,
                extra={
                    "axis": self.axis,
                    "lanczos_steps": fit.lanczos_steps,
                    **system.choice.as_dict(),
                },
            )
        if not want:
            return float(lml), None, state
        assert space_grad_grams is not None and grad is not None
        theta, space, log_noise = grad
        parts = self._axis_parts(np.asarray(theta), space, state, space_grad_grams)
        if noise_free:
            parts.append(np.array([log_noise]))
        return float(lml), parts, state

    def _cell_noise_lml(
        self,
        state: SSMState,
        kernel_t: Kernel,
        noise: float,
        want: bool,
        need_lml: bool,
    ) -> tuple[float, tuple[FloatArray, FloatArray, float] | None]:
        """Per-cell noise: estimated LML and gradient (last entry: log noise scale)."""
        assert self.cell_noise is not None
        d = np.moveaxis(noise * self.cell_noise, self.axis, -1)
        d = d.reshape(-1, self.times.size)
        s_bar = float(d.min())
        op = SeriesOperator(kernel_t, self.times, state.eigvecs, state.weights, s_bar)
        system = CellNoiseSeries(op, d, tol=self.tol, max_iter=self.max_iter)
        fit = cell_noise_lml(
            system,
            self._series(),
            n_probes=self.n_probes,
            rng=np.random.default_rng(self.seed),
            eval_gradient=want,
            need_lml=need_lml,
        )
        state.y_rot, state.noise, state.cell = fit.data_rot, s_bar, system
        state.info = SolverInfo(
            "state-space-cell-noise-cg",
            0,
            iterations=system.iterations,
            residual=system.residual,
            lml_std_error=fit.std_error,
            extra={"axis": self.axis},
        )
        return fit.lml, fit.gradient

    def _axis_parts(
        self,
        theta: FloatArray,
        space: FloatArray,
        state: SSMState,
        space_grad_grams: Sequence[FloatArray],
    ) -> list[FloatArray]:
        """Per-axis gradients from the time part and the rotated space matrix."""
        parts: list[FloatArray] = []
        rest = iter(range(len(space_grad_grams)))
        for d in range(len(space_grad_grams) + 1):
            if d == self.axis:
                parts.append(theta)
                continue
            e = next(rest)
            dk = space_grad_grams[e]
            if dk.shape[2] == 0:
                parts.append(np.zeros(0))
                continue
            gamma = contract_space_gradient(space, state.eigvals, e)
            u = state.eigvecs[e]
            parts.append(np.einsum("ijp,ij->p", dk, u @ gamma @ u.T))
        return parts

    def alpha(self, state: SSMState, kernel_t: Kernel) -> FloatArray:
        """Return ``(K + sI)^{-1} y`` in grid (C) order."""
        a_rot = ssm_solve(kernel_t, self.times, state.weights, state.noise, state.y_rot)
        a = kron_matvec(state.eigvecs, a_rot)
        shape = list(self.y.shape)
        moved = shape[: self.axis] + shape[self.axis + 1 :] + [shape[self.axis]]
        return np.moveaxis(a.reshape(moved), -1, self.axis).reshape(-1)

    def predict_grid(  # noqa: PLR0917 - mirrors predict_points plus the shape
        self,
        state: SSMState,
        kernel_t: Kernel,
        space_cross: Sequence[FloatArray | None],
        space_prior_diag: FloatArray | None,
        test_times: FloatArray,
        test_shape: tuple[int, ...],
    ) -> tuple[FloatArray, FloatArray | None]:
        """Mean (and variance) on a test grid, in the test grid's axis order.

        A ``None`` in ``space_cross`` marks an axis at the training
        coordinates, whose rotated cross-covariance :math:`K_e U_e = U_e W_e`
        needs no product; test times equal to the training times add no
        steps to the filter's timeline. Without a variance only the adjoint
        pass runs (no covariance smoother).
        """
        same_t = test_times.shape == self.times.shape and np.array_equal(
            test_times, self.times
        )
        args = (kernel_t, self.times, state.y_rot, state.weights, state.noise)
        v = [
            u * w if c is None else c @ u
            for c, u, w in zip(space_cross, state.eigvecs, state.eigvals)
        ] or [np.ones((1, 1))]
        beta, gamma = ssm_grid_moments(
            *args,
            pred_times=None if same_t else test_times,
            variance=space_prior_diag is not None,
        )
        mean = _project(v, beta)
        var = None
        if space_prior_diag is not None:
            assert gamma is not None
            k_tt = kernel_t.diag(test_times[:, None])
            var = np.multiply.outer(space_prior_diag, k_tt)
            var -= _project_runs([x * x for x in v], gamma)
            if state.system is not None or state.cell is not None:
                n_space = int(np.prod([x.shape[0] for x in v]))

                def project(beta: FloatArray) -> FloatArray:
                    s, m_t, k = beta.shape
                    out = kron_matvec(v, beta.reshape(s, m_t * k))
                    return out.reshape(n_space * m_t, k)

                def k_columns() -> FloatArray:
                    rows = np.asarray(v[0], dtype=np.float64)  # (M_space, S)
                    for x in v[1:]:  # rows of the Kronecker product of the axes
                        rows = np.asarray(np.kron(rows, x), dtype=np.float64)
                    k_t = kernel_t(self.times[:, None], test_times[:, None])
                    cols = np.einsum("ji,tu->itju", rows, k_t)
                    return cols.reshape(rows.shape[1], self.times.size, -1)

                var = var + self._correction(
                    state, project, var.size, test_times, k_columns
                ).reshape(var.shape)
            np.maximum(var, 0.0, out=var)
        return self._to_grid(mean, test_shape), (
            None if var is None else self._to_grid(var, test_shape)
        )

    def _correction(  # noqa: PLR0917 - the two corrections' shared inputs
        self,
        state: SSMState,
        project: object,
        n_test: int,
        times: FloatArray,
        k_columns: object,
    ) -> FloatArray:
        """Missing-cell or per-cell-noise variance correction.

        Exact while the test points' covariance columns hold at most 2^24
        entries, else seeded Monte Carlo (relative standard error
        ``sqrt(2 / n_probes)`` on the correction). ``k_columns()`` returns the
        rotated cross-covariance columns (S, n_t, n_test).
        """
        rng = np.random.default_rng(self.seed)
        if state.cell is not None:
            return cell_noise_correction(
                state.cell,
                project,
                k_columns,
                n_test,
                times,
                n_samples=self.n_probes,
                rng=rng,
            )
        assert state.system is not None
        return variance_correction(
            state.system,
            project,
            n_test,
            times,
            n_samples=self.n_probes,
            rng=rng,
        )

    def _to_grid(self, series: FloatArray, shape: tuple[int, ...]) -> FloatArray:
        moved = (
            list(shape[: self.axis]) + list(shape[self.axis + 1 :]) + [shape[self.axis]]
        )
        return np.moveaxis(series.reshape(moved), -1, self.axis)

    def predict_points(
        self,
        state: SSMState,
        kernel_t: Kernel,
        space_cross: Sequence[FloatArray],
        space_prior_diag: FloatArray | None,
        times: FloatArray,
    ) -> tuple[FloatArray, FloatArray | None]:
        """Mean (and variance) at scattered points ``(x_i, t_i)``."""
        uniq, inv = np.unique(times, return_inverse=True)
        pred = ssm_predict(
            kernel_t,
            self.times,
            state.y_rot,
            state.weights,
            state.noise,
            pred_times=uniq,
        )
        v = [c @ u for c, u in zip(space_cross, state.eigvecs)]
        rows = face_split_rows(v) if v else np.ones((times.size, 1))  # (M, S)
        mean = np.sum(rows * pred.beta[:, inv].T, axis=1)
        if space_prior_diag is None:
            return mean, None
        k_tt = kernel_t.diag(times[:, None])
        var = space_prior_diag * k_tt - np.sum(rows**2 * pred.gamma[:, inv].T, axis=1)
        if state.system is not None or state.cell is not None:

            def project(beta: FloatArray) -> FloatArray:
                k = beta.shape[2]
                out = np.empty((times.size, k))
                step = max(1, 2**22 // (rows.shape[1] * k))
                for lo in range(0, times.size, step):
                    sl = slice(lo, lo + step)
                    picked = beta[:, inv[sl], :]  # (S, c, k)
                    out[sl] = np.einsum("ps,spk->pk", rows[sl], picked)
                return out

            def k_columns() -> FloatArray:
                k_t = kernel_t(self.times[:, None], times[:, None])  # (n_t, M)
                return rows.T[:, None, :] * k_t[None, :, :]

            var = var + self._correction(state, project, times.size, uniq, k_columns)
        return mean, np.maximum(var, 0.0)

    @staticmethod
    def check_cov_size(n_pts: int, n_cells: int) -> None:
        """Refuse a covariance whose solves would hold more than 2^26 entries."""
        if n_pts * n_cells > 2**26:
            raise ValueError(
                f"return_cov on the state-space route needs {n_pts} x {n_cells} "
                "entries; ask for fewer points (or return_std, which is exact at "
                "any number of points)."
            )

    def covariance_points(  # noqa: PLR0917 - mirrors predict_points
        self,
        state: SSMState,
        kernel_t: Kernel,
        space_cross: Sequence[FloatArray],
        space_prior: FloatArray,
        times: FloatArray,
    ) -> FloatArray:
        r"""Posterior covariance at scattered points ``(x_i, t_i)`` (few points).

        :math:`k(X_*, X_*) - K_{*x} P K_{x*}` (plus the missing-cell term
        :math:`G^T P_{mm}^{-1} G`): column ``b`` of :math:`P K_{x*}` is one
        Kalman solve per rotated series with data :math:`V_{b i} k_t(t, t_b)`,
        so the cost is :math:`O(M N d^2)` and the memory :math:`O(M N)` for
        ``M`` points; ``space_prior`` is :math:`k_s(X_*, X_*)` over the other
        axes (ones without them).
        """
        op = SeriesOperator(
            kernel_t, self.times, state.eigvecs, state.weights, state.noise
        )
        n_pts = times.size
        self.check_cov_size(n_pts, op.n_series * self.times.size)
        v = [c @ u for c, u in zip(space_cross, state.eigvecs)]
        rows = face_split_rows(v) if v else np.ones((n_pts, 1))  # (M, S)
        uniq, inv = np.unique(times, return_inverse=True)
        k_t = kernel_t(self.times[:, None], times[:, None])  # (n_t, M)
        b_rot = rows.T[:, None, :] * k_t[None, :, :]  # (S, n_t, M)
        beta = op.cross_mean(b_rot, uniq)  # (S, n_uniq, M)

        def project(b: FloatArray) -> FloatArray:
            return np.einsum("ps,spk->pk", rows, b[:, inv, :])

        reduction = project(beta)
        prior = space_prior * kernel_t(times[:, None])
        cov = prior - 0.5 * (reduction + reduction.T)
        if state.system is not None:
            cov = cov + covariance_correction(state.system, project, n_pts, uniq)
        if state.cell is not None:
            cov = cov + state.cell.exact_covariance(op.unrotate(b_rot))
        return np.asarray(cov)

    def sample_grid(
        self,
        state: SSMState,
        kernel_t: Kernel,
        test_times: FloatArray,
        n_samples: int,
        rng: np.random.Generator,
    ) -> FloatArray:
        """Posterior samples at the training sites and ``test_times``."""
        if state.system is not None or state.cell is not None:
            if state.cell is not None:
                draws = cell_noise_samples(
                    state.cell, self._series(), test_times, n_samples, rng
                )
            else:
                assert state.system is not None
                draws = matheron_samples(
                    state.system, self._series(), test_times, n_samples, rng
                )
            shape = list(self.y.shape)
            shape[self.axis] = test_times.size
            moved = (
                shape[: self.axis]
                + shape[self.axis + 1 :]
                + [
                    test_times.size,
                    n_samples,
                ]
            )
            return np.moveaxis(draws.reshape(moved), -2, self.axis)
        draws = ssm_sample(
            kernel_t,
            self.times,
            state.y_rot,
            state.weights,
            state.noise,
            pred_times=test_times,
            n_samples=n_samples,
            random_state=rng,
        )  # (S, m, n)
        s, m, n = draws.shape
        full = kron_matvec(state.eigvecs, draws.reshape(s, m * n)).reshape(s, m, n)
        shape = list(self.y.shape)
        shape[self.axis] = m
        moved = shape[: self.axis] + shape[self.axis + 1 :] + [m, n]
        return np.moveaxis(full.reshape(moved), -2, self.axis)
