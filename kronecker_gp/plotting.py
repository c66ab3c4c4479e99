"""Plots of a fitted space x time posterior (matplotlib is imported lazily).

Every function takes either a fitted :class:`~kronecker_gp.KroneckerGP` (the
posterior is computed on ``coords``, by default the training grid) or plain
arrays, draws on ``ax`` (a new figure when ``None``) and returns the Axes.
Grids follow the datasets' schema: axis 0 is the site (coordinates of shape
(n_sites, p)), axis 1 is time (shape (n_times,)).

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import numpy as np
>>> from kronecker_gp.plotting import plot_posterior_surface
>>> ax = plot_posterior_surface(np.arange(12.0).reshape(3, 4))
>>> ax.collections[0].get_array().shape
(3, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray

__all__ = [
    "plot_factor_spectra",
    "plot_posterior_surface",
    "plot_site_series",
    "plot_spatial_map",
]

_KIND_LABELS = {"mean": "posterior mean", "std": "posterior sd"}


def _new_axes(ax: Any) -> Any:
    """Return ``ax``, or the Axes of a new pyplot figure when it is None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # noqa: PLC0415 - keep import kronecker_gp fast

    return plt.subplots(constrained_layout=True)[1]


def _is_model(source: object) -> bool:
    """Tell a fitted-estimator-like object from an array."""
    return hasattr(source, "predict_grid")


def _check_kind(kind: str) -> str:
    if kind not in _KIND_LABELS:
        raise ValueError(f'kind must be "mean" or "std"; got {kind!r}.')
    return kind


def _model_coords(model: Any, coords: Sequence[ArrayLike] | None) -> list[FloatArray]:
    """Return the model's per-axis coordinates (the training grid by default)."""
    from sklearn.utils.validation import check_is_fitted  # noqa: PLC0415

    check_is_fitted(model, "grid_")  # KroneckerGP has requires_fit=False
    if coords is None:
        coords = model.grid_.coords
    if len(coords) != 2:
        raise ValueError(
            f"coords must be [sites, times] (two axes); got {len(coords)} axes. "
            "These plots show space x time grids."
        )
    return [np.asarray(c, dtype=np.float64) for c in coords]


def _model_moments(
    model: Any, coords: Sequence[ArrayLike]
) -> tuple[FloatArray, FloatArray]:
    mean, std = model.predict_grid(coords, return_std=True)
    return np.asarray(mean), np.asarray(std)


def _model_values(model: Any, coords: Sequence[ArrayLike], kind: str) -> FloatArray:
    """Return the posterior ``kind`` on a grid (the mean alone is cheapest)."""
    if kind == "mean":
        return np.asarray(model.predict_grid(coords))
    return _model_moments(model, coords)[1]


def _time_values(
    n_times: int, coords: Sequence[ArrayLike] | None, dates: ArrayLike | None
) -> np.ndarray:
    """Return the x values of the time axis: dates, coords[1] or 0..n_times-1."""
    if dates is not None:
        x = np.asarray(dates)
    elif coords is not None and len(coords) == 2:
        x = np.asarray(coords[1], dtype=np.float64).reshape(n_times, -1)[:, 0]
    else:
        x = np.arange(n_times, dtype=np.float64)
    if x.shape != (n_times,):
        raise ValueError(
            f"the time axis needs {n_times} values (one per column); got shape "
            f"{x.shape}."
        )
    return x


def _date_tick_labels(values: Sequence[float]) -> list[str]:
    """Return tick labels that name the month (and year) where it changes.

    The first tick always carries the month and year, so an axis is read
    without an offset text; later ticks repeat only what changed.
    """
    import matplotlib.dates as mdates  # noqa: PLC0415

    stamps = [mdates.num2date(v) for v in values]
    span = (values[-1] - values[0]) if len(values) > 1 else 0.0
    labels, prev = [], None
    for d in stamps:
        new_year = prev is None or d.year != prev.year
        if span > 3 * 365:
            labels.append(f"{d.year}")
        elif span > 100 or all(t.day == 1 for t in stamps):
            labels.append(d.strftime("%b\n%Y") if new_year else d.strftime("%b"))
        elif span >= 2:
            if new_year:
                labels.append(f"{d:%b} {d.day}\n{d.year}")
            elif prev is not None and d.month != prev.month:
                labels.append(f"{d:%b} {d.day}")
            else:
                labels.append(f"{d.day}")
        else:
            day = prev is None or d.date() != prev.date()
            labels.append(f"{d:%H:%M}" + (f"\n{d:%b} {d.day} {d.year}" if day else ""))
        prev = d
    return labels


