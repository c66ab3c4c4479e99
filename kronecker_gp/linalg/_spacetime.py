r"""Spatio-temporal Kalman filtering: exact GP inference with any missing pattern.

The covariance of a field on a ``sites x times`` grid is
:math:`K_s \otimes K_t + \operatorname{diag}(\text{noise})`. When the time
kernel is Markov, :math:`k_t(t, t') = h\, \Phi(t, t')\, P_\infty h^T` for a
``d``-dimensional state with transitions :math:`A_k` and process noises
:math:`Q_k`, and the whole field is a linear-Gaussian state-space model whose
state stacks the ``n_s`` sites' time states (site-major, index ``i d + a``)
(Särkkä, Solin and Hartikainen 2013):

.. math::
    z_0 \sim N(0, K_s \otimes P_\infty), \qquad
    z_k = (I_{n_s} \otimes A_k) z_{k-1} + q_k, \quad
    q_k \sim N(0, K_s \otimes Q_k),

    y_{k,i} = h z_{k,i} + \varepsilon_{k,i}, \quad
    \varepsilon_{k,i} \sim N(0, \text{noise}_{k,i}),
    \quad i \in O_k,

where :math:`O_k` are the sites observed at step ``k``. A step with no
observation is a pure prediction, so any missing pattern (and per-cell noise)
is exact at :math:`O(n_t (n_s d)^3)`; products with :math:`I \otimes A_k`
cost :math:`O(n_s^2 d^3)`.

The functions take arrays only: the space Gram ``K_s`` (and its derivative
stack), and the time model's ``A``, ``Q``, ``P_inf``, ``h`` (and theirs), as
produced by a kernel-to-state-space conversion. ``A[k - 1]``, ``Q[k - 1]``
take the state from time ``k - 1`` to time ``k``; a 2-D ``A`` / ``Q`` is used
for every step (a regular time grid).

References
----------
.. [1] Särkkä, S., Solin, A. and Hartikainen, J. (2013). Spatiotemporal
   learning via infinite-dimensional Bayesian filtering and smoothing. IEEE
   Signal Processing Magazine 30(4), 51-61.
.. [2] Bierman, G. J. (1977). Factorization Methods for Discrete Sequential
   Estimation. Academic Press (the modified Bryson-Frazier smoother).
.. [3] Giles, M. B. (2008). An extended collection of matrix derivative
   results for forward and reverse mode automatic differentiation. Oxford
   University Computing Laboratory report NA-08/01.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, eigh
from scipy.linalg.lapack import dpotrf, dpotri, dtrtrs

from kronecker_gp import _budgets
from kronecker_gp._threads import blas_threads
from kronecker_gp._typing import ArrayLike, BoolArray, FloatArray, IntArray

_F = TypeVar("_F", bound=Callable[..., Any])


def _small_state_on_one_thread(fn: _F) -> _F:
    """Run ``fn`` on one BLAS thread when the filter's state is small.

    The state has ``n_s * d`` dimensions (``K_s`` is ``n_s x n_s``, ``P_inf``
    is ``d x d``); its thousands of small products stall on a busy machine
    when the BLAS is threaded (:mod:`kronecker_gp._threads`).
    """

    @functools.wraps(fn)
    def wrapper(Y: Any, K_s: Any, *args: Any, **kwargs: Any) -> Any:
        state = np.shape(K_s)[0] * np.shape(kwargs["P_inf"])[0]
        with blas_threads(int(state)):
            return fn(Y, K_s, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__ = [
    "spacetime_cost",
    "spacetime_krige",
    "spacetime_lml",
    "spacetime_memory",
    "spacetime_posterior",
    "spacetime_sample",
]

_LOG_2PI = _budgets.LOG_2PI


@dataclass(frozen=True)
class _Problem:
    """Validated inputs: data, noise, space Gram and the time model."""

    y: FloatArray
    obs: BoolArray
    noise: FloatArray
    K_s: FloatArray
    A: FloatArray
    Q: FloatArray
    P_inf: FloatArray
    h: FloatArray
    sites: list[IntArray]
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_s(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_t(self) -> int:
        return int(self.y.shape[1])

    @property
    def d(self) -> int:
        return int(self.h.size)


@dataclass(frozen=True)
class _Derivs:
    """Derivative stacks: space, time; the noise scale is implicit."""

    dK_s: FloatArray
    dA: FloatArray
    dQ: FloatArray
    dP_inf: FloatArray


@dataclass(frozen=True)
class _Step:
    """One observed step: sites, ``S^-1``, ``S^-1 v`` and the gain ``K^T``."""

    sites: IntArray
    S_inv: FloatArray
    w: FloatArray
    gain_t: FloatArray


_State = tuple[FloatArray, FloatArray]
_Record = tuple[FloatArray, FloatArray, "_Step | None"]


def _square(name: str, value: ArrayLike, lead: tuple[int, ...], n: int) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (*lead, n, n):
        raise ValueError(
            f"{name} must have shape {(*lead, n, n)}; got {arr.shape}. "
            "Check the state dimension and the number of steps (n_t - 1)."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; it has NaN or inf entries.")
    return arr


def _steps(name: str, value: ArrayLike, lead: tuple[int, ...], n_t: int) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == len(lead) + 2:
        arr = np.broadcast_to(arr, (max(n_t - 1, 0), *arr.shape))
    d = arr.shape[-1] if arr.ndim else 0
    return _square(name, arr, (max(n_t - 1, 0), *lead), d)


def _noise(noise: ArrayLike, shape: tuple[int, int], obs: BoolArray) -> FloatArray:
    arr = np.asarray(noise, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if arr.shape != shape:
        raise ValueError(
            f"noise must be a scalar or an array of shape {shape} (one variance "
            f"per cell); got shape {arr.shape}."
        )
    bad = ~(np.isfinite(arr) & (arr > 0)) & obs
    if bad.any():
        cell = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            "noise must be positive and finite at every observed cell; got "
            f"{arr[cell]} at cell {cell}. Increase noise there."
        )
    return arr


def _problem(
    Y: ArrayLike,
    K_s: ArrayLike,
    *,
    A: ArrayLike,
    Q: ArrayLike,
    P_inf: ArrayLike,
    H: ArrayLike,
    noise: ArrayLike,
) -> _Problem:
    y = np.asarray(Y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 1:
        raise ValueError(
            f"Y must be a 2-D array of shape (n_s, n_t) with NaN for missing "
            f"cells; got shape {y.shape}."
        )
    if np.isinf(y).any():
        raise ValueError("Y must not contain inf; mark missing cells with NaN.")
    obs = ~np.isnan(y)
    n_s, n_t = y.shape
    h = np.asarray(H, dtype=np.float64).reshape(-1)
    d = h.size
    return _Problem(
        y=np.where(obs, y, 0.0),
        obs=obs,
        noise=_noise(noise, (n_s, n_t), obs),
        K_s=_square("K_s", K_s, (), n_s),
        A=_steps("A", A, (), n_t).reshape(-1, d, d),
        Q=_steps("Q", Q, (), n_t).reshape(-1, d, d),
        P_inf=_square("P_inf", P_inf, (), d),
        h=h,
        sites=[np.flatnonzero(col) for col in obs.T],
    )


def _derivs(
    prob: _Problem,
    dK_s: ArrayLike | None,
    dA: ArrayLike | None,
    dQ: ArrayLike | None,
    dP_inf: ArrayLike | None,
) -> _Derivs:
    if dK_s is None or dA is None or dQ is None or dP_inf is None:
        raise ValueError(
            "eval_gradient=True needs dK_s, dA, dQ and dP_inf (use arrays with a "
            "zero-length parameter axis for a kernel without free parameters)."
        )
    dk = np.asarray(dK_s, dtype=np.float64)
    dp = np.asarray(dP_inf, dtype=np.float64)
    if dk.ndim != 3 or dp.ndim != 3:
        raise ValueError(
            f"dK_s must have shape (p_s, n_s, n_s) and dP_inf (p_t, d, d); got "
            f"{dk.shape} and {dp.shape}."
        )
    p_t, n_s, d, n_t = dp.shape[0], prob.n_s, prob.d, prob.n_t
    return _Derivs(
        dK_s=_square("dK_s", dk, (dk.shape[0],), n_s),
        dA=_steps("dA", dA, (p_t,), n_t).reshape(-1, p_t, d, d),
        dQ=_steps("dQ", dQ, (p_t,), n_t).reshape(-1, p_t, d, d),
        dP_inf=_square("dP_inf", dp, (p_t,), d),
    )


# --- structured products with I (x) A and H_O = (I (x) h)[O] ------------------


def _left(A: FloatArray, X: FloatArray, n_s: int) -> FloatArray:
    """``(I (x) A) X`` for ``X`` (..., N, M); ``A`` (..., d, d) may be batched."""
    d = A.shape[-1]
    if d == 1:
        return A[..., 0, 0, None, None] * X
    x4 = X.reshape(*X.shape[:-2], n_s, d, X.shape[-1])
    out = A[..., None, :, :] @ x4
    return out.reshape(*out.shape[:-3], n_s * d, X.shape[-1])


def _right(X: FloatArray, A: FloatArray, n_s: int) -> FloatArray:
    """``X (I (x) A)^T`` for ``X`` (..., M, N) and one ``A`` (d, d)."""
    d = A.shape[-1]
    if d == 1:
        return A[0, 0] * X
    return (X.reshape(*X.shape[:-1], n_s, d) @ A.T).reshape(X.shape)


def _kron(K: FloatArray, Q: FloatArray) -> FloatArray:
    """``K (x) Q`` for ``K`` (..., n, n), ``Q`` (..., d, d) (broadcast)."""
    out = K[..., :, None, :, None] * Q[..., None, :, None, :]
    n, d = K.shape[-1], Q.shape[-1]
    return out.reshape(*out.shape[:-4], n * d, n * d)


def _rows(X: FloatArray, h: FloatArray, sites: IntArray | slice) -> FloatArray:
    """``H_O X`` for ``X`` (..., N, M): (..., m, M)."""
    d = h.size
    x4 = X.reshape(*X.shape[:-2], X.shape[-2] // d, d, X.shape[-1])
    return h @ x4[..., sites, :, :]


def _cols(X: FloatArray, h: FloatArray, sites: IntArray | slice) -> FloatArray:
    """``X H_O^T`` for ``X`` (..., M, N): (..., M, m)."""
    d = h.size
    return X.reshape(*X.shape[:-1], X.shape[-1] // d, d)[..., sites, :] @ h


def _noise_kron(prob: _Problem, j: int) -> FloatArray:
    """``K_s (x) Q[j]``, reused while ``Q`` repeats (a regular time grid)."""
    key = prob.Q[j].tobytes()
    if prob.cache.get("key") != key:
        prob.cache["key"], prob.cache["kron"] = key, _kron(prob.K_s, prob.Q[j])
    kron: FloatArray = prob.cache["kron"]
    return kron


def _sym(P: FloatArray) -> FloatArray:
    return 0.5 * (P + np.swapaxes(P, -1, -2))


# --- the filter ----------------------------------------------------------------


def _predict(
    prob: _Problem, k: int, m: FloatArray, P: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Prior moments of step ``k`` from the filtered moments of step ``k - 1``."""
    if k == 0:
        return np.zeros(prob.n_s * prob.d), _kron(prob.K_s, prob.P_inf)
    A = prob.A[k - 1]
    P_pred = _right(_left(A, P, prob.n_s), A, prob.n_s)
    return _left(A, m[:, None], prob.n_s)[:, 0], _sym(P_pred + _noise_kron(prob, k - 1))


