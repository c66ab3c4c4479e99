r"""Pure functions: exact GP inference on a grid with missing cells.

Let :math:`A = K + sI` on the *full* grid (inverted exactly through the factor
eigendecompositions), :math:`P = A^{-1}`, and let ``m`` index the missing
cells and ``o`` the observed ones. The Schur-complement identities

.. math::
    (A_{oo})^{-1} = P_{oo} - P_{om} P_{mm}^{-1} P_{mo}, \qquad
    \log|A_{oo}| = \log|A| + \log|P_{mm}|

reduce every observed-cell computation to complete-grid solves plus an
``m x m`` system :math:`P_{mm}`, which is well conditioned (its eigenvalues lie
in :math:`[1/(\lambda_{max} + s), 1/s]` and in practice cluster), so CG on it
converges in tens of iterations where CG on :math:`A_{oo}` needs hundreds.
The weights :math:`\alpha = P(\tilde y - E_m c)`, with :math:`\tilde y` the
zero-padded data and :math:`P_{mm} c = (P \tilde y)_m`, vanish on the missing
cells and equal :math:`A_{oo}^{-1} y_o` on the observed ones, so prediction
reuses the complete-grid formulas. The Schur complement itself (forming and
factoring :math:`P_{mm}`, CG, the log-determinant estimator) is the one of
:class:`~kronecker_gp.linalg._schur.MissingCellSchur`; this module supplies
the eigenbasis solve and keeps the results rotated.

On the CG path :math:`P_{mm}` is preconditioned by its block-Jacobi part
:math:`C = L L^T` (runs of missing cells along one grid axis, see
:mod:`~kronecker_gp.linalg._block_jacobi`), and beyond the exact path's size
bounds :math:`\log|P_{mm}| = \log|C| + \log|L^{-1} P_{mm} L^{-T}|` with the
second term estimated by stochastic Lanczos quadrature (run through CG, so
the memory is :math:`O(m k)` for ``k`` probes, see
:mod:`~kronecker_gp.linalg._krylov`). Its standard error is the probe spread
over :math:`\sqrt{k}`; it grows as :math:`\sqrt{m}` while the LML grows as
``N``. Measured with 32 probes (random 30 % missing, benchmark problem of
``benchmarks/bench_missing.py``): 1.0e-4 of the LML at 40 x 50, 5.5e-5 at
60 x 80; within the exact bounds (``m <= 3000``, ``m N <= 2^24``,
``m^2 N <= 2^31``) the CG path takes the log-determinant from a Cholesky
factor instead, exactly.

References
----------
.. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, sec. 5.3 (missing inputs).
.. [2] Ubaru, S., Chen, J. and Saad, Y. (2017). Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature. SIAM J. Matrix Anal. Appl. 38(4).
.. [3] Saad, Y. (2003). Iterative Methods for Sparse Linear Systems, 2nd ed.,
   SIAM, sec. 10.2 (block-Jacobi preconditioning).
"""

from __future__ import annotations

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg import face_split_matvec, kron_matvec
from kronecker_gp.linalg._block_jacobi import BlockJacobi
from kronecker_gp.linalg._eigenbasis import GridPosterior, TraceCorrection
from kronecker_gp.linalg._identities import face_split_rows
from kronecker_gp.linalg._schur import MissingCellSchur
from kronecker_gp.solvers._cost import choose_schur_method, eigen_solve_flops
from kronecker_gp.solvers._protocol import SolverInfo

_LOG_2PI = _budgets.LOG_2PI

#: Entries of the temporaries of one chunk (rows of U, columns of P E_m).
EXACT_MAX_ENTRIES = _budgets.CHUNK_ENTRIES
#: Predictive variances on the CG path are exact (one CG solve per test point)
#: while test points x (flops of one grid rotation) stays below this; above it
#: the missing-cell correction is sampled (one CG solve per sample).
EXACT_VARIANCE_WORK = 2**33
#: Columns per pass of P_mm products on the CG path (bounds grid temporaries).
MATVEC_COLUMNS = 8
#: Columns of P E_m per pass when forming P_mm exactly: wide enough for
#: BLAS-3 mode products, narrow enough that the (N, k) temporaries stay small.
SCHUR_COLUMNS = 64


