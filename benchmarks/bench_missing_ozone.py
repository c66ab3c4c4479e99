"""Hyperparameter search with missing cells on real data (ozone2, demo split).

Fits ``KroneckerGP`` on the training grid of ``kronecker-gp demo`` (ozone2,
hold-out seed 0: one station and 10 % of the other observed cells hidden, so
1,865 missing cells on 152 stations x 89 days) with the demo's kernels and
start, once per setting: the estimator defaults (``cg_tol=1e-10``, 32 probes),
the same with the search at ``cg_tol`` (``SEARCH_CG_TOL = 0``), and the CLI's
search settings (``cg_tol=1e-6``, 8 probes). For each it prints the wall time,
the theta reached, the estimated LML's standard error and the exact LML at
that theta (``solver="exact"``), as JSON lines.

Run ``python benchmarks/bench_missing_ozone.py`` (with ``PYTHONPATH`` at the
checkout to measure).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from kronecker_gp import KroneckerGP
from kronecker_gp import _budgets as kgp_module
from kronecker_gp.cli import make_kernel
from kronecker_gp.cli._demo import DEMOS, load, split_cells

SETTINGS: list[tuple[str, dict[str, Any], float | None]] = [
    ("defaults", {}, None),
    ("defaults, search at cg_tol", {}, 0.0),
    ("CLI search settings", {"cg_tol": 1e-6, "n_probes": 8}, None),
]


def run(params: dict[str, Any], search_tol: float | None) -> dict[str, Any]:
    """Fit once with ``params``; return time, theta and LML (estimated, exact)."""
    spec = DEMOS["ozone2"]
    loaded = load("ozone2", None)
    split = split_cells(loaded.data, np.random.default_rng(0))
    sites = np.delete(loaded.sites, split.station, axis=0)
    coords = [sites, loaded.times]
    kernels = [
        make_kernel(spec.space_kernel, spec.space_length, amplitude=True),
        make_kernel(spec.time_kernel, spec.time_length),
    ]
    saved = getattr(kgp_module, "SEARCH_CG_TOL", None)
    if search_tol is not None and saved is not None:
        kgp_module.SEARCH_CG_TOL = search_tol
    try:
        t0 = time.perf_counter()
        gp = KroneckerGP(
            kernels, noise=0.1, normalize_y=True, random_state=0, **params
        ).fit_grid(coords, split.train_rows)
        seconds = time.perf_counter() - t0
    finally:
        if saved is not None:
            kgp_module.SEARCH_CG_TOL = saved
    exact = KroneckerGP(
        gp.kernels_, noise=gp.noise_, normalize_y=True, optimizer=None, solver="exact"
    ).fit_grid(coords, split.train_rows)
    return {
        "seconds": seconds,
        "theta": gp.theta_.tolist(),
        "lml_estimate": gp.log_marginal_likelihood_value_,
        "lml_std_error": gp.solver_info_.lml_std_error,
        "lml_exact_at_theta": exact.log_marginal_likelihood_value_,
        "n_missing": gp.solver_info_.n_missing,
        "solver_extra": gp.solver_info_.extra,
    }


def main() -> None:
    """Print one JSON line per setting."""
    for name, params, search_tol in SETTINGS:
        if search_tol is not None and not hasattr(kgp_module, "SEARCH_CG_TOL"):
            continue  # code before the search tolerance existed
        print(json.dumps({"setting": name, **run(params, search_tol)}), flush=True)


if __name__ == "__main__":
    main()
