"""Pure Kronecker identities on lists of factor arrays.

Every structured operator and estimator in the package calls these functions;
none re-derives the algebra. The ordering convention (C order, last axis
fastest) is stated in :mod:`kronecker_gp.linalg`.

References
----------
.. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, ch. 5.
.. [2] Rasmussen, C. E. and Williams, C. K. I. (2006). Gaussian Processes for
   Machine Learning. MIT Press, Alg. 2.1.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np
import scipy.linalg

from kronecker_gp._array_api import namespace, zeros_like_ref
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import check_symmetric

#: Negative eigenvalues of a factor below ``-NEG_EIG_WARN * max(eig)`` warn,
#: those below ``-NEG_EIG_ERROR * max(eig)`` mean the factor is not PSD.
NEG_EIG_WARN = 1e-8
NEG_EIG_ERROR = 1e-6


def _apply_mode(
    xp: Any, a: FloatArray, x: FloatArray, pre: int, post: int
) -> FloatArray:
    """Multiply axis 1 of ``x`` viewed as ``(pre, n, post)`` by ``a``."""
    n = a.shape[1]
    if post == 1:
        # last grid axis: one GEMM on (pre, n) @ a.T
        return xp.reshape(x, (pre, n)) @ a.T
    if pre == 1:
        return a @ xp.reshape(x, (n, post))
    return xp.matmul(a, xp.reshape(x, (pre, n, post)))


def _float64_if_numpy(xp: Any, x: Any) -> Any:
    """Return ``x`` as a float64 NumPy array in NumPy's namespace, else as is."""
    return np.asarray(x, dtype=np.float64) if xp is np else x


def kron_matvec(factors: Sequence[FloatArray], x: Any) -> FloatArray:
    r"""Multiply ``kron(A_1, ..., A_D)`` by a vector or matrix without forming it.

    Parameters
    ----------
    factors : sequence of ndarray
        The factors ``A_d``, of shapes ``(m_d, n_d)`` (rectangular allowed).
    x : array-like of shape (prod(n_d),) or (prod(n_d), k)
        The vector, or ``k`` columns.

    Returns
    -------
    ndarray of shape (prod(m_d),) or (prod(m_d), k)
        ``np.kron(A_1, ..., A_D) @ x``.

    Notes
    -----
    Mode products: with ``x`` reshaped to the grid ``(n_1, ..., n_D)``, factor
    ``d`` multiplies axis ``d``. Cost :math:`O(N \sum_d m_d)` for square
    factors, :math:`N = \prod_d n_d`, and no :math:`N \times N` array.

    Any array-API namespace works (factors and ``x`` in the same one): the
    products stay in it.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.arange(4.0).reshape(2, 2), np.arange(9.0).reshape(3, 3)
    >>> x = np.arange(6.0)
    >>> bool(np.allclose(kron_matvec([A, B], x), np.kron(A, B) @ x))
    True
    """
    xp = namespace(x, *factors)
    x = _float64_if_numpy(xp, x)
    vector = x.ndim == 1
    n_in = [int(f.shape[1]) for f in factors]
    n_tot = int(np.prod(n_in))
    if x.shape[0] != n_tot:
        raise ValueError(
            f"x has {x.shape[0]} rows; the Kronecker product of factors with "
            f"{n_in} columns needs {n_tot}."
        )
    k = 1 if vector else x.shape[1]
    # batch axis first: y has shape (k, n_1, ..., n_D) flattened
    y = x if vector else x.T
    dims = [k, *n_in]
    for d, a in enumerate(factors):
        pre = int(np.prod(dims[: d + 1]))
        post = int(np.prod(dims[d + 2 :]))
        y = _apply_mode(xp, a, y, pre, post)
        dims[d + 1] = a.shape[0]
    out = xp.reshape(y, (k, -1))
    if xp is not np:
        return out[0, ...] if vector else out.T
    if vector:  # the products wrote a fresh array: copy only an unchanged x
        return out[0] if factors else out[0].copy()
    return np.ascontiguousarray(out.T)


