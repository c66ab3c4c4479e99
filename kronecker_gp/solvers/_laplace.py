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
(:func:`~kronecker_gp.linalg.kron_matvec`); the solves (CG on :math:`A` or on
:math:`B`, with Kronecker preconditioners fitted to the curvature) are the
routes of :class:`~kronecker_gp.solvers._laplace_system.CurvatureSystem`.
Above ``dense_max_cells`` the eigenpairs of each factor at rounding level are
dropped (:meth:`KronBasis.from_grams`), so ``v`` may be shorter than the grid.
The posterior covariance is :math:`\Sigma = (K^{-1} + W)^{-1} = Q S
A^{-1} S Q^T`.

Newton (damped, inexact, from the Gaussian-approximation or warm start of
:func:`laplace_mode`): :math:`v \leftarrow v + t A_+^{-1} \nabla\Psi(v)` with
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
preconditioned :math:`A` or :math:`B` (standard error returned), and the traces
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.likelihoods import Likelihood
from kronecker_gp.linalg import kron_dense, kron_diag, kron_matvec
from kronecker_gp.solvers._laplace_precond import KronBasis
from kronecker_gp.solvers._laplace_system import (
    DENSE_MAX_CELLS,
    CurvatureSystem,
    LaplaceOptions,
)

#: Newton steps of the per-cell start (independent cells, prior variance
#: diag K), each clipped to this many latent units.
START_STEPS, START_CLIP = 30, 3.0
#: Loosest relative residual of a Newton step's CG solve (inexact Newton),
#: and gamma of the Eisenstat-Walker forcing term.
MAX_FORCING, FORCING_GAMMA = 0.1, 0.5
_EPS = float(np.finfo(float).eps)


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


def cellwise_start(problem: LaplaceProblem, k_diag: FloatArray) -> FloatArray:
    r"""Return per-cell posterior modes under independent priors :math:`N(0, K_{ii})`.

    Each observed cell maximises :math:`\log p(y_i | f_i + o_i) - f_i^2 / 2K_{ii}`
    (a few clipped Newton steps with the curvature floored at zero); missing
    cells get 0. The Newton point from this field (one solve) is the
    Gaussian-approximation start of :func:`laplace_mode`: for Poisson counts
    it is a GP fit of about :math:`\log((y + 1/2) / E)` with noise
    :math:`1 / (y + 1/2)`.

    Parameters
    ----------
    problem : LaplaceProblem
        Observations, offsets and likelihood.
    k_diag : ndarray of shape (N,)
        Prior variances.

    Returns
    -------
    ndarray of shape (N,)
    """
    obs = problem.obs
    y, off, var = problem.y[obs], problem.offset[obs], k_diag[obs]
    f = np.zeros(y.size)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(START_STEPS):
            _, d1, d2, _ = problem.lik.derivatives(y, f + off, problem.params)
            step = (d1 - f / var) / (np.maximum(-d2, 0.0) + 1.0 / var)
            step = np.clip(np.nan_to_num(step), -START_CLIP, START_CLIP)
            f = f + step
            if np.all(np.abs(step) <= 1e-3 * (1.0 + np.abs(f))):
                break
    out = np.zeros(problem.y.size)
    out[obs] = f
    return out


@dataclass
class _Point:
    """The Laplace objective and its likelihood terms at one ``v``."""

    v: FloatArray
    psi: float
    f: FloatArray
    d1: FloatArray
    w: FloatArray


def _point(basis: KronBasis, problem: LaplaceProblem, v: FloatArray) -> _Point:
    f = basis.unrotate(np.sqrt(basis.lam) * v)
    # a trial step may overflow exp(f): Psi is then not finite and the line
    # search shortens the step, so the warnings are not wanted
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        lp, d1, w, _ = problem.terms(f)
    return _Point(v, lp - 0.5 * float(v @ v), f, d1, w)


