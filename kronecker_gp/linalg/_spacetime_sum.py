r"""Pure functions: a sum of separable space-time terms as one Kalman filter.

The covariance of a field on a ``sites x times`` grid is
:math:`\sum_r K^r_s \otimes K^r_t + \operatorname{diag}(\text{noise})` with
every time kernel Markov (:math:`k^r_t(t, t') = h_r \Phi_r(t, t') P_r h_r^T`,
state order :math:`d_r`). Each term is a linear-Gaussian state-space model
and their sum is one (Särkkä, Solin and Hartikainen 2013), whose state stacks
the terms' states. Term ``r`` has :math:`m_r` *state sites* with space
covariance :math:`S_r` and an observation map :math:`G_r` (``n_s x m_r``)
from them to the sites:

.. math::
    z^r_0 \sim N(0, S_r \otimes P_r), \quad
    z^r_k = (I \otimes A^r_k) z^r_{k-1} + q^r_k, \quad
    q^r_k \sim N(0, S_r \otimes Q^r_k),

    y_{k,i} = \textstyle\sum_r (G_r \otimes h_r)_{i\cdot}\, z^r_k
    + \varepsilon_{k,i}, \quad i \in O_k,

so :math:`\operatorname{cov}(f) = \sum_r G_r S_r G_r^T \otimes K^r_t`. A term
of full spatial rank takes :math:`G_r = I`, :math:`S_r = K^r_s`; a term that
is the same at every site (a regional effect, :math:`K^r_s = c\,\mathbf 1
\mathbf 1^T`) takes :math:`G_r = \mathbf 1`, :math:`S_r = [c]`: one state
site, so a regional effect plus a local field costs what the local field's
filter costs. A step with no observation is a pure prediction: any missing
pattern is exact, at :math:`O(n_t (m N^2 + m^2 N))` for :math:`N = \sum_r
m_r d_r` state dimensions and ``m`` observed sites per step.

The gradient comes from one reverse (adjoint) pass over the stored filter
(the identities of :mod:`kronecker_gp.linalg._spacetime`, Giles 2008),
here with a block-diagonal transition and one process-noise block per term;
the same pass gives the weights :math:`(K + \text{noise})^{-1} y` on the
observed cells.

References
----------
.. [1] Särkkä, S., Solin, A. and Hartikainen, J. (2013). Spatiotemporal
   learning via infinite-dimensional Bayesian filtering and smoothing. IEEE
   Signal Processing Magazine 30(4), 51-61.
.. [2] Giles, M. B. (2008). An extended collection of matrix derivative
   results for forward and reverse mode automatic differentiation. Oxford
   University Computing Laboratory report NA-08/01.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import LinAlgError
from scipy.linalg.lapack import dpotrf, dpotri, dtrtrs

from kronecker_gp import _budgets
from kronecker_gp._threads import blas_threads
from kronecker_gp._typing import FloatArray, IntArray

__all__ = [
    "SumFilterResult",
    "SumFilterSolve",
    "SumTerm",
    "sum_filter",
    "sum_filter_bytes",
    "sum_filter_cost",
]


@dataclass(frozen=True)
class SumTerm:
    """One separable term as a state-space model (see the module).

    Attributes
    ----------
    space : ndarray of shape (m_r, m_r)
        The state sites' space covariance ``S_r``.
    A, Q : ndarray of shape (n_t - 1, d, d)
        Transitions and process noises of the time state (``A[k - 1]`` maps
        step ``k - 1`` to ``k``).
    P_inf : ndarray of shape (d, d)
        Stationary covariance of the time state.
    h : ndarray of shape (d,)
        Measurement row of the time state.
    obs : ndarray of shape (n_s, m_r) or None
        ``G_r``; None is the identity (``m_r = n_s``).
    dspace : ndarray of shape (p_s, m_r, m_r) or None
        Derivatives of ``space`` (the gradient needs them).
    dA, dQ : ndarray of shape (n_t - 1, p_t, d, d) or None
        Derivatives of ``A`` and ``Q``.
    dP_inf : ndarray of shape (p_t, d, d) or None
        Derivatives of ``P_inf``.
    """

    space: FloatArray
    A: FloatArray
    Q: FloatArray
    P_inf: FloatArray
    h: FloatArray
    obs: FloatArray | None = None
    dspace: FloatArray | None = None
    dA: FloatArray | None = None
    dQ: FloatArray | None = None
    dP_inf: FloatArray | None = None

    @property
    def d(self) -> int:
        """The time state's order."""
        return int(self.h.size)

    @property
    def m(self) -> int:
        """The number of state sites."""
        return int(self.space.shape[0])