class SchurSystem:
    r"""The observed-cell system of a grid GP through the missing-cell Schur complement.

    The eigen route's adapter on :class:`~kronecker_gp.linalg._schur.
    MissingCellSchur` (``self.schur``): it supplies the complete-grid solve
    :math:`P = U \operatorname{diag}(1 / (\lambda + s)) U^T` by mode products,
    the columns :math:`P E_m` with one rotation instead of two, the Jacobi
    diagonal and the block-Jacobi whitening, and keeps the rotated glue
    (``pad_rot``, ``take_missing``, ``observed_solve_rot``) of the eigenbasis.

    Parameters
    ----------
    post : GridPosterior
        Eigenpairs and noise of the complete grid (its weights are ignored).
    missing : ndarray of int
        Flat C-order indices of the missing cells (at least one).
    method : {"auto", "exact", "cg"}
        ``"exact"`` forms :math:`P_{mm}` column by column with mode products
        (``m`` complete-grid solves, :math:`O(m N \sum_d n_d)`) and factors it
        (:math:`O(m^3)`); ``"cg"`` solves by CG preconditioned with the
        block-Jacobi factor of :class:`~kronecker_gp.linalg._block_jacobi.
        BlockJacobi` (each iteration two complete-grid rotations); ``"auto"``
        asks the cost model (:func:`~kronecker_gp.solvers._cost.
        choose_schur_method`), which takes the exact path wherever it is
        affordable (``small``; the CG path then still takes
        :math:`\log|P_{mm}|` from a Cholesky factor, see
        :func:`missing_factorize`).
    tol : float
        Relative residual at which CG stops.
    max_iter : int
        CG iteration cap; non-convergence warns with the residual reached.
    block_axis : int or None, default=None
        Grid axis of the block-Jacobi factor (CG path); None chooses it with
        :func:`~kronecker_gp.linalg._block_jacobi.best_axis`.
    n_probes : int, default=32
        Probes of the estimators (read by the cost model).
    """

    def __init__(
        self,
        post: GridPosterior,
        missing: IntArray,
        *,
        method: str = "auto",
        tol: float = 1e-10,
        max_iter: int = 2000,
        block_axis: int | None = None,
        n_probes: int = 32,
    ) -> None:
        self.post = post
        self.missing = np.asarray(missing, dtype=np.intp)
        m, n = self.missing.size, int(np.prod(post.shape))
        solve = eigen_solve_flops(post.shape)
        #: the cost model's choice, and whether exact would be its own choice
        self.choice = choose_schur_method(method, m, n, solve, n_probes)
        self.small = self.choice.method == "exact" or (
            choose_schur_method("auto", m, n, solve, n_probes).method == "exact"
            and self.choice.exact_bytes <= _budgets.CG_EXACT_LOGDET_BYTES
        )
        self.method = self.choice.method
        self._block_axis = block_axis
        self.schur = MissingCellSchur(
            self._solve_full,
            self.missing,
            n,
            method=self.method,
            tol=tol,
            max_iter=max_iter,
            columns=self._columns,
            diagonal=self._diagonal,
            whitening=self._block,
            columns_per_pass=max(1, min(SCHUR_COLUMNS, EXACT_MAX_ENTRIES // n)),
            matvec_columns=MATVEC_COLUMNS,
            cheap_factor=self.small,
            solve_half=(self._half_solve, self._unrotate),
        )
        if method == "exact":
            self.schur.factor()

    # -- the eigen route's callbacks
    def _solve_full(self, x: FloatArray) -> FloatArray:
        """Return ``P x`` for grid vectors ``x`` (N, k): two rotations."""
        rot = kron_matvec([u.T for u in self.post.eigvecs], x)
        return kron_matvec(self.post.eigvecs, self.post.inv_lam[:, None] * rot)

    def _half_solve(self, x: FloatArray) -> FloatArray:
        """Return ``diag(1 / lambda) U^T x`` (N, k): the first half of ``P x``."""
        rot = kron_matvec([u.T for u in self.post.eigvecs], x)
        return np.asarray(self.post.inv_lam[:, None] * rot)

    def _unrotate(self, w: FloatArray) -> FloatArray:
        """Return ``U w`` (N, k): the second half of ``P x``."""
        return kron_matvec(self.post.eigvecs, w)

    def _columns(self, cells: IntArray) -> FloatArray:
        """Return ``P E_cells`` (N, k): one rotation, rows ``U[cells]`` face-split."""
        idx = np.unravel_index(cells, self.post.shape)
        rows = [u[i, :] for u, i in zip(self.post.eigvecs, idx)]  # U[cells, :]
        rot = self.post.inv_lam[:, None] * face_split_rows(rows).T
        return kron_matvec(self.post.eigvecs, rot)

    def _rotated_columns(self, sl: slice) -> FloatArray:
        """Return ``U^T P E_m`` for the missing cells ``sl``, shape (N, k)."""
        idx = np.unravel_index(self.missing[sl], self.post.shape)
        rows = [u[i, :] for u, i in zip(self.post.eigvecs, idx)]
        return self.post.inv_lam[:, None] * face_split_rows(rows).T

    def _block(self) -> BlockJacobi:
        return BlockJacobi(self.post, self.missing, axis=self._block_axis)

    def _diagonal(self) -> FloatArray:
        """Return ``diag(P_mm)``, by mode products or rows of the eigenbasis."""
        if self.n_missing > sum(self.post.shape):
            # the whole grid's diagonal by mode products, O(N sum n_d), is
            # cheaper than m rows of the face-splitting product, O(m N)
            squares = [u * u for u in self.post.eigvecs]
            return kron_matvec(squares, self.post.inv_lam)[self.missing]
        idx = np.unravel_index(self.missing, self.post.shape)
        width = sum(u.shape[1] for u in self.post.eigvecs)
        step = max(1, EXACT_MAX_ENTRIES // max(width, 1))
        diag = np.empty(self.n_missing)
        for lo in range(0, self.n_missing, step):
            sq = [u[i[lo : lo + step], :] ** 2 for u, i in zip(self.post.eigvecs, idx)]
            diag[lo : lo + step] = face_split_matvec(sq, self.post.inv_lam)
        return diag

    # -- state and delegation
    @property
    def n_missing(self) -> int:
        """Number of missing cells."""
        return int(self.missing.size)

    @property
    def tol(self) -> float:
        """CG tolerance of the ``P_mm`` solves (settable, e.g. looser inner solves)."""
        return self.schur.tol

    @tol.setter
    def tol(self, value: float) -> None:
        self.schur.tol = float(value)

    @property
    def iterations(self) -> int:
        """Most CG iterations of a ``P_mm`` solve so far."""
        return self.schur.iterations

    @property
    def residual(self) -> float:
        """Worst final relative CG residual so far."""
        return self.schur.residual

    @property
    def block(self) -> BlockJacobi | None:
        """The block-Jacobi whitening, once the estimators have built it."""
        return self.schur.whitening  # type: ignore[return-value]

    def ensure_block(self) -> BlockJacobi:
        """Build (once) the block-Jacobi factor that whitens ``P_mm`` (estimators)."""
        return self.schur.ensure_whitening()  # type: ignore[return-value]

    def pmm_matvec(self, v: FloatArray) -> FloatArray:
        """Return ``P_mm v`` for ``v`` of shape (m, k)."""
        return self.schur.pmm_matvec(v)

    def pmm_solve(self, b: FloatArray) -> FloatArray:
        """Return ``P_mm^{-1} b`` (see :meth:`MissingCellSchur.solve`)."""
        return self.schur.solve(b)

    def factor_pays(self, n_rhs: int) -> bool:
        """Whether ``n_rhs`` solves are cheaper through the Cholesky factor."""
        return self.schur.factor_pays(n_rhs)

    def pmm_solve_direct(self, b: FloatArray) -> FloatArray:
        """Return ``P_mm^{-1} b``, by the Cholesky factor where it pays, else CG."""
        return self.schur.solve_direct(b)

    def logdet_pmm_exact(self) -> float:
        """Return ``log|P_mm|`` from its Cholesky factor (formed if needed)."""
        return self.schur.logdet()

    # -- rotated glue
    def pad_rot(self, c: FloatArray) -> FloatArray:
        """Return ``U^T E_m c``: missing-cell values rotated into the eigenbasis."""
        return kron_matvec([u.T for u in self.post.eigvecs], self.schur.pad(c))

    def take_missing(self, x_rot: FloatArray) -> FloatArray:
        """Return ``(U x_rot)_m``: a rotated vector's values on the missing cells."""
        return kron_matvec(self.post.eigvecs, x_rot)[self.missing]

    def observed_solve_rot(self, b_rot: FloatArray) -> FloatArray:
        r"""Return ``U^T A_oo^{-1} b`` (zero-padded) from ``b_rot = U^T b``.

        ``b`` must vanish on the missing cells. Uses
        :math:`A_{oo}^{-1} b = P(b - E_m P_{mm}^{-1} (P b)_m)`.
        """
        inv = self.post.inv_lam[:, None]
        c = self.pmm_solve(self.take_missing(inv * b_rot))
        return np.asarray(inv * (b_rot - self.pad_rot(c)))

    def inverse_draws(self, n_samples: int, rng: np.random.Generator) -> FloatArray:
        r"""Return ``U^T P E_m zeta`` (N, k) for k draws ``zeta ~ N(0, P_mm^-1)``.

        :math:`\zeta_s = P_{mm}^{-1} \eta_s` with :math:`\eta_s = (P^{1/2}
        \xi_s)_m \sim N(0, P_{mm})`; one batched :math:`P_{mm}` solve. For
        a cross-covariance ``k``, :math:`E[((P k)_m^T \zeta)^2] = (P k)_m^T
        P_{mm}^{-1} (P k)_m`, the variance correction (Monte Carlo).
        """
        xi = rng.standard_normal((self.post.inv_lam.size, n_samples))
        eta = self.take_missing(np.sqrt(self.post.inv_lam)[:, None] * xi)
        zeta = self.pmm_solve(eta)
        return np.asarray(self.post.inv_lam[:, None] * self.pad_rot(zeta))

    def exact_correction(self) -> TraceCorrection:
        r"""Return the exact trace correction in the eigenbasis.

        With :math:`Q = U^T P E_m` and :math:`P_{mm} = L L^T`, the term
        :math:`Q P_{mm}^{-1} Q^T = Z Z^T` for :math:`Z = Q L^{-T}`: one
        ``(N, m)`` array, built in column chunks and solved in place.
        """
        z = np.empty((int(np.prod(self.post.shape)), self.n_missing))
        step = max(1, min(SCHUR_COLUMNS, EXACT_MAX_ENTRIES // z.shape[0]))
        for lo in range(0, self.n_missing, step):
            z[:, lo : lo + step] = self._rotated_columns(slice(lo, lo + step))
        z = self.schur.half_inv(z.T, overwrite=True).T
        return TraceCorrection(z, z, 1.0)


def missing_factorize(
    post: GridPosterior,
    y_pad: FloatArray,
    missing: IntArray,
    *,
    method: str,
    tol: float,
    max_iter: int,
    n_probes: int,
    rng: np.random.Generator,
    eval_gradient: bool,
    need_lml: bool = True,
    block_axis: int | None = None,
) -> tuple[GridPosterior, float, SchurSystem, TraceCorrection | None, SolverInfo]:
    r"""Exact posterior weights, LML and gradient correction given observed cells.

    Parameters
    ----------
    post : GridPosterior
        Complete-grid eigenpairs and noise (weights ignored).
    y_pad : ndarray of shape (N,)
        Targets with zeros on the missing cells.
    missing : ndarray of int
        Flat indices of the missing cells.
    method : {"auto", "exact", "cg"}
        See :class:`SchurSystem`. The exact path gives the exact LML and
        gradient. The CG path solves by CG; while forming :math:`P_{mm}` is
        cheap (the exact path's bounds, ``SchurSystem.small``) it still takes
        :math:`\log|P_{mm}|` and the gradient's trace term from the Cholesky
        factor (exact; ``info.extra["logdet"] == "exact"``), and above them it
        estimates :math:`\log|P_{mm}|` by stochastic Lanczos quadrature after
        a block-Jacobi whitening and the trace term by Hutchinson's estimator
        with the same ``n_probes`` Rademacher probes from ``rng``
        (``"slq"``; see :func:`_logdet_estimate`). The estimate is unbiased up
        to the quadrature error (each probe's Lanczos run stops once its
        quadrature moved by at most ``_budgets.SLQ_QUAD_TOL`` per unit probe
        norm, ``info.extra["quad_tol"]``: measured 3e-6 nats at 500 x 500,
        against a standard error of 1.6) with standard error
        ``info.lml_std_error``, the
        sample standard deviation of the per-probe terms over
        :math:`2\sqrt{n_{probes}}`; it falls as :math:`\sqrt{m / n_{probes}}`
        in absolute terms, while the LML grows as ``N``.
    tol, max_iter : float, int
        CG settings.
    n_probes : int
        Probe vectors of the estimators (CG path only).
    rng : numpy.random.Generator
        Source of the probes (seeded by the caller for determinism).
    eval_gradient : bool
        Whether to build the gradient's trace correction.
    need_lml : bool, default=True
        If False (and no gradient), skip the log-determinant on the CG path
        and return NaN for the LML: the posterior weights alone cost a few
        tens of CG iterations.
    block_axis : int or None, default=None
        Axis of the block-Jacobi factor on the CG path (see
        :class:`SchurSystem`); the one used is ``info.extra["block_axis"]``.

    Returns
    -------
    post : GridPosterior
        With ``alpha_rot = U^T alpha`` (``alpha`` zero on missing cells).
    lml : float
        Log marginal likelihood of the observed cells.
    system : SchurSystem
        For later solves (predictive variances).
    correction : TraceCorrection or None
        For :func:`~kronecker_gp.linalg._eigenbasis.lml_gradient`.
    info : SolverInfo
        Path, iterations, residual and the LML's standard error.
    """
    system = SchurSystem(
        post,
        missing,
        method=method,
        tol=tol,
        max_iter=max_iter,
        block_axis=block_axis,
        n_probes=n_probes,
    )
    rot = [u.T for u in post.eigvecs]
    y_rot = kron_matvec(rot, y_pad)
    alpha_rot = system.observed_solve_rot(y_rot[:, None])[:, 0]
    lam = 1.0 / post.inv_lam
    n_obs = y_pad.size - system.n_missing
    info = SolverInfo(path=f"schur-{system.method}", n_missing=system.n_missing)
    info.extra.update(system.choice.as_dict())
    correction = None
    if not (need_lml or eval_gradient) and system.method != "exact":
        logdet_pmm = np.nan
    elif system.method == "exact" or system.small:
        # exact log|P_mm| (and trace) while forming P_mm is cheap, also on "cg"
        logdet_pmm = system.logdet_pmm_exact()
        info.extra["logdet"] = "exact"
        if eval_gradient:
            correction = system.exact_correction()
    else:
        probes = rng.choice([-1.0, 1.0], size=(system.n_missing, n_probes))
        logdet_pmm, correction = _logdet_estimate(system, probes, info, eval_gradient)
    if system.block is not None:
        info.extra["block_axis"] = system.block.axis
    lml = -0.5 * float(y_rot @ alpha_rot)
    lml -= 0.5 * (float(np.sum(np.log(lam))) + logdet_pmm) + 0.5 * n_obs * _LOG_2PI
    info.iterations, info.residual = system.iterations, system.residual
    out = GridPosterior(post.eigvals, post.eigvecs, post.noise, post.inv_lam, alpha_rot)
    return out, lml, system, correction, info


def _logdet_estimate(
    system: SchurSystem, probes: FloatArray, info: SolverInfo, eval_gradient: bool
) -> tuple[float, TraceCorrection | None]:
    r"""Estimate :math:`\log|P_{mm}|` and the gradient trace with ``probes``.

    :meth:`~kronecker_gp.linalg._schur.MissingCellSchur.logdet_estimate`
    with the block-Jacobi whitening; the trace
    :math:`\operatorname{tr}(P_{mm}^{-1} X)` by Hutchinson with the same
    probes, its columns rotated into the eigenbasis. Records the standard
    error of the LML (half that of the log-determinant) and the Lanczos
    steps in ``info``.
    """
    system.ensure_block()
    est = system.schur.logdet_estimate(probes, quad_tol=_budgets.SLQ_QUAD_TOL)
    info.lml_std_error = 0.5 * est.std_error
    info.extra.update(
        logdet="slq", lanczos_steps=est.steps, quad_tol=_budgets.SLQ_QUAD_TOL
    )
    if not eval_gradient:
        return est.logdet, None
    # U^T P E_m of the trace columns, accumulated inside the Lanczos products
    assert est.left_half is not None and est.right_half is not None
    correction = TraceCorrection(est.left_half, est.right_half, 1.0 / probes.shape[1])
    return est.logdet, correction


def test_rows(v: list[FloatArray], grid: bool, sl: slice) -> FloatArray:
    """Explicit rows ``U^T k_i`` (chunk, N) for test points ``i`` in ``sl``."""
    if not grid:
        return face_split_rows([x[sl] for x in v])
    shape = tuple(x.shape[0] for x in v)
    idx = np.unravel_index(np.arange(sl.start, sl.stop), shape)
    return face_split_rows([x[i] for x, i in zip(v, idx)])


def n_test_points(v: list[FloatArray], grid: bool) -> int:
    return int(np.prod([x.shape[0] for x in v])) if grid else int(v[0].shape[0])


def variance_correction_exact(
    system: SchurSystem, v: list[FloatArray], *, grid: bool
) -> FloatArray:
    r"""Return :math:`g_i^T P_{mm}^{-1} g_i`, :math:`g_i = (P k_i)_m`, exactly.

    The observed-cell posterior variance is the complete-grid one plus this
    term, because the zero-padded :math:`A_{oo}^{-1}` equals
    :math:`P - P E_m P_{mm}^{-1} E_m^T P`.

    Parameters
    ----------
    system : SchurSystem
        The fitted missing-cell system.
    v : list of ndarray
        ``V_d = k_d(test_d, train_d) U_d``, rows per test point (``grid=False``,
        each (M, n_d)) or per test-grid axis (``grid=True``, each (m_d, n_d)).
    grid : bool
        Whether ``v`` describes a test grid.

    Returns
    -------
    ndarray of shape (M,)
        Non-negative corrections, in C order for a grid.
    """
    m_pts = n_test_points(v, grid)
    n = int(np.prod([x.shape[1] for x in v]))
    step = max(1, EXACT_MAX_ENTRIES // max(n, system.n_missing))
    out = np.empty(m_pts)
    inv = system.post.inv_lam
    for lo in range(0, m_pts, step):
        sl = slice(lo, min(m_pts, lo + step))
        g = system.take_missing(inv[:, None] * test_rows(v, grid, sl).T)
        out[sl] = np.sum(g * system.pmm_solve_direct(g), axis=0)
    return out


def variance_correction_mc(
    system: SchurSystem,
    v: list[FloatArray],
    *,
    grid: bool,
    n_samples: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    r"""Monte Carlo estimate of the missing-cell variance correction.

    Draws :math:`\zeta_s = P_{mm}^{-1} \eta_s` with
    :math:`\eta_s = (P^{1/2} \xi_s)_m \sim N(0, P_{mm})`, so that
    :math:`\zeta_s \sim N(0, P_{mm}^{-1})` and
    :math:`E[(g_i^T \zeta_s)^2] = g_i^T P_{mm}^{-1} g_i`. Each sample costs one
    CG solve (batched over samples) and one mode product over the test grid.
    The estimate is unbiased with relative standard error :math:`\sqrt{2/S}` for
    ``S = n_samples``; only this correction is estimated, the complete-grid part
    of the variance stays exact.

    Returns
    -------
    estimate : ndarray of shape (M,)
    std_error : ndarray of shape (M,)
        Per-point standard error of the estimate.
    """
    weights = system.inverse_draws(n_samples, rng)  # U^T P E_m zeta
    if grid:
        proj = kron_matvec(v, weights)
    else:
        proj = np.column_stack([face_split_matvec(v, w) for w in weights.T])
    sq = proj**2
    return sq.mean(axis=1), sq.std(axis=1, ddof=1) / np.sqrt(n_samples)


def covariance_correction(system: SchurSystem, v: list[FloatArray]) -> FloatArray:
    r"""Return :math:`G^T P_{mm}^{-1} G` with :math:`G = (P K_{x*})_m` (small M).

    The exact observed-cell posterior covariance at scattered points is the
    complete-grid one plus this term; cost :math:`O(M N m)`.
    """
    k_rot = face_split_rows(v).T  # (N, M): U^T k_i
    g = system.take_missing(system.post.inv_lam[:, None] * k_rot)
    return np.asarray(g.T @ system.pmm_solve(g))


def variance_correction(
    system: SchurSystem,
    v: list[FloatArray],
    *,
    grid: bool,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Exact correction on the exact path or while affordable, else Monte Carlo.

    On the CG path the exact correction costs one CG solve per test point; it
    is used while ``M N sum(n_d) <= 2^33`` (``M`` test points, ``N`` grid
    cells) or ``M <= n_samples``, and the
    unbiased Monte Carlo estimate of :func:`variance_correction_mc` (relative
    standard error :math:`\sqrt{2/S}` on the correction alone) above that.
    """
    n = int(np.prod(system.post.shape))
    rotation = n * sum(int(x.shape[1]) for x in v)  # flops of one grid rotation
    exact_cheap = n_test_points(v, grid) * rotation <= EXACT_VARIANCE_WORK
    if (
        system.factor_pays(n_test_points(v, grid))
        or exact_cheap
        or n_test_points(v, grid) <= n_samples
    ):
        return variance_correction_exact(system, v, grid=grid)
    return variance_correction_mc(system, v, grid=grid, n_samples=n_samples, rng=rng)[0]
