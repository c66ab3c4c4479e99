"""Benchmark every route of the solver layer (issue 11, item 5): the route table.

Rows are (route, size). The problem is the one of ``_common.py`` (sites 2-D
points in ``[0, 10]^2``, times ``0, 1, ...``, ``C * RBF`` over the sites times
a Matern over the times, one exact draw from the model, seeded) with, per
route, the data variant the route is for:

``complete``
    no missing cell, scalar noise (the reference of every row of that shape);
``missing``
    30 % of the cells missing at random (43 x 730: 8.8 % at random plus one
    station out for 60 days, the shape of a daily PM10 record);
``cell``
    known per-cell noise variances ``0.1 * U(0.5, 2)``, no missing cell;
``cell-missing``
    both.

Each route is reached the way ``tests/test_solvers.py`` reaches it
(``state_space``, ``solver``; the per-series Kalman routes keep the cost
model off the spatio-temporal filter; ``spacetime-kalman`` rows force it by
setting its estimated cost to zero, so they also run where the cost model
would not choose it). For each row, with the hyperparameters at the truth:

* ``fit``: ``fit_grid`` with fixed hyperparameters (``optimizer=None``);
* ``lml_read``: the first read of ``log_marginal_likelihood_value_`` after
  that fit (computed lazily where the route estimates it; 0 where exact);
* ``lml_grad``: ``log_marginal_likelihood(theta, eval_gradient=True)``;
* ``predict``: ``predict_grid(coords, return_std=True)`` over the training grid;
* ``opt``: a full L-BFGS-B optimisation from the fixed start of ``_common``
  (the estimator's own search; evaluations counted), where one LML + gradient
  times ``--opt-evals`` is under ``--opt-max`` seconds;

the ratio of each to the ``complete`` row of the same shape, the route the
cost model chooses with default settings (``solver="auto"``,
``state_space="auto"``) on the same data, and whether the LML is exact
(``solver_info_.lml_std_error == 0``). On 60 x 80 with 30 % missing a dense
NumPy GP on the observed cells (Cholesky fit + predictive std over the grid)
is timed too, and its LML is the reference of the exact rows. Real data:
``load_ozone2()`` (its own 495 NaN cells) and ``load_wind()`` (complete;
6,574 days, so the default route is the Kalman one), each with the route the
cost model chooses and the complete-grid route of the same shape (ozone2's
NaN cells filled with the posterior mean for that reference).

Each row runs in its own subprocess (a hard ``--row-timeout``; operations
finished before a timeout are kept). Timings are single-threaded
(``OPENBLAS_NUM_THREADS=1`` unless set): fast operations are the median of
``--repeat`` samples, slow ones (over 1 s) one sample.

Run::

    python benchmarks/bench_routes.py --quick            # < 2 minutes
    python benchmarks/bench_routes.py --out benchmarks/results_routes.json
    python benchmarks/routes_table.py benchmarks/results_routes.json
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import scipy.optimize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (  # noqa: E402 - the helper module sits next to this script
    BOUNDS,
    THETA_START,
    THETA_TRUE,
    _psd_sqrt,
    grid_rows,
    load_average,
    machine_info,
    make_problem,
    measure,
    parse_size,
)
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern  # noqa: E402

from kronecker_gp import KroneckerGP, _budgets, solvers  # noqa: E402
from kronecker_gp.kernels import KroneckerKernel  # noqa: E402
from kronecker_gp.solvers._cost import eigen_solve_flops, schur_costs  # noqa: E402

#: Memory one row may plan for (the brief's machine: 2 cores, ~6 GB for us).
MEMORY_BUDGET = 6 * 2**30

#: route label -> (data variant, estimator settings, cost-model patch);
#: "no-spacetime" keeps the cost model off the spatio-temporal filter,
#: "spacetime" forces it (its estimated cost set to zero).
ROUTES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "complete": ("complete", {"state_space": None}, None),
    "schur-exact": ("missing", {"state_space": None, "solver": "exact"}, None),
    "schur-cg": ("missing", {"state_space": None, "solver": "cg"}, None),
    "cell-noise-cg": ("cell", {"state_space": None}, None),
    "cell-noise-schur": ("cell-missing", {"state_space": None}, None),
    "state-space": ("complete", {"state_space": 1}, None),
    "state-space-schur-exact": (
        "missing",
        {"state_space": 1, "solver": "exact"},
        "no-spacetime",
    ),
    "state-space-schur-cg": ("missing", {"state_space": 1, "solver": "cg"}, None),
    "state-space-cell-noise-cg": ("cell", {"state_space": 1}, "no-spacetime"),
    "spacetime-kalman": ("missing", {"state_space": 1}, "spacetime"),
    "spacetime-kalman-cell": ("cell-missing", {"state_space": "auto"}, "spacetime"),
}

#: (size, time kernel nu, routes) of the synthetic rows; "pm10" is the real
#: record's shape (43 x 730, ~10 % missing, Matern-1/2 time kernel).
FULL_PLAN: list[tuple[str, float, list[str]]] = [
    ("60x80", 1.5, list(ROUTES)),
    ("43x730", 0.5, list(ROUTES)),
    # medium eigen-route grid: the per-series Kalman routes are covered by
    # 43x730 (their exact variants would need 11 GiB here)
    (
        "200x250",
        1.5,
        [
            "complete",
            "schur-exact",
            "schur-cg",
            "cell-noise-cg",
            "cell-noise-schur",
            "state-space",
            "spacetime-kalman",
        ],
    ),
    ("500x500", 1.5, ["complete", "schur-cg", "state-space"]),
]
QUICK_PLAN: list[tuple[str, float, list[str]]] = [
    ("30x40", 1.5, list(ROUTES)),
    ("20x200", 0.5, ["complete", "spacetime-kalman"]),
]


# ------------------------------------------------------------------- problem
#: Bounds of (amplitude, space length, time length, noise): "narrow" are those
#: of ``bench_spacetime.py`` (which measured the issue's PM10 numbers) with the
#: noise from 1e-4; "wide" are ``_common.BOUNDS`` (``bench_missing.py``, the
#: 500 x 500 optimisation of BENCHMARKS.md) with the estimator's noise bounds.
BOUND_SETS = {
    "narrow": ((1e-3, 1e3), (1e-2, 1e3), (1e-1, 1e4), (1e-4, 1e2)),
    "wide": (*BOUNDS[:3], (1e-6, 1e5)),
}


def kernels(theta: np.ndarray, nu: float, bounds: str = "narrow") -> list[Any]:
    """``[C * RBF (sites), Matern-nu (times)]`` at the log-hyperparameters ``theta``."""
    amp, ls, lt = np.exp(theta[:3])
    b = BOUND_SETS[bounds]
    space = ConstantKernel(amp, b[0]) * RBF(ls, b[1])
    return [space, Matern(lt, b[2], nu=nu)]


def draw(n_s: int, n_t: int, nu: float, seed: int = 0) -> tuple[Any, Any, Any]:
    """Sites, times and one exact draw of the model with a Matern-``nu`` time kernel."""
    if nu == 1.5:
        return make_problem(n_s, n_t, seed)
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0.0, 10.0, size=(n_s, 2))
    times = np.arange(n_t, dtype=float)
    k_s, k_t = kernels(THETA_TRUE, nu)
    z = rng.standard_normal((n_s, n_t))
    f = (_psd_sqrt(k_s(sites)) @ z) @ _psd_sqrt(k_t(times[:, None])).T
    noise = float(np.exp(THETA_TRUE[3]))
    return sites, times, f + math.sqrt(noise) * rng.standard_normal(f.shape)


def missing_mask(shape: tuple[int, int], nu: float, seed: int = 1) -> np.ndarray:
    """30 % at random; for a Matern-1/2 (PM10-like) grid 8.8 % + a 60-day outage."""
    rng = np.random.default_rng(seed)
    n_s, n_t = shape
    if nu != 0.5:
        return rng.random(shape) < 0.3
    mask = rng.random(shape) < 0.088
    mask[n_s // 2, n_t // 3 : n_t // 3 + min(60, n_t // 3)] = True
    return mask


def cell_variances(shape: tuple[int, int], seed: int = 2) -> np.ndarray:
    """Known per-cell noise variances ``0.1 * U(0.5, 2)``."""
    return 0.1 * np.random.default_rng(seed).uniform(0.5, 2.0, shape)


def synthetic_data(
    size: str, nu: float, variant: str, bounds: str = "narrow"
) -> dict[str, Any]:
    """Coordinates, targets, noise, kernels and start of one synthetic row."""
    n_s, n_t = parse_size(size)
    sites, times, Y = draw(n_s, n_t, nu)
    noise: Any = float(np.exp(THETA_TRUE[3]))
    if variant in ("missing", "cell-missing"):
        Y = np.where(missing_mask(Y.shape, nu), np.nan, Y)
    if variant in ("cell", "cell-missing"):
        noise = cell_variances(Y.shape)
    return {
        "coords": [sites, times],
        "Y": Y,
        "noise": noise,
        "kernels": kernels(THETA_TRUE, nu, bounds),
        "start": kernels(THETA_START, nu, bounds),
        "noise_bounds": BOUND_SETS[bounds][3],
        "start_noise": float(np.exp(THETA_START[3])) if np.isscalar(noise) else noise,
        "normalize_y": False,
    }


def real_data(name: str, variant: str) -> dict[str, Any]:
    """ozone2 or wind: the data set's own NaN pattern, or the grid filled in."""
    from kronecker_gp import datasets  # noqa: PLC0415

    if name == "ozone2":
        b = datasets.load_ozone2()
        # Matern-1/2 x Matern-1/2 (the demo's kernels); lon/lat in degrees, days
        k = [ConstantKernel(1.0) * Matern(2.0, nu=0.5), Matern(5.0, nu=0.5)]
        start = [ConstantKernel(0.5) * Matern(1.0, nu=0.5), Matern(2.0, nu=0.5)]
        noise, start_noise = 0.1, 0.3
    else:
        b = datasets.load_wind()
        k = [ConstantKernel(1.0) * Matern(2.0, nu=1.5), Matern(3.0, nu=1.5)]
        start = [ConstantKernel(0.5) * Matern(1.0, nu=1.5), Matern(10.0, nu=1.5)]
        noise, start_noise = 0.3, 0.5
    Y = np.array(b.data, dtype=float)
    if variant == "complete" and np.isnan(Y).any():
        # fill the NaN cells with a draw of the fitted model (posterior sample
        # plus noise), so that the complete grid looks like the data
        gp = KroneckerGP(k, noise=noise, normalize_y=True, random_state=0)
        gp.fit_grid(b.coords, Y)
        draw = gp.sample_grid(b.coords, n_samples=1, random_state=0)[..., 0]
        noise_sd = np.sqrt(gp.noise_) * gp.y_train_std_
        draw = draw + noise_sd * np.random.default_rng(0).standard_normal(Y.shape)
        Y = np.where(np.isnan(Y), draw, Y)
    return {
        "coords": list(b.coords),
        "Y": Y,
        "noise": noise,
        "kernels": k,
        "start": start,
        "start_noise": start_noise,
        "normalize_y": True,
    }