@dataclass
class SumFilterResult:
    r"""What :func:`sum_filter` returns.

    Attributes
    ----------
    lml : float
        Log marginal likelihood of the observed cells.
    grads : list of (ndarray, ndarray) or None
        Per term, the gradient w.r.t. its space parameters (``dspace``) and
        its time parameters (``dA``, ``dQ``, ``dP_inf``).
    noise_grad : float
        Gradient w.r.t. the log of a scale multiplying every noise variance.
    noise_cell_grad : ndarray of shape (n_s, n_t) or None
        With the gradient: w.r.t. each cell's log noise variance (zero on
        missing cells); ``noise_grad`` is its sum.
    weights : ndarray of shape (n_s, n_t) or None
        :math:`(K + \text{noise})^{-1} y` on the observed cells, zero elsewhere.
    solve : SumFilterSolve or None
        With ``weights``: :math:`(K + \text{noise})^{-1}` for other right-hand
        sides, from the stored gains.
    """

    lml: float
    grads: list[tuple[FloatArray, FloatArray]] | None = None
    noise_grad: float = 0.0
    noise_cell_grad: FloatArray | None = None
    weights: FloatArray | None = None
    solve: SumFilterSolve | None = None


@dataclass
class _Layout:
    """Where each term's state sits in the stacked state, and the maps on it."""

    terms: Sequence[SumTerm]
    n_s: int
    slices: list[slice] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Lay the terms' states end to end."""
        lo = 0
        for t in self.terms:
            self.slices.append(slice(lo, lo + t.m * t.d))
            lo += t.m * t.d

    @property
    def n(self) -> int:
        """The stacked state's dimension."""
        return self.slices[-1].stop

    def left(self, mats: Sequence[FloatArray], x: FloatArray) -> FloatArray:
        """Return ``blockdiag_r(I (x) mats[r]) x`` for ``x`` of shape (N, M)."""
        out = np.empty_like(x)
        for t, sl, a in zip(self.terms, self.slices, mats):
            out[sl] = (a @ x[sl].reshape(t.m, t.d, -1)).reshape(t.m * t.d, -1)
        return out

    def rows(self, x: FloatArray, sites: IntArray) -> FloatArray:
        """Return ``H_O x`` (``len(sites) x M``) for ``x`` of shape (N, M)."""
        out = np.zeros((sites.size, x.shape[1]))
        for t, sl in zip(self.terms, self.slices):
            hx = t.h @ x[sl].reshape(t.m, t.d, -1)  # (m_r, M)
            out += hx[sites] if t.obs is None else t.obs[sites] @ hx
        return out

    def scatter(self, x: FloatArray, sites: IntArray) -> FloatArray:
        """Return ``H_O^T x`` (``N x M``) for ``x`` of shape (len(sites), M)."""
        out = np.zeros((self.n, x.shape[1]))
        for t, sl in zip(self.terms, self.slices):
            block = out[sl].reshape(t.m, t.d, -1)
            g = x if t.obs is None else t.obs[sites].T @ x
            at = sites if t.obs is None else slice(None)
            block[at] += t.h[None, :, None] * g[:, None, :]
        return out

    def prior(self) -> FloatArray:
        """Return the first step's prior covariance ``blockdiag_r(S_r (x) P_r)``."""
        return self._blocks([t.P_inf for t in self.terms])

    def process(self, k: int) -> FloatArray:
        """Return step ``k``'s process noise (``k >= 1``), reused while it repeats."""
        mats = [t.Q[k - 1] for t in self.terms]
        key = b"".join(q.tobytes() for q in mats)
        if self.cache.get("key") != key:
            self.cache["key"], self.cache["noise"] = key, self._blocks(mats)
        out: FloatArray = self.cache["noise"]
        return out

    def _blocks(self, mats: Sequence[FloatArray]) -> FloatArray:
        out = np.zeros((self.n, self.n))
        for t, sl, q in zip(self.terms, self.slices, mats):
            block = t.space[:, None, :, None] * q[None, :, None, :]
            out[sl, sl] = block.reshape(t.m * t.d, t.m * t.d)
        return out

    def diag_blocks(self, x: FloatArray) -> list[FloatArray]:
        """Return each term's diagonal block of ``x`` as (m_r, d, m_r, d)."""
        return [
            x[sl, sl].reshape(t.m, t.d, t.m, t.d)
            for t, sl in zip(self.terms, self.slices)
        ]


