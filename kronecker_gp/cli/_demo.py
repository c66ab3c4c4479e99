"""``kronecker-gp demo``: fit a real data set end to end and score held-out cells.

The demo loads a space x time data set, hides 10 % of the observed cells at
random plus one whole station, fits a :class:`~kronecker_gp.KroneckerGP` on
the rest (missing cells stay NaN; the held-out station's row is dropped from
the grid), and scores the held-out values against two baselines: each
station's training mean, and scikit-learn's ``GaussianProcessRegressor`` with
the same kernel on the largest random subsample it fits within a time budget.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kronecker_gp._typing import BoolArray, FloatArray
from kronecker_gp.cli._baselines import sklearn_baseline, station_mean_baseline
from kronecker_gp.cli._fit import default_kernels, fit_with_warnings, progress_printer
from kronecker_gp.cli._transform import (
    Z95,
    DataUnitsModel,
    choose_auto,
    forward,
    noise_text,
    noise_variance,
)

#: Share of observed cells held out at random.
CELL_FRACTION = 0.1


@dataclass(frozen=True)
class DemoSpec:
    """How the demo models one data set (chosen by LML on training data)."""

    space_kernel: str
    time_kernel: str
    space_length: float
    time_length: float
    n_days: int | None
    zeros_missing: bool = False
    #: ``--transform`` of the fit command: "auto" picks none for ozone2
    #: (skewness 0.3) and sqrt for wind (skewness 0.8, zeros), which brings the
    #: held-out station's 95 % coverage from 84 % to 93 % (seed 0).
    transform: str = "auto"


DEMOS = {
    # Matern-1/2 in both axes had the best training LML of the 16 rbf/matern
    # pairs tried on ozone2 (rough daily weather, patchy station levels).
    # Its 74 exact zeros (62 at two Des Moines stations) are recording
    # artefacts per the data README, so they are treated as missing.
    "ozone2": DemoSpec("matern12", "matern12", 2.0, 3.0, None, zeros_missing=True),
    # The full 6,574-day axis is slow on the eigen route; one year suffices.
    "wind": DemoSpec("matern12", "matern12", 1.0, 3.0, 365),
}


@dataclass
class Split:
    """Training grid and the two held-out sets of a demo run."""

    data: FloatArray  # (n_sites, n_times) all observations, NaN = missing
    train: FloatArray  # same shape, NaN at missing and held-out cells
    station: int  # row of the held-out station
    cells: BoolArray  # (n_sites, n_times) randomly held-out cells

    @property
    def train_rows(self) -> FloatArray:
        """Training grid without the held-out station's row."""
        return np.delete(self.train, self.station, axis=0)


