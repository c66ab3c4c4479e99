"""Baselines of ``kronecker-gp demo``: per-station means and scikit-learn's GPR.

scikit-learn's ``GaussianProcessRegressor`` gets the same product kernel on
the largest random subsample it can fit within a time budget.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.cli._fit import make_kernel

if TYPE_CHECKING:
    from kronecker_gp.cli._demo import DemoSpec, Split

#: Optimiser evaluations assumed when sizing the scikit-learn subsample.
SKLEARN_EVALS = 15


def station_mean_baseline(split: Split) -> tuple[FloatArray, FloatArray]:
    """Predict each cell by its station's training mean (+- station sd).

    The held-out station has no training data and gets the overall training
    mean and sd.
    """
    train = split.train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the empty held-out row
        mean = np.nanmean(train, axis=1)
        sd = np.nanstd(train, axis=1)
    mean[split.station] = np.nanmean(train)
    sd[split.station] = np.nanstd(train)
    shape = train.shape
    return np.broadcast_to(mean[:, None], shape), np.broadcast_to(sd[:, None], shape)


def _time_limited_lbfgs(
    budget: float, info: dict[str, Any]
) -> Callable[..., tuple[FloatArray, float]]:
    """Return a GaussianProcessRegressor optimizer that stops after ``budget`` s.

    ``info`` receives ``evaluations`` and ``stopped`` (True when the budget,
    not convergence, ended the search; the best point so far is returned).
    """
    import scipy.optimize  # noqa: PLC0415

    class _OutOfTime(Exception):
        pass

    def optimizer(
        obj_func: Callable[..., Any], theta0: FloatArray, bounds: FloatArray
    ) -> tuple[FloatArray, float]:
        t0 = time.perf_counter()
        best: dict[str, Any] = {"theta": np.asarray(theta0), "value": np.inf}
        info.update(evaluations=0, stopped=False)

        def objective(theta: FloatArray) -> Any:
            if time.perf_counter() - t0 > budget:
                raise _OutOfTime
            value, grad = obj_func(theta, eval_gradient=True)
            info["evaluations"] += 1
            if value < best["value"]:
                best.update(theta=np.array(theta), value=float(value))
            return value, grad

        try:
            res = scipy.optimize.minimize(
                objective, theta0, method="L-BFGS-B", jac=True, bounds=bounds
            )
            return np.asarray(res.x), float(res.fun)
        except _OutOfTime:
            info["stopped"] = True
            return best["theta"], float(best["value"])

    return optimizer


def _sklearn_kernel(spec: DemoSpec) -> Any:
    from sklearn.gaussian_process.kernels import WhiteKernel  # noqa: PLC0415

    from kronecker_gp.kernels import KroneckerKernel  # noqa: PLC0415

    product = KroneckerKernel(
        [
            make_kernel(spec.space_kernel, spec.space_length, amplitude=True),
            make_kernel(spec.time_kernel, spec.time_length),
        ],
        axes=[[0, 1], [2]],
    )
    return product + WhiteKernel(0.1)


def _eval_seconds(kernel: Any, X: FloatArray, y: FloatArray) -> float:
    """Time one LML-and-gradient evaluation of a GaussianProcessRegressor."""
    from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: PLC0415

    gpr = GaussianProcessRegressor(kernel, optimizer=None, normalize_y=True)
    gpr.fit(X, y)
    t0 = time.perf_counter()
    gpr.log_marginal_likelihood(kernel.theta, eval_gradient=True)
    return time.perf_counter() - t0


def sklearn_subsample_size(
    kernel: Any, X: FloatArray, y: FloatArray, budget: float, rng: np.random.Generator
) -> int:
    """Return the largest subsample size whose fit should take ``budget`` seconds.

    Times one evaluation at 600 and 1,200 rows (after a warm-up), extrapolates
    with the fitted power law (exponent clipped to [2.5, 3]) and assumes
    ``SKLEARN_EVALS`` evaluations.
    """
    sizes = [min(600, X.shape[0]), min(1200, X.shape[0])]
    idx = rng.choice(X.shape[0], size=min(300, X.shape[0]), replace=False)
    _eval_seconds(kernel, X[idx], y[idx])  # warm up BLAS threads and caches
    times = []
    for n in sizes:
        idx = rng.choice(X.shape[0], size=n, replace=False)
        times.append(max(_eval_seconds(kernel, X[idx], y[idx]), 1e-6))
    ratio = sizes[1] / sizes[0]
    power = 3.0 if ratio == 1 else np.log(times[1] / times[0]) / np.log(ratio)
    power = float(np.clip(power, 2.5, 3.0))
    per_eval = budget / SKLEARN_EVALS
    n = sizes[1] * (per_eval / times[1]) ** (1.0 / power)
    return int(np.clip(n, min(50, X.shape[0]), X.shape[0]))


def sklearn_baseline(
    spec: DemoSpec,
    coords: list[FloatArray],
    split: Split,
    budget: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, dict[str, Any]]:
    """Fit GaussianProcessRegressor on a subsample; return mean, sd and run info.

    The info dict holds ``n`` (rows used), ``seconds``, ``evaluations``,
    ``stopped`` (the budget ended the search) and the fitted ``kernel``.
    """
    from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: PLC0415

    sites, times = coords
    s, t = np.nonzero(np.isfinite(split.train))
    X = np.column_stack([sites[s], times[t]])
    y = split.train[s, t]
    kernel = _sklearn_kernel(spec)
    n = sklearn_subsample_size(kernel, X, y, budget, rng)
    idx = rng.choice(X.shape[0], size=n, replace=False)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    gpr = GaussianProcessRegressor(
        kernel, optimizer=_time_limited_lbfgs(budget, info), normalize_y=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpr.fit(X[idx], y[idx])
    for item in caught:  # one line each, like the fit command's warnings
        text = " ".join(str(item.message).split())
        print(f"kronecker-gp: warning: sklearn baseline: {text}", file=sys.stderr)
    mask = np.isfinite(split.data) & ~np.isfinite(split.train)
    ms, mt = np.nonzero(mask)
    mean = np.full(split.data.shape, np.nan)
    sd = np.full(split.data.shape, np.nan)
    mean[ms, mt], sd[ms, mt] = gpr.predict(
        np.column_stack([sites[ms], times[mt]]), return_std=True
    )
    info.update(n=n, seconds=time.perf_counter() - t0, kernel=gpr.kernel_)
    return mean, sd, info
