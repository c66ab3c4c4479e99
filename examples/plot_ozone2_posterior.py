"""Fit daily Midwest ozone (153 stations x 89 days, with gaps) and plot the posterior.

The grid has missing cells (NaN); ``fit_grid`` conditions on the observed
ones exactly. Ten stations are held out entirely: their rows are dropped
from the training grid and predicted afterwards, off the training grid.

Run: ``python examples/plot_ozone2_posterior.py [--out DIR] [--quick]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

from kronecker_gp import KroneckerGP
from kronecker_gp.datasets import load_ozone2
from kronecker_gp.plotting import (
    plot_posterior_surface,
    plot_site_series,
    plot_spatial_map,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the PNG")
    parser.add_argument("--quick", action="store_true", help="first 20 days only")
    args = parser.parse_args(argv)

    b = load_ozone2()
    days = slice(0, 20) if args.quick else slice(None)
    Y, times, dates = b.data[:, days], b.times[days], b.dates[days]
    rng = np.random.default_rng(0)
    test = np.sort(rng.choice(Y.shape[0], size=10, replace=False))
    train = np.setdiff1d(np.arange(Y.shape[0]), test)
    print(
        f"ozone2: {Y.shape[0]} stations x {Y.shape[1]} days, "
        f"{np.isnan(Y).sum()} missing cells; holding out {test.size} stations"
    )

    gp = KroneckerGP(
        [ConstantKernel(1.0) * Matern(2.0, nu=0.5), Matern(3.0, nu=0.5)],
        noise=0.1,
        normalize_y=True,
    )
    gp.fit_grid([b.sites[train], times], Y[train])
    print(f"kernels: {gp.kernels_}")
    print(f"log marginal likelihood: {gp.log_marginal_likelihood_value_:.1f}")

    mean, std = gp.predict_grid([b.sites, times], return_std=True)
    err = (mean - Y)[test]
    rmse = np.sqrt(np.nanmean(err**2))
    base = np.sqrt(np.nanmean((np.nanmean(Y[train], axis=0) - Y[test]) ** 2))
    print(f"held-out stations RMSE: {rmse:.2f} ppb (daily regional mean: {base:.2f})")

    fig, ax = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    order = np.argsort(b.sites[:, 0])
    plot_posterior_surface(
        mean, [b.sites, times], dates=dates, site_order=order, ax=ax[0, 0],
        label="ozone (ppb)",
    )  # fmt: skip
    ax[0, 0].set(title="posterior mean, stations west to east", ylabel="station")
    plot_posterior_surface(
        std, [b.sites, times], kind="std", dates=dates, site_order=order,
        ax=ax[0, 1], label="posterior sd of ozone (ppb)", highlight=test,
        site_labels=[str(i) for i in b.site_ids],
    )  # fmt: skip
    ax[0, 1].set(title="posterior sd (red: held-out stations)")
    day = int(np.nanargmax(np.nanmean(Y, axis=0)))
    plot_spatial_map(
        gp, [b.sites, times], day, ax=ax[1, 0], highlight=test, resolution=60,
        title=f"posterior mean on {dates[day]}", label="ozone (ppb)",
        highlight_label="held-out stations",
    )  # fmt: skip
    held = np.full_like(Y, np.nan)
    held[test] = Y[test]
    plot_site_series(
        mean, [b.sites, times], test[0], std=std, held_out=held, dates=dates,
        ax=ax[1, 1], title=f"held-out station {b.site_ids[test[0]]}",
        ylabel="ozone (ppb)",
    )  # fmt: skip
    # legend below the series (off the data), leaving the right margin to the
    # colour bar above it
    ax[1, 1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "ozone2_posterior.png", dpi=90)
    print(f"wrote {out / 'ozone2_posterior.png'}")


if __name__ == "__main__":
    main()
