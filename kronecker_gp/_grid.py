"""Grid: per-axis coordinates and their Cartesian product in C order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kronecker_gp._typing import ArrayLike, FloatArray, IntArray
from kronecker_gp._validation import as_float_array


def check_coords(coords: object, name: str = "coords") -> list[FloatArray]:
    """Validate per-axis coordinates and return them as 2-D float arrays.

    Parameters
    ----------
    coords : sequence of array-like
        One array per axis, each of shape (n_d,) or (n_d, p_d).
    name : str, default="coords"
        Argument name used in error messages.

    Returns
    -------
    list of ndarray of shape (n_d, p_d)
        The coordinates; 1-D inputs become one column.

    Raises
    ------
    TypeError
        If ``coords`` is not a list or tuple of arrays.
    ValueError
        If an axis is empty, has NaN/inf, is more than 2-D or has duplicates.
    """
    if isinstance(coords, np.ndarray) or not isinstance(coords, Sequence):
        raise TypeError(
            f"{name} must be a list of per-axis coordinate arrays; got "
            f"{type(coords).__name__}."
        )
    if len(coords) == 0:
        raise ValueError(f"{name} must hold at least one axis; got an empty list.")
    out = []
    for d, c in enumerate(coords):
        arr = as_float_array(c, f"{name}[{d}]", ndim=(1, 2))
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{name}[{d}] is empty (shape {arr.shape}).")
        n_unique = np.unique(arr, axis=0).shape[0]
        if n_unique != arr.shape[0]:
            raise ValueError(
                f"{name}[{d}] has duplicate coordinates ({arr.shape[0] - n_unique} "
                f"repeated of {arr.shape[0]}); each grid axis needs distinct values."
            )
        out.append(arr)
    return out


@dataclass(frozen=True)
class Grid:
    """The Cartesian product of per-axis coordinates, flattened in C order.

    Parameters
    ----------
    coords : list of ndarray of shape (n_d, p_d)
        Per-axis coordinates (validated by :func:`check_coords`).

    Examples
    --------
    >>> import numpy as np
    >>> g = Grid([np.array([[0.0], [1.0]]), np.array([[10.0], [20.0], [30.0]])])
    >>> g.shape
    (2, 3)
    >>> g.to_rows()[:4]
    array([[ 0., 10.],
           [ 0., 20.],
           [ 0., 30.],
           [ 1., 10.]])
    """

    coords: list[FloatArray]

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of points per axis."""
        return tuple(int(c.shape[0]) for c in self.coords)

    @property
    def size(self) -> int:
        """Number of grid cells, the product of :attr:`shape`."""
        return int(np.prod(self.shape))

    @property
    def widths(self) -> list[int]:
        """Number of coordinate columns per axis."""
        return [int(c.shape[1]) for c in self.coords]

    def block_axes(self) -> list[list[int]]:
        """Column groups when the axes' coordinates are concatenated in order."""
        edges = np.cumsum([0, *self.widths])
        return [list(range(int(a), int(b))) for a, b in zip(edges[:-1], edges[1:])]

    def to_rows(self) -> FloatArray:
        """Return all cells as rows ``(N, sum(p_d))`` in C order (small grids)."""
        idx = np.indices(self.shape).reshape(len(self.shape), -1)
        return np.hstack([c[i] for c, i in zip(self.coords, idx)])


def grid_from_rows(
    X: FloatArray, axes: Sequence[Sequence[int]], *, complete: bool = True
) -> tuple[Grid, IntArray]:
    """Find the grid whose cells are the rows of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite rows.
    axes : list of list of int
        Column groups, one per grid axis.
    complete : bool, default=True
        Require the rows to cover every cell exactly once.

    Returns
    -------
    grid : Grid
        Per-axis coordinates (sorted unique values; with one axis, the rows as
        given, so any ``X`` is a valid one-axis grid).
    cell : ndarray of shape (n_samples,)
        The flat C-order grid cell of each row.

    Raises
    ------
    ValueError
        If ``complete`` and the rows are not a complete grid without duplicates.
    """
    if len(axes) == 1:
        return Grid([X[:, list(axes[0])]]), np.arange(X.shape[0])
    coords, inverse = [], []
    for cols in axes:
        uniq, inv = np.unique(X[:, list(cols)], axis=0, return_inverse=True)
        coords.append(uniq)
        inverse.append(inv.reshape(-1))
    grid = Grid(coords)
    cell = np.ravel_multi_index(tuple(inverse), grid.shape)
    counts = np.bincount(cell, minlength=grid.size)
    if counts.max() > 1:
        raise ValueError(
            f"X has {int((counts > 1).sum())} grid cells given more than once over "
            f"axes {[list(a) for a in axes]}; average or drop the duplicate rows."
        )
    if complete and X.shape[0] != grid.size:
        sizes = " x ".join(str(n) for n in grid.shape)
        raise ValueError(
            f"X does not form a complete grid over axes {[list(a) for a in axes]}: "
            f"expected {grid.size} rows ({sizes}), got {X.shape[0]}. Fill the missing "
            "cells or use GaussianProcessRegressor."
        )
    return grid, cell


