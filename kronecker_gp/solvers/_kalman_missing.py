r"""Missing cells on the state-space route: the Schur method with Kalman solves.

The incomplete-grid method of :mod:`kronecker_gp.solvers._eigen_missing` needs only
products with :math:`P = A^{-1}`, :math:`A = K_{rest} \otimes K_t + sI` on the
*complete* grid. On the state-space route that product is a rotation by the
other factors' eigenvectors, one Kalman filter and adjoint pass per rotated
series (:func:`~kronecker_gp.solvers._kalman_series.ssm_solve`) and the rotation
back, :math:`O(N (S + d^2))` for ``N`` cells and ``S`` series, so missing cells
keep working at :math:`10^5+` time steps. With ``m`` missing cells:

* weights: :math:`P_{mm} c = (P \tilde y)_m`, :math:`r = \tilde y - E_m c`,
  :math:`\alpha = P r` (zero on the missing cells);
* log marginal likelihood: :math:`L_{obs} = L_c(r) - \tfrac12 \log|P_{mm}| +
  \tfrac{m}{2} \log 2\pi`, where :math:`L_c(r)` is the complete-grid LML of
  the padded data ``r`` (its quadratic form equals :math:`y_o^T A_{oo}^{-1}
  y_o` because :math:`\alpha` vanishes on the missing cells);
* gradient: :math:`\partial L_{obs} = \partial L_c(r)|_{r\ \mathrm{fixed}} +
  \tfrac12 \operatorname{tr}(P_{mm}^{-1} (P\, \partial A\, P)_{mm})`. The trace
  is a sum of quadratic forms :math:`(P v)^T \partial A (P v)`, which the
  filter's sensitivity equations give for any data ``v``
  (:func:`stacked_gradient`, one pass for ``r`` and all the columns):
  exactly with :math:`v_j = E_m L^{-T} e_j` (:math:`P_{mm} = L L^T`), or by
  Hutchinson's estimator with the probes of the stochastic Lanczos quadrature
  of :math:`\log|P_{mm}|` and the polarisation
  :math:`a^T X b = \tfrac14 (q(a + b) - q(a - b))`;
* predictive variance: the complete-grid variance plus
  :math:`g^T P_{mm}^{-1} g`, :math:`g_j = k_*^T P e_j` (a predictive mean with
  data :math:`e_j`), exact while affordable, else Monte Carlo with
  :math:`\zeta \sim N(0, P_{mm}^{-1})` drawn from prior samples.

The Schur complement is the one of
:class:`~kronecker_gp.linalg._schur.MissingCellSchur` (:class:`SSMSchurSystem`
supplies the Kalman solve). Arrays are in *series layout*: the grid with the
state-space axis moved last, ``(S, n_t)`` or ``(S, n_t, k)`` for ``k``
columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.kernels._markov import kernel_to_state_space
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.linalg._schur import MissingCellSchur
from kronecker_gp.linalg.kalman._filter import (
    adjoint,
    filter_store,
    sqrt_psd,
    step_tables,
)
from kronecker_gp.linalg.kalman._sensitivity import filter_lml
from kronecker_gp.solvers._cost import choose_schur_method
from kronecker_gp.solvers._kalman_series import (
    kalman_solve,
    merge_times,
    ssm_predict,
    ssm_solve,
)

#: Columns per batched pass: keeps each pass's arrays near this many entries
#: (the time loop's Python overhead is paid once per pass, so wide passes pay).
_CHUNK_ENTRIES = 2**24
_QUAD_CHUNK_ENTRIES = 2**26
_LOG_2PI = _budgets.LOG_2PI


def column_chunks(
    n_cols: int, per_col: int, budget: int = _CHUNK_ENTRIES
) -> list[slice]:
    step = max(1, budget // max(per_col, 1))
    return [slice(lo, min(n_cols, lo + step)) for lo in range(0, n_cols, step)]


@dataclass
class SeriesOperator:
    r"""Complete-grid algebra of :math:`K_{rest} \otimes K_t + sI` in series layout.

    Parameters
    ----------
    kernel_t : sklearn Kernel
        Markov kernel of the state-space axis.
    times : ndarray of shape (n_t,)
        Sorted times.
    eigvecs : list of ndarray
        Eigenvectors of the other factors (their Kronecker product is ``U``).
    weights : ndarray of shape (S,)
        Eigenvalues of :math:`K_{rest}` (series weights).
    noise : float
        Noise variance.
    """

    kernel_t: Kernel
    times: FloatArray
    eigvecs: list[FloatArray]
    weights: FloatArray
    noise: float

    @property
    def n_series(self) -> int:
        """Number of series ``S``."""
        return int(self.weights.size)

    def _apply(self, mats: list[FloatArray], x: FloatArray) -> FloatArray:
        s, n, k = x.shape
        return kron_matvec(mats, x.reshape(s, n * k)).reshape(s, n, k)

    def rotate(self, x: FloatArray) -> FloatArray:
        """Return ``(U^T (x) I) x`` for ``x`` of shape (S, n_t, k)."""
        return self._apply([u.T for u in self.eigvecs], x)

    def unrotate(self, x: FloatArray) -> FloatArray:
        """Return ``(U (x) I) x`` for ``x`` of shape (S, n_t, k)."""
        return self._apply(self.eigvecs, x)

    def solve_rot(self, b_rot: FloatArray) -> FloatArray:
        """Solve every rotated series: ``(w_i K_t + sI)^{-1} b_i``."""
        return ssm_solve(self.kernel_t, self.times, self.weights, self.noise, b_rot)

    def solve_rot_logdet(self, b_rot: FloatArray) -> tuple[FloatArray, float]:
        """Solve every rotated series (``b_rot`` (S, n_t, k)); also return ``log|A|``.

        ``log|A|`` is the sum of the filter's innovation variances' logs.
        """
        return kalman_solve(self.kernel_t, self.times, self.weights, self.noise, b_rot)

    def solve(self, x: FloatArray) -> FloatArray:
        """Return ``P x`` (grid cells in series layout), shape (S, n_t, k)."""
        return self.unrotate(self.solve_rot(self.rotate(x)))

    def cross_mean(self, b_rot: FloatArray, pred_times: FloatArray) -> FloatArray:
        r"""Return :math:`k_t(t^*, t) (w_i K_t + sI)^{-1} b_i`, shape (S, m, k)."""
        merged, obs, pos = merge_times(self.times, pred_times)
        tab = step_tables(kernel_to_state_space(self.kernel_t), merged, False)
        s, _, k = b_rot.shape
        full = np.zeros((merged.size, s, k))
        full[obs] = b_rot.transpose(1, 0, 2)
        fs = filter_store(tab, full, self.weights, self.noise, obs).store
        beta = adjoint(tab, fs, self.weights, obs)[1]
        return np.ascontiguousarray(beta[pos].transpose(1, 0, 2))

    def diag_inverse(self) -> FloatArray:
        r"""Return :math:`\operatorname{diag}(P)` in series layout, shape (S, n_t).

        Per rotated series :math:`(wK + sI)^{-1} = (I - \Sigma / s) / s` with
        :math:`\Sigma` the posterior covariance, so the diagonal is
        :math:`(1 - \Sigma_{tt} / s) / s`, rotated back with :math:`U^2`.
        """
        zeros = np.zeros((self.n_series, self.times.size))
        var = ssm_predict(
            self.kernel_t, self.times, zeros, self.weights, self.noise
        ).var
        d_rot = np.maximum((1.0 - var / self.noise) / self.noise, 0.0)
        return kron_matvec([u * u for u in self.eigvecs], d_rot)

    def prior_rot(
        self,
        n_samples: int,
        rng: np.random.Generator,
        times: FloatArray | None = None,
        *,
        noisy: bool = True,
    ) -> FloatArray:
        r"""Rotated prior samples, shape (S, n, n_samples).

        Series ``i`` is :math:`\sqrt{w_i}` times a unit-model prior path (exact
        simulation of the discretised SDE at the sorted ``times``, default the
        training times); ``noisy`` adds white noise of variance ``s``, giving
        :math:`(U^T \otimes I)(f + \varepsilon)` with
        :math:`f + \varepsilon \sim N(0, A)` (white noise stays white under
        the orthogonal rotation).
        """
        times = self.times if times is None else times
        tab = step_tables(kernel_to_state_space(self.kernel_t), times, False)
        d, s, n = tab.A.shape[1], self.n_series, times.size
        roots = sqrt_psd(tab.Q[:, 0].reshape(-1, d, d))
        x = np.zeros((s * n_samples, d))
        out = np.empty((s * n_samples, n))
        for k in range(n):
            i = tab.idx[k]
            x = x @ tab.A[i].T + rng.standard_normal((s * n_samples, d)) @ roots[i].T
            out[:, k] = x @ tab.h
        f = np.sqrt(self.weights)[:, None, None] * out.reshape(s, n_samples, n)
        f = np.ascontiguousarray(f.transpose(0, 2, 1))
        if noisy:
            f += np.sqrt(self.noise) * rng.standard_normal(f.shape)
        return f


def joint_prior(
    op: SeriesOperator, test_times: FloatArray, n_samples: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Joint prior samples at the training times and ``test_times`` (grid cells).

    Simulated on the merged timeline (no noise); returns ``(f_train, f_test)``
    of shapes (S, n_t, k) and (S, m, k) in series layout.
    """
    merged, obs, pos = merge_times(op.times, test_times)
    f = op.unrotate(op.prior_rot(n_samples, rng, merged, noisy=False))
    return f[:, obs], f[:, pos]


