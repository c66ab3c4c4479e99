"""Benchmark the spatio-temporal Kalman LML + gradient (issue 11, item 3).

Cases (synthetic, one exact draw from the model, seeded):

``pm10``
    43 sites x 730 days, Matern-1/2 time kernel, ~9 % of the cells missing
    (8.8 % at random plus one station out for 60 days): the shape of a real daily
    PM10 record.
``large``
    150 sites x 2000 days, Matern-3/2 time kernel (state order 2), same
    missing pattern.

For each case: one LML and one LML + gradient by
``kronecker_gp.linalg._spacetime.spacetime_lml`` and the posterior mean and
variance at every cell by ``spacetime_posterior`` (best of ``--repeat``, wall
and CPU seconds: CPU time is steadier on a shared machine), the flop estimate
of ``spacetime_cost`` and the rate it implies. With
``--compare``, the same LML + gradient through the existing route,
``KroneckerGP(..., solver="exact" | "cg").log_marginal_likelihood(theta,
eval_gradient=True)`` after ``fit_grid`` with fixed hyperparameters (the Schur
complement on the missing cells), and the differences of the values. With
``--optimise``, L-BFGS-B on the Kalman LML from a fixed start, and the
existing ``KroneckerGP`` optimisation of the same start on the complete grid
of the same shape (the issue's reference) and, with ``--optimise-missing``,
on the grid with missing cells.

Timings are single-threaded (``OPENBLAS_NUM_THREADS=1`` unless set)::

    python benchmarks/bench_spacetime.py --case pm10 --compare --optimise \
        --optimise-missing
    python benchmarks/bench_spacetime.py --case large
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kronecker_gp import KroneckerGP  # noqa: E402
from kronecker_gp.kernels._markov import kernel_to_state_space  # noqa: E402
from kronecker_gp.linalg._spacetime import (  # noqa: E402
    spacetime_cost,
    spacetime_lml,
    spacetime_posterior,
)
from kronecker_gp.linalg.kalman._model import discretize  # noqa: E402

CASES = {"pm10": (43, 730, 0.5), "large": (150, 2000, 1.5)}
#: Log-hyperparameters that draw the data: amplitude, space length, time length,
#: noise variance; and the fixed start of the optimisations.
THETA_TRUE = np.log([1.0, 3.0, 20.0, 0.1])
THETA_START = np.log([0.5, 1.5, 8.0, 0.3])


def kernels(theta: np.ndarray, nu: float) -> tuple[Any, Any]:
    amp, ls, lt = np.exp(theta[:3])
    space = ConstantKernel(amp, (1e-3, 1e3)) * RBF(ls, (1e-2, 1e3))
    return space, Matern(lt, (1e-1, 1e4), nu=nu)


def draw(n_s: int, n_t: int, nu: float, seed: int) -> dict[str, Any]:
    """Sites, times and one draw of the model with ~9 % of the cells missing."""
    rng = np.random.default_rng(seed)
    xs, t = rng.uniform(0.0, 10.0, (n_s, 2)), np.arange(n_t, dtype=float)
    space, time_k = kernels(THETA_TRUE, nu)
    L_s = np.linalg.cholesky(space(xs) + 1e-10 * np.eye(n_s))
    ssm = kernel_to_state_space(time_k)
    A, Q = discretize(ssm, [1.0])
    vals, vecs = np.linalg.eigh(Q[0])
    root_q = vecs * np.sqrt(np.maximum(vals, 0.0))
    u = rng.standard_normal((n_s, ssm.state_dim)) @ np.linalg.cholesky(ssm.Pinf).T
    f = np.empty((n_s, n_t))
    for k in range(n_t):
        if k:
            u = u @ A[0].T + rng.standard_normal(u.shape) @ root_q.T
        f[:, k] = L_s @ (u @ ssm.H[0])
    Y = f + np.sqrt(np.exp(THETA_TRUE[3])) * rng.standard_normal(f.shape)
    Y[rng.random(Y.shape) < 0.088] = np.nan
    Y[n_s // 2, n_t // 3 : n_t // 3 + 60] = np.nan
    return {"xs": xs, "t": t, "Y": Y, "nu": nu}


def kalman_lml(case: dict[str, Any], theta: np.ndarray, grad: bool) -> Any:
    """The spacetime LML (and gradient in KroneckerGP's theta order)."""
    space, time_k = kernels(theta, case["nu"])
    K_s, dK_s = space(case["xs"], eval_gradient=True)
    ssm = kernel_to_state_space(time_k)
    A, Q, dA, dQ = discretize(ssm, [1.0], eval_gradient=True)
    model = {"A": A[0], "Q": Q[0], "P_inf": ssm.Pinf, "H": ssm.H}
    model["noise"] = float(np.exp(theta[3]))
    if not grad:
        return spacetime_lml(case["Y"], K_s, **model)
    derivs = {"dK_s": np.moveaxis(dK_s, -1, 0), "dA": dA[0], "dQ": dQ[0]}
    return spacetime_lml(
        case["Y"], K_s, **model, eval_gradient=True, **derivs, dP_inf=ssm.dPinf
    )


def kalman_posterior(case: dict[str, Any], theta: np.ndarray) -> Any:
    """Smoothed mean and variance at every cell (the fit + predict-std analogue)."""
    space, time_k = kernels(theta, case["nu"])
    ssm = kernel_to_state_space(time_k)
    A, Q = discretize(ssm, [1.0])
    return spacetime_posterior(
        case["Y"],
        space(case["xs"]),
        A=A[0],
        Q=Q[0],
        P_inf=ssm.Pinf,
        H=ssm.H,
        noise=float(np.exp(theta[3])),
    )


def best(fn: Any, repeat: int) -> tuple[Any, float, float]:
    """Return the result, the best wall time and the best CPU time."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, min(walls), min(cpus)


def bench_kalman(case: dict[str, Any], repeat: int) -> dict[str, Any]:
    n_s, n_t = case["Y"].shape
    d = int(case["nu"] + 0.5)
    lml, lml_s, lml_c = best(lambda: kalman_lml(case, THETA_TRUE, False), repeat)
    (_, grad), grad_s, grad_c = best(lambda: kalman_lml(case, THETA_TRUE, True), repeat)
    _, post_s, post_c = best(lambda: kalman_posterior(case, THETA_TRUE), repeat)
    flops = spacetime_cost(n_s, n_t, d, grad.size)
    return {
        "lml": lml,
        "lml_seconds": lml_s,
        "lml_cpu_seconds": lml_c,
        "lml_grad_seconds": grad_s,
        "lml_grad_cpu_seconds": grad_c,
        "posterior_seconds": post_s,
        "posterior_cpu_seconds": post_c,
        "grad": grad.tolist(),
        "cost_flops": flops,
        "gflops_per_cpu_s": flops / grad_c / 1e9,
    }


def gp_model(case: dict[str, Any], theta: np.ndarray, **kw: Any) -> KroneckerGP:
    space, time_k = kernels(theta, case["nu"])
    return KroneckerGP([space, time_k], noise=float(np.exp(theta[3])), **kw)


def bench_existing(case: dict[str, Any], solver: str) -> dict[str, Any]:
    gp = gp_model(case, THETA_TRUE, optimizer=None, solver=solver)
    coords = [case["xs"], case["t"][:, None]]
    _, fit_s, _ = best(lambda: gp.fit_grid(coords, case["Y"]), 1)
    (lml, grad), secs, cpu = best(
        lambda: gp.log_marginal_likelihood(THETA_TRUE, eval_gradient=True), 1
    )
    return {
        "path": gp.solver_info_.path,
        "fit_seconds": fit_s,
        "lml_grad_seconds": secs,
        "lml_grad_cpu_seconds": cpu,
        "lml": lml,
        "grad": list(grad),
    }


def optimise_kalman(case: dict[str, Any]) -> dict[str, Any]:
    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        lml, grad = kalman_lml(case, theta, True)
        return -lml, -grad

    bounds = [(-7, 7), (-4.6, 6.9), (-2.3, 9.2), (np.log(1e-6), np.log(1e5))]
    res, secs, cpu = best(
        lambda: minimize(fun, THETA_START, jac=True, method="L-BFGS-B", bounds=bounds),
        1,
    )
    return {
        "path": "spacetime-kalman",
        "seconds": secs,
        "cpu_seconds": cpu,
        "nfev": int(res.nfev),
        "lml": float(-res.fun),
        "theta": res.x.tolist(),
    }


def optimise_existing(case: dict[str, Any], complete: bool) -> dict[str, Any]:
    Y = case["Y"]
    if complete:  # the same shape with every cell: the reference
        Y = np.where(np.isnan(Y), np.nanmean(Y), Y)
    gp = gp_model(case, THETA_START)
    _, secs, cpu = best(lambda: gp.fit_grid([case["xs"], case["t"][:, None]], Y), 1)
    return {
        "path": gp.solver_info_.path,
        "seconds": secs,
        "cpu_seconds": cpu,
        "lml": float(gp.log_marginal_likelihood_value_),
        "theta": gp.theta_.tolist(),
    }


def report_kalman(name: str, out: dict[str, Any]) -> None:
    (n_s, n_t), k = out["shape"], out["kalman"]
    print(
        f"{name}: {n_s} x {n_t}, nu={out['nu']}, {out['missing']} missing cells "
        f"({out['missing'] / (n_s * n_t):.1%}); seconds wall (cpu)"
    )
    print(
        f"  kalman LML {k['lml_seconds']:.3f} ({k['lml_cpu_seconds']:.3f}), "
        f"LML+grad {k['lml_grad_seconds']:.3f} ({k['lml_grad_cpu_seconds']:.3f}), "
        f"posterior mean+var {k['posterior_seconds']:.3f} "
        f"({k['posterior_cpu_seconds']:.3f}); {k['cost_flops']:.3g} estimated "
        f"flops, {k['gflops_per_cpu_s']:.1f} Gflop/cpu-s"
    )


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    n_s, n_t, nu = CASES[name]
    case = draw(n_s, n_t, nu, args.seed)
    out: dict[str, Any] = {
        "shape": [n_s, n_t],
        "nu": nu,
        "missing": int(np.isnan(case["Y"]).sum()),
    }
    out["kalman"] = k = bench_kalman(case, args.repeat)
    report_kalman(name, out)
    for solver in ("exact", "cg") if args.compare else ():
        e = out[solver] = bench_existing(case, solver)
        rel = np.abs(np.subtract(e["grad"], k["grad"])).max() / np.abs(k["grad"]).max()
        print(
            f"  KroneckerGP solver={solver!r} ({e['path']}): "
            f"fit {e['fit_seconds']:.2f}, LML+grad {e['lml_grad_seconds']:.3f} "
            f"({e['lml_grad_cpu_seconds']:.3f});"
            f" LML - kalman {e['lml'] - k['lml']:.2e}, grad rel diff {rel:.1e}"
        )
    runs = []
    if args.optimise:
        runs = [("optimise_kalman", lambda: optimise_kalman(case))]
        runs.append(("optimise_complete", lambda: optimise_existing(case, True)))
    if args.optimise_missing:
        runs.append(("optimise_missing", lambda: optimise_existing(case, False)))
    for key, run in runs:
        o = out[key] = run()
        print(
            f"  {key} ({o['path']}): {o['seconds']:.2f} ({o['cpu_seconds']:.2f}), "
            f"LML {o['lml']:.4f}, theta {np.round(np.exp(o['theta']), 3).tolist()}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="pm10")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also time KroneckerGP solver='exact' and 'cg'",
    )
    parser.add_argument("--optimise", action="store_true")
    parser.add_argument("--optimise-missing", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    print(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    names = list(CASES) if args.case == "all" else [args.case]
    results = {name: run_case(name, args) for name in names}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
