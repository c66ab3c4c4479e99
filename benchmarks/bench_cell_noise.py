"""Benchmark KroneckerGP with known per-cell noise on a grid with missing cells.

The problem of ``_common.make_problem`` (``n_sites x n_times``, noise 0.1) gets
extra heteroscedastic noise: cell ``i`` has known variance ``v_i = 0.1 + u_i``,
``u_i ~ U(0, 1.9)`` (a spread of 20), and a random share of the cells is
missing. With the hyperparameters fixed at ``THETA_TRUE`` it times, in one
process:

* ``fit_grid`` on the complete grid with scalar noise (the reference),
* ``fit_grid`` on the complete grid with the per-cell noise,
* ``fit_grid`` with the missing cells and scalar noise (Schur path),
* ``fit_grid`` with the missing cells and the per-cell noise (observed-cell CG
  preconditioned through the Schur complement), with outer and inner CG
  iterations,
* one estimated log marginal likelihood + gradient on the last, with its
  standard error (and on the complete grid with per-cell noise),
* predictions on the last: the grid mean, the exact std at 20 scattered
  points, and the std on the whole grid (sampled correction),

with ``--opt-size`` it optimises the kernel and the noise scale from
``THETA_START``, and on ``--check-size`` it compares the posterior mean and
the LML with scikit-learn's ``GaussianProcessRegressor`` on the observed rows.

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cell_noise.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - the helper module sits next to this script
    THETA_START,
    THETA_TRUE,
    factor_kernels,
    grid_rows,
    load_average,
    machine_info,
    make_problem,
    measure,
    parse_size,
)

from kronecker_gp import KroneckerGP  # noqa: E402
from kronecker_gp.kernels import KroneckerKernel  # noqa: E402

NOISE = float(np.exp(THETA_TRUE[3]))


def make_case(
    size: tuple[int, int], share: float, seed: int = 1
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Return coords, targets ``Y``, known variances ``v`` and the missing mask."""
    sites, times, Y = make_problem(*size)
    rng = np.random.default_rng(seed)
    extra = rng.uniform(0.0, 19 * NOISE, size=Y.shape)
    Y = Y + np.sqrt(extra) * rng.standard_normal(Y.shape)
    return [sites, times], Y, NOISE + extra, rng.random(Y.shape) < share


def _model(noise: float | np.ndarray) -> KroneckerGP:
    return KroneckerGP(
        factor_kernels(THETA_TRUE),
        noise=noise,
        noise_bounds="fixed",
        optimizer=None,
        random_state=0,
    )


def run_case(size: tuple[int, int], share: float, repeat: int) -> dict[str, Any]:
    """Time the four fits and one LML + gradient; returns a JSON-able record."""
    coords, Y, v, mask = make_case(size, share)
    Yn, vn = np.where(mask, np.nan, Y), np.where(mask, np.nan, v)
    rec: dict[str, Any] = {"size": f"{size[0]}x{size[1]}", "missing_share": share}
    for name, noise, data in [
        ("complete_scalar", NOISE, Y),
        ("complete_cells", v, Y),
        ("missing_scalar", NOISE, Yn),
        ("missing_cells", vn, Yn),
    ]:
        rec[f"fit_{name}_s"] = measure(
            lambda noise=noise, data=data: _model(noise).fit_grid(coords, data), repeat
        )["median"]
        info = _model(noise).fit_grid(coords, data).solver_info_
        rec[f"{name}_path"] = info.path
        rec[f"{name}_iterations"] = info.iterations
        rec[f"{name}_inner_iterations"] = info.extra.get("inner_iterations")
        print(f"{name:>16}: {rec[f'fit_{name}_s']:.3f} s {info}", flush=True)
    gp_complete = _model(v).fit_grid(coords, Y)
    t0 = time.perf_counter()
    gp_complete.log_marginal_likelihood(gp_complete.theta_, eval_gradient=True)
    rec["lml_grad_complete_cells_s"] = time.perf_counter() - t0
    gp = _model(vn).fit_grid(coords, Yn)
    t0 = time.perf_counter()
    _, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    rec["lml_grad_s"] = time.perf_counter() - t0
    rec.update(_predict_times(gp, coords))
    rec["lml"] = gp.log_marginal_likelihood_value_
    rec["lml_std_error"] = gp.solver_info_.lml_std_error
    rec["fit_ratio_vs_complete"] = (
        rec["fit_missing_cells_s"] / rec["fit_complete_scalar_s"]
    )
    print(
        f"LML+grad {rec['lml_grad_s']:.1f} s, LML {rec['lml']:.2f} "
        f"+- {rec['lml_std_error']:.2f}, grad {np.round(grad, 2)}",
        flush=True,
    )
    return rec


