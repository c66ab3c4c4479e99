"""Every size, time and tolerance budget of the route choice, in one place.

Each constant says what it bounds and the measurement that set it. The cost
model (:mod:`kronecker_gp.solvers._cost`) compares estimated flops and bytes
of the candidate routes; these constants are its only fixed numbers.
"""

from __future__ import annotations

import os

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))

#: An exact route is taken, even where an iterative one is estimated cheaper,
#: while its work stays below this many flops: about 2-5 s of BLAS-3 work on
#: one shared core (a 60 x 80 grid with 1,468 missing cells needs 1.2e10 for
#: fit and the training grid's exact variance; measured 1.8 s in issue 11).
EXACT_FLOPS_BUDGET = 4e10
#: An exact route is taken whenever it is estimated at most this many times
#: the iterative route's work: exact answers are worth some speed, and the
#: iterative estimates below are optimistic under load (small BLAS calls
#: slowed 25x on a shared machine where the large exact ones slowed 3x).
EXACT_PREFERENCE = 4.0
#: With ``solver="cg"`` asked for (the O(N)-memory method), the exact
#: log-determinant of the Schur complement is still taken while it needs at
#: most this many bytes (32 MB; a 40 x 50 grid with 600 missing cells needs 22).
CG_EXACT_LOGDET_BYTES = 2**25
#: The cost model moves a problem off its structured route (eigen or
#: per-series Kalman) to the spatio-temporal filter or the dense route only
#: when the structured route is estimated above this many flops (about 0.1 s):
#: below it every route answers at once, and the structured one is kept.
ROUTE_SWITCH_FLOPS = 1e8
#: Fraction of the memory available at fit time that one route may plan for.
MEMORY_FRACTION = 0.5
#: Memory assumed when the operating system does not say (bytes).
DEFAULT_MEMORY = 8 * 2**30

#: CG iterations the cost model assumes for a missing-cell solve (16 at
#: 200 x 250 with 30 % missing, 30-60 near the bounds; BENCHMARKS.md issue 3).
CG_ITERATIONS = 40
#: Flops-equivalent per cell and squared state dimension of one Kalman pass
#: with its sensitivity columns, as the cost model counts them: the time
#: loop's vectorised steps run far below BLAS-3 speed. Set so that the exact
#: path stops near 256 missing cells on a 12 x 6,574 grid, where it was
#: measured to stop paying off (issue 7).
KALMAN_CELL_FLOPS = 2000.0
#: Flops-equivalent of the Python and call overhead of one step of the
#: spatio-temporal filter (about 0.2 ms per step measured at 43 sites, where
#: it, not the flops, dominates).
KALMAN_STEP_FLOPS = 4e5
#: Lanczos steps per probe of stochastic Lanczos quadrature (the runs stop at
#: residual 1e-6, typically after 20-40 steps).
LANCZOS_STEPS = 30
#: Quadrature tolerance (per unit probe norm) at which a probe's Lanczos run
#: of the missing-cell log-determinant estimator stops, once its solve is at
#: residual ``sqrt(SLQ_QUAD_TOL)``. At 200 x 200 with 30 % missing (12,000
#: missing cells, 8 probes) the runs stopped after 7 steps instead of 10 (at
#: residual 1e-6), the estimate moved by 4e-7 nats (its standard error: 0.79)
#: and the Hutchinson solves by 6e-4 relative; at 500 x 500 (75,000 missing,
#: optimum theta) 1e-10 / 1e-9 / 1e-8 / 1e-7 took 7 / 7 / 6 / 5 steps (9 at
#: residual 1e-6) and moved the estimate by 1e-7 / 1.4e-6 / 3.1e-6 / 7.8e-5
#: nats (standard error 1.6), the solves by 2e-4 / 6e-4 / 8e-4 / 3e-3
#: (session 6): 1e-8 keeps the error far below what the optimiser resolves.
SLQ_QUAD_TOL = 1e-8
#: Lanczos steps per probe the cost model assumes for the Schur complement's
#: log-determinant estimator (block-Jacobi whitened, stopped by
#: ``SLQ_QUAD_TOL``): measured 7 at 200 x 200 and 500 x 500 (30 % missing,
#: start and true theta of ``bench_missing.py``) and 9 on the 10 x 60 x 60 and
#: 10 x 100 x 100 multi-task grids (session 6); 12 leaves a margin. With
#: ``CG_ITERATIONS`` per probe instead (40, session 5) the cost model put the
#: estimator at 1.3e12 flops at 500 x 500 and chose the spatio-temporal
#: filter (estimated 2.4e12, measured 78-89 s per evaluation against 5-6 s).
SLQ_STEPS = 12

#: CG tolerance floor of the hyperparameter search's likelihood evaluations.
SEARCH_CG_TOL = 1e-6
#: Probe count cap of the search's stochastic estimates (CG paths): the
#: probes' Lanczos runs dominate an evaluation, and the (seeded, hence
#: deterministic) estimated objective with 8 probes has its optimum within
#: the estimates' error of the one with 32 (see BENCHMARKS.md, issue 3).
SEARCH_PROBES = 8

