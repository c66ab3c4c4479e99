"""MultiTaskGP's prediction and sampling methods (a mixin).

Posterior means, standard deviations, per-task and joint covariances, and
joint posterior samples, for the exact ICM and the iterative LMC paths.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import Kernel
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp.solvers._multitask import predict_joint_covariance, predict_moments
from kronecker_gp.solvers._multitask_iterative import lmc_joint_covariance, lmc_predict

_MODELS = ("icm", "lmc")
_TASK_NOISE = ("per_task", "shared")


class MultiTaskPredictionMixin:
    """Prediction and sampling methods of :class:`MultiTaskGP`."""

    kernels_: list[Kernel]
    X_train_: FloatArray
    solver_: str
    y_train_mean_: FloatArray
    y_train_std_: FloatArray
    _bs: list[FloatArray]
    _post: Any
    _y_1d: bool

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
        if not hasattr(self, "X_train_"):  # unfitted: the prior, as sklearn
            return self._prior_predict(X, return_std)
        check_is_fitted(self, "X_train_")
        cross = [np.asarray(k(X, self.X_train_)) for k in self.kernels_]
        prior = [k.diag(X) for k in self.kernels_] if return_std else None
        if self.solver_ == "exact":
            first = None if prior is None else prior[0]
            mean, var = predict_moments(self._post, self._bs[0], cross[0], first)
        else:
            mean, var = lmc_predict(self._post.system, self._post.alpha, cross, prior)
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
        if hasattr(self, "X_train_"):
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
        if not hasattr(self, "X_train_"):  # unfitted: sum_q B_q (x) K_q(X)
            kernels, bs, _ = self._prior_parts()  # type: ignore[attr-defined]
            joint = sum(
                np.einsum("ij,tu->itju", np.asarray(k(X)), b)
                for k, b in zip(kernels, bs)
            )
            return np.zeros((X.shape[0], bs[0].shape[0])), np.asarray(joint)
        cross = [np.asarray(k(X, self.X_train_)) for k in self.kernels_]
        prior = [np.asarray(k(X)) for k in self.kernels_]
        if self.solver_ == "exact":
            mean = predict_moments(self._post, self._bs[0], cross[0], None)[0]
            joint = predict_joint_covariance(
                self._post, self._bs[0], cross[0], prior[0]
            )
        else:
            mean = lmc_predict(self._post.system, self._post.alpha, cross, None)[0]
            joint = lmc_joint_covariance(self._post.system, cross, prior)
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
