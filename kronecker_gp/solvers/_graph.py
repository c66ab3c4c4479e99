r"""Exact inference for spectral covariances on Cartesian product graphs.

The Laplacian of the product of graphs with Laplacians
:math:`L_d = U_d \operatorname{diag}(\lambda_d) U_d^T` is the Kronecker sum
:math:`L = L_1 \oplus \dots \oplus L_D`, with eigenvectors
:math:`U = \bigotimes_d U_d` and eigenvalues
:math:`\lambda = \lambda_1 \oplus \dots \oplus \lambda_D`. A covariance
:math:`K = U \operatorname{diag}(g) U^T` with :math:`g = g(\lambda_1, \dots,
\lambda_D)` (diffusion, Matern) therefore shares its eigenbasis with the
graph, whatever the hyperparameters: the basis is computed once, and

* on the complete grid the log marginal likelihood and its gradient cost
  :math:`O(N)` per evaluation after one rotation :math:`\tilde y = U^T y`;
* when the observed cells are a sub-grid (some nodes of some axes have no data
  at all, e.g. unmonitored stations) the covariance of the observed cells is
  block diagonal in the eigenbasis of the fully observed axes: blocks of the
  size of the observed sub-grid of the other axes;
* scattered missing cells use the Schur complement of
  :class:`~kronecker_gp.linalg._schur.MissingCellSchur` through the eigen
  route's adapter :mod:`kronecker_gp.solvers._eigen_missing`, with
  :math:`(\lambda + s)^{-1}` replaced by :math:`(g + s)^{-1}` (its
  ``GridPosterior.eigvals`` then hold the Laplacian eigenvalues; only their
  sizes are read).

References
----------
.. [1] Borovitskiy, V. et al. (2021). Matern Gaussian processes on graphs.
   AISTATS.
.. [2] Rasmussen, C. E. and Williams, C. K. I. (2006). Gaussian Processes for
   Machine Learning. MIT Press, eq. 5.8-5.9.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.kernels._graph import (
    diffusion_log_spectrum,
    matern_log_spectrum,
    normalised_spectrum,
)
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.linalg._eigenbasis import GridPosterior
from kronecker_gp.solvers._eigen_missing import SchurSystem, missing_factorize
from kronecker_gp.solvers._protocol import Factorization, SolverInfo

_LOG_2PI = _budgets.LOG_2PI
#: Largest intermediate array (float64 entries) built at once.
_CHUNK_ENTRIES = 2**24


def product_spectrum(
    kind: str,
    lam_parts: Sequence[FloatArray],
    *,
    amplitude: float,
    scale: FloatArray,
    nu: float,
    grad_names: Sequence[str],
) -> tuple[FloatArray, FloatArray]:
    r"""Return the covariance spectrum on the product graph and its gradient.

    Parameters
    ----------
    kind : {"matern", "diffusion"}
        :math:`f = (2\nu + \sum_d \kappa_d^2 \lambda_d)^{-\nu}` or
        :math:`f = e^{-\sum_d \beta_d \lambda_d}`.
    lam_parts : sequence of ndarray of shape (N,)
        Each axis' Laplacian eigenvalues broadcast to the grid (C order).
    amplitude : float
        The mean prior variance ``a``.
    scale : ndarray of shape (1,) or (D,)
        ``kappa`` or ``beta``, shared or per axis.
    nu : float
        Matern smoothness (ignored for diffusion).
    grad_names : sequence of str
        Free log-hyperparameters, among ``"amplitude"``, ``"scale"`` (one
        column per entry of ``scale``) and ``"nu"``, in that order.

    Returns
    -------
    g : ndarray of shape (N,)
        :math:`a f / \bar f` (unit mean variance times ``a``).
    dg : ndarray of shape (N, p)
        Derivatives w.r.t. the free log-hyperparameters.
    """
    per_axis = np.broadcast_to(scale, (len(lam_parts),))
    dnu = None
    if kind == "matern":
        log_f, dscale, dnu = matern_log_spectrum(lam_parts, nu, per_axis)
    else:
        log_f, dscale = diffusion_log_spectrum(lam_parts, per_axis)
    cols: list[FloatArray] = []
    if "scale" in grad_names:
        cols += dscale if scale.size > 1 else [np.sum(dscale, axis=0)]
    if "nu" in grad_names and dnu is not None:
        cols.append(dnu)
    dlog = np.column_stack(cols) if cols else np.zeros((log_f.size, 0))
    f, df = normalised_spectrum(log_f, dlog)
    g = amplitude * f
    parts = [g[:, None]] if "amplitude" in grad_names else []
    return g, np.hstack([*parts, amplitude * df])


def eigvec_rows(eigvecs: Sequence[FloatArray], cells: IntArray) -> FloatArray:
    """Return rows ``U[cells, :]`` of ``U = kron(eigvecs)``, shape (M, N), O(M N)."""
    idx = np.unravel_index(cells, tuple(u.shape[0] for u in eigvecs))
    out = eigvecs[0][idx[0]]
    for u, i in zip(eigvecs[1:], idx[1:]):
        out = (out[:, :, None] * u[i][:, None, :]).reshape(cells.size, -1)
    return out


def rotate(eigvecs: Sequence[FloatArray], x: FloatArray) -> FloatArray:
    """Return ``U^T x`` for ``U = kron(eigvecs)``, ``x`` of shape (N,) or (N, k)."""
    return kron_matvec([u.T for u in eigvecs], x)


def spectral_gradient(
    dg: FloatArray, resid: FloatArray, noise: float, noise_free: bool
) -> FloatArray:
    r"""Return the LML gradient from the spectral residual ``r``.

    ``r_i = \tilde\alpha_i^2 - (\text{trace term})_i`` so that
    :math:`\partial L / \partial\theta_p = \tfrac12 \sum_i \partial g_{ip} r_i`
    and, for :math:`\partial K/\partial \log s = sI`,
    :math:`\tfrac s2 \sum_i r_i`.
    """
    grad = 0.5 * (dg.T @ resid)
    return np.append(grad, 0.5 * noise * resid.sum()) if noise_free else grad


@dataclass(frozen=True)
class GraphState:
    """What every graph factorisation holds.

    Attributes
    ----------
    eigvecs : list of ndarray of shape (n_d, n_d)
        Laplacian eigenvectors per axis.
    y : ndarray of shape (N,)
        Targets on the full grid, zero on unobserved cells.
    observed : ndarray of shape (N,)
        1.0 on observed cells, 0.0 elsewhere.
    g : ndarray of shape (N,)
        Covariance spectrum.
    noise : float
        Noise variance.
    lml : float
        Log marginal likelihood of the observed cells.
    grad : ndarray or None
        Its gradient w.r.t. the free log-hyperparameters.
    info : SolverInfo
        The route's report.
    """

    eigvecs: list[FloatArray]
    y: FloatArray
    observed: FloatArray
    g: FloatArray
    noise: float
    lml: float
    grad: FloatArray | None
    info: SolverInfo


class GraphFactorization(Factorization):
    r"""One factorisation on a product graph at fixed hyperparameters (immutable).

    The :class:`~kronecker_gp.solvers._protocol.Factorization` of the graph
    routes: the spectrum ``g`` is part of it, so the protocol's ``kernel``
    argument is ignored, and points and grids are given by node indices
    (``parts[d]`` the nodes of graph ``d``; a test :class:`~kronecker_gp._grid.
    Grid` whose axis ``d`` holds node indices as a single column). Subclasses
    supply four hooks: :meth:`alpha`, :meth:`mean`, :meth:`solve_observed` and
    :meth:`_grid_variance`.

    Parameters
    ----------
    state : GraphState
        Eigenvectors, data, spectrum, noise, LML, gradient and report.
    """

    def __init__(self, state: GraphState) -> None:
        self.eigvecs, self.y, self.observed = state.eigvecs, state.y, state.observed
        self.g, self.noise = state.g, state.noise
        self.lml, self.grad, self.info = state.lml, state.grad, state.info
        self.shape = tuple(u.shape[0] for u in state.eigvecs)
        self._var: FloatArray | None = None

    def mean(self) -> FloatArray:
        """Return the posterior mean on the full grid (flat, C order)."""
        raise NotImplementedError

    def solve_observed(self, r: FloatArray) -> FloatArray:
        """Return ``A_oo^{-1} r`` (zero-padded) for ``r`` of shape (N, k)."""
        raise NotImplementedError

    def _grid_variance(self) -> FloatArray:
        raise NotImplementedError

    def variance(self) -> FloatArray:
        """Return the posterior variance on the full grid (computed once)."""
        if self._var is None:
            self._var = self._grid_variance()
        return self._var

    def apply_k(self, w: FloatArray) -> FloatArray:
        """Return ``K w`` for grid columns ``w`` (N, k): two rotations."""
        return kron_matvec(self.eigvecs, self.g[:, None] * rotate(self.eigvecs, w))

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        r"""Return the mean and variances or covariance at the cells ``parts``.

        The covariance costs :math:`O(M N \sum_d n_d)` plus ``M`` observed
        solves; variances read the full-grid variance (computed once).
        """
        cells = np.ravel_multi_index(
            tuple(np.asarray(p, int) for p in parts), self.shape
        )
        mean = self.mean()[cells]
        if cov:
            rows = eigvec_rows(self.eigvecs, cells)  # U[cells, :]
            k_cols = kron_matvec(self.eigvecs, self.g[:, None] * rows.T)  # K[:, cells]
            masked = k_cols * self.observed[:, None]
            out = k_cols[cells] - masked.T @ self.solve_observed(masked)
            return mean, 0.5 * (out + out.T)
        return mean, (self.variance()[cells] if std else None)

    def _sub(self, test: Grid) -> Any:
        return np.ix_(*[np.asarray(c[:, 0], int) for c in test.coords])

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean and (if asked) variance on a sub-grid of nodes, flat."""
        ix = self._sub(test)
        mean = self.mean().reshape(self.shape)[ix].reshape(-1)
        if not std:
            return mean, None
        return mean, self.variance().reshape(self.shape)[ix].reshape(-1)

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        r"""Return exact posterior samples on a sub-grid, shape (test.size, n_samples).

        Matheron's rule: :math:`f + K_{\cdot o} A_{oo}^{-1} (y_o - f_o -
        \varepsilon)` with the prior sample :math:`f = U \operatorname{diag}
        (\sqrt g) z`; cost :math:`O(N \sum_d n_d)` per sample plus the
        observed solve.
        """
        z = rng.standard_normal((self.g.size, n_samples))
        f = kron_matvec(self.eigvecs, np.sqrt(self.g)[:, None] * z)
        eps = np.sqrt(self.noise) * rng.standard_normal(f.shape)
        resid = (self.y[:, None] - f - eps) * self.observed[:, None]
        f = f + self.apply_k(self.solve_observed(resid))
        return f.reshape(*self.shape, n_samples)[self._sub(test)].reshape(-1, n_samples)


