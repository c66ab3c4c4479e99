r"""Pure functions: stochastic Lanczos quadrature from conjugate gradients.

For a symmetric positive-definite ``N`` and probe vectors ``z``, one run of
conjugate gradients (CG) on :math:`N x = z` yields both the solve
:math:`N^{-1} z` and, from its step lengths :math:`\alpha_j` and direction
updates :math:`\beta_j`, the Lanczos tridiagonal matrix of the Krylov space
of ``z`` [1]_ [3]_:

.. math::
    T_{jj} = \frac{1}{\alpha_j} + \frac{\beta_{j-1}}{\alpha_{j-1}}, \qquad
    T_{j,j+1} = \frac{\sqrt{\beta_j}}{\alpha_j}

(:math:`\beta_{-1} / \alpha_{-1} = 0`). Gauss quadrature then gives
:math:`z^T f(N) z \approx \|z\|^2 e_1^T f(T) e_1` [2]_. Only the iterate,
residual and direction of each probe are kept: memory :math:`O(m k)` for
``k`` probes of length ``m``, however many steps are taken (a Lanczos run
that stores its basis needs :math:`O(m k L)` for ``L`` steps). Without
reorthogonalisation the quadrature stays accurate in floating point (the
Ritz values of a run that lost orthogonality still define an accurate Gauss
rule, Greenbaum 1989, Musco et al. 2018); the systems here have condition
numbers of order 1-100 and converge in tens of steps.

References
----------
.. [1] Golub, G. H. and Van Loan, C. F. (2013). Matrix Computations, 4th ed.,
   sec. 11.3.5 (CG and Lanczos).
.. [2] Ubaru, S., Chen, J. and Saad, Y. (2017). Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature. SIAM J. Matrix Anal. Appl. 38(4).
.. [3] Gardner, J. et al. (2018). GPyTorch: Blackbox matrix-matrix Gaussian
   process inference with GPU acceleration. NeurIPS (modified batched CG).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.linalg
from sklearn.exceptions import ConvergenceWarning

from kronecker_gp._typing import BoolArray, FloatArray, IntArray


def lanczos_logdet_solve(
    matvec: Callable[[FloatArray], FloatArray],
    probes: FloatArray,
    *,
    max_steps: int = 100,
    tol: float = 1e-6,
    quad_tol: float | None = None,
    on_step: Callable[[IntArray, FloatArray], None] | None = None,
) -> tuple[float, float, FloatArray, int]:
    r"""Stochastic Lanczos quadrature of :math:`\operatorname{tr} f(N)` plus solves.

    With :math:`f(x) = \log x - x + 1`, so that
    :math:`\log|N| = \operatorname{tr} f(N) + \operatorname{tr}(N - I)`; for
    ``N`` with unit diagonal (a block-Jacobi or Jacobi scaled matrix) the
    last term is zero and the estimate is one of :math:`\log|N|`. ``f`` is
    second order in :math:`N - I`, which keeps the probe variance small.
    Each probe's CG run (vectorised over probes) gives

    * the quadrature :math:`z^T f(N) z \approx \|z\|^2 \sum_j \tau_j^2
      f(\theta_j)` from the eigenpairs :math:`(\theta_j, \tau)` of the
      Lanczos matrix recovered from the CG coefficients, and
    * the solve :math:`N^{-1} z` (the CG iterate), run until every probe's
      relative residual is below ``tol``.

    Parameters
    ----------
    matvec : callable
        ``V (m, j) -> N V`` for any number ``j`` of columns.
    probes : ndarray of shape (m, k)
        Probe vectors (Rademacher for the trace estimate).
    max_steps : int, default=100
        CG (= Lanczos) step cap.
    tol : float, default=1e-6
        Relative residual of the solves at which a probe stops; the solves
        only feed Hutchinson estimates whose sampling error is far larger,
        and Gauss quadrature converges about twice as fast as CG.
    quad_tol : float or None, default=None
        If given, a probe also stops once its relative residual is below
        ``sqrt(quad_tol)`` and its quadrature changed by at most
        ``quad_tol * ||z||^2`` in its last step. The Gauss rule's error falls
        with the square of the CG error (for :math:`f(x) = 1/x` it *is* the
        squared energy-norm error), so the quadrature has then converged to
        well below ``quad_tol * ||z||^2`` per probe while the solves, used
        only by Hutchinson estimates, are accurate to ``sqrt(quad_tol)``.
        None: stop on ``tol`` alone.
    on_step : callable or None, default=None
        ``(active, a)`` called after each step with the probes it moved and
        their step lengths: their solves gained ``a * p`` for the directions
        ``p`` just passed to ``matvec``. A caller whose ``matvec`` computes a
        linear image ``G p`` on the way accumulates ``G`` of the solves with
        it (no further products).

    Returns
    -------
    trace : float
        Estimate of :math:`\operatorname{tr} f(N)`: the mean of the
        per-probe quadratures.
    std_error : float
        Its standard error over the probes (sample standard deviation over
        :math:`\sqrt{k}`).
    solves : ndarray of shape (m, k)
        :math:`N^{-1} z` for each probe.
    steps : int
        Most steps taken by a probe.

    Notes
    -----
    Cost: ``steps`` products with ``N`` on the still-active probes and
    :math:`O(m k)` work per step; memory :math:`O(m k)` plus the
    ``steps x k`` coefficients.
    """
    m, k = probes.shape
    x = np.zeros_like(probes)
    r = probes.copy()
    p = r.copy()
    rz = np.sum(r * r, axis=0)
    bnorm = np.sqrt(rz)
    bnorm[bnorm == 0] = 1.0
    alphas = np.zeros((0, k))
    betas = np.zeros((0, k))
    lengths = np.zeros(k, dtype=np.intp)
    done = np.zeros(k, dtype=bool)  # stopped by the quadrature rule
    quad = np.full(k, np.nan)  # last quadrature of probes near convergence
    for _ in range(min(max_steps, m)):
        if quad_tol is not None and lengths.max(initial=0) > 0:
            done |= _quadrature_converged(
                (alphas, betas, lengths), np.sqrt(rz) / bnorm, quad, quad_tol
            )
        active = np.flatnonzero((np.sqrt(rz) > tol * bnorm) & ~done)
        if active.size == 0:
            break
        if active.size == k:  # every probe moves: update in place
            ap = matvec(p)
            a = rz / np.einsum("ij,ij->j", p, ap)
            x += a * p
            if on_step is not None:
                on_step(active, a)
            r -= a * ap
            rz_new = np.einsum("ij,ij->j", r, r)
            b = rz_new / rz
            p *= b
            p += r
        else:
            pa = p[:, active]
            ap = matvec(pa)
            a = rz[active] / np.einsum("ij,ij->j", pa, ap)
            x[:, active] += a * pa
            if on_step is not None:
                on_step(active, a)
            r[:, active] -= a * ap
            rz_new = np.einsum("ij,ij->j", r[:, active], r[:, active])
            b = rz_new / rz[active]
            p[:, active] = r[:, active] + b * pa
        rz[active] = rz_new
        alphas = np.vstack([alphas, np.zeros(k)])
        betas = np.vstack([betas, np.zeros(k)])
        alphas[-1, active], betas[-1, active] = a, b
        lengths[active] += 1
    terms = np.array(
        [_quadrature(alphas[: lengths[s], s], betas[: lengths[s], s]) for s in range(k)]
    )
    terms *= bnorm**2 * (lengths > 0)
    std = float(terms.std(ddof=1) / np.sqrt(k)) if k > 1 else 0.0
    return float(terms.mean()), std, x, int(lengths.max(initial=0))


def preconditioned_lanczos_quadrature(  # noqa: PLR0913 - operator, preconditioner, f
    matvec: Callable[[FloatArray], FloatArray],
    precond: Callable[[FloatArray], FloatArray],
    z: FloatArray,
    steps: int,
    f: Callable[[FloatArray], FloatArray] = np.log,
    *,
    floor: float = 1e-300,
) -> float:
    r"""Gauss quadrature of :math:`(P^{-1/2} z)^T f(P^{-1/2} A P^{-1/2}) (P^{-1/2} z)`.

    Lanczos in the :math:`P^{-1}` inner product (only products with ``A``
    and applications of :math:`P^{-1}` are needed, no square root of ``P``),
    with full reorthogonalisation (twice), for one probe. With
    :math:`z \sim N(0, P)` the expectation is
    :math:`\operatorname{tr} f(P^{-1/2} A P^{-1/2})`, e.g.
    :math:`\log|A| - \log|P|` for ``f = log``.

    Parameters
    ----------
    matvec : callable
        ``v -> A v`` for a vector ``v``.
    precond : callable
        ``v -> P^{-1} v``.
    z : ndarray of shape (m,)
        The probe.
    steps : int
        Lanczos steps (fewer if the Krylov space is exhausted).
    f : callable, default=np.log
        Applied to the Ritz values (clipped below at ``floor``).
    floor : float, default=1e-300
        Smallest Ritz value passed to ``f``.

    Returns
    -------
    float
        :math:`\|z\|_{P^{-1}}^2 \sum_i \tau_i^2 f(\theta_i)` from the
        eigenpairs :math:`(\theta_i, \tau)` of the Lanczos tridiagonal.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> z = np.ones(3)
    >>> q = preconditioned_lanczos_quadrature(lambda v: A @ v, lambda v: v, z, 3)
    >>> bool(np.isclose(q, np.log(8.0)))
    True
    """
    u = precond(z)
    norm2 = float(z @ u)
    beta = np.sqrt(norm2)
    qs, us = [z / beta], [u / beta]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = matvec(us[j])
        alphas.append(float(us[j] @ w))
        for _ in range(2):  # full reorthogonalisation in the P^{-1} inner product
            w = w - np.column_stack(qs) @ (np.vstack(us) @ w)
        uw = precond(w)
        b2 = float(w @ uw)
        if j == steps - 1 or b2 <= 1e-24 * alphas[0] ** 2:
            break
        betas.append(np.sqrt(b2))
        qs.append(w / betas[-1])
        us.append(uw / betas[-1])
    theta, vecs = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas))
    return norm2 * float(np.sum(vecs[0] ** 2 * f(np.clip(theta, floor, None))))


def lanczos_tridiagonal(
    alpha: FloatArray, beta: FloatArray
) -> tuple[FloatArray, FloatArray]:
    r"""Return the Lanczos matrix's diagonal and off-diagonal from CG coefficients.

    Parameters
    ----------
    alpha : ndarray of shape (L,)
        CG step lengths.
    beta : ndarray of shape (L,)
        CG direction updates :math:`\|r_{j+1}\|^2 / \|r_j\|^2` (the last is
        unused).

    Returns
    -------
    diag : ndarray of shape (L,)
    offdiag : ndarray of shape (L - 1,)
    """
    diag = 1.0 / alpha
    diag[1:] += beta[:-1] / alpha[:-1]
    return diag, np.sqrt(beta[:-1]) / alpha[:-1]


def _quadrature_converged(
    coeffs: tuple[FloatArray, FloatArray, IntArray],
    relres: FloatArray,
    quad: FloatArray,
    quad_tol: float,
) -> BoolArray:
    """Probes whose quadrature moved by at most ``quad_tol`` (per unit norm).

    Evaluates the (normalised) quadrature of the probes whose relative
    residual is below ``100 sqrt(quad_tol)``, compares it with the value
    stored in ``quad`` at their previous step and stores the new value.
    """
    alphas, betas, lengths = coeffs
    out = np.zeros(lengths.size, dtype=bool)
    near = np.flatnonzero(relres <= 100.0 * np.sqrt(quad_tol))
    for s in near:
        q = _quadrature(alphas[: lengths[s], s], betas[: lengths[s], s])
        out[s] = relres[s] <= np.sqrt(quad_tol) and abs(q - quad[s]) <= quad_tol
        quad[s] = q
    return out


def _quadrature(alpha: FloatArray, beta: FloatArray) -> float:
    """Return ``e_1^T f(T) e_1`` with ``f(x) = log x - x + 1`` (0 for no steps)."""
    if alpha.size == 0:
        return 0.0
    diag, off = lanczos_tridiagonal(alpha, beta)
    theta, vecs = scipy.linalg.eigh_tridiagonal(diag, off)
    theta = np.maximum(theta, np.finfo(float).tiny)
    tau2 = vecs[0, :] ** 2
    return float(np.sum(tau2 * (np.log(theta) - theta + 1.0)))


def batched_cg(
    matvec: Callable[[FloatArray], FloatArray],
    b: FloatArray,
    *,
    precond: FloatArray | Callable[[FloatArray], FloatArray] | None,
    rtol: float,
    maxiter: int,
) -> tuple[FloatArray, int, FloatArray]:
    """Conjugate gradients on independent right-hand sides, vectorised.

    Parameters
    ----------
    matvec : callable
        ``X (m, k) -> A X`` for a symmetric positive-definite ``A``.
    b : ndarray of shape (m, k)
        Right-hand sides.
    precond : ndarray of shape (m,), callable or None
        Inverse of a Jacobi (diagonal) preconditioner, or a callable applying
        an SPD preconditioner's inverse to ``(m, k)`` blocks.
    rtol : float
        Stop each column when ``||b - A x|| <= rtol ||b||``.
    maxiter : int
        Iteration cap.

    Returns
    -------
    x : ndarray of shape (m, k)
    iterations : int
    relres : ndarray of shape (k,)
        Final relative residuals (recomputed, not recursive).
    """
    apply: Callable[[FloatArray], FloatArray]
    if precond is None or not callable(precond):
        diag = np.ones(b.shape[0]) if precond is None else np.asarray(precond)

        def apply(r: FloatArray) -> FloatArray:
            return diag[:, None] * r

    else:
        apply = precond
    x = np.zeros_like(b)
    r = b.copy()
    z = apply(r)
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    bnorm = np.linalg.norm(b, axis=0)
    bnorm[bnorm == 0] = 1.0
    it = 0
    while it < maxiter:
        active = np.linalg.norm(r, axis=0) > rtol * bnorm
        if not active.any():
            break
        it += 1
        ap = matvec(p)
        pap = np.sum(p * ap, axis=0)
        step = np.where(active, rz / np.where(pap > 0, pap, 1.0), 0.0)
        x += step * p
        r -= step * ap
        z = apply(r)
        rz_new = np.sum(r * z, axis=0)
        p = z + np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0) * p
        rz = rz_new
    relres = np.linalg.norm(b - matvec(x), axis=0) / bnorm
    return x, it, relres


class CGRecorder:
    """Runs :func:`batched_cg` and keeps the worst iteration count and residual.

    Subclasses set ``tol`` and ``max_iter``; non-convergence (a residual above
    ten times ``tol``) warns with the residual reached.
    """

    tol: float
    max_iter: int
    iterations: int = 0
    residual: float = 0.0

    def _run_cg(
        self,
        matvec: Callable[[FloatArray], FloatArray],
        b: FloatArray,
        precond: FloatArray | Callable[[FloatArray], FloatArray] | None,
        what: str,
    ) -> FloatArray:
        x, it, relres = batched_cg(
            matvec, b, precond=precond, rtol=self.tol, maxiter=self.max_iter
        )
        worst = float(relres.max(initial=0.0))
        self.iterations = max(self.iterations, it)
        self.residual = max(self.residual, worst)
        if worst > 10 * self.tol:
            warnings.warn(
                f"CG on the {what} system stopped after {it} iterations at relative "
                f"residual {worst:.2e} (tol {self.tol:.0e}); raise cg_max_iter or "
                "loosen cg_tol.",
                ConvergenceWarning,
                stacklevel=4,
            )
        return x
