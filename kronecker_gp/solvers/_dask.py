r"""The Dask route: the complete-grid eigen route on a grid larger than memory.

Targets given as a ``dask.array`` (for example opened from Zarr) stay on disk
or on the cluster's workers: the per-axis Gram matrices and their
eigendecompositions are small in-memory arrays, and every grid-sized step
runs chunk by chunk (:mod:`kronecker_gp.linalg._chunked`):

* the rotation :math:`\tilde y = (\bigotimes_d U_d^T) y` (mode products),
* the division by the eigenvalue grid :math:`\lambda + s` (each chunk of
  :math:`\lambda = \bigotimes_d w_d` made from slices of the small ``w_d``),
* the data fit, the log-determinant and the gradient's mode Grams (reductions
  to scalars or :math:`n_d \times n_d` matrices),
* the weights ``alpha_`` and the posterior mean and variance on a grid
  (mode products; returned as lazy dask arrays).

The formulas are those of :mod:`kronecker_gp.linalg._eigenbasis` (Saatci
2011, sec. 5.2), so the results equal the in-memory eigen route's up to
rounding. Supported: a complete grid (no NaN), one target, iid noise (learned
or fixed). Missing cells, per-cell or per-axis noise, Kalman axes and
``SeparableSum`` kernels raise a ``ValueError`` naming the in-memory route.

References
----------
.. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, sec. 5.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid, check_coords, check_whole_grid_settings
from kronecker_gp._typing import FloatArray
from kronecker_gp.kernels import SeparableSum
from kronecker_gp.linalg import kron_eigh
from kronecker_gp.linalg._chunked import (
    import_dask_array,
    mode_gram,
    mode_products,
    outer_grid,
)
from kronecker_gp.solvers._protocol import Factorization, SolverInfo

PATH = "dask-complete"
#: What the Dask route takes, for every error message that refuses an input.
SUPPORTED = (
    "a dask.array Y is fitted on a complete grid (no NaN), one target, scalar "
    "iid noise (learned or fixed), with a product kernel"
)


def check_dask_grid(
    coords: Sequence[Any], Y: Any, axes: Any, noise: Any, noise_axes: Any
) -> tuple[Grid, Any, list[list[int]]]:
    """Return the grid, the float targets and the axes for ``fit_grid`` on Dask.

    Only shapes and settings are checked (nothing is computed); finiteness is
    checked in the first pass over the data (:func:`dask_normalisation`).

    Raises
    ------
    ValueError
        If ``Y``'s shape is not the grid's, or a setting needs a route the
        Dask path does not have (per-cell or per-axis noise, several targets).
    TypeError
        If ``Y`` is not real-valued.
    """
    grid = Grid(check_coords(coords))
    blocks = check_whole_grid_settings(
        grid,
        tuple(Y.shape),
        dtype=Y.dtype,
        real=Y.dtype.kind in "fiu",
        noise=noise,
        noise_axes=noise_axes,
        axes=axes,
        supported=SUPPORTED,
        source="with a dask.array Y",
        remedy="Y in memory (a numpy array)",
    )
    return grid, Y.astype(np.float64), blocks


def dask_normalisation(y: Any, *, normalize: bool) -> tuple[float, float]:
    """Check that ``y`` is finite and return its mean and std (or 0 and 1).

    One pass over the chunks computes the check and the statistics together.
    A standard deviation below ``10 * eps`` times the largest magnitude gives
    1, as :func:`~kronecker_gp.models._contract.safe_normalisation` does.

    Raises
    ------
    ValueError
        If ``y`` holds NaN or infinite values (missing cells).
    """
    import dask  # noqa: PLC0415 (optional dependency)

    da = import_dask_array()
    n_bad = da.count_nonzero(~da.isfinite(y))
    if not normalize:
        stats: tuple[Any, ...] = dask.compute(n_bad)
        mean = std = scale = 0.0
    else:
        stats = dask.compute(n_bad, y.mean(), y.std(), abs(y).max())
        _, mean, std, scale = (float(s) for s in stats)
    if int(stats[0]):
        raise ValueError(
            f"Y holds {int(stats[0])} NaN or infinite cells; {SUPPORTED}. Fill the "
            "missing cells, or fit in memory (a numpy Y with NaN uses the exact "
            "Schur-complement route)."
        )
    if not normalize or scale == 0.0:
        return 0.0, 1.0
    eps = float(np.finfo(float).eps)
    return mean, std if std >= 10 * eps * scale else 1.0


def dask_route(
    grid: Grid,
    kernel: Any,
    y: Any,
    *,
    cell_noise: Any,
    state_space: Any,
    noise_axes: Any,
    options: Any,
) -> DaskGridRoute:
    """Return the Dask route for grid-shaped dask targets, or refuse clearly.

    ``state_space="auto"`` is ignored (the eigen route is exact on a complete
    grid); a Kalman axis asked for by index is refused.
    """
    refused = None
    if cell_noise is not None or noise_axes is not None:
        refused = "per-cell or per-axis noise"
    elif isinstance(kernel, SeparableSum):
        refused = "a SeparableSum kernel"
    elif state_space is not None and not (
        isinstance(state_space, str) and state_space == "auto"
    ):
        refused = f"state_space={state_space!r} (a Kalman axis)"
    elif y.ndim != len(grid.shape):
        refused = "several targets"
    if refused is not None:
        raise ValueError(
            f"{SUPPORTED}; got {refused}. Use a numpy Y for the in-memory routes."
        )
    return DaskGridRoute(
        y, list(grid.coords), tol=options.tol, n_probes=options.n_probes
    )


@dataclass
class DaskGridRoute:
    """Grid-shaped dask targets (complete, one target) and their coordinates.

    ``tol``, ``n_probes``, ``cell_noise`` and ``missing`` exist for the
    estimator's common handling of routes; every solve here is exact.
    """

    y: Any
    coords: list[FloatArray]
    tol: float = 1e-10
    n_probes: int = 32
    cell_noise: None = None
    missing: None = None

    def factorize(
        self,
        kernel: Any,
        noise: float,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> DaskFactorization:
        """Factorise at the kernel's hyperparameters; LML (and gradient) if asked.

        The eigendecompositions are in memory; with ``need_lml`` or
        ``eval_gradient`` one pass over the chunks computes every reduction
        together. Otherwise nothing grid-sized is computed (``lml`` is NaN).
        """
        dks = None
        if eval_gradient:
            pairs = kernel.factor_grams(self.coords, eval_gradient=True)
            grams, dks = [k for k, _ in pairs], [g for _, g in pairs]
        else:
            grams = kernel.factor_grams(self.coords)
        ws, us = kron_eigh(grams)
        fact = DaskFactorization(self, ws, us, float(noise))
        if need_lml or eval_gradient:
            fact.lml, fact.grad = _lml_and_gradient(fact, dks, noise_free=noise_free)
        return fact


@dataclass
class DaskFactorization(Factorization):
    """LML, gradient, weights and grid predictions of the Dask route."""

    route: DaskGridRoute
    eigvals: list[FloatArray]
    eigvecs: list[FloatArray]
    noise: float
    lml: float = float("nan")
    grad: FloatArray | None = None
    info: SolverInfo = field(default_factory=lambda: SolverInfo(PATH, 0))
    _rot: tuple[Any, Any, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Record the chunking in ``solver_info_.extra``."""
        self.info.extra["chunksize"] = tuple(int(c) for c in self.route.y.chunksize)

    def spectrum(self) -> list[FloatArray]:
        """Return the factors' eigenvalues."""
        return list(self.eigvals)

    def rotated(self) -> tuple[Any, Any, Any]:
        """Return the lazy rotated data, weights and inverse spectrum (built once).

        In the eigenbasis, chunked alike: ``y_rot``, ``a_rot = y_rot * inv_lam``
        and ``inv_lam = 1 / (lambda + s)``.
        """
        if self._rot is None:
            y_rot = mode_products(self.route.y, [u.T for u in self.eigvecs])
            inv_lam = 1.0 / (outer_grid(self.eigvals, y_rot.chunks) + self.noise)
            self._rot = (y_rot, y_rot * inv_lam, inv_lam)
        return self._rot

    def alpha(self) -> Any:
        """Return ``(K + noise I)^{-1} y`` as a lazy dask array of the grid's shape."""
        return mode_products(self.rotated()[1], self.eigvecs)

    def predict_grid(self, kernel: Any, test: Grid, *, std: bool) -> tuple[Any, Any]:
        """Return the mean and variance on a test grid as lazy, grid-shaped arrays.

        Negative variances from rounding are set to zero (no warning: the
        values are not computed here).
        """
        _, a_rot, inv_lam = self.rotated()
        v = []
        for k, t, c, u, w in zip(
            kernel.kernels, test.coords, self.route.coords, self.eigvecs, self.eigvals
        ):
            same = t.shape == c.shape and np.array_equal(t, c)
            v.append(u * w if same else k(t, c) @ u)  # K_d U_d = U_d W_d on train
        mean = mode_products(a_rot, v)
        if not std:
            return mean, None
        da = import_dask_array()
        prior = outer_grid(
            [k.diag(t) for k, t in zip(kernel.kernels, test.coords)], mean.chunks
        )
        reduction = mode_products(inv_lam, [x * x for x in v])
        return mean, da.maximum(prior - reduction, 0.0)

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Refuse: predictions at points are not chunked; use ``predict_grid``."""
        raise ValueError(
            "predict (at points) is not available for a model fitted on a dask.array "
            "Y; use predict_grid(coords) with per-axis coordinates (it returns dask "
            "arrays), or a numpy Y."
        )

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Refuse: posterior sampling is not chunked on the Dask route."""
        raise ValueError(
            "sample_grid is not available for a model fitted on a dask.array Y; "
            "fit a numpy Y (or a subgrid of it) to draw posterior samples."
        )


