"""Benchmark the state-space (Kalman) route for long Markov time axes.

Cases (each runs in its own subprocess, so peak RSS is per case):

``wind``
    The full ``wind`` record, 12 stations x 6,574 days. One log marginal
    likelihood with its gradient (space amplitude and length scale, time
    length scale, noise) by the state-space route (eigh of the 12 x 12 space
    factor, rotation, Kalman filter with sensitivities, adjoint pass, chain
    rule) next to the eigen route of ``kronecker_gp.linalg._eigenbasis``
    (``factorize`` + ``lml_gradient`` with the dense 6,574 x 6,574 time
    factor). Reports both times, the speed-up and the relative differences
    of the LML and the gradient.
``synthetic``
    ``--sites`` x ``--steps`` (default 100 x 10^5) drawn exactly from the
    model (state-space simulation), regular daily steps or, with
    ``--irregular``, random gaps. Times one LML + gradient and, with
    ``--optimise``, a full L-BFGS-B fit of the four log-hyperparameters.

Run ``python benchmarks/bench_state_space.py --help``. The numbers in
``benchmarks/state_space_results.md`` come from
``python benchmarks/bench_state_space.py --out /tmp/ssm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.optimize
import sklearn
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kronecker_gp.datasets import load_wind  # noqa: E402
from kronecker_gp.kernels._markov import kernel_to_state_space  # noqa: E402
from kronecker_gp.linalg._eigenbasis import factorize, lml_gradient  # noqa: E402
from kronecker_gp.linalg.kalman._model import discretize  # noqa: E402
from kronecker_gp.solvers._kalman_series import (  # noqa: E402
    ssm_log_marginal_likelihood,
)

# theta = log [space amplitude, space length scale, time length scale, noise]
WIND_THETA = np.log([10.0, 2.0, 3.0, 8.0])
SYNTH_TRUE = np.log([1.0, 2.0, 20.0, 0.1])
SYNTH_START = np.log([0.5, 1.0, 10.0, 0.3])
BOUNDS = np.log([[1e-3, 1e3], [1e-2, 1e2], [1e-1, 1e4], [1e-4, 1e2]])


def kernels(theta: np.ndarray) -> tuple[Any, Any, float]:
    """Space kernel, time kernel and noise of the benchmark model."""
    c, ell_s, ell_t, noise = np.exp(theta)
    return ConstantKernel(c) * Matern(ell_s, nu=1.5), Matern(ell_t, nu=1.5), noise


def ssm_lml_grad(
    theta: np.ndarray, sites: np.ndarray, times: np.ndarray, Y: np.ndarray
) -> tuple[float, np.ndarray]:
    """LML and gradient by the state-space route (what the estimator will do)."""
    k_s, k_t, noise = kernels(theta)
    K_s, dK_s = k_s(sites, eval_gradient=True)
    w, U = np.linalg.eigh(K_s)
    w = np.maximum(w, 0.0)
    lml, g = ssm_log_marginal_likelihood(
        k_t, times, U.T @ Y, w, noise, eval_gradient=True
    )
    space = np.einsum("ijp,ij->p", dK_s, U @ g.space @ U.T)
    return lml, np.concatenate([space, g.theta, [g.log_noise]])


def eigen_lml_grad(
    theta: np.ndarray, sites: np.ndarray, times: np.ndarray, Y: np.ndarray
) -> tuple[float, np.ndarray, float]:
    """LML and gradient by the eigen route; also the Gram-construction time."""
    k_s, k_t, noise = kernels(theta)
    t0 = time.perf_counter()
    K_s, dK_s = k_s(sites, eval_gradient=True)
    K_t, dK_t = k_t(times[:, None], eval_gradient=True)
    grams = time.perf_counter() - t0
    post, lml = factorize([K_s, K_t], noise, Y.reshape(-1))
    return lml, lml_gradient(post, [dK_s, dK_t]), grams


def simulate(
    theta: np.ndarray, sites: np.ndarray, times: np.ndarray, seed: int
) -> np.ndarray:
    """Draw Y exactly from the model: rotated Matern series by state-space steps."""
    rng = np.random.default_rng(seed)
    k_s, k_t, noise = kernels(theta)
    w, U = np.linalg.eigh(k_s(sites))
    ssm = kernel_to_state_space(k_t)
    gaps, idx = np.unique(np.diff(times), return_inverse=True)
    a, q = discretize(ssm, gaps)
    roots = [np.linalg.cholesky(qq + 1e-14 * np.eye(qq.shape[0])) for qq in q]
    x = (
        rng.standard_normal((sites.shape[0], ssm.state_dim))
        @ np.linalg.cholesky(ssm.Pinf).T
    )
    f = np.empty((sites.shape[0], times.size))
    f[:, 0] = x @ ssm.H[0]
    for k in range(1, times.size):
        i = idx[k - 1]
        x = x @ a[i].T + rng.standard_normal(x.shape) @ roots[i].T
        f[:, k] = x @ ssm.H[0]
    Y = U @ (np.sqrt(np.maximum(w, 0.0))[:, None] * f)
    return Y + np.sqrt(noise) * rng.standard_normal(Y.shape)


def timed(fn: Any, repeat: int) -> tuple[Any, list[float], list[float]]:
    """Call ``fn`` ``repeat`` times; return its output, wall and CPU seconds.

    CPU seconds (all threads of the process) are the work done, which a busy
    shared machine inflates far less than the wall time.
    """
    out, wall, cpu = None, [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return out, wall, cpu


def rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def case_wind(args: argparse.Namespace) -> dict[str, Any]:
    bunch = load_wind()
    sites, times = np.asarray(bunch.sites, float), np.asarray(bunch.times, float)
    Y = bunch.data - bunch.data.mean()
    ssm_fn = lambda: ssm_lml_grad(WIND_THETA, sites, times, Y)  # noqa: E731
    ssm_fn()  # warm-up
    (lml_s, grad_s), t_ssm, c_ssm = timed(ssm_fn, args.repeat)
    eig_fn = lambda: eigen_lml_grad(WIND_THETA, sites, times, Y)  # noqa: E731
    (lml_e, grad_e, grams), t_eig, c_eig = timed(eig_fn, args.eigen_repeat)
    return {
        "shape": list(Y.shape),
        "ssm_seconds": t_ssm,
        "ssm_cpu_seconds": c_ssm,
        "eigen_seconds": t_eig,
        "eigen_cpu_seconds": c_eig,
        "eigen_gram_seconds": grams,
        "speedup_median": float(np.median(t_eig) / np.median(t_ssm)),
        "speedup_excl_grams": float((np.median(t_eig) - grams) / np.median(t_ssm)),
        "speedup_cpu": float(np.median(c_eig) / np.median(c_ssm)),
        "lml_ssm": lml_s,
        "lml_eigen": lml_e,
        "lml_rel_diff": abs(lml_s - lml_e) / abs(lml_e),
        "grad_ssm": grad_s.tolist(),
        "grad_eigen": grad_e.tolist(),
        "grad_rel_diff": rel(grad_s, grad_e),
    }


def synthetic_times(args: argparse.Namespace) -> np.ndarray:
    if not args.irregular:
        return np.arange(float(args.steps))
    rng = np.random.default_rng(args.seed + 1)
    return np.concatenate([[0.0], np.cumsum(rng.uniform(0.2, 1.8, args.steps - 1))])


def case_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    sites = rng.uniform(0.0, 10.0, size=(args.sites, 2))
    times = synthetic_times(args)
    t0 = time.perf_counter()
    Y = simulate(SYNTH_TRUE, sites, times, args.seed)
    out: dict[str, Any] = {"shape": list(Y.shape), "irregular": args.irregular}
    out["simulate_seconds"] = time.perf_counter() - t0
    fn = lambda: ssm_lml_grad(SYNTH_START, sites, times, Y)  # noqa: E731
    (lml, grad), out["ssm_seconds"], out["ssm_cpu_seconds"] = timed(fn, args.repeat)
    out["lml_start"], out["grad_start"] = lml, grad.tolist()
    if args.optimise:
        n_eval = [0]

        def obj(theta: np.ndarray) -> tuple[float, np.ndarray]:
            n_eval[0] += 1
            value, g = ssm_lml_grad(theta, sites, times, Y)
            return -value, -g

        t0, c0 = time.perf_counter(), time.process_time()
        res = scipy.optimize.minimize(
            obj, SYNTH_START, jac=True, method="L-BFGS-B", bounds=BOUNDS
        )
        out["optimise"] = {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "evaluations": n_eval[0],
            "success": bool(res.success),
            "message": str(res.message),
            "theta_true": np.exp(SYNTH_TRUE).tolist(),
            "theta_start": np.exp(SYNTH_START).tolist(),
            "theta_fit": np.exp(res.x).tolist(),
            "lml_fit": -float(res.fun),
        }
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "usable_cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def worker(args: argparse.Namespace) -> None:
    fn = case_wind if args.worker == "wind" else case_synthetic
    result = fn(args)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="wind,synthetic")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--eigen-repeat", type=int, default=2)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--irregular", action="store_true")
    parser.add_argument("--optimise", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--worker", choices=["wind", "synthetic"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results: dict[str, Any] = {"machine": machine()}
    passthrough = [
        f"--repeat={args.repeat}",
        f"--eigen-repeat={args.eigen_repeat}",
        f"--sites={args.sites}",
        f"--steps={args.steps}",
        f"--seed={args.seed}",
        *(["--irregular"] if args.irregular else []),
        *(["--optimise"] if args.optimise else []),
    ]
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, *passthrough, "--worker", case]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(case, json.dumps(results[case], indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
