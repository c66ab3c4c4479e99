"""``kronecker-gp fit``: read, check sizes, fit, write predictions and the plot."""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.cli._csv import GridData, ReadOptions, read_grid_csv
from kronecker_gp.cli._fit import default_kernels, fit_with_warnings, progress_printer
from kronecker_gp.cli._output import atomic_write, check_outputs
from kronecker_gp.cli._size import check_memory, human_bytes, human_seconds
from kronecker_gp.cli._source import CLIError
from kronecker_gp.cli._transform import (
    OUTPUT_COLUMNS,
    choose_auto,
    forward,
    noise_text,
    noise_variance,
    predictive,
)

PROG = "kronecker-gp"


def warn(text: str) -> None:
    """Print one warning line on stderr."""
    print(f"{PROG}: warning: {' '.join(text.split())}", file=sys.stderr)


def _read_progress(rows: int, estimate: int) -> None:
    share = f" of about {estimate:,}" if estimate > rows else ""
    print(f"  read {rows:,} rows{share}", flush=True)


def _read(args: argparse.Namespace) -> GridData:
    options = ReadOptions(
        delimiter=args.delimiter,
        decimal=args.decimal,
        encoding=args.encoding,
        missing_values=args.missing_values,
        time_format=args.time_format,
        max_cells=args.max_cells,
    )
    progress = None if args.quiet else _read_progress
    return read_grid_csv(
        Path(args.data), args.site_cols, args.time_col, args.value_col,
        options=options, progress=progress,
    )  # fmt: skip


def _transform(data: GridData, args: argparse.Namespace) -> tuple[str, str]:
    finite = data.values[np.isfinite(data.values)]
    if args.transform == "auto":
        return choose_auto(finite)
    if args.transform == "none" and finite.min() > 0:
        name, why = choose_auto(finite)
        if name != "none":
            return "none", f"as asked; --transform auto would use {name} ({why})"
    return args.transform, "as asked"


def _format(value: float, decimal: str) -> str:
    text = f"{value:.8g}"
    return text.replace(".", ",") if decimal == "," else text


def write_predictions(
    path: Path, data: GridData, args: argparse.Namespace, table: dict[str, Any]
) -> None:
    """Write one row per grid cell: the carried input columns, then predictions."""
    names = list(OUTPUT_COLUMNS)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=data.delimiter)
        writer.writerow([*data.columns, *names])
        for i, fields in enumerate(data.site_fields):
            for j, stamp in enumerate(data.time_text):
                obs = data.values[i, j]
                row = []
                for col in data.columns:
                    if col == args.time_col:
                        row.append(stamp)
                    elif col == args.value_col:
                        row.append("" if np.isnan(obs) else _format(obs, args.decimal))
                    else:
                        row.append(fields[col])
                row += [_format(table[k][i, j], args.decimal) for k in names]
                writer.writerow(row)


def _fit(data: GridData, args: argparse.Namespace, values: FloatArray) -> Any:
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    report = (lambda i, lml: None) if args.quiet else progress_printer()
    kernels = default_kernels(
        args.space_kernel, args.time_kernel, data.sites, data.times
    )
    coords = [data.sites, data.times]
    # small factor matrices: one BLAS thread is as fast and safe on busy hosts
    with threadpool_limits(limits=1, user_api="blas"):
        try:
            gp, lines = fit_with_warnings(kernels, coords, values, report)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise CLIError(f"fitting failed: {' '.join(str(exc).split())}") from None
        for line in lines:
            warn(line)
        if not args.quiet:
            print(f"predicting mean and sd of {data.values.size} cells", flush=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mean, sd = gp.predict_grid(coords, return_std=True)
        for line in dict.fromkeys(
            f"{w.category.__name__}: {w.message}" for w in caught
        ):
            warn(line)
        if not args.quiet:
            print(f"  done in {time.perf_counter() - t0:.1f} s")
    return gp, np.asarray(mean), np.asarray(sd)


def _announce(
    data: GridData, transform: tuple[str, str], args: argparse.Namespace
) -> None:
    n_s, n_t = data.values.shape
    n_obs = int(np.isfinite(data.values).sum())
    memory, seconds = check_memory(
        n_s, n_t, data.values.size - n_obs, markov_time=args.time_kernel != "rbf"
    )
    if args.quiet:
        return
    if data.dropped:
        print(f"not carried to the output (they change within a site): "
              f"{', '.join(data.dropped)}")  # fmt: skip
    print(
        f"grid: {n_s} sites x {n_t} times = {data.values.size} cells, {n_obs} "
        f"observed ({100 * n_obs / data.values.size:.1f} %); needs about "
        f"{human_bytes(memory)}, roughly {human_seconds(seconds)}"
    )
    print(f"transform: {transform[0]} ({transform[1]})")
    print("optimising hyperparameters")


def _summary(gp: Any, data: GridData, args: argparse.Namespace, name: str) -> None:
    time_unit = "days" if data.origin is not None else f"units of {args.time_col}"
    print(f"space kernel: {gp.kernel_.kernels[0]} (length in units of "
          f"{', '.join(args.site_cols)}; variance of standardised values)")  # fmt: skip
    print(f"time kernel: {gp.kernel_.kernels[1]} (length in {time_unit})")
    print(f"{noise_text(noise_variance(gp), name, args.units)}")
    print(f"log marginal likelihood: {gp.log_marginal_likelihood_value_:.3f}")


def run_fit(args: argparse.Namespace) -> int:
    """Run ``kronecker-gp fit`` (see :func:`kronecker_gp.cli.main`)."""
    out = Path(args.out)
    plot = None if args.plot is None else Path(args.plot)
    fmt = check_outputs(Path(args.data), out, plot)
    data = _read(args)
    for note in data.notes:
        warn(note)
    transform = _transform(data, args)
    values = forward(data.values, transform[0], args.value_col)
    _announce(data, transform, args)
    gp, m, s = _fit(data, args, values)
    table = predictive(m, s, noise_variance(gp), transform[0])
    finite = data.values[np.isfinite(data.values)]
    if transform[0] == "none" and finite.min() >= 0 and (table["mean"] < 0).any():
        warn(
            f"{int((table['mean'] < 0).sum())} cells have a negative mean though "
            "every observed value is >= 0; --transform sqrt or log keeps "
            "predictions non-negative"
        )
    with contextlib.ExitStack() as stack:
        tmp_out = stack.enter_context(atomic_write(out))
        tmp_plot = None if plot is None else stack.enter_context(atomic_write(plot))
        write_predictions(tmp_out, data, args, table)
        if tmp_plot is not None:
            from kronecker_gp.cli._plots import save_fit_plot  # noqa: PLC0415

            save_fit_plot(tmp_plot, fmt, data, table, args)
    if not args.quiet:
        _summary(gp, data, args, transform[0])
        print(f"wrote {out}" + ("" if plot is None else f" and {plot}"))
    return 0
