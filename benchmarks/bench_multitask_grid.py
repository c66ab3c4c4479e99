"""Benchmark several variables on one grid (issue 14): speed rows and held-out quality.

Three parts, each optional:

``--noise-rows 10x300x300``
    Tasks x sites x times, ICM kernel (rank-2 ``CoregionalizationKernel`` x
    ``C * RBF`` over 2-D sites x ``Matern-1.5`` over times), complete grid,
    hyperparameters fixed: one LML + gradient and one ``fit_grid`` without
    search, with one noise for all tasks (route ``complete``) against one noise
    per task whitened into the task factor (``noise_axes=(0,)``, route
    ``axis-noise``), timed alternately in one process (median of
    ``--repeat``). Target: per-task within 1.2x of iid.
``--heterotopic 10x30x30``
    ``MultiTaskGP.fit_grid`` with the full L-BFGS-B search from one start on the
    complete grid and with ``--missing`` of the cells missing task by task
    (heterotopic), same data. Target: missing within 5x of complete.
``--held-out``
    Quality at whole held-out stations: two variables whose fields have
    different spatial scales (variable 0 mostly a short-range field, variable 1
    mostly a long-range one, correlated through a shared part), 30 % of
    variable 1 missing at random, and 6 stations held out entirely. Independent
    single-variable ``KroneckerGP`` fits against the ICM (one spatial kernel)
    and the LMC with two latent processes (a spatial kernel each), both with
    per-task noise; RMSE and 95 % coverage (noise included) per variable on the
    held-out stations and on random held-out cells.

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_multitask_grid.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_info, recording_lbfgsb  # noqa: E402

from kronecker_gp import KroneckerGP, MultiTaskGP  # noqa: E402
from kronecker_gp.kernels import CoregionalizationKernel  # noqa: E402


def parse_shape(text: str) -> tuple[int, int, int]:
    """Parse ``"10x300x300"`` into ``(tasks, sites, times)``."""
    try:
        t, s, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape must look like 10x300x300; got {text!r}.") from None
    return t, s, n


def _sqrt_psd(gram: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(gram)
    return v * np.sqrt(np.clip(w, 0.0, None))


def draw_field(
    sites: np.ndarray, times: np.ndarray, length: float, rng: np.random.Generator
) -> np.ndarray:
    """One draw of ``RBF(length) (x) Matern-1.5(8)`` on the sites x times grid."""
    ls = _sqrt_psd(RBF(length)(sites) + 1e-10 * np.eye(len(sites)))
    lt = _sqrt_psd(Matern(8.0, nu=1.5)(times[:, None]) + 1e-10 * np.eye(len(times)))
    return ls @ rng.standard_normal((len(sites), len(times))) @ lt.T


def icm_problem(shape: tuple[int, int, int], seed: int = 0) -> tuple[list, np.ndarray]:
    """Tasks x sites x times targets: two latent fields, rank-2 loadings, task noise."""
    t, s, n = shape
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0, 10, (s, 2))
    times = np.arange(n, dtype=float)
    f = [draw_field(sites, times, ell, rng) for ell in (2.0, 2.0)]
    w = rng.standard_normal((t, 2))
    noise = np.geomspace(0.01, 0.3, t)
    Y = np.einsum("tq,qsn->tsn", w, np.stack(f))
    Y += np.sqrt(noise)[:, None, None] * rng.standard_normal(Y.shape)
    return [np.arange(t, dtype=float), sites, times], Y


def icm_kernels(t: int) -> list[Any]:
    """The ICM's per-axis kernels (tasks, sites, times)."""
    return [
        CoregionalizationKernel(t, rank=2, kappa=0.1),
        ConstantKernel(1.0, "fixed") * RBF(2.0),
        Matern(8.0, nu=1.5),
    ]


