"""Testing helpers: the project's tolerance policy and small random inputs.

Examples
--------
>>> import numpy as np
>>> from kronecker_gp.testing import assert_allclose, random_spd
>>> A = random_spd(4, random_state=0)
>>> assert_allclose(A, A.T)
"""

from __future__ import annotations

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray

#: Tolerance for exact float64 algebra (products, solves with good conditioning).
EXACT_RTOL = 1e-10
EXACT_ATOL = 1e-12
#: Relative tolerance for results that go through an eigendecomposition.
EIG_RTOL = 1e-8


def assert_allclose(
    actual: ArrayLike,
    desired: ArrayLike,
    *,
    rtol: float = EXACT_RTOL,
    atol: float = EXACT_ATOL,
    err_msg: str = "",
) -> None:
    """Assert two arrays agree to the project's float64 tolerances.

    Parameters
    ----------
    actual, desired : array-like
        The arrays to compare.
    rtol : float, default=1e-10
        Relative tolerance. Pass ``EIG_RTOL`` for eigen-based results.
    atol : float, default=1e-12
        Absolute tolerance.
    err_msg : str, default=""
        Message printed on failure.

    Raises
    ------
    AssertionError
        If the arrays differ by more than the tolerances.
    """
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=err_msg
    )


def random_spd(
    n: int, *, cond: float = 1e2, random_state: int | np.random.Generator | None = None
) -> FloatArray:
    """Return a random symmetric positive-definite ``n x n`` matrix.

    Parameters
    ----------
    n : int
        The size.
    cond : float, default=100
        The condition number (eigenvalues spread log-uniformly in ``[1/cond, 1]``).
    random_state : int, Generator or None
        Seed or generator.

    Returns
    -------
    ndarray of shape (n, n)
        A symmetric positive-definite matrix.

    Examples
    --------
    >>> import numpy as np
    >>> A = random_spd(3, random_state=1)
    >>> bool(np.all(np.linalg.eigvalsh(A) > 0))
    True
    """
    rng = np.random.default_rng(random_state)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.logspace(-np.log10(cond), 0.0, n) if n > 1 else np.ones(1)
    a = (q * w) @ q.T
    return 0.5 * (a + a.T)


__all__ = ["EIG_RTOL", "EXACT_ATOL", "EXACT_RTOL", "assert_allclose", "random_spd"]
