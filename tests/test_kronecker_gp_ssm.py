"""KroneckerGP's state-space route against its eigen route (same estimator)."""

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP
from kronecker_gp._grid import Grid, check_coords
from kronecker_gp.testing import EIG_RTOL, assert_allclose


def _pair(kernels, coords, Y, axis, **kw):
    a = KroneckerGP(kernels, state_space=axis, **kw).fit_grid(coords, Y)
    b = KroneckerGP(kernels, state_space=None, **kw).fit_grid(coords, Y)
    return a, b


def _cases(rng):
    times = np.sort(rng.uniform(0, 40, 30))  # irregular
    sites = rng.uniform(0, 3, size=(5, 2))
    two = ([ConstantKernel(1.2) * RBF(1.5), Matern(4.0, nu=1.5)], [sites, times], 1)
    tasks = np.arange(3.0)
    three = (
        [
            Matern(2.0, nu=2.5) + ConstantKernel(0.3),
            RBF(0.8),
            ConstantKernel(0.7) * Matern(1.0, nu=1.5),
        ],
        [times[::-1][:20], tasks, np.linspace(0, 1, 4)],  # unsorted time axis first
        0,
    )
    return [two, three]


@pytest.mark.parametrize("case", [0, 1])
def test_state_space_matches_eigen_route(case, rng):
    kernels, coords, axis = _cases(rng)[case]
    Y = rng.standard_normal(tuple(len(c) for c in coords))
    a, b = _pair(kernels, coords, Y, axis, noise=0.1, optimizer=None)
    assert a.solver_info_.path == "state-space"
    assert_allclose(
        a.log_marginal_likelihood_value_, b.log_marginal_likelihood_value_, rtol=1e-10
    )
    theta = a.theta_ + rng.normal(0, 0.2, size=a.theta_.shape)
    la, ga = a.log_marginal_likelihood(theta, eval_gradient=True)
    lb, gb = b.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(la, lb, rtol=1e-10)
    assert_allclose(ga, gb, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(gb).max())
    X = Grid(check_coords(coords)).to_rows()
    Xq = X[rng.permutation(len(X))[:8]] + rng.normal(0, 0.2, size=(8, X.shape[1]))
    ma, sa = a.predict(Xq, return_std=True)
    mb, sb = b.predict(Xq, return_std=True)
    assert_allclose(ma, mb, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(mb).max())
    assert_allclose(sa, sb, rtol=EIG_RTOL, atol=EIG_RTOL * sb.max())
    test = [c[:3] + 0.05 for c in check_coords(coords)]
    ma, sa = a.predict_grid(test, return_std=True)
    mb, sb = b.predict_grid(test, return_std=True)
    assert ma.shape == mb.shape == tuple(len(c) for c in test)
    assert_allclose(ma, mb, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(mb).max())
    assert_allclose(sa, sb, rtol=EIG_RTOL, atol=EIG_RTOL * sb.max())
    assert_allclose(np.sort(a.alpha_), np.sort(b.alpha_), rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.parametrize("space_axes", [1, 2])
def test_training_grid_predictions_match_eigen_route(space_axes, rng):
    # a long regular time axis: the filter and smoother freeze, gamma repeats
    # one row through the interior (one product per run of equal rows), the
    # training space axes use U W and the training times add no steps
    times = 0.5 * np.arange(500.0)
    sites = [rng.uniform(0, 3, size=(4, 2)), np.arange(3.0)][:space_axes]
    kernels = [ConstantKernel(1.2) * RBF(1.5), RBF(2.0)][:space_axes]
    kernels.append(Matern(1.5, nu=1.5))
    coords = [*sites, times]
    Y = rng.standard_normal(tuple(len(c) for c in coords))
    a, b = _pair(kernels, coords, Y, space_axes, noise=0.1, optimizer=None)
    assert a.solver_info_.path == "state-space"
    ma, sa = a.predict_grid(coords, return_std=True)
    mb, sb = b.predict_grid(coords, return_std=True)
    assert_allclose(ma, mb, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(mb).max())
    assert_allclose(sa, sb, rtol=EIG_RTOL, atol=EIG_RTOL * sb.max())
    assert_allclose(a.predict_grid(coords), ma, rtol=1e-12, atol=1e-14)
    # the training sites with query times: the merged timeline
    query = [*sites, np.array([3.25, 100.0, 400.75])]
    ma, sa = a.predict_grid(query, return_std=True)
    mb, sb = b.predict_grid(query, return_std=True)
    assert_allclose(ma, mb, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(mb).max())
    assert_allclose(sa, sb, rtol=EIG_RTOL, atol=EIG_RTOL * sb.max())


def test_projection_by_runs_equals_the_full_product(rng):
    from kronecker_gp.solvers._kalman import _project, _project_runs

    v = [rng.standard_normal((3, 4)), rng.standard_normal((2, 5))]
    rows = rng.standard_normal((4, 20))
    gamma = np.concatenate([rows[:2], np.repeat(rows[2:3], 30, axis=0), rows[3:]])
    assert_allclose(_project_runs(v, gamma), _project(v, gamma), rtol=1e-13)
    distinct = rng.standard_normal((6, 20))  # no runs: the plain product
    assert_allclose(_project_runs(v, distinct), _project(v, distinct), rtol=1e-13)


def test_optimisation_matches_eigen_route(rng):
    kernels, coords, axis = _cases(rng)[0]
    s, t = np.meshgrid(coords[0][:, 0], coords[1], indexing="ij")
    Y = np.sin(s) * np.cos(t / 4) + 0.2 * rng.standard_normal(s.shape)
    a, b = _pair(kernels, coords, Y, axis, noise=0.5, normalize_y=True)
    assert_allclose(
        a.log_marginal_likelihood_value_, b.log_marginal_likelihood_value_, rtol=1e-7
    )
    assert_allclose(a.theta_, b.theta_, rtol=0, atol=1e-3)


def test_auto_picks_long_markov_axis(rng):
    times = np.arange(60.0)
    coords = [np.arange(3.0), times]
    Y = rng.standard_normal((3, 60))
    gp = KroneckerGP([RBF(), Matern(nu=0.5)], optimizer=None, state_space_min_size=50)
    assert gp.fit_grid(coords, Y).solver_info_.path == "state-space"
    gp = KroneckerGP([RBF(), RBF()], optimizer=None, state_space_min_size=50)
    assert gp.fit_grid(coords, Y).solver_info_.path == "complete"
    gp = KroneckerGP([RBF(), Matern(nu=0.5)], optimizer=None)
    assert gp.fit_grid(coords, Y).solver_info_.path == "complete"


def test_posterior_samples_on_the_state_space_route(rng):
    coords = [np.arange(2.0), np.linspace(0, 5, 8)]
    kernels = [RBF(1.0), Matern(1.0, nu=1.5)]
    Y = rng.standard_normal((2, 8))
    gp = KroneckerGP(kernels, noise=0.1, optimizer=None, state_space=1).fit_grid(
        coords, Y
    )
    test = [coords[0], np.array([0.5, 2.5, 7.0])]
    n = 20000
    draws = gp.sample_grid(test, n_samples=n, random_state=0)
    assert draws.shape == (2, 3, n)
    mean, std = gp.predict_grid(test, return_std=True)
    assert np.all(np.abs(draws.mean(axis=-1) - mean) < 5 * std / np.sqrt(n))
    assert np.all(np.abs(draws.std(axis=-1) - std) < 0.05 * std)


def test_state_space_errors(rng):
    coords = [np.arange(3.0), np.arange(10.0)]
    Y = rng.standard_normal((3, 10))
    with pytest.raises(ValueError, match="Markov kernel"):
        KroneckerGP([RBF(), RBF()], state_space=1, optimizer=None).fit_grid(coords, Y)
    with pytest.raises(ValueError, match="state_space must be"):
        KroneckerGP([RBF(), RBF()], state_space=5, optimizer=None).fit_grid(coords, Y)
    Y[0, 0] = np.nan
    gp = KroneckerGP([RBF(), Matern(nu=0.5)], state_space=1, optimizer=None)
    gp.fit_grid(coords, np.nan_to_num(Y))
    with pytest.raises(ValueError, match="training coordinates of every other axis"):
        gp.sample_grid([np.arange(2.0), np.arange(3.0)])


def test_auto_keeps_state_space_route_with_missing_cells(rng):
    coords = [np.arange(3.0), np.arange(60.0)]
    Y = rng.standard_normal((3, 60))
    Y[1, 5] = np.nan
    gp = KroneckerGP([RBF(), Matern(nu=0.5)], optimizer=None, state_space_min_size=50)
    assert gp.fit_grid(coords, Y).solver_info_.path == "state-space-schur-exact"
    noise = np.ones((3, 60))
    gp = KroneckerGP(
        [RBF(), Matern(nu=0.5)], noise=noise, optimizer=None, state_space_min_size=50
    )
    # per-cell noise and missing cells: the per-series route takes one of the
    # two only; an exact route takes both (dense on these 179 cells)
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path in ("spacetime-kalman", "dense")
    assert gp.solver_info_.lml_std_error == 0
    gp.fit_grid(coords, np.nan_to_num(Y))  # per-cell noise alone: a Kalman route
    # the cost model takes an exact route over the per-series CG with an
    # estimated likelihood (3 sites x 60 days: one small filter, or dense)
    assert gp.solver_info_.path in ("spacetime-kalman", "dense")
    assert "estimated LML" in gp.solver_info_.extra["route_reason"]
    # an axis named for filtering takes both per-cell noise and missing cells
    gp.set_params(state_space=1).fit_grid(coords, Y)
    assert gp.solver_info_.path == "spacetime-kalman"