class CompleteFactorization(GraphFactorization):
    r"""All cells observed: :math:`A^{-1} = U \operatorname{diag}(1/(g+s)) U^T`."""

    def __init__(self, state: GraphState, *, alpha_rot: FloatArray) -> None:
        super().__init__(state)
        self.inv = 1.0 / (state.g + state.noise)
        self.alpha_rot = alpha_rot

    def alpha(self) -> FloatArray:
        """Return ``A_oo^{-1} y`` on the grid (flat, C order), zero on missing cells."""
        return kron_matvec(self.eigvecs, self.alpha_rot)

    def mean(self) -> FloatArray:
        """Return the posterior mean ``K alpha = U (g * U^T alpha)`` on the grid."""
        return kron_matvec(self.eigvecs, self.g * self.alpha_rot)

    def solve_observed(self, r: FloatArray) -> FloatArray:
        """Return ``A^{-1} r`` for ``r`` of shape (N, k) (every cell observed)."""
        return kron_matvec(self.eigvecs, self.inv[:, None] * rotate(self.eigvecs, r))

    def _grid_variance(self) -> FloatArray:
        r"""Posterior variance on the grid: :math:`(U \circ U)\, g s / (g + s)`."""
        sq = [u * u for u in self.eigvecs]
        return kron_matvec(sq, self.g * self.noise * self.inv)


