"""Shared helpers for the grid benchmarks: the problem, timing, memory, machine.

The benchmark problem is a 2-D grid ``n_sites x n_times``: sites are 2-D points
drawn uniformly in ``[0, 10]^2``, times are ``0, 1, ..., n_times - 1``. The
kernel is ``ConstantKernel * RBF`` over the sites times ``Matern(nu=1.5)``
over the times, plus iid noise; the data are one exact draw from that model.
Everything is seeded.
"""

from __future__ import annotations

import gc
import importlib
import math
import os
import platform
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

REPO = Path(__file__).resolve().parents[1]

#: Log-hyperparameters (amplitude, space length, time length, noise) used to
#: draw the data and for the fixed-hyperparameter timings (a)-(c).
THETA_TRUE = np.log([1.0, 2.0, 10.0, 0.1])
#: Fixed start of the hyperparameter optimisation (d).
THETA_START = np.log([0.3, 1.0, 3.0, 0.5])
#: Bounds (not in log space) of the four hyperparameters, in theta order.
BOUNDS = ((1e-5, 1e5), (1e-5, 1e5), (1e-5, 1e5), (1e-6, 1e5))
LOG_BOUNDS = np.log(np.array(BOUNDS))


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"70x70"`` into ``(70, 70)`` (sites x times)."""
    try:
        a, b = text.lower().split("x")
        size = int(a), int(b)
    except ValueError:
        raise ValueError(f"size must look like 70x70; got {text!r}.") from None
    if min(size) < 2:
        raise ValueError(f"size needs at least 2 sites and 2 times; got {text!r}.")
    return size


def factor_kernels(theta: np.ndarray) -> list[Any]:
    """Return the sklearn factor kernels ``[C * RBF (sites), Matern-1.5 (times)]``.

    ``theta`` holds at least the three kernel log-hyperparameters (a fourth
    entry, the log-noise, is ignored here).
    """
    amp, ls, lt = np.exp(theta[:3])
    space = ConstantKernel(amp, BOUNDS[0]) * RBF(ls, BOUNDS[1])
    return [space, Matern(lt, BOUNDS[2], nu=1.5)]


def _psd_sqrt(gram: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh(gram)
    return u * np.sqrt(np.clip(w, 0.0, None))


def make_problem(
    n_sites: int, n_times: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``sites (n_sites, 2)``, ``times (n_times,)`` and ``Y (n_sites, n_times)``.

    ``Y`` is an exact draw from the GP with hyperparameters ``THETA_TRUE``:
    ``L_s Z L_t^T + sqrt(noise) E`` with factor square roots ``L_d``.
    """
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0.0, 10.0, size=(n_sites, 2))
    times = np.arange(n_times, dtype=float)
    k_space, k_time = factor_kernels(THETA_TRUE)
    l_space = _psd_sqrt(k_space(sites))
    l_time = _psd_sqrt(k_time(times[:, None]))
    z = rng.standard_normal((n_sites, n_times))
    noise = float(np.exp(THETA_TRUE[3]))
    Y = (l_space @ z) @ l_time.T + math.sqrt(noise) * rng.standard_normal(z.shape)
    return sites, times, Y


