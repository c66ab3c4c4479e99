"""Tests for kronecker_gp.plotting: inspect what was drawn, headless (Agg)."""

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.figure import Figure
from sklearn.exceptions import NotFittedError
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP
from kronecker_gp.plotting import (
    plot_factor_spectra,
    plot_posterior_surface,
    plot_site_series,
    plot_spatial_map,
)
from kronecker_gp.testing import assert_allclose

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def fitted():
    """A small fitted space x time model (fixed hyperparameters, fast)."""
    rng = np.random.default_rng(20240607)
    sites = rng.uniform(0, 5, size=(7, 2))
    times = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 6.0])  # uneven: day 4 missing
    Y = np.sin(sites[:, :1]) + np.cos(times / 2)[None, :]
    gp = KroneckerGP(
        [ConstantKernel(1.0) * RBF(2.0), Matern(2.0, nu=1.5)],
        noise=1e-2,
        optimizer=None,
    )
    gp.fit_grid([sites, times], Y)
    return gp, sites, times, Y


def _axes():
    return Figure().subplots()


def test_import_does_not_load_pyplot():
    code = (
        "import sys, kronecker_gp, kronecker_gp.plotting; "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------ posterior surface
def test_surface_from_model_draws_posterior_mean(fitted):
    gp, sites, times, _ = fitted
    ax = plot_posterior_surface(gp, ax=_axes())
    mesh = ax.collections[0]
    assert isinstance(mesh, QuadMesh)
    assert_allclose(
        np.asarray(mesh.get_array()).reshape(7, 6), gp.predict_grid([sites, times])
    )
    # cells are centred on the (uneven) times: edges -0.5 .. 6.5, sites 0..6
    assert_allclose(ax.dataLim.intervalx, [-0.5, 6.5])
    assert_allclose(ax.dataLim.intervaly, [-0.5, 6.5])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time", "site")
    cbar_axes = [a for a in ax.figure.axes if a is not ax]
    assert len(cbar_axes) == 1
    assert cbar_axes[0].get_ylabel() == "posterior mean"


def test_surface_std_kind_order_and_colour_range(fitted):
    gp, sites, times, _ = fitted
    order = np.argsort(sites[:, 0])
    ax = plot_posterior_surface(
        gp,
        [sites, times],
        kind="std",
        site_order=order,
        vmin=0.0,
        vmax=1.0,
        ax=_axes(),
        colorbar=False,
    )
    _, std = gp.predict_grid([sites, times], return_std=True)
    mesh = ax.collections[0]
    assert_allclose(np.asarray(mesh.get_array()).reshape(7, 6), std[order])
    assert mesh.get_clim() == (0.0, 1.0)
    assert mesh.get_cmap().name == "magma"
    assert len(ax.figure.axes) == 1  # no colour bar


def test_surface_from_array_with_dates():
    values = np.arange(6.0).reshape(2, 3)
    dates = np.array(["2020-01-01", "2020-01-02", "2020-01-04"], dtype="datetime64[D]")
    ax = plot_posterior_surface(values, dates=dates, ax=_axes(), label="ppb")
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 5.0)
    assert ax.get_xlabel() == "date"
    # x limits span half a step before the first and after the last date
    lo, hi = ax.dataLim.intervalx
    days = matplotlib.dates.date2num(np.datetime64("2020-01-01"))
    assert_allclose([lo - days, hi - days], [-0.5, 4.0])
    assert ax.figure.axes[1].get_ylabel() == "ppb"


def test_surface_new_figure_when_no_axes():
    import matplotlib.pyplot as plt

    ax = plot_posterior_surface(np.ones((2, 2)))
    assert ax.figure is not None
    plt.close(ax.figure)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": np.ones(3)}, "2-D"),
        ({"source": np.ones((2, 3)), "kind": "var"}, "kind"),
        ({"source": np.ones((2, 3)), "site_order": [0, 0]}, "permutation"),
        ({"source": np.ones((2, 3)), "dates": np.arange(2)}, "3 values"),
    ],
)
def test_surface_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_posterior_surface(ax=_axes(), **kwargs)


