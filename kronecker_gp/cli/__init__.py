"""The ``kronecker-gp`` command: fit a CSV of station data, or run the demo.

``kronecker-gp fit DATA.csv --site-cols lon,lat --time-col date --value-col y
--out predictions.csv`` reads a long table (one row per site and time), builds
the site x time grid, fits a :class:`~kronecker_gp.KroneckerGP` by maximising
the exact log marginal likelihood and writes, for every grid cell, the
posterior mean, the latent sd, the sd of a new observation and its 95 %
interval in data units. ``kronecker-gp demo`` fits a real data set end to end
and compares it with two baselines (see :mod:`kronecker_gp.cli._demo`).

Bad input stops with one line ``kronecker-gp: error: ...`` on stderr and exit
status 2; Ctrl-C stops with one line and exit status 130. Neither leaves an
output or temporary file behind, and an existing output stays as it was.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kronecker_gp.cli._csv import (
    DEFAULT_MAX_CELLS,
    DEFAULT_MISSING,
    MIN_CELLS,
    GridData,
    read_grid_csv,
)
from kronecker_gp.cli._fit import (
    BOUNDS_HELP,
    KERNEL_NAMES,
    fit_grid_model,
    make_kernel,
    progress_printer,
)
from kronecker_gp.cli._source import CLIError
from kronecker_gp.cli._transform import OUTPUT_COLUMNS, TRANSFORMS

__all__ = [
    "MIN_CELLS",
    "CLIError",
    "GridData",
    "build_parser",
    "fit_grid_model",
    "main",
    "make_kernel",
    "progress_printer",
    "read_grid_csv",
]

PROG = "kronecker-gp"


def _column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names, got {text!r}"
        )
    return names


def _missing_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _delimiter(text: str) -> str:
    names = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}
    value = names.get(text.lower(), text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(
            f"expected one character (or tab, comma, semicolon), got {text!r}"
        )
    return value


def _epilog() -> str:
    """Return the ``fit --help`` epilog: output columns and model, wrapped."""
    import textwrap  # noqa: PLC0415

    intro = (
        "output columns: the input's site, time and value columns and every "
        "column that is constant within a site (ids, names), in the input's "
        "order; rows in the order sites first appear, times in time order; then"
    )
    columns = [
        textwrap.fill(
            f"{name:<8} {text}", 79, initial_indent="  ", subsequent_indent=" " * 11
        )
        for name, text in OUTPUT_COLUMNS.items()
    ]
    model = (
        "model: a Kronecker product of a space kernel (with the signal variance) "
        "and a time kernel, plus independent noise, fitted by maximising the "
        "exact log marginal likelihood on standardised values. "
        + BOUNDS_HELP
        + " Warnings from the fit, and any hyperparameter that ends at a bound, "
        "are printed on stderr."
    )
    return "\n".join([textwrap.fill(intro, 79), *columns, "", textwrap.fill(model, 79)])


def _add_reading_options(fit: argparse.ArgumentParser) -> None:
    read = fit.add_argument_group("reading the file")
    read.add_argument(
        "--delimiter",
        type=_delimiter,
        help="field delimiter (default: sniffed among comma, semicolon and tab)",
    )
    read.add_argument(
        "--decimal", choices=(".", ","), default=".", help="decimal mark (default .)"
    )
    read.add_argument(
        "--encoding",
        help="text encoding (default UTF-8, falling back to Latin-1 with a warning)",
    )
    read.add_argument(
        "--missing-values",
        type=_missing_list,
        default=DEFAULT_MISSING,
        metavar="LIST",
        help="comma-separated markers of a missing value, compared without case; "
        "an empty field is always missing (default NA,N/A,NaN); numbers such as "
        "-999 also match -999.0",
    )
    read.add_argument(
        "--time-format",
        help="strptime format of the time column, e.g. '%%d/%%m/%%Y %%H:%%M' "
        "(default: numbers, or ISO dates written one way throughout)",
    )
    read.add_argument(
        "--max-cells",
        type=_positive_int,
        default=DEFAULT_MAX_CELLS,
        help=f"refuse grids of more site x time cells (default {DEFAULT_MAX_CELLS:,})",
    )


def _add_fit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from kronecker_gp.cli._run import run_fit  # noqa: PLC0415

    fit = sub.add_parser(
        "fit",
        help="fit a long CSV (one row per site and time) and write predictions",
        description="Fit a KroneckerGP to a long CSV (plain or gzip) and write "
        "the posterior of every site x time cell with 95 % intervals.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("data", help="input CSV with a header row (.csv or .csv.gz)")
    fit.add_argument(
        "--site-cols",
        type=_column_list,
        required=True,
        help="comma-separated numeric columns giving a site's coordinates "
        "(lat/lon columns are checked to be degrees)",
    )
    fit.add_argument(
        "--time-col", required=True, help="numeric or date column (dates -> days)"
    )
    fit.add_argument("--value-col", required=True, help="numeric column to model")
    for axis in ("space", "time"):
        fit.add_argument(
            f"--{axis}-kernel",
            choices=KERNEL_NAMES,
            default="matern32",
            help=f"kernel over {axis} (default matern32)",
        )
    fit.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default="none",
        help="model log(y) or sqrt(y) instead of y; predictions and intervals "
        "are transformed back (auto: log or sqrt for a positive, right-skewed "
        "variable, else none; default none)",
    )
    fit.add_argument("--out", required=True, help="output CSV of predictions")
    fit.add_argument(
        "--plot", help="also save the posterior surface (.png, .pdf, .svg)"
    )
    fit.add_argument("--units", default="", help="units of the value, for labels")
    fit.add_argument(
        "--site-label",
        help="column naming each site in plots (default: the first per-site "
        "column that is not a coordinate)",
    )
    _add_reading_options(fit)
    fit.add_argument("-q", "--quiet", action="store_true", help="print only warnings")
    fit.set_defaults(func=run_fit)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``kronecker-gp`` command."""
    from kronecker_gp import __version__  # noqa: PLC0415
    from kronecker_gp.cli._demo import add_demo_parser  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog=PROG, description="Exact GP regression on site x time grids."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kronecker-gp`` command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on bad input, 130 on Ctrl-C or SIGTERM (each after
        printing one line on stderr).

    Examples
    --------
    >>> from kronecker_gp.cli import main
    >>> main(["fit", "no-such-file.csv", "--site-cols", "x", "--time-col", "t",
    ...       "--value-col", "y", "--out", "out.csv"])
    2
    """
    from kronecker_gp.cli._output import sigterm_as_interrupt  # noqa: PLC0415

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with sigterm_as_interrupt():
            return int(args.func(args))
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; unfinished output files were removed",
            file=sys.stderr,
        )
        return 130
