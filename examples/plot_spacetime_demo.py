"""Fit a KroneckerGP to a synthetic space x time grid and plot the posterior.

Draws a field from a GP prior (RBF over 2-D sites x Matern-3/2 over days),
adds noise, learns the hyperparameters by maximising the exact log marginal
likelihood, and prints what was learned next to the truth.

Run: ``python examples/plot_spacetime_demo.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the PNG")
    parser.add_argument("--sites", type=int, default=150)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    sites = rng.uniform(0, 10, size=(args.sites, 2))
    days = np.arange(args.days, dtype=float)
    truth = KroneckerGP(
        [ConstantKernel(2.0) * RBF(3.0), Matern(20.0, nu=1.5)], noise=0.1
    )
    f = truth.sample_grid([sites, days], random_state=1)[..., 0]
    Y = f + np.sqrt(0.1) * rng.standard_normal(f.shape)
    print(f"grid: {args.sites} sites x {args.days} days = {Y.size:,} cells")
    print("truth: amplitude 2.0, space length 3.0, time length 20.0, noise 0.1")

    gp = KroneckerGP(
        [ConstantKernel(1.0) * RBF(1.0), Matern(5.0, nu=1.5)], noise=1.0, verbose=0
    )
    t0 = time.perf_counter()
    gp.fit_grid([sites, days], Y)
    print(f"fitted in {time.perf_counter() - t0:.2f} s")
    print(f"kernels: {gp.kernels_}")
    print(f"noise:   {gp.noise_:.4f}")
    print(f"log marginal likelihood: {gp.log_marginal_likelihood_value_:.2f}")

    mean, std = gp.predict_grid([sites, days], return_std=True)
    rmse = float(np.sqrt(np.mean((mean - f) ** 2)))
    print(f"RMSE of posterior mean vs true field: {rmse:.4f} (noise sd {0.1**0.5:.3f})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    order = np.argsort(sites[:, 0])
    im = ax[0].imshow(mean[order], aspect="auto", cmap="viridis")
    ax[0].set(title="posterior mean (sites by x)", xlabel="day", ylabel="site")
    fig.colorbar(im, ax=ax[0])
    s0 = order[0]
    ax[1].fill_between(
        days, mean[s0] - 2 * std[s0], mean[s0] + 2 * std[s0], alpha=0.3, label="+-2 sd"
    )
    ax[1].plot(days, mean[s0], label="posterior mean")
    ax[1].plot(days, Y[s0], ".", ms=2, color="k", label="observed")
    ax[1].set(title=f"site {s0}", xlabel="day")
    ax[1].legend()
    fig.savefig(out / "spacetime_demo.png", dpi=100)
    print(f"wrote {out / 'spacetime_demo.png'}")


if __name__ == "__main__":
    main()
