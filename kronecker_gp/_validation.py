"""Small input checks shared by every layer (numpy only).

Each helper raises a ``ValueError`` or ``TypeError`` whose message names the
argument, what was expected and what was seen.
"""

from __future__ import annotations

import numbers

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray


def as_float_array(
    a: ArrayLike,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    allow_nan: bool = False,
) -> FloatArray:
    """Convert ``a`` to a float64 array and check its rank and finiteness.

    Parameters
    ----------
    a : array-like
        The input.
    name : str
        The argument name used in error messages.
    ndim : int or tuple of int, optional
        Allowed number(s) of dimensions.
    allow_nan : bool, default=False
        Whether NaN entries are accepted (infinite entries never are).

    Returns
    -------
    ndarray
        ``a`` as a float64 array.

    Raises
    ------
    TypeError
        If ``a`` is not numeric.
    ValueError
        If the rank is wrong or the entries are not finite.
    """
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a numeric array; got {type(a).__name__} ({exc})."
        ) from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(
                f"{name} must be {want}-dimensional; got shape {arr.shape}."
            )
    bad = ~np.isfinite(arr)
    if allow_nan:
        bad &= ~np.isnan(arr)
    if bad.any():
        what = "infinite" if allow_nan else "NaN or infinite"
        raise ValueError(
            f"{name} contains {what} values ({int(bad.sum())} of {arr.size} entries); "
            "remove or impute them."
        )
    return arr


def check_square(a: ArrayLike, name: str) -> FloatArray:
    """Return ``a`` as a finite float64 square matrix or raise ``ValueError``."""
    arr = as_float_array(a, name, ndim=2)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got shape {arr.shape}.")
    return arr


def check_symmetric(a: ArrayLike, name: str, *, rtol: float = 1e-8) -> FloatArray:
    """Return the symmetric part of square ``a``; raise if ``a`` is not symmetric."""
    arr = check_square(a, name)
    scale = max(float(np.abs(arr).max(initial=0.0)), np.finfo(float).tiny)
    asym = float(np.abs(arr - arr.T).max(initial=0.0))
    if asym > rtol * scale:
        raise ValueError(
            f"{name} must be symmetric; max |A - A.T| is {asym:.3g} "
            f"(relative {asym / scale:.3g}). Symmetrise it with (A + A.T) / 2."
        )
    return 0.5 * (arr + arr.T)


def check_positive(value: object, name: str, *, strict: bool = True) -> float:
    """Return ``value`` as a float after checking it is a positive real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}.")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        cond = "positive" if strict else "non-negative"
        raise ValueError(f"{name} must be {cond} and finite; got {value!r}.")
    return v


__all__ = ["as_float_array", "check_positive", "check_square", "check_symmetric"]
