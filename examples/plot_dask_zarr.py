"""A lat x lon x time grid larger than memory: Zarr on disk, Dask, KroneckerGP.

The script writes a synthetic field (a smooth signal plus noise) of
``n x n x n`` cells to a Zarr store chunk by chunk, opens it as a
``dask.array``, fits ``KroneckerGP`` with fixed hyperparameters, evaluates
the log marginal likelihood and writes the posterior mean over the whole grid
to a second Zarr store, all chunk by chunk: only the 3 small n x n factor
matrices and a few chunks per thread are ever in memory. The default
n = 1000 is 10^9 cells (8 GB per array, about 30 GB of disk in all with
the temporary stores); ``--quick`` runs 24^3 cells.

Run: ``python examples/plot_dask_zarr.py --out figures --store /scratch``.
The same code runs on a ``dask.distributed`` cluster: create a ``Client``
first and put the stores where every worker can read them.
"""

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import matplotlib
import numpy as np
import zarr
from sklearn.gaussian_process.kernels import RBF, Matern
from sklearn.gaussian_process.kernels import ConstantKernel as C

from kronecker_gp import KroneckerGP

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_field(path, n, chunk):
    """Write signal + noise on an n^3 lat x lon x time grid to Zarr, chunk by chunk."""
    lat = np.linspace(-60.0, 60.0, n)
    lon = np.linspace(0.0, 360.0, n, endpoint=False)
    time_ = np.arange(n, dtype=float)
    rows = da.from_array(np.cos(np.pi * lat / 120.0), chunks=chunk)
    cols = da.from_array(np.sin(np.pi * lon / 90.0), chunks=chunk)
    signal = rows[:, None, None] * cols[None, :, None] + np.sin(time_ / 25.0)
    noise = da.random.default_rng(0).standard_normal(
        (n, n, n), chunks=(chunk, chunk, n)
    )
    # random noise does not compress: store it raw
    da.to_zarr(signal + 0.1 * noise, path, compressors=None)
    return [lat, lon, time_]


def peak_rss_gib():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fit_and_predict(store, n, chunk):
    """Write the field, fit, and write the posterior mean to Zarr; print timings."""

    t0 = time.perf_counter()
    coords = write_field(str(store / "y.zarr"), n, chunk)
    print(
        f"wrote {n}^3 = {n**3:.2e} cells to {store / 'y.zarr'} in "
        f"{time.perf_counter() - t0:.1f} s (chunks {chunk} x {chunk} x {n})"
    )

    Y = da.from_zarr(str(store / "y.zarr"))  # lazy: nothing is read yet
    kernels = [C(1.0) * RBF(15.0), RBF(30.0), Matern(20.0, nu=1.5)]
    gp = KroneckerGP(kernels, noise=0.01, optimizer=None)
    t0 = time.perf_counter()
    gp.fit_grid(coords, Y)
    lml = gp.log_marginal_likelihood_value_
    print(
        f"fit + log marginal likelihood ({lml:.6g}) in {time.perf_counter() - t0:.1f} s"
    )

    t0 = time.perf_counter()
    mean = gp.predict_grid(coords)  # a lazy dask array of the grid's shape
    da.to_zarr(mean, str(store / "mean.zarr"), compressors=None)
    print(
        f"posterior mean on all {n**3:.2e} cells written to Zarr in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    print(f"peak RSS {peak_rss_gib():.2f} GiB (Y alone is {n**3 * 8 / 2**30:.2f} GiB)")

    return coords


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=".", help="folder for the figure")
    parser.add_argument("--store", default=None, help="folder for the Zarr stores")
    parser.add_argument("--n", type=int, default=1000, help="cells per axis")
    parser.add_argument("--chunk-mb", type=float, default=64.0)
    parser.add_argument("--quick", action="store_true", help="24^3 cells")
    args = parser.parse_args()
    n = 24 if args.quick else args.n
    chunk = max(1, min(n, int((args.chunk_mb * 2**20 / 8 / n) ** 0.5)))
    if args.quick:
        chunk = 8  # several chunks per axis even on the small grid
    store = Path(tempfile.mkdtemp(prefix="kgp_dask_", dir=args.store))
    # a local "cluster": dask's threads, one per core; temporary stores of the
    # re-chunking passes next to the data
    with dask.config.set(scheduler="threads", **{"temporary-directory": str(store)}):
        coords = fit_and_predict(store, n, chunk)
    # read back two small slices for the figure
    mean_z = zarr.open_array(str(store / "mean.zarr"), mode="r")
    y_z = zarr.open_array(str(store / "y.zarr"), mode="r")
    t_show, i, j = n // 2, n // 3, n // 4
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    lat, lon, time_ = coords
    im = ax0.imshow(
        mean_z[:, :, t_show],
        origin="lower",
        aspect="auto",
        extent=[lon[0], lon[-1], lat[0], lat[-1]],
        cmap="RdBu_r",
    )
    fig.colorbar(im, ax=ax0, label="posterior mean")
    ax0.set(xlabel="longitude", ylabel="latitude", title=f"time step {t_show}")
    ax1.plot(time_, y_z[i, j, :], ".", ms=2, color="0.6", label="data")
    ax1.plot(time_, mean_z[i, j, :], color="C0", label="posterior mean")
    ax1.set(xlabel="time", title=f"lat {lat[i]:.1f}, lon {lon[j]:.1f}")
    ax1.legend()
    fig.suptitle(f"KroneckerGP on a {n}^3 grid from Zarr (dask)")
    fig.tight_layout()
    out = Path(args.out) / "dask_zarr.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    if args.store is None:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
