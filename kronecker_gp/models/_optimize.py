"""Hyperparameter optimisation shared by the estimators."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from kronecker_gp._typing import FloatArray

LmlFunction = Callable[[FloatArray, bool], tuple[float, Any]]


def maximise_lml(
    lml_at: LmlFunction,
    theta0: FloatArray,
    bounds: FloatArray,
    *,
    optimizer: str | Callable[..., Any] | None,
    n_restarts: int,
    random_state: Any,
    verbose: int = 0,
    name: str = "GP",
) -> FloatArray:
    """Maximise a log marginal likelihood over log-hyperparameters.

    As ``GaussianProcessRegressor``: L-BFGS-B (``optimizer="fmin_l_bfgs_b"``)
    or a callable ``optimizer(obj_func, initial_theta, bounds) -> (theta,
    func_min)``, from ``theta0`` and ``n_restarts`` log-uniform starts drawn
    within ``bounds`` with ``random_state``; the best run wins.

    Parameters
    ----------
    lml_at : callable
        ``lml_at(theta, eval_gradient=True) -> (lml, grad)``.
    theta0 : ndarray of shape (n_theta,)
        The first start.
    bounds : ndarray of shape (n_theta, 2)
        Log-space bounds.
    optimizer : "fmin_l_bfgs_b", callable or None
        The optimiser; None returns ``theta0`` unchanged.
    n_restarts : int
        Extra starts.
    random_state : int, RandomState instance or None
        Seeds the extra starts.
    verbose : int, default=0
        Print the LML at every evaluation when positive.
    name : str, default="GP"
        Prefix of the progress lines.

    Returns
    -------
    ndarray of shape (n_theta,)
        The best theta found.

    Raises
    ------
    ValueError
        If restarts are asked for with an infinite bound.
    """
    if optimizer is None:
        return np.asarray(theta0, dtype=float)
    count = [0]

    def obj(theta: FloatArray, eval_gradient: bool = True) -> Any:
        # sklearn's obj_func contract: (value, gradient), or the value alone
        lml, grad = lml_at(np.asarray(theta, dtype=float), eval_gradient)
        count[0] += 1
        if verbose:
            print(f"[{name}] evaluation {count[0]:3d}: LML = {lml:.6f}")
        return (-lml, -np.asarray(grad)) if eval_gradient else -lml

    starts = [np.asarray(theta0, dtype=float)]
    if n_restarts > 0:
        if not np.isfinite(bounds).all():
            raise ValueError(
                "Multiple optimizer restarts (n_restarts_optimizer>0) require "
                "that all bounds are finite."
            )
        rng = check_random_state(random_state)
        starts += [rng.uniform(bounds[:, 0], bounds[:, 1]) for _ in range(n_restarts)]
    best_theta, best_val = starts[0], np.inf
    for start in starts:
        theta, val = _minimise(obj, start, bounds, optimizer)
        if val < best_val:
            best_theta, best_val = theta, val
    return best_theta


def _minimise(
    obj: Callable[..., Any],
    theta0: FloatArray,
    bounds: FloatArray,
    optimizer: str | Callable[..., Any],
) -> tuple[FloatArray, float]:
    if callable(optimizer):
        theta, val = optimizer(obj, theta0, bounds=bounds)
        return np.asarray(theta, dtype=float), float(val)
    start: list[float] = []

    def traced(theta: FloatArray) -> tuple[float, FloatArray]:
        val, grad = obj(theta)
        if not start:
            start.append(_projected_max(theta, np.asarray(grad), bounds))
        return val, grad

    res = scipy.optimize.minimize(
        traced, theta0, method="L-BFGS-B", jac=True, bounds=bounds
    )
    if not res.success:
        final = _projected_max(res.x, np.asarray(res.jac), bounds)
        warnings.warn(
            f"L-BFGS-B stopped without converging ({res.message}) after {res.nit} "
            f"iterations; the largest free gradient entry is {final:.2g} there "
            f"({start[0] if start else float('nan'):.2g} at the start). A line-search "
            "failure close to the optimum is expected when the likelihood is "
            "estimated (solver_info_.lml_std_error > 0); otherwise the "
            "hyperparameters may be off: try other starting values or "
            "n_restarts_optimizer.",
            ConvergenceWarning,
            stacklevel=5,
        )
    return np.asarray(res.x, dtype=float), float(res.fun)


def _projected_max(theta: FloatArray, grad: FloatArray, bounds: FloatArray) -> float:
    """Largest gradient entry of a minimisation that does not push into a bound."""
    g = np.array(grad, dtype=float)
    g[(theta <= bounds[:, 0]) & (g > 0)] = 0.0
    g[(theta >= bounds[:, 1]) & (g < 0)] = 0.0
    return float(np.max(np.abs(g), initial=0.0))


def check_optimizer_params(optimizer: object, n_restarts: object) -> None:
    """Validate ``optimizer`` and ``n_restarts_optimizer`` (clear ``ValueError``)."""
    if not isinstance(n_restarts, numbers.Integral) or n_restarts < 0:
        raise ValueError(
            f"n_restarts_optimizer must be a non-negative integer; got {n_restarts!r}."
        )
    if not (optimizer is None or callable(optimizer) or optimizer == "fmin_l_bfgs_b"):
        raise ValueError(
            f'optimizer must be "fmin_l_bfgs_b", a callable or None; got {optimizer!r}.'
        )


def log_noise_bounds(bounds: object) -> FloatArray | None:
    """Return log-bounds of the noise, or None when the noise is fixed."""
    if isinstance(bounds, str):
        if bounds != "fixed":
            raise ValueError(f'noise_bounds must be a pair or "fixed"; got {bounds!r}.')
        return None
    arr = np.asarray(bounds, dtype=float)
    if arr.shape != (2,) or not np.all(arr > 0) or arr[0] > arr[1]:
        raise ValueError(
            f"noise_bounds must be (low, high) with 0 < low <= high; got {bounds!r}."
        )
    return np.log(arr)