def _lml_and_gradient(
    fact: DaskFactorization, dks: Sequence[FloatArray] | None, *, noise_free: bool
) -> tuple[float, FloatArray | None]:
    r"""Return the LML and (with ``dks``) its gradient, in one pass over the chunks.

    Notes
    -----
    :math:`L = -\tfrac12 \tilde y^T \tilde a + \tfrac12 \sum \log (\lambda +
    s)^{-1} - \tfrac N2 \log 2\pi`; the gradient of factor ``d`` is
    :math:`\sum_{ij} (\partial K_d)_{ij} (M_d)_{ij}` with :math:`M_d =
    \tfrac12 U_d (C_d - \operatorname{diag} h_d) U_d^T`, :math:`C_d` the
    mode-``d`` Gram of :math:`\tilde a \sqrt{W_{-d}}` and :math:`h_d =
    \sum_{-d} W_{-d} / (\lambda + s)` (as
    :func:`~kronecker_gp.linalg._eigenbasis.factor_gradient_matrix`); the
    noise entry is :math:`\tfrac s2 (\|\tilde a\|^2 - \sum (\lambda + s)^{-1})`.
    """
    import dask  # noqa: PLC0415 (optional dependency)

    da = import_dask_array()
    y_rot, a_rot, inv_lam = fact.rotated()
    terms: dict[str, Any] = {
        "quad": da.sum(y_rot * a_rot),
        "logdet": da.sum(da.log(inv_lam)),
    }
    wanted = [] if dks is None else [d for d, g in enumerate(dks) if g.shape[2]]
    for d in wanted:
        others = tuple(e for e in range(a_rot.ndim) if e != d)
        ones = [np.ones_like(w) if e == d else w for e, w in enumerate(fact.eigvals)]
        w_rest = outer_grid(ones, a_rot.chunks)
        terms[f"gram{d}"] = mode_gram(a_rot * da.sqrt(w_rest), d)
        terms[f"h{d}"] = da.sum(inv_lam * w_rest, axis=others)
    if dks is not None and noise_free:
        terms["a2"] = da.sum(a_rot * a_rot)
        terms["trace"] = da.sum(inv_lam)
    (vals,) = dask.compute(terms)
    n = int(np.prod(a_rot.shape))
    lml = -0.5 * float(vals["quad"]) + 0.5 * float(vals["logdet"])
    lml -= 0.5 * n * _budgets.LOG_2PI
    if dks is None:
        return lml, None
    parts = []
    for d in wanted:
        inner = np.asarray(vals[f"gram{d}"], dtype=np.float64)
        inner[np.diag_indices_from(inner)] -= vals[f"h{d}"]
        u = fact.eigvecs[d]
        parts.append(np.einsum("ijp,ij->p", dks[d], 0.5 * (u @ inner @ u.T)))
    if noise_free:
        s = fact.noise
        parts.append(np.array([0.5 * s * (float(vals["a2"]) - float(vals["trace"]))]))
    return lml, np.concatenate(parts) if parts else np.zeros(0)
