"""Tests for the kronecker-gp command line (fit and demo)."""

import csv
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from kronecker_gp.cli import MIN_CELLS, main, read_grid_csv

SITES = [(0.0, 0.0), (1.0, 0.5), (0.3, 1.2), (1.5, 1.5), (2.0, 0.2)]
DATES = [f"2020-01-{d:02d}" for d in (1, 2, 3, 4, 5, 7, 8, 9)]  # 2020-01-06 absent


def _value(site, day):
    x, y = site
    return 3.0 + np.sin(x + y) + 0.5 * np.cos(day / 2.0)


def _rows(drop=()):
    rows = []
    for s, site in enumerate(SITES):
        for d, date in enumerate(DATES):
            if (s, d) not in drop:
                day = int(date[-2:])
                rows.append([f"S{s}", site[0], site[1], date, _value(site, day)])
    return rows


def _write(path, rows, header=("station", "lon", "lat", "date", "ozone")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def _fit_args(data, out, *extra):
    return [
        "fit", str(data), "--site-cols", "lon,lat", "--time-col", "date",
        "--value-col", "ozone", "--out", str(out), "-q", *extra,
    ]  # fmt: skip


@pytest.fixture
def good_csv(tmp_path):
    return _write(tmp_path / "data.csv", _rows())


def test_fit_writes_every_cell(good_csv, tmp_path):
    out, plot = tmp_path / "pred.csv", tmp_path / "surface.png"
    assert main(_fit_args(good_csv, out, "--plot", str(plot))) == 0
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["lon", "lat", "date", "ozone", "mean", "sd"]
    assert len(table) == len(SITES) * len(DATES)
    # the original text of the coordinates and dates is kept
    assert {row["date"] for row in table} == set(DATES)
    assert {(row["lon"], row["lat"]) for row in table} == {
        (str(x), str(y)) for x, y in SITES
    }
    obs = np.array([float(row["ozone"]) for row in table])
    mean = np.array([float(row["mean"]) for row in table])
    sd = np.array([float(row["sd"]) for row in table])
    assert np.sqrt(np.mean((mean - obs) ** 2)) < 0.2
    assert np.all(sd > 0)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.csv", "pred.csv", "surface.png"
    ]  # fmt: skip


def test_fit_prints_progress_and_summary(good_csv, tmp_path, capsys):
    args = [a for a in _fit_args(good_csv, tmp_path / "p.csv") if a != "-q"]
    assert main([*args, "--space-kernel", "rbf", "--time-kernel", "matern12"]) == 0
    out = capsys.readouterr().out
    assert "grid: 5 sites x 8 times = 40 cells, 40 observed" in out
    assert "iteration   1  log marginal likelihood" in out
    assert "RBF" in out and "nu=0.5" in out


def test_read_grid_numeric_times_and_missing_cells(tmp_path):
    rows = [[r[0], r[1], r[2], int(r[3][-2:]), r[4]] for r in _rows(drop={(0, 1)})]
    rows[3][4] = "NA"  # an explicit missing value
    path = _write(tmp_path / "d.csv", rows, header=("id", "x", "y", "t", "v"))
    grid = read_grid_csv(path, ["x", "y"], "t", "v")
    assert grid.values.shape == (5, 8)
    assert grid.origin is None and grid.dates is None
    np.testing.assert_array_equal(grid.times, [1, 2, 3, 4, 5, 7, 8, 9])
    assert np.isnan(grid.values[0, 1]) and np.isnan(grid.values[0, 4])
    assert np.isfinite(grid.values).sum() == 38


def test_read_grid_dates_become_days(good_csv):
    grid = read_grid_csv(good_csv, ["lon", "lat"], "date", "ozone")
    np.testing.assert_array_equal(grid.times, [0, 1, 2, 3, 4, 6, 7, 8])
    assert str(grid.dates[5].astype("datetime64[D]")) == "2020-01-07"
    np.testing.assert_array_equal(grid.sites, np.array(sorted(SITES)))


def test_fit_with_missing_cells(tmp_path):
    path = _write(tmp_path / "d.csv", _rows(drop={(0, 1), (3, 5)}))
    out = tmp_path / "pred.csv"
    assert main(_fit_args(path, out)) == 0
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 40
    assert sum(row["ozone"] == "" for row in table) == 2


def _bad(rows):
    def edit(tmp_path):
        return _write(tmp_path / "bad.csv", rows())

    return edit


def _text(text):
    def edit(tmp_path):
        path = tmp_path / "bad.csv"
        path.write_text(text)
        return path

    return edit


def _with(index, col, value):
    def rows():
        r = _rows()
        r[index][col] = value
        return r

    return rows