def test_surface_requires_fitted_model():
    with pytest.raises(NotFittedError):
        plot_posterior_surface(KroneckerGP(), ax=_axes())


def test_surface_rejects_three_axes(fitted):
    gp = fitted[0]
    with pytest.raises(ValueError, match="two axes"):
        plot_posterior_surface(gp, [np.ones(2), np.ones(2), np.ones(2)], ax=_axes())


# ------------------------------------------------------------------ site series
def test_site_series_from_model(fitted):
    gp, sites, times, Y = fitted
    held = np.full_like(Y, np.nan)
    held[2, [1, 4]] = [5.0, -5.0]
    ax = plot_site_series(
        gp, site=2, observed=Y, held_out=held, ax=_axes(), title="station 2"
    )
    mean, std = gp.predict_grid([sites[2:3], times], return_std=True)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["posterior mean", "observed", "held out"]
    assert_allclose(lines["posterior mean"].get_xydata()[:, 0], times)
    assert_allclose(lines["posterior mean"].get_xydata()[:, 1], mean[0])
    assert_allclose(lines["observed"].get_ydata(), Y[2])
    assert lines["held out"].get_marker() == "x"
    band = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1 and band[0].get_label() == "+-2 sd"
    # the band spans mean +- 2 sd; the held-out points stretch the data limits
    verts = band[0].get_paths()[0].vertices
    assert_allclose(verts[:, 1].max(), (mean + 2 * std).max())
    assert_allclose(ax.dataLim.intervaly, [-5.0, 5.0])
    assert ax.get_title() == "station 2"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(legend) == {"+-2 sd", "posterior mean", "observed", "held out"}


def test_site_series_from_arrays_with_dates():
    mean = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    std = np.full_like(mean, 0.5)
    dates = np.array(["2021-03-01", "2021-03-02", "2021-03-03"], dtype="datetime64[D]")
    ax = plot_site_series(mean, site=1, std=std, dates=dates, n_std=1, ax=_axes())
    (line,) = ax.get_lines()
    assert_allclose(line.get_ydata(), [3.0, 4.0, 5.0])
    assert_allclose(ax.dataLim.intervaly, [2.5, 5.5])
    assert ax.get_xlabel() == "date"
    assert ax.collections[0].get_label() == "+-1 sd"


def test_site_series_without_std_draws_no_band():
    ax = plot_site_series(np.arange(4.0), ax=_axes())
    assert not ax.collections
    assert_allclose(ax.get_lines()[0].get_xdata(), np.arange(4.0))


def test_site_series_rejects_mismatched_observed():
    with pytest.raises(ValueError, match="observed must have shape"):
        plot_site_series(np.zeros(4), observed=np.zeros(3), ax=_axes())


# ------------------------------------------------------------------ spatial map
def test_spatial_map_from_model(fitted):
    gp, sites, times, _ = fitted
    ax = plot_spatial_map(gp, time=3, kind="std", highlight=1, ax=_axes())
    _, std = gp.predict_grid([sites, times[3:4]], return_std=True)
    points, ring = ax.collections
    assert_allclose(points.get_offsets(), sites)
    assert_allclose(points.get_array(), std[:, 0])
    assert_allclose(points.get_clim(), [std.min(), std.max()])
    assert_allclose(ring.get_offsets(), sites[[1]])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("longitude (°E)", "latitude (°N)")
    assert ax.get_title() == "posterior sd, time 3"
    assert ax.figure.axes[1].get_ylabel() == "posterior sd"


