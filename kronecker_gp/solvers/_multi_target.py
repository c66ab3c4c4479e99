"""Several targets that share one covariance, each on its own route.

scikit-learn's multi-output convention: the targets (columns of ``y``) are
independent draws with the same kernel and noise, so the log marginal
likelihood and its gradient are sums over targets. On a complete grid with iid
noise one eigendecomposition serves every target (the eigen route takes the
target columns together); where the targets' missing cells or per-cell noise
differ, each target keeps the route :func:`~kronecker_gp.solvers.select_solver`
chose for it, and this wrapper adds up their likelihoods and stacks their
predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from kronecker_gp._grid import Grid
from kronecker_gp._typing import FloatArray
from kronecker_gp.solvers._protocol import Factorization, SolverInfo


def _with_settings(route: Any, tol: float, n_probes: int) -> Any:
    """Return ``route`` with the CG tolerance and probe count set, where it has them."""
    names = {f.name for f in fields(route)}
    changes = {k: v for k, v in (("tol", tol), ("n_probes", n_probes)) if k in names}
    return replace(route, **changes) if changes else route


@dataclass
class MultiTargetRoute:
    """One route per target column; their likelihoods add up.

    Parameters
    ----------
    routes : list
        One route per target (each built by ``select_solver`` on that column).
    cell_noise : ndarray of shape (N, n_targets) or None
        The targets' per-cell noise variances (None: iid noise).
    missing : ndarray of bool of shape (N, n_targets)
        Missing cells of each target.
    tol, n_probes : float, int
        Settings passed on to every target's route.
    """

    routes: list[Any]
    cell_noise: FloatArray | None
    missing: Any
    tol: float = 1e-10
    n_probes: int = 32

    def __post_init__(self) -> None:
        """Give every target's route this wrapper's settings."""
        self.routes = [_with_settings(r, self.tol, self.n_probes) for r in self.routes]

    def factorize(
        self,
        kernel: Any,
        noise: float,
        *,
        eval_gradient: bool = False,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> MultiTargetFactorization:
        """Factorise every target's route at these hyperparameters."""
        parts = [
            r.factorize(
                kernel,
                noise,
                eval_gradient=eval_gradient,
                noise_free=noise_free,
                need_lml=need_lml,
            )
            for r in self.routes
        ]
        lml = float(np.sum([p.lml for p in parts]))
        grad = None
        if eval_gradient:
            grad = np.sum([np.asarray(p.grad) for p in parts], axis=0)
        paths = sorted({p.info.path for p in parts})
        info = SolverInfo(
            "+".join(paths) if len(paths) > 1 else paths[0],
            int(sum(p.info.n_missing for p in parts)),
            iterations=max(p.info.iterations for p in parts),
            residual=max(p.info.residual for p in parts),
            lml_std_error=float(np.sqrt(sum(p.info.lml_std_error**2 for p in parts))),
            extra={
                "n_targets": len(parts),
                "target_paths": [p.info.path for p in parts],
            },
        )
        return MultiTargetFactorization(parts, lml, grad, info)


@dataclass
class MultiTargetFactorization(Factorization):
    """The targets' factorisations: summed likelihoods, stacked predictions.

    Means, variances and samples gain a target axis after the points axis:
    ``(M, n_targets)``, covariances ``(M, M, n_targets)``, samples
    ``(M, n_targets, n_samples)``.
    """

    parts: list[Factorization]
    lml: float
    grad: FloatArray | None
    info: SolverInfo

    def spectrum(self) -> list[FloatArray] | None:
        """Return the factors' eigenvalues (the same kernel for every target)."""
        return self.parts[0].spectrum()

    def alpha(self) -> FloatArray:
        """Return the weights, one column per target."""
        return np.stack([p.alpha() for p in self.parts], axis=-1)

    @staticmethod
    def _stack(
        pairs: list[tuple[FloatArray, FloatArray | None]],
    ) -> tuple[FloatArray, FloatArray | None]:
        mean = np.stack([m for m, _ in pairs], axis=-1)
        if pairs[0][1] is None:
            return mean, None
        return mean, np.stack([np.asarray(v) for _, v in pairs], axis=-1)

    def predict_points(
        self, kernel: Any, parts: list[FloatArray], *, std: bool, cov: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return each target's mean and variances (or covariance) at points."""
        return self._stack(
            [p.predict_points(kernel, parts, std=std, cov=cov) for p in self.parts]
        )

    def predict_grid(
        self, kernel: Any, test: Grid, *, std: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        """Return each target's mean and variance on a grid."""
        return self._stack([p.predict_grid(kernel, test, std=std) for p in self.parts])

    def sample_grid(
        self, kernel: Any, test: Grid, n_samples: int, rng: np.random.Generator
    ) -> FloatArray:
        """Return samples of shape ``(test.size, n_targets, n_samples)``."""
        return np.stack(
            [p.sample_grid(kernel, test, n_samples, rng) for p in self.parts], axis=1
        )