@dataclass(frozen=True)
class _Step:
    """One observed step: sites, ``S^-1``, ``S^-1 v`` and the gain ``K^T``."""

    sites: IntArray
    s_inv: FloatArray
    w: FloatArray
    gain_t: FloatArray


def _cholesky(s: FloatArray, k: int) -> FloatArray:
    low, info = dpotrf(s, lower=1, clean=1)
    if info != 0:
        raise LinAlgError(
            f"innovation covariance at time step {k} is not positive definite; "
            "increase noise."
        )
    return np.asarray(low)


def _sym(x: FloatArray) -> FloatArray:
    return 0.5 * (x + x.T)


@dataclass
class _Forward:
    """The filter's records for the reverse pass."""

    lml: float = 0.0
    steps: list[_Step | None] = field(default_factory=list)
    means: list[FloatArray] = field(default_factory=list)  # filtered m_{k-1}
    a_cov: list[FloatArray] = field(default_factory=list)  # A_k P_{k-1}


def _forward(
    lay: _Layout, y: FloatArray, obs: FloatArray, noise: FloatArray, level: int
) -> _Forward:
    """Filter; ``level`` 0 keeps nothing, 1 the gains, 2 everything (gradient)."""
    rec = _Forward()
    m, p = np.zeros(lay.n), np.zeros((lay.n, lay.n))
    for k in range(y.shape[1]):
        if k == 0:
            m_pred, p_pred = np.zeros(lay.n), lay.prior()
        else:
            mats = [t.A[k - 1] for t in lay.terms]
            ap = lay.left(mats, p)
            m_pred = lay.left(mats, m[:, None])[:, 0]
            p_pred = _sym(lay.left(mats, ap.T) + lay.process(k))
            if level == 2:
                rec.means.append(m)
                rec.a_cov.append(ap)
        sites = np.flatnonzero(obs[:, k])
        if sites.size == 0:
            m, p = m_pred, p_pred
            rec.steps.append(None)
            continue
        hp = lay.rows(p_pred, sites)
        low = _cholesky(lay.rows(hp.T, sites) + np.diag(noise[sites, k]), k)
        v = y[sites, k] - lay.rows(m_pred[:, None], sites)[:, 0]
        u = dtrtrs(low, hp, lower=1)[0]
        z = dtrtrs(low, v, lower=1)[0]
        rec.lml += float(
            -0.5 * (z @ z + sites.size * _budgets.LOG_2PI) - np.log(np.diag(low)).sum()
        )
        m, p = m_pred + u.T @ z, _sym(p_pred - u.T @ u)
        step = None
        if level:
            w = dtrtrs(low, z, lower=1, trans=1)[0]
            gain_t = dtrtrs(low, u, lower=1, trans=1)[0]
            inv = dpotri(low, lower=1)[0]
            step = _Step(sites, np.tril(inv) + np.tril(inv, -1).T, w, gain_t)
        rec.steps.append(step)
    return rec


