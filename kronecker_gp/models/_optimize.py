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
#: One free hyperparameter as the warnings name it: (name, n_elements,
#: bounds in natural units of shape (n_elements, 2)).
Label = tuple[str, int, FloatArray]


def kernel_labels(kernel: Any) -> list[Label]:
    """Return the free hyperparameters of a scikit-learn kernel as labels.

    Parameters
    ----------
    kernel : sklearn Kernel
        The kernel whose ``hyperparameters`` (the non-fixed ones, in
        ``theta`` order) are listed.

    Returns
    -------
    list of (str, int, ndarray of shape (n_elements, 2))
        Name, number of entries and bounds (natural units) of each.
    """
    return [
        (h.name, int(h.n_elements), np.reshape(np.asarray(h.bounds, float), (-1, 2)))
        for h in kernel.hyperparameters
        if not h.fixed
    ]


def param_label(name: str, n_elements: int, bounds: object) -> list[Label]:
    """Return the label of a parameter given its bounds as the user wrote them.

    ``bounds`` is a ``(low, high)`` pair (shared by all ``n_elements``
    entries) or ``"fixed"``, which gives no label (no theta entry).
    """
    if isinstance(bounds, str) or n_elements == 0:
        return []
    pair = np.asarray(bounds, dtype=float).reshape(1, 2)
    return [(name, n_elements, np.tile(pair, (n_elements, 1)))]


def _label_rows(labels: list[Label]) -> list[tuple[str, int, FloatArray]]:
    """Flatten labels to one (name, dimension, natural bounds) row per theta entry."""
    return [
        (name, dim, np.asarray(bounds)[dim])
        for name, size, bounds in labels
        for dim in range(size)
    ]


def warn_start_outside_bounds(
    theta0: FloatArray, bounds: FloatArray, labels: list[Label] | None
) -> None:
    """Warn (``UserWarning``) for every start entry outside its bounds.

    L-BFGS-B clips such a start to the nearest bound, so the search then
    begins there; the warning names the hyperparameter, its value and bounds.
    """
    theta0 = np.asarray(theta0, dtype=float)
    outside = (theta0 < bounds[:, 0]) | (theta0 > bounds[:, 1])
    outside &= ~np.isclose(theta0[:, None], bounds).any(axis=1)
    if not outside.any():
        return
    rows = _label_rows(labels) if labels else []
    for i in np.flatnonzero(outside):
        if len(rows) == theta0.size:
            name, dim, nat = rows[i]
            what = f"dimension {dim} of parameter {name}"
            low, high = nat
        else:
            what, (low, high) = f"theta[{i}]", np.exp(bounds[i])
        warnings.warn(
            f"The initial value of {what}, {float(np.exp(theta0[i])):.6g}, is "
            f"outside its bounds [{low}, {high}]; the optimizer starts from the "
            "nearest bound. Give a starting value inside the bounds or widen them.",
            UserWarning,
            stacklevel=4,
        )


def warn_at_bounds(theta: FloatArray, bounds: FloatArray, labels: list[Label]) -> None:
    """Warn (``ConvergenceWarning``) for every optimum close to one of its bounds.

    The test and the wording are scikit-learn's (``np.isclose`` in log space,
    lower bound first), the noise included when it is among ``labels``.
    """
    rows = _label_rows(labels)
    if len(rows) != np.size(theta):
        return
    close = np.isclose(bounds, np.atleast_2d(theta).T)
    for (name, dim, nat), (at_low, at_high) in zip(rows, close):
        if at_low:
            side, bound, verb = "lower", nat[0], "Decreasing"
        elif at_high:
            side, bound, verb = "upper", nat[1], "Increasing"
        else:
            continue
        warnings.warn(
            f"The optimal value found for dimension {dim} of parameter {name} is "
            f"close to the specified {side} bound {bound}. {verb} the bound and "
            "calling fit again may find a better value.",
            ConvergenceWarning,
            stacklevel=4,
        )


def objective(
    lml_at: LmlFunction, verbose: int = 0, name: str = "GP"
) -> Callable[..., Any]:
    """Return scikit-learn's ``obj_func(theta, eval_gradient=True)``.

    ``obj_func(theta)`` returns ``(-lml, -grad)``; with
    ``eval_gradient=False`` only ``-lml``. As in scikit-learn, a
    ``LinAlgError`` (a covariance that is not numerically positive definite
    at ``theta``) gives ``+inf`` (and a zero gradient).
    """
    count = [0]

    def obj_func(theta: FloatArray, eval_gradient: bool = True) -> Any:
        theta = np.asarray(theta, dtype=float)
        try:
            lml, grad = lml_at(theta, bool(eval_gradient))
        except np.linalg.LinAlgError:
            return (np.inf, np.zeros_like(theta)) if eval_gradient else np.inf
        count[0] += 1
        if verbose:
            print(f"[{name}] evaluation {count[0]:3d}: LML = {lml:.6f}")
        if eval_gradient:
            return -float(lml), -np.asarray(grad, dtype=float)
        return -float(lml)

    return obj_func


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
    labels: list[Label] | None = None,
) -> FloatArray:
    """Maximise a log marginal likelihood over log-hyperparameters.

    As ``GaussianProcessRegressor``: L-BFGS-B (``optimizer="fmin_l_bfgs_b"``)
    or a callable ``optimizer(obj_func, initial_theta, bounds) -> (theta,
    func_min)`` where ``obj_func(theta, eval_gradient=True)`` returns the
    negative LML and its gradient (only the value with
    ``eval_gradient=False``), from ``theta0`` and ``n_restarts`` log-uniform
    starts drawn within ``bounds`` with ``random_state``; the best run wins.

    Parameters
    ----------
    lml_at : callable
        ``lml_at(theta, eval_gradient) -> (lml, grad)``.
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
    labels : list of (str, int, ndarray), optional
        Names and natural-unit bounds of the theta entries (see
        :func:`kernel_labels`). Given, a start outside its bounds warns
        (``UserWarning``) and an optimum close to a bound warns
        (``ConvergenceWarning``, scikit-learn's wording) naming the entry.

    Returns
    -------
    ndarray of shape (n_theta,)
        The best theta found.

    Raises
    ------
    ValueError
        If restarts are asked for with an infinite bound.

    Examples
    --------
    >>> import numpy as np
    >>> def lml_at(theta, eval_gradient):
    ...     return -float((theta - 1.0) @ (theta - 1.0)), -2.0 * (theta - 1.0)
    >>> bounds = np.array([[-5.0, 5.0]])
    >>> theta = maximise_lml(lml_at, np.zeros(1), bounds, optimizer="fmin_l_bfgs_b",
    ...                      n_restarts=0, random_state=0)
    >>> np.round(theta, 6).tolist()
    [1.0]
    """
    if optimizer is None:
        return np.asarray(theta0, dtype=float)
    obj = objective(lml_at, verbose, name)
    starts = [np.asarray(theta0, dtype=float)]
    warn_start_outside_bounds(starts[0], bounds, labels)
    if n_restarts > 0:
        if not np.isfinite(bounds).all():
            raise ValueError(
                "Multiple optimizer restarts (n_restarts_optimizer>0) requires "
                "that all bounds are finite."
            )
        rng = check_random_state(random_state)
        starts += [rng.uniform(bounds[:, 0], bounds[:, 1]) for _ in range(n_restarts)]
    best_theta, best_val = starts[0], np.inf
    for start in starts:
        theta, val = _minimise(obj, start, bounds, optimizer)
        if val < best_val:
            best_theta, best_val = theta, val
    if labels is not None:
        warn_at_bounds(best_theta, bounds, labels)
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