class CompletePath:
    r"""The complete-grid route: every cell observed.

    Parameters
    ----------
    eigvecs : list of ndarray of shape (n_d, n_d)
        Laplacian eigenvectors per axis.
    y : ndarray of shape (N,)
        Targets, C order.
    """

    def __init__(self, eigvecs: list[FloatArray], y: FloatArray) -> None:
        self.eigvecs, self.y = eigvecs, y
        self.observed = np.ones(y.size)
        self.y_rot = rotate(eigvecs, y)  # the only O(N sum n_d) step per fit

    def factorize(
        self, g: FloatArray, noise: float, dg: FloatArray | None, noise_free: bool
    ) -> CompleteFactorization:
        """Return the factorisation at spectrum ``g`` (gradient if ``dg``), O(N)."""
        lam = g + noise
        if np.any(lam <= 0):
            raise np.linalg.LinAlgError("K + noise I is singular; increase noise.")
        inv = 1.0 / lam
        alpha_rot = self.y_rot * inv
        lml = -0.5 * float(self.y_rot @ alpha_rot) - 0.5 * np.sum(np.log(lam))
        lml -= 0.5 * g.size * _LOG_2PI
        grad = None
        if dg is not None:
            resid = alpha_rot**2 - inv
            grad = spectral_gradient(dg, resid, noise, noise_free)
        info = SolverInfo("complete", 0)
        state = GraphState(
            self.eigvecs, self.y, self.observed, g, noise, float(lml), grad, info
        )
        return CompleteFactorization(state, alpha_rot=alpha_rot)