@dataclass(frozen=True)
class SumFilterSolve:
    r"""Solves with :math:`K_{oo} + \text{noise}` by the filter's stored gains.

    For right-hand sides ``b``, a forward pass of the means (the gains do not
    depend on the data) and a backward pass of their adjoints give
    :math:`(K_{oo} + \text{noise})^{-1} b_o`, as the weights of the data:
    :math:`O(n_t\, m N)` per column.
    """

    lay: _Layout
    steps: list[_Step | None]

    def __call__(self, b: FloatArray) -> FloatArray:
        """Return the solve of ``b`` (n_s, n_t, k): observed cells, zero elsewhere."""
        lay, n_t = self.lay, len(self.steps)
        with blas_threads(lay.n):
            m = np.zeros((lay.n, b.shape[2]))
            ws: list[FloatArray | None] = []
            for k, step in enumerate(self.steps):
                if k:
                    m = lay.left([t.A[k - 1] for t in lay.terms], m)
                if step is None:
                    ws.append(None)
                    continue
                v = b[step.sites, k] - lay.rows(m, step.sites)
                ws.append(step.s_inv @ v)
                m = m + step.gain_t.T @ v
            out = np.zeros_like(b)
            adj = np.zeros_like(m)
            for k in reversed(range(n_t)):
                step, w = self.steps[k], ws[k]
                if step is not None and w is not None:
                    out[step.sites, k] = w - step.gain_t @ adj
                    adj = adj + lay.scatter(out[step.sites, k], step.sites)
                if k:
                    adj = lay.left([t.A[k - 1].T for t in lay.terms], adj)
        return out


@dataclass
class _Adjoint:
    """Running adjoints of the filtered moments and of each term's arrays."""

    m: FloatArray
    p: FloatArray | None
    space: list[FloatArray]
    a: list[FloatArray]
    q: list[FloatArray]
    p_inf: list[FloatArray]
    noise: FloatArray | None = None  # per cell: d LML / d log noise


def _update_adjoint(
    lay: _Layout, step: _Step, k: int, noise: FloatArray, adj: _Adjoint
) -> FloatArray:
    """Carry the adjoints through an update; return the step's weights ``w - u``."""
    s, kt, w = step.sites, step.gain_t, step.w
    u = kt @ adj.m
    if adj.p is not None:
        b = kt @ adj.p
        e = b @ kt.T
        # M = (w w^T - S^-1) / 2 - (u w^T + w u^T) / 2;  R_bar = E + M
        mm = 0.5 * (w[:, None] * (w - u) - u[:, None] * w - step.s_inv)
        em = e + mm
        d = b - 0.5 * w[:, None] * adj.m - 0.5 * lay.scatter(em, s).T
        if adj.noise is not None:
            adj.noise[s, k] = np.diag(em) * noise
        t = lay.scatter(d, s)
        adj.p -= t + t.T
    adj.m = adj.m + lay.scatter((w - u)[:, None], s)[:, 0]
    return w - u


def _predict_adjoint(lay: _Layout, k: int, rec: _Forward, adj: _Adjoint) -> None:
    """Carry the adjoints through the prediction of step ``k`` (to ``k - 1``)."""
    if adj.p is not None:
        blocks = lay.diag_blocks(adj.p)
        for r, (t, blk) in enumerate(zip(lay.terms, blocks)):
            if k == 0:
                adj.space[r] += np.einsum("iajb,ab->ij", blk, t.P_inf)
                adj.p_inf[r] += np.einsum("iajb,ij->ab", blk, t.space)
                continue
            adj.space[r] += np.einsum("iajb,ab->ij", blk, t.Q[k - 1])
            adj.q[r][k - 1] = np.einsum("iajb,ij->ab", blk, t.space)
            sl, n = lay.slices[r], lay.n
            ap = rec.a_cov[k - 1][:, sl].reshape(n * t.m, t.d)
            adj.a[r][k - 1] = 2.0 * adj.p[:, sl].reshape(n * t.m, t.d).T @ ap
            prev = rec.means[k - 1][sl].reshape(t.m, t.d)
            adj.a[r][k - 1] += adj.m[sl].reshape(t.m, t.d).T @ prev
    if k == 0:
        return
    mats_t = [t.A[k - 1].T for t in lay.terms]
    adj.m = lay.left(mats_t, adj.m[:, None])[:, 0]
    if adj.p is not None:
        adj.p = lay.left(mats_t, lay.left(mats_t, adj.p).T)


