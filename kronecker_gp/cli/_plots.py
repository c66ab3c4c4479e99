"""The figure of ``kronecker-gp fit --plot``: posterior mean and sd surfaces."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kronecker_gp.cli._csv import GridData


def site_labels(data: GridData, column: str | None, site_cols: list[str]) -> list[str]:
    """Return one label per site: ``column``, else the first per-site text column."""
    if column is None:
        extra = [c for c in data.site_fields[0] if c not in site_cols]
        column = extra[0] if extra else None
    if column is not None and column not in data.site_fields[0]:
        from kronecker_gp.cli._source import CLIError  # noqa: PLC0415

        raise CLIError(
            f"--site-label {column!r} is not a column that is constant within a "
            f"site; choose one of {', '.join(data.site_fields[0])}"
        )
    if column is None:
        return [", ".join(f[c] for c in site_cols) for f in data.site_fields]
    return [f[column] for f in data.site_fields]


def save_fit_plot(
    path: Path, fmt: str | None, data: GridData, table: dict[str, Any],
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Save :func:`fit_figure` to ``path`` in format ``fmt``."""
    fit_figure(data, table, args).savefig(path, format=fmt, dpi=100)


def fit_figure(data: GridData, table: dict[str, Any], args: argparse.Namespace) -> Any:
    """Return the posterior mean and sd (of a new observation) over sites x times."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from kronecker_gp.plotting import plot_posterior_surface  # noqa: PLC0415

    labels = site_labels(data, args.site_label, args.site_cols)
    unit = f" ({args.units})" if args.units else ""
    fig = Figure(figsize=(12, 5.0), constrained_layout=True)
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("mean", "viridis", f"{args.value_col}{unit}", "posterior mean"),
        ("sd_obs", "magma", f"sd of {args.value_col}{unit}",
         "sd of a new observation (noise included)"),
    )  # fmt: skip
    for ax, (key, cmap, label, title) in zip(axes, panels):
        plot_posterior_surface(
            table[key], [data.sites, data.times], ax=ax, dates=data.dates,
            cmap=cmap, label=label, site_labels=labels,
        )  # fmt: skip
        ax.set_title(title)
        if data.dates is None:
            ax.set_xlabel(args.time_col)
    axes[1].set_ylabel("")
    axes[0].invert_yaxis()  # the first site of the file on top (axes share y)
    return fig
