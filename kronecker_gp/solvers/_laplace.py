r"""Laplace inference on a grid: Newton mode, approximate LML and its gradient.

The latent field on the grid is :math:`f \sim N(0, K)`, :math:`K = \bigotimes_d
K_d = Q \Lambda Q^T`, observed through a likelihood :math:`p(y_i | f_i + o_i)`
(offset :math:`o`) on the observed cells; a missing cell (NaN) has no
likelihood term, i.e. curvature :math:`W_i = 0`, so no Schur complement is
needed. We work in whitened rotated coordinates :math:`f = Q S v`,
:math:`S = \Lambda^{1/2}` (prior :math:`v \sim N(0, I)`), where the negative
Hessian of :math:`\Psi(v) = \log p(y | f) - \frac12 \|v\|^2` is

.. math::
    A = I + S Q^T W Q S,

similar to :math:`B = I + W^{1/2} K W^{1/2}` of Rasmussen and Williams (2006,
Alg. 3.1): same eigenvalues (:math:`\ge 1` for :math:`W \ge 0`), so
:math:`\log|B| = \log|A|`. A product with :math:`A` is two Kronecker rotations
(:func:`~kronecker_gp.linalg.kron_matvec`); CG on :math:`A` is preconditioned by
its exact inverse for constant curvature, the diagonal
:math:`(I + \bar w \Lambda)^{-1}` (:math:`\bar w` the mean curvature over the
grid). The posterior covariance is :math:`\Sigma = (K^{-1} + W)^{-1} = Q S
A^{-1} S Q^T`.

Newton (damped): :math:`v \leftarrow v + t A_+^{-1} \nabla\Psi(v)` with
:math:`A_+` built from :math:`W_+ = \max(W, 0)` and :math:`t` halved until
:math:`\Psi` increases (the safeguard for the non-log-concave Student-t; for
log-concave likelihoods :math:`W_+ = W` and :math:`t = 1` near the mode).
Approximate LML (Laplace): :math:`\Psi(\hat v) - \frac12 \log|A|`.

Gradient (Rasmussen and Williams 2006, Alg. 5.1, written with :math:`\Sigma`;
:math:`a = \nabla \log p(\hat f)` satisfies :math:`\hat f = K a`,
:math:`R = (K + W^{-1})^{-1} = W - W \Sigma W`, :math:`(I + KW)^{-1} = I - \Sigma W`):

.. math::
    \frac{\partial \log q}{\partial \theta_j} = \tfrac12 a^T \dot K_j a
    - \tfrac12 \operatorname{tr}(W \dot K_j)
    + \tfrac12 \operatorname{tr}(W \Sigma W \dot K_j)
    + s_2^T (I - \Sigma W) \dot K_j a, \qquad
    s_2 = \tfrac12 \operatorname{diag}(\Sigma) \odot \partial^3 \log p,

and for a likelihood log-parameter :math:`\phi`:
:math:`\sum_i \partial_\phi \log p_i - \frac12 \sum_i \Sigma_{ii}
\partial_\phi W_i + s_2^T \Sigma\, \partial_\phi a`.

Exact versus estimated. Up to ``dense_max_cells`` cells (default 1024, about
0.1 s for the :math:`N^3` products) :math:`A` is formed and Cholesky-factored:
everything is exact. Beyond it, solves are CG to ``cg_tol`` (exact to that
tolerance); with a constant curvature on the grid (e.g. Gaussian without
missing cells) :math:`\log|A| = \sum \log(1 + w\lambda)` and
:math:`\operatorname{diag}\Sigma` are exact from the eigenvalues; otherwise
:math:`\log|A|` is estimated by stochastic Lanczos quadrature on the
preconditioned :math:`A` (standard error returned), and the traces
:math:`\operatorname{tr}(W\Sigma W \dot K_j)` and :math:`\operatorname{diag}\Sigma`
by Hutchinson's estimator with the same ``n_probes`` Rademacher probes.

References
----------
.. [1] Rasmussen, C. E. and Williams, C. K. I. (2006). Gaussian Processes for
   Machine Learning. MIT Press, Alg. 3.1, 3.2 and 5.1.
.. [2] Flaxman, S., Wilson, A. G., Neill, D., Nickisch, H. and Smola, A. (2015).
   Fast Kronecker inference in Gaussian processes with non-Gaussian
   likelihoods. ICML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import scipy.linalg

from kronecker_gp._typing import FloatArray
from kronecker_gp.likelihoods import Likelihood
from kronecker_gp.linalg import (
    face_split_matvec,
    kron_diag,
    kron_eigh,
    kron_matvec,
    kron_outer,
)
from kronecker_gp.linalg._identities import face_split_rows
from kronecker_gp.linalg._krylov import batched_cg, lanczos_logdet_solve

#: Largest grid (cells) on which A = I + S Q^T W Q S is formed and factored
#: densely (N^3 / 3 flops for the product and Cholesky: about 0.1 s at 1024).
DENSE_MAX_CELLS = 1024
#: Rows of a cross-covariance block formed at once in predictions (entries).
CHUNK_ENTRIES = 2**22
#: Predictive variances are exact (one CG column per point) while
#: n_points * n_cells stays below this; beyond, they are Monte Carlo estimates.
EXACT_VARIANCE_WORK = 2**27
#: Rounds of iterative refinement of a solve with A through B (each one a
#: CG run on B and one product with A).
MAX_REFINE = 4
_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True)
class LaplaceOptions:
    """Numerical settings of a Laplace solve (immutable; copy to change)."""

    newton_tol: float = 1e-20
    max_newton: int = 100
    cg_tol: float = 1e-10
    cg_max_iter: int = 2000
    n_probes: int = 32
    dense_max_cells: int = DENSE_MAX_CELLS
    random_state: int = 0
    #: "additive" (default; CG on A) or "scaled" (log-determinant by SLQ on
    #: B with :class:`ScaledKronPreconditioner`; experimental, see issue 15)
    preconditioner: str = "additive"


@dataclass(frozen=True)
class KronBasis:
    """The Kronecker eigenbasis ``K = Q diag(lam) Q^T`` of the prior."""

    eigvecs: list[FloatArray]
    lam: FloatArray
    lam_axes: list[FloatArray]
    grams: list[FloatArray] = field(default_factory=list)

    @classmethod
    def from_grams(cls, grams: Sequence[FloatArray]) -> KronBasis:
        """Eigendecompose each factor Gram."""
        w, u = kron_eigh(grams)
        return cls(list(u), kron_outer(w), list(w), [np.asarray(g) for g in grams])

    def k_matvec(self, x: FloatArray) -> FloatArray:
        """Return ``K x`` (one Kronecker product of the factor Grams)."""
        if self.grams:
            return kron_matvec(self.grams, x)
        lam = self.lam if x.ndim == 1 else self.lam[:, None]
        return self.unrotate(lam * self.rotate(x))

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid shape."""
        return tuple(int(u.shape[0]) for u in self.eigvecs)

    def rotate(self, x: FloatArray) -> FloatArray:
        """Return ``Q^T x``."""
        return kron_matvec([u.T for u in self.eigvecs], x)

    def unrotate(self, x: FloatArray) -> FloatArray:
        """Return ``Q x``."""
        return kron_matvec(self.eigvecs, x)

    def dense_q(self) -> FloatArray:
        """Return ``Q`` as an (N, N) array (small grids only)."""
        return reduce(np.kron, self.eigvecs)


