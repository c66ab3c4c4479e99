r"""The linear model of coregionalization (LMC) by preconditioned iterative solves.

The covariance of the observed outputs is
:math:`\Sigma = \sum_{q=1}^Q B_q \otimes K_q + S \otimes I` restricted to the
observed cells of the ``(T, n)`` grid. With ``Q > 1`` no pair of small
eigendecompositions diagonalises it, so:

* solves use conjugate gradients (``scipy.sparse.linalg.cg`` on a
  ``LinearOperator``; each product costs :math:`O(Q T n (T + n))`),
  preconditioned with the exact inverse of :math:`P = \bar B \otimes \bar K +
  S \otimes I`, the nearest Kronecker product (Van Loan and Pitsianis 1993) of
  the signal plus the noise (restricted to the observed cells through the
  Schur complement of :mod:`._multitask_likelihood`). For ``Q = 1``,
  :math:`P = \Sigma` and CG stops after one step;
* :math:`\log|\Sigma| = \log|P| + \operatorname{tr} \log(P^{-1/2} \Sigma
  P^{-1/2})`: the first term exactly, the second by stochastic Lanczos
  quadrature with probes :math:`z \sim N(0, P)` (Lanczos on :math:`\Sigma
  P^{-1}` in the :math:`P^{-1}` inner product, full reorthogonalisation);
* :math:`\operatorname{tr}(\Sigma^{-1} \partial\Sigma) =
  \operatorname{tr}(P^{-1} \partial\Sigma) + E[(\Sigma^{-1} z - P^{-1} z)^T
  \partial\Sigma\, P^{-1} z]`: the first term exactly, the second
  (a control variate, zero when :math:`P = \Sigma`) by Hutchinson's estimator
  with the same probes.

The probes come from a fixed set of standard normal draws, so the estimated
log marginal likelihood is a deterministic, smooth function of the
hyperparameters. Its standard error is returned with it.

References
----------
.. [1] Van Loan, C. F. and Pitsianis, N. (1993). Approximation with Kronecker
   products. In Linear Algebra for Large Scale and Real-Time Applications.
.. [2] Ubaru, S., Chen, J. and Saad, Y. (2017). Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature. SIAM J. Matrix Anal. Appl. 38(4).
.. [3] Gardner, J. R. et al. (2018). GPyTorch: Blackbox matrix-matrix Gaussian
   process inference with GPU acceleration. NeurIPS 31.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator, cg
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp import _budgets
from kronecker_gp._typing import BoolArray, FloatArray
from kronecker_gp.linalg._krylov import preconditioned_lanczos_quadrature
from kronecker_gp.solvers._multitask import (
    MissingCells,
    MultiTaskFactorization,
    TwoKronEigen,
    missing_cells,
    schur_solve_rot,
    trace_matrix,
    two_kron_eigh,
)
from kronecker_gp.solvers._protocol import SolverInfo

_LOG_2PI = _budgets.LOG_2PI


def _psd_sqrt(g: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return the symmetric square root of a PSD matrix and its pseudo-inverse."""
    w, u = np.linalg.eigh(g)
    w = np.clip(w, 0.0, None)
    root = np.sqrt(w)
    inv = np.divide(1.0, root, out=np.zeros_like(root), where=root > 1e-12 * root.max())
    return (u * root) @ u.T, (u * inv) @ u.T


