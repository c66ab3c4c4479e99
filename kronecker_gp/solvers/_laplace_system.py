r"""Solves, log-determinants and traces with the Laplace curvature system.

In whitened rotated coordinates (:math:`f = Q S v`, :math:`K = Q S^2 Q^T`)
the negative Hessian of the Laplace objective is
:math:`A = I + S Q^T W Q S`; it has the eigenvalues of
:math:`B = I + W^{1/2} K W^{1/2}` (Rasmussen and Williams 2006, Alg. 3.1).
:class:`CurvatureSystem` picks one of four routes:

* ``dense`` (at most ``dense_max_cells`` cells): :math:`A` formed and
  Cholesky-factored, everything exact;
* ``constant`` (one curvature on the whole grid): :math:`A` is diagonal;
* ``additive``: CG on :math:`A` preconditioned by
  :class:`~kronecker_gp.solvers._laplace_precond.KronPreconditioner`
  (two Kronecker products per iteration);
* ``scaled``: CG on :math:`B` preconditioned by
  :class:`~kronecker_gp.solvers._laplace_precond.ScaledKronPreconditioner`
  (three per iteration), chosen when the curvature's departure from a
  Kronecker product (:func:`curvature_spread`) exceeds
  ``_budgets.LAPLACE_SCALED_SPREAD``. Everything is written without the
  subtraction :math:`A^{-1} = I - C^T B^{-1} C` (:math:`C = W^{1/2} Q S`),
  which cancels where the data dominate: the Newton point is
  :math:`S Q^T W^{1/2} B^{-1} (W^{1/2} f + W^{-1/2} \nabla \log p)`,
  :math:`\Sigma x = K W^{1/2} B^{-1} W^{-1/2} x` for ``x`` vanishing where
  :math:`W = 0`, :math:`(K + W^{-1})^{-1} = W^{1/2} B^{-1} W^{1/2}` and
  :math:`\Sigma_{ii} = (1 - (B^{-1})_{ii}) / W_i`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg._krylov import batched_cg, lanczos_logdet_solve
from kronecker_gp.solvers._laplace_precond import (
    KronBasis,
    KronPreconditioner,
    ScaledKronPreconditioner,
    additive_log_fit,
    curvature_spread,
    kron_apply,
    same_kron_fit,
)

#: Largest grid (cells) on which A = I + S Q^T W Q S is formed and factored
#: densely (N^3 / 3 flops for the product and Cholesky: about 0.1 s at 1024).
DENSE_MAX_CELLS = 1024
#: Rounds of refinement of a Newton point solved through B, and the
#: tightest relative residual asked of one round.
MAX_REFINE, MIN_B_RTOL = 6, 1e-13


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
    #: "auto" (by the curvature's spread), "additive" (CG on A) or "scaled"
    #: (CG on B); see :class:`CurvatureSystem`
    preconditioner: str = "auto"


class CurvatureSystem:
    r"""Solves, log-determinant and traces with :math:`A = I + S Q^T W Q S`.

    Parameters
    ----------
    basis : KronBasis
        The prior's eigenbasis.
    w : ndarray of shape (N,)
        Curvature per cell (0 on missing cells).
    opts : LaplaceOptions
        Tolerances and the preconditioner choice.
    previous : CurvatureSystem, optional
        A system at a nearby curvature (the previous Newton step): its
        Kronecker preconditioner is reused while the new curvature's
        Kronecker fit stays within a factor
        ``_budgets.LAPLACE_PRECOND_REUSE`` of the one it was built from.
    """

    def __init__(
        self,
        basis: KronBasis,
        w: FloatArray,
        opts: LaplaceOptions,
        previous: CurvatureSystem | None = None,
    ) -> None:
        self.basis, self.w, self.opts = basis, w, opts
        self.s = np.sqrt(basis.lam)
        self.dense = w.size <= opts.dense_max_cells
        self.constant = bool(np.ptp(w) == 0.0)
        self.cg_iterations = 0
        self._precond: KronPreconditioner | None = None
        self._jac: FloatArray | None = None
        self._bprec: ScaledKronPreconditioner | None = None
        self._sw = np.sqrt(np.maximum(w, 0.0))
        if self.dense:
            self.route = "dense"
            self._factor_dense()
        elif self.constant:
            self.route = "constant"
        else:
            self._build_preconditioner(previous)

    def _factor_dense(self) -> None:
        qs = self.basis.dense_q() * self.s
        a = np.eye(qs.shape[1]) + (qs.T * self.w) @ qs
        try:
            self._chol = scipy.linalg.cho_factor(a, lower=True)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "I + W^1/2 K W^1/2 is not positive definite at this latent "
                "field (negative curvature of a non-log-concave likelihood); "
                "the Laplace approximation does not exist here."
            ) from None
        self._qs = qs

    def _build_preconditioner(self, previous: CurvatureSystem | None) -> None:
        w_pos = np.maximum(self.w, 0.0).reshape(self.basis.shape)
        if previous is not None and self._reuse(
            previous, additive_log_fit(w_pos, tol=1e-3)
        ):
            return
        d_list = additive_log_fit(w_pos)
        self.route = self._choose_route(d_list)
        if self.route == "additive" and self._precond is None:
            self._precond = KronPreconditioner(self.basis, d_list)
        if self.route == "scaled" and self._bprec is None:
            self._bprec = ScaledKronPreconditioner(self.basis, self.w, d_list)

    def _reuse(self, previous: CurvatureSystem, d_list: list[FloatArray]) -> bool:
        """Take the previous step's route and Kronecker preconditioner if still apt."""
        route = previous.route
        old = previous._precond if route == "additive" else previous._bprec
        if old is None or self.opts.preconditioner not in ("auto", route):
            return False
        if route == "scaled" and np.any(self.w < 0):
            return False
        if not same_kron_fit(old.d_list, d_list, _budgets.LAPLACE_PRECOND_REUSE):
            return False
        self.route = route
        if previous._precond is not None and route == "additive":
            self._precond = previous._precond
        if previous._bprec is not None and route == "scaled":
            self._bprec = previous._bprec.with_curvature(self.w)
        return True

    def _choose_route(self, d_list: list[FloatArray]) -> str:
        choice = self.opts.preconditioner
        if choice not in ("auto", "additive", "scaled"):
            raise ValueError(
                "preconditioner must be 'auto', 'additive' or 'scaled'; got "
                f"{choice!r}."
            )
        # B = I + W^1/2 K W^1/2 needs W >= 0
        if np.any(self.w < 0) or choice == "additive":
            return "additive"
        if choice == "scaled":
            return "scaled"
        spread = curvature_spread(self.w, d_list, self.basis.k_diag())
        if spread <= _budgets.LAPLACE_SCALED_SPREAD:
            return "additive"
        # a curvature far from a Kronecker product: the scaled preconditioner
        # suits rough priors, the additive one smooth priors (few directions
        # where the data dominate); a short CG trial of each decides
        self._precond = KronPreconditioner(self.basis, d_list)
        self._bprec = ScaledKronPreconditioner(self.basis, self.w, d_list)
        return min(("additive", "scaled"), key=self._trial_rate)

    def _trial_rate(self, route: str) -> float:
        """Kronecker products per decade of residual in a short CG trial."""
        rng = np.random.default_rng(self.opts.random_state)
        matvec: Callable[[FloatArray], FloatArray]
        if route == "additive":
            b = rng.standard_normal((self.s.size, 1))
            matvec, inv, cost = self._matvec_v, self._jacobi_v(), 2.0
        else:
            prec_b = self._scaled()
            b = rng.standard_normal((self.w.size, 1))
            matvec, inv, cost = self._matvec_u, prec_b.inv, 3.0
        steps = _budgets.LAPLACE_ROUTE_TRIAL_STEPS
        _, it, relres = batched_cg(matvec, b, precond=inv, rtol=1e-12, maxiter=steps)
        self.cg_iterations += it
        decades = max(-float(np.log10(max(float(relres[0]), 1e-300))), 1e-3)
        return cost * it / decades

    # ------------------------------------------------------------ products
    def matvec(self, x: FloatArray) -> FloatArray:
        """Return ``A x`` for x of shape (N,) or (N, k)."""
        s = self.s if x.ndim == 1 else self.s[:, None]
        w = self.w if x.ndim == 1 else self.w[:, None]
        return x + s * self.basis.rotate(w * self.basis.unrotate(s * x))

    def to_data(self, x: FloatArray) -> FloatArray:
        """Return ``Q S x`` (rotated whitened -> grid values)."""
        s = self.s if x.ndim == 1 else self.s[:, None]
        return self.basis.unrotate(s * x)

    def from_data(self, x: FloatArray) -> FloatArray:
        """Return ``S Q^T x``."""
        s = self.s if x.ndim == 1 else self.s[:, None]
        return s * self.basis.rotate(x)

    # ------------------------------------------------------------ solves
    def solve(self, b: FloatArray, rtol: float | None = None) -> FloatArray:
        """Return ``A^{-1} b`` (dense Cholesky, eigenvalues or CG to ``rtol``).

        ``rtol`` defaults to ``cg_tol``. On the ``scaled`` route the additive
        preconditioner is built on first use for these solves.
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
        prec = self._additive()
        y, it, _ = batched_cg(
            self._matvec_v,
            prec.to_v(bb),
            precond=self._jacobi_v(),
            rtol=self.opts.cg_tol if rtol is None else rtol,
            maxiter=self.opts.cg_max_iter,
        )
        self.cg_iterations += it
        return prec.from_v(y)

    def _jacobi_v(self) -> FloatArray:
        r"""Return the inverse diagonal of :math:`V^T A V = I + M^T W M`, ``M = Q S V``.

        Exact and Kronecker-cheap (:math:`\sum_i M_{ij}^2 W_i`, one product
        with the squared factors); it equals the additive preconditioner's
        :math:`(I + \Gamma)^{-1}` for a product curvature and corrects it,
        mode by mode, for the rest (:math:`W_+ = \max(W, 0)`).
        """
        if self._jac is None:
            prec = self._additive()
            w_pos = np.maximum(self.w, 0.0)
            diag = kron_apply([(m * m).T for m in prec.qsv], w_pos)
            self._jac = 1.0 / (1.0 + np.maximum(diag, 0.0))
        return self._jac

    def _additive(self) -> KronPreconditioner:
        if self._precond is None:
            w_pos = np.maximum(self.w, 0.0).reshape(self.basis.shape)
            self._precond = KronPreconditioner(self.basis, additive_log_fit(w_pos))
        return self._precond

    def newton_point(
        self,
        f: FloatArray,
        d1: FloatArray,
        rtol: float,
        v: FloatArray | None = None,
        grad: FloatArray | None = None,
    ) -> FloatArray:
        r"""Return the full Newton step's end point :math:`(K^{-1} + W)^{-1}(Wf + g)`.

        Whitened and rotated: :math:`A^{-1} S Q^T (W f + g)`, ``g`` the
        likelihood's gradient. On the ``scaled`` route it is
        :math:`S Q^T W^{1/2} B^{-1} (W^{1/2} f + W^{-1/2} g)` (no
        cancellation where the data dominate). ``v`` (with ``f = Q S v``)
        and ``grad`` (the objective's gradient at ``v``) warm-start the CG
        of the other routes: the point is ``v + A^{-1} grad``.
        """
        if self.route == "scaled" and not np.any((self._sw == 0) & (d1 != 0)):
            pos = self._sw > 0
            c = np.zeros(f.size)
            c[pos] = self._sw[pos] * f[pos] + d1[pos] / self._sw[pos]
            target = rtol * float(np.linalg.norm(grad if grad is not None else c))
            return self._scaled_point(c, target)
        if v is not None and grad is not None:
            return v + self.solve(grad, rtol)
        return self.solve(self.from_data(self.w * f + d1), rtol)

    def _scaled_point(self, c: FloatArray, target: float) -> FloatArray:
        r"""Return :math:`C^T u`, :math:`B u \approx c`, A-residual under ``target``.

        With :math:`C = W^{1/2} Q S`, :math:`C^T B^{-1} = A^{-1} C^T`, so a
        B-residual :math:`r` leaves the A-residual :math:`C^T r` (amplified
        up to :math:`\|C\|` where the data dominate): CG on B is refined
        (restarted on the residual with a tighter tolerance) until
        :math:`\|C^T r\|` meets ``target``.
        """
        cnorm = float(np.linalg.norm(c))
        if cnorm == 0.0:
            return np.zeros(c.size)
        sw = self._sw
        u = np.zeros(c.size)
        r = c.copy()
        rtol = max(MIN_B_RTOL, min(0.1, target / cnorm))
        for _ in range(MAX_REFINE):
            u = u + self.b_solve(r[:, None], rtol)[:, 0]
            r = c - u - sw * self.basis.k_matvec(sw * u)
            res_a = float(np.linalg.norm(self.from_data(sw * r)))
            if res_a <= target or rtol <= MIN_B_RTOL:
                break
            # the next round asks the same relative reduction of its residual
            rnorm = float(np.linalg.norm(r))
            rtol = max(MIN_B_RTOL, min(0.1, 0.5 * target / res_a))
            if rnorm == 0.0:
                break
        return self.from_data(sw * u)

    def b_solve(self, r: FloatArray, rtol: float | None = None) -> FloatArray:
        """Return ``B^{-1} r`` by preconditioned CG in the basis ``u = V^T T x``."""
        prec = self._scaled()
        u, it, _ = batched_cg(
            self._matvec_u,
            prec.to_u(r),
            precond=prec.inv,
            rtol=self.opts.cg_tol if rtol is None else rtol,
            maxiter=self.opts.cg_max_iter,
        )
        self.cg_iterations += it
        return prec.from_u(u)

    def _scaled(self) -> ScaledKronPreconditioner:
        if self._bprec is None:
            w_pos = np.maximum(self.w, 0.0)
            d_list = additive_log_fit(w_pos.reshape(self.basis.shape))
            self._bprec = ScaledKronPreconditioner(self.basis, w_pos, d_list)
        return self._bprec

    def _matvec_u(self, u: FloatArray) -> FloatArray:
        """Return ``V^T T^-1 B T^-1 V u``, ``B = I + W^1/2 K W^1/2``."""
        prec = self._scaled()
        z = prec.from_u(u)
        sw = self._sw[:, None]
        return prec.to_u(z + sw * self.basis.k_matvec(sw * z))

    def _matvec_v(self, y: FloatArray) -> FloatArray:
        """Return ``V^T A V y`` = ``y + M^T W M y``, ``M = Q S V`` (Kronecker)."""
        prec = self._additive()
        return y + prec.m_t(self.w[:, None] * prec.m(y))

    def sigma(self, x: FloatArray, rtol: float | None = None) -> FloatArray:
        r"""Return :math:`\Sigma x = Q S A^{-1} S Q^T x` (CG to ``rtol``)."""
        if self.route != "scaled":
            return self.to_data(self.solve(self.from_data(x), rtol))
        vec = x.ndim == 1
        xx = x[:, None] if vec else x
        sw = self._sw[:, None]
        if np.any(xx[self._sw == 0] != 0):
            # Sigma = K - K W^1/2 B^-1 W^1/2 K
            kx = self.basis.k_matvec(xx)
            out = kx - self.basis.k_matvec(sw * self.b_solve(sw * kx, rtol))
        else:
            # Sigma = K W^1/2 B^-1 W^-1/2 on vectors vanishing where W = 0
            safe = np.where(sw > 0, sw, 1.0)
            out = self.basis.k_matvec(sw * self.b_solve(xx / safe, rtol))
        return out[:, 0] if vec else out

    def r_half(self, c: FloatArray, rtol: float | None = None) -> FloatArray:
        r"""Return :math:`W^{1/2} B^{-1} c`.

        :math:`R x = (K + W^{-1})^{-1} x` is ``r_half(W^1/2 x)``.
        """
        sw = self._sw if c.ndim == 1 else self._sw[:, None]
        if self.route == "scaled":
            return sw * self.b_solve(c if c.ndim == 2 else c[:, None], rtol).reshape(
                c.shape
            )
        # W^1/2 B^-1 = W^1/2 (I - C A^-1 C^T) = W^1/2 - W Sigma W^1/2
        w = self.w if c.ndim == 1 else self.w[:, None]
        return sw * c - w * self.sigma(sw * c, rtol)

    # ------------------------------------------------------------ estimates
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
        if self.route == "additive":
            inv = self._jacobi_v()
            prec = self._additive()
            # grid probes to the CG basis V^T Q^T z (orthonormal rows)
            z = prec.to_v(self.basis.rotate(self._probes()))
            logdet_p = -float(np.sum(np.log(inv)))
            return self._slq_logdet(self._matvec_v, inv, logdet_p, z)
        # log|A| = log|B| (same nonzero eigenvalues but 1), B preconditioned
        # by T (I + G) T
        bprec = self._scaled()
        z = kron_apply([v.T for v in bprec.vs], self._probes())
        return self._slq_logdet(self._matvec_u, bprec.inv, bprec.logdet(), z)

    def _slq_logdet(
        self,
        matvec: Callable[[FloatArray], FloatArray],
        inv: FloatArray,
        logdet_p: float,
        z: FloatArray,
    ) -> tuple[float, float]:
        """Return log|P| + log|N|, N = D^-1/2 M D^-1/2 (M = matvec, D^-1 = inv).

        The probes ``z`` are grid Rademacher probes mapped into the CG basis
        by an orthonormal map: the estimate is then a continuous function of
        the hyperparameters (probes drawn in the eigenbasis would change
        with each eigenvector's arbitrary sign), which a line search needs.
        """
        root = np.sqrt(inv)[:, None]

        def scaled(x: FloatArray) -> FloatArray:
            # (I + Gamma)^-1/2 V^T A V (I + Gamma)^-1/2: orthogonally similar
            # to P^-1/2 A P^-1/2, so the same spectrum and trace
            return root * matvec(root * x)

        trace, err, _, _ = lanczos_logdet_solve(
            scaled, z, max_steps=self.opts.cg_max_iter, tol=self.probe_rtol
        )
        lin = np.sum(z * scaled(z), axis=0) - np.sum(z * z, axis=0)
        err_lin = float(np.std(lin, ddof=1) / np.sqrt(lin.size))
        logdet = logdet_p + trace + float(np.mean(lin))
        return logdet, float(np.hypot(err, err_lin))

    def _probes(self, size: int | None = None) -> FloatArray:
        """Rademacher probes (``n_probes`` columns of ``size``, default N)."""
        rng = np.random.default_rng(self.opts.random_state)
        k = max(2, int(self.opts.n_probes))
        n = self.w.size if size is None else size
        return rng.choice([-1.0, 1.0], size=(n, k))

    def sigma_diag(self) -> FloatArray:
        r"""Return :math:`\operatorname{diag}\Sigma` (exact, or Hutchinson estimate)."""
        if self.dense:
            l_inv = scipy.linalg.solve_triangular(self._chol[0], self._qs.T, lower=True)
            return np.sum(l_inv * l_inv, axis=0)
        if self.constant:
            spec = self.basis.lam / (1.0 + self.w[0] * self.basis.lam)
            return kron_apply([u * u for u in self.basis.eigvecs], spec)
        z = self._probes()
        if self.route == "scaled":
            return self._sigma_diag_scaled(z)
        # control variate: Sigma_0 = Q S P^-1 S Q^T (the preconditioner's
        # covariance) has an exact diagonal; only Sigma - Sigma_0 is estimated
        prec = self._additive()
        return prec.sigma_diag() + np.mean(z * (self.sigma(z) - prec.sigma(z)), axis=1)

    def _sigma_diag_scaled(self, z: FloatArray) -> FloatArray:
        cols = [z]
        kz = None
        if np.any(self._sw == 0):
            kz = self.basis.k_matvec(z)
            cols.append(self._sw[:, None] * kz)
        sol = self.b_solve(np.concatenate(cols, axis=1))
        k = z.shape[1]
        return self._diag_from_b(
            z, sol[:, :k], kz, sol[:, k:] if kz is not None else None
        )

    def _diag_from_b(
        self,
        z: FloatArray,
        bz: FloatArray,
        kz: FloatArray | None,
        b_swkz: FloatArray | None,
    ) -> FloatArray:
        # Sigma_ii = (1 - (B^-1)_ii) / W_i where W > 0 (no cancellation where
        # the data dominate), diag B^-1 = diag P^-1 (exact) + Hutchinson on
        # B^-1 - P^-1; where W = 0, K_ii - (K W^1/2 B^-1 W^1/2 K)_ii
        prec = self._scaled()
        pos = self._sw > 0
        b_diag = prec.inv_diag() + np.mean(z * (bz - prec.apply(z)), axis=1)
        out = np.empty(z.shape[0])
        out[pos] = (1.0 - b_diag[pos]) / self.w[pos]
        if kz is not None and b_swkz is not None:
            quad = kz * self.basis.k_matvec(self._sw[:, None] * b_swkz)
            out[~pos] = self.basis.k_diag()[~pos] - np.mean(quad, axis=1)[~pos]
        return out

    def gradient_solves(
        self, z: FloatArray, rhs: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        r"""Return :math:`\operatorname{diag}\Sigma`, :math:`R z`, :math:`\Sigma` rhs.

        Two batched CG runs serve the three: the Hutchinson probes ``z`` (of
        the diagonal and of the trace) to :attr:`probe_rtol`, the gradient's
        right-hand sides ``rhs`` (vanishing where :math:`W = 0`) to
        ``cg_tol``; the estimates are those of :meth:`sigma_diag`,
        :meth:`r_half` and :meth:`sigma`.
        """
        k, m = z.shape[1], rhs.shape[1]
        sw = self._sw[:, None]
        if self.route == "scaled":
            if np.any(rhs[self._sw == 0] != 0):
                return self.sigma_diag(), self.r_half(sw * z), self.sigma(rhs)
            safe = np.where(sw > 0, sw, 1.0)
            cols = [z, sw * z]
            kz = None
            if np.any(self._sw == 0):
                kz = self.basis.k_matvec(z)
                cols.append(sw * kz)
            u = self.b_solve(np.concatenate(cols, axis=1), self.probe_rtol)
            b_swkz = u[:, 2 * k :] if kz is not None else None
            diag = self._diag_from_b(z, u[:, :k], kz, b_swkz)
            rz = sw * u[:, k : 2 * k]
            sig = rhs
            if m:
                sig = self.basis.k_matvec(sw * self.b_solve(rhs / safe))
            return diag, rz, sig
        w = self.w[:, None]
        x = self.sigma(np.concatenate([z, w * z], axis=1), self.probe_rtol)
        prec = self._additive()
        diag = prec.sigma_diag() + np.mean(z * (x[:, :k] - prec.sigma(z)), axis=1)
        sig = self.sigma(rhs) if m else rhs
        return diag, w * z - w * x[:, k:], sig

    @property
    def probe_rtol(self) -> float:
        """Relative residual of the solves that feed Hutchinson estimates.

        ``sqrt(cg_tol)``: the estimates' sampling error (a few probes) is
        far larger than a solve error of that size, and Gauss quadrature's
        error is about the square of the residual.
        """
        return float(np.sqrt(self.opts.cg_tol))

    # ------------------------------------------------------------ samples
    def sample_data(self, n: int, rng: np.random.Generator) -> FloatArray:
        r"""Draw ``n`` grid columns from :math:`N(0, \Sigma)`.

        Dense and additive routes: :meth:`sample_rotated` mapped to the grid.
        ``scaled`` route (Matheron's rule): :math:`f_0 - K W^{1/2} B^{-1}
        (W^{1/2} f_0 + \varepsilon)`, :math:`f_0 \sim N(0, K)`, whose
        covariance is :math:`K - K W^{1/2} B^{-1} W^{1/2} K = \Sigma`.
        """
        if self.route != "scaled":
            return self.to_data(self.sample_rotated(n, rng))
        f0 = self.to_data(rng.standard_normal((self.s.size, n)))
        eps = rng.standard_normal((self.w.size, n))
        sw = self._sw[:, None]
        return f0 - self.basis.k_matvec(sw * self.b_solve(sw * f0 + eps))

    def sample_rotated(self, n: int, rng: np.random.Generator) -> FloatArray:
        r"""Draw ``n`` columns from :math:`N(0, A^{-1})` (rotated whitened space).

        Dense: :math:`L^{-T}\varepsilon`. Otherwise by perturbation,
        :math:`A^{-1}(\varepsilon_1 + S Q^T W^{1/2} \varepsilon_2)`, whose
        covariance is :math:`A^{-1} A A^{-1}`; this needs :math:`W \ge 0`.
        """
        eps = rng.standard_normal((self.s.size, n))
        if self.dense:
            out: FloatArray = scipy.linalg.solve_triangular(
                self._chol[0], eps, lower=True, trans="T"
            )
            return out
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
        out: FloatArray = l_inv.T @ l_inv
        return out
