"""Open the input file of ``kronecker-gp fit``: gzip, encoding, delimiter, size.

Nothing here parses values; :mod:`kronecker_gp.cli._csv` does. These helpers
decide how to read the file and how big it is before a row is parsed.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

#: Delimiters tried by the sniffer, with the words used in messages.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
#: Text read from the start of the file to sniff the delimiter and line length.
SAMPLE_CHARS = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class CLIError(Exception):
    """A user-facing input problem: printed as one line, exit status 2."""


def is_gzip(path: Path) -> bool:
    """Tell a gzip file by its first two bytes (whatever its name)."""
    with path.open("rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def check_input(path: Path) -> None:
    """Raise a CLIError unless ``path`` is a readable, non-empty regular file."""
    if not path.exists():
        raise CLIError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise CLIError(f"input {str(path)!r} is a folder; give a CSV file")
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        raise CLIError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    if size == 0:
        raise CLIError(f"input file {str(path)!r} is empty")


@contextmanager
def open_text(path: Path, encoding: str) -> Iterator[IO[str]]:
    """Open ``path`` (plain or gzip) as text, line endings left to the csv module."""
    if is_gzip(path):
        raw: IO[bytes] = gzip.open(path, "rb")  # type: ignore[assignment]
    else:
        raw = path.open("rb")
    try:
        with io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
            yield text
    except (gzip.BadGzipFile, EOFError) as exc:
        raise CLIError(
            f"cannot read {str(path)!r}: damaged gzip data ({exc})"
        ) from None
    finally:
        raw.close()


def uncompressed_size(path: Path) -> int:
    """Return the file's size in bytes once decompressed (an estimate for gzip).

    A gzip member ends with its uncompressed size modulo 2**32; when that
    wrapped below the compressed size, a typical CSV ratio of 4 stands in.
    """
    size = path.stat().st_size
    if not is_gzip(path):
        return size
    with path.open("rb") as handle:
        handle.seek(-4, io.SEEK_END)
        tail = int.from_bytes(handle.read(4), "little")
    return tail if tail >= size else 4 * size


def read_sample(path: Path, encoding: str) -> str:
    """Return up to ``SAMPLE_CHARS`` characters from the start of the file."""
    with open_text(path, encoding) as handle:
        return handle.read(SAMPLE_CHARS)


def sample_lines(sample: str, limit: int = 50) -> list[str]:
    """Return the first non-blank complete lines of ``sample`` (at most ``limit``)."""
    lines = sample.splitlines()
    if len(sample) >= SAMPLE_CHARS and lines:
        lines = lines[:-1]  # the last line may be cut
    return [line for line in lines if line.strip()][:limit]


def sniff_delimiter(lines: list[str], path: Path) -> str:
    """Return the delimiter that splits the sampled lines into fields.

    Each of comma, semicolon and tab is tried; a candidate must give the
    header more than one field. The one that gives most sampled rows as
    many fields as the header wins, then the one with the widest header.
    """
    if not lines:
        raise CLIError(f"input file {str(path)!r} is empty")
    scores = []
    for delim in DELIMITERS:
        counts = [len(row) for row in csv.reader(lines, delimiter=delim)]
        if counts[0] > 1:
            same = sum(n == counts[0] for n in counts)
            scores.append((same, counts[0], delim))
    if not scores:
        raise CLIError(
            f"cannot tell the delimiter of {str(path)!r}: its header does not "
            "split into several fields on comma, semicolon or tab; pass "
            "--delimiter"
        )
    return max(scores)[2]


def estimate_rows(path: Path, sample: str, encoding: str) -> int:
    """Estimate the number of data rows from the file size and the sample."""
    lines = sample_lines(sample, limit=10**9)
    if len(sample) < SAMPLE_CHARS or len(lines) <= 1:
        return max(len(lines) - 1, 0)  # the sample is the whole file
    per_line = len("\n".join(lines).encode(encoding, errors="replace")) / len(lines)
    return int(uncompressed_size(path) / max(per_line, 1.0))
