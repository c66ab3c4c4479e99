"""Benchmark Laplace inference on grids against the Gaussian complete-grid fit.

For each size ``n_sites x n_times`` of the benchmark problem of
``_common.py`` (``C * RBF`` over 2-D sites times ``Matern-1.5`` over times),
it draws Poisson counts from ``exp(1 + y)`` with ``y`` the problem's exact
Gaussian draw (latent plus its small noise),
and times, with the hyperparameters fixed at the truth:

(a) ``KroneckerGP(...).fit_grid`` on the Gaussian data (the reference),
(b) ``KroneckerLaplaceGP(likelihood="poisson").fit_grid`` on the counts: the
    Newton mode (``optimizer=None``; the LML is computed lazily and not here),
(c) its approximate LML (the stochastic log-determinant, ``n_probes`` probes),

and reports the ratio (b) / (a) (target: <= 20 at 1000 x 1000), Newton steps
and CG iterations. Run ``python benchmarks/bench_laplace.py --sizes 200x200
500x500`` with ``OPENBLAS_NUM_THREADS=1`` for one-core timings.

``--measles poisson negative_binomial`` instead times the hyperparameter
optimisation on the measles counts of ``load_us_diseases`` (51 states x 75
years, exposure, kernels and bounds as in notebook 07; target: <= 30 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import THETA_TRUE, factor_kernels, make_problem, parse_size  # noqa: E402

from kronecker_gp import KroneckerGP, KroneckerLaplaceGP  # noqa: E402
from kronecker_gp.datasets import load_us_diseases  # noqa: E402


def run(size: tuple[int, int], n_probes: int, lml: bool) -> dict[str, object]:
    """Time the Gaussian and the Poisson fit on one grid size."""
    sites, times, Y = make_problem(*size)
    coords = [sites, times]
    rng = np.random.default_rng(0)
    counts = rng.poisson(np.exp(1.0 + Y)).astype(float)
    kernels = factor_kernels(THETA_TRUE)
    t0 = time.perf_counter()
    KroneckerGP(kernels, noise=float(np.exp(THETA_TRUE[3])), optimizer=None).fit_grid(
        coords, Y
    )
    t_gauss = time.perf_counter() - t0
    gp = KroneckerLaplaceGP(kernels, optimizer=None, mean=1.0, n_probes=n_probes)
    t0 = time.perf_counter()
    gp.fit_grid(coords, counts)
    t_fit = time.perf_counter() - t0
    row: dict[str, object] = {
        "grid": f"{size[0]}x{size[1]}",
        "cells": int(np.prod(size)),
        "gaussian_fit_s": t_gauss,
        "poisson_fit_s": t_fit,
        "ratio": t_fit / t_gauss,
        "newton": gp.solver_info_["newton_iterations"],
        "cg_iterations": gp.solver_info_["cg_iterations"],
        "route": gp.solver_info_["route"],
    }
    if lml:
        t0 = time.perf_counter()
        row["lml"] = gp.log_marginal_likelihood_value_
        row["lml_std_error"] = gp.lml_std_error_
        row["lml_s"] = time.perf_counter() - t0
    return row


def run_measles(likelihood: str, n_probes: int) -> dict[str, object]:
    """Time the fit with hyperparameter optimisation on the measles counts."""
    b = load_us_diseases()
    measles = list(b.diseases).index("Measles")
    Y, E = b.data[measles], b.exposure[measles]
    kept = ~np.all(np.isnan(Y), axis=0)
    years, Y, E = b.years[kept], Y[:, kept], E[:, kept]
    kernels = [
        ConstantKernel(4.0, (0.1, 100.0)) * RBF(5.0, (1.0, 50.0)),
        Matern(5.0, (1.0, 50.0), nu=1.5),
    ]
    gp = KroneckerLaplaceGP(
        kernels, likelihood=likelihood, random_state=0, n_probes=n_probes
    )
    t0, c0 = time.perf_counter(), time.process_time()
    gp.fit_grid([b.state_lonlat, years], Y, exposure=E)
    return {
        "measles": likelihood,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "kernel": str(gp.kernel_),
        "likelihood_params": np.round(gp.likelihood_params_, 4).tolist(),
        "lml": gp.log_marginal_likelihood_value_,
        "newton": gp.solver_info_["newton_iterations"],
        "cg_iterations": gp.solver_info_["cg_iterations"],
        "route": gp.solver_info_["route"],
    }


def main() -> None:
    """Parse the arguments and print one JSON line per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["100x100", "200x200"])
    parser.add_argument("--n-probes", type=int, default=8)
    parser.add_argument("--lml", action="store_true", help="also time the LML")
    parser.add_argument(
        "--measles",
        nargs="+",
        default=None,
        help="likelihoods to time on the measles optimisation instead",
    )
    args = parser.parse_args()
    if args.measles:
        for lik in args.measles:
            print(json.dumps(run_measles(lik, args.n_probes)), flush=True)
        return
    for text in args.sizes:
        print(json.dumps(run(parse_size(text), args.n_probes, args.lml)), flush=True)


if __name__ == "__main__":
    main()
