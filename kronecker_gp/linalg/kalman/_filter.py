r"""Batched Kalman filter, adjoint, smoother and sampling passes (private).

Every pass loops over time steps in Python and is vectorised across series
(and right-hand sides): each step is a handful of BLAS calls on arrays of
shape ``(S, ..., d)`` or ``(S, ..., d * d)``. Covariances are stored
row-major-vectorised, so that :math:`A P A^T` is one GEMM with
:math:`A \otimes A`. Per-step inputs and outputs are *time-major*
(``(n, S, ...)``), so each step reads and writes contiguous rows.

Series ``i`` is the 1-D GP :math:`y_i = f_i + \varepsilon`,
:math:`f_i \sim GP(0, w_i k)`, :math:`\varepsilon \sim N(0, sI)`. The state
covariance ``P`` is that of the *unit* model (prior :math:`P_\infty` of
:math:`k`, observed through :math:`\sqrt{w_i} H`), and the mean state ``mu``
is the w-model's mean divided by :math:`w_i`. Both stay finite for
:math:`w_i = 0`:

.. math::
    P^-_k = A_k P_{k-1} A_k^T + Q_k, \quad g_k = P^-_k H^T, \quad
    S_k = w H g_k + s, \quad v_k = y_k - w H \mu^-_k,

    \mu_k = \mu^-_k + g_k v_k / S_k, \quad P_k = P^-_k - w g_k g_k^T / S_k.

References
----------
.. [1] Särkkä, S. (2013). Bayesian Filtering and Smoothing. Cambridge
   University Press, ch. 4 and 8.
.. [2] Bierman, G. J. (1977). Factorization Methods for Discrete Sequential
   Estimation. Academic Press (the modified Bryson-Frazier smoother).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kronecker_gp._typing import BoolArray, FloatArray, IntArray
from kronecker_gp.linalg.kalman._model import StateSpaceModel, discretize

#: Relative change of every covariance slot below which a time-invariant
#: filter is treated as converged (its gains are then frozen).
STEADY_RTOL = 1e-15


@dataclass(frozen=True)
class Tables:
    """Per-unique-gap transition tables and the step -> table index.

    Attributes
    ----------
    A : ndarray of shape (G, d, d)
        Transitions; entry 0 is the prior step (``A = 0``, ``Q = Pinf``).
    AAT : ndarray of shape (G, d*d, d*d)
        ``kron(A, A).T``: ``vec(A P A^T) = vec(P) @ AAT``.
    Q : ndarray of shape (G, n_ext, d*d)
        Process noise and its derivatives (vectorised), zero-padded to the
        number of extended slots.
    dAT : ndarray of shape (G, d, n_theta * d)
        ``mu @ dAT`` gives every ``dA_p mu`` at once (empty without gradient).
    MMT : ndarray of shape (G, d*d, n_theta * d*d)
        ``vec(P) @ MMT`` gives every ``dA_p P A^T + A P dA_p^T`` at once.
    idx : ndarray of shape (n,)
        Table entry used at each step.
    h : ndarray of shape (d,)
        The measurement row ``H``.
    steady_from : int
        First step from which ``idx`` never changes (a regular tail).
    has_grad : bool
        Whether the sensitivity slots (theta, w, log-noise) are present.
    """

    A: FloatArray
    AAT: FloatArray
    Q: FloatArray
    dAT: FloatArray
    MMT: FloatArray
    idx: IntArray
    h: FloatArray
    steady_from: int
    has_grad: bool

    @property
    def n_theta(self) -> int:
        """Number of kernel log-hyperparameters with sensitivities."""
        return int(self.dAT.shape[2]) // int(self.A.shape[1])


def build_tables(
    a: FloatArray,
    q: FloatArray,
    idx: IntArray,
    h: FloatArray,
    grad: tuple[FloatArray, FloatArray] | None = None,
) -> Tables:
    """Assemble :class:`Tables` from discretised ``A``, ``Q`` (and derivatives).

    ``grad = (dA, dQ)`` with shapes ``(G, n_theta, d, d)`` adds the
    sensitivity tables; the extended slots are then ``[base, theta..., w,
    log-noise]``.
    """
    g, d = a.shape[0], a.shape[1]
    aat = np.einsum("gij,gkl->gjlik", a, a).reshape(g, d * d, d * d)
    change = np.flatnonzero(idx[1:] != idx[:-1])
    steady = int(change[-1]) + 2 if change.size else 1
    if grad is None:
        none = np.zeros((g, d, 0)), np.zeros((g, d * d, 0))
        return Tables(a, aat, q.reshape(g, 1, d * d), *none, idx, h, steady, False)
    da, dq = grad
    nt = da.shape[1]
    qx = np.zeros((g, nt + 3, d * d))
    qx[:, 0], qx[:, 1 : nt + 1] = q.reshape(g, d * d), dq.reshape(g, nt, d * d)
    dat = da.transpose(0, 3, 1, 2).reshape(g, d, nt * d)
    mm = np.einsum("gpij,gkl->gpikjl", da, a).reshape(g, nt, d * d, d * d)
    mm = mm + np.einsum("gij,gpkl->gpikjl", a, da).reshape(g, nt, d * d, d * d)
    mmt = mm.transpose(0, 3, 1, 2).reshape(g, d * d, nt * d * d)
    return Tables(a, aat, qx, dat, mmt, idx, h, steady, True)


#: Gaps closer than this many ulps of the largest |time| are one gap (they
#: differ only by the rounding of the time coordinates themselves).
GAP_ULPS = 8.0


def snap_gaps(times: FloatArray) -> tuple[FloatArray, IntArray]:
    """Return unique gaps (clustered within GAP_ULPS ulps) and each step's index."""
    gaps = np.diff(times)
    if gaps.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.intp)
    tol = GAP_ULPS * np.finfo(float).eps * float(np.max(np.abs(times)))
    order = np.argsort(gaps, kind="stable")
    sorted_gaps = gaps[order]
    new = np.concatenate([[True], np.diff(sorted_gaps) > tol])
    cluster = np.cumsum(new) - 1
    sums = np.bincount(cluster, weights=sorted_gaps)
    unique = sums / np.bincount(cluster)
    idx = np.empty(gaps.size, dtype=np.intp)
    idx[order] = cluster
    return unique, idx


