import csv
import hashlib
import re
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils import Bunch

from kronecker_gp import datasets
from kronecker_gp.datasets import (
    load_jura,
    load_nyc_weather,
    load_ozone2,
    load_us_diseases,
    load_us_employment,
    load_wind,
)

DATA = Path(__file__).resolve().parents[1] / "data"
LOADERS = [
    load_ozone2,
    load_wind,
    load_us_employment,
    load_jura,
    load_us_diseases,
    load_nyc_weather,
]
GRID_LOADERS = [load_ozone2, load_wind]
GRID_KEYS = {
    "data",
    "sites",
    "site_feature_names",
    "site_ids",
    "site_names",
    "dates",
    "times",
    "coords",
    "axis_names",
    "feature_names",
    "target_name",
    "units",
    "DESCR",
}
# Which loader reads each checksummed file.
FILE_LOADER = {
    "ozone2/stations.csv": load_ozone2,
    "ozone2/values.csv": load_ozone2,
    "wind/stations.csv": load_wind,
    "wind/values.csv": load_wind,
    "us-employment/values.csv": load_us_employment,
    "jura/values.csv": load_jura,
    "us-diseases/values.csv": load_us_diseases,
    "us-diseases/states.csv": load_us_diseases,
    "nyc-weather/values.csv": load_nyc_weather,
    "nyc-weather/stations.csv": load_nyc_weather,
}


