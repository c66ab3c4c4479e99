"""Benchmark several targets on one grid against one target (issue 12, item 3).

For each size ``n_sites x n_times`` and number of targets ``T`` it times, in one
process, ``KroneckerGP.fit_grid`` with fixed hyperparameters and one
``log_marginal_likelihood`` with its gradient, for ``Y`` of shape
``(n_sites, n_times)`` and ``(n_sites, n_times, T)`` (independent draws from
the same GP), and prints the ratio. The issue's target: 10 targets at
1000 x 1000 cost at most 2x one target. With ``--missing F`` each target
misses its own random fraction ``F`` of cells (one route per target).

Run ``python benchmarks/bench_multi_target.py --sizes 300x300,1000x1000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - the helper module sits next to this script
    THETA_TRUE,
    factor_kernels,
    make_problem,
    measure,
    parse_size,
)

from kronecker_gp import KroneckerGP  # noqa: E402


def _targets(n_sites: int, n_times: int, n_targets: int) -> tuple:
    sites, times, _ = make_problem(n_sites, n_times, seed=0)
    Y = np.stack(
        [make_problem(n_sites, n_times, seed=t)[2] for t in range(n_targets)], axis=-1
    )
    return sites, times, Y


def _time_one(
    label: str, sites: np.ndarray, times: np.ndarray, data: np.ndarray, noise: float
) -> dict:
    gp = KroneckerGP(factor_kernels(THETA_TRUE), noise=noise, optimizer=None)
    fit = measure(lambda: gp.fit_grid([sites, times], data), repeat=3)
    theta = gp.theta_  # 3 kernel log-hyperparameters and the log-noise
    grad = measure(
        lambda: gp.log_marginal_likelihood(theta, eval_gradient=True), repeat=3
    )
    return {
        f"fit_{label}": fit["median"],
        f"lml_grad_{label}": grad["median"],
        f"path_{label}": gp.solver_info_.path,
    }


def run(size: tuple[int, int], n_targets: int, missing: float) -> dict:
    """Time fit and LML+grad for one target and for ``n_targets`` targets."""
    n_sites, n_times = size
    sites, times, Y = _targets(n_sites, n_times, n_targets)
    if missing > 0:
        rng = np.random.default_rng(1)
        Y[rng.random(Y.shape) < missing] = np.nan
    noise = float(np.exp(THETA_TRUE[3]))
    out: dict = {"size": f"{n_sites}x{n_times}", "n_targets": n_targets}
    for label, data in (("one", Y[..., 0]), ("many", Y)):
        out.update(_time_one(label, sites, times, data, noise))
    out["fit_ratio"] = out["fit_many"] / out["fit_one"]
    out["lml_grad_ratio"] = out["lml_grad_many"] / out["lml_grad_one"]
    out["load"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    """Parse the options, run every size, print a markdown table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200x200,500x500,1000x1000")
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--missing", type=float, default=0.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [
        run(parse_size(s), args.targets, args.missing) for s in args.sizes.split(",")
    ]
    print(
        "| grid | targets | missing | fit 1 | fit T | ratio | LML+grad 1 | "
        "LML+grad T | ratio | route (T) | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['n_targets']} | {args.missing:.0%} | "
            f"{r['fit_one']:.3g} s | {r['fit_many']:.3g} s | {r['fit_ratio']:.2f}x | "
            f"{r['lml_grad_one']:.3g} s | {r['lml_grad_many']:.3g} s | "
            f"{r['lml_grad_ratio']:.2f}x | {r['path_many']} | {r['load'][0]} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