def _cholesky(S: FloatArray, k: int) -> FloatArray:
    """Lower Cholesky factor of the innovation covariance of step ``k``."""
    L, info = dpotrf(S, lower=1, clean=1)
    if info != 0:
        raise LinAlgError(
            f"innovation covariance at time step {k} is not positive definite; "
            "increase noise or add jitter to K_s."
        )
    return L


def _chol_inverse(L: FloatArray) -> FloatArray:
    """Return ``S^-1`` from the lower Cholesky factor of ``S``."""
    inv = dpotri(L, lower=1)[0]
    return np.tril(inv) + np.tril(inv, -1).T


def _update(
    prob: _Problem, k: int, m: FloatArray, P: FloatArray, *, keep: bool = False
) -> tuple[FloatArray, FloatArray, _Step | None, float]:
    """Condition step ``k`` on its observed sites; return the LML term too."""
    sites = prob.sites[k]
    if sites.size == 0:
        return m, P, None, 0.0
    HP = _rows(P, prob.h, sites)
    L = _cholesky(_cols(HP, prob.h, sites) + np.diag(prob.noise[sites, k]), k)
    v = prob.y[sites, k] - _rows(m[:, None], prob.h, sites)[:, 0]
    U = dtrtrs(L, HP, lower=1)[0]  # L^-1 H P, Fortran order (fast U^T U below)
    z = dtrtrs(L, v, lower=1)[0]
    lml = -0.5 * (z @ z + sites.size * _LOG_2PI) - np.log(np.diag(L)).sum()
    step = None
    if keep:  # w = S^-1 v, K^T = S^-1 H P
        w, Kt = dtrtrs(L, z, lower=1, trans=1)[0], dtrtrs(L, U, lower=1, trans=1)[0]
        step = _Step(sites, _chol_inverse(L), w, Kt)
    return m + U.T @ z, _sym(P - U.T @ U), step, float(lml)


