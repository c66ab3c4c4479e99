r"""The separable-sum Kalman method: missing cells on a Markov time axis, exactly.

When every term of a :class:`~kronecker_gp.kernels.SeparableSum` has a Markov
kernel on one axis (``Matern(nu=0.5 | 1.5 | 2.5)``, times constants, or sums
of these), the whole sum is one linear-Gaussian state-space model along that
axis (:mod:`kronecker_gp.linalg._spacetime_sum`): any missing pattern is exact
at :math:`O(n_t (m N^2 + m^2 N))` for ``m`` sites per step (the product of the
other axes) and ``N`` stacked state dimensions. A term that is constant over
the sites (a regional effect, ``ConstantKernel`` on every other axis) takes
one state site, so "regional day effect + local field" costs what the local
field's own filter costs. The Woodbury-Schur method's cost grows with the
missing cells instead (:math:`O(N n_m \sum_d n_d + N n_m^2)`);
:func:`kalman_choice` compares the two.

The filter gives the exact LML, gradient and weights ``alpha``; its stored
gains give solves with :math:`K_{oo} + sI` for other right-hand sides
(:class:`~kronecker_gp.linalg._spacetime_sum.SumFilterSolve`, :math:`O(n_t m
N)` per column), so predictive variances, covariances and samples are exact
too, by the same route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray
from kronecker_gp.kernels._markov import is_markov_kernel, kernel_to_state_space
from kronecker_gp.linalg import kron_dense
from kronecker_gp.linalg._spacetime_sum import (
    SumTerm,
    sum_filter,
    sum_filter_bytes,
    sum_filter_cost,
)
from kronecker_gp.solvers._spacetime import time_model


def kalman_axis(kernel: Any, coords: list[FloatArray], state_space: Any) -> int | None:
    """Return the axis every term is Markov on (1-D coordinates), or None.

    ``state_space`` is the estimator's parameter: None never, an int that
    axis only, ``"auto"`` the longest such axis.
    """
    if state_space is None:
        return None
    products = kernel.products()
    axes = [
        d
        for d, c in enumerate(coords)
        if np.asarray(c).reshape(len(c), -1).shape[1] == 1
        and all(is_markov_kernel(p.kernels[d]) for p in products)
    ]
    if isinstance(state_space, str):
        return max(axes, key=lambda d: len(coords[d])) if axes else None
    if (
        isinstance(state_space, bool)
        or not isinstance(state_space, (int, np.integer))
        or int(state_space) not in axes
    ):
        raise ValueError(
            f"state_space={state_space!r}: with a SeparableSum the Kalman axis "
            "needs 1-D coordinates and a Markov kernel (Matern(nu=0.5 | 1.5 | "
            "2.5), optionally times ConstantKernel, or sums of these) in every "
            f"term; the axes that qualify here are {axes}. Pass one of them, "
            '"auto" or None.'
        )
    return int(state_space)


def _space_terms(
    kernel: Any, coords: list[FloatArray], axis: int, eval_gradient: bool
) -> list[tuple[FloatArray, FloatArray | None, FloatArray | None]]:
    """Per term: ``(S_r, G_r or None, dS_r)`` over the sites (see the module)."""
    space = [d for d in range(len(coords)) if d != axis]
    out: list[tuple[FloatArray, FloatArray | None, FloatArray | None]] = []
    for p in kernel.products():
        pairs = [p.kernels[d](coords[d], eval_gradient=True) for d in space]
        grams = [np.asarray(k) for k, _ in pairs]
        gram = kron_dense(grams)
        derivs = [
            kron_dense([dk[:, :, j] if i == e else g for i, g in enumerate(grams)])
            for e, (_, dk) in enumerate(pairs)
            for j in range(dk.shape[2])
        ]
        dgram = np.asarray(derivs).reshape(-1, *gram.shape)
        shared = np.all(gram == gram.flat[0]) and all(
            np.all(dg == dg.flat[0]) for dg in dgram
        )
        if shared:  # the same at every site: one state site
            ones = np.ones((gram.shape[0], 1))
            out.append(
                (gram[:1, :1], ones, dgram[:, :1, :1] if eval_gradient else None)
            )
        else:
            out.append((gram, None, dgram if eval_gradient else None))
    return out


def state_size(kernel: Any, coords: list[FloatArray], axis: int) -> int:
    """Return the stacked state's dimension of the sum filter along ``axis``."""
    total = 0
    for (gram, obs, _), p in zip(
        _space_terms(kernel, coords, axis, False), kernel.products()
    ):
        order = kernel_to_state_space(p.kernels[axis]).state_dim
        total += (gram.shape[0] if obs is None else obs.shape[1]) * order
    return total


