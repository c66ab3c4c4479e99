"""ProductGraphGP: exact GP regression with spectral covariances on product graphs."""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from kronecker_gp._grid import Grid
from kronecker_gp._typing import ArrayLike, FloatArray, IntArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.kernels._graph import check_nodes, laplacian_eigh
from kronecker_gp.linalg import kron_matvec, kron_outer
from kronecker_gp.models._contract import (
    check_conditioning,
    lml_float,
    query_lml,
    safe_normalisation,
    validate_targets_with_nan,
)
from kronecker_gp.models._optimize import (
    Label,
    check_optimizer_params,
    maximise_lml,
    param_label,
)
from kronecker_gp.solvers._graph import (
    CompletePath,
    GraphFactorization,
    SchurPath,
    SubgridPath,
    eigvec_rows,
    product_spectrum,
)

#: The sub-grid path stores one (n_o^P x n_o^P) block per fully observed
#: eigenvector; above this many float64 entries the Schur path is used.
SUBGRID_MAX_ENTRIES = 2**25

_Path = CompletePath | SubgridPath | SchurPath


def _log_bounds(bounds: object, name: str) -> FloatArray | None:
    """Return log-bounds, or None for ``"fixed"``; raise on anything else."""
    if isinstance(bounds, str) and bounds == "fixed":
        return None
    arr = np.asarray(bounds, dtype=float) if not isinstance(bounds, str) else None
    if arr is None or arr.shape != (2,) or not np.all(arr > 0) or arr[0] > arr[1]:
        raise ValueError(
            f'{name} must be (low, high) with 0 < low <= high, or "fixed"; '
            f"got {bounds!r}."
        )
    return np.log(arr)


def _positive(value: object, name: str, size: int | None = None) -> FloatArray:
    """Return ``value`` as positive finite floats (a scalar or ``size`` entries)."""
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.ndim != 1 or arr.size not in (1, size):
        want = "a positive float" + (f" or {size} positive floats" if size else "")
        raise ValueError(f"{name} must be {want}; got {value!r}.")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"{name} must be positive and finite; got {value!r}.")
    return arr