def _term_grads(lay: _Layout, adj: _Adjoint) -> list[tuple[FloatArray, FloatArray]]:
    out = []
    for r, t in enumerate(lay.terms):
        if t.dspace is None or t.dA is None or t.dQ is None or t.dP_inf is None:
            raise ValueError(
                f"the gradient needs terms[{r}].dspace, dA, dQ and dP_inf (arrays "
                "with a zero-length parameter axis where there is no parameter)."
            )
        space = np.einsum("pij,ij->p", t.dspace, adj.space[r])
        time = np.einsum("kpab,kab->p", t.dA, adj.a[r])
        time += np.einsum("kpab,kab->p", t.dQ, adj.q[r])
        time += np.einsum("pab,ab->p", t.dP_inf, adj.p_inf[r])
        out.append((space, time))
    return out


def _check(
    y: FloatArray, terms: Sequence[SumTerm], noise: FloatArray | float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(
            f"Y must be 2-D (n_s, n_t) with NaN for missing; got {y.shape}."
        )
    if not terms:
        raise ValueError("terms must hold at least one SumTerm.")
    n_s, n_t = y.shape
    for r, t in enumerate(terms):
        m_r = n_s if t.obs is None else t.obs.shape[1]
        rows = n_s if t.obs is None else t.obs.shape[0]
        if t.space.shape != (m_r, m_r) or rows != n_s:
            raise ValueError(
                f"terms[{r}]: obs needs one row per site of Y ({n_s}) and space the "
                f"shape (m_r, m_r), m_r the columns of obs (n_s without obs); got "
                f"obs {None if t.obs is None else t.obs.shape} and space "
                f"{t.space.shape}."
            )
        if t.A.shape[0] != n_t - 1 or t.Q.shape[0] != n_t - 1:
            raise ValueError(
                f"terms[{r}]: A and Q need n_t - 1 = {n_t - 1} steps; got "
                f"{t.A.shape[0]} and {t.Q.shape[0]}."
            )
    obs = ~np.isnan(y)
    nz = np.broadcast_to(np.asarray(noise, dtype=np.float64), y.shape)
    if np.any(~(nz[obs] > 0)):
        raise ValueError("noise must be positive at every observed cell.")
    return np.where(obs, y, 0.0), obs, nz


def sum_filter(
    y: FloatArray,
    terms: Sequence[SumTerm],
    noise: FloatArray | float,
    *,
    eval_gradient: bool = False,
    weights: bool = False,
) -> SumFilterResult:
    r"""Return the exact LML of a sum of separable space-time terms (any missing cells).

    Parameters
    ----------
    y : ndarray of shape (n_s, n_t)
        Observations, NaN on missing cells; time steps in increasing time.
    terms : sequence of SumTerm
        The terms (see the module); with ``eval_gradient`` each needs its
        derivative arrays.
    noise : float or ndarray of shape (n_s, n_t)
        Noise variances (positive on observed cells).
    eval_gradient : bool, default=False
        Also return each term's gradient and the noise scale's.
    weights : bool, default=False
        Also return :math:`(K + \text{noise})^{-1} y` on the observed cells.

    Returns
    -------
    SumFilterResult

    Raises
    ------
    ValueError
        On shapes that do not fit, or non-positive noise at an observed cell.
    LinAlgError
        If an innovation covariance is not positive definite.

    Notes
    -----
    Per step the filter costs :math:`O(m N^2 + m^2 N + m^3)` (``m``
    observed sites, ``N`` state dimensions) and the reverse pass about twice
    that; memory :math:`O(n_t N^2)` with the gradient, :math:`O(n_t m N)`
    with weights only.

    Examples
    --------
    A regional effect (one state site) plus a local field, against dense algebra:

    >>> import numpy as np
    >>> t, s = np.arange(4.0), np.array([0.0, 1.0, 2.5])
    >>> ou = dict(A=np.full((3, 1, 1), np.exp(-1.0)), Q=np.full((3, 1, 1),
    ...           1 - np.exp(-2.0)), P_inf=np.eye(1), h=np.ones(1))
    >>> k_s = np.exp(-0.5 * (s[:, None] - s[None, :]) ** 2)
    >>> terms = [SumTerm(space=np.array([[0.5]]), obs=np.ones((3, 1)), **ou),
    ...          SumTerm(space=k_s, **ou)]
    >>> Y = np.array([[0.3, np.nan, -0.2, 0.5], [0.1, 0.4, np.nan, 0.0],
    ...               [np.nan, 0.2, 0.1, -0.3]])
    >>> lml = sum_filter(Y, terms, 0.1).lml
    >>> K_t = np.exp(-np.abs(t[:, None] - t[None, :]))
    >>> K = np.kron(np.full((3, 3), 0.5), K_t) + np.kron(k_s, K_t) + 0.1 * np.eye(12)
    >>> o = ~np.isnan(Y.ravel())
    >>> C, v = K[np.ix_(o, o)], Y.ravel()[o]
    >>> dense = -0.5 * (v @ np.linalg.solve(C, v) + np.linalg.slogdet(C)[1]
    ...                 + v.size * np.log(2 * np.pi))
    >>> bool(np.isclose(lml, dense))
    True
    """
    y, obs, nz = _check(y, terms, noise)
    lay = _Layout(terms, y.shape[0])
    level = 2 if eval_gradient else int(weights)
    with blas_threads(lay.n):
        rec = _forward(lay, y, obs, nz, level)
        if not level:
            return SumFilterResult(rec.lml)
        adj = _Adjoint(
            np.zeros(lay.n),
            np.zeros((lay.n, lay.n)) if eval_gradient else None,
            [np.zeros_like(t.space) for t in terms],
            [np.zeros_like(t.A) for t in terms],
            [np.zeros_like(t.Q) for t in terms],
            [np.zeros_like(t.P_inf) for t in terms],
            np.zeros(y.shape) if eval_gradient else None,
        )
        alpha = np.zeros(y.shape)
        for k in reversed(range(y.shape[1])):
            step = rec.steps[k]
            if step is not None:
                alpha[step.sites, k] = _update_adjoint(
                    lay, step, k, nz[step.sites, k], adj
                )
            _predict_adjoint(lay, k, rec, adj)
    out = SumFilterResult(rec.lml)
    if weights:
        out.weights, out.solve = alpha, SumFilterSolve(lay, rec.steps)
    if eval_gradient:
        assert adj.noise is not None
        out.grads, out.noise_cell_grad = _term_grads(lay, adj), adj.noise
        out.noise_grad = float(adj.noise.sum())
    return out


def sum_filter_cost(
    n_s: int, n_t: int, state: int, eval_gradient: bool = True
) -> float:
    """Return the estimated flops of :func:`sum_filter` (every site observed).

    Parameters
    ----------
    n_s, n_t : int
        Sites and time steps.
    state : int
        The stacked state's dimension ``N``.
    eval_gradient : bool, default=True
        With the reverse pass.

    Returns
    -------
    float

    Examples
    --------
    >>> sum_filter_cost(10, 100, 22) > sum_filter_cost(10, 100, 22, False)
    True
    """
    n, m = float(state), float(n_s)
    step = m**3 / 3 + 2 * m**2 * n + 2 * m * n**2 + 8 * n**2 + 2 * m * n**2
    if eval_gradient:
        step += m**3 + 2 * m**2 * n + 2 * m * n**2 + 4 * m * n**2 + 12 * n**2
    return float(n_t) * step


def sum_filter_bytes(n_s: int, n_t: int, state: int) -> float:
    """Return the bytes of the records :func:`sum_filter` keeps for a gradient."""
    n, m = float(state), float(n_s)
    return 8.0 * n_t * (n * n + m * n + m * m + 2 * n)