def kron_dense(mats: Sequence[FloatArray]) -> FloatArray:
    """Return the dense Kronecker product of small matrices (ones((1, 1)) for none).

    For factors whose product is small (a space axis of a few hundred sites,
    a test grid's basis); by broadcasting, so it does not call ``np.kron``.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.arange(4.0).reshape(2, 2), np.eye(3)[:, :2]
    >>> bool(np.array_equal(kron_dense([a, b]), np.kron(a, b)))
    True
    """
    out = np.ones((1, 1))
    for m in mats:
        rows, cols = out.shape[0] * m.shape[0], out.shape[1] * m.shape[1]
        out = (out[:, None, :, None] * m[None, :, None, :]).reshape(rows, cols)
    return out


def kron_diag(factors: Sequence[FloatArray]) -> FloatArray:
    """Return the diagonal of ``kron(A_1, ..., A_D)`` for square factors.

    Notes
    -----
    ``diag(A (x) B) = diag(A) (x) diag(B)``, cost :math:`O(N)`.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.diag([1.0, 2.0]), np.diag([3.0, 4.0])
    >>> kron_diag([A, B])
    array([3., 4., 6., 8.])
    """
    return kron_outer([np.diagonal(f) for f in factors], np.multiply)


def kron_outer(vectors: Sequence[FloatArray], op: np.ufunc = np.multiply) -> FloatArray:
    """Return the flattened outer ``op`` of per-axis vectors in C order.

    ``kron_outer([a, b], np.multiply)`` equals ``np.kron(a, b)`` and
    ``kron_outer([a, b], np.add)`` equals ``np.kron(a, ones) + np.kron(ones, b)``.

    Examples
    --------
    >>> import numpy as np
    >>> kron_outer([np.array([1.0, 2.0]), np.array([10.0, 20.0])], np.add)
    array([11., 21., 12., 22.])
    """
    xp = namespace(*vectors)
    if xp is np:
        vecs = [np.asarray(v, float) for v in vectors]
        return np.asarray(reduce(op.outer, vecs)).ravel()
    if op not in (np.multiply, np.add):
        raise ValueError(f"op must be np.multiply or np.add; got {op!r}.")
    # broadcast each axis' vector along its own axis, then combine
    n_axes = len(vectors)
    out = None
    for d, v in enumerate(vectors):
        part = xp.reshape(v, tuple(-1 if e == d else 1 for e in range(n_axes)))
        out = part if out is None else (out * part if op is np.multiply else out + part)
    return xp.reshape(out, (-1,))


def _robust_eigh(a: FloatArray, name: str) -> tuple[FloatArray, FloatArray]:
    """Divide-and-conquer ``syevd`` (as numpy's eigh), falling back to ``syev``.

    ``syevd``/``syevr`` can fail to converge on nearly diagonal matrices with
    entries spanning hundreds of orders of magnitude; the QR-based ``syev`` is
    slower but succeeds there.
    """
    for driver in ("evd", "ev"):
        try:
            return scipy.linalg.eigh(a, driver=driver, check_finite=False)  # type: ignore[no-any-return]
        except (np.linalg.LinAlgError, ValueError) as exc:
            last = exc
    raise np.linalg.LinAlgError(
        f"eigh of {name} failed ({last}); check the kernel hyperparameters."
    )


