"""Tests for ``kronecker-gp fit``: what it reads, models and writes.

Helpers here (``rows``, ``write``, ``fit_args``, ``read_table``, ``run``) are
shared with the other ``test_cli_*.py`` files. Faults (exit 2) are in
``test_cli_faults.py``, file safety in ``test_cli_outputs.py``, the model
(transforms, bounds, warnings, sizes) in ``test_cli_model.py``, the demo in
``test_cli_demo.py``.
"""

import csv
import gzip
import subprocess
import sys

import numpy as np
import pytest

from kronecker_gp.cli import main, read_grid_csv
from kronecker_gp.cli._csv import ReadOptions
from kronecker_gp.cli._transform import Z95

SITES = [(0.0, 0.0), (1.0, 0.5), (0.3, 1.2), (1.5, 1.5), (2.0, 0.2)]
NAMES = ["Ames, IA", "Boone", "Cedar", "Dover", "Elk"]
DATES = [f"2020-01-{d:02d}" for d in (1, 2, 3, 4, 5, 7, 8, 9)]  # 2020-01-06 absent
HEADER = ("station", "name", "lon", "lat", "date", "ozone")


def value(s, d):
    """A smooth field plus fixed pseudo-random noise (sd 0.1)."""
    x, y = SITES[s]
    noise = 0.1 * np.sin(12.9898 * s + 78.233 * d) * 1.7
    return 30.0 + 3 * np.sin(x + y) + 2 * np.cos(d / 2.0) + noise


def rows(drop=(), sites=range(5)):
    out = []
    for s in sites:
        for d, date in enumerate(DATES):
            if (s, d) not in drop:
                day = int(date[-2:])
                out.append(
                    [f"S{s}", NAMES[s], *SITES[s], date, round(value(s, day), 4)]
                )
    return out


def write(path, table, header=HEADER, delimiter=","):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        if header is not None:
            writer.writerow(header)
        writer.writerows(table)
    return path


def fit_args(data, out, *extra, quiet=True):
    args = [
        "fit", str(data), "--site-cols", "lon,lat", "--time-col", "date",
        "--value-col", "ozone", "--out", str(out), *extra,
    ]  # fmt: skip
    return [*args, "-q"] if quiet else args


def read_table(path, delimiter=","):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def column(table, name):
    return np.array([float(r[name].replace(",", ".")) for r in table])


@pytest.fixture
def good_csv(tmp_path):
    return write(tmp_path / "data.csv", rows())