def _date_formatter() -> Any:
    """Return a tick formatter that labels dates without an offset text."""
    import matplotlib.dates as mdates  # noqa: PLC0415
    from matplotlib.ticker import Formatter  # noqa: PLC0415

    class _DateLabels(Formatter):  # type: ignore[misc]
        def __call__(self, x: float, pos: int | None = None) -> str:
            return str(mdates.num2date(x).strftime("%Y-%m-%d %H:%M"))

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            # the first tick in view names its month and year, even when the
            # locator also placed ticks just outside the view
            lo, hi = (
                sorted(self.axis.get_view_interval()) if self.axis else (-1e99, 1e99)
            )
            shown = [v for v in values if lo <= v <= hi]
            labels = iter(_date_tick_labels(shown) if shown else [])
            return [next(labels) if lo <= v <= hi else "" for v in values]

    return _DateLabels()


def _format_time_axis(ax: Any, dates: ArrayLike | None) -> None:
    """Label the x axis "date" with month-and-year ticks, or "time"."""
    if dates is None:
        ax.set_xlabel("time")
        return
    import matplotlib.dates as mdates  # noqa: PLC0415

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=9))
    ax.xaxis.set_major_formatter(_date_formatter())
    ax.set_xlabel("date")


def _edges(x: np.ndarray) -> np.ndarray:
    """Return cell edges around sorted centres ``x`` (numbers or datetime64)."""
    if np.issubdtype(x.dtype, np.datetime64):
        origin = x[0]
        days = (x - origin) / np.timedelta64(1, "D")
        secs = np.round(_edges(days.astype(np.float64)) * 86400.0)
        return origin.astype("datetime64[s]") + secs.astype("timedelta64[s]")
    x = x.astype(np.float64)
    if x.size == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = 0.5 * (x[1:] + x[:-1])
    return np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])


def _grid_values(
    values: ArrayLike, name: str, shape: tuple[int, ...] | None = None
) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        want = "a 2-D (n_sites, n_times) array" if shape is None else f"shape {shape}"
        raise ValueError(f"{name} must be {want}; got shape {arr.shape}.")
    return arr


def plot_posterior_surface(
    source: Any,
    coords: Sequence[ArrayLike] | None = None,
    *,
    kind: str = "mean",
    ax: Any = None,
    dates: ArrayLike | None = None,
    site_order: ArrayLike | None = None,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    label: str | None = None,
    site_labels: Sequence[str] | None = None,
    highlight: ArrayLike | None = None,
) -> Any:
    """Draw the posterior over a site x time grid as a coloured surface.

    Parameters
    ----------
    source : KroneckerGP or array-like of shape (n_sites, n_times)
        A fitted model (its posterior ``kind`` is computed on ``coords``) or
        the values to draw.
    coords : list of [sites, times], optional
        Grid coordinates. For a model, the grid to predict on (default: the
        training grid); for arrays, ``coords[1]`` gives the time values.
    kind : {"mean", "std"}, default="mean"
        Which posterior moment a model's surface shows.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    dates : array-like of datetime64 of shape (n_times,), optional
        Dates for the time axis (override ``coords[1]``).
    site_order : array-like of int of shape (n_sites,), optional
        Row order, e.g. ``np.argsort(sites[:, 0])`` to sort west to east.
    cmap : str, optional
        Colormap (default ``"viridis"`` for the mean, ``"magma"`` for sd).
    vmin, vmax : float, optional
        Colour range (default: the data range).
    colorbar : bool, default=True
        Add a colour bar labelled with ``label``.
    label : str, optional
        Colour bar label, with the variable and its units, e.g.
        ``"ozone (ppb)"`` (default ``"posterior mean"`` or ``"posterior sd"``).
    site_labels : sequence of str of length n_sites, optional
        Site names or ids (in the grid's row order, before ``site_order``)
        written as y tick labels: all of them when they fit the axes' height,
        else every k-th (the y label then says so).
    highlight : array-like of int, optional
        Rows (grid order) to mark: their tick label is always shown, in red,
        and a red triangle outside the right edge points at the row, so no
        mark covers a cell.

    Returns
    -------
    ax : matplotlib Axes
        The Axes holding one ``QuadMesh`` (``ax.collections[0]``) whose
        array is the (reordered) grid of values.

    Raises
    ------
    ValueError
        If the values are not 2-D, ``kind`` is unknown, or ``site_order``
        or ``dates`` do not fit the grid.

    Notes
    -----
    Cells are drawn with ``pcolormesh`` centred on the time values, so
    uneven time steps (a missing day) keep their true width.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF
    >>> from kronecker_gp import KroneckerGP
    >>> from kronecker_gp.plotting import plot_posterior_surface
    >>> sites, days = np.linspace(0, 1, 6), np.arange(8.0)
    >>> Y = np.sin(3 * sites)[:, None] + np.cos(days / 3)[None, :]
    >>> gp = KroneckerGP([RBF(0.5), RBF(3.0)], noise=1e-2, optimizer=None)
    >>> ax = plot_posterior_surface(gp.fit_grid([sites, days], Y), kind="std")
    >>> ax.collections[0].get_array().shape, ax.get_ylabel()
    ((6, 8), 'site')
    """
    kind = _check_kind(kind)
    if _is_model(source):
        coords = _model_coords(source, coords)
        values = _model_values(source, coords, kind)
    else:
        values = _grid_values(source, "source")
    n_sites, n_times = values.shape
    if site_order is not None:
        order = np.asarray(site_order)
        if sorted(order.tolist()) != list(range(n_sites)):
            raise ValueError(
                f"site_order must be a permutation of 0..{n_sites - 1}; got "
                f"{order.shape[0]} entries."
            )
        values = values[order]
    x = _time_values(n_times, coords, dates)
    ax = _new_axes(ax)
    mesh = ax.pcolormesh(
        _edges(x),
        np.arange(n_sites + 1) - 0.5,
        values,
        cmap=cmap or ("viridis" if kind == "mean" else "magma"),
        vmin=vmin,
        vmax=vmax,
        shading="flat",
    )
    _format_time_axis(ax, dates)
    ax.set_ylabel("site")
    rows = np.arange(n_sites) if site_order is None else np.asarray(site_order)
    if site_labels is not None or highlight is not None:
        _label_rows(ax, site_labels, rows, highlight)
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=label or _KIND_LABELS[kind])
    return ax


