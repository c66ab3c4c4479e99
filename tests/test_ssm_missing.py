"""Missing cells on the state-space route against the eigen route (same estimator)."""

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP, solvers
from kronecker_gp.solvers import _kalman_missing_predict as _ssm_missing_predict
from kronecker_gp.testing import EIG_RTOL, assert_allclose


@pytest.fixture(autouse=True)
def _per_series_route(monkeypatch):
    # these tests exercise the per-series Kalman route: keep the cost model
    # from the spatio-temporal filter and the dense route (tests/test_solvers.py
    # covers those)
    for name in ("_spacetime_candidate", "_dense_candidate"):
        monkeypatch.setattr(solvers, name, lambda *args, **kwargs: None)


def _grid(rng, frac=0.2, n_sites=5, n_t=40):
    sites = rng.uniform(0, 3, size=(n_sites, 2))
    times = np.sort(rng.uniform(0, 40, n_t))  # irregular
    Y = np.sin(sites[:, :1]) + np.cos(times / 4.0)[None, :]
    Y = Y + 0.2 * rng.standard_normal(Y.shape)
    Y[rng.random(Y.shape) < frac] = np.nan
    return [sites, times], Y


KERNELS = [ConstantKernel(1.2) * RBF(1.5), Matern(4.0, nu=1.5)]


def _pair(coords, Y, axis=1, kernels=KERNELS, **kw):
    kw = {"noise": 0.1, "optimizer": None, **kw}
    a = KroneckerGP(kernels, state_space=axis, **kw).fit_grid(coords, Y)
    b = KroneckerGP(kernels, state_space=None, **kw).fit_grid(coords, Y)
    return a, b


def _close(a, b):
    assert_allclose(a, b, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(b).max())


def test_exact_path_matches_eigen_route(rng):
    coords, Y = _grid(rng)
    a, b = _pair(coords, Y)
    assert a.solver_info_.path == "state-space-schur-exact"
    assert a.solver_info_.n_missing == np.isnan(Y).sum()
    assert_allclose(
        a.log_marginal_likelihood_value_, b.log_marginal_likelihood_value_, rtol=1e-10
    )
    theta = a.theta_ + rng.normal(0, 0.3, size=a.theta_.shape)
    la, ga = a.log_marginal_likelihood(theta, eval_gradient=True)
    lb, gb = b.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(la, lb, rtol=1e-10)
    _close(ga, gb)
    _close(a.alpha_, b.alpha_)
    test = [rng.uniform(0, 3, size=(4, 2)), np.linspace(-5, 45, 13)]
    ma, sa = a.predict_grid(test, return_std=True)
    mb, sb = b.predict_grid(test, return_std=True)
    _close(ma, mb)
    _close(sa, sb)
    X = np.column_stack([rng.uniform(0, 3, size=(9, 2)), rng.uniform(-2, 42, 9)])
    X[:3, 2] = coords[1][[0, 5, 5]]  # on grid times, one repeated
    ma, sa = a.predict(X, return_std=True)
    mb, sb = b.predict(X, return_std=True)
    _close(ma, mb)
    _close(sa, sb)


def test_exact_path_three_factors_time_first(rng):
    times = np.sort(rng.uniform(0, 20, 25))[::-1]  # unsorted time axis first
    coords = [times, np.arange(3.0), np.linspace(0, 1, 4)]
    kernels = [
        Matern(2.0, nu=2.5) + ConstantKernel(0.3),
        RBF(0.8),
        ConstantKernel(0.7) * Matern(1.0, nu=1.5),
    ]
    Y = rng.standard_normal((25, 3, 4))
    Y[rng.random(Y.shape) < 0.15] = np.nan
    Y[3, :, :] = np.nan  # a whole time slice: dropped, not iterated on
    a, b = _pair(coords, Y, axis=0, kernels=kernels)
    assert a.solver_info_.path == "state-space-schur-exact"
    theta = a.theta_ + rng.normal(0, 0.2, size=a.theta_.shape)
    la, ga = a.log_marginal_likelihood(theta, eval_gradient=True)
    lb, gb = b.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(la, lb, rtol=1e-10)
    _close(ga, gb)
    test = [np.linspace(-1, 21, 6), np.arange(3.0), np.array([0.2, 0.9])]
    ma, sa = a.predict_grid(test, return_std=True)
    mb, sb = b.predict_grid(test, return_std=True)
    _close(ma, mb)
    _close(sa, sb)


