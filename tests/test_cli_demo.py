"""Tests for ``kronecker-gp demo``: the printed comparison and its figures."""

import contextlib
import io
import re
import time

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from kronecker_gp.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(
            ["demo", "--days", "12", "--sklearn-budget", "0.3", "--out", str(out)]
        )
    return status, buffer.getvalue(), out


@pytest.fixture(scope="module")
def pieces():
    """A small ozone2 demo fit, for the figure tests."""
    from kronecker_gp.cli._demo import DEMOS, fit_kronecker, load, split_cells

    loaded = load("ozone2", 20)
    split = split_cells(loaded.data, np.random.default_rng(0))
    sites = np.delete(loaded.sites, split.station, axis=0)
    gp, _ = fit_kronecker(DEMOS["ozone2"], sites, loaded.times, split.train_rows, True)
    return loaded, split, gp


def _rmse_table(text):
    rows = {}
    for line in text.splitlines():
        match = re.match(
            r"\s+(KroneckerGP|per-station mean|sklearn GPR).*?"
            r"([\d.]+)\s+([\d.]+)%\s+([\d.]+)\s+([\d.]+)%$",
            line,
        )
        if match:
            rows[match.group(1)] = [float(g) for g in match.groups()[1:]]
    return rows


def test_demo_prints_summary_and_beats_baselines(demo_run):
    status, text, _ = demo_run
    assert status == 0
    assert "iteration   1  log marginal likelihood" in text  # optimiser progress
    for needle in (
        "fitted kernels: space",
        "log marginal likelihood:",
        "KroneckerGP fit time:",
        "total wall time:",
        "transform: none; noise variance",
        "lower95..upper95 of `kronecker-gp fit`",
    ):
        assert needle in text
    table = _rmse_table(text)
    assert set(table) == {"KroneckerGP", "per-station mean", "sklearn GPR"}
    kron = table["KroneckerGP"]
    for base in ("per-station mean", "sklearn GPR"):
        assert kron[0] < table[base][0]  # random cells RMSE
    assert 80 <= kron[1] <= 100  # coverage of the 95 % interval, in percent


def test_demo_writes_pngs_and_nothing_else(demo_run):
    _, _, out = demo_run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["posterior_map.png", "posterior_surface.png", "station_series.png"]
    assert all((out / n).stat().st_size > 20_000 for n in names)


