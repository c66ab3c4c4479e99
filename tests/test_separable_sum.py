"""Sums of separable kernels: the kernel, the Woodbury algebra, both routes vs dense."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP, KroneckerLaplaceGP
from kronecker_gp.kernels import SeparableSum
from kronecker_gp.linalg._separable_sum import (
    low_rank_factor,
    mode_diag_weights,
    mode_pair_grams,
    sum_matvec,
    woodbury_grid,
)
from kronecker_gp.testing import EIG_RTOL, assert_allclose

NOISE = 0.1


def _kernel2():
    """A regional day effect (constant over sites) plus a local field."""
    return SeparableSum(
        [
            [ConstantKernel(0.7), Matern(1.3, nu=0.5)],
            [RBF(1.2), Matern(2.0, nu=1.5)],
        ]
    )


def _kernel3():
    return SeparableSum(
        [
            [ConstantKernel(0.5), RBF(2.0), Matern(1.0, nu=0.5)],
            [RBF(1.5), ConstantKernel(1.0, "fixed"), Matern(2.0, nu=1.5)],
        ]
    )


def _kernel_full2():
    """Two terms of full rank: the general Woodbury form."""
    return SeparableSum(
        [[RBF(0.8), Matern(1.0, nu=0.5)], [Matern(2.0, nu=1.5), RBF(1.5)]]
    )


def _kernel_regional3():
    """A regional effect on two space axes: the collapsed form, three axes."""
    return SeparableSum(
        [
            [ConstantKernel(0.6), ConstantKernel(1.0, "fixed"), Matern(1.0, nu=0.5)],
            [RBF(1.5), RBF(2.0), Matern(2.0, nu=1.5)],
        ]
    )


def _grid(rng, shape):
    coords = [np.sort(rng.uniform(0, 5, n)) for n in shape]
    Y = rng.standard_normal(shape) + np.sin(coords[0]).reshape(
        [-1] + [1] * (len(shape) - 1)
    )
    return coords, Y


def _rows(coords):
    mesh = np.meshgrid(*coords, indexing="ij")
    return np.column_stack([m.reshape(-1) for m in mesh])


def _dense_noise_grad(gpr, noise):
    """d LML / d log(noise) of the dense twin: s/2 (a^T a - tr C^{-1})."""
    K = gpr.kernel_(gpr.X_train_) + noise * np.eye(gpr.X_train_.shape[0])
    inv = np.linalg.inv(K)
    a = inv @ gpr.y_train_
    return 0.5 * noise * (a @ a - np.trace(inv))


def _twin(kernel, coords, Y):
    X = _rows(coords)
    obs = ~np.isnan(Y.reshape(-1))
    gpr = GaussianProcessRegressor(clone(kernel), alpha=NOISE, optimizer=None)
    return gpr.fit(X[obs], Y.reshape(-1)[obs]), X


# -- the kernel ------------------------------------------------------------------
def test_kernel_dense_gram_is_the_sum_of_kronecker_products(rng):
    kernel = _kernel2()
    coords = [np.sort(rng.random(3)), np.sort(rng.random(4))]
    dense = sum(np.kron(*g) for g in kernel.term_grams(coords))
    assert_allclose(kernel(_rows(coords)), dense)
    assert_allclose(kernel.diag(_rows(coords)), np.diag(dense))


def test_kernel_gradient_matches_finite_differences(rng):
    kernel = _kernel3()
    X = rng.random((7, 3))
    _, grad = kernel(X, eval_gradient=True)
    assert grad.shape == (7, 7, kernel.theta.size)
    h = 1e-6
    for p in range(kernel.theta.size):
        up, down = kernel.theta.copy(), kernel.theta.copy()
        up[p] += h
        down[p] -= h
        fd = (kernel.clone_with_theta(up)(X) - kernel.clone_with_theta(down)(X)) / (
            2 * h
        )
        assert_allclose(grad[:, :, p], fd, rtol=1e-5, atol=1e-8)


def test_kernel_hyperparameters_and_params():
    kernel = _kernel3()
    names = [h.name for h in kernel.hyperparameters if not h.fixed]
    assert names[0] == "t0__k0__constant_value"
    assert "t1__k1__constant_value" not in names  # fixed: no theta entry
    assert kernel.theta.size == len(names) == kernel.bounds.shape[0]
    assert_allclose(kernel.theta, np.log([0.5, 2.0, 1.0, 1.5, 2.0]))
    copy = clone(kernel)
    assert copy == kernel and copy.terms[0][1] is not kernel.terms[0][1]
    copy.set_params(t1__k0__length_scale=3.0)
    assert copy.terms[1][0].length_scale == 3.0 and copy != kernel
    copy.set_params(t0__k2=RBF(4.0))
    assert copy.terms[0][2] == RBF(4.0)
    assert len(kernel.kernels) == 3 and kernel.kernels[2][1] == Matern(2.0, nu=1.5)
    assert "SeparableSum([" in repr(kernel)


@pytest.mark.parametrize(
    ("terms", "error", "match"),
    [
        ([[RBF(), RBF()], [RBF()]], ValueError, "one kernel per grid axis"),
        (RBF(), TypeError, "terms must be a non-empty list"),
        ([], TypeError, "terms must be a non-empty list"),
        ([[RBF(), "rbf"]], TypeError, r"terms\[0\] must be"),
        ([[RBF()], []], TypeError, r"terms\[1\] must be"),
    ],
)
def test_kernel_bad_terms(terms, error, match):
    with pytest.raises(error, match=match):
        SeparableSum(terms)(np.zeros((2, 2)))


def test_kernel_bad_set_params():
    with pytest.raises(ValueError, match="the terms are t0..t1"):
        _kernel2().set_params(t5__k0=RBF())
    with pytest.raises(ValueError, match="theta must be 1-D with 4"):
        _kernel2().split_theta(np.zeros(3))


# -- the linear algebra ------------------------------------------------------------
def test_woodbury_grid_matches_dense(rng):
    ka, kb = (np.cov(rng.random((n, 12))) for n in (3, 4))
    la, lb = rng.random((3, 1)), rng.random((4, 2))
    ma, mb = rng.random((3, 2)), rng.random((4, 1))
    wb = woodbury_grid(
        [np.linalg.eigh(ka), np.linalg.eigh(kb)], [[la, lb], [ma, mb]], 0.3
    )
    dense = (
        np.kron(ka, kb)
        + 0.3 * np.eye(12)
        + np.kron(la @ la.T, lb @ lb.T)
        + np.kron(ma @ ma.T, mb @ mb.T)
    )
    b = rng.random((12, 2))
    assert_allclose(wb.solve(b), np.linalg.solve(dense, b), rtol=EIG_RTOL)
    assert_allclose(wb.logdet(), np.linalg.slogdet(dense)[1], rtol=EIG_RTOL)


def test_low_rank_factor_drops_zero_eigenvalues():
    w, u = np.linalg.eigh(np.ones((4, 4)))
    f = low_rank_factor(np.maximum(w, 0), u)
    assert f.shape == (4, 1)
    assert_allclose(f @ f.T, np.ones((4, 4)), rtol=EIG_RTOL, atol=1e-12)


def test_mode_contractions(rng):
    mats = [rng.random((n, n)) for n in (2, 3, 4)]
    a, b = rng.random((24, 3)), rng.random((24, 3))
    x = rng.random((3, 3))
    full = [mats[0], x, mats[2]]
    m = mode_pair_grams(a, b, mats, 1)
    for k in range(3):
        assert_allclose(
            np.sum(m[k] * x), a[:, k] @ np.kron(np.kron(*full[:2]), full[2]) @ b[:, k]
        )
    g = rng.random(24)
    diags = [np.diag(mm) for mm in full]
    h = mode_diag_weights(g, [np.diag(mats[0]), np.ones(3), np.diag(mats[2])], 1)
    dense = np.kron(np.kron(*full[:2]), full[2])
    assert_allclose(h @ diags[1], np.sum(g * np.diag(dense)))
    terms = [mats, [np.eye(2), np.ones((3, 3)), np.eye(4)]]
    v = rng.random(24)
    ref = sum(np.kron(np.kron(t[0], t[1]), t[2]) for t in terms) @ v
    assert_allclose(sum_matvec(terms, v), ref)


# -- the exact (Woodbury) route ------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "shape", "form"),
    [
        (_kernel2, (6, 9), "collapsed on axis 1"),
        (_kernel3, (3, 4, 5), "general"),
        (_kernel_full2, (4, 5), "general"),
        (_kernel_regional3, (3, 4, 5), "collapsed on axis 2"),
    ],
)
def test_woodbury_route_matches_dense_twin(rng, kernel, shape, form):
    coords, Y = _grid(rng, shape)
    gp = KroneckerGP(kernel(), noise=NOISE, optimizer=None).fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-woodbury"
    assert gp.solver_info_.extra["woodbury_form"] == form
    assert gp.solver_info_.lml_std_error == 0
    gpr, X = _twin(kernel(), coords, Y)
    lml, grad = gp.log_marginal_likelihood(
        np.append(gp.kernel_.theta, np.log(NOISE)), eval_gradient=True
    )
    ref, ref_grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    assert_allclose(lml, ref, rtol=EIG_RTOL)
    assert_allclose(grad[:-1], ref_grad, rtol=EIG_RTOL, atol=1e-9)
    assert_allclose(grad[-1], _dense_noise_grad(gpr, NOISE), rtol=EIG_RTOL)
    mean, std = gp.predict(X, return_std=True)
    ref_mean, ref_std = gpr.predict(X, return_std=True)
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std, ref_std, rtol=EIG_RTOL, atol=1e-10)
    grid_mean, grid_std = gp.predict_grid(coords, return_std=True)
    assert_allclose(grid_mean.reshape(-1), ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(grid_std.reshape(-1), ref_std, rtol=EIG_RTOL, atol=1e-10)
    test = [np.linspace(-1, 6, n + 1) for n in shape]  # off the training grid
    grid_mean, grid_std = gp.predict_grid(test, return_std=True)
    ref_mean, ref_std = gpr.predict(_rows(test), return_std=True)
    assert_allclose(grid_mean.reshape(-1), ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(grid_std.reshape(-1), ref_std, rtol=EIG_RTOL, atol=1e-10)
    Xt = X[:7] + 0.05
    _, cov = gp.predict(Xt, return_cov=True)
    assert_allclose(cov, gpr.predict(Xt, return_cov=True)[1], rtol=EIG_RTOL, atol=1e-10)


def test_woodbury_gradient_matches_finite_differences(rng):
    coords, Y = _grid(rng, (5, 7))
    gp = KroneckerGP(_kernel2(), noise=NOISE, optimizer=None).fit_grid(coords, Y)
    theta = np.append(gp.kernel_.theta, np.log(NOISE))
    _, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-6
    for p in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[p] += h
        down[p] -= h
        fd = (gp.log_marginal_likelihood(up) - gp.log_marginal_likelihood(down)) / (
            2 * h
        )
        assert_allclose(grad[p], fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kernel", "shape"), [(_kernel2, (6, 9)), (_kernel3, (3, 4, 5))]
)
def test_woodbury_schur_on_missing_cells_matches_dense(rng, kernel, shape):
    coords, Y = _grid(rng, shape)
    Y[rng.random(shape) < 0.2] = np.nan
    gp = KroneckerGP(kernel(), noise=NOISE, optimizer=None).fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-woodbury-schur"
    gpr, X = _twin(kernel(), coords, Y)
    lml, grad = gp.log_marginal_likelihood(
        np.append(gp.kernel_.theta, np.log(NOISE)), eval_gradient=True
    )
    ref, ref_grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    assert_allclose(lml, ref, rtol=EIG_RTOL)
    assert_allclose(grad[:-1], ref_grad, rtol=EIG_RTOL, atol=1e-9)
    assert_allclose(grad[-1], _dense_noise_grad(gpr, NOISE), rtol=EIG_RTOL)
    mean, std = gp.predict(X, return_std=True)
    ref_mean, ref_std = gpr.predict(X, return_std=True)
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std, ref_std, rtol=EIG_RTOL, atol=1e-10)
    grid_mean, grid_std = gp.predict_grid(coords, return_std=True)
    assert_allclose(grid_std.reshape(-1), ref_std, rtol=EIG_RTOL, atol=1e-10)


def test_exact_solver_refuses_what_does_not_fit(rng, monkeypatch):
    from kronecker_gp.solvers import _separable_sum

    monkeypatch.setattr(_separable_sum, "WOODBURY_MAX_ENTRIES", 0)
    coords, Y = _grid(rng, (4, 5))
    Y[1, 2] = np.nan
    gp = KroneckerGP(
        _kernel2(), noise=NOISE, optimizer=None, solver="exact", state_space=None
    )
    with pytest.raises(ValueError, match='solver="exact" with a SeparableSum'):
        gp.fit_grid(coords, Y)
    # a Markov time axis in every term: the filter answers exactly instead
    gp.set_params(state_space="auto").fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-kalman"
    gpr, X = _twin(_kernel2(), coords, Y)
    assert_allclose(gp.predict(X), gpr.predict(X), rtol=EIG_RTOL, atol=1e-10)


# -- the CG route ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "shape", "missing", "solver"),
    [
        (_kernel2, (6, 9), 0.0, "cg"),
        (_kernel2, (6, 9), 0.25, "cg"),
        (_kernel3, (3, 4, 5), 0.2, "cg"),
    ],
)
def test_cg_route_matches_dense_twin(rng, kernel, shape, missing, solver):
    coords, Y = _grid(rng, shape)
    Y[rng.random(shape) < missing] = np.nan
    gp = KroneckerGP(
        kernel(), noise=NOISE, optimizer=None, solver=solver, n_probes=256
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-cg"
    assert gp.solver_info_.n_missing == int(np.isnan(Y).sum())
    gpr, X = _twin(kernel(), coords, Y)
    # mean, std and covariance: exact up to the CG tolerance (1e-10)
    mean, std = gp.predict(X, return_std=True)
    ref_mean, ref_std = gpr.predict(X, return_std=True)
    assert_allclose(mean, ref_mean, rtol=1e-7, atol=1e-8)
    assert_allclose(std, ref_std, rtol=1e-7, atol=1e-8)
    grid_mean, grid_std = gp.predict_grid(coords, return_std=True)
    assert_allclose(grid_mean.reshape(-1), ref_mean, rtol=1e-7, atol=1e-8)
    assert_allclose(grid_std.reshape(-1), ref_std, rtol=1e-7, atol=1e-8)
    _, cov = gp.predict(X[:5], return_cov=True)
    assert_allclose(cov, gpr.predict(X[:5], return_cov=True)[1], rtol=1e-7, atol=1e-8)
    # the LML and gradient: estimates within 4 of their stated standard errors
    lml = gp.log_marginal_likelihood_value_
    err = gp.solver_info_.lml_std_error
    assert 0 < err < 2.0
    assert abs(lml - gpr.log_marginal_likelihood_value_) < 4 * err
    fact = gp._factorize(eval_gradient=True)
    _, ref_grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    ref_grad = np.append(ref_grad, _dense_noise_grad(gpr, NOISE))
    grad_err = fact.info.extra["grad_std_error"]
    assert np.all(np.abs(fact.grad - ref_grad) < 4 * grad_err + 1e-6)


def test_samples_match_posterior_moments(rng):
    coords, Y = _grid(rng, (4, 5))
    Y[0, 1] = np.nan
    gp = KroneckerGP(_kernel2(), noise=NOISE, optimizer=None).fit_grid(coords, Y)
    test = [coords[0][:3], np.array([0.5, 2.5])]
    draws = gp.sample_grid(test, n_samples=4000, random_state=0)
    draws = np.asarray(draws).reshape(6, -1)
    mean, std = gp.predict_grid(test, return_std=True)
    assert np.all(
        np.abs(draws.mean(axis=1) - mean.reshape(-1)) < 5 * std.reshape(-1) / 60
    )
    assert_allclose(draws.std(axis=1), std.reshape(-1), rtol=0.1)


# -- the estimator -------------------------------------------------------------------
def test_fit_on_rows_and_no_dense_kronecker(rng, monkeypatch):
    coords, Y = _grid(rng, (5, 6))
    X = _rows(coords)
    order = rng.permutation(X.shape[0])

    def no_kron(*args, **kwargs):
        raise AssertionError("np.kron called on the separable-sum path")

    monkeypatch.setattr(np, "kron", no_kron)
    gp = KroneckerGP(_kernel2(), noise=NOISE, optimizer=None)
    gp.fit(X[order], Y.reshape(-1)[order])
    mean = gp.predict(X)
    gp.predict_grid(coords, return_std=True)
    monkeypatch.undo()
    gpr, _ = _twin(_kernel2(), coords, Y)
    assert_allclose(mean, gpr.predict(X), rtol=EIG_RTOL, atol=1e-10)
    assert len(gp.kernels_) == 2  # per axis, that axis' kernel of each term


def _draw(rng, shape):
    """One draw from a regional day effect plus a local field, noise 0.05."""
    sites, days = np.linspace(0, 4, shape[0]), np.linspace(0, 6, shape[1])
    truth = SeparableSum(
        [[ConstantKernel(1.0), Matern(0.5, nu=0.5)], [RBF(1.0), Matern(3.0, nu=1.5)]]
    )
    cov = sum(np.kron(*g) for g in truth.term_grams([sites, days]))
    root = np.linalg.cholesky(cov + 1e-10 * np.eye(cov.shape[0]))
    f = root @ rng.standard_normal(cov.shape[0])
    return [sites, days], (f + np.sqrt(0.05) * rng.standard_normal(f.size)).reshape(
        shape
    )


def test_two_term_model_beats_single_product_kernel(rng):
    shape = (8, 12)
    (sites, days), Y = _draw(rng, shape)
    start = SeparableSum(
        [[ConstantKernel(0.5), Matern(1.0, nu=0.5)], [RBF(2.0), Matern(1.0, nu=1.5)]]
    )
    two = KroneckerGP(start, noise=0.1).fit_grid([sites, days], Y)
    one = KroneckerGP(
        [ConstantKernel(1.0) * RBF(2.0), Matern(1.0, nu=1.5)], noise=0.1
    ).fit_grid([sites, days], Y)
    assert two.solver_info_.path == "separable-sum-woodbury"
    assert two.log_marginal_likelihood_value_ > one.log_marginal_likelihood_value_ + 5
    # the optimum is a stationary point of the exact LML
    _, grad = two.log_marginal_likelihood(two.theta_, eval_gradient=True)
    free = ~np.isclose(two.theta_, two._bounds()[:, 0]) & ~np.isclose(
        two.theta_, two._bounds()[:, 1]
    )
    assert np.all(np.abs(grad[free]) < 1e-2)


def test_errors_name_the_argument(rng):
    coords, Y = _grid(rng, (4, 5))
    with pytest.raises(ValueError, match="kernels has 3 entries but the grid has 2"):
        KroneckerGP(_kernel3(), optimizer=None).fit_grid(coords, Y)
    with pytest.raises(ValueError, match="noise given per cell is not supported"):
        KroneckerGP(_kernel2(), noise=np.full(Y.shape, 0.1), optimizer=None).fit_grid(
            coords, Y
        )
    with pytest.raises(TypeError, match="supported by KroneckerGP only"):
        KroneckerLaplaceGP(_kernel2()).fit_grid(coords, np.abs(Y).round())


def test_many_missing_cells_use_the_padded_estimate(rng, monkeypatch):
    from kronecker_gp import _budgets

    monkeypatch.setattr(_budgets, "EXACT_FLOPS_BUDGET", 0.0)
    coords, Y = _grid(rng, (5, 6))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    gp = KroneckerGP(
        _kernel2(), noise=NOISE, optimizer=None, n_probes=128, state_space=None
    )
    lml = gp.fit_grid(coords, Y).log_marginal_likelihood_value_  # estimated now
    assert gp.solver_info_.extra["logdet_method"] == "padded"
    gpr, X = _twin(_kernel2(), coords, Y)
    err = gp.solver_info_.lml_std_error
    assert abs(lml - gpr.log_marginal_likelihood_value_) < 4 * err
    assert_allclose(gp.predict(X), gpr.predict(X), rtol=1e-7, atol=1e-8)


def test_unfitted_prior_on_a_grid(rng):
    coords = [np.linspace(0, 1, 3), np.linspace(0, 2, 4)]
    kernel = _kernel2()
    mean, std = KroneckerGP(kernel).predict_grid(coords, return_std=True)
    assert_allclose(mean, np.zeros((3, 4)))
    assert_allclose(std.reshape(-1), np.sqrt(kernel.diag(_rows(coords))))


def test_summed_mode_contraction(rng):
    mats = [rng.random((2, 2)), rng.random((3, 3))]
    a, b = rng.random((6, 4)), rng.random((6, 4))
    assert_allclose(
        mode_pair_grams(a, b, mats, 0, summed=True),
        mode_pair_grams(a, b, mats, 0).sum(axis=0),
    )


def test_one_term_equals_the_product_kernel(rng):
    coords, Y = _grid(rng, (4, 6))
    one = SeparableSum([[RBF(1.5), Matern(2.0, nu=1.5)]])
    gp = KroneckerGP(one, noise=NOISE, optimizer=None).fit_grid(coords, Y)
    ref = KroneckerGP([RBF(1.5), Matern(2.0, nu=1.5)], noise=NOISE, optimizer=None)
    ref.fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-woodbury"
    theta = np.append(ref.kernel_.theta, np.log(NOISE))
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    ref_lml, ref_grad = ref.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, ref_lml, rtol=EIG_RTOL)
    assert_allclose(grad, ref_grad, rtol=EIG_RTOL, atol=1e-9)
    mean, std = gp.predict_grid(coords, return_std=True)
    ref_mean, ref_std = ref.predict_grid(coords, return_std=True)
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std, ref_std, rtol=EIG_RTOL, atol=1e-10)


def test_optimised_theta_matches_gaussian_process_regressor(rng):
    coords, Y = _draw(rng, (6, 8))
    gp = KroneckerGP(_kernel2(), noise=NOISE, noise_bounds="fixed").fit_grid(coords, Y)
    gpr, _ = _twin(_kernel2(), coords, Y)
    gpr = GaussianProcessRegressor(_kernel2(), alpha=NOISE).fit(
        gpr.X_train_, gpr.y_train_
    )
    assert isinstance(gpr.kernel_, SeparableSum)
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        gpr.log_marginal_likelihood_value_,
        rtol=1e-6,
    )
    assert_allclose(gp.kernel_.theta, gpr.kernel_.theta, rtol=1e-3, atol=1e-3)


# -- the Kalman route (a Markov time axis in every term) -------------------------------
def _check_against_twin(gp, kernel, coords, Y, *, cov=True):
    """LML, gradient, mean, std (and covariance) against the sklearn twin."""
    gpr, X = _twin(kernel, coords, Y)
    theta = np.append(gp.kernel_.theta, np.log(NOISE))
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    ref, ref_grad = gpr.log_marginal_likelihood(gpr.kernel_.theta, eval_gradient=True)
    assert_allclose(lml, ref, rtol=EIG_RTOL)
    assert_allclose(grad[:-1], ref_grad, rtol=EIG_RTOL, atol=1e-9)
    assert_allclose(grad[-1], _dense_noise_grad(gpr, NOISE), rtol=EIG_RTOL)
    assert_allclose(gp.log_marginal_likelihood_value_, ref, rtol=EIG_RTOL)
    obs = ~np.isnan(Y.reshape(-1))
    alpha = np.zeros(Y.size)
    alpha[obs] = gpr.alpha_
    assert_allclose(gp.alpha_, alpha, rtol=EIG_RTOL, atol=1e-10)
    mean, std = gp.predict(X, return_std=True)
    ref_mean, ref_std = gpr.predict(X, return_std=True)
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std, ref_std, rtol=EIG_RTOL, atol=1e-10)
    if cov:
        Xt = X[:6] + 0.05
        _, c = gp.predict(Xt, return_cov=True)
        assert_allclose(
            c, gpr.predict(Xt, return_cov=True)[1], rtol=EIG_RTOL, atol=1e-10
        )


@pytest.mark.parametrize(
    ("kernel", "shape", "state"),
    [
        (_kernel2, (5, 9), 1 + 5 * 2),  # the regional term: one state site
        (_kernel_regional3, (2, 3, 8), 1 + 6 * 2),  # constant over two space axes
        (_kernel3, (3, 2, 7), 6 * 1 + 6 * 2),  # two terms of full spatial rank
    ],
)
def test_kalman_route_matches_gaussian_process_regressor(rng, kernel, shape, state):
    coords, Y = _grid(rng, shape)
    Y[rng.random(shape) < 0.25] = np.nan
    Y[..., 2] = np.nan  # a time step with one observed cell only
    Y.reshape(-1, shape[-1])[0, 2] = 1.0
    Y.reshape(-1, shape[-1])[0, 4:] = np.nan  # a site that stops early
    axis = len(shape) - 1
    gp = KroneckerGP(kernel(), noise=NOISE, optimizer=None, state_space=axis)
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-kalman"
    assert gp.solver_info_.extra["state_dim"] == state
    assert gp.solver_info_.lml_std_error == 0
    _check_against_twin(gp, kernel(), coords, Y)
    # samples through the filter's solves: moments within Monte Carlo error
    n = 2000
    draws = gp.sample_grid(coords, n_samples=n, random_state=0).reshape(-1, n)
    mean, std = gp.predict_grid(coords, return_std=True)
    mean, std = mean.reshape(-1), std.reshape(-1)
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * std / np.sqrt(n) + 1e-9)
    assert_allclose(draws.std(axis=1), std, rtol=0.15)


def test_kalman_route_takes_unsorted_times_and_a_complete_grid(rng):
    coords, Y = _grid(rng, (4, 8))
    perm = rng.permutation(8)
    coords[1], Y = coords[1][perm], Y[:, perm]
    gp = KroneckerGP(_kernel2(), noise=NOISE, optimizer=None, state_space=1)
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-kalman"
    _check_against_twin(gp, _kernel2(), coords, Y, cov=False)
    Y[1, 3] = np.nan
    gp.fit_grid(coords, Y)
    _check_against_twin(gp, _kernel2(), coords, Y, cov=False)


def test_cost_model_takes_the_filter_for_many_missing_cells(rng):
    # 30 sites x 40 days, 30 % missing: the Schur complement on 360 cells costs
    # ~1e9 flops, the filter (one regional state + 30 local sites) ~4e7
    coords, Y = _grid(rng, (30, 40))
    Y[rng.random(Y.shape) < 0.3] = np.nan
    gp = KroneckerGP(_kernel2(), noise=NOISE, optimizer=None).fit_grid(coords, Y)
    info = gp.solver_info_
    assert info.path == "separable-sum-kalman"
    assert info.extra["kalman_flops"] < info.extra["schur_flops"]
    assert "Kalman filter" in info.extra["route_reason"]
    ref = KroneckerGP(_kernel2(), noise=NOISE, optimizer=None, state_space=None)
    ref.fit_grid(coords, Y)
    assert ref.solver_info_.path == "separable-sum-woodbury-schur"
    theta = np.append(gp.kernel_.theta, np.log(NOISE))
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    ref_lml, ref_grad = ref.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, ref_lml, rtol=EIG_RTOL)
    assert_allclose(grad, ref_grad, rtol=EIG_RTOL, atol=1e-8)
    assert_allclose(
        gp.predict_grid(coords), ref.predict_grid(coords), rtol=EIG_RTOL, atol=1e-10
    )
    # few missing cells: the Schur complement is cheaper, the Woodbury route stays
    Y = np.where(np.isnan(Y), 0.0, Y)
    Y[3, 5] = np.nan
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-woodbury-schur"


def test_kalman_route_optimum_matches_gaussian_process_regressor(rng):
    coords, Y = _draw(rng, (5, 8))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    gp = KroneckerGP(_kernel2(), noise=NOISE, noise_bounds="fixed", state_space=1)
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-kalman"
    gpr, _ = _twin(_kernel2(), coords, Y)
    gpr = GaussianProcessRegressor(_kernel2(), alpha=NOISE).fit(
        gpr.X_train_, gpr.y_train_
    )
    assert_allclose(
        gp.log_marginal_likelihood_value_, gpr.log_marginal_likelihood_value_, rtol=1e-6
    )
    assert_allclose(gp.kernel_.theta, gpr.kernel_.theta, rtol=1e-3, atol=1e-3)


def test_kalman_axis_errors_name_state_space(rng):
    coords, Y = _grid(rng, (4, 5))
    with pytest.raises(ValueError, match="state_space=0: with a SeparableSum"):
        KroneckerGP(_kernel2(), optimizer=None, state_space=0).fit_grid(coords, Y)
    rbf_time = SeparableSum([[ConstantKernel(), RBF()], [RBF(), Matern(nu=0.5)]])
    with pytest.raises(ValueError, match=r"the axes that qualify here are \[\]"):
        KroneckerGP(rbf_time, optimizer=None, state_space=1).fit_grid(coords, Y)


# -- the sum filter's algebra (linalg) -------------------------------------------------
def _filter_problem(rng, theta, eval_gradient):
    """Two terms as state-space models: a 2-site observation map and a full field."""
    from kronecker_gp.linalg._spacetime_sum import SumTerm
    from kronecker_gp.solvers._spacetime import time_model

    s = rng.uniform(0, 3, (4, 1))
    t = np.array([0.0, 0.7, 1.5, 2.0, 3.1, 4.0, 6.5])
    kt1 = ConstantKernel(1.0) * Matern(2.0, nu=1.5)
    kt2, ks = Matern(1.0, nu=0.5), RBF(1.0)
    kt1.theta, kt2.theta, ks.theta = theta[:2], theta[2:3], theta[3:4]
    c = np.exp(theta[4])
    g = rng.uniform(0.5, 1.5, (4, 2))  # any fixed map from 2 state sites
    s1 = c * np.array([[1.0, 0.3], [0.3, 1.0]])
    k, dk = ks(s, eval_gradient=True)
    terms = []
    for space, obs, dspace, kt in [
        (s1, g, s1[None], kt1),
        (k, None, np.moveaxis(dk, 2, 0), kt2),
    ]:
        model = time_model(kt, t, eval_gradient)
        terms.append(
            SumTerm(
                space=space,
                A=model["A"],
                Q=model["Q"],
                P_inf=model["P_inf"],
                h=model["H"].reshape(-1),
                obs=obs,
                dspace=dspace if eval_gradient else None,
                dA=model.get("dA"),
                dQ=model.get("dQ"),
                dP_inf=model.get("dP_inf"),
            )
        )
    dense = np.kron(g @ s1 @ g.T, kt1(t[:, None])) + np.kron(k, kt2(t[:, None]))
    return terms, dense


def test_sum_filter_matches_dense_algebra(rng):
    from kronecker_gp.linalg._spacetime_sum import sum_filter

    theta = np.log([1.0, 2.0, 1.0, 1.0, 0.7])
    Y = rng.standard_normal((4, 7))
    Y[rng.random(Y.shape) < 0.3] = np.nan
    Y[:, 3] = np.nan  # a step with no observation: a pure prediction
    noise = rng.uniform(0.05, 0.2, Y.shape)  # per cell
    terms, K = _filter_problem(np.random.default_rng(1), theta, True)
    res = sum_filter(Y, terms, noise, eval_gradient=True, weights=True)
    o = ~np.isnan(Y.reshape(-1))
    C = K[np.ix_(o, o)] + np.diag(noise.reshape(-1)[o])
    v = Y.reshape(-1)[o]
    dense = -0.5 * (v @ np.linalg.solve(C, v) + np.linalg.slogdet(C)[1])
    assert_allclose(res.lml, dense - 0.5 * v.size * np.log(2 * np.pi), rtol=1e-10)
    alpha = np.zeros(Y.size)
    alpha[o] = np.linalg.solve(C, v)
    assert_allclose(res.weights.reshape(-1), alpha, rtol=1e-9, atol=1e-11)
    inv = np.linalg.inv(C)
    a = inv @ v
    noise_o = noise.reshape(-1)[o]
    assert_allclose(res.noise_grad, 0.5 * (a**2 - np.diag(inv)) @ noise_o, rtol=1e-9)
    cells = np.zeros(Y.size)
    cells[o] = 0.5 * (a**2 - np.diag(inv)) * noise_o
    assert_allclose(res.noise_cell_grad.reshape(-1), cells, rtol=1e-9, atol=1e-12)

    def lml(th):
        return sum_filter(
            Y, _filter_problem(np.random.default_rng(1), th, False)[0], noise
        ).lml

    grad = np.concatenate(
        [res.grads[0][1], res.grads[1][1], res.grads[1][0], res.grads[0][0]]
    )
    h = 1e-6
    fd = [(lml(theta + h * e) - lml(theta - h * e)) / (2 * h) for e in np.eye(5)]
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_sum_filter_bad_input(rng):
    from kronecker_gp.linalg._spacetime_sum import sum_filter, sum_filter_cost

    terms, _ = _filter_problem(rng, np.zeros(5), False)
    Y = rng.standard_normal((4, 7))
    with pytest.raises(ValueError, match="Y must be 2-D"):
        sum_filter(Y.reshape(-1), terms, 0.1)
    with pytest.raises(ValueError, match="A and Q need n_t - 1 = 5 steps"):
        sum_filter(Y[:, :6], terms, 0.1)
    with pytest.raises(ValueError, match=r"obs needs one row per site of Y \(3\)"):
        sum_filter(Y[:3], terms, 0.1)
    with pytest.raises(ValueError, match="noise must be positive"):
        sum_filter(Y, terms, -0.1)
    with pytest.raises(ValueError, match="gradient needs terms"):
        sum_filter(Y, terms, 0.1, eval_gradient=True)
    with pytest.raises(ValueError, match="at least one SumTerm"):
        sum_filter(Y, [], 0.1)
    assert sum_filter_cost(4, 7, 10) > sum_filter_cost(4, 7, 10, eval_gradient=False)


@pytest.mark.parametrize(
    ("flops", "schur", "cg", "fits", "forced", "missing", "expected"),
    [
        (1e9, 2e9, 1e12, True, False, True, True),  # cheaper than the Schur route
        (3e9, 2e9, 1e12, True, False, True, False),  # dearer: Woodbury-Schur
        (1e9, 2e9, 1e12, True, False, False, False),  # complete grid: Woodbury
        (1e9, 2e9, 1e12, True, True, False, True),  # axis named
        (1e12, 0.0, 3e11, False, False, True, True),  # <= 4x CG: exact preferred
        (2e12, 0.0, 3e11, False, False, True, False),  # > 4x CG, > budget: CG
        (3e10, 0.0, 1e9, False, False, True, True),  # within the exact budget
    ],
)
def test_kalman_choice_by_cost(  # noqa: PLR0917 - the table's columns
    flops, schur, cg, fits, forced, missing, expected
):
    from kronecker_gp.solvers._separable_sum_kalman import KalmanChoice

    choice = KalmanChoice(1, flops, schur, cg, fits, 10, forced=forced)
    observed = np.array([True, not missing])
    assert choice.preferred(observed) is expected
    assert ("Schur" in choice.reason(1)) == fits


# -- noise varying along axes (noise_axes) ------------------------------------------
def _dense_axis_noise(kernel, coords, Y, variances, noise_axes):
    """Dense LML, gradient (kernel, then each noise axis' log-variances), moments."""
    X = _rows(coords)
    K, dK = kernel(X, eval_gradient=True)
    full = [np.ones(len(c)) for c in coords]
    for d, v in zip(noise_axes, variances):
        full[d] = v
    dvec = full[0]
    for v in full[1:]:
        dvec = np.kron(dvec, v)
    o = ~np.isnan(Y.reshape(-1))
    C = K[np.ix_(o, o)] + np.diag(dvec[o])
    y = Y.reshape(-1)[o]
    inv = np.linalg.inv(C)
    a = inv @ y
    lml = -0.5 * (y @ a + np.linalg.slogdet(C)[1] + o.sum() * np.log(2 * np.pi))
    w = np.outer(a, a) - inv
    grad = [0.5 * np.sum(w * dK[np.ix_(o, o)][:, :, p]) for p in range(dK.shape[2])]
    cell = np.zeros(Y.size)
    cell[o] = 0.5 * np.diag(w) * dvec[o]  # d LML / d log D_jj
    cell = cell.reshape(Y.shape)
    for d in noise_axes:
        grad.extend(cell.sum(axis=tuple(e for e in range(Y.ndim) if e != d)))
    k_xo = K[:, o]
    return lml, np.array(grad), k_xo @ a, K - k_xo @ inv @ k_xo.T, X


@pytest.mark.parametrize(
    ("kernel", "shape", "noise_axes", "missing", "state_space", "path"),
    [
        (_kernel2, (5, 7), (0,), 0.0, None, "separable-sum-woodbury"),
        (_kernel2, (5, 7), (0, 1), 0.2, None, "separable-sum-woodbury-schur"),
        (_kernel_full2, (4, 5), (1,), 0.0, None, "separable-sum-woodbury"),
        (_kernel3, (3, 4, 5), (0, 2), 0.15, None, "separable-sum-woodbury-schur"),
        (_kernel2, (5, 7), (0, 1), 0.2, 1, "separable-sum-kalman"),
        (_kernel_regional3, (3, 2, 6), (1,), 0.2, 2, "separable-sum-kalman"),
    ],
)
def test_noise_axes_match_dense_numpy(  # noqa: PLR0917 - the table's columns
    rng, kernel, shape, noise_axes, missing, state_space, path
):
    coords, Y = _grid(rng, shape)
    Y[rng.random(shape) < missing] = np.nan
    variances = [rng.uniform(0.05, 0.3, shape[d]) for d in noise_axes]
    noise = variances[0] if len(noise_axes) == 1 else variances
    gp = KroneckerGP(
        kernel(),
        noise=noise,
        noise_axes=noise_axes,
        optimizer=None,
        state_space=state_space,
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path == path
    # the estimator balances the scale onto the first axis: same products
    fitted = np.concatenate(gp.noise_)
    theta = np.concatenate([gp.kernel_.theta, np.log(fitted)])
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    ref, ref_grad, mean, cov, X = _dense_axis_noise(
        kernel(), coords, Y, gp.noise_, noise_axes
    )
    assert_allclose(lml, ref, rtol=EIG_RTOL)
    assert_allclose(grad, ref_grad, rtol=EIG_RTOL, atol=1e-9)
    m, sd = gp.predict(X, return_std=True)
    assert_allclose(m, mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(sd, np.sqrt(np.diag(cov)), rtol=EIG_RTOL, atol=1e-10)
    gm, gsd = gp.predict_grid(coords, return_std=True)
    assert_allclose(gsd.reshape(-1), np.sqrt(np.diag(cov)), rtol=EIG_RTOL, atol=1e-10)
    _, c = gp.predict(X[:5], return_cov=True)
    assert_allclose(c, cov[:5, :5], rtol=EIG_RTOL, atol=1e-10)
    n = 2000
    draws = gp.sample_grid(coords, n_samples=n, random_state=0).reshape(-1, n)
    sd_true = np.sqrt(np.maximum(np.diag(cov), 0))
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * sd_true / np.sqrt(n) + 1e-9)
    assert_allclose(draws.std(axis=1), sd_true, rtol=0.15)


def test_noise_axes_fit_learns_per_site_noise(rng):
    shape = (6, 30)
    (sites, days), Y = _draw(rng, shape)
    loud = np.array([0.05, 0.05, 0.05, 1.0, 1.0, 1.0])  # three noisy sites
    Y = Y + np.sqrt(loud)[:, None] * rng.standard_normal(shape)
    start = SeparableSum(
        [[ConstantKernel(0.5), Matern(1.0, nu=0.5)], [RBF(2.0), Matern(1.0, nu=1.5)]]
    )
    gp = KroneckerGP(start, noise=0.3, noise_axes=(0,)).fit_grid([sites, days], Y)
    assert gp.solver_info_.path == "separable-sum-woodbury"
    fitted = gp.noise_per_axis_[0]
    assert fitted[3:].min() > 3 * fitted[:3].max()
    _, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    free = ~np.isclose(gp.theta_, gp._bounds()[:, 0]) & ~np.isclose(
        gp.theta_, gp._bounds()[:, 1]
    )
    assert np.all(np.abs(grad[free]) < 1e-2)


@pytest.mark.parametrize(("noise_axes", "missing"), [((0,), 0.0), ((0, 1), 0.2)])
def test_noise_axes_on_the_cg_route_match_dense_numpy(
    rng, monkeypatch, noise_axes, missing
):
    """No exact method: CG on the whitened system, its estimates within their errors."""
    from kronecker_gp.solvers import _separable_sum

    monkeypatch.setattr(_separable_sum, "WOODBURY_MAX_ENTRIES", 0)
    shape = (4, 6)
    coords, Y = _grid(rng, shape)
    Y[rng.random(shape) < missing] = np.nan
    variances = [rng.uniform(0.05, 0.3, shape[d]) for d in noise_axes]
    noise = variances[0] if len(noise_axes) == 1 else variances
    gp = KroneckerGP(
        _kernel_full2(),
        noise=noise,
        noise_axes=noise_axes,
        optimizer=None,
        state_space=None,
        n_probes=2048,
        cg_tol=1e-12,
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path == "separable-sum-cg"
    theta = np.concatenate([gp.kernel_.theta, np.log(np.concatenate(gp.noise_))])
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    ref, ref_grad, mean, cov, X = _dense_axis_noise(
        _kernel_full2(), coords, Y, gp.noise_, noise_axes
    )
    fact = gp._fact.route.factorize(gp.kernel_, gp.noise_, eval_gradient=True)
    assert_allclose([fact.lml, *fact.grad], [lml, *grad], rtol=1e-10)
    assert abs(lml - ref) <= 5 * fact.info.lml_std_error + 1e-8 * abs(ref)
    se = fact.info.extra["grad_std_error"]
    assert grad.shape == ref_grad.shape
    assert np.all(np.abs(grad - ref_grad) <= 5 * se + 1e-6)
    m, sd = gp.predict(X, return_std=True)
    assert_allclose(m, mean, rtol=1e-8, atol=1e-9)
    assert_allclose(sd, np.sqrt(np.diag(cov)), rtol=1e-7, atol=1e-9)
    gm = gp.predict_grid(coords)
    assert_allclose(gm.reshape(-1), mean, rtol=1e-8, atol=1e-9)