def additive_log_fit(w: FloatArray, n_sweeps: int = 20) -> list[FloatArray]:
    r"""Fit :math:`W \approx \bigotimes_k \operatorname{diag}(d_k)` on a grid.

    Least squares on :math:`\log W_i = \sum_k \log d_k[i_k]` over the cells
    with :math:`W > 0`, by backfitting (``n_sweeps`` sweeps of per-axis
    means); a slice without such cells gets :math:`d = 0`.

    Parameters
    ----------
    w : ndarray of shape (n_1, ..., n_D)
        Non-negative curvatures.
    n_sweeps : int, default=20

    Returns
    -------
    list of ndarray of shape (n_k,)
    """
    pos = w > 0
    x = np.where(pos, np.log(np.where(pos, w, 1.0)), 0.0)
    logs = [np.zeros(n) for n in w.shape]
    axes = range(w.ndim)
    counts = [pos.sum(axis=tuple(a for a in axes if a != k)) for k in axes]
    for _ in range(n_sweeps):
        for k in axes:
            others = sum(_along(logs[j], j, w.ndim) for j in axes if j != k)
            resid = np.where(pos, x - others, 0.0)
            total = resid.sum(axis=tuple(a for a in axes if a != k))
            logs[k] = total / np.maximum(counts[k], 1)
    return [np.where(c > 0, np.exp(a), 0.0) for a, c in zip(logs, counts)]


def _along(v: FloatArray, axis: int, ndim: int) -> FloatArray:
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


