"""Benchmark a two-term SeparableSum against the single product kernel on a grid.

The data are one exact draw on an ``n_sites x n_times`` grid (sites 2-D in
``[0, 10]^2``, times ``0, 1, ...``) from "a regional day effect plus a local
field": ``ConstantKernel (x) Matern-0.5(3)`` plus
``ConstantKernel * RBF(2) (x) Matern-1.5(10)``, noise 0.1. At fixed
hyperparameters it times, per size:

* ``fit_grid`` with the single product kernel (the complete-grid eigen route),
* ``fit_grid`` with the two-term sum on the exact Woodbury route (where its
  ``N P`` memory fits) and on the CG route (``solver="cg"``),
* one LML + gradient on each (the CG route's is estimated; its standard error
  is printed),

and prints a markdown table with the ratios to the single-term timings and the
machine load (``os.getloadavg()``) before and after. ``--opt`` also times one
full fit with hyperparameter optimisation at the first size.

``--ozone-missing`` times the case of notebook 06 instead: daily ozone at
the 143 stations of ``load_ozone2()`` left after holding 10 out, with 10 %
of the cells hidden at random (1,723 missing cells with the record's own
gaps), a regional day effect plus a local field, fitted with
hyperparameter optimisation; against the same model on the 57 complete
stations (the complete-grid Woodbury route) and the single product kernel on
the same cells; ``--schur-fit`` also times the full optimised fit on the
Woodbury-Schur route (``state_space=None``, minutes).

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_separable_sum.py --sizes
40x40 80x80`` (the defaults, 200x200 and 500x500, take minutes).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, parse_size  # noqa: E402 - helper next to this script

from kronecker_gp import KroneckerGP  # noqa: E402 - after the path setup
from kronecker_gp.kernels import SeparableSum  # noqa: E402

NOISE = 0.1


def sum_kernel() -> SeparableSum:
    """Return the two-term kernel: regional day effect + local field."""
    return SeparableSum(
        [
            [ConstantKernel(1.0), Matern(3.0, nu=0.5)],
            [ConstantKernel(1.0) * RBF(2.0), Matern(10.0, nu=1.5)],
        ]
    )


def single_kernels() -> list[Any]:
    """Return the single product kernel of the same shape."""
    return [ConstantKernel(1.0) * RBF(2.0), Matern(10.0, nu=1.5)]


def make_data(n_s: int, n_t: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Return sites, times and one exact draw ``Y`` from the two-term model."""
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0.0, 10.0, size=(n_s, 2))
    times = np.arange(n_t, dtype=float)
    Y = math.sqrt(NOISE) * rng.standard_normal((n_s, n_t))
    kernel = sum_kernel().set_params(axes=[[0, 1], [2]])
    for term in kernel.term_grams([sites, times]):
        roots = []
        for gram in term:
            w, u = np.linalg.eigh(gram)
            roots.append(u * np.sqrt(np.maximum(w, 0.0)))
        Y += roots[0] @ rng.standard_normal((n_s, n_t)) @ roots[1].T
    return sites, times, Y


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Return the wall time of one call and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_size(n_s: int, n_t: int, cg_max_cells: int) -> dict[str, Any]:
    """Time the fits and the LML + gradient at one size (CG up to a size)."""
    sites, times, Y = make_data(n_s, n_t)
    coords = [sites, times]
    row: dict[str, Any] = {"size": f"{n_s}x{n_t}"}

    def fit(kernels: Any, **kw: Any) -> KroneckerGP:
        return KroneckerGP(kernels, noise=NOISE, optimizer=None, **kw).fit_grid(
            coords, Y
        )

    row["fit_single"], one = timed(lambda: fit(single_kernels()))
    row["lml_single"], _ = timed(
        lambda: one.log_marginal_likelihood(one.theta_, eval_gradient=True)
    )
    row["fit_wood"], wood = timed(lambda: fit(sum_kernel()))
    row["path_wood"] = wood.solver_info_.path
    if row["path_wood"] == "separable-sum-woodbury":
        row["lml_wood"], (lml, _) = timed(
            lambda: wood.log_marginal_likelihood(wood.theta_, eval_gradient=True)
        )
        row["lml_value"] = lml
    row["fit_cg"] = row["lml_cg"] = None
    row["lml_cg_err"] = float("nan")
    if n_s * n_t > cg_max_cells:
        return row
    row["fit_cg"], cg = timed(lambda: fit(sum_kernel(), solver="cg"))
    row["cg_iterations"] = cg.solver_info_.iterations
    row["lml_cg"], (lml_cg, _) = timed(
        lambda: cg.log_marginal_likelihood(cg.theta_, eval_gradient=True)
    )
    row["lml_cg_value"] = lml_cg
    row["lml_cg_err"] = cg._factorize(need_lml=True).info.lml_std_error
    return row


