"""Grids larger than memory: KroneckerGP on a dask.array read from Zarr.

For each cube ``n x n x n`` (lat x lon x time) the driver runs one fresh
subprocess that

1. writes ``Y`` (a smooth field plus noise, seeded) to a Zarr store chunk by
   chunk (chunks ``(c, c, n)`` of about ``--chunk-mb``, no compression);
2. ``fit_grid`` with fixed hyperparameters (``optimizer=None``): the factor
   eigendecompositions and one pass over ``Y`` (finiteness check);
3. one log marginal likelihood (``log_marginal_likelihood_value_``);
4. one LML with its gradient (4 hyperparameters), up to ``--grad-max`` cells;
5. ``predict_grid`` mean over the whole training grid, stored to Zarr;
6. up to ``--check-max`` cells, the same fit and LML in memory (a NumPy
   ``Y``, BLAS on every core; timed, outside the Dask peak RSS) and the
   relative differences of the LML and the mean.

Each phase reports its wall time and the peak RSS of the process during the
phase (VmHWM reset before it); dask runs its threaded scheduler with one
thread per core and OpenBLAS on one thread (the driver sets
``OPENBLAS_NUM_THREADS=1`` for each subprocess).

Run::

    python benchmarks/bench_dask.py --sizes 216,464 --out results_dask.json
    python benchmarks/bench_dask.py --sizes 1000 --grad-max 0 --dir /scratch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr
from sklearn.gaussian_process.kernels import RBF, Matern
from sklearn.gaussian_process.kernels import ConstantKernel as C
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - helper next to this script
    _reset_peak_rss,
    _status_kib,
    load_average,
    machine_info,
)

from kronecker_gp import KroneckerGP  # noqa: E402 - after the path setup


def _problem(n: int):
    lat = np.linspace(-60.0, 60.0, n)
    lon = np.linspace(0.0, 360.0, n, endpoint=False)
    time_ = np.arange(n, dtype=float)
    kernels = [C(1.0) * RBF(15.0), RBF(30.0), Matern(20.0, nu=1.5)]
    return [lat, lon, time_], kernels


def _write(n: int, path: str, chunk_mb: float) -> int:
    coords, _ = _problem(n)
    c = max(1, min(n, int((chunk_mb * 2**20 / 8 / n) ** 0.5)))
    lat, lon, t = (
        da.from_array(x, chunks=c if d < 2 else n) for d, x in enumerate(coords)
    )
    signal = (
        da.cos(np.pi * lat / 120.0)[:, None, None]
        * da.sin(np.pi * lon / 90.0)[None, :, None]
        + da.sin(t / 25.0)[None, None, :]
    )
    noise = da.random.default_rng(0).standard_normal((n, n, n), chunks=(c, c, n))
    z = zarr.create_array(
        store=path,
        shape=(n, n, n),
        chunks=(c, c, n),
        dtype="f8",
        compressors=None,
        overwrite=True,
    )
    da.store(signal + 0.1 * noise, z, lock=False)
    return c


def _phase(name, fn, out):

    _reset_peak_rss()
    t0 = time.perf_counter()
    value = fn()
    out[name] = {
        "seconds": time.perf_counter() - t0,
        "peak_rss_gib": _status_kib("VmHWM") / 2**20,
    }
    print(
        f"  {name}: {out[name]['seconds']:.1f} s, peak RSS "
        f"{out[name]['peak_rss_gib']:.2f} GiB",
        file=sys.stderr,
        flush=True,
    )
    return value


def run_one(n: int, args: argparse.Namespace) -> dict:

    dask.config.set(scheduler="threads", num_workers=os.cpu_count())
    root = tempfile.mkdtemp(prefix=f"bench_dask_{n}_", dir=args.dir)
    dask.config.set({"temporary-directory": root})
    res: dict = {"n": n, "cells": n**3, "chunk_mb": args.chunk_mb}
    c = _phase("write_zarr", lambda: _write(n, f"{root}/y.zarr", args.chunk_mb), res)
    res["chunks"] = [c, c, n]
    coords, kernels = _problem(n)
    Y = da.from_zarr(f"{root}/y.zarr")
    gp = KroneckerGP(kernels, noise=0.01, optimizer=None)
    _phase("fit", lambda: gp.fit_grid(coords, Y), res)
    res["lml_value"] = _phase("lml", lambda: gp.log_marginal_likelihood_value_, res)
    if n**3 <= args.grad_max:
        lml, grad = _phase(
            "lml_grad", lambda: gp.log_marginal_likelihood(gp.theta_, True), res
        )
        res["grad"] = [float(g) for g in grad]

    def predict():
        mean = gp.predict_grid(coords)
        # to_zarr keeps dask's chunks as the store's: one writer per Zarr chunk
        da.to_zarr(mean, f"{root}/mean.zarr", compressors=None)
        return zarr.open_array(f"{root}/mean.zarr", mode="r")

    mean = _phase("predict_mean_to_zarr", predict, res)
    res["mean_sample"] = float(mean[n // 2, n // 3, n // 4])
    res["phases_peak_rss_gib"] = max(
        v["peak_rss_gib"] for v in res.values() if isinstance(v, dict)
    )
    if n**3 <= args.check_max:
        y_np = np.asarray(zarr.open_array(f"{root}/y.zarr")[:])
        ref = KroneckerGP(kernels, noise=0.01, optimizer=None)

        def in_memory():  # the NumPy route, BLAS on every core
            with threadpool_limits(os.cpu_count()):
                ref.fit_grid(coords, y_np)
                return ref.log_marginal_likelihood_value_

        res["lml_numpy"] = _phase("numpy_fit_lml", in_memory, res)
        res["lml_rel_diff"] = abs(res["lml_value"] - res["lml_numpy"]) / abs(
            res["lml_numpy"]
        )
        res["mean_rel_diff"] = float(
            np.max(np.abs(mean[:] - ref.predict_grid(coords))) / np.max(np.abs(mean[:]))
        )
    shutil.rmtree(root, ignore_errors=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="216,464", help="cube edges n (n^3 cells)")
    p.add_argument("--chunk-mb", type=float, default=64.0)
    p.add_argument("--grad-max", type=int, default=2 * 10**8)
    p.add_argument("--check-max", type=int, default=2 * 10**8)
    p.add_argument("--dir", default=None, help="folder for the Zarr stores")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args)))
        return

    results = {
        "machine": machine_info(),
        "command": " ".join(sys.argv),
        "load_before": load_average(),
        "runs": [],
    }
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"n = {n} ({n**3:.1e} cells)", file=sys.stderr, flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--chunk-mb",
            str(args.chunk_mb),
            "--grad-max",
            str(args.grad_max),
            "--check-max",
            str(args.check_max),
        ]
        if args.dir:
            cmd += ["--dir", args.dir]
        t0 = time.perf_counter()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # dask threads, one BLAS each
        out = subprocess.run(
            cmd, env=env, stdout=subprocess.PIPE, text=True, check=True
        )
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run["total_seconds"] = time.perf_counter() - t0
        run["load_after"] = load_average()
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
