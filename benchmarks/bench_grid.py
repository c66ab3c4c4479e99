"""Benchmark KroneckerGP on 2-D grids (sites x times) against its LAPACK floor.

For each size ``n_sites x n_times`` it times

(a) ``fit_grid`` with fixed hyperparameters (``optimizer=None``),
(b) one ``log_marginal_likelihood`` with its gradient (4 hyperparameters:
    amplitude, space length scale, time length scale, noise),
(c) ``predict_grid`` mean + std over the training grid,
(d) a full hyperparameter optimisation (L-BFGS-B from a fixed start),

next to the LAPACK floor measured in the same process (``numpy.linalg.eigh`` of
each factor plus the two mode-product GEMMs ``U_s^T Y U_t``), scikit-learn's
``GaussianProcessRegressor`` with the same kernel (while one fit stays under
``--sklearn-max-seconds``) and GPyTorch's Kronecker path on CPU (when it is
installed). Every (size, library) pair runs in its own subprocess, so peak
memory and thread pools do not leak between them.

Run ``python benchmarks/bench_grid.py --help``; see benchmarks/README.md.
"""

# Workers import only what they time (torch and gpytorch are optional), so
# imports inside functions are deliberate throughout this script.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - the helper module sits next to this script
    LOG_BOUNDS,
    THETA_START,
    THETA_TRUE,
    blas_info,
    factor_kernels,
    gpytorch_grid_model,
    grid_rows,
    load_average,
    machine_info,
    make_problem,
    measure,
    parse_size,
    peak_memory,
    peak_rss_only,
    recording_lbfgsb,
)

DEFAULT_SIZES = "20x20,50x50,70x70,100x100,200x200,500x500,1000x1000"
NOISE = float(np.exp(THETA_TRUE[3]))
# Bytes per cell^2 that sklearn's log-likelihood gradient holds at its peak:
# the (N, N, 4) kernel gradient, K, L, K^-1 and the (N, N) inner term.
SKLEARN_BYTES_PER_N2 = 8 * 10