FAULTS = {
    "empty file": (_text(""), [], "is empty"),
    "header only": (_text("station,lon,lat,date,ozone\n"), [], "no data rows"),
    "missing column": (_bad(_rows), ["--value-col", "pm10"], "'pm10' not found"),
    "non-numeric site": (_bad(_with(4, 1, "east")), [], "'lon' must be numeric"),
    "non-numeric value": (_bad(_with(7, 4, "high")), [], "'ozone' must be numeric"),
    "site column of text": (
        _bad(_rows), ["--site-cols", "station"], "'station' must be numeric"
    ),
    "duplicated row": (
        _bad(lambda: [*_rows(), _rows()[3]]), [], "duplicated site-time row"
    ),
    "unparseable date": (
        _bad(_with(2, 3, "2020-13-45")), [], "cannot parse time '2020-13-45'"
    ),
    "too few cells": (
        _bad(lambda: _rows()[: MIN_CELLS - 2]), [], "too little data"
    ),
    "one site": (_bad(lambda: _rows()[:8]), [], "too little data"),
    "ragged row": (_text("a,b,c,d,e\n1,2,3\n"), [], "line 2 has 3 fields"),
    "same column twice": (_bad(_rows), ["--site-cols", "lon,date"], "must differ"),
    "infinite value": (_bad(_with(0, 4, "inf")), [], "non-finite"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fit_bad_input_exits_2_with_one_line(fault, tmp_path, capsys):
    make, extra, message = FAULTS[fault]
    data = make(tmp_path)
    out = tmp_path / "pred.csv"
    args = _fit_args(data, out)
    for flag, value in zip(extra[::2], extra[1::2]):
        args[args.index(flag) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("kronecker-gp: error: ")
    assert message in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [data.name]  # no temp files


def test_fit_missing_input_file(tmp_path, capsys):
    assert main(_fit_args(tmp_path / "nope.csv", tmp_path / "o.csv")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_missing_output_folder(good_csv, tmp_path, capsys):
    out = tmp_path / "no" / "pred.csv"
    assert main(_fit_args(good_csv, out)) == 2
    assert "output folder" in capsys.readouterr().err


def test_fit_failure_keeps_existing_output(good_csv, tmp_path, monkeypatch):
    """A failure after fitting leaves a previous output untouched."""
    out = tmp_path / "pred.csv"
    out.write_text("previous\n")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("kronecker_gp.cli._save_surface", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        main(_fit_args(good_csv, out, "--plot", str(tmp_path / "s.png")))
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "pred.csv"]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "x.csv", "--site-cols", "lon"])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    path = _write(tmp_path / "d.csv", _rows()[:3])
    proc = subprocess.run(
        [sys.executable, "-m", "kronecker_gp.cli", *_fit_args(path, tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("kronecker-gp: error: too little data")
    assert proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------ demo
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(
            ["demo", "--days", "12", "--sklearn-budget", "0.3", "--out", str(out)]
        )
    return status, buffer.getvalue(), out


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
        "noise variance:",
    ):
        assert needle in text
    table = _rmse_table(text)
    assert set(table) == {"KroneckerGP", "per-station mean", "sklearn GPR"}
    kron = table["KroneckerGP"]
    for base in ("per-station mean", "sklearn GPR"):
        assert kron[0] < table[base][0]  # random cells RMSE
    assert 80 <= kron[1] <= 100  # coverage of the 95 % interval, in percent


def test_demo_writes_pngs(demo_run):
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
    from kronecker_gp.cli._demo import Split, score, station_mean_baseline

    truth = np.array([1.0, np.nan, 3.0, 10.0])
    rmse, cover, n = score(truth, np.array([1.0, 0.0, 2.0, 10.0]), np.ones(4))
    assert (n, cover) == (3, 1.0)
    assert rmse == pytest.approx(np.sqrt(1 / 3))
    data = np.array([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]])
    train = data.copy()
    train[2] = np.nan
    split = Split(data=data, train=train, station=2, cells=np.zeros((3, 2), bool))
    mean, sd = station_mean_baseline(split)
    np.testing.assert_allclose(mean[:, 0], [2.0, 6.0, 4.0])
    np.testing.assert_allclose(sd[0], [1.0, 1.0])


def test_time_limited_optimizer_stops_at_budget():
    from kronecker_gp.cli._demo import _time_limited_lbfgs

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


def test_fit_ozone2_exported_to_long_csv(tmp_path):
    from kronecker_gp.datasets import load_ozone2

    b = load_ozone2()
    days = 10
    site, day = np.nonzero(np.isfinite(b.data[:, :days]))
    rows = [
        [b.site_ids[s], b.sites[s, 0], b.sites[s, 1], str(b.dates[d]), b.data[s, d]]
        for s, d in zip(site, day)
    ]
    path = _write(tmp_path / "ozone2.csv", rows)
    out = tmp_path / "pred.csv"
    assert main(_fit_args(path, out, "--space-kernel", "matern12")) == 0
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    n_sites = np.unique(site).size  # stations with no row in 10 days are absent
    assert len(table) == n_sites * days
    missing = [r for r in table if r["ozone"] == ""]
    assert len(missing) == n_sites * days - site.size
    assert all(np.isfinite(float(r["mean"])) and float(r["sd"]) > 0 for r in missing)


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


def test_version_and_help(capsys):
    from kronecker_gp import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"kronecker-gp {__version__}"
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "per-station mean" in capsys.readouterr().out
