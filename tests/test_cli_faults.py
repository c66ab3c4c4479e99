"""Faulty input to ``kronecker-gp fit``: exit 2, one line, nothing written.

Each fault checks the exit status, that stderr is exactly one line naming the
problem, that the input file is unchanged and that the folder holds nothing
new (no output, no temporary file).
"""

import gzip

import pytest
from test_cli import HEADER, fit_args, rows, write

from kronecker_gp.cli import MIN_CELLS, main


def _rows(edit=None, table=None):
    def make(tmp_path):
        data = rows() if table is None else table()
        if edit is not None:
            edit(data)
        return write(tmp_path / "bad.csv", data)

    return make


def _text(text, name="bad.csv"):
    def make(tmp_path):
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        return path

    return make


def _set(index, col, value):
    def edit(table):
        table[index][col] = value

    return edit


def _mixed_stamps(table):
    for r in table[8:16]:
        r[4] += "T12:00"


def _semicolon_decimal_comma():
    lines = [";".join(HEADER)]
    for r in rows():
        fields = [str(f).replace(".", ",") for f in r]
        lines.append(";".join(fields))
    return "\n".join(lines) + "\n"


def _blank_lines_then_bad_value():
    lines = [",".join(HEADER), ""]
    for r in rows():
        lines.append(",".join(f'"{f}"' if "," in str(f) else str(f) for f in r))
    lines.insert(3, "")
    lines[5] = lines[5].rsplit(",", 1)[0] + ",high"
    return "\n".join(lines) + "\n"  # line 6 of the file holds 'high'


FAULTS = {
    "empty file": (_text(""), [], "is empty"),
    "blank lines only": (_text("\n\n  \n"), [], "is empty"),
    "header only": (_text(",".join(HEADER) + "\n"), [], "no data rows"),
    "missing column": (_rows(), ["--value-col", "pm10"], "'pm10' not found"),
    "non-numeric site": (_rows(_set(4, 2, "east")), [], "'lon' must be numeric"),
    "non-numeric value": (_rows(_set(7, 5, "high")), [], "'ozone' must be numeric"),
    "site column of text": (
        _rows(), ["--site-cols", "station"], "'station' must be numeric"
    ),
    "duplicated row": (
        _rows(table=lambda: [*rows(), rows()[3]]), [],
        "site (0.0, 0.0) at time '2020-01-04' appears on lines 5 and 42",
    ),
    "unparseable date": (
        _rows(_set(2, 4, "2020-13-45")), [], "cannot parse time '2020-13-45'"
    ),
    "too few cells": (_rows(table=lambda: rows()[: MIN_CELLS - 2]), [], "too little"),
    "one site": (_rows(table=lambda: rows()[:8]), [], "too little data"),
    "ragged row": (
        _text("station,lon,lat,date,ozone\n1,2,3\n"), [], "line 2 has 3 fields"
    ),
    "same column twice": (_rows(), ["--site-cols", "lon,date"], "must differ"),
    "infinite value": (_rows(_set(0, 5, "inf")), [], "non-finite value on line 2"),
    "duplicated header names": (
        _text("station,lon,lat,date,ozone,station\n1,2,3,2020-01-01,4,5\n"), [],
        "names column 'station' twice (columns 1 and 6)",
    ),
    "mixed time stamps": (
        _rows(_mixed_stamps), [],
        "mixes time formats: '2020-01-01' (line 2) and '2020-01-01T12:00' (line 10)",
    ),
    "numbers and dates": (
        _rows(_set(3, 4, "17")), [], "mixes numbers and dates"
    ),
    "time format mismatch": (
        _rows(), ["--time-format", "%d/%m/%Y"],
        "time '2020-01-01' in column 'date' on line 2 does not match",
    ),
    "huge value": (
        _rows(_set(5, 5, "1e200")), [], "has 1e+200 on line 7; values beyond 1e+100"
    ),
    "latitude out of range": (
        _rows(_set(8, 3, "399")), [],
        "column 'lat' looks like latitude in degrees but line 10 has 399",
    ),
    "longitude out of range": (
        _rows(_set(0, 2, "-200")), [], "looks like longitude in degrees"
    ),
    "decimal comma without --decimal": (
        _text(_semicolon_decimal_comma()), [],
        "line 2 has '31,8065' (for decimal commas pass --decimal ,)",
    ),
    "line numbers after blank lines": (
        _text(_blank_lines_then_bad_value()), [], "line 6 has 'high'"
    ),
    "too many cells": (_rows(), ["--max-cells", "39"], "more than --max-cells 39"),
    "log of a zero": (
        _rows(_set(0, 5, "0")), ["--transform", "log"],
        "--transform log needs positive values, but column 'ozone' has 0",
    ),
    "sqrt of a negative": (
        _rows(_set(0, 5, "-1")), ["--transform", "sqrt"], "non-negative values"
    ),
    "damaged gzip": (
        _text(gzip.compress(b"a,b,c\n1,2,3\n" * 50)[:-30], name="bad.csv.gz"), [],
        "damaged gzip data",
    ),
    "latin-1 declared as utf-8": (
        _text("station,lon,lat,date,ozone\nZ\xfcrich,1,2,2020-01-01,3\n".encode(
            "latin-1")), ["--encoding", "utf-8"],
        "cannot decode",
    ),  # fmt: skip
    "unknown site label column": (
        _rows(), ["--site-label", "lon_deg", "--plot", "p.png"],
        "--site-label 'lon_deg'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_exits_2_with_one_line_and_leaves_nothing(fault, tmp_path, capsys):
    make, extra, message = FAULTS[fault]
    data = make(tmp_path)
    before = data.read_bytes()
    out = tmp_path / "pred.csv"
    args = fit_args(data, out)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, str(tmp_path / value) if flag == "--plot" else value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("kronecker-gp: error: ")
    assert message in err
    assert data.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [data.name]


def test_missing_input_file(tmp_path, capsys):
    assert main(fit_args(tmp_path / "nope.csv", tmp_path / "o.csv")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_input_is_a_folder(tmp_path, capsys):
    assert main(fit_args(tmp_path, tmp_path / "o.csv")) == 2
    assert "is a folder" in capsys.readouterr().err
