"""Ozone on a station graph x days: graph Matern vs the separable Euclidean GP.

The 153 ozone2 stations are joined into a k-nearest-neighbour graph and the
89 days into a chain; the data live on the Cartesian product of the two
graphs. Some complete stations are held out (all their days), and three exact
GPs predict them from the other complete stations:

* ``ProductGraphGP``: a Matern kernel on the product graph, a function of the
  Kronecker-sum Laplacian (not separable); the unobserved stations stay
  nodes of the graph;
* ``KroneckerGP`` with a ``GraphMaternKernel`` over stations x Matern over days
  (separable graph model);
* ``KroneckerGP`` with Matern kernels over (lon, lat) x days (Euclidean).

Run: ``python examples/plot_graph_ozone.py [--out DIR] [--quick]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.gaussian_process.kernels import ConstantKernel, Matern
from sklearn.neighbors import kneighbors_graph

from kronecker_gp import KroneckerGP, ProductGraphGP
from kronecker_gp.datasets import load_ozone2
from kronecker_gp.kernels import GraphMaternKernel, chain_laplacian, graph_laplacian


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def fit_models(L_space, xy, times, Y, *, train, test):
    """Fit the three models on the train stations; predict the test stations."""
    L_time = chain_laplacian(len(times))
    models = {
        "graph Matern (product graph)": lambda: ProductGraphGP(
            [L_space, L_time], kappa=[2.0, 5.0], nu=1.5, noise=0.3, normalize_y=True
        ).fit_grid([train, None], Y[train]),
        "graph Matern x Matern (separable)": lambda: KroneckerGP(
            [GraphMaternKernel(L_space, kappa=2.0), Matern(3.0, nu=1.5)],
            noise=0.3,
            normalize_y=True,
        ).fit_grid([train, times], Y[train]),
        "Euclidean Matern x Matern (separable)": lambda: KroneckerGP(
            [ConstantKernel() * Matern(1.0, nu=1.5), Matern(3.0, nu=1.5)],
            noise=0.3,
            normalize_y=True,
        ).fit_grid([xy[train], times], Y[train]),
    }
    tests = [[test, None], [test, times], [xy[test], times]]
    out = {}
    for (name, make), coords in zip(models.items(), tests):
        t0 = time.perf_counter()
        gp = make()
        mean, std = gp.predict_grid(coords, return_std=True)
        out[name] = (gp, mean, std, time.perf_counter() - t0)
        print(
            f"{name:38s} RMSE {rmse(mean, Y[test]):5.2f} ppb  "
            f"({out[name][3]:.1f} s, LML {gp.log_marginal_likelihood_value_:.0f})"
        )
    return out


def plot(xy, A, *, train, test, times, Y, results):
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.8))
    i, j = np.nonzero(np.triu(A))
    ax[0].plot(
        np.stack([xy[i, 0], xy[j, 0]]),
        np.stack([xy[i, 1], xy[j, 1]]),
        color="0.8",
        lw=0.6,
        zorder=0,
    )
    ax[0].scatter(*xy.T, s=12, c="0.6", label="unobserved (has NaN days)")
    ax[0].scatter(*xy[train].T, s=18, c="C0", label="training stations")
    ax[0].scatter(*xy[test].T, s=40, c="C3", marker="*", label="held-out stations")
    ax[0].set_title("k-nearest-neighbour station graph")
    ax[0].set_xlabel("scaled longitude")
    ax[0].set_ylabel("latitude")
    ax[0].legend(fontsize=8, loc="lower left")
    k = 0
    ax[1].plot(times, Y[test[k]], "k.", ms=4, label="held-out data")
    for c, (name, (_, mean, std, _)) in enumerate(results.items()):
        ax[1].plot(times, mean[k], color=f"C{c}", lw=1.2, label=name)
        if c == 0:
            ax[1].fill_between(
                times, mean[k] - 2 * std[k], mean[k] + 2 * std[k], color="C0", alpha=0.2
            )
    ax[1].set_title(f"held-out station {test[k]} (band: product-graph +/- 2 sd)")
    ax[1].set_xlabel("day (summer 1987)")
    ax[1].set_ylabel("ozone (ppb)")
    ax[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the PNG")
    parser.add_argument("--quick", action="store_true", help="first 30 days only")
    parser.add_argument("--neighbours", type=int, default=8)
    args = parser.parse_args(argv)

    b = load_ozone2()
    n_days = 30 if args.quick else len(b.times)
    Y, times = b.data[:, :n_days], b.times[:n_days]
    lon, lat = b.sites.T
    xy = np.column_stack([lon * np.cos(np.deg2rad(lat.mean())), lat])
    A = kneighbors_graph(xy, args.neighbours).toarray()
    A = np.maximum(A, A.T)  # symmetrise: i ~ j if either is a neighbour
    L_space = graph_laplacian(A)
    complete = np.flatnonzero(~np.isnan(b.data).any(axis=1))  # all 89 days
    rng = np.random.default_rng(0)
    test = np.sort(rng.choice(complete, 15, replace=False))
    train = np.setdiff1d(complete, test)
    print(
        f"ozone2: {len(b.sites)} stations ({len(complete)} complete) x "
        f"{n_days} days; {args.neighbours}-NN graph with {int(A.sum() / 2)} edges"
    )
    print(
        f"train on {len(train)} stations x {n_days} days, predict "
        f"{len(test)} held-out stations"
    )
    results = fit_models(L_space, xy, times, Y, train=train, test=test)
    gp = next(iter(results.values()))[0]
    print(
        f"product graph: kappa (space, time) = {np.round(gp.kappa_, 2)}, "
        f"amplitude {gp.amplitude_:.2f}, noise {gp.noise_:.3g} (normalised units)"
    )

    fig = plot(xy, A, train=train, test=test, times=times, Y=Y, results=results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "graph_ozone.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
