"""Several targets on one grid (scikit-learn's ``n_targets``), against dense twins.

The targets share the kernel and the noise; the LML is summed over targets
(``GaussianProcessRegressor`` with a 2-D ``y``). On a complete grid one
eigendecomposition serves every target; with per-target missing cells or
per-cell noise each target gets its own route. Both are checked against
scikit-learn on the observed cells.
"""

import warnings

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, Matern
from sklearn.gaussian_process.kernels import ConstantKernel as C

from kronecker_gp import KroneckerGP
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.testing import assert_allclose

RTOL = 1e-8


def _factors(n_axes):
    kernels = [C(1.5) * RBF(0.4), Matern(3.0, nu=1.5), RBF(0.7)]
    return kernels[:n_axes]


def _grid(n_axes, rng):
    coords = [np.linspace(0, 1, 6), np.arange(7.0), np.linspace(-1, 1, 4)][:n_axes]
    shape = tuple(c.size for c in coords)
    return coords, shape


def _rows(coords):
    mesh = np.meshgrid(*coords, indexing="ij")
    return np.column_stack([m.reshape(-1) for m in mesh])


def _dense_twin(kernels, noise, normalize_y, X, y):
    kernel = KroneckerKernel(kernels, axes=[[d] for d in range(X.shape[1])])
    return GaussianProcessRegressor(
        kernel, alpha=noise, optimizer=None, normalize_y=normalize_y
    ).fit(X, y)


@pytest.mark.parametrize("n_axes", [2, 3])
@pytest.mark.parametrize("normalize_y", [False, True])
def test_complete_grid_targets_equal_sklearn_multi_output(n_axes, normalize_y):
    rng = np.random.default_rng(0)
    coords, shape = _grid(n_axes, rng)
    Y = rng.standard_normal((*shape, 3)) * [1.0, 5.0, 0.1] + [0.0, 3.0, -1.0]
    gp = KroneckerGP(
        _factors(n_axes), noise=0.1, optimizer=None, normalize_y=normalize_y
    )
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path == "complete"
    X = _rows(coords)
    ref = _dense_twin(_factors(n_axes), 0.1, normalize_y, X, Y.reshape(-1, 3))

    assert_allclose(
        gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_, rtol=RTOL
    )
    lml, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    ref_lml, ref_grad = ref.log_marginal_likelihood(
        ref.kernel_.theta, eval_gradient=True
    )
    assert_allclose(lml, ref_lml, rtol=RTOL)
    assert_allclose(grad[:-1], ref_grad, rtol=1e-7, atol=1e-8 * np.abs(ref_grad).max())

    Xq = rng.random((8, n_axes)) * [c.max() for c in coords]
    mean, std = gp.predict(Xq, return_std=True)
    ref_mean, ref_std = ref.predict(Xq, return_std=True)
    assert mean.shape == std.shape == (8, 3)
    assert_allclose(mean, ref_mean, rtol=RTOL, atol=1e-10 * np.abs(ref_mean).max())
    assert_allclose(std, ref_std, rtol=1e-7, atol=1e-10)
    _, cov = gp.predict(Xq, return_cov=True)
    _, ref_cov = ref.predict(Xq, return_cov=True)
    assert cov.shape == (8, 8, 3)
    assert_allclose(cov, ref_cov, rtol=1e-7, atol=1e-10 * np.abs(ref_cov).max())

    grid_mean, grid_std = gp.predict_grid(coords, return_std=True)
    assert grid_mean.shape == (*shape, 3)
    ref_grid_mean, ref_grid_std = ref.predict(X, return_std=True)
    assert_allclose(grid_mean.reshape(-1, 3), ref_grid_mean, rtol=1e-7, atol=1e-10)
    assert_allclose(grid_std.reshape(-1, 3), ref_grid_std, rtol=1e-7, atol=1e-10)
    assert gp.alpha_.shape == (np.prod(shape), 3)


def test_targets_with_their_own_missing_cells_equal_per_target_twins():
    rng = np.random.default_rng(1)
    coords, shape = _grid(2, rng)
    Y = rng.standard_normal((*shape, 3))
    Y[1, 2, 0] = Y[3, 4, 1] = np.nan
    Y[5, :3, 2] = np.nan
    Y[2, 6, :] = np.nan  # missing in every target
    gp = KroneckerGP(_factors(2), noise=0.05, optimizer=None, normalize_y=True)
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.extra["n_targets"] == 3
    assert gp.solver_info_.n_missing == int(np.isnan(Y).sum())

    X = _rows(coords)
    Xq = rng.random((6, 2)) * [1.0, 6.0]
    lml, grads, means, stds = 0.0, 0.0, [], []
    for t in range(3):
        y = Y[..., t].reshape(-1)
        seen = ~np.isnan(y)
        ref = _dense_twin(_factors(2), 0.05, True, X[seen], y[seen])
        ref_lml, ref_grad = ref.log_marginal_likelihood(
            ref.kernel_.theta, eval_gradient=True
        )
        lml, grads = lml + ref_lml, grads + ref_grad
        mean, std = ref.predict(Xq, return_std=True)
        means.append(mean)
        stds.append(std)
    assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=RTOL)
    _, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    assert_allclose(grad[:-1], grads, rtol=1e-7, atol=1e-8 * np.abs(grads).max())
    mean, std = gp.predict(Xq, return_std=True)
    assert_allclose(mean, np.stack(means, axis=1), rtol=1e-7, atol=1e-10)
    assert_allclose(std, np.stack(stds, axis=1), rtol=1e-7, atol=1e-10)


