"""Benchmark missing cells on the state-space route (issue 7, item 3).

Cases (each in its own subprocess, so peak RSS is per case):

``check``
    The first ``--check-days`` days of the ``wind`` record with the same
    missing pattern as below, small enough for the eigen route: LML, gradient
    and predictive standard deviations of the state-space route against the
    eigen route (both through ``KroneckerGP``, ``solver="exact"`` so both are
    exact), with both timings.
``wind``
    The full ``wind`` record (12 stations x 6,574 days) with ``--frac`` of the
    cells removed at random plus one station out for 400 days. Times the fit
    with fixed hyperparameters, one LML + gradient (CG path with stochastic
    estimates, ``--probes`` probes), ``predict_grid(return_std=True)`` over
    the grid, and, with ``--optimise``, a full L-BFGS-B fit.
``synthetic``
    ``--sites`` x ``--steps`` with ``--frac`` missing at random: fit and one
    LML + gradient.
``wind-cell-noise``
    The full, complete ``wind`` record with known per-cell variances
    ``1 + U(0, 3)`` (scaled by a learned factor): fit, one LML + gradient and,
    with ``--optimise``, a full fit.

Run ``python benchmarks/bench_state_space_missing.py --help``; the numbers in
BENCHMARKS.md come from the command given there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kronecker_gp import KroneckerGP  # noqa: E402
from kronecker_gp.datasets import load_wind  # noqa: E402

WIND_START = {"amp": 10.0, "space": 2.0, "time": 3.0, "noise": 8.0}


def wind_model(**kw: Any) -> KroneckerGP:
    kernels = [
        ConstantKernel(WIND_START["amp"], (1e-2, 1e3)) * RBF(WIND_START["space"]),
        Matern(WIND_START["time"], (1e-1, 1e3), nu=1.5),
    ]
    return KroneckerGP(kernels, noise=WIND_START["noise"], **kw)


def wind_data(frac: float, seed: int, days: int | None = None) -> tuple[list, Any]:
    bunch = load_wind()
    coords = [np.asarray(bunch.sites, float), np.asarray(bunch.times, float)]
    Y = np.array(bunch.data, dtype=float)
    rng = np.random.default_rng(seed)
    Y[rng.random(Y.shape) < frac] = np.nan
    Y[3, 2000:2400] = np.nan  # one station out for 400 days
    if days is not None:
        coords[1], Y = coords[1][:days], Y[:, :days]
        Y[3, days // 3 : days // 3 + 60] = np.nan
    return coords, Y


def timed(fn: Any) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def case_check(args: argparse.Namespace) -> dict[str, Any]:
    coords, Y = wind_data(args.frac, args.seed, args.check_days)
    out: dict[str, Any] = {"shape": list(Y.shape), "missing": int(np.isnan(Y).sum())}
    res = {}
    for name, ss in (("state_space", 1), ("eigen", None)):
        gp = wind_model(optimizer=None, state_space=ss, solver="exact")
        _, fit_s, _ = timed(lambda: gp.fit_grid(coords, Y))  # noqa: B023
        (lml, grad), lg_s, lg_cpu = timed(
            lambda: gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)  # noqa: B023
        )
        (_, std), pr_s, _ = timed(
            lambda: gp.predict_grid(coords, return_std=True)  # noqa: B023
        )
        res[name] = (lml, grad, std)
        out[name] = {
            "path": gp.solver_info_.path,
            "fit_seconds": fit_s,
            "lml_grad_seconds": lg_s,
            "lml_grad_cpu_seconds": lg_cpu,
            "predict_std_seconds": pr_s,
            "lml": lml,
            "grad": grad.tolist(),
        }
    (la, ga, sa), (lb, gb, sb) = res["state_space"], res["eigen"]
    out["lml_rel_diff"] = abs(la - lb) / abs(lb)
    out["grad_rel_diff"] = rel(ga, gb)
    out["std_rel_diff"] = rel(sa, sb)
    return out


def case_wind(args: argparse.Namespace) -> dict[str, Any]:
    coords, Y = wind_data(args.frac, args.seed)
    out: dict[str, Any] = {"shape": list(Y.shape), "missing": int(np.isnan(Y).sum())}
    gp = wind_model(optimizer=None, state_space=1, n_probes=args.probes)
    _, out["fit_seconds"], _ = timed(lambda: gp.fit_grid(coords, Y))
    info = gp.solver_info_
    out["path"], out["cg_iterations"] = info.path, info.iterations
    (lml, grad), out["lml_grad_seconds"], out["lml_grad_cpu_seconds"] = timed(
        lambda: gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    )
    out["lml"], out["grad"] = lml, grad.tolist()
    out["lml_std_error"] = gp.solver_info_.lml_std_error
    _, out["predict_std_seconds"], _ = timed(
        lambda: gp.predict_grid(coords, return_std=True)
    )
    if args.optimise:
        opt = wind_model(state_space=1, n_probes=args.probes)
        _, secs, cpu = timed(lambda: opt.fit_grid(coords, Y))
        out["optimise"] = {
            "seconds": secs,
            "cpu_seconds": cpu,
            "kernel": str(opt.kernel_),
            "noise": opt.noise_,
            "lml": opt.log_marginal_likelihood_value_,
            "lml_std_error": opt.solver_info_.lml_std_error,
        }
    return out


def case_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    sites = rng.uniform(0, 10, (args.sites, 2))
    t = np.arange(float(args.steps))
    Y = (
        np.sin(sites[:, :1])
        + np.sin(t / 30.0)[None]
        + 0.3 * rng.standard_normal((args.sites, args.steps))
    )
    Y[rng.random(Y.shape) < args.frac] = np.nan
    out: dict[str, Any] = {"shape": list(Y.shape), "missing": int(np.isnan(Y).sum())}
    gp = KroneckerGP(
        [ConstantKernel(1.0) * RBF(2.0), Matern(20.0, nu=1.5)],
        noise=0.1,
        optimizer=None,
        state_space=1,
        n_probes=args.probes,
    )
    _, out["fit_seconds"], _ = timed(lambda: gp.fit_grid([sites, t], Y))
    out["path"], out["cg_iterations"] = gp.solver_info_.path, gp.solver_info_.iterations
    (lml, grad), out["lml_grad_seconds"], out["lml_grad_cpu_seconds"] = timed(
        lambda: gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    )
    out["lml_std_error"] = gp.solver_info_.lml_std_error
    return out


def case_wind_cell_noise(args: argparse.Namespace) -> dict[str, Any]:
    """Full record, complete, with known per-cell variances ``1 + U(0, 3)``."""
    bunch = load_wind()
    coords = [np.asarray(bunch.sites, float), np.asarray(bunch.times, float)]
    Y = np.array(bunch.data, dtype=float)
    v = 1.0 + 3.0 * np.random.default_rng(args.seed).random(Y.shape)
    out: dict[str, Any] = {
        "shape": list(Y.shape),
        "noise_spread": float(v.max() / v.min()),
    }
    kw = {"state_space": 1, "normalize_y": True, "n_probes": args.probes}
    gp = wind_model(optimizer=None, **kw).set_params(noise=v)
    _, out["fit_seconds"], _ = timed(lambda: gp.fit_grid(coords, Y))
    out["path"], out["cg_iterations"] = gp.solver_info_.path, gp.solver_info_.iterations
    (lml, grad), out["lml_grad_seconds"], out["lml_grad_cpu_seconds"] = timed(
        lambda: gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    )
    out["lml"], out["grad"] = lml, grad.tolist()
    if args.optimise:
        opt = wind_model(random_state=0, **kw).set_params(noise=v)
        _, secs, cpu = timed(lambda: opt.fit_grid(coords, Y))
        out["optimise"] = {
            "seconds": secs,
            "cpu_seconds": cpu,
            "kernel": str(opt.kernel_),
            "noise_scale": opt.noise_,
            "lml": opt.log_marginal_likelihood_value_,
            "lml_std_error": opt.solver_info_.lml_std_error,
        }
    return out


CASES = {
    "check": case_check,
    "wind": case_wind,
    "synthetic": case_synthetic,
    "wind-cell-noise": case_wind_cell_noise,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="check,wind,synthetic")
    parser.add_argument("--frac", type=float, default=0.05)
    parser.add_argument("--check-days", type=int, default=1500)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--optimise", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = CASES[args.worker](args)
        result["peak_rss_gib"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        )
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result))
        return
    results: dict[str, Any] = {
        "argv": sys.argv[1:],
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", case]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[case] = json.loads(done.stdout.strip().splitlines()[-1])
        print(case, json.dumps(results[case], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