def nkp_weights(
    bs: Sequence[FloatArray], ks: Sequence[FloatArray]
) -> tuple[FloatArray, FloatArray]:
    r"""Weights ``a, c >= 0`` of the nearest Kronecker product of an LMC signal.

    ``sum_q B_q (x) K_q ~ (sum_q a_q B_q) (x) (sum_q c_q K_q)``.

    Parameters
    ----------
    bs, ks : sequence of ndarray
        The ``Q`` task covariances (T, T) and input Grams (n, n).

    Returns
    -------
    a, c : ndarray of shape (Q,)
        The weights of the nearest Kronecker product in the Frobenius norm
        (negative entries, which round-off can produce, clipped to zero).

    Notes
    -----
    The rearrangement of :math:`\sum_q B_q \otimes K_q` is
    :math:`\mathcal B \mathcal K^T` with :math:`\mathcal B = [\operatorname{vec}
    B_q]`; its best rank-one approximation follows from the SVD of
    :math:`G_B^{1/2} G_K^{1/2}` with the Gram matrices
    :math:`(G_B)_{qr} = \langle B_q, B_r \rangle_F`: cost :math:`O(Q^2 (T^2 +
    n^2))`. For ``Q = 1`` the product is exact.

    Examples
    --------
    >>> import numpy as np
    >>> b, k = np.array([[2.0, 1.0], [1.0, 2.0]]), np.eye(3)
    >>> a, c = nkp_weights([b], [k])
    >>> round(float(a[0] * c[0]), 12)
    1.0
    """
    gb = np.array([[np.sum(x * y) for y in bs] for x in bs])
    gk = np.array([[np.sum(x * y) for y in ks] for x in ks])
    rb, rb_inv = _psd_sqrt(gb)
    rk, rk_inv = _psd_sqrt(gk)
    x, sig, yt = np.linalg.svd(rb @ rk)
    a, c = sig[0] * (rb_inv @ x[:, 0]), rk_inv @ yt[0]
    if a.sum() < 0:
        a, c = -a, -c
    return np.clip(a, 0.0, None), np.clip(c, 0.0, None)


@dataclass
class CGInfo:
    """Iterations of the CG solves of one evaluation and the worst residual."""

    iterations: list[int] = field(default_factory=list)
    residual: float = 0.0