def test_rows_with_nan_per_target_equal_fit_grid():
    rng = np.random.default_rng(2)
    coords, shape = _grid(2, rng)
    Y = rng.standard_normal((*shape, 2))
    Y[0, 0, 1] = np.nan
    X = _rows(coords)
    order = rng.permutation(X.shape[0])
    kw = dict(noise=0.1, optimizer=None)
    by_rows = KroneckerGP(_factors(2), **kw).fit(X[order], Y.reshape(-1, 2)[order])
    by_grid = KroneckerGP(_factors(2), **kw).fit_grid(coords, Y)
    assert_allclose(
        by_rows.log_marginal_likelihood_value_,
        by_grid.log_marginal_likelihood_value_,
        rtol=1e-12,
    )
    Xq = rng.random((5, 2)) * [1.0, 6.0]
    assert_allclose(by_rows.predict(Xq), by_grid.predict(Xq), rtol=1e-10, atol=1e-12)


def test_one_target_column_is_the_single_output_case():
    rng = np.random.default_rng(3)
    coords, shape = _grid(2, rng)
    Y = rng.standard_normal(shape)
    kw = dict(noise=0.1, optimizer=None, normalize_y=True)
    single = KroneckerGP(_factors(2), **kw).fit_grid(coords, Y)
    column = KroneckerGP(_factors(2), n_targets=1, **kw).fit_grid(coords, Y[..., None])
    assert column.predict_grid(coords).shape == shape
    assert_allclose(
        column.log_marginal_likelihood_value_,
        single.log_marginal_likelihood_value_,
        rtol=1e-14,
    )


def test_two_equal_targets_double_the_likelihood_and_share_the_optimum():
    rng = np.random.default_rng(4)
    coords, shape = _grid(2, rng)
    y = np.sin(3 * coords[0])[:, None] * np.cos(coords[1] / 2)[None, :]
    y = y + 0.1 * rng.standard_normal(shape)
    kw = dict(noise=0.1, noise_bounds=(1e-3, 10.0))
    single = KroneckerGP(_factors(2), **kw).fit_grid(coords, y)
    double = KroneckerGP(_factors(2), **kw).fit_grid(coords, np.stack([y, y], -1))
    assert_allclose(
        double.log_marginal_likelihood_value_,
        2 * single.log_marginal_likelihood_value_,
        rtol=1e-6,
    )
    assert_allclose(double.theta_, single.theta_, rtol=1e-3, atol=1e-3)