def stacked_gradient(
    op: SeriesOperator, v_rot: FloatArray, coef: FloatArray, full: FloatArray
) -> tuple[FloatArray, FloatArray, float]:
    r"""Weighted sum of per-column LML gradients from one stacked sensitivity pass.

    Column ``j`` of ``v_rot`` (rotated data, shape (S, n_t, k)) contributes
    ``coef[j]`` times the gradient of its complete-grid LML when ``full[j]``
    is 1, or of its data term only, :math:`	frac12 (P v_j)^T \partial A
    (P v_j)`, when ``full[j]`` is 0. Returns the derivatives w.r.t. the time
    kernel's theta, the rotated space Gram (an ``(S, S)`` matrix ``G`` with
    :math:`dL = \sum_{ab} G_{ab} (U^T \partial K_{rest} U)_{ab}`) and
    :math:`\log s`. The ``k S`` rotated series run through one filter with
    sensitivities and one adjoint pass (in chunks bounding the memory).
    """
    tab = step_tables(kernel_to_state_space(op.kernel_t), op.times, True)
    nt, d = tab.n_theta, tab.A.shape[1]
    s, n = op.n_series, op.times.size
    theta, off, diag, log_noise = np.zeros(nt), np.zeros((s, s)), np.zeros(s), 0.0
    for sl in column_chunks(v_rot.shape[2], s * n * (d + 4), _QUAD_CHUNK_ENTRIES):
        k, c = sl.stop - sl.start, coef[sl]
        stacked = v_rot[:, :, sl].transpose(1, 2, 0).reshape(n, k * s)  # (n, k*S)
        w = np.tile(op.weights, k)
        _, per, fs = filter_lml(
            tab, stacked, w, op.noise, store=True, logdet_weight=np.repeat(full[sl], s)
        )
        assert fs is not None
        a, beta = adjoint(tab, fs, w)
        alpha = a[:, :, 0].reshape(n, k, s)
        k_alpha = beta[:, :, 0].reshape(n, k, s) * c[None, :, None]
        off += 0.5 * np.einsum("tja,tjb->ab", alpha, k_alpha)
        per = per.reshape(k, s, -1) * c[:, None, None]
        theta += per[:, :, :nt].sum(axis=(0, 1))
        diag += per[:, :, nt].sum(axis=0)
        log_noise += float(per[:, :, nt + 1].sum())
    space = 0.5 * (off + off.T)
    np.fill_diagonal(space, diag)
    return theta, space, log_noise


