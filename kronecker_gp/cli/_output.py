"""Output safety of ``kronecker-gp fit``: checked paths and atomic writes.

An output may not be the input, the other output or a folder; a plot's
format follows its extension. Each file is written to a temporary file in
its target folder and renamed over the target only once it is complete, so
a failure, Ctrl-C or SIGTERM leaves the target as it was and no temporary
file behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kronecker_gp.cli._source import CLIError

#: Plot formats by file extension.
PLOT_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _check_target(path: Path, option: str) -> None:
    text = str(path)
    if path.is_dir() or text.endswith((os.sep, "/")) or path.name in ("", ".", ".."):
        raise CLIError(f"{option} {text!r} is a folder; give a file name in it")
    folder = path.parent
    if not folder.is_dir():
        raise CLIError(f"output folder {str(folder)!r} of {option} does not exist")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"cannot write to the folder {str(folder)!r} of {option}")


def check_outputs(data: Path, out: Path, plot: Path | None) -> str | None:
    """Refuse unsafe output paths before any work; return the plot format.

    Raises
    ------
    CLIError
        If an output is the input, both outputs are the same file, an output
        is a folder or in a missing folder, or the plot's extension is not
        ``.png``, ``.pdf`` or ``.svg``.
    """
    _check_target(out, "--out")
    if _same(out, data):
        raise CLIError(
            f"--out {str(out)!r} is the input file; choose another name so the "
            "data are not overwritten"
        )
    if plot is None:
        return None
    _check_target(plot, "--plot")
    if _same(plot, data):
        raise CLIError(
            f"--plot {str(plot)!r} is the input file; choose another name so the "
            "data are not overwritten"
        )
    if _same(plot, out):
        raise CLIError(f"--plot and --out are the same file {str(out)!r}")
    fmt = PLOT_FORMATS.get(plot.suffix.lower())
    if fmt is None:
        raise CLIError(
            f"--plot {str(plot)!r} has no known image extension; use "
            f"{', '.join(PLOT_FORMATS)}"
        )
    return fmt


def _file_mode(path: Path) -> int:
    """Return the target's mode, or the umask's default for a new file."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block succeeds.

    The temporary file lives next to its target (same file system, so the
    final ``os.replace`` is atomic) and is removed on any exception,
    ``KeyboardInterrupt`` included.
    """
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".part", dir=path.parent
    )
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.chmod(temp, _file_mode(path))  # mkstemp made it private (0600)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interrupt, so that clean-up code runs."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` inside the block (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
