r"""Batched Kalman filter with sensitivity equations: LML and gradient (private).

The filter of :mod:`kronecker_gp.linalg.kalman._filter` (unit-model covariance,
mean divided by :math:`w_i`, time-major inputs) extended by the derivatives of
every recursion w.r.t. the time kernel's log-hyperparameters, the series
weight :math:`w_i` and :math:`\log s`. All of them are carried in one
"extended" axis of slots ``[base, theta..., w, log-noise]``, so each step is a
few GEMMs on ``(S * E, d)`` or ``(S * E, d * d)`` arrays.

References
----------
.. [1] Särkkä, S. (2013). Bayesian Filtering and Smoothing. Cambridge
   University Press, sec. 12.3 (sensitivity equations of the Kalman filter).
.. [2] Gupta, N. K. and Mehra, R. K. (1974). Computational aspects of maximum
   likelihood estimation and reduction in sensitivity function calculations.
   IEEE Transactions on Automatic Control 19(6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kronecker_gp import _budgets
from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg.kalman._filter import FilterStore, Tables, converged, new_store

_LOG_2PI = _budgets.LOG_2PI


@dataclass
class _Sens:
    """Running state of the sensitivity filter (extended slots on axis 1)."""

    z: FloatArray  # (S, E, d) mean and its sensitivities
    cov: FloatArray  # (S, E, d*d) covariance and its sensitivities
    g: FloatArray  # (S, E, d) P^- H^T and its sensitivities
    sx: FloatArray  # (S, E) [S_k, dS_k...]
    gx: FloatArray  # (S, E, d) [g / S, d(g / S)...]
    lml: FloatArray  # (S,) running sum of v^2 / S + log S
    grad: FloatArray  # (S, E - 1) running per-series gradient
    logdet_weight: FloatArray | float = 1.0  # per series; 0: quadratic form only


def filter_lml(
    tab: Tables,
    y: FloatArray,
    w: FloatArray,
    noise: float,
    *,
    store: bool,
    logdet_weight: FloatArray | float = 1.0,
) -> tuple[float, FloatArray, FilterStore | None]:
    r"""Run the filter (with sensitivities if ``tab`` has them) on ``S`` series.

    Parameters
    ----------
    tab : Tables
        Transition tables.
    y : ndarray of shape (n, S)
        The series, time-major.
    w : ndarray of shape (S,)
        Series weights.
    noise : float
        Noise variance.
    store : bool
        Keep :class:`FilterStore` for a backward pass.
    logdet_weight : float or ndarray of shape (S,), default=1.0
        Weight of the log-determinant in each series' gradient: 0
        differentiates only the data term :math:`-\tfrac12 \sum v^2 / S`
        (the quadratic form :math:`-\tfrac12 y^T (wK + sI)^{-1} y`), giving
        :math:`\tfrac12 a^T \partial(wK + sI) a`, :math:`a = (wK+sI)^{-1} y`.

    Returns
    -------
    lml : float
        :math:`\sum_{i,k} -\tfrac12 (v_{ik}^2 / S_{ik} + \log S_{ik} + \log 2\pi)`.
    grad : ndarray of shape (S, n_theta + 2)
        Per-series derivatives w.r.t. theta, ``w_i`` and ``log(noise)``
        (shape (S, 0) without sensitivity tables).
    store : FilterStore or None

    Notes
    -----
    Sensitivities are the derivatives of the recursions (product rule), with
    :math:`\partial S = w H \partial g + \partial w\, H g + \partial s` and
    :math:`\partial P = \partial P^- - \partial w\, g g^T / S - w(\partial g
    \bar g^T + \bar g \partial g^T) + w \bar g \bar g^T \partial S`,
    :math:`\bar g = g / S`. Once the covariances of a regular tail stop
    changing (relative ``STEADY_RTOL``) the gains are frozen and only the
    mean recursion runs. Cost :math:`O(S n p d^2 (d + p))` for ``p``
    hyperparameters.
    """
    n, n_s = y.shape
    d = tab.A.shape[1]
    ne = tab.n_theta + 3 if tab.has_grad else 1
    st = _Sens(
        np.zeros((n_s, ne, d)),
        np.zeros((n_s, ne, d * d)),
        np.zeros((n_s, ne, d)),
        np.zeros((n_s, ne)),
        np.zeros((n_s, ne, d)),
        np.zeros(n_s),
        np.zeros((n_s, ne - 1)),
    )
    fs = new_store(n, n_s, 1, d) if store else None
    st.logdet_weight = logdet_weight
    k0 = _lml_transient(tab, y, w, noise, st, fs=fs)
    if k0 < n:
        _lml_frozen(tab, y, w, st, fs=fs, k0=k0)
    lml = -0.5 * float(st.lml.sum()) - 0.5 * n_s * n * _LOG_2PI
    return lml, st.grad, fs


def _lml_transient(
    tab: Tables,
    y: FloatArray,
    w: FloatArray,
    noise: float,
    st: _Sens,
    *,
    fs: FilterStore | None,
) -> int:
    """Full filter steps until the gains freeze; return the first frozen step."""
    n_s, ne, d = st.z.shape
    nt, iw = tab.n_theta, (tab.n_theta + 1 if ne > 1 else None)
    hm = np.kron(np.eye(d), tab.h).T  # vec(P) @ hm = P h
    buf = _Buffers(n_s, ne)
    for k in range(y.shape[0]):
        i, j = tab.idx[k], k - buf.lo
        zp = (st.z.reshape(-1, d) @ tab.A[i].T).reshape(n_s, ne, d)
        cp = (st.cov.reshape(-1, d * d) @ tab.AAT[i]).reshape(n_s, ne, d * d)
        if nt:
            zp[:, 1 : nt + 1] += (st.z[:, 0] @ tab.dAT[i]).reshape(n_s, nt, d)
            cp[:, 1 : nt + 1] += (st.cov[:, 0] @ tab.MMT[i]).reshape(n_s, nt, d * d)
        cp += tab.Q[i]
        gs0 = _gains(st, cp @ hm, w, noise, h=tab.h, iw=iw)
        new = _cov_update(cp, st.g, gs0, st.sx, w, iw=iw)
        hz = zp @ tab.h
        v, dv = _innovation(y[k], w, hz, iw)
        st.z = zp + st.gx * v[:, None, None] + gs0[:, None, :] * dv[:, :, None]
        buf.v[j], buf.hz[j], buf.sx[j] = v, hz, st.sx
        if fs is not None:
            fs.g[k] = st.g[:, 0]
        done = k >= tab.steady_from and converged(new, st.cov)
        st.cov = new
        if done or j == buf.size - 1 or k == y.shape[0] - 1:
            _block_sums(st, buf, k + 1 - buf.lo, w, iw, fs=fs)
            buf.lo = k + 1
        if done:
            return k + 1
    return int(y.shape[0])


class _Buffers:
    """Per-step values of a block of steps, reduced in one go by _block_sums."""

    size = 512

    def __init__(self, n_s: int, ne: int, lo: int = 0) -> None:
        self.v = np.empty((self.size, n_s))
        self.hz = np.empty((self.size, n_s, ne))
        self.sx = np.empty((self.size, n_s, ne))
        self.lo = lo


def _block_sums(
    st: _Sens,
    buf: _Buffers,
    m: int,
    w: FloatArray,
    iw: int | None,
    *,
    fs: FilterStore | None,
) -> None:
    r"""Add ``m`` buffered steps to the LML and gradient sums (and the store).

    Per step, :math:`\ell = v^2 / S + \log S` and :math:`\partial \ell` with
    :math:`\partial v = -w H \partial\mu^- - \partial w\, H \mu^-`.
    """
    v, hz, sx = buf.v[:m], buf.hz[:m], buf.sx[:m]
    s0 = sx[:, :, 0]
    u = v / s0
    st.lml += np.einsum("ks,ks->s", u, v) + np.log(s0).sum(axis=0)
    if iw is not None:
        dv = -w[:, None] * hz[:, :, 1:]
        dv[:, :, iw - 1] -= hz[:, :, 0]
        du = 0.5 * (u * u - st.logdet_weight / s0)
        st.grad += np.einsum("kse,ks->se", sx[:, :, 1:], du)
        st.grad -= np.einsum("ks,kse->se", u, dv)
    if fs is not None:
        sl = slice(buf.lo, buf.lo + m)
        fs.v[sl, :, 0], fs.hmu[sl, :, 0], fs.s[sl] = v, hz[:, :, 0], s0


def _gains(
    st: _Sens,
    g: FloatArray,
    w: FloatArray,
    noise: float,
    *,
    h: FloatArray,
    iw: int | None,
) -> FloatArray:
    """Set ``g``, ``S`` and ``g / S`` with their sensitivities; return ``g_0 / S_0``."""
    st.g = g
    hg = g @ h
    st.sx = w[:, None] * hg
    st.sx[:, 0] += noise
    s0 = st.sx[:, :1]
    if iw is not None:
        st.sx[:, iw] += hg[:, 0]
        st.sx[:, iw + 1] += noise
    st.gx = g / s0[:, :, None]
    gs0 = st.gx[:, 0].copy()
    st.gx[:, 1:] -= gs0[:, None, :] * (st.sx[:, 1:, None] / s0[:, :, None])
    return gs0


def _innovation(
    yk: FloatArray, w: FloatArray, hz: FloatArray, iw: int | None
) -> tuple[FloatArray, FloatArray]:
    """Innovation ``v = y - w H mu^-`` and its sensitivities (slot 0 is zero)."""
    v = yk - w * hz[:, 0]
    dv = -w[:, None] * hz
    dv[:, 0] = 0.0
    if iw is not None:
        dv[:, iw] -= hz[:, 0]
    return v, dv


def _cov_update(
    cp: FloatArray,
    g: FloatArray,
    gs0: FloatArray,
    sx: FloatArray,
    w: FloatArray,
    *,
    iw: int | None,
) -> FloatArray:
    r"""Measurement update of the covariance and its sensitivities (vectorised).

    With :math:`r = g - \tfrac12 \partial S \bar g`, every slot is
    :math:`\partial P^- - w (r \bar g^T + \bar g r^T)` (slot 0 uses
    :math:`S` for :math:`\partial S`), and the ``w`` slot also loses
    :math:`g \bar g^T`.
    """
    n_s, ne, d = g.shape
    r = g - 0.5 * sx[:, :, None] * gs0[:, None, :]
    outer = r[:, :, :, None] * gs0[:, None, None, :]
    sym = (outer + outer.swapaxes(2, 3)).reshape(n_s, ne, d * d)
    new = cp - w[:, None, None] * sym
    if iw is not None:
        new[:, iw] -= (g[:, 0, :, None] * gs0[:, None, :]).reshape(n_s, d * d)
    return new


def _lml_frozen(
    tab: Tables,
    y: FloatArray,
    w: FloatArray,
    st: _Sens,
    *,
    fs: FilterStore | None,
    k0: int,
) -> None:
    """Mean-only steps with frozen gains on a regular tail (from step ``k0``)."""
    n_s, ne, d = st.z.shape
    nt, n = tab.n_theta, y.shape[0]
    iw = nt + 1 if ne > 1 else None
    i = tab.idx[k0]
    big = np.kron(np.eye(ne), tab.A[i].T)
    if nt:
        big[:d, d : (nt + 1) * d] = tab.dAT[i]
    hb = np.kron(np.eye(ne), tab.h[:, None])
    gx, gs0 = st.gx.reshape(n_s, -1), st.gx[:, 0]
    wm = -np.repeat(w[:, None], ne, axis=1)
    wm[:, 0] = 0.0
    z = st.z.reshape(n_s, -1)
    buf = _Buffers(n_s, ne, k0)
    buf.sx[:] = st.sx
    for lo in range(k0, n, buf.size):
        buf.lo, m = lo, min(n - lo, buf.size)
        for j in range(m):
            zp = z @ big
            hz = zp @ hb
            v = y[lo + j] - w * hz[:, 0]
            dv = hz * wm
            if iw is not None:
                dv[:, iw] -= hz[:, 0]
            z = (
                zp
                + gx * v[:, None]
                + (dv[:, :, None] * gs0[:, None, :]).reshape(n_s, -1)
            )
            buf.v[j], buf.hz[j] = v, hz
        _block_sums(st, buf, m, w, iw, fs=fs)
    st.z = z.reshape(n_s, ne, d)
    if fs is not None:
        fs.g[k0:] = st.g[:, 0]
