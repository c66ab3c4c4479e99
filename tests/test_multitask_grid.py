"""MultiTaskGP on grids: ``fit_grid`` and the task x rows grid, against dense algebra.

The grid fit is delegated to KroneckerGP (task axis first); these tests check it
against the dense block covariance ``B (x) K_1 (x) K_2 + S (x) I`` on the
observed cells, and against MultiTaskGP's own exact ICM on the same rows.
"""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.gaussian_process.kernels import RBF, Matern

from kronecker_gp import MultiTaskGP
from kronecker_gp.kernels import CoregionalizationKernel
from kronecker_gp.testing import assert_allclose

RTOL = 1e-8
T = 3


def _data(seed=0, missing=0.3, shape=(7, 9)):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 3, shape[0]))
    s = np.linspace(0, 2, shape[1])
    f = np.sin(2 * x)[:, None] * np.cos(s)[None, :]
    Y = np.stack([f, -f + 0.5, 2 * f + np.cos(3 * s)], axis=-1)
    Y = Y + 0.1 * rng.standard_normal(Y.shape)
    Y[rng.random(Y.shape) < missing] = np.nan  # each task misses its own cells
    return x, s, Y


def _task_kernel():
    return CoregionalizationKernel(T, W=[1.0, -0.7, 1.3], kappa=[0.2, 0.1, 0.3])


def _model(**kw):
    params = {
        "kernel": [RBF(0.8), Matern(1.2, nu=1.5)],
        "task_kernel": _task_kernel(),
        "noise": [0.05, 0.1, 0.02],
        "optimizer": None,
    }
    params.update(kw)
    return MultiTaskGP(**params)


def _dense(gp, x, s, Y, theta=None):
    """Dense covariance, observed mask and the task-first targets."""
    pair = gp.grid_gp_
    kernel = (
        pair.kernel_ if theta is None else pair.kernel_.clone_with_theta(theta[:-T])
    )
    task_k, k1, k2 = kernel.kernels
    b = task_k(np.arange(T, dtype=float)[:, None])
    noise = gp.noise_ if theta is None else np.exp(theta[-T:])
    c = np.kron(b, np.kron(k1(x[:, None]), k2(s[:, None])))
    c += np.kron(np.diag(noise), np.eye(x.size * s.size))
    y = np.moveaxis(Y, -1, 0).ravel()
    obs = ~np.isnan(y)
    return c, obs, y


def _dense_lml(c, obs, y):
    co = c[np.ix_(obs, obs)]
    chol = np.linalg.cholesky(co)
    a = np.linalg.solve(co, y[obs])
    return (
        -0.5 * y[obs] @ a
        - np.log(np.diag(chol)).sum()
        - 0.5 * obs.sum() * np.log(2 * np.pi)
    )


def test_fit_grid_icm_equals_dense_lml_mean_std_cov():
    x, s, Y = _data()
    gp = _model().fit_grid([x, s], Y)
    c, obs, y = _dense(gp, x, s, Y)
    assert_allclose(gp.log_marginal_likelihood_value_, _dense_lml(c, obs, y), rtol=RTOL)
    co = c[np.ix_(obs, obs)]
    a = np.linalg.solve(co, y[obs])
    mean = c[:, obs] @ a  # noise-free latent: subtract the noise block below
    n = x.size * s.size
    noise_block = np.kron(np.diag(gp.noise_), np.eye(n))
    latent = c - noise_block
    mean = latent[:, obs] @ a
    cov = latent - latent[:, obs] @ np.linalg.solve(co, latent[obs, :])
    got_mean, got_std = gp.predict_grid([x, s], return_std=True)
    assert got_mean.shape == (x.size, s.size, T)
    want_mean = np.moveaxis(mean.reshape(T, x.size, s.size), 0, -1)
    want_std = np.moveaxis(np.sqrt(np.diag(cov)).reshape(T, x.size, s.size), 0, -1)
    assert_allclose(got_mean, want_mean, rtol=RTOL, atol=1e-10)
    assert_allclose(got_std, want_std, rtol=RTOL, atol=1e-10)
    # off-grid rows: one column per grid axis
    rows = np.column_stack([x[[1, 4]], s[[2, 7]]])
    m, joint = gp.predict_joint_cov(rows)
    idx = [t * n + i * s.size + j for t in range(T) for i, j in ((1, 2), (4, 7))]
    want_joint = cov[np.ix_(idx, idx)].reshape(T, 2, T, 2).transpose(1, 0, 3, 2)
    assert_allclose(joint, want_joint, rtol=1e-7, atol=1e-10)
    assert_allclose(m, mean[idx].reshape(T, 2).T, rtol=RTOL, atol=1e-10)
    mean_rows, std_rows = gp.predict(rows, return_std=True)
    assert_allclose(mean_rows, m, rtol=RTOL, atol=1e-10)
    assert_allclose(std_rows, np.sqrt(np.einsum("itit->it", want_joint)), rtol=1e-7)
    # alpha on the grid, zero on missing cells
    assert gp.alpha_.shape == Y.shape
    want_alpha = np.zeros(y.size)
    want_alpha[obs] = a
    assert_allclose(
        gp.alpha_, np.moveaxis(want_alpha.reshape(T, x.size, s.size), 0, -1), atol=1e-9
    )