def step_tables(model: StateSpaceModel, times: FloatArray, grad: bool) -> Tables:
    r"""Discretise ``model`` at the unique gaps of ``times`` (entry 0: the prior).

    Parameters
    ----------
    model : StateSpaceModel
        The continuous-time model.
    times : ndarray of shape (n,)
        Sorted times.
    grad : bool
        Include the sensitivity tables.

    Returns
    -------
    Tables
        Step ``k`` uses entry ``idx[k]``; step 0 is :math:`A = 0`,
        :math:`Q = P_\infty` (the stationary prior).
    """
    unique, idx = snap_gaps(times)
    steps = np.concatenate([[0], idx + 1]).astype(np.intp)
    out = discretize(model, unique, eval_gradient=grad)
    d = model.state_dim
    a = np.concatenate([np.zeros((1, d, d)), out[0]])
    q = np.concatenate([model.Pinf[None], out[1]])
    if not grad:
        return build_tables(a, q, steps, model.H[0])
    da = np.concatenate([np.zeros((1, model.n_theta, d, d)), out[2]])
    dq = np.concatenate([model.dPinf[None], out[3]])
    return build_tables(a, q, steps, model.H[0], (da, dq))


@dataclass
class FilterStore:
    """What the forward pass keeps for the backward passes (O(S n d) memory).

    Attributes
    ----------
    g : ndarray of shape (n, S, d)
        ``P^-_k H^T`` (unit model).
    s : ndarray of shape (n, S)
        Innovation variances ``S_k``.
    v : ndarray of shape (n, S, R)
        Innovations (zero at unobserved steps).
    hmu : ndarray of shape (n, S, R)
        ``H mu^-_k``.
    """

    g: FloatArray
    s: FloatArray
    v: FloatArray
    hmu: FloatArray


def new_store(n: int, n_s: int, n_r: int, d: int) -> FilterStore:
    return FilterStore(
        np.empty((n, n_s, d)),
        np.empty((n, n_s)),
        np.zeros((n, n_s, n_r)),
        np.empty((n, n_s, n_r)),
    )


