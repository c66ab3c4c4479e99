"""Benchmark MultiTaskGP: ICM with per-task noise, T tasks x n inputs (issue 4).

The problem: ``n`` inputs uniform in ``[0, 10]^2``, input kernel ``RBF(2.0)``,
task covariance ``B = W W^T + diag(kappa)`` of rank 2 (seeded ``W``), per-task
noise variances in ``[0.05, 0.5]``; ``Y`` is one exact draw from that model.
In one process it times (median of ``--repeat`` samples):

* the **floor**: ``scipy.linalg.eigh`` (``syevd``) of the whitened ``B`` and of
  ``K`` (including building ``K``) plus
  the two mode-product GEMMs ``V_1^T Y V_2`` (what any exact Kronecker method
  must do);
* ``fit`` with fixed hyperparameters (``optimizer=None``; includes ``K``);
* one log marginal likelihood with its gradient (``T (rank + 1)`` task
  hyperparameters, 1 length scale, ``T`` noises);
* ``predict`` mean + std at the ``n`` training inputs;
* the same fit and LML + gradient with ``--missing`` of the outputs missing
  (heterotopic data, exact Schur route);
* optionally (``--opt``) a full L-BFGS-B hyperparameter optimisation;
* optionally (``--lmc``) one LML + gradient estimate of a two-latent LMC
  (preconditioned CG, stochastic Lanczos quadrature) at ``--lmc-n`` inputs.

It also checks the LML, its gradient and the predictions against the dense
block covariance (built with ``np.kron``) on a small case, and, with
``--sklearn``, times ``GaussianProcessRegressor`` on the equivalent dense
problem at ``--sklearn-n`` inputs.

Run ``python benchmarks/bench_multitask.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, Matern
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_info, measure  # noqa: E402

from kronecker_gp import MultiTaskGP  # noqa: E402
from kronecker_gp.kernels import CoregionalizationKernel, KroneckerKernel  # noqa: E402


def make_problem(
    n_tasks: int, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, CoregionalizationKernel, np.ndarray]:
    """Return ``X (n, 2)``, ``Y (n, T)``, the true task kernel and noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 10.0, size=(n, 2))
    task = CoregionalizationKernel(
        n_tasks, rank=2, W=rng.standard_normal((n_tasks, 2)), kappa=0.1
    )
    noise = rng.uniform(0.05, 0.5, n_tasks)

    def root(a: np.ndarray) -> np.ndarray:
        w, u = np.linalg.eigh(a)
        return u * np.sqrt(np.clip(w, 0.0, None))

    f = root(task.task_covariance()) @ rng.standard_normal((n_tasks, n))
    f = f @ root(RBF(2.0)(x)).T
    return (
        x,
        (f + np.sqrt(noise)[:, None] * rng.standard_normal(f.shape)).T,
        task,
        noise,
    )


def make_gp(task: CoregionalizationKernel, noise: np.ndarray, **kw: Any) -> MultiTaskGP:
    """The estimator at the true hyperparameters."""
    return MultiTaskGP(RBF(2.0), task_kernel=task, noise=noise, **kw)


def floor(x: np.ndarray, y: np.ndarray, task: Any, noise: np.ndarray) -> None:
    """The LAPACK floor: eigh of the whitened B and of K, two mode products.

    ``scipy.linalg.eigh`` with the divide-and-conquer driver (``syevd``, the
    one the library calls) and no finiteness check: the cheapest eigh call.
    """
    d = np.sqrt(noise)
    b = task.task_covariance() / np.outer(d, d)
    _, u1 = scipy.linalg.eigh(b, driver="evd", check_finite=False)
    _, u2 = scipy.linalg.eigh(RBF(2.0)(x), driver="evd", check_finite=False)
    (u1 / d[:, None]).T @ y.T @ u2