def fmt(x: float | None) -> str:
    """Format seconds (or a dash)."""
    return "-" if x is None else f"{x:.3g}"


def ratio(x: float | None, ref: float) -> str:  # noqa: D103 - one line
    """Format a ratio to the single-term time (or a dash)."""
    return "-" if x is None else f"{x / ref:.1f}x"


def print_table(rows: list[dict[str, Any]], before: list[float]) -> None:
    """Print the markdown table and the load averages."""
    print(
        "| grid | single fit (s) | sum fit Woodbury (s) | ratio | sum fit CG (s) "
        "| ratio | single LML+grad (s) | sum LML+grad Woodbury (s) | ratio "
        "| sum LML+grad CG (s) | ratio | CG LML - exact (std err) |"
    )
    print("|" + "---|" * 12)
    for r in rows:
        wood = r.get("lml_wood")
        diff = "-"
        if r["lml_cg"] is not None and "lml_value" in r:
            diff = f"{r['lml_cg_value'] - r['lml_value']:+.3g} ({r['lml_cg_err']:.2g})"
        print(
            f"| {r['size']} | {fmt(r['fit_single'])} | {fmt(r['fit_wood'])} "
            f"| {ratio(r['fit_wood'], r['fit_single'])} | {fmt(r['fit_cg'])} "
            f"| {ratio(r['fit_cg'], r['fit_single'])} | {fmt(r['lml_single'])} "
            f"| {fmt(wood)} | {ratio(wood, r['lml_single'])} | {fmt(r['lml_cg'])} "
            f"| {ratio(r['lml_cg'], r['lml_single'])} | {diff} |"
        )
    print(
        f"\nload average (1, 5, 15 min) before {before}, after {load_average()}; "
        f"{os.cpu_count()} logical cores; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )


def ozone_problem() -> dict[str, Any]:
    """Return notebook 06's ozone grid: 143 stations, 10 % hidden, standardised."""
    from kronecker_gp.datasets import load_ozone2  # noqa: PLC0415 - this case only

    oz = load_ozone2()
    held = np.random.default_rng(1).choice(oz.data.shape[0], 10, replace=False)
    keep = np.setdiff1d(np.arange(oz.data.shape[0]), held)
    data, sites, days = oz.data[keep], oz.coords[0][keep], oz.coords[1]
    hide = np.random.default_rng(2).random(data.shape) < 0.10
    y = np.where(hide, np.nan, data)
    y = (y - np.nanmean(y)) / np.nanstd(y)
    complete = ~np.isnan(data).any(axis=1)
    full = (data[complete] - np.nanmean(data)) / np.nanstd(data)
    return {"sites": sites, "days": days, "y": y, "complete": complete, "full": full}


def ozone_sum_kernel() -> SeparableSum:
    """Return notebook 06's start: regional day effect + local field."""
    return SeparableSum(
        [
            [ConstantKernel(0.5), Matern(3.0, nu=1.5)],
            [ConstantKernel(0.5) * Matern(2.0, nu=0.5), Matern(2.0, nu=1.5)],
        ]
    )


def run_ozone(schur_fit: bool) -> None:
    """Time the ozone fits (see the module) and print a markdown table."""
    before = load_average()
    p = ozone_problem()
    coords = [p["sites"], p["days"]]
    product = [ConstantKernel(0.5) * Matern(2.0, nu=0.5), Matern(2.0, nu=1.5)]
    cases: list[tuple[str, Any, list[Any], Any, dict[str, Any]]] = [
        ("sum, 143 stations, 10 % missing", ozone_sum_kernel(), coords, p["y"], {}),
        (
            "sum, same, Woodbury-Schur (state_space=None)",
            ozone_sum_kernel(),
            coords,
            p["y"],
            {"state_space": None},
        ),
        ("product kernel, same cells", product, coords, p["y"], {}),
        (
            f"sum, the {int(p['complete'].sum())} complete stations",
            ozone_sum_kernel(),
            [p["sites"][p["complete"]], p["days"]],
            p["full"],
            {},
        ),
    ]
    print(
        "| model | route | missing | one LML+grad (s) | optimised fit (s) | LML |\n"
        "|---|---|---:|---:|---:|---:|"
    )
    for name, kernel, cs, y, kw in cases:
        fixed = KroneckerGP(kernel, noise=0.1, optimizer=None, **kw).fit_grid(cs, y)
        t_lml, _ = timed(
            lambda g=fixed: g.log_marginal_likelihood(g.theta_, eval_gradient=True)
        )
        t_fit, lml = None, float("nan")
        if schur_fit or "Schur" not in name:
            t_fit, gp = timed(
                lambda k=kernel, c=cs, v=y, o=kw: KroneckerGP(
                    k, noise=0.1, **o
                ).fit_grid(c, v)
            )
            lml = gp.log_marginal_likelihood_value_
        print(
            f"| {name} | {fixed.solver_info_.path} | {fixed.solver_info_.n_missing} "
            f"| {t_lml:.3g} | {fmt(t_fit)} | {lml:.1f} |"
        )
    print(
        f"\nload average (1, 5, 15 min) before {before}, after {load_average()}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )


def main() -> None:
    """Parse the sizes, run them and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["200x200", "500x500"])
    parser.add_argument("--opt", action="store_true", help="time one optimised fit")
    parser.add_argument(
        "--ozone-missing",
        action="store_true",
        help="time notebook 06's ozone fit with 10 %% missing cells instead",
    )
    parser.add_argument(
        "--schur-fit",
        action="store_true",
        help="with --ozone-missing, also the optimised Woodbury-Schur fit (minutes)",
    )
    parser.add_argument(
        "--cg-max-cells",
        type=int,
        default=20000,
        help="skip the CG route above this many cells (its estimates take minutes)",
    )
    args = parser.parse_args()
    if args.ozone_missing:
        run_ozone(args.schur_fit)
        return
    before = load_average()
    rows = [run_size(*parse_size(s), args.cg_max_cells) for s in args.sizes]
    print_table(rows, before)
    if args.opt:
        n_s, n_t = parse_size(args.sizes[0])
        sites, times, Y = make_data(n_s, n_t)
        t_sum, two = timed(
            lambda: KroneckerGP(sum_kernel(), noise=0.5).fit_grid([sites, times], Y)
        )
        t_one, one = timed(
            lambda: KroneckerGP(single_kernels(), noise=0.5).fit_grid([sites, times], Y)
        )
        print(
            f"\noptimised fit at {args.sizes[0]}: sum {t_sum:.3g} s (LML "
            f"{two.log_marginal_likelihood_value_:.2f}, {two.solver_info_.path}), "
            f"single {t_one:.3g} s (LML {one.log_marginal_likelihood_value_:.2f})"
        )


if __name__ == "__main__":
    main()