def converged(new: FloatArray, old: FloatArray) -> bool:
    """Whether every extended covariance slot changed by at most STEADY_RTOL."""
    diff = np.abs(new - old).max(axis=(0, 2))
    return bool(np.all(diff <= STEADY_RTOL * np.abs(new).max(axis=(0, 2))))


@dataclass
class Filtered:
    r"""Forward-pass output of :func:`filter_store` (``None`` when not tracked).

    Attributes
    ----------
    store : FilterStore
        Gains, innovations and predicted means (O(S n d)).
    hdh : ndarray of shape (n, S) or None
        :math:`H D^-_k H^T`, :math:`D = (P_\infty - P) / w` (division-free).
    mu : ndarray of shape (n, S, R, d) or None
        Filtered means (for sampling).
    cov : ndarray of shape (n, S, d*d) or None
        Filtered covariances (for sampling).
    frozen_from : int
        First step from which the gains, innovation variances (and ``hdh``)
        are frozen (equal to that step's), every step observed and the
        transition the same; ``n`` when they never froze.
    """

    store: FilterStore
    hdh: FloatArray | None = None
    mu: FloatArray | None = None
    cov: FloatArray | None = None
    frozen_from: int = -1

    def __post_init__(self) -> None:
        if self.frozen_from < 0:
            self.frozen_from = int(self.store.s.shape[0])


def observed_from(obs: BoolArray | None, n: int) -> int:
    """Return the first step from which every step is observed (0 for None)."""
    if obs is None:
        return 0
    unobserved = np.flatnonzero(~np.asarray(obs, dtype=bool))
    return int(unobserved[-1]) + 1 if unobserved.size else 0


def filter_store(
    tab: Tables,
    y: FloatArray,
    w: FloatArray,
    noise: float,
    obs: BoolArray | None = None,
    *,
    track_d: bool = False,
    keep: bool = False,
) -> Filtered:
    r"""Run the filter on ``S`` series with ``R`` right-hand sides each.

    Parameters
    ----------
    tab : Tables
        Transition tables (without sensitivities).
    y : ndarray of shape (n, S, R)
        Observations, time-major (ignored at unobserved steps).
    w : ndarray of shape (S,)
        Series weights.
    noise : float
        Noise variance.
    obs : ndarray of bool of shape (n,) or None
        Observed steps (None: all); other steps only predict.
    track_d : bool, default=False
        Also run :math:`D^- = A D A^T`, :math:`D = D^- + g g^T / S`.
    keep : bool, default=False
        Keep the filtered means and covariances.

    Returns
    -------
    Filtered

    Notes
    -----
    On a tail where every step is observed with the same transition, the
    covariance recursions (and :math:`D`) do not depend on the data; once
    every slot changes by at most ``STEADY_RTOL`` relative in a step they
    are frozen (``Filtered.frozen_from``) and only the mean recursion runs.
    """
    n, n_s, n_r = y.shape
    d = tab.A.shape[1]
    mu, cov, dd = (
        np.zeros((n_s, n_r, d)),
        np.zeros((n_s, d * d)),
        np.zeros((n_s, d * d)),
    )
    hm, hh = np.kron(np.eye(d), tab.h).T, np.kron(tab.h, tab.h)
    fs = new_store(n, n_s, n_r, d)
    hdh = np.empty((n if track_d else 0, n_s))
    mus = np.empty((n if keep else 0, n_s, n_r, d))
    covs = np.empty((n if keep else 0, n_s, d * d))
    free_from = max(tab.steady_from, observed_from(obs, n)) if not keep else n
    frozen, frozen_from = False, n
    for k in range(n):
        i = tab.idx[k]
        mup = (mu.reshape(-1, d) @ tab.A[i].T).reshape(n_s, n_r, d)
        if not frozen:
            cp = cov @ tab.AAT[i] + tab.Q[i, 0]
            g = cp @ hm
            s0 = w * (g @ tab.h) + noise
            gs = g / s0[:, None]
            dd_old = dd
        if not frozen:  # frozen steps repeat the last ones (filled below)
            fs.g[k], fs.s[k] = g, s0
            if track_d:
                dd = dd @ tab.AAT[i]
                hdh[k] = dd @ hh
        hz = mup @ tab.h
        fs.hmu[k] = hz
        new = cp
        if obs is None or obs[k]:
            v = y[k] - w[:, None] * hz
            fs.v[k] = v
            mu = mup + gs[:, None, :] * v[:, :, None]
            if not frozen:
                new = cp - w[:, None] * (g[:, :, None] * gs[:, None, :]).reshape(
                    n_s, -1
                )
            if track_d and not frozen:
                dd = dd + (gs[:, :, None] * g[:, None, :]).reshape(n_s, -1)
        else:
            mu = mup
        if not frozen and k >= free_from:
            frozen = converged(new[:, None], cov[:, None]) and (
                not track_d or converged(dd[:, None], dd_old[:, None])
            )
            frozen_from = k if frozen else n
        cov = new
        if keep:
            mus[k], covs[k] = mu, cov
    if frozen:
        fs.g[frozen_from + 1 :], fs.s[frozen_from + 1 :] = g, s0
        if track_d:
            hdh[frozen_from + 1 :] = hdh[frozen_from]
    return Filtered(
        fs,
        hdh if track_d else None,
        mus if keep else None,
        covs if keep else None,
        frozen_from,
    )