def dense_check(seed: int = 1) -> dict[str, float]:
    """Relative error of LML, gradient, mean and std against the dense block matrix."""
    x, y, task, noise = make_problem(4, 60, seed)
    y[::7, 1] = np.nan  # heterotopic too
    gp = make_gp(task, noise, optimizer=None).fit(x, y)
    theta = gp.theta_
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    b, db = task(np.arange(4.0)[:, None], eval_gradient=True)
    k = RBF(2.0)(x)
    obs = ~np.isnan(y.T.reshape(-1))
    sigma = (np.kron(b, k) + np.kron(np.diag(noise), np.eye(60)))[np.ix_(obs, obs)]
    yo = y.T.reshape(-1)[obs]
    inv = np.linalg.inv(sigma)
    alpha = inv @ yo
    ref_lml = -0.5 * yo @ alpha - 0.5 * np.linalg.slogdet(sigma)[1]
    ref_lml -= 0.5 * yo.size * np.log(2 * np.pi)
    d_sigma = [np.kron(db[:, :, p], k) for p in range(db.shape[2])]
    d_sigma += [np.kron(b, RBF(2.0)(x, eval_gradient=True)[1][:, :, 0])]
    d_sigma += [np.kron(np.diag(np.eye(4)[t] * noise), np.eye(60)) for t in range(4)]
    ref_grad = np.array(
        [
            0.5 * alpha @ (d := ds[np.ix_(obs, obs)]) @ alpha - 0.5 * np.sum(inv * d)
            for ds in d_sigma
        ]
    )
    cross = np.kron(b, k)[:, obs]
    mean, std = gp.predict(x, return_std=True)
    ref_mean = (cross @ alpha).reshape(4, 60).T
    ref_var = np.diag(np.kron(b, k)) - np.einsum("ij,jk,ik->i", cross, inv, cross)
    rel = lambda a, r: float(np.max(np.abs(a - r)) / np.max(np.abs(r)))  # noqa: E731
    return {
        "lml": rel(lml, ref_lml),
        "grad": rel(grad, ref_grad),
        "mean": rel(mean, ref_mean),
        "std": rel(std, np.sqrt(ref_var).reshape(4, 60).T),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    x, y, task, noise = make_problem(args.tasks, args.n, args.seed)
    gp = make_gp(task, noise, optimizer=None).fit(x, y)
    theta = gp.theta_
    out: dict[str, Any] = {"tasks": args.tasks, "n": args.n, "n_theta": theta.size}
    out["floor"] = measure(lambda: floor(x, y, task, noise), args.repeat)
    out["fit"] = measure(
        lambda: make_gp(task, noise, optimizer=None).fit(x, y), args.repeat
    )
    out["lml_grad"] = measure(
        lambda: gp.log_marginal_likelihood(theta, eval_gradient=True), args.repeat
    )
    out["predict_std"] = measure(lambda: gp.predict(x, return_std=True), args.repeat)
    rng = np.random.default_rng(args.seed + 1)
    y_missing = np.where(rng.random(y.shape) < args.missing, np.nan, y)
    out["n_missing"] = int(np.isnan(y_missing).sum())
    het = make_gp(task, noise, optimizer=None, max_missing=10**6).fit(x, y_missing)
    out["fit_missing"] = measure(
        lambda: make_gp(task, noise, optimizer=None, max_missing=10**6).fit(
            x, y_missing
        ),
        args.repeat,
    )
    out["lml_grad_missing"] = measure(
        lambda: het.log_marginal_likelihood(theta, eval_gradient=True), args.repeat
    )
    if args.opt:
        start = CoregionalizationKernel(args.tasks, rank=2)
        t0 = time.perf_counter()
        opt = MultiTaskGP(RBF(1.0), task_kernel=start, noise=1.0).fit(x, y)
        out["optimise"] = {
            "seconds": time.perf_counter() - t0,
            "lml": opt.log_marginal_likelihood_value_,
        }
    if args.sklearn:
        xs, ys, ts, ns = make_problem(args.tasks, args.sklearn_n, args.seed)
        rows = np.column_stack(
            [np.repeat(np.arange(args.tasks), len(xs)), np.tile(xs, (args.tasks, 1))]
        )
        kern = KroneckerKernel([ts, RBF(2.0)], axes=[[0], [1, 2]])
        ref = GaussianProcessRegressor(
            kern, alpha=np.repeat(ns, len(xs)), optimizer=None
        )
        ref.fit(rows, ys.T.reshape(-1))
        small = make_gp(ts, ns, optimizer=None).fit(xs, ys)
        th = ref.kernel_.theta
        out["sklearn_n"] = args.sklearn_n
        out["sklearn_lml_grad"] = measure(
            lambda: ref.log_marginal_likelihood(th, eval_gradient=True), 1, warmup=False
        )
        out["ours_small_lml_grad"] = measure(
            lambda: small.log_marginal_likelihood(small.theta_, eval_gradient=True),
            args.repeat,
        )
    if args.lmc:
        out["lmc"] = lmc_timing(args)
    out["dense_check_rel_err"] = dense_check()
    return out


def lmc_timing(args: argparse.Namespace) -> dict[str, Any]:
    """LMC with two latent processes (RBF and Matern-1/2): PCG + SLQ estimates."""
    x, y, task, noise = make_problem(args.tasks, args.lmc_n, args.seed)
    tasks = [task, CoregionalizationKernel(args.tasks, rank=1, kappa=0.05)]
    gp = MultiTaskGP(
        [RBF(2.0), Matern(1.0, nu=0.5)],
        task_kernel=tasks,
        model="lmc",
        n_latent=2,
        noise=noise,
        optimizer=None,
        random_state=0,
    ).fit(x, y)
    timing = measure(
        lambda: gp.log_marginal_likelihood(gp.theta_, eval_gradient=True), 1
    )
    return {
        "n": args.lmc_n,
        "lml_grad": timing,
        "cg_iterations_max": max(gp.cg_iterations_),
        "lml": gp.log_marginal_likelihood_value_,
        "lml_stderr": gp.log_marginal_likelihood_stderr_,
        "n_probes": gp.n_probes,
    }


def markdown(res: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    fl = res["floor"]["median"]
    rows = [
        ("floor: eigh(B~) + eigh(K) + V1^T Y V2", "floor"),
        ("fit, fixed hyperparameters", "fit"),
        (f"LML + gradient ({res['n_theta']} hyperparameters)", "lml_grad"),
        ("predict mean + std at n inputs", "predict_std"),
        (f"fit, {res['n_missing']} outputs missing (exact Schur)", "fit_missing"),
        (f"LML + gradient, {res['n_missing']} missing", "lml_grad_missing"),
    ]
    lines = [
        f"## MultiTaskGP: ICM, T = {res['tasks']} tasks x n = {res['n']} inputs "
        f"({res['tasks'] * res['n']:,} outputs), per-task noise",
        "",
        f"`{command}`",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"numpy {machine['versions']['numpy']}, scipy {machine['versions']['scipy']}, "
        f"BLAS threads {[b.get('num_threads') for b in machine['blas']]}; "
        f"load average before the run {res['load_before']}, after {res['load_after']}.",
        "",
        "| operation | median (s) | x floor |",
        "|---|---:|---:|",
    ]
    for label, key in rows:
        t = res[key]["median"]
        lines.append(f"| {label} | {t:.3f} | {t / fl:.2f} |")
    if "optimise" in res:
        o = res["optimise"]
        t = o["seconds"]
        lines.append(f"| full L-BFGS-B optimisation | {t:.1f} | {t / fl:.0f} |")
    if "sklearn_lml_grad" in res:
        n_s = res["sklearn_n"]
        lines += [
            "",
            f"Dense reference at n = {n_s} ({res['tasks'] * n_s} outputs): "
            f"GaussianProcessRegressor LML + gradient "
            f"{res['sklearn_lml_grad']['median']:.2f} s, MultiTaskGP "
            f"{res['ours_small_lml_grad']['median']:.4f} s.",
        ]
    if "lmc" in res:
        lm = res["lmc"]
        lines += [
            "",
            f"LMC, 2 latent processes (RBF + Matern-1/2), T = {res['tasks']} x n = "
            f"{lm['n']}: one LML + gradient estimate {lm['lml_grad']['median']:.2f} s "
            f"({lm['n_probes']} probes, at most {lm['cg_iterations_max']} PCG "
            f"iterations per solve), LML {lm['lml']:.1f} +- {lm['lml_stderr']:.2f}.",
        ]
    err = res["dense_check_rel_err"]
    lines += [
        "",
        "Agreement with the dense block covariance (T = 4, n = 60, 9 outputs missing), "
        "max relative error: "
        + ", ".join(f"{k} {v:.1e}" for k, v in err.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument(
        "--missing", type=float, default=0.01, help="fraction of outputs"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--opt", action="store_true", help="also time a full optimisation"
    )
    parser.add_argument("--sklearn", action="store_true", help="time the dense GPR too")
    parser.add_argument("--sklearn-n", type=int, default=200)
    parser.add_argument("--lmc", action="store_true", help="time a 2-latent LMC too")
    parser.add_argument("--lmc-n", type=int, default=500)
    parser.add_argument("--blas-threads", type=int, help="limit BLAS threads")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--append-md", help="append a markdown section to this file")
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_multitask.py " + " ".join(argv or sys.argv[1:])
    load_before = load_average()
    with threadpool_limits(limits=args.blas_threads):  # None: no limit
        res = run(args)
        machine = machine_info()
    res["load_before"], res["load_after"] = load_before, load_average()
    text = markdown(res, machine, command.strip())
    print(text)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": machine, "results": res}, indent=2)
        )
    if args.append_md:
        with open(args.append_md, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
        print(f"appended to {args.append_md}")


if __name__ == "__main__":
    main()
