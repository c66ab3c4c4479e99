r"""Pure functions: exact GP algebra on a long Markov axis by Kalman filtering.

On a grid with covariance :math:`K = K_s \otimes K_t + sI` and
:math:`K_s = U \operatorname{diag}(w) U^T`, rotating the other axes away,
:math:`\tilde Y = U^T Y` (rows are series), leaves ``S`` independent 1-D GPs,
series ``i`` with covariance :math:`w_i K_t + sI`. When the time kernel is
Markov (see :mod:`kronecker_gp.kernels._markov`) each series is solved
exactly by a Kalman filter and smoother in :math:`O(n_t d^3)`; the passes
here loop over time in Python and are vectorised across series, so the cost
is :math:`O(S n_t d^3)` time and :math:`O(S n_t d)` memory.

Times may be irregular: each step uses the transition of its own gap, and
gaps equal up to ``GAP_ULPS`` ulps of the largest time (the rounding of the
coordinates themselves) share one table entry. A time at which *every* cell
is missing can simply be dropped from ``times``; scattered missing cells
cannot be rotated and go through :func:`ssm_solve` (the complete-grid solve of
the incomplete-grid method). On a regular tail the Riccati recursion
converges and its gains are frozen (see ``_kalman.STEADY_RTOL``), so only the
mean recursion runs from there on.

References
----------
.. [1] Särkkä, S. and Solin, A. (2019). Applied Stochastic Differential
   Equations. Cambridge University Press, ch. 12.
.. [2] Hartikainen, J. and Särkkä, S. (2010). Kalman filtering and smoothing
   solutions to temporal Gaussian process regression models. IEEE MLSP.
.. [3] Saatci, Y. (2011). Scalable Inference for Structured Gaussian Process
   Models. PhD thesis, University of Cambridge, ch. 3.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp._typing import ArrayLike, BoolArray, FloatArray, IntArray
from kronecker_gp.kernels._markov import kernel_to_state_space
from kronecker_gp.linalg.kalman._filter import (
    adjoint,
    ffbs,
    filter_store,
    smoother_moments,
    step_tables,
)
from kronecker_gp.linalg.kalman._sensitivity import filter_lml

__all__ = [
    "SSMGradient",
    "SSMPrediction",
    "ssm_log_marginal_likelihood",
    "ssm_predict",
    "ssm_grid_moments",
    "ssm_sample",
    "ssm_solve",
]


class SSMGradient(NamedTuple):
    r"""Gradient of the summed log marginal likelihood of rotated series.

    Attributes
    ----------
    theta : ndarray of shape (n_theta,)
        W.r.t. the time kernel's free log-hyperparameters (``kernel.theta``).
    weights : ndarray of shape (S,)
        W.r.t. each series weight ``w_i`` (the diagonal of ``space``).
    space : ndarray of shape (S, S)
        W.r.t. the rotated space Gram :math:`\tilde K_s = U^T K_s U`:
        :math:`dL = \sum_{ij} G_{ij} (U^T dK_s U)_{ij}`.
    log_noise : float
        W.r.t. ``log(noise)``.
    alpha : ndarray of shape (S, n_t)
        :math:`\tilde a_i = (w_i K_t + sI)^{-1} \tilde y_i`; ``U @ alpha`` is
        :math:`(K_s \otimes K_t + sI)^{-1} y` on the grid.
    k_alpha : ndarray of shape (S, n_t)
        :math:`K_t \tilde a_i`. ``space`` is
        ``0.5 * (alpha @ k_alpha.T - diag(h))`` with
        :math:`h_i = \operatorname{tr}((w_i K_t + sI)^{-1} K_t)`, so several
        rotated factors (e.g. task x site) can be contracted mode by mode from
        ``alpha``, ``k_alpha`` and ``h = diag(alpha k_alpha^T) - 2 weights``
        without the :math:`S \times S` matrix.
    """

    theta: FloatArray
    weights: FloatArray
    space: FloatArray
    log_noise: float
    alpha: FloatArray
    k_alpha: FloatArray


class SSMPrediction(NamedTuple):
    r"""Posterior moments of every series' latent function at query times.

    Attributes
    ----------
    mean : ndarray of shape (S, m)
        :math:`E[f_i(t^*)] = w_i \beta_i(t^*)`.
    var : ndarray of shape (S, m)
        :math:`\operatorname{Var}[f_i(t^*)]` for :math:`f_i \sim GP(0, w_i k_t)`.
    beta : ndarray of shape (S, m)
        :math:`k_t(t^*, t) (w_i K_t + sI)^{-1} \tilde y_i`.
    gamma : ndarray of shape (S, m)
        :math:`k_t(t^*, t) (w_i K_t + sI)^{-1} k_t(t, t^*)`.

    Notes
    -----
    ``beta`` and ``gamma`` are what off-grid *space* predictions need: with
    :math:`V = K_s(X^*, X) U`, the grid posterior at :math:`(x^*, t^*)` has
    mean :math:`\sum_i V_{*i} \beta_i(t^*)` and variance
    :math:`k_s(x^*, x^*) k_t(t^*, t^*) - \sum_i V_{*i}^2 \gamma_i(t^*)`.
    """

    mean: FloatArray
    var: FloatArray
    beta: FloatArray
    gamma: FloatArray


def _check_times(times: ArrayLike) -> FloatArray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(
            f"times must be a finite 1-D array (or one column); got shape {t.shape}."
        )
    if np.any(np.diff(t) < 0):
        raise ValueError(
            "times must be sorted in non-decreasing order; sort the time axis (and "
            "the data's columns with it) first."
        )
    return t


def _check_series(
    values: ArrayLike, name: str, n_t: int, weights: ArrayLike, noise: float
) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != n_t:
        raise ValueError(
            f"{name} must have shape (n_series, n_times={n_t}); got {y.shape}."
        )
    if not np.all(np.isfinite(y)):
        raise ValueError(
            f"{name} must be finite; got NaN or inf. Missing cells cannot be rotated: "
            "solve the complete grid with ssm_solve inside the incomplete-grid method."
        )
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (y.shape[0],) or not np.all(np.isfinite(w)) or np.any(w < 0):
        low = float(np.min(w)) if w.size and np.all(np.isfinite(w)) else np.nan
        raise ValueError(
            f"weights must be {y.shape[0]} finite non-negative numbers (one per series "
            f"of {name}); got shape {w.shape} with minimum {low:.3g}. Clip the space "
            "eigenvalues at zero."
        )
    if not (np.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a positive finite number; got {noise!r}.")
    return y, w


def ssm_log_marginal_likelihood(
    kernel_t: Kernel,
    times: ArrayLike,
    Y_rot: ArrayLike,
    weights: ArrayLike,
    noise: float,
    *,
    eval_gradient: bool = False,
) -> float | tuple[float, SSMGradient]:
    r"""Return the summed exact LML of independent series with kernel ``w_i k_t``.

    Parameters
    ----------
    kernel_t : sklearn Kernel
        A Markov kernel on the time axis (see :func:`kernel_to_state_space`).
    times : array-like of shape (n_t,)
        Sorted (non-decreasing) times; regular or irregular.
    Y_rot : array-like of shape (S, n_t)
        The series (rows), e.g. :math:`U^T Y` for a space x time grid.
    weights : array-like of shape (S,)
        Non-negative series weights :math:`w_i` (eigenvalues of :math:`K_s`).
    noise : float
        Noise variance ``s > 0``.
    eval_gradient : bool, default=False
        Also return the gradient.

    Returns
    -------
    lml : float
        :math:`\sum_i \log N(\tilde y_i; 0, w_i K_t + sI)`, which equals the
        grid LML :math:`\log N(y; 0, K_s \otimes K_t + sI)`.
    grad : SSMGradient
        If ``eval_gradient``: w.r.t. ``kernel_t.theta``, each ``w_i``, the
        rotated space Gram (:math:`S \times S`) and ``log(noise)``.

    Raises
    ------
    ValueError
        For a non-Markov kernel, unsorted times, bad shapes or a non-positive
        noise.

    Notes
    -----
    The Kalman filter's prediction-error decomposition gives
    :math:`\log N(y; 0, wK + sI) = -\tfrac12 \sum_k (v_k^2 / S_k + \log S_k +
    \log 2\pi)`; the theta, weight and noise derivatives come from the
    filter's sensitivity equations. The rotated space Gram also moves the
    eigenvectors, so its gradient is the full matrix
    :math:`G = \tfrac12 (C - \operatorname{diag}(h))`, :math:`C_{ij} =
    \tilde a_i^T K_t \tilde a_j`, :math:`\tilde a_i = (w_i K_t + sI)^{-1}
    \tilde y_i`, :math:`h_i = \operatorname{tr}((w_i K_t + sI)^{-1} K_t)`,
    as in the eigen route; :math:`\tilde a` and :math:`K_t \tilde a` come from
    one backward (adjoint) pass. Cost :math:`O(S n_t p d^2 (d + p) + S^2 n_t)`
    for ``p`` hyperparameters, memory :math:`O(S n_t d)`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import Matern
    >>> kernel = Matern(length_scale=3.0, nu=1.5)
    >>> t = np.arange(50.0)
    >>> y = np.sin(t / 4.0)[None, :]
    >>> lml = ssm_log_marginal_likelihood(kernel, t, y, [1.0], 0.1)
    >>> K = kernel(t[:, None]) + 0.1 * np.eye(50)
    >>> dense = -0.5 * (y[0] @ np.linalg.solve(K, y[0]) + np.linalg.slogdet(K)[1]
    ...                 + 50 * np.log(2 * np.pi))
    >>> bool(np.isclose(lml, dense, rtol=1e-12))
    True
    """
    t = _check_times(times)
    y, w = _check_series(Y_rot, "Y_rot", t.size, weights, noise)
    model = kernel_to_state_space(kernel_t)
    tab = step_tables(model, t, eval_gradient)
    y_t = np.ascontiguousarray(y.T)  # time-major: each step reads one row
    lml, per, fs = filter_lml(tab, y_t, w, float(noise), store=eval_gradient)
    if not eval_gradient or fs is None:
        return lml
    nt = model.n_theta
    a, beta = adjoint(tab, fs, w)
    alpha = np.ascontiguousarray(a[:, :, 0].T)
    k_alpha = np.ascontiguousarray(beta[:, :, 0].T)
    space = 0.5 * (alpha @ k_alpha.T)
    space = 0.5 * (space + space.T)
    np.fill_diagonal(space, per[:, nt])
    return lml, SSMGradient(
        theta=per[:, :nt].sum(axis=0),
        weights=per[:, nt].copy(),
        space=space,
        log_noise=float(per[:, nt + 1].sum()),
        alpha=alpha,
        k_alpha=k_alpha,
    )


def ssm_solve(
    kernel_t: Kernel,
    times: ArrayLike,
    weights: ArrayLike,
    noise: float,
    B: ArrayLike,
) -> FloatArray:
    r"""Solve :math:`(w_i K_t + sI) x_i = b_i` for every series at once.

    Parameters
    ----------
    kernel_t : sklearn Kernel
        A Markov kernel on the time axis.
    times : array-like of shape (n_t,)
        Sorted (non-decreasing) times.
    weights : array-like of shape (S,)
        Non-negative series weights :math:`w_i`.
    noise : float
        Noise variance ``s > 0``.
    B : array-like of shape (S, n_t) or (S, n_t, k)
        Right-hand sides: one per series, or ``k`` per series.

    Returns
    -------
    ndarray of the shape of ``B``
        :math:`x_i = (w_i K_t + sI)^{-1} b_i`. With :math:`B = U^T R` (rows
        rotated by the space eigenvectors) :math:`U x` is
        :math:`(K_s \otimes K_t + sI)^{-1}` applied to ``R``.

    Raises
    ------
    ValueError
        For a non-Markov kernel, unsorted times, bad shapes or noise.

    Notes
    -----
    One Kalman filter pass (covariances shared by the ``k`` right-hand sides
    of a series) and one adjoint pass, :math:`x = L^{-T} D^{-1} L^{-1} b` for
    the filter's factorisation :math:`w K_t + sI = L D L^T`. Cost
    :math:`O(S n_t (d^3 + k d^2))`, memory :math:`O(S n_t (d + k))`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import Matern
    >>> kernel, t = Matern(length_scale=2.0, nu=0.5), np.linspace(0, 10, 30)
    >>> B = np.ones((2, 30))
    >>> X = ssm_solve(kernel, t, [1.0, 3.0], 0.2, B)
    >>> K = kernel(t[:, None])
    >>> bool(np.allclose((3.0 * K + 0.2 * np.eye(30)) @ X[1], 1.0))
    True
    """
    t = _check_times(times)
    b = np.asarray(B, dtype=np.float64)
    single = b.ndim == 2
    b3 = b[:, :, None] if single else b
    if b3.ndim != 3:
        raise ValueError(f"B must have shape (S, n_t) or (S, n_t, k); got {b.shape}.")
    if not np.all(np.isfinite(b3)):
        raise ValueError("B must be finite; got NaN or inf.")
    _check_series(b3[:, :, 0], "B", t.size, weights, noise)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    x = kalman_solve(kernel_t, t, w, float(noise), b3)[0]
    return x[:, :, 0] if single else x


def kalman_solve(
    kernel_t: Kernel, times: FloatArray, w: FloatArray, noise: float, b3: FloatArray
) -> tuple[FloatArray, float]:
    r"""Unchecked core of :func:`ssm_solve`: solves (S, n_t, k) and :math:`\log|A|`.

    :math:`\log|A| = \sum_{i,k} \log S_{ik}`, the filter's innovation
    variances (the :math:`D` of :math:`w_i K_t + sI = L D L^T`).
    """
    tab = step_tables(kernel_to_state_space(kernel_t), times, False)
    filt = filter_store(tab, np.ascontiguousarray(b3.transpose(1, 0, 2)), w, noise)
    x = np.ascontiguousarray(adjoint(tab, filt.store, w)[0].transpose(1, 0, 2))
    return x, float(np.sum(np.log(filt.store.s)))


def merge_times(
    times: FloatArray, pred: ArrayLike | None
) -> tuple[FloatArray, BoolArray, IntArray]:
    """Merge query times into the grid timeline; return times, obs and positions."""
    if pred is None:
        return times, np.ones(times.size, dtype=bool), np.arange(times.size)
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1 or not np.all(np.isfinite(p)):
        raise ValueError(
            "pred_times must be a finite 1-D array (or one column); got shape "
            f"{p.shape}."
        )
    both = np.concatenate([times, p])
    order = np.argsort(both, kind="stable")
    position = np.empty(both.size, dtype=np.intp)
    position[order] = np.arange(both.size)
    return both[order], order < times.size, position[times.size :]


def _merged_timeline(
    kernel_t: Kernel,
    times: ArrayLike,
    Y_rot: ArrayLike,
    weights: ArrayLike,
    noise: float,
    *,
    pred_times: ArrayLike | None,
) -> tuple[Any, FloatArray, FloatArray, BoolArray, IntArray]:
    """Check the inputs and lay the series on the timeline merged with queries.

    Returns the step tables, the series as (n_merged, S, 1) with zeros at query
    steps, the weights, the observed-step mask and the query positions.
    """
    t = _check_times(times)
    y, w = _check_series(Y_rot, "Y_rot", t.size, weights, noise)
    merged, obs, pos = merge_times(t, pred_times)
    tab = step_tables(kernel_to_state_space(kernel_t), merged, False)
    full = np.zeros((merged.size, y.shape[0], 1))
    full[obs, :, 0] = y.T
    return tab, full, w, obs, pos


def ssm_predict(
    kernel_t: Kernel,
    times: ArrayLike,
    Y_rot: ArrayLike,
    weights: ArrayLike,
    noise: float,
    *,
    pred_times: ArrayLike | None = None,
) -> SSMPrediction:
    r"""Posterior mean and variance of each series' latent function.

    Parameters
    ----------
    kernel_t : sklearn Kernel
        A Markov kernel on the time axis.
    times : array-like of shape (n_t,)
        Sorted (non-decreasing) training times.
    Y_rot : array-like of shape (S, n_t)
        The series.
    weights : array-like of shape (S,)
        Non-negative series weights :math:`w_i`.
    noise : float
        Noise variance ``s > 0``.
    pred_times : array-like of shape (m,), default=None
        Query times in any order, on or off the grid, inside or outside its
        range; None means the training times.

    Returns
    -------
    SSMPrediction
        ``mean``, ``var`` (of :math:`f_i \sim GP(0, w_i k_t)`, noise
        excluded), ``beta`` and ``gamma``, each of shape (S, m).

    Raises
    ------
    ValueError
        For a non-Markov kernel, unsorted times, bad shapes or noise.

    Notes
    -----
    The query times are merged into the timeline as steps without an
    observation, then one filter pass and one modified Bryson-Frazier
    smoother pass give, exactly,

    .. math::
        E[f(t^*)] = w\, k_*^T (wK + sI)^{-1} y, \qquad
        \operatorname{Var}[f(t^*)] = w k_{**} - w^2 k_*^T (wK + sI)^{-1} k_*.

    Cost :math:`O(S (n_t + m) d^3)`, memory :math:`O(S (n_t + m) d)`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import Matern
    >>> kernel, t = Matern(length_scale=2.0, nu=1.5), np.arange(20.0)
    >>> y = np.cos(t / 3.0)[None, :]
    >>> pred = ssm_predict(kernel, t, y, [1.0], 0.01, pred_times=[4.5, 25.0])
    >>> K = kernel(t[:, None]) + 0.01 * np.eye(20)
    >>> ks = kernel(np.array([[4.5], [25.0]]), t[:, None])
    >>> bool(np.allclose(pred.mean[0], ks @ np.linalg.solve(K, y[0])))
    True
    """
    tab, full, w, obs, pos = _merged_timeline(
        kernel_t, times, Y_rot, weights, noise, pred_times=pred_times
    )
    filt = filter_store(tab, full, w, float(noise), obs, track_d=True)
    beta, gamma, var = smoother_moments(tab, filt, w, obs)
    assert var is not None
    b = np.ascontiguousarray(beta[pos, :, 0].T)
    var_f = np.maximum(var[pos].T, 0.0)
    return SSMPrediction(w[:, None] * b, var_f, b, np.ascontiguousarray(gamma[pos].T))


def ssm_grid_moments(
    kernel_t: Kernel,
    times: ArrayLike,
    Y_rot: ArrayLike,
    weights: ArrayLike,
    noise: float,
    *,
    pred_times: ArrayLike | None = None,
    variance: bool = True,
) -> tuple[FloatArray, FloatArray | None]:
    r"""Return :attr:`SSMPrediction.beta` and ``gamma``, time-major, for a grid.

    The same :math:`\beta` and :math:`\gamma` as :func:`ssm_predict`, as
    arrays of shape (m, S) (the layout the passes write, so no transpose),
    and only these (no per-series mean or variance). Without ``variance``
    ``gamma`` is None and :math:`\beta` comes from one filter pass (gains
    frozen on a regular observed tail) and the adjoint pass, without the
    smoother's covariance recursion: :math:`O(S n d^2)` after the filter.
    """
    tab, full, w, obs, pos = _merged_timeline(
        kernel_t, times, Y_rot, weights, noise, pred_times=pred_times
    )
    all_obs = None if bool(obs.all()) else obs
    if not variance:
        filt = filter_store(tab, full, w, float(noise), all_obs)
        beta = adjoint(tab, filt.store, w, all_obs)[1][:, :, 0]
        return (beta if pred_times is None else beta[pos]), None
    filt = filter_store(tab, full, w, float(noise), all_obs, track_d=True)
    beta3, gamma, _ = smoother_moments(tab, filt, w, all_obs, with_var=False)
    if pred_times is None:
        return beta3[:, :, 0], gamma
    return beta3[pos, :, 0], gamma[pos]


def ssm_sample(
    kernel_t: Kernel,
    times: ArrayLike,
    Y_rot: ArrayLike,
    weights: ArrayLike,
    noise: float,
    *,
    pred_times: ArrayLike | None = None,
    n_samples: int = 1,
    random_state: int | np.random.Generator | None = None,
) -> FloatArray:
    r"""Draw joint posterior samples of every series' latent function (FFBS).

    Parameters
    ----------
    kernel_t : sklearn Kernel
        A Markov kernel on the time axis.
    times : array-like of shape (n_t,)
        Sorted (non-decreasing) training times.
    Y_rot : array-like of shape (S, n_t)
        The series.
    weights : array-like of shape (S,)
        Non-negative series weights :math:`w_i`.
    noise : float
        Noise variance ``s > 0``.
    pred_times : array-like of shape (m,), default=None
        Sample times in any order; None means the training times.
    n_samples : int, default=1
        Number of samples per series.
    random_state : int, Generator or None, default=None
        Seed or generator.

    Returns
    -------
    ndarray of shape (S, m, n_samples)
        Samples of :math:`f_i(t^*)`, :math:`f_i \sim GP(0, w_i k_t)` given
        :math:`\tilde y_i` (noise excluded), jointly over the query times.

    Raises
    ------
    ValueError
        For a non-Markov kernel, bad shapes, noise or ``n_samples``.

    Notes
    -----
    Forward filtering on the timeline merged with the query times, then
    backward sampling :math:`x_k \mid x_{k+1}, y_{1:k}` (Särkkä 2013,
    Bayesian Filtering and Smoothing, sec. 8.1; Frühwirth-Schnatter 1994),
    vectorised over series and samples. Cost :math:`O(S n (d^3 +
    n_{samples} d^2))`, memory :math:`O(S n d^2)` for the filtered
    covariances, :math:`n = n_t + m`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import Matern
    >>> t = np.arange(10.0)
    >>> f = ssm_sample(Matern(3.0, nu=1.5), t, np.zeros((2, 10)), [1.0, 0.5], 0.1,
    ...                n_samples=4, random_state=0)
    >>> f.shape
    (2, 10, 4)
    """
    if (
        isinstance(n_samples, bool)
        or not isinstance(n_samples, (int, np.integer))
        or (n_samples < 1)
    ):
        raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
    tab, full, w, obs, pos = _merged_timeline(
        kernel_t, times, Y_rot, weights, noise, pred_times=pred_times
    )
    rng = np.random.default_rng(random_state)
    filt = filter_store(tab, full, w, float(noise), obs, keep=True)
    samples = ffbs(tab, filt, w, int(n_samples), rng)[pos]
    return np.ascontiguousarray(samples.transpose(1, 0, 2))