def _interleaved(fns: dict[str, Any], repeat: int) -> dict[str, dict[str, Any]]:
    """Time several functions round-robin (one sample each per round)."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        out[name] = measure(fn, 1, warmup=True)
    for _ in range(repeat - 1):
        for name, fn in fns.items():
            loops = out[name]["loops"]
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            out[name]["samples"].append((time.perf_counter() - t0) / loops)
    for res in out.values():
        res["median"] = float(np.median(res["samples"]))
        res["min"] = float(np.min(res["samples"]))
    return out


def _optimisation(run: Any, repeat: int) -> dict[str, Any]:
    times, record = [], {}
    for _ in range(repeat):
        record = {}
        t0 = time.perf_counter()
        run(record)
        times.append(time.perf_counter() - t0)
    return {"median": float(np.median(times)), "samples": times, **record}


# ------------------------------------------------------------------- workers
def worker_ours(n_s: int, n_t: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time KroneckerGP and the LAPACK floor in one process."""
    import scipy.linalg

    from kronecker_gp import KroneckerGP

    sites, times, Y = make_problem(n_s, n_t, args.seed)
    coords = [sites, times]
    k_space, k_time = factor_kernels(THETA_TRUE)
    K_s, K_t = k_space(sites), k_time(times[:, None])

    def fit() -> Any:
        gp = KroneckerGP(factor_kernels(THETA_TRUE), noise=NOISE, optimizer=None)
        return gp.fit_grid(coords, Y)

    gp = fit()

    def floor() -> Any:
        _, u_s = np.linalg.eigh(K_s)
        _, u_t = np.linalg.eigh(K_t)
        return (u_s.T @ Y) @ u_t

    fns = {
        "floor": floor,
        "fit": fit,
        "lml_grad": lambda: gp.log_marginal_likelihood(THETA_TRUE, eval_gradient=True),
        "predict": lambda: gp.predict_grid(coords, return_std=True),
    }
    res: dict[str, Any] = {"timings": _interleaved(fns, args.repeat)}
    u_s, u_t = np.linalg.eigh(K_s)[1], np.linalg.eigh(K_t)[1]
    parts = {
        "np_eigh_space": lambda: np.linalg.eigh(K_s),
        "np_eigh_time": lambda: np.linalg.eigh(K_t),
        "two_gemms": lambda: (u_s.T @ Y) @ u_t,
        "scipy_evd_eigh_space": lambda: scipy.linalg.eigh(
            K_s, driver="evd", check_finite=False
        ),
        "scipy_evd_eigh_time": lambda: scipy.linalg.eigh(
            K_t, driver="evd", check_finite=False
        ),
        "factor_grams": lambda: (k_space(sites), k_time(times[:, None])),
        "factor_grams_grad": lambda: (
            k_space(sites, eval_gradient=True),
            k_time(times[:, None], eval_gradient=True),
        ),
    }
    res["floor_parts"] = {k: v["median"] for k, v in _interleaved(parts, 3).items()}
    res["memory"] = {name: peak_memory(fn) for name, fn in fns.items()}
    lml, grad = gp.log_marginal_likelihood(THETA_TRUE, eval_gradient=True)
    mean, std = gp.predict_grid(coords, return_std=True)
    res["check"] = {
        "lml": float(lml),
        "grad": [float(g) for g in grad],
        "mean_head": [float(m) for m in mean.reshape(-1)[:5]],
        "std_head": [float(s) for s in std.reshape(-1)[:5]],
    }
    res["data_mb"] = Y.nbytes / 2**20
    opt_repeat = args.repeat if res["timings"]["lml_grad"]["median"] < 0.05 else 1

    def run_opt(record: dict[str, Any]) -> None:
        gp = KroneckerGP(
            factor_kernels(THETA_START),
            noise=float(np.exp(THETA_START[3])),
            noise_bounds=tuple(np.exp(LOG_BOUNDS[3])),
            optimizer=recording_lbfgsb(record),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp.fit_grid(coords, Y)

    if not args.no_opt:
        res["optimisation"] = _optimisation(run_opt, opt_repeat)
    return res


def worker_sklearn(n_s: int, n_t: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time GaussianProcessRegressor with the equivalent dense product kernel."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel

    from kronecker_gp.kernels import KroneckerKernel

    sites, times, Y = make_problem(n_s, n_t, args.seed)
    X, y = grid_rows(sites, times), Y.reshape(-1)
    ops = set(args.sk_ops.split(","))
    budget = args.sklearn_max_seconds / 3  # time spent on repeats of one op

    def kernel() -> Any:
        return KroneckerKernel(factor_kernels(THETA_TRUE), axes=[[0, 1], [2]])

    def fit() -> Any:
        gpr = GaussianProcessRegressor(kernel=kernel(), alpha=NOISE, optimizer=None)
        return gpr.fit(X, y)

    res: dict[str, Any] = {"timings": {}, "memory": {}, "check": {}}
    # the first call of each op doubles as warm-up and memory measurement
    res["memory"]["fit"] = peak_memory(fit)
    res["timings"]["fit"] = measure(fit, args.repeat, warmup=False, budget=budget)
    if "predict" in ops:
        res.update(_sklearn_predict(fit(), X, args.repeat, budget, res))
    if "lml" in ops:
        # four hyperparameters as in ours: the noise as a WhiteKernel term
        white = WhiteKernel(NOISE, tuple(np.exp(LOG_BOUNDS[3])))
        gpr_w = GaussianProcessRegressor(
            kernel=kernel() + white, alpha=0.0, optimizer=None
        ).fit(X, y)

        def lml() -> Any:
            return gpr_w.log_marginal_likelihood(THETA_TRUE, eval_gradient=True)

        res["memory"]["lml_grad"] = peak_memory(lml)
        res["timings"]["lml_grad"] = measure(
            lml, args.repeat, warmup=False, budget=budget
        )
        value, grad = lml()
        res["check"]["lml"] = float(value)
        res["check"]["grad"] = [float(g) for g in grad]
    return res


def _sklearn_predict(
    gpr: Any, X: np.ndarray, repeat: int, budget: float, res: dict[str, Any]
) -> dict[str, Any]:
    def predict() -> Any:
        return gpr.predict(X, return_std=True)

    res["memory"]["predict"] = peak_memory(predict)
    res["timings"]["predict"] = measure(predict, repeat, warmup=False, budget=budget)
    mean, std = predict()
    res["check"]["mean_head"] = [float(m) for m in mean[:5]]
    res["check"]["std_head"] = [float(s) for s in std[:5]]
    return res


def worker_gpytorch(n_s: int, n_t: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time GPyTorch's Kronecker path (float64, CPU) on the same data and theta."""
    import torch

    torch.set_default_dtype(torch.float64)
    sites, times, Y = make_problem(n_s, n_t, args.seed)
    small = make_problem(5, 6, args.seed)
    warm, _ = gpytorch_grid_model(*small)
    warm(THETA_TRUE, True)
    lml, covariance_type = gpytorch_grid_model(sites, times, Y)
    res: dict[str, Any] = {"covariance": covariance_type(), "timings": {}, "memory": {}}
    budget = args.gpytorch_max_seconds / 10  # time spent on repeats of one op
    ops = {
        "fit": lambda: lml(THETA_TRUE, False),
        "lml_grad": lambda: lml(THETA_TRUE, True),
    }
    for name, fn in ops.items():
        res["memory"][name] = peak_rss_only(fn)
        res["timings"][name] = measure(fn, args.repeat, warmup=False, budget=budget)
    value, grad = lml(THETA_TRUE, True)
    res["check"] = {"lml": value, "grad": [float(g) for g in grad]}
    res["torch_threads"] = torch.get_num_threads()
    per_eval = res["timings"]["lml_grad"]["median"]
    if args.no_opt:
        return res
    if per_eval * args.expected_evals > args.gpytorch_max_seconds:
        res["optimisation"] = {
            "skipped": f"estimated {per_eval * args.expected_evals:.0f} s "
            f"({args.expected_evals} evaluations x {per_eval:.2f} s) > "
            f"--gpytorch-max-seconds {args.gpytorch_max_seconds:g}"
        }
        return res

    def run_opt(record: dict[str, Any]) -> None:
        def obj(theta: np.ndarray) -> Any:
            value, grad = lml(theta, True)
            return -value, -grad

        recording_lbfgsb(record)(obj, THETA_START.copy(), LOG_BOUNDS)

    res["optimisation"] = _optimisation(run_opt, 1 if per_eval > 0.05 else args.repeat)
    return res


WORKERS = {"ours": worker_ours, "sklearn": worker_sklearn, "gpytorch": worker_gpytorch}


# -------------------------------------------------------------------- driver
def _run_worker(
    kind: str, size: str, args: argparse.Namespace, extra: list[str] | None = None
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--sizes",
        size,
        "--repeat",
        str(args.repeat),
        "--seed",
        str(args.seed),
        "--sklearn-max-seconds",
        str(args.sklearn_max_seconds),
        "--gpytorch-max-seconds",
        str(args.gpytorch_max_seconds),
        "--expected-evals",
        str(args.expected_evals),
        *(["--no-opt"] if args.no_opt else []),
        *(["--blas-threads", str(args.blas_threads)] if args.blas_threads else []),
        *(extra or []),
    ]
    load0, t0 = load_average(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(load_before=load0, load_after=load_average(), wall_s=wall)
    return out


def _sklearn_plan(
    n_cells: int, history: list[tuple[int, dict[str, Any]]], args: argparse.Namespace
) -> tuple[list[str], str]:
    """Decide which sklearn ops to run at ``n_cells`` before running them.

    An op's time is extrapolated from the largest size already run as
    ``t * (N / N_prev)^3`` (the Cholesky term) when that run had at least
    2000 cells and took over half a second (so that the cubic term
    dominates, not thread start-up or Python overhead); otherwise from a flop count at
    a conservative 10 GFLOP/s (Cholesky N^3/3, the gradient's inverse and the
    predictive variance about N^3 each). Memory is taken as 80 bytes per N^2.
    """
    mem_gib = SKLEARN_BYTES_PER_N2 * n_cells**2 / 2**30
    if mem_gib > args.sklearn_max_gib:
        return [], f"estimated {mem_gib:.1f} GiB > --sklearn-max-gib"
    flops = {"fit": n_cells**3 / 3, "lml": 4 * n_cells**3 / 3, "predict": n_cells**3}
    est = {op: f / 1e10 for op, f in flops.items()}
    if history:
        n_prev, prev = history[-1]
        for op, key in (("fit", "fit"), ("lml", "lml_grad"), ("predict", "predict")):
            t_prev = _median(prev, "timings", key)
            if t_prev is not None and t_prev > 0.5 and n_prev >= 2000:
                est[op] = t_prev * (n_cells / n_prev) ** 3
    if est["fit"] > args.sklearn_max_seconds:
        return [], f"estimated fit {est['fit']:.0f} s > --sklearn-max-seconds"
    ops = ["fit"] + [
        op for op in ("lml", "predict") if est[op] <= 2 * args.sklearn_max_seconds
    ]
    skipped = sorted({"lml", "predict"} - set(ops))
    return ops, (f"skipped {skipped}: estimated > 2x the limit" if skipped else "")


def _gpytorch_available() -> bool:
    try:
        import gpytorch  # noqa: F401
        import linear_operator  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_blas() -> str:
    """Return the BLAS/LAPACK torch was built with (it ignores OPENBLAS_*)."""
    import torch

    found = re.findall(r"\b((?:BLAS|LAPACK)_INFO=\w+)", torch.__config__.show())
    return ", ".join(found)


def _ratio(num: Any, den: Any) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num) / float(den)


def _median(entry: dict[str, Any] | None, *keys: str) -> float | None:
    cur: Any = entry
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return float(cur["median"]) if isinstance(cur, dict) and "median" in cur else None


def summarise(entry: dict[str, Any]) -> dict[str, Any]:
    """Ratios and memory figures of one size."""
    ours, sk, gp = entry["ours"], entry.get("sklearn"), entry.get("gpytorch")
    floor = _median(ours, "timings", "floor")
    t = {k: _median(ours, "timings", k) for k in ("fit", "lml_grad", "predict")}
    opt = ours.get("optimisation", {})
    gp_opt = (gp or {}).get("optimisation", {})
    mem = ours.get("memory", {})
    peak_tm = max((m["tracemalloc_mb"] for m in mem.values()), default=None)
    rss = [
        m["rss_mb"] for k, m in mem.items() if k != "floor" and m["rss_mb"] is not None
    ]
    return {
        "fit_over_floor": _ratio(t["fit"], floor),
        "lml_grad_over_floor": _ratio(t["lml_grad"], floor),
        "predict_over_floor": _ratio(t["predict"], floor),
        "sklearn_over_ours_fit": _ratio(_median(sk, "timings", "fit"), t["fit"]),
        "sklearn_over_ours_lml_grad": _ratio(
            _median(sk, "timings", "lml_grad"), t["lml_grad"]
        ),
        "sklearn_over_ours_predict": _ratio(
            _median(sk, "timings", "predict"), t["predict"]
        ),
        "gpytorch_over_ours_fit": _ratio(_median(gp, "timings", "fit"), t["fit"]),
        "gpytorch_over_ours_lml_grad": _ratio(
            _median(gp, "timings", "lml_grad"), t["lml_grad"]
        ),
        "gpytorch_over_ours_optimisation": _ratio(
            gp_opt.get("median"), opt.get("median")
        ),
        "peak_tracemalloc_mb": peak_tm,
        "peak_rss_mb": max(rss, default=None),
    }


def _fmt(x: float | None, unit: str = "s") -> str:
    if x is None:
        return "-"
    if unit == "x":
        return f"{x:.3g}x" if x < 1000 else f"{x:.0f}x"
    if unit == "MB":
        return f"{x:.1f}"
    if x < 1e-3:
        return f"{x * 1e6:.0f}us"
    if x < 1:
        return f"{x * 1e3:.1f}ms"
    return f"{x:.2f}s"


def print_tables(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'size':>10} {'cells':>8} | {'floor':>8} {'fit':>8} {'x':>6} "
        f"{'lml+g':>8} {'x':>6} {'pred':>8} {'x':>6} | {'opt':>8} {'nfev':>4} | "
        f"{'peak MB':>8} {'rss MB':>7}"
    )
    print("\nKroneckerGP vs the LAPACK floor (x = ours / floor; medians)")
    print(head)
    print("-" * len(head))
    for e in results:
        o, s = e["ours"], e["summary"]
        tm = o.get("timings", {})
        opt = o.get("optimisation", {})
        print(
            f"{e['size']:>10} {e['cells']:>8} | {_fmt(_median(tm, 'floor')):>8} "
            f"{_fmt(_median(tm, 'fit')):>8} {_fmt(s['fit_over_floor'], 'x'):>6} "
            f"{_fmt(_median(tm, 'lml_grad')):>8} "
            f"{_fmt(s['lml_grad_over_floor'], 'x'):>6} "
            f"{_fmt(_median(tm, 'predict')):>8} "
            f"{_fmt(s['predict_over_floor'], 'x'):>6} | "
            f"{_fmt(opt.get('median')):>8} {opt.get('nfev', '-'):>4} | "
            f"{_fmt(s['peak_tracemalloc_mb'], 'MB'):>8} "
            f"{_fmt(s['peak_rss_mb'], 'MB'):>7}"
        )
    head = (
        f"{'size':>10} | {'sk fit':>8} {'sk/ours':>8} {'sk lml+g':>9} {'sk/ours':>8} "
        f"{'sk pred':>8} {'sk/ours':>8} | {'gp lml':>8} {'gp/ours':>7} "
        f"{'gp lml+g':>8} {'gp/ours':>7} {'gp opt':>8} {'nfev':>4} {'gp/ours':>7}"
    )
    print(
        "\nscikit-learn (sk) and GPyTorch (gp) vs KroneckerGP (ratios = theirs / ours)"
    )
    print(head)
    print("-" * len(head))
    for e in results:
        sk, gp, s = e.get("sklearn") or {}, e.get("gpytorch") or {}, e["summary"]
        gopt = gp.get("optimisation", {})
        print(
            f"{e['size']:>10} | {_fmt(_median(sk, 'timings', 'fit')):>8} "
            f"{_fmt(s['sklearn_over_ours_fit'], 'x'):>8} "
            f"{_fmt(_median(sk, 'timings', 'lml_grad')):>9} "
            f"{_fmt(s['sklearn_over_ours_lml_grad'], 'x'):>8} "
            f"{_fmt(_median(sk, 'timings', 'predict')):>8} "
            f"{_fmt(s['sklearn_over_ours_predict'], 'x'):>8} | "
            f"{_fmt(_median(gp, 'timings', 'fit')):>8} "
            f"{_fmt(s['gpytorch_over_ours_fit'], 'x'):>7} "
            f"{_fmt(_median(gp, 'timings', 'lml_grad')):>8} "
            f"{_fmt(s['gpytorch_over_ours_lml_grad'], 'x'):>7} "
            f"{_fmt(gopt.get('median')):>8} {gopt.get('nfev', '-'):>4} "
            f"{_fmt(s['gpytorch_over_ours_optimisation'], 'x'):>7}"
        )


def check_targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate the issue's targets on the measured results."""
    by = {e["size"]: e for e in results}
    targets: dict[str, Any] = {}

    def add(name: str, value: float | None, limit: float, kind: str) -> None:
        met = (
            None
            if value is None
            else (value <= limit if kind == "<=" else value >= limit)
        )
        targets[name] = {"value": value, "target": f"{kind} {limit:g}", "met": met}

    big = by.get("1000x1000")
    if big:
        s = big["summary"]
        add("1000x1000 fit / floor", s["fit_over_floor"], 1.3, "<=")
        add("1000x1000 lml+grad / floor", s["lml_grad_over_floor"], 2.0, "<=")
        add("1000x1000 predict mean+std / floor", s["predict_over_floor"], 2.0, "<=")
        add(
            "1000x1000 optimisation gpytorch / ours",
            s["gpytorch_over_ours_optimisation"],
            2.0,
            ">=",
        )
        add(
            "1000x1000 peak memory above data (MB, tracemalloc)",
            s["peak_tracemalloc_mb"],
            200.0,
            "<=",
        )
        add("1000x1000 peak memory above data (MB, RSS)", s["peak_rss_mb"], 200.0, "<=")
    mid = by.get("70x70")
    if mid:
        add(
            "70x70 sklearn fit / ours",
            mid["summary"]["sklearn_over_ours_fit"],
            1000.0,
            ">=",
        )
    return targets


def _consistency(entry: dict[str, Any]) -> dict[str, Any]:
    """Relative differences of LML, gradient, mean and std across libraries."""
    ref = entry["ours"].get("check", {})
    out = {}
    for lib in ("sklearn", "gpytorch"):
        chk = (entry.get(lib) or {}).get("check", {})
        diffs = {}
        for key in ("lml", "grad", "mean_head", "std_head"):
            if key in chk and key in ref:
                a, b = np.atleast_1d(ref[key]), np.atleast_1d(chk[key])
                diffs[key] = float(
                    np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300))
                )
        if diffs:
            out[lib] = diffs
    return out