class SchurFactorization(CompleteFactorization):
    """Scattered missing cells: the complete-grid algebra plus the Schur system."""

    def __init__(
        self,
        state: GraphState,
        *,
        alpha_rot: FloatArray,
        system: SchurSystem,
        options: dict[str, Any],
    ) -> None:
        super().__init__(state, alpha_rot=alpha_rot)
        self.system, self.options = system, options

    def solve_observed(self, r: FloatArray) -> FloatArray:
        """Return ``A_oo^{-1} r`` (zero-padded) for ``r`` zero on missing cells."""
        r = r.copy()
        r[self.system.missing] = 0.0
        w_rot = self.system.observed_solve_rot(rotate(self.eigvecs, r))
        return kron_matvec(self.eigvecs, w_rot)

    def _grid_variance(self) -> FloatArray:
        r"""Complete-grid variance plus :math:`G_i^T P_{mm}^{-1} G_i`, ``G = (PK)_m``.

        Exact on the exact Schur path; on the CG path an unbiased Monte Carlo
        estimate of the correction with ``n_probes`` samples.
        """
        system = self.system
        gw = self.g * self.inv
        if system.method == "exact":
            rows = eigvec_rows(self.eigvecs, system.missing)  # U[m, :]
            gt = kron_matvec(self.eigvecs, gw[:, None] * rows.T)  # (P K)_{i, m}
            corr = system.schur.quad_forms(gt.T)  # G_i^T P_mm^{-1} G_i
        else:
            rng = np.random.default_rng(int(self.options["seed"]))
            w = system.inverse_draws(int(self.options["n_probes"]), rng)
            proj = kron_matvec(self.eigvecs, self.g[:, None] * w)  # K P E_m zeta
            corr = np.mean(proj**2, axis=1)
        return super()._grid_variance() + corr