@dataclass(frozen=True)
class KalmanChoice:
    """The Kalman method's axis and its cost against the other methods.

    Attributes
    ----------
    axis : int
        The Markov axis.
    flops, schur_flops, cg_flops : float
        Estimated flops of one LML + gradient by the filter, the Woodbury-Schur
        complement and CG with stochastic estimates.
    schur_fits : bool
        Whether the Woodbury-Schur method is within its memory and flops
        budgets (else the Woodbury route takes CG).
    state : int
        The stacked state's dimension.
    forced : bool
        The axis was named (``state_space=axis``).
    """

    axis: int
    flops: float
    schur_flops: float
    cg_flops: float
    schur_fits: bool
    state: int
    forced: bool = False

    def preferred(self, observed: Any) -> bool:
        """Whether to filter rather than take the Woodbury (or CG) method.

        Always where the axis was named; with missing cells where the filter
        is estimated cheaper than the Schur complement, or, where that does
        not fit its budgets, where it stays within the exact-flops budget or
        ``EXACT_PREFERENCE`` times the CG method's estimate.
        """
        if self.forced:
            return True
        if np.all(observed):
            return False
        if self.schur_fits:
            return self.flops < self.schur_flops
        return self.flops <= max(
            _budgets.EXACT_FLOPS_BUDGET, _budgets.EXACT_PREFERENCE * self.cg_flops
        )

    def reason(self, n_missing: int) -> str:
        """Say why the filter was taken, with the estimates."""
        other = (
            f"{self.schur_flops:.2g} for the Schur complement"
            if self.schur_fits
            else f"{self.cg_flops:.2g} for CG with estimated LML"
        )
        return (
            f"a sum of separable kernels, Markov along axis {self.axis}, with "
            f"{n_missing} missing cells: one Kalman filter over the {self.state} "
            f"stacked state dimensions, estimated {self.flops:.2g} flops against "
            f"{other}"
        )


def schur_flops(shape: tuple[int, ...], n_terms: int, n_missing: int) -> float:
    r"""Return the Woodbury-Schur method's flops of one LML + gradient (a lower bound).

    Its ``n_m`` complete-grid solves and their gradient contractions cost
    :math:`2 N n_m \sum_d n_d` each (three for the fit, two per term and
    axis for the gradient), the Schur factor's solves :math:`2 N n_m^2`.
    """
    n = float(np.prod(shape))
    passes = 3 + 2 * n_terms * len(shape)
    return 2.0 * n * n_missing * (passes * sum(shape) + n_missing) + n_missing**3 / 3


def cg_flops(shape: tuple[int, ...], n_terms: int, n_probes: int) -> float:
    r"""Return the CG method's flops of one LML + gradient.

    ``1 + n_probes`` right-hand sides, ``CG_ITERATIONS`` iterations each, an
    iteration one product with each term and two rotations of the
    preconditioner: :math:`(2 R + 4) N \sum_d n_d` flops.
    """
    n = float(np.prod(shape))
    per = (2.0 * n_terms + 4.0) * n * sum(shape)
    return (1.0 + n_probes) * _budgets.CG_ITERATIONS * per


def kalman_choice(  # noqa: PLR0913 - the data, kernel and settings
    kernel: Any,
    coords: list[FloatArray],
    observed: Any,
    state_space: Any,
    *,
    schur_fits: bool,
    n_probes: int,
) -> KalmanChoice | None:
    """Return the Kalman method's axis and costs where it applies and fits."""
    axis = kalman_axis(kernel, coords, state_space)
    if axis is None:
        return None
    shape = tuple(len(c) for c in coords)
    n_t = shape[axis]
    n_s = int(np.prod(shape)) // n_t
    state = state_size(kernel, coords, axis)
    memory = sum_filter_bytes(n_s, n_t, state)
    if memory > _budgets.MEMORY_FRACTION * _budgets.available_memory():
        return None
    flops = sum_filter_cost(n_s, n_t, state) + n_t * _budgets.KALMAN_STEP_FLOPS
    n_missing = int(np.sum(~np.asarray(observed)))
    return KalmanChoice(
        axis,
        flops,
        schur_flops(shape, kernel.n_terms, n_missing),
        cg_flops(shape, kernel.n_terms, n_probes),
        schur_fits,
        state,
        forced=not isinstance(state_space, str),
    )


def _series_order(coords: list[FloatArray], axis: int) -> Any:
    return np.argsort(np.asarray(coords[axis]).reshape(-1), kind="stable")


