"""One pass over the rows of ``kronecker-gp fit``'s CSV, kept compact.

Each row leaves only its site number, time number, value and line in typed
arrays; each site keeps the text of its first row (for the per-site columns
carried to the output) and each time stamp its first line.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kronecker_gp.cli._source import DELIMITERS, CLIError
from kronecker_gp.cli._values import number


@dataclass
class Scan:
    """What one pass over the rows keeps (compact per-row arrays)."""

    site_of: dict[tuple[str, ...], int] = field(default_factory=dict)
    site_rows: list[list[str]] = field(default_factory=list)
    site_lines: list[int] = field(default_factory=list)
    time_of: dict[str, int] = field(default_factory=dict)
    time_lines: list[int] = field(default_factory=list)
    site_idx: array = field(default_factory=lambda: array("q"))
    time_idx: array = field(default_factory=lambda: array("q"))
    values: array = field(default_factory=lambda: array("d"))
    lines: array = field(default_factory=lambda: array("q"))
    varying: set[int] = field(default_factory=set)


def read_header(reader: Any, path: Path) -> list[str]:
    for row in reader:
        if any(f.strip() for f in row):
            header = [name.strip() for name in row]
            break
    else:
        raise CLIError(f"input file {str(path)!r} is empty")
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise CLIError(
                f"the header names column {name!r} twice (columns {seen[name] + 1} "
                f"and {i + 1}); rename one so that each column is unambiguous"
            )
        seen[name] = i
    return header


def column_index(header: list[str], names: Sequence[str], delim: str) -> list[int]:
    missing = [name for name in names if name not in header]
    if missing:
        raise CLIError(
            f"column(s) {', '.join(map(repr, missing))} not found; the file's "
            f"{DELIMITERS.get(delim, repr(delim))}-separated header has "
            f"{', '.join(header)}"
        )
    return [header.index(name) for name in names]


class RowReader:
    """Turn CSV rows into site / time / value numbers, one row at a time."""

    def __init__(
        self, header: list[str], idx: list[int], opts: Any, delim: str
    ) -> None:
        self.header, self.opts, self.delim = header, opts, delim
        self.site_cols, self.time_col, self.value_col = idx[:-2], idx[-2], idx[-1]
        self.others = [i for i in range(len(header)) if i not in idx]
        self.missing = {m.strip().lower() for m in opts.missing_values} | {""}
        self.missing_numbers = set()
        for m in opts.missing_values:
            with_point = m.strip().replace(opts.decimal, ".")
            try:
                self.missing_numbers.add(float(with_point))
            except ValueError:
                pass
        self.scan = Scan()

    def value(self, text: str, line: int) -> float:
        text = text.strip()
        if text.lower() in self.missing:
            return math.nan
        value = number(text, self.header[self.value_col], line, self.opts.decimal)
        return math.nan if value in self.missing_numbers else value

    def add(self, row: list[str], line: int) -> None:
        if len(row) != len(self.header):
            raise CLIError(
                f"line {line} has {len(row)} fields but the header has "
                f"{len(self.header)} ({DELIMITERS.get(self.delim, repr(self.delim))}"
                "-separated; quote fields that contain the delimiter)"
            )
        scan = self.scan
        key = tuple(row[i].strip() for i in self.site_cols)
        site = scan.site_of.get(key)
        if site is None:
            site = scan.site_of[key] = len(scan.site_rows)
            scan.site_rows.append([f.strip() for f in row])
            scan.site_lines.append(line)
        else:
            first = scan.site_rows[site]
            for i in self.others:
                if i not in scan.varying and row[i].strip() != first[i]:
                    scan.varying.add(i)
        stamp = row[self.time_col].strip()
        when = scan.time_of.get(stamp)
        if when is None:
            when = scan.time_of[stamp] = len(scan.time_lines)
            scan.time_lines.append(line)
        scan.site_idx.append(site)
        scan.time_idx.append(when)
        scan.values.append(self.value(row[self.value_col], line))
        scan.lines.append(line)