def noise_rows(shape: tuple[int, int, int], repeat: int) -> dict[str, Any]:
    """Time iid noise against per-task noise at fixed hyperparameters."""
    coords, Y = icm_problem(shape)
    t = shape[0]
    models = {
        "iid": KroneckerGP(icm_kernels(t), noise=0.1, optimizer=None),
        "per-task": KroneckerGP(
            icm_kernels(t), noise=np.full(t, 0.1), noise_axes=(0,), optimizer=None
        ),
    }
    fits: dict[str, list[float]] = {k: [] for k in models}
    lmls: dict[str, list[float]] = {k: [] for k in models}
    fitted = {}
    for _ in range(repeat):
        for name, gp in models.items():
            t0 = time.perf_counter()
            fitted[name] = gp.fit_grid(coords, Y)
            fits[name].append(time.perf_counter() - t0)
    for _ in range(repeat):
        for name, gp in fitted.items():
            theta = gp.theta_
            t0 = time.perf_counter()
            gp.log_marginal_likelihood(theta, eval_gradient=True)
            lmls[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {"shape": list(shape), "load": load_average()}
    for name in models:
        out[name] = {
            "route": fitted[name].solver_info_.path,
            "fit_s": float(np.median(fits[name])),
            "lml_grad_s": float(np.median(lmls[name])),
        }
    out["fit_ratio"] = out["per-task"]["fit_s"] / out["iid"]["fit_s"]
    out["lml_grad_ratio"] = out["per-task"]["lml_grad_s"] / out["iid"]["lml_grad_s"]
    return out


def heterotopic(
    shape: tuple[int, int, int], missing: float, max_iter: int
) -> dict[str, Any]:
    """Full optimisation on the complete grid and with heterotopic missing cells."""
    coords, Y = icm_problem(shape, seed=1)
    t = shape[0]
    rng = np.random.default_rng(2)
    Ym = Y.copy()
    Ym[rng.random(Y.shape) < missing] = np.nan
    out: dict[str, Any] = {"shape": list(shape), "missing": missing}
    for name, data in (("complete", Y), ("heterotopic", Ym)):
        gp = MultiTaskGP(
            [ConstantKernel(1.0, "fixed") * RBF(1.0), Matern(3.0, nu=1.5)],
            task_kernel=CoregionalizationKernel(t, rank=2, kappa=0.1),
            noise=np.full(t, 0.1),
            normalize_y=True,
            random_state=0,
        )
        record: dict[str, Any] = {}
        gp.set_params(optimizer=recording_lbfgsb(record, max_iter or None))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit_grid(coords[1:], np.moveaxis(data, 0, -1))
        inner = gp.grid_gp_
        out[name] = {
            "fit_s": time.perf_counter() - t0,
            "route": inner.solver_info_.path,
            "lml": float(inner.log_marginal_likelihood_value_),
            "evaluations": record["nfev"],
            "load": load_average(),
        }
    out["ratio"] = out["heterotopic"]["fit_s"] / out["complete"]["fit_s"]
    return out


def held_out(seed: int, n_sites: int, n_days: int) -> dict[str, Any]:  # noqa: PLR0915
    """RMSE / coverage at held-out whole stations and random cells, three models."""
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0, 10, (n_sites, 2))
    days = np.arange(n_days, dtype=float)
    short = draw_field(sites, days, 1.0, rng)
    long = draw_field(sites, days, 5.0, rng)
    f = np.stack([short + 0.4 * long, 0.3 * short + long])  # (2, sites, days)
    noise = np.array([0.02, 0.1])
    Y = f + np.sqrt(noise)[:, None, None] * rng.standard_normal(f.shape)
    held = rng.choice(n_sites, 6, replace=False)
    keep = np.setdiff1d(np.arange(n_sites), held)
    train = Y[:, keep].copy()
    train[1][rng.random(train[1].shape) < 0.3] = np.nan
    cells = ~np.isnan(train) & (rng.random(train.shape) < 0.1)
    train[cells] = np.nan
    mu = np.nanmean(train, axis=(1, 2))
    sd = np.nanstd(train, axis=(1, 2))
    Z = (train - mu[:, None, None]) / sd[:, None, None]
    coords = [sites[keep], days]
    test_grid = [sites[held], days]
    preds: dict[str, Any] = {}
    times: dict[str, float] = {}

    def space(length: float) -> Any:
        return ConstantKernel(1.0) * RBF(length, (0.1, 100.0))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        ind = [
            KroneckerGP([space(2.0), Matern(8.0, nu=1.5)], noise=0.1).fit_grid(
                coords, Z[k]
            )
            for k in range(2)
        ]
        times["independent"] = time.perf_counter() - t0
        preds["independent"] = [
            _grid_moments(g, test_grid, coords, g.noise_) for g in ind
        ]
        for model, n_latent in (("icm", 1), ("lmc", 2)):
            kernel: Any = [RBF(2.0, (0.1, 100.0)), Matern(8.0, nu=1.5)]
            if n_latent == 2:
                kernel = [
                    [RBF(1.0, (0.1, 100.0)), Matern(8.0, nu=1.5)],
                    [RBF(5.0, (0.1, 100.0)), Matern(8.0, nu=1.5)],
                ]
            t0 = time.perf_counter()
            gp = MultiTaskGP(
                kernel,
                model=model,
                n_latent=n_latent,
                task_kernel=(
                    CoregionalizationKernel(2, rank=1, kappa=0.1)
                    if n_latent == 1
                    else [CoregionalizationKernel(2, rank=1, kappa=0.1)] * 2
                ),
                noise=np.array([0.1, 0.1]),
                random_state=0,
            ).fit_grid(coords, np.moveaxis(Z, 0, -1))
            times[model] = time.perf_counter() - t0
            inner = gp.grid_gp_
            noise_t = np.asarray(gp.noise_)
            rows = [np.arange(2.0), *test_grid]
            m, s = inner.predict_grid(rows, return_std=True)
            mc, sc = inner.predict_grid([np.arange(2.0), *coords], return_std=True)
            preds[model] = [
                (
                    m[k],
                    np.sqrt(s[k] ** 2 + noise_t[k]),
                    mc[k],
                    np.sqrt(sc[k] ** 2 + noise_t[k]),
                )
                for k in range(2)
            ]
    out: dict[str, Any] = {"times_s": times, "load": load_average()}
    for name, per in preds.items():
        rows = {}
        for k in range(2):
            m, s, mc, sc = per[k]
            m, s = m * sd[k] + mu[k], s * sd[k]
            mc, sc = mc * sd[k] + mu[k], sc * sd[k]
            err = m - Y[k, held]
            ck = cells[k]
            errc = mc[ck] - Y[k, keep][ck]
            rows[f"var{k}"] = {
                "stations_rmse": float(np.sqrt(np.mean(err**2))),
                "stations_cover": float(np.mean(np.abs(err) <= 1.96 * s)),
                "cells_rmse": float(np.sqrt(np.mean(errc**2))),
                "cells_cover": float(np.mean(np.abs(errc) <= 1.96 * sc[ck])),
            }
        out[name] = rows
    return out


