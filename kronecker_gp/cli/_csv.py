"""Read a long CSV (one row per site and time) onto its site x time grid.

Used by ``kronecker-gp fit``. Every input problem raises :class:`CLIError`
with a message naming the column, line or value at fault.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray

#: A grid needs at least this many observed cells to learn hyperparameters.
MIN_CELLS = 10
_MISSING = {"", "na", "nan", "null", "none"}


class CLIError(Exception):
    """A user-facing input problem: printed as one line, exit status 2."""


@dataclass(frozen=True)
class GridData:
    """A long CSV arranged on its site x time grid.

    Attributes
    ----------
    sites : ndarray of shape (n_sites, n_site_cols)
        Unique site coordinates, sorted.
    times : ndarray of shape (n_times,)
        Unique times, sorted (days since the first date for dates).
    values : ndarray of shape (n_sites, n_times)
        Observed values, NaN for cells without a row or with an empty value.
    site_text : list of tuple of str
        Each site's coordinates as first written in the file.
    time_text : list of str
        Each time as first written in the file.
    origin : numpy.datetime64 or None
        The first date when the times are dates, else None.
    """

    sites: FloatArray
    times: FloatArray
    values: FloatArray
    site_text: list[tuple[str, ...]]
    time_text: list[str]
    origin: Any = None

    @property
    def dates(self) -> Any:
        """Return the times as datetime64 (None for numeric times)."""
        if self.origin is None:
            return None
        return self.origin + np.round(self.times * 86400).astype("timedelta64[s]")


def _number(text: str, column: str, line: int) -> float:
    """Parse a finite number or raise a CLIError naming the column and line."""
    try:
        value = float(text)
    except ValueError:
        raise CLIError(
            f"column {column!r} must be numeric, but line {line} has {text!r}"
        ) from None
    if not math.isfinite(value):
        raise CLIError(f"column {column!r} has a non-finite value on line {line}")
    return value


def _parse_times(texts: list[str], column: str) -> tuple[FloatArray, Any]:
    """Parse a time column as numbers, else as ISO dates (days, first date)."""
    try:
        return np.array([float(t) for t in texts]), None
    except ValueError:
        pass
    days = np.empty(len(texts))
    for i, text in enumerate(texts):
        try:
            stamp = np.datetime64(text.strip(), "s")
        except ValueError:
            raise CLIError(
                f"cannot parse time {text!r} in column {column!r} on line {i + 2}: "
                "expected a number or an ISO date such as 2024-01-31"
            ) from None
        if np.isnat(stamp):
            raise CLIError(f"column {column!r} has an empty time on line {i + 2}")
        days[i] = stamp.astype(np.int64) / 86400.0
    origin = days.min()
    return days - origin, np.datetime64(int(origin * 86400), "s")


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Return the header and rows of a CSV file, or raise a CLIError."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(f.strip() for f in row)]
    except FileNotFoundError:
        raise CLIError(f"input file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"cannot read {str(path)!r}: {exc}") from None
    if not rows:
        raise CLIError(f"input file {str(path)!r} is empty")
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise CLIError(f"input file {str(path)!r} has a header but no data rows")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CLIError(
                f"line {i} has {len(row)} fields but the header has {len(header)}"
            )
    return header, rows[1:]


def _column_index(header: list[str], names: Sequence[str]) -> list[int]:
    missing = [name for name in names if name not in header]
    if missing:
        raise CLIError(
            f"column(s) {', '.join(map(repr, missing))} not found; the file has "
            f"{', '.join(header)}"
        )
    return [header.index(name) for name in names]


def read_grid_csv(
    path: Path, site_cols: Sequence[str], time_col: str, value_col: str
) -> GridData:
    """Read a long CSV and arrange it on its site x time grid.

    Parameters
    ----------
    path : Path
        The CSV file, with a header row.
    site_cols : sequence of str
        Numeric columns whose value tuple identifies a site.
    time_col : str
        Numeric times or ISO dates (converted to days).
    value_col : str
        Numeric values; empty or ``NA`` fields are missing cells.

    Returns
    -------
    GridData
        The grid; cells without a row are NaN.

    Raises
    ------
    CLIError
        On a missing or non-numeric column, an unparseable time, a repeated
        site-time pair or too few observed cells.
    """
    header, rows = _read_rows(path)
    names = [*site_cols, time_col, value_col]
    if len(set(names)) != len(names):
        raise CLIError(f"site, time and value columns must differ; got {names}")
    idx = _column_index(header, names)
    site_text = [tuple(row[i].strip() for i in idx[:-2]) for row in rows]
    coords = np.array(
        [
            [_number(t, c, line) for t, c in zip(texts, site_cols)]
            for line, texts in enumerate(site_text, start=2)
        ]
    )
    time_text = [row[idx[-2]].strip() for row in rows]
    times, origin = _parse_times(time_text, time_col)
    raw = [row[idx[-1]].strip() for row in rows]
    values = np.array(
        [
            np.nan if v.lower() in _MISSING else _number(v, value_col, line)
            for line, v in enumerate(raw, start=2)
        ]
    )
    grid = _to_grid(coords, times, values, site_text, time_text)
    return replace(grid, origin=origin)


def _to_grid(
    coords: FloatArray,
    times: FloatArray,
    values: FloatArray,
    site_text: list[tuple[str, ...]],
    time_text: list[str],
) -> GridData:
    sites, site_first, site_of = np.unique(
        coords, axis=0, return_index=True, return_inverse=True
    )
    grid_times, time_first, time_of = np.unique(
        times, return_index=True, return_inverse=True
    )
    site_of, time_of = site_of.reshape(-1), time_of.reshape(-1)
    cell = site_of * grid_times.size + time_of
    first_line = np.full(sites.shape[0] * grid_times.size, -1)
    for row, c in enumerate(cell):
        if first_line[c] >= 0:
            raise CLIError(
                f"duplicated site-time row: site ({', '.join(site_text[row])}) at "
                f"time {time_text[row]!r} appears on lines {first_line[c] + 2} and "
                f"{row + 2}; keep one row per site and time"
            )
        first_line[c] = row
    flat = np.full(first_line.shape, np.nan)
    flat[cell] = values
    grid = flat.reshape(sites.shape[0], grid_times.size)
    n_obs = int(np.isfinite(grid).sum())
    if sites.shape[0] < 2 or grid_times.size < 2 or n_obs < MIN_CELLS:
        raise CLIError(
            f"too little data: {n_obs} observed cells on {sites.shape[0]} sites x "
            f"{grid_times.size} times; need at least 2 sites, 2 times and "
            f"{MIN_CELLS} observed cells"
        )
    return GridData(
        sites=sites,
        times=grid_times,
        values=grid,
        site_text=[site_text[i] for i in site_first],
        time_text=[time_text[i] for i in time_first],
    )