def test_fit_grid_gradient_and_theta_query_equal_dense():
    x, s, Y = _data(seed=1)
    gp = _model().fit_grid([x, s], Y)
    theta = gp.theta_ + 0.1
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, _dense_lml(*_dense(gp, x, s, Y, theta)), rtol=RTOL)
    step = 1e-5
    fd = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = step
        up = _dense_lml(*_dense(gp, x, s, Y, theta + e))
        down = _dense_lml(*_dense(gp, x, s, Y, theta - e))
        fd.append((up - down) / (2 * step))
    assert_allclose(grad, np.array(fd), rtol=1e-6, atol=1e-6)
    # clone_kernel=True leaves the fitted model as it was
    assert_allclose(gp.theta_, gp.grid_gp_.theta_)


def test_fit_grid_equals_the_rows_fit_with_normalisation():
    """One model, two implementations: the grid fit and the exact ICM on rows."""
    x, s, Y = _data(seed=2)
    grid = _model(normalize_y=True).fit_grid([x, s], Y)
    X = np.column_stack([np.repeat(x, s.size), np.tile(s, x.size)])
    from kronecker_gp.kernels import KroneckerKernel

    rows = _model(
        kernel=KroneckerKernel([RBF(0.8), Matern(1.2, nu=1.5)]), normalize_y=True
    ).fit(X, Y.reshape(-1, T))
    assert rows.solver_ == "exact" and not hasattr(rows, "grid_gp_")
    assert_allclose(
        grid.log_marginal_likelihood_value_,
        rows.log_marginal_likelihood_value_,
        rtol=RTOL,
    )
    assert_allclose(grid.y_train_mean_, rows.y_train_mean_, rtol=1e-12)
    assert_allclose(grid.y_train_std_, rows.y_train_std_, rtol=1e-12)
    test = np.column_stack([[0.3, 2.9], [1.1, 0.05]])
    gm, gs = grid.predict(test, return_std=True)
    rm, rs = rows.predict(test, return_std=True)
    assert_allclose(gm, rm, rtol=RTOL, atol=1e-10)
    assert_allclose(gs, rs, rtol=1e-7, atol=1e-10)
    assert_allclose(grid.task_covariance_, rows.task_covariance_, rtol=1e-12)


def test_fit_grid_optimises_to_the_rows_optimum():
    x, s, Y = _data(seed=3, shape=(6, 7))
    kw = {"optimizer": "fmin_l_bfgs_b", "noise": 0.1}
    grid = _model(**kw).fit_grid([x, s], Y)
    X = np.column_stack([np.repeat(x, s.size), np.tile(s, x.size)])
    from kronecker_gp.kernels import KroneckerKernel

    rows = _model(kernel=KroneckerKernel([RBF(0.8), Matern(1.2, nu=1.5)]), **kw).fit(
        X, Y.reshape(-1, T)
    )
    assert grid.theta_.shape == rows.theta_.shape
    assert (
        abs(grid.log_marginal_likelihood_value_ - rows.log_marginal_likelihood_value_)
        < 1e-4
    )
    # the search moved away from the start and improved the likelihood
    start = _model(**{**kw, "optimizer": None}).fit_grid([x, s], Y)
    assert (
        grid.log_marginal_likelihood_value_ > start.log_marginal_likelihood_value_ + 1
    )


def test_rows_beyond_max_missing_go_to_the_grid_model():
    """No max_missing cliff: the exact Schur limit hands over to the solver layer."""
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 4, (40, 1))
    f = np.sin(X[:, 0])
    Y = np.column_stack([f, 0.5 * f, -f + 1]) + 0.05 * rng.standard_normal((40, T))
    Y[rng.random(Y.shape) < 0.4] = np.nan
    kw = {"kernel": RBF(1.0), "task_kernel": _task_kernel(), "noise": [0.05, 0.1, 0.02]}
    small = MultiTaskGP(max_missing=2, optimizer=None, **kw).fit(X, Y)
    exact = MultiTaskGP(max_missing=1000, optimizer=None, **kw).fit(X, Y)
    assert hasattr(small, "grid_gp_") and not hasattr(exact, "grid_gp_")
    assert_allclose(
        small.log_marginal_likelihood_value_,
        exact.log_marginal_likelihood_value_,
        rtol=RTOL,
    )
    q = np.linspace(0, 4, 5)[:, None]
    assert_allclose(small.predict(q), exact.predict(q), rtol=RTOL, atol=1e-10)
    assert_allclose(small.alpha_, exact.alpha_, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="X repeats rows"):
        MultiTaskGP(max_missing=2, optimizer=None, **kw).fit(
            np.vstack([X, X[:1]]), np.vstack([Y, Y[:1]])
        )


