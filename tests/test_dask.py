"""The Dask route: a dask.array Y gives the NumPy results, chunk by chunk."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import RBF, Matern
from sklearn.gaussian_process.kernels import ConstantKernel as C

from kronecker_gp import KroneckerGP
from kronecker_gp.linalg import kron_matvec
from kronecker_gp.testing import assert_allclose

da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from kronecker_gp.linalg import _chunked  # noqa: E402 (after the skip)
from kronecker_gp.linalg._chunked import (  # noqa: E402
    is_dask_array,
    mode_gram,
    mode_products,
    whole_axes_plan,
)
from kronecker_gp.solvers._dask import dask_normalisation  # noqa: E402

GRIDS = {
    "2-axis": ((9, 11), [[3, 4], [9, 11], [2, 11], [5, 3]]),
    "3-axis": ((5, 6, 7), [[5, 6, 7], [2, 3, 7], [5, 6, 2], [2, 2, 3]]),
}
CASES = [(name, ch) for name, (_, chunks) in GRIDS.items() for ch in chunks]


class SpySource:
    """An array-like that records every read and refuses to be densified."""

    def __init__(self, values):
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.values[key]
        self.reads.append(int(np.size(out)))
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("Y was loaded whole")


def _problem(name, rng):
    shape = GRIDS[name][0]
    coords = [np.sort(rng.uniform(0.0, 3.0, n)) for n in shape]
    kernels = [C(1.3) * RBF(0.7), Matern(1.1, nu=1.5), RBF(2.0)][: len(shape)]
    f = np.sin(coords[0])[:, None] * np.cos(coords[1])[None, :]
    f = f.reshape(*f.shape, *([1] * (len(shape) - 2)))
    Y = f + 0.3 * rng.standard_normal(shape) + 2.0
    return coords, kernels, Y


def _pair(name, chunks, rng, **params):
    coords, kernels, Y = _problem(name, rng)
    params = {"noise": 0.2, "optimizer": None, **params}
    ref = KroneckerGP(kernels, **params).fit_grid(coords, Y)
    spy = SpySource(Y)
    gp = KroneckerGP(kernels, **params).fit_grid(coords, da.from_array(spy, chunks))
    return coords, ref, gp, spy


def test_import_does_not_import_dask():
    code = "import sys, kronecker_gp; print('dask' in sys.modules)"
    root = str(Path(__file__).parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": root, "PATH": ""},
    )
    assert out.stdout.strip() == "False"


def test_is_dask_array():
    assert is_dask_array(da.zeros(3))
    assert not is_dask_array(np.zeros(3))
    assert not is_dask_array([1.0])


@pytest.mark.parametrize("stage", [False, True], ids=["memory", "zarr"])
@pytest.mark.parametrize("chunks", [(6, 7, 8), (3, 4, 8), (2, 7, 3), (1, 2, 5)])
def test_mode_products_equal_kron_matvec(rng, chunks, stage):
    X = rng.standard_normal((6, 7, 8))
    mats = [rng.standard_normal((m, n)) for m, n in zip((4, 7, 3), X.shape)]
    out = mode_products(
        da.from_array(X, chunks=chunks), mats, stage_bytes=0 if stage else None
    )
    assert out.shape == (4, 7, 3)
    assert_allclose(out.compute().ravel(), kron_matvec(mats, X.ravel()))
    skip = [mats[0], None, mats[2]]
    eye = [mats[0], np.eye(7), mats[2]]
    part = mode_products(da.from_array(X, chunks=chunks), skip).compute()
    assert_allclose(part.ravel(), kron_matvec(eye, X.ravel()))


@pytest.mark.parametrize("stage", [False, True], ids=["memory", "zarr"])
@pytest.mark.parametrize("chunks", [(6, 7, 8), (2, 7, 3), (1, 2, 5)])
def test_mode_gram_equals_unfolding_gram(rng, chunks, stage):
    X = rng.standard_normal((6, 7, 8))
    x = da.from_array(X, chunks=chunks)
    for d in range(3):
        unfold = np.moveaxis(X, d, 0).reshape(X.shape[d], -1)
        gram = mode_gram(x, d, stage_bytes=0 if stage else None).compute()
        assert_allclose(gram, unfold @ unfold.T)


def test_staged_store_is_removed_with_the_array(rng, tmp_path):
    import dask

    X = rng.standard_normal((6, 7, 8))
    mats = [np.eye(n) for n in X.shape]
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        out = mode_products(da.from_array(X, chunks=(3, 3, 8)), mats, stage_bytes=0)
    assert len(list(tmp_path.iterdir())) >= 1
    assert_allclose(out.compute(), X)
    del out
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_mode_products_checks_shapes():
    x = da.zeros((3, 4), chunks=2)
    with pytest.raises(ValueError, match="one entry per axis"):
        mode_products(x, [np.eye(3)])
    with pytest.raises(ValueError, match=r"mats\[1\] must have shape \(m, 4\)"):
        mode_products(x, [np.eye(3), np.eye(3)])


@pytest.mark.parametrize(
    ("shape", "chunk", "todo", "target"),
    [
        ((6, 7, 8), (6, 7, 2), [0, 1], 96),
        ((100, 90, 80), (100, 90, 8), [2], 72_000),
        ((100, 90, 80), (10, 90, 80), [0], 36_000),
        ((12, 10, 9), (4, 5, 9), [0, 1], 60),
    ],
)
def test_whole_axes_plan_nests_chunks(shape, chunk, todo, target):
    whole, new = whole_axes_plan(shape, chunk, todo, target)
    assert whole and set(whole) <= set(todo)
    for d in range(len(shape)):
        if d in whole:
            assert new[d] == shape[d]
        elif chunk[d] < shape[d]:
            assert chunk[d] % new[d] == 0  # split axes shrink to a divisor
    rest = [new[d] for d in range(len(shape)) if d not in whole]
    assert np.prod(rest) <= max(1, target // np.prod([shape[d] for d in whole]))


@pytest.mark.parametrize(("name", "chunks"), CASES)
def test_fixed_hyperparameters_equal_numpy(rng, name, chunks):
    coords, ref, gp, spy = _pair(name, chunks, rng)
    assert gp.solver_info_.path == "dask-complete"
    assert_allclose(
        gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_
    )
    theta = ref.theta_ + 0.2
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    lml_ref, grad_ref = ref.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, lml_ref)
    assert_allclose(grad, grad_ref)
    assert is_dask_array(gp.alpha_) and gp.alpha_.shape == ref.grid_.shape
    assert_allclose(gp.alpha_.compute().ravel(), ref.alpha_)
    test = [c[::2] + 0.05 for c in coords]
    for grid in (coords, test):
        mean, std = gp.predict_grid(grid, return_std=True)
        mean_ref, std_ref = ref.predict_grid(grid, return_std=True)
        assert is_dask_array(mean) and is_dask_array(std)
        assert_allclose(mean.compute(), mean_ref)
        assert_allclose(std.compute(), std_ref)
    assert is_dask_array(gp.predict_grid(test))
    # every read of Y was one chunk: Y was never loaded whole
    assert spy.reads and max(spy.reads) <= np.prod(chunks)


@pytest.mark.parametrize("name", ["2-axis", "3-axis"])
def test_normalize_y_and_staged_rechunks_equal_numpy(rng, name, monkeypatch):
    monkeypatch.setattr(_chunked, "STAGE_BYTES", 0)  # every re-chunk through Zarr
    chunks = GRIDS[name][1][-1]
    coords, ref, gp, _ = _pair(name, chunks, rng, normalize_y=True)
    assert_allclose(gp.y_train_mean_, ref.y_train_mean_)
    assert_allclose(gp.y_train_std_, ref.y_train_std_)
    assert_allclose(
        gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_
    )
    mean, std = gp.predict_grid(coords, return_std=True)
    mean_ref, std_ref = ref.predict_grid(coords, return_std=True)
    assert_allclose(mean.compute(), mean_ref)
    assert_allclose(std.compute(), std_ref)


@pytest.mark.parametrize("name", ["2-axis", "3-axis"])
def test_optimised_hyperparameters_equal_numpy(rng, name):
    chunks = GRIDS[name][1][1]
    coords, ref, gp, spy = _pair(name, chunks, rng, optimizer="fmin_l_bfgs_b")
    # the two searches take the same steps up to rounding (1e-16 in the gradient)
    np.testing.assert_allclose(gp.theta_, ref.theta_, rtol=0, atol=1e-5)
    assert_allclose(
        gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_
    )
    lml, grad = gp.log_marginal_likelihood(ref.theta_, eval_gradient=True)
    assert_allclose(lml, ref.log_marginal_likelihood_value_)
    assert np.abs(grad).max() < 1e-3  # the optimum
    assert max(spy.reads) <= np.prod(chunks)


def test_constant_target_normalises_to_unit_scale():
    y = da.full((4, 5), 3.0, chunks=2)
    assert dask_normalisation(y, normalize=True) == (3.0, 1.0)
    assert dask_normalisation(y, normalize=False) == (0.0, 1.0)


def _fit(Y, shape=None, **params):
    coords = [np.arange(n, dtype=float) for n in (shape or Y.shape[:2])]
    return KroneckerGP([RBF(), RBF()], optimizer=None, **params).fit_grid(coords, Y)


def test_refusals_name_what_is_supported(rng):
    Y = rng.standard_normal((4, 5))
    bad = Y.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite cells; a dask.array Y"):
        _fit(da.from_array(bad, chunks=2))
    with pytest.raises(ValueError, match="noise must be a scalar"):
        _fit(da.from_array(Y, chunks=2), noise=np.ones((4, 5)))
    with pytest.raises(ValueError, match="noise must be a scalar"):
        _fit(da.from_array(Y, chunks=2), noise_axes=[0])
    with pytest.raises(ValueError, match="targets axis"):
        _fit(da.from_array(np.stack([Y, Y], axis=-1), chunks=2))
    with pytest.raises(ValueError, match="Y must have the grid's shape"):
        _fit(da.from_array(Y, chunks=2)[:3], shape=(4, 5))
    with pytest.raises(TypeError, match="Y must hold real numbers"):
        _fit(da.from_array(Y + 1j, chunks=2))
    with pytest.raises(ValueError, match="a Kalman axis"):
        _fit(da.from_array(Y, chunks=2), state_space=0)
    X = np.column_stack([np.repeat(np.arange(4.0), 5), np.tile(np.arange(5.0), 4)])
    with pytest.raises(TypeError, match="fit_grid"):
        KroneckerGP([RBF(), RBF()]).fit(X, da.from_array(Y.ravel(), chunks=5))


def test_point_predictions_and_samples_are_refused(rng):
    gp = _fit(da.from_array(rng.standard_normal((4, 5)), chunks=2))
    with pytest.raises(ValueError, match="use predict_grid"):
        gp.predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="sample_grid is not available"):
        gp.sample_grid([np.arange(4.0), np.arange(5.0)], random_state=0)