def rows_to_grid_values(
    y: ArrayLike, cell: IntArray, shape: tuple[int, ...]
) -> FloatArray:
    """Scatter row values ``y`` into a C-order grid array of ``shape``."""
    out = np.full(int(np.prod(shape)), np.nan)
    out[cell] = np.asarray(y, dtype=np.float64)
    return out.reshape(shape)


def drop_empty_slices(grid: Grid, Y: FloatArray, *extra: FloatArray) -> tuple[Any, ...]:
    """Drop every axis slice of ``Y`` that has no observed (non-NaN) cell.

    Parameters
    ----------
    grid : Grid
        The grid.
    Y : ndarray of shape grid.shape or grid.shape + (n_targets,)
        Values with NaN for missing cells; with a trailing targets axis, a
        slice is dropped where every target is missing.
    *extra : ndarray of shape grid.shape (+ trailing axes)
        Arrays restricted to the same cells (e.g. per-cell noise).

    Returns
    -------
    grid : Grid
        The grid restricted to the kept coordinates.
    Y : ndarray
        The values on it.

    Examples
    --------
    >>> import numpy as np
    >>> g = Grid([np.arange(3.0)[:, None], np.arange(2.0)[:, None]])
    >>> Y = np.array([[1.0, np.nan], [np.nan, np.nan], [2.0, np.nan]])
    >>> g2, Y2 = drop_empty_slices(g, Y)
    >>> g2.shape, Y2.ravel().tolist()
    ((2, 1), [1.0, 2.0])
    """
    n_axes = len(grid.shape)
    observed = ~np.isnan(Y)
    if Y.ndim > n_axes:
        observed = np.asarray(observed.any(axis=tuple(range(n_axes, Y.ndim))))
    keep = []
    for d in range(n_axes):
        others = tuple(e for e in range(n_axes) if e != d)
        keep.append(np.flatnonzero(observed.any(axis=others)))
    index = np.ix_(*keep)
    kept = Grid([c[k] for c, k in zip(grid.coords, keep)])
    return (kept, Y[index], *(o[index] for o in extra))


def check_whole_grid_settings(  # noqa: PLR0913 - the settings a streamed route refuses
    grid: Grid,
    shape: tuple[int, ...],
    *,
    dtype: object,
    real: bool,
    noise: object,
    noise_axes: object,
    axes: Any,
    supported: str,
    source: str,
    remedy: str,
) -> list[list[int]]:
    """Check ``Y``'s shape and the settings for a route that takes only these.

    The routes that keep ``Y`` where it is (a ``dask.array``, an array of
    another array-API namespace) take one target on the whole grid and a
    scalar iid noise; ``supported`` says so in every message, ``source``
    names the input (e.g. ``"with a dask.array Y"``) and ``remedy`` what to
    give instead (e.g. ``"NumPy arrays"``). Returns the grid's column blocks
    (the axes).

    Raises
    ------
    ValueError
        If ``Y`` has a targets axis or another shape than the grid, the
        noise is not a scalar with ``noise_axes`` None, or ``axes`` is not
        the grid's column blocks.
    TypeError
        If ``Y`` does not hold real numbers (``real`` False).
    """
    grid_shape = grid.shape
    if len(shape) == len(grid_shape) + 1 and shape[:-1] == grid_shape:
        raise ValueError(
            f"Y has a targets axis (shape {shape}); {supported}. Fit each target "
            f"on its own (Y[..., t]), or give {remedy}."
        )
    if shape != grid_shape:
        raise ValueError(
            f"Y must have the grid's shape {grid_shape} (one axis per coords "
            f"entry); got {shape}."
        )
    if not real:
        raise TypeError(f"Y must hold real numbers; got dtype {dtype}.")
    if not np.isscalar(noise) or noise_axes is not None:
        raise ValueError(
            f"noise must be a scalar and noise_axes None {source}: {supported}. "
            f"Per-cell or per-axis noise needs {remedy}."
        )
    blocks = grid.block_axes()
    if axes is not None and [list(a) for a in axes] != blocks:
        raise ValueError(
            f"axes={axes!r} does not match the coords' column blocks {blocks}; "
            "leave axes=None with fit_grid."
        )
    return blocks
