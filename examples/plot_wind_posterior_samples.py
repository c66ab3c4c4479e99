"""Exact posterior samples of daily wind speed at a station the model never saw.

Fits 11 Irish stations (winter 1961) with a product kernel, then predicts
Dublin Airport, which was left out, and draws exact joint posterior samples
there with ``sample_grid`` (Matheron's rule on the Kronecker structure).

Run: ``python examples/plot_wind_posterior_samples.py [--out DIR] [--quick]``
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
from kronecker_gp.datasets import load_wind
from kronecker_gp.plotting import plot_site_series


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the PNG")
    parser.add_argument("--quick", action="store_true", help="30 days only")
    args = parser.parse_args(argv)

    b = load_wind()
    n_days = 30 if args.quick else 120
    Y, times, dates = b.data[:, :n_days], b.times[:n_days], b.dates[:n_days]
    test = int(np.flatnonzero(b.site_ids == "DUB")[0])
    train = np.delete(np.arange(Y.shape[0]), test)

    gp = KroneckerGP(
        [ConstantKernel(1.0) * Matern(1.0, (0.05, 100.0), nu=0.5), Matern(3.0, nu=0.5)],
        noise=0.1,
        normalize_y=True,
    )
    gp.fit_grid([b.sites[train], times], Y[train])
    print(f"fitted on {train.size} stations x {n_days} days: {gp.kernels_}")

    at = b.sites[test : test + 1]
    mean, std = gp.predict_grid([at, times], return_std=True)
    draws = gp.sample_grid([at, times], n_samples=3, random_state=0)[0]
    rmse = float(np.sqrt(np.mean((mean[0] - Y[test]) ** 2)))
    inside = np.abs(mean[0] - Y[test]) <= 2 * np.sqrt(
        std[0] ** 2 + gp.noise_ * gp.y_train_std_**2
    )
    print(
        f"{b.site_names[test]}: RMSE {rmse:.2f} knots; {inside.mean():.0%} of days "
        "inside the 95 % band for observations"
    )

    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    plot_site_series(
        mean[0],
        std=std[0],
        held_out=Y[test],
        dates=dates,
        noise=gp.noise_ * gp.y_train_std_**2,
        ax=ax,
        title=f"{b.site_names[test]} (held out): posterior and three exact samples",
    )
    lines = ax.plot(dates, draws, lw=0.7, alpha=0.8, color="C2")
    lines[0].set_label("posterior samples")
    ax.legend(fontsize="small", loc="upper right")
    ax.set_ylabel("wind speed (knots)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "wind_posterior_samples.png", dpi=90)
    print(f"wrote {out / 'wind_posterior_samples.png'}")


if __name__ == "__main__":
    main()