def read_rows(relpath):
    with open(DATA / relpath, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ozone2():
    return load_ozone2()


@pytest.fixture(scope="module")
def wind():
    return load_wind()


@pytest.fixture(scope="module")
def employment():
    return load_us_employment()


@pytest.fixture(scope="module")
def jura():
    return load_jura()


# ----------------------------------------------------------------------- shared


@pytest.mark.parametrize("loader", LOADERS)
def test_returns_bunch_with_folder_readme(loader):
    bunch = loader()
    assert isinstance(bunch, Bunch)
    assert "frame" not in bunch
    folder = {
        load_ozone2: "ozone2",
        load_wind: "wind",
        load_us_employment: "us-employment",
        load_jura: "jura",
        load_us_diseases: "us-diseases",
        load_nyc_weather: "nyc-weather",
    }[loader]
    assert bunch.DESCR == (DATA / folder / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("loader", GRID_LOADERS)
def test_grid_schema(loader):
    b = loader()
    assert set(b) == GRID_KEYS | ({"mean_wind"} if loader is load_wind else set())
    n_sites, n_times = b.data.shape
    assert b.data.dtype == np.float64
    assert b.sites.shape == (n_sites, 2) and b.sites.dtype == np.float64
    assert b.site_feature_names == ("lon", "lat")
    assert b.site_ids.shape == b.site_names.shape == (n_sites,)
    assert b.site_ids.dtype.kind == "U" and len(set(b.site_ids)) == n_sites
    assert b.dates.dtype == np.dtype("datetime64[D]") and b.dates.shape == (n_times,)
    assert b.times.dtype == np.float64 and b.times.shape == (n_times,)
    assert b.times[0] == 0 and np.all(np.diff(b.times) > 0)
    np.testing.assert_array_equal(b.times, (b.dates - b.dates[0]).astype(float))
    assert len(b.coords) == 2
    assert b.coords[0] is b.sites and b.coords[1] is b.times
    assert (len(b.coords[0]), len(b.coords[1])) == b.data.shape
    assert b.axis_names == ("site", "time")
    assert b.feature_names == ["lon", "lat", "day"]


@pytest.mark.parametrize("loader", LOADERS)
def test_loading_is_deterministic(loader):
    first, second = loader(), loader()
    np.testing.assert_array_equal(first.data, second.data)


# ----------------------------------------------------------------------- ozone2


def test_ozone2_shapes_and_gap(ozone2):
    assert ozone2.data.shape == (153, 89)
    assert ozone2.dates[0] == np.datetime64("1987-06-03")
    assert ozone2.dates[-1] == np.datetime64("1987-08-31")
    assert np.datetime64("1987-08-29") not in ozone2.dates
    # 89 dates over 90 calendar days: exactly one step of 2 days.
    steps = np.diff(ozone2.times)
    assert steps.tolist().count(2.0) == 1 and steps.tolist().count(1.0) == 87
    assert ozone2.times[-1] == 89
    assert ozone2.target_name == "ozone" and ozone2.units == "ppb"


def test_ozone2_missing_share_matches_readme(ozone2):
    readme = (DATA / "ozone2" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Missing: \*\*(\d+) cells = ([\d.]+) %", readme)
    n_missing, share = int(match.group(1)), float(match.group(2))
    missing = np.isnan(ozone2.data)
    assert missing.sum() == n_missing == 495
    assert round(100 * missing.mean(), 2) == share
    assert (~missing.any(axis=1)).sum() == 67  # complete stations, per README


def test_ozone2_site_order_matches_stations_csv(ozone2):
    stations = read_rows("ozone2/stations.csv")
    assert ozone2.site_ids.tolist() == [row["station_id"] for row in stations]
    np.testing.assert_array_equal(ozone2.site_names, ozone2.site_ids)
    assert all(len(sid) == 9 for sid in ozone2.site_ids)  # leading digits kept
    np.testing.assert_array_equal(
        ozone2.sites, [[float(r["lon"]), float(r["lat"])] for r in stations]
    )


def test_ozone2_values_spot_check(ozone2):
    rows = read_rows("ozone2/values.csv")
    site = {sid: i for i, sid in enumerate(ozone2.site_ids)}
    day = {str(d): j for j, d in enumerate(ozone2.dates)}
    missing = [r for r in rows if r["ozone"] == ""]
    for r in [rows[0], rows[1], rows[-1], rows[7000], missing[0], missing[-1]]:
        value = ozone2.data[site[r["station_id"]], day[r["date"]]]
        if r["ozone"] == "":
            assert np.isnan(value)
        else:
            assert value == float(r["ozone"])
    assert len(rows) == ozone2.data.size


def test_ozone2_exact_zeros_as_documented(ozone2):
    assert int((ozone2.data == 0).sum()) == 74


# ------------------------------------------------------------------------- wind


def test_wind_shapes_complete_and_daily(wind):
    assert wind.data.shape == (12, 6574)
    assert not np.isnan(wind.data).any()
    assert wind.dates[0] == np.datetime64("1961-01-01")
    assert wind.dates[-1] == np.datetime64("1978-12-31")
    np.testing.assert_array_equal(wind.times, np.arange(6574.0))
    assert wind.data.min() == 0.0 and wind.data.max() == 42.54
    assert int((wind.data == 0).sum()) == 16
    assert wind.target_name == "wind_speed" and wind.units == "knots"


def test_wind_sites_and_mean_wind(wind):
    stations = read_rows("wind/stations.csv")
    with open(DATA / "wind" / "values.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert wind.site_ids.tolist() == [r["code"] for r in stations] == header[1:]
    assert wind.site_names.tolist() == [r["name"] for r in stations]
    # stations.csv stores lat before lon; the loader returns (lon, lat).
    np.testing.assert_array_equal(
        wind.sites, [[float(r["lon"]), float(r["lat"])] for r in stations]
    )
    assert np.all(wind.sites[:, 0] < -6) and np.all(wind.sites[:, 1] > 51)
    assert wind.mean_wind.shape == (12,)
    # m/s, close to the data mean in knots x 0.514444 except CLA (README).
    diff = np.abs(wind.data.mean(axis=1) * 0.514444 - wind.mean_wind)
    assert wind.site_ids[diff > 0.015].tolist() == ["CLA"]


def test_wind_values_spot_check(wind):
    rows = read_rows("wind/values.csv")
    for i, code in [(0, "RPT"), (1, "MAL"), (3000, "ROS"), (6573, "CLA")]:
        j = wind.site_ids.tolist().index(code)
        assert wind.data[j, i] == float(rows[i][code])
        assert str(wind.dates[i]) == rows[i]["date"]


# ---------------------------------------------------------------- us-employment


def test_us_employment(employment):
    b = employment
    assert set(b) == {
        "data",
        "series_names",
        "dates",
        "times",
        "coords",
        "axis_names",
        "feature_names",
        "target_name",
        "units",
        "DESCR",
    }
    assert b.data.shape == (15, 120) and b.data.dtype == np.float64
    assert not np.isnan(b.data).any()
    assert b.series_names.shape == (15,) and b.series_names[0] == "mining_and_logging"
    assert b.dates.dtype == np.dtype("datetime64[D]")
    assert b.dates[0] == np.datetime64("2006-01-01")
    assert b.dates[-1] == np.datetime64("2015-12-01")
    np.testing.assert_array_equal(b.dates, b.dates.astype("datetime64[M]"))
    np.testing.assert_array_equal(b.times, np.arange(120.0))
    np.testing.assert_array_equal(b.coords[0], np.arange(15))
    assert b.coords[1] is b.times
    assert (len(b.coords[0]), len(b.coords[1])) == b.data.shape
    assert b.axis_names == ("series", "time")
    assert np.linalg.matrix_rank(b.data) == 15


def test_us_employment_spot_check(employment):
    rows = read_rows("us-employment/values.csv")
    names = employment.series_names.tolist()
    assert names == list(rows[0])[1:]
    for i, name in [(0, "utilities"), (59, "government"), (119, "construction")]:
        assert employment.data[names.index(name), i] == float(rows[i][name])


# ------------------------------------------------------------------------- jura


def test_jura(jura):
    assert jura.data.shape == (359, 7) and jura.data.dtype == np.float64
    assert not np.isnan(jura.data).any()
    assert jura.target_names.tolist() == ["Cd", "Co", "Cr", "Cu", "Ni", "Pb", "Zn"]
    assert jura.locations.shape == jura.lonlat.shape == (359, 2)
    assert jura.feature_names == ["Xloc", "Yloc"]
    assert (jura.split == "pred").sum() == 259 and (jura.split == "val").sum() == 100
    np.testing.assert_array_equal(jura.train_index, np.arange(259))
    np.testing.assert_array_equal(jura.test_index, np.arange(259, 359))
    assert set(jura.landuse) == {"Forest", "Pasture", "Meadow", "Tillage"}
    assert set(jura.rock) == {
        "Argovian",
        "Kimmeridgian",
        "Sequanian",
        "Portlandian",
        "Quaternary",
    }
    assert jura.source_row[jura.test_index].tolist() == list(range(1, 101))
    assert len({tuple(p) for p in jura.locations}) == 359  # no duplicate sites


def test_jura_spot_check(jura):
    rows = read_rows("jura/values.csv")
    for i in [0, 258, 259, 358]:
        r = rows[i]
        assert jura.data[i].tolist() == [float(r[m]) for m in jura.target_names]
        assert jura.locations[i].tolist() == [float(r["Xloc"]), float(r["Yloc"])]
        assert jura.lonlat[i].tolist() == [float(r["long"]), float(r["lat"])]
        assert (jura.split[i], jura.landuse[i], jura.rock[i]) == (
            r["split"],
            r["Landuse"],
            r["Rock"],
        )


# ------------------------------------------------------------------ us-diseases


def test_us_diseases_grid_matches_csv():
    b = load_us_diseases()
    rows = read_rows("us-diseases/values.csv")
    states = read_rows("us-diseases/states.csv")
    assert b.data.shape == (7, 51, 84)
    assert sorted(b.states) == sorted(r["state"] for r in states)
    assert list(b.diseases) == sorted({r["disease"] for r in rows})
    np.testing.assert_array_equal(b.years, np.arange(1928.0, 2012.0))
    usable = [
        r for r in rows if float(r["weeks_reporting"]) > 0 and r["population"] != ""
    ]
    assert np.count_nonzero(~np.isnan(b.data)) == len(usable) == 14_228
    assert np.nansum(b.data) == sum(float(r["count"]) for r in usable)
    assert np.array_equal(np.isnan(b.data), np.isnan(b.exposure))
    for r in rows[::997]:
        i = (
            list(b.diseases).index(r["disease"]),
            list(b.states).index(r["state"]),
            int(r["year"]) - 1928,
        )
        assert b.weeks_reporting[i] == float(r["weeks_reporting"])
        if float(r["weeks_reporting"]) == 0 or r["population"] == "":
            assert np.isnan(b.data[i])
            continue
        assert b.data[i] == float(r["count"])
        expected = float(r["population"]) * float(r["weeks_reporting"]) / 52
        assert b.exposure[i] == pytest.approx(expected, rel=1e-15)
    row = next(r for r in states if r["state"] == "Texas")
    k = list(b.states).index("Texas")
    np.testing.assert_array_equal(
        b.state_lonlat[k], [float(row["lon"]), float(row["lat"])]
    )
    assert b.coords[1] is b.state_lonlat and b.coords[2] is b.years


def test_as_frame_us_diseases_is_the_table():
    pytest.importorskip("pandas")
    frame = load_us_diseases(as_frame=True).frame
    assert frame.shape == (16_065, 6)
    assert frame["count"].sum() == np.sum(
        [float(r["count"]) for r in read_rows("us-diseases/values.csv")]
    )


# ------------------------------------------------------------------ nyc-weather

NYC_VARIABLES = ["temp", "dewp", "humid", "pressure", "wind_speed"]


@pytest.fixture(scope="module")
def nyc():
    return load_nyc_weather()


def nyc_hour(stamp):
    """Parse ``YYYY-MM-DDTHH:00:00Z`` independently of the loader."""
    assert stamp.endswith(":00:00Z")
    return np.datetime64(stamp[:13], "h")


def test_nyc_weather_schema_and_axes(nyc):
    assert set(nyc) == {
        "data",
        "variables",
        "units",
        "site_ids",
        "site_names",
        "sites",
        "site_feature_names",
        "alt_ft",
        "dates",
        "times",
        "coords",
        "axis_names",
        "feature_names",
        "DESCR",
    }
    assert nyc.data.shape == (5, 3, 8730) and nyc.data.dtype == np.float64
    assert nyc.axis_names == ("variable", "site", "time")
    assert nyc.variables.tolist() == NYC_VARIABLES
    assert nyc.units.tolist() == ["F", "F", "%", "hPa", "mph"]
    assert nyc.site_ids.tolist() == ["EWR", "JFK", "LGA"]
    stations = read_rows("nyc-weather/stations.csv")
    assert nyc.site_names.tolist() == [r["name"] for r in stations]
    np.testing.assert_array_equal(
        nyc.sites, [[float(r["lon"]), float(r["lat"])] for r in stations]
    )
    assert np.all(nyc.sites[:, 0] < -73) and np.all(nyc.sites[:, 1] > 40)
    assert nyc.alt_ft.tolist() == [float(r["alt_ft"]) for r in stations]
    assert nyc.site_feature_names == ("lon", "lat")
    # Complete hourly axis from the first to the last hour in the file.
    assert nyc.dates.dtype == np.dtype("datetime64[h]")
    assert nyc.dates[0] == np.datetime64("2013-01-01T06", "h")
    assert nyc.dates[-1] == np.datetime64("2013-12-30T23", "h")
    np.testing.assert_array_equal(nyc.times, np.arange(8730.0))
    np.testing.assert_array_equal(nyc.times, (nyc.dates - nyc.dates[0]).astype(float))
    assert len(nyc.coords) == 3
    np.testing.assert_array_equal(nyc.coords[0], np.arange(5.0))
    assert nyc.coords[1] is nyc.sites and nyc.coords[2] is nyc.times
    assert tuple(len(c) for c in nyc.coords) == nyc.data.shape
    assert nyc.feature_names == ["variable", "lon", "lat", "hour"]


def test_nyc_weather_rows_land_in_their_cells(nyc):
    rows = read_rows("nyc-weather/values.csv")
    picks = [rows[0], rows[1], rows[-1], rows[12_345]]
    picks += [r for r in rows if r["temp"] == "" or r["wind_speed"] == ""]
    picks.append(next(r for r in rows if r["pressure"] == ""))
    picks.append(next(r for r in rows if r["origin"] == "LGA"))
    for r in picks:
        s = nyc.site_ids.tolist().index(r["origin"])
        t = (nyc_hour(r["time_hour"]) - nyc.dates[0]).astype(np.int64)
        assert nyc.dates[t] == nyc_hour(r["time_hour"])
        for k, name in enumerate(NYC_VARIABLES):
            value = nyc.data[k, s, t]
            if r[name] == "":
                assert np.isnan(value), (r, name)
            else:
                assert value == float(r[name]), (r, name)
    # The known source error is kept as recorded.
    ewr_outlier = nyc.dates.tolist().index(np.datetime64("2013-02-12T08", "h"))
    assert nyc.data[4, 0, ewr_outlier] == 1048.36058


def test_nyc_weather_missing_counts_match_csv(nyc):
    rows = read_rows("nyc-weather/values.csv")
    present = {(r["origin"], nyc_hour(r["time_hour"])) for r in rows}
    assert len(present) == len(rows) == 26_115  # no duplicate airport-hours
    absent = 3 * 8730 - len(present)
    assert absent == 75
    missing = np.isnan(nyc.data)
    for k, name in enumerate(NYC_VARIABLES):
        empty = sum(r[name] == "" for r in rows)
        assert missing[k].sum() == empty + absent, name
    assert missing.all(axis=0).sum() == absent
    assert missing.all(axis=(0, 1)).sum() == 16  # hours absent at every airport
    assert missing.sum() == 3111
    readme = (DATA / "nyc-weather" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"In all \*\*([\d,]+) cells = ([\d.]+) %", readme)
    assert int(match.group(1).replace(",", "")) == missing.sum()
    assert float(match.group(2)) == round(100 * missing.mean(), 2)


def test_nyc_weather_as_frame():
    pytest.importorskip("pandas")
    b = load_nyc_weather(as_frame=True)
    frame = b.frame
    assert list(frame.columns) == ["variable", "origin", "lon", "lat", "date", "value"]
    assert len(frame) == np.count_nonzero(~np.isnan(b.data))
    assert not frame.isna().any().any()
    assert frame["value"].sum() == pytest.approx(np.nansum(b.data))
    temp = frame[frame["variable"] == "temp"]
    rows = read_rows("nyc-weather/values.csv")
    assert len(temp) == sum(r["temp"] != "" for r in rows)
    first = frame.iloc[0]
    assert (first["variable"], first["origin"], first["value"]) == (
        "temp",
        "EWR",
        float(rows[0]["temp"]),
    )


def test_nyc_weather_rejects_non_utc_hours(monkeypatch, data_copy):
    monkeypatch.setattr(datasets, "_data_dir", lambda: data_copy)
    path = data_copy / "nyc-weather" / "values.csv"
    raw = path.read_bytes().replace(b"T06:00:00Z", b"T06:30:00Z", 1)
    path.write_bytes(raw)
    monkeypatch.setitem(
        datasets._SHA256, "nyc-weather/values.csv", hashlib.sha256(raw).hexdigest()
    )
    with pytest.raises(ValueError, match="whole UTC hour"):
        load_nyc_weather()


# --------------------------------------------------------------------- as_frame


@pytest.mark.parametrize(
    ("loader", "columns"),
    [
        (load_ozone2, ["station_id", "lon", "lat", "date", "ozone"]),
        (load_wind, ["code", "lon", "lat", "date", "wind_speed"]),
        (load_us_employment, ["series", "date", "employment"]),
    ],
)
def test_as_frame_one_row_per_observed_cell(loader, columns):
    pytest.importorskip("pandas")
    b = loader(as_frame=True)
    assert list(b.frame.columns) == columns
    assert len(b.frame) == np.count_nonzero(~np.isnan(b.data))
    assert not b.frame.isna().any().any()
    assert b.frame.iloc[:, -1].sum() == pytest.approx(np.nansum(b.data))


def test_as_frame_ozone2_row_count():
    pytest.importorskip("pandas")
    assert len(load_ozone2(as_frame=True).frame) == 13_617 - 495


def test_as_frame_jura_is_the_table():
    pytest.importorskip("pandas")
    frame = load_jura(as_frame=True).frame
    rows = read_rows("jura/values.csv")
    assert list(frame.columns) == list(rows[0])
    assert frame.shape == (359, 15)
    assert frame["source_row"].dtype == np.int64
    assert frame.loc[100, "Zn"] == float(rows[100]["Zn"])


def test_as_frame_without_pandas_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "kronecker-gp\[notebooks\]"'):
        load_jura(as_frame=True)


# ----------------------------------------------------- data location, checksums


@pytest.fixture
def data_copy(tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    for path in copy.rglob("*"):
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return copy


@pytest.mark.parametrize("relpath", sorted(FILE_LOADER))
def test_checksum_mismatch_raises(monkeypatch, data_copy, relpath):
    monkeypatch.setattr(datasets, "_data_dir", lambda: data_copy)
    FILE_LOADER[relpath]()  # the untouched copy loads
    raw = bytearray((data_copy / relpath).read_bytes())
    raw[-2] = ord("7") if raw[-2] != ord("7") else ord("8")
    (data_copy / relpath).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"checksum mismatch for data file {relpath}"):
        FILE_LOADER[relpath]()


def test_checksum_table_covers_every_csv():
    on_disk = {str(p.relative_to(DATA)) for p in DATA.rglob("*.csv")}
    assert set(datasets._SHA256) == on_disk == set(FILE_LOADER)


def test_missing_data_dir_lists_paths_tried(monkeypatch, tmp_path):
    tried = (tmp_path / "pkg" / "_data", tmp_path / "checkout" / "data")
    monkeypatch.setattr(datasets, "_DATA_DIRS", tried)
    with pytest.raises(FileNotFoundError, match="data directory not found") as info:
        load_ozone2()
    assert all(str(path) in str(info.value) for path in tried)


def test_missing_file_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "_data_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="data file wind/stations.csv"):
        load_wind()


def test_first_existing_data_dir_wins(monkeypatch, data_copy, tmp_path):
    # Installed package data (first entry) is preferred when it exists ...
    monkeypatch.setattr(datasets, "_DATA_DIRS", (data_copy, DATA))
    assert datasets._data_dir() == data_copy
    # ... and the checkout's data/ is the fallback when it does not.
    monkeypatch.setattr(datasets, "_DATA_DIRS", (tmp_path / "nowhere", data_copy))
    assert datasets._data_dir() == data_copy
    assert load_us_employment().data.shape == (15, 120)


def test_default_lookup_finds_checkout_data():
    assert datasets._DATA_DIRS[0] == Path(datasets.__file__).parent / "_data"
    assert datasets._DATA_DIRS[1] == DATA
    assert datasets._data_dir() in datasets._DATA_DIRS


# ---------------------------------------------------------------- data/README.md


def test_data_readme_lists_every_file_with_size_and_checksum():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    entries = {
        path: (int(size.replace(",", "")), digest)
        for path, size, digest in re.findall(
            r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|",
            readme,
            flags=re.MULTILINE,
        )
    }
    files = {
        str(p.relative_to(DATA))
        for p in DATA.rglob("*")
        if p.is_file() and p != DATA / "README.md"
    }
    assert set(entries) == files
    for path, (size, digest) in entries.items():
        raw = (DATA / path).read_bytes()
        assert len(raw) == size, path
        assert hashlib.sha256(raw).hexdigest() == digest, path
        if path.endswith(".csv"):
            assert datasets._SHA256[path] == digest