class KronPreconditioner:
    r"""Preconditioner :math:`P = I + S Q^T \tilde W Q S`, inverted exactly.

    With a Kronecker-diagonal curvature :math:`\tilde W = \bigotimes_k D_k`
    (fitted to :math:`W` by :func:`additive_log_fit`),
    :math:`P = I + \bigotimes_k H_k`,
    :math:`H_k = S_k Q_k^T D_k Q_k S_k = V_k \Gamma_k V_k^T`, so
    :math:`P^{-1} = V (I + \Gamma)^{-1} V^T` costs two Kronecker rotations.
    It is exact for a constant curvature, and keeps CG fast when the
    curvature varies by orders of magnitude but nearly multiplicatively
    across the axes (counts: exposure by state, rate by year).
    """

    def __init__(self, basis: KronBasis, w: FloatArray) -> None:
        d_list = additive_log_fit(np.maximum(w, 0.0).reshape(basis.shape))
        self.vs, gammas, self.qsv = [], [], []
        for q, lam, d in zip(basis.eigvecs, basis.lam_axes, d_list):
            sk = np.sqrt(lam)
            h = sk[:, None] * ((q.T * d) @ q) * sk[None, :]
            g, v = scipy.linalg.eigh(0.5 * (h + h.T))
            self.vs.append(v)
            gammas.append(np.maximum(g, 0.0))
            self.qsv.append((q * sk) @ v)
        self.inv = 1.0 / (1.0 + kron_outer(gammas))

    def to_v(self, x: FloatArray) -> FloatArray:
        """Return ``V^T x``."""
        return kron_matvec([v.T for v in self.vs], x)

    def from_v(self, y: FloatArray) -> FloatArray:
        """Return ``V y``."""
        return kron_matvec(self.vs, y)

    def m(self, y: FloatArray) -> FloatArray:
        """Return ``Q S V y`` (the V basis to grid values)."""
        return kron_matvec(self.qsv, y)

    def m_t(self, x: FloatArray) -> FloatArray:
        """Return ``V^T S Q^T x``."""
        return kron_matvec([q.T for q in self.qsv], x)

    def apply(self, x: FloatArray, power: float = 1.0) -> FloatArray:
        """Return ``P^-power x`` for columns x of shape (N, k)."""
        return self.from_v((self.inv**power)[:, None] * self.to_v(x))

    def logdet(self) -> float:
        """Return ``log|P|``."""
        return -float(np.sum(np.log(self.inv)))

    def sigma_diag(self) -> FloatArray:
        """Return the diagonal of ``Q S P^-1 S Q^T`` (exact)."""
        return kron_matvec([m * m for m in self.qsv], self.inv)

    def sigma(self, x: FloatArray) -> FloatArray:
        """Return ``Q S P^-1 S Q^T x`` for columns x of shape (N, k)."""
        y = kron_matvec([m.T for m in self.qsv], x)
        return kron_matvec(self.qsv, self.inv[:, None] * y)


class ScaledKronPreconditioner:
    r"""Preconditioner :math:`P = T (I + G) T` of :math:`B = I + W^{1/2} K W^{1/2}`.

    :math:`G = \tilde W^{1/2} K \tilde W^{1/2} = \bigotimes_k G_k`, with the
    Kronecker-diagonal fit :math:`\tilde W = \bigotimes_k D_k` of
    :func:`additive_log_fit`, and the grid-diagonal scaling
    :math:`T^2 = (1 + W \operatorname{diag} K) / (1 + \tilde W
    \operatorname{diag} K)` that makes the diagonals of :math:`P` and
    :math:`B` equal. With :math:`G_k = V_k \Gamma_k V_k^T`,
    :math:`P^{-1} = T^{-1} V (I + \Gamma)^{-1} V^T T^{-1}`: two Kronecker
    rotations. It is exact for a product curvature (:math:`T = I`), and where
    the data dominate (:math:`W K \gg 1`) it is exact up to the prior's
    correlations whatever the curvature's pattern: :math:`B \approx
    W^{1/2} K W^{1/2} = T G T` when :math:`T^2 \approx W / \tilde W`. The
    additive fit alone (:class:`KronPreconditioner`) leaves the residual
    :math:`W / \tilde W` in the data term: a condition number of about
    :math:`\max(W / \tilde W) / \min(W / \tilde W)`, which counts with
    epidemics (measles: :math:`10^7`) make hopeless; this one leaves about
    :math:`10^2` there.
    """

    def __init__(self, basis: KronBasis, w: FloatArray) -> None:
        d_list = additive_log_fit(np.maximum(w, 0.0).reshape(basis.shape))
        grams = basis.grams or [
            (q * lam) @ q.T for q, lam in zip(basis.eigvecs, basis.lam_axes)
        ]
        self.vs, gammas, kdiag = [], [], []
        for k, d in zip(grams, d_list):
            sd = np.sqrt(d)
            g, v = scipy.linalg.eigh(sd[:, None] * (0.5 * (k + k.T)) * sd[None, :])
            self.vs.append(v)
            gammas.append(np.maximum(g, 0.0))
            kdiag.append(np.diagonal(k))
        kd = kron_outer(kdiag)
        self.t2 = (1.0 + w * kd) / (1.0 + kron_outer(d_list) * kd)
        self.t_inv = 1.0 / np.sqrt(self.t2)
        self.inv = 1.0 / (1.0 + kron_outer(gammas))

    def to_u(self, x: FloatArray) -> FloatArray:
        """Return ``V^T T^-1 x`` (grid right-hand side to the CG basis)."""
        return kron_matvec([v.T for v in self.vs], self.t_inv[:, None] * x)

    def from_u(self, u: FloatArray) -> FloatArray:
        """Return ``T^-1 V u`` (CG basis to the grid)."""
        return self.t_inv[:, None] * kron_matvec(self.vs, u)

    def logdet(self) -> float:
        """Return ``log|P|``."""
        return float(np.sum(np.log(self.t2)) - np.sum(np.log(self.inv)))


