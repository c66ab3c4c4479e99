"""Read a long CSV (one row per site and time) onto its site x time grid.

Used by ``kronecker-gp fit``. The file is read once, as a stream: each row
keeps only its site number, time number, value and line. Every input problem
raises :class:`CLIError` with a message naming the column, line or value at
fault; questionable but valid input adds a line to ``GridData.notes``.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.cli._rows import RowReader, column_index, read_header
from kronecker_gp.cli._source import (
    CLIError,
    check_input,
    estimate_rows,
    open_text,
    read_sample,
    sample_lines,
    sniff_delimiter,
)
from kronecker_gp.cli._values import (
    check_degrees,
    check_magnitude,
    number,
    parse_times,
    sentinel_note,
)

__all__ = ["MIN_CELLS", "CLIError", "GridData", "ReadOptions", "read_grid_csv"]

#: A grid needs at least this many observed cells to learn hyperparameters.
MIN_CELLS = 10
#: Missing-value markers by default (compared case-insensitively).
DEFAULT_MISSING = ("NA", "N/A", "NaN")
#: Default cap on site x time cells (``--max-cells``).
DEFAULT_MAX_CELLS = 2_000_000
#: Seconds after which reading reports progress, and rows between clock checks.
PROGRESS_AFTER, PROGRESS_EVERY = 2.0, 20000


@dataclass(frozen=True)
class ReadOptions:
    """How to read the CSV (the ``fit`` options of the same names)."""

    delimiter: str | None = None
    decimal: str = "."
    encoding: str | None = None
    missing_values: tuple[str, ...] = DEFAULT_MISSING
    time_format: str | None = None
    max_cells: int = DEFAULT_MAX_CELLS


@dataclass(frozen=True)
class GridData:
    """A long CSV arranged on its site x time grid.

    Attributes
    ----------
    sites : ndarray of shape (n_sites, n_site_cols)
        Site coordinates, in the order sites first appear in the file.
    times : ndarray of shape (n_times,)
        Unique times, sorted (days since ``origin`` for dates).
    values : ndarray of shape (n_sites, n_times)
        Observed values, NaN for cells without a row or with a missing value.
    columns : list of str
        The input's columns that are carried to the output, in input order:
        the site, time and value columns and every column constant per site.
    site_fields : list of dict
        For each site, the text of its per-site columns as first written.
    time_text : list of str
        Each time as first written in the file (sorted like ``times``).
    origin : numpy.datetime64 or None
        The first date when the times are dates, else None.
    delimiter : str
        The delimiter the file was read with.
    dropped : list of str
        Columns that change within a site (not carried to the output).
    notes : list of str
        Warnings about the input (a sentinel value, a fallback encoding).
    """

    sites: FloatArray
    times: FloatArray
    values: FloatArray
    columns: list[str]
    site_fields: list[dict[str, str]]
    time_text: list[str]
    origin: Any = None
    delimiter: str = ","
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def dates(self) -> Any:
        """Return the times as datetime64 (None for numeric times)."""
        if self.origin is None:
            return None
        return self.origin + np.round(self.times * 86400).astype("timedelta64[s]")


def _scan_rows(
    path: Path,
    encoding: str,
    delim: str,
    names: Sequence[str],
    *,
    opts: ReadOptions,
    progress: Callable[[int], None],
) -> tuple[list[str], RowReader]:
    with open_text(path, encoding) as handle:
        reader = csv.reader(handle, delimiter=delim)
        header = read_header(reader, path)
        rows = RowReader(header, column_index(header, names, delim), opts, delim)
        t0 = next_report = time.perf_counter()
        for n, row in enumerate(reader):
            if any(f.strip() for f in row):
                rows.add(row, reader.line_num)
            if (
                n % PROGRESS_EVERY == PROGRESS_EVERY - 1
                and (now := time.perf_counter()) > next_report
            ):
                if now - t0 > PROGRESS_AFTER:
                    progress(len(rows.scan.values))
                    next_report = now + PROGRESS_AFTER
    return header, rows


def _decode_and_scan(
    path: Path,
    names: Sequence[str],
    opts: ReadOptions,
    progress: Callable[[int], None],
) -> tuple[list[str], RowReader, str, list[str]]:
    """Read the rows, falling back from UTF-8 to Latin-1 when no encoding is set."""
    encodings = [opts.encoding] if opts.encoding else ["utf-8-sig", "latin-1"]
    for k, encoding in enumerate(encodings):
        try:
            lines = sample_lines(read_sample(path, encoding))
            delim = opts.delimiter or sniff_delimiter(lines, path)
            header, rows = _scan_rows(
                path, encoding, delim, names, opts=opts, progress=progress
            )
        except UnicodeDecodeError as exc:
            if k + 1 < len(encodings):
                continue
            raise CLIError(
                f"cannot decode {str(path)!r} as {encoding} (byte {exc.start}); "
                "pass --encoding with the file's encoding, e.g. latin-1 or cp1252"
            ) from None
        except csv.Error as exc:
            raise CLIError(f"cannot read {str(path)!r}: {exc}") from None
        notes = []
        if k > 0:
            notes.append(
                f"{str(path)!r} is not valid UTF-8; read it as Latin-1 (pass "
                "--encoding to choose another)"
            )
        return header, rows, delim, notes
    raise AssertionError("unreachable")  # pragma: no cover


def _check_rows_estimate(path: Path, opts: ReadOptions) -> int:
    encoding = "latin-1"  # a single-byte reading sizes the lines in bytes
    rows = estimate_rows(path, read_sample(path, encoding), encoding)
    if rows > opts.max_cells:
        raise CLIError(
            f"{str(path)!r} holds about {rows:,} rows, more than --max-cells "
            f"{opts.max_cells:,} grid cells could hold; aggregate to a coarser "
            "time step or fewer sites first, or raise --max-cells if the machine "
            "has the memory and time"
        )
    return rows


def read_grid_csv(
    path: Path,
    site_cols: Sequence[str],
    time_col: str,
    value_col: str,
    *,
    options: ReadOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GridData:
    """Read a long CSV and arrange it on its site x time grid.

    Parameters
    ----------
    path : Path
        The CSV file (optionally gzip-compressed), with a header row.
    site_cols : sequence of str
        Numeric columns whose value tuple identifies a site.
    time_col : str
        Numeric times or dates (converted to days).
    value_col : str
        Numeric values; fields in ``options.missing_values`` (and empty
        fields) are missing cells.
    options : ReadOptions, optional
        Delimiter, decimal mark, encoding, missing values, time format and
        the cell cap.
    progress : callable, optional
        Called as ``progress(rows_read, rows_estimated)`` every few seconds
        on a long read.

    Returns
    -------
    GridData
        The grid; cells without a row are NaN.

    Raises
    ------
    CLIError
        On an unreadable file, a missing, duplicated or non-numeric column,
        an unparseable or mixed time, a coordinate out of range, a repeated
        site-time pair, too few observed cells or too many cells.
    """
    opts = options or ReadOptions()
    check_input(path)
    names = [*site_cols, time_col, value_col]
    if len(set(names)) != len(names):
        raise CLIError(f"site, time and value columns must differ; got {names}")
    estimate = _check_rows_estimate(path, opts)
    report = (lambda n: progress(n, estimate)) if progress else (lambda n: None)
    header, rows, delim, notes = _decode_and_scan(path, names, opts, report)
    return _to_grid(header, rows, names, opts=opts, delim=delim, notes=notes)


def _site_coords(rows: RowReader, names: Sequence[str], opts: ReadOptions) -> Any:
    scan = rows.scan
    coords = np.array(
        [
            [
                number(site[i], rows.header[i], line, opts.decimal)
                for i in rows.site_cols
            ]
            for site, line in zip(scan.site_rows, scan.site_lines)
        ]
    ).reshape(len(scan.site_rows), len(rows.site_cols))
    for k, name in enumerate(names[:-2]):
        check_magnitude(coords[:, k], name, scan.site_lines)
        check_degrees(coords[:, k], name, scan.site_lines)
    return coords


def _duplicate_check(cell: Any, rows: RowReader, time_text: list[str]) -> None:
    order = np.argsort(cell, kind="stable")
    same = np.flatnonzero(cell[order][1:] == cell[order][:-1])
    if same.size == 0:
        return
    a, b = order[same[0]], order[same[0] + 1]
    lines = np.frombuffer(rows.scan.lines, dtype=np.int64)
    site = rows.scan.site_rows[rows.scan.site_idx[a]]
    text = ", ".join(site[i] for i in rows.site_cols)
    stamp = time_text[rows.scan.time_idx[a]]
    raise CLIError(
        f"duplicated site-time row: site ({text}) at time {stamp!r} appears on "
        f"lines {lines[a]} and {lines[b]}; keep one row per site and time"
    )


def _check_size(n_sites: int, n_times: int, n_rows: int, opts: ReadOptions) -> None:
    cells = n_sites * n_times
    if cells > opts.max_cells:
        raise CLIError(
            f"the {n_rows:,} rows span {n_sites:,} sites x {n_times:,} times = "
            f"{cells:,} cells ({100 * n_rows / cells:.2g} % filled), more than "
            f"--max-cells {opts.max_cells:,}; round the times to a coarser step, "
            "keep fewer sites, or raise --max-cells"
        )


def _to_grid(
    header: list[str],
    rows: RowReader,
    names: Sequence[str],
    *,
    opts: ReadOptions,
    delim: str,
    notes: list[str],
) -> GridData:
    scan = rows.scan
    if not scan.values:
        raise CLIError("the input file has a header but no data rows")
    stamps = list(scan.time_of)
    _check_size(len(scan.site_rows), len(stamps), len(scan.values), opts)
    times, origin = parse_times(stamps, scan.time_lines, names[-2], opts)
    rank = np.argsort(times, kind="stable")
    position = np.empty_like(rank)
    position[rank] = np.arange(rank.size)
    site_of = np.frombuffer(scan.site_idx, dtype=np.int64)
    time_of = position[np.frombuffer(scan.time_idx, dtype=np.int64)]
    cell = site_of * rank.size + time_of
    _duplicate_check(cell, rows, stamps)
    values = np.frombuffer(scan.values, dtype=np.float64)
    check_magnitude(values, names[-1], scan.lines)
    flat = np.full(len(scan.site_rows) * rank.size, np.nan)
    flat[cell] = values
    grid = flat.reshape(len(scan.site_rows), rank.size)
    n_obs = int(np.isfinite(grid).sum())
    if grid.shape[0] < 2 or grid.shape[1] < 2 or n_obs < MIN_CELLS:
        raise CLIError(
            f"too little data: {n_obs} observed cells on {grid.shape[0]} sites x "
            f"{grid.shape[1]} times; need at least 2 sites, 2 times and "
            f"{MIN_CELLS} observed cells"
        )
    note = sentinel_note(values, np.frombuffer(scan.lines, dtype=np.int64), names[-1])
    keep = [i for i in range(len(header)) if i not in scan.varying]
    return GridData(
        sites=_site_coords(rows, names, opts),
        times=times[rank],
        values=grid,
        columns=[header[i] for i in keep],
        site_fields=[
            {
                header[i]: site[i]
                for i in keep
                if i not in (rows.time_col, rows.value_col)
            }
            for site in scan.site_rows
        ],
        time_text=[stamps[i] for i in rank],
        origin=origin,
        delimiter=delim,
        dropped=[header[i] for i in sorted(scan.varying)],
        notes=notes + ([note] if note else []),
    )
