"""KroneckerLaplaceGP: counts and robust regression on grids (Laplace)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import validate_data

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp._validation import as_float_array
from kronecker_gp.likelihoods import (
    Bernoulli,
    Gaussian,
    Likelihood,
    NegativeBinomial,
    Poisson,
    StudentT,
    get_likelihood,
)
from kronecker_gp.models._laplace_base import LaplaceGPBase

#: The links each likelihood takes (the first is the default).
LINKS: dict[type, tuple[str, ...]] = {
    Poisson: ("log",),
    NegativeBinomial: ("log",),
    Gaussian: ("identity",),
    StudentT: ("identity",),
    Bernoulli: ("logit", "probit"),
}


class KroneckerLaplaceGP(RegressorMixin, LaplaceGPBase):
    r"""GP regression on a grid with a non-Gaussian likelihood (Laplace).

    The latent field :math:`f` has a product kernel over the grid axes and
    prior mean ``prior_mean_``; cell :math:`i` is observed through
    :math:`p(y_i | f_i + \log e_i)` with exposure :math:`e_i` (counts: the
    rate is :math:`e^{f}`, the mean count :math:`e_i e^{f_i}`). The posterior
    mode is found by damped Newton with every step a structured solve with
    :math:`I + W^{1/2} K W^{1/2}` (Flaxman et al. 2015); the kernel and
    likelihood hyperparameters maximise the Laplace approximate marginal
    likelihood (exact up to 1024 cells; above, its log-determinant and
    gradient traces are stochastic estimates, see ``lml_std_error_``).

    Parameters
    ----------
    kernels : list of sklearn Kernel, KroneckerKernel or None, default=None
        One kernel per grid axis (``None``: ``1.0 * RBF(1.0)``, fixed).
    axes : list of list of int, default=None
        Column groups of ``X``, one per kernel.
    likelihood : str or likelihood object, default="poisson"
        ``"poisson"``, ``"negative_binomial"``, ``"student_t"``,
        ``"gaussian"`` or ``"bernoulli"``, or an object from
        :mod:`kronecker_gp.likelihoods` (its parameters are the starting
        values, e.g. ``StudentT(df=4, scale=0.1)``).
    link : str or None, default=None
        ``"log"`` for counts, ``"identity"`` for Gaussian and Student-t,
        ``"logit"``/``"probit"`` for Bernoulli; ``None`` takes the first.
    mean : "auto" or float, default="auto"
        The constant prior mean of the latent: ``"auto"`` is
        ``log(sum y / sum exposure)`` for counts, the mean of ``y`` for
        Gaussian and Student-t, 0 for Bernoulli.
    learn_likelihood_params : bool, default=True
        Learn the likelihood's parameters (dispersion, scale, noise) with the
        kernels'.
    optimizer, n_restarts_optimizer, random_state
        As in ``KroneckerGP``.
    cg_tol : float, default=1e-10
        CG tolerance on grids above 1024 cells.
    n_probes : int, default=32
        Probes of the stochastic estimates on grids above 1024 cells.

    Attributes
    ----------
    likelihood_ : likelihood object
    likelihood_params_ : ndarray
        The fitted likelihood parameters (natural scale).
    prior_mean_ : float
    kernel_, kernels_, theta_, grid_, log_marginal_likelihood_value_
        As in ``KroneckerGP``.
    lml_std_error_ : float
        Standard error of an estimated LML (0 when exact).
    solver_info_ : dict
        Newton and CG iterations, whether the dense path was taken.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF
    >>> from kronecker_gp import KroneckerLaplaceGP
    >>> rng = np.random.default_rng(0)
    >>> x, t = np.linspace(0, 1, 15), np.linspace(0, 1, 12)
    >>> rate = np.exp(1 + np.sin(4 * x)[:, None] * np.cos(3 * t)[None, :])
    >>> Y = rng.poisson(rate).astype(float)
    >>> gp = KroneckerLaplaceGP([RBF(0.3), RBF(0.3)], optimizer=None)
    >>> gp = gp.fit_grid([x, t], Y)
    >>> mean_rate = np.exp(gp.predict_grid([x, t]))
    >>> bool(np.mean(np.abs(mean_rate - rate)) < 0.5)
    True
    """

    def __init__(
        self,
        kernels: Sequence[Any] | Any | None = None,
        *,
        axes: Sequence[Sequence[int]] | None = None,
        likelihood: str | Likelihood = "poisson",
        link: str | None = None,
        mean: str | float = "auto",
        learn_likelihood_params: bool = True,
        optimizer: str | Callable[..., Any] | None = "fmin_l_bfgs_b",
        n_restarts_optimizer: int = 0,
        random_state: int | np.random.RandomState | None = None,
        cg_tol: float = 1e-10,
        n_probes: int = 32,
    ) -> None:
        self.kernels = kernels
        self.axes = axes
        self.likelihood = likelihood
        self.link = link
        self.mean = mean
        self.learn_likelihood_params = learn_likelihood_params
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.random_state = random_state
        self.cg_tol = cg_tol
        self.n_probes = n_probes

    # ------------------------------------------------------------ hooks
    def _likelihood(self) -> Likelihood:
        lik = get_likelihood(self.likelihood)
        links = LINKS[type(lik)]
        link = links[0] if self.link is None else self.link
        if link not in links:
            raise ValueError(
                f"link must be one of {list(links)} for {type(lik).__name__}; "
                f"got {self.link!r}."
            )
        if isinstance(lik, Bernoulli) and link != lik.link:
            lik = Bernoulli(link)
        return lik

    def _learn_likelihood_params(self) -> bool:
        return bool(self.learn_likelihood_params)

    def _mean_offset(self, y: FloatArray, log_exposure: FloatArray) -> float:
        if self.mean != "auto":
            if isinstance(self.mean, str) or not np.isfinite(float(self.mean)):
                raise ValueError(
                    f'mean must be "auto" or a finite float; got {self.mean!r}.'
                )
            return float(self.mean)
        lik = self.likelihood_
        if isinstance(lik, Poisson | NegativeBinomial):
            total = max(float(np.sum(y)), 0.5)
            return float(np.log(total / np.sum(np.exp(log_exposure))))
        if isinstance(lik, Bernoulli):
            return 0.0
        return float(np.mean(y))

    # ------------------------------------------------------------ fitting
    def fit(
        self, X: ArrayLike, y: ArrayLike, exposure: ArrayLike | None = None
    ) -> KroneckerLaplaceGP:
        """Fit on rows ``X`` on a grid (any order); cells without a row are missing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Observations (counts for Poisson and negative binomial).
        exposure : array-like of shape (n_samples,), optional
            Positive exposure per row (the rate multiplies it); default 1.

        Returns
        -------
        self : KroneckerLaplaceGP

        Raises
        ------
        ValueError
            On invalid counts, exposures, shapes or a repeated grid cell.
        """
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        return self._fit_rows(  # type: ignore[no-any-return]
            np.asarray(X), np.asarray(y, dtype=float), exposure
        )

    def fit_grid(
        self,
        coords: Sequence[ArrayLike],
        Y: ArrayLike,
        exposure: ArrayLike | None = None,
    ) -> KroneckerLaplaceGP:
        """Fit on a grid given by per-axis coordinates and grid-shaped data.

        Parameters
        ----------
        coords : list of array-like
            One array per axis, each of shape (n_d,) or (n_d, p_d).
        Y : array-like of shape (n_1, ..., n_D)
            Observations; NaN marks a missing cell.
        exposure : array-like of shape (n_1, ..., n_D), optional
            Positive exposure per cell (ignored where ``Y`` is NaN).

        Returns
        -------
        self : KroneckerLaplaceGP
        """
        return self._fit_coords(coords, Y, exposure)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ prediction
    def _log_exposure(self, exposure: ArrayLike | None, n: int) -> FloatArray:
        if exposure is None:
            return np.zeros(n)
        e = as_float_array(exposure, "exposure", ndim=1)
        if e.shape != (n,) or np.any(e <= 0):
            raise ValueError(
                f"exposure must hold {n} positive values (one per row of X); "
                f"got shape {e.shape}."
            )
        return np.log(e)

    def predict_latent(
        self, X: ArrayLike, return_std: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return the latent mean (and std) at the rows of ``X``, prior mean included.

        For counts the latent is the log rate per unit exposure.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False

        Returns
        -------
        mean : ndarray of shape (n_samples,)
        std : ndarray of shape (n_samples,), if ``return_std``
        """
        mean, var = self._latent_points(self._check_X(X), return_std)
        mean = mean + self.prior_mean_
        return mean if var is None else (mean, np.sqrt(var))

    def predict(self, X: ArrayLike, exposure: ArrayLike | None = None) -> FloatArray:
        r"""Return the predictive mean response at the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        exposure : array-like of shape (n_samples,), optional
            Exposure of each row (default 1: the rate).

        Returns
        -------
        ndarray of shape (n_samples,)
            :math:`E[y]` under the Laplace posterior (counts:
            :math:`e \, E[e^{f}]`; Student-t/Gaussian: the latent mean).
        """
        X = self._check_X(X)
        mean, var = self._latent_points(X, True)
        assert var is not None
        eta = mean + self.prior_mean_ + self._log_exposure(exposure, X.shape[0])
        return self.likelihood_.mean(eta, var, self._lik_params)

    def predict_grid(
        self, coords: Sequence[ArrayLike], return_std: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return the latent mean (and std) on a grid, shaped like the grid.

        Parameters
        ----------
        coords : list of array-like
            Per-axis test coordinates.
        return_std : bool, default=False

        Returns
        -------
        mean : ndarray of shape (n_1, ..., n_D)
            Latent mean, prior mean included.
        std : ndarray of shape (n_1, ..., n_D), if ``return_std``
        """
        mean, var, test = self._latent_grid(coords, return_std)
        mean = (mean + self.prior_mean_).reshape(test.shape)
        if var is None:
            return mean
        return mean, np.sqrt(var).reshape(test.shape)

    def log_predictive_density(
        self, X: ArrayLike, y: ArrayLike, exposure: ArrayLike | None = None
    ) -> FloatArray:
        """Return the log predictive density of each held-out ``y`` at ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        exposure : array-like of shape (n_samples,), optional

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        yy = as_float_array(y, "y", ndim=1)
        if yy.shape[0] != X.shape[0]:
            raise ValueError(
                f"y has {yy.shape[0]} entries but X has {X.shape[0]} rows."
            )
        self.likelihood_.check_y(yy)
        mean, var = self._latent_points(X, True)
        assert var is not None
        eta = mean + self.prior_mean_ + self._log_exposure(exposure, X.shape[0])
        return self.likelihood_.log_predictive(yy, eta, var, self._lik_params)

    def score(  # type: ignore[override]
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        exposure: ArrayLike | None = None,
    ) -> float:
        """Return the mean held-out log predictive density (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional
        exposure : array-like of shape (n_samples,), optional

        Returns
        -------
        float
        """
        lpd = self.log_predictive_density(X, y, exposure)
        if sample_weight is None:
            return float(np.mean(lpd))
        weights = as_float_array(sample_weight, "sample_weight", ndim=1)
        return float(np.average(lpd, weights=weights))