def _start(
    basis: KronBasis,
    problem: LaplaceProblem,
    opts: LaplaceOptions,
    a0: FloatArray | None,
) -> tuple[_Point, CurvatureSystem | None, int]:
    """Pick the Newton start: the warm start, the data start or zero."""
    zero = _point(basis, problem, np.zeros(basis.rank))
    if a0 is not None:
        # the previous mode f = K a0 under the new prior: v = S Q^T a0; it can
        # be far off (or overflow) after a large change of hyperparameters
        warm = _point(basis, problem, np.sqrt(basis.lam) * basis.rotate(a0))
        if np.isfinite(warm.psi) and warm.psi >= zero.psi:
            return warm, None, 0
    f0 = cellwise_start(problem, basis.k_diag())
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, d1, w, _ = problem.terms(f0)
    if not (np.all(np.isfinite(d1)) and np.all(np.isfinite(w))):
        return zero, None, 0
    system = CurvatureSystem(basis, np.maximum(w, 0.0), opts)
    data = _point(basis, problem, system.newton_point(f0, d1, MAX_FORCING))
    its = system.cg_iterations
    if np.isfinite(data.psi) and data.psi > zero.psi:
        return data, system, its
    return zero, None, its


def laplace_mode(
    basis: KronBasis,
    problem: LaplaceProblem,
    opts: LaplaceOptions,
    a0: FloatArray | None = None,
    trace: list[tuple[str, float, float, int]] | None = None,
) -> tuple[FloatArray, int, int]:
    r"""Find the posterior mode ``v`` (whitened rotated) by damped Newton.

    The start is the best (largest objective) of the warm start ``a0``, the
    Newton point from :func:`cellwise_start` (one solve) and zero. Each
    Newton step is solved by CG to a relative residual that shrinks with the
    gradient (inexact Newton, at most ``MAX_FORCING``), but not below what
    brings the next gradient under the tolerance; the Kronecker
    preconditioner is carried over from step to step while the curvature's
    Kronecker fit moves little.

    Parameters
    ----------
    basis : KronBasis
        The prior's eigenbasis.
    problem : LaplaceProblem
        Observations, offsets and likelihood.
    opts : LaplaceOptions
        Tolerances.
    a0 : ndarray of shape (N,), optional
        Warm start: a previous mode's :math:`\nabla \log p` (``f = K a0``).
    trace : list, optional
        Receives ``(route, gradient norm, CG rtol, CG iterations)`` per step.

    Returns
    -------
    v : ndarray of shape (N,)
    n_iter : int
        Newton steps taken (the data start counts as one).
    cg_iterations : int
        CG iterations over all steps (0 on the dense path).
    """
    s = np.sqrt(basis.lam)
    cur, system, cg_its = _start(basis, problem, opts, a0)
    n_start = int(system is not None)
    g_prev: float | None = None
    last_decrement, decrement = np.inf, np.inf
    for it in range(1, opts.max_newton + 1):
        system = CurvatureSystem(basis, np.maximum(cur.w, 0.0), opts, system)
        grad = s * basis.rotate(cur.d1) - cur.v
        gnorm = float(np.linalg.norm(grad))
        scale = 1.0 + abs(cur.psi)
        if gnorm * gnorm <= opts.newton_tol * scale:
            # the decrement grad^T A^-1 grad <= |grad|^2 (A >= I) is below tol
            return cur.v, it - 1 + n_start, cg_its
        rtol = _forcing(gnorm, g_prev, scale, opts)
        g_prev = gnorm
        point = system.newton_point(cur.f, cur.d1, rtol, cur.v, grad)
        cg_its += system.cg_iterations
        if trace is not None:
            trace.append((system.route, gnorm, rtol, system.cg_iterations))
        step = point - cur.v
        t = 1.0
        for _ in range(60):
            new = _point(basis, problem, cur.v + t * step)
            # rounding slack: near the mode Psi changes by less than eps |Psi|
            if np.isfinite(new.psi) and new.psi >= cur.psi - 64 * _EPS * scale:
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
        cur = new
        if decrement <= opts.newton_tol * scale:
            return cur.v, it + n_start, cg_its
        # rounding floor: near the mode a Newton step shrinks the decrement
        # quadratically; when it stops shrinking below 1e-10 |Psi| the
        # gradient is at the rounding level of large likelihood terms
        if decrement <= 1e-10 * scale and decrement >= 0.5 * last_decrement:
            return cur.v, it + n_start, cg_its
        last_decrement = decrement
    raise RuntimeError(
        f"Newton's method for the Laplace mode did not converge in "
        f"{opts.max_newton} steps (last Newton decrement {decrement:.3g}); "
        "increase max_newton or check the hyperparameters."
    )