@pytest.mark.parametrize("task_noise", ["shared", "per_task"])
def test_fit_grid_lmc_estimate_within_its_error(task_noise):
    x, s, Y = _data(seed=5, missing=0.2, shape=(6, 8))
    noise = 0.05 if task_noise == "shared" else np.array([0.02, 0.05, 0.1])
    kernels = [[RBF(0.5), RBF(1.0)], [RBF(2.0), Matern(0.5, nu=0.5)]]
    tasks = [
        CoregionalizationKernel(T, W=[1.0, 0.5, -0.3], kappa=0.05),
        CoregionalizationKernel(T, W=[-0.2, 0.8, 0.6], kappa=0.05),
    ]
    gp = MultiTaskGP(
        kernels,
        task_kernel=tasks,
        model="lmc",
        n_latent=2,
        task_noise=task_noise,
        noise=noise,
        optimizer=None,
        random_state=0,
    ).fit_grid([x, s], Y)
    assert gp.grid_gp_.solver_info_.path.startswith("separable-sum")
    assert_allclose(gp.noise_, noise * np.ones(T), rtol=1e-12)
    b = [k(np.arange(T, dtype=float)[:, None]) for k in gp.task_kernels_]
    cov = sum(
        np.kron(bq, np.kron(k[0](x[:, None]), k[1](s[:, None])))
        for bq, k in zip(
            b,
            [[gp.kernels_[q].kernels[0], gp.kernels_[q].kernels[1]] for q in range(2)],
        )
    )
    c = cov + np.diag(np.repeat(noise * np.ones(T), x.size * s.size))
    y = np.moveaxis(Y, -1, 0).ravel()
    obs = ~np.isnan(y)
    want = _dense_lml(c, obs, y)
    err = gp.log_marginal_likelihood_stderr_
    assert abs(gp.log_marginal_likelihood_value_ - want) <= max(
        4 * err, 1e-6 * abs(want)
    )
    mean = cov[:, obs] @ np.linalg.solve(c[np.ix_(obs, obs)], y[obs])
    want_mean = np.moveaxis(mean.reshape(T, x.size, s.size), 0, -1)
    assert_allclose(gp.predict_grid([x, s]), want_mean, rtol=1e-6, atol=1e-7)


def test_fit_grid_bad_input():
    x, s, Y = _data()
    with pytest.raises(ValueError, match="plus a last axis of tasks"):
        _model().fit_grid([x, s], Y[..., 0])
    with pytest.raises(ValueError, match="n_tasks=4"):
        _model(n_tasks=4).fit_grid([x, s], Y)
    with pytest.raises(TypeError, match="one per grid axis"):
        _model(kernel=RBF(1.0)).fit_grid([x, s], Y)
    with pytest.raises(ValueError, match="no observed"):
        _model().fit_grid([x, s], np.full(Y.shape, np.nan))
    with pytest.raises(NotFittedError, match="fit_grid"):
        _model().predict_grid([x, s])
    X = np.column_stack([np.repeat(x, s.size), np.tile(s, x.size)])
    fitted_rows = _model(kernel=RBF(1.0), max_missing=10**6).fit(X, Y.reshape(-1, T))
    with pytest.raises(NotFittedError, match="fit_grid"):
        fitted_rows.predict_grid([x, s])


def test_refit_on_rows_drops_the_grid_model_and_samples_have_task_axis():
    x, s, Y = _data(seed=6)
    gp = _model().fit_grid([x, s], Y)
    rows = np.column_stack([x[:4], s[:4]])
    draws = gp.sample_y(rows, n_samples=3, random_state=0)
    assert draws.shape == (4, T, 3)
    X = np.column_stack([np.repeat(x, s.size), np.tile(s, x.size)])
    gp.set_params(kernel=RBF(1.0), max_missing=10**6)
    gp.fit(X, Y.reshape(-1, T))
    assert not hasattr(gp, "grid_gp_")
    assert gp.alpha_.shape == (gp.X_train_.shape[0], T)