def test_fit_writes_every_cell_with_honest_columns(good_csv, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(fit_args(good_csv, out, "--units", "ppb", quiet=False)) == 0
    text = capsys.readouterr().out
    table = read_table(out)
    assert list(table[0]) == [
        *HEADER, "mean", "sd", "sd_obs", "lower95", "upper95"
    ]  # fmt: skip
    assert len(table) == len(SITES) * len(DATES)
    # site ids and names carried, rows in the input's order of sites and times
    assert [r["station"] for r in table[:: len(DATES)]] == [f"S{s}" for s in range(5)]
    assert table[0]["name"] == "Ames, IA"
    assert [r["date"] for r in table[: len(DATES)]] == DATES
    mean, sd, sd_obs = (column(table, k) for k in ("mean", "sd", "sd_obs"))
    lo, hi = column(table, "lower95"), column(table, "upper95")
    noise_var = sd_obs**2 - sd**2
    assert np.all(sd > 0) and np.all(noise_var > 0)
    np.testing.assert_allclose(noise_var, noise_var[0], rtol=1e-5)
    np.testing.assert_allclose(lo, mean - Z95 * sd_obs, rtol=1e-6)
    np.testing.assert_allclose(hi, mean + Z95 * sd_obs, rtol=1e-6)
    obs = column(table, "ozone")
    assert np.sqrt(np.mean((mean - obs) ** 2)) < 0.5
    # the noise is printed in data units, matching the output columns
    line = next(t for t in text.splitlines() if t.startswith("noise variance"))
    printed = float(line.split()[2])
    assert printed == pytest.approx(noise_var[0], rel=1e-3)
    assert "ppb^2" in line
    assert "iteration   1  log marginal likelihood" in text and " s)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "pred.csv"]


def test_output_keeps_input_order_of_unsorted_sites(tmp_path):
    table = rows()
    order = [3, 0, 4, 1, 2]
    shuffled = [r for s in order for r in table[s * 8 : (s + 1) * 8][::-1]]
    data = write(tmp_path / "d.csv", shuffled)
    out = tmp_path / "o.csv"
    assert main(fit_args(data, out)) == 0
    result = read_table(out)
    assert [r["station"] for r in result[::8]] == [f"S{s}" for s in order]
    assert [r["date"] for r in result[:8]] == DATES  # times in time order


def test_read_grid_numeric_times_and_missing_markers(tmp_path):
    table = [[*r[:4], int(r[4][-2:]), r[5]] for r in rows(drop={(0, 1)})]
    table[3][5] = "N/A"
    table[4][5] = "nan"
    table[5][5] = " "
    path = write(tmp_path / "d.csv", table, header=("id", "nm", "x", "y", "t", "v"))
    grid = read_grid_csv(path, ["x", "y"], "t", "v")
    assert grid.values.shape == (5, 8)
    assert grid.origin is None and grid.dates is None
    np.testing.assert_array_equal(grid.times, [1, 2, 3, 4, 5, 7, 8, 9])
    assert np.isfinite(grid.values).sum() == 40 - 4
    assert grid.columns == ["id", "nm", "x", "y", "t", "v"]
    assert grid.site_fields[0] == {"id": "S0", "nm": "Ames, IA", "x": "0.0", "y": "0.0"}


def test_read_grid_dates_become_days(good_csv):
    grid = read_grid_csv(good_csv, ["lon", "lat"], "date", "ozone")
    np.testing.assert_array_equal(grid.times, [0, 1, 2, 3, 4, 6, 7, 8])
    assert str(grid.dates[5].astype("datetime64[D]")) == "2020-01-07"
    np.testing.assert_array_equal(grid.sites, np.array(SITES))


def test_column_varying_within_a_site_is_dropped(tmp_path):
    table = rows()
    table[2][1] = "renamed"
    path = write(tmp_path / "d.csv", table)
    grid = read_grid_csv(path, ["lon", "lat"], "date", "ozone")
    assert grid.dropped == ["name"]
    assert "name" not in grid.columns


def _europe(tmp_path, delimiter, decimal, name="eu.csv", encoding="utf-8"):
    table = rows()
    text = delimiter.join(HEADER) + "\n"
    for r in table:
        fields = [str(f) for f in r]
        if decimal == ",":
            fields[2:4] = [f.replace(".", ",") for f in fields[2:4]]
            fields[5] = fields[5].replace(".", ",")
        text += delimiter.join(fields) + "\n"
    path = tmp_path / name
    path.write_bytes(text.replace("Elk", "Zürich").encode(encoding))
    return path


@pytest.mark.parametrize(
    ("delimiter", "decimal"), [(";", ","), ("\t", "."), ("\t", ",")]
)
def test_semicolon_tab_and_decimal_comma(tmp_path, delimiter, decimal):
    path = _europe(tmp_path, delimiter, decimal)
    out = tmp_path / "o.csv"
    extra = ["--decimal", ","] if decimal == "," else []
    assert main(fit_args(path, out, *extra)) == 0
    table = read_table(out, delimiter=delimiter)
    assert len(table) == 40 and table[-1]["name"] == "Zürich"
    reference = _fit_reference(tmp_path)
    np.testing.assert_allclose(column(table, "mean"), reference, rtol=1e-8)
    if decimal == ",":
        assert "," in table[0]["mean"] and "." not in table[0]["mean"]


def _fit_reference(tmp_path):
    ref = tmp_path / "ref.csv"
    assert main(fit_args(write(tmp_path / "plain.csv", rows()), ref)) == 0
    return column(read_table(ref), "mean")


def test_explicit_delimiter_gzip_and_latin1(tmp_path, capsys):
    path = _europe(tmp_path, ";", ",", name="eu.csv", encoding="latin-1")
    gz = tmp_path / "eu.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    out = tmp_path / "o.csv"
    args = fit_args(gz, out, "--decimal", ",", "--delimiter", ";")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "not valid UTF-8; read it as Latin-1" in err and err.count("\n") == 1
    assert read_table(out, delimiter=";")[-1]["name"] == "Zürich"
    assert main([*args, "--encoding", "latin-1"]) == 0
    assert capsys.readouterr().err == ""


def test_time_format_option(tmp_path):
    table = [[*r[:4], f"{r[4][8:10]}/{r[4][5:7]}/{r[4][:4]}", r[5]] for r in rows()]
    path = write(tmp_path / "d.csv", table)
    out = tmp_path / "o.csv"
    assert main(fit_args(path, out, "--time-format", "%d/%m/%Y")) == 0
    np.testing.assert_allclose(
        column(read_table(out), "mean"), _fit_reference(tmp_path), rtol=1e-8
    )


def test_missing_rows_and_values(tmp_path):
    path = write(tmp_path / "d.csv", rows(drop={(0, 1), (3, 5)}))
    out = tmp_path / "pred.csv"
    assert main(fit_args(path, out)) == 0
    table = read_table(out)
    assert len(table) == 40
    assert sum(row["ozone"] == "" for row in table) == 2


def test_module_entry_point(tmp_path):
    path = write(tmp_path / "d.csv", rows()[:3])
    proc = subprocess.run(
        [sys.executable, "-m", "kronecker_gp.cli", *fit_args(path, tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("kronecker-gp: error: too little data")
    assert proc.stderr.count("\n") == 1


def test_help_documents_every_output_column_and_the_bounds(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("mean", "sd", "sd_obs", "lower95", "upper95"):
        assert f" {name} " in text
    assert "exp(m + s^2/2), the mean, not the median exp(m)" in text
    assert "0.1 x the axis's smallest spacing" in text and "100 x its range" in text
    for option in ("--missing-values", "--time-format", "--decimal", "--encoding",
                   "--delimiter", "--max-cells", "--transform"):  # fmt: skip
        assert option in text


def test_version(capsys):
    from kronecker_gp import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"kronecker-gp {__version__}"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "x.csv", "--site-cols", "lon"])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_fit_ozone2_exported_to_long_csv(tmp_path):
    from kronecker_gp.datasets import load_ozone2

    b = load_ozone2()
    days = 10
    site, day = np.nonzero(np.isfinite(b.data[:, :days]))
    table = [
        [b.site_ids[s], f"st {s}", b.sites[s, 0], b.sites[s, 1], str(b.dates[d]),
         b.data[s, d]]
        for s, d in zip(site, day)
    ]  # fmt: skip
    path = write(tmp_path / "ozone2.csv", table)
    out = tmp_path / "pred.csv"
    assert main(fit_args(path, out, "--space-kernel", "matern12")) == 0
    result = read_table(out)
    n_sites = np.unique(site).size  # stations with no row in 10 days are absent
    assert len(result) == n_sites * days
    missing = [r for r in result if r["ozone"] == ""]
    assert len(missing) == n_sites * days - site.size
    assert all(float(r["sd_obs"]) > float(r["sd"]) > 0 for r in missing)


def test_read_options_defaults():
    opts = ReadOptions()
    assert opts.missing_values == ("NA", "N/A", "NaN")
    assert opts.delimiter is None and opts.decimal == "."


def _captured_figure(monkeypatch):
    import kronecker_gp.cli._plots as plots

    seen = []
    real = plots.fit_figure

    def keep(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(plots, "fit_figure", keep)
    return seen


def test_fit_plot_names_variable_units_sites_and_months(
    good_csv, tmp_path, monkeypatch
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    seen = _captured_figure(monkeypatch)
    plot = tmp_path / "s.png"
    args = fit_args(good_csv, tmp_path / "p.csv", "--plot", str(plot), "--units", "ppb")
    assert main(args) == 0
    fig = seen[0]
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    mean_ax, sd_ax, *bars = fig.axes
    assert [b.get_ylabel() for b in bars] == ["ozone (ppb)", "sd of ozone (ppb)"]
    assert mean_ax.get_title() == "posterior mean"
    assert "noise included" in sd_ax.get_title()
    # sites by their id, the file's first site on top
    labels = [t.get_text() for t in mean_ax.get_yticklabels()]
    assert labels == [f"S{s}" for s in range(5)]
    assert mean_ax.yaxis_inverted()
    first = mean_ax.get_xticklabels()[0].get_text()
    assert "Jan" in first and "2020" in first
    assert mean_ax.xaxis.get_offset_text().get_text() == ""
    grid = np.asarray(mean_ax.collections[0].get_array()).reshape(5, len(DATES))
    np.testing.assert_allclose(
        grid.ravel(), column(read_table(tmp_path / "p.csv"), "mean"), rtol=1e-6
    )
    assert main([*args, "--site-label", "name"]) == 0
    labels = [t.get_text() for t in seen[1].axes[0].get_yticklabels()]
    assert labels == NAMES