def split_cells(data: FloatArray, rng: np.random.Generator) -> Split:
    """Hold out one well-observed station and 10 % of the other observed cells."""
    observed = np.isfinite(data)
    candidates = np.flatnonzero(observed.mean(axis=1) >= 0.9)
    station = int(rng.choice(candidates))
    pool = np.flatnonzero(observed.reshape(-1))
    pool = pool[pool // data.shape[1] != station]
    picked = rng.choice(pool, size=round(CELL_FRACTION * pool.size), replace=False)
    flat = np.zeros(data.size, dtype=bool)
    flat[picked] = True
    cells = flat.reshape(data.shape)
    train = np.where(cells, np.nan, data)
    train[station] = np.nan
    return Split(data=data, train=train, station=station, cells=cells)


def score(
    truth: FloatArray, mean: FloatArray, lower: FloatArray, upper: FloatArray
) -> tuple[float, float, int]:
    """Return RMSE, the share inside [lower, upper] and the count of finite truth."""
    ok = np.isfinite(truth)
    err = mean[ok] - truth[ok]
    rmse = float(np.sqrt(np.mean(err**2)))
    coverage = float(np.mean((lower[ok] <= truth[ok]) & (truth[ok] <= upper[ok])))
    return rmse, coverage, int(ok.sum())


def normal_interval(mean: FloatArray, sd: FloatArray) -> tuple[Any, Any, Any]:
    """Return ``(mean, mean - 1.96 sd, mean + 1.96 sd)`` (a baseline's interval)."""
    return mean, mean - Z95 * sd, mean + Z95 * sd


@dataclass
class Loaded:
    """The data set as the demo uses it."""

    name: str
    data: FloatArray
    sites: FloatArray
    times: FloatArray
    dates: Any
    site_ids: Any
    units: str
    target: str


def load(name: str, n_days: int | None) -> Loaded:
    """Load ``name`` and keep its first ``n_days`` days (None: the spec's)."""
    from kronecker_gp import datasets  # noqa: PLC0415

    bunch = {"ozone2": datasets.load_ozone2, "wind": datasets.load_wind}[name]()
    spec = DEMOS[name]
    keep = spec.n_days if n_days is None else n_days
    cols = slice(None) if keep is None else slice(0, keep)
    data = np.array(bunch.data[:, cols], dtype=np.float64)
    if spec.zeros_missing:
        data[data == 0] = np.nan
    return Loaded(
        name=name,
        data=data,
        sites=np.asarray(bunch.sites, dtype=np.float64),
        times=np.asarray(bunch.times[cols], dtype=np.float64),
        dates=bunch.dates[cols],
        site_ids=bunch.site_ids,
        units=bunch.units,
        target=bunch.target_name,
    )


def fit_kronecker(
    spec: DemoSpec, sites: FloatArray, times: FloatArray, train: FloatArray, quiet: bool
) -> tuple[DataUnitsModel, float]:
    """Fit the KroneckerGP on the training grid; return it and the wall time.

    The same model as ``kronecker-gp fit --transform`` ``spec.transform``
    (:func:`~kronecker_gp.cli._fit.default_kernels` and
    :func:`~kronecker_gp.cli._fit.fit_with_warnings`): bounds and starts
    from the axes, a CG-based search, one exact refit. Warnings of the fit
    are printed on stderr. The model is returned in data units.
    """
    from kronecker_gp.cli._run import warn  # noqa: PLC0415

    name = spec.transform
    if name == "auto":
        name = choose_auto(train[np.isfinite(train)])[0]
    report = (lambda i, lml: None) if quiet else progress_printer()
    kernels = default_kernels(spec.space_kernel, spec.time_kernel, sites, times)
    t0 = time.perf_counter()
    values = forward(train, name, "training data")
    gp, lines = fit_with_warnings(kernels, [sites, times], values, report)
    for line in lines:
        warn(line)
    return DataUnitsModel(gp, name), time.perf_counter() - t0


def held_out_moments(
    model: DataUnitsModel, loaded: Loaded, split: Split
) -> tuple[Any, Any, Any]:
    """Return the mean, lower95 and upper95 of ``kronecker-gp fit`` at held-out cells.

    The same output columns as the command, in data units, so the demo's
    coverage is that of the command's interval. They are only computed where
    they are scored (NaN elsewhere): variances cost far more than means when
    cells are missing.
    """
    held = split.cells.copy()
    held[split.station] = True
    s, t = np.nonzero(held)
    out = model.predictive_points(np.column_stack([loaded.sites[s], loaded.times[t]]))
    cols = []
    for key in ("mean", "lower95", "upper95"):
        grid = np.full(loaded.data.shape, np.nan)
        grid[s, t] = out[key]
        cols.append(grid)
    return cols[0], cols[1], cols[2]


def _row(name: str, truth: FloatArray, split: Split, moments: tuple[Any, ...]) -> str:
    """Format RMSE and coverage of ``moments = (mean, lower, upper)``."""
    station = np.zeros(truth.shape, dtype=bool)
    station[split.station] = True
    cols = []
    for mask in (split.cells, station):
        rmse, cov, _ = score(np.where(mask, truth, np.nan), *moments)
        cols.append(f"{rmse:8.2f} {100 * cov:7.1f}%")
    return f"  {name:<34}" + "   ".join(cols)


def summary(
    loaded: Loaded,
    split: Split,
    model: DataUnitsModel,
    fit_seconds: float,
    rows: list[str],
) -> str:
    """Return the printed summary of a demo run."""
    n_s, n_t = loaded.data.shape
    gp = model.gp
    scale = (
        "" if model.transform == "none" else f" of {model.transform}({loaded.target})"
    )
    lines = [
        f"data: {loaded.name}, {n_s} stations x {n_t} days = {loaded.data.size} "
        f"cells, {int(np.isfinite(loaded.data).sum())} observed ({loaded.units})"
        + (
            " (exact zeros treated as missing)"
            if DEMOS[loaded.name].zeros_missing
            else ""
        ),
        f"held out: {int(split.cells.sum())} random cells (10 %) and station "
        f"{loaded.site_ids[split.station]} "
        f"({int(np.isfinite(loaded.data[split.station]).sum())} cells)",
        f"fitted kernels: space {gp.kernel_.kernels[0]}, time {gp.kernel_.kernels[1]}",
        f"  (length scales: space in degrees lon/lat, time in days; the signal "
        f"variance is that of the standardised values{scale})",
        f"transform: {model.transform}; "
        + noise_text(noise_variance(gp), model.transform, loaded.units),
        f"log marginal likelihood: {gp.log_marginal_likelihood_value_:.2f}",
        f"KroneckerGP fit time: {fit_seconds:.2f} s",
        "",
        f"  {'held-out RMSE / 95% coverage':<34}{'random cells':>17}   "
        f"{'held-out station':>17}",
        *rows,
    ]
    return "\n".join(lines)


def _score_rows(
    loaded: Loaded, split: Split, kron: tuple[Any, Any, Any], args: argparse.Namespace
) -> tuple[list[str], dict[str, Any]]:
    """Score the KroneckerGP's held-out moments ``kron`` and both baselines."""
    spec, truth = DEMOS[loaded.name], split.data
    rows = [_row("KroneckerGP (all training cells)", truth, split, kron)]
    station = normal_interval(*station_mean_baseline(split))
    rows.append(_row("per-station mean", truth, split, station))
    print(
        f"fitting GaussianProcessRegressor baseline (budget {args.sklearn_budget:g} s)"
    )
    rng = np.random.default_rng(args.seed + 1)
    coords = [loaded.sites, loaded.times]
    sk_mean, sk_sd, info = sklearn_baseline(
        spec, coords, split, args.sklearn_budget, rng
    )
    sk = normal_interval(sk_mean, sk_sd)
    rows.append(_row(f"sklearn GPR ({info['n']} cells)", truth, split, sk))
    return rows, info


def run_demo(args: argparse.Namespace) -> int:
    """Run ``kronecker-gp demo``: fit, score against baselines, save the plots."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from kronecker_gp.cli._demo_plots import save_figures  # noqa: PLC0415

    t_start = time.perf_counter()
    spec = DEMOS[args.dataset]
    loaded = load(args.dataset, args.days)
    split = split_cells(loaded.data, np.random.default_rng(args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_sites = np.delete(loaded.sites, split.station, axis=0)
    print(
        f"fitting KroneckerGP ({spec.space_kernel} over space x {spec.time_kernel} "
        f"over days) on {train_sites.shape[0]} x {loaded.times.size} cells"
    )
    # The factor matrices are small (n < 400): one BLAS thread is as fast and
    # immune to oversubscription on a busy machine. The baseline gets them all.
    with threadpool_limits(limits=1, user_api="blas"):
        model, fit_seconds = fit_kronecker(
            spec, train_sites, loaded.times, split.train_rows, args.quiet
        )
        kron = held_out_moments(model, loaded, split)
    rows, info = _score_rows(loaded, split, kron, args)
    with threadpool_limits(limits=1, user_api="blas"):
        names = save_figures(out, loaded, split, model)
    n_train = int(np.isfinite(split.train).sum())
    print()
    print(summary(loaded, split, model, fit_seconds, rows))
    print(
        f"sklearn GPR: random {info['n']} of {n_train} training cells (sized for "
        f"{args.sklearn_budget:g} s), {info['evaluations']} LML evaluations, "
        f"{'stopped at the budget' if info['stopped'] else 'converged'}, "
        f"{info['seconds']:.1f} s"
    )
    print(
        "coverage: share of held-out values inside the 95 % interval for a new "
        "observation (for KroneckerGP: lower95..upper95 of `kronecker-gp fit`, "
        "posterior variance plus noise variance)"
    )
    print(f"wrote {', '.join(names)} to {out}")
    print(f"total wall time: {time.perf_counter() - t_start:.1f} s")
    return 0


def add_demo_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand on an argparse subparsers object."""
    demo = sub.add_parser(
        "demo",
        help="fit a real data set and compare held-out errors with two baselines",
        description="Fit a real data set end to end with hyperparameter "
        "optimisation, holding out 10 % of the observed cells at random and one "
        "whole station, and compare held-out RMSE and 95 % coverage with a "
        "per-station mean and scikit-learn's GaussianProcessRegressor.",
    )
    demo.add_argument(
        "--dataset",
        choices=sorted(DEMOS),
        default="ozone2",
        help="data set (default ozone2)",
    )
    demo.add_argument(
        "--out",
        default="kronecker_gp_demo",
        help="folder for the PNGs (default kronecker_gp_demo)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the hold-out split")
    demo.add_argument(
        "--days",
        type=int,
        default=None,
        help="keep only the first DAYS days (default: ozone2 all, wind 365)",
    )
    demo.add_argument(
        "--sklearn-budget",
        type=float,
        default=25.0,
        help="seconds for the GaussianProcessRegressor baseline (default 25)",
    )
    demo.add_argument(
        "-q", "--quiet", action="store_true", help="do not print optimiser progress"
    )
    demo.set_defaults(func=run_demo)