def factor_eigh(a: ArrayLike, name: str = "factor") -> tuple[FloatArray, FloatArray]:
    """Eigendecompose one symmetric positive semi-definite factor.

    Eigenvalues are clipped at zero. A clearly negative eigenvalue means the
    factor is not positive semi-definite and raises.

    Parameters
    ----------
    a : array-like of shape (n, n)
        A symmetric PSD matrix.
    name : str, default="factor"
        Name used in error messages.

    Returns
    -------
    w : ndarray of shape (n,)
        Eigenvalues, ascending, clipped at zero.
    u : ndarray of shape (n, n)
        Orthonormal eigenvectors (columns).

    Raises
    ------
    ValueError
        If ``a`` is not square, symmetric, finite or PSD.

    Warns
    -----
    RuntimeWarning
        If an eigenvalue below ``-1e-8 * max(eig)`` was clipped.

    Examples
    --------
    >>> import numpy as np
    >>> w, u = factor_eigh(np.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> w
    array([1., 3.])
    """
    xp = namespace(a)
    if xp is np:
        w, u = _robust_eigh(check_symmetric(a, name), name)
    else:  # the data's namespace (e.g. a GPU): its own eigh, symmetrised first
        mat: Any = a
        w, u = xp.linalg.eigh(0.5 * (mat + mat.T))
    size = int(w.shape[0])
    top = max(float(w[-1]) if size else 0.0, 0.0)
    low = float(w[0]) if size else 0.0
    if low < -NEG_EIG_ERROR * max(top, np.finfo(float).tiny):
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {low:.3g}, "
            f"largest {top:.3g}. Use a valid (PSD) kernel for this axis."
        )
    if low < -NEG_EIG_WARN * top:
        warnings.warn(
            f"{name} has a negative eigenvalue {low:.3g} (largest {top:.3g}); "
            "clipped to zero.",
            RuntimeWarning,
            stacklevel=2,
        )
    if xp is np:
        return np.maximum(w, 0.0), u
    return xp.where(w < 0, xp.zeros_like(w), w), u