class SchurPath:
    """Scattered missing cells through the Schur complement on the full grid.

    Parameters
    ----------
    eigvals, eigvecs : list of ndarray
        Laplacian eigenpairs per axis.
    y : ndarray of shape (N,)
        Targets, zero on the missing cells.
    missing : ndarray of int
        Flat indices of the missing cells.
    options : dict
        ``method``, ``tol``, ``max_iter``, ``n_probes`` and ``seed`` of the
        solver (see ``KroneckerGP``).
    """

    def __init__(
        self,
        eigvals: list[FloatArray],
        eigvecs: list[FloatArray],
        y: FloatArray,
        missing: IntArray,
        options: dict[str, Any],
    ) -> None:
        self.eigvals, self.eigvecs, self.y = eigvals, eigvecs, y
        self.missing = missing
        self.observed = np.ones(y.size)
        self.observed[missing] = 0.0
        self.options = options

    def factorize(
        self, g: FloatArray, noise: float, dg: FloatArray | None, noise_free: bool
    ) -> SchurFactorization:
        """Return the observed-cell factorisation (LML, gradient, Schur system)."""
        inv = 1.0 / (g + noise)
        post = GridPosterior(self.eigvals, self.eigvecs, noise, inv, 0 * g)
        o = self.options
        post, lml, system, corr, info = missing_factorize(
            post,
            self.y,
            self.missing,
            method=str(o["method"]),
            tol=float(o["tol"]),
            max_iter=int(o["max_iter"]),
            n_probes=int(o["n_probes"]),
            rng=np.random.default_rng(int(o["seed"])),
            eval_gradient=dg is not None,
        )
        grad = None
        if dg is not None:
            resid = post.alpha_rot**2 - inv
            if corr is not None:
                resid = resid + corr.scale * np.sum(corr.a * corr.b, axis=1)
            grad = spectral_gradient(dg, resid, noise, noise_free)
        state = GraphState(
            self.eigvecs, self.y, self.observed, g, noise, float(lml), grad, info
        )
        return SchurFactorization(
            state, alpha_rot=post.alpha_rot, system=system, options=o
        )