def kalman_solve_flops(op: SeriesOperator, n_cells: int) -> float:
    """Return the cost model's flops of one complete-grid solve on this route.

    A rotation by the other factors' eigenvectors there and back, plus one
    Kalman pass per series; the pass's per-cell cost (``KALMAN_CELL_FLOPS``
    times the squared state dimension) includes the exact path's stacked
    sensitivity columns, which cost several passes each.
    """
    d = kernel_to_state_space(op.kernel_t).state_dim
    rotation = 4.0 * sum(u.shape[0] for u in op.eigvecs)
    return float(n_cells) * (rotation + _budgets.KALMAN_CELL_FLOPS * d * d)


class SSMSchurSystem:
    r"""The observed-cell system on the state-space route (Schur complement).

    The Kalman route's adapter on :class:`~kronecker_gp.linalg._schur.
    MissingCellSchur` (``self.schur``): it supplies the complete-grid solve
    (rotation, one Kalman pass per rotated series, rotation back) on grid
    vectors in series layout and the Jacobi diagonal of :math:`P_{mm}` from
    the filter's variances, and keeps the series-shaped glue.

    Parameters
    ----------
    op : SeriesOperator
        The complete-grid algebra.
    s_idx, t_idx : ndarray of int
        Series and time index of each missing cell (series layout).
    method : {"auto", "exact", "cg"}
        ``"exact"`` forms :math:`P_{mm}` (``m`` solves) and factors it;
        ``"cg"`` uses Jacobi-preconditioned CG; ``"auto"`` asks the cost model
        (:func:`~kronecker_gp.solvers._cost.choose_schur_method`).
    tol, max_iter : float, int
        CG settings (non-convergence warns with the residual).
    n_probes : int, default=32
        Probes of the estimators (read by the cost model).
    """

    def __init__(
        self,
        op: SeriesOperator,
        s_idx: IntArray,
        t_idx: IntArray,
        *,
        method: str = "auto",
        tol: float = 1e-10,
        max_iter: int = 2000,
        n_probes: int = 32,
    ) -> None:
        self.op, self.s_idx, self.t_idx = op, s_idx, t_idx
        self._shape = (op.n_series, op.times.size)
        m, n_cells = s_idx.size, op.n_series * op.times.size
        solve = kalman_solve_flops(op, n_cells)
        self.choice = choose_schur_method(method, m, n_cells, solve, n_probes)
        self.method = self.choice.method
        self.schur = MissingCellSchur(
            self._solve_full,
            np.ravel_multi_index((s_idx, t_idx), self._shape),
            n_cells,
            method=self.method,
            tol=tol,
            max_iter=max_iter,
            diagonal=self._diagonal,
            columns_per_pass=max(1, _CHUNK_ENTRIES // n_cells),
        )

    def _solve_full(self, x: FloatArray) -> FloatArray:
        """Return ``P x`` for flat series-layout grid vectors ``x`` (N, k)."""
        out = self.op.solve(x.reshape(*self._shape, x.shape[1]))
        return out.reshape(x.shape)

    def _diagonal(self) -> FloatArray:
        """Return ``diag(P_mm)`` from the filter's posterior variances."""
        return self.op.diag_inverse()[self.s_idx, self.t_idx]

    def solve_data(self, y: FloatArray) -> tuple[FloatArray, float]:
        """Return ``P y`` (y of shape (S, n_t)) and ``log|A|``; factor ``P_mm`` too.

        On the exact path the columns ``P E_m`` ride along in the same Kalman
        passes as ``P y`` (``m`` extra right-hand sides per series), and
        ``P_mm`` is formed and Cholesky-factored.
        """
        op = self.op
        if self.method != "exact":
            x, logdet = op.solve_rot_logdet(op.rotate(y[:, :, None]))
            return op.unrotate(x)[:, :, 0], logdet
        recorded = [0.0]  # log|A|, the same in every pass

        def solve_logdet(x: FloatArray) -> FloatArray:
            out, recorded[0] = op.solve_rot_logdet(
                op.rotate(x.reshape(*self._shape, x.shape[1]))
            )
            return op.unrotate(out).reshape(x.shape)

        py = self.schur.factor(y.reshape(-1, 1), solve=solve_logdet)
        assert py is not None
        return py.reshape(y.shape), recorded[0]

    @property
    def n_missing(self) -> int:
        """Number of missing cells ``m``."""
        return int(self.s_idx.size)

    @property
    def iterations(self) -> int:
        """Most CG iterations of a ``P_mm`` solve so far."""
        return self.schur.iterations

    @property
    def residual(self) -> float:
        """Worst final relative CG residual so far."""
        return self.schur.residual

    @property
    def diag(self) -> FloatArray:
        """Diagonal of ``P_mm`` (the CG path's Jacobi preconditioner), computed once."""
        return self.schur.diagonal()

    def pad(self, c: FloatArray) -> FloatArray:
        """Return ``E_m c`` in series layout, shape (S, n_t, k)."""
        return self.schur.pad(c).reshape(*self._shape, c.shape[1])

    def take(self, x: FloatArray) -> FloatArray:
        """Return the missing cells' rows ``E_m^T x``, shape (m, k)."""
        return x[self.s_idx, self.t_idx]

    def pmm_matvec(self, c: FloatArray) -> FloatArray:
        """Return ``P_mm c`` for ``c`` of shape (m, k)."""
        return self.schur.pmm_matvec(c)

    def pmm_solve_direct(self, b: FloatArray) -> FloatArray:
        """Return ``P_mm^{-1} b``, by a Cholesky factor where that pays, else CG.

        Forming ``P_mm`` costs ``m`` Kalman solves (batched) and ``8 m^2``
        bytes; CG costs tens of solves per right-hand side, so many
        right-hand sides (predictive variances over a grid) pay for it.
        """
        return self.schur.solve_direct(b)

    def observed_residual(
        self, b: FloatArray, pb: FloatArray | None = None
    ) -> FloatArray:
        """Return ``r = b - E_m P_mm^{-1} (P b)_m`` in series layout (S, n_t, k)."""
        flat = self.schur.observed_residual(
            b.reshape(-1, b.shape[2]),
            None if pb is None else pb.reshape(-1, b.shape[2]),
        )
        return flat.reshape(b.shape)

    def pmm_solve(self, b: FloatArray) -> FloatArray:
        """Return ``P_mm^{-1} b`` for ``b`` of shape (m, k)."""
        return self.schur.solve(b)

    def logdet_exact(self) -> float:
        """Return ``log|P_mm|`` (exact path only)."""
        return self.schur.logdet()

    def inv_sqrt_columns(self) -> FloatArray:
        """Return ``L^{-T}`` for ``P_mm = L L^T`` (exact path only), (m, m)."""
        return self.schur.inv_sqrt()


@dataclass
class MissingFit:
    """Result of :func:`ssm_missing_lml`."""

    lml: float
    r_rot: FloatArray  # rotated padded data U^T r, (S, n_t)
    std_error: float
    lanczos_steps: int
    gradient: tuple[FloatArray, FloatArray, float] | None


def ssm_missing_lml(
    system: SSMSchurSystem,
    y: FloatArray,
    *,
    n_probes: int,
    rng: np.random.Generator,
    eval_gradient: bool,
    need_lml: bool = True,
) -> MissingFit:
    r"""Log marginal likelihood of the observed cells and its gradient.

    Parameters
    ----------
    system : SSMSchurSystem
        The missing-cell system (its operator holds the hyperparameters).
    y : ndarray of shape (S, n_t)
        Targets in series layout, zero on the missing cells.
    n_probes : int
        Probes of the stochastic estimates (CG path only).
    rng : numpy Generator
        Source of the probes (seeded by the caller: deterministic objective).
    eval_gradient : bool
        Also compute the gradient.
    need_lml : bool, default=True
        If False (and no gradient), skip the stochastic log-determinant on the
        CG path and return NaN for the LML (the weights alone are cheap).

    Returns
    -------
    MissingFit
        LML, padded rotated data :math:`U^T r`, the LML's standard error
        (zero on the exact path), Lanczos steps, and the gradient as
        (theta, rotated-space matrix, log-noise) parts.

    Notes
    -----
    One Kalman pass gives :math:`P y` and :math:`\log|A|` (and, on the
    exact path, :math:`P E_m`); the quadratic form is
    :math:`r^T P r = y^T P y - (P y)_m^T c`. The gradient is one stacked
    sensitivity pass over ``r`` (full LML gradient) and the trace-term
    columns (data term only): :math:`E_m L^{-T}` on the exact path, or the
    polarised probe pairs :math:`D^{-1/2}(N^{-1} z \pm z)` with weights
    :math:`\pm 1/(4k)` on the CG path.
    """
    op = system.op
    py, logdet_a = system.solve_data(y)
    r = system.observed_residual(y[:, :, None], py[:, :, None])
    # r^T P r = y^T P y - (P y)_m^T P_mm^{-1} (P y)_m = y^T P y + (P y)_m^T r_m
    pym, r_m = system.take(py[:, :, None]), system.take(r)
    quad = float(np.sum(y * py)) + float(np.sum(pym * r_m))
    r_rot = op.rotate(r)
    m, n_cells = system.n_missing, y.size
    std, steps = 0.0, 0
    cols = np.zeros((m, 0))
    coef = np.zeros(0)
    if not (need_lml or eval_gradient) and system.method != "exact":
        logdet = np.nan
    elif system.method == "exact":
        logdet = system.logdet_exact()
        if eval_gradient:
            cols, coef = system.inv_sqrt_columns(), np.ones(m)
    else:
        probes = rng.choice([-1.0, 1.0], size=(m, n_probes))
        est = system.schur.logdet_estimate(  # Jacobi-whitened SLQ
            probes, quad_tol=_budgets.SLQ_QUAD_TOL
        )
        logdet, std, steps = est.logdet, 0.5 * est.std_error, est.steps
        if eval_gradient:
            # 0.5 tr(P_mm^-1 X) ~ (1/k) sum_z 0.5 a^T X b, a = D^-1/2 N^-1 z,
            # b = D^-1/2 z, and a^T X b = (q(a + b) - q(a - b)) / 4
            a, b = est.left, est.right
            cols = np.concatenate([a + b, a - b], axis=1)
            f = 0.25 / n_probes
            coef = np.concatenate([np.full(n_probes, f), np.full(n_probes, -f)])
    lml_c = -0.5 * (quad + logdet_a + n_cells * _LOG_2PI)
    lml = lml_c - 0.5 * logdet + 0.5 * m * _LOG_2PI
    grad = None
    if eval_gradient:
        v_rot = np.concatenate([r_rot, op.rotate(system.pad(cols))], axis=2)
        weights = np.concatenate([[1.0], coef])
        full = np.concatenate([[1.0], np.zeros(coef.size)])
        grad = stacked_gradient(op, v_rot, weights, full)
    return MissingFit(lml, r_rot[:, :, 0], std, steps, grad)