def _predict_times(gp: KroneckerGP, coords: list[np.ndarray]) -> dict[str, float]:
    """Time the grid mean, 20 exact std at scattered points, the grid std."""
    out = {}
    t0 = time.perf_counter()
    gp.predict_grid(coords)
    out["predict_grid_mean_s"] = time.perf_counter() - t0
    X = grid_rows(*coords)[:: max(1, coords[0].shape[0] * 5)][:20] + 0.25
    t0 = time.perf_counter()
    gp.predict(X, return_std=True)
    out["predict_std_20_points_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gp.predict_grid(coords, return_std=True)  # sampled correction (n_probes)
    out["predict_grid_std_s"] = time.perf_counter() - t0
    print(f"predict {out}", flush=True)
    return out


def dense_check(size: tuple[int, int], share: float) -> dict[str, Any]:
    """Posterior mean and LML against sklearn on the observed rows."""
    from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: PLC0415

    coords, Y, v, mask = make_case(size, share)
    X, obs = grid_rows(*coords), ~mask.reshape(-1)
    kk = KroneckerKernel(factor_kernels(THETA_TRUE), axes=[[0, 1], [2]])
    ref = GaussianProcessRegressor(kk, alpha=v.reshape(-1)[obs], optimizer=None)
    ref.fit(X[obs], Y.reshape(-1)[obs])
    m_ref = ref.predict(X)
    gp = _model(np.where(mask, np.nan, v)).fit_grid(coords, np.where(mask, np.nan, Y))
    m = gp.predict_grid(coords).reshape(-1)
    exact = ref.log_marginal_likelihood_value_
    out = {
        "size": f"{size[0]}x{size[1]}",
        "path": gp.solver_info_.path,
        "mean_rel_err": float(np.abs(m - m_ref).max() / np.abs(m_ref).max()),
        "lml": gp.log_marginal_likelihood_value_,
        "lml_exact": exact,
        "lml_std_error": gp.solver_info_.lml_std_error,
    }
    print(f"dense check {out}", flush=True)
    return out


def optimise(size: tuple[int, int], share: float) -> dict[str, Any]:
    """Optimise the kernel and the noise scale from ``THETA_START`` (scale 1)."""
    coords, Y, v, mask = make_case(size, share)
    gp = KroneckerGP(
        factor_kernels(THETA_START), noise=np.where(mask, np.nan, v), random_state=0
    )
    t0 = time.perf_counter()
    gp.fit_grid(coords, np.where(mask, np.nan, Y))
    out = {
        "size": f"{size[0]}x{size[1]}",
        "seconds": time.perf_counter() - t0,
        "theta": gp.theta_.tolist(),
        "theta_true": [*THETA_TRUE[:3].tolist(), 0.0],
        "path": gp.solver_info_.path,
    }
    print(f"optimisation {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200x250")
    parser.add_argument("--missing", type=float, default=0.3)
    parser.add_argument("--check-size", default="40x50")
    parser.add_argument("--opt-size", default="")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results_cell_noise.json")
    args = parser.parse_args(argv)
    record: dict[str, Any] = {"machine": machine_info(), "load_before": load_average()}
    if args.check_size:
        record["check"] = dense_check(parse_size(args.check_size), args.missing)
    record["cases"] = [
        run_case(parse_size(s), args.missing, args.repeat)
        for s in filter(None, args.sizes.split(","))
    ]
    if args.opt_size:
        record["optimisation"] = optimise(parse_size(args.opt_size), args.missing)
    record["load_after"] = load_average()
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