def adjoint(
    tab: Tables, fs: FilterStore, w: FloatArray, obs: BoolArray | None = None
) -> tuple[FloatArray, FloatArray]:
    r"""Backward (adjoint) pass: return :math:`a = (wK + sI)^{-1} y` and :math:`K a`.

    Parameters
    ----------
    tab : Tables
        The tables of the forward pass.
    fs : FilterStore
        From the forward pass on ``y``.
    w : ndarray of shape (S,)
        Series weights.
    obs : ndarray of bool of shape (n,) or None
        Observed steps.

    Returns
    -------
    a : ndarray of shape (n, S, R)
        The solve (zero at unobserved steps).
    beta : ndarray of shape (n, S, R)
        :math:`k(t_k, t_{obs}) a`, i.e. the posterior mean divided by ``w``.

    Notes
    -----
    The filter factorises :math:`wK + sI = L D L^T` with innovations
    :math:`v = L^{-1} y`, so :math:`a = L^{-T} D^{-1} v`; the transposed
    recursion (modified Bryson-Frazier) is, backwards from
    :math:`\hat\lambda_n = 0`,

    .. math::
        a_k = v_k / S_k - w g_k^T \hat\lambda_k / S_k, \quad
        \tilde\lambda_k = \hat\lambda_k + H^T a_k, \quad
        \hat\lambda_{k-1} = A_k^T \tilde\lambda_k,

    and :math:`(K a)_k = H \mu^-_k + g_k^T \tilde\lambda_k`. No :math:`s`
    is subtracted, so tiny noise loses no accuracy. Cost :math:`O(S R n d^2)`.
    """
    n, n_s, n_r = fs.v.shape
    d = tab.A.shape[1]
    lam = np.zeros((n_s, n_r, d))
    a = np.zeros((n, n_s, n_r))
    gl_all = np.empty((n, n_s, n_r))
    u = fs.v / fs.s[:, :, None]
    ws = w / fs.s
    for k in range(n - 1, -1, -1):
        # einsum: 3x faster than a batched (S, R, d) @ (S, d, 1) matmul at
        # S = 2000, R = 1, d = 2 (11 vs 31 us; numpy 2, one core)
        gl = np.einsum("srd,sd->sr", lam, fs.g[k])
        gl_all[k] = gl
        if obs is None or obs[k]:
            ak = u[k] - ws[k, :, None] * gl
            a[k] = ak
            lam += ak[:, :, None] * tab.h
        lam = (lam.reshape(-1, d) @ tab.A[tab.idx[k]]).reshape(n_s, n_r, d)
    # K a = H mu^- + g^T lambda~, with g^T lambda~ = g^T lambda^ + a H g
    beta = fs.hmu + gl_all + a * (fs.g @ tab.h)[:, :, None]
    return a, beta


