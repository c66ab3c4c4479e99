"""The ``kronecker-gp`` command: fit a CSV of station data, or run the demo.

``kronecker-gp fit DATA.csv --site-cols lon,lat --time-col date --value-col y
--out predictions.csv`` reads a long table (one row per site and time), builds
the site x time grid, fits a :class:`~kronecker_gp.KroneckerGP` by maximising
the exact log marginal likelihood and writes the posterior mean and sd of
every grid cell. ``kronecker-gp demo`` fits a real data set end to end and
compares it with two baselines (see :mod:`kronecker_gp.cli._demo`).

Bad input stops with one line ``kronecker-gp: error: ...`` on stderr and exit
status 2, and leaves no output file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp.cli._csv import MIN_CELLS, CLIError, GridData, read_grid_csv
from kronecker_gp._typing import FloatArray

__all__ = ["MIN_CELLS", "CLIError", "GridData", "main", "read_grid_csv"]

PROG = "kronecker-gp"
#: Kernel names accepted by ``--space-kernel`` and ``--time-kernel``.
KERNEL_NAMES = ("rbf", "matern12", "matern32", "matern52")


def make_kernel(name: str, length_scale: float, *, amplitude: bool = False) -> Any:
    """Return the scikit-learn kernel called ``name`` (see ``KERNEL_NAMES``).

    Parameters
    ----------
    name : {"rbf", "matern12", "matern32", "matern52"}
        Kernel family.
    length_scale : float
        Initial length scale.
    amplitude : bool, default=False
        Multiply by a ``ConstantKernel`` (give one factor the signal variance).

    Returns
    -------
    sklearn Kernel
        The kernel.

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    """
    from sklearn.gaussian_process.kernels import (  # noqa: PLC0415
        RBF,
        ConstantKernel,
        Matern,
    )

    nus = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}
    if name == "rbf":
        kernel = RBF(length_scale)
    elif name in nus:
        kernel = Matern(length_scale, nu=nus[name])
    else:
        raise ValueError(f"unknown kernel {name!r}; choose one of {KERNEL_NAMES}.")
    return ConstantKernel(1.0) * kernel if amplitude else kernel


def initial_length_scales(sites: FloatArray, times: FloatArray) -> tuple[float, float]:
    """Return data-driven starting length scales for space and time.

    Space starts at half the median distance between sites, time at five
    median time steps: short enough to find local structure, long enough
    to start from a smooth fit.
    """
    diff = sites[:, None, :] - sites[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))[np.triu_indices(sites.shape[0], 1)]
    positive = dist[dist > 0]
    space = 0.5 * float(np.median(positive)) if positive.size else 1.0
    steps = np.diff(times)
    return space, 5.0 * float(np.median(steps)) if steps.size else 1.0


def lbfgs_with_progress(
    report: Callable[[int, float], None], maxiter: int = 200
) -> Callable[..., tuple[FloatArray, float]]:
    """Return a ``KroneckerGP`` optimizer that reports each L-BFGS-B iteration.

    Parameters
    ----------
    report : callable
        Called as ``report(iteration, lml)`` after each iteration.
    maxiter : int, default=200
        Iteration cap.

    Returns
    -------
    callable
        ``optimizer(obj_func, initial_theta, bounds) -> (theta, func_min)``.
    """
    import scipy.optimize  # noqa: PLC0415

    def optimizer(
        obj_func: Callable[..., Any], initial_theta: FloatArray, bounds: FloatArray
    ) -> tuple[FloatArray, float]:
        state = {"n": 0, "fun": float("nan")}

        def objective(theta: FloatArray) -> Any:
            value, grad = obj_func(theta)
            state["fun"] = float(value)
            return value, grad

        def callback(xk: FloatArray) -> None:
            # L-BFGS-B calls back after an accepted step; the last evaluation
            # was at that point, so its value is the current LML.
            state["n"] += 1
            report(int(state["n"]), -state["fun"])

        res = scipy.optimize.minimize(
            objective,
            initial_theta,
            method="L-BFGS-B",
            jac=True,
            bounds=bounds,
            callback=callback,
            options={"maxiter": maxiter},
        )
        return np.asarray(res.x, dtype=np.float64), float(res.fun)

    return optimizer


def progress_printer(stream: Any = None) -> Callable[[int, float], None]:
    """Return a reporter printing ``iteration N  LML = ...`` lines to ``stream``."""

    def report(iteration: int, lml: float) -> None:
        out = sys.stdout if stream is None else stream
        print(
            f"  iteration {iteration:3d}  log marginal likelihood {lml:12.3f}", file=out
        )
        out.flush()

    return report


@contextlib.contextmanager
def atomic_outputs(*paths: Path | None) -> Iterator[list[Path | None]]:
    """Yield temporary paths that replace ``paths`` only if the block succeeds.

    Each temporary file lives next to its target (same file system, so the
    final ``os.replace`` is atomic). On any exception all of them are removed
    and no target is touched.
    """
    temps: list[Path | None] = []
    try:
        for path in paths:
            if path is None:
                temps.append(None)
                continue
            if not path.parent.is_dir():
                raise CLIError(f"output folder {str(path.parent)!r} does not exist")
            fd, name = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent
            )
            os.close(fd)
            temps.append(Path(name))
        yield temps
        for temp, path in zip(temps, paths):
            if temp is not None and path is not None:
                os.replace(temp, path)
    finally:
        for temp in temps:
            if temp is not None and temp.exists():
                temp.unlink()


#: Above this many missing cells the final model keeps the CG path.
EXACT_REFIT_MAX_MISSING = 3000


def fit_grid_model(
    kernels: list[Any],
    coords: list[FloatArray],
    values: FloatArray,
    report: Callable[[int, float], None],
    *,
    search_solver: str = "auto",
) -> Any:
    """Fit a KroneckerGP with a fast hyperparameter search, then refit exactly.

    Parameters
    ----------
    kernels : list of sklearn Kernel
        Space and time kernels (initial hyperparameters).
    coords : list of ndarray
        ``[sites, times]``.
    values : ndarray of shape (n_sites, n_times)
        Observations, NaN for missing cells.
    report : callable
        Progress reporter ``report(iteration, lml)``.
    search_solver : {"auto", "exact", "cg"}, default="auto"
        Missing-cell solver during the search.

    Returns
    -------
    KroneckerGP
        The fitted model.

    Notes
    -----
    With missing cells and the ``"auto"`` solver, each likelihood step either
    factors the Schur complement exactly (when cheap) or runs CG; the search
    uses CG to ``1e-6`` with 8 stochastic-Lanczos probes, which is accurate
    enough to locate the optimum at a fraction of the default cost. The model
    is then refitted once at the optimum on the exact path (while the number
    of missing cells is at most ``EXACT_REFIT_MAX_MISSING``), which gives the
    exact likelihood and much faster predictive variances.
    """
    from kronecker_gp import KroneckerGP  # noqa: PLC0415

    search = KroneckerGP(
        kernels,
        noise=0.1,
        normalize_y=True,
        optimizer=lbfgs_with_progress(report),
        solver=search_solver,
        cg_tol=1e-6,
        n_probes=8,
        random_state=0,
    ).fit_grid(coords, values)
    info = search.solver_info_
    if info.path != "schur-cg" or info.n_missing > EXACT_REFIT_MAX_MISSING:
        return search
    return KroneckerGP(
        search.kernels_,
        noise=search.noise_,
        normalize_y=True,
        optimizer=None,
        solver="exact",
    ).fit_grid(coords, values)


def _fit_model(data: GridData, args: argparse.Namespace) -> Any:
    space_ls, time_ls = initial_length_scales(data.sites, data.times)
    report = progress_printer() if not args.quiet else (lambda i, lml: None)
    kernels = [
        make_kernel(args.space_kernel, space_ls, amplitude=True),
        make_kernel(args.time_kernel, time_ls),
    ]
    try:
        return fit_grid_model(kernels, [data.sites, data.times], data.values, report)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise CLIError(f"fitting failed: {' '.join(str(exc).split())}") from None


def _write_predictions(
    path: Path, data: GridData, args: argparse.Namespace, mean: Any, std: Any
) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*args.site_cols, args.time_col, args.value_col, "mean", "sd"])
        for i, site in enumerate(data.site_text):
            for j, when in enumerate(data.time_text):
                obs = data.values[i, j]
                writer.writerow(
                    [
                        *site,
                        when,
                        "" if np.isnan(obs) else repr(float(obs)),
                        f"{mean[i, j]:.10g}",
                        f"{std[i, j]:.10g}",
                    ]
                )


def _save_surface(
    path: Path, data: GridData, moments: tuple[Any, Any], args: argparse.Namespace
) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    from kronecker_gp.plotting import plot_posterior_surface  # noqa: PLC0415

    fig = Figure(figsize=(11, 4.5), constrained_layout=True)
    axes = fig.subplots(1, 2)
    coords = [data.sites, data.times]
    for ax, values, kind in zip(axes, moments, ("mean", "std")):
        plot_posterior_surface(values, coords, kind=kind, ax=ax, dates=data.dates)
        ax.set_xlabel(args.time_col)
        ax.set_ylabel(f"site (sorted by {', '.join(args.site_cols)})")
    axes[0].set_title(f"posterior mean of {args.value_col}")
    axes[1].set_title("posterior sd")
    fig.savefig(path, dpi=100, format="png")


def run_fit(args: argparse.Namespace) -> int:
    """Run ``kronecker-gp fit`` (see :func:`main`)."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    data = read_grid_csv(Path(args.data), args.site_cols, args.time_col, args.value_col)
    n_sites, n_times = data.values.shape
    n_obs = int(np.isfinite(data.values).sum())
    out, plot = Path(args.out), None if args.plot is None else Path(args.plot)
    with atomic_outputs(out, plot) as (tmp_out, tmp_plot):
        if not args.quiet:
            print(
                f"grid: {n_sites} sites x {n_times} times = {data.values.size} cells, "
                f"{n_obs} observed; optimising hyperparameters"
            )
        # small factor matrices: one BLAS thread is as fast and safe on busy hosts
        with threadpool_limits(limits=1, user_api="blas"):
            gp = _fit_model(data, args)
            mean, std = gp.predict_grid([data.sites, data.times], return_std=True)
        assert tmp_out is not None
        _write_predictions(tmp_out, data, args, mean, std)
        if tmp_plot is not None:
            _save_surface(tmp_plot, data, (mean, std), args)
    if not args.quiet:
        print(f"kernels: {gp.kernels_}")
        print(f"noise variance (normalised units): {gp.noise_:.4g}")
        print(f"log marginal likelihood: {gp.log_marginal_likelihood_value_:.3f}")
        print(f"wrote {out}" + ("" if plot is None else f" and {plot}"))
    return 0


