"""Parse and check the numbers and times of ``kronecker-gp fit``'s input.

Each check raises :class:`CLIError` naming the column, the line and the value,
or (for suspicious but valid data) returns a note printed as a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.cli._source import CLIError

#: Values beyond this magnitude overflow once squared (variances, distances).
MAX_MAGNITUDE = 1e100
_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+([eE][-+]?\d+)?")
_EPOCH = datetime(1970, 1, 1)


def number(text: str, column: str, line: int, decimal: str = ".") -> float:
    """Parse a finite number or raise a CLIError naming the column and line."""
    stripped = text.strip()
    try:
        value = float(stripped.replace(",", ".") if decimal == "," else stripped)
    except ValueError:
        hint = ""
        if decimal == "." and _DECIMAL_COMMA.fullmatch(stripped):
            hint = " (for decimal commas pass --decimal ,)"
        raise CLIError(
            f"column {column!r} must be numeric, but line {line} has {text!r}{hint}"
        ) from None
    if not math.isfinite(value):
        raise CLIError(f"column {column!r} has a non-finite value on line {line}")
    return value


def check_magnitude(values: Any, column: str, lines: Sequence[int] | Any) -> None:
    """Refuse values whose squares overflow (they would give NaN or inf results)."""
    big = np.flatnonzero(np.abs(np.asarray(values)) > MAX_MAGNITUDE)
    if big.size:
        i = int(big[0])
        raise CLIError(
            f"column {column!r} has {float(values[i]):g} on line {int(lines[i])}; "
            f"values beyond {MAX_MAGNITUDE:g} overflow when squared: rescale the "
            "column (for example to larger units)"
        )


_DEGREES = {"lat": (-90.0, 90.0, "latitude"), "lon": (-180.0, 360.0, "longitude")}


def degree_kind(column: str) -> str | None:
    """Return "lat" or "lon" when the column name looks like degrees, else None."""
    name = column.strip().lower()
    if name.startswith("lat"):
        return "lat"
    if name.startswith("lon") or name in ("lng", "long"):
        return "lon"
    return None


def check_degrees(values: FloatArray, column: str, lines: Sequence[int]) -> None:
    """Refuse a latitude outside -90..90 or a longitude outside -180..360."""
    kind = degree_kind(column)
    if kind is None:
        return
    lo, hi, word = _DEGREES[kind]
    bad = np.flatnonzero((values < lo) | (values > hi))
    if bad.size:
        i = int(bad[0])
        raise CLIError(
            f"column {column!r} looks like {word} in degrees but line {lines[i]} "
            f"has {values[i]:g}, outside {lo:g}..{hi:g}; fix the value, or rename "
            "the column if it is not in degrees"
        )


def sentinel_note(values: FloatArray, lines: Any, column: str) -> str | None:
    """Return a warning when one value repeats far outside all the others.

    A value counts as a likely missing-data code (``-999``, ``9999``) when it
    is the column's minimum or maximum, appears on at least 3 rows (and
    0.2 % of them) and lies further from the other values than their whole
    spread.
    """
    finite = np.isfinite(values)
    v, where = values[finite], np.asarray(lines)[finite]
    if v.size < 20:
        return None
    for extreme in (float(v.min()), float(v.max())):
        hit = v == extreme
        count = int(hit.sum())
        rest = v[~hit]
        if count < max(3, 0.002 * v.size) or rest.size < 10:
            continue
        lo, hi = float(rest.min()), float(rest.max())
        gap = lo - extreme if extreme < lo else extreme - hi
        if gap > 0 and gap > hi - lo:
            return (
                f"column {column!r} has {extreme:g} on {count} rows (first on line "
                f"{int(where[hit][0])}), far outside the other values ({lo:g} to "
                f"{hi:g}); if it marks missing data, pass --missing-values "
                f"NA,N/A,NaN,{extreme:g}"
            )
    return None


def _signature(text: str) -> str:
    """Return the shape of a time stamp: digits replaced by 9."""
    return re.sub(r"\d", "9", text)


def _strptime_days(
    texts: list[str], lines: Sequence[int], column: str, fmt: str
) -> FloatArray:
    seconds = np.empty(len(texts))
    for i, text in enumerate(texts):
        try:
            stamp = datetime.strptime(text, fmt)
        except ValueError:
            raise CLIError(
                f"time {text!r} in column {column!r} on line {lines[i]} does not "
                f"match --time-format {fmt!r}"
            ) from None
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
        seconds[i] = (stamp - _EPOCH).total_seconds()
    return seconds


def _iso_seconds(texts: list[str], lines: Sequence[int], column: str) -> FloatArray:
    shapes: dict[str, int] = {}
    for i, text in enumerate(texts):
        shapes.setdefault(_signature(text), i)
    if len(shapes) > 1:
        a, b = list(shapes.values())[:2]
        raise CLIError(
            f"column {column!r} mixes time formats: {texts[a]!r} (line {lines[a]}) "
            f"and {texts[b]!r} (line {lines[b]}); write every time the same way, "
            "or pass --time-format to read them all with one format"
        )
    seconds = np.empty(len(texts))
    for i, text in enumerate(texts):
        try:
            stamp: Any = np.datetime64(text, "s")
        except ValueError:
            stamp = np.datetime64("NaT")
        if np.isnat(stamp):
            raise CLIError(
                f"cannot parse time {text!r} in column {column!r} on line "
                f"{lines[i]}: expected a number or an ISO date such as 2024-01-31 "
                "(or pass --time-format, e.g. '%d/%m/%Y')"
            )
        seconds[i] = float(stamp.astype(np.int64))
    return seconds


def parse_times(
    texts: list[str], lines: Sequence[int], column: str, opts: Any
) -> tuple[FloatArray, Any]:
    """Parse the distinct time stamps as numbers or dates.

    Returns the times (numbers as written, dates as days since the first
    date) and the first date as ``datetime64[s]`` (None for numbers).
    """
    if opts.time_format is None:
        numbers: list[float | None] = []
        for text in texts:
            try:
                numbers.append(number(text, column, 0, opts.decimal))
            except CLIError:
                numbers.append(None)
        kinds = [n is None for n in numbers]
        if not any(kinds):
            times = np.array(numbers, dtype=np.float64)
            check_magnitude(times, column, lines)
            return times, None
        if not all(kinds):
            a, b = kinds.index(False), kinds.index(True)
            raise CLIError(
                f"column {column!r} mixes numbers and dates: {texts[a]!r} (line "
                f"{lines[a]}) and {texts[b]!r} (line {lines[b]})"
            )
        seconds = _iso_seconds(texts, lines, column)
    else:
        seconds = _strptime_days(texts, lines, column, opts.time_format)
    origin = float(seconds.min())
    return (seconds - origin) / 86400.0, np.datetime64(int(origin), "s")
