r"""The axis-noise route: noise that varies along grid axes, exactly.

The noise covariance is a Kronecker product of per-axis diagonals,
:math:`D = \bigotimes_d D_d` (per task, per site, per day; :math:`D_d = I`
off the noise axes). It is whitened into the factors (Rakitsch et al. 2013),
:math:`K + D = D^{1/2} (\tilde K + I) D^{1/2}` with :math:`\tilde K =
\bigotimes_d D_d^{-1/2} K_d D_d^{-1/2}`, and the whitened problem (noise 1,
targets :math:`\tilde y = D^{-1/2} y`) goes through the eigen route
(:class:`~kronecker_gp.solvers._eigen.GridSolver`): the complete-grid
eigenbasis, or the Schur complement on the missing cells. The likelihood,
its gradient (kernel and per-axis log-variances), the posterior moments and
samples are exact at the complete-grid cost
:math:`O(\sum_d n_d^3 + N \sum_d n_d)`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg._whitening import (
    axis_noise_gradient,
    inverse_sqrt_noise,
    noise_vectors,
    observed_log_noise,
    whiten_factors,
)
from kronecker_gp.solvers._eigen import EigenFactorization, GridSolver

PATH = "axis-noise"


@dataclass
class AxisNoiseRoute:
    """Targets on a grid whose noise variance varies along ``noise_axes``.

    Parameters
    ----------
    y : ndarray of shape (N,)
        Targets in C order, zero on missing cells.
    missing : ndarray of int or None
        Flat indices of missing cells; None for a complete grid.
    noise_axes : tuple of int
        The axes along which the noise variance varies.
    method, tol, max_iter, n_probes, seed, block_axis
        As in :class:`~kronecker_gp.solvers._eigen.GridSolver` (missing cells).
    coords : list of ndarray
        Per-axis training coordinates.
    known : list of ndarray or None, default=None
        Known per-cell variances that are an exact Kronecker product, as
        vectors (one per noise axis): ``noise`` is then the learned scale
        ``s`` of the per-cell noise, ``s * kron(known)`` (the per-cell noise
        of the estimator, found to be separable, solved exactly).
    cell_noise : ndarray of shape (N,) or None, default=None
        With ``known``: the per-cell variances ``kron(known)`` (reported by
        the estimator as ``noise_variances_``).

    Notes
    -----
    ``factorize(kernel, noise)`` takes ``noise`` as a sequence of per-axis
    variance vectors, one per entry of ``noise_axes``; the noise of cell
    ``(i_1, ..., i_D)`` is their product. With ``known`` it takes the scale.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF
    >>> from kronecker_gp.kernels import KroneckerKernel
    >>> coords = [np.arange(3.0)[:, None], np.arange(4.0)[:, None]]
    >>> kernel = KroneckerKernel([RBF(), RBF()], axes=[[0], [1]])
    >>> route = AxisNoiseRoute(np.ones(12), None, (0,), coords=coords)
    >>> fact = route.factorize(kernel, [np.array([0.1, 0.2, 0.4])], eval_gradient=True)
    >>> fact.info.path, fact.grad.shape
    ('axis-noise', (5,))
    """

    y: FloatArray
    missing: IntArray | None
    noise_axes: tuple[int, ...]
    method: str = "auto"
    tol: float = 1e-10
    max_iter: int = 2000
    n_probes: int = 32
    seed: int = 0
    block_axis: int | None = None
    coords: list[FloatArray] = field(default_factory=list)
    known: list[FloatArray] | None = None
    cell_noise: FloatArray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The training grid's shape."""
        return tuple(int(c.shape[0]) for c in self.coords)

    def factorize(
        self,
        kernel: Any,
        noise: Sequence[FloatArray],
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> AxisNoiseFactorization:
        """Factorise at the kernel's hyperparameters and these per-axis variances.

        The gradient lists the kernel's log-hyperparameters, then (with
        ``noise_free``) the log-variances of each noise axis in order.
        """
        if self.known is not None:  # known separable per-cell noise, a scale
            noise = [self.known[0] * float(noise), *self.known[1:]]  # type: ignore[arg-type]
        variances = noise_vectors(self.shape, self.noise_axes, noise)
        inner = GridSolver(
            self.y * inverse_sqrt_noise(variances),
            self.missing,
            method=self.method,
            tol=self.tol,
            max_iter=self.max_iter,
            n_probes=self.n_probes,
            seed=self.seed,
            block_axis=self.block_axis,
            coords=self.coords,
        )
        grad_grams = None
        if eval_gradient:
            pairs = kernel.factor_grams(self.coords, eval_gradient=True)
            grams = whiten_factors([k for k, _ in pairs], variances)
            grad_grams = whiten_factors([g for _, g in pairs], variances)
        else:
            grams = whiten_factors(kernel.factor_grams(self.coords), variances)
        res = inner.solve(grams, 1.0, grad_grams, noise_free=False, need_lml=need_lml)
        self.block_axis = inner.block_axis
        lml = res.lml - 0.5 * observed_log_noise(variances, self.missing)
        grad = res.grad
        if grad is not None and noise_free:
            axes = self.noise_axes if self.known is None else self.noise_axes[:1]
            noise_grad = axis_noise_gradient(res.post, axes, correction=res.correction)
            if self.known is not None:  # d/dlog(scale): the first axis' sum
                noise_grad = np.array([noise_grad.sum()])
            grad = np.concatenate([grad, noise_grad])
        info = res.info
        info.path = PATH if info.path == "complete" else f"{PATH}-{info.path}"
        if self.known is not None:
            info.path = info.path.replace(PATH, "cell-noise-kronecker")
        info.extra["noise_axes"] = list(self.noise_axes)
        return AxisNoiseFactorization(
            inner, res.post, res.system, 1.0, lml, grad, info, variances
        )


@dataclass
class AxisNoiseFactorization(EigenFactorization):
    """Predictions and samples of the whitened problem, in the data's units.

    The cross-covariances are whitened on the training side,
    :math:`K_{*d} D_d^{-1/2}`, and prior draws at the training cells by
    :math:`D^{-1/2}`; the eigen route's moment and sampling functions then
    give the exact posterior of the original problem.
    """

    variances: list[FloatArray] = field(default_factory=list)

    def alpha(self) -> FloatArray:
        """Return ``(K + D)^{-1} y = D^{-1/2} (K~ + I)^{-1} y~`` (0 where missing)."""
        return np.asarray(self.post.alpha() * inverse_sqrt_noise(self.variances))

    def _cross(self, kernel: Any, coords: Sequence[FloatArray]) -> list[FloatArray]:
        cross = super()._cross(kernel, coords)
        return [c / np.sqrt(v)[None, :] for c, v in zip(cross, self.variances)]

    def _same_axes(self, test: Grid) -> list[bool]:
        return [False] * len(self.variances)  # a whitened cross Gram is not K_d

    def _train_values(self, f: FloatArray) -> FloatArray:
        return f * inverse_sqrt_noise(self.variances)[:, None]


def check_noise_axes(noise_axes: Any, n_axes: int) -> tuple[int, ...]:
    """Return ``noise_axes`` as a tuple of distinct axis indices, or raise.

    Examples
    --------
    >>> check_noise_axes([1], 2)
    (1,)
    """
    items = [noise_axes] if isinstance(noise_axes, numbers.Integral) else noise_axes
    try:
        axes = tuple(items)
    except TypeError:
        axes = ()
    ok = (
        len(axes) > 0
        and all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in axes
        )
        and all(0 <= int(d) < n_axes for d in axes)
        and len(set(axes)) == len(axes)
    )
    if not ok:
        raise ValueError(
            "noise_axes must be None or a non-empty sequence of distinct axis "
            f"indices in [0, {n_axes}) (the grid has {n_axes} axes); got "
            f"{noise_axes!r}."
        )
    return tuple(int(d) for d in axes)