def grid_rows(sites: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Return the ``(N, 3)`` rows of the grid in C order (time fastest)."""
    n_s, n_t = sites.shape[0], times.shape[0]
    return np.column_stack([np.repeat(sites, n_t, axis=0), np.tile(times, n_s)])


# --------------------------------------------------------------------- timing
def measure(
    fn: Callable[[], Any], repeat: int, *, warmup: bool = True, budget: float = np.inf
) -> dict[str, Any]:
    """Time ``fn``: median over ``repeat`` samples, autoranged for fast calls.

    A call under 20 ms is looped so that one sample lasts about 20 ms (the
    sample is the mean per call). Sampling stops early once ``budget`` seconds
    have been spent, keeping at least one sample.
    """
    if warmup:
        fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    loops = 1 if first >= 0.02 else min(1000, math.ceil(0.02 / max(first, 1e-7)))
    samples = [first] if loops == 1 else []
    spent = first
    while len(samples) < repeat and (spent < budget or not samples):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        dt = time.perf_counter() - t0
        spent += dt
        samples.append(dt / loops)
    return {
        "median": float(np.median(samples)),
        "min": float(np.min(samples)),
        "samples": [float(s) for s in samples],
        "loops": loops,
    }


# --------------------------------------------------------------------- memory
def recording_lbfgsb(record: dict[str, Any], max_iter: int | None = None) -> Any:
    """Return an sklearn-style optimizer running scipy's L-BFGS-B, recording its run.

    ``record`` receives ``nfev`` (objective evaluations), ``nit``, ``fun``,
    ``theta`` and ``message``; ``max_iter`` caps the iterations (None: scipy's
    default, as scikit-learn's optimizer).
    """
    import scipy.optimize  # noqa: PLC0415 - only the optimising benchmarks need it

    def optimizer(obj_func: Any, initial_theta: Any, bounds: Any) -> Any:
        res = scipy.optimize.minimize(
            obj_func,
            initial_theta,
            method="L-BFGS-B",
            jac=True,
            bounds=bounds,
            options=None if max_iter is None else {"maxiter": max_iter},
        )
        record.update(
            nfev=int(res.nfev),
            nit=int(res.nit),
            fun=float(res.fun),
            theta=[float(t) for t in res.x],
            message=str(res.message),
        )
        return res.x, res.fun

    return optimizer


def gpytorch_grid_model(
    sites: np.ndarray, times: np.ndarray, Y: np.ndarray, device: str = "cpu"
) -> Any:
    """Exact GPyTorch GP whose covariance is a KroneckerProductLinearOperator.

    Adding the likelihood's constant noise gives a
    ``KroneckerProductAddedDiagLinearOperator``, whose solve and log-determinant
    use the factor eigendecompositions (GPyTorch's Kronecker path). Positive
    constraints use ``exp``/``log``, so the raw parameters are exactly the log
    hyperparameters ``theta`` (same parametrisation as sklearn's and ours).
    Everything is float64, on ``device``. Returns ``lml(theta, eval_gradient)``
    and ``covariance_type()``.
    """
    import gpytorch  # noqa: PLC0415 - optional, only the GPyTorch rows need it
    import torch  # noqa: PLC0415
    from linear_operator.operators import (  # noqa: PLC0415
        KroneckerProductLinearOperator,
    )

    def positive() -> Any:
        return gpytorch.constraints.Positive(
            transform=torch.exp, inv_transform=torch.log
        )

    class GridKernel(gpytorch.kernels.Kernel):
        def __init__(self) -> None:
            super().__init__()
            rbf = gpytorch.kernels.RBFKernel(lengthscale_constraint=positive())
            self.k_space = gpytorch.kernels.ScaleKernel(
                rbf, outputscale_constraint=positive()
            )
            self.k_time = gpytorch.kernels.MaternKernel(
                nu=1.5, lengthscale_constraint=positive()
            )
            self.register_buffer("xs", torch.as_tensor(sites))
            self.register_buffer("xt", torch.as_tensor(times)[:, None])

        def forward(self, x1: Any, x2: Any, diag: bool = False, **kw: Any) -> Any:
            # the training grid only: x1 and x2 are the cell indices
            k_s = self.k_space(self.xs).to_dense()
            k_t = self.k_time(self.xt).to_dense()
            return KroneckerProductLinearOperator(k_s, k_t)

    class GridGP(gpytorch.models.ExactGP):
        def __init__(self, x: Any, y: Any, lik: Any) -> None:
            super().__init__(x, y, lik)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = GridKernel()

        def forward(self, x: Any) -> Any:
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=positive())
    x = torch.arange(Y.size, dtype=torch.float64, device=device)[:, None]
    y = torch.as_tensor(Y.reshape(-1), dtype=torch.float64, device=device)
    model = GridGP(x, y, lik).to(device=device, dtype=torch.float64)
    lik = lik.to(device=device, dtype=torch.float64)
    params = [
        model.covar_module.k_space.raw_outputscale,
        model.covar_module.k_space.base_kernel.raw_lengthscale,
        model.covar_module.k_time.raw_lengthscale,
        lik.noise_covar.raw_noise,
    ]
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    lik.train()

    def lml(theta: np.ndarray, eval_gradient: bool) -> Any:
        with torch.no_grad():
            for p, v in zip(params, theta):
                p.fill_(float(v))
        with (
            gpytorch.settings.lazily_evaluate_kernels(False),
            torch.set_grad_enabled(eval_gradient),
        ):
            # ExactMarginalLogLikelihood divides by the number of cells
            value = mll(model(x), y) * y.numel()
            if not eval_gradient:
                return float(value)
            grads = torch.autograd.grad(value, params)
        return float(value.detach()), np.array([float(g.detach().sum()) for g in grads])

    def covariance_type() -> str:
        with gpytorch.settings.lazily_evaluate_kernels(False), torch.no_grad():
            return type(lik(model(x)).lazy_covariance_matrix).__name__

    return lml, covariance_type


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_memory(fn: Callable[[], Any]) -> dict[str, float | None]:
    """Peak memory of one call of ``fn`` above what is allocated before it, in MB.

    ``tracemalloc_mb`` counts NumPy (and other Python-tracked) allocations;
    ``rss_mb`` is the growth of the process's peak resident set (VmHWM reset
    before the call), which also sees LAPACK workspaces and torch tensors.
    """
    gc.collect()
    can_reset = _reset_peak_rss()
    rss0 = _status_kib("VmRSS")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    hwm = _status_kib("VmHWM")
    rss = (hwm - rss0) / 1024 if can_reset and rss0 >= 0 else None
    return {"tracemalloc_mb": peak / 2**20, "rss_mb": rss}


def peak_rss_only(fn: Callable[[], Any]) -> dict[str, float | None]:
    """Like :func:`peak_memory` without tracemalloc (for torch code)."""
    gc.collect()
    can_reset = _reset_peak_rss()
    rss0 = _status_kib("VmRSS")
    fn()
    hwm = _status_kib("VmHWM")
    rss = (hwm - rss0) / 1024 if can_reset and rss0 >= 0 else None
    return {"tracemalloc_mb": None, "rss_mb": rss}


# -------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma")))
    except OSError:
        pass
    return []


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "kronecker_gp"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def blas_info() -> list[dict[str, Any]]:
    """Return threadpoolctl's view of the BLAS libraries loaded by numpy/scipy."""
    try:
        import scipy.linalg  # noqa: F401, PLC0415 - loads scipy's BLAS
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - optional
    except ImportError:
        return []
    keys = ("internal_api", "prefix", "version", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()]


def machine_info() -> dict[str, Any]:
    """Describe the machine, the library versions and the BLAS that ran."""
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            m: _version(m)
            for m in ("numpy", "scipy", "sklearn", "kronecker_gp", "torch", "gpytorch")
        },
        "kronecker_gp_commit": _git_commit(),
        "blas": blas_info(),
        "env": {
            k: os.environ.get(k)
            for k in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
            )
        },
    }


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]