def kron_eigh(
    factors: Sequence[ArrayLike],
) -> tuple[list[FloatArray], list[FloatArray]]:
    r"""Eigendecompose every factor of a Kronecker product.

    Notes
    -----
    If :math:`A_d = U_d \Lambda_d U_d^T` then
    :math:`\bigotimes_d A_d = (\bigotimes_d U_d)(\bigotimes_d \Lambda_d)
    (\bigotimes_d U_d)^T`. Cost :math:`O(\sum_d n_d^3)`.

    Returns
    -------
    eigvals : list of ndarray
        Per-factor eigenvalues; the product's are ``kron_outer(eigvals)``.
    eigvecs : list of ndarray
        Per-factor eigenvectors.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.diag([1.0, 2.0]), np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> ws, us = kron_eigh([A, B])
    >>> np.sort(kron_outer(ws))
    array([1., 2., 3., 6.])
    """
    pairs = [factor_eigh(f, f"factor {d}") for d, f in enumerate(factors)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def kron_solve_shifted(
    eigvals: FloatArray,
    eigvecs: Sequence[FloatArray],
    shift: float,
    b: ArrayLike,
) -> FloatArray:
    r"""Solve ``(kron(A_1, ..., A_D) + shift * I) x = b`` from factor eigenpairs.

    Parameters
    ----------
    eigvals : ndarray of shape (N,)
        Eigenvalues of the product, ``kron_outer(per_factor_eigvals)``.
    eigvecs : sequence of ndarray
        Per-factor eigenvectors ``U_d``.
    shift : float
        The diagonal shift ``s``; ``eigvals + s`` must be positive.
    b : array-like of shape (N,) or (N, k)
        Right-hand side(s).

    Returns
    -------
    ndarray of shape (N,) or (N, k)
        The solution.

    Notes
    -----
    :math:`(K + sI)^{-1} b = U (\Lambda + sI)^{-1} U^T b` with
    :math:`U = \bigotimes_d U_d`; cost :math:`O(N \sum_d n_d)`.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.array([[2.0, 1.0], [1.0, 2.0]]), np.eye(3)
    >>> ws, us = kron_eigh([A, B])
    >>> x = kron_solve_shifted(kron_outer(ws), us, 0.5, np.ones(6))
    >>> bool(np.allclose((np.kron(A, B) + 0.5 * np.eye(6)) @ x, 1.0))
    True
    """
    lam = np.asarray(eigvals) + shift
    if np.any(lam <= 0):
        raise np.linalg.LinAlgError(
            "the shifted Kronecker product is singular; use a positive shift (noise)."
        )
    b = np.asarray(b, dtype=np.float64)
    rot = kron_matvec([u.T for u in eigvecs], b)
    rot = rot / lam if rot.ndim == 1 else rot / lam[:, None]
    return kron_matvec(list(eigvecs), rot)


def kron_logdet(eigvals: Sequence[FloatArray], shift: float = 0.0) -> float:
    r"""Return ``log det(kron(A_1, ..., A_D) + shift * I)`` from factor eigenvalues.

    Notes
    -----
    With no shift, :math:`\log|A \otimes B| = n_B \log|A| + n_A \log|B|`
    (cost :math:`O(\sum_d n_d)`); with a shift, the sum of
    :math:`\log(\lambda_i + s)` over all :math:`N` eigenvalues.

    Examples
    --------
    >>> import numpy as np
    >>> A, B = np.diag([1.0, 2.0]), np.diag([3.0, 4.0])
    >>> bool(np.isclose(kron_logdet([np.diag(A), np.diag(B)]),
    ...                 np.linalg.slogdet(np.kron(A, B))[1]))
    True
    """
    ws = [np.asarray(w, dtype=np.float64) for w in eigvals]
    if shift == 0.0:
        # log|A (x) B| = n_B log|A| + n_A log|B|
        sizes = [w.size for w in ws]
        total = int(np.prod(sizes))
        if any(np.any(w <= 0) for w in ws):
            raise np.linalg.LinAlgError("the Kronecker product is singular.")
        return float(sum(total // n * np.sum(np.log(w)) for n, w in zip(sizes, ws)))
    lam = kron_outer(ws) + shift
    if np.any(lam <= 0):
        raise np.linalg.LinAlgError("the shifted Kronecker product is singular.")
    return float(np.sum(np.log(lam)))


def kron_quad_form(
    eigvals: FloatArray, eigvecs: Sequence[FloatArray], shift: float, y: ArrayLike
) -> float:
    r"""Return ``y^T (kron(A_1, ..., A_D) + shift * I)^{-1} y``.

    Notes
    -----
    :math:`\|(\Lambda + sI)^{-1/2} U^T y\|^2`, cost :math:`O(N \sum_d n_d)`.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> ws, us = kron_eigh([A, A])
    >>> y = np.arange(4.0)
    >>> K = np.kron(A, A) + np.eye(4)
    >>> bool(np.isclose(kron_quad_form(kron_outer(ws), us, 1.0, y),
    ...                 y @ np.linalg.solve(K, y)))
    True
    """
    rot = kron_matvec([u.T for u in eigvecs], np.asarray(y, dtype=np.float64))
    return float(np.sum(rot**2 / (np.asarray(eigvals) + shift)))


#: Largest intermediate array (in float64 entries) the face-splitting helpers
#: build at once; larger problems are processed in chunks of rows.
_CHUNK_ENTRIES = 2**24


def face_split_matvec(mats: Sequence[FloatArray], x: Any) -> FloatArray:
    r"""Multiply the face-splitting product of ``mats`` by a grid vector.

    Row ``i`` of the face-splitting (row-wise Kronecker) product is
    ``kron(A_1[i], ..., A_D[i])``; this returns that matrix times ``x`` without
    forming it. It is the cross-covariance of ``M`` scattered points with a grid
    applied to a grid vector.

    Parameters
    ----------
    mats : sequence of ndarray of shape (M, n_d)
        Per-axis rows.
    x : array-like of shape (prod(n_d),)
        A C-order grid vector.

    Returns
    -------
    ndarray of shape (M,)
        ``sum_j x[j] prod_d A_d[i, j_d]``.

    Notes
    -----
    Contracts the last axis with one GEMM, then the others row by row:
    cost :math:`O(M N)`, memory :math:`O(N / n_D \cdot M_{chunk})`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B, x = rng.random((4, 2)), rng.random((4, 3)), rng.random(6)
    >>> rows = np.stack([np.kron(A[i], B[i]) for i in range(4)])
    >>> bool(np.allclose(face_split_matvec([A, B], x), rows @ x))
    True
    """
    xp = namespace(x, *mats)
    x = _float64_if_numpy(xp, x)
    sizes = [int(a.shape[1]) for a in mats]
    m = int(mats[0].shape[0])
    n_cells = int(np.prod(x.shape))
    step = max(1, _CHUNK_ENTRIES // max(1, n_cells // sizes[-1]))
    out = zeros_like_ref((m,), x)
    t = xp.reshape(x, (-1, sizes[-1]))
    for lo in range(0, m, step):
        rows = slice(lo, min(m, lo + step))
        r = t @ mats[-1][rows, :].T  # (n_1 ... n_{D-1}, m_chunk)
        for a, n in zip(mats[-2::-1], sizes[-2::-1]):
            r = _contract_middle(xp, xp.reshape(r, (-1, n, r.shape[-1])), a[rows, :])
        out[rows] = xp.reshape(r, (-1,))
    return out


def _contract_middle(xp: Any, r: FloatArray, a: FloatArray) -> FloatArray:
    """Return ``s[p, m] = sum_j r[p, j, m] a[m, j]``."""
    if xp is np:
        return np.einsum("pjm,mj->pm", r, a)
    # one batched matrix-vector product per point m (array API has no einsum)
    prod = xp.matmul(xp.permute_dims(r, (2, 0, 1)), a[:, :, None])
    return prod[:, :, 0].T


def face_split_gram(mats: Sequence[FloatArray], weights: Any) -> FloatArray:
    """Return ``F diag(w) F^T`` for the face-splitting product ``F`` of ``mats``.

    Parameters
    ----------
    mats : sequence of ndarray of shape (M, n_d)
        Per-axis rows of ``F`` (see :func:`face_split_matvec`).
    weights : array-like of shape (prod(n_d),)
        The diagonal weights, a C-order grid vector.

    Returns
    -------
    ndarray of shape (M, M)
        The weighted Gram matrix.

    Notes
    -----
    Forms ``F`` one block of the first axis at a time: cost :math:`O(M^2 N)`,
    memory :math:`O(M N / n_1)` at most per block.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B, w = rng.random((4, 2)), rng.random((4, 3)), rng.random(6)
    >>> F = np.stack([np.kron(A[i], B[i]) for i in range(4)])
    >>> bool(np.allclose(face_split_gram([A, B], w), (F * w) @ F.T))
    True
    """
    xp = namespace(weights, *mats)
    weights = _float64_if_numpy(xp, weights)
    w = xp.reshape(weights, tuple(int(a.shape[1]) for a in mats))
    m = int(mats[0].shape[0])
    rest = int(np.prod(w.shape[1:]))
    step = max(1, _CHUNK_ENTRIES // max(1, m * rest))
    out = zeros_like_ref((m, m), w)
    for lo in range(0, w.shape[0], step):
        block = slice(lo, min(w.shape[0], lo + step))
        f = mats[0][:, block]
        for a in mats[1:]:
            f = xp.reshape(f[:, :, None] * a[:, None, :], (m, -1))
        out += (f * xp.reshape(w[block, ...], (-1,))) @ f.T
    return out


__all__ = [
    "face_split_gram",
    "face_split_matvec",
    "factor_eigh",
    "kron_dense",
    "kron_diag",
    "kron_eigh",
    "kron_logdet",
    "kron_matvec",
    "kron_outer",
    "kron_quad_form",
    "kron_solve_shifted",
]


def face_split_rows(mats: list[FloatArray]) -> FloatArray:
    """Return the explicit face-splitting product (rows ``kron(A_1[i], ...)``)."""
    out = mats[0]
    m = out.shape[0]
    for a in mats[1:]:
        out = (out[:, :, None] * a[:, None, :]).reshape(m, -1)
    return out