def test_optimised_targets_reach_sklearn_multi_output_optimum():
    rng = np.random.default_rng(5)
    coords, shape = _grid(2, rng)
    base = np.sin(3 * coords[0])[:, None] * np.cos(coords[1] / 2)[None, :]
    Y = np.stack([base, -2 * base, base**2], axis=-1)
    Y = Y + 0.1 * rng.standard_normal(Y.shape)
    gp = KroneckerGP(_factors(2), noise=0.1, noise_bounds="fixed").fit_grid(coords, Y)
    kernel = KroneckerKernel(_factors(2), axes=[[0], [1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bound warnings of either optimiser
        ref = GaussianProcessRegressor(kernel, alpha=0.1).fit(
            _rows(coords), Y.reshape(-1, 3)
        )
    # the same objective: at least sklearn's optimum, within the optimiser's tol
    best = ref.log_marginal_likelihood_value_
    assert gp.log_marginal_likelihood_value_ >= best - 1e-4
    assert_allclose(
        gp.log_marginal_likelihood(ref.kernel_.theta),
        ref.log_marginal_likelihood_value_,
        rtol=RTOL,
    )


def test_per_cell_noise_shared_by_targets_equals_dense():
    rng = np.random.default_rng(6)
    coords, shape = _grid(2, rng)
    Y = rng.standard_normal((*shape, 2))
    Y[4, 1, 0] = np.nan
    var = rng.uniform(0.05, 0.5, shape)
    gp = KroneckerGP(_factors(2), noise=var, optimizer=None, solver="exact")
    gp.fit_grid(coords, Y)
    assert gp.noise_variances_.shape == (*shape, 2)
    assert np.isnan(gp.noise_variances_[4, 1, 0])
    X = _rows(coords)
    Xq = rng.random((5, 2)) * [1.0, 6.0]
    total = 0.0
    for t in range(2):
        y = Y[..., t].reshape(-1)
        seen = ~np.isnan(y)
        kernel = KroneckerKernel(_factors(2), axes=[[0], [1]])
        ref = GaussianProcessRegressor(
            kernel, alpha=var.reshape(-1)[seen], optimizer=None
        ).fit(X[seen], y[seen])
        total += ref.log_marginal_likelihood_value_
        assert_allclose(gp.predict(Xq)[:, t], ref.predict(Xq), rtol=1e-7, atol=1e-9)
    # so few cells: each target on the exact dense route (no estimate)
    assert gp.solver_info_.extra["target_paths"] == ["dense", "dense"]
    assert_allclose(gp.log_marginal_likelihood_value_, total, rtol=1e-10)


def test_kalman_axis_targets_equal_eigen_targets():
    rng = np.random.default_rng(7)
    coords = [np.linspace(0, 1, 4), np.arange(40.0)]
    Y = rng.standard_normal((4, 40, 2))
    Y[1, 5, 1] = np.nan
    kernels = [C(1.2) * RBF(0.5), Matern(4.0, nu=1.5)]
    kw = dict(noise=0.2, optimizer=None, solver="exact")
    kalman = KroneckerGP(kernels, state_space=1, **kw).fit_grid(coords, Y)
    eigen = KroneckerGP(kernels, state_space=None, **kw).fit_grid(coords, Y)
    assert "state-space" in kalman.solver_info_.path
    assert_allclose(
        kalman.log_marginal_likelihood_value_,
        eigen.log_marginal_likelihood_value_,
        rtol=RTOL,
    )
    test = [np.linspace(0, 1, 3), np.arange(0.5, 40.0, 7.0)]
    mean_k, std_k = kalman.predict_grid(test, return_std=True)
    mean_e, std_e = eigen.predict_grid(test, return_std=True)
    assert mean_k.shape == (3, 6, 2)
    assert_allclose(mean_k, mean_e, rtol=1e-7, atol=1e-9)
    assert_allclose(std_k, std_e, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("missing", [False, True])
def test_posterior_samples_per_target_match_the_moments(missing):
    rng = np.random.default_rng(8)
    coords, shape = _grid(2, rng)
    Y = rng.standard_normal((*shape, 2)) + [0.0, 4.0]
    if missing:
        Y[2, 3, 1] = np.nan
    gp = KroneckerGP(_factors(2), noise=0.1, optimizer=None, normalize_y=True)
    gp.fit_grid(coords, Y)
    test = [coords[0][:3], coords[1][2:4]]
    draws = gp.sample_grid(test, n_samples=4000, random_state=0)
    assert draws.shape == (3, 2, 2, 4000)
    mean, std = gp.predict_grid(test, return_std=True)
    se = std / np.sqrt(4000)
    assert np.all(np.abs(draws.mean(axis=-1) - mean) < 5 * se + 1e-12)
    assert_allclose(draws.std(axis=-1), std, rtol=0.1)
    # the targets' draws are independent
    corr = np.corrcoef(draws[0, 0, 0], draws[0, 0, 1])[0, 1]
    assert abs(corr) < 0.1


def test_prior_shapes_follow_n_targets():
    coords = [np.linspace(0, 1, 3), np.arange(4.0)]
    gp = KroneckerGP(_factors(2), n_targets=3)
    mean, std = gp.predict_grid(coords, return_std=True)
    assert mean.shape == std.shape == (3, 4, 3)
    assert gp.sample_grid(coords, n_samples=2, random_state=0).shape == (3, 4, 3, 2)
    X = _rows(coords)
    assert gp.sample_y(X, n_samples=2).shape == (12, 3, 2)
    mean, cov = gp.predict(X, return_cov=True)
    assert mean.shape == (12, 3) and cov.shape == (12, 12, 3)


def test_bad_targets_raise_clear_errors():
    coords = [np.linspace(0, 1, 3), np.arange(4.0)]
    Y = np.zeros((3, 4, 2))
    with pytest.raises(ValueError, match="Got 2 != 3"):
        KroneckerGP(_factors(2), n_targets=3, optimizer=None).fit_grid(coords, Y)
    with pytest.raises(ValueError, match="n_targets must be a positive integer"):
        KroneckerGP(_factors(2), n_targets=0, optimizer=None).fit_grid(coords, Y)
    with pytest.raises(ValueError, match=r"grid's shape \(3, 4\)"):
        KroneckerGP(_factors(2), optimizer=None).fit_grid(coords, np.zeros((3, 5, 2)))
    Y[..., 1] = np.nan
    with pytest.raises(ValueError, match="no observed cell for target 1"):
        KroneckerGP(_factors(2), optimizer=None).fit_grid(coords, Y)
    with pytest.raises(ValueError, match="noise given per cell"):
        KroneckerGP(_factors(2), noise=np.ones((3, 5)), optimizer=None).fit_grid(
            coords, np.zeros((3, 4, 2))
        )