def drive(args: argparse.Namespace) -> None:
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    use_gp = args.gpytorch and _gpytorch_available()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "args": vars(args),
        "load_before": load_average(),
        "gpytorch": "used"
        if use_gp
        else ("not installed" if args.gpytorch else "disabled (--no-gpytorch)"),
        "results": [],
    }
    mach = report["machine"]
    blas = [(b["prefix"], b["architecture"]) for b in mach["blas"]]
    print(
        f"machine: {mach['cpu_model']}, {mach['usable_cores']} cores; BLAS {blas}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
        f"load {report['load_before']}"
    )
    if report["load_before"][0] > mach["usable_cores"] and not args.blas_threads:
        print(
            "warning: the load average exceeds the core count; multi-threaded BLAS "
            "calls stall under contention, so timings will be noisy. Consider "
            "--blas-threads 1."
        )
    if use_gp:
        report["machine"]["torch_config"] = _torch_blas()
    history: list[tuple[int, dict[str, Any]]] = []
    t_start = time.perf_counter()
    for size in sizes:
        n_s, n_t = parse_size(size)
        entry: dict[str, Any] = {"size": size, "cells": n_s * n_t}
        print(f"[{time.perf_counter() - t_start:6.0f}s] {size}: ours ...", flush=True)
        entry["ours"] = _run_worker("ours", size, args)
        if "error" in entry["ours"]:
            print(f"  ours failed: {entry['ours']['error']}")
        if args.sklearn:
            ops, why = _sklearn_plan(n_s * n_t, history, args)
            if ops:
                stamp = f"[{time.perf_counter() - t_start:6.0f}s]"
                print(f"{stamp} {size}: sklearn {ops} ...", flush=True)
                entry["sklearn"] = _run_worker(
                    "sklearn", size, args, ["--sk-ops", ",".join(ops)]
                )
                if "error" not in entry["sklearn"]:
                    history.append((n_s * n_t, entry["sklearn"]))
            if why:
                entry.setdefault("sklearn", {})["note"] = why
        if use_gp:
            print(
                f"[{time.perf_counter() - t_start:6.0f}s] {size}: gpytorch ...",
                flush=True,
            )
            entry["gpytorch"] = _run_worker("gpytorch", size, args)
        entry["summary"] = summarise(entry)
        entry["consistency"] = _consistency(entry)
        report["results"].append(entry)
        if args.out:  # write as we go, so a long run leaves partial results
            Path(args.out).write_text(json.dumps(report, indent=1))
    report["load_after"] = load_average()
    report["total_wall_s"] = time.perf_counter() - t_start
    report["targets"] = check_targets(report["results"])
    print_tables(report["results"])
    print("\ntargets:")
    for name, t in report["targets"].items():
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        val = "-" if t["value"] is None else f"{t['value']:.3g}"
        print(f"  {name:<52} {val:>8} (target {t['target']}): {state}")
    print(
        f"\nload average before {report['load_before']}, after {report['load_after']}; "
        f"total {report['total_wall_s']:.0f} s"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help="comma-separated n_sites x n_times grids (default: %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timing samples per measurement; the median is reported",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sklearn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time sklearn's GaussianProcessRegressor",
    )
    p.add_argument(
        "--sklearn-max-seconds",
        type=float,
        default=60.0,
        help="largest extrapolated sklearn fit time to attempt",
    )
    p.add_argument(
        "--sklearn-max-gib",
        type=float,
        default=12.0,
        help="largest estimated sklearn memory to attempt",
    )
    p.add_argument(
        "--gpytorch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time GPyTorch's Kronecker path (if installed)",
    )
    p.add_argument(
        "--gpytorch-max-seconds",
        type=float,
        default=300.0,
        help="largest estimated GPyTorch optimisation time to attempt",
    )
    p.add_argument(
        "--expected-evals",
        type=int,
        default=40,
        help="evaluations assumed when estimating an optimisation's time",
    )
    p.add_argument("--no-opt", action="store_true", help="skip the optimisations (d)")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit BLAS (and torch) threads in the workers "
        "(default: as the environment gives)",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--sk-ops", default="fit,lml,predict", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    for s in args.sizes.split(","):
        parse_size(s.strip())
    if args.worker:
        if args.blas_threads:
            import scipy.linalg  # noqa: F401 - load scipy's BLAS before limiting it
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.blas_threads)
            if args.worker == "gpytorch":
                import torch

                torch.set_num_threads(args.blas_threads)
        n_s, n_t = parse_size(args.sizes)
        res = WORKERS[args.worker](n_s, n_t, args)
        res["machine_blas"] = blas_info()
        print(json.dumps(res))
        return
    drive(args)


if __name__ == "__main__":
    main()
