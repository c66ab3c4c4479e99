"""Array-API dispatch: the eigen route in the namespace of the data.

Under ``sklearn.config_context(array_api_dispatch=True)`` a non-NumPy ``Y``
(``array_api_strict`` always; PyTorch on the CPU when installed) is fitted in
its own namespace. Every result is checked against the NumPy path on the same
problem: float64 to 1e-10 relative (the eigendecompositions of two LAPACK
builds agree to rounding), float32 to the accuracy stated in
``kronecker_gp.solvers._eigen.FLOAT32_NOTE``; the other routes refuse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
import sklearn
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP
from kronecker_gp._array_api import namespace, to_numpy
from kronecker_gp.kernels import SeparableSum
from kronecker_gp.linalg import (
    face_split_gram,
    face_split_matvec,
    kron_matvec,
    kron_outer,
)
from kronecker_gp.solvers._eigen import FLOAT32_NOTE
from kronecker_gp.testing import EXACT_RTOL, assert_allclose


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


#: On a machine with a CUDA device, every test also runs on it.
NAMESPACES = ["array_api_strict", "torch", *(["torch-cuda"] if _has_cuda() else [])]


class Namespace:
    """Conversions to and from one array library, float64 or float32."""

    def __init__(self, name: str, dtype: str = "float64") -> None:
        if name.startswith("torch"):
            self.lib = pytest.importorskip("torch")
        else:
            self.lib = array_api_strict
        self.name = name
        self.dtype = getattr(self.lib, dtype)
        self.device = {"device": "cuda"} if name == "torch-cuda" else {}

    def __call__(self, a):
        return self.lib.asarray(np.asarray(a), dtype=self.dtype, **self.device)

    def owns(self, a) -> bool:
        return namespace(a) is not np and type(a) is type(self(np.zeros(1)))


@pytest.fixture(params=NAMESPACES)
def xp(request):
    return Namespace(request.param)


@pytest.fixture
def dispatch(monkeypatch):
    # scikit-learn asks for SciPy's array API flag before it dispatches
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    with sklearn.config_context(array_api_dispatch=True):
        yield


def _problem(rng, shape=(9, 11)):
    coords = [np.linspace(0.0, 1.0, shape[0]), np.linspace(0.0, 3.0, shape[1])]
    Y = np.sin(3 * coords[0])[:, None] + np.cos(coords[1])[None, :]
    return coords, Y + 0.1 * rng.standard_normal(shape)


def _gp(**kw):
    kernels = [ConstantKernel(1.0) * RBF(0.5), Matern(1.0, nu=1.5)]
    return KroneckerGP(**{"kernels": kernels, "noise": 0.05, "normalize_y": True, **kw})


def _rel(a, b):
    a, b = to_numpy(a).astype(float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------ linalg
def test_kron_products_stay_in_the_namespace(xp, rng):
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((5, 2))
    x, w = rng.standard_normal((8, 3)), rng.random(8)
    out = kron_matvec([xp(A), xp(B)], xp(x))
    assert xp.owns(out)
    assert_allclose(to_numpy(out), np.kron(A, B) @ x)
    assert_allclose(
        to_numpy(kron_matvec([xp(A), xp(B)], xp(x[:, 0]))), np.kron(A, B) @ x[:, 0]
    )
    a, b = rng.random(3), rng.random(4)
    assert_allclose(to_numpy(kron_outer([xp(a), xp(b)])), np.kron(a, b))
    assert_allclose(
        to_numpy(kron_outer([xp(a), xp(b)], np.add)), kron_outer([a, b], np.add)
    )
    rows = [rng.random((6, 4)), rng.random((6, 2))]
    F = np.stack([np.kron(rows[0][i], rows[1][i]) for i in range(6)])
    mats = [xp(r) for r in rows]
    assert_allclose(to_numpy(face_split_matvec(mats, xp(w))), F @ w)
    assert_allclose(to_numpy(face_split_gram(mats, xp(w))), (F * w) @ F.T)


# ------------------------------------------------------------ the estimator
def test_fit_with_optimisation_matches_numpy(xp, rng, dispatch):
    coords, Y = _problem(rng)
    with sklearn.config_context(array_api_dispatch=False):
        ref = _gp().fit_grid(coords, Y)
    gp = _gp().fit_grid(coords, xp(Y))
    assert gp.solver_info_.path == "complete"
    assert gp.solver_info_.extra["dtype"].endswith("float64")
    assert "array_api_dispatch" in gp.solver_info_.extra["route_reason"]
    assert_allclose(gp.theta_, ref.theta_, rtol=1e-8, atol=1e-9)
    lml = gp.log_marginal_likelihood_value_
    assert isinstance(lml, float)
    assert abs(lml - ref.log_marginal_likelihood_value_) <= 1e-10 * abs(lml)
    assert xp.owns(gp.alpha_)
    assert _rel(gp.alpha_, ref.alpha_) <= 1e-9  # theta_ agrees to 1e-11 only


@pytest.mark.parametrize("normalize_y", [True, False])
def test_lml_gradient_alpha_at_fixed_theta(xp, rng, dispatch, normalize_y):
    coords, Y = _problem(rng, (7, 12))
    ref = _gp(optimizer=None, normalize_y=normalize_y).fit_grid(coords, Y)
    data = xp(Y)
    gp = _gp(optimizer=None, normalize_y=normalize_y).fit_grid(coords, data)
    assert _rel(data, Y) == 0.0  # the caller's array is left as it was
    assert _rel(gp.alpha_, ref.alpha_) <= EXACT_RTOL
    for shift in (0.0, 0.3, -0.5):
        theta = ref.theta_ + shift
        lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
        lml0, grad0 = ref.log_marginal_likelihood(theta, eval_gradient=True)
        assert isinstance(grad, np.ndarray)
        assert abs(lml - lml0) <= EXACT_RTOL * abs(lml0)
        assert_allclose(grad, grad0, atol=EXACT_RTOL * np.linalg.norm(grad0))


def test_predict_grid_and_points_match_numpy(xp, rng, dispatch):
    coords, Y = _problem(rng)
    ref = _gp(optimizer=None).fit_grid(coords, Y)
    gp = _gp(optimizer=None).fit_grid(coords, xp(Y))
    # training axes (the K_d U_d = U_d W_d shortcut) and new ones
    for test in (coords, [np.linspace(-0.2, 1.2, 6), np.linspace(0.0, 3.5, 5)]):
        mean, std = gp.predict_grid(test, return_std=True)
        mean0, std0 = ref.predict_grid(test, return_std=True)
        assert xp.owns(mean) and xp.owns(std)
        assert tuple(mean.shape) == mean0.shape
        assert _rel(mean, mean0) <= EXACT_RTOL
        assert _rel(std, std0) <= EXACT_RTOL
    assert xp.owns(gp.predict_grid(coords))
    X = rng.uniform(0.0, 2.0, (7, 2))
    mean, std = gp.predict(X, return_std=True)
    mean0, std0 = ref.predict(X, return_std=True)
    assert xp.owns(mean) and xp.owns(std)
    assert _rel(mean, mean0) <= EXACT_RTOL and _rel(std, std0) <= EXACT_RTOL
    _, cov = gp.predict(xp(X), return_cov=True)  # query points in the namespace too
    assert _rel(cov, ref.predict(X, return_cov=True)[1]) <= EXACT_RTOL


def test_samples_match_numpy(xp, rng, dispatch):
    coords, Y = _problem(rng)
    ref = _gp(optimizer=None).fit_grid(coords, Y)
    gp = _gp(optimizer=None).fit_grid(coords, xp(Y))
    test = [np.linspace(0.0, 1.2, 5), coords[1][::2]]
    draws = gp.sample_grid(test, n_samples=3, random_state=4)
    assert xp.owns(draws) and tuple(draws.shape) == (5, 6, 3)
    assert _rel(draws, ref.sample_grid(test, n_samples=3, random_state=4)) <= 1e-9
    X = rng.uniform(0.0, 1.0, (4, 2))
    points = gp.sample_y(X, n_samples=2, random_state=1)
    assert xp.owns(points)
    assert _rel(points, ref.sample_y(X, n_samples=2, random_state=1)) <= 1e-8


def test_float32_to_its_stated_accuracy(rng, dispatch):
    assert "1e-5" in FLOAT32_NOTE  # the numbers below are the note's
    coords, Y = _problem(rng, (30, 40))
    ref = _gp().fit_grid(coords, Y)
    for name in NAMESPACES:
        xp = Namespace(name, "float32")
        gp = _gp(optimizer=None, kernels=ref.kernels_, noise=ref.noise_)
        gp.fit_grid(coords, xp(Y))
        assert gp.solver_info_.extra["dtype"].endswith("float32")
        assert gp.solver_info_.extra["accuracy"] == FLOAT32_NOTE
        assert str(gp.alpha_.dtype).endswith("float32")
        theta = ref.theta_ + 0.3
        lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
        lml0, grad0 = ref.log_marginal_likelihood(theta, eval_gradient=True)
        assert abs(lml - lml0) <= 1e-5 * abs(lml0)
        assert np.linalg.norm(grad - grad0) <= 1e-3 * np.linalg.norm(grad0)
        assert _rel(gp.alpha_, ref.alpha_) <= 1e-4
        test = [np.linspace(0.0, 1.2, 25), np.linspace(0.0, 3.0, 27)]
        mean, std = gp.predict_grid(test, return_std=True)
        mean0, std0 = ref.predict_grid(test, return_std=True)
        assert _rel(mean, mean0) <= 1e-3
        prior_var = ref.kernels_[0].diag(test[0][:1, None])[0] * ref.y_train_std_**2
        var = to_numpy(std).astype(float) ** 2
        assert np.max(np.abs(var - std0**2)) <= 1e-5 * prior_var


def test_numpy_input_under_dispatch_is_the_numpy_path(rng, dispatch):
    coords, Y = _problem(rng)
    gp = _gp().fit_grid(coords, Y)
    with sklearn.config_context(array_api_dispatch=False):
        ref = _gp().fit_grid(coords, Y)
    assert np.array_equal(gp.theta_, ref.theta_)
    assert np.array_equal(gp.alpha_, ref.alpha_)
    assert "namespace" not in gp.solver_info_.extra


def test_without_dispatch_other_arrays_go_through_numpy(xp, rng):
    if xp.name == "torch-cuda":
        xp = Namespace("torch")  # without dispatch a CUDA tensor is not converted
    coords, Y = _problem(rng)
    gp = _gp(optimizer=None).fit_grid(coords, xp(Y))
    ref = _gp(optimizer=None).fit_grid(coords, Y)
    assert isinstance(gp.alpha_, np.ndarray)
    assert np.array_equal(gp.alpha_, ref.alpha_)


def test_auto_state_space_takes_the_eigen_route(xp, rng, dispatch):
    coords, Y = _problem(rng)
    gp = _gp(optimizer=None, state_space_min_size=5).fit_grid(coords, xp(Y))
    ref = _gp(optimizer=None, state_space_min_size=5).fit_grid(coords, Y)
    assert ref.solver_info_.path == "state-space"
    assert gp.solver_info_.path == "complete"
    assert _rel(gp.predict_grid(coords), ref.predict_grid(coords)) <= 1e-8


# -------------------------------------------------------------- refusals
def _refusal_cases(coords, Y):
    nan = Y.copy()
    nan[2, 3] = np.nan
    sepsum = SeparableSum([[RBF(0.5), Matern(1.0, nu=1.5)], [RBF(1.0), RBF(2.0)]])
    return [
        (_gp(), nan, "missing cells take the Schur-complement route"),
        (_gp(noise=np.full(Y.shape, 0.1)), Y, "noise must be a scalar"),
        (_gp(noise_axes=[0]), Y, "noise must be a scalar and noise_axes None"),
        (KroneckerGP(sepsum, noise=0.1), Y, "SeparableSum kernel"),
        (_gp(state_space=1), Y, "state_space=1 names a Kalman axis"),
        (_gp(), np.stack([Y, Y], axis=-1), "Y has a targets axis"),
    ]


def test_other_routes_refuse_clearly(xp, rng, dispatch):
    coords, Y = _problem(rng)
    for gp, data, message in _refusal_cases(coords, Y):
        with pytest.raises(ValueError, match=message) as info:
            gp.fit_grid(coords, xp(data))
        assert "complete grid (no NaN)" in str(info.value)
    with pytest.raises(ValueError, match="Y must have the grid's shape"):
        _gp().fit_grid(coords, xp(Y[:, :5]))
    X = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1).reshape(-1, 2)
    with pytest.raises(ValueError, match="fit_grid"):
        _gp().fit(X, xp(Y.reshape(-1)))


def test_non_real_targets_raise_type_error(rng, dispatch):
    coords, Y = _problem(rng)
    with pytest.raises(TypeError, match="Y must hold real numbers"):
        _gp().fit_grid(coords, array_api_strict.asarray(Y > 0))


# -------------------------------------------------------------- benchmark
def test_gpu_benchmark_skips_cleanly_without_a_gpu(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py"
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hide any GPU
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device: skipped" in proc.stdout
    assert "no CUDA device: skipped" in out.read_text()


def test_mixed_namespaces_raise(rng):
    torch = pytest.importorskip("torch")
    a = array_api_strict.asarray(rng.random(3))
    with pytest.raises(TypeError, match="several namespaces"):
        kron_matvec([a[:, None] * a], torch.asarray(rng.random(3)))
    assert namespace(np.ones(2), [1.0]) is np
    assert to_numpy(a).dtype == np.float64