def _label_rows(
    ax: Any, labels: Sequence[str] | None, rows: np.ndarray, highlight: Any
) -> None:
    """Write site labels on the y axis (every k-th when they do not all fit)."""
    n = rows.size
    if labels is not None and len(labels) != n:
        raise ValueError(
            f"site_labels needs {n} labels (one per site); got {len(labels)}."
        )
    names = [str(i) if labels is None else str(labels[i]) for i in rows]
    height_pt = ax.get_position().height * ax.figure.get_figheight() * 72.0
    step = max(1, int(np.ceil(n / max(height_pt / 9.0, 1.0))))
    ticks = set(range(0, n, step))
    marked = []
    for site in np.atleast_1d(
        np.asarray(highlight if highlight is not None else [], dtype=int)
    ):
        pos = int(np.flatnonzero(rows == site)[0])
        gap = step / 2 + 0.5 if step > 1 else 1  # keep neighbours' labels off it
        ticks = {t for t in ticks if abs(t - pos) >= gap} | {pos}
        marked.append(pos)
    ticks_sorted = sorted(ticks)
    ax.set_yticks(
        ticks_sorted, [names[t] for t in ticks_sorted], fontsize=7 if n > 20 else None
    )
    for tick, text in zip(ticks_sorted, ax.get_yticklabels()):
        if tick in marked:
            text.set_color("C3")
            text.set_fontweight("bold")
    for pos in marked:
        ax.plot(
            [1.0],
            [pos],
            marker="<",
            color="C3",
            ms=6,
            clip_on=False,
            transform=ax.get_yaxis_transform(),
            label="highlighted row",
        )
    if step > 1:
        ax.set_ylabel(f"site (every {step}th labelled)")


