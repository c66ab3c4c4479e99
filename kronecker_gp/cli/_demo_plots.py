"""Figures of ``kronecker-gp demo``: maps, the posterior surface, station series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp.cli._demo import Loaded, Split


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> Any:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), constrained_layout=True)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).reshape(-1))


def plot_maps(path: Path, loaded: Loaded, split: Split, gp: Any) -> None:
    """Save the posterior mean over the region at four dates (one colour scale)."""
    from kronecker_gp.plotting import plot_spatial_map  # noqa: PLC0415

    n_t = loaded.times.size
    picks = np.unique(np.round(np.linspace(0.1, 0.9, 4) * (n_t - 1)).astype(int))
    coords = [loaded.sites, loaded.times]
    at = loaded.times[picks]
    mean = gp.predict_grid([loaded.sites, at])
    lo, hi = np.percentile(mean, [1, 99])
    fig, axes = _figure(4.0 * picks.size, 3.9, ncols=picks.size)
    for ax, k in zip(axes, picks):
        plot_spatial_map(
            gp,
            coords,
            int(k),
            ax=ax,
            vmin=lo,
            vmax=hi,
            colorbar=False,
            highlight=[split.station],
            resolution=70,
            title=f"{loaded.dates[k]}",
        )
        ax.set_aspect("equal", adjustable="box")
    fig.colorbar(
        axes[0].collections[0],
        ax=list(axes),
        shrink=0.8,
        label=f"posterior mean {loaded.target} ({loaded.units})",
    )
    fig.suptitle(
        f"{loaded.name}: posterior mean at four dates "
        f"(red circle: held-out station {loaded.site_ids[split.station]})"
    )
    fig.savefig(path, dpi=90)


def plot_surface(path: Path, loaded: Loaded, split: Split, gp: Any) -> None:
    """Save the training grid (gaps white) next to the posterior mean surface."""
    from kronecker_gp.plotting import plot_posterior_surface  # noqa: PLC0415

    order = np.argsort(loaded.sites[:, 0], kind="stable")
    row = int(np.flatnonzero(order == split.station)[0])
    coords = [loaded.sites, loaded.times]
    mean = gp.predict_grid(coords)
    lo, hi = np.nanpercentile(split.data, [0.5, 99.5])
    fig, axes = _figure(12.5, 4.8, ncols=2)
    panels = (
        (split.train, "training data (white: missing or held out)"),
        (mean, f"posterior mean {loaded.target}, every cell"),
    )
    for ax, (values, title) in zip(axes, panels):
        plot_posterior_surface(
            values,
            coords,
            ax=ax,
            dates=loaded.dates,
            site_order=order,
            vmin=lo,
            vmax=hi,
            label=f"{loaded.target} ({loaded.units})",
        )
        ax.axhline(row, color="C3", lw=1.0, ls="--")
        ax.annotate(
            "held-out station",
            (0.01, row + 1.5),
            xycoords=("axes fraction", "data"),
            color="C3",
            fontsize="small",
            va="bottom",
            bbox={"fc": "w", "ec": "none", "alpha": 0.7, "pad": 1},
        )
        ax.set(title=f"{loaded.name}: {title}", ylabel="station (west to east)")
    fig.savefig(path, dpi=90)


def plot_series(path: Path, loaded: Loaded, split: Split, gp: Any) -> None:
    """Save the held-out station's series and the station with most held-out cells."""
    from kronecker_gp.plotting import plot_site_series  # noqa: PLC0415

    held = np.where(split.cells, split.data, np.nan)
    held[split.station] = split.data[split.station]
    busiest = int(np.argmax(split.cells.sum(axis=1)))
    fig, axes = _figure(11.0, 6.5, nrows=2)
    coords = [loaded.sites, loaded.times]
    for ax, site, what in zip(
        axes, (split.station, busiest), ("held-out station", "random held-out cells")
    ):
        plot_site_series(
            gp,
            coords,
            site,
            observed=split.train,
            held_out=held,
            dates=loaded.dates,
            noise="fitted",
            title=f"station {loaded.site_ids[site]} ({what}): posterior mean and "
            "+-2 sd band for observations (noise included)",
            ax=ax,
        )
        ax.set_ylabel(f"{loaded.target} ({loaded.units})")
    fig.savefig(path, dpi=90)
