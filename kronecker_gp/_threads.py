"""Thread pools: small products on one BLAS thread, large passes on all cores.

A loop of many small matrix products (a Kalman filter over a few hundred state
dimensions, say) gains nothing from a threaded BLAS, and on a shared machine
each multi-threaded call can stall waiting for a busy core: the
spatio-temporal filter's likelihood and gradient at 30 sites x 200 days (a
60-dimensional state) took 0.28 s on one BLAS thread and 10.3 s on two with
the machine's two cores loaded (load average 6.9). :func:`blas_threads`
limits the BLAS to one thread inside a block where that is known to be the
case, through ``threadpoolctl`` (a scikit-learn dependency).

The other way round, NumPy runs an element-wise pass (``y * inv_lam``,
``log``, a reduction) on one thread while the BLAS products around it use
every core; :func:`map_chunks` splits such a pass over large arrays into
cache-sized row chunks run on a thread pool (NumPy releases the GIL in its
ufunc loops), as many threads as the BLAS pool has.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from kronecker_gp import _budgets

_CONTROLLER: Any = None
T = TypeVar("T")


def _controller() -> Any:
    global _CONTROLLER  # noqa: PLW0603 - one controller, built on first use
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def blas_threads(matrix_size: int) -> Iterator[None]:
    """Run the block on one BLAS thread when its matrices are at most this small.

    Parameters
    ----------
    matrix_size : int
        The largest matrix dimension the block's products use; at or below
        ``_budgets.SMALL_BLAS_DIM`` the BLAS runs on one thread, above it the
        thread pools are left as they are.

    Examples
    --------
    >>> import numpy as np
    >>> with blas_threads(60):
    ...     x = np.ones((60, 60)) @ np.ones(60)
    >>> float(x[0])
    60.0
    """
    if matrix_size > _budgets.SMALL_BLAS_DIM:
        yield
        return
    with _controller().limit(limits=1, user_api="blas"):
        yield


# ------------------------------------------------------ element-wise passes
#: The pool that runs chunks of element-wise passes (built on first use).
_POOL: Any = None


def elementwise_threads() -> int:
    """Return the threads an element-wise pass over a large array may use.

    The BLAS pool's current size (so ``threadpoolctl.threadpool_limits(1)``
    makes every pass single-threaded too), at most the usable cores.

    Examples
    --------
    >>> elementwise_threads() >= 1
    True
    """
    sizes = [
        int(lib.num_threads)
        for lib in _controller().lib_controllers
        if lib.user_api == "blas"
    ]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(max(sizes, default=1), cores))


def _forget_pool() -> None:
    """Drop the pool in a forked child (its threads stayed in the parent)."""
    global _POOL  # noqa: PLW0603 - reset after fork
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> ThreadPoolExecutor:
    global _POOL  # noqa: PLW0603 - one pool, built on first use
    if _POOL is None:
        cores = os.cpu_count() or 1
        _POOL = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="kgp-ew")
    return _POOL  # type: ignore[no-any-return]


def row_chunks(n_rows: int, row_size: int) -> list[tuple[int, int]]:
    """Split ``n_rows`` rows of ``row_size`` entries into chunks for a pass.

    Each chunk holds about ``_budgets.ELEMENTWISE_CHUNK`` entries (at least
    one row).

    The chunks depend only on the shape, never on the thread count, so a
    reduction summed chunk by chunk is the same on any number of threads.

    Examples
    --------
    >>> row_chunks(5, 2**20)
    [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    """
    step = max(1, _budgets.ELEMENTWISE_CHUNK // max(1, row_size))
    return [(lo, min(lo + step, n_rows)) for lo in range(0, n_rows, step)]


def map_chunks(fn: Callable[[int, int], T], n_rows: int, row_size: int) -> list[T]:
    """Run ``fn(lo, hi)`` on every row chunk, threaded when the array is large.

    Parameters
    ----------
    fn : callable
        Works on rows ``lo:hi`` of NumPy arrays (ufuncs release the GIL);
        it must not call the BLAS (whose own threads would oversubscribe).
    n_rows, row_size : int
        The arrays' rows and entries per row.

    Returns
    -------
    list
        ``fn``'s results in chunk order.

    Notes
    -----
    Threads are used when the pass covers at least
    ``_budgets.THREADED_ELEMENTWISE_MIN`` entries and
    :func:`elementwise_threads` allows more than one.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(12.0).reshape(4, 3)
    >>> parts = map_chunks(lambda lo, hi: float(x[lo:hi].sum()), 4, 3)
    >>> sum(parts)
    66.0
    """
    chunks = row_chunks(n_rows, row_size)
    threads = min(elementwise_threads(), len(chunks))
    if threads == 1 or n_rows * row_size < _budgets.THREADED_ELEMENTWISE_MIN:
        return [fn(lo, hi) for lo, hi in chunks]
    # one task per thread, each a contiguous run of chunks: exactly
    # ``threads`` run at once, and the results keep the chunks' order
    bounds = [len(chunks) * t // threads for t in range(threads + 1)]

    def run(t: int) -> list[T]:
        return [fn(lo, hi) for lo, hi in chunks[bounds[t] : bounds[t + 1]]]

    return [r for part in _pool().map(run, range(threads)) for r in part]
