"""Size guard of ``kronecker-gp fit``: memory and time of a fit, before it runs.

The estimate is deliberately rough (a factor of two either way): it tells a
minute from an hour and a fit that fits in memory from one that does not.
"""

from __future__ import annotations

import os

from kronecker_gp.cli._fit import EXACT_REFIT_MAX_MISSING
from kronecker_gp.cli._source import CLIError

#: float64 arrays of the grid's size alive at once (data, CG vectors, probes,
#: predictions, output columns), measured as peak RSS / (8 * cells) on ozone2.
GRID_COPIES = 40
#: Likelihood evaluations a typical search takes.
EVALUATIONS = 40
#: Sustained flop rates assumed for the time estimate (one core): the
#: memory-bound mode products, and LAPACK's eigendecompositions.
FLOPS, EIG_FLOPS = 2e9, 1e10
#: Time steps from which a Matern time kernel goes through Kalman filtering
#: (KroneckerGP's ``state_space_min_size`` default).
STATE_SPACE_MIN = 2000
#: Share of the available memory a fit may plan to use.
MEMORY_SHARE = 0.8


def available_memory() -> int | None:
    """Return the machine's available memory in bytes (None when unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate(
    n_sites: int, n_times: int, n_missing: int, *, markov_time: bool = False
) -> tuple[float, float]:
    """Return (bytes, seconds) a fit and its predictions roughly need.

    ``markov_time`` says the time kernel is a Matern one, which KroneckerGP
    solves by Kalman filtering from ``STATE_SPACE_MIN`` steps: no
    ``n_times x n_times`` factor is formed then.
    """
    cells = n_sites * n_times
    state_space = markov_time and n_times >= STATE_SPACE_MIN
    time_factor = 0 if state_space else n_times
    exact_schur = 0 < n_missing <= EXACT_REFIT_MAX_MISSING
    memory = 8.0 * (6 * (n_sites**2 + time_factor**2) + GRID_COPIES * cells)
    if exact_schur:
        memory += 8.0 * 3 * n_missing**2
    # per evaluation: the factors' eigendecompositions once, then complete-grid
    # solves (about ten more with missing cells), each a pair of mode products
    eig = 10.0 * (n_sites**3 + time_factor**3)
    per_solve = 4.0 * cells * (n_sites + (50 if state_space else n_times))
    solves = 1 + (10 if n_missing else 0)
    seconds = EVALUATIONS * (eig / EIG_FLOPS + solves * per_solve / FLOPS)
    if exact_schur:
        seconds += (2 * n_missing**3 + n_missing * per_solve) / FLOPS
    return memory, seconds


def human_bytes(n: float) -> str:
    """Format a byte count as kB, MB or GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def human_seconds(s: float) -> str:
    """Format seconds as s, min or h."""
    if s < 90:
        return f"{max(s, 1):.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def check_memory(
    n_sites: int, n_times: int, n_missing: int, *, markov_time: bool = False
) -> tuple[float, float]:
    """Return the estimate, or refuse a fit that needs more than the machine has."""
    memory, seconds = estimate(n_sites, n_times, n_missing, markov_time=markov_time)
    free = available_memory()
    if free is not None and memory > MEMORY_SHARE * free:
        raise CLIError(
            f"a {n_sites:,} x {n_times:,} grid needs about {human_bytes(memory)} "
            f"but {human_bytes(free)} is available; use a coarser time step, fewer "
            "sites, or a smaller --max-cells"
        )
    return memory, seconds
