"""Benchmark ProductGraphGP (Matern on a product graph) against separable KroneckerGP.

Problem (seeded): ``n`` nodes uniform in ``[0, 10]^2`` joined into an 8-nearest-
neighbour graph, times a chain of ``t`` steps; data are one exact draw from a
graph Matern on the product graph (nu = 1.5, kappa = (3, 5)) plus noise 0.1.

Models, both with 4 free hyperparameters:

* ``ProductGraphGP([L_space, L_time], kappa=[k_s, k_t])``: amplitude, two
  kappas, noise. The Laplacian eigenpairs are recomputed at each fit (the
  eigendecomposition cache is cleared), so fits are not flattered.
* ``KroneckerGP([C * Matern(sites), Matern(times)])``: the separable model on the
  same grid (amplitude, two length scales, noise).

Operations: (a) fit with fixed hyperparameters, (b) one log marginal likelihood
with gradient, (c) predict_grid mean + std on the grid, (d) a full L-BFGS-B fit
from the defaults (only up to ``--optimise-max`` cells, one run). Timings
(a)-(c) are the best of ``--repeat`` runs.

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_graph.py --out graph.md``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.gaussian_process.kernels import ConstantKernel, Matern
from sklearn.neighbors import kneighbors_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kronecker_gp import KroneckerGP, ProductGraphGP  # noqa: E402
from kronecker_gp.kernels import chain_laplacian, graph_laplacian  # noqa: E402
from kronecker_gp.kernels._graph import _EIGH_CACHE  # noqa: E402


def problem(n_nodes: int, n_times: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0.0, 10.0, size=(n_nodes, 2))
    adj = kneighbors_graph(sites, 8).toarray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random kNN graph may be disconnected
        laps = [graph_laplacian(np.maximum(adj, adj.T)), chain_laplacian(n_times)]
    truth = ProductGraphGP(laps, kappa=[3.0, 5.0], noise=0.1)
    f = truth.sample_grid(random_state=seed)[..., 0]
    Y = f + np.sqrt(0.1) * rng.standard_normal(f.shape)
    return sites, np.arange(float(n_times)), laps, Y


def best_time(fn, repeat: int) -> float:
    """Best of ``repeat`` runs: robust to other jobs on a shared machine."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.min(samples))


def predict(gp, coords) -> None:
    """Mean and std on the grid; ProductGraphGP's cached variance is dropped."""
    if isinstance(gp, ProductGraphGP):
        gp._var = None  # the variance is cached after the first call
    gp.predict_grid(coords, return_std=True)


def run(n_nodes: int, n_times: int, repeat: int, optimise: bool) -> dict:
    sites, times, laps, Y = problem(n_nodes, n_times)

    def graph(**kw):
        return ProductGraphGP(laps, kappa=[3.0, 5.0], noise=0.1, **kw)

    def separable(**kw):
        kernels = [ConstantKernel(1.0) * Matern(2.0, nu=1.5), Matern(5.0, nu=1.5)]
        return KroneckerGP(kernels, noise=0.1, **kw)

    def fit_graph(**kw):
        _EIGH_CACHE.clear()
        return graph(**kw).fit_grid(None, Y)

    def fit_sep(**kw):
        return separable(**kw).fit_grid([sites, times], Y)

    out = {}
    for name, fit in (("graph", fit_graph), ("separable", fit_sep)):
        gp = fit(optimizer=None)
        theta = gp.theta_
        grid = [sites, times] if name == "separable" else None
        res = {
            "fit": best_time(lambda f=fit: f(optimizer=None), repeat),
            "lml_grad": best_time(
                lambda g=gp, t=theta: g.log_marginal_likelihood(t, True), repeat
            ),
            "predict": best_time(lambda g=gp, c=grid: predict(g, c), repeat),
        }
        if optimise:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = fit()
            res["optimise"] = time.perf_counter() - t0
            res["lml_opt"] = float(opt.log_marginal_likelihood_value_)
        out[name] = res
    return out


def fmt(x: float | None) -> str:
    return "-" if x is None else (f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100x100,300x300,1000x1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--optimise-max", type=int, default=100_000)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}, "
        f"load average {os.getloadavg()[0]:.1f}.",
        "",
        "| grid | model | fit | LML + grad | predict mean+std | full optimisation "
        "(LML) |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for size in args.sizes.split(","):
        n, t = (int(v) for v in size.split("x"))
        res = run(n, t, args.repeat, n * t <= args.optimise_max)
        for name, r in res.items():
            opt = (
                f"{fmt(r['optimise'])} ({r['lml_opt']:.0f})" if "optimise" in r else "-"
            )
            label = "ProductGraphGP" if name == "graph" else "KroneckerGP"
            line = (
                f"| {n} x {t} | {label} | {fmt(r['fit'])} | "
                f"{fmt(r['lml_grad'])} | {fmt(r['predict'])} | {opt} |"
            )
            lines.append(line)
            print(line, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