def test_demo_wind_quiet(tmp_path, capsys):
    args = ["demo", "--dataset", "wind", "--days", "40", "--sklearn-budget", "0.3"]
    assert main([*args, "-q", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "iteration" not in text
    assert "data: wind, 12 stations x 40 days" in text
    assert len(list(tmp_path.glob("*.png"))) == 3


def _drawn(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def _first_tick(ax):
    return ax.get_xticklabels()[0].get_text()


def test_maps_equal_aspect_degrees_units_and_sd_map(pieces):
    from kronecker_gp.cli._demo_plots import maps_figure

    loaded, split, gp = pieces
    fig = _drawn(maps_figure(loaded, split, gp))
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(",")[0] for ax in maps] == ["mean"] * 3 + ["sd"]
    mid = np.radians(0.5 * (loaded.sites[:, 1].min() + loaded.sites[:, 1].max()))
    for ax in maps:
        assert ax.get_aspect() == pytest.approx(1 / np.cos(mid))
        assert ax.get_xlabel() in ("longitude (°E)", "")
        assert ax.get_xticklabels()[1].get_text().endswith("°")
        ring = ax.collections[-1]
        np.testing.assert_allclose(ring.get_offsets(), loaded.sites[[split.station]])
        # one legend for the row, below the maps, off the data
        assert ax.get_legend() is None
        assert fig.legends[0].get_window_extent().y1 <= ax.get_window_extent().y0
    (text,) = fig.legends[0].get_texts()
    assert text.get_text() == f"held-out station {loaded.site_ids[split.station]}"
    bars = sorted(ax.get_ylabel() for ax in fig.axes if not ax.get_title())
    assert bars == ["posterior mean ozone (ppb)", "posterior sd of ozone (ppb)"]


def test_surface_marks_the_held_out_station_on_its_own_row(pieces):
    from kronecker_gp.cli._demo_plots import surface_figure

    loaded, split, gp = pieces
    fig = _drawn(surface_figure(loaded, split, gp))
    train_ax = fig.axes[0]
    red = [t for t in train_ax.get_yticklabels() if t.get_color() == "C3"]
    assert [t.get_text() for t in red] == [str(loaded.site_ids[split.station])]
    row = int(round(red[0].get_position()[1]))
    grid = np.ma.masked_invalid(train_ax.collections[0].get_array()).reshape(
        loaded.data.shape
    )
    assert grid[row].mask.all()  # that row is the held-out (all-missing) station
    order = np.argsort(loaded.sites[:, 0], kind="stable")
    assert order[row] == split.station
    marker = [line for line in train_ax.get_lines() if line.get_marker() == "<"]
    assert marker[0].get_ydata()[0] == row and marker[0].get_xdata()[0] == 1.0
    bars = [ax.get_ylabel() for ax in fig.axes[2:]]
    assert bars == ["ozone (ppb)", "ozone (ppb)"]
    first = _first_tick(train_ax)
    assert "Jun" in first and "1987" in first
    assert train_ax.xaxis.get_offset_text().get_text() == ""


def test_series_legend_outside_and_units(pieces):
    from kronecker_gp.cli._demo_plots import series_figure

    loaded, split, gp = pieces
    fig = _drawn(series_figure(loaded, split, gp))
    for ax in fig.axes:
        assert ax.get_ylabel() == "ozone (ppb)"
        legend = ax.get_legend()
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
        texts = [t.get_text() for t in legend.get_texts()]
        assert "95 % interval (noise included)" in texts
    # the band is the fit command's interval at the held-out station
    out = gp.predictive_grid([loaded.sites[[split.station]], loaded.times])
    band = fig.axes[0].collections[-1].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.max(), out["upper95"].max())
    assert np.isclose(band.min(), out["lower95"].min())
    assert str(loaded.site_ids[split.station]) in fig.axes[0].get_title()


def test_split_cells_holds_out_station_and_ten_percent():
    from kronecker_gp.cli._demo import split_cells

    rng = np.random.default_rng(0)
    data = rng.standard_normal((20, 30))
    data[rng.random(data.shape) < 0.05] = np.nan
    data[3, :10] = np.nan  # a poorly observed station is never held out
    split = split_cells(data, np.random.default_rng(1))
    assert split.station != 3
    assert np.isnan(split.train[split.station]).all()
    assert not split.cells[split.station].any()
    pool = np.isfinite(data).sum() - np.isfinite(data[split.station]).sum()
    assert split.cells.sum() == round(0.1 * pool)
    assert np.isfinite(data[split.cells]).all()
    assert np.isnan(split.train[split.cells]).all()
    assert split.train_rows.shape == (19, 30)


def test_score_and_station_mean_baseline():
    from kronecker_gp.cli._baselines import station_mean_baseline
    from kronecker_gp.cli._demo import Split, score

    truth = np.array([1.0, np.nan, 3.0, 10.0])
    mean = np.array([1.0, 0.0, 2.0, 10.0])
    rmse, cover, n = score(truth, mean, mean - 1.0, mean + 1.0)
    assert (n, cover) == (3, 1.0)
    assert score(truth, mean, mean - 0.5, mean + 0.5)[1] == pytest.approx(2 / 3)
    assert rmse == pytest.approx(np.sqrt(1 / 3))
    data = np.array([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]])
    train = data.copy()
    train[2] = np.nan
    split = Split(data=data, train=train, station=2, cells=np.zeros((3, 2), bool))
    mean, sd = station_mean_baseline(split)
    np.testing.assert_allclose(mean[:, 0], [2.0, 6.0, 4.0])
    np.testing.assert_allclose(sd[0], [1.0, 1.0])


def test_time_limited_optimizer_stops_at_budget():
    from kronecker_gp.cli._baselines import _time_limited_lbfgs

    info = {}
    calls = []

    def slow(theta, eval_gradient=True):
        # Rosenbrock: L-BFGS-B needs dozens of evaluations from the origin
        calls.append(theta)
        time.sleep(0.02)
        x, y = theta
        value = (1 - x) ** 2 + 100 * (y - x**2) ** 2
        grad = np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])
        return value, grad

    theta, value = _time_limited_lbfgs(0.05, info)(slow, np.zeros(2), None)
    assert info["stopped"] and info["evaluations"] == len(calls) <= 4
    assert value == pytest.approx(slow(theta)[0])
    info2 = {}
    theta, _ = _time_limited_lbfgs(30.0, info2)(slow, np.zeros(2), None)
    assert not info2["stopped"]
    np.testing.assert_allclose(theta, [1.0, 1.0], atol=1e-3)


def test_demo_rejects_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "jura"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_fit_grid_model_refits_exactly_after_cg_search(rng):
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel

    from kronecker_gp.cli import fit_grid_model

    sites, times = rng.uniform(0, 3, size=(8, 2)), np.arange(12.0)
    Y = np.sin(sites[:, :1]) + np.cos(times / 3) + 0.1 * rng.standard_normal((8, 12))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    seen = []
    gp = fit_grid_model(
        [ConstantKernel() * RBF(1.0), RBF(3.0)],
        [sites, times],
        Y,
        lambda i, lml: seen.append((i, lml)),
        search_solver="cg",
    )
    assert gp.solver_info_.path == "schur-exact"
    assert gp.optimizer is None
    assert seen and seen[0][0] == 1
    assert gp.log_marginal_likelihood_value_ >= seen[0][1] - 1.0


def test_demo_help(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "per-station mean" in capsys.readouterr().out