@dataclass
class LMCSystem:
    """The observed LMC covariance as a LinearOperator, and its preconditioner.

    Parameters
    ----------
    bs, ks : list of ndarray
        Task covariances (T, T) and input Grams (n, n), one pair per latent.
    noise : ndarray of shape (T,)
        Per-task noise variances.
    observed : ndarray of bool of shape (T, n)
        Observed cells.
    tol : float
        Relative residual of every CG solve (``||r|| <= tol ||b||``).
    maxiter : int or None
        CG iteration cap per solve (None: 10 x the number of observations).
    """

    bs: list[FloatArray]
    ks: list[FloatArray]
    noise: FloatArray
    observed: BoolArray
    tol: float
    maxiter: int | None
    info: CGInfo = field(default_factory=CGInfo)

    def __post_init__(self) -> None:
        a, c = nkp_weights(self.bs, self.ks)
        b_bar = sum(w * b for w, b in zip(a, self.bs))
        k_bar = sum(w * k for w, k in zip(c, self.ks))
        self.eig: TwoKronEigen = two_kron_eigh(b_bar, k_bar, self.noise)
        self.missing: MissingCells | None = None
        if not self.observed.all():
            tasks, inputs = np.nonzero(~self.observed)
            self.missing = missing_cells(self.eig, tasks, inputs)
        n_obs = int(self.observed.sum())
        self.op = LinearOperator((n_obs, n_obs), matvec=self.matvec, dtype=np.float64)
        self.pre = LinearOperator((n_obs, n_obs), matvec=self.precond, dtype=np.float64)

    def embed(self, v: FloatArray) -> FloatArray:
        """Return the (T, n) grid with ``v`` on the observed cells, zeros elsewhere."""
        grid = np.zeros(self.observed.shape)
        grid[self.observed] = np.ravel(v)
        return grid

    def matvec(self, v: FloatArray) -> FloatArray:
        """Return ``Sigma_oo v``."""
        # (B (x) K) vec(V) = vec(B V K^T), K symmetric
        grid = self.embed(v)
        out = self.noise[:, None] * grid
        for b, k in zip(self.bs, self.ks):
            out += b @ grid @ k
        return out[self.observed]

    def precond(self, v: FloatArray) -> FloatArray:
        """Return ``P_oo^{-1} v`` exactly (two-Kronecker solve, Schur correction)."""
        rot = schur_solve_rot(self.eig, self.missing, self.eig.rotate(self.embed(v)))
        return self.eig.unrotate(rot)[self.observed]

    def logdet_precond(self) -> float:
        """Return ``log|P_oo|``."""
        extra = 0.0 if self.missing is None else self.missing.logdet()
        return self.eig.logdet() + extra

    def sample_precond(self, xi: FloatArray) -> FloatArray:
        """Map standard normals (k, T, n) to ``z ~ N(0, P_oo)``, shape (k, n_obs)."""
        # P = (V1 (x) V2)^{-T} diag(lam) (V1 (x) V2)^{-1}, V1^{-T} = S V1, V2^{-T} = V2
        root = xi / np.sqrt(self.eig.inv_lam)
        z = np.matmul(np.matmul(self.noise[:, None] * self.eig.v1, root), self.eig.v2.T)
        return z[:, self.observed]

    def solve(self, b: FloatArray) -> FloatArray:
        """Return ``Sigma_oo^{-1} b`` by preconditioned CG, warning if it stalls."""
        count = [0]

        def step(_: FloatArray) -> None:
            count[0] += 1

        maxiter = self.maxiter if self.maxiter is not None else 10 * b.size
        x, flag = cg(
            self.op,
            b,
            rtol=self.tol,
            atol=0.0,
            maxiter=maxiter,
            M=self.pre,
            callback=step,
        )
        b_norm = float(np.linalg.norm(b)) or 1.0
        resid = float(np.linalg.norm(self.matvec(x) - b)) / b_norm
        self.info.iterations.append(count[0])
        self.info.residual = max(self.info.residual, resid)
        if flag != 0:
            warnings.warn(
                f"CG did not converge in {maxiter} iterations: relative residual "
                f"{resid:.2e} > cg_tol={self.tol:g}. Increase cg_maxiter or the noise, "
                "or loosen cg_tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return x


def slq_logdet_ratio(system: LMCSystem, z: FloatArray, steps: int) -> float:
    r"""Estimate ``(P^{-1/2} z)^T log(P^{-1/2} Sigma P^{-1/2}) (P^{-1/2} z)``.

    Parameters
    ----------
    system : LMCSystem
        Provides ``Sigma_oo`` (``matvec``) and ``P_oo^{-1}`` (``precond``).
    z : ndarray of shape (n_obs,)
        A probe, ``z ~ N(0, P_oo)``.
    steps : int
        Lanczos steps (fewer if the Krylov space is exhausted).

    Returns
    -------
    float
        The Gauss quadrature of
        :func:`~kronecker_gp.linalg._krylov.preconditioned_lanczos_quadrature`.
    """
    return preconditioned_lanczos_quadrature(system.matvec, system.precond, z, steps)


@dataclass
class LMCEvaluation:
    """The estimated log marginal likelihood, its gradient and standard errors."""

    lml: float
    lml_stderr: float
    grad: FloatArray | None
    grad_stderr: FloatArray | None
    alpha: FloatArray
    system: LMCSystem


def _sym(m: FloatArray) -> FloatArray:
    return 0.5 * (m + m.T)


def _side_terms(
    system: LMCSystem,
    alpha: FloatArray,
    probes: tuple[list[FloatArray], list[FloatArray]],
    other: tuple[str, FloatArray],
) -> tuple[FloatArray, list[FloatArray]]:
    """Exact part ``0.5 (a F a^T - T_exact)`` and per-probe Hutchinson terms."""
    side, f = other
    diffs, us = probes
    eig = system.eig
    if side == "task":  # dSigma = dX (x) F
        f_rot = eig.v2.T @ f @ eig.v2
        exact = alpha @ f @ alpha.T - trace_matrix(eig, system.missing, side, f_rot)
        per_probe = [-_sym(d @ f @ u.T) for d, u in zip(diffs, us)]
    else:  # dSigma = F (x) dX
        f_rot = eig.v1.T @ f @ eig.v1
        exact = alpha.T @ f @ alpha - trace_matrix(eig, system.missing, side, f_rot)
        per_probe = [-_sym(d.T @ f @ u) for d, u in zip(diffs, us)]
    return 0.5 * exact, [0.5 * p for p in per_probe]


def _contract(
    d_mats: FloatArray, exact: FloatArray, per_probe: list[FloatArray]
) -> tuple[FloatArray, FloatArray]:
    """Gradient entries ``sum(dX_p * M)`` and their per-probe values."""
    samples = np.array([np.einsum("ijp,ij->p", d_mats, exact + p) for p in per_probe])
    return samples.mean(axis=0), samples


def lmc_evaluate(
    system: LMCSystem,
    y: FloatArray,
    xi: FloatArray,
    steps: int,
    grads: tuple[list[FloatArray], list[FloatArray], str | None] | None = None,
) -> LMCEvaluation:
    r"""Estimate the LML of an LMC (and its gradient) by PCG, SLQ and Hutchinson.

    Parameters
    ----------
    system : LMCSystem
        The covariance and its preconditioner.
    y : ndarray of shape (T, n)
        Targets (ignored on missing cells).
    xi : ndarray of shape (n_probes, T, n)
        Fixed standard normal draws; the probes are ``z ~ N(0, P_oo)``.
    steps : int
        Lanczos steps per probe.
    grads : (dbs, dks, noise_mode) or None
        Gradients ``dB_q`` (T, T, p) and ``dK_q`` (n, n, p) w.r.t. the
        log-hyperparameters, and ``"per_task"``, ``"shared"`` or None for the
        log-noise entries; None skips the gradient.

    Returns
    -------
    LMCEvaluation
        Estimates with their standard errors (over the probes).

    Notes
    -----
    Per evaluation: ``n_probes + 1`` PCG solves and ``n_probes`` Lanczos runs
    of at most ``steps`` steps, each step one product with :math:`\Sigma`
    (:math:`O(Q T n (T + n))`) and one with :math:`P^{-1}`; the exact trace
    terms cost :math:`O(Q (T^3 + n^3))`.
    """
    obs = system.observed
    y_o = y[obs]
    alpha_o = system.solve(y_o)
    alpha = system.embed(alpha_o)
    z = system.sample_precond(xi)
    slq = np.array([slq_logdet_ratio(system, zk, steps) for zk in z])
    logdet = system.logdet_precond() + float(slq.mean())
    stderr = float(slq.std(ddof=1) / np.sqrt(slq.size)) if slq.size > 1 else np.inf
    lml = -0.5 * float(y_o @ alpha_o) - 0.5 * logdet - 0.5 * y_o.size * _LOG_2PI
    if grads is None:
        return LMCEvaluation(lml, 0.5 * stderr, None, None, alpha, system)
    us = [system.precond(zk) for zk in z]
    diffs = [system.embed(system.solve(zk) - uk) for zk, uk in zip(z, us)]
    probes = (diffs, [system.embed(uk) for uk in us])
    dbs, dks, noise_mode = grads
    parts = []
    for b, k, db, dk in zip(system.bs, system.ks, dbs, dks):
        if db.shape[2]:
            parts.append(
                _contract(db, *_side_terms(system, alpha, probes, ("task", k)))
            )
        if dk.shape[2]:
            parts.append(
                _contract(dk, *_side_terms(system, alpha, probes, ("input", b)))
            )
    if noise_mode is not None:
        n_tasks = alpha.shape[0]
        d_noise = np.zeros((n_tasks, n_tasks, n_tasks))
        d_noise[np.arange(n_tasks), np.arange(n_tasks), np.arange(n_tasks)] = (
            system.noise
        )
        if noise_mode == "shared":
            d_noise = d_noise.sum(axis=2, keepdims=True)
        eye = np.eye(alpha.shape[1])
        parts.append(
            _contract(d_noise, *_side_terms(system, alpha, probes, ("task", eye)))
        )
    grad = np.concatenate([m for m, _ in parts])
    samples = np.concatenate([s for _, s in parts], axis=1)
    grad_err = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return LMCEvaluation(lml, 0.5 * stderr, grad, grad_err, alpha, system)


def lmc_predict(
    system: LMCSystem,
    alpha: FloatArray,
    cross: Sequence[FloatArray],
    prior_diag: Sequence[FloatArray] | None,
) -> tuple[FloatArray, FloatArray | None]:
    r"""Posterior mean (exact to the CG tolerance) and variance of an LMC.

    Parameters
    ----------
    system : LMCSystem
        The training system.
    alpha : ndarray of shape (T, n)
        ``Sigma_oo^{-1} y``, zero-padded.
    cross : sequence of ndarray of shape (m, n)
        ``k_q(x*, X)`` per latent.
    prior_diag : sequence of ndarray of shape (m,), or None
        ``k_q(x*, x*)`` per latent; None skips the variance.

    Returns
    -------
    mean : ndarray of shape (m, T)
    var : ndarray of shape (m, T) or None

    Notes
    -----
    The mean is :math:`\sum_q K_{*q} A^T B_q`. The variance needs one PCG
    solve per test point and task, :math:`c_t = \sum_q B_{q,:t} \otimes k_{q*}`:
    :math:`m T` solves in all.
    """
    mean = sum(c @ alpha.T @ b for c, b in zip(cross, system.bs))
    if prior_diag is None:
        return np.asarray(mean), None
    n_tasks = alpha.shape[0]
    var = np.zeros((cross[0].shape[0], n_tasks))
    for i in range(cross[0].shape[0]):
        for t in range(n_tasks):
            c = sum(np.outer(b[:, t], k[i]) for b, k in zip(system.bs, cross))
            c_o = np.asarray(c)[system.observed]
            prior = sum(b[t, t] * p[i] for b, p in zip(system.bs, prior_diag))
            var[i, t] = prior - c_o @ system.solve(c_o)
    return np.asarray(mean), var


def lmc_joint_covariance(
    system: LMCSystem,
    cross: Sequence[FloatArray],
    prior: Sequence[FloatArray],
) -> FloatArray:
    r"""Joint posterior covariance of all tasks at a few inputs (one PCG solve each).

    ``cross`` and ``prior`` hold ``k_q(x*, X)`` and ``k_q(x*, x*)`` per
    latent; returns an array of shape (m, T, m, T). Cost :math:`m T` solves.
    """
    m, n_tasks = cross[0].shape[0], system.bs[0].shape[0]
    cols = []
    for i in range(m):
        for t in range(n_tasks):
            c = sum(np.outer(b[:, t], k[i]) for b, k in zip(system.bs, cross))
            cols.append(np.asarray(c)[system.observed])
    c_o = np.column_stack(cols)  # (n_obs, m T)
    solved = np.column_stack([system.solve(c_o[:, j]) for j in range(c_o.shape[1])])
    full = sum(np.einsum("tu,mn->mtnu", b, p) for b, p in zip(system.bs, prior))
    return np.asarray(full - (c_o.T @ solved).reshape(m, n_tasks, m, n_tasks))


class LMCFactorization(MultiTaskFactorization):
    """The iterative linear-model-of-coregionalisation route (PCG + SLQ).

    Parameters
    ----------
    ev : LMCEvaluation
        The estimated LML, its gradient and the training system.
    kernels : list of sklearn Kernel
        Input kernels per latent at these hyperparameters (cloned).
    X_train : ndarray of shape (n, n_features)
        Training inputs.
    """

    def __init__(
        self, ev: LMCEvaluation, *, kernels: Sequence[Kernel], X_train: FloatArray
    ) -> None:
        self.ev = ev
        self.lml, self.grad, self.lml_stderr = ev.lml, ev.grad, ev.lml_stderr
        #: per-entry standard errors of the estimated gradient (or None)
        self.grad_stderr = ev.grad_stderr
        self.kernels = [k.clone_with_theta(k.theta) for k in kernels]
        self.X_train = X_train
        info = ev.system.info
        self.info = SolverInfo(
            "lmc-pcg",
            int((~ev.system.observed).sum()),
            iterations=max(info.iterations, default=0),
            residual=info.residual,
            lml_std_error=ev.lml_stderr,
        )

    def alpha(self) -> FloatArray:
        """Return ``Sigma_oo^{-1} y`` as a (T, n) grid, zeros on missing cells."""
        return self.ev.alpha

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return the mean (M, T) and variances (M, T) or joint covariance.

        The mean is exact to the CG tolerance; each variance or covariance
        column costs one preconditioned CG solve.
        """
        X = parts[0]
        cross = [np.asarray(k(X, self.X_train)) for k in self.kernels]
        if cov:
            mean = lmc_predict(self.ev.system, self.ev.alpha, cross, None)[0]
            prior = [np.asarray(k(X)) for k in self.kernels]
            return mean, lmc_joint_covariance(self.ev.system, cross, prior)
        diag = [k.diag(X) for k in self.kernels] if std else None
        return lmc_predict(self.ev.system, self.ev.alpha, cross, diag)