class SubgridPath:
    r"""Observed cells form a sub-grid: exact block-diagonal inference.

    Let ``P`` be the axes with unobserved nodes (observed subsets
    :math:`S_d`) and ``F`` the fully observed ones. Rotating the observed
    data by :math:`U_F^T` makes :math:`K_{oo} + sI` block diagonal, one block
    per eigenvector ``j`` of the ``F`` axes:

    .. math::
        B_j = V_o \operatorname{diag}(g_{:, j}) V_o^T + sI, \qquad
        V_o = \bigotimes_{d \in P} U_d[S_d, :],

    of size :math:`n_o^P = \prod_{d \in P} |S_d|`. Cost per evaluation
    :math:`O(n_F (n_o^P)^2 n_P)`, :math:`n_P = \prod_{d\in P} n_d`.

    Parameters
    ----------
    eigvecs : list of ndarray of shape (n_d, n_d)
        Laplacian eigenvectors per axis.
    nodes : list of (ndarray of int or None)
        Observed nodes per axis (None: all).
    Y : ndarray of shape (len(S_1), ..., len(S_D))
        Targets on the observed sub-grid (no NaN).
    """

    def __init__(
        self, eigvecs: list[FloatArray], nodes: list[IntArray | None], Y: FloatArray
    ) -> None:
        self.eigvecs = eigvecs
        self.shape = tuple(u.shape[0] for u in eigvecs)
        self.nodes = [
            np.arange(n) if s is None else s for n, s in zip(self.shape, nodes)
        ]
        self.p_axes = [d for d, s in enumerate(nodes) if s is not None]
        self.f_axes = [d for d, s in enumerate(nodes) if s is None]
        self.perm = self.p_axes + self.f_axes
        self.n_p = int(np.prod([self.shape[d] for d in self.p_axes]))
        self.n_f = int(np.prod([self.shape[d] for d in self.f_axes]))
        v_o: FloatArray = np.ones((1, 1))
        for d in self.p_axes:  # rows of (x)_{d in P} U_d at the observed nodes
            v_o = np.asarray(np.kron(v_o, eigvecs[d][self.nodes[d]]), np.float64)
        self.v_o = v_o
        self.n_op = self.v_o.shape[0]
        # pairwise products V_o[k, p] V_o[l, p], hyperparameter-independent
        small = self.n_op**2 * self.n_p <= _CHUNK_ENTRIES
        self.pairs = (
            (self.v_o[:, None, :] * self.v_o[None, :, :]).reshape(-1, self.n_p)
            if small
            else None
        )
        self.y_rot = self._to_blocks(Y.reshape(*Y.shape, 1))[:, :, 0]
        self.n_missing = int(np.prod(self.shape)) - Y.size
        full, obs = np.zeros(self.shape), np.zeros(self.shape)
        full[np.ix_(*self.nodes)], obs[np.ix_(*self.nodes)] = Y, 1.0
        self.y, self.observed = full.reshape(-1), obs.reshape(-1)

    # -- layout: observed sub-grid <-> (n_f, n_op, k) blocks in the F eigenbasis
    def _to_blocks(self, Z: FloatArray) -> FloatArray:
        """Observed sub-grid values (sub-grid shape + (k,)) to rotated blocks."""
        k = Z.shape[-1]
        z3 = np.transpose(Z, [*self.perm, len(self.shape)]).reshape(self.n_op, -1, k)
        z = np.transpose(z3, (1, 0, 2)).reshape(self.n_f, -1)  # (n_f, n_op k)
        f_vecs = [self.eigvecs[d].T for d in self.f_axes]
        z = kron_matvec(f_vecs, z) if f_vecs else z
        return z.reshape(self.n_f, self.n_op, k)

    def _from_blocks(self, B: FloatArray, rows: int) -> FloatArray:
        """Rotated blocks (n_f, rows, k) back to a grid (P then F axes, k)."""
        k = B.shape[-1]
        f_vecs = [self.eigvecs[d] for d in self.f_axes]
        b = B.reshape(self.n_f, -1)
        b = kron_matvec(f_vecs, b) if f_vecs else b
        return np.transpose(b.reshape(self.n_f, rows, k), (1, 0, 2))

    def _unpermute(self, grid: FloatArray, p_shape: Sequence[int]) -> FloatArray:
        """(P..., F..., k) in permuted order back to the original axis order."""
        k = grid.shape[-1]
        full = grid.reshape(*p_shape, *[self.shape[d] for d in self.f_axes], k)
        inv = np.argsort(self.perm)
        return np.transpose(full, [*inv, len(self.shape)])

    def _g_blocks(self, g: FloatArray) -> FloatArray:
        """Spectrum (N,) or (N, p) as (n_p, n_f[, p]) in the P-then-F order."""
        extra = g.shape[1:]
        gp = np.transpose(
            g.reshape(*self.shape, *extra),
            [*self.perm, *range(len(self.shape), len(self.shape) + len(extra))],
        )
        return gp.reshape(self.n_p, self.n_f, *extra)

    def _chunks(self) -> list[slice]:
        step = max(1, _CHUNK_ENTRIES // max(1, self.n_op * self.n_p))
        return [slice(lo, min(self.n_f, lo + step)) for lo in range(0, self.n_f, step)]

    def _blocks(self, gb: FloatArray) -> FloatArray:
        """Return ``V_o diag(g_j) V_o^T`` for the columns ``j`` of ``gb``."""
        if self.pairs is not None:  # one GEMM: (n_op^2, n_p) @ (n_p, n)
            return (self.pairs @ gb).T.reshape(-1, self.n_op, self.n_op)
        return (self.v_o[None] * gb.T[:, None, :]) @ self.v_o.T

    def _diag_q(self, binv: FloatArray) -> FloatArray:
        """Return ``diag(V_o^T B_j^{-1} V_o)`` as columns, shape (n_p, n)."""
        if self.pairs is not None:
            return self.pairs.T @ binv.reshape(binv.shape[0], -1).T
        return np.sum(self.v_o[None] * (binv @ self.v_o), 1).T

    def factorize(
        self, g: FloatArray, noise: float, dg: FloatArray | None, noise_free: bool
    ) -> SubgridFactorization:
        """Factor the blocks; return the observed-cell factorisation and gradient."""
        gb = self._g_blocks(g)
        binv_all = np.empty((self.n_f, self.n_op, self.n_op))
        logdet, diag_q = 0.0, np.empty((self.n_p, self.n_f))
        for sl in self._chunks():
            blocks = self._blocks(gb[:, sl])
            blocks[:, np.arange(self.n_op), np.arange(self.n_op)] += noise
            try:
                chol = np.linalg.cholesky(blocks)
            except np.linalg.LinAlgError:
                raise np.linalg.LinAlgError(
                    "a block of K_oo + noise I is not positive definite; increase "
                    "noise."
                ) from None
            logdet += 2.0 * float(np.sum(np.log(np.diagonal(chol, 0, 1, 2))))
            binv = np.linalg.inv(blocks)
            binv_all[sl] = 0.5 * (binv + np.transpose(binv, (0, 2, 1)))
            if dg is not None:
                diag_q[:, sl] = self._diag_q(binv_all[sl])
        a = np.einsum("jkl,jl->jk", binv_all, self.y_rot)
        n_obs = self.n_op * self.n_f
        lml = -0.5 * float(np.sum(self.y_rot * a)) - 0.5 * logdet
        lml -= 0.5 * n_obs * _LOG_2PI
        grad = None
        if dg is not None:
            va = self.v_o.T @ a.T  # (n_p, n_f)
            dgb = self._g_blocks(dg).reshape(self.n_p * self.n_f, -1)
            grad = 0.5 * (dgb.T @ (va**2 - diag_q).reshape(-1))
            if noise_free:
                trace = float(np.einsum("jkk->", binv_all))
                grad = np.append(grad, 0.5 * noise * (float(np.sum(a**2)) - trace))
        info = SolverInfo("subgrid", self.n_missing)
        state = GraphState(
            self.eigvecs, self.y, self.observed, g, noise, lml, grad, info
        )
        return SubgridFactorization(state, path=self, binv=binv_all, a=a)

    def pad(self, blocks: FloatArray) -> FloatArray:
        """Rotated blocks (n_f, n_op, k) to the full grid (N, k), zero elsewhere."""
        grid = self._from_blocks(blocks, self.n_op)
        sub = self._unpermute(grid, [self.nodes[d].size for d in self.p_axes])
        out = np.zeros((*self.shape, blocks.shape[-1]))
        out[np.ix_(*self.nodes)] = sub
        return out.reshape(-1, blocks.shape[-1])


class SubgridFactorization(GraphFactorization):
    """The sub-grid route's factorisation: inverse blocks and rotated weights."""

    def __init__(
        self, state: GraphState, *, path: SubgridPath, binv: FloatArray, a: FloatArray
    ) -> None:
        super().__init__(state)
        self.path, self.binv, self.a = path, binv, a

    def alpha(self) -> FloatArray:
        """Return ``A_oo^{-1} y`` zero-padded to the full grid (flat, C order)."""
        return self.path.pad(self.a[:, :, None])[:, 0]

    def mean(self) -> FloatArray:
        """Return the posterior mean ``K alpha`` on the full grid."""
        return kron_matvec(self.eigvecs, self.g * rotate(self.eigvecs, self.alpha()))

    def solve_observed(self, r: FloatArray) -> FloatArray:
        """Return ``A_oo^{-1} r`` (zero-padded) for ``r`` of shape (N, k)."""
        k = r.shape[1]
        sub = r.reshape(*self.shape, k)[np.ix_(*self.path.nodes)]
        return self.path.pad(self.binv @ self.path._to_blocks(sub))

    def _grid_variance(self) -> FloatArray:
        r"""Posterior variance on the full grid, block by block.

        :math:`\sum_j U_F[t, j]^2 (V_P \operatorname{diag}(g_j) V_P^T - W_j^T
        B_j^{-1} W_j)_{ii}` with :math:`W_j = V_o \operatorname{diag}(g_j)
        V_P^T`; cost :math:`O(N n_o^P (n_o^P + \sum_{d\in P} n_d))`.
        """
        path = self.path
        gb = path._g_blocks(self.g)
        p_vecs = [self.eigvecs[d] for d in path.p_axes]
        cond = kron_matvec([u * u for u in p_vecs], gb)  # prior, (n_p, n_f)
        for sl in path._chunks():
            n = sl.stop - sl.start
            x = gb[:, sl, None] * path.v_o.T[:, None, :]  # (n_p, n, n_op)
            wt = kron_matvec(p_vecs, x.reshape(path.n_p, -1)).reshape(path.n_p, n, -1)
            cond[:, sl] -= np.einsum("ijk,jkl,ijl->ij", wt, self.binv[sl], wt)
        f_sq = [self.eigvecs[d] ** 2 for d in path.f_axes]
        c = kron_matvec(f_sq, cond.T) if f_sq else cond.T  # (n_f, n_p)
        grid = np.transpose(c, (1, 0))[:, :, None]
        out = path._unpermute(grid, [self.shape[d] for d in path.p_axes])
        return np.maximum(out.reshape(-1), 0.0)