def test_exact_gradient_matches_finite_differences(rng):
    coords, Y = _grid(rng, frac=0.3, n_sites=4, n_t=30)
    gp = KroneckerGP(KERNELS, noise=0.1, optimizer=None, state_space=1)
    gp.fit_grid(coords, Y)
    theta = gp.theta_
    _, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-6
    fd = [
        (
            gp.log_marginal_likelihood(theta + h * e)
            - gp.log_marginal_likelihood(theta - h * e)
        )
        / (2 * h)
        for e in np.eye(theta.size)
    ]
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_cg_path_mean_exact_and_estimates_within_error(rng):
    coords, Y = _grid(rng, frac=0.3)
    a, b = _pair(coords, Y, solver="cg", n_probes=64)
    info = a.solver_info_
    assert info.path == "state-space-schur-cg"
    assert 0 < info.iterations < 100 and info.residual <= 1e-9
    _close(a.alpha_, b.alpha_)
    exact = KroneckerGP(KERNELS, noise=0.1, optimizer=None, state_space=None)
    exact.fit_grid(coords, Y)
    err = abs(a.log_marginal_likelihood_value_ - exact.log_marginal_likelihood_value_)
    assert 0 < info.lml_std_error and err <= 4 * info.lml_std_error
    # the estimated gradient (Hutchinson + polarisation) is close to the exact one
    _, ga = a.log_marginal_likelihood(a.theta_, eval_gradient=True)
    _, gb = exact.log_marginal_likelihood(exact.theta_, eval_gradient=True)
    assert np.abs(ga - gb).max() <= 0.05 * np.abs(gb).max()
    # deterministic objective: the same probes at every call
    assert a.log_marginal_likelihood(a.theta_) == a.log_marginal_likelihood(a.theta_)
    test = [coords[0][:2], np.linspace(0, 40, 7)]
    ma, sa = a.predict_grid(test, return_std=True)
    mb, sb = b.predict_grid(test, return_std=True)
    _close(ma, mb)
    assert_allclose(sa, sb, rtol=1e-7)


def test_monte_carlo_variance_correction_within_stated_error(rng, monkeypatch):
    coords, Y = _grid(rng, frac=0.3)
    a, b = _pair(coords, Y, n_probes=400)
    test = [coords[0], np.linspace(0, 40, 9)]
    _, s_exact = b.predict_grid(test, return_std=True)
    _, s_complete = (
        KroneckerGP(KERNELS, noise=0.1, optimizer=None, state_space=None)
        .fit_grid(coords, np.nan_to_num(Y))
        .predict_grid(test, return_std=True)
    )
    monkeypatch.setattr(
        _ssm_missing_predict, "_exact_variance_affordable", lambda *a: False
    )
    _, s_mc = a.predict_grid(test, return_std=True)
    corr_exact = (s_exact**2 - s_complete**2) / a.y_train_std_**2
    corr_mc = (s_mc**2 - s_complete**2) / a.y_train_std_**2
    # relative standard error sqrt(2/S) on the correction, S = n_probes = 400
    se = np.sqrt(2 / 400) * corr_exact
    assert np.mean(np.abs(corr_mc - corr_exact) <= 3 * se + 1e-12) > 0.95
    assert np.abs(np.mean(corr_mc - corr_exact)) <= 0.05 * corr_exact.mean()


def test_posterior_samples_with_missing_cells(rng):
    coords, Y = _grid(rng, frac=0.25, n_sites=3, n_t=25)
    gp = KroneckerGP(KERNELS, noise=0.1, optimizer=None, state_space=1)
    gp.fit_grid(coords, Y)
    test_t = np.array([3.0, 17.5, 50.0])
    draws = gp.sample_grid([coords[0], test_t], n_samples=4000, random_state=1)
    assert draws.shape == (3, 3, 4000)
    mean, std = gp.predict_grid([coords[0], test_t], return_std=True)
    se = std / np.sqrt(4000)
    assert np.all(np.abs(draws.mean(axis=-1) - mean) < 5 * se)
    assert np.all(np.abs(draws.std(axis=-1) - std) < 0.06 * std)


def test_optimisation_reaches_eigen_route_optimum(rng):
    coords, Y = _grid(rng, frac=0.2, n_sites=4, n_t=30)
    kw = {"noise": 0.3, "optimizer": "fmin_l_bfgs_b"}
    a = KroneckerGP(KERNELS, state_space=1, **kw).fit_grid(coords, Y)
    b = KroneckerGP(KERNELS, state_space=None, **kw).fit_grid(coords, Y)
    lb = b.log_marginal_likelihood_value_
    # relative to the LML's O(N) scale, not its value (which may be near 0)
    assert abs(a.log_marginal_likelihood_value_ - lb) <= 1e-6 * max(abs(lb), Y.size)


def test_missing_cells_need_not_touch_whole_series(rng):
    """A long-axis fit where one site is missing for a block of times."""
    coords, Y = _grid(rng, frac=0.0, n_sites=4, n_t=60)
    Y[2, 10:35] = np.nan
    a, b = _pair(coords, Y)
    assert_allclose(
        a.log_marginal_likelihood_value_, b.log_marginal_likelihood_value_, rtol=1e-10
    )
    _close(a.predict_grid(coords), b.predict_grid(coords))