def to_series(x: FloatArray, shape: tuple[int, ...], axis: int, order: Any) -> Any:
    """Return a flat grid vector as ``(n_s, n_t)``, time last and sorted."""
    moved = np.moveaxis(x.reshape(shape), axis, -1).reshape(-1, shape[axis])
    return moved[:, order]


def from_series(x: FloatArray, shape: tuple[int, ...], axis: int, order: Any) -> Any:
    """Inverse of :func:`to_series`: a flat grid vector in C order."""
    out = np.empty_like(x)
    out[:, order] = x
    rest = [n for d, n in enumerate(shape) if d != axis]
    return np.moveaxis(out.reshape(*rest, shape[axis]), -1, axis).reshape(-1)


def _terms(
    kernel: Any, coords: list[FloatArray], axis: int, eval_gradient: bool
) -> list[SumTerm]:
    times = np.asarray(coords[axis]).reshape(-1)
    times = times[_series_order(coords, axis)]
    terms = []
    for (gram, obs, dgram), p in zip(
        _space_terms(kernel, coords, axis, eval_gradient), kernel.products()
    ):
        model = time_model(p.kernels[axis], times, eval_gradient)
        terms.append(
            SumTerm(
                space=gram,
                obs=obs,
                A=model["A"],
                Q=model["Q"],
                P_inf=model["P_inf"],
                h=np.asarray(model["H"]).reshape(-1),
                dspace=dgram,
                dA=model.get("dA"),
                dQ=model.get("dQ"),
                dP_inf=model.get("dP_inf"),
            )
        )
    return terms


def _theta_order(kernel: Any, axis: int, grads: list[Any]) -> FloatArray:
    """Reorder each term's (space, time) gradient to the kernel's theta order."""
    out = []
    for p, (space, time) in zip(kernel.products(), grads):
        lo = 0
        for d, k in enumerate(p.kernels):
            if d == axis:
                out.append(time)
                continue
            n = int(np.size(k.theta))
            out.append(space[lo : lo + n])
            lo += n
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class KalmanResult:
    """The Kalman method at fixed hyperparameters: LML, gradient, weights, solves."""

    lml: float
    grad: FloatArray | None
    alpha: FloatArray
    solve: Callable[[FloatArray], FloatArray]


def kalman_fit(  # noqa: PLR0913, PLR0917 - the route's data and flags
    kernel: Any,
    coords: list[FloatArray],
    y: FloatArray,
    observed: Any,
    axis: int,
    noise: float | FloatArray,
    *,
    eval_gradient: bool,
    noise_free: bool,
    noise_axes: tuple[int, ...] | None = None,
) -> KalmanResult:
    """Return the exact LML, gradient (theta order, then log noise) and weights.

    ``noise`` is a scalar or the per-cell variances (flat, C order); with
    ``noise_axes`` the gradient ends with the log-variances of each listed
    axis' slices (the noise a Kronecker product of per-axis variances)
    instead of the log noise. ``solve`` maps grid columns ``b`` (N, k) to
    :math:`(K_{oo} + D)^{-1} b_o`, zero-padded, by the filter's stored gains.
    """
    shape = tuple(len(c) for c in coords)
    order = _series_order(coords, axis)
    series = to_series(np.where(observed, y, np.nan), shape, axis, order)
    if np.ndim(noise):
        noise = to_series(np.asarray(noise, dtype=float), shape, axis, order)
    terms = _terms(kernel, coords, axis, eval_gradient)
    res = sum_filter(series, terms, noise, eval_gradient=eval_gradient, weights=True)
    assert res.weights is not None and res.solve is not None
    alpha = from_series(res.weights, shape, axis, order)
    grad = None
    if eval_gradient:
        assert res.grads is not None
        grad = _theta_order(kernel, axis, res.grads)
        if noise_free and noise_axes is None:
            grad = np.append(grad, res.noise_grad)
        elif noise_free:
            assert res.noise_cell_grad is not None
            cells = from_series(res.noise_cell_grad, shape, axis, order)
            cells = cells.reshape(shape)
            per_axis = [
                cells.sum(axis=tuple(e for e in range(len(shape)) if e != d))
                for d in noise_axes or ()
            ]
            grad = np.concatenate([grad, *per_axis])
    filter_solve = res.solve

    def solve(b: FloatArray) -> FloatArray:
        cols = [to_series(c, shape, axis, order) for c in np.asarray(b).T]
        out = filter_solve(np.stack(cols, axis=-1))
        return np.column_stack(
            [from_series(out[:, :, j], shape, axis, order) for j in range(b.shape[1])]
        )

    return KalmanResult(res.lml, grad, alpha, solve)
