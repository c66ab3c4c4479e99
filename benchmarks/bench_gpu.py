"""Benchmark KroneckerGP on a GPU through the array API (issue 13's table).

For each 2-D grid ``n_sites x n_times`` (the problem of ``_common.py``:
``ConstantKernel * RBF`` over 2-D sites times ``Matern(nu=1.5)`` over times,
noise 0.1, float64) it times, in one process:

* **ours GPU**: ``KroneckerGP.fit_grid`` on a ``torch`` tensor on the device
  under ``sklearn.config_context(array_api_dispatch=True)`` (the eigen route
  in torch): (a) fit with fixed hyperparameters, (b) one LML with its
  gradient (4 hyperparameters), (c) ``predict_grid`` mean + std over the
  training grid, (d) the full L-BFGS-B optimisation from the benchmark start
  (``--opt-sizes``), with peak GPU memory above the data per operation;
* **GPU floor**: ``torch.linalg.eigh`` of both factor Grams on the device plus
  the two GEMMs ``U_s^T Y U_t``;
* **GPyTorch GPU** (if installed): its Kronecker path (a
  ``KroneckerProductLinearOperator`` plus the likelihood's noise) on the same
  data, LML and LML + gradient by autograd, and the same optimisation;
* **ours CPU** (NumPy, BLAS on every core) and the **CPU floor**
  (``numpy.linalg.eigh`` of both factors plus the two GEMMs), up to
  ``--cpu-max-cells``;
* the equality of ours GPU with ours CPU (LML, gradient, mean, std:
  relative differences, target 1e-10).

Also (``--missing``) the 500 x 500 grid with 30 % of its cells missing,
optimised from the benchmark start: run on the GPU only where KroneckerGP's
missing-cell route runs on the device; otherwise the row is skipped with the
reason. The per-axis Gram matrices (and their gradients) come from the
scikit-learn kernels on the CPU: their time is reported as ``factor_grams``.

Without a CUDA device (or without torch) the script prints "no CUDA device:
skipped", writes that to ``--out`` and exits 0. ``--device cpu`` runs every
torch row on the CPU instead (a smoke test of the script; not a GPU number).

Run::

    python benchmarks/bench_gpu.py --out benchmarks/results_gpu.json
    python benchmarks/bench_gpu.py --sizes 1000x1000 --no-gpytorch --repeat 3
    python benchmarks/bench_gpu.py --device cpu --sizes 60x50 --opt-sizes 60x50 \
        --missing-size 40x30 --cpu-max-cells 1e6
"""

# torch and gpytorch are optional: imported inside functions
# ruff: noqa: PLC0415

from __future__ import annotations

import os

# scikit-learn's array_api_dispatch asks for SciPy's array API flag, which
# SciPy reads when it is first imported
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - helper next to this script
    LOG_BOUNDS,
    THETA_START,
    THETA_TRUE,
    factor_kernels,
    gpytorch_grid_model,
    load_average,
    machine_info,
    make_problem,
    parse_size,
    recording_lbfgsb,
)

NOISE = float(np.exp(THETA_TRUE[3]))
SKIPPED = "no CUDA device: skipped"


# ------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn: Any, repeat: int, device: str) -> dict[str, Any]:
    """Median wall time of ``fn`` (device synchronised), after one warm-up."""
    fn()
    _sync(device)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - t0)
    return {"median": float(np.median(samples)), "samples": samples}


def _gpu_peak_mb(fn: Any, device: str) -> float | None:
    """Peak device memory of one call above what was allocated before it, MB."""
    import torch

    if not device.startswith("cuda"):
        return None
    _sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _model(theta: np.ndarray, optimizer: Any = None) -> Any:
    from kronecker_gp import KroneckerGP

    return KroneckerGP(
        factor_kernels(theta),
        noise=float(np.exp(theta[3])),
        noise_bounds=tuple(np.exp(LOG_BOUNDS[3])),
        optimizer=optimizer,
    )


def _optimise(coords: list[Any], Y: Any) -> dict[str, Any]:
    record: dict[str, Any] = {}
    gp = _model(THETA_START, recording_lbfgsb(record))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit_grid(coords, Y)
    record["seconds"] = time.perf_counter() - t0
    record["lml"] = float(gp.log_marginal_likelihood_value_)
    return record