def _forcing(
    gnorm: float, g_prev: float | None, scale: float, opts: LaplaceOptions
) -> float:
    r"""Relative CG residual of a Newton step (inexact Newton forcing term).

    Eisenstat and Walker's (1996, SIAM J. Sci. Comput. 17) choice 2,
    :math:`\eta_k = \gamma (\|g_k\| / \|g_{k-1}\|)^2`: the linear
    residual is asked to be about as small as the Newton model's own
    (quadratic) error, no smaller;
    at most ``MAX_FORCING``, and no smaller than what brings the next gradient
    to a tenth of what the tolerance accepts (decrement :math:`\le
    \|g\|^2 \le` ``newton_tol`` :math:`|\Psi|`).
    """
    eta = MAX_FORCING
    if g_prev is not None:
        eta = FORCING_GAMMA * (gnorm / max(g_prev, _EPS)) ** 2
    target = 0.1 * np.sqrt(opts.newton_tol * scale)
    floor = max(opts.cg_tol, min(MAX_FORCING, target / max(gnorm, _EPS)))
    return float(max(floor, min(MAX_FORCING, eta)))


def laplace_factorize(
    grams: Sequence[FloatArray],
    problem: LaplaceProblem,
    *,
    grad_grams: Sequence[FloatArray] | None = None,
    opts: LaplaceOptions | None = None,
    a0: FloatArray | None = None,
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
    a0 : ndarray of shape (N,), optional
        Warm start of the Newton search: a previous result's ``grad_logp``
        (its mode is ``K a0``; this survives a change of the kernels).
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
    n_cells = int(np.prod([g.shape[0] for g in grams]))
    basis = KronBasis.from_grams(grams, truncate=n_cells > opts.dense_max_cells)
    v, n_iter, newton_cg = laplace_mode(basis, problem, opts, a0)
    f = basis.unrotate(np.sqrt(basis.lam) * v)
    logp, d1, w, d3 = problem.terms(f)
    system = CurvatureSystem(basis, w, opts)
    res = LaplaceResult(v, f, d1, w, float("nan"), 0.0, system)
    res.info = {
        "newton_iterations": n_iter,
        "dense": system.dense,
        "route": system.route,
        "log_lik": logp,
    }
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
    n_par = len(problem.params)
    b = np.zeros((a.size, len(dks)))
    for j, facs in enumerate(dks):
        b[:, j] = kron_matvec(facs, a)
    dlogp, da, dw = problem.param_columns(res.f)
    rhs = np.column_stack([w[:, None] * b, da])
    if system.dense or system.constant:
        diag = system.sigma_diag()
        trace_wsw = _trace_wsigmaw(system, dks)
        sig = system.sigma(rhs) if rhs.shape[1] else rhs
    else:
        # one batched solve for the diagonal, the traces and the columns
        z = system._probes()
        diag, rz, sig = system.gradient_solves(z, rhs)
        trace_wsw = _trace_estimate(w, dks, z, rz)
    s2 = 0.5 * diag * d3
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
        return np.array([np.sum(m * kron_dense(facs)) for facs in dks])
    if system.constant:
        # W Sigma W = w^2 Q diag(lam / (1 + w lam)) Q^T: trace through dK's rotation
        spec = w[0] ** 2 * system.basis.lam / (1.0 + w[0] * system.basis.lam)
        us = system.basis.eigvecs
        return np.array(
            [spec @ kron_diag([u.T @ f @ u for u, f in zip(us, facs)]) for facs in dks]
        )
    z = system._probes()
    rz = system.r_half(np.sqrt(np.maximum(w, 0.0))[:, None] * z)
    return _trace_estimate(w, dks, z, rz)


def _trace_estimate(
    w: FloatArray, dks: list[list[FloatArray]], z: FloatArray, rz: FloatArray
) -> FloatArray:
    r"""Return :math:`\operatorname{tr}(W \dot K_j) - \operatorname{tr}(R \dot K_j)`.

    Hutchinson on :math:`R \dot K_j`, :math:`R = W - W \Sigma W = (K +
    W^{-1})^{-1}` (``rz`` is :math:`R z`): the two terms of
    :math:`W \Sigma W` cancel where W is large, so estimating their
    difference has a far smaller variance than estimating it alone.
    """
    exact = np.array([w @ kron_diag(facs) for facs in dks])
    est = np.array([np.mean(np.sum(rz * kron_matvec(facs, z), axis=0)) for facs in dks])
    return exact - est


__all__ = [
    "DENSE_MAX_CELLS",
    "LaplaceOptions",
    "LaplaceProblem",
    "LaplaceResult",
    "cellwise_start",
    "laplace_factorize",
    "laplace_lml",
    "laplace_mode",
]