def smoother_moments(
    tab: Tables,
    filt: Filtered,
    w: FloatArray,
    obs: BoolArray | None = None,
    *,
    with_var: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    r"""Backward pass: posterior mean and variance terms at every step.

    Parameters
    ----------
    tab : Tables
        The tables of the forward pass.
    filt : Filtered
        From :func:`filter_store` with ``track_d=True``.
    w : ndarray of shape (S,)
        Series weights.
    obs : ndarray of bool of shape (n,) or None
        Observed steps.
    with_var : bool, default=True
        Also return ``var`` (else None).

    Returns
    -------
    beta : ndarray of shape (n, S, R)
        :math:`k(t_k, t_{obs}) (wK + sI)^{-1} y`.
    gamma : ndarray of shape (n, S)
        :math:`k(t_k, t_{obs}) (wK + sI)^{-1} k(t_{obs}, t_k)`.
    var : ndarray of shape (n, S)
        Posterior variance of :math:`f` (kernel :math:`w k`) at :math:`t_k`.

    Notes
    -----
    Modified Bryson-Frazier smoother (Bierman 1977) on the adjoint pair
    :math:`(\hat\lambda, \hat\Lambda)`, with no inverse of a state covariance:

    .. math::
        \tilde\Lambda_k = H^T H / S_k + (I - K_k H)^T \hat\Lambda_k
        (I - K_k H), \quad \hat\Lambda_{k-1} = A_k^T \tilde\Lambda_k A_k,

    :math:`K_k = w g_k / S_k`; the smoothed variance is :math:`w (H g_k - w
    g_k^T \tilde\Lambda_k g_k)` and :math:`\gamma_k = H D^-_k H^T + g_k^T
    \tilde\Lambda_k g_k`. :math:`\beta` comes from :func:`adjoint` (the
    same recursion of :math:`\hat\lambda`); the covariance recursion stops
    on the filter's frozen tail once it is steady. Cost :math:`O(S n d^2 +
    S n' d^3)`, :math:`n'` the steps before both recursions are steady.
    """
    fs, hdh = filt.store, filt.hdh
    if hdh is None:
        raise ValueError("smoother_moments needs filter_store(..., track_d=True).")
    # the mean part is the adjoint pass's K a; the covariance part needs no data
    beta = adjoint(tab, fs, w, obs)[1]
    glg = _backward_information(tab, filt, w, obs)
    var = w * ((fs.g @ tab.h) - w * glg) if with_var else None
    glg += hdh
    return beta, glg, var


def _backward_information(
    tab: Tables, filt: Filtered, w: FloatArray, obs: BoolArray | None
) -> FloatArray:
    r"""Return :math:`g_k^T \tilde\Lambda_k g_k` at every step (shape (n, S)).

    The backward recursion of :math:`\hat\Lambda` (no data enter it). On
    the filter's frozen tail (same gain, transition and observation at every
    step) it is time-invariant: once a step leaves it unchanged (relative
    ``STEADY_RTOL``), every earlier step of the tail repeats that step, and
    the recursion resumes before the tail.
    """
    fs = filt.store
    n, n_s, _ = fs.v.shape
    d, h = tab.A.shape[1], tab.h
    big = np.zeros((n_s, d, d))
    glg = np.empty((n, n_s))
    ws = w / fs.s
    k = n - 1
    while k >= 0:
        g, a = fs.g[k], tab.A[tab.idx[k]]
        if obs is None or obs[k]:
            tilde, glg[k] = _information_update(big, g, fs.s[k], ws[k], h)
        else:
            tilde = big
            glg[k] = np.einsum("si,si->s", g, np.einsum("sij,sj->si", big, g))
        # A^T B A for every series as two GEMMs (B symmetric), not S small matmuls
        half = (tilde.reshape(-1, d) @ a).reshape(n_s, d, d)
        new = (half.transpose(0, 2, 1).reshape(-1, d) @ a).reshape(n_s, d, d)
        steady = k - 1 >= filt.frozen_from and converged(
            new.reshape(n_s, 1, -1), big.reshape(n_s, 1, -1)
        )
        big = new
        if steady:  # steps k-1 .. frozen_from repeat step k
            glg[filt.frozen_from : k] = glg[k]
            k = filt.frozen_from
        k -= 1
    return glg


def _information_update(
    big: FloatArray, g: FloatArray, s: FloatArray, ws: FloatArray, h: FloatArray
) -> tuple[FloatArray, FloatArray]:
    r"""Return the information update and :math:`g^T \tilde\Lambda g`, every series.

    :math:`\tilde\Lambda = H^T H / S + (I - K H)^T \hat\Lambda (I - K H)`.
    With :math:`b = \hat\Lambda g` and :math:`K = (w / S) g`,
    :math:`\tilde\Lambda = \hat\Lambda + m h^T + h m^T`,
    :math:`m = \tfrac12 ((w/S)^2 g^T b + 1/S) h - (w/S) b`, so
    :math:`g^T \tilde\Lambda g = g^T b + 2 (m^T g)(h^T g)` (no triple product).
    """
    bg = np.einsum("sij,sj->si", big, g)
    gbg = np.einsum("si,si->s", g, bg)
    quad = ws * ws * gbg + 1.0 / s
    m = 0.5 * quad[:, None] * h - ws[:, None] * bg
    tilde = big + m[:, :, None] * h + h[:, None] * m[:, None, :]
    return tilde, gbg + 2.0 * np.einsum("si,si->s", m, g) * (g @ h)


def ffbs(
    tab: Tables,
    filt: Filtered,
    w: FloatArray,
    n_samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    r"""Forward-filtering backward-sampling of the latent :math:`f` at every step.

    Parameters
    ----------
    tab : Tables
        The tables of the forward pass.
    filt : Filtered
        From :func:`filter_store` with ``keep=True`` and one right-hand side.
    w : ndarray of shape (S,)
        Series weights.
    n_samples : int
        Samples per series.
    rng : numpy Generator
        Source of randomness.

    Returns
    -------
    ndarray of shape (n, S, n_samples)
        Joint posterior samples of :math:`f_i(t_k)`.

    Notes
    -----
    In the unit-state model (mean :math:`\sqrt{w} \mu_k`), backwards from
    :math:`x_n \sim N(m_n, P_n)`:

    .. math::
        x_k \mid x_{k+1} \sim N(m_k + G_k (x_{k+1} - A_{k+1} m_k),
        P_k - G_k P^-_{k+1} G_k^T), \quad G_k = P_k A_{k+1}^T (P^-_{k+1})^{-1},

    and :math:`f = \sqrt{w} H x`. :math:`P^-` is positive definite in the unit
    model (``A`` is invertible and ``s > 0``), so the batched solve is safe;
    the conditional covariance is square-rooted by a clipped eigendecomposition
    (it is singular for repeated times). Cost :math:`O(S n d^3 + S n
    n_{samples} d^2)`, memory :math:`O(S n d^2)` for the filtered covariances.
    """
    mus, covs = filt.mu, filt.cov
    if mus is None or covs is None:
        raise ValueError("ffbs needs filter_store(..., keep=True).")
    n, n_s, _, d = mus.shape
    root_w = np.sqrt(w)
    out = np.empty((n, n_s, n_samples))
    x = None
    for k in range(n - 1, -1, -1):
        m = root_w[:, None, None] * mus[k, :, 0, :, None]  # (S, d, 1)
        p = covs[k].reshape(n_s, d, d)
        if x is None:
            mean, cond = m, p
        else:
            a = tab.A[tab.idx[k + 1]]
            pred = a @ p @ a.T + tab.Q[tab.idx[k + 1], 0].reshape(d, d)
            gain = np.swapaxes(np.linalg.solve(pred, a @ p), 1, 2)
            mean = m + gain @ (x - a @ m)
            cond = p - gain @ (a @ p)
        x = mean + sqrt_psd(cond) @ rng.standard_normal((n_s, d, n_samples))
        out[k] = root_w[:, None] * (tab.h @ x)
    return out


def sqrt_psd(c: FloatArray) -> FloatArray:
    """Batched symmetric square root factor ``R R^T = c`` (negatives clipped)."""
    vals, vecs = np.linalg.eigh(0.5 * (c + np.swapaxes(c, 1, 2)))
    return vecs * np.sqrt(np.maximum(vals, 0.0))[:, None, :]
