"""Figures of ``kronecker-gp demo``: maps, the posterior surface, station series.

Each ``*_figure`` function returns a matplotlib ``Figure`` (tests inspect its
artists); :func:`save_figures` writes them through temporary files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp.cli._demo import Loaded, Split
from kronecker_gp.cli._output import atomic_write

#: File names of the demo's figures, in the order of ``FIGURES``.
NAMES = ("posterior_map.png", "posterior_surface.png", "station_series.png")


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> Any:
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), constrained_layout=True)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).reshape(-1))


def _label(loaded: Loaded, what: str = "") -> str:
    return f"{what}{loaded.target} ({loaded.units})"


def maps_figure(loaded: Loaded, split: Split, gp: Any) -> Any:
    """Map the posterior mean at three dates, and its sd at the last."""
    from kronecker_gp.plotting import plot_spatial_map  # noqa: PLC0415

    n_t = loaded.times.size
    picks = np.unique(np.round(np.linspace(0.15, 0.85, 3) * (n_t - 1)).astype(int))
    coords = [loaded.sites, loaded.times]
    mean = gp.predict_grid([loaded.sites, loaded.times[picks]])
    lo, hi = np.percentile(mean, [1, 99])
    fig, axes = _figure(4.1 * (picks.size + 1) + 1.2, 4.4, ncols=picks.size + 1)
    style: dict[str, Any] = {
        "highlight": [split.station],
        "resolution": 60,
        "highlight_label": f"held-out station {loaded.site_ids[split.station]}",
    }
    for ax, k in zip(axes, picks):
        plot_spatial_map(
            gp, coords, int(k), ax=ax, vmin=lo, vmax=hi, colorbar=False,
            title=f"mean, {str(loaded.dates[k])[:10]}", **style,
        )  # fmt: skip
    fig.colorbar(
        axes[0].collections[-2], ax=list(axes[: picks.size]), shrink=0.85,
        label=_label(loaded, "posterior mean "),
    )  # fmt: skip
    plot_spatial_map(
        gp, coords, int(picks[-1]), kind="std", ax=axes[-1],
        title=f"sd, {str(loaded.dates[picks[-1]])[:10]}",
        label=_label(loaded, "posterior sd of "), **style,
    )  # fmt: skip
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()  # one legend for the row, below it, off the maps
    fig.legend(handles, labels, loc="outside lower center", frameon=False)
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.suptitle(f"{loaded.name}: posterior mean and its uncertainty")
    return fig


def surface_figure(loaded: Loaded, split: Split, gp: Any) -> Any:
    """Draw the training grid (gaps white) next to the posterior mean surface."""
    from kronecker_gp.plotting import plot_posterior_surface  # noqa: PLC0415

    order = np.argsort(loaded.sites[:, 0], kind="stable")
    coords = [loaded.sites, loaded.times]
    mean = gp.predict_grid(coords)
    lo, hi = np.nanpercentile(split.data, [0.5, 99.5])
    fig, axes = _figure(12.5, 5.4, ncols=2)
    panels = (
        (split.train, "training data (white: missing or held out)"),
        (mean, f"posterior mean {loaded.target}, every cell"),
    )
    labels = [str(i) for i in loaded.site_ids]
    for ax, (values, title) in zip(axes, panels):
        plot_posterior_surface(
            values, coords, ax=ax, dates=loaded.dates, site_order=order,
            vmin=lo, vmax=hi, label=_label(loaded), site_labels=labels,
            highlight=[split.station],
        )  # fmt: skip
        ax.set_title(f"{loaded.name}: {title}")
        ax.set_ylabel(ax.get_ylabel().replace("site", "station, west to east"))
    fig.supxlabel(
        f"red: held-out station {loaded.site_ids[split.station]} (its row is "
        "all white in the training data)",
        fontsize="small", color="C3",
    )  # fmt: skip
    return fig


def series_figure(loaded: Loaded, split: Split, model: Any) -> Any:
    """Draw the held-out station's series and the busiest held-out station's.

    The band is the 95 % interval for a new observation that ``kronecker-gp
    fit`` writes (``lower95``..``upper95``, noise included, back-transformed).
    """
    from kronecker_gp.plotting import plot_site_series  # noqa: PLC0415

    held = np.where(split.cells, split.data, np.nan)
    held[split.station] = split.data[split.station]
    busiest = int(np.argmax(split.cells.sum(axis=1)))
    fig, axes = _figure(12.0, 6.8, nrows=2)
    coords = [loaded.sites, loaded.times]
    for ax, site, what in zip(
        axes, (split.station, busiest), ("held-out station", "random held-out cells")
    ):
        out = model.predictive_grid([loaded.sites[site : site + 1], loaded.times])
        plot_site_series(
            out["mean"][0], coords, site, observed=split.train, held_out=held,
            dates=loaded.dates, ylabel=_label(loaded), ax=ax,
            title=f"station {loaded.site_ids[site]} ({what}): posterior mean and "
            "95 % interval for a new observation",
        )  # fmt: skip
        ax.fill_between(
            loaded.dates, out["lower95"][0], out["upper95"][0], alpha=0.3,
            color="C0", lw=0, zorder=0, label="95 % interval (noise included)",
        )  # fmt: skip
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
            fontsize="small",
        )  # fmt: skip
    return fig


FIGURES = (maps_figure, surface_figure, series_figure)


def save_figures(out: Path, loaded: Loaded, split: Split, gp: Any) -> list[str]:
    """Write the demo's figures to folder ``out``; return their file names."""
    for make, name in zip(FIGURES, NAMES):
        fig = make(loaded, split, gp)
        with atomic_write(out / name) as temp:
            fig.savefig(temp, format="png", dpi=90)
    return list(NAMES)