class CurvatureSystem:
    r"""Solves, log-determinant and traces with :math:`A = I + S Q^T W Q S`."""

    def __init__(self, basis: KronBasis, w: FloatArray, opts: LaplaceOptions) -> None:
        self.basis, self.w, self.opts = basis, w, opts
        self.s = np.sqrt(basis.lam)
        self.dense = w.size <= opts.dense_max_cells
        self.constant = bool(np.ptp(w) == 0.0)
        self.cg_iterations = 0
        if self.dense:
            qs = basis.dense_q() * self.s
            a = np.eye(w.size) + (qs.T * w) @ qs
            try:
                self._chol = scipy.linalg.cho_factor(a, lower=True)
            except np.linalg.LinAlgError:
                raise np.linalg.LinAlgError(
                    "I + W^1/2 K W^1/2 is not positive definite at this latent "
                    "field (negative curvature of a non-log-concave likelihood); "
                    "the Laplace approximation does not exist here."
                ) from None
            self._qs = qs
        self._precond: KronPreconditioner | None = None
        self._bprec: ScaledKronPreconditioner | None = None
        if not (self.dense or self.constant):
            self._precond = KronPreconditioner(basis, w)
            self._bprec = ScaledKronPreconditioner(basis, w)
            self._sw = np.sqrt(np.maximum(w, 0.0))

    def matvec(self, x: FloatArray) -> FloatArray:
        """Return ``A x`` for x of shape (N,) or (N, k)."""
        s = self.s if x.ndim == 1 else self.s[:, None]
        w = self.w if x.ndim == 1 else self.w[:, None]
        return x + s * self.basis.rotate(w * self.basis.unrotate(s * x))

    def solve(self, b: FloatArray, rtol: float | None = None) -> FloatArray:
        """Return ``A^{-1} b`` (dense Cholesky, eigenvalues or CG to ``rtol``).

        ``rtol`` defaults to ``cg_tol``.
        """
        vec = b.ndim == 1
        bb = b[:, None] if vec else b
        if self.dense:
            x = scipy.linalg.cho_solve(self._chol, bb)
        elif self.constant:
            x = bb / (1.0 + self.w[0] * self.basis.lam)[:, None]
        else:
            x = self._solve_additive(bb, rtol)
        return x[:, 0] if vec else x

    def _solve_additive(self, bb: FloatArray, rtol: float | None) -> FloatArray:
        """CG on ``A`` preconditioned by the additive fit (any right-hand side)."""
        # CG in the preconditioner's basis V: A' = V^T A V has the diagonal
        # preconditioner (I + Gamma) and costs two Kronecker products
        prec = self._precond
        assert prec is not None
        y, it, _ = batched_cg(
            self._matvec_v,
            prec.to_v(bb),
            precond=prec.inv,
            rtol=self.opts.cg_tol if rtol is None else rtol,
            maxiter=self.opts.cg_max_iter,
        )
        self.cg_iterations += it
        return prec.from_v(y)

    def newton_point(self, c: FloatArray, rtol: float) -> FloatArray:
        r"""Return :math:`S Q^T W^{1/2} B^{-1} c` (the B route's Newton point).

        With :math:`c = W^{1/2} f + W^{-1/2} \nabla \log p` (0 where
        :math:`W = 0`), this is the whitened :math:`(K^{-1} + W)^{-1}
        (W f + \nabla \log p)`, the full Newton step's end point, without
        the cancellation of :math:`A^{-1} = I - C^T B^{-1} C` where the data
        dominate.
        """
        return self.from_data(self._sw * self._b_solve(c[:, None], rtol)[:, 0])

    def _b_solve(self, r: FloatArray, rtol: float) -> FloatArray:
        """Return ``B^{-1} r`` by preconditioned CG in the basis ``u = V^T T x``."""
        prec = self._bprec
        assert prec is not None
        u, it, _ = batched_cg(
            self._matvec_u,
            prec.to_u(r),
            precond=prec.inv,
            rtol=rtol,
            maxiter=self.opts.cg_max_iter,
        )
        self.cg_iterations += it
        return prec.from_u(u)

    def _matvec_u(self, u: FloatArray) -> FloatArray:
        """Return ``V^T T^-1 B T^-1 V u``, ``B = I + W^1/2 K W^1/2``."""
        prec = self._bprec
        assert prec is not None
        z = prec.from_u(u)
        sw = self._sw[:, None]
        return prec.to_u(z + sw * self.basis.k_matvec(sw * z))

    def _matvec_v(self, y: FloatArray) -> FloatArray:
        """Return ``V^T A V y`` = ``y + M^T W M y``, ``M = Q S V`` (Kronecker)."""
        prec = self._precond
        assert prec is not None
        return y + prec.m_t(self.w[:, None] * prec.m(y))

    def to_data(self, x: FloatArray) -> FloatArray:
        """Return ``Q S x`` (rotated whitened -> grid values)."""
        s = self.s if x.ndim == 1 else self.s[:, None]
        return self.basis.unrotate(s * x)

    def from_data(self, x: FloatArray) -> FloatArray:
        """Return ``S Q^T x``."""
        s = self.s if x.ndim == 1 else self.s[:, None]
        return s * self.basis.rotate(x)

    def sigma(self, x: FloatArray, rtol: float | None = None) -> FloatArray:
        r"""Return :math:`\Sigma x = Q S A^{-1} S Q^T x` (CG to ``rtol``)."""
        return self.to_data(self.solve(self.from_data(x), rtol))

    def logdet(self) -> tuple[float, float]:
        """Return ``log|A|`` and its standard error (0 when exact)."""
        if self.dense:
            return 2.0 * float(np.sum(np.log(np.diagonal(self._chol[0])))), 0.0
        if self.constant:
            return float(np.sum(np.log1p(self.w[0] * self.basis.lam))), 0.0
        # log|A| = log|P| + tr f(N) + tr(N - I), N = P^-1/2 A P^-1/2, with
        # f = log x - x + 1 by stochastic Lanczos quadrature and tr(N - I) by
        # Hutchinson on the same probes (their standard errors added in
        # quadrature: conservative, the two estimates are anti-correlated)
        if self.opts.preconditioner == "additive":
            prec = self._precond
            assert prec is not None
            return self._slq_logdet(self._matvec_v, prec.inv, prec.logdet())
        # log|A| = log|B| (same eigenvalues), B preconditioned by T (I + G) T
        bprec = self._bprec
        assert bprec is not None
        return self._slq_logdet(self._matvec_u, bprec.inv, bprec.logdet())

    def _slq_logdet(
        self,
        matvec: Callable[[FloatArray], FloatArray],
        inv: FloatArray,
        logdet_p: float,
    ) -> tuple[float, float]:
        """Return log|P| + log|N|, N = D^-1/2 M D^-1/2 (M = matvec, D^-1 = inv)."""
        root = np.sqrt(inv)[:, None]

        def scaled(x: FloatArray) -> FloatArray:
            # (I + Gamma)^-1/2 V^T A V (I + Gamma)^-1/2: orthogonally similar
            # to P^-1/2 A P^-1/2, so the same spectrum and trace
            return root * matvec(root * x)

        z = self._probes()
        trace, err, _, _ = lanczos_logdet_solve(
            scaled, z, max_steps=self.opts.cg_max_iter, tol=1e-6
        )
        lin = np.sum(z * scaled(z), axis=0) - np.sum(z * z, axis=0)
        err_lin = float(np.std(lin, ddof=1) / np.sqrt(lin.size))
        logdet = logdet_p + trace + float(np.mean(lin))
        return logdet, float(np.hypot(err, err_lin))

    def _probes(self) -> FloatArray:
        rng = np.random.default_rng(self.opts.random_state)
        k = max(2, int(self.opts.n_probes))
        return rng.choice([-1.0, 1.0], size=(self.w.size, k))

    def sigma_diag(self) -> FloatArray:
        r"""Return :math:`\operatorname{diag}\Sigma` (exact, or Hutchinson estimate)."""
        if self.dense:
            l_inv = scipy.linalg.solve_triangular(self._chol[0], self._qs.T, lower=True)
            return np.sum(l_inv * l_inv, axis=0)
        if self.constant:
            spec = self.basis.lam / (1.0 + self.w[0] * self.basis.lam)
            return kron_matvec([u * u for u in self.basis.eigvecs], spec)
        # control variate: Sigma_0 = Q S P^-1 S Q^T (the preconditioner's
        # covariance) has an exact diagonal; only Sigma - Sigma_0 is estimated
        prec = self._precond
        assert prec is not None
        z = self._probes()
        return prec.sigma_diag() + np.mean(z * (self.sigma(z) - prec.sigma(z)), axis=1)

    def sample_rotated(self, n: int, rng: np.random.Generator) -> FloatArray:
        r"""Draw ``n`` columns from :math:`N(0, A^{-1})` (rotated whitened space).

        Dense: :math:`L^{-T}\varepsilon`. Otherwise by perturbation,
        :math:`A^{-1}(\varepsilon_1 + S Q^T W^{1/2} \varepsilon_2)`, whose
        covariance is :math:`A^{-1} A A^{-1}`; this needs :math:`W \ge 0`.
        """
        eps = rng.standard_normal((self.w.size, n))
        if self.dense:
            return scipy.linalg.solve_triangular(  # type: ignore[no-any-return]
                self._chol[0], eps, lower=True, trans="T"
            )
        if np.any(self.w < 0):
            raise ValueError(
                "posterior samples on a grid above dense_max_cells need a "
                "non-negative curvature W at the mode; the Student-t mode has "
                f"{int(np.sum(self.w < 0))} cells with W < 0 (outliers)."
            )
        noise = rng.standard_normal((self.w.size, n)) * np.sqrt(self.w)[:, None]
        return self.solve(eps + self.from_data(noise))

    def dense_sigma(self) -> FloatArray:
        """Return Sigma as an (N, N) array (dense path only)."""
        l_inv = scipy.linalg.solve_triangular(self._chol[0], self._qs.T, lower=True)
        return l_inv.T @ l_inv