def _to_host(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _rel(a: Any, b: Any) -> float:
    a, b = _to_host(a), _to_host(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------------------------- the rows
def ours(coords: list[Any], Y: Any, args: argparse.Namespace, device: str) -> Any:
    """Time KroneckerGP on ``Y`` (NumPy, or torch under array_api_dispatch)."""
    gp = _model(THETA_TRUE).fit_grid(coords, Y)
    ops = {
        "fit": lambda: _model(THETA_TRUE).fit_grid(coords, Y),
        "lml_grad": lambda: gp.log_marginal_likelihood(THETA_TRUE, eval_gradient=True),
        "predict_std": lambda: gp.predict_grid(coords, return_std=True),
    }
    res: dict[str, Any] = {
        "path": gp.solver_info_.path,
        "reason": gp.solver_info_.extra.get("route_reason"),
        "timings": {k: _time(fn, args.repeat, device) for k, fn in ops.items()},
        "gpu_peak_mb": {k: _gpu_peak_mb(fn, device) for k, fn in ops.items()},
    }
    lml, grad = gp.log_marginal_likelihood(THETA_TRUE, eval_gradient=True)
    mean, std = gp.predict_grid(coords, return_std=True)
    return res, (lml, grad, mean, std)


def floor_gpu(K_s: Any, K_t: Any, Y: Any, repeat: int, device: str) -> dict[str, Any]:
    """``torch.linalg.eigh`` of both factors and the two GEMMs, on the device."""
    import torch

    ks = torch.as_tensor(K_s, device=device)
    kt = torch.as_tensor(K_t, device=device)

    def floor() -> Any:
        _, u_s = torch.linalg.eigh(ks)
        _, u_t = torch.linalg.eigh(kt)
        return (u_s.T @ Y) @ u_t

    return _time(floor, repeat, device)


def floor_cpu(K_s: Any, K_t: Any, Y: Any, repeat: int) -> dict[str, Any]:
    """``numpy.linalg.eigh`` of both factors and the two GEMMs."""

    def floor() -> Any:
        _, u_s = np.linalg.eigh(K_s)
        _, u_t = np.linalg.eigh(K_t)
        return (u_s.T @ Y) @ u_t

    return _time(floor, repeat, "cpu")


def gpytorch_gpu(
    sites: np.ndarray, times: np.ndarray, Y: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """GPyTorch's Kronecker path on the device: LML, LML + gradient, optimisation."""
    import scipy.optimize

    dev = args.device
    lml, _ = gpytorch_grid_model(sites, times, Y, dev)

    res: dict[str, Any] = {
        "timings": {
            "fit": _time(lambda: lml(THETA_TRUE, False), args.repeat, dev),
            "lml_grad": _time(lambda: lml(THETA_TRUE, True), args.repeat, dev),
        },
        "gpu_peak_mb": {"lml_grad": _gpu_peak_mb(lambda: lml(THETA_TRUE, True), dev)},
    }
    value, grad = lml(THETA_TRUE, True)
    res["check"] = {"lml": value, "grad": [float(g) for g in grad]}
    if args.optimise:
        nfev = [0]

        def obj(theta: np.ndarray) -> Any:
            nfev[0] += 1
            value, grad = lml(theta, True)
            return -value, -grad

        t0 = time.perf_counter()
        out = scipy.optimize.minimize(
            obj, THETA_START.copy(), method="L-BFGS-B", jac=True, bounds=LOG_BOUNDS
        )
        res["optimisation"] = {
            "seconds": time.perf_counter() - t0,
            "nfev": nfev[0],
            "fun": float(out.fun),
            "theta": [float(t) for t in out.x],
        }
    return res


# --------------------------------------------------------------------- driver
def run_size(n_s: int, n_t: int, args: argparse.Namespace) -> dict[str, Any]:
    """All rows of one grid size."""
    import sklearn
    import torch

    dev = args.device
    sites, times, Y = make_problem(n_s, n_t, args.seed)
    coords = [sites, times]
    k_space, k_time = factor_kernels(THETA_TRUE)
    t0 = time.perf_counter()
    K_s, K_t = k_space(sites), k_time(times[:, None])
    rec: dict[str, Any] = {
        "size": f"{n_s}x{n_t}",
        "cells": n_s * n_t,
        "load_before": load_average(),
        "factor_grams_s": time.perf_counter() - t0,
        "data_mb": Y.nbytes / 2**20,
    }
    Y_dev = torch.as_tensor(Y, device=dev)
    rec["gpu_floor"] = floor_gpu(K_s, K_t, Y_dev, args.repeat, dev)
    args.optimise = f"{n_s}x{n_t}" in args.opt_sizes.split(",")
    with sklearn.config_context(array_api_dispatch=True):
        rec["ours_gpu"], gpu_out = ours(coords, Y_dev, args, dev)
        if args.optimise:
            rec["ours_gpu"]["optimisation"] = _optimise(coords, Y_dev)
    if not args.no_gpytorch:
        try:
            rec["gpytorch_gpu"] = gpytorch_gpu(sites, times, Y, args)
        except ImportError as exc:
            rec["gpytorch_gpu"] = {"skipped": f"gpytorch not installed ({exc})"}
        except torch.cuda.OutOfMemoryError as exc:
            rec["gpytorch_gpu"] = {"skipped": f"out of GPU memory ({exc})"}
    if n_s * n_t <= args.cpu_max_cells:
        rec["cpu_floor"] = floor_cpu(K_s, K_t, Y, args.repeat)
        rec["ours_cpu"], cpu_out = ours(coords, Y, args, "cpu")
        if args.optimise:
            rec["ours_cpu"]["optimisation"] = _optimise(coords, Y)
        lml_g, grad_g, mean_g, std_g = gpu_out
        lml_c, grad_c, mean_c, std_c = cpu_out
        rec["equality"] = {
            "lml_rel": abs(lml_g - lml_c) / abs(lml_c),
            "grad_rel": float(np.max(np.abs(grad_g - grad_c)) / np.max(np.abs(grad_c))),
            "mean_rel": _rel(mean_g, mean_c),
            "std_rel": _rel(std_g, std_c),
        }
    else:
        rec["ours_cpu"] = {"skipped": f"{n_s * n_t} cells > --cpu-max-cells"}
    rec["load_after"] = load_average()
    return rec


def run_missing(args: argparse.Namespace) -> dict[str, Any]:
    """The missing-cell optimisation on the device, or why it is skipped."""
    import sklearn
    import torch
    from bench_missing import make_mask

    n_s, n_t = parse_size(args.missing_size)
    sites, times, Y = make_problem(n_s, n_t, args.seed)
    Yn = np.where(make_mask("random-0.3", Y.shape), np.nan, Y)
    rec: dict[str, Any] = {"size": f"{n_s}x{n_t}", "missing_share": 0.3}
    try:
        with sklearn.config_context(array_api_dispatch=True):
            rec["ours_gpu"] = _optimise(
                [sites, times], torch.as_tensor(Yn, device=args.device)
            )
    except ValueError as exc:
        rec["ours_gpu"] = {
            "skipped": f"the missing-cell route does not run on the device: {exc}"
        }
    return rec


def _cuda_missing(device: str) -> str | None:
    """Return why the device cannot run (torch absent, no CUDA), else None."""
    try:
        import torch
    except ImportError:
        return f"{SKIPPED} (torch is not installed)"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"{SKIPPED} (torch {torch.__version__} sees no CUDA device)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the rows, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x1000,2000x2000,4000x2000,10000x10000")
    parser.add_argument("--opt-sizes", default="1000x1000")
    parser.add_argument("--missing-size", default="500x500")
    parser.add_argument("--no-missing", action="store_true")
    parser.add_argument("--no-gpytorch", action="store_true")
    parser.add_argument("--cpu-max-cells", type=float, default=2e7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--out", default="benchmarks/results_gpu.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    why = _cuda_missing(args.device)
    if why is not None:
        print(why)
        out.write_text(json.dumps({"skipped": why}, indent=1) + "\n")
        return 0
    import torch

    report: dict[str, Any] = {
        "machine": machine_info(),
        "device": args.device,
        "device_name": (
            torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        ),
        "torch_threads": torch.get_num_threads(),
        "sizes": [],
    }
    for size in args.sizes.split(","):
        n_s, n_t = parse_size(size)
        try:
            rec = run_size(n_s, n_t, args)
        except torch.cuda.OutOfMemoryError as exc:
            rec = {"size": size, "skipped": f"out of GPU memory ({exc})"}
        report["sizes"].append(rec)
        print(json.dumps(rec)[:2000], flush=True)
        out.write_text(json.dumps(report, indent=1) + "\n")  # partial results kept
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if not args.no_missing:
        report["missing"] = run_missing(args)
        print(json.dumps(report["missing"]), flush=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