def _total(latent_sd: np.ndarray, noise: float) -> np.ndarray:
    return np.sqrt(latent_sd**2 + noise)


def _grid_moments(gp: Any, test: list, train: list, noise: float) -> tuple:
    m, s = gp.predict_grid(test, return_std=True)
    mc, sc = gp.predict_grid(train, return_std=True)
    return m, np.sqrt(s**2 + noise), mc, np.sqrt(sc**2 + noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise-rows", nargs="*", default=[], type=parse_shape)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--heterotopic", nargs="*", default=[], type=parse_shape)
    parser.add_argument("--missing", type=float, default=0.3)
    parser.add_argument(
        "--max-iter", type=int, default=0, help="L-BFGS-B iteration cap (0: none)"
    )
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="write JSON here")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine_info()}
    for shape in args.noise_rows:
        row = noise_rows(shape, args.repeat)
        results.setdefault("noise_rows", []).append(row)
        print(json.dumps(row), flush=True)
    for shape in args.heterotopic:
        row = heterotopic(shape, args.missing, args.max_iter)
        results.setdefault("heterotopic", []).append(row)
        print(json.dumps(row), flush=True)
    if args.held_out:
        for seed in args.seeds:
            row = held_out(seed, 40, 60)
            results.setdefault("held_out", []).append(row)
            print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
