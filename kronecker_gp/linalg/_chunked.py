r"""Mode products over a dask array, chunk by chunk: grids larger than memory.

A grid vector of ``N = prod(n_d)`` cells stored as a ``dask.array`` (for
example opened from Zarr) is multiplied by small per-axis matrices, the
Kronecker identity of :func:`~kronecker_gp.linalg.kron_matvec` one mode at a
time:

.. math::
    \Big(\bigotimes_d A_d\Big) \operatorname{vec}(X) = \operatorname{vec}(X
    \times_1 A_1 \times_2 \cdots \times_D A_D).

A mode product needs its axis whole inside a chunk; every axis that is whole
in the chunks is applied in one pass (one task per chunk, the factors shared
by every task), then the chunks are changed so that the remaining axes are
whole (the other axes split to keep the chunk size), and so on. Changing the
chunks moves every cell (a transpose): arrays above :data:`STAGE_BYTES` go
through a temporary Zarr store on disk instead of memory, so peak memory
stays a few chunks per worker at any grid size.

Dask is optional: nothing here imports it at module level, and
:func:`is_dask_array` answers without importing it.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray

#: Arrays larger than this (bytes) are re-chunked through a temporary Zarr
#: store (in dask's ``temporary-directory``, else the system temp folder);
#: smaller ones in memory. 1 GiB: a re-chunk in memory holds up to the whole
#: array (dask keeps every piece until its new chunk is complete).
STAGE_BYTES = 2**30


def is_dask_array(x: Any) -> bool:
    """Return True if ``x`` is a ``dask.array.Array``, without importing dask.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.linalg._chunked import is_dask_array
    >>> is_dask_array(np.zeros(3))
    False
    """
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, module.Array)


def import_dask_array() -> Any:
    """Return the ``dask.array`` module, or raise an ImportError naming the extra."""
    try:
        import dask.array as da  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:  # pragma: no cover - dask is in the test extra
        raise ImportError(
            'Grids larger than memory need dask: pip install "kronecker-gp[dask]".'
        ) from exc
    return da


def _apply_block(block: FloatArray, *mats: FloatArray, axes: Sequence[int]) -> Any:
    """Multiply one chunk by ``mats[k]`` along ``axes[k]`` (whole in the chunk)."""
    out = block
    for a, d in zip(mats, axes):
        shape = out.shape
        pre, post = math.prod(shape[:d]), math.prod(shape[d + 1 :])
        cube = out.reshape(pre, shape[d], post)
        if post == 1:  # last axis: one GEMM, (pre, n) @ (n, m)
            res = cube[:, :, 0] @ a.T
        elif pre == 1:  # first axis: one GEMM, (m, n) @ (n, post)
            res = a @ cube[0]
        else:  # a middle axis: one GEMM per leading index
            res = np.matmul(a, cube)
        out = res.reshape(*shape[:d], a.shape[0], *shape[d + 1 :])
    return out


def _apply_whole_axes(x: Any, mats: dict[int, FloatArray]) -> Any:
    """One task per chunk: the mode products along axes whole in the chunks."""
    da = import_dask_array()
    axes = sorted(mats)
    ndim = x.ndim
    args: list[Any] = [x, tuple(range(ndim))]
    for k, d in enumerate(axes):
        # one single-chunk dask array per factor: a dependency shared by every
        # task (sent once per worker), not a copy inside each task
        m = da.from_array(mats[d], chunks=mats[d].shape)
        args += [m, (ndim + 2 * k, ndim + 2 * k + 1)]
    return da.blockwise(
        _apply_block,
        tuple(range(ndim)),
        *args,
        axes=axes,
        dtype=np.float64,
        adjust_chunks={d: mats[d].shape[0] for d in axes},
        concatenate=True,
        meta=np.empty((0,) * ndim, dtype=np.float64),
    )


def _smallest_factor(n: int) -> int:
    for p in range(2, math.isqrt(n) + 1):
        if n % p == 0:
            return p
    return n


def whole_axes_plan(
    shape: Sequence[int], chunk: Sequence[int], todo: Sequence[int], target: int
) -> tuple[list[int], list[int]]:
    """Choose axes of ``todo`` to make whole, and the new (regular) chunk sizes.

    As many ``todo`` axes as fit in ``target`` entries per chunk become whole
    (at least one); the other axes shrink, largest first, until the chunk
    holds at most ``target`` entries. An axis already split shrinks to a
    divisor of its chunk, so old and new chunk edges nest (Zarr staging).
    """
    whole: list[int] = []
    size = 1
    for d in sorted(todo, key=lambda e: shape[e]):
        if not whole or size * shape[d] <= target:
            whole.append(d)
            size *= shape[d]
    new = [int(c) for c in chunk]
    for d in whole:
        new[d] = int(shape[d])
    others = [d for d in range(len(shape)) if d not in whole]
    budget = max(1, target // size)
    while others and math.prod(new[d] for d in others) > budget:
        d = max(others, key=lambda e: new[e])
        if new[d] == 1:
            break
        if chunk[d] == shape[d]:
            new[d] = -(-new[d] // 2)
        else:
            new[d] //= _smallest_factor(new[d])
    return whole, new


def _regular(x: Any) -> Any:
    """Rechunk to regular chunks (all equal but a shorter last) where needed."""
    sizes = {}
    for d, c in enumerate(x.chunks):
        if any(v != c[0] for v in c[:-1]) or c[-1] > c[0]:
            sizes[d] = max(c)
    return x.rechunk(sizes) if sizes else x


def _staged(x: Any, chunks: Sequence[int]) -> Any:
    """Write ``x`` to a temporary Zarr store and read it back with ``chunks``.

    The store's chunks nest in both the old and the new chunks (each written
    by one task, each read whole). The folder is removed when the returned
    array (and every array computed from it) is garbage-collected.
    """
    import dask.config  # noqa: PLC0415 (optional dependency)
    import zarr  # noqa: PLC0415 (optional dependency)

    da = import_dask_array()
    old = [c[0] for c in x.chunks]
    inner = tuple(min(a, b) for a, b in zip(old, chunks))
    root = dask.config.get("temporary-directory", None) or tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="kronecker_gp-stage-", dir=root)
    try:
        z = zarr.create_array(
            store=path, shape=x.shape, chunks=inner, dtype="f8", compressors=None
        )
        da.store(x, z, lock=False)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    weakref.finalize(z, shutil.rmtree, path, True)
    return da.from_array(z, chunks=tuple(chunks))


def _whole_along(
    x: Any, axes: Sequence[int], limit: int, target: int | None = None
) -> Any:
    """Re-chunk ``x`` so that some of ``axes`` become whole (see the plan).

    Through a Zarr store above ``limit`` bytes; chunks of about ``target``
    entries (default: ``x``'s largest chunk).
    """
    x = _regular(x)
    if target is None:
        target = max(math.prod(max(c) for c in x.chunks), 1)
    _, new = whole_axes_plan(x.shape, [c[0] for c in x.chunks], axes, target)
    return _staged(x, new) if x.nbytes > limit else x.rechunk(tuple(new))


def mode_products(
    x: Any, mats: Sequence[FloatArray | None], *, stage_bytes: int | None = None
) -> Any:
    r"""Return ``x`` multiplied by ``mats[d]`` along every axis ``d``, chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array of shape (n_1, ..., n_D)
        A grid vector (C order), any chunks.
    mats : sequence of ndarray of shape (m_d, n_d) or None
        One small in-memory matrix per axis; None leaves the axis as it is.
    stage_bytes : int, optional
        Re-chunk through a temporary Zarr store above this many bytes
        (default :data:`STAGE_BYTES`); that step is computed on call.

    Returns
    -------
    dask.array.Array of shape (m_1, ..., m_D)
        ``kron_matvec(mats, x.reshape(-1)).reshape(m)``, lazy (but for a
        staged re-chunk); chunks about the size of ``x``'s.

    Notes
    -----
    :math:`(\bigotimes_d A_d) \operatorname{vec}(X) = \operatorname{vec}(X
    \times_1 A_1 \cdots \times_D A_D)`, one GEMM per chunk and axis: cost
    :math:`O(N \sum_d m_d)`, the same as in memory. Memory: a few chunks per
    worker plus the factors; a re-chunk in memory holds up to the array.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from kronecker_gp.linalg import kron_matvec
    >>> from kronecker_gp.linalg._chunked import mode_products
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.normal(size=(3, 4)), rng.normal(size=(5, 6))
    >>> X = rng.normal(size=(4, 6))
    >>> out = mode_products(da.from_array(X, chunks=(2, 3)), [A, B])
    >>> out.shape
    (3, 5)
    >>> bool(np.allclose(out.compute().ravel(), kron_matvec([A, B], X.ravel())))
    True
    """
    limit = STAGE_BYTES if stage_bytes is None else stage_bytes
    todo = [d for d, m in enumerate(mats) if m is not None]
    if len(mats) != x.ndim:
        raise ValueError(
            f"mats must have one entry per axis of x ({x.ndim}); got {len(mats)}."
        )
    for d in todo:
        m = mats[d]
        assert m is not None
        if m.ndim != 2 or m.shape[1] != x.shape[d]:
            raise ValueError(
                f"mats[{d}] must have shape (m, {x.shape[d]}); got {m.shape}."
            )
    target = max(math.prod(max(c) for c in x.chunks), 1)
    while todo:
        whole = [d for d in todo if len(x.chunks[d]) == 1]
        if whole:
            x = _apply_whole_axes(x, {d: np.asarray(mats[d]) for d in whole})
            todo = [d for d in todo if d not in whole]
            continue
        x = _whole_along(x, todo, limit, target)
    return x


def outer_grid(vectors: Sequence[FloatArray], chunks: Sequence[Any]) -> Any:
    """Return the lazy outer product ``v_1 (x) ... (x) v_D`` as a grid with ``chunks``.

    Each chunk is made from slices of the small vectors when computed; the
    grid is never held whole.
    """
    da = import_dask_array()
    ndim = len(vectors)
    out = None
    for d, (v, c) in enumerate(zip(vectors, chunks)):
        part = da.from_array(np.asarray(v, dtype=np.float64), chunks=(c,))
        part = part[tuple(slice(None) if e == d else None for e in range(ndim))]
        out = part if out is None else out * part
    return out


def _block_gram(block: FloatArray, d: int, ndim: int) -> FloatArray:
    """Return the mode-``d`` Gram of one chunk, with ``ndim`` leading unit axes."""
    a_d = np.moveaxis(block, d, 0).reshape(block.shape[d], -1)
    return (a_d @ a_d.T).reshape((1,) * ndim + (a_d.shape[0],) * 2)


def mode_gram(a: Any, d: int, *, stage_bytes: int | None = None) -> Any:
    r"""Return the lazy mode-``d`` Gram :math:`A_{(d)} A_{(d)}^T` of a dask grid.

    One SYRK per chunk, summed as a tree; where axis ``d`` is split across
    chunks, ``a`` is first re-chunked to make it whole (through Zarr above
    ``stage_bytes``, computed on call). Shape ``(n_d, n_d)``; cost
    :math:`O(N n_d)`.
    """
    limit = STAGE_BYTES if stage_bytes is None else stage_bytes
    while len(a.chunks[d]) > 1:
        a = _whole_along(a, [d], limit)
    n, ndim = a.shape[d], a.ndim
    grams = a.map_blocks(
        _block_gram,
        d,
        ndim,
        new_axis=[ndim, ndim + 1],
        chunks=tuple((1,) * len(c) for c in a.chunks) + ((n,), (n,)),
        dtype=np.float64,
        meta=np.empty((0,) * (ndim + 2), dtype=np.float64),
    )
    return grams.sum(axis=tuple(range(ndim)))
