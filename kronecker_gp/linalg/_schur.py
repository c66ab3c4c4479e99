r"""The Schur complement on missing cells, over any complete-grid solve.

Let :math:`A` be the covariance of the *complete* grid (``N`` cells) plus its
noise, :math:`P = A^{-1}`, and let ``m`` index the missing cells and ``o``
the observed ones. Block inversion of :math:`P` gives

.. math::
    (A_{oo})^{-1} = P_{oo} - P_{om} P_{mm}^{-1} P_{mo}, \qquad
    \log|A_{oo}| = \log|A| + \log|P_{mm}|,

so every observed-cell computation reduces to complete-grid solves
:math:`X \mapsto P X` (whatever structure makes them cheap: a Kronecker
eigenbasis, Kalman passes, two generalised eigenproblems, a graph spectrum)
plus the ``m x m`` system :math:`P_{mm} = E_m^T P E_m`. Zero-padded,
:math:`A_{oo}^{-1} b = P (b - E_m P_{mm}^{-1} (P b)_m)` for ``b`` vanishing on
the missing cells.

:class:`MissingCellSchur` is the one implementation, given the solve as a
callback. Two variants:

* **exact**: :math:`P_{mm}` is formed from the columns :math:`P E_m` (``m``
  complete-grid solves, batched; a route with cheaper columns passes them)
  and Cholesky-factored, :math:`O(m^3)`; the log-determinant and every solve
  are then exact;
* **cg**: :math:`P_{mm}` is applied matrix-free (one complete-grid solve per
  product) and solved by batched CG preconditioned with its Jacobi diagonal
  or a block-Jacobi whitening :math:`C = L L^T`; its log-determinant is
  estimated as :math:`\log|C| + \operatorname{tr} f(L^{-1} P_{mm} L^{-T})`
  by stochastic Lanczos quadrature (:func:`~kronecker_gp.linalg._krylov.
  lanczos_logdet_solve`), which also returns the solves that Hutchinson's
  estimator of the gradient's trace term needs.

:math:`P_{mm}` is well conditioned (its spectrum lies in
:math:`[1/\lambda_{max}(A), 1/\lambda_{min}(A)]` and clusters), so CG on it
takes tens of iterations where CG on :math:`A_{oo}` takes hundreds.

References
----------
.. [1] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, sec. 5.3 (missing inputs).
.. [2] Golub, G. H. and Van Loan, C. F. (2013). Matrix Computations, 4th ed.,
   sec. 3.2.11 (block inversion, Schur complements).
.. [3] Ubaru, S., Chen, J. and Saad, Y. (2017). Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature. SIAM J. Matrix Anal. Appl. 38(4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.linalg

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg._krylov import CGRecorder, lanczos_logdet_solve

#: ``X (N, k) -> P X``: the complete-grid inverse applied to grid vectors.
SolveFull = Callable[[FloatArray], FloatArray]


class Whitening(Protocol):
    """A factor :math:`C = L L^T` approximating :math:`P_{mm}` (preconditioner)."""

    logdet: float

    def half_inv(self, v: FloatArray) -> FloatArray:
        """Return ``L^{-1} v`` for ``v`` of shape (m, k)."""
        ...

    def half_inv_t(self, v: FloatArray) -> FloatArray:
        """Return ``L^{-T} v`` for ``v`` of shape (m, k)."""
        ...

    def solve(self, v: FloatArray) -> FloatArray:
        """Return ``C^{-1} v`` for ``v`` of shape (m, k)."""
        ...


class DiagonalWhitening:
    r"""The Jacobi whitening :math:`C = \operatorname{diag}(P_{mm})`.

    Parameters
    ----------
    diag : ndarray of shape (m,)
        Positive diagonal of :math:`P_{mm}`.

    Attributes
    ----------
    logdet : float
        :math:`\sum_i \log d_i`.
    """

    def __init__(self, diag: FloatArray) -> None:
        self.diag = np.asarray(diag, dtype=np.float64)
        self.scale = 1.0 / np.sqrt(self.diag)
        self.inv = 1.0 / self.diag
        self.logdet = float(np.sum(np.log(self.diag)))

    def half_inv(self, v: FloatArray) -> FloatArray:
        """Return ``D^{-1/2} v``."""
        return self.scale[:, None] * v

    def half_inv_t(self, v: FloatArray) -> FloatArray:
        """Return ``D^{-1/2} v`` (the factor is symmetric)."""
        return self.scale[:, None] * v

    def solve(self, v: FloatArray) -> FloatArray:
        """Return ``D^{-1} v``."""
        return self.inv[:, None] * v


@dataclass(frozen=True)
class LogdetEstimate:
    r"""Stochastic estimate of :math:`\log|P_{mm}|` and the gradient's trace columns.

    Attributes
    ----------
    logdet : float
        Estimate of :math:`\log|P_{mm}|`.
    std_error : float
        Its standard error (probe spread over :math:`\sqrt{k}`).
    steps : int
        Most Lanczos (CG) steps taken by a probe.
    left, right : ndarray of shape (m, k)
        :math:`L^{-T} N^{-1} z_j` and :math:`L^{-T} z_j` for the ``k`` probes
        :math:`z_j`, so that :math:`\operatorname{tr}(P_{mm}^{-1} X) \approx
        \frac1k \sum_j \mathrm{left}_j^T X\, \mathrm{right}_j` (Hutchinson,
        unbiased up to the CG tolerance) for any ``m x m`` matrix ``X``.
    left_half, right_half : ndarray of shape (n, k) or None
        ``H E_m left`` and ``H E_m right`` for the first half ``H`` of a
        split solve (``solve_half``), accumulated during the Lanczos runs at
        no extra solve; None without a split solve.
    """

    logdet: float
    std_error: float
    steps: int
    left: FloatArray
    right: FloatArray
    left_half: FloatArray | None = None
    right_half: FloatArray | None = None


class MissingCellSchur(CGRecorder):
    r"""The missing-cell Schur complement :math:`P_{mm}` of a complete-grid inverse.

    Parameters
    ----------
    solve_full : callable
        ``X (N, k) -> P X``, the complete-grid inverse on grid vectors (any
        fixed cell order, the one ``missing`` indexes).
    missing : array-like of int of shape (m,)
        Distinct flat indices of the missing cells, ``0 <= i < n_cells``.
    n_cells : int
        Number of grid cells ``N``.
    method : {"exact", "cg"}, default="exact"
        ``"exact"`` forms and factors :math:`P_{mm}` on first use; ``"cg"``
        solves by preconditioned CG (the factor is still formed where a
        caller asks for it: :meth:`logdet`, :meth:`solve_direct`).
    tol : float, default=1e-10
        Relative residual at which CG stops.
    max_iter : int, default=2000
        CG iteration cap; non-convergence warns with the residual reached.
    columns : callable or None, default=None
        ``cells (k,) -> P E_cells (N, k)``, a cheaper way to the columns of
        :math:`P` than ``solve_full`` on unit vectors (an eigenbasis route
        skips one rotation); None uses ``solve_full``.
    diagonal : callable or None, default=None
        ``() -> diag(P_mm)`` of shape (m,), the Jacobi preconditioner, called
        once when first needed; None takes it from the columns (``m``
        solves).
    whitening : callable or None, default=None
        ``() -> Whitening``, a block-Jacobi factor of :math:`P_{mm}` built
        once when the log-determinant estimator first needs it (it then also
        preconditions CG); None whitens with the Jacobi diagonal.
    columns_per_pass : int or None, default=None
        Columns of :math:`P E_m` formed per pass; None keeps each pass near
        ``_budgets.CHUNK_ENTRIES`` entries.
    matvec_columns : int or None, default=None
        Columns per complete-grid solve in :meth:`pmm_matvec`; None: all.
    cheap_factor : bool, default=False
        Whether forming :math:`P_{mm}` is within the caller's exact budget
        on the CG path too (then :meth:`factor_pays` is always true).
    solve_half : tuple of two callables or None, default=None
        ``(H, B)`` with ``solve_full(x) == B(H(x))`` (an eigenbasis route:
        ``H x = diag(1 / lambda) U^T x``, ``B w = U w``); the estimator then
        also returns ``H E_m`` of its trace columns, accumulated from the
        Lanczos products (:class:`LogdetEstimate`).

    Attributes
    ----------
    iterations : int
        Most CG iterations of a solve so far.
    residual : float
        Worst final relative CG residual so far.

    Raises
    ------
    ValueError
        On an unknown ``method``, no missing cells, repeated or out-of-range
        indices, or a non-positive ``n_cells``.
    TypeError
        If ``solve_full`` is not callable.

    Notes
    -----
    Forming :math:`P_{mm}` costs ``m`` complete-grid solves (mode products on
    an eigenbasis: :math:`O(m N \sum_d n_d)`) and :math:`O(m^2)` memory, its
    factor :math:`O(m^3)`; one CG iteration costs one solve per column.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> g = rng.standard_normal((6, 6))
    >>> a = g @ g.T + 6.0 * np.eye(6)
    >>> schur = MissingCellSchur(lambda x: np.linalg.solve(a, x), [1, 4], 6)
    >>> obs = np.array([0, 2, 3, 5])
    >>> want = np.linalg.slogdet(a[np.ix_(obs, obs)])[1]
    >>> bool(np.isclose(np.linalg.slogdet(a)[1] + schur.logdet(), want))
    True
    """

    def __init__(  # noqa: PLR0913 - the two variants' settings, all keyword
        self,
        solve_full: SolveFull,
        missing: IntArray | list[int],
        n_cells: int,
        *,
        method: str = "exact",
        tol: float = 1e-10,
        max_iter: int = 2000,
        columns: Callable[[IntArray], FloatArray] | None = None,
        diagonal: Callable[[], FloatArray] | None = None,
        whitening: Callable[[], Whitening] | None = None,
        columns_per_pass: int | None = None,
        matvec_columns: int | None = None,
        cheap_factor: bool = False,
        solve_half: tuple[SolveFull, SolveFull] | None = None,
    ) -> None:
        if not callable(solve_full):
            raise TypeError(
                f"solve_full must be a callable X -> P X; got {type(solve_full)}."
            )
        if method not in ("exact", "cg"):
            raise ValueError(f"method must be 'exact' or 'cg'; got {method!r}.")
        n_cells = int(n_cells)
        if n_cells <= 0:
            raise ValueError(f"n_cells must be positive; got {n_cells}.")
        self.missing = _check_missing(missing, n_cells)
        self.n_cells = n_cells
        self.solve_full = solve_full
        self.method = method
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.iterations, self.residual = 0, 0.0
        self.cheap_factor = bool(cheap_factor)
        self._columns_fn = columns
        self._diagonal_fn = diagonal
        self._whitening_fn = whitening
        self._per_pass = columns_per_pass
        self._matvec_columns = matvec_columns
        self._half = solve_half
        self._chol: tuple[FloatArray, bool] | None = None
        self._diag: FloatArray | None = None
        self.whitening: Whitening | None = None

    # ------------------------------------------------------------- layout
    @property
    def n_missing(self) -> int:
        """Number of missing cells ``m``."""
        return int(self.missing.size)

    @property
    def factored(self) -> bool:
        """Whether the Cholesky factor of :math:`P_{mm}` has been formed."""
        return self._chol is not None

    def pad(self, c: FloatArray) -> FloatArray:
        """Return ``E_m c`` (N, k): ``c`` (m, k) on the missing cells, else zero."""
        out = np.zeros((self.n_cells, c.shape[1]))
        out[self.missing] = c
        return out

    def take(self, x: FloatArray) -> FloatArray:
        """Return ``E_m^T x`` (m, k): the missing cells' rows of ``x`` (N, k)."""
        return x[self.missing]

    def pmm_matvec(self, c: FloatArray) -> FloatArray:
        """Return ``P_mm c`` for ``c`` of shape (m, k), one solve per column."""
        step = self._matvec_columns or max(1, c.shape[1])
        if c.shape[1] <= step:
            return self.take(self.solve_full(self.pad(c)))
        out = np.empty_like(c)
        for lo in range(0, c.shape[1], step):
            sl = slice(lo, lo + step)
            out[:, sl] = self.take(self.solve_full(self.pad(c[:, sl])))
        return out

    # ------------------------------------------------------- exact variant
    def _pass_width(self) -> int:
        if self._per_pass is not None:
            return max(1, int(self._per_pass))
        return max(1, _budgets.CHUNK_ENTRIES // self.n_cells)

    def _unit_columns(self, lo: int, hi: int) -> FloatArray:
        if self._columns_fn is not None:
            return self._columns_fn(self.missing[lo:hi])
        unit = np.zeros((self.n_missing, hi - lo))
        unit[np.arange(lo, hi), np.arange(hi - lo)] = 1.0
        return self.solve_full(self.pad(unit))

    def form_pmm(
        self, extra: FloatArray | None = None, solve: SolveFull | None = None
    ) -> tuple[FloatArray, FloatArray | None]:
        r"""Form :math:`P_{mm}` from the columns :math:`P E_m`, in passes.

        Parameters
        ----------
        extra : ndarray of shape (N, j) or None
            Further right-hand sides solved in the same passes (a route whose
            solve has a per-pass overhead, such as a Kalman time loop, pays
            it once); ignored by the ``columns`` shortcut, which solves them
            separately.
        solve : callable or None
            Solve used for these passes instead of ``solve_full`` (e.g. one
            that also records :math:`\log|A|`).

        Returns
        -------
        pmm : ndarray of shape (m, m)
            Symmetrised :math:`P_{mm}`.
        p_extra : ndarray of shape (N, j) or None
            :math:`P\,\mathrm{extra}`.
        """
        solve = self.solve_full if solve is None else solve
        m = self.n_missing
        pmm = np.empty((m, m))
        if self._columns_fn is not None:
            p_extra = None if extra is None else solve(extra)
            for lo in range(0, m, self._pass_width()):
                hi = min(m, lo + self._pass_width())
                pmm[:, lo:hi] = self.take(self._unit_columns(lo, hi))
            return 0.5 * (pmm + pmm.T), p_extra
        j = 0 if extra is None else extra.shape[1]
        p_extra = None if extra is None else np.empty_like(extra)
        for lo in range(0, j + m, self._pass_width()):
            hi = min(j + m, lo + self._pass_width())
            n_extra = max(0, min(hi, j) - lo)  # extra columns in this pass
            first, last = max(lo, j) - j, max(hi, j) - j  # unit columns here
            unit = np.zeros((m, last - first))
            unit[np.arange(first, last), np.arange(last - first)] = 1.0
            block = self.pad(unit)
            if n_extra:
                assert extra is not None and p_extra is not None
                block = np.concatenate([extra[:, lo : lo + n_extra], block], axis=1)
            x = solve(block)
            if p_extra is not None and n_extra:
                p_extra[:, lo : lo + n_extra] = x[:, :n_extra]
            pmm[:, first:last] = self.take(x[:, n_extra:])
        return 0.5 * (pmm + pmm.T), p_extra

    def factor(
        self, extra: FloatArray | None = None, solve: SolveFull | None = None
    ) -> FloatArray | None:
        """Form and Cholesky-factor :math:`P_{mm}` (once); see :meth:`form_pmm`.

        Returns ``P extra`` when ``extra`` is given (solved now even if the
        factor already exists), else None.

        Raises
        ------
        numpy.linalg.LinAlgError
            If :math:`P_{mm}` is not numerically positive definite.
        """
        if self._chol is not None:
            return None if extra is None else (solve or self.solve_full)(extra)
        pmm, p_extra = self.form_pmm(extra, solve)
        self.set_pmm(pmm)
        return p_extra

    def set_pmm(self, pmm: FloatArray) -> None:
        """Factor a :math:`P_{mm}` formed by the caller (symmetric, (m, m))."""
        try:
            self._chol = scipy.linalg.cho_factor(pmm, lower=True)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "the missing-cell Schur complement P_mm is not positive definite; "
                "increase the noise (or its lower bound)."
            ) from None

    def logdet(self) -> float:
        r"""Return :math:`\log|P_{mm}|` exactly (forms the factor if needed)."""
        self.factor()
        assert self._chol is not None
        return 2.0 * float(np.sum(np.log(np.diag(self._chol[0]))))

    def half_inv(self, v: FloatArray, *, overwrite: bool = False) -> FloatArray:
        """Return ``L^{-1} v`` for ``P_mm = L L^T`` and ``v`` of shape (m, k).

        ``overwrite=True`` lets the solve reuse ``v``'s memory (wide ``v``).
        """
        self.factor()
        assert self._chol is not None
        return np.asarray(
            scipy.linalg.solve_triangular(
                self._chol[0], v, lower=True, overwrite_b=overwrite, check_finite=False
            )
        )

    def inv_sqrt(self) -> FloatArray:
        """Return ``L^{-T}`` (m, m): its columns ``c_j`` give ``P_mm^{-1} = C C^T``."""
        return self.half_inv(np.eye(self.n_missing)).T

    # ---------------------------------------------------------- solving
    def diagonal(self) -> FloatArray:
        """Return ``diag(P_mm)`` (m,), computed once."""
        if self._diag is None:
            if self._diagonal_fn is not None:
                self._diag = np.asarray(self._diagonal_fn(), dtype=np.float64)
            else:
                m, step = self.n_missing, self._pass_width()
                diag = np.empty(m)
                for lo in range(0, m, step):
                    hi = min(m, lo + step)
                    cols = self.take(self._unit_columns(lo, hi))
                    diag[lo:hi] = cols[np.arange(lo, hi), np.arange(hi - lo)]
                self._diag = diag
        return self._diag

    def ensure_whitening(self) -> Whitening:
        """Build (once) the whitening of the log-determinant estimator."""
        if self.whitening is None:
            if self._whitening_fn is not None:
                self.whitening = self._whitening_fn()
            else:
                self.whitening = DiagonalWhitening(self.diagonal())
        return self.whitening

    def solve(self, b: FloatArray) -> FloatArray:
        """Return ``P_mm^{-1} b`` for ``b`` of shape (m, k).

        By the Cholesky factor on the exact variant or once it exists, else
        by CG preconditioned with the whitening (once built) or the Jacobi
        diagonal, recording ``iterations`` and ``residual``.
        """
        if self.method == "exact":
            self.factor()
        if self._chol is not None:
            return np.asarray(scipy.linalg.cho_solve(self._chol, b))
        precond: FloatArray | Callable[[FloatArray], FloatArray]
        if self.whitening is not None:
            precond = self.whitening.solve
        else:
            precond = 1.0 / self.diagonal()
        return self._run_cg(self.pmm_matvec, b, precond, "missing-cell")

    def factor_pays(self, n_rhs: int) -> bool:
        """Whether ``n_rhs`` solves are cheaper through the Cholesky factor.

        Forming :math:`P_{mm}` costs ``m`` complete-grid solves and ``8 m^2``
        bytes; CG about ``_budgets.CG_ITERATIONS`` solves per right-hand
        side, so many right-hand sides (variances over a grid) pay for it.
        """
        if self.method == "exact" or self.cheap_factor or self._chol is not None:
            return True
        fits = 8.0 * self.n_missing**2 <= _budgets.MEMORY_FRACTION * (
            _budgets.available_memory()
        )
        return fits and n_rhs * _budgets.CG_ITERATIONS > self.n_missing

    def solve_direct(self, b: FloatArray) -> FloatArray:
        """Return ``P_mm^{-1} b``, forming the factor first where it pays."""
        if self.factor_pays(b.shape[1]):
            self.factor()
        return self.solve(b)

    def observed_residual(
        self, b: FloatArray, pb: FloatArray | None = None
    ) -> FloatArray:
        r"""Return :math:`r = b - E_m P_{mm}^{-1} (P b)_m`: :math:`A_{oo}^{-1} b = P r`.

        ``b`` (N, k) must vanish on the missing cells; ``pb`` is :math:`P b`
        where the caller has it (else one complete-grid solve). ``r`` keeps
        ``b`` on the observed cells, so a route that applies :math:`K P`
        or :math:`P` in its own basis reuses it.
        """
        pb = self.solve_full(b) if pb is None else pb
        return b - self.pad(self.solve(self.take(pb)))

    def observed_solve(self, b: FloatArray) -> FloatArray:
        r"""Return :math:`A_{oo}^{-1} b_o`, zero-padded, for ``b`` of shape (N, k).

        Uses :math:`P (b - E_m P_{mm}^{-1} (P b)_m)` (two complete-grid
        solves and one :math:`P_{mm}` solve); ``b`` on the missing cells is
        ignored.
        """
        b = b.copy()
        b[self.missing] = 0.0
        return self.solve_full(self.observed_residual(b))

    def quad_forms(self, g: FloatArray) -> FloatArray:
        r"""Return :math:`g_j^T P_{mm}^{-1} g_j` for the columns of ``g`` (m, k).

        The observed-cell posterior variance at a point is its complete-grid
        variance plus this form with :math:`g = (P k_*)_m`.
        """
        return np.sum(g * self.solve_direct(g), axis=0)

    # ------------------------------------------------------- estimators
    def logdet_estimate(
        self, probes: FloatArray, *, quad_tol: float | None = None
    ) -> LogdetEstimate:
        r"""Estimate :math:`\log|P_{mm}|` by stochastic Lanczos quadrature.

        With the whitening :math:`C = L L^T` and :math:`N = L^{-1} P_{mm}
        L^{-T}`, :math:`\log|P_{mm}| = \log|C| + \operatorname{tr} f(N)`,
        :math:`f(x) = \log x - x + 1` (exact when ``N`` has unit diagonal
        blocks); the CG runs of the quadrature also solve :math:`N^{-1} z`,
        returned as the trace columns of :class:`LogdetEstimate`.

        Parameters
        ----------
        probes : ndarray of shape (m, k)
            Rademacher probes (seeded by the caller).
        quad_tol : float or None, default=None
            Stop a probe's Lanczos run once its quadrature has converged to
            this tolerance per unit probe norm (see
            :func:`~kronecker_gp.linalg._krylov.lanczos_logdet_solve`): the
            log-determinant then carries a quadrature error of order
            ``quad_tol * m``, far below its standard error for the values
            used (``_budgets.SLQ_QUAD_TOL``); None runs every probe to
            residual ``1e-6``.

        Returns
        -------
        LogdetEstimate
        """
        white = self.ensure_whitening()
        if self._half is None:

            def whitened(v: FloatArray) -> FloatArray:
                return white.half_inv(self.pmm_matvec(white.half_inv_t(v)))

            tr_f, std, solves, steps = lanczos_logdet_solve(
                whitened, probes, quad_tol=quad_tol
            )
            return LogdetEstimate(
                white.logdet + tr_f,
                std,
                steps,
                white.half_inv_t(solves),
                white.half_inv_t(probes),
            )
        return self._logdet_estimate_split(white, probes, quad_tol)

    def _logdet_estimate_split(
        self, white: Whitening, probes: FloatArray, quad_tol: float | None
    ) -> LogdetEstimate:
        """:meth:`logdet_estimate` keeping ``H E_m`` of each Lanczos direction.

        The solves are sums of the directions, ``x = sum_j a_j p_j``, so
        ``H E_m L^{-T} x`` is the same sum of the halves computed inside the
        products; the first product (``p_0 = z``) gives ``H E_m L^{-T} z``.
        """
        assert self._half is not None
        half, back = self._half
        state: dict[str, FloatArray] = {}
        left_half: FloatArray | None = None

        step = self._matvec_columns or probes.shape[1]

        def whitened(v: FloatArray) -> FloatArray:
            u = white.half_inv_t(v)
            chunks = [slice(lo, lo + step) for lo in range(0, u.shape[1], step)]
            h = np.concatenate([half(self.pad(u[:, sl])) for sl in chunks], axis=1)
            state["last"] = h
            state.setdefault("first", h)
            out = np.concatenate([self.take(back(h[:, sl])) for sl in chunks], axis=1)
            return white.half_inv(out)

        def on_step(active: IntArray, a: FloatArray) -> None:
            nonlocal left_half
            if left_half is None:
                left_half = np.zeros((state["last"].shape[0], probes.shape[1]))
            if active.size == left_half.shape[1]:  # every probe moved: in place
                left_half += state["last"] * a
            else:
                left_half[:, active] += state["last"] * a

        tr_f, std, solves, steps = lanczos_logdet_solve(
            whitened, probes, quad_tol=quad_tol, on_step=on_step
        )
        n_half = state["first"].shape[0] if state else self.n_cells
        right_half = np.zeros((n_half, probes.shape[1]))
        if state:
            # the first product ran on every probe with a non-zero residual
            moved = np.flatnonzero(np.any(probes != 0, axis=0))
            right_half[:, moved] = state["first"]
        return LogdetEstimate(
            white.logdet + tr_f,
            std,
            steps,
            white.half_inv_t(solves),
            white.half_inv_t(probes),
            np.zeros_like(right_half) if left_half is None else left_half,
            right_half,
        )


def _check_missing(missing: IntArray | list[int], n_cells: int) -> IntArray:
    idx = np.asarray(missing)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(
            "missing must be a non-empty 1-D array of flat cell indices; got shape "
            f"{idx.shape}. With no missing cells use the complete-grid solve."
        )
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"missing must hold integers; got dtype {idx.dtype}.")
    idx = idx.astype(np.intp)
    if idx.min() < 0 or idx.max() >= n_cells:
        raise ValueError(
            f"missing indices must lie in [0, {n_cells}); got range "
            f"[{idx.min()}, {idx.max()}]."
        )
    if np.unique(idx).size != idx.size:
        raise ValueError("missing holds repeated cell indices; pass each cell once.")
    return idx