def _series(values: ArrayLike | None, site: int, n_times: int, name: str) -> Any:
    """Return row ``site`` of a grid, or a series, as a float array (or None)."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[site]
    if arr.shape != (n_times,):
        raise ValueError(
            f"{name} must have shape (n_times,) or (n_sites, n_times) with "
            f"n_times={n_times}; got {np.shape(values)}."
        )
    return arr


def _noise_variance(source: Any, noise: float | str | None) -> float:
    """Return the noise variance to add to a band (0 when ``noise`` is None)."""
    if noise is None:
        return 0.0
    if isinstance(noise, str):
        if noise != "fitted" or not _is_model(source):
            raise ValueError(
                'noise must be a variance or "fitted" (with a fitted model as '
                f"source); got {noise!r}."
            )
        return float(source.noise_ * getattr(source, "y_train_std_", 1.0) ** 2)
    if not noise >= 0:
        raise ValueError(f"noise must be a non-negative variance; got {noise!r}.")
    return float(noise)


def plot_site_series(
    source: Any,
    coords: Sequence[ArrayLike] | None = None,
    site: int = 0,
    *,
    std: ArrayLike | None = None,
    observed: ArrayLike | None = None,
    held_out: ArrayLike | None = None,
    dates: ArrayLike | None = None,
    n_std: float = 2.0,
    noise: float | str | None = None,
    ax: Any = None,
    title: str | None = None,
    ylabel: str | None = None,
) -> Any:
    """Draw one site's posterior mean over time with a +-n_std sd band.

    Parameters
    ----------
    source : KroneckerGP or array-like of shape (n_times,) or (n_sites, n_times)
        A fitted model (the posterior at ``coords[0][site]`` is computed on
        ``coords[1]``) or the posterior mean (a grid's row ``site`` is used).
    coords : list of [sites, times], optional
        Grid coordinates (default for a model: the training grid). For
        arrays, ``coords[1]`` gives the time values.
    site : int, default=0
        Row of the site to draw.
    std : array-like, optional
        Posterior sd, shaped like ``source`` (arrays only; a model's is
        computed). Without it no band is drawn.
    observed : array-like of shape (n_times,) or (n_sites, n_times), optional
        Observations used in the fit, NaN where missing; drawn as dots.
    held_out : array-like of shape (n_times,) or (n_sites, n_times), optional
        Held-out observations, NaN elsewhere; drawn as red crosses.
    dates : array-like of datetime64 of shape (n_times,), optional
        Dates for the time axis.
    n_std : float, default=2.0
        Half-width of the band in posterior sds.
    noise : float or "fitted", optional
        Noise variance added to the band's variance, so that it covers new
        observations rather than the latent function. ``"fitted"`` (model
        only) uses the model's ``noise_`` in data units
        (``noise_ * y_train_std_**2``).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    title : str, optional
        Axes title (default ``"site {site}"``).
    ylabel : str, optional
        Y axis label: the variable and its units, e.g. ``"ozone (ppb)"``.

    Returns
    -------
    ax : matplotlib Axes
        Holds the mean line (label ``"posterior mean"``), the band (a
        ``PolyCollection``) and the point sets, with a legend outside the
        data area (right of the axes).

    Raises
    ------
    ValueError
        If an array does not match the number of times, or ``noise`` is
        negative or ``"fitted"`` without a model.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from kronecker_gp.plotting import plot_site_series
    >>> mean, sd = np.zeros(5), np.ones(5)
    >>> ax = plot_site_series(mean, std=sd, observed=[0.5, np.nan, -1, 0, 1])
    >>> [line.get_label() for line in ax.get_lines()]
    ['posterior mean', 'observed']
    >>> [float(v) for v in ax.dataLim.intervaly]
    [-2.0, 2.0]
    """
    if _is_model(source):
        coords = _model_coords(source, coords)
        sites = coords[0].reshape(coords[0].shape[0], -1)
        mean, sd = _model_moments(source, [sites[site : site + 1], coords[1]])
        mean, sd = mean[0], sd[0]
    else:
        grid = np.asarray(source, dtype=np.float64)
        n_times = grid.shape[-1] if grid.ndim in (1, 2) else -1
        mean = _series(grid, site, n_times, "source")
        sd = _series(std, site, n_times, "std")
    n_times = mean.shape[0]
    x = _time_values(n_times, coords, dates)
    extra = _noise_variance(source, noise)
    ax = _new_axes(ax)
    if sd is not None:
        half = n_std * np.sqrt(sd**2 + extra)
        ax.fill_between(
            x,
            mean - half,
            mean + half,
            alpha=0.3,
            color="C0",
            label=f"+-{n_std:.3g} sd" + (" (with noise)" if noise is not None else ""),
        )
    ax.plot(x, mean, color="C0", label="posterior mean")
    obs = _series(observed, site, n_times, "observed")
    if obs is not None:
        ax.plot(x, obs, ".", color="k", ms=4, label="observed")
    out = _series(held_out, site, n_times, "held_out")
    if out is not None:
        ax.plot(x, out, "x", color="C3", ms=5, label="held out")
    _format_time_axis(ax, dates)
    ax.set_title(f"site {site}" if title is None else title)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
        fontsize="small",
    )  # fmt: skip
    return ax


def _sites_of(coords: Any) -> FloatArray:
    """Return the site array from ``[sites, times]`` or from a bare site array."""
    if isinstance(coords, (list, tuple)) and len(coords) == 2:
        first = np.asarray(coords[0], dtype=np.float64)
        if first.ndim == 2:
            return first
    return np.asarray(coords, dtype=np.float64)


def _lattice_moment(
    model: Any, sites: FloatArray, at: FloatArray, kind: str, resolution: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return lattice x, y and the posterior moment over the sites' bounding box."""
    if sites.shape[1] != 2:
        raise ValueError(
            f"resolution needs 2-D sites (n_sites, 2); got shape {sites.shape}."
        )
    pad = 0.05 * (sites.max(axis=0) - sites.min(axis=0))
    lo, hi = sites.min(axis=0) - pad, sites.max(axis=0) + pad
    gx = np.linspace(lo[0], hi[0], resolution)
    gy = np.linspace(lo[1], hi[1], resolution)
    xx, yy = np.meshgrid(gx, gy)
    points = np.column_stack([xx.reshape(-1), yy.reshape(-1)])
    moment = _model_values(model, [points, at], kind)[:, 0]
    return xx, yy, moment.reshape(xx.shape)


def plot_spatial_map(
    source: Any,
    coords: Sequence[ArrayLike] | ArrayLike | None = None,
    time: int = 0,
    *,
    kind: str = "mean",
    ax: Any = None,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    highlight: ArrayLike | None = None,
    feature_names: tuple[str, str] = ("lon", "lat"),
    title: str | None = None,
    resolution: int | None = None,
    label: str | None = None,
    degrees: bool | None = None,
    highlight_label: str = "highlighted",
) -> Any:
    """Draw the sites on a map coloured by the posterior at one time.

    Parameters
    ----------
    source : KroneckerGP or array-like of shape (n_sites,) or (n_sites, n_times)
        A fitted model (its posterior ``kind`` at ``coords[1][time]``) or the
        values to colour by (a grid's column ``time`` is used).
    coords : [sites, times] or array-like of shape (n_sites, 2), optional
        Site coordinates (first two columns are x and y). Required for
        arrays; for a model defaults to the training grid.
    time : int, default=0
        Column of the time to draw.
    kind : {"mean", "std"}, default="mean"
        Which posterior moment a model's map shows.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    cmap : str, optional
        Colormap (default ``"viridis"`` for the mean, ``"magma"`` for sd).
    vmin, vmax : float, optional
        Colour range; share it across panels to compare dates.
    colorbar : bool, default=True
        Add a colour bar.
    highlight : array-like of int, optional
        Sites to circle (for example a held-out station).
    feature_names : pair of str, default=("lon", "lat")
        Axis labels (for degrees: "longitude (°E)" and "latitude (°N)").
    title : str, optional
        Axes title (default: the kind and the time index).
    resolution : int, optional
        Model only: also draw the posterior over a ``resolution`` x
        ``resolution`` lattice spanning the sites (a prediction off the
        training grid), under the sites, on the same colour scale.
    label : str, optional
        Colour bar label with the variable and its units (default
        ``"posterior mean"`` or ``"posterior sd"``).
    degrees : bool, optional
        Whether x and y are longitude and latitude in degrees (default: when
        ``feature_names`` start with "lon" and "lat"). Degree maps get degree
        tick labels and the aspect ``1 / cos(latitude)`` (a kilometre is as
        long east-west as north-south); other maps get an equal aspect.
    highlight_label : str, default="highlighted"
        Legend entry of the ``highlight`` circles (the legend sits below the
        axes, off the data).

    Returns
    -------
    ax : matplotlib Axes
        Holds the site scatter (the last collection without ``highlight``,
        one point per site with the value as its colour), the circles of
        ``highlight`` after it, and with ``resolution`` the lattice
        (``ax.collections[0]``, a ``QuadMesh``).

    Raises
    ------
    ValueError
        If the sites are not 2-D or the values do not match them.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from kronecker_gp.plotting import plot_spatial_map
    >>> sites = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> ax = plot_spatial_map([1.0, 2.0, 3.0], sites, highlight=[2])
    >>> [float(v) for v in ax.collections[0].get_clim()]
    [1.0, 3.0]
    """
    kind = _check_kind(kind)
    field = None
    if _is_model(source):
        coords = _model_coords(source, coords)  # type: ignore[arg-type]
        sites = coords[0]
        at = coords[1].reshape(coords[1].shape[0], -1)[time : time + 1]
        values = _model_values(source, [sites, at], kind)[:, 0]
        if resolution is not None:
            field = _lattice_moment(source, sites, at, kind, resolution)
    else:
        if coords is None:
            raise ValueError("coords (the site coordinates) is required for arrays.")
        sites = _sites_of(coords)
        values = np.asarray(source, dtype=np.float64)
        values = values[:, time] if values.ndim == 2 else values
    sites = np.asarray(sites, dtype=np.float64)
    if sites.ndim != 2 or sites.shape[1] < 2 or values.shape != (sites.shape[0],):
        raise ValueError(
            f"need sites of shape (n_sites, 2) and one value per site; got sites "
            f"{sites.shape} and values {values.shape}."
        )
    ax = _new_axes(ax)
    style = {
        "cmap": cmap or ("viridis" if kind == "mean" else "magma"),
        "vmin": vmin,
        "vmax": vmax,
    }
    if field is not None:
        lo = min(values.min(), field[2].min()) if vmin is None else vmin
        hi = max(values.max(), field[2].max()) if vmax is None else vmax
        style.update(vmin=lo, vmax=hi)
        ax.pcolormesh(*field, shading="nearest", **style)
    points = ax.scatter(
        sites[:, 0],
        sites[:, 1],
        c=values,
        s=40,
        edgecolors="k",
        linewidths=0.5,
        **style,
    )
    if highlight is not None:
        idx = np.atleast_1d(np.asarray(highlight, dtype=int))
        ax.scatter(
            sites[idx, 0],
            sites[idx, 1],
            s=160,
            facecolors="none",
            edgecolors="C3",
            linewidths=2,
            label=highlight_label,
        )
    _map_axes(ax, sites, feature_names, degrees)
    if highlight is not None:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize="small",
            frameon=False,
        )  # fmt: skip
    ax.set_title(f"{_KIND_LABELS[kind]}, time {time}" if title is None else title)
    if colorbar:
        ax.figure.colorbar(points, ax=ax, label=label or _KIND_LABELS[kind])
    return ax


