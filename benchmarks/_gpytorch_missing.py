"""GPyTorch's masked Kronecker path on the missing-cell benchmark problem.

The model is GPyTorch's multitask exact GP with the times as the tasks: the
prior covariance over (site, time) is the ``KroneckerProductLinearOperator``
of ``ScaleKernel(RBF)`` over the sites and ``Matern(nu=1.5)`` over the times,
plus the likelihood's one global noise (``MultitaskGaussianLikelihood`` with
``rank=0, has_task_noise=False``), i.e. the same covariance as KroneckerGP.
Missing cells are NaN in the targets and
``gpytorch.settings.observation_nan_policy("mask")`` drops them: GPyTorch then
indexes the Kronecker covariance on the observed cells and evaluates the
marginal likelihood with its default iterative settings (modified batched CG
with a pivoted-Cholesky preconditioner, stochastic Lanczos quadrature for the
log-determinant; GPyTorch's defaults, not tuned here). The hyperparameters are
optimised with the same scipy L-BFGS-B from the same start and bounds as
KroneckerGP (raw parameters = log hyperparameters through ``exp``
constraints), and the result is scored with KroneckerGP's likelihood.
"""

# ruff: noqa: PLC0415
# torch and gpytorch are optional: they are imported inside the functions

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.optimize
from _common import (
    LOG_BOUNDS,
    THETA_START,
    factor_kernels,
    make_problem,
    peak_rss_only,
)
from bench_missing import make_mask

from kronecker_gp import KroneckerGP


def _model(sites: np.ndarray, times: np.ndarray, Yn: np.ndarray) -> Any:
    import gpytorch
    import torch
    from linear_operator.operators import KroneckerProductLinearOperator

    def positive() -> Any:
        return gpytorch.constraints.Positive(
            transform=torch.exp, inv_transform=torch.log
        )

    class SpaceTime(gpytorch.kernels.Kernel):
        def __init__(self, xt: Any) -> None:
            super().__init__()
            self.xt = xt
            rbf = gpytorch.kernels.RBFKernel(lengthscale_constraint=positive())
            self.space = gpytorch.kernels.ScaleKernel(
                rbf, outputscale_constraint=positive()
            )
            self.time = gpytorch.kernels.MaternKernel(
                nu=1.5, lengthscale_constraint=positive()
            )

        def forward(self, x1: Any, x2: Any, diag: bool = False, **kw: Any) -> Any:
            k = KroneckerProductLinearOperator(
                self.space(x1, x2).to_dense(), self.time(self.xt).to_dense()
            )
            return k.diagonal(dim1=-1, dim2=-2) if diag else k

        def num_outputs_per_input(self, x1: Any, x2: Any) -> int:
            return int(self.xt.shape[0])

    class GP(gpytorch.models.ExactGP):
        def __init__(self, x: Any, y: Any, lik: Any) -> None:
            super().__init__(x, y, lik)
            self.mean_module = gpytorch.means.MultitaskMean(
                gpytorch.means.ZeroMean(), num_tasks=y.shape[1]
            )
            self.covar_module = SpaceTime(torch.as_tensor(times)[:, None])

        def forward(self, x: Any) -> Any:
            return gpytorch.distributions.MultitaskMultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    x, y = torch.as_tensor(sites), torch.as_tensor(Yn)
    lik = gpytorch.likelihoods.MultitaskGaussianLikelihood(
        num_tasks=Yn.shape[1],
        rank=0,
        has_task_noise=False,
        noise_constraint=positive(),
    )
    model = GP(x, y, lik)
    params = [
        model.covar_module.space.raw_outputscale,
        model.covar_module.space.base_kernel.raw_lengthscale,
        model.covar_module.time.raw_lengthscale,
        lik.raw_noise,
    ]
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    lik.train()

    def lml(theta: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            for p, v in zip(params, theta):
                p.fill_(float(v))
        with gpytorch.settings.observation_nan_policy("mask"):
            # ExactMarginalLogLikelihood divides by the event size (all cells)
            value = mll(model(x), y) * Yn.size
            grads = torch.autograd.grad(value, params)
        return float(value), np.array([float(g.detach().sum()) for g in grads])

    return lml


def gpytorch_optimise(
    size: tuple[int, int], pattern: str, max_evals: int
) -> dict[str, Any]:
    """L-BFGS-B on GPyTorch's masked-Kronecker LML; time, peak RSS, quality."""
    import torch

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # as OPENBLAS_NUM_THREADS=1 for KroneckerGP
    sites, times, Y = make_problem(*size)
    Yn = np.where(make_mask(pattern, Y.shape), np.nan, Y)
    record: dict[str, Any] = {"size": f"{size[0]}x{size[1]}", "pattern": pattern}

    def run() -> None:
        lml = _model(sites, times, Yn)
        evals: list[float] = []

        def obj(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = lml(theta)
            evals.append(value)
            return -value, -grad

        t0 = time.perf_counter()
        res = scipy.optimize.minimize(
            obj,
            THETA_START.copy(),
            jac=True,
            method="L-BFGS-B",
            bounds=LOG_BOUNDS,
            options={"maxfun": max_evals},
        )
        record.update(
            seconds=time.perf_counter() - t0,
            evaluations=len(evals),
            theta=res.x.tolist(),
            gpytorch_lml=-float(res.fun),
            message=str(res.message),
        )

    record["memory"] = peak_rss_only(run)
    record["torch_threads"] = torch.get_num_threads()
    # score GPyTorch's optimum with KroneckerGP's likelihood (same estimator
    # as KroneckerGP's own optimum, so the two LMLs are comparable)
    theta = np.asarray(record["theta"])
    gp = KroneckerGP(
        factor_kernels(theta), noise=float(np.exp(theta[3])), optimizer=None
    ).set_params(random_state=0)
    gp.fit_grid([sites, times], Yn)
    record["kronecker_gp_lml_at_theta"] = gp.log_marginal_likelihood_value_
    record["kronecker_gp_lml_std_error"] = gp.solver_info_.lml_std_error
    print(f"gpytorch {record}", flush=True)
    return record