# ------------------------------------------------------------------- timing
def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    """Seconds of ``fn`` (median of ``repeat`` if a call is under 1 s) and its value."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    if first >= 1.0 or repeat <= 1:
        return first, out
    return measure(fn, repeat - 1, warmup=False, budget=3.0)["median"], out


class OpTimeout(BaseException):
    """An operation ran past ``--op-timeout`` (a BaseException: not swallowed)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`OpTimeout` in the main thread after ``seconds``.

    The alarm interrupts Python code between bytecodes, so one long BLAS call
    finishes first; the row's process timeout is the hard limit.
    """

    def handler(signum: int, frame: Any) -> None:
        raise OpTimeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class CostPatch:
    """Keep the cost model off the spatio-temporal filter, or force it."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> CostPatch:
        if self.kind == "no-spacetime":  # the structured route, as asked
            for name in ("_spacetime_candidate", "_dense_candidate"):
                self.saved[name] = getattr(solvers, name)
                setattr(solvers, name, lambda *a, **k: None)
        elif self.kind == "spacetime":  # the filter, wherever it applies
            self.saved["spacetime_cost"] = solvers.spacetime_cost
            solvers.spacetime_cost = lambda *a, **k: 0.0
            self.saved["_dense_candidate"] = solvers._dense_candidate
            solvers._dense_candidate = lambda *a, **k: None
            self.saved["ROUTE_SWITCH_FLOPS"] = _budgets.ROUTE_SWITCH_FLOPS
            self.saved["KALMAN_STEP_FLOPS"] = _budgets.KALMAN_STEP_FLOPS
            _budgets.ROUTE_SWITCH_FLOPS = _budgets.KALMAN_STEP_FLOPS = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self.saved.items():
            setattr(_budgets if name.isupper() else solvers, name, value)


