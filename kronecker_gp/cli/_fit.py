"""The model behind ``kronecker-gp fit`` and ``demo``: kernels, search, warnings.

The kernels' length-scale bounds and starting values come from each axis's
spacing and range, so the same data in other units (seconds instead of
days, metres instead of kilometres) give the same fit.
"""

from __future__ import annotations

import re
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray

#: Kernel names accepted by ``--space-kernel`` and ``--time-kernel``.
KERNEL_NAMES = ("rbf", "matern12", "matern32", "matern52")
#: Length-scale bounds as multiples of an axis's smallest spacing and its range.
LOWER_PER_SPACING, UPPER_PER_RANGE = 0.1, 100.0
#: Above this many missing cells the final model keeps the CG path.
EXACT_REFIT_MAX_MISSING = 3000
#: A log-hyperparameter this close to a bound counts as "at the bound".
AT_BOUND_TOL = 1e-3
BOUNDS_HELP = (
    "Length scales are bounded by 0.1 x the axis's smallest spacing (nearest "
    "site distance, shortest time step) and 100 x its range (site diameter, "
    "time span), and start at half the median site distance and five median "
    "time steps, so the fit does not depend on the units."
)


def make_kernel(
    name: str,
    length_scale: float,
    *,
    amplitude: bool = False,
    bounds: tuple[float, float] | None = None,
) -> Any:
    """Return the scikit-learn kernel called ``name`` (see ``KERNEL_NAMES``).

    Parameters
    ----------
    name : {"rbf", "matern12", "matern32", "matern52"}
        Kernel family.
    length_scale : float
        Initial length scale.
    amplitude : bool, default=False
        Multiply by a ``ConstantKernel`` (give one factor the signal variance).
    bounds : pair of float, optional
        Length-scale bounds (scikit-learn's ``(1e-5, 1e5)`` when None).

    Returns
    -------
    sklearn Kernel
        The kernel.

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    """
    from sklearn.gaussian_process.kernels import (  # noqa: PLC0415
        RBF,
        ConstantKernel,
        Matern,
    )

    nus = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}
    box = (1e-5, 1e5) if bounds is None else bounds
    if name == "rbf":
        kernel = RBF(length_scale, length_scale_bounds=box)
    elif name in nus:
        kernel = Matern(length_scale, length_scale_bounds=box, nu=nus[name])
    else:
        raise ValueError(f"unknown kernel {name!r}; choose one of {KERNEL_NAMES}.")
    return ConstantKernel(1.0) * kernel if amplitude else kernel


def axis_scales(points: FloatArray) -> tuple[float, float, float]:
    """Return (smallest spacing, median spacing, range) of 1-D or n-D points.

    For sites the spacing is the nearest-neighbour distance and the range the
    diagonal of their bounding box; the median is over pairwise distances
    (of at most 600 sites, a fixed subsample beyond).
    """
    from scipy.spatial import cKDTree  # noqa: PLC0415
    from scipy.spatial.distance import pdist  # noqa: PLC0415

    pts = np.asarray(points, dtype=np.float64)
    pts = pts.reshape(pts.shape[0], -1)
    nearest = cKDTree(pts).query(pts, k=2)[0][:, 1]
    extent = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
    sub = pts[np.random.default_rng(0).permutation(pts.shape[0])[:600]]
    dist = pdist(sub)
    dist = dist[dist > 0]
    median = float(np.median(dist)) if dist.size else extent
    positive = nearest[nearest > 0]
    smallest = float(positive.min()) if positive.size else extent
    return smallest, median, extent


def default_kernels(
    space_kernel: str, time_kernel: str, sites: FloatArray, times: FloatArray
) -> list[Any]:
    """Return the space and time kernels with data-derived bounds and starts.

    See ``BOUNDS_HELP``. The space kernel carries the signal amplitude.
    """
    kernels: list[Any] = []
    steps = np.diff(np.unique(np.asarray(times, dtype=np.float64)))
    for kind, points, start_per in (
        (space_kernel, sites, 0.5),
        (time_kernel, np.asarray(times).reshape(-1, 1), 5.0),
    ):
        smallest, median, extent = axis_scales(points)
        if kernels:  # time: five median steps, not the median pairwise gap
            median = float(np.median(steps))
        lo, hi = LOWER_PER_SPACING * smallest, UPPER_PER_RANGE * max(extent, smallest)
        start = float(np.clip(start_per * median, lo, hi))
        kernels.append(make_kernel(kind, start, amplitude=not kernels, bounds=(lo, hi)))
    return kernels


def lbfgs_with_progress(
    report: Callable[[int, float], None], maxiter: int = 200
) -> Callable[..., tuple[FloatArray, float]]:
    """Return a ``KroneckerGP`` optimizer that reports each L-BFGS-B iteration.

    Parameters
    ----------
    report : callable
        Called as ``report(iteration, lml)`` after each iteration.
    maxiter : int, default=200
        Iteration cap.

    Returns
    -------
    callable
        ``optimizer(obj_func, initial_theta, bounds) -> (theta, func_min)``.
    """
    import scipy.optimize  # noqa: PLC0415

    def optimizer(
        obj_func: Callable[..., Any], initial_theta: FloatArray, bounds: FloatArray
    ) -> tuple[FloatArray, float]:
        state = {"n": 0, "fun": float("nan")}

        def objective(theta: FloatArray) -> Any:
            value, grad = obj_func(theta)
            state["fun"] = float(value)
            return value, grad

        def callback(xk: FloatArray) -> None:
            # L-BFGS-B calls back after an accepted step; the last evaluation
            # was at that point, so its value is the current LML.
            state["n"] += 1
            report(int(state["n"]), -state["fun"])

        res = scipy.optimize.minimize(
            objective,
            initial_theta,
            method="L-BFGS-B",
            jac=True,
            bounds=bounds,
            callback=callback,
            options={"maxiter": maxiter},
        )
        return np.asarray(res.x, dtype=np.float64), float(res.fun)

    return optimizer


