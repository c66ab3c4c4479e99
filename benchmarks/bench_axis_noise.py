"""Benchmark per-site noise (``noise_axes=[0]``) against iid noise on a complete grid.

The problem of ``_common.make_problem`` (``n_sites x n_times``, noise 0.1)
gets two kinds of site: extra noise of standard deviation 0.1 on the first
half (site variance 0.11), 0.5 on the second (0.35). For each size it times,
in one process, with the hyperparameters fixed at ``THETA_TRUE``:

* one log marginal likelihood + gradient on the iid complete-grid route
  (``solver_info_.path == "complete"``) and on the axis-noise route
  (``"axis-noise"``, ``n_sites`` more gradient entries),
* ``fit_grid`` with the optimisation from ``THETA_START`` on both (up to
  ``--fit-max`` sites x times; the per-site fit has ``n_sites`` more
  parameters, so L-BFGS-B may take more evaluations: they are reported), with
  the fitted LML of each model and the median absolute log-error of the
  learned site variances (iid: its one variance against every site's).

It prints a markdown table with the ratios and the load average.

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_axis_noise.py --help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - the helper module sits next to this script
    THETA_START,
    THETA_TRUE,
    factor_kernels,
    load_average,
    make_problem,
    parse_size,
)

from kronecker_gp import KroneckerGP  # noqa: E402

NOISE = float(np.exp(THETA_TRUE[3]))


def site_variances(n_sites: int) -> np.ndarray:
    """True per-site noise variances: 0.1 + 0.1^2, then 0.1 + 0.5^2."""
    return NOISE + np.where(np.arange(n_sites) < n_sites // 2, 0.1, 0.5) ** 2


def make_case(size: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Return coordinates and targets with two site noise levels."""
    sites, times, Y = make_problem(*size)
    rng = np.random.default_rng(7)
    extra = np.sqrt(site_variances(size[0]) - NOISE)
    Y = Y + extra[:, None] * rng.standard_normal(Y.shape)
    return [sites, times], Y


def _estimator(per_site: bool, theta: np.ndarray, optimise: bool) -> KroneckerGP:
    return KroneckerGP(
        factor_kernels(theta),
        noise=float(np.exp(theta[3])),
        noise_axes=[0] if per_site else None,
        optimizer="fmin_l_bfgs_b" if optimise else None,
        state_space=None,
    )


def lml_grad_times(
    coords: list[np.ndarray], Y: np.ndarray, repeat: int
) -> list[list[float]]:
    """Seconds of one LML + gradient at THETA_TRUE: iid samples, per-site samples.

    The two routes are timed alternately (after one warm-up call each), so a
    change of the machine's load hits both alike.
    """
    gps = []
    for per_site, path in ((False, "complete"), (True, "axis-noise")):
        gp = _estimator(per_site, THETA_TRUE, False).fit_grid(coords, Y)
        assert gp.solver_info_.path == path, gp.solver_info_.path
        gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
        gps.append(gp)
    samples: list[list[float]] = [[], []]
    for _ in range(repeat):
        for k, gp in enumerate(gps):
            t0 = time.perf_counter()
            gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
            samples[k].append(time.perf_counter() - t0)
    return samples


def fit_time(coords: list[np.ndarray], Y: np.ndarray, per_site: bool) -> dict[str, Any]:
    """Seconds, evaluations and fitted LML of fit_grid from THETA_START."""
    gp = _estimator(per_site, THETA_START, True)
    calls = {"n": 0}
    inner = gp._lml_at

    def counted(theta: np.ndarray, eval_gradient: bool) -> Any:
        calls["n"] += 1
        return inner(theta, eval_gradient)

    gp._lml_at = counted  # type: ignore[method-assign]
    t0 = time.perf_counter()
    gp.fit_grid(coords, Y)
    seconds = time.perf_counter() - t0
    truth = site_variances(Y.shape[0])
    learned = gp.noise_per_axis_[0] if per_site else np.full(truth.size, gp.noise_)
    return {
        "seconds": seconds,
        "evaluations": calls["n"],
        "lml": gp.log_marginal_likelihood_value_,
        "log_error": float(np.median(np.abs(np.log(learned / truth)))),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["300x300", "1000x1000"])
    parser.add_argument(
        "--fit-max", type=int, default=300 * 300, help="largest grid to fit"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds")
    args = parser.parse_args(argv)
    rows = []
    for text in args.sizes:
        size = parse_size(text)
        coords, Y = make_case(size)
        load = load_average()[0]
        samples = lml_grad_times(coords, Y, args.repeat)
        iid, site = (float(np.median(x)) for x in samples)
        best = min(samples[1]) / min(samples[0])
        row = [text, f"{iid:.3f}", f"{site:.3f}", f"{site / iid:.2f} ({best:.2f})"]
        if size[0] * size[1] <= args.fit_max:
            f_iid, f_site = (fit_time(coords, Y, p) for p in (False, True))
            per_eval = (f_site["seconds"] / f_site["evaluations"]) / (
                f_iid["seconds"] / f_iid["evaluations"]
            )
            row += [
                f"{f_iid['seconds']:.2f} ({f_iid['evaluations']})",
                f"{f_site['seconds']:.2f} ({f_site['evaluations']})",
                f"{per_eval:.2f}",
                f"{f_site['lml'] - f_iid['lml']:.1f}",
                f"{f_iid['log_error']:.2f} / {f_site['log_error']:.3f}",
            ]
        else:
            row += ["-"] * 5
        row.append(f"{load:.2f} / {load_average()[0]:.2f}")
        rows.append(row)
    head = [
        "grid",
        "LML+grad iid (s)",
        "LML+grad per-site (s)",
        "ratio median (min)",
        "fit iid (s, evals)",
        "fit per-site (s, evals)",
        "per-eval ratio",
        "LML gain",
        "noise median abs log error iid / per-site",
        "load before / after",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