def test_spatial_map_with_lattice_shares_colour_scale(fitted):
    gp, sites, times, _ = fitted
    ax = plot_spatial_map(gp, [sites, times], time=0, resolution=5, ax=_axes())
    field, points = ax.collections
    assert isinstance(field, QuadMesh)
    values = np.asarray(field.get_array())
    assert values.size == 25
    assert field.get_clim() == points.get_clim()
    lo = min(values.min(), np.min(points.get_array()))
    assert_allclose(field.get_clim()[0], lo)
    # the lattice covers the sites' bounding box
    assert ax.dataLim.x0 <= sites[:, 0].min() and ax.dataLim.x1 >= sites[:, 0].max()


def test_spatial_map_from_arrays():
    sites = np.array([[0.0, 0.0], [2.0, 1.0], [1.0, 3.0]])
    grid = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    ax = plot_spatial_map(
        grid,
        [sites, np.arange(2.0)],
        time=1,
        vmin=0,
        vmax=50,
        colorbar=False,
        ax=_axes(),
        feature_names=("x", "y"),
        title="t1",
    )
    (points,) = ax.collections
    assert_allclose(points.get_array(), [10.0, 20.0, 30.0])
    assert points.get_clim() == (0, 50)
    assert ax.get_xlabel() == "x" and ax.get_title() == "t1"
    assert_allclose(ax.dataLim.intervalx, [0.0, 2.0])


@pytest.mark.parametrize(
    ("source", "coords", "match"),
    [
        (np.ones(3), None, "coords"),
        (np.ones(3), np.ones((2, 2)), "one value per site"),
        (np.ones(3), np.ones(3), "one value per site"),
    ],
)
def test_spatial_map_rejects_bad_input(source, coords, match):
    with pytest.raises(ValueError, match=match):
        plot_spatial_map(source, coords, ax=_axes())


# -------------------------------------------------------------- factor spectra
def test_factor_spectra(fitted):
    gp = fitted[0]
    ax = plot_factor_spectra(gp, ax=_axes())
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["axis 0 (n=7)", "axis 1 (n=6)", "noise"]
    eig0 = np.linalg.eigvalsh(gp.kernel_.factor_grams(gp.grid_.coords)[0])
    assert_allclose(lines[0].get_ydata()[0], eig0.max(), rtol=1e-8)
    assert np.all(np.diff(lines[1].get_ydata()) <= 0)
    assert ax.get_yscale() == "log"
    assert_allclose(lines[2].get_ydata()[0], gp.noise_)


def test_site_series_band_with_noise(fitted):
    gp, sites, times, _ = fitted
    ax = plot_site_series(gp, site=1, noise="fitted", ax=_axes())
    mean, std = gp.predict_grid([sites[1:2], times], return_std=True)
    half = 2 * np.sqrt(std[0] ** 2 + gp.noise_ * gp.y_train_std_**2)
    band = ax.collections[0]
    assert band.get_label() == "+-2 sd (with noise)"
    assert_allclose(band.get_paths()[0].vertices[:, 1].max(), (mean[0] + half).max())
    ax = plot_site_series(np.zeros(3), std=np.zeros(3), noise=0.25, ax=_axes())
    assert_allclose(ax.dataLim.intervaly, [-1.0, 1.0])


@pytest.mark.parametrize("noise", ["fitted", "model", -1.0])
def test_site_series_rejects_bad_noise(noise):
    with pytest.raises(ValueError, match="noise must be"):
        plot_site_series(np.zeros(3), std=np.ones(3), noise=noise, ax=_axes())


# ------------------------------------------------ labels a scientist can read
def _draw(ax):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(ax.figure)
    ax.figure.canvas.draw()
    return ax