def axis_noise_start(
    noise: Any, noise_axes: tuple[int, ...], shape: Sequence[int]
) -> list[FloatArray]:
    """Return the start variances of each noise axis from the ``noise`` parameter.

    A scalar starts every cell at that variance (the first noise axis' entries
    at the scalar, the others' at 1); one noise axis also takes an array of its
    length; several take a sequence of such arrays, one per axis.

    Examples
    --------
    >>> [v.tolist() for v in axis_noise_start(0.5, (0, 1), (2, 3))]
    [[0.5, 0.5], [1.0, 1.0, 1.0]]
    """
    if np.isscalar(noise):
        values: list[Any] = [np.full(shape[noise_axes[0]], noise)]
        values += [np.ones(shape[d]) for d in noise_axes[1:]]
    elif len(noise_axes) == 1 and np.ndim(noise) == 1:
        values = [noise]
    else:
        values = list(noise)
    if len(values) != len(noise_axes):
        raise ValueError(
            f"noise must be a scalar or, for noise_axes={list(noise_axes)}, one "
            f"array per axis; got {len(values)} arrays."
        )
    out = []
    for d, v in zip(noise_axes, values):
        arr = np.asarray(v, dtype=float)
        if arr.shape != (shape[d],):
            raise ValueError(
                f"noise for axis {d} must have that axis' length {shape[d]} "
                f"(one variance per slice); got shape {arr.shape}."
            )
        if not np.all(np.isfinite(arr) & (arr > 0)):
            raise ValueError(
                f"noise must be positive and finite; got min {float(arr.min())!r} "
                f"on axis {d}."
            )
        out.append(arr)
    return out
