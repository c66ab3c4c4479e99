"""MultiTaskGP: exact multi-output GP regression with a task covariance."""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.gaussian_process.kernels import RBF, Kernel
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from kronecker_gp._grid import Grid, check_coords
from kronecker_gp._typing import ArrayLike, BoolArray, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels import CoregionalizationKernel, KroneckerKernel, SeparableSum
from kronecker_gp.kernels._multitask import check_int, default_loadings
from kronecker_gp.models._contract import (
    check_conditioning,
    lml_float,
    query_lml,
    safe_normalisation,
)
from kronecker_gp.models._kronecker_gp import KroneckerGP
from kronecker_gp.models._optimize import (
    Label,
    check_optimizer_params,
    kernel_labels,
    log_noise_bounds,
    maximise_lml,
    param_label,
)
from kronecker_gp.solvers._multitask import (
    ICMFactorization,
    MultiTaskFactorization,
    gradient_matrices,
    multitask_factorize,
    two_kron_eigh,
)
from kronecker_gp.solvers._multitask_iterative import (
    LMCFactorization,
    LMCSystem,
    lmc_evaluate,
)

_MODELS = ("icm", "lmc")
_TASK_NOISE = ("per_task", "shared")


def _check_rank(rank: object, n_tasks: int) -> int:
    return check_int(rank, "rank", 1, n_tasks)


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got "
            f"{value!r}."
        )
    return str(value)