class ProductGraphGP(RegressorMixin, BaseEstimator):
    r"""Exact GP regression on a product of graphs with a spectral covariance.

    The nodes are the cells of the Cartesian product of ``D`` graphs (for
    example a sensor network x a time chain). The covariance is a function of
    the product graph's Laplacian :math:`L = L_1 \oplus \dots \oplus L_D`,
    a Matern or diffusion kernel on the product graph, which is in general
    *not* a Kronecker product of per-axis kernels. Its eigenvectors
    :math:`\bigotimes_d U_d` do not depend on the hyperparameters, so
    inference is exact at the cost of the separable model.

    Parameters
    ----------
    laplacians : list of array-like or scipy.sparse of shape (n_d, n_d)
        One graph Laplacian per axis (see
        :func:`~kronecker_gp.kernels.graph_laplacian`,
        :func:`~kronecker_gp.kernels.chain_laplacian`).
    kernel : {"matern", "diffusion"}, default="matern"
        The spectrum ``f`` (see Notes).
    nu : float, default=1.5
        Matern smoothness.
    nu_bounds : pair of float or "fixed", default="fixed"
        Bounds on ``nu``; ``"fixed"`` keeps it.
    kappa : float or array-like of shape (D,), default=1.0
        Matern length scale(s) in graph hops: one for the product graph, or
        one per axis (an anisotropic, weighted product graph).
    kappa_bounds : pair of float or "fixed", default=(1e-3, 1e3)
        Bounds on every entry of ``kappa``.
    beta : float or array-like of shape (D,), default=1.0
        Diffusion time(s), shared or per axis.
    beta_bounds : pair of float or "fixed", default=(1e-5, 1e5)
        Bounds on every entry of ``beta``.
    amplitude : float, default=1.0
        Mean prior variance over the nodes.
    amplitude_bounds : pair of float or "fixed", default=(1e-5, 1e5)
        Bounds on ``amplitude``.
    noise : float, default=1.0
        Variance of the iid Gaussian noise.
    noise_bounds : pair of float or "fixed", default=(1e-6, 1e5)
        Bounds on ``noise``.
    optimizer : "fmin_l_bfgs_b", callable or None, default="fmin_l_bfgs_b"
        As in ``GaussianProcessRegressor``; None keeps the hyperparameters.
    n_restarts_optimizer : int, default=0
        Extra optimiser runs from log-uniform starts within the bounds.
    normalize_y : bool, default=False
        Standardise the observed targets (predictions are transformed back).
    random_state : int, RandomState instance or None, default=None
        Seeds the optimiser restarts and (an int) the Schur path's probes.
    solver, cg_tol, cg_max_iter, n_probes
        Settings of the scattered-missing-cell solver, as in
        :class:`~kronecker_gp.KroneckerGP`.

    Attributes
    ----------
    theta_ : ndarray
        Fitted free log-hyperparameters, named by ``hyperparameter_names_``.
    hyperparameter_names_ : list of str
        ``amplitude``, ``kappa`` (or ``kappa_d``) / ``beta``, ``nu``, ``noise``,
        the fixed ones left out.
    amplitude_, noise_, nu_ : float
        Fitted values.
    kappa_, beta_ : ndarray of shape (1,) or (D,)
        The fitted scale(s) (the one of ``kernel``).
    shape_ : tuple of int
        Grid shape ``(n_1, ..., n_D)``.
    eigvals_, eigvecs_ : list of ndarray
        Per-axis Laplacian eigenpairs.
    alpha_ : ndarray of shape (N,)
        :math:`(K_{oo} + sI)^{-1} y_o` zero-padded to all cells, C order.
    log_marginal_likelihood_value_ : float
        Log marginal likelihood at ``theta_``.
    solver_info_ : SolverInfo
        The path: ``"complete"``, ``"subgrid"`` (whole nodes unobserved) or
        ``"schur-exact"``/``"schur-cg"`` (scattered missing cells).
    n_features_in_ : int
        ``D``, the node-index columns of ``X``.
    y_train_mean_, y_train_std_ : float
        Normalisation of the targets.
    fit_time_ : float
        Wall time of the last fit in seconds.

    Notes
    -----
    With :math:`L_d = U_d \operatorname{diag}(\lambda_d) U_d^T`,
    :math:`K = a\, U \operatorname{diag}(f/\bar f) U^T`,
    :math:`U = \bigotimes_d U_d`, where :math:`\bar f` is the mean of ``f``
    (unit mean variance: :math:`\operatorname{tr} K / N = a`) and

    .. math::
        f_{\mathrm{Matern}} = \Big(2\nu + \sum_d \kappa_d^2 \lambda_{d}\Big)^{-\nu}
        \propto \Big(\frac{2\nu}{\kappa^2} I + L\Big)^{-\nu}
        \ \text{(shared } \kappa), \qquad
        f_{\mathrm{diffusion}} = e^{-\sum_d \beta_d \lambda_d}.

    The diffusion kernel factorises, :math:`e^{-\beta(L_1 \oplus L_2)} =
    e^{-\beta L_1} \otimes e^{-\beta L_2}`; the Matern does not. Costs:
    :math:`O(\sum_d n_d^3 + N \sum_d n_d)` once, then :math:`O(N)` per
    likelihood and gradient on a complete grid; :math:`O(n_F (n_o^P)^2
    n_P)` when whole nodes of some axes are unobserved (see
    :class:`~kronecker_gp.solvers._graph.SubgridPath`);
    scattered NaN cells use the Schur-complement solver of ``KroneckerGP``.

    References
    ----------
    .. [1] Borovitskiy, V., Azangulov, I., Terenin, A., Mostowsky, P.,
       Deisenroth, M. P. and Durrande, N. (2021). Matern Gaussian processes
       on graphs. AISTATS.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.kernels import chain_laplacian
    >>> from kronecker_gp.models import ProductGraphGP
    >>> L_space, L_time = chain_laplacian(8, cyclic=True), chain_laplacian(20)
    >>> truth = ProductGraphGP([L_space, L_time], kappa=3.0, noise=0.01)
    >>> Y = truth.sample_grid(random_state=0)[..., 0]
    >>> gp = ProductGraphGP([L_space, L_time], noise=0.1).fit_grid(None, Y)
    >>> gp.hyperparameter_names_
    ['amplitude', 'kappa', 'noise']
    >>> mean, std = gp.predict_grid(return_std=True)
    >>> mean.shape, bool(np.sqrt(np.mean((mean - Y) ** 2)) < 0.2)
    ((8, 20), True)
    """

    def __init__(
        self,
        laplacians: Sequence[Any] | None = None,
        *,
        kernel: str = "matern",
        nu: float = 1.5,
        nu_bounds: Any = "fixed",
        kappa: float | ArrayLike = 1.0,
        kappa_bounds: Any = (1e-3, 1e3),
        beta: float | ArrayLike = 1.0,
        beta_bounds: Any = (1e-5, 1e5),
        amplitude: float = 1.0,
        amplitude_bounds: Any = (1e-5, 1e5),
        noise: float = 1.0,
        noise_bounds: Any = (1e-6, 1e5),
        optimizer: str | Callable[..., Any] | None = "fmin_l_bfgs_b",
        n_restarts_optimizer: int = 0,
        normalize_y: bool = False,
        random_state: int | np.random.RandomState | None = None,
        solver: str = "auto",
        cg_tol: float = 1e-10,
        cg_max_iter: int = 2000,
        n_probes: int = 32,
    ) -> None:
        self.laplacians = laplacians
        self.kernel = kernel
        self.nu = nu
        self.nu_bounds = nu_bounds
        self.kappa = kappa
        self.kappa_bounds = kappa_bounds
        self.beta = beta
        self.beta_bounds = beta_bounds
        self.amplitude = amplitude
        self.amplitude_bounds = amplitude_bounds
        self.noise = noise
        self.noise_bounds = noise_bounds
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.normalize_y = normalize_y
        self.random_state = random_state
        self.solver = solver
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.n_probes = n_probes

    # ------------------------------------------------------------ validation
    def _eigen(self) -> tuple[list[FloatArray], list[FloatArray]]:
        lap = self.laplacians
        if not isinstance(lap, (list, tuple)) or len(lap) == 0:
            raise ValueError(
                "laplacians must be a non-empty list of graph Laplacians, one per "
                f"axis; got {type(lap).__name__}. Build them with graph_laplacian."
            )
        pairs = [laplacian_eigh(x, f"laplacians[{d}]") for d, x in enumerate(lap)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _check_params(self, n_axes: int) -> dict[str, Any]:
        """Validate the hyperparameters; return their values and free specs."""
        if self.kernel not in ("matern", "diffusion"):
            raise ValueError(
                f'kernel must be "matern" or "diffusion"; got {self.kernel!r}.'
            )
        name = "kappa" if self.kernel == "matern" else "beta"
        scale = _positive(getattr(self, name), name, n_axes)
        specs = [
            ("amplitude", 1, _log_bounds(self.amplitude_bounds, "amplitude_bounds")),
            (
                "scale",
                scale.size,
                _log_bounds(getattr(self, f"{name}_bounds"), f"{name}_bounds"),
            ),
            ("nu", 1, _log_bounds(self.nu_bounds, "nu_bounds")),
            ("noise", 1, _log_bounds(self.noise_bounds, "noise_bounds")),
        ]
        if self.kernel == "diffusion":
            specs.pop(2)
        check_optimizer_params(self.optimizer, self.n_restarts_optimizer)
        if self.solver not in ("auto", "exact", "cg"):
            raise ValueError(
                f'solver must be "auto", "exact" or "cg"; got {self.solver!r}.'
            )
        return {
            "scale_name": name,
            "scale": scale,
            "amplitude": float(_positive(self.amplitude, "amplitude")[0]),
            "noise": float(_positive(self.noise, "noise")[0]),
            "nu": float(_positive(self.nu, "nu")[0]),
            "specs": [sp for sp in specs if sp[2] is not None],
        }

    def _check_nodes_per_axis(
        self, coords: Sequence[ArrayLike] | None, shape: tuple[int, ...]
    ) -> list[IntArray | None]:
        if coords is None:
            return [None] * len(shape)
        if not isinstance(coords, (list, tuple)) or len(coords) != len(shape):
            raise ValueError(
                f"coords must be None or a list of {len(shape)} node-index arrays, "
                f"one per graph; got {coords!r:.80}."
            )
        out: list[IntArray | None] = []
        for d, (c, n) in enumerate(zip(coords, shape)):
            if c is None:
                out.append(None)
                continue
            idx = check_nodes(c, n, f"coords[{d}]")
            if np.unique(idx).size != idx.size:
                raise ValueError(f"coords[{d}] repeats a node; give each node once.")
            out.append(idx)
        return out

    # ---------------------------------------------------------------- fitting
    def fit(self, X: ArrayLike, y: ArrayLike) -> ProductGraphGP:
        """Fit on rows of node indices ``X`` (one column per graph), any order.

        Parameters
        ----------
        X : array-like of shape (n_samples, D)
            Integer node indices; column ``d`` indexes ``laplacians[d]``.
        y : array-like of shape (n_samples,)
            Targets; NaN marks a missing observation, as NaN in
            :meth:`fit_grid`'s ``Y``.

        Returns
        -------
        self : ProductGraphGP
            The fitted estimator.

        Raises
        ------
        ValueError
            If an index is out of range or not an integer, or a cell repeats.
        """
        self.__dict__.pop("alpha_", None)  # unfitted until this fit succeeds
        X, y = validate_targets_with_nan(self, X, y)  # NaN: a missing cell
        ws, us = self._eigen()
        shape = tuple(w.size for w in ws)
        if X.shape[1] != len(shape):
            raise ValueError(
                f"X must have {len(shape)} columns (one node index per graph); "
                f"got {X.shape[1]}."
            )
        idx = [check_nodes(X[:, d], n, f"X[:, {d}]") for d, n in enumerate(shape)]
        cells = np.ravel_multi_index(tuple(idx), shape)
        if np.unique(cells).size != cells.size:
            raise ValueError("X repeats a grid cell; average or drop duplicate rows.")
        nodes = [np.unique(i) for i in idx]
        Y = np.full(shape, np.nan)
        Y[tuple(idx)] = y
        sub = Y[np.ix_(*nodes)]
        if np.isnan(sub).any():  # scattered rows: missing cells on the full grid
            return self._fit(ws, us, [None] * len(shape), Y)
        return self._fit(
            ws, us, [n if n.size < s else None for n, s in zip(nodes, shape)], sub
        )

    def fit_grid(
        self, coords: Sequence[ArrayLike] | None, Y: ArrayLike
    ) -> ProductGraphGP:
        """Fit on a sub-grid of the product graph given by node indices per axis.

        Parameters
        ----------
        coords : list of (array-like of int or None), or None
            Observed nodes of each graph (``Y``'s rows along that axis); a
            ``None`` entry means all nodes of that graph in order, and
            ``coords=None`` all nodes of every graph.
        Y : array-like of shape (len(coords[0]), ..., len(coords[D-1]))
            Targets; NaN marks a missing cell. Nodes absent from ``coords``
            are unobserved (and predicted).

        Returns
        -------
        self : ProductGraphGP
            The fitted estimator.

        Raises
        ------
        ValueError
            If shapes disagree, nodes repeat or are out of range.
        """
        self.__dict__.pop("alpha_", None)  # unfitted until this fit succeeds
        ws, us = self._eigen()
        shape = tuple(w.size for w in ws)
        nodes = self._check_nodes_per_axis(coords, shape)
        Y = as_float_array(Y, "Y", allow_nan=True)
        want = tuple(n if s is None else s.size for n, s in zip(shape, nodes))
        if Y.shape != want:
            raise ValueError(f"Y must have shape {want} (coords); got {Y.shape}.")
        for d, s in enumerate(nodes):  # a full axis in another order: sort it
            if s is not None and s.size == shape[d]:
                Y, nodes[d] = np.take(Y, np.argsort(s), axis=d), None
        return self._fit(ws, us, nodes, Y)

    def _fit(
        self,
        ws: list[FloatArray],
        us: list[FloatArray],
        nodes: list[IntArray | None],
        Y: FloatArray,
    ) -> ProductGraphGP:
        t0 = time.perf_counter()
        params = self._check_params(len(ws))
        self._scale_name, self._scale = params["scale_name"], params["scale"].copy()
        self._specs = params["specs"]
        self.amplitude_, self.noise_, self.nu_ = (
            params["amplitude"],
            params["noise"],
            params["nu"],
        )
        self.eigvals_, self.eigvecs_ = ws, us
        self.shape_ = tuple(w.size for w in ws)
        self.n_features_in_ = len(ws)
        self._lam = _lam_parts(ws)
        self._solver = self._make_path(nodes, Y)
        if self.optimizer is not None and self._specs:
            self._optimise()
        self._fact = self._factorize(self._theta(), False)
        self.log_marginal_likelihood_value_ = self._fact.lml
        self.theta_ = self._theta()
        self.hyperparameter_names_ = self._names()
        setattr(self, f"{self._scale_name}_", self._scale.copy())
        self.solver_info_ = self._fact.info
        self.alpha_ = self._fact.alpha()
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _make_path(self, nodes: list[IntArray | None], Y: FloatArray) -> _Path:
        """Normalise ``Y`` and pick the complete, sub-grid or Schur path."""
        obs = Y[~np.isnan(Y)]
        if obs.size == 0:
            raise ValueError("Y has no observed cell; nothing to fit.")
        self.y_train_mean_, self.y_train_std_ = 0.0, 1.0
        if self.normalize_y:  # no overflow near 1e200
            self.y_train_mean_, self.y_train_std_ = safe_normalisation(obs)
        Y = (Y - self.y_train_mean_) / self.y_train_std_
        full = np.full(self.shape_, np.nan)
        full[_sub_index(self.shape_, nodes)] = Y
        y = full.reshape(-1)
        observed = ~np.isnan(y)
        y = np.where(observed, y, 0.0)
        partial = [s for s in nodes if s is not None]
        if not np.isnan(Y).any() and not partial:
            return CompletePath(self.eigvecs_, y)
        n_op = int(np.prod([s.size for s in partial]))
        n_f = int(np.prod([n for n, s in zip(self.shape_, nodes) if s is None]))
        if not np.isnan(Y).any() and n_f * n_op * n_op <= SUBGRID_MAX_ENTRIES:
            return SubgridPath(self.eigvecs_, nodes, Y)
        seed = (
            self.random_state if isinstance(self.random_state, numbers.Integral) else 0
        )
        opts = {
            "method": self.solver,
            "tol": self.cg_tol,
            "seed": seed,
            "max_iter": self.cg_max_iter,
            "n_probes": self.n_probes,
        }
        missing = np.flatnonzero(~observed)
        return SchurPath(self.eigvals_, self.eigvecs_, y, missing, opts)

    def __sklearn_is_fitted__(self) -> bool:
        """Return whether the last ``fit`` succeeded (``alpha_`` is set last)."""
        return hasattr(self, "alpha_")

    # -------------------------------------------------------- hyperparameters
    def _names(self) -> list[str]:
        names = []
        for name, size, _ in self._specs:
            if name == "scale":
                base = self._scale_name
                names += [base] if size == 1 else [f"{base}_{d}" for d in range(size)]
            else:
                names.append(name)
        return names

    def _theta(self) -> FloatArray:
        values = {
            "amplitude": [self.amplitude_],
            "scale": list(self._scale),
            "nu": [self.nu_],
            "noise": [self.noise_],
        }
        return np.log([v for name, _, _ in self._specs for v in values[name]])

    def _set_theta(self, theta: FloatArray) -> None:
        pos = 0
        for name, size, _ in self._specs:
            vals = np.exp(theta[pos : pos + size])
            pos += size
            if name == "scale":
                self._scale = vals.copy()
            else:
                setattr(self, f"{name}_", float(vals[0]))

    def _bounds(self) -> FloatArray:
        return np.vstack([np.tile(b, (size, 1)) for _, size, b in self._specs])

    def _spectrum(self, eval_gradient: bool) -> tuple[FloatArray, FloatArray]:
        names = [n for n, _, _ in self._specs if n != "noise"] if eval_gradient else []
        return product_spectrum(
            self.kernel,
            self._lam,
            amplitude=self.amplitude_,
            scale=self._scale,
            nu=self.nu_,
            grad_names=names,
        )

    def _evaluate(
        self, theta: FloatArray, eval_gradient: bool
    ) -> tuple[float, FloatArray | None]:
        fact = self._factorize(theta, eval_gradient)
        return fact.lml, fact.grad

    def _factorize(self, theta: FloatArray, eval_gradient: bool) -> GraphFactorization:
        """Set ``theta`` and return the route's (new, immutable) factorisation."""
        self._set_theta(theta)
        g, dg = self._spectrum(eval_gradient)
        noise_free = any(n == "noise" for n, _, _ in self._specs)
        try:
            check_conditioning([g], self.noise_, self.kernel, type(self).__name__)
            return self._solver.factorize(
                g, self.noise_, dg if eval_gradient else None, noise_free
            )
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(
                f"{exc} The factorisation failed at theta={theta!r}; increase noise "
                "or its lower bound."
            ) from None

    def _optimise(self) -> None:
        self._set_theta(
            maximise_lml(
                self._evaluate,
                self._theta(),
                self._bounds(),
                optimizer=self.optimizer,
                n_restarts=int(self.n_restarts_optimizer),
                random_state=self.random_state,
                name=type(self).__name__,
                labels=self._labels(),
            )
        )

    def _labels(self) -> list[Label]:
        """Names and bounds (as given) of the theta entries, for the warnings."""
        out: list[Label] = []
        for name, size, _ in self._specs:
            attr = self._scale_name if name == "scale" else name
            out += param_label(attr, size, getattr(self, f"{attr}_bounds"))
        return out

    def log_marginal_likelihood(
        self,
        theta: ArrayLike | None = None,
        eval_gradient: bool = False,
        clone_kernel: bool = True,
    ) -> float | tuple[float, FloatArray]:
        """Return the exact log marginal likelihood of ``theta`` (and its gradient).

        Parameters
        ----------
        theta : array-like of shape (n_theta,), default=None
            Free log-hyperparameters in ``hyperparameter_names_`` order;
            ``None`` returns the fitted value.
        eval_gradient : bool, default=False
            Also return the gradient w.r.t. ``theta``.
        clone_kernel : bool, default=True
            As in ``GaussianProcessRegressor``: True leaves every fitted
            attribute unchanged; False moves the fitted hyperparameters
            (``amplitude_``, ``noise_``, ...) to ``theta`` afterwards, without
            refitting.

        Returns
        -------
        lml : numpy.float64
        grad : ndarray of shape (n_theta,), if ``eval_gradient``

        Raises
        ------
        ValueError
            If ``theta`` has the wrong length, or a gradient without theta.
        """
        check_is_fitted(self, "alpha_")  # requires_fit=False skips the plain check
        if theta is None:
            if eval_gradient:
                raise ValueError("Gradient can only be evaluated for theta!=None")
            return lml_float(self.log_marginal_likelihood_value_)
        theta = as_float_array(theta, "theta", ndim=1)
        if theta.shape != self.theta_.shape:
            raise ValueError(
                f"theta must have {self.theta_.size} entries "
                f"{self.hyperparameter_names_}; got {theta.size}."
            )
        # a factorisation is a new object: the fitted one is never touched
        return query_lml(
            self,
            theta,
            eval_gradient=eval_gradient,
            clone_kernel=clone_kernel,
            names=["amplitude_", "noise_", "nu_", "_scale"],
            lml_at=self._evaluate,
        )

    # ------------------------------------------------------------- prediction
    def _prior(self) -> tuple[list[FloatArray], FloatArray, tuple[int, ...]]:
        """Return the prior's eigenvectors, spectrum and grid shape (before fit)."""
        ws, us = self._eigen()
        params = self._check_params(len(ws))
        g = product_spectrum(
            self.kernel,
            _lam_parts(ws),
            amplitude=params["amplitude"],
            scale=params["scale"],
            nu=params["nu"],
            grad_names=[],
        )[0]
        return us, g, tuple(w.size for w in ws)

    def _prior_predict(
        self, X: ArrayLike, return_std: bool, return_cov: bool
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Zero mean and the prior's variances or covariance at cells ``X``."""
        us, g, shape = self._prior()
        X = np.asarray(validate_data(self, X, reset=False, dtype=np.float64))
        if X.shape[1] != len(shape):
            raise ValueError(
                f"X must have one column per graph ({len(shape)}); got {X.shape[1]}."
            )
        idx = [check_nodes(X[:, d], n, f"X[:, {d}]") for d, n in enumerate(shape)]
        rows = eigvec_rows(us, np.asarray(np.ravel_multi_index(tuple(idx), shape)))
        mean = np.zeros(X.shape[0])
        if return_cov:
            return mean, (rows * g) @ rows.T
        if return_std:
            return mean, np.sqrt(np.maximum((rows * rows) @ g, 0.0))
        return mean

    def _test_grid(self, nodes: list[IntArray | None]) -> Grid:
        """Return the sub-grid of ``nodes`` as a :class:`Grid` of node indices."""
        full = [np.arange(n) if s is None else s for n, s in zip(self.shape_, nodes)]
        return Grid([np.asarray(i, dtype=np.float64).reshape(-1, 1) for i in full])

    def _cells(self, X: ArrayLike) -> IntArray:
        X = np.asarray(validate_data(self, X, reset=False, dtype=np.float64))
        idx = [check_nodes(X[:, d], n, f"X[:, {d}]") for d, n in enumerate(self.shape_)]
        return np.asarray(np.ravel_multi_index(tuple(idx), self.shape_))

    def predict(
        self, X: ArrayLike, return_std: bool = False, return_cov: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        r"""Predict the latent function at cells ``X`` (rows of node indices).

        Parameters
        ----------
        X : array-like of shape (n_samples, D)
            Integer node indices, one column per graph.
        return_std : bool, default=False
            Also return the posterior standard deviation (noise excluded).
        return_cov : bool, default=False
            Also return the posterior covariance (noise excluded).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,), optional
        y_cov : ndarray of shape (n_samples, n_samples), optional

        Notes
        -----
        Before ``fit`` this is the prior (zero mean, the hyperparameters as
        given), as in ``GaussianProcessRegressor``.
        The mean is stored on the whole grid at fit time; the standard
        deviation is computed once for the whole grid (cost of the path);
        the covariance costs :math:`O(M N \sum_d n_d)` plus ``M`` solves.
        """
        if return_std and return_cov:
            raise RuntimeError(
                "At most one of return_std or return_cov can be requested."
            )
        if not hasattr(self, "alpha_"):  # unfitted: the prior, as sklearn
            return self._prior_predict(X, return_std, return_cov)
        cells = self._cells(X)
        parts = [
            np.asarray(i, np.float64) for i in np.unravel_index(cells, self.shape_)
        ]
        mean, second = self._fact.predict_points(
            None, parts, std=return_std, cov=return_cov
        )
        mean = mean * self.y_train_std_ + self.y_train_mean_
        if return_std:
            assert second is not None
            return mean, np.sqrt(second) * self.y_train_std_
        if not return_cov:
            return mean
        assert second is not None
        return mean, second * self.y_train_std_**2

    def predict_grid(
        self, coords: Sequence[ArrayLike] | None = None, return_std: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Predict on a sub-grid of nodes, returning grid-shaped arrays.

        Parameters
        ----------
        coords : list of (array-like of int or None), or None, default=None
            Nodes per axis (a ``None`` entry: all nodes of that graph);
            ``None`` is the whole product graph.
        return_std : bool, default=False
            Also return the posterior standard deviation (noise excluded).

        Returns
        -------
        mean : ndarray of shape (m_1, ..., m_D)
        std : ndarray of shape (m_1, ..., m_D), optional

        Notes
        -----
        Before ``fit`` this is the prior (zero mean, the hyperparameters as
        given).
        """
        if not hasattr(self, "alpha_"):  # unfitted: the prior
            us, g, shape = self._prior()
            ix = _sub_index(shape, self._check_nodes_per_axis(coords, shape))
            mean = np.zeros(shape)[ix]
            if not return_std:
                return mean
            var = kron_matvec([u * u for u in us], g).reshape(shape)[ix]
            return mean, np.sqrt(np.maximum(var, 0.0))
        test = self._test_grid(self._check_nodes_per_axis(coords, self.shape_))
        mean, var = self._fact.predict_grid(None, test, std=return_std)
        mean = mean.reshape(test.shape) * self.y_train_std_ + self.y_train_mean_
        if not return_std:
            return mean
        assert var is not None
        return mean, np.sqrt(var.reshape(test.shape)) * self.y_train_std_

    # ---------------------------------------------------------------- sampling
    def sample_grid(
        self,
        coords: Sequence[ArrayLike] | None = None,
        n_samples: int = 1,
        random_state: int | np.random.Generator | None = None,
    ) -> FloatArray:
        r"""Draw exact posterior (after fit) or prior (before) samples on a sub-grid.

        Parameters
        ----------
        coords : list of (array-like of int or None), or None, default=None
            Nodes per axis (a ``None`` entry: all nodes of that graph);
            ``None`` is the whole product graph.
        n_samples : int, default=1
            Number of samples.
        random_state : int, Generator or None, default=None
            Seed for reproducible samples.

        Returns
        -------
        ndarray of shape (m_1, ..., m_D, n_samples)
            Latent function samples (noise excluded).

        Notes
        -----
        Prior: :math:`U \operatorname{diag}(\sqrt g) z`. Posterior (Matheron's
        rule): :math:`f + K_{\cdot o} A_{oo}^{-1} (y_o - f_o - \varepsilon)`;
        cost :math:`O(N \sum_d n_d)` per sample plus the observed solve.
        """
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer; got {n_samples!r}."
            )
        rng = np.random.default_rng(random_state)
        if not hasattr(self, "alpha_"):  # prior, at the hyperparameters as given
            us, g, shape = self._prior()
            nodes = self._check_nodes_per_axis(coords, shape)
            z = rng.standard_normal((g.size, n_samples))
            f = kron_matvec(us, np.sqrt(g)[:, None] * z)
            return _take(f, shape, nodes)
        test = self._test_grid(self._check_nodes_per_axis(coords, self.shape_))
        f = self._fact.sample_grid(None, test, int(n_samples), rng)
        f = f * self.y_train_std_ + self.y_train_mean_
        return f.reshape(*test.shape, int(n_samples))

    def __sklearn_tags__(self) -> Any:
        """Declare a regressor that predicts from the prior unfitted (as sklearn)."""
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags

    def sample_y(
        self, X: ArrayLike, n_samples: int = 1, random_state: Any = 0
    ) -> FloatArray:
        """Draw posterior (after fit) or prior samples at cells ``X``.

        Parameters
        ----------
        X : array-like of shape (n_points, D)
            Integer node indices.
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=0
            Seed.

        Returns
        -------
        ndarray of shape (n_points, n_samples)
            Latent function samples (noise excluded).
        """
        rng = check_random_state(random_state)
        mean, cov = self.predict(X, return_cov=True)
        return rng.multivariate_normal(mean, cov, n_samples).T


def _lam_parts(ws: list[FloatArray]) -> list[FloatArray]:
    """Each axis' eigenvalues broadcast to the grid, flat in C order."""
    zeros = [np.zeros(w.size) for w in ws]
    return [
        kron_outer([w if e == d else z for e, z in enumerate(zeros)], np.add)
        for d, w in enumerate(ws)
    ]


def _take(
    f: FloatArray, shape: tuple[int, ...], nodes: list[IntArray | None]
) -> FloatArray:
    """Restrict grid columns ``f`` (N, k) to a sub-grid, shape (m_1, ..., k)."""
    return f.reshape(*shape, f.shape[1])[_sub_index(shape, nodes)]


def _sub_index(shape: tuple[int, ...], nodes: Sequence[IntArray | None]) -> Any:
    """Return the ``np.ix_`` index of a sub-grid (None: every node of an axis)."""
    return np.ix_(*[np.arange(n) if s is None else s for n, s in zip(shape, nodes)])