def _column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names, got {text!r}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``kronecker-gp`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Exact GP regression on site x time grids."
    )
    from kronecker_gp import __version__  # noqa: PLC0415

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fit = sub.add_parser(
        "fit",
        help="fit a long CSV (one row per site and time) and write predictions",
        description="Fit a KroneckerGP to a long CSV and write the posterior mean "
        "and sd of every site x time cell.",
    )
    fit.add_argument("data", help="input CSV with a header row")
    fit.add_argument(
        "--site-cols",
        type=_column_list,
        required=True,
        help="comma-separated numeric columns giving a site's coordinates",
    )
    fit.add_argument("--time-col", required=True, help="numeric or ISO-date column")
    fit.add_argument("--value-col", required=True, help="numeric column to model")
    for axis, default in (("space", "matern32"), ("time", "matern32")):
        fit.add_argument(
            f"--{axis}-kernel",
            choices=KERNEL_NAMES,
            default=default,
            help=f"kernel over {axis} (default {default})",
        )
    fit.add_argument("--out", required=True, help="output CSV of predictions")
    fit.add_argument("--plot", help="also save a PNG of the posterior surface")
    fit.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    fit.set_defaults(func=run_fit)

    from kronecker_gp.cli._demo import add_demo_parser  # noqa: PLC0415

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
        0 on success, 2 on bad input (after printing one error line).

    Examples
    --------
    >>> from kronecker_gp.cli import main
    >>> main(["fit", "no-such-file.csv", "--site-cols", "x", "--time-col", "t",
    ...       "--value-col", "y", "--out", "out.csv"])
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
