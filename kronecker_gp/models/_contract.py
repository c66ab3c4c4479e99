"""The parts of scikit-learn's GaussianProcessRegressor contract shared by estimators.

Small helpers each estimator calls in one line: prior predictions before
``fit``, the cheap check that the noise is not below the rounding level of
the covariance's spectrum, ``np.float64`` likelihood returns, likelihood
queries that leave the fitted state alone (or, with ``clone_kernel=False``,
move the fitted kernel to ``theta`` as scikit-learn does), and target
normalisation that cannot overflow.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from scipy.linalg import LinAlgWarning
from sklearn.utils.validation import validate_data

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp.linalg import kron_outer

#: Largest condition number of ``K + noise I`` accepted by the eigen routes:
#: ``1 / eps`` (4.5e15), where scikit-learn's Cholesky fails too. Above it the
#: noise is below the rounding error of the factor eigenvalues (about
#: ``n_d * eps * max``), so the smallest shifted eigenvalues, hence
#: ``alpha_``, the LML and the predictions, carry no correct digit.
MAX_CONDITION = 1.0 / float(np.finfo(float).eps)


def condition_number(eigvals: Sequence[FloatArray], noise: float) -> float:
    r"""Return the condition number of ``K_1 (x) ... (x) K_D + noise I``.

    Parameters
    ----------
    eigvals : sequence of ndarray of shape (n_d,)
        Each factor's eigenvalues, clipped at zero.
    noise : float
        The shift.

    Returns
    -------
    float
        :math:`(\prod_d \max w_d + s) / (\prod_d \min w_d + s)`, each
        :math:`\min w_d` taken as 0 when below its rounding error
        :math:`n_d \epsilon \max w_d`.

    Notes
    -----
    The eigenvalues of a Kronecker product are the products of the factors'
    eigenvalues; with every factor positive semi-definite the extreme ones
    are the products of the extremes. Cost :math:`O(\sum_d n_d)`.

    Examples
    --------
    >>> import numpy as np
    >>> float(condition_number([np.array([0.0, 1.0]), np.array([1.0, 3.0])], 1.0))
    4.0
    """
    eps = float(np.finfo(float).eps)
    top, bottom = 1.0, 1.0
    for values in eigvals:
        w = np.maximum(np.asarray(values, dtype=float), 0.0)
        high = float(w.max(initial=0.0))
        low = float(w.min()) if w.size else 0.0
        top *= high
        # below n * eps * max an eigenvalue is rounding noise: count it as 0
        bottom *= low if low > w.size * eps * high else 0.0
    return (top + noise) / (bottom + noise)


def check_conditioning(
    eigvals: Sequence[FloatArray], noise: float, kernel: object, owner: str
) -> None:
    """Raise ``LinAlgError`` when the noise is below the spectrum's rounding level.

    Parameters
    ----------
    eigvals : sequence of ndarray of shape (n_d,)
        Each factor's eigenvalues.
    noise : float
        The noise variance added to the product.
    kernel : object
        The kernel, shown in the message.
    owner : str
        The estimator's class name, shown in the message.

    Raises
    ------
    numpy.linalg.LinAlgError
        If :func:`condition_number` exceeds :data:`MAX_CONDITION`; the message
        is scikit-learn's, with ``noise`` for ``alpha``, and the condition
        number.

    Examples
    --------
    >>> import numpy as np
    >>> check_conditioning([np.array([0.0, 1.0])], 1e-3, "K", "KroneckerGP")
    >>> try:
    ...     check_conditioning([np.array([0.0, 1.0])], 1e-100, "K", "KroneckerGP")
    ... except np.linalg.LinAlgError as exc:
    ...     print(str(exc)[:58])
    The kernel, K, is not returning a positive definite matrix
    """
    cond = condition_number(eigvals, noise)
    if not cond <= MAX_CONDITION:
        raise np.linalg.LinAlgError(
            f"The kernel, {kernel}, is not returning a positive definite matrix. "
            "Try gradually increasing the 'noise' parameter of your "
            f"{owner} estimator. (The condition number of K + noise I is "
            f"{cond:.3g}, above {MAX_CONDITION:.3g}: the noise is below the "
            "rounding error of the kernel's eigenvalues.)"
        )


def warn_conditioning_bound(
    term_diags: Sequence[Sequence[FloatArray]],
    noise_min: float,
    noise_max: float,
    kernel: object,
    owner: str,
) -> None:
    r"""Warn when a bound on the condition number of ``K + D`` exceeds ``1/eps``.

    For routes without every factor's spectrum (a Kalman axis, per-cell
    noise): :math:`\lambda_{max}(K) \le \sum_r \prod_d \operatorname{tr} K^r_d`
    (one product per separable term ``r``) and
    :math:`\lambda_{min}(K + D) \ge \min D`, so the condition number is at
    most :math:`(\prod_d \operatorname{tr} K_d + \max D) / \min D`. Above
    :data:`MAX_CONDITION` the results may be rounding noise: a
    ``scipy.linalg.LinAlgWarning`` says so with the bound (a bound, so a
    warning and not the eigen routes' error).

    Parameters
    ----------
    term_diags : sequence of sequence of ndarray
        For each separable term of the kernel (one for a product kernel), each
        factor Gram's diagonal on the training coordinates.
    noise_min, noise_max : float
        Smallest and largest noise variance of the observed cells.
    kernel : object
        The kernel, shown in the message.
    owner : str
        The estimator's class name, shown in the message.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_conditioning_bound([[np.ones(3)]], 1e-100, 1e-100, "K", "KroneckerGP")
    >>> len(w)
    1
    """
    top = sum(
        float(np.prod([np.sum(np.maximum(d, 0.0)) for d in diags]))
        for diags in term_diags
    )
    bound = (top + noise_max) / noise_min if noise_min > 0 else np.inf
    if bound > MAX_CONDITION:
        warnings.warn(
            f"The noise (smallest variance {noise_min:.3g}) may be below the rounding "
            f"error of the kernel {kernel}: the condition number of K + noise is at "
            f"most {bound:.3g}, above {MAX_CONDITION:.3g}, and this route cannot "
            "tell whether it is that large; predictions and the likelihood may be "
            f"meaningless. Try increasing the 'noise' parameter of your {owner} "
            "estimator.",
            LinAlgWarning,
            stacklevel=4,
        )


def lml_float(value: Any) -> Any:
    """Return a likelihood (or a ``(lml, grad)`` pair) as ``np.float64`` values."""
    if isinstance(value, tuple):
        lml, grad = value
        return np.float64(lml), np.asarray(grad, dtype=np.float64)
    return np.float64(value)


@contextmanager
def scratch_state(estimator: object, names: Sequence[str]) -> Iterator[None]:
    """Let a likelihood query work on copies of the named fitted attributes.

    Inside the block the attributes are deep copies (one memo, so objects
    shared between them stay shared); on exit the original objects are put
    back untouched, bit for bit (no ``exp(log(p))`` round trip), and names
    that did not exist before are removed.

    Parameters
    ----------
    estimator : object
        The fitted estimator.
    names : sequence of str
        Attributes the query mutates (``kernel_``, ``noise_``, caches).

    Examples
    --------
    >>> class Est:
    ...     noise_ = None
    >>> est = Est()
    >>> est.noise_ = [1.0]
    >>> with scratch_state(est, ["noise_"]):
    ...     est.noise_[0] = 2.0
    >>> est.noise_
    [1.0]
    """
    state = vars(estimator)
    saved = {n: state[n] for n in names if n in state}
    memo: dict[int, Any] = {}
    for n, value in saved.items():
        state[n] = copy.deepcopy(value, memo)
    try:
        yield
    finally:
        for n in names:
            state.pop(n, None)
        state.update(saved)


def query_lml(
    estimator: Any,
    theta: FloatArray,
    *,
    eval_gradient: bool,
    clone_kernel: bool,
    names: Sequence[str],
    lml_at: Callable[[FloatArray, bool], tuple[float, Any]] | None = None,
) -> Any:
    """Evaluate ``log_marginal_likelihood(theta)`` without changing fitted state.

    The estimator's ``_lml_at(theta, eval_gradient)`` (or ``lml_at``) runs on
    scratch copies of ``names`` (:func:`scratch_state`). With
    ``clone_kernel=False`` the fitted hyperparameters are then moved to
    ``theta`` through ``_set_theta``, as scikit-learn sets ``kernel_.theta``;
    the stored factorisation (``alpha_``, predictions) is not recomputed, as in
    scikit-learn.

    Returns
    -------
    lml : numpy.float64
    grad : ndarray of float64, if ``eval_gradient``
    """
    evaluate = lml_at if lml_at is not None else estimator._lml_at
    with scratch_state(estimator, names):
        lml, grad = evaluate(theta, eval_gradient)
    if not clone_kernel:
        estimator._set_theta(np.asarray(theta, dtype=float))
    return lml_float((lml, grad)) if eval_gradient else lml_float(lml)


def prior_predict(
    kernel: Any, X: FloatArray, return_std: bool, return_cov: bool
) -> Any:
    """Return scikit-learn's prior predictions: zero mean, ``kernel`` covariance.

    Parameters
    ----------
    kernel : sklearn Kernel
        The prior covariance (the estimator's kernel as given).
    X : ndarray of shape (n_samples, n_features)
        Query points.
    return_std, return_cov : bool
        As in ``predict``.

    Returns
    -------
    y_mean : ndarray of shape (n_samples,)
    y_std or y_cov : ndarray, if asked for

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF
    >>> mean, std = prior_predict(RBF(), np.zeros((3, 1)), True, False)
    >>> mean.tolist(), std.tolist()
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    """
    mean = np.zeros(X.shape[0])
    if return_cov:
        return mean, np.asarray(kernel(X), dtype=float)
    if return_std:
        return mean, np.sqrt(np.maximum(np.asarray(kernel.diag(X), float), 0.0))
    return mean


def prior_predict_grid(
    kernels: Sequence[Any], coords: Sequence[FloatArray], return_std: bool
) -> Any:
    """Return prior predictions on a grid: zero mean, product of the factor diagonals.

    Parameters
    ----------
    kernels : sequence of sklearn Kernel
        One factor kernel per axis (for a ``SeparableSum``, its ``kernels``:
        per axis, that axis' kernel in each term).
    coords : sequence of ndarray of shape (m_d, p_d)
        Per-axis coordinates.
    return_std : bool
        Also return the prior standard deviation.

    Returns
    -------
    mean : ndarray of shape (m_1, ..., m_D)
    std : ndarray of shape (m_1, ..., m_D), if ``return_std``
    """
    shape = tuple(int(np.shape(c)[0]) for c in coords)
    mean = np.zeros(shape)
    if not return_std:
        return mean
    if kernels and isinstance(kernels[0], list):  # SeparableSum: kernels[d][r]
        terms = [[axis[r] for axis in kernels] for r in range(len(kernels[0]))]
    else:
        terms = [list(kernels)]
    var = sum(
        kron_outer([np.asarray(k.diag(c), float) for k, c in zip(term, coords)])
        for term in terms
    )
    return mean, np.sqrt(np.maximum(var, 0.0)).reshape(shape)


def safe_normalisation(y: FloatArray) -> tuple[float, float]:
    """Return the mean and standard deviation of the non-NaN ``y``, without overflow.

    The values are divided by their largest magnitude first, so targets
    near the float64 limit (1e200 and above) give finite statistics. A
    standard deviation below ``10 * eps`` times that magnitude (a constant
    target, up to rounding) gives 1, as scikit-learn's zero guard does.

    Examples
    --------
    >>> import numpy as np
    >>> mean, std = safe_normalisation(np.array([1e300, 3e300, np.nan]))
    >>> f"{mean:.3g} {std:.3g}"
    '2e+300 1e+300'
    """
    obs = np.asarray(y, dtype=float)
    obs = obs[~np.isnan(obs)]
    scale = float(np.max(np.abs(obs), initial=0.0))
    if scale == 0.0 or not np.isfinite(scale):
        return 0.0, 1.0
    unit = obs / scale
    std = float(np.std(unit))
    eps = float(np.finfo(float).eps)
    return float(np.mean(unit)) * scale, std * scale if std >= 10 * eps else 1.0


def validate_targets_with_nan(
    estimator: object, X: ArrayLike, y: ArrayLike, *, multi_output: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Validate ``fit(X, y)`` as scikit-learn does, but keep NaN in ``y``.

    The one rule for missing targets: NaN in ``y`` (as in a grid's ``Y``)
    marks a missing observation; ``X`` must be finite, and ``y`` may not
    hold infinite values. Everything else (shapes, ``n_features_in_``,
    feature names, ``y=None``) is ``sklearn.utils.validation.validate_data``.

    Parameters
    ----------
    estimator : estimator instance
        The estimator being fitted (``n_features_in_`` is set on it).
    X : array-like of shape (n_samples, n_features)
        Inputs.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Targets, NaN where missing (several columns only with
        ``multi_output``).
    multi_output : bool, default=False
        Accept a 2-D ``y`` (scikit-learn's ``multi_output``).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp import KroneckerGP
    >>> X, y = validate_targets_with_nan(KroneckerGP(), [[0.0], [1.0]], [1.0, np.nan])
    >>> y.tolist()
    [1.0, nan]
    """
    missing = None
    if y is not None:
        y_arr = np.asarray(y)
        if y_arr.dtype.kind == "f":
            missing = np.isnan(y_arr).reshape(-1)
            y = np.where(np.isnan(y_arr), 0.0, y_arr)
    X, y_out = validate_data(  # type: ignore[arg-type]
        estimator, X, y, y_numeric=True, dtype=np.float64, multi_output=multi_output
    )
    X_arr = np.asarray(X, dtype=np.float64)
    y_float = np.array(y_out, dtype=np.float64, order="C")
    if missing is not None and missing.size == y_float.size:
        y_float.reshape(-1)[missing] = np.nan
    return X_arr, y_float