def _emit(out: Path, key: str, value: Any) -> None:
    with out.open("a") as fh:
        fh.write(json.dumps({key: value}, default=float) + "\n")


def run_row(spec: dict[str, Any], out: Path) -> None:  # noqa: PLR0915 - one row
    """Time one row (in a worker process), appending each result to ``out``."""
    if spec["data"] == "synthetic":
        data = synthetic_data(spec["size"], spec["nu"], spec["variant"], spec["bounds"])
    else:
        data = real_data(spec["size"], spec["variant"])
    coords, Y = data["coords"], data["Y"]
    settings = dict(spec["settings"])
    if isinstance(settings.get("state_space"), int):
        settings["state_space_min_size"] = 2  # a Kalman time axis at any length
    repeat = spec["repeat"]
    _emit(out, "n_missing", int(np.isnan(Y).sum()))

    def model(start: bool = False, **extra: Any) -> KroneckerGP:
        return KroneckerGP(
            data["start"] if start else data["kernels"],
            noise=data["start_noise"] if start else data["noise"],
            normalize_y=data["normalize_y"],
            noise_bounds=data.get("noise_bounds", (1e-6, 1e5)),
            random_state=0,
            **{"optimizer": None, **settings, **extra},
        )

    if spec.get("do_auto"):
        # the route the cost model picks with default settings on these data
        t0 = time.perf_counter()
        gp = KroneckerGP(
            data["kernels"],
            noise=data["noise"],
            normalize_y=data["normalize_y"],
            optimizer=None,
        ).fit_grid(coords, Y)
        _emit(
            out,
            "auto",
            {
                "path": gp.solver_info_.path,
                "reason": gp.solver_info_.extra.get("route_reason"),
                "method_reason": gp.solver_info_.extra.get("reason"),
                "fit_s": time.perf_counter() - t0,
            },
        )
    if settings.get("solver") == "exact":
        m, shape = int(np.isnan(Y).sum()), Y.shape
        _, _, nbytes = schur_costs(m, Y.size, eigen_solve_flops(shape), 32)
        if nbytes > MEMORY_BUDGET:
            _emit(
                out,
                "skipped",
                f"the exact Schur complement needs {nbytes / 2**30:.0f} GiB "
                f"({m:,} missing cells), over {MEMORY_BUDGET / 2**30:.0f} GiB",
            )
            return
    limit = spec["op_limit"]

    def op(name: str, fn: Any) -> tuple[float | None, Any]:
        try:
            with time_limit(limit):
                seconds, value = timed(fn, repeat)
        except OpTimeout:
            _emit(out, f"{name}_timeout", limit)
            return None, None
        _emit(out, f"{name}_s", seconds)
        return seconds, value

    with CostPatch(spec["patch"]):
        fit_s, gp = op("fit", lambda: model().fit_grid(coords, Y))
        if gp is None:
            return
        info = gp.solver_info_
        _emit(out, "path", info.path)
        _emit(out, "route_reason", info.extra.get("route_reason"))
        _emit(out, "method_reason", info.extra.get("reason"))
        try:
            with time_limit(limit):
                t0 = time.perf_counter()
                lml = gp.log_marginal_likelihood_value_
                _emit(out, "lml_read_s", time.perf_counter() - t0)
                _emit(out, "lml", lml)
                _emit(out, "lml_std_error", gp.solver_info_.lml_std_error)
        except OpTimeout:
            _emit(out, "lml_read_timeout", limit)
        theta = gp.theta_
        lg_s, _ = op(
            "lml_grad", lambda: gp.log_marginal_likelihood(theta, eval_gradient=True)
        )
        op("predict", lambda: gp.predict_grid(coords, return_std=True))
        if spec.get("do_opt"):
            if lg_s is None or lg_s * spec["opt_evals"] > spec["opt_max"]:
                lg = f"{lg_s:.2f} s" if lg_s else f"> {limit:.0f} s"
                _emit(
                    out,
                    "opt_skipped",
                    f"LML+grad {lg} x {spec['opt_evals']} evaluations > "
                    f"{spec['opt_max']:.0f} s",
                )
                return
            evals: dict[str, Any] = {}

            def lbfgs(obj: Any, theta0: np.ndarray, bounds: Any) -> Any:
                res = scipy.optimize.minimize(
                    obj, theta0, method="L-BFGS-B", jac=True, bounds=bounds
                )
                evals.update(n=int(res.nfev), message=str(res.message))
                return res.x, float(res.fun)

            start = np.concatenate([np.atleast_1d(k.theta) for k in data["start"]])
            t0 = time.perf_counter()
            try:
                with time_limit(2 * spec["opt_max"]):
                    gp = model(start=True, optimizer=lbfgs).fit_grid(coords, Y)
            except OpTimeout:
                _emit(out, "opt_timeout", 2 * spec["opt_max"])
                return
            opt_s = time.perf_counter() - t0
            _emit(
                out,
                "opt",
                {
                    "seconds": opt_s,
                    "evaluations": evals.get("n"),
                    "message": evals.get("message"),
                    "theta": gp.theta_.tolist(),
                    "lml": gp.log_marginal_likelihood_value_,
                    "lml_std_error": gp.solver_info_.lml_std_error,
                    "path": gp.solver_info_.path,
                    # the search ended where it started (kernel hyperparameters)
                    "at_start": bool(np.allclose(gp.theta_[: start.size], start)),
                },
            )