def _map_axes(
    ax: Any, sites: FloatArray, names: tuple[str, str], degrees: bool | None
) -> None:
    """Label a map's axes and set its aspect (true distances for degrees)."""
    if degrees is None:
        degrees = names[0].lower().startswith("lon") and names[1].lower().startswith(
            "lat"
        )
    if not degrees:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_aspect("equal", adjustable="box")
        return
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}°"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}°"))
    mid = 0.5 * (sites[:, 1].min() + sites[:, 1].max())
    ax.set_aspect(1.0 / max(np.cos(np.radians(mid)), 0.05), adjustable="box")


def plot_factor_spectra(model: Any, *, ax: Any = None) -> Any:
    """Draw the sorted eigenvalues of each fitted factor Gram matrix.

    Parameters
    ----------
    model : KroneckerGP
        A fitted model.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.

    Returns
    -------
    ax : matplotlib Axes
        One line per grid axis (log y scale), labelled ``"axis d (n=...)"``,
        and a dashed line at the fitted noise variance.

    Notes
    -----
    The eigenvalues of ``K_1 (x) ... (x) K_D`` are all products of the
    factors' eigenvalues; the noise sets the floor below which directions
    are not resolved.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF
    >>> from kronecker_gp import KroneckerGP
    >>> from kronecker_gp.plotting import plot_factor_spectra
    >>> gp = KroneckerGP([RBF(0.3), RBF(2.0)], noise=0.1, optimizer=None)
    >>> gp = gp.fit_grid([np.linspace(0, 1, 5), np.arange(7.0)], np.ones((5, 7)))
    >>> [line.get_label() for line in plot_factor_spectra(gp).get_lines()]
    ['axis 0 (n=5)', 'axis 1 (n=7)', 'noise']
    """
    import scipy.linalg  # noqa: PLC0415
    from sklearn.utils.validation import check_is_fitted  # noqa: PLC0415

    check_is_fitted(model, "grid_")  # KroneckerGP has requires_fit=False
    ax = _new_axes(ax)
    grams = model.kernel_.factor_grams(model.grid_.coords)
    for d, gram in enumerate(grams):
        eig = np.sort(scipy.linalg.eigvalsh(np.asarray(gram)))[::-1]
        eig = np.clip(eig, np.finfo(float).tiny, None)
        ax.plot(np.arange(1, eig.size + 1), eig, ".-", label=f"axis {d} (n={eig.size})")
    ax.axhline(model.noise_, color="k", ls="--", label="noise")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize="small")
    return ax
