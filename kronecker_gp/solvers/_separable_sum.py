r"""The separable-sum route: :math:`\sum_r \bigotimes_d K^r_d + sI` on a grid.

A :class:`~kronecker_gp.kernels.SeparableSum` kernel (e.g. a regional day
effect plus a local field) has no Kronecker eigenbasis. Two methods
(formulas in :mod:`kronecker_gp.solvers._separable_sum_math`):

==============================  ============================================
``solver_info_.path``           when
==============================  ============================================
``separable-sum-woodbury``      complete grid, every term but one has
                                low-rank factors: exact LML, gradient,
                                predictions. *Collapsed* form (one
                                low-rank term of rank one on all axes but
                                one, e.g. ``ConstantKernel`` on space: a
                                regional effect): :math:`O(\sum_d n_d^3 +
                                N \sum_d n_d)`, as one product kernel.
                                *General* form: rank product ``P`` with
                                ``N P`` within ``WOODBURY_MAX_ENTRIES``
                                and the flops within
                                ``EXACT_FLOPS_BUDGET``
``separable-sum-woodbury-schur``  the same with ``n_m`` missing cells: exact,
                                through the Schur complement of the
                                complete-grid inverse (``n_m`` solves;
                                ``N n_m`` and its flops within the same
                                budgets)
``separable-sum-cg``            otherwise (any number of terms, any ``D``,
                                missing cells): CG to ``cg_tol`` for the
                                weights and predictions; LML by stochastic
                                Lanczos quadrature and gradient by
                                Hutchinson, with standard errors in
                                ``solver_info_``
==============================  ============================================

Why not the generalised eigenbasis of ``C (x) R + S (x) O``
(:mod:`kronecker_gp.solvers._multitask`)? That algebra is exact for two
Kronecker terms with ``S, O`` positive definite, i.e. when the iid noise
is absorbed in one term: :math:`K^2 + sI` must itself be a Kronecker
product, which holds only when all of that term's factors but one are
multiples of the identity. A scikit-learn kernel that is the identity on a
grid axis (``WhiteKernel``) keys on rows, not cells, so no ``SeparableSum``
term has that form; two general terms plus iid noise have no Kronecker
eigenbasis, and the exact route is the Woodbury one above.

Predictive variances are exact for the Woodbury route and, on the CG route,
one CG solve per test point (chunked), exact to ``cg_tol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray
from kronecker_gp.kernels import SeparableSum
from kronecker_gp.linalg import face_split_matvec, factor_eigh, kron_matvec, kron_outer
from kronecker_gp.linalg._identities import face_split_rows
from kronecker_gp.linalg._separable_sum import (
    Factor,
    LowRank,
    WoodburyGrid,
    low_rank_factor,
    woodbury_grid,
)
from kronecker_gp.linalg._whitening import (
    inverse_sqrt_noise,
    noise_vectors,
    observed_log_noise,
    whiten_factors,
)
from kronecker_gp.linalg._woodbury_collapsed import (
    CollapsedWoodbury,
    collapsed_woodbury,
)
from kronecker_gp.solvers._posterior import prior_grid_samples, union_axes
from kronecker_gp.solvers._protocol import Factorization, SolverInfo
from kronecker_gp.solvers._separable_sum_kalman import (
    KalmanChoice,
    kalman_choice,
    kalman_fit,
)
from kronecker_gp.solvers._separable_sum_math import (
    SumSystem,
    TraceProbes,
    missing_schur,
    pcg_gradient,
    pcg_logdet,
    pcg_noise_axes_gradient,
    woodbury_gradient,
    woodbury_noise_gradient,
)

#: Largest grid cells x low-rank columns (``N P``) the Woodbury route holds
#: (256 MB of float64); above it the CG route is taken.
WOODBURY_MAX_ENTRIES = 2**25


@dataclass(frozen=True)
class WoodburyPlan:
    """Which exact Woodbury form applies, and its pieces.

    ``axis`` is the one axis of full rank of the single low-rank term
    (collapsed form), or None (general form, ``others`` every other term).
    """

    base: int
    eig: list[tuple[FloatArray, FloatArray]]
    others: list[list[FloatArray]]
    axis: int | None


def schur_fits(
    shape: tuple[int, ...], n_terms: int, n_missing: int, method: str
) -> bool:
    """Whether the Schur complement on ``n_missing`` cells is within its budgets."""
    n = int(np.prod(shape))
    work = 2.0 * n_missing * n * sum(shape) * n_terms
    return n * n_missing <= WOODBURY_MAX_ENTRIES and (
        method != "auto" or work <= _budgets.EXACT_FLOPS_BUDGET
    )


def _woodbury_plan(
    grams: list[list[FloatArray]], method: str, n_missing: int
) -> WoodburyPlan | None:
    """Return the exact Woodbury plan, or None where it does not apply or fit."""
    if method == "cg":
        return None
    n = int(np.prod([k.shape[0] for k in grams[0]]))
    shape = tuple(k.shape[0] for k in grams[0])
    if n_missing and not schur_fits(shape, len(grams), n_missing, method):
        return None  # n_m complete-grid solves for the Schur complement
    eig: dict[tuple[int, int], tuple[FloatArray, FloatArray]] = {}
    factors = []
    for r, term in enumerate(grams):
        row = []
        for d, k in enumerate(term):
            if k.size and k.flat[0] >= 0 and np.all(k == k.flat[0]):
                # a constant factor (ConstantKernel): its root, no eigh
                row.append(np.full((k.shape[0], 1), np.sqrt(k.flat[0])))
                continue
            eig[r, d] = factor_eigh(k, f"term {r} factor {d}")
            row.append(low_rank_factor(*eig[r, d]))
        factors.append(row)
    ranks = [int(np.prod([f.shape[1] for f in term])) for term in factors]
    base = int(np.argmax(ranks))
    base_eig = [
        eig[base, d] if (base, d) in eig else factor_eigh(k, f"term {base} factor {d}")
        for d, k in enumerate(grams[base])
    ]
    others = [f for r, f in enumerate(factors) if r != base]
    if len(others) == 1:
        full = [d for d, f in enumerate(others[0]) if f.shape[1] > 1]
        if len(full) <= 1:  # rank one off one axis: the collapsed form
            return WoodburyPlan(base, base_eig, others, full[0] if full else 0)
    p = sum(ranks) - ranks[base]
    flops = 2.0 * p * n * sum(k.shape[0] for k in grams[0]) * len(grams)
    if n * p > WOODBURY_MAX_ENTRIES or (
        method == "auto" and flops > _budgets.EXACT_FLOPS_BUDGET
    ):
        return None
    return WoodburyPlan(base, base_eig, others, None)


def _rotated_terms(
    plan: WoodburyPlan, wb: WoodburyGrid | CollapsedWoodbury, n_terms: int
) -> list[list[Factor]]:
    """Each term's factors in the base eigenbasis: diagonal (base) or low rank."""
    out: list[list[Factor]] = []
    others = iter(plan.others)
    for r in range(n_terms):
        if r == plan.base:
            out.append(list(wb.eigvals))
        elif isinstance(wb, CollapsedWoodbury):
            out.append(
                [
                    LowRank(wb.we) if d == wb.axis else LowRank(w[:, None])
                    for d, w in enumerate(wb.w)
                ]
            )
        else:
            factors = next(others)
            out.append([LowRank(q.T @ f) for q, f in zip(wb.eigvecs, factors)])
    return out


