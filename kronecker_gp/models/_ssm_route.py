r"""KroneckerGP on a grid with one long Markov axis, solved by Kalman filtering.

The grid's covariance is :math:`K_{rest} \otimes K_t + sI` after moving the
state-space axis ``t`` last; :math:`K_{rest} = \bigotimes_e K_e` is rotated
away with its factors' eigendecompositions, leaving
:math:`S = \prod_e n_e` independent series solved exactly by the functions in
:mod:`kronecker_gp.models._state_space` in :math:`O(S n_t d^3)`.

The space gradient needs the full rotated matrix :math:`G` (not only its
diagonal), because the eigenvectors move with the space hyperparameters: for
factor ``e``, :math:`\partial L / \partial \theta = \sum_{ij} (\partial K_e)_{ij}
(U_e \Gamma_e U_e^T)_{ij}` with :math:`\Gamma_e` the contraction of :math:`G`
over the other factors' axes weighted by their eigenvalues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.gaussian_process.kernels import Kernel

from kronecker_gp._typing import FloatArray
from kronecker_gp.linalg import kron_eigh, kron_matvec, kron_outer
from kronecker_gp.models._missing import face_split_rows
from kronecker_gp.models._state_space import (
    ssm_log_marginal_likelihood,
    ssm_predict,
    ssm_sample,
    ssm_solve,
)


def contract_space_gradient(
    g: FloatArray, eigvals: Sequence[FloatArray], e: int
) -> FloatArray:
    """Contract the rotated ``(S, S)`` gradient matrix onto factor ``e``.

    Returns ``Gamma_e[i, j] = sum_rest G[(.., i, ..), (.., j, ..)] prod w_f``
    over the other factors' (diagonal) indices.
    """
    shape = [w.size for w in eigvals]
    letters = [chr(ord("a") + f) for f in range(len(shape))]
    cols = list(letters)
    cols[e] = "z"
    subs = ["".join(letters) + "".join(cols)]
    ops: list[FloatArray] = [g.reshape(*shape, *shape)]
    for f, w in enumerate(eigvals):
        if f != e:
            subs.append(letters[f])
            ops.append(w)
    return np.asarray(np.einsum(",".join(subs) + "->" + letters[e] + "z", *ops))


@dataclass
class SSMState:
    """What prediction needs after a state-space fit."""

    eigvals: list[FloatArray]
    eigvecs: list[FloatArray]
    y_rot: FloatArray
    weights: FloatArray
    noise: float


@dataclass
class StateSpaceRoute:
    """Targets on a grid whose axis ``axis`` is solved by Kalman filtering.

    Parameters
    ----------
    axis : int
        The state-space axis.
    times : ndarray of shape (n_t,)
        Its sorted coordinates.
    y : ndarray of shape grid shape
        Complete targets (normalised).
    """

    axis: int
    times: FloatArray
    y: FloatArray

    def _series(self) -> FloatArray:
        """Return the targets as (S, n_t), the state-space axis last."""
        return np.moveaxis(self.y, self.axis, -1).reshape(-1, self.times.size)

    def factorize(self, space_grams: Sequence[FloatArray], noise: float) -> SSMState:
        """Eigendecompose the other factors and rotate the targets."""
        if space_grams:
            ws, us = kron_eigh(space_grams)
        else:
            ws, us = [np.ones(1)], [np.ones((1, 1))]
        y_rot = kron_matvec([u.T for u in us], self._series())
        return SSMState(ws, us, y_rot, kron_outer(ws), float(noise))

    def lml(
        self,
        space_grams: Sequence[FloatArray],
        kernel_t: Kernel,
        noise: float,
        space_grad_grams: Sequence[FloatArray] | None = None,
        *,
        noise_free: bool = True,
    ) -> tuple[float, list[FloatArray] | None, SSMState]:
        """Return the exact LML, per-factor gradients (axis order) and the state.

        The gradient list holds one array per grid axis (the state-space axis
        included), then the log-noise entry if ``noise_free``.
        """
        state = self.factorize(space_grams, noise)
        args = (kernel_t, self.times, state.y_rot, state.weights, noise)
        if space_grad_grams is None:
            return float(ssm_log_marginal_likelihood(*args)), None, state  # type: ignore[arg-type]
        lml, grad = ssm_log_marginal_likelihood(*args, eval_gradient=True)  # type: ignore[misc]
        parts: list[FloatArray] = []
        space = iter(range(len(space_grad_grams)))
        n_axes = len(space_grad_grams) + 1
        for d in range(n_axes):
            if d == self.axis:
                parts.append(np.asarray(grad.theta))
                continue
            e = next(space)
            dk = space_grad_grams[e]
            if dk.shape[2] == 0:
                parts.append(np.zeros(0))
                continue
            gamma = contract_space_gradient(grad.space, state.eigvals, e)
            u = state.eigvecs[e]
            parts.append(np.einsum("ijp,ij->p", dk, u @ gamma @ u.T))
        if noise_free:
            parts.append(np.array([grad.log_noise]))
        return float(lml), parts, state

    def alpha(self, state: SSMState, kernel_t: Kernel) -> FloatArray:
        """Return ``(K + sI)^{-1} y`` in grid (C) order."""
        a_rot = ssm_solve(kernel_t, self.times, state.weights, state.noise, state.y_rot)
        a = kron_matvec(state.eigvecs, a_rot)
        shape = list(self.y.shape)
        moved = shape[: self.axis] + shape[self.axis + 1 :] + [shape[self.axis]]
        return np.moveaxis(a.reshape(moved), -1, self.axis).reshape(-1)

    def predict_grid(  # noqa: PLR0917 - mirrors predict_points plus the shape
        self,
        state: SSMState,
        kernel_t: Kernel,
        space_cross: Sequence[FloatArray],
        space_prior_diag: FloatArray | None,
        test_times: FloatArray,
        test_shape: tuple[int, ...],
    ) -> tuple[FloatArray, FloatArray | None]:
        """Mean (and variance) on a test grid, in the test grid's axis order."""
        pred = ssm_predict(
            kernel_t,
            self.times,
            state.y_rot,
            state.weights,
            state.noise,
            pred_times=test_times,
        )
        v = [c @ u for c, u in zip(space_cross, state.eigvecs)] or [np.ones((1, 1))]
        mean = kron_matvec(v, pred.beta)
        var = None
        if space_prior_diag is not None:
            k_tt = kernel_t.diag(test_times[:, None])
            var = np.outer(space_prior_diag, k_tt) - kron_matvec(
                [x * x for x in v], pred.gamma
            )
            var = np.maximum(var, 0.0)
        return self._to_grid(mean, test_shape), (
            None if var is None else self._to_grid(var, test_shape)
        )

    def _to_grid(self, series: FloatArray, shape: tuple[int, ...]) -> FloatArray:
        moved = (
            list(shape[: self.axis]) + list(shape[self.axis + 1 :]) + [shape[self.axis]]
        )
        return np.moveaxis(series.reshape(moved), -1, self.axis)

    def predict_points(
        self,
        state: SSMState,
        kernel_t: Kernel,
        space_cross: Sequence[FloatArray],
        space_prior_diag: FloatArray | None,
        times: FloatArray,
    ) -> tuple[FloatArray, FloatArray | None]:
        """Mean (and variance) at scattered points ``(x_i, t_i)``."""
        uniq, inv = np.unique(times, return_inverse=True)
        pred = ssm_predict(
            kernel_t,
            self.times,
            state.y_rot,
            state.weights,
            state.noise,
            pred_times=uniq,
        )
        v = [c @ u for c, u in zip(space_cross, state.eigvecs)]
        rows = face_split_rows(v) if v else np.ones((times.size, 1))  # (M, S)
        mean = np.sum(rows * pred.beta[:, inv].T, axis=1)
        if space_prior_diag is None:
            return mean, None
        k_tt = kernel_t.diag(times[:, None])
        var = space_prior_diag * k_tt - np.sum(rows**2 * pred.gamma[:, inv].T, axis=1)
        return mean, np.maximum(var, 0.0)

    def sample_grid(
        self,
        state: SSMState,
        kernel_t: Kernel,
        test_times: FloatArray,
        n_samples: int,
        rng: np.random.Generator,
    ) -> FloatArray:
        """Posterior samples at the training sites and ``test_times``."""
        draws = ssm_sample(
            kernel_t,
            self.times,
            state.y_rot,
            state.weights,
            state.noise,
            pred_times=test_times,
            n_samples=n_samples,
            random_state=rng,
        )  # (S, m, n)
        s, m, n = draws.shape
        full = kron_matvec(state.eigvecs, draws.reshape(s, m * n)).reshape(s, m, n)
        shape = list(self.y.shape)
        shape[self.axis] = m
        moved = shape[: self.axis] + shape[self.axis + 1 :] + [m, n]
        return np.moveaxis(full.reshape(moved), -2, self.axis)