def progress_printer(stream: Any = None) -> Callable[[int, float], None]:
    """Return a reporter printing ``iteration N  log marginal likelihood ...``."""
    t0 = time.perf_counter()

    def report(iteration: int, lml: float) -> None:
        out = sys.stdout if stream is None else stream
        print(
            f"  iteration {iteration:3d}  log marginal likelihood {lml:12.3f}  "
            f"({time.perf_counter() - t0:.1f} s)",
            file=out,
        )
        out.flush()

    return report


def fit_grid_model(
    kernels: list[Any],
    coords: list[FloatArray],
    values: FloatArray,
    report: Callable[[int, float], None],
    *,
    search_solver: str = "auto",
) -> Any:
    """Fit a KroneckerGP with a fast hyperparameter search, then refit exactly.

    Parameters
    ----------
    kernels : list of sklearn Kernel
        Space and time kernels (initial hyperparameters).
    coords : list of ndarray
        ``[sites, times]``.
    values : ndarray of shape (n_sites, n_times)
        Observations, NaN for missing cells.
    report : callable
        Progress reporter ``report(iteration, lml)``.
    search_solver : {"auto", "exact", "cg"}, default="auto"
        Missing-cell solver during the search.

    Returns
    -------
    KroneckerGP
        The fitted model.

    Notes
    -----
    With missing cells and the ``"auto"`` solver, each likelihood step either
    factors the Schur complement exactly (when cheap) or runs CG; the search
    uses CG to ``1e-6`` with 8 stochastic-Lanczos probes, which is accurate
    enough to locate the optimum at a fraction of the default cost. The model
    is then refitted once at the optimum on the exact path (while the number
    of missing cells is at most ``EXACT_REFIT_MAX_MISSING``), which gives the
    exact likelihood and much faster predictive variances.
    """
    from kronecker_gp import KroneckerGP  # noqa: PLC0415

    search = KroneckerGP(
        kernels,
        noise=0.1,
        normalize_y=True,
        optimizer=lbfgs_with_progress(report),
        solver=search_solver,
        cg_tol=1e-6,
        n_probes=8,
        random_state=0,
    ).fit_grid(coords, values)
    info = getattr(search, "solver_info_", None)
    if getattr(info, "path", None) != "schur-cg":
        return search
    if getattr(info, "n_missing", np.inf) > EXACT_REFIT_MAX_MISSING:
        return search
    return KroneckerGP(
        search.kernel_.kernels,
        noise=search.noise_,
        normalize_y=True,
        optimizer=None,
        solver="exact",
    ).fit_grid(coords, values)


def _readable(name: str) -> str:
    axis = {"k0": "space", "k1": "time"}.get(name.split("__", maxsplit=1)[0], "")
    last = name.rsplit("__", maxsplit=1)[-1]
    what = {"constant_value": "signal variance", "length_scale": "length scale"}
    return f"{axis} {what.get(last, last)}".strip()


#: The estimator's own at-a-bound ConvergenceWarning (scikit-learn's wording).
_AT_BOUND = re.compile(r"is close to the specified (lower|upper) bound")


def bound_warnings(gp: Any, bounds_log: FloatArray) -> list[str]:
    """Return one line per fitted hyperparameter that ended at a bound.

    ``bounds_log`` holds the log-bounds of ``gp.theta_`` (the kernel's, then
    the noise's); the noise is in normalised units.
    """
    names = [_readable(h.name) for h in gp.kernel_.hyperparameters if not h.fixed]
    names.append("noise variance (normalised)")
    lines = []
    for name, theta, (lo, hi) in zip(names, gp.theta_, bounds_log):
        for side, bound in (("lower", lo), ("upper", hi)):
            if abs(theta - bound) <= AT_BOUND_TOL:
                lines.append(
                    f"the fitted {name} {np.exp(theta):.4g} ended at its {side} "
                    f"bound {np.exp(bound):.4g}: the data do not pin it down "
                    "(check the units, sentinel values and the kernel choice)"
                )
    return lines


def fit_with_warnings(
    kernels: list[Any],
    coords: list[FloatArray],
    values: FloatArray,
    report: Callable[[int, float], None],
) -> tuple[Any, list[str]]:
    """Fit as :func:`fit_grid_model`; return the model and its warning lines.

    Warnings raised during the fit become one line each (repeats dropped);
    a hyperparameter at a bound adds a line even if nothing warned.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gp = fit_grid_model(kernels, coords, values, report)
    lines: list[str] = []
    for item in caught:
        text = f"{item.category.__name__}: {' '.join(str(item.message).split())}"
        if _AT_BOUND.search(text):
            continue  # said once, in readable names, by bound_warnings below
        if text not in lines:
            lines.append(text)
    noise_log = np.log(np.asarray(gp.noise_bounds, dtype=np.float64))
    lines += bound_warnings(gp, np.vstack([gp.kernel_.bounds, noise_log]))
    return gp, lines