#: Largest matrix dimension of a loop of small products that runs on one BLAS
#: thread (``kronecker_gp._threads.blas_threads``): the spatio-temporal filter
#: at 30 sites x 200 days (60-dimensional state) took 0.28 s on one thread
#: and 10.3 s on two when the two cores were loaded (load 6.9); at this size a
#: product takes well under a millisecond, so a second thread gains little.
SMALL_BLAS_DIM = 256

#: Entries per chunk of a fused element-wise pass over grid-sized arrays
#: (``kronecker_gp._threads.map_chunks``): a chunk's operands stay in the
#: core's L2 cache while the pass runs several ufuncs on them, and the chunk
#: count stays far above the thread count. The eigen route's fused
#: ``y * inv_lam`` / quadratic form / log-sum pass over 2^20 entries took
#: 2.9, 2.6 and 2.5 ms with chunks of 2^14, 2^16 and 2^18 entries, 9.7 and
#: 8.6 ms with 2^12 and 2^20 (one thread; the four unfused NumPy passes
#: 6.2 ms; 2 shared cores, load 4.7).
ELEMENTWISE_CHUNK = 2**16
#: Smallest element-wise pass (entries) split over threads: below it the
#: pool's dispatch (about 0.1 ms) costs more than the pass saves. Same pass,
#: same machine, one task per thread (chunks of n/8): two threads vs one
#: took 244 vs 157 us at 2^16 entries, 619 vs 505 us at 2^18, 633 vs
#: 1017 us at 2^19 and 1.29 vs 2.21 ms at 2^20 (load 3.0); at load 4.7
#: (no idle core) two threads never won up to 2^20 (2.83 vs 2.71 ms).
THREADED_ELEMENTWISE_MIN = 2**19

#: Per-cell-noise routes' predictive variance: the correction to the exact
#: preconditioner's variance costs one CG solve per test point exactly, or
#: ``2 * VARIANCE_PROBES`` solves for a Hutchinson estimate of the diagonal
#: with the worst-estimated points then solved exactly. Exact while the points
#: are at most this factor times the probes: at 60 x 80 (4,800 points) the
#: exact correction took 31 s after a 0.007 s fit (a cliff), the estimate
#: 1.5 s (variance within 1.8 % median, 20 % worst cell; load 0.7).
EXACT_VARIANCE_FACTOR = 2

#: Probes of that estimate: at 20 x 24 (4 seeds) the variance was within
#: 1.2-1.5 % (median) and 11-16 % (worst cell) of the dense one.
VARIANCE_PROBES = 128

#: Entries of the temporaries of one pass of a chunked computation (64 MB of
#: float64): predictions at many points, Schur columns, variance corrections.
CHUNK_ENTRIES = 2**23


def available_memory() -> int:
    """Return the memory available now, in bytes (``DEFAULT_MEMORY`` if unknown).

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return DEFAULT_MEMORY
    if pages <= 0 or size <= 0:
        return DEFAULT_MEMORY
    return int(pages) * int(size)

#: Laplace solves (issue 15): above this spread max t / min t of the per-cell
#: misfit t = (1 + W K_ii) / (1 + W~ K_ii) of the additive Kronecker fit W~ of
#: the curvature (about the condition number the additive preconditioner of
#: A = I + S Q^T W Q S leaves), CG runs on B = I + W^1/2 K W^1/2 with the scaled
#: preconditioner T (I + G) T instead (three Kronecker products per iteration
#: instead of two). Measured spreads: smooth 200x200 / 500x500 Poisson
#: benchmark 126 / 197 (additive faster), measles 2e6-3e7 (scaled: condition
#: number 162 against 5.7e7).
LAPLACE_SCALED_SPREAD = 1e3
#: Above that spread, a CG trial of this many iterations with each
#: preconditioner (seeded random right-hand side) picks the route with fewer
#: Kronecker products per decade of residual: measles at the smooth start
#: (amplitude 4, lengths 5 / 5) runs its mode in 8,400 CG iterations on the
#: additive route against 18,300 on the scaled one, at its optimum in 41,300
#: (capped) against 610.
LAPLACE_ROUTE_TRIAL_STEPS = 30
#: Newton tolerance (decrement / |Psi|) during a hyperparameter search: the
#: LML's error from the mode is half the decrement (1e-14 |Psi|, far below
#: the stochastic log-determinant's), the fit at the optimum uses 1e-20.
LAPLACE_SEARCH_NEWTON_TOL = 1e-14
#: A Newton step keeps the previous step's Kronecker preconditioner (its factor
#: eigendecompositions) while every entry of the curvature's Kronecker fit stays
#: within this factor of the one it was built from.
LAPLACE_PRECOND_REUSE = 2.0