class MultiTaskGP(RegressorMixin, BaseEstimator):
    r"""Multi-output GP regression with task covariances (ICM exactly, LMC by PCG).

    The ``T`` outputs at ``n`` inputs, stacked task by task, have covariance
    ``B (x) K + diag(noise) (x) I`` (the intrinsic coregionalization model,
    ICM), with ``K = kernel(X)`` and ``B`` the Gram of ``task_kernel`` on the
    task indices (by default :class:`~kronecker_gp.kernels.CoregionalizationKernel`,
    ``B = W W^T + diag(kappa)``). Each output borrows strength from the
    correlated others. ICM inference is exact: the per-task noise is whitened
    (Rakitsch et al. 2013) so that only the eigendecompositions of a ``T x T``
    and an ``n x n`` matrix are needed. Outputs missing at some rows
    (heterotopic data, ``NaN`` in ``Y``) are handled exactly through a Schur
    complement on the missing cells. The linear model of coregionalization
    (``model="lmc"``, ``sum_q B_q (x) K_q`` over ``n_latent`` latent
    processes) is solved by preconditioned conjugate gradients, its log
    marginal likelihood and gradient estimated with seeded probes (see
    Notes).

    Parameters
    ----------
    kernel : sklearn Kernel or list of Kernel, default=None
        Input kernel ``k(x, x')``; ``None`` means ``RBF(1.0)`` (the amplitudes
        live in ``B``). For ``model="lmc"``, a list of ``n_latent`` kernels,
        or one kernel cloned for every latent process.
    n_tasks : int, default=None
        Number of outputs; ``None`` takes the number of columns of ``Y``.
    rank : int, default=1
        Rank of ``W`` in the default task kernel.
    task_kernel : sklearn Kernel or list of Kernel, default=None
        Kernel on the task index column (values ``0..T-1``); ``None`` means
        ``CoregionalizationKernel(T, rank=rank)`` (for LMC, latent ``q``
        starts from the cosine loadings ``q * rank ...``, so that the latent
        processes differ). For ``model="lmc"``, a list of ``n_latent``.
    model : {"icm", "lmc"}, default="icm"
        ``"icm"``: one task covariance times one input kernel, exact.
        ``"lmc"``: a sum of ``n_latent`` such terms; with ``n_latent=1`` it is
        the ICM and exact, otherwise iterative.
    n_latent : int, default=1
        Number of latent processes ``Q`` (must be 1 for ICM).
    task_noise : {"per_task", "shared"}, default="per_task"
        One noise variance per task, or one for all.
    noise : float or array-like of shape (n_tasks,), default=1.0
        Initial noise variance(s).
    noise_bounds : pair of float or "fixed", default=(1e-6, 1e5)
        Bounds on every noise variance; ``"fixed"`` keeps ``noise``.
    optimizer : "fmin_l_bfgs_b", callable or None, default="fmin_l_bfgs_b"
        As in ``GaussianProcessRegressor``.
    n_restarts_optimizer : int, default=0
        Extra optimiser runs from uniform starts within the ``theta`` bounds.
    normalize_y : bool, default=False
        Standardise every task (observed values) before fitting; predictions
        are transformed back.
    random_state : int, RandomState instance or None, default=None
        Seeds the optimiser restarts and the LMC probes.
    max_missing : int, default=2000
        Largest number of missing cells handled by this class's exact Schur
        route (memory :math:`O(m T n)`). With more, the ICM or LMC is fitted
        as a :class:`~kronecker_gp.KroneckerGP` on the task x input-row grid
        (as :meth:`fit_grid` does; ``grid_gp_``), whose cost model picks an
        exact Schur, a dense or an iterative route; ``X`` must then have no
        repeated rows.
    cg_tol : float, default=1e-10
        LMC only: relative residual ``||r|| <= cg_tol ||b||`` of every CG
        solve. A solve that does not reach it warns (``ConvergenceWarning``).
    cg_maxiter : int, default=None
        LMC only: CG iteration cap per solve (None: 10 x the number of
        observed outputs).
    n_probes : int, default=16
        LMC only: probe vectors of the log-determinant and trace estimates.
    lanczos_steps : int, default=30
        LMC only: Lanczos steps per probe.
    verbose : int, default=0
        If positive, print the log marginal likelihood at each evaluation.

    Attributes
    ----------
    kernels_, task_kernels_ : list of Kernel
        The fitted input and task kernels, one pair per latent process.
    kernel_, task_kernel_ : Kernel
        The first pair (the ICM's kernels).
    noise_ : ndarray of shape (n_tasks,)
        Fitted noise variances (equal entries with ``task_noise="shared"``).
    task_covariance_ : ndarray of shape (n_tasks, n_tasks)
        ``B`` (LMC: ``sum_q B_q``, the output covariance at one input for
        unit-variance input kernels), in the units of the (normalised, if
        ``normalize_y``) targets.
    task_correlation_ : ndarray of shape (n_tasks, n_tasks)
        ``B_ij / sqrt(B_ii B_jj)``.
    theta_ : ndarray
        Fitted log-hyperparameters: per latent process the task kernel's then
        the input kernel's, then the log-noise(s) unless fixed.
    alpha_ : ndarray of shape (n_samples, n_tasks)
        ``Sigma^{-1} y`` reshaped like ``Y`` (zeros where ``Y`` is missing).
    X_train_ : ndarray of shape (n_samples, n_features)
        Training inputs (rows where every output is missing are dropped).
    log_marginal_likelihood_value_ : float
        Log marginal likelihood at ``theta_`` (LMC: the estimate).
    log_marginal_likelihood_stderr_ : float
        Standard error of that estimate over the probes (0 when exact).
    solver_ : {"exact", "pcg"}
        The path taken.
    solver_info_ : SolverInfo
        The route of the last fit and its diagnostics: ``"icm-exact"`` or
        ``"lmc-pcg"`` for rows, the grid route's (e.g. ``"axis-noise"``,
        ``"separable-sum-cg"``) after :meth:`fit_grid`.
    cg_iterations_ : list of int
        LMC: iterations of each CG solve in the final evaluation.
    n_tasks_ : int
        Number of outputs.
    n_features_in_ : int
        Number of columns of ``X``.
    y_train_mean_, y_train_std_ : ndarray of shape (n_tasks,)
        Per-task normalisation (zeros and ones without ``normalize_y``).
    fit_time_ : float
        Wall time of the last ``fit`` in seconds.
    grid_gp_ : KroneckerGP
        After :meth:`fit_grid` (or ``fit`` beyond ``max_missing``): the fitted
        grid model, task axis first, that predictions delegate to; its
        ``solver_info_`` (also ``solver_info_`` here) names the route.
        ``alpha_`` then has ``Y``'s shape, and ``kernels_`` holds per latent
        process a :class:`~kronecker_gp.kernels.KroneckerKernel` of the grid
        axes' factors.

    Notes
    -----
    With :math:`\tilde B = S^{-1/2} B S^{-1/2} = U_B W_B U_B^T`,
    :math:`S = \operatorname{diag}(\sigma^2)` and :math:`K = U_K W_K U_K^T`,

    .. math::
        B \otimes K + S \otimes I = (S^{1/2} \otimes I)(\tilde B \otimes K + I)
        (S^{1/2} \otimes I),

    so solves, the log-determinant and the gradient cost
    :math:`O(T^3 + n^3 + T n (T + n))` time and :math:`O(T^2 + n^2)` memory;
    the ``Tn x Tn`` covariance is never formed. With ``m`` missing cells add
    :math:`O(m^2 T n + m^3)` time and :math:`O(m T n)` memory.

    For the LMC, :math:`\Sigma = \sum_q B_q \otimes K_q + S \otimes I` is
    preconditioned by the exact inverse of its nearest Kronecker product
    (plus the noise), and each product with :math:`\Sigma` costs
    :math:`O(Q T n (T + n))`. The posterior mean is exact to ``cg_tol``. The
    log-determinant is the preconditioner's (exact) plus a stochastic Lanczos
    estimate of :math:`\operatorname{tr}\log(P^{-1/2} \Sigma P^{-1/2})`, and
    the gradient's trace terms are exact for :math:`P` plus a Hutchinson
    control variate; both use the same ``n_probes`` seeded probes, so the
    objective is deterministic. Their error falls as :math:`1/\sqrt{n_{probes}}`
    and vanishes when the latent processes share a kernel; the standard
    error is reported in ``log_marginal_likelihood_stderr_``. The variance
    needs one CG solve per test point and task.

    References
    ----------
    .. [1] Rakitsch, B., Lippert, C., Borgwardt, K. and Stegle, O. (2013). It is
       all in the noise: Efficient multi-task Gaussian process inference with
       structured residuals. NeurIPS 26.
    .. [2] Bonilla, E. V., Chai, K. M. A. and Williams, C. K. I. (2008).
       Multi-task Gaussian process prediction. NeurIPS 20.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp import MultiTaskGP
    >>> x = np.linspace(0, 5, 40)[:, None]
    >>> f = np.sin(x[:, 0])
    >>> Y = np.column_stack([f, -2 * f, 0.5 * f + 1]) + 0.05 * np.cos(7 * x)
    >>> gp = MultiTaskGP(normalize_y=True).fit(x, Y)
    >>> gp.predict(x).shape
    (40, 3)
    >>> gp.task_correlation_.round(1)
    array([[ 1., -1.,  1.],
           [-1.,  1., -1.],
           [ 1., -1.,  1.]])

    Missing outputs (``NaN``) and the linear model of coregionalization:

    >>> from sklearn.gaussian_process.kernels import RBF
    >>> Y[::3, 1] = np.nan
    >>> lmc = MultiTaskGP([RBF(1.0), RBF(0.2)], model="lmc", n_latent=2,
    ...                   optimizer=None, random_state=0).fit(x, Y)
    >>> lmc.solver_, lmc.predict(x).shape
    ('pcg', (40, 3))
    """

    def __init__(
        self,
        kernel: Kernel | None = None,
        *,
        n_tasks: int | None = None,
        rank: int = 1,
        task_kernel: Kernel | None = None,
        model: str = "icm",
        n_latent: int = 1,
        task_noise: str = "per_task",
        noise: float | ArrayLike = 1.0,
        noise_bounds: tuple[float, float] | str = (1e-6, 1e5),
        optimizer: str | Callable[..., Any] | None = "fmin_l_bfgs_b",
        n_restarts_optimizer: int = 0,
        normalize_y: bool = False,
        random_state: int | np.random.RandomState | None = None,
        max_missing: int = 2000,
        cg_tol: float = 1e-10,
        cg_maxiter: int | None = None,
        n_probes: int = 16,
        lanczos_steps: int = 30,
        verbose: int = 0,
    ) -> None:
        self.kernel = kernel
        self.n_tasks = n_tasks
        self.rank = rank
        self.task_kernel = task_kernel
        self.model = model
        self.n_latent = n_latent
        self.task_noise = task_noise
        self.noise = noise
        self.noise_bounds = noise_bounds
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.normalize_y = normalize_y
        self.random_state = random_state
        self.max_missing = max_missing
        self.cg_tol = cg_tol
        self.cg_maxiter = cg_maxiter
        self.n_probes = n_probes
        self.lanczos_steps = lanczos_steps
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, X: ArrayLike, y: ArrayLike) -> MultiTaskGP:
        """Fit on inputs ``X`` and outputs ``y``, ``NaN`` marking unobserved outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples, n_tasks) or (n_samples,)
            Outputs; ``NaN`` entries are not observed (heterotopic data). A
            1-D ``y`` is one task.

        Returns
        -------
        self : MultiTaskGP
            The fitted estimator.

        Raises
        ------
        ValueError
            If shapes disagree, a parameter is invalid, ``y`` has no observed
            value, or more than ``max_missing`` outputs are missing.
        """
        t0 = time.perf_counter()
        X, Y, observed = self._validate_train(X, y)
        self._check_params()
        keep = observed.any(axis=1)  # rows with no observed output carry no data
        X, Y, observed = X[keep], Y[keep], observed[keep]
        n_missing = int((~observed).sum())
        self.X_train_ = X
        for name in ("grid_gp_", "solver_info_"):  # a refit drops the grid model
            self.__dict__.pop(name, None)
        if n_missing > self.max_missing:
            self._fit_rows_on_grid(X, Y, n_missing)
            self.fit_time_ = time.perf_counter() - t0
            return self
        self._observed: BoolArray | None = None if observed.all() else observed.T
        self.y_train_mean_, self.y_train_std_ = self._normalisation(Y, observed)
        self._y = np.where(
            observed, (Y - self.y_train_mean_) / self.y_train_std_, 0.0
        ).T
        self._setup_hyperparameters()
        if self.optimizer is not None and self._bounds().shape[0] > 0:
            self._optimise()
        self._fact = self._evaluate(eval_gradient=False)[2]
        self.log_marginal_likelihood_value_ = self._fact.lml
        self.solver_info_ = self._fact.info
        self._store()
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _validate_train(
        self, X: ArrayLike, y: ArrayLike
    ) -> tuple[FloatArray, FloatArray, BoolArray]:
        X = np.asarray(validate_data(self, X, dtype=np.float64))
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is "
                "None."
            )
        Y = as_float_array(y, "y", ndim=(1, 2), allow_nan=True)
        self._y_1d = Y.ndim == 1
        Y = Y[:, None] if Y.ndim == 1 else Y
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                f"y must have one row per row of X ({X.shape[0]}); got {Y.shape[0]}."
            )
        if self.n_tasks is not None and Y.shape[1] != self.n_tasks:
            raise ValueError(
                "The number of targets seen in `y` is different from the parameter "
                f"`n_tasks`: y must have n_tasks={self.n_tasks} columns; got "
                f"{Y.shape[1]}."
            )
        observed = ~np.isnan(Y)
        if not observed.any():
            raise ValueError("y has no observed (non-NaN) value; nothing to fit.")
        self.n_tasks_ = int(Y.shape[1])
        return X, Y, observed

    def _check_params(self) -> None:
        _check_choice(self.model, "model", _MODELS)
        _check_choice(self.task_noise, "task_noise", _TASK_NOISE)
        q = self.n_latent
        if isinstance(q, bool) or not isinstance(q, numbers.Integral) or q < 1:
            raise ValueError(f"n_latent must be a positive integer; got {q!r}.")
        if self.model == "icm" and q != 1:
            raise ValueError(
                f'n_latent must be 1 with model="icm"; got {q}. Use model="lmc" for '
                "several latent processes."
            )
        for name in ("max_missing", "n_probes"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(
                    f"{name} must be a non-negative integer; got {value!r}."
                )
        if (
            not isinstance(self.lanczos_steps, numbers.Integral)
            or self.lanczos_steps < 1
        ):
            raise ValueError(
                f"lanczos_steps must be a positive integer; got {self.lanczos_steps!r}."
            )
        if not (isinstance(self.cg_tol, numbers.Real) and 0 < self.cg_tol < 1):
            raise ValueError(f"cg_tol must be in (0, 1); got {self.cg_tol!r}.")
        check_optimizer_params(self.optimizer, self.n_restarts_optimizer)

    def _per_latent(
        self, value: object, name: str, default: Callable[[int], Kernel]
    ) -> list[Kernel]:
        """Return ``n_latent`` cloned kernels from None, one kernel or a list."""
        q = int(self.n_latent)
        if value is None:
            return [default(i) for i in range(q)]
        items = list(value) if isinstance(value, (list, tuple)) else [value] * q
        if len(items) != q or not all(isinstance(k, Kernel) for k in items):
            raise TypeError(
                f"{name} must be a scikit-learn Kernel, a list of {q} kernels (one per "
                f"latent process) or None; got {value!r}."
            )
        return [clone(k) for k in items]

    def _initial_noise(self) -> FloatArray:
        t = self.n_tasks_
        try:
            noise = np.asarray(self.noise, dtype=float)
        except (TypeError, ValueError):
            noise = np.array(np.nan)
        shapes = [()] if self.task_noise == "shared" else [(), (t,)]
        if noise.shape not in shapes or not np.all(np.isfinite(noise) & (noise > 0)):
            want = (
                "a positive number"
                if self.task_noise == "shared"
                else f"a positive number or {t} positive numbers (one per task)"
            )
            raise ValueError(f"noise must be {want}; got {self.noise!r}.")
        return np.broadcast_to(noise, (t,)).astype(float)

    def _kernels_as_given(self, t: int) -> tuple[list[Kernel], list[Kernel]]:
        """Input and task kernels per latent process, as the parameters give them."""
        kernels = self._per_latent(self.kernel, "kernel", lambda q: RBF(1.0))
        return kernels, self._task_kernels_as_given(t)

    def _task_kernels_as_given(self, t: int) -> list[Kernel]:
        """Task kernels per latent process, as the parameters give them."""
        rank = self.rank
        return self._per_latent(
            self.task_kernel,
            "task_kernel",
            lambda q: CoregionalizationKernel(
                t, rank=rank, W=default_loadings(t, _check_rank(rank, t), q * rank)
            ),
        )

    def _prior_parts(self) -> tuple[list[Kernel], list[FloatArray], bool]:
        """Before fit: input kernels, task covariances ``B_q`` and the 1-D flag.

        The number of tasks is ``n_tasks``; without it, one task with 1-D
        outputs, as ``GaussianProcessRegressor`` with ``n_targets=None``.
        """
        self._check_params()
        t = 1 if self.n_tasks is None else check_int(self.n_tasks, "n_tasks", 1)
        kernels, tasks = self._kernels_as_given(t)
        index = np.arange(t, dtype=float)[:, None]
        return kernels, [np.asarray(k(index)) for k in tasks], self.n_tasks is None

    def _setup_hyperparameters(self) -> None:
        t = self.n_tasks_
        self.kernels_, self.task_kernels_ = self._kernels_as_given(t)
        self._tasks = np.arange(t, dtype=float)[:, None]
        self.noise_ = self._initial_noise()
        self._noise_log_bounds = log_noise_bounds(self.noise_bounds)
        for task in self.task_kernels_:
            task(self._tasks)  # validates n_tasks, rank, W, kappa early
        self.solver_ = "exact" if len(self.kernels_) == 1 else "pcg"
        if self.solver_ == "pcg":  # fixed probes: a deterministic LML estimate
            rng = check_random_state(self.random_state)
            self._xi = rng.standard_normal((self.n_probes, t, self.X_train_.shape[0]))

    def _normalisation(
        self, Y: FloatArray, observed: BoolArray
    ) -> tuple[FloatArray, FloatArray]:
        t = Y.shape[1]
        if not self.normalize_y:
            return np.zeros(t), np.ones(t)
        masked = np.where(observed, Y, np.nan)
        stats = [safe_normalisation(masked[:, j]) for j in range(t)]  # no overflow
        return np.array([m for m, _ in stats]), np.array([s for _, s in stats])

    # ------------------------------------------------------- hyperparameters
    @property
    def _pairs(self) -> list[Kernel]:
        """Task and input kernels interleaved, in theta order."""
        return [k for pair in zip(self.task_kernels_, self.kernels_) for k in pair]

    @property
    def _n_noise(self) -> int:
        if self._noise_log_bounds is None:
            return 0
        return 1 if self.task_noise == "shared" else self.n_tasks_

    def _bounds(self) -> FloatArray:
        log_bounds = self._noise_log_bounds
        noise = np.zeros((0, 2)) if log_bounds is None else log_bounds[None, :]
        parts = [np.reshape(k.bounds, (-1, 2)) for k in self._pairs]
        return np.vstack([*parts, np.repeat(noise, self._n_noise, axis=0)])

    def _theta(self) -> FloatArray:
        noise = np.log(self.noise_[: self._n_noise])
        return np.concatenate([*(k.theta for k in self._pairs), noise])

    def _set_theta(self, theta: FloatArray) -> None:
        start = 0
        for k in self._pairs:
            k.theta = theta[start : start + len(k.theta)]
            start += len(k.theta)
        if self._n_noise:
            self.noise_ = np.broadcast_to(
                np.exp(theta[start:]), self.noise_.shape
            ).copy()

    def _grams(self, eval_gradient: bool) -> tuple[list[Any], list[Any]]:
        """Per latent: task covariance ``B_q`` and input Gram ``K_q`` (+ gradients)."""
        bs = [k(self._tasks, eval_gradient=eval_gradient) for k in self.task_kernels_]
        ks = [k(self.X_train_, eval_gradient=eval_gradient) for k in self.kernels_]
        return bs, ks

    def _evaluate(
        self, eval_gradient: bool
    ) -> tuple[float, FloatArray, MultiTaskFactorization]:
        """Return the LML, its gradient (or empty) and the route's factorisation."""
        bs, ks = self._grams(eval_gradient)
        if self.solver_ == "pcg":
            return self._evaluate_lmc(bs, ks, eval_gradient)
        b, k = (bs[0][0], ks[0][0]) if eval_gradient else (bs[0], ks[0])
        try:
            eig = two_kron_eigh(np.asarray(b), np.asarray(k), self.noise_)
            # whitened by the noise: spectrum w1 (x) w2 + 1
            check_conditioning([eig.w1, eig.w2], 1.0, self.kernels_[0], "MultiTaskGP")
            post, lml = multitask_factorize(eig, self._y, self._observed)
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(
                f"{exc} The factorisation failed at theta={self._theta()!r}; increase "
                "noise or its lower bound."
            ) from None
        self.log_marginal_likelihood_stderr_ = 0.0
        fact = ICMFactorization(
            post,
            lml,
            None,
            task_cov=np.asarray(b),
            kernel=self.kernels_[0],
            X_train=self.X_train_,
        )
        if not eval_gradient:
            return lml, np.zeros(0), fact
        (_, db), (_, dk) = bs[0], ks[0]
        grads = [np.einsum("ijp,ij->p", db, gradient_matrices(post, "C"))]
        if dk.shape[2]:
            grads.append(np.einsum("ijp,ij->p", dk, gradient_matrices(post, "R")))
        if self._n_noise:
            # d Sigma / d log s_t = s_t e_t e_t^T (x) I
            g = self.noise_ * np.diag(gradient_matrices(post, "S"))
            grads.append(g if self._n_noise > 1 else np.array([g.sum()]))
        return lml, np.concatenate(grads), fact

    def _evaluate_lmc(
        self, bs: list[Any], ks: list[Any], eval_gradient: bool
    ) -> tuple[float, FloatArray, MultiTaskFactorization]:
        observed = (
            np.ones(self._y.shape, dtype=bool)
            if self._observed is None
            else self._observed
        )
        grams = ([b for b, _ in bs], [k for k, _ in ks]) if eval_gradient else (bs, ks)
        system = LMCSystem(
            [np.asarray(b) for b in grams[0]],
            [np.asarray(k) for k in grams[1]],
            self.noise_,
            observed,
            float(self.cg_tol),
            self.cg_maxiter,
        )
        mode = None if not self._n_noise else self.task_noise
        grads = (
            ([d for _, d in bs], [d for _, d in ks], mode) if eval_gradient else None
        )
        ev = lmc_evaluate(system, self._y, self._xi, int(self.lanczos_steps), grads)
        self.log_marginal_likelihood_stderr_ = ev.lml_stderr
        grad = ev.grad if ev.grad is not None else np.zeros(0)
        fact = LMCFactorization(ev, kernels=self.kernels_, X_train=self.X_train_)
        return ev.lml, grad, fact

    def _lml_at(
        self, theta: FloatArray, eval_gradient: bool
    ) -> tuple[float, FloatArray]:
        self._set_theta(theta)
        lml, grad, _ = self._evaluate(eval_gradient)
        return lml, grad

    def _optimise(self) -> None:
        self._set_theta(
            maximise_lml(
                self._lml_at,
                self._theta(),
                self._bounds(),
                optimizer=self.optimizer,
                n_restarts=int(self.n_restarts_optimizer),
                random_state=self.random_state,
                verbose=self.verbose,
                name=type(self).__name__,
                labels=self._labels(),
            )
        )

    def _labels(self) -> list[Label]:
        """Names and bounds of the theta entries, for the optimiser's warnings."""
        many = len(self.kernels_) > 1
        out: list[Label] = []
        for q, (task, k) in enumerate(zip(self.task_kernels_, self.kernels_)):
            at = f"[{q}]" if many else ""
            out += [(f"task_kernel{at}__{n}", m, b) for n, m, b in kernel_labels(task)]
            out += [(f"kernel{at}__{n}", m, b) for n, m, b in kernel_labels(k)]
        return out + param_label("noise", self._n_noise, self.noise_bounds)

    def _store(self) -> None:
        self._store_task_covariance()
        self.theta_ = self._theta()
        self.alpha_ = self._fact.alpha().T.copy()
        self.cg_iterations_: list[int] = []
        if isinstance(self._fact, LMCFactorization):
            self.cg_iterations_ = list(self._fact.ev.system.info.iterations)

    def log_marginal_likelihood(
        self,
        theta: ArrayLike | None = None,
        eval_gradient: bool = False,
        clone_kernel: bool = True,
    ) -> float | tuple[float, FloatArray]:
        """Return the exact log marginal likelihood of ``theta`` on the training data.

        Parameters
        ----------
        theta : array-like of shape (n_theta,), default=None
            Log-hyperparameters laid out like ``theta_``; ``None`` returns the
            fitted value.
        eval_gradient : bool, default=False
            Also return the gradient w.r.t. ``theta``.
        clone_kernel : bool, default=True
            As in ``GaussianProcessRegressor``: True leaves every fitted
            attribute unchanged; False moves the fitted kernels (and
            ``noise_``) to ``theta`` afterwards, without refitting.

        Returns
        -------
        lml : numpy.float64
            The log marginal likelihood (of the observed outputs only).
        grad : ndarray of shape (n_theta,)
            Its gradient, if ``eval_gradient``.

        Raises
        ------
        ValueError
            If ``theta`` has the wrong length, or ``eval_gradient`` without theta.
        """
        check_is_fitted(self, "alpha_")  # requires_fit=False skips the plain check
        if self._delegated and theta is not None:
            out = self.grid_gp_.log_marginal_likelihood(
                theta, eval_gradient=eval_gradient, clone_kernel=clone_kernel
            )
            if not clone_kernel:  # the grid model's kernels moved to theta
                self._store_delegated()
            return out  # type: ignore[no-any-return]
        if theta is None:
            if eval_gradient:
                raise ValueError("Gradient can only be evaluated for theta!=None")
            return lml_float(self.log_marginal_likelihood_value_)
        theta = as_float_array(theta, "theta", ndim=1)
        saved = self._theta()
        if theta.shape[0] != saved.shape[0]:
            sizes = [len(k.theta) for k in self._pairs]
            raise ValueError(
                f"theta must have {saved.shape[0]} entries (task and input kernels "
                f"per latent process {sizes}, log-noise {self._n_noise}); got "
                f"{theta.shape[0]}."
            )
        return query_lml(
            self,
            theta,
            eval_gradient=eval_gradient,
            clone_kernel=clone_kernel,
            names=[
                "kernels_",
                "task_kernels_",
                "kernel_",
                "task_kernel_",
                "noise_",
                "log_marginal_likelihood_stderr_",
            ],
        )

    def __sklearn_tags__(self) -> Any:
        """Declare a multi-output regressor (1-D targets too), prior before fit."""
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------ grid inputs
    def fit_grid(self, coords: Sequence[ArrayLike], Y: ArrayLike) -> MultiTaskGP:
        r"""Fit every task on a grid of inputs (the task axis in ``Y``'s last axis).

        The ``T`` outputs on a grid ``n_1 x ... x n_D`` are one Kronecker
        model on the grid ``T x n_1 x ... x n_D``, the task covariance as its
        first factor. The fit is delegated to
        :class:`~kronecker_gp.KroneckerGP` (stored as ``grid_gp_``), so every
        route of its solver layer serves multi-task data: the ICM
        (``B (x) K_1 (x) ... (x) K_D + S (x) I``) is exact at the cost of one
        complete-grid fit, with per-task noise whitened into the factors
        (``noise_axes=(0,)``) and heterotopic missing cells (``NaN`` in ``Y``)
        through the Schur complement, the spatio-temporal Kalman filter or a
        dense factor, whichever the cost model finds cheapest (no
        ``max_missing`` limit). The LMC
        (``sum_q B_q (x) K_1^q (x) ... (x) K_D^q``) is a
        :class:`~kronecker_gp.kernels.SeparableSum`, solved by conjugate
        gradients preconditioned with the nearest Kronecker product, its log
        marginal likelihood estimated with the standard error in
        ``log_marginal_likelihood_stderr_``.

        Parameters
        ----------
        coords : list of array-like
            One array per grid axis of the inputs, each (n_d,) or (n_d, p_d).
        Y : array-like of shape (n_1, ..., n_D, n_tasks)
            Outputs on the grid, the tasks last; ``NaN`` marks a missing cell
            (each task may miss its own cells).

        Returns
        -------
        self : MultiTaskGP
            The fitted estimator; :meth:`predict_grid`, :meth:`predict`,
            :meth:`predict_joint_cov` and :meth:`sample_y` then use the grid
            model (``predict`` takes rows with one block of columns per grid
            axis).

        Raises
        ------
        ValueError
            If ``Y`` is not the grid's shape plus a tasks axis, ``n_tasks``
            disagrees with it, or a parameter is invalid.
        TypeError
            If ``kernel`` is not one kernel per grid axis (see Notes).

        Notes
        -----
        On a grid ``kernel`` is ``None`` (``RBF(1.0)`` on every axis), a list
        with one kernel per grid axis, or with ``model="lmc"`` a list of
        ``n_latent`` such lists; one kernel is accepted for a one-axis grid.
        With ``normalize_y`` each task is standardised over its observed
        cells. With ``model="lmc"`` and ``task_noise="per_task"`` the
        per-task noise is whitened into every term's task factor
        (``noise_axes=(0,)`` of the ``SeparableSum``), so the CG route and its
        estimates (LML and gradient with their standard errors) cover it.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.gaussian_process.kernels import RBF
        >>> from kronecker_gp import MultiTaskGP
        >>> x, t = np.linspace(0, 1, 12), np.linspace(0, 2, 15)
        >>> f = np.sin(3 * x)[:, None] * np.cos(t)[None, :]
        >>> rng = np.random.default_rng(0)
        >>> Y = np.stack([f, 2 * f + 1], axis=-1)  # (12, 15, 2 tasks)
        >>> Y += 0.02 * rng.standard_normal(Y.shape)
        >>> Y[3:6, 4:9, 1] = np.nan  # the second task misses a block
        >>> gp = MultiTaskGP([RBF(0.5), RBF(1.0)], normalize_y=True)
        >>> gp = gp.fit_grid([x, t], Y)
        >>> gp.predict_grid([x, t]).shape
        (12, 15, 2)
        >>> gp.grid_gp_.solver_info_.path in ("axis-noise-schur-exact", "dense")
        True
        >>> truth = 2 * np.sin(3 * x[4]) * np.cos(t[6]) + 1
        >>> bool(abs(gp.predict_grid([x, t])[4, 6, 1] - truth) < 0.05)
        True
        """
        t0 = time.perf_counter()
        self._check_params()
        grid = check_coords(coords)
        values = as_float_array(Y, "Y", allow_nan=True)
        shape = tuple(c.shape[0] for c in grid)
        if values.ndim != len(grid) + 1 or values.shape[:-1] != shape:
            raise ValueError(
                f"Y must have the grid's shape {shape} plus a last axis of tasks; "
                f"got {values.shape}."
            )
        Y = np.moveaxis(values, -1, 0)  # the task axis first
        for name in ("X_train_", "grid_gp_", "solver_info_"):  # a refit starts anew
            self.__dict__.pop(name, None)
        self._check_task_count(Y.shape[0])
        if not (~np.isnan(Y)).any():
            raise ValueError("Y has no observed (non-NaN) value; nothing to fit.")
        self.n_features_in_ = int(sum(c.shape[1] for c in grid))
        self._y_1d = False
        self._fit_delegated([np.arange(Y.shape[0], dtype=float), *grid], Y, False)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _fit_rows_on_grid(self, X: FloatArray, Y: FloatArray, n_missing: int) -> None:
        """Beyond ``max_missing``: the task x input-row grid of KroneckerGP."""
        if np.unique(X, axis=0).shape[0] != X.shape[0]:
            raise ValueError(
                f"y has {n_missing} missing outputs, more than max_missing="
                f"{self.max_missing}, and X repeats rows, so the outputs cannot be "
                "laid on a task x input grid for the solver layer. Average the "
                "repeated rows, or raise max_missing (the in-house exact Schur route "
                "needs O(m T n) memory)."
            )
        t = Y.shape[1]
        self._fit_delegated([np.arange(t, dtype=float), X], Y.T, True)

    def _check_task_count(self, t: int) -> None:
        if self.n_tasks is not None and t != self.n_tasks:
            raise ValueError(
                "The number of targets seen in `y` is different from the parameter "
                f"`n_tasks`: Y must have n_tasks={self.n_tasks} tasks; got {t}."
            )
        self.n_tasks_ = int(t)

    def _grid_kernels(self, n_axes: int) -> list[list[Kernel]]:
        """Per latent process, one input kernel per grid axis (cloned)."""

        def per_axis(value: object, name: str) -> list[Kernel]:
            if value is None:
                return [RBF(1.0) for _ in range(n_axes)]
            if isinstance(value, Kernel) and n_axes == 1:
                return [clone(value)]
            items = list(value) if isinstance(value, (list, tuple)) else []
            if len(items) != n_axes or not all(isinstance(k, Kernel) for k in items):
                raise TypeError(
                    f"{name} must be a list of {n_axes} scikit-learn kernels (one per "
                    f"grid axis) or None with fit_grid; got {value!r}."
                )
            return [clone(k) for k in items]

        q = int(self.n_latent)
        value = self.kernel
        nested = isinstance(value, (list, tuple)) and all(
            isinstance(v, (list, tuple)) for v in value
        )
        if q > 1 and nested:
            assert isinstance(value, (list, tuple))
            if len(value) != q:
                raise TypeError(
                    f"kernel must hold {q} lists of per-axis kernels (one per latent "
                    f"process); got {len(value)}."
                )
            return [per_axis(v, f"kernel[{i}]") for i, v in enumerate(value)]
        return [per_axis(value, "kernel") for _ in range(q)]

    def _grid_model(self, inputs: list[list[Kernel]], tasks: list[Kernel]) -> Any:
        """Return the unfitted KroneckerGP of the task x input grid (tasks first)."""
        if len(inputs) == 1:
            kernels: Any = [tasks[0], *inputs[0]]
        else:
            kernels = SeparableSum([[b, *k] for b, k in zip(tasks, inputs)])
        per_task = self.task_noise == "per_task"
        start = self._initial_noise()
        noise: Any = start if per_task else float(start[0])
        gp = KroneckerGP(
            kernels,
            noise=noise,
            noise_bounds=self.noise_bounds,
            noise_axes=(0,) if per_task else None,
            optimizer=self.optimizer,
            n_restarts_optimizer=self.n_restarts_optimizer,
            random_state=self.random_state,
            cg_tol=self.cg_tol,
            n_probes=max(int(self.n_probes), 1),
            verbose=self.verbose,
        )
        if self.cg_maxiter is not None:
            gp.set_params(cg_max_iter=self.cg_maxiter)
        return gp

    def _fit_delegated(
        self, coords: list[FloatArray], Y: FloatArray, scattered: bool
    ) -> None:
        """Fit the task-first grid ``Y`` (NaN missing) through KroneckerGP."""
        t = Y.shape[0]
        observed = ~np.isnan(Y)
        flat = Y.reshape(t, -1).T
        self.y_train_mean_, self.y_train_std_ = self._normalisation(
            flat, observed.reshape(t, -1).T
        )
        shape = (t,) + (1,) * (Y.ndim - 1)
        scaled = (Y - self.y_train_mean_.reshape(shape)) / self.y_train_std_.reshape(
            shape
        )
        n_axes = len(coords) - 1
        tasks = self._task_kernels_as_given(t)
        inputs = (
            [[k] for k in self._kernels_as_given(t)[0]]
            if scattered
            else self._grid_kernels(n_axes)
        )
        self._noise_log_bounds = log_noise_bounds(self.noise_bounds)
        gp = self._grid_model(inputs, tasks).fit_grid(coords, scaled)
        self.grid_gp_ = gp
        self._grid_inputs = Grid(check_coords(coords[1:]))
        self._scattered = scattered
        self._store_delegated()

    def _store_delegated(self) -> None:
        """Read the fitted attributes off ``grid_gp_``."""
        gp, t = self.grid_gp_, self.n_tasks_
        q = int(self.n_latent)
        if q == 1:
            factors = [list(gp.kernels_)]
        else:
            factors = [list(term) for term in gp.kernel_.terms]
        self.task_kernels_ = [f[0] for f in factors]
        self.kernels_ = [
            f[1]
            if len(f) == 2
            else KroneckerKernel(f[1:], axes=self._grid_inputs.block_axes())
            for f in factors
        ]
        self._tasks = np.arange(t, dtype=float)[:, None]
        if self._noise_log_bounds is None:
            self.noise_ = self._initial_noise()
        elif self.task_noise == "per_task":
            self.noise_ = self._task_values(gp.grid_, np.asarray(gp.noise_[0]), 1.0)
        else:
            self.noise_ = np.full(t, float(gp.noise_))
        info = gp.solver_info_
        self.solver_info_ = info
        self.log_marginal_likelihood_stderr_ = float(info.lml_std_error)
        self.solver_ = "exact" if info.lml_std_error == 0 else "pcg"
        self.cg_iterations_ = [int(info.iterations)] if info.iterations else []
        self._store_task_covariance()
        self.theta_ = np.asarray(gp.theta_)
        self.log_marginal_likelihood_value_ = gp.log_marginal_likelihood_value_
        alpha = gp.alpha_.reshape(gp.grid_.shape)
        full = np.zeros((t, *gp.grid_.shape[1:]))
        kept = np.rint(gp.grid_.coords[0][:, 0]).astype(int)
        full[kept] = alpha
        self.alpha_ = np.moveaxis(full, 0, -1)
        if self._scattered:
            self.alpha_ = self._rows_from_grid(self.alpha_, gp)

    def _task_values(self, grid: Grid, values: FloatArray, fill: float) -> FloatArray:
        """Per-task values on the kept task slices, ``fill`` on dropped ones."""
        out = np.full(self.n_tasks_, fill)
        out[np.rint(grid.coords[0][:, 0]).astype(int)] = values
        return out

    def _rows_from_grid(self, values: FloatArray, gp: Any) -> FloatArray:
        """Map grid-ordered rows (kept input rows) back onto ``X_train_``."""
        out = np.zeros((self.X_train_.shape[0], self.n_tasks_))
        kept = gp.grid_.coords[1]
        if kept.shape[0] == self.X_train_.shape[0]:
            return values
        index = {tuple(r): i for i, r in enumerate(self.X_train_)}
        rows = [index[tuple(r)] for r in kept]
        out[rows] = values
        return out

    def _store_task_covariance(self) -> None:
        self.kernel_, self.task_kernel_ = self.kernels_[0], self.task_kernels_[0]
        self._bs = [np.asarray(k(self._tasks)) for k in self.task_kernels_]
        b = np.sum(self._bs, axis=0)
        self.task_covariance_ = b
        d = np.sqrt(np.diag(b))
        self.task_correlation_ = b / np.outer(d, d)

    @property
    def _delegated(self) -> bool:
        return hasattr(self, "grid_gp_") and hasattr(self, "alpha_")

    def _task_rows(self, X: FloatArray) -> FloatArray:
        """Rows ``(task, x)`` for every task and query row, task-major."""
        t, m = self.n_tasks_, X.shape[0]
        task = np.repeat(np.arange(t, dtype=float), m)[:, None]
        return np.hstack([task, np.tile(X, (t, 1))])

    def _delegated_predict(self, X: FloatArray, return_std: bool) -> Any:
        t, m = self.n_tasks_, X.shape[0]
        out = self.grid_gp_.predict(self._task_rows(X), return_std=return_std)
        mean, std = out if return_std else (out, None)
        mean = mean.reshape(t, m).T * self.y_train_std_ + self.y_train_mean_
        if std is None:
            return mean
        return mean, std.reshape(t, m).T * self.y_train_std_

    def _delegated_joint(self, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        t, m = self.n_tasks_, X.shape[0]
        mean, cov = self.grid_gp_.predict(self._task_rows(X), return_cov=True)
        joint = np.asarray(cov).reshape(t, m, t, m).transpose(1, 0, 3, 2)
        s = self.y_train_std_
        joint = joint * s[None, :, None, None] * s[None, None, None, :]
        return mean.reshape(t, m).T * s + self.y_train_mean_, joint

    def predict_grid(
        self, coords: Sequence[ArrayLike], return_std: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        r"""Predict every task on a grid of inputs (after :meth:`fit_grid`).

        Parameters
        ----------
        coords : list of array-like
            Per-axis query coordinates, each (m_d,) or (m_d, p_d), in the
            training axes' order.
        return_std : bool, default=False
            Also return the posterior standard deviation (noise excluded).

        Returns
        -------
        mean : ndarray of shape (m_1, ..., m_D, n_tasks)
        std : ndarray of the same shape, optional

        Notes
        -----
        Mode products through ``grid_gp_.predict_grid``: the cost of the grid
        model's prediction, never an ``M x N`` matrix.
        """
        if not self._delegated:
            raise NotFittedError(
                "This MultiTaskGP has no grid model: call fit_grid(coords, Y) before "
                "predict_grid."
            )
        tasks = np.arange(self.n_tasks_, dtype=float)
        out = self.grid_gp_.predict_grid([tasks, *coords], return_std=return_std)
        mean, std = out if return_std else (out, None)
        mean = np.moveaxis(mean, 0, -1) * self.y_train_std_ + self.y_train_mean_
        if std is None:
            return mean
        return mean, np.moveaxis(std, 0, -1) * self.y_train_std_

    # ------------------------------------------------------------ prediction
    def predict(
        self, X: ArrayLike, return_std: bool = False, return_cov: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        r"""Predict every task's latent function at inputs ``X``.

        Before ``fit`` this is the prior (zero mean, the kernels as given, for
        ``n_tasks`` tasks, or one task with 1-D outputs when it is None), as
        in ``GaussianProcessRegressor``; so are :meth:`predict_joint_cov` and
        :meth:`sample_y`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query inputs.
        return_std : bool, default=False
            Also return the posterior standard deviation (noise excluded).
        return_cov : bool, default=False
            Also return each task's posterior covariance over the query
            inputs (noise excluded), as ``GaussianProcessRegressor`` does for
            several targets. :meth:`predict_joint_cov` gives the covariances
            between tasks too.

        Returns
        -------
        y_mean : ndarray of shape (n_samples, n_tasks)
            Posterior means (shape (n_samples,) if ``y`` was 1-D in ``fit``).
        y_std : ndarray of shape (n_samples, n_tasks), optional
            Posterior standard deviations.
        y_cov : ndarray of shape (n_samples, n_samples, n_tasks), optional
            Per-task posterior covariances ((n_samples, n_samples) if ``y``
            was 1-D).

        Notes
        -----
        ICM: cost :math:`O(M n (n + T))` for ``M`` query points, plus
        :math:`O(M m T n)` for the variance with ``m`` missing training cells.
        LMC: the mean costs :math:`O(Q M n T)`, the variance :math:`M T`
        preconditioned CG solves.
        """
        if return_std and return_cov:
            raise RuntimeError(
                "At most one of return_std or return_cov can be requested."
            )
        X = np.asarray(validate_data(self, X, reset=False, dtype=np.float64))
        if return_cov:
            mean, joint = self._joint(X)
            cov = np.stack([joint[:, t, :, t] for t in range(joint.shape[1])], axis=2)
            return (mean[:, 0], cov[:, :, 0]) if self._squeeze() else (mean, cov)
        if self._delegated:
            out = self._delegated_predict(X, return_std)
            if not self._y_1d:
                return out  # type: ignore[no-any-return]
            return out[:, 0] if not return_std else (out[0][:, 0], out[1][:, 0])
        if not hasattr(self, "X_train_"):  # unfitted: the prior, as sklearn
            return self._prior_predict(X, return_std)
        check_is_fitted(self, "X_train_")
        mean, var = self._fact.predict_points(None, [X], std=return_std, cov=False)
        mean = mean * self.y_train_std_ + self.y_train_mean_
        if self._y_1d:
            mean = mean[:, 0]
        if var is None:
            return mean
        if np.any(var < 0):
            warnings.warn(
                "Predicted variances smaller than 0; setting those variances to 0.",
                RuntimeWarning,
                stacklevel=2,
            )
        std = np.sqrt(np.maximum(var, 0.0)) * self.y_train_std_
        return mean, std[:, 0] if self._y_1d else std

    def _squeeze(self) -> bool:
        """Whether outputs drop the task axis (1-D y at fit; n_tasks=None before)."""
        if hasattr(self, "X_train_") or self._delegated:
            return self._y_1d
        return self.n_tasks is None  # type: ignore[attr-defined]

    def _prior_predict(self, X: FloatArray, return_std: bool) -> Any:
        """Prior mean (zero) and standard deviation: sum_q diag(K_q) B_q[t, t]."""
        kernels, bs, squeeze = self._prior_parts()  # type: ignore[attr-defined]
        mean = np.zeros((X.shape[0], bs[0].shape[0]))
        var = sum(
            np.outer(np.asarray(k.diag(X)), np.diag(b)) for k, b in zip(kernels, bs)
        )
        std = np.sqrt(np.maximum(var, 0.0))
        if squeeze:
            mean, std = mean[:, 0], std[:, 0]
        return (mean, std) if return_std else mean

    def _joint(self, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean (M, T) and joint covariance (M, T, M, T), in target units."""
        if self._delegated:
            return self._delegated_joint(X)
        if not hasattr(self, "X_train_"):  # unfitted: sum_q B_q (x) K_q(X)
            kernels, bs, _ = self._prior_parts()  # type: ignore[attr-defined]
            joint = sum(
                np.einsum("ij,tu->itju", np.asarray(k(X)), b)
                for k, b in zip(kernels, bs)
            )
            return np.zeros((X.shape[0], bs[0].shape[0])), np.asarray(joint)
        mean, joint = self._fact.predict_points(None, [X], std=False, cov=True)
        assert joint is not None
        std = self.y_train_std_
        joint = joint * std[None, :, None, None] * std[None, None, None, :]
        return mean * std + self.y_train_mean_, joint

    def predict_joint_cov(self, X: ArrayLike) -> tuple[FloatArray, FloatArray]:
        r"""Posterior mean and the joint covariance of all tasks at a few inputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query inputs.

        Returns
        -------
        y_mean : ndarray of shape (n_samples, n_tasks)
        y_cov : ndarray of shape (n_samples, n_tasks, n_samples, n_tasks)
            ``y_cov[i, t, j, u]`` is the posterior covariance of task ``t`` at
            ``X[i]`` and task ``u`` at ``X[j]`` (noise excluded).

        Notes
        -----
        ICM: :math:`O(T M^2 (n + T^2))`; LMC: :math:`M T` preconditioned CG
        solves. Memory :math:`O(M^2 T^2)`.

        Examples
        --------
        >>> import numpy as np
        >>> from kronecker_gp import MultiTaskGP
        >>> X = np.linspace(0, 1, 6)[:, None]
        >>> Y = np.column_stack([np.sin(3 * X[:, 0]), np.cos(3 * X[:, 0])])
        >>> gp = MultiTaskGP(optimizer=None).fit(X, Y)
        >>> mean, cov = gp.predict_joint_cov(X[:2])
        >>> cov.shape
        (2, 2, 2, 2)
        """
        X = np.asarray(validate_data(self, X, reset=False, dtype=np.float64))
        return self._joint(X)  # before fit: the prior

    def sample_y(
        self, X: ArrayLike, n_samples: int = 1, random_state: Any = 0
    ) -> FloatArray:
        """Draw joint posterior samples of all tasks at inputs ``X``.

        Parameters
        ----------
        X : array-like of shape (n_points, n_features)
            Query inputs.
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=0
            As in ``GaussianProcessRegressor.sample_y``.

        Returns
        -------
        ndarray of shape (n_points, n_tasks, n_samples)
            Samples of the latent functions ((n_points, n_samples) if ``y``
            was 1-D in ``fit``), correlated across tasks as the posterior is.
        """
        rng = check_random_state(random_state)
        X = np.asarray(validate_data(self, X, reset=False, dtype=np.float64))
        mean, joint = self._joint(X)  # before fit: the prior
        size = mean.size
        draws = rng.multivariate_normal(
            mean.reshape(-1), joint.reshape(size, size), n_samples
        )  # (n_samples, M * T)
        out = draws.reshape(n_samples, *mean.shape).transpose(1, 2, 0)
        return out[:, 0, :] if self._squeeze() else out


__all__ = ["MultiTaskGP"]
