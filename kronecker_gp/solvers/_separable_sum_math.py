r"""Pure functions: LML and gradient of a sum of separable kernels on a grid.

Two methods share this module (the route in
:mod:`kronecker_gp.solvers._separable_sum` picks one):

* **Woodbury (exact).** Every term but the base one has low-rank factors;
  :func:`kronecker_gp.linalg._separable_sum.woodbury_grid` gives
  :math:`A^{-1}` and :math:`\log|A|` exactly, and the gradient
  :math:`\tfrac12 \alpha^T \partial A \alpha - \tfrac12
  \operatorname{tr}(A^{-1}\partial A)` is exact too: with
  :math:`\tilde X = Q^T \partial A\, Q`,
  :math:`\operatorname{tr}(A^{-1}\partial A) = \operatorname{tr}(G \tilde X)
  - \operatorname{tr}(C^{-1} F^T \tilde X F)`, both by mode contractions,
  :math:`O(P N \sum_d n_d)` per term and axis.
* **Preconditioned CG (estimated LML).** The preconditioner is
  :math:`M = \bigotimes_d X_d + sI` with :math:`X_d = \sum_r w_{dr} K^r_d`
  the Kronecker product nearest the sum
  (:func:`~kronecker_gp.linalg._separable_sum.nearest_kronecker_weights`),
  inverted exactly in its eigenbasis. On a complete grid
  :math:`\log|A| = \log|M| + \log|B|`, :math:`B = M^{-1/2} A M^{-1/2}`, with
  :math:`\operatorname{tr}(\log B - B + I)` by stochastic Lanczos quadrature
  and :math:`\operatorname{tr}(B - I) = \sum_r \operatorname{tr}(M^{-1} K^r)
  + s \operatorname{tr}(M^{-1}) - N` exact (eigenbasis). With ``n_m``
  missing cells the solves use the full-grid operator
  :math:`\tilde A = O A O + c (I - O)` (``O`` the observed-cell mask), whose
  inverse equals :math:`A_{oo}^{-1}` on the observed cells; the
  log-determinant is :math:`\log|A| + \log|(A^{-1})_{mm}|` (the complete
  grid's estimate plus an exact Schur term from ``n_m`` CG solves) while
  those solves fit the exact-flops budget, else
  :math:`\log|\tilde A| - n_m \log c` by the same SLQ, with
  :math:`\operatorname{tr}(M^{-1}(\tilde A - A))` by Hutchinson (a larger
  standard error). The gradient's trace is Hutchinson's (on a complete grid
  with the Lanczos solves and the exact control variate
  :math:`\operatorname{tr}(M^{-1}\partial A)`, as on the per-cell-noise
  route; with missing cells the control's probe term is subtracted too);
  every estimate states its standard error
  (``solver_info_.lml_std_error``, ``solver_info_.extra["grad_std_error"]``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import kron_matvec, kron_outer
from kronecker_gp.linalg._eigenbasis import grid_eigen
from kronecker_gp.linalg._krylov import CGRecorder, lanczos_logdet_solve
from kronecker_gp.linalg._schur import MissingCellSchur
from kronecker_gp.linalg._separable_sum import (
    Factor,
    LowRank,
    WoodburyGrid,
    mode_diag_weights,
    mode_pair_grams,
    nearest_kronecker_weights,
    sum_matvec,
)
from kronecker_gp.linalg._woodbury_collapsed import CollapsedWoodbury

Grams = Sequence[Sequence[FloatArray]]


def rotated_diags(eigvecs: Sequence[FloatArray], grams: Sequence[FloatArray]) -> list:
    """Return ``diag(Q_d^T K_d Q_d)`` for each axis."""
    return [np.einsum("ij,ik,kj->j", q, k, q) for q, k in zip(eigvecs, grams)]


@dataclass(frozen=True)
class MissingSchur:
    r"""Missing cells over an exact complete-grid inverse :math:`P = A^{-1}`.

    With :math:`Z = P E_m` and :math:`C = E_m^T P E_m`, the zero-padded
    :math:`A_{oo}^{-1}` is :math:`P - Z C^{-1} Z^T` and
    :math:`\log|A_{oo}| = \log|A| + \log|C|`. :math:`C` is the exact
    variant of the one Schur complement,
    :class:`~kronecker_gp.linalg._schur.MissingCellSchur` (``schur``), over
    the Woodbury solve; kept rotated here for the gradient: ``z_rot = Q^T Z``,
    ``zc_rot = Q^T Z C^{-1}``.
    """

    z_rot: FloatArray
    zc_rot: FloatArray
    schur: MissingCellSchur

    def logdet(self) -> float:
        """Return ``log|C|``."""
        return self.schur.logdet()

    def correct_rot(self, x_rot: FloatArray) -> FloatArray:
        """Return ``Q^T Z C^{-1} Z^T Q x_rot`` (subtract from the complete solve)."""
        return self.zc_rot @ (self.z_rot.T @ x_rot)


def missing_schur(wb: WoodburyGrid | CollapsedWoodbury, missing: Any) -> MissingSchur:
    """Return the Schur pieces of the missing cells ``missing`` (flat indices).

    The columns :math:`Z = P E_m` are solved once, rotated (they feed the
    gradient), and :math:`C = Z_m` is factored by
    :class:`~kronecker_gp.linalg._schur.MissingCellSchur` with the Woodbury
    solve as its complete-grid callback.
    """
    n = wb.g.size

    def solve_full(x: FloatArray) -> FloatArray:
        return wb.unrot(wb.solve_rot(wb.rot(x)))

    schur = MissingCellSchur(solve_full, missing, n, method="exact")
    cols = schur.pad(np.eye(schur.n_missing))
    z_rot = wb.solve_rot(wb.rot(cols))
    c = schur.take(wb.unrot(z_rot))
    schur.set_pmm(0.5 * (c + c.T))
    zc_rot = schur.solve(z_rot.T).T
    return MissingSchur(z_rot, zc_rot, schur)


def _factor_diag(f: Factor) -> FloatArray:
    """Return the diagonal of a dense, diagonal (1-D) or low-rank factor."""
    if isinstance(f, LowRank):
        return np.asarray(np.sum(f.root**2, axis=1))
    return np.asarray(f if f.ndim == 1 else np.diag(f))


def _contract(
    inner: FloatArray, q: FloatArray, rot: Factor, gram: FloatArray, dk: FloatArray
) -> list[float]:
    """Return ``<inner, Q^T dK_j Q>`` for each parameter ``j``.

    An amplitude parameter (``dK_j == K``) contracts with the rotated factor
    ``rot`` directly; the others with ``Q inner Q^T`` (two GEMMs, once).
    """
    out, back = [], None
    for j in range(dk.shape[2]):
        if np.array_equal(dk[:, :, j], gram):
            if isinstance(rot, LowRank):
                out.append(float(np.sum((inner @ rot.root) * rot.root)))
            elif rot.ndim == 1:
                out.append(float(np.diag(inner) @ rot))
            else:
                out.append(float(np.sum(inner * rot)))
            continue
        if back is None:
            back = q @ inner @ q.T
        out.append(float(np.sum(back * dk[:, :, j])))
    return out


def woodbury_gradient(  # noqa: PLR0913, PLR0917 - the factorisation's pieces
    wb: WoodburyGrid | CollapsedWoodbury,
    grams: Grams,
    dgrams: Grams,
    alpha_rot: FloatArray,
    noise: float,
    noise_free: bool,
    schur: MissingSchur | None = None,
    rotated: Sequence[Sequence[Factor]] | None = None,
) -> FloatArray:
    """Exact LML gradient on the Woodbury route (theta order, then log noise).

    ``rotated[r][d]`` is term ``r``'s factor ``d`` in the base eigenbasis,
    :math:`Q_d^T K^r_d Q_d`: diagonal (1-D) for the base term, low rank for
    the others (:class:`~kronecker_gp.linalg._separable_sum.LowRank`); None
    rotates the Grams (two GEMMs each). Per term and axis with parameters,
    the rotated gradient matrix is formed once and turned back by two GEMMs;
    each parameter then costs :math:`O(n_d^2)`.
    """
    a = alpha_rot[:, None]
    out: list[float] = []
    for r, (term, dterm) in enumerate(zip(grams, dgrams)):
        rot = (
            list(rotated[r])
            if rotated is not None
            else [q.T @ k @ q for q, k in zip(wb.eigvecs, term)]
        )
        diags = [_factor_diag(m) for m in rot]
        for d, dk in enumerate(dterm):
            if dk.shape[2] == 0:
                continue
            inner = mode_pair_grams(a, a, rot, d, summed=True)
            inner += wb.trace_matrix(rot, d)  # type: ignore[arg-type]
            if schur is not None:
                inner += mode_pair_grams(schur.zc_rot, schur.z_rot, rot, d, summed=True)
            inner[np.diag_indices_from(inner)] -= mode_diag_weights(wb.g, diags, d)
            out.extend(_contract(0.5 * inner, wb.eigvecs[d], rot[d], term[d], dk))
    if noise_free:
        trace = float(np.sum(wb.g)) - wb.f_trace()
        if schur is not None:
            trace -= float(np.sum(schur.zc_rot * schur.z_rot))
        out.append(0.5 * noise * float(alpha_rot @ alpha_rot) - 0.5 * noise * trace)
    return np.asarray(out)


def woodbury_noise_gradient(
    wb: WoodburyGrid | CollapsedWoodbury,
    alpha: FloatArray,
    noise_axes: Sequence[int],
    schur: MissingSchur | None = None,
) -> FloatArray:
    r"""Return the LML gradient w.r.t. the per-axis log noise variances.

    The problem is whitened (:math:`\tilde K + I`, noise
    :math:`D = \bigotimes_d D_d` absorbed in the factors), ``alpha`` the
    whitened weights on the grid (zero on missing cells). As on the eigen
    route (:func:`~kronecker_gp.linalg._whitening.axis_noise_gradient`),
    for slice ``i`` of axis ``d``

    .. math::
        \frac{\partial L}{\partial \log v_{d,i}} = \tfrac12 \sum_{j \in
        \text{slice } i} \bigl(\tilde\alpha_j^2 - [(\tilde K_{oo} +
        I)^{-1}]_{jj}\bigr),

    the slice sums of the inverse's diagonal being
    :math:`\operatorname{diag}(Q_d (\operatorname{diag}(h_d) - T_d - S_d)
    Q_d^T)`: the Woodbury and Schur trace matrices with identities on the
    other axes (unit diagonal factors). Cost per axis :math:`O(N n_d + n_d^3)`.
    """
    shape = [q.shape[0] for q in wb.eigvecs]
    ones = [np.ones(n) for n in shape]
    a2 = np.asarray(alpha).reshape(shape) ** 2
    out = []
    for d in noise_axes:
        inner = -wb.trace_matrix(ones, d)
        if schur is not None:
            inner -= mode_pair_grams(schur.zc_rot, schur.z_rot, ones, d, summed=True)
        inner[np.diag_indices_from(inner)] += mode_diag_weights(wb.g, ones, d)
        q = wb.eigvecs[d]
        diag_inv = np.sum((q @ inner) * q, axis=1)
        slices = a2.sum(axis=tuple(e for e in range(len(shape)) if e != d))
        out.append(0.5 * (slices - diag_inv))
    return np.concatenate(out) if out else np.zeros(0)


class SumSystem(CGRecorder):
    """The full-grid operator ``O A O + c (I - O)`` with its preconditioner.

    Parameters
    ----------
    grams : sequence of sequence of ndarray
        ``grams[r][d]``: term ``r``'s factor on axis ``d``.
    noise : float
        ``s > 0``.
    observed : ndarray of bool, shape (N,)
        Observed cells.
    tol, max_iter : float, int
        CG settings.
    """

    def __init__(
        self,
        grams: Grams,
        noise: float,
        observed: FloatArray,
        *,
        tol: float,
        max_iter: int,
    ) -> None:
        self.grams, self.noise = grams, float(noise)
        # M = (x)_d X_d + sI, X_d = sum_r w_dr K^r_d nearest the sum
        weights = nearest_kronecker_weights(grams)
        self.weights = weights
        factors = [
            sum(w[r] * term[d] for r, term in enumerate(grams))
            for d, w in enumerate(weights)
        ]
        self.post = grid_eigen(factors, self.noise)
        self.o = np.asarray(observed, dtype=float)
        # c on missing cells: the mean eigenvalue of c M^{-1} is one
        self.fill = float(self.post.inv_lam.size / np.sum(self.post.inv_lam))
        self.tol, self.max_iter = tol, max_iter
        self.iterations, self.residual = 0, 0.0

    @property
    def complete(self) -> bool:
        """Whether every cell is observed."""
        return bool(self.o.all())

    def rot(self, x: FloatArray) -> FloatArray:
        """Return ``Q^T x``."""
        return kron_matvec([u.T for u in self.post.eigvecs], x)

    def unrot(self, x: FloatArray) -> FloatArray:
        """Return ``Q x``."""
        return kron_matvec(self.post.eigvecs, x)

    def matvec(self, x: FloatArray) -> FloatArray:
        """Return ``(O A O + c (I - O)) x`` for ``x`` of shape (N, k)."""
        o = self.o[:, None]
        ox = o * x
        return (
            o * (sum_matvec(self.grams, ox) + self.noise * ox)
            + (1.0 - o) * self.fill * x
        )

    def precond(self, r: FloatArray) -> FloatArray:
        """Return ``M^{-1} r``."""
        return self.unrot(self.post.inv_lam[:, None] * self.rot(r))

    def half(self, x: FloatArray) -> FloatArray:
        """Return ``M^{-1/2} x``."""
        return self.power(x, 0.5)

    def power(self, x: FloatArray, p: float) -> FloatArray:
        """Return ``M^{-p} x``."""
        return self.unrot((self.post.inv_lam**p)[:, None] * self.rot(x))

    def solve(self, b: FloatArray) -> FloatArray:
        """Return ``A_oo^{-1} b_o`` zero-padded, for columns ``b`` of shape (N, k)."""
        o = self.o[:, None]
        return o * self._run_cg(self.matvec, o * b, self.precond, "separable-sum")

    def exact_trace_b(self) -> float:
        """Return ``tr(M^{-1} A) - N = sum_r tr(M^{-1} K^r) + s tr(M^{-1}) - N``."""
        g = self.post.inv_lam
        total = self.noise * float(np.sum(g)) - g.size
        for term in self.grams:
            diags = rotated_diags(self.post.eigvecs, term)
            total += float(np.sum(g * kron_outer(diags)))
        return total


class TraceProbes:
    """Hutchinson pieces of ``tr(A_oo^{-1} X)`` with the control ``tr(M^{-1} X)``.

    ``tr(A_oo^{-1} X) ~ tr(M^{-1} X) + mean_k (a_k^T X b_k - c_k^T X c_k)``.
    Complete grid: ``a = M^{-1/2} B^{-1} z``, ``b = c = M^{-1/2} z`` (the
    Lanczos solves; ``a - c`` is kept, one contraction). Missing cells:
    ``a = O A~^{-1} M^{1/2} z``, ``b = O M^{-1/2} z`` (one batched CG), since
    ``tr(A~^{-1} O X O) = E[z^T M^{1/2} A~^{-1} O X O M^{-1/2} z]``, and
    ``c = M^{-1/2} z`` for the control (its own contraction).
    """

    def __init__(
        self, system: SumSystem, probes: FloatArray, solves: FloatArray | None
    ) -> None:
        self.system = system
        o = system.o[:, None]
        self.c: FloatArray | None = None
        if system.complete and solves is not None:
            self.a = system.power(solves - probes, 0.5)
            self.b = system.power(probes, 0.5)
        else:
            self.c = system.power(probes, 0.5)
            self.a = system.solve(system.power(probes, -0.5))
            self.b = o * self.c

    def noise_trace(self) -> tuple[float, float]:
        """Return the estimate of ``tr(A_oo^{-1})`` and its standard error."""
        per = np.sum(self.a * self.b, axis=0)
        if self.c is not None:
            per = per - np.sum(self.c * self.c, axis=0)
        ctrl = float(np.sum(self.system.post.inv_lam))
        return ctrl + float(per.mean()), _std_error(per)


def pcg_noise_axes_gradient(
    system: SumSystem,
    traces: TraceProbes,
    alpha: FloatArray,
    shape: Sequence[int],
    noise_axes: Sequence[int],
) -> tuple[FloatArray, FloatArray]:
    r"""Return the gradient w.r.t. per-axis log noise variances on the CG route.

    The system is whitened (noise :math:`D` absorbed in the factors, unit
    noise), ``alpha`` the whitened weights (zero on missing cells). For slice
    ``i`` of axis ``d`` the gradient is :math:`\tfrac12 \sum_{j \in i}
    (\tilde\alpha_j^2 - [\tilde A_{oo}^{-1}]_{jj})`; the slice sums of the
    inverse's diagonal are Hutchinson estimates with the preconditioner's
    exact slice sums as control variate (the probes of the LML's traces).
    Returns the entries and their standard errors.
    """
    q = system.post.eigvecs
    ones = [np.ones(n) for n in shape]
    a2 = (np.asarray(alpha) ** 2).reshape(shape)
    per = traces.a * traces.b
    if traces.c is not None:
        per = per - traces.c * traces.c
    per = per.reshape(*shape, -1)
    grads, errs = [], []
    for d in noise_axes:
        h = mode_diag_weights(system.post.inv_lam, ones, d)
        ctrl = np.sum(q[d] ** 2 * h[None, :], axis=1)
        others = tuple(e for e in range(len(shape)) if e != d)
        per_d = per.sum(axis=others)  # (n_d, probes)
        k = per_d.shape[1]
        est = ctrl + per_d.mean(axis=1)
        se = per_d.std(axis=1, ddof=1) / np.sqrt(k) if k > 1 else np.zeros(len(h))
        grads.append(0.5 * (a2.sum(axis=others) - est))
        errs.append(0.5 * se)
    return np.concatenate(grads), np.concatenate(errs)


def _std_error(values: FloatArray) -> float:
    k = values.size
    return float(values.std(ddof=1) / np.sqrt(k)) if k > 1 else 0.0


def _slq(
    system: SumSystem, probes: FloatArray, max_steps: int
) -> tuple[float, float, FloatArray, int]:
    """``log|A~|`` by SLQ of ``B = M^{-1/2} A~ M^{-1/2}``: estimate, error, solves."""

    def b_matvec(v: FloatArray) -> FloatArray:
        return system.half(system.matvec(system.half(v)))

    tr_f, std_f, solves, steps = lanczos_logdet_solve(
        b_matvec, probes, max_steps=max_steps
    )
    tr_b, std_b = system.exact_trace_b(), 0.0
    if not system.complete:
        # tr(M^-1 (A~ - A)): rows and columns of the missing cells only
        u = system.half(probes)
        full = sum_matvec(system.grams, u) + system.noise * u
        per = np.sum(u * (system.matvec(u) - full), axis=0)
        tr_b, std_b = tr_b + float(per.mean()), _std_error(per)
    logdet = -float(np.sum(np.log(system.post.inv_lam))) + tr_f + tr_b
    return logdet, std_f + std_b, solves, steps


def pcg_logdet(
    system: SumSystem, probes: FloatArray, max_steps: int, schur_budget: float
) -> tuple[float, float, FloatArray | None, int, str]:
    r"""Return the estimate of ``log|A_oo|``, its standard error, solves, steps, method.

    Missing cells, while ``n_m`` CG solves cost at most ``schur_budget``
    flops: :math:`\log|A_{oo}| = \log|A| + \log|(A^{-1})_{mm}|`, the
    complete grid's estimate (exact ``tr(B - I)``) plus an exact Schur term.
    Otherwise SLQ of the padded operator, :math:`\log|\tilde A| - n_m \log c`.
    """
    if system.complete:
        logdet, std, solves, steps = _slq(system, probes, max_steps)
        return logdet, std, solves, steps, "complete"
    missing = np.flatnonzero(system.o == 0)
    n = system.o.size
    work = missing.size * 40.0 * n * sum(k.shape[0] for k in system.grams[0])
    if work * 2 * len(system.grams) <= schur_budget:
        full = copy.copy(system)
        full.o = np.ones(n)
        logdet, std, _, steps = _slq(full, probes, max_steps)
        cols = np.zeros((n, missing.size))
        cols[missing, np.arange(missing.size)] = 1.0
        w = full.solve(cols)[missing]
        chol = np.linalg.cholesky(0.5 * (w + w.T))
        system.iterations = max(system.iterations, full.iterations)
        system.residual = max(system.residual, full.residual)
        return (
            logdet + 2.0 * float(np.sum(np.log(np.diag(chol)))),
            std,
            None,
            steps,
            "schur",
        )
    logdet, std, _, steps = _slq(system, probes, max_steps)
    return logdet - missing.size * np.log(system.fill), std, None, steps, "padded"


def pcg_gradient(  # noqa: PLR0913, PLR0917 - the estimate's pieces
    system: SumSystem,
    traces: TraceProbes,
    dgrams: Grams,
    alpha: FloatArray,
    noise_free: bool,
) -> tuple[FloatArray, FloatArray]:
    """Return the LML gradient (Hutchinson traces) and each entry's standard error."""
    q = system.post.eigvecs
    a = alpha[:, None]
    grad: list[float] = []
    err: list[float] = []
    for term, dterm in zip(system.grams, dgrams):
        diags = rotated_diags(q, term)
        for d, dk in enumerate(dterm):
            m_a = mode_pair_grams(a, a, term, d)[0]
            m_k = mode_pair_grams(traces.a, traces.b, term, d)
            if traces.c is not None:
                m_k = m_k - mode_pair_grams(traces.c, traces.c, term, d)
            h = mode_diag_weights(system.post.inv_lam, diags, d)
            for j in range(dk.shape[2]):
                x = dk[:, :, j]
                per = np.einsum("kij,ij->k", m_k, x)
                ctrl = float(h @ np.einsum("ij,ik,kj->j", q[d], x, q[d]))
                trace = ctrl + float(per.mean())
                grad.append(0.5 * float(np.sum(m_a * x)) - 0.5 * trace)
                err.append(0.5 * _std_error(per))
    if noise_free:
        s = system.noise
        trace, se = traces.noise_trace()
        grad.append(0.5 * s * float(alpha @ alpha) - 0.5 * s * trace)
        err.append(0.5 * s * se)
    return np.asarray(grad), np.asarray(err)