def _filter(prob: _Problem) -> float:
    """Run the filter; return the LML."""
    m, P = np.zeros(0), np.zeros((0, 0))
    lml = 0.0
    for k in range(prob.n_t):
        m, P = _predict(prob, k, m, P)
        m, P, _, term = _update(prob, k, m, P)
        lml += term
    return lml


# --- gradient by an adjoint (reverse) pass ---------------------------------------

#: Bytes of filter records kept at once by the adjoint pass; a longer record is
#: split into segments re-filtered from checkpoints (one extra filter pass).
_RECORD_BYTES = 2**28


@dataclass
class _Adjoint:
    """Running adjoints of the filtered moments and of the model's arrays."""

    m: FloatArray
    P: FloatArray
    K_s: FloatArray
    A: FloatArray
    Q: FloatArray
    P_inf: FloatArray
    K_s_prior: FloatArray
    noise: float = 0.0
    P_acc: FloatArray | None = None
    run: tuple[bytes, int, FloatArray] | None = None

    def flush(self) -> None:
        """Turn the run's summed ``P`` into the ``K_s`` and ``Q`` adjoints."""
        if self.P_acc is not None and self.run is not None:
            _, j, Q = self.run
            n_s, d = self.K_s.shape[0], Q.shape[0]
            P_acc = _blocks(self.P_acc, n_s, d)
            self.K_s += np.einsum("iajb,ab->ij", P_acc, Q)
            self.Q[j] = np.tensordot(P_acc, self.K_s_prior, axes=([0, 2], [0, 1]))
        self.P_acc = self.run = None

    def collect(self, key: bytes, j: int, Q: FloatArray) -> None:
        """Add the current ``P`` to the run of steps sharing ``Q`` and ``dQ``.

        Within a run, ``sum_k <P_k, K_s (x) dQ_k> = <sum_k P_k, K_s (x) dQ>``, so
        the run's ``Q`` adjoint is stored at its first step ``j`` only.
        """
        if self.run is not None and self.run[0] == key:
            self.P_acc += self.P  # type: ignore[operator]
            self.run = (key, j, Q)
            return
        self.flush()
        self.P_acc, self.run = self.P.copy(), (key, j, Q)


def _record_bytes(n_s: int, d: int) -> int:
    """Return the bytes of one step's record: ``m, P``, ``K^T``, ``S^-1``, ``w``."""
    N = n_s * d
    return 8 * (N * N + N * n_s + n_s * n_s + 2 * N)


