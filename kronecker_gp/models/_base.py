"""What the grid estimators share: axes, product kernels, test grids."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from sklearn.base import clone
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel

from kronecker_gp._grid import Grid, check_coords
from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import KroneckerKernel, SeparableSum


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
