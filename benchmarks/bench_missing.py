"""Benchmark KroneckerGP on grids with missing cells (issue: incomplete grids).

For each size ``n_sites x n_times`` and missing pattern (random 10/30/70 % of
cells, a block outage, a missing future time slice) it times, in one process:

* the complete-grid ``fit_grid`` with fixed hyperparameters (the reference),
* ``fit_grid`` with the missing cells (posterior weights: CG on the
  Schur complement ``P_mm``), with its path, CG iterations and residual,
* one log marginal likelihood + gradient (exact path or SLQ/Hutchinson),
* optionally (``--opt-sizes``) a full hyperparameter optimisation from the
  fixed start of ``_common.THETA_START``, with peak memory.

On the sizes given by ``--check-sizes`` it also checks the posterior mean and
the LML against scikit-learn's ``GaussianProcessRegressor`` on the observed
rows (dense), for ``solver="exact"``, ``"cg"`` and ``"slq"`` (the CG path with
the log-determinant estimator forced even where ``P_mm`` is cheap to factor).

``--gpytorch-sizes`` runs GPyTorch's masked Kronecker path on the same data
and start (see ``_gpytorch_missing.py``) with the same L-BFGS-B, recording
time, peak RSS and the LML (by KroneckerGP) of the theta it reaches.

Run ``python benchmarks/bench_missing.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize

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
    peak_memory,
)

from kronecker_gp import (
    KroneckerGP,  # noqa: E402
    _budgets,  # noqa: E402
)
from kronecker_gp.kernels import KroneckerKernel  # noqa: E402

PATTERNS = ["random-0.1", "random-0.3", "random-0.7", "block-outage", "future-slice"]


def make_mask(pattern: str, shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """Return a boolean mask of missing cells for ``pattern``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=bool)
    n_s, n_t = shape
    if pattern.startswith("random-"):
        mask = rng.random(shape) < float(pattern.split("-")[1])
    elif pattern == "block-outage":  # 10 % of the sites down for a third of the time
        sites = rng.choice(n_s, size=max(1, n_s // 10), replace=False)
        start = n_t // 3
        mask[np.ix_(sites, np.arange(start, start + n_t // 3))] = True
    elif pattern == "future-slice":  # the last 10 % of times, plus 5 % random
        mask[:, -max(1, n_t // 10) :] = True
        mask |= rng.random(shape) < 0.05
    return mask


def _model(theta: np.ndarray, optimizer: Any = None) -> KroneckerGP:
    return KroneckerGP(
        factor_kernels(theta),
        noise=float(np.exp(theta[3])),
        optimizer=optimizer,
        random_state=0,
    )


def run_case(size: tuple[int, int], pattern: str, repeat: int) -> dict[str, Any]:
    """Time one (size, pattern) case; returns a JSON-able record."""
    sites, times, Y = make_problem(*size)
    mask = make_mask(pattern, Y.shape)
    Yn = np.where(mask, np.nan, Y)
    complete = measure(lambda: _model(THETA_TRUE).fit_grid([sites, times], Y), repeat)
    gp = _model(THETA_TRUE).fit_grid([sites, times], Yn)
    missing = measure(lambda: _model(THETA_TRUE).fit_grid([sites, times], Yn), repeat)
    info = gp.solver_info_
    t0 = time.perf_counter()
    gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    lml_grad = time.perf_counter() - t0
    rec = {
        "size": f"{size[0]}x{size[1]}",
        "pattern": pattern,
        "missing_share": float(mask.mean()),
        "path": info.path,
        "n_missing_after_slices": info.n_missing,
        "grid_after_slices": gp.grid_.shape,
        "cg_iterations": info.iterations,
        "cg_residual": info.residual,
        "fit_complete_s": complete["median"],
        "fit_missing_s": missing["median"],
        "fit_ratio": missing["median"] / complete["median"],
        "lml_grad_s": lml_grad,
        "lml": gp.log_marginal_likelihood_value_,
        "lml_std_error": gp.solver_info_.lml_std_error,
    }
    print(
        f"{rec['size']:>9} {pattern:>13} {rec['missing_share']:6.1%} {info.path:>13} "
        f"it={info.iterations:4d} fit {rec['fit_missing_s']:.3f}s "
        f"(complete {rec['fit_complete_s']:.3f}s, x{rec['fit_ratio']:.1f}) "
        f"LML+grad {lml_grad:.2f}s",
        flush=True,
    )
    return rec


def dense_check(size: tuple[int, int], pattern: str) -> dict[str, Any]:
    """Posterior mean and LML against sklearn on the observed rows."""
    from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: PLC0415

    sites, times, Y = make_problem(*size)
    mask = make_mask(pattern, Y.shape)
    X, obs = grid_rows(sites, times), ~mask.reshape(-1)
    kk = KroneckerKernel(factor_kernels(THETA_TRUE), axes=[[0, 1], [2]])
    ref = GaussianProcessRegressor(
        kk, alpha=float(np.exp(THETA_TRUE[3])), optimizer=None
    )
    ref.fit(X[obs], Y.reshape(-1)[obs])
    m_ref = ref.predict(X)
    out: dict[str, Any] = {"size": f"{size[0]}x{size[1]}", "pattern": pattern}
    for solver in ("exact", "cg", "slq"):
        # "slq": the CG path with the log-determinant estimator forced even
        # where P_mm is cheap to factor
        saved = (_budgets.EXACT_FLOPS_BUDGET, _budgets.EXACT_PREFERENCE)
        if solver == "slq":
            _budgets.EXACT_FLOPS_BUDGET = _budgets.EXACT_PREFERENCE = 0.0
        try:
            gp = _model(THETA_TRUE)
            gp.set_params(solver="cg" if solver == "slq" else solver)
            gp.fit_grid([sites, times], np.where(mask, np.nan, Y))
            m = gp.predict_grid([sites, times]).reshape(-1)
            lml = gp.log_marginal_likelihood_value_
        finally:
            _budgets.EXACT_FLOPS_BUDGET, _budgets.EXACT_PREFERENCE = saved
        out[f"{solver}_mean_rel_err"] = float(
            np.abs(m - m_ref).max() / np.abs(m_ref).max()
        )
        out[f"{solver}_lml_rel_err"] = abs(
            lml - ref.log_marginal_likelihood_value_
        ) / abs(ref.log_marginal_likelihood_value_)
        out[f"{solver}_lml_rel_std_error"] = gp.solver_info_.lml_std_error / abs(
            ref.log_marginal_likelihood_value_
        )
        out[f"{solver}_logdet"] = gp.solver_info_.extra.get("logdet")
    print(f"dense check {out}", flush=True)
    return out


def optimise(size: tuple[int, int], pattern: str) -> dict[str, Any]:
    """Full hyperparameter optimisation from THETA_START, with time and memory."""
    sites, times, Y = make_problem(*size)
    Yn = np.where(make_mask(pattern, Y.shape), np.nan, Y)
    result: dict[str, Any] = {}

    def lbfgs(obj: Any, theta0: np.ndarray, bounds: Any) -> tuple[Any, float]:
        # the same scipy call as optimizer="fmin_l_bfgs_b", counting evaluations
        res = scipy.optimize.minimize(
            obj, theta0, method="L-BFGS-B", jac=True, bounds=bounds
        )
        result.update(evaluations=int(res.nfev), message=str(res.message))
        return res.x, float(res.fun)

    def run() -> None:
        t0 = time.perf_counter()
        gp = _model(THETA_START, optimizer=lbfgs).fit_grid([sites, times], Yn)
        result.update(
            seconds=time.perf_counter() - t0,
            theta=gp.theta_.tolist(),
            theta_true=THETA_TRUE.tolist(),
            path=gp.solver_info_.path,
            lml=gp.log_marginal_likelihood_value_,
            lml_std_error=gp.solver_info_.lml_std_error,
            solver_info=str(gp.solver_info_),
        )

    mem = peak_memory(run)
    result.update(size=f"{size[0]}x{size[1]}", pattern=pattern, memory=mem)
    print(f"optimisation {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200x250,500x500")
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--check-sizes", default="40x50,60x80")
    parser.add_argument("--opt-sizes", default="200x250,500x500")
    parser.add_argument("--gpytorch-sizes", default="")
    parser.add_argument("--gpytorch-iters", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results_missing.json")
    args = parser.parse_args(argv)
    record: dict[str, Any] = {"machine": machine_info(), "load_before": load_average()}
    record["checks"] = [
        dense_check(parse_size(s), "random-0.3")
        for s in filter(None, args.check_sizes.split(","))
    ]
    record["cases"] = [
        run_case(parse_size(s), p, args.repeat)
        for s in filter(None, args.sizes.split(","))
        for p in args.patterns.split(",")
    ]
    record["optimisation"] = [
        optimise(parse_size(s), "random-0.3")
        for s in filter(None, args.opt_sizes.split(","))
    ]
    if args.gpytorch_sizes:
        from _gpytorch_missing import gpytorch_optimise  # noqa: PLC0415

        record["gpytorch"] = [
            gpytorch_optimise(parse_size(s), "random-0.3", args.gpytorch_iters)
            for s in args.gpytorch_sizes.split(",")
        ]
    record["load_after"] = load_average()
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
