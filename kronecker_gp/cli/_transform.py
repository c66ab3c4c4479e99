"""Value transforms of ``kronecker-gp fit`` and the predictive table in data units.

The GP models ``g(y)`` (``g`` = identity, log or square root). Its posterior
at a cell is normal, ``g(y) ~ N(m, s^2)`` for the latent value and
``N(m, s^2 + noise)`` for a new observation, and everything printed is in the
data's units: the mean and sd of the back-transformed normal, and the 95 %
interval ``g^-1(m -+ 1.96 s_obs)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kronecker_gp._typing import FloatArray
from kronecker_gp.cli._source import CLIError

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054
TRANSFORMS = ("none", "log", "sqrt", "auto")
#: ``auto`` leaves a variable whose skewness is at most this as it is.
AUTO_SKEW = 0.5
#: Output columns after the input's, and what each means (for --help).
OUTPUT_COLUMNS = {
    "mean": "posterior mean of the value (for --transform log: exp(m + s^2/2), "
    "the mean, not the median exp(m); for sqrt: m^2 + s^2)",
    "sd": "posterior sd of the latent value, without the noise",
    "sd_obs": "sd of a new observation at the cell: latent sd and the fitted "
    "noise together",
    "lower95": "lower bound of the 95 % interval for a new observation",
    "upper95": "upper bound of the 95 % interval for a new observation "
    "(with a transform, the interval on the transformed scale, transformed back)",
}


def _skew(v: FloatArray) -> float:
    centred = v - v.mean()
    sd = np.sqrt(np.mean(centred**2))
    return float(np.mean(centred**3) / sd**3) if sd > 0 else 0.0


def forward(values: FloatArray, name: str, column: str) -> FloatArray:
    """Return ``g(values)`` (NaN kept), refusing values outside the domain."""
    finite = values[np.isfinite(values)]
    if name == "log" and finite.min() <= 0:
        raise CLIError(
            f"--transform log needs positive values, but column {column!r} has "
            f"{finite.min():g}; use --transform sqrt (non-negative) or none"
        )
    if name == "sqrt" and finite.min() < 0:
        raise CLIError(
            f"--transform sqrt needs non-negative values, but column {column!r} "
            f"has {finite.min():g}; use --transform none"
        )
    if name == "log":
        return np.log(values)
    return np.sqrt(values) if name == "sqrt" else values


def choose_auto(values: FloatArray) -> tuple[str, str]:
    """Pick none, sqrt or log for ``--transform auto``; return it and why.

    A variable with skewness above ``AUTO_SKEW`` gets the allowed transform
    (sqrt for non-negative values, log for positive ones) that leaves the
    smallest absolute skewness.
    """
    v = values[np.isfinite(values)]
    options = {"none": _skew(v)}
    if v.min() >= 0:
        options["sqrt"] = _skew(np.sqrt(v))
    if v.min() > 0:
        options["log"] = _skew(np.log(v))
    if options["none"] <= AUTO_SKEW:
        return "none", f"skewness {options['none']:.2f}, no transform needed"
    best = min(options, key=lambda k: abs(options[k]))
    why = ", ".join(f"{k} {s:.2f}" for k, s in options.items())
    return best, f"skewness {why}"


def _lognormal(m: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray]:
    mean = np.exp(m + 0.5 * s**2)
    return mean, mean * np.sqrt(np.expm1(s**2))


def _squared(m: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray]:
    return m**2 + s**2, np.sqrt(4.0 * m**2 * s**2 + 2.0 * s**4)


def predictive(
    m: FloatArray, s: FloatArray, noise_var: float, name: str
) -> dict[str, FloatArray]:
    """Return mean, sd, sd_obs, lower95 and upper95 in data units.

    Parameters
    ----------
    m, s : ndarray
        Posterior mean and latent sd on the transformed scale.
    noise_var : float
        Noise variance on the transformed scale (data units of ``g(y)``).
    name : {"none", "log", "sqrt"}
        The transform.

    Returns
    -------
    dict of ndarray
        The ``OUTPUT_COLUMNS``, each shaped like ``m``.

    Examples
    --------
    >>> import numpy as np
    >>> out = predictive(np.array([1.0]), np.array([0.0]), 1.0, "none")
    >>> [round(float(out[k][0]), 3) for k in ("sd_obs", "lower95", "upper95")]
    [1.0, -0.96, 2.96]
    """
    s_obs = np.sqrt(s**2 + noise_var)
    lo, hi = m - Z95 * s_obs, m + Z95 * s_obs
    if name == "none":
        return {"mean": m, "sd": s, "sd_obs": s_obs, "lower95": lo, "upper95": hi}
    with np.errstate(over="ignore"):
        if name == "log":
            mean, sd = _lognormal(m, s)
            sd_obs = _lognormal(m, s_obs)[1]
            return {
                "mean": mean, "sd": sd, "sd_obs": sd_obs,
                "lower95": np.exp(lo), "upper95": np.exp(hi),
            }  # fmt: skip
    mean, sd = _squared(m, s)
    return {
        "mean": mean, "sd": sd, "sd_obs": _squared(m, s_obs)[1],
        "lower95": np.maximum(lo, 0.0) ** 2, "upper95": np.maximum(hi, 0.0) ** 2,
    }  # fmt: skip


def noise_text(noise_var: float, name: str, units: str) -> str:
    """Describe the fitted noise in data units (or on the transformed scale)."""
    sd = float(np.sqrt(noise_var))
    unit = f" {units}" if units else ""
    if name == "none":
        return f"noise variance {noise_var:.4g}{unit}^2 (sd {sd:.4g}{unit})"
    if name == "log":
        return (
            f"noise sd {sd:.4g} on the log scale (a factor of {np.exp(sd):.4g} "
            "either way)"
        )
    return f"noise sd {sd:.4g} on the square-root scale ({unit.strip() or 'units'}^0.5)"


def noise_variance(gp: Any) -> float:
    """Return the fitted noise variance in the units the model was fitted in."""
    return float(gp.noise_ * getattr(gp, "y_train_std_", 1.0) ** 2)


def _base_estimator() -> Any:
    from sklearn.base import BaseEstimator  # noqa: PLC0415

    return BaseEstimator


class DataUnitsModel(_base_estimator()):  # type: ignore[misc]
    """A fitted KroneckerGP on ``g(y)`` seen in the data's units.

    ``predict_grid`` returns the mean and latent sd of the back-transformed
    posterior (see :func:`predictive`), so the plotting functions draw data
    units; ``predictive_grid`` and ``predictive_points`` return all output
    columns. With ``transform="none"`` it is the model itself.

    Parameters
    ----------
    gp : KroneckerGP
        A model fitted to ``g(y)``.
    transform : {"none", "log", "sqrt"}, default="none"
        The transform ``g``.
    """

    def __init__(self, gp: Any = None, transform: str = "none") -> None:
        self.gp = gp
        self.transform = transform

    def __sklearn_is_fitted__(self) -> bool:
        """Return True: the wrapped model is fitted."""
        return True

    def fit(self, X: Any, y: Any) -> DataUnitsModel:
        """Refuse: this wraps a model that is already fitted."""
        raise NotImplementedError("DataUnitsModel wraps an already fitted model.")

    @property
    def grid_(self) -> Any:
        """Return the wrapped model's training grid."""
        return self.gp.grid_

    def predictive_grid(self, coords: Any) -> dict[str, FloatArray]:
        """Return the output columns of every cell of the grid ``coords``."""
        m, s = self.gp.predict_grid(coords, return_std=True)
        return predictive(m, s, noise_variance(self.gp), self.transform)

    def predictive_points(self, X: Any) -> dict[str, FloatArray]:
        """Return the output columns at the rows of ``X``."""
        m, s = self.gp.predict(X, return_std=True)
        return predictive(m, s, noise_variance(self.gp), self.transform)

    def predict_grid(self, coords: Any, return_std: bool = False) -> Any:
        """Return the mean (and latent sd) in data units on the grid ``coords``."""
        if self.transform == "none" and not return_std:
            return self.gp.predict_grid(coords)
        out = self.predictive_grid(coords)
        return (out["mean"], out["sd"]) if return_std else out["mean"]
