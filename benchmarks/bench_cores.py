"""Fit, LML+grad and predict_grid std against the LAPACK floor, per BLAS thread count.

Issue 13, item 2: on a many-core CPU the fit and LML+grad should keep their
floor ratios (the floor: ``eigh`` of both factors plus the two mode-product
GEMMs, measured in the same process), and ``predict_grid(return_std=True)``
over the training grid should never cost more than the fit, on every
complete-grid route: the eigen route (``state_space=None``) and the Kalman
route on the time axis (``state_space=1``).

Each (size, thread count, tree) runs in its own subprocess with the BLAS
(and with it our element-wise passes, see ``kronecker_gp._threads``) limited
to that many threads; inside it every quantity is timed interleaved with the
floor, ``--repeat`` times, and medians are kept. With ``--baseline DIR`` (a
copy of an older ``kronecker_gp`` package, e.g. ``git archive <commit>
kronecker_gp | tar -x -C DIR``) the same worker runs on that tree too,
alternating with this one, so load changes hit both alike.

Example::

    python benchmarks/bench_cores.py --sizes 1000x1000 2000x2000 --threads 1 2 \\
        --repeat 3 --baseline /tmp/base --out benchmarks/results_cores.json
"""

# The worker imports the package under test after setting its thread limits.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - the helper module sits next to this script
    REPO,
    THETA_TRUE,
    factor_kernels,
    load_average,
    make_problem,
    parse_size,
)

NOISE = float(np.exp(THETA_TRUE[3]))
ROUTES = {"eigen": None, "kalman": 1}


def _interleaved(fns: dict[str, Any], repeat: int) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved per round."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in samples.items()}


def worker(n_s: int, n_t: int, repeat: int) -> dict[str, Any]:
    """Time every route and the floor at the current thread limit."""
    from kronecker_gp import KroneckerGP

    sites, times, y = make_problem(n_s, n_t)
    coords = [sites, times]
    k_space, k_time = factor_kernels(THETA_TRUE)
    k_s, k_t = k_space(sites), k_time(times[:, None])

    def floor() -> Any:
        _, u_s = np.linalg.eigh(k_s)
        _, u_t = np.linalg.eigh(k_t)
        return (u_s.T @ y) @ u_t

    out: dict[str, Any] = {"load_before": load_average(), "routes": {}}
    for route, state_space in ROUTES.items():

        def fit(state_space: Any = state_space) -> Any:
            gp = KroneckerGP(
                factor_kernels(THETA_TRUE),
                noise=NOISE,
                optimizer=None,
                state_space=state_space,
            )
            return gp.fit_grid(coords, y)

        gp = fit()
        fns = {
            "floor": floor,
            "fit": fit,
            "lml_grad": lambda gp=gp: gp.log_marginal_likelihood(
                THETA_TRUE, eval_gradient=True
            ),
            "predict_mean": lambda gp=gp: gp.predict_grid(coords),
            "predict_std": lambda gp=gp: gp.predict_grid(coords, return_std=True),
        }
        res: dict[str, Any] = _interleaved(fns, repeat)
        res["path"] = gp.solver_info_.path
        mean, std = gp.predict_grid(coords, return_std=True)
        lml, grad = gp.log_marginal_likelihood(THETA_TRUE, eval_gradient=True)
        res["check"] = {
            "lml": float(lml),
            "grad": [float(g) for g in grad],
            "mean_sum": float(np.sum(mean)),
            "std_sum": float(np.sum(std)),
        }
        out["routes"][route] = res
    auto = KroneckerGP(factor_kernels(THETA_TRUE), noise=NOISE, optimizer=None)
    out["auto_path"] = auto.fit_grid(coords, y).solver_info_.path
    out["load_after"] = load_average()
    return out


def _run(size: str, threads: int, repeat: int, tree: Path) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(tree)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        size,
        "--threads",
        str(threads),
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _row(size: str, threads: int, tree: str, res: dict[str, Any]) -> list[str]:
    lines = []
    for route, r in res.get("routes", {}).items():
        fl = r["floor"]
        lines.append(
            f"{size:>10} {threads:>2} {tree:>8} {route:>7} | floor {fl:6.3f} | "
            f"fit {r['fit']:6.3f} ({r['fit'] / fl:4.2f}x) | "
            f"lml+grad {r['lml_grad']:6.3f} ({r['lml_grad'] / fl:4.2f}x) | "
            f"mean {r['predict_mean']:6.3f} | std {r['predict_std']:6.3f} "
            f"({r['predict_std'] / r['fit']:4.2f}x fit) | load "
            f"{res['load_before'][0]:.1f}-{res['load_after'][0]:.1f}"
        )
    return lines


def drive(args: argparse.Namespace) -> None:
    trees = {"this": REPO}
    if args.baseline:
        trees["baseline"] = Path(args.baseline).resolve()
    results = []
    for size in args.sizes:
        parse_size(size)
        for threads in args.threads:
            for name, tree in trees.items():
                res = _run(size, threads, args.repeat, tree)
                entry = {"size": size, "threads": threads, "tree": name, **res}
                results.append(entry)
                if "error" in res:
                    print(f"{size} {threads} {name}: {res['error']}", flush=True)
                for line in _row(size, threads, name, res):
                    print(line, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["1000x1000", "2000x2000"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline", help="directory holding an older kronecker_gp")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads[0])
        n_s, n_t = parse_size(args.worker)
        print(json.dumps(worker(n_s, n_t, args.repeat)))
        return
    drive(args)


if __name__ == "__main__":
    main()