@pytest.mark.parametrize("method", ["exact", "cg"])
def test_system_solves_match_dense(rng, method):
    coords, Y = _grid(rng, frac=0.3, n_sites=3, n_t=20)
    gp = KroneckerGP(KERNELS, noise=0.1, optimizer=None, state_space=1, solver=method)
    gp.fit_grid(coords, Y)
    system = gp._fact.state.system
    grams = gp.kernel_.factor_grams(gp.grid_.coords)
    dense = np.kron(grams[0], grams[1]) + 0.1 * np.eye(60)
    p = np.linalg.inv(dense)
    miss = np.flatnonzero(np.isnan(Y.reshape(-1)))
    b = rng.standard_normal((miss.size, 2))
    assert_allclose(system.pmm_matvec(b), p[np.ix_(miss, miss)] @ b, rtol=1e-10)
    assert_allclose(
        system.pmm_solve(b), np.linalg.solve(p[np.ix_(miss, miss)], b), rtol=1e-8
    )
    assert_allclose(system.diag, np.diag(p)[miss], rtol=1e-8)


@pytest.mark.parametrize("frac", [0.0, 0.25])
def test_return_cov_and_sample_y_match_eigen_route(rng, frac):
    coords, Y = _grid(rng, frac=frac, n_sites=4, n_t=30)
    a, b = _pair(coords, Y)
    X = np.column_stack([rng.uniform(0, 3, size=(7, 2)), rng.uniform(-2, 42, 7)])
    X[1, 2] = X[0, 2]  # a repeated time
    ma, ca = a.predict(X, return_cov=True)
    mb, cb = b.predict(X, return_cov=True)
    _close(ma, mb)
    _close(ca, cb)
    draws = a.sample_y(X, n_samples=3, random_state=0)
    assert draws.shape == (7, 3)
    assert_allclose(draws, b.sample_y(X, n_samples=3, random_state=0), rtol=1e-6)


def test_return_cov_refuses_too_many_points(rng):
    coords, Y = _grid(rng, n_sites=2, n_t=30)
    gp = KroneckerGP(KERNELS, noise=0.1, optimizer=None, state_space=1)
    gp.fit_grid(coords, Y)
    X = np.zeros((2**26 // 60 + 1, 3))
    with pytest.raises(ValueError, match="return_cov on the state-space route"):
        gp.predict(X, return_cov=True)


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_regular_long_axis_with_frozen_gains(rng, solver):
    """Regular steps: the Riccati recursion converges and the gains freeze."""
    sites = rng.uniform(0, 3, size=(3, 2))
    times = np.arange(200.0)
    Y = np.sin(sites[:, :1]) + np.cos(times / 9.0)[None, :]
    Y = Y + 0.2 * rng.standard_normal(Y.shape)
    Y[rng.random(Y.shape) < 0.1] = np.nan
    Y[1, 100:150] = np.nan
    kernels = [ConstantKernel(1.2) * RBF(1.5), Matern(3.0, nu=0.5)]
    a, b = _pair([sites, times], Y, kernels=kernels, solver=solver, n_probes=16)
    _close(a.alpha_, b.alpha_)
    la, ga = a.log_marginal_likelihood(a.theta_, eval_gradient=True)
    lb, gb = b.log_marginal_likelihood(b.theta_, eval_gradient=True)
    if solver == "exact":
        assert_allclose(la, lb, rtol=1e-10)
        _close(ga, gb)
    else:
        exact = KroneckerGP(kernels, noise=0.1, optimizer=None, state_space=None)
        l_exact = exact.fit_grid([sites, times], Y).log_marginal_likelihood_value_
        lml = a.log_marginal_likelihood_value_  # estimated on first access
        se = a.solver_info_.lml_std_error
        assert 0 < se and abs(lml - l_exact) <= 4 * se
    _, sa = a.predict_grid([sites, times[95:155]], return_std=True)
    _, sb = b.predict_grid([sites, times[95:155]], return_std=True)
    assert_allclose(sa, sb, rtol=1e-7)


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_fitted_missing_cell_models_pickle(solver, rng):
    """The Schur systems hold no closures: a fitted model round-trips."""
    import pickle

    coords, Y = _grid(rng)
    for axis in (1, None):
        gp = KroneckerGP(KERNELS, state_space=axis, noise=0.1, optimizer=None)
        gp.set_params(solver=solver).fit_grid(coords, Y)
        assert "schur" in gp.solver_info_.path
        back = pickle.loads(pickle.dumps(gp))
        want = gp.predict_grid(coords, return_std=True)
        got = back.predict_grid(coords, return_std=True)
        assert_allclose(got[0], want[0])
        assert_allclose(got[1], want[1])