@dataclass
class LaplaceResult:
    """The Laplace approximation at one set of hyperparameters."""

    v: FloatArray
    f: FloatArray
    grad_logp: FloatArray
    w: FloatArray
    lml: float
    lml_std_error: float
    system: CurvatureSystem
    grad: FloatArray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaplaceProblem:
    """Data of a Laplace solve: observations, offsets and the likelihood.

    Parameters
    ----------
    y : ndarray of shape (N,)
        Observations on the C-order grid; NaN marks a missing cell.
    offset : ndarray of shape (N,)
        Known offsets added to the latent (e.g. log exposure plus a mean).
    lik : likelihood
        From :mod:`kronecker_gp.likelihoods`.
    params : ndarray
        The likelihood's log-parameters.
    """

    y: FloatArray
    offset: FloatArray
    lik: Likelihood
    params: FloatArray

    @property
    def obs(self) -> FloatArray:
        """Mask of the observed cells."""
        return ~np.isnan(self.y)

    def terms(self, f: FloatArray) -> tuple[float, FloatArray, FloatArray, FloatArray]:
        """Return sum log p, d1, W = -d2, d3 on the grid (0 on missing cells)."""
        obs = self.obs
        logp, d1, d2, d3 = self.lik.derivatives(
            self.y[obs], f[obs] + self.offset[obs], self.params
        )
        out = [np.zeros(f.size) for _ in range(3)]
        for arr, val in zip(out, (d1, -d2, d3)):
            arr[obs] = val
        return float(np.sum(logp)), out[0], out[1], out[2]

    def param_columns(self, f: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Grid columns of d log p, d a and d W in each likelihood log-parameter."""
        obs = self.obs
        dlogp, dd1, dd2 = self.lik.param_derivatives(
            self.y[obs], f[obs] + self.offset[obs], self.params
        )
        out = [np.zeros((f.size, len(self.params))) for _ in range(3)]
        for arr, val in zip(out, (dlogp, dd1, -dd2)):
            arr[obs] = val.T
        return out[0], out[1], out[2]


def laplace_mode(
    basis: KronBasis,
    problem: LaplaceProblem,
    opts: LaplaceOptions,
    v0: FloatArray | None = None,
) -> tuple[FloatArray, int, int]:
    """Find the posterior mode ``v`` (whitened rotated) by damped Newton.

    Parameters
    ----------
    basis : KronBasis
        The prior's eigenbasis.
    problem : LaplaceProblem
        Observations, offsets and likelihood.
    opts : LaplaceOptions
        Tolerances.
    v0 : ndarray of shape (N,), optional
        Starting point (warm start); zeros by default.

    Returns
    -------
    v : ndarray of shape (N,)
    n_iter : int
        Newton steps taken.
    cg_iterations : int
        CG iterations over all steps (0 on the dense path).
    """
    s = np.sqrt(basis.lam)
    v = np.zeros(problem.y.size) if v0 is None else v0.copy()

    def psi_at(vv: FloatArray) -> tuple[float, FloatArray, FloatArray, FloatArray]:
        ff = basis.unrotate(s * vv)
        # a trial step may overflow exp(f): Psi is then not finite and the
        # line search shortens the step, so the warnings are not wanted
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            lp, d1, w, _ = problem.terms(ff)
        return lp - 0.5 * float(vv @ vv), ff, d1, w

    psi, f, d1, w = psi_at(v)
    if v0 is not None:
        # a warm start from other hyperparameters can be far off (or overflow)
        cold = psi_at(np.zeros(problem.y.size))
        if not np.isfinite(psi) or cold[0] > psi:
            v = np.zeros(problem.y.size)
            psi, f, d1, w = cold
    cg_its, g0, last_decrement = 0, 1.0, np.inf
    for it in range(1, opts.max_newton + 1):
        system = CurvatureSystem(basis, np.maximum(w, 0.0), opts)
        grad = s * basis.rotate(d1) - v
        # inexact Newton (forcing term proportional to the gradient norm, so
        # the convergence stays quadratic): loose CG far from the mode
        gnorm = float(np.linalg.norm(grad))
        g0 = gnorm if it == 1 else g0
        rtol = max(opts.cg_tol, min(0.1, gnorm / max(g0, _EPS)))
        step = system.solve(grad, rtol)
        cg_its += system.cg_iterations
        t = 1.0
        for _ in range(60):
            new = psi_at(v + t * step)
            # rounding slack: near the mode Psi changes by less than eps |Psi|
            if np.isfinite(new[0]) and new[0] >= psi - 64 * _EPS * (1.0 + abs(psi)):
                break
            t *= 0.5
        else:
            raise RuntimeError(
                "the Laplace mode's line search found no ascent (Psi not finite "
                "or not increasing along the Newton direction); check the "
                "hyperparameters and the data."
            )
        # Newton decrement grad^T A_+^-1 grad (twice the predicted gain); the
        # default tol 1e-20 puts the mode's gradient at rounding level
        decrement = float(grad @ step)
        v = v + t * step
        psi, f, d1, w = new
        scale = 1.0 + abs(psi)
        if decrement <= opts.newton_tol * scale:
            return v, it, cg_its
        # rounding floor: near the mode a Newton step shrinks the decrement
        # quadratically; when it stops shrinking below 1e-10 |Psi| the
        # gradient is at the rounding level of large likelihood terms
        if decrement <= 1e-10 * scale and decrement >= 0.5 * last_decrement:
            return v, it, cg_its
        last_decrement = decrement
    raise RuntimeError(
        f"Newton's method for the Laplace mode did not converge in "
        f"{opts.max_newton} steps (last Newton decrement {decrement:.3g}); "
        "increase max_newton or check the hyperparameters."
    )


def laplace_factorize(
    grams: Sequence[FloatArray],
    problem: LaplaceProblem,
    *,
    grad_grams: Sequence[FloatArray] | None = None,
    opts: LaplaceOptions | None = None,
    v0: FloatArray | None = None,
    need_lml: bool = True,
) -> LaplaceResult:
    """Laplace approximation on a grid: mode, approximate LML and its gradient.

    Parameters
    ----------
    grams : list of ndarray of shape (n_d, n_d)
        Factor Gram matrices of the prior covariance.
    problem : LaplaceProblem
        Observations, offsets and likelihood.
    grad_grams : list of ndarray of shape (n_d, n_d, p_d), optional
        Factor Gram derivatives in the kernels' log-parameters; with them the
        gradient (kernel parameters, then likelihood parameters) is returned.
    opts : LaplaceOptions, optional
        Numerical settings.
    v0 : ndarray, optional
        Warm start of the Newton search (a previous result's ``v``).
    need_lml : bool, default=True
        Compute the approximate LML (its log-determinant is the costly part
        above ``dense_max_cells``); without it ``lml`` is NaN until
        :func:`laplace_lml` fills it in.

    Returns
    -------
    LaplaceResult

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.likelihoods import Poisson
    >>> x = np.linspace(0, 1, 6)
    >>> K = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / 0.3**2)
    >>> y = np.array([0.0, 1, 3, 2, np.nan, 5, 1, 0, 2, 4, 3, 1])
    >>> prob = LaplaceProblem(y, np.zeros(12), Poisson(), np.zeros(0))
    >>> res = laplace_factorize([K, np.eye(2)], prob)
    >>> bool(res.lml < 0), res.info["dense"]
    (True, True)
    """
    opts = LaplaceOptions() if opts is None else opts
    basis = KronBasis.from_grams(grams)
    v, n_iter, newton_cg = laplace_mode(basis, problem, opts, v0)
    f = basis.unrotate(np.sqrt(basis.lam) * v)
    logp, d1, w, d3 = problem.terms(f)
    system = CurvatureSystem(basis, w, opts)
    res = LaplaceResult(v, f, d1, w, float("nan"), 0.0, system)
    res.info = {"newton_iterations": n_iter, "dense": system.dense, "log_lik": logp}
    if need_lml or grad_grams is not None:
        laplace_lml(res)
    if grad_grams is not None:
        res.grad = _gradient(res, grams, grad_grams, problem, d3)
    res.info["cg_iterations"] = newton_cg + system.cg_iterations
    return res


def laplace_lml(res: LaplaceResult) -> float:
    """Fill in (and return) the approximate LML of a result made without it."""
    if np.isnan(res.lml):
        logdet, err = res.system.logdet()
        res.lml = res.info["log_lik"] - 0.5 * float(res.v @ res.v) - 0.5 * logdet
        res.lml_std_error = 0.5 * err
    return res.lml


def _dk_factor_lists(
    grams: Sequence[FloatArray], grad_grams: Sequence[FloatArray]
) -> list[list[FloatArray]]:
    """Kronecker factors of each dK/dtheta_j (one factor replaced)."""
    out = []
    for d, dk in enumerate(grad_grams):
        for p in range(dk.shape[2]):
            facs = list(grams)
            facs[d] = dk[:, :, p]
            out.append(facs)
    return out


def _gradient(
    res: LaplaceResult,
    grams: Sequence[FloatArray],
    grad_grams: Sequence[FloatArray],
    problem: LaplaceProblem,
    d3: FloatArray,
) -> FloatArray:
    system, a, w = res.system, res.grad_logp, res.w
    dks = _dk_factor_lists(grams, grad_grams)
    diag = system.sigma_diag()
    s2 = 0.5 * diag * d3
    n_par = len(problem.params)
    b = np.zeros((a.size, len(dks)))
    for j, facs in enumerate(dks):
        b[:, j] = kron_matvec(facs, a)
    trace_wsw = _trace_wsigmaw(system, dks)
    dlogp, da, dw = problem.param_columns(res.f)
    rhs = np.column_stack([w[:, None] * b, da])
    sig = system.sigma(rhs) if rhs.shape[1] else rhs
    nk = len(dks)
    grad = np.empty(nk + n_par)
    for j, facs in enumerate(dks):
        explicit = 0.5 * a @ b[:, j] - 0.5 * w @ kron_diag(facs) + 0.5 * trace_wsw[j]
        grad[j] = explicit + s2 @ (b[:, j] - sig[:, j])
    for k in range(n_par):
        grad[nk + k] = np.sum(dlogp[:, k]) - 0.5 * diag @ dw[:, k] + s2 @ sig[:, nk + k]
    return grad


def _trace_wsigmaw(system: CurvatureSystem, dks: list[list[FloatArray]]) -> FloatArray:
    r"""Return :math:`\operatorname{tr}(W \Sigma W \dot K_j)` for each j."""
    w = system.w
    if system.dense:
        m = w[:, None] * system.dense_sigma() * w[None, :]
        return np.array([np.sum(m * reduce(np.kron, facs)) for facs in dks])
    if system.constant:
        # W Sigma W = w^2 Q diag(lam / (1 + w lam)) Q^T: trace through dK's rotation
        spec = w[0] ** 2 * system.basis.lam / (1.0 + w[0] * system.basis.lam)
        us = system.basis.eigvecs
        return np.array(
            [spec @ kron_diag([u.T @ f @ u for u, f in zip(us, facs)]) for facs in dks]
        )
    # Hutchinson on R dK_j, R = W - W Sigma W = (K + W^-1)^-1: the two terms
    # cancel where W is large, so estimating their difference has a far
    # smaller variance than estimating tr(W Sigma W dK_j) alone
    z = system._probes()
    wz = w[:, None] * z
    rz = wz - w[:, None] * system.sigma(wz)
    exact = np.array([w @ kron_diag(facs) for facs in dks])
    est = np.array([np.mean(np.sum(rz * kron_matvec(facs, z), axis=0)) for facs in dks])
    return exact - est


def _apply_cross(
    cross: Sequence[FloatArray], x: FloatArray, *, grid: bool
) -> FloatArray:
    """Cross-covariance times grid vectors: Kronecker (grid) or face-split (points)."""
    if grid:
        return kron_matvec(cross, x)
    if x.ndim == 1:
        return face_split_matvec(cross, x)
    return np.column_stack([face_split_matvec(cross, c) for c in x.T])


def latent_moments(
    res: LaplaceResult,
    cross: Sequence[FloatArray],
    prior_diag: FloatArray | None,
    *,
    grid: bool,
    n_samples: int = 256,
    random_state: int = 0,
) -> tuple[FloatArray, FloatArray | None, bool]:
    r"""Return the Laplace predictive latent mean and variance at test points.

    .. math::
        m_* = k_*^T a, \qquad
        v_* = k_{**} - k_*^T W k_* + k_*^T W \Sigma W k_*

    (Rasmussen and Williams 2006, eqs. 3.21 and 3.24 with
    :math:`(K + W^{-1})^{-1} = W - W \Sigma W`).

    Parameters
    ----------
    res : LaplaceResult
        The fitted approximation.
    cross : list of ndarray
        Per-axis cross-covariances, (n_test_d, n_d) for a test grid or
        (M, n_d) for M test points.
    prior_diag : ndarray of shape (M,) or None
        Prior variances :math:`k_{**}`; None skips the variance.
    grid : bool
        Whether ``cross`` describes a test grid (Kronecker) or points.
    n_samples : int, default=256
        Monte Carlo samples of the last term when the exact computation (one
        solve per test point) exceeds ``EXACT_VARIANCE_WORK``; its relative
        standard error is about :math:`\sqrt{2 / n}`.
    random_state : int, default=0
        Seed of those samples.

    Returns
    -------
    mean : ndarray of shape (M,)
    var : ndarray of shape (M,) or None
    exact : bool
        False when the variance was estimated by Monte Carlo.
    """
    a, w, system = res.grad_logp, res.w, res.system
    mean = _apply_cross(cross, a, grid=grid)
    if prior_diag is None:
        return mean, None, True
    m = mean.size
    exact = system.dense or m * w.size <= EXACT_VARIANCE_WORK
    if not exact:
        # r = R (f0 + W^-1/2 e), f0 ~ N(0, K), e ~ N(0, I), has covariance
        # R (K + W^-1) R = R, so k*^T r samples the whole subtracted term
        # (no cancellation between k*^T W k* and k*^T W Sigma W k*)
        rng = np.random.default_rng(random_state)
        f0 = system.to_data(rng.standard_normal((w.size, n_samples)))
        u = w[:, None] * f0 + np.sqrt(np.maximum(w, 0.0))[
            :, None
        ] * rng.standard_normal((w.size, n_samples))
        h = _apply_cross(cross, u - w[:, None] * system.sigma(u), grid=grid)
        return mean, np.maximum(prior_diag - np.mean(h * h, axis=1), 0.0), False
    var = prior_diag - _apply_cross([c * c for c in cross], w, grid=grid)
    step = max(1, CHUNK_ENTRIES // w.size)  # rows of k* per solve
    shape = tuple(c.shape[0] for c in cross)
    for lo in range(0, m, step):
        idx = np.arange(lo, min(m, lo + step))
        if grid:
            mats = [c[i] for c, i in zip(cross, np.unravel_index(idx, shape))]
        else:
            mats = [c[idx] for c in cross]
        cols = (face_split_rows(mats) * w).T
        # a quadratic form b^T A^-1 b from CG to residual r has relative error
        # of order r^2 cond(A): sqrt(cg_tol) keeps it at the solves' accuracy
        rtol = float(np.sqrt(system.opts.cg_tol))
        var[idx] += np.sum(cols * system.sigma(cols, rtol), axis=0)
    return mean, np.maximum(var, 0.0), True


def latent_samples(
    res: LaplaceResult, n_samples: int, random_state: int | None = 0
) -> FloatArray:
    r"""Draw latent fields on the training grid from :math:`N(\hat f, \Sigma)`.

    Parameters
    ----------
    res : LaplaceResult
        The fitted approximation.
    n_samples : int
        Number of draws.
    random_state : int or None, default=0
        Seed.

    Returns
    -------
    ndarray of shape (N, n_samples)
    """
    rng = np.random.default_rng(random_state)
    x = res.system.sample_rotated(int(n_samples), rng)
    return res.f[:, None] + res.system.to_data(x)