def dense_gp(size: str, nu: float) -> dict[str, Any]:
    """Dense NumPy GP on the observed cells: Cholesky fit, std on the grid."""
    n_s, n_t = parse_size(size)
    sites, times, Y = draw(n_s, n_t, nu)
    Y = np.where(missing_mask(Y.shape, nu), np.nan, Y)
    X = grid_rows(sites, times)
    y = Y.reshape(-1)
    obs = ~np.isnan(y)
    kernel = KroneckerKernel(kernels(THETA_TRUE, nu), axes=[[0, 1], [2]])
    noise = float(np.exp(THETA_TRUE[3]))
    out: dict[str, Any] = {"size": size, "n_observed": int(obs.sum())}

    def fit() -> Any:
        K = kernel(X[obs])
        K[np.diag_indices_from(K)] += noise
        L = scipy.linalg.cholesky(K, lower=True, overwrite_a=True)
        alpha = scipy.linalg.cho_solve((L, True), y[obs])
        lml = (
            -0.5 * y[obs] @ alpha
            - np.log(np.diag(L)).sum()
            - 0.5 * obs.sum() * math.log(2 * math.pi)
        )
        return L, alpha, lml

    def predict(L: Any, alpha: Any) -> Any:
        K_xo = kernel(X, X[obs])
        mean = K_xo @ alpha
        V = scipy.linalg.solve_triangular(L, K_xo.T, lower=True, overwrite_b=True)
        var = kernel.diag(X) - np.einsum("ij,ij->j", V, V)
        return mean, np.sqrt(np.maximum(var, 0.0))

    t0 = time.perf_counter()
    L, alpha, lml = fit()
    out["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    predict(L, alpha)
    out["predict_s"] = time.perf_counter() - t0
    out["fit_predict_s"] = out["fit_s"] + out["predict_s"]
    out["lml"] = float(lml)
    return out


# ------------------------------------------------------------------- driver
def worker_main(spec_json: str, out: str) -> None:
    """Entry point of a row's subprocess."""
    try:
        spec = json.loads(spec_json)
        if spec["route"] == "dense":
            res = dense_gp(spec["size"], spec["nu"])
            for k, v in res.items():
                _emit(Path(out), k, v)
        else:
            run_row(spec, Path(out))
    except Exception:  # noqa: BLE001 - recorded in the row
        _emit(Path(out), "error", traceback.format_exc(limit=3))
        raise


def run_in_subprocess(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one row in a fresh process; keep what it finished before ``timeout``."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        out = Path(fh.name)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        json.dumps(spec),
        "--worker-out",
        str(out),
    ]
    t0 = time.perf_counter()
    rec: dict[str, Any] = {k: v for k, v in spec.items() if k != "settings"}
    rec["settings"] = spec.get("settings")
    try:
        proc = subprocess.run(
            cmd, timeout=timeout, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 and "error" not in out.read_text():
            rec["error"] = proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        rec["timeout_s"] = timeout
    rec["wall_s"] = time.perf_counter() - t0
    for line in out.read_text().splitlines():
        rec.update(json.loads(line))
    out.unlink()
    return rec


def row_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows to run, in order."""
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    specs: list[dict[str, Any]] = []
    opt_sizes = set(filter(None, args.opt_sizes.split(",")))
    for size, nu, plan_routes in plan:
        if args.sizes and size not in args.sizes.split(","):
            continue
        routes = [
            r for r in plan_routes if not args.routes or r in args.routes.split(",")
        ]
        if "complete" not in routes:
            routes = ["complete", *routes]
        seen: set[str] = set()
        for route in routes:
            variant, settings, patch = ROUTES[route]
            specs.append(
                {
                    "data": "synthetic",
                    "size": size,
                    "nu": nu,
                    "route": route,
                    "variant": variant,
                    "settings": settings,
                    "patch": patch,
                    "do_auto": variant not in seen,
                    "do_opt": args.quick or size in opt_sizes or "all" in opt_sizes,
                }
            )
            seen.add(variant)
        if args.dense_sizes and size in args.dense_sizes.split(",") and not args.routes:
            specs.append({"data": "dense", "size": size, "nu": nu, "route": "dense"})
    if not args.quick and not args.no_real:
        # default settings throughout; ozone2 also on its grid filled in (the
        # complete-grid reference), wind has no NaN cell
        # the eigen route on ozone2's own NaN cells, next to the cost model's pick
        real = [
            ("ozone2", "complete", "complete", {}),
            ("ozone2", "auto", "missing", {}),
            ("ozone2", "schur (state_space=None)", "missing", {"state_space": None}),
            ("wind", "auto", "complete", {}),
        ]
        for name, route, variant, settings in real:
            if args.sizes and name not in args.sizes.split(","):
                continue
            if args.routes and route not in args.routes.split(","):
                continue
            specs.append(
                {
                    "data": "real",
                    "size": name,
                    "nu": None,
                    "route": route,
                    "variant": variant,
                    "settings": settings,
                    "patch": None,
                    "do_auto": route == "auto",
                    "do_opt": True,
                }
            )
    for s in specs:
        s.update(
            repeat=args.repeat,
            opt_evals=args.opt_evals,
            opt_max=args.opt_max,
            op_limit=args.op_timeout,
            bounds=args.bounds,
        )
    return specs


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Ratio of each operation to the complete row of the same shape; LML checks."""
    ref = {r["size"]: r for r in rows if r["route"] == "complete" and "fit_s" in r}
    exact_lml: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["route"] == "dense":
            exact_lml[(r["size"], "missing")] = r["lml"]
    for r in rows:
        if r.get("lml_std_error") == 0 and "lml" in r:
            exact_lml.setdefault((r["size"], r.get("variant", "")), r["lml"])
    for r in rows:
        base = ref.get(r["size"])
        if base is None or r["route"] == "dense":
            continue
        for op in ("fit_s", "lml_grad_s", "predict_s"):
            if op in r and op in base:
                r[op.replace("_s", "_ratio")] = r[op] / base[op]
        if "opt" in r and "opt" in base:
            r["opt_ratio"] = r["opt"]["seconds"] / base["opt"]["seconds"]
        exact = exact_lml.get((r["size"], r.get("variant", "")))
        if exact is not None and "lml" in r:
            r["lml_rel_diff_vs_exact"] = abs(r["lml"] - exact) / abs(exact)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the rows (or one row, with ``--worker``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="< 2 minute smoke run")
    parser.add_argument("--out", default="benchmarks/results_routes.json")
    parser.add_argument("--sizes", default="", help="only these sizes, e.g. 60x80")
    parser.add_argument("--routes", default="", help="only these routes")
    parser.add_argument("--opt-sizes", default="60x80,43x730,200x250,500x500")
    parser.add_argument("--dense-sizes", default="60x80")
    parser.add_argument("--no-real", action="store_true", help="skip ozone2/wind")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--opt-evals",
        type=int,
        default=20,
        help="optimise only where LML+grad x this is under --opt-max",
    )
    parser.add_argument("--opt-max", type=float, default=90.0)
    parser.add_argument(
        "--bounds",
        choices=sorted(BOUND_SETS),
        default="narrow",
        help="hyperparameter bounds of the optimisations (see BOUND_SETS)",
    )
    parser.add_argument(
        "--op-timeout",
        type=float,
        default=30.0,
        help="seconds one operation (fit, LML+grad, predict) may take",
    )
    parser.add_argument("--row-timeout", type=float, default=300.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.worker_out)
        return
    if args.quick:
        args.row_timeout = min(args.row_timeout, 30.0)
        args.op_timeout = min(args.op_timeout, 10.0)
        args.opt_max = min(args.opt_max, 5.0)
        args.repeat = 1
    t_start = time.perf_counter()
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "load_before": load_average(),
        "rows": [],
    }
    for spec in row_specs(args):
        load = load_average()
        rec = run_in_subprocess(spec, args.row_timeout)
        rec["load"] = load
        record["rows"].append(rec)
        summary = " ".join(
            f"{k}={rec[k]:.3g}"
            for k in ("fit_s", "lml_read_s", "lml_grad_s", "predict_s")
            if isinstance(rec.get(k), float)
        )
        opt = rec.get("opt", {}).get("seconds")
        auto = rec.get("auto", {})
        print(
            f"{rec['size']:>8} {rec['route']:>26} -> {rec.get('path', '-'):>26} "
            f"{summary} opt={opt if opt is None else round(opt, 2)} "
            f"auto={auto.get('path', '')} "
            f"load={load[0]} wall={rec['wall_s']:.1f}s"
            + "".join(f" {k}" for k in rec if k.endswith("_timeout"))
            + (f" skipped: {rec['skipped']}" if "skipped" in rec else "")
            + (" ROW-TIMEOUT" if "timeout_s" in rec else "")
            + (" ERROR" if "error" in rec else ""),
            flush=True,
        )
    add_ratios(record["rows"])
    record["load_after"] = load_average()
    record["total_s"] = time.perf_counter() - t_start
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {args.out} in {record['total_s']:.0f} s")


if __name__ == "__main__":
    main()
