"""The coregionalization (task) kernel: ``B = W W^T + diag(kappa)`` on a task index."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from kronecker_gp._typing import ArrayLike, FloatArray, IntArray
from kronecker_gp._validation import as_float_array


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise ``ValueError``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        want = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be an integer {want}; got {value!r}.")
    return int(value)  # type: ignore[call-overload]


def default_loadings(n_tasks: int, rank: int, offset: int = 0) -> FloatArray:
    """Return the default starting loadings: DCT-II columns ``offset..offset+rank-1``.

    Column ``r`` is ``cos(pi (i + 1/2) r / n_tasks)``: column 0 is all ones
    (every pair of tasks starts positively correlated), the others are
    orthogonal to it and to each other. ``W = 0`` would be a stationary point
    of the likelihood (``dB/dW`` vanishes there) and equal columns stay equal
    under gradient steps, so the default breaks both symmetries.

    Parameters
    ----------
    n_tasks, rank : int
        The shape of ``W``.
    offset : int, default=0
        First DCT column (used to give each latent process of an LMC its own
        start).

    Returns
    -------
    ndarray of shape (n_tasks, rank)
        The loadings.

    Examples
    --------
    >>> default_loadings(3, 2).round(3)
    array([[ 1.   ,  0.866],
           [ 1.   ,  0.   ],
           [ 1.   , -0.866]])
    """
    i = np.arange(n_tasks)[:, None] + 0.5
    r = (np.arange(rank)[None, :] + offset) % max(n_tasks, 1)
    w = np.cos(np.pi * i * r / n_tasks)
    w[np.abs(w) < 1e-12] = 0.0  # exact zeros where the cosine vanishes
    return w


def _fmt(a: FloatArray) -> str:
    """Format an array on one line with 3 significant digits, for reprs."""
    if a.ndim == 1:
        return "[" + ", ".join(f"{v:.3g}" for v in a) + "]"
    return "[" + ", ".join(_fmt(row) for row in a) + "]"


def _check_bounds(bounds: object, name: str, *, positive: bool) -> object:
    """Return ``bounds`` after checking it is ``"fixed"`` or a valid pair."""
    if isinstance(bounds, str):
        if bounds != "fixed":
            raise ValueError(
                f'{name} must be a pair (low, high) or "fixed"; got {bounds!r}.'
            )
        return bounds
    arr = np.asarray(bounds, dtype=float)
    if (
        arr.shape != (2,)
        or not np.all(np.isfinite(arr))
        or arr[0] >= arr[1]
        or (positive and arr[0] <= 0)
    ):
        cond = "0 < low < high" if positive else "low < high, both finite"
        raise ValueError(f"{name} must be (low, high) with {cond}; got {bounds!r}.")
    return bounds


class CoregionalizationKernel(Kernel):
    r"""Task covariance ``B = W W^T + diag(kappa)`` indexed by an integer task column.

    ``k(t, t') = B[t, t']`` for task indices ``t, t'`` in ``0..n_tasks - 1``.
    Multiplied with an input kernel on a grid whose first axis is the task
    index, it gives the intrinsic coregionalization model (ICM) covariance
    ``B (x) K_x``: use it as the task factor of
    :class:`~kronecker_gp.kernels.KroneckerKernel`, of ``KroneckerGP`` (task x
    site x time is a 3-factor grid) or of :class:`~kronecker_gp.MultiTaskGP`.

    Parameters
    ----------
    n_tasks : int
        Number of tasks ``T`` (task indices ``0..T-1``).
    rank : int, default=1
        Number of columns of ``W`` (the rank of the correlated part), between
        1 and ``n_tasks``.
    W : array-like of shape (n_tasks, rank), default=None
        Initial loadings; ``None`` uses :func:`default_loadings` (a column of
        ones, then orthogonal cosine columns). Entries may be negative.
    kappa : float or array-like of shape (n_tasks,), default=1.0
        Initial task-specific variances (a scalar is used for every task);
        always ``n_tasks`` free hyperparameters.
    W_bounds : pair of float or "fixed", default=(-1e3, 1e3)
        Bounds on every entry of ``W`` (in ``W``'s own units).
    kappa_bounds : pair of float or "fixed", default=(1e-5, 1e5)
        Bounds on every entry of ``kappa``.

    Notes
    -----
    **Parametrisation.** scikit-learn's
    :class:`~sklearn.gaussian_process.kernels.Kernel` maps each hyperparameter
    to ``theta = log(value)``, which cannot represent a negative loading, and
    the loadings' signs carry the negative task correlations. Every
    alternative inside the log convention is worse: ``W = exp(theta)``
    forbids negative correlations, a fixed sign pattern cannot cross zero,
    ``W = P - N`` with ``P, N > 0`` is not identifiable. So
    ``W`` stays a signed hyperparameter (``get_params()["W"]`` is the matrix
    itself) and this class overrides ``theta`` and ``bounds`` so that its
    ``theta`` entries are the **signed log** ``arcsinh(W)``: smooth and odd,
    linear near zero (loadings cross zero freely) and
    :math:`\approx \operatorname{sign}(W) \log 2|W|` for large ``|W|``, the same
    scale-free steps that ``log`` gives the other hyperparameters. ``kappa``
    is positive and keeps ``theta = log(kappa)``. Compound kernels, ``clone``,
    ``clone_with_theta`` and ``GaussianProcessRegressor`` only use ``theta``
    and ``bounds`` and work unchanged; code that assumes
    ``theta == log(params)`` does not hold for ``W``.

    ``theta`` is ``[arcsinh(W).ravel(), log(kappa)]`` (``W`` row-major), minus
    fixed parts. The gradient of the Gram :math:`K_{ij} = B_{t_i t_j}`:

    .. math::
        \frac{\partial B}{\partial W_{ar}} = e_a w_r^T + w_r e_a^T, \quad
        \frac{\partial W_{ar}}{\partial \theta} = \sqrt{1 + W_{ar}^2}, \quad
        \frac{\partial B}{\partial \log \kappa_a} = \kappa_a e_a e_a^T.

    ``B`` is positive semi-definite by construction (positive definite when
    every ``kappa > 0``). Cost :math:`O(T^2 (r + n_\theta))` for ``B`` and its
    gradient, then a gather for the ``n x n`` Gram.

    References
    ----------
    .. [1] Goovaerts, P. (1997). Geostatistics for Natural Resources
       Evaluation. Oxford University Press (the linear model of
       coregionalization).
    .. [2] Bonilla, E. V., Chai, K. M. A. and Williams, C. K. I. (2008).
       Multi-task Gaussian process prediction. NeurIPS 20.
    .. [3] Alvarez, M. A., Rosasco, L. and Lawrence, N. D. (2012). Kernels for
       vector-valued functions: a review. Found. Trends Mach. Learn. 4(3).

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.kernels import CoregionalizationKernel
    >>> kernel = CoregionalizationKernel(3, W=[[1.0], [-0.5], [0.0]], kappa=0.1)
    >>> kernel.task_covariance()
    array([[ 1.1 , -0.5 ,  0.  ],
           [-0.5 ,  0.35,  0.  ],
           [ 0.  ,  0.  ,  0.1 ]])
    >>> tasks = np.array([[0], [1], [1]])
    >>> kernel(tasks)
    array([[ 1.1 , -0.5 , -0.5 ],
           [-0.5 ,  0.35,  0.35],
           [-0.5 ,  0.35,  0.35]])
    >>> kernel.theta.round(3)  # arcsinh(W), then log(kappa)
    array([ 0.881, -0.481,  0.   , -2.303, -2.303, -2.303])

    With an input kernel, as a factor of a product over column groups (this
    also works in ``GaussianProcessRegressor``):

    >>> from sklearn.gaussian_process.kernels import RBF
    >>> from kronecker_gp.kernels import KroneckerKernel
    >>> icm = KroneckerKernel([kernel, RBF(1.0)], axes=[[0], [1]])
    >>> X = np.array([[0, 0.0], [0, 1.0], [1, 0.0], [1, 1.0]])  # (task, x) rows
    >>> B, K = kernel.task_covariance()[:2, :2], RBF(1.0)(np.array([[0.0], [1.0]]))
    >>> bool(np.allclose(icm(X), np.kron(B, K)))
    True
    """

    def __init__(
        self,
        n_tasks: int,
        rank: int = 1,
        W: ArrayLike | None = None,
        kappa: float | ArrayLike = 1.0,
        *,
        W_bounds: tuple[float, float] | str = (-1e3, 1e3),
        kappa_bounds: tuple[float, float] | str = (1e-5, 1e5),
    ) -> None:
        self.n_tasks = n_tasks
        self.rank = rank
        self.W = W
        self.kappa = kappa
        self.W_bounds = W_bounds
        self.kappa_bounds = kappa_bounds

    # -- validated views of the parameters ------------------------------------------
    def _shape(self) -> tuple[int, int]:
        n_tasks = check_int(self.n_tasks, "n_tasks", 1)
        return n_tasks, check_int(self.rank, "rank", 1, n_tasks)

    def _loadings(self) -> FloatArray:
        n_tasks, rank = self._shape()
        if self.W is None:
            return default_loadings(n_tasks, rank)
        w = as_float_array(self.W, "W", ndim=(1, 2))
        if w.ndim == 1 and rank == 1:
            w = w[:, None]
        if w.shape != (n_tasks, rank):
            raise ValueError(
                f"W must have shape (n_tasks, rank) = ({n_tasks}, {rank}); got "
                f"{w.shape}."
            )
        return w

    def _kappas(self) -> FloatArray:
        n_tasks = self._shape()[0]
        k = as_float_array(self.kappa, "kappa", ndim=(0, 1))
        if k.ndim == 1 and k.shape[0] != n_tasks:
            raise ValueError(
                f"kappa must be a scalar or have n_tasks = {n_tasks} entries; got "
                f"{k.shape[0]}."
            )
        if np.any(k <= 0):
            raise ValueError(f"kappa must be positive; got {self.kappa!r}.")
        return np.broadcast_to(k, (n_tasks,)).copy()

    # -- hyperparameters --------------------------------------------------------------
    @property
    def hyperparameter_W(self) -> Hyperparameter:
        """The loadings ``W`` (``n_tasks * rank`` signed entries)."""
        n_tasks, rank = self._shape()
        bounds = _check_bounds(self.W_bounds, "W_bounds", positive=False)
        return Hyperparameter("W", "numeric", bounds, n_tasks * rank)

    @property
    def hyperparameter_kappa(self) -> Hyperparameter:
        """The task-specific variances ``kappa`` (``n_tasks`` positive entries)."""
        bounds = _check_bounds(self.kappa_bounds, "kappa_bounds", positive=True)
        return Hyperparameter("kappa", "numeric", bounds, self._shape()[0])

    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        """The hyperparameters in ``theta`` order: ``W``, then ``kappa``."""
        return [self.hyperparameter_W, self.hyperparameter_kappa]

    @property
    def theta(self) -> FloatArray:
        """``[arcsinh(W).ravel(), log(kappa)]`` without fixed parts (see Notes)."""
        parts = []
        if not self.hyperparameter_W.fixed:
            parts.append(np.arcsinh(self._loadings()).ravel())
        if not self.hyperparameter_kappa.fixed:
            parts.append(np.log(self._kappas()))
        return np.concatenate(parts) if parts else np.zeros(0)

    @theta.setter
    def theta(self, theta: ArrayLike) -> None:
        n_tasks, rank = self._shape()
        t = np.asarray(theta, dtype=np.float64).reshape(-1)
        n_w = 0 if self.hyperparameter_W.fixed else n_tasks * rank
        n_k = 0 if self.hyperparameter_kappa.fixed else n_tasks
        if t.shape[0] != n_w + n_k:
            raise ValueError(
                f"theta must have {n_w + n_k} entries ({n_w} for W, {n_k} for "
                f"kappa); got {t.shape[0]}."
            )
        if n_w:
            self.W = np.sinh(t[:n_w]).reshape(n_tasks, rank)
        if n_k:
            self.kappa = np.exp(t[n_w:])

    @property
    def bounds(self) -> FloatArray:
        """Bounds of ``theta``: ``arcsinh(W_bounds)``, then ``log(kappa_bounds)``."""
        parts = []
        hw, hk = self.hyperparameter_W, self.hyperparameter_kappa
        if not hw.fixed:
            parts.append(np.arcsinh(hw.bounds))
        if not hk.fixed:
            parts.append(np.log(hk.bounds))
        return np.vstack(parts) if parts else np.zeros((0, 2))

    # -- the task covariance --------------------------------------------------------
    def task_covariance(
        self, eval_gradient: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return ``B = W W^T + diag(kappa)`` and optionally its gradient.

        Parameters
        ----------
        eval_gradient : bool, default=False
            Also return ``dB / dtheta``.

        Returns
        -------
        B : ndarray of shape (n_tasks, n_tasks)
            The task covariance.
        B_gradient : ndarray of shape (n_tasks, n_tasks, n_dims)
            Only when ``eval_gradient``: the derivative w.r.t. each ``theta``
            entry.
        """
        w, kappa = self._loadings(), self._kappas()
        b = w @ w.T + np.diag(kappa)
        if not eval_gradient:
            return b
        n_tasks, rank = w.shape
        grads = []
        if not self.hyperparameter_W.fixed:
            # dB/dW_ar = e_a w_r^T + w_r e_a^T; dW/dtheta = cosh(arcsinh W)
            dw = np.zeros((n_tasks, n_tasks, n_tasks, rank))
            idx = np.arange(n_tasks)
            dw[idx, :, idx, :] += w[None, :, :]  # [a, j, r]: delta_ia W_jr
            dw[:, idx, idx, :] += w[:, None, :]  # [i, a, r]: delta_ja W_ir
            scale = np.sqrt(1.0 + w**2)
            grads.append((dw * scale).reshape(n_tasks, n_tasks, -1))
        if not self.hyperparameter_kappa.fixed:
            dk = np.zeros((n_tasks, n_tasks, n_tasks))
            dk[np.arange(n_tasks), np.arange(n_tasks), np.arange(n_tasks)] = kappa
            grads.append(dk)
        grad = (
            np.concatenate(grads, axis=2) if grads else np.zeros((n_tasks, n_tasks, 0))
        )
        return b, grad

    def task_correlation(self) -> FloatArray:
        """Return the task correlation ``B_ij / sqrt(B_ii B_jj)``.

        Returns
        -------
        ndarray of shape (n_tasks, n_tasks)
            The correlation matrix (ones on the diagonal).
        """
        b = np.asarray(self.task_covariance())
        d = np.sqrt(np.diag(b))
        return b / np.outer(d, d)

    def _tasks(self, X: ArrayLike, name: str) -> IntArray:
        n_tasks = self._shape()[0]
        arr = np.atleast_2d(as_float_array(X, name, ndim=(1, 2)))
        if arr.ndim == 2 and arr.shape[1] != 1:
            raise ValueError(
                f"{name} must have one column (the task index); got {arr.shape[1]}. "
                "Combine with input kernels through KroneckerKernel([task_kernel, "
                "...], axes=[[task_column], [...]])."
            )
        t = arr[:, 0]
        bad = (t != np.round(t)) | (t < 0) | (t >= n_tasks)
        if bad.any():
            raise ValueError(
                f"{name} must hold integer task indices in 0..{n_tasks - 1} "
                f"(n_tasks={n_tasks}); got {t[bad][:3].tolist()}."
            )
        return t.astype(np.intp)

    # -- the scikit-learn kernel protocol -------------------------------------------
    def __call__(
        self, X: ArrayLike, Y: ArrayLike | None = None, eval_gradient: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return ``K[i, j] = B[t_i, t_j]`` and optionally its gradient.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, 1)
            Integer task indices (as floats or ints).
        Y : array-like of shape (n_samples_Y, 1), default=None
            Right argument; ``None`` evaluates ``k(X, X)``.
        eval_gradient : bool, default=False
            Also return the gradient with respect to ``theta`` (``Y`` must be
            None).

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
            The Gram matrix.
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims)
            Only when ``eval_gradient`` is True.

        Raises
        ------
        ValueError
            If the indices are not integers in ``0..n_tasks-1``, ``X`` has more
            than one column, or ``Y`` is given with ``eval_gradient``.
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        tx = self._tasks(X, "X")
        if not eval_gradient:
            ty = tx if Y is None else self._tasks(Y, "Y")
            b = np.asarray(self.task_covariance())
            return b[np.ix_(tx, ty)]
        b, db = self.task_covariance(eval_gradient=True)
        return b[np.ix_(tx, tx)], db[np.ix_(tx, tx)]

    def diag(self, X: ArrayLike) -> FloatArray:
        """Return ``B[t_i, t_i]``, the diagonal of ``k(X)``."""
        tx = self._tasks(X, "X")
        return (np.sum(self._loadings() ** 2, axis=1) + self._kappas())[tx]

    def is_stationary(self) -> bool:
        """Return False: the covariance depends on the task identities."""
        return False

    @property
    def requires_vector_input(self) -> bool:
        """Always True: the task index is one numeric column."""
        return True

    def __repr__(self) -> str:
        """Return the class with ``n_tasks``, ``rank``, ``W`` and ``kappa`` rounded."""
        try:
            w, k = self._loadings(), self._kappas()
        except (TypeError, ValueError):
            return (
                f"CoregionalizationKernel(n_tasks={self.n_tasks!r}, rank={self.rank!r})"
            )
        return (
            f"CoregionalizationKernel(n_tasks={w.shape[0]}, rank={w.shape[1]}, "
            f"W={_fmt(w)}, kappa={_fmt(k)})"
        )


__all__ = ["CoregionalizationKernel", "default_loadings"]