@dataclass(frozen=True)
class SeparableSumRoute:
    """Data, grid and settings of a separable-sum fit (see the module).

    Attributes
    ----------
    y : ndarray of shape (N,)
        Targets in C order, zero on missing cells.
    observed : ndarray of bool, shape (N,)
        Observed cells.
    coords : list of ndarray
        The training grid's per-axis coordinates.
    method, tol, max_iter, n_probes, seed
        As :class:`~kronecker_gp.solvers.SolverOptions`.
    kalman : KalmanChoice or None
        The Markov axis of the Kalman method and its costs, where it applies.
    noise_axes : tuple of int or None
        The axes the noise variance varies along (the estimator's
        ``noise_axes``): ``factorize`` then takes ``noise`` as one variance
        vector per listed axis, the noise of a cell their product.
    """

    y: FloatArray
    observed: Any
    coords: list[FloatArray]
    method: str = "auto"
    tol: float = 1e-10
    max_iter: int = 2000
    n_probes: int = 32
    seed: int = 0
    cell_noise: None = field(default=None)
    kalman: KalmanChoice | None = None
    noise_axes: tuple[int, ...] | None = None

    def factorize(
        self,
        kernel: SeparableSum,
        noise: Any,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> SeparableSumFactorization:
        """Return the factorisation at these hyperparameters (exact where it can).

        With ``noise_axes`` the noise is whitened into every term's factors
        (:math:`D^{-1/2} K^r_d D^{-1/2}` per axis, Rakitsch et al. 2013) for
        the Woodbury method, or given per cell to the Kalman method; the
        gradient ends with each noise axis' log-variances.
        """
        variances = None
        if self.noise_axes is not None:
            shape = tuple(len(c) for c in self.coords)
            variances = noise_vectors(shape, self.noise_axes, noise)
        if self.kalman is not None and self.kalman.preferred(self.observed):
            return self._kalman(kernel, noise, eval_gradient, noise_free, variances)
        pairs = kernel.term_grams(self.coords, eval_gradient=eval_gradient)
        grams = [[g for g, _ in t] for t in pairs] if eval_gradient else pairs
        dgrams = [[dg for _, dg in t] for t in pairs] if eval_gradient else None
        if variances is not None:  # whitened: noise 1
            grams = [whiten_factors(t, variances) for t in grams]
            if dgrams is not None:
                dgrams = [whiten_factors(t, variances) for t in dgrams]
        missing = np.flatnonzero(~np.asarray(self.observed))
        plan = _woodbury_plan(grams, self.method, missing.size)
        if plan is None and self.kalman is not None and self.method != "cg":
            return self._kalman(kernel, noise, eval_gradient, noise_free, variances)
        if plan is None and self.method == "exact":
            raise ValueError(
                'solver="exact" with a SeparableSum needs all terms but one with '
                "low-rank factors (e.g. ConstantKernel on an axis), within "
                f"{WOODBURY_MAX_ENTRIES} entries of grid cells x (rank or missing "
                f"cells); here {missing.size} missing cells of {self.y.size}. "
                'Use solver="auto" (preconditioned CG).'
            )
        if plan is not None:
            return self._woodbury(plan, grams, dgrams, noise, noise_free, variances)
        return self._pcg(grams, dgrams, noise, noise_free, need_lml, variances)

    def _kalman(  # noqa: PLR0913, PLR0917
        self,
        kernel: SeparableSum,
        noise: Any,
        eval_gradient: bool,
        noise_free: bool,
        variances: list[FloatArray] | None = None,
    ) -> SeparableSumFactorization:
        """Filter along the Markov axis: exact LML, gradient and weights."""
        kalman = self.kalman
        assert kalman is not None
        res = kalman_fit(
            kernel,
            self.coords,
            self.y,
            self.observed,
            kalman.axis,
            noise if variances is None else kron_outer(variances),
            eval_gradient=eval_gradient,
            noise_free=noise_free,
            noise_axes=self.noise_axes,
        )
        info = SolverInfo("separable-sum-kalman", int(np.sum(~self.observed)))
        info.extra.update(
            kalman_axis=kalman.axis,
            state_dim=kalman.state,
            kalman_flops=kalman.flops,
            schur_flops=kalman.schur_flops,
        )
        scalar = 1.0 if variances is not None else float(noise)
        return SeparableSumFactorization(
            self, res.alpha, res.solve, scalar, res.lml, res.grad, info, None, variances
        )

    def _woodbury(  # noqa: PLR0913, PLR0917
        self,
        plan: Any,
        grams: list[list[FloatArray]],
        dgrams: Any,
        noise: Any,
        noise_free: bool,
        variances: list[FloatArray] | None = None,
    ) -> SeparableSumFactorization:
        """Solve by the Woodbury identity (whitened by ``variances``, noise 1)."""
        scale = None if variances is None else inverse_sqrt_noise(variances)
        noise = 1.0 if variances is not None else float(noise)
        y = self.y if scale is None else self.y * scale
        wb: WoodburyGrid | CollapsedWoodbury
        if plan.axis is None:
            wb = woodbury_grid(plan.eig, plan.others, noise)
            rank, form = int(wb.f.shape[1]), "general"
        else:
            wb = collapsed_woodbury(plan.eig, plan.others[0], plan.axis, noise)
            rank, form = int(wb.we.shape[1]), f"collapsed on axis {plan.axis}"
        missing = np.flatnonzero(~np.asarray(self.observed))
        schur = missing_schur(wb, missing) if missing.size else None
        y_rot = wb.rot(y)
        alpha_rot = wb.solve_rot(y_rot[:, None])[:, 0]
        logdet = wb.logdet()
        if schur is not None:
            alpha_rot = alpha_rot - schur.correct_rot(y_rot)
            logdet += schur.logdet()
        lml = -0.5 * float(y_rot @ alpha_rot) - 0.5 * logdet
        lml -= 0.5 * (self.y.size - missing.size) * _budgets.LOG_2PI
        if variances is not None:
            lml -= 0.5 * observed_log_noise(variances, missing)
        o = np.asarray(self.observed, dtype=float)[:, None]
        grad = None
        if dgrams is not None:
            rotated = _rotated_terms(plan, wb, len(grams))
            iid = noise_free and variances is None
            grad = woodbury_gradient(
                wb, grams, dgrams, alpha_rot, noise, iid, schur, rotated
            )
            if noise_free and self.noise_axes is not None:
                white = o[:, 0] * wb.unrot(alpha_rot)
                grad = np.concatenate(
                    [grad, woodbury_noise_gradient(wb, white, self.noise_axes, schur)]
                )
        path = "separable-sum-woodbury" + ("-schur" if schur is not None else "")
        info = SolverInfo(path, int(missing.size))
        info.extra.update(base_term=plan.base, woodbury_rank=rank, woodbury_form=form)
        sch = schur

        def white_solve(b: FloatArray) -> FloatArray:
            if sch is None:
                return wb.solve(b)
            b_rot = wb.rot(o * b)
            return o * wb.unrot(wb.solve_rot(b_rot) - sch.correct_rot(b_rot))

        def solve(
            b: FloatArray,
        ) -> FloatArray:  # (K + D)^-1 = D^-1/2 (K~ + I)^-1 D^-1/2
            if scale is None:
                return white_solve(b)
            return scale[:, None] * white_solve(scale[:, None] * b)

        def weights() -> FloatArray:
            alpha = o[:, 0] * wb.unrot(alpha_rot)
            return alpha if scale is None else scale * alpha

        return SeparableSumFactorization(
            self,
            weights,
            solve,
            noise,
            lml,
            grad,
            info,
            wb if schur is None else None,
            variances,
        )

    def _pcg(  # noqa: PLR0913, PLR0917
        self,
        grams: list[list[FloatArray]],
        dgrams: Any,
        noise: Any,
        noise_free: bool,
        need_lml: bool,
        variances: list[FloatArray] | None = None,
    ) -> SeparableSumFactorization:
        """Solve by CG (whitened by ``variances``, noise 1, when given)."""
        scale = None if variances is None else inverse_sqrt_noise(variances)
        noise = 1.0 if variances is not None else float(noise)
        y = self.y if scale is None else self.y * scale
        system = SumSystem(
            grams, noise, self.observed, tol=self.tol, max_iter=self.max_iter
        )
        alpha = system.solve(y[:, None])[:, 0]
        missing = np.flatnonzero(~np.asarray(self.observed))
        n_missing = int(missing.size)
        info = SolverInfo("separable-sum-cg", n_missing)
        info.extra["preconditioner_weights"] = [w.tolist() for w in system.weights]
        lml, grad = np.nan, None
        if need_lml or dgrams is not None:
            rng = np.random.default_rng(self.seed)
            probes = rng.choice([-1.0, 1.0], size=(self.y.size, self.n_probes))
            steps = min(self.max_iter, _budgets.LANCZOS_STEPS * 20)
            logdet, std, solves, used, how = pcg_logdet(
                system, probes, steps, _budgets.EXACT_FLOPS_BUDGET
            )
            info.extra["logdet_method"] = how
            n_obs = self.y.size - n_missing
            lml = -0.5 * float(y @ alpha) - 0.5 * logdet
            lml -= 0.5 * n_obs * _budgets.LOG_2PI
            if variances is not None:
                lml -= 0.5 * observed_log_noise(variances, missing)
            info.lml_std_error = 0.5 * std
            info.extra["lanczos_steps"] = used
            if dgrams is not None:
                traces = TraceProbes(system, probes, solves)
                iid = noise_free and variances is None
                grad, err = pcg_gradient(system, traces, dgrams, alpha, iid)
                if noise_free and variances is not None:
                    shape = tuple(len(c) for c in self.coords)
                    g_n, e_n = pcg_noise_axes_gradient(
                        system, traces, alpha, shape, self.noise_axes or ()
                    )
                    grad = np.concatenate([grad, g_n])
                    err = np.concatenate([err, e_n])
                info.extra["grad_std_error"] = err
        info.iterations, info.residual = system.iterations, system.residual
        solve = system.solve
        if scale is not None:
            white_solve, sc = system.solve, scale

            def solve(b: FloatArray) -> FloatArray:  # D^-1/2 (K~ + I)^-1 D^-1/2
                return sc[:, None] * white_solve(sc[:, None] * b)

            alpha = sc * alpha
        return SeparableSumFactorization(
            self, alpha, solve, noise, lml, grad, info, None, variances
        )


@dataclass
class SeparableSumFactorization(Factorization):
    """A separable-sum fit at fixed hyperparameters: weights and a solver."""

    route: SeparableSumRoute
    weights: Any  # alpha on the grid, or a function computing it on first use
    solve: Any  # (N, k) -> A_oo^{-1} zero-padded
    noise: float
    lml: float
    grad: FloatArray | None
    info: SolverInfo
    woodbury: WoodburyGrid | CollapsedWoodbury | None = None
    variances: list[FloatArray] | None = None  # per-axis noise (noise_axes)

    @property
    def alpha_grid(self) -> FloatArray:
        """``(K + noise)^{-1} y`` on the training grid, computed on first use."""
        if callable(self.weights):  # the search's evaluations never need it
            self.weights = np.asarray(self.weights())
        return np.asarray(self.weights)

    def alpha(self) -> FloatArray:
        """Return ``(K + noise)^{-1} y`` on the training grid (zero where missing)."""
        return self.alpha_grid

    def _woodbury_grid_variance(self, kernel: Any, test: Grid) -> FloatArray:
        r"""Exact variances on a test grid through the Kronecker structure.

        With :math:`\tilde k_i = Q^T k_i = \sum_r \bigotimes_d R^r_d e_{i_d}`,
        :math:`R^r_d = Q_d^T K^r_d(\text{train}, \text{test})`:
        :math:`k_i^T A^{-1} k_i = \sum_{r r'} (\bigotimes_d R^r_d \odot
        R^{r'}_d)^T g - v_i^T C^{-1} v_i`, :math:`v_i = F^T \tilde k_i`;
        cost :math:`O(R^2 N \max m_d + P N \sum_d m_d + M P^2)`.
        """
        wb = self.woodbury
        assert wb is not None
        cross = kernel.term_cross(test.coords, self.route.coords)
        if self.variances is not None:  # whitened on the training side
            cross = [
                [c / np.sqrt(v)[None, :] for c, v in zip(t, self.variances)]
                for t in cross
            ]
        rot = [[q.T @ c.T for q, c in zip(wb.eigvecs, term)] for term in cross]
        factors = [p.kernels for p in kernel.products()]
        prior = sum(
            kron_outer([k.diag(c) for k, c in zip(t, test.coords)]) for t in factors
        )
        quad = sum(
            kron_matvec([(a * b).T for a, b in zip(ra, rb)], wb.g)
            for ra in rot
            for rb in rot
        )
        corr = wb.low_rank_variance(rot)
        return np.maximum(np.asarray(prior - quad + corr), 0.0)

    def _rows(self, cross: list[list[FloatArray]]) -> FloatArray:
        """Cross-covariance rows ``k(point, grid)`` (M, N), zero on missing cells."""
        rows = sum(face_split_rows(c) for c in cross)
        return np.asarray(rows * np.asarray(self.route.observed, dtype=float))

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and variances (``std``) or covariance (``cov``) at points."""
        coords = self.route.coords
        factors = [p.kernels for p in kernel.products()]
        m = parts[0].shape[0]
        n = self.alpha_grid.size
        step = max(1, _budgets.CHUNK_ENTRIES // (4 * n))
        means, variances = [], []
        for lo in range(0, m, 1 if cov else step):
            chunk = [p[lo : lo + step] for p in parts] if not cov else parts
            cross = [[k(p, c) for k, p, c in zip(t, chunk, coords)] for t in factors]
            mean = sum(face_split_matvec(c, self.alpha_grid) for c in cross)
            means.append(np.asarray(mean))
            if cov:
                rows = self._rows(cross)
                prior = sum(
                    np.prod([k(p) for k, p in zip(t, chunk)], axis=0) for t in factors
                )
                return means[0], np.asarray(prior - rows @ self.solve(rows.T))
            if std:
                rows = self._rows(cross)
                prior = sum(
                    np.prod([k.diag(p) for k, p in zip(t, chunk)], axis=0)
                    for t in factors
                )
                var = prior - np.sum(rows.T * self.solve(rows.T), axis=0)
                variances.append(np.maximum(var, 0.0))
        mean = np.concatenate(means) if means else np.zeros(0)
        return mean, (np.concatenate(variances) if std else None)

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean (Kronecker products) and variance (chunked) on a grid."""
        cross = kernel.term_cross(test.coords, self.route.coords)
        mean = sum(kron_matvec(c, self.alpha_grid) for c in cross)
        if not std:
            return np.asarray(mean), None
        if self.woodbury is not None:
            return np.asarray(mean), self._woodbury_grid_variance(kernel, test)
        idx = np.unravel_index(np.arange(test.size), test.shape)
        parts = [c[i] for c, i in zip(test.coords, idx)]
        return np.asarray(mean), self.predict_points(
            kernel, parts, std=True, cov=False
        )[1]

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Posterior samples by Matheron's rule on the union of the axes."""
        route = self.route
        union, idx_train, idx_test = union_axes(route.coords, test.coords)
        shape = tuple(u.shape[0] for u in union)
        f = sum(prior_grid_samples(g, n_samples, rng) for g in kernel.term_grams(union))
        f = np.asarray(f).reshape(*shape, n_samples)
        all_s = np.arange(n_samples)
        f_train = f[np.ix_(*idx_train, all_s)].reshape(-1, n_samples)
        f_test = f[np.ix_(*idx_test, all_s)].reshape(-1, n_samples)
        sd = np.sqrt(self.noise)
        if self.variances is not None:
            sd = np.sqrt(kron_outer(self.variances))[:, None]
        eps = sd * rng.standard_normal(f_train.shape)
        resid = route.y[:, None] - f_train - eps
        weights = self.solve(resid)  # zero-padded on missing cells
        cross = kernel.term_cross(test.coords, route.coords)
        return np.asarray(f_test + sum(kron_matvec(c, weights) for c in cross))


def separable_sum_route(  # noqa: PLR0913, PLR0917 - data, kernel, settings
    grid: Grid,
    y: FloatArray,
    cell_noise: FloatArray | None,
    options: Any,
    kernel: SeparableSum | None = None,
    state_space: Any = "auto",
    noise_axes: tuple[int, ...] | None = None,
) -> tuple[SeparableSumRoute, str]:
    """Return the route for a ``SeparableSum`` kernel and the reason, or raise.

    With ``kernel`` given and a Markov axis in every term (``state_space``
    as the estimator's), the route may take the Kalman method where it is
    estimated cheaper than the Schur complement on the missing cells.
    """
    if cell_noise is not None:
        raise ValueError(
            "noise given per cell is not supported with a SeparableSum kernel; "
            "pass a scalar noise."
        )
    observed = ~np.isnan(y)
    kalman = None
    if kernel is not None and options.method != "cg":
        n_missing = int(np.sum(~observed))
        kalman = kalman_choice(
            kernel,
            list(grid.coords),
            observed,
            state_space,
            schur_fits=schur_fits(
                grid.shape, kernel.n_terms, n_missing, options.method
            ),
            n_probes=options.n_probes,
        )
    route = SeparableSumRoute(
        np.where(observed, y, 0.0),
        observed,
        list(grid.coords),
        **options.route_kwargs(),
        kalman=kalman,
        noise_axes=noise_axes,
    )
    reason = (
        "a sum of separable kernels: Woodbury on the low-rank terms where exact "
        "and affordable, else CG preconditioned by the nearest Kronecker product"
    )
    if kalman is not None and kalman.preferred(observed):
        reason = kalman.reason(int(np.sum(~observed)))
    return route, reason
