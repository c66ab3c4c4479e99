r"""The cost model: estimated flops and bytes of each candidate method.

A route's numerical method (exact or iterative) is chosen by comparing these
estimates for *this* grid, *this* missing pattern and *this* machine's
memory, not by fixed size thresholds. The estimates count the dominant terms
only; the budgets they are compared with live in :mod:`kronecker_gp._budgets`.

For ``m`` missing cells and a complete-grid solve of cost :math:`s` flops
(two rotations by the factors' eigenvectors, :math:`4 N \sum_d n_d`, on the
eigen route; a rotation plus one Kalman pass per series on the state-space
route), the Schur complement :math:`P_{mm}` costs

- exact: :math:`m s` to form it column by column (mode products), plus
  :math:`m^3 / 3` to factor it, with :math:`O(m N)` memory for the columns;
- iterative: CG for the weights plus stochastic Lanczos quadrature for the
  log-determinant, :math:`(i + k \, l) \, s` for ``i`` CG iterations,
  ``k`` probes and ``l`` Lanczos steps per probe (``_budgets.CG_ITERATIONS``,
  ``_budgets.SLQ_STEPS``: the quadrature converges in fewer steps than a
  solve to a tight residual), with :math:`O(N)` memory per column.
"""

from __future__ import annotations

from dataclasses import dataclass

from kronecker_gp import _budgets


@dataclass(frozen=True)
class MethodChoice:
    """The method a route takes and why.

    Attributes
    ----------
    method : {"exact", "cg"}
        The method chosen.
    reason : str
        Why, in one sentence (reported in ``solver_info_.extra["reason"]``).
    exact_flops, iterative_flops, exact_bytes : float
        The cost model's estimates for the two candidates.
    """

    method: str
    reason: str
    exact_flops: float
    iterative_flops: float
    exact_bytes: float

    def as_dict(self) -> dict[str, object]:
        """Return the choice as plain values for ``solver_info_.extra``."""
        return {
            "reason": self.reason,
            "exact_flops": self.exact_flops,
            "iterative_flops": self.iterative_flops,
            "exact_bytes": self.exact_bytes,
        }


def eigen_solve_flops(shape: tuple[int, ...]) -> float:
    """Return the flops of one complete-grid solve on the eigen route."""
    n = float(_prod(shape))
    return 4.0 * n * float(sum(shape))


def schur_costs(
    n_missing: int, n_cells: int, solve_flops: float, n_probes: int
) -> tuple[float, float, float]:
    """Return (exact flops, iterative flops, exact bytes) of a Schur complement.

    Parameters
    ----------
    n_missing : int
        Missing cells ``m``.
    n_cells : int
        Cells ``N`` of the complete grid.
    solve_flops : float
        Flops of one complete-grid solve.
    n_probes : int
        Probe vectors of the iterative method's estimates.

    Returns
    -------
    exact_flops, iterative_flops, exact_bytes : float

    Examples
    --------
    >>> exact, iterative, nbytes = schur_costs(1468, 4800, 2.7e6, 32)
    >>> f"{exact:.1e} {iterative:.1e} {nbytes / 2**20:.0f} MB"
    '2.6e+10 1.1e+09 124 MB'
    """
    m = float(n_missing)
    exact = m * solve_flops + m**3 / 3.0 + 2.0 * m * m * n_cells
    iterative = (_budgets.CG_ITERATIONS + n_probes * _budgets.SLQ_STEPS) * solve_flops
    exact_bytes = 8.0 * (2.0 * m * n_cells + m * m)
    return exact, iterative, exact_bytes


def choose_schur_method(
    requested: str,
    n_missing: int,
    n_cells: int,
    solve_flops: float,
    n_probes: int,
    *,
    memory: float | None = None,
) -> MethodChoice:
    """Choose exact or iterative inference through the Schur complement.

    ``"exact"`` and ``"cg"`` are honoured as asked. ``"auto"`` takes the exact
    method whenever its memory fits ``MEMORY_FRACTION`` of ``memory`` and its
    work is at most ``EXACT_PREFERENCE`` times the iterative one's or within
    ``EXACT_FLOPS_BUDGET``.

    Parameters
    ----------
    requested : {"auto", "exact", "cg"}
        The estimator's ``solver`` parameter.
    n_missing, n_cells : int
        Missing cells and cells of the complete grid.
    solve_flops : float
        Flops of one complete-grid solve on this route.
    n_probes : int
        Probe vectors of the iterative estimates.
    memory : float or None, default=None
        Bytes available; None asks the operating system.

    Returns
    -------
    MethodChoice

    Examples
    --------
    The 60 x 80 grid with 1,468 missing cells of issue 11 is exact:

    >>> flops = eigen_solve_flops((60, 80))
    >>> choose_schur_method("auto", 1468, 4800, flops, 32).method
    'exact'
    >>> flops = eigen_solve_flops((500, 500))
    >>> choose_schur_method("auto", 75_000, 250_000, flops, 32).method
    'cg'
    """
    exact, iterative, nbytes = schur_costs(n_missing, n_cells, solve_flops, n_probes)
    if requested in ("exact", "cg"):
        return MethodChoice(
            requested, f'solver="{requested}" was asked for', exact, iterative, nbytes
        )
    limit = _budgets.MEMORY_FRACTION * (
        _budgets.available_memory() if memory is None else memory
    )
    if nbytes > limit:
        reason = (
            f"the exact method needs {nbytes / 2**30:.1f} GiB, over "
            f"{_budgets.MEMORY_FRACTION:.0%} of the memory available"
        )
        return MethodChoice("cg", reason, exact, iterative, nbytes)
    if exact <= _budgets.EXACT_PREFERENCE * iterative:
        reason = (
            f"the exact method is estimated at {exact / iterative:.2g}x the "
            "iterative one's work"
        )
        return MethodChoice("exact", reason, exact, iterative, nbytes)
    if exact <= _budgets.EXACT_FLOPS_BUDGET:
        reason = f"the exact method's {exact:.2g} flops fit the exact budget"
        return MethodChoice("exact", reason, exact, iterative, nbytes)
    reason = (
        f"the exact method is estimated at {exact / iterative:.2g}x the iterative "
        f"one's work and {exact:.2g} flops, over the exact budget"
    )
    return MethodChoice("cg", reason, exact, iterative, nbytes)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= int(n)
    return out
