"""The product kernel over grid axes: one scikit-learn kernel per column group."""

from __future__ import annotations

import itertools
import numbers
import re
from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.linalg import DenseOperator, KroneckerProduct, StructuredOperator

_FACTOR_KEY = re.compile(r"k(\d+)")


def _check_kernels(kernels: object) -> list[Any]:
    """Return ``kernels`` as a non-empty list of scikit-learn kernels or raise."""
    if not isinstance(kernels, (list, tuple)) or not all(
        isinstance(k, Kernel) for k in kernels
    ):
        seen = (
            "[" + ", ".join(type(k).__name__ for k in kernels) + "]"
            if isinstance(kernels, (list, tuple))
            else type(kernels).__name__
        )
        raise TypeError(
            "kernels must be a list of scikit-learn kernels, one per axis; got "
            f"{seen}. Wrap a single kernel in a list, e.g. kernels=[RBF()]."
        )
    if not kernels:
        raise ValueError("kernels must hold at least one kernel; got an empty list.")
    return list(kernels)


def _as_column(value: object, axes: object) -> int:
    """Return one column index of ``axes`` as an int or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            "axes must hold non-negative integer column indices; got "
            f"{value!r} in axes={axes!r}."
        )
    return int(value)


def _check_axes(axes: object, n_kernels: int) -> list[list[int]]:
    """Return ``axes`` as ``n_kernels`` disjoint lists of column indices or raise."""
    if axes is None:
        return [[d] for d in range(n_kernels)]
    if (
        isinstance(axes, str)
        or not isinstance(axes, (Sequence, np.ndarray))
        or len(axes) != n_kernels
    ):
        raise ValueError(
            f"axes must be a list of {n_kernels} column lists, one per kernel; "
            f"got axes={axes!r}."
        )
    groups = [
        [_as_column(c, axes) for c in g]
        if isinstance(g, (Sequence, np.ndarray)) and not isinstance(g, str)
        else [_as_column(g, axes)]
        for g in axes
    ]
    if not all(groups):
        raise ValueError(f"axes must not contain an empty group; got axes={axes!r}.")
    flat = [c for g in groups for c in g]
    repeated = sorted({c for c in flat if flat.count(c) > 1})
    if repeated:
        raise ValueError(
            f"axes must not repeat a column; column(s) {repeated} appear more than "
            f"once in axes={axes!r}. Give each column to exactly one kernel."
        )
    return groups


def _leave_one_out_products(mats: list[FloatArray]) -> list[FloatArray]:
    """Return ``[prod_{e != d} mats[e] for d]`` without dividing (zeros are safe)."""
    ones = np.ones_like(mats[0])
    before = list(itertools.accumulate(mats[:-1], np.multiply, initial=ones))
    after = list(itertools.accumulate(mats[:0:-1], np.multiply, initial=ones))
    return [b * a for b, a in zip(before, after[::-1], strict=True)]


class KroneckerKernel(Kernel):
    r"""Product of scikit-learn kernels, each acting on its own group of columns.

    Parameters
    ----------
    kernels : list of Kernel
        One scikit-learn kernel per grid axis (``RBF``, ``Matern``, sums and
        products of kernels...). Factor ``d`` is called on ``X[:, axes[d]]``.
    axes : list of (list of int or int), default=None
        The columns of ``X`` that each factor sees; a plain int ``c`` means
        ``[c]``. The groups must be disjoint. ``None`` gives factor ``d`` the
        column ``d``.

    Notes
    -----
    The kernel and, on a grid in C order (last axis fastest), its Gram matrix:

    .. math::
        k(x, x') = \prod_d k_d(x_{A_d}, x'_{A_d}), \qquad
        K = K_1 \otimes \cdots \otimes K_D.

    ``__call__`` forms the dense ``N x N`` product, cost :math:`O(N^2 D)`, so
    that ``GaussianProcessRegressor`` can use the kernel and serve as the
    reference. ``factor_grams`` and ``as_operator`` cost
    :math:`O(\sum_d n_d^2)` kernel evaluations. The gradient for factor
    ``d`` is :math:`\partial K_d \odot \prod_{e \ne d} K_e`. A
    ``WhiteKernel`` factor keys on row identity, not on equal coordinates, so
    the dense and Kronecker paths then disagree; model noise outside the
    product.

    References
    ----------
    Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
    Models. PhD thesis, University of Cambridge.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF, Matern
    >>> from kronecker_gp.kernels import KroneckerKernel
    >>> kernel = KroneckerKernel([RBF(1.0), Matern(2.0, nu=1.5)], axes=[[0, 1], 2])
    >>> kernel
    KroneckerKernel(RBF(length_scale=1) @ [0, 1], Matern(length_scale=2, nu=1.5) @ [2])
    >>> [hp.name for hp in kernel.hyperparameters]
    ['k0__length_scale', 'k1__length_scale']
    >>> space = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> time = np.linspace(0.0, 1.0, 4)
    >>> K_space, K_time = kernel.factor_grams([space, time])
    >>> X = np.array([[*s, t] for s in space for t in time])  # time varies fastest
    >>> bool(np.allclose(kernel(X), np.kron(K_space, K_time)))
    True
    """

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __init__(
        self,
        kernels: Sequence[Kernel],
        axes: Sequence[int | Sequence[int]] | None = None,
    ) -> None:
        self.kernels = kernels
        self.axes = axes

    # -- validation --------------------------------------------------------------
    def _factors(self) -> tuple[list[Any], list[list[int]]]:
        kernels = _check_kernels(self.kernels)
        return kernels, _check_axes(self.axes, len(kernels))

    @property
    def resolved_axes(self) -> list[list[int]]:
        """The validated column groups, one list of ints per factor."""
        return self._factors()[1]

    def _split_columns(self, X: ArrayLike, name: str) -> list[FloatArray]:
        axes = self.resolved_axes
        arr = np.atleast_2d(as_float_array(X, name, ndim=(1, 2)))
        need = max(max(g) for g in axes) + 1
        if arr.shape[1] < need:
            raise ValueError(
                f"{name} has {arr.shape[1]} columns but axes={axes} uses column "
                f"{need - 1}; pass {name} with at least {need} columns or fix axes."
            )
        return [arr[:, g] for g in axes]

    def _check_coords(self, coords: object, name: str) -> list[FloatArray]:
        axes = self.resolved_axes
        if not isinstance(coords, (list, tuple)) or len(coords) != len(axes):
            seen = (
                f"{len(coords)} arrays"
                if isinstance(coords, (list, tuple))
                else type(coords).__name__
            )
            raise ValueError(
                f"{name} must be a list of {len(axes)} per-axis coordinate arrays, "
                f"one per kernel; got {seen}."
            )
        out = []
        for d, (c, cols) in enumerate(zip(coords, axes, strict=True)):
            arr = as_float_array(c, f"{name}[{d}]", ndim=(1, 2))
            arr = arr[:, None] if arr.ndim == 1 else arr
            if arr.shape[0] == 0 or arr.shape[1] != len(cols):
                raise ValueError(
                    f"{name}[{d}] must have shape (n_{d}, {len(cols)}) for "
                    f"axes[{d}]={cols} with n_{d} >= 1; got shape {arr.shape}."
                )
            out.append(arr)
        return out

    # -- the scikit-learn kernel protocol ----------------------------------------
    def __call__(
        self, X: ArrayLike, Y: ArrayLike | None = None, eval_gradient: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return the dense product Gram ``k(X, Y)`` and optionally its gradient.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
            Left argument.
        Y : array-like of shape (n_samples_Y, n_features), default=None
            Right argument; ``None`` evaluates ``k(X, X)``.
        eval_gradient : bool, default=False
            Also return the gradient with respect to ``theta`` (``Y`` must be None).

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
            The Gram matrix.
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims)
            Only when ``eval_gradient`` is True.

        Raises
        ------
        ValueError
            If ``Y`` is given with ``eval_gradient``, or ``X`` lacks columns.
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        kernels = self._factors()[0]
        xs = self._split_columns(X, "X")
        if not eval_gradient:
            ys = [None] * len(xs) if Y is None else self._split_columns(Y, "Y")
            grams = [k(x, y) for k, x, y in zip(kernels, xs, ys, strict=True)]
            return np.asarray(np.prod(grams, axis=0))
        pairs = [k(x, eval_gradient=True) for k, x in zip(kernels, xs, strict=True)]
        grams = [K for K, _ in pairs]
        others = _leave_one_out_products(grams)
        grads = [dK * o[:, :, None] for (_, dK), o in zip(pairs, others, strict=True)]
        return others[0] * grams[0], np.concatenate(grads, axis=2)

    def diag(self, X: ArrayLike) -> FloatArray:
        """Return ``np.diag(self(X))`` as the product of the factors' diagonals."""
        kernels = self._factors()[0]
        diags = [
            k.diag(x) for k, x in zip(kernels, self._split_columns(X, "X"), strict=True)
        ]
        return np.asarray(np.prod(diags, axis=0))

    def is_stationary(self) -> bool:
        """Return whether every factor is stationary."""
        return all(bool(k.is_stationary()) for k in self._factors()[0])

    @property
    def requires_vector_input(self) -> bool:
        """Always True: the kernel slices columns of a numeric ``X``."""
        return True

    # -- hyperparameter plumbing (as sklearn's compound kernels) ------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the parameters; ``deep`` adds ``k{d}`` and ``k{d}__<name>``."""
        params: dict[str, Any] = {"kernels": self.kernels, "axes": self.axes}
        if deep and isinstance(self.kernels, (list, tuple)):
            for d, k in enumerate(self.kernels):
                if isinstance(k, Kernel):
                    params[f"k{d}"] = k
                    params.update((f"k{d}__{n}", v) for n, v in k.get_params().items())
        return params

    def set_params(self, **params: Any) -> KroneckerKernel:
        """Set parameters; ``k{d}=kernel`` replaces factor ``d``."""
        swaps = {k: params.pop(k) for k in list(params) if _FACTOR_KEY.fullmatch(k)}
        if swaps:
            kernels = _check_kernels(self.kernels)
            for key, value in swaps.items():
                if int(key[1:]) >= len(kernels):
                    raise ValueError(
                        f"Invalid parameter {key} for {self!r}: the factors are "
                        f"k0..k{len(kernels) - 1}."
                    )
                kernels[int(key[1:])] = value
            self.kernels = kernels
        super().set_params(**params)
        return self

    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        """The factors' hyperparameters, names prefixed with ``k{d}__``."""
        return [
            Hyperparameter(
                f"k{d}__{h.name}", h.value_type, h.bounds, h.n_elements, h.fixed
            )
            for d, k in enumerate(self._factors()[0])
            for h in k.hyperparameters
        ]

    @property
    def theta(self) -> FloatArray:
        """The log-transformed free hyperparameters, factor by factor."""
        return np.concatenate([np.ravel(k.theta) for k in self._factors()[0]])

    @theta.setter
    def theta(self, theta: ArrayLike) -> None:
        for k, piece in zip(self._factors()[0], self.split_theta(theta), strict=True):
            k.theta = piece

    @property
    def bounds(self) -> FloatArray:
        """The log-transformed bounds of ``theta``, shape (n_dims, 2)."""
        return np.vstack([np.reshape(k.bounds, (-1, 2)) for k in self._factors()[0]])

    @property
    def n_theta_per_factor(self) -> list[int]:
        """The number of free hyperparameters of each factor."""
        return [int(np.size(k.theta)) for k in self._factors()[0]]

    def split_theta(self, theta: ArrayLike) -> list[FloatArray]:
        """Split a ``theta`` (or gradient) vector into the factors' pieces.

        Parameters
        ----------
        theta : array-like of shape (n_dims,)
            A vector laid out like ``self.theta``.

        Returns
        -------
        list of ndarray
            Piece ``d`` has shape ``(n_theta_per_factor[d],)``.

        Raises
        ------
        ValueError
            If ``theta`` is not 1-D with ``sum(n_theta_per_factor)`` entries.

        Examples
        --------
        >>> from sklearn.gaussian_process.kernels import RBF, ConstantKernel
        >>> kernel = KroneckerKernel([ConstantKernel() * RBF(), RBF()])
        >>> [piece.tolist() for piece in kernel.split_theta([1.0, 2.0, 3.0])]
        [[1.0, 2.0], [3.0]]
        """
        arr = np.asarray(theta, dtype=np.float64)
        sizes = self.n_theta_per_factor
        if arr.ndim != 1 or arr.shape[0] != sum(sizes):
            raise ValueError(
                f"theta must be 1-D with {sum(sizes)} entries ({sizes} per factor); "
                f"got shape {arr.shape}."
            )
        return list(np.split(arr, np.cumsum(sizes)[:-1]))

    # -- the Kronecker path ------------------------------------------------------
    @overload
    def factor_grams(
        self, coords: Sequence[ArrayLike], eval_gradient: Literal[False] = ...
    ) -> list[FloatArray]: ...
    @overload
    def factor_grams(
        self, coords: Sequence[ArrayLike], eval_gradient: Literal[True]
    ) -> list[tuple[FloatArray, FloatArray]]: ...
    def factor_grams(
        self, coords: Sequence[ArrayLike], eval_gradient: bool = False
    ) -> list[FloatArray] | list[tuple[FloatArray, FloatArray]]:
        """Return the per-axis Gram matrices ``K_d = k_d(coords[d])``.

        Parameters
        ----------
        coords : list of array-like of shape (n_d,) or (n_d, len(axes[d]))
            The coordinates of each grid axis; a 1-D array is one column.
        eval_gradient : bool, default=False
            Return ``(K_d, dK_d)`` pairs, ``dK_d`` of shape (n_d, n_d, n_theta_d).

        Returns
        -------
        list of ndarray of shape (n_d, n_d), or list of (K_d, dK_d) tuples
            One entry per factor, in axis order.

        Raises
        ------
        ValueError
            If ``coords`` has the wrong length, column counts, or non-finite values.

        Examples
        --------
        >>> from sklearn.gaussian_process.kernels import RBF
        >>> kernel = KroneckerKernel([RBF(1.0), RBF(2.0)])
        >>> [K.shape for K in kernel.factor_grams([[0.0, 1.0], [0.0, 1.0, 2.0]])]
        [(2, 2), (3, 3)]
        """
        pts = self._check_coords(coords, "coords")
        kernels = self._factors()[0]
        if eval_gradient:
            return [k(x, eval_gradient=True) for k, x in zip(kernels, pts, strict=True)]
        return [k(x) for k, x in zip(kernels, pts, strict=True)]

    def factor_cross(
        self, coords_a: Sequence[ArrayLike], coords_b: Sequence[ArrayLike]
    ) -> list[FloatArray]:
        """Return the per-axis cross-covariances ``k_d(coords_a[d], coords_b[d])``.

        Parameters
        ----------
        coords_a, coords_b : list of array-like of shape (n_d,) or (n_d, p_d)
            Two sets of per-axis coordinates, as in :meth:`factor_grams`.

        Returns
        -------
        list of ndarray of shape (n_a_d, n_b_d)
            One cross-covariance per factor.
        """
        a = self._check_coords(coords_a, "coords_a")
        b = self._check_coords(coords_b, "coords_b")
        return [k(x, y) for k, x, y in zip(self._factors()[0], a, b, strict=True)]

    def as_operator(self, coords: Sequence[ArrayLike]) -> StructuredOperator:
        """Return the grid covariance as a ``KroneckerProduct`` of factor Grams.

        Parameters
        ----------
        coords : list of array-like of shape (n_d,) or (n_d, p_d)
            The coordinates of each grid axis, as in :meth:`factor_grams`.

        Returns
        -------
        KroneckerProduct or DenseOperator
            ``K_1 (x) ... (x) K_D``; a ``DenseOperator`` when there is one factor.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.gaussian_process.kernels import RBF
        >>> kernel = KroneckerKernel([RBF(1.0), RBF(2.0)])
        >>> op = kernel.as_operator([[0.0, 1.0], [0.0, 1.0, 2.0]])
        >>> op.shape, type(op).__name__
        ((6, 6), 'KroneckerProduct')
        """
        grams = self.factor_grams(coords)
        return KroneckerProduct(*grams) if len(grams) > 1 else DenseOperator(grams[0])

    # -- comparison and display --------------------------------------------------
    def __eq__(self, other: object) -> bool:
        """Return whether ``other`` has equal factors on the same columns."""
        if not isinstance(other, KroneckerKernel) or type(self) is not type(other):
            return False
        try:
            (ka, aa), (kb, ab) = self._factors(), other._factors()
        except (TypeError, ValueError):
            return self is other
        return (
            aa == ab
            and len(ka) == len(kb)
            and all(a == b for a, b in zip(ka, kb, strict=True))
        )

    def __repr__(self) -> str:
        """Return ``KroneckerKernel(k_0 @ axes_0, k_1 @ axes_1, ...)``."""
        try:
            kernels, axes = self._factors()
        except (TypeError, ValueError):
            return f"KroneckerKernel(kernels={self.kernels!r}, axes={self.axes!r})"
        parts = ", ".join(
            f"{k!r} @ {cols}" for k, cols in zip(kernels, axes, strict=True)
        )
        return f"KroneckerKernel({parts})"