def _segment_length(n_s: int, n_t: int, d: int) -> int:
    """Return the steps per segment whose records fit ``_RECORD_BYTES``."""
    return int(min(n_t, max(1, _RECORD_BYTES // _record_bytes(n_s, d))))


def _segments(prob: _Problem) -> list[tuple[int, int]]:
    """Split the steps into segments whose filter records fit the byte budget."""
    seg = _segment_length(prob.n_s, prob.n_t, prob.d)
    return [(k0, min(k0 + seg, prob.n_t)) for k0 in range(0, prob.n_t, seg)]


def _records(
    prob: _Problem,
    bounds: tuple[int, int],
    state: tuple[FloatArray, FloatArray],
    keep: bool = True,
) -> tuple[list[tuple[FloatArray, FloatArray, _Step | None]], Any, float]:
    """Filter steps ``bounds`` from ``state``; with ``keep``, record each step."""
    (m, P), lml, kept = state, 0.0, []
    for k in range(*bounds):
        m_prev, P_prev = m, P
        m, P = _predict(prob, k, m, P)
        m, P, step, term = _update(prob, k, m, P, keep=keep)
        if keep:
            kept.append((m_prev, P_prev, step))
        lml += term
    return kept, (m, P), lml


def _sub_sym(X: FloatArray, D: FloatArray, h: FloatArray, sites: IntArray) -> None:
    """``X -= H^T D + D^T H`` in place for ``D`` (m, N)."""
    N = X.shape[0]
    T = np.zeros((N // h.size, h.size, N))
    T[sites] = h[None, :, None] * D[:, None, :]
    T = T.reshape(N, N)
    X -= T
    X -= T.T


def _update_adjoint(prob: _Problem, k: int, step: _Step, adj: _Adjoint) -> None:
    """Carry the adjoints through the update of step ``k`` (to its prior)."""
    h, s, Kt, w = prob.h, step.sites, step.gain_t, step.w
    u = Kt @ adj.m
    B = Kt @ adj.P
    E = B @ Kt.T
    # M = (w w^T - S^-1) / 2 - (u w^T + w u^T) / 2
    M = 0.5 * (w[:, None] * (w - u) - u[:, None] * w - step.S_inv)
    D = B - (0.5 * w)[:, None] * adj.m
    D.reshape(s.size, prob.n_s, prob.d)[:, s] -= 0.5 * (E + M)[:, :, None] * h
    adj.noise += float((np.diag(M) + np.diag(E)) @ prob.noise[s, k])
    adj.m.reshape(prob.n_s, prob.d)[s] += (w - u)[:, None] * h
    _sub_sym(adj.P, D, h, s)


def _blocks(X: FloatArray, n_s: int, d: int) -> FloatArray:
    """View an (N, N) state matrix as (n_s, d, n_s, d)."""
    return X.reshape(n_s, d, n_s, d)


def _predict_adjoint(
    prob: _Problem, der: _Derivs, k: int, prev: _State, adj: _Adjoint
) -> None:
    """Carry the adjoints through the prediction of step ``k`` (to ``k - 1``)."""
    n_s, d = prob.n_s, prob.d
    P_bar = _blocks(adj.P, n_s, d)
    if k == 0:
        adj.flush()
        adj.K_s += np.einsum("iajb,ab->ij", P_bar, prob.P_inf)
        adj.P_inf += np.einsum("iajb,ij->ab", P_bar, prob.K_s)
        return
    A, (m, P) = prob.A[k - 1], prev
    N = n_s * d
    # sum_i [P_bar A P]_ii = sum_{J,i} P_bar[J, (i, a)] (A P)[J, (i, b)]
    AP = _left(A, P, n_s).reshape(N * n_s, d)
    adj.A[k - 1] = 2.0 * (adj.P.reshape(N * n_s, d).T @ AP)
    adj.A[k - 1] += adj.m.reshape(n_s, d).T @ m.reshape(n_s, d)
    Q = prob.Q[k - 1]
    adj.collect(Q.tobytes() + der.dQ[k - 1].tobytes(), k - 1, Q)
    adj.m = _left(A.T, adj.m[:, None], n_s)[:, 0]
    adj.P = _right(_left(A.T, adj.P, n_s), A.T, n_s)


def _adjoint_grad(prob: _Problem, der: _Derivs, adj: _Adjoint) -> FloatArray:
    """Contract the model adjoints with the derivative stacks."""
    time = np.einsum("kpab,kab->p", der.dA, adj.A)
    time += np.einsum("kpab,kab->p", der.dQ, adj.Q)
    time += np.einsum("pab,ab->p", der.dP_inf, adj.P_inf)
    space = np.einsum("pij,ij->p", der.dK_s, adj.K_s)
    return np.concatenate([space, time, [adj.noise]])


def _reverse_records(prob: _Problem) -> tuple[float, Iterator[Any]]:
    """Filter forwards; return the LML and an iterator over the steps backwards.

    The iterator yields ``(k, prev, step, post)``: the filtered moments of step
    ``k - 1`` and of step ``k``, and step ``k``'s update. Only one segment of
    records is held at a time (see ``_RECORD_BYTES``).
    """
    bounds = _segments(prob)
    state: _State = (np.zeros(0), np.zeros((0, 0)))
    lml, starts = 0.0, []
    kept: list[_Record] = []
    for seg in bounds:  # record only the last segment; re-filter the others later
        starts.append(state)
        kept, state, term = _records(prob, seg, state, keep=seg == bounds[-1])
        lml += term
    starts.append(state)

    def backwards(kept: list[_Record]) -> Iterator[Any]:
        for i in reversed(range(len(bounds))):
            if i < len(bounds) - 1:
                kept = []  # release the later segment before re-filtering
                kept = _records(prob, bounds[i], starts[i])[0]
            post = starts[i + 1]
            for j in reversed(range(len(kept))):
                m_prev, P_prev, step = kept[j]
                yield bounds[i][0] + j, (m_prev, P_prev), step, post
                post = (m_prev, P_prev)

    return lml, backwards(kept)


def _filter_adjoint(prob: _Problem, der: _Derivs) -> tuple[float, FloatArray]:
    """Return the LML and its gradient by a forward filter and a reverse pass."""
    N, d, n_steps = prob.n_s * prob.d, prob.d, prob.A.shape[0]
    adj = _Adjoint(
        np.zeros(N),
        np.zeros((N, N)),
        np.zeros_like(prob.K_s),
        np.zeros((n_steps, d, d)),
        np.zeros((n_steps, d, d)),
        np.zeros((d, d)),
        prob.K_s,
    )
    lml, records = _reverse_records(prob)
    for k, prev, step, _ in records:
        if step is not None:
            _update_adjoint(prob, k, step, adj)
        _predict_adjoint(prob, der, k, prev, adj)
    return lml, _adjoint_grad(prob, der, adj)


@_small_state_on_one_thread
def spacetime_lml(
    Y: ArrayLike,
    K_s: ArrayLike,
    *,
    A: ArrayLike,
    Q: ArrayLike,
    P_inf: ArrayLike,
    H: ArrayLike,
    noise: ArrayLike,
    eval_gradient: bool = False,
    dK_s: ArrayLike | None = None,
    dA: ArrayLike | None = None,
    dQ: ArrayLike | None = None,
    dP_inf: ArrayLike | None = None,
) -> float | tuple[float, FloatArray]:
    r"""Return the exact log marginal likelihood of a sites x times grid.

    Parameters
    ----------
    Y : array-like of shape (n_s, n_t)
        Observations; NaN marks a missing cell (any pattern).
    K_s : array-like of shape (n_s, n_s)
        Space Gram matrix.
    A, Q : array-like of shape (n_t - 1, d, d) or (d, d)
        Transitions and process noises of the time kernel's state; ``A[k - 1]``
        maps time ``k - 1`` to ``k``. A 2-D array is used for every step.
    P_inf : array-like of shape (d, d)
        Stationary state covariance (the state covariance at the first time).
    H : array-like of shape (1, d) or (d,)
        Measurement row: ``k_t(t, t) = H P_inf H^T``.
    noise : float or array-like of shape (n_s, n_t)
        Noise variance, one value or one per cell (positive where observed).
    eval_gradient : bool, default=False
        Also return the gradient (needs the four derivative stacks).
    dK_s : array-like of shape (p_s, n_s, n_s), optional
        Derivatives of ``K_s`` w.r.t. the space kernel's log-parameters.
    dA, dQ : array-like of shape (n_t - 1, p_t, d, d) or (p_t, d, d), optional
        Derivatives of ``A``, ``Q`` w.r.t. the time kernel's log-parameters.
    dP_inf : array-like of shape (p_t, d, d), optional
        Derivatives of ``P_inf``.

    Returns
    -------
    lml : float
        :math:`\log p(y_{\text{observed}})`.
    grad : ndarray of shape (p_s + p_t + 1,)
        If ``eval_gradient``: w.r.t. the space parameters, the time parameters
        and the log of a scale multiplying every noise variance.

    Raises
    ------
    ValueError
        On shapes that do not match, non-finite inputs, non-positive noise at an
        observed cell, or missing derivative stacks.
    LinAlgError
        If an innovation covariance is not positive definite.

    Notes
    -----
    The filter predicts :math:`m_k^- = \mathcal A_k m_{k-1}`,
    :math:`P_k^- = \mathcal A_k P_{k-1} \mathcal A_k^T + K_s \otimes Q_k`
    (:math:`\mathcal A_k = I \otimes A_k`) and conditions on the observed sites
    :math:`O_k` (:math:`H_k = (I \otimes h)_{O_k}`):

    .. math::
        S_k = H_k P_k^- H_k^T + R_k, \quad v_k = y_{O_k} - H_k m_k^-, \quad
        K_k = P_k^- H_k^T S_k^{-1},

        m_k = m_k^- + K_k v_k, \quad P_k = P_k^- - K_k S_k K_k^T, \quad
        \log p(y) = -\tfrac12 \sum_k \bigl(v_k^T S_k^{-1} v_k + \log|2\pi S_k|\bigr).

    The gradient comes from one reverse (adjoint) pass over the stored
    filter, whatever the number of parameters. With adjoints :math:`\bar m_k,
    \bar P_k` of the filtered moments (zero after the last step), an observed
    step maps them to the adjoints of its prior moments and of its noise,

    .. math::
        \bar m_k^- = J_k^T \bar m_k + H_k^T w_k, \quad
        \bar P_k^- = J_k^T \bar P_k J_k + H_k^T M_k H_k
        + \tfrac12 (H_k^T w_k \bar m_k^T + \bar m_k w_k^T H_k),

        \bar R_k = K_k^T \bar P_k K_k + M_k, \quad
        M_k = \tfrac12 (w_k w_k^T - S_k^{-1}) - \tfrac12 (u_k w_k^T + w_k u_k^T),

    with :math:`J_k = I - K_k H_k`, :math:`w_k = S_k^{-1} v_k`,
    :math:`u_k = K_k^T \bar m_k`; a prediction gives :math:`\bar m_{k-1} =
    \mathcal A_k^T \bar m_k^-`, :math:`\bar P_{k-1} = \mathcal A_k^T \bar P_k^-
    \mathcal A_k` and the model adjoints :math:`\bar A_k = \sum_i [\bar m_k^-
    m_{k-1}^T + 2 \bar P_k^- \mathcal A_k P_{k-1}]_{ii}`, :math:`\bar Q_k =
    \sum_{ij} (K_s)_{ij} [\bar P_k^-]_{ij}`, :math:`(\bar K_s)_{ij} \mathrel{+}=
    \langle [\bar P_k^-]_{ij}, Q_k \rangle` (``[.]_{ij}`` the ``d x d`` block of
    sites ``i, j``). Each derivative is then one contraction, e.g.
    :math:`\partial_\theta \log p = \langle \bar K_s, \partial_\theta K_s
    \rangle` for a space parameter. Cost per step with :math:`N = n_s d` and
    :math:`m_k` observed sites: :math:`O(N^2 m_k + N m_k^2)` for the filter and
    about the same again for the reverse pass; memory :math:`O(N^2)` per stored
    step, at most ``2**28`` bytes of records (longer series are re-filtered
    from checkpoints: one more filter pass).

    Examples
    --------
    >>> import numpy as np
    >>> t, s = np.arange(4.0), np.array([0.0, 1.0])
    >>> K_s = np.exp(-0.5 * (s[:, None] - s[None, :]) ** 2)
    >>> K_t = np.exp(-np.abs(t[:, None] - t[None, :]))  # Matern-1/2, unit scale
    >>> Y = np.array([[0.3, np.nan, -0.2, 0.5], [0.1, 0.4, np.nan, 0.0]])
    >>> model = dict(A=[[np.exp(-1.0)]], Q=[[1 - np.exp(-2.0)]], P_inf=[[1.0]],
    ...              H=[1.0], noise=0.1)
    >>> lml = spacetime_lml(Y, K_s, **model)
    >>> obs = ~np.isnan(Y.ravel())
    >>> C = (np.kron(K_s, K_t) + 0.1 * np.eye(8))[np.ix_(obs, obs)]
    >>> y = Y.ravel()[obs]
    >>> dense = -0.5 * (y @ np.linalg.solve(C, y) + np.linalg.slogdet(C)[1]
    ...                 + y.size * np.log(2 * np.pi))
    >>> bool(np.isclose(lml, dense))
    True
    """
    prob = _problem(Y, K_s, A=A, Q=Q, P_inf=P_inf, H=H, noise=noise)
    if not eval_gradient:
        return _filter(prob)
    return _filter_adjoint(prob, _derivs(prob, dK_s, dA, dQ, dP_inf))


# --- smoothing (modified Bryson-Frazier) and kriging ---------------------------


def _mbf_update(
    prob: _Problem, step: _Step, lam: FloatArray, Lam: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Carry the adjoints through an update: filtered ``k`` to predicted ``k``."""
    h, s, Kt = prob.h, step.sites, step.gain_t
    lam.reshape(prob.n_s, prob.d)[s] -= (step.w + Kt @ lam)[:, None] * h
    D = Kt @ Lam
    E = D @ Kt.T + step.S_inv
    D.reshape(s.size, prob.n_s, prob.d)[:, s] -= 0.5 * E[:, :, None] * h
    _sub_sym(Lam, D, h, s)
    return lam, Lam


def _smooth(prob: _Problem, G: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Smoothed mean and variance of ``G f(t)`` at every step, ``G`` (n_g, n_s)."""
    N, h, n_s = prob.n_s * prob.d, prob.h, prob.n_s
    mean, var = np.empty((G.shape[0], prob.n_t)), np.empty((G.shape[0], prob.n_t))
    lam, Lam = np.zeros(N), np.zeros((N, N))
    for k, _, step, (m, P) in _reverse_records(prob)[1]:
        Phi = G @ _rows(P, h, slice(None))
        prior = np.einsum("gs,gs->g", _cols(Phi, h, slice(None)), G)
        mean[:, k] = G @ _rows(m[:, None], h, slice(None))[:, 0] - Phi @ lam
        var[:, k] = prior - np.einsum("gn,gn->g", Phi @ Lam, Phi)
        if step is not None:
            lam, Lam = _mbf_update(prob, step, lam, Lam)
        if k > 0:
            At = prob.A[k - 1].T
            lam = _left(At, lam[:, None], n_s)[:, 0]
            Lam = _right(_left(At, Lam, n_s), At, n_s)
    return mean, var


@_small_state_on_one_thread
def spacetime_posterior(
    Y: ArrayLike,
    K_s: ArrayLike,
    *,
    A: ArrayLike,
    Q: ArrayLike,
    P_inf: ArrayLike,
    H: ArrayLike,
    noise: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    r"""Return the posterior mean and variance of the latent field at every cell.

    Parameters
    ----------
    Y, K_s, A, Q, P_inf, H, noise
        As in :func:`spacetime_lml`. A time with no observation (an all-NaN
        column) is a pure prediction, so new times are predicted by merging
        them into the timeline (with ``A``, ``Q`` for the merged gaps).

    Returns
    -------
    mean, var : ndarray of shape (n_s, n_t)
        Posterior mean and variance of the noise-free field ``f``.

    Raises
    ------
    ValueError
        As :func:`spacetime_lml`.

    Notes
    -----
    A forward filter (see :func:`spacetime_lml`) keeps the filtered moments,
    then the modified Bryson-Frazier smoother (Bierman 1977) runs backwards,
    with no inverse of :math:`P_k^-`: from :math:`\hat\lambda_{n_t-1} = 0`,
    :math:`\hat\Lambda_{n_t-1} = 0`,

    .. math::
        m_k^s = m_k - P_k \hat\lambda_k, \quad
        P_k^s = P_k - P_k \hat\Lambda_k P_k,

        \lambda_k = -H_k^T S_k^{-1} v_k + J_k^T \hat\lambda_k, \quad
        \Lambda_k = H_k^T S_k^{-1} H_k + J_k^T \hat\Lambda_k J_k, \quad
        \hat\lambda_{k-1} = \mathcal A_k^T \lambda_k, \quad
        \hat\Lambda_{k-1} = \mathcal A_k^T \Lambda_k \mathcal A_k,

    with :math:`J_k = I - K_k H_k`. Cost :math:`O(n_t N^2 (n_s + m_k))`
    (:math:`N = n_s d`); the filter's records are kept one segment of at most
    ``2**28`` bytes at a time, earlier segments re-filtered from checkpoints.

    Examples
    --------
    >>> import numpy as np
    >>> t, s = np.arange(4.0), np.array([0.0, 1.0])
    >>> K_s = np.exp(-0.5 * (s[:, None] - s[None, :]) ** 2)
    >>> K_t = np.exp(-np.abs(t[:, None] - t[None, :]))
    >>> Y = np.array([[0.3, np.nan, -0.2, 0.5], [0.1, 0.4, np.nan, 0.0]])
    >>> model = dict(A=[[np.exp(-1.0)]], Q=[[1 - np.exp(-2.0)]], P_inf=[[1.0]],
    ...              H=[1.0], noise=0.1)
    >>> mean, var = spacetime_posterior(Y, K_s, **model)
    >>> obs = ~np.isnan(Y.ravel())
    >>> K = np.kron(K_s, K_t)
    >>> C = K[np.ix_(obs, obs)] + 0.1 * np.eye(obs.sum())
    >>> dense = K[:, obs] @ np.linalg.solve(C, Y.ravel()[obs])
    >>> bool(np.allclose(mean.ravel(), dense))
    True
    """
    prob = _problem(Y, K_s, A=A, Q=Q, P_inf=P_inf, H=H, noise=noise)
    return _smooth(prob, np.eye(prob.n_s))


@_small_state_on_one_thread
def spacetime_krige(
    Y: ArrayLike,
    K_s: ArrayLike,
    K_star_s: ArrayLike,
    k_star: ArrayLike,
    *,
    A: ArrayLike,
    Q: ArrayLike,
    P_inf: ArrayLike,
    H: ArrayLike,
    noise: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    r"""Return the posterior mean and variance of ``f`` at new sites, every time.

    Parameters
    ----------
    Y, K_s, A, Q, P_inf, H, noise
        As in :func:`spacetime_lml` (all-NaN columns predict new times).
    K_star_s : array-like of shape (n_star, n_s)
        Space kernel between the new sites and the training sites.
    k_star : array-like of shape (n_star,)
        Space kernel's prior variance at each new site.

    Returns
    -------
    mean, var : ndarray of shape (n_star, n_t)
        Posterior mean and variance of the noise-free field at the new sites.

    Raises
    ------
    ValueError
        If ``K_star_s`` or ``k_star`` have the wrong shape.
    LinAlgError
        If ``K_s`` is not positive definite.

    Notes
    -----
    The covariance is separable, so the new sites' time states are
    :math:`(W \otimes I) z(t)` plus a part independent of the training sites,
    :math:`W = K_{*s} K_s^{-1}`. With :math:`\Sigma_k` the smoothed covariance of
    ``f`` across training sites at time ``k`` (:func:`spacetime_posterior`):

    .. math::
        \mu_*(t_k) = W \mu(t_k), \qquad
        \sigma^2_*(t_k) = \operatorname{diag}(W \Sigma_k W^T)
        + \bigl(k_{**} - \operatorname{diag}(W K_{s*})\bigr) h P_\infty h^T.

    Cost: the smoother's plus :math:`O(n_t n_* N^2)`.

    Examples
    --------
    >>> import numpy as np
    >>> t, s, s_new = np.arange(4.0), np.array([0.0, 1.0]), np.array([0.4])
    >>> def k_s(a, b):
    ...     return np.exp(-0.5 * (a[:, None] - b[None, :]) ** 2)
    >>> K_t = np.exp(-np.abs(t[:, None] - t[None, :]))
    >>> Y = np.array([[0.3, np.nan, -0.2, 0.5], [0.1, 0.4, np.nan, 0.0]])
    >>> model = dict(A=[[np.exp(-1.0)]], Q=[[1 - np.exp(-2.0)]], P_inf=[[1.0]],
    ...              H=[1.0], noise=0.1)
    >>> mean, var = spacetime_krige(Y, k_s(s, s), k_s(s_new, s), [1.0], **model)
    >>> obs = ~np.isnan(Y.ravel())
    >>> C = np.kron(k_s(s, s), K_t)[np.ix_(obs, obs)] + 0.1 * np.eye(obs.sum())
    >>> cross = np.kron(k_s(s_new, s), K_t)[:, obs]
    >>> bool(np.allclose(mean.ravel(), cross @ np.linalg.solve(C, Y.ravel()[obs])))
    True
    """
    prob = _problem(Y, K_s, A=A, Q=Q, P_inf=P_inf, H=H, noise=noise)
    cross = np.asarray(K_star_s, dtype=np.float64)
    if cross.ndim != 2 or cross.shape[1] != prob.n_s:
        raise ValueError(
            f"K_star_s must have shape (n_star, {prob.n_s}); got {cross.shape}."
        )
    prior = np.asarray(k_star, dtype=np.float64).reshape(-1)
    if prior.shape != (cross.shape[0],):
        raise ValueError(
            f"k_star must have shape ({cross.shape[0]},) (one prior variance per "
            f"new site); got {np.shape(k_star)}."
        )
    try:
        W = cho_solve(cho_factor(prob.K_s, lower=True), cross.T).T
    except LinAlgError as exc:
        raise LinAlgError(
            "K_s is not positive definite, so the new sites' weights K_star_s "
            "K_s^-1 are undefined; add jitter to K_s or drop repeated sites."
        ) from exc
    mean, var = _smooth(prob, W)
    resid = np.maximum(prior - np.einsum("gs,gs->g", W, cross), 0.0)
    return mean, var + resid[:, None] * float(prob.h @ prob.P_inf @ prob.h)


# --- forward filtering, backward sampling ---------------------------------------


def _psd_sqrt(C: FloatArray) -> FloatArray:
    """Return ``R`` with ``R R^T = C`` for a (possibly singular) PSD ``C``."""
    vals, vecs = eigh(C)
    return vecs * np.sqrt(np.maximum(vals, 0.0))


def _backward_draw(
    prob: _Problem, k: int, state: _State, z: FloatArray, xi: FloatArray
) -> FloatArray:
    """Draw the step-``k`` states given draws ``z`` (N, S) of step ``k + 1``."""
    m, P = state
    A, n_s = prob.A[k], prob.n_s
    AP = _left(A, P, n_s)
    P_pred = _sym(_right(AP, A, n_s) + _noise_kron(prob, k))
    try:
        Gt = cho_solve(cho_factor(P_pred, lower=True), AP)
    except LinAlgError as exc:
        raise LinAlgError(
            f"predicted state covariance at time step {k + 1} is singular; add "
            "jitter to K_s or Q."
        ) from exc
    mean = m[:, None] + Gt.T @ (z - _left(A, m[:, None], n_s))
    return mean + _psd_sqrt(_sym(P - Gt.T @ AP)) @ xi


@_small_state_on_one_thread
def spacetime_sample(
    Y: ArrayLike,
    K_s: ArrayLike,
    *,
    A: ArrayLike,
    Q: ArrayLike,
    P_inf: ArrayLike,
    H: ArrayLike,
    noise: ArrayLike,
    n_samples: int = 1,
    random_state: int | np.random.Generator | None = None,
) -> FloatArray:
    r"""Draw posterior samples of the latent field at every cell.

    Parameters
    ----------
    Y, K_s, A, Q, P_inf, H, noise
        As in :func:`spacetime_lml`.
    n_samples : int, default=1
        Number of joint samples.
    random_state : int, Generator or None
        Seed or generator for the draws.

    Returns
    -------
    ndarray of shape (n_samples, n_s, n_t)
        Joint posterior samples of the noise-free field ``f``.

    Raises
    ------
    ValueError
        If ``n_samples`` is not a positive integer, or as :func:`spacetime_lml`.

    Notes
    -----
    Forward filtering, backward sampling (Carter and Kohn 1994; Frühwirth-Schnatter
    1994): draw :math:`z_{n_t-1} \sim N(m_{n_t-1}, P_{n_t-1})`, then backwards

    .. math::
        G_k = P_k \mathcal A_{k+1}^T (P_{k+1}^-)^{-1}, \quad
        z_k \mid z_{k+1} \sim N\bigl(m_k + G_k (z_{k+1} - \mathcal A_{k+1} m_k),\;
        P_k - G_k \mathcal A_{k+1} P_k\bigr),

    with :math:`\mathcal A_k = I \otimes A_k` and :math:`f_k = (I \otimes h)
    z_k`. The conditional covariance may be singular (e.g. a constant
    time-kernel term), so its square root comes from an eigendecomposition
    with negative rounding clipped. Cost
    :math:`O(n_t (N^3 + N^2 S))`.

    Examples
    --------
    >>> import numpy as np
    >>> K_s = np.array([[1.0, 0.5], [0.5, 1.0]])
    >>> Y = np.array([[0.3, np.nan, -0.2], [0.1, 0.4, np.nan]])
    >>> draws = spacetime_sample(Y, K_s, A=[[0.5]], Q=[[0.75]], P_inf=[[1.0]],
    ...                          H=[1.0], noise=0.1, n_samples=3, random_state=0)
    >>> draws.shape
    (3, 2, 3)
    """
    prob = _problem(Y, K_s, A=A, Q=Q, P_inf=P_inf, H=H, noise=noise)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer; got {n_samples}.")
    rng = np.random.default_rng(random_state)
    N, n_t = prob.n_s * prob.d, prob.n_t
    out = np.empty((n_samples, prob.n_s, n_t))
    z = np.zeros((N, n_samples))
    for k, prev, _, (m, P) in _reverse_records(prob)[1]:
        if k == n_t - 1:
            z = m[:, None] + _psd_sqrt(P) @ rng.standard_normal((N, n_samples))
            out[..., k] = _rows(z, prob.h, slice(None)).T
        if k > 0:
            xi = rng.standard_normal((N, n_samples))
            z = _backward_draw(prob, k - 1, prev, z, xi)
            out[..., k - 1] = _rows(z, prob.h, slice(None)).T
    return out


def _check_sizes(**sizes: Any) -> None:
    for name, value in sizes.items():
        low = 0 if name == "n_theta" else 1
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or (value < low)
        ):
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")


def spacetime_cost(
    n_s: int, n_t: int, d: int, n_theta: int, *, operation: str = "lml+grad"
) -> float:
    r"""Return the flop count of one LML + gradient by :func:`spacetime_lml`.

    Parameters
    ----------
    n_s, n_t : int
        Sites and time steps.
    d : int
        State dimension of the time kernel.
    n_theta : int
        Length of the gradient (space + time parameters + 1 for the noise).
    operation : {"lml+grad", "lml", "posterior"}, default="lml+grad"
        :func:`spacetime_lml` with or without the gradient, or
        :func:`spacetime_posterior` (means and variances at every cell).

    Returns
    -------
    float
        Estimated floating-point operations, assuming every site is observed at
        every step (an upper bound; missing cells make it cheaper).

    Raises
    ------
    ValueError
        If a size is not a positive integer (``n_theta`` may be 0), or on an
        unknown ``operation``.

    Notes
    -----
    Per step with :math:`N = n_s d`, :math:`m = n_s`: the filter's update costs
    :math:`m^3/3 + m^2 N + 2 N^2 m` (Cholesky, triangular solve, covariance
    downdate), its prediction :math:`(4 d + 2) N^2`; recording a step for the
    reverse pass adds :math:`m^2 N + 2 m^3/3`; the adjoint pass costs
    :math:`2 m^2 N + 2 N^2 m + (6 d + 7) N^2`, the smoother's pass
    :math:`2 m^2 N + 2 N^2 m + 2 n_s N^2 + (4 d + 3) N^2`. Records beyond
    ``2**28`` bytes are re-filtered from checkpoints (one more recording pass
    over all but the last segment). The gradient's contractions add
    :math:`n_\theta (2 n_t d^2 + n_s^2)`:

    .. math::
        \text{flops}_{\text{lml+grad}} \approx n_t \bigl(m^3 + 4 m^2 N
        + 4 N^2 m + (10 d + 9) N^2\bigr) + \text{re-filter}
        + n_\theta (2 n_t d^2 + n_s^2).

    Measured (one core): about 18 Gflop/s where the state is large
    (150 sites, ``d = 2``); for small states (tens of sites) a fixed cost of
    roughly 0.2 ms per time step (Python and call overhead) dominates.

    Examples
    --------
    >>> spacetime_cost(43, 730, 1, 5) < spacetime_cost(150, 2000, 2, 5)
    True
    >>> spacetime_cost(43, 730, 1, 0, operation="lml") < spacetime_cost(43, 730, 1, 0)
    True
    """
    _check_sizes(n_s=n_s, n_t=n_t, d=d, n_theta=n_theta)
    N, m = float(n_s * d), float(n_s)
    filt = m**3 / 3.0 + m * m * N + 2.0 * N * N * m + (4.0 * d + 2.0) * N * N
    if operation == "lml":
        return float(n_t * filt)
    record = filt + m * m * N + 2.0 * m**3 / 3.0
    seg = _segment_length(n_s, n_t, d)
    refilter = (n_t - seg) * record if seg < n_t else 0.0
    if operation == "posterior":
        smooth = 2.0 * m * m * N + 2.0 * N * N * (m + n_s) + (4.0 * d + 3) * N * N
        return float(n_t * (record + smooth) + refilter)
    if operation != "lml+grad":
        raise ValueError(
            f"operation must be 'lml+grad', 'lml' or 'posterior'; got {operation!r}."
        )
    back = 2.0 * m * m * N + 2.0 * N * N * m + (6 * d + 7) * N * N
    grads = n_theta * (2.0 * n_t * d * d + n_s * n_s)
    return float(n_t * (record + back) + refilter + grads)


def spacetime_memory(n_s: int, n_t: int, d: int) -> int:
    r"""Return the peak bytes of the arrays held by a gradient or smoother pass.

    Parameters
    ----------
    n_s, n_t : int
        Sites and time steps.
    d : int
        State dimension of the time kernel.

    Returns
    -------
    int
        Bytes: one segment of filter records (at most ``2**28``), the
        checkpoints of the other segments, and about sixteen working
        ``N x N`` arrays (:math:`N = n_s d`); the LML alone needs only a few
        working arrays.

    Raises
    ------
    ValueError
        If a size is not a positive integer.

    Examples
    --------
    >>> spacetime_memory(43, 730, 1) < 2**28
    True
    """
    _check_sizes(n_s=n_s, n_t=n_t, d=d)
    N = n_s * d
    seg = _segment_length(n_s, n_t, d)
    records = seg * _record_bytes(n_s, d)
    checkpoints = -(-n_t // seg) * 8 * (N * N + N)
    return int(records + checkpoints + 16 * 8 * N * N)
