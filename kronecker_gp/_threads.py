"""BLAS thread pools: small products run on one thread.

A loop of many small matrix products (a Kalman filter over a few hundred state
dimensions, say) gains nothing from a threaded BLAS, and on a shared machine
each multi-threaded call can stall waiting for a busy core: the
spatio-temporal filter's likelihood and gradient at 30 sites x 200 days (a
60-dimensional state) took 0.28 s on one BLAS thread and 10.3 s on two with
the machine's two cores loaded (load average 6.9). :func:`blas_threads`
limits the BLAS to one thread inside a block where that is known to be the
case, through ``threadpoolctl`` (a scikit-learn dependency).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kronecker_gp import _budgets

_CONTROLLER: Any = None


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
