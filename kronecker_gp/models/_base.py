"""What the grid estimators share: axes, product kernels, test grids."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.base import clone
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel

from kronecker_gp._array_api import float_dtype, is_numpy, namespace, to_numpy
from kronecker_gp._grid import Grid, check_coords, check_whole_grid_settings
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import KroneckerKernel, SeparableSum
from kronecker_gp.solvers._eigen import ARRAY_API_SUPPORTED


def resolve_axes(kernels: Any, axes: Any, n_features: int) -> list[list[int]]:
    """Return the column groups of ``X``, one per kernel.

    ``axes`` given wins; else one group of all columns for a single kernel (or
    ``kernels=None``, or one bare kernel), a ``KroneckerKernel``'s own axes,
    or one column per kernel when there are as many kernels as columns.
    """
    if axes is not None:
        return [
            [int(a)] if isinstance(a, numbers.Integral) else [int(c) for c in a]
            for a in axes
        ]
    if isinstance(kernels, (KroneckerKernel, SeparableSum)):
        return kernels.resolved_axes
    if kernels is None or isinstance(kernels, Kernel):
        return [list(range(n_features))]
    n_k = len(kernels)
    if n_k == 1:
        return [list(range(n_features))]
    if n_k != n_features:
        raise ValueError(
            f"{n_k} kernels but X has {n_features} columns; pass axes=[[...], ...] "
            "to say which columns each kernel uses."
        )
    return [[j] for j in range(n_features)]


def build_kernel(kernels: Any, axes: list[list[int]]) -> KroneckerKernel:
    """Return a fresh product kernel over ``axes`` (``None``: constant x RBF).

    A ``SeparableSum`` (sum of product kernels) is returned as a fresh copy
    too; only ``KroneckerGP`` has a route for it.
    """
    if kernels is None:
        return KroneckerKernel([ConstantKernel(1.0) * RBF(1.0)], axes=axes)
    if isinstance(kernels, (KroneckerKernel, SeparableSum)):
        return clone(kernels).set_params(axes=axes)
    if isinstance(kernels, Kernel) or not isinstance(kernels, Sequence):
        raise TypeError(
            "kernels must be a list of scikit-learn kernels (one per axis), a "
            f"KroneckerKernel, a SeparableSum or None; got {type(kernels).__name__}."
        )
    return KroneckerKernel([clone(k) for k in kernels], axes=axes)


def check_test_coords(train: Grid, coords: Sequence[ArrayLike]) -> Grid:
    """Return the test grid, checked against the training grid's axis widths."""
    test = Grid(check_coords(coords))
    if test.widths != train.widths:
        raise ValueError(
            f"coords must give {len(train.widths)} axes with {train.widths} "
            f"columns each (as in training); got {test.widths}."
        )
    return test


def check_grid_targets(
    coords: Sequence[ArrayLike], Y: ArrayLike, axes: Any, *, multi_output: bool = False
) -> tuple[Grid, FloatArray, list[list[int]]]:
    """Return the grid, the grid-shaped targets and the axes for ``fit_grid``.

    ``Y`` may hold NaN (missing cells); ``axes`` (the estimator's parameter)
    must be None or match the coordinates' column blocks. With
    ``multi_output``, ``Y`` may have one more axis at the end: the targets.
    """
    grid = Grid(check_coords(coords))
    values = as_float_array(Y, "Y", allow_nan=True)
    targets = multi_output and values.ndim == len(grid.shape) + 1
    if values.shape[: len(grid.shape)] != grid.shape or not (
        targets or values.ndim == len(grid.shape)
    ):
        extra = " or the grid's shape + (n_targets,)" if multi_output else ""
        raise ValueError(
            f"Y must have the grid's shape {grid.shape} (one axis per coords "
            f"entry){extra}; got {values.shape}."
        )
    if targets and values.shape[-1] < 1:
        raise ValueError(f"Y has an empty targets axis; got shape {values.shape}.")
    blocks = grid.block_axes()
    if axes is not None and [list(a) for a in axes] != blocks:
        raise ValueError(
            f"axes={axes!r} does not match the coords' column blocks {blocks}; "
            "leave axes=None with fit_grid."
        )
    return grid, values, blocks


def uses_array_api(*arrays: Any) -> bool:
    """Return whether these inputs take the array-API path.

    That is scikit-learn's ``array_api_dispatch`` set and a non-NumPy array
    (PyTorch, CuPy, ``array_api_strict``, ...) among ``arrays``.
    """
    if not get_config().get("array_api_dispatch", False):
        return False
    return any(not is_numpy(a) for a in arrays)


def host_coords(coords: Sequence[Any]) -> list[Any]:
    """Return per-axis coordinates with any non-NumPy array copied to NumPy.

    Coordinates are small (one axis each); the kernels evaluate them in NumPy.
    """
    return [to_numpy(c) if not is_numpy(c) else c for c in coords]


def check_array_api_grid(
    coords: Sequence[ArrayLike], Y: Any, axes: Any, noise: Any, noise_axes: Any
) -> tuple[Grid, Any, list[list[int]]]:
    """Return the grid, the flat targets (in ``Y``'s namespace) and the axes.

    The array-API counterpart of :func:`check_grid_targets`: ``Y`` stays in
    its namespace and on its device, as float32 if given so, else float64.

    Raises
    ------
    ValueError
        If the shapes disagree, or a setting needs a route the array-API
        path does not take (per-cell or per-axis noise, several targets).
    TypeError
        If ``Y`` does not hold real numbers.
    """
    grid = Grid(check_coords(host_coords(coords)))
    xp = namespace(Y)
    blocks = check_whole_grid_settings(
        grid,
        tuple(int(n) for n in Y.shape),
        dtype=Y.dtype,
        real=bool(xp.isdtype(Y.dtype, ("real floating", "integral"))),
        noise=noise,
        noise_axes=noise_axes,
        axes=axes,
        supported=ARRAY_API_SUPPORTED,
        source=f"for a {type(Y).__name__} Y",
        remedy="NumPy arrays",
    )
    y = xp.reshape(xp.astype(Y, float_dtype(Y), copy=False), (-1,))
    return grid, y, blocks


def array_api_normalisation(y: Any, *, normalize: bool) -> tuple[float, float]:
    """Return the mean and std of a non-NumPy ``y`` (or 0 and 1), as Python floats.

    Also checks that ``y`` is finite (the array-API path takes complete
    grids). The statistics follow
    :func:`~kronecker_gp.models._contract.safe_normalisation`.

    Raises
    ------
    ValueError
        If ``y`` holds NaN (missing cells) or infinite values.
    """
    xp = namespace(y)
    if not bool(xp.all(xp.isfinite(y))):
        raise ValueError(
            "Y holds NaN or infinite values: missing cells take the Schur-complement "
            f"route, which runs on NumPy arrays only; {ARRAY_API_SUPPORTED}."
        )
    if not normalize:
        return 0.0, 1.0
    scale = float(xp.max(xp.abs(y)))
    if scale == 0.0:
        return 0.0, 1.0
    unit = y / scale
    std = float(xp.std(unit))
    eps = float(np.finfo(float).eps)
    return float(xp.mean(unit)) * scale, std * scale if std >= 10 * eps else 1.0