def test_surface_site_labels_all_when_they_fit():
    names = ["Ames", "Boone", "Cedar", "Dover"]
    order = np.array([2, 0, 3, 1])
    ax = plot_posterior_surface(
        np.arange(12.0).reshape(4, 3), ax=_axes(), site_labels=names,
        site_order=order, highlight=[3],
    )  # fmt: skip
    texts = [t.get_text() for t in ax.get_yticklabels()]
    assert texts == ["Cedar", "Ames", "Dover", "Boone"]
    assert list(ax.get_yticks()) == [0, 1, 2, 3]
    red = [t.get_text() for t in ax.get_yticklabels() if t.get_color() == "C3"]
    assert red == ["Dover"]
    (marker,) = [ln for ln in ax.get_lines() if ln.get_marker() == "<"]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (1.0, 2)
    assert ax.get_ylabel() == "site"


def test_surface_site_labels_thinned_when_crowded():
    names = [f"station {i}" for i in range(200)]
    ax = plot_posterior_surface(
        np.zeros((200, 3)), ax=Figure(figsize=(6, 3)).subplots(),
        site_labels=names, highlight=[101],
    )  # fmt: skip
    ticks = list(ax.get_yticks())
    assert 5 < len(ticks) < 40 and 101 in ticks
    step = int(ax.get_ylabel().split("every ")[1].split("th")[0])
    assert ticks[0] == 0 and all(t % step == 0 for t in ticks if t != 101)
    assert all(abs(t - 101) >= step / 2 for t in ticks if t != 101)
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert "station 101" in labels and "station 0" in labels


def test_surface_rejects_wrong_number_of_site_labels():
    with pytest.raises(ValueError, match="site_labels needs 3 labels"):
        plot_posterior_surface(np.zeros((3, 2)), ax=_axes(), site_labels=["a"])


@pytest.mark.parametrize(
    ("start", "days", "first", "later"),
    [
        ("1987-06-03", 89, "Jun 1\n1987", "Jul 1"),  # first month labelled
        ("2020-01-01", 365 * 2, "Jan\n2020", "Jan\n2021"),
        ("2000-01-01", 365 * 20, "2000", "2008"),
    ],
)
def test_date_axis_labels_first_month_without_offset(start, days, first, later):
    dates = np.datetime64(start) + np.arange(days).astype("timedelta64[D]")
    ax = _draw(plot_site_series(np.zeros(days), dates=dates, ax=_axes()))
    texts = [t.get_text() for t in ax.get_xticklabels()]
    visible = [
        t for t, x in zip(texts, ax.get_xticks())
        if ax.get_xlim()[0] <= x <= ax.get_xlim()[1]
    ]  # fmt: skip
    assert visible[0] == first and later in visible
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_spatial_map_aspect_equal_or_true_for_degrees():
    sites = np.array([[-90.0, 40.0], [-88.0, 42.0], [-86.0, 44.0]])
    ax = plot_spatial_map([1.0, 2.0, 3.0], sites, ax=_axes(), label="ozone (ppb)")
    assert ax.get_aspect() == pytest.approx(1 / np.cos(np.radians(42.0)))
    assert ax.figure.axes[1].get_ylabel() == "ozone (ppb)"
    ax = _draw(ax)
    assert all(t.get_text().endswith("°") for t in ax.get_xticklabels() if t.get_text())
    ax = plot_spatial_map([1.0, 2.0, 3.0], sites, ax=_axes(), feature_names=("x", "y"))
    assert ax.get_aspect() == 1.0 and ax.get_xlabel() == "x"


def test_spatial_map_highlight_legend_below_axes():
    sites = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ax = plot_spatial_map(
        [1.0, 2.0, 3.0], sites, ax=_axes(), highlight=[1],
        highlight_label="held-out station X", degrees=False,
    )  # fmt: skip
    ax = _draw(ax)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["held-out station X"]
    assert legend.get_window_extent().y1 <= ax.get_window_extent().y0


def test_site_series_legend_outside_and_ylabel():
    ax = plot_site_series(
        np.zeros(5), std=np.ones(5), observed=np.ones(5), ax=_axes(),
        ylabel="ozone (ppb)",
    )  # fmt: skip
    ax = _draw(ax)
    assert ax.get_ylabel() == "ozone (ppb)"
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
