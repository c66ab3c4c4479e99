r"""Observation models for Laplace inference: log densities and their derivatives.

Each likelihood is a small immutable object whose methods are pure functions of
the observations ``y``, the linear predictor :math:`\eta = f + o` (latent value
plus a known per-cell offset, e.g. the log exposure of a count) and the
likelihood's own hyperparameters ``params`` (log-space, possibly none):

* :meth:`derivatives` returns :math:`\log p(y|\eta)` and its first three
  derivatives in :math:`\eta` (the Laplace mode, its curvature
  :math:`W = -\partial^2 \log p` and the implicit term of the gradient of the
  approximate marginal likelihood, Rasmussen and Williams 2006, Alg. 5.1);
* :meth:`param_derivatives` returns the derivatives of :math:`\log p`,
  :math:`\partial \log p` and :math:`\partial^2 \log p` in each log-parameter;
* :meth:`mean` and :meth:`log_predictive` integrate over a Gaussian latent
  :math:`N(m, v)`: the mean response and the log predictive density of ``y``
  (closed forms where they exist, Gauss-Hermite quadrature otherwise).

Catalogue: :class:`Gaussian`, :class:`Poisson` (log link),
:class:`NegativeBinomial` (log link, learned dispersion), :class:`Bernoulli`
(logit or probit link) and :class:`StudentT` (learned scale, fixed degrees of
freedom; not log-concave, see :attr:`StudentT.log_concave`).

References
----------
.. [1] Rasmussen, C. E. and Williams, C. K. I. (2006). Gaussian Processes for
   Machine Learning. MIT Press, sec. 3.4 and 5.5.1.
.. [2] Vanhatalo, J., Jylanki, P. and Vehtari, A. (2009). Gaussian process
   regression with Student-t likelihood. NeurIPS.

Examples
--------
>>> import numpy as np
>>> from kronecker_gp.likelihoods import Poisson
>>> lik = Poisson()
>>> logp, d1, d2, d3 = lik.derivatives(np.array([3.0]), np.array([0.0]), np.zeros(0))
>>> float(d1[0]), float(d2[0])
(2.0, -1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import (
    digamma,
    expit,
    gammaln,
    log_ndtr,
    logsumexp,
    ndtr,
)

from kronecker_gp import _budgets
from kronecker_gp._typing import ArrayLike, FloatArray

#: Gauss-Hermite nodes of the predictive integrals (exact for polynomials of
#: degree < 2 * 64; the integrands here are smooth, so the error is far below
#: 1e-10 for latent standard deviations up to about 10).
N_QUADRATURE = 64
_LOG_2PI = _budgets.LOG_2PI

Derivs = tuple[FloatArray, FloatArray, FloatArray, FloatArray]
ParamDerivs = tuple[FloatArray, FloatArray, FloatArray]


def _nodes() -> tuple[FloatArray, FloatArray]:
    x, w = np.polynomial.hermite_e.hermegauss(N_QUADRATURE)
    return x, np.log(w) - 0.5 * _LOG_2PI


def gauss_hermite_log(logf: object, m: ArrayLike, v: ArrayLike) -> FloatArray:
    r"""Return :math:`\log \int \exp(\mathrm{logf}(x)) N(x | m, v) dx` per entry.

    Parameters
    ----------
    logf : callable
        ``logf(eta) -> log integrand`` elementwise on an array of shape (n, q).
    m, v : array-like of shape (n,)
        Means and variances of the Gaussian.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> r = gauss_hermite_log(lambda e: e, np.array([0.5]), np.array([2.0]))
    >>> bool(np.isclose(r[0], 0.5 + 1.0))  # log E[exp(x)] = m + v / 2
    True
    """
    x, logw = _nodes()
    m = np.asarray(m, dtype=float)[:, None]
    s = np.sqrt(np.maximum(np.asarray(v, dtype=float), 0.0))[:, None]
    return np.asarray(logsumexp(logf(m + s * x) + logw, axis=1))  # type: ignore[operator]


def laplace_centred_log_predictive(
    lik: Likelihood, y: ArrayLike, m: ArrayLike, v: ArrayLike, params: ArrayLike
) -> FloatArray:
    r"""Return :math:`\log \int p(y | f) N(f | m, v) df` by adaptive Gauss-Hermite.

    The nodes are centred at the integrand's mode :math:`f_0` (Newton steps
    on :math:`\log p(y|f) - (f - m)^2 / 2v` with the curvature floored at
    zero) and scaled by :math:`(W(f_0) + 1/v)^{-1/2}`, so that a sharply
    peaked likelihood (a large count) is resolved whatever the latent spread.

    Parameters
    ----------
    lik : likelihood
        Any likelihood of this module.
    y, m, v : array-like of shape (n,)
        Observations, latent means and variances (``v > 0``).
    params : array-like
        The likelihood's log-parameters.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> one, zero, two = np.ones(1), np.zeros(1), np.full(1, 2.0)
    >>> lik = Gaussian(0.5)
    >>> r = laplace_centred_log_predictive(lik, one, zero, two, lik.initial_params())
    >>> bool(np.isclose(r[0], -0.5 * (np.log(2 * np.pi * 2.5) + 1 / 2.5)))
    True
    """
    ys: FloatArray = np.asarray(y, dtype=float).reshape(-1)
    ms: FloatArray = np.asarray(m, dtype=float).reshape(-1)
    vs: FloatArray = np.maximum(np.asarray(v, dtype=float).reshape(-1), 1e-300)
    f = ms.copy()
    for _ in range(50):
        _, d1, d2, _ = lik.derivatives(ys, f, params)
        grad = d1 - (f - ms) / vs
        step = grad / (np.maximum(-d2, 0.0) + 1.0 / vs)
        f = f + step
        if np.all(np.abs(step) <= 1e-12 * (1.0 + np.abs(f))):
            break
    w_mode = np.maximum(-lik.derivatives(ys, f, params)[2], 0.0)
    sd = 1.0 / np.sqrt(w_mode + 1.0 / vs)
    x, logw = _nodes()
    nodes = f[:, None] + sd[:, None] * x[None, :]
    logp = lik.derivatives(ys[:, None], nodes, params)[0]
    log_prior = -0.5 * (nodes - ms[:, None]) ** 2 / vs[:, None]
    terms = logw + 0.5 * x * x + logp + log_prior
    return np.asarray(logsumexp(terms, axis=1) + np.log(sd) - 0.5 * np.log(vs))


def _check_params(params: ArrayLike, n: int, name: str) -> FloatArray:
    p = np.asarray(params, dtype=float).reshape(-1)
    if p.shape[0] != n:
        raise ValueError(f"{name} takes {n} log-parameters; got {p.shape[0]}.")
    return p


@dataclass(frozen=True)
class Gaussian:
    """Gaussian noise with learned variance (Laplace is then exact).

    Parameters
    ----------
    noise : float, default=1.0
        Initial noise variance (``params = [log(noise)]``).
    """

    noise: float = 1.0
    log_concave = True
    param_names = ("noise",)

    def initial_params(self) -> FloatArray:
        """Return the starting log-parameters."""
        return np.log([float(self.noise)])

    def check_y(self, y: FloatArray) -> None:
        """Accept any finite targets."""

    def derivatives(self, y: FloatArray, eta: FloatArray, params: ArrayLike) -> Derivs:
        """Return log p and its first three derivatives in ``eta``."""
        s2 = float(np.exp(_check_params(params, 1, "Gaussian")[0]))
        r = y - eta
        logp = -0.5 * (_LOG_2PI + np.log(s2) + r * r / s2)
        return logp, r / s2, np.full_like(r, -1.0 / s2), np.zeros_like(r)

    def param_derivatives(
        self, y: FloatArray, eta: FloatArray, params: ArrayLike
    ) -> ParamDerivs:
        """Return d/dlog(noise) of log p, d1 and d2, each of shape (1, n)."""
        s2 = float(np.exp(_check_params(params, 1, "Gaussian")[0]))
        r = y - eta
        return (
            (-0.5 + 0.5 * r * r / s2)[None],
            (-r / s2)[None],
            np.full((1, r.size), 1.0 / s2),
        )

    def mean(self, m: ArrayLike, v: ArrayLike, params: ArrayLike) -> FloatArray:
        """Return the predictive mean of y."""
        return np.asarray(m, dtype=float)

    def log_predictive(
        self, y: ArrayLike, m: ArrayLike, v: ArrayLike, params: ArrayLike
    ) -> FloatArray:
        """Return the log predictive density of ``y`` (closed form)."""
        s2 = float(np.exp(_check_params(params, 1, "Gaussian")[0]))
        tot = np.asarray(v, dtype=float) + s2
        r = np.asarray(y, dtype=float) - np.asarray(m, dtype=float)
        return np.asarray(-0.5 * (_LOG_2PI + np.log(tot) + r * r / tot))


def _check_counts(y: FloatArray) -> None:
    if np.any(y < 0) or np.any(y != np.round(y)):
        bad = y[(y < 0) | (y != np.round(y))][:3]
        raise ValueError(
            f"y must hold non-negative integer counts; got values such as {bad}."
        )


@dataclass(frozen=True)
class Poisson:
    r"""Poisson counts with log link: :math:`y \sim \mathrm{Poisson}(e^{\eta})`."""

    log_concave = True
    param_names = ()

    def initial_params(self) -> FloatArray:
        """Return the starting log-parameters (none)."""
        return np.zeros(0)

    def check_y(self, y: FloatArray) -> None:
        """Require non-negative integer counts."""
        _check_counts(y)

    def derivatives(self, y: FloatArray, eta: FloatArray, params: ArrayLike) -> Derivs:
        """Return log p and its first three derivatives in ``eta``."""
        _check_params(params, 0, "Poisson")
        mu = np.exp(eta)
        return y * eta - mu - gammaln(y + 1.0), y - mu, -mu, -mu

    def param_derivatives(
        self, y: FloatArray, eta: FloatArray, params: ArrayLike
    ) -> ParamDerivs:
        """Return empty (0, n) arrays: no parameters."""
        z = np.zeros((0, np.size(eta)))
        return z, z, z

    def mean(self, m: ArrayLike, v: ArrayLike, params: ArrayLike) -> FloatArray:
        r"""Return :math:`E[e^{\eta}] = e^{m + v/2}`."""
        return np.exp(np.asarray(m, dtype=float) + 0.5 * np.asarray(v, dtype=float))

    def log_predictive(
        self, y: ArrayLike, m: ArrayLike, v: ArrayLike, params: ArrayLike
    ) -> FloatArray:
        """Return the log predictive probability of the counts (adaptive G-H)."""
        return laplace_centred_log_predictive(self, y, m, v, params)


@dataclass(frozen=True)
class NegativeBinomial:
    r"""Negative-binomial counts, mean :math:`\mu = e^{\eta}`, dispersion ``r``.

    :math:`\mathrm{Var}(y) = \mu + \mu^2 / r`; ``params = [log(r)]``.

    Parameters
    ----------
    dispersion : float, default=10.0
        Initial ``r`` (the Poisson limit is ``r -> inf``).
    """

    dispersion: float = 10.0
    log_concave = True
    param_names = ("dispersion",)

    def initial_params(self) -> FloatArray:
        """Return the starting log-parameters."""
        return np.log([float(self.dispersion)])

    def check_y(self, y: FloatArray) -> None:
        """Require non-negative integer counts."""
        _check_counts(y)

    def derivatives(self, y: FloatArray, eta: FloatArray, params: ArrayLike) -> Derivs:
        """Return log p and its first three derivatives in ``eta``."""
        r = float(np.exp(_check_params(params, 1, "NegativeBinomial")[0]))
        mu = np.exp(eta)
        rm = r + mu
        logp = (
            gammaln(y + r)
            - gammaln(r)
            - gammaln(y + 1.0)
            + r * (np.log(r) - np.log(rm))
            + y * (eta - np.log(rm))
        )
        d1 = r * (y - mu) / rm
        d2 = -r * (r + y) * mu / rm**2
        d3 = -r * (r + y) * mu * (r - mu) / rm**3
        return logp, d1, d2, d3

    def param_derivatives(
        self, y: FloatArray, eta: FloatArray, params: ArrayLike
    ) -> ParamDerivs:
        """Return d/dlog(r) of log p, d1 and d2, each of shape (1, n)."""
        r = float(np.exp(_check_params(params, 1, "NegativeBinomial")[0]))
        mu = np.exp(eta)
        rm = r + mu
        dlogp = digamma(y + r) - digamma(r) + np.log(r) - np.log(rm) + (mu - y) / rm
        dd1 = (y - mu) * mu / rm**2
        dd2 = -mu * (2.0 * r * mu + y * mu - r * y) / rm**3
        return r * dlogp[None], r * dd1[None], r * dd2[None]

    def mean(self, m: ArrayLike, v: ArrayLike, params: ArrayLike) -> FloatArray:
        r"""Return :math:`E[e^{\eta}] = e^{m + v/2}`."""
        return np.exp(np.asarray(m, dtype=float) + 0.5 * np.asarray(v, dtype=float))

    def log_predictive(
        self, y: ArrayLike, m: ArrayLike, v: ArrayLike, params: ArrayLike
    ) -> FloatArray:
        """Return the log predictive probability of the counts (adaptive G-H)."""
        return laplace_centred_log_predictive(self, y, m, v, params)


def logistic_normal_mean(m: ArrayLike, v: ArrayLike) -> FloatArray:
    r"""Return :math:`E[\sigma(f)]` for :math:`f \sim N(m, v)`, to about 1e-12.

    For :math:`\sqrt v \le 1` Gauss-Hermite in :math:`f`; above, the identity
    :math:`E[\sigma(f)] = P(\varepsilon < f) = \int \Phi((m - e) / \sqrt v)
    \, \sigma'(e) \, de` (:math:`\varepsilon` standard logistic) by the
    trapezoid rule on :math:`|e| \le 40` with step 1/4 (spectrally accurate:
    the integrand is analytic in a strip of half-width :math:`\pi`; the
    truncated tails weigh :math:`e^{-40}`). Gauss-Hermite alone loses accuracy
    (1e-3 at :math:`v = 100`) once the latent spread dwarfs the sigmoid's
    width.

    Parameters
    ----------
    m, v : array-like of shape (n,)
        Latent means and variances.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> p = logistic_normal_mean(np.array([0.0, 2.0]), np.array([1e4, 0.0]))
    >>> np.round(p, 6)
    array([0.5     , 0.880797])
    """
    ms: FloatArray = np.asarray(m, dtype=float).reshape(-1)
    vs: FloatArray = np.maximum(np.asarray(v, dtype=float).reshape(-1), 0.0)
    out = np.empty(ms.size)
    narrow = vs <= 1.0
    if np.any(narrow):
        out[narrow] = np.exp(
            gauss_hermite_log(lambda e: -np.logaddexp(0.0, -e), ms[narrow], vs[narrow])
        )
    wide = ~narrow
    if np.any(wide):
        e = np.arange(-160, 161) * 0.25
        w = 0.25 * expit(e) * expit(-e)
        z = (ms[wide, None] - e[None, :]) / np.sqrt(vs[wide])[:, None]
        out[wide] = ndtr(z) @ w
    return out


@dataclass(frozen=True)
class Bernoulli:
    r"""Binary labels in {0, 1} with a logit or probit link.

    :math:`p(y = 1 | \eta) = \sigma(\eta)` (``"logit"``) or
    :math:`\Phi(\eta)` (``"probit"``).

    Parameters
    ----------
    link : {"logit", "probit"}, default="logit"
    """

    link: str = "logit"
    log_concave = True
    param_names = ()

    def __post_init__(self) -> None:
        """Check the link."""
        if self.link not in ("logit", "probit"):
            raise ValueError(f'link must be "logit" or "probit"; got {self.link!r}.')

    def initial_params(self) -> FloatArray:
        """Return the starting log-parameters (none)."""
        return np.zeros(0)

    def check_y(self, y: FloatArray) -> None:
        """Require labels 0 or 1."""
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("y must hold binary labels 0 or 1 for Bernoulli.")

    def derivatives(self, y: FloatArray, eta: FloatArray, params: ArrayLike) -> Derivs:
        """Return log p and its first three derivatives in ``eta``."""
        _check_params(params, 0, "Bernoulli")
        s = 2.0 * y - 1.0
        if self.link == "logit":
            pi = expit(eta)
            logp = -np.logaddexp(0.0, -s * eta)
            w = pi * (1.0 - pi)
            return logp, y - pi, -w, -w * (1.0 - 2.0 * pi)
        z = s * eta
        logp = log_ndtr(z)
        lam = np.exp(-0.5 * z * z - 0.5 * _LOG_2PI - logp)  # phi(z) / Phi(z)
        dlam = -lam * (z + lam)
        d3 = s * (-dlam * (z + lam) - lam * (1.0 + dlam))
        return logp, s * lam, dlam, d3

    def param_derivatives(
        self, y: FloatArray, eta: FloatArray, params: ArrayLike
    ) -> ParamDerivs:
        """Return empty (0, n) arrays: no parameters."""
        z = np.zeros((0, np.size(eta)))
        return z, z, z

    def mean(self, m: ArrayLike, v: ArrayLike, params: ArrayLike) -> FloatArray:
        """Return P(y = 1): closed form for probit, Gauss-Hermite for logit."""
        m, v = np.asarray(m, dtype=float), np.asarray(v, dtype=float)
        if self.link == "probit":
            return np.asarray(ndtr(m / np.sqrt(1.0 + v)))
        return logistic_normal_mean(m, v)

    def log_predictive(
        self, y: ArrayLike, m: ArrayLike, v: ArrayLike, params: ArrayLike
    ) -> FloatArray:
        """Return the log predictive probability of the labels."""
        p1 = self.mean(m, v, params)
        y = np.asarray(y, dtype=float)
        return np.asarray(np.log(np.where(y == 1, p1, 1.0 - p1)))


@dataclass(frozen=True)
class StudentT:
    r"""Student-t noise (robust regression), learned scale, fixed ``df``.

    :math:`\log p = \log\Gamma(\frac{\nu+1}{2}) - \log\Gamma(\frac{\nu}{2})
    - \frac12 \log(\nu\pi\sigma^2) - \frac{\nu+1}{2}\log(1 + r^2/(\nu\sigma^2))`
    with :math:`r = y - \eta`; ``params = [log(sigma^2)]``. The curvature
    :math:`W` is negative where :math:`r^2 > \nu\sigma^2` (not log-concave),
    so the mode search takes damped Newton steps with :math:`\max(W, 0)`.

    Parameters
    ----------
    df : float, default=4.0
        Degrees of freedom (fixed).
    scale : float, default=1.0
        Initial :math:`\sigma^2`.
    """

    df: float = 4.0
    scale: float = 1.0
    log_concave = False
    param_names = ("scale",)

    def __post_init__(self) -> None:
        """Check ``df``."""
        if not float(self.df) > 0:
            raise ValueError(f"df must be positive; got {self.df!r}.")

    def initial_params(self) -> FloatArray:
        """Return the starting log-parameters."""
        return np.log([float(self.scale)])

    def check_y(self, y: FloatArray) -> None:
        """Accept any finite targets."""

    def derivatives(self, y: FloatArray, eta: FloatArray, params: ArrayLike) -> Derivs:
        """Return log p and its first three derivatives in ``eta``."""
        nu = float(self.df)
        a = nu * float(np.exp(_check_params(params, 1, "StudentT")[0]))
        r = y - eta
        d = a + r * r
        logp = (
            gammaln(0.5 * (nu + 1.0))
            - gammaln(0.5 * nu)
            - 0.5 * np.log(np.pi * a)
            - 0.5 * (nu + 1.0) * np.log1p(r * r / a)
        )
        d1 = (nu + 1.0) * r / d
        d2 = (nu + 1.0) * (r * r - a) / d**2
        d3 = -2.0 * (nu + 1.0) * r * (3.0 * a - r * r) / d**3
        return logp, d1, d2, d3

    def param_derivatives(
        self, y: FloatArray, eta: FloatArray, params: ArrayLike
    ) -> ParamDerivs:
        """Return d/dlog(scale) of log p, d1 and d2, each of shape (1, n)."""
        nu = float(self.df)
        a = nu * float(np.exp(_check_params(params, 1, "StudentT")[0]))
        r = y - eta
        d = a + r * r
        dlogp = 0.5 * nu / a - 0.5 * (nu + 1.0) / d
        dd1 = -(nu + 1.0) * r / d**2
        dd2 = -(nu + 1.0) * (3.0 * r * r - a) / d**3
        return a * dlogp[None], a * dd1[None], a * dd2[None]

    def mean(self, m: ArrayLike, v: ArrayLike, params: ArrayLike) -> FloatArray:
        """Return the predictive mean of y (the latent mean; ``df > 1``)."""
        return np.asarray(m, dtype=float)

    def log_predictive(
        self, y: ArrayLike, m: ArrayLike, v: ArrayLike, params: ArrayLike
    ) -> FloatArray:
        r"""Return the log predictive density of ``y`` (scale-mixture quadrature).

        The Student-t is a Gamma scale mixture of Gaussians, so
        :math:`\int t_\nu(y | f, \sigma^2) N(f | m, v) df = E_\tau[N(y | m,
        v + \sigma^2 / \tau)]` with :math:`\tau \sim \Gamma(\nu/2, \nu/2)`:
        a smooth one-dimensional integral, done by the trapezoid rule in
        :math:`\log\tau` (step 0.1, spectrally accurate), robust to the
        two-mode integrands of outliers.
        """
        nu = float(self.df)
        s2 = float(np.exp(_check_params(params, 1, "StudentT")[0]))
        # trapezoid rule in t = log(tau): the integrand is analytic in the strip
        # |Im t| < pi/2, where it grows by at most e^(nu/2); the step h keeps
        # the discretisation error e^(nu/2 - pi^2/h) below e^-40, and the
        # tails are cut where they weigh e^-40
        half = 0.5 * nu
        h = min(0.1, np.pi**2 / (half + 40.0))
        t = np.arange(-40.0 / (half + 0.5) - 5.0, np.log(2.0 + 160.0 / nu), h)
        tau = np.exp(t)
        logw = half * np.log(half) - gammaln(half) + half * t - half * tau + np.log(h)
        var = np.asarray(v, dtype=float).reshape(-1, 1) + s2 / tau[None, :]
        r = (np.asarray(y, dtype=float) - np.asarray(m, dtype=float)).reshape(-1, 1)
        logn = -0.5 * (_LOG_2PI + np.log(var) + r * r / var)
        return np.asarray(logsumexp(logn + logw, axis=1))


Likelihood = Gaussian | Poisson | NegativeBinomial | Bernoulli | StudentT

LIKELIHOODS: dict[str, type] = {
    "gaussian": Gaussian,
    "poisson": Poisson,
    "negative_binomial": NegativeBinomial,
    "bernoulli": Bernoulli,
    "student_t": StudentT,
}


def get_likelihood(likelihood: object) -> Likelihood:
    """Return a likelihood object from an instance or a catalogue name.

    Parameters
    ----------
    likelihood : str or likelihood instance
        One of ``"gaussian"``, ``"poisson"``, ``"negative_binomial"``,
        ``"bernoulli"``, ``"student_t"``, or an instance of those classes.

    Returns
    -------
    likelihood object

    Raises
    ------
    ValueError
        For an unknown name or object.

    Examples
    --------
    >>> get_likelihood("poisson")
    Poisson()
    """
    if isinstance(
        likelihood, Gaussian | Poisson | NegativeBinomial | Bernoulli | StudentT
    ):
        return likelihood
    if isinstance(likelihood, str) and likelihood in LIKELIHOODS:
        return LIKELIHOODS[likelihood]()  # type: ignore[no-any-return]
    raise ValueError(
        f"likelihood must be one of {sorted(LIKELIHOODS)} or an instance of "
        f"kronecker_gp.likelihoods' classes; got {likelihood!r}."
    )


__all__ = [
    "Bernoulli",
    "Gaussian",
    "NegativeBinomial",
    "Poisson",
    "StudentT",
    "gauss_hermite_log",
    "get_likelihood",
    "logistic_normal_mean",
]
