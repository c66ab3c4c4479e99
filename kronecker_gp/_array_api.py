"""Array-API glue: the namespace of the data, and moves between namespaces.

The eigen route is written once against an array namespace ``xp``. NumPy
arrays get the ``numpy`` module itself (so the NumPy code path runs the same
calls as before, and needs no extra package); any other array (PyTorch on CPU
or CUDA, CuPy, ``array_api_strict``) gets its namespace from
``array_api_compat`` (the ``gpu`` extra), imported only then. Small arrays
(per-axis Gram matrices, eigenvalues, gradients) move between NumPy and the
data's namespace here; grid-sized arrays never do.

Whether a non-NumPy array is taken in its own namespace at all is scikit-learn's
``array_api_dispatch`` setting, read by the estimators (not here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray

#: What to install for arrays other than NumPy's.
INSTALL_HINT = 'pip install "kronecker-gp[gpu]" (array-api-compat)'


def _compat() -> Any:
    try:
        import array_api_compat  # noqa: PLC0415 (optional dependency)
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError(
            f"arrays other than NumPy's need array-api-compat: {INSTALL_HINT}."
        ) from None
    return array_api_compat


def is_numpy(x: Any) -> bool:
    """Return whether ``x`` is a NumPy array, a NumPy scalar or not an array."""
    return isinstance(x, (np.ndarray, np.generic)) or not _looks_like_array(x)


def _looks_like_array(x: Any) -> bool:
    """Return whether ``x`` is an array of some library (has shape and dtype)."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__dlpack__")


def namespace(*arrays: Any) -> Any:
    """Return the array namespace of ``arrays``: ``numpy`` if all are NumPy.

    Parameters
    ----------
    *arrays : array
        Arrays of one namespace (NumPy arrays and non-arrays may be mixed in;
        they follow the others).

    Returns
    -------
    module
        ``numpy`` itself for NumPy arrays, else the namespace
        ``array_api_compat.array_namespace`` gives (e.g. its ``torch``).

    Raises
    ------
    TypeError
        If the arrays belong to several non-NumPy namespaces.

    Examples
    --------
    >>> import numpy as np
    >>> namespace(np.ones(3)) is np
    True
    """
    foreign = [a for a in arrays if not is_numpy(a)]
    if not foreign:
        return np
    try:
        return _compat().array_namespace(*foreign)
    except TypeError as exc:
        raise TypeError(f"arrays from several namespaces were mixed: {exc}") from None


def is_numpy_namespace(xp: Any) -> bool:
    """Return whether ``xp`` is NumPy (the module, or array-api-compat's wrapper)."""
    return xp is np or getattr(xp, "__name__", "") == "array_api_compat.numpy"


def device(x: Any) -> Any:
    """Return the device of ``x`` (``"cpu"`` for NumPy arrays)."""
    if is_numpy(x):
        return "cpu"
    return _compat().device(x)


def float_dtype(x: Any) -> Any:
    """Return the working float dtype for data ``x``: float32 stays, else float64."""
    xp = namespace(x)
    if xp is np:
        return np.float64
    return xp.float32 if x.dtype == xp.float32 else xp.float64


def like(a: Any, ref: Any, dtype: str | None = None) -> Any:
    """Return the (small) array ``a`` in the namespace, device and dtype of ``ref``.

    Parameters
    ----------
    a : array-like
        Usually a small NumPy array (a Gram matrix, cross-covariances).
    ref : array
        An array of the target namespace; its float dtype is used.
    dtype : {"float64"}, optional
        Use float64 instead of ``ref``'s dtype (e.g. for an eigendecomposition
        of float32 data's small factors).

    Returns
    -------
    array
        ``a`` unchanged if ``ref`` is NumPy and ``a`` is a float64 array.

    Examples
    --------
    >>> import numpy as np
    >>> like([1, 2], np.zeros(3)).dtype
    dtype('float64')
    """
    xp = namespace(ref)
    if xp is np:
        return np.asarray(a, dtype=np.float64)
    if not is_numpy(a):
        a = to_numpy(a) if namespace(a) is not xp else a
    want = xp.float64 if dtype == "float64" else ref.dtype
    return xp.asarray(a, dtype=want, device=device(ref))


def zeros_like_ref(shape: tuple[int, ...], ref: Any) -> Any:
    """Return zeros of ``shape`` in ``ref``'s namespace, device and float dtype."""
    xp = namespace(ref)
    if xp is np:
        return np.zeros(shape)
    return xp.zeros(shape, dtype=ref.dtype, device=device(ref))


def to_numpy(x: Any) -> FloatArray:
    """Return a (small) array as a NumPy array, copying it to the host if needed.

    Used for per-axis arrays and gradients (sizes ``n_d`` or ``n_theta``),
    never for grid-sized arrays.
    """
    if is_numpy(x):
        return np.asarray(x)
    compat = _compat()
    if compat.is_torch_array(x):
        return np.asarray(x.detach().cpu().numpy())
    if compat.is_cupy_array(x):
        return np.asarray(x.get())
    try:  # a host array of another library: zero-copy through DLPack
        return np.asarray(np.from_dlpack(x))
    except (TypeError, ValueError, AttributeError, RuntimeError, BufferError):
        return np.asarray(x)


def to_float(x: Any) -> float:
    """Return a 0-d array (any namespace) as a Python float."""
    return float(x)
