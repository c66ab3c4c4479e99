"""Multi-task GPs: CoregionalizationKernel and MultiTaskGP against dense references.

Dense references build the block covariance explicitly with ``np.kron`` and
``np.block``; the library code never forms it.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP
from kronecker_gp.kernels import CoregionalizationKernel, KroneckerKernel
from kronecker_gp.testing import EIG_RTOL, assert_allclose

# 4th-order central differences: truncation ~ FD_STEP**4, round-off ~ 1e-16 / FD_STEP,
# both far below EIG_RTOL for the smooth functions tested here.
FD_STEP = 1e-3


def _fd_gradient(f, theta):
    """4th-order central finite differences of a scalar or array function."""
    grads = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = FD_STEP
        grads.append(
            (-f(theta + 2 * e) + 8 * f(theta + e) - 8 * f(theta - e) + f(theta - 2 * e))
            / (12 * FD_STEP)
        )
    return np.stack(grads, axis=-1)


# -- CoregionalizationKernel --------------------------------------------------------
TASK_KERNELS = [
    pytest.param(CoregionalizationKernel(3), id="default-rank1"),
    pytest.param(
        CoregionalizationKernel(4, rank=2, W=[[1, -0.5], [0.3, 2], [-1, 0], [0, 0.7]]),
        id="rank2-signed",
    ),
    pytest.param(
        CoregionalizationKernel(3, kappa=[0.1, 1.0, 3.0], W_bounds="fixed"),
        id="W-fixed",
    ),
    pytest.param(
        CoregionalizationKernel(2, W=[0.5, -1.5], kappa_bounds="fixed"),
        id="kappa-fixed",
    ),
]


def _dense_b(kernel):
    w = np.asarray(kernel.W, dtype=float).reshape(kernel.n_tasks, kernel.rank)
    return w @ w.T + np.diag(np.broadcast_to(kernel.kappa, (kernel.n_tasks,)))


TASKS = np.array([[0], [2], [1], [1], [0], [2]], dtype=float)


@pytest.mark.parametrize("kernel", TASK_KERNELS)
def test_task_kernel_gradient_matches_finite_differences(kernel):
    tasks = np.minimum(TASKS, kernel.n_tasks - 1)
    _, grad = kernel(tasks, eval_gradient=True)
    assert grad.shape == (6, 6, kernel.n_dims)

    def gram(theta):
        return kernel.clone_with_theta(theta)(tasks)

    assert_allclose(grad, _fd_gradient(gram, kernel.theta), rtol=EIG_RTOL, atol=1e-9)


@pytest.mark.parametrize("kernel", TASK_KERNELS)
def test_task_kernel_gram_diag_and_covariance(kernel):
    tasks = np.minimum(TASKS, kernel.n_tasks - 1)
    b = _dense_b(clone(kernel).set_params(W=kernel._loadings()))
    t = tasks[:, 0].astype(int)
    assert_allclose(kernel.task_covariance(), b)
    assert_allclose(kernel(tasks), b[np.ix_(t, t)])
    assert_allclose(kernel(tasks, tasks), kernel(tasks))
    assert_allclose(kernel(tasks[:2], tasks[2:]), b[np.ix_(t[:2], t[2:])])
    assert_allclose(kernel.diag(tasks), np.diag(kernel(tasks)))
    corr = kernel.task_correlation()
    assert_allclose(corr, b / np.sqrt(np.outer(np.diag(b), np.diag(b))))
    assert not kernel.is_stationary()


@pytest.mark.parametrize("kernel", TASK_KERNELS)
def test_task_kernel_theta_layout_and_clone(kernel):
    w, kappa = kernel._loadings(), kernel._kappas()
    parts = []
    if kernel.W_bounds != "fixed":
        parts.append(np.arcsinh(w).ravel())
    if kernel.kappa_bounds != "fixed":
        parts.append(np.log(kappa))
    assert_allclose(kernel.theta, np.concatenate(parts))
    assert kernel.bounds.shape == (kernel.theta.size, 2)
    assert len(kernel.hyperparameters) == 2
    twin = kernel.clone_with_theta(kernel.theta + 0.3)
    assert_allclose(twin.theta, kernel.theta + 0.3)
    assert clone(kernel) == kernel
    assert repr(kernel).startswith("CoregionalizationKernel(n_tasks=")


def test_task_kernel_theta_is_signed_log_of_w():
    kernel = CoregionalizationKernel(2, W=[3.0, -3.0], kappa=[0.5, 2.0])
    assert_allclose(
        kernel.theta, [np.arcsinh(3.0), -np.arcsinh(3.0), *np.log([0.5, 2])]
    )
    assert_allclose(kernel.bounds[0], np.arcsinh([-1e3, 1e3]))
    assert_allclose(kernel.bounds[-1], np.log([1e-5, 1e5]))
    kernel.theta = [0.0, np.arcsinh(-2.0), 0.0, 0.0]
    assert_allclose(kernel.W, [[0.0], [-2.0]])
    assert_allclose(kernel.kappa, [1.0, 1.0])


def test_default_loadings_break_symmetry():
    w = CoregionalizationKernel(5, rank=3)._loadings()
    assert_allclose(w[:, 0], np.ones(5))
    gram = w.T @ w
    assert_allclose(gram - np.diag(np.diag(gram)), np.zeros((3, 3)), atol=1e-12)


def test_task_kernel_in_kronecker_kernel_is_the_kron_of_b_and_k(rng):
    task = CoregionalizationKernel(3, rank=2, W=rng.standard_normal((3, 2)))
    kernel = KroneckerKernel([task, RBF(0.7)], axes=[[0], [1]])
    x = rng.uniform(0, 2, 4)
    rows = np.array([[t, xi] for t in range(3) for xi in x])
    k_x = RBF(0.7)(x[:, None])
    assert_allclose(kernel(rows), np.kron(task.task_covariance(), k_x))
    _, grad = kernel(rows, eval_gradient=True)

    def gram(theta):
        return kernel.clone_with_theta(theta)(rows)

    assert_allclose(grad, _fd_gradient(gram, kernel.theta), rtol=EIG_RTOL, atol=1e-9)


def _icm_problem(rng, n_tasks=3, n=7):
    x = np.sort(rng.uniform(0, 3, n))
    w = rng.standard_normal((n_tasks, 1))
    b = w @ w.T + np.diag(rng.uniform(0.1, 0.5, n_tasks))
    f = np.linalg.cholesky(
        np.kron(b, RBF(0.8)(x[:, None])) + 1e-9 * np.eye(n_tasks * n)
    )
    y = (f @ rng.standard_normal(n_tasks * n)).reshape(n_tasks, n)
    return x, y + 0.1 * rng.standard_normal(y.shape)


def test_task_kernel_as_kronecker_gp_factor_matches_sklearn(rng):
    x, y = _icm_problem(rng)
    task = CoregionalizationKernel(3, W=[[1.0], [0.5], [-0.5]], kappa=0.3)
    gp = KroneckerGP([task, RBF(1.0)], noise=0.05, optimizer=None)
    gp.fit_grid([np.arange(3.0), x], y)
    rows = np.array([[t, xi] for t in range(3) for xi in x])
    ref = GaussianProcessRegressor(
        KroneckerKernel([task, RBF(1.0)], axes=[[0], [1]]), alpha=0.05, optimizer=None
    ).fit(rows, y.reshape(-1))
    theta = ref.kernel_.theta
    lml, grad = gp.log_marginal_likelihood(np.append(theta, np.log(0.05)), True)
    ref_lml, ref_grad = ref.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, ref_lml, rtol=EIG_RTOL)
    assert_allclose(grad[:-1], ref_grad, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(gp.predict(rows), ref.predict(rows), rtol=EIG_RTOL, atol=1e-10)


def test_task_kernel_as_third_grid_axis_of_kronecker_gp(rng):
    # task x site x time: a 3-factor grid, B (x) K_site (x) K_time
    sites, times = rng.uniform(0, 3, (3, 2)), np.arange(4.0)
    task = CoregionalizationKernel(2, W=[0.9, -0.6], kappa=0.2)
    kernels = [task, RBF(1.5), Matern(2.0, nu=1.5)]
    Y = rng.standard_normal((2, 3, 4))
    gp = KroneckerGP(kernels, noise=0.1, optimizer=None)
    gp.fit_grid([np.arange(2.0), sites, times], Y)
    rows = np.array([[t, *s, u] for t in range(2) for s in sites for u in times])
    dense = KroneckerKernel(kernels, axes=[[0], [1, 2], [3]])
    ref = GaussianProcessRegressor(dense, alpha=0.1, optimizer=None).fit(
        rows, Y.ravel()
    )
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )
    assert_allclose(gp.predict(rows), ref.predict(rows), rtol=EIG_RTOL, atol=1e-10)


def test_task_kernel_in_gaussian_process_regressor_optimises(rng):
    x, y = _icm_problem(rng)
    rows = np.array([[t, xi] for t in range(3) for xi in x])
    kernel = KroneckerKernel(
        [
            CoregionalizationKernel(3),
            ConstantKernel(1.0, "fixed") * Matern(1.0, nu=2.5),
        ],
        axes=[[0], [1]],
    )
    gpr = GaussianProcessRegressor(kernel, alpha=1e-2, random_state=0)
    start = gpr.fit(rows, y.reshape(-1)).log_marginal_likelihood(kernel.theta)
    assert gpr.log_marginal_likelihood_value_ > start
    assert np.all(np.isfinite(gpr.kernel_.theta))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_tasks": 0}, "n_tasks must be an integer >= 1"),
        ({"n_tasks": 2.5}, "n_tasks must be an integer >= 1"),
        ({"n_tasks": 3, "rank": 4}, "rank must be an integer between 1 and 3"),
        ({"n_tasks": 3, "W": np.ones((3, 2))}, r"W must have shape \(n_tasks, rank\)"),
        ({"n_tasks": 3, "kappa": [1.0, 2.0]}, "kappa must be a scalar or have n_tasks"),
        ({"n_tasks": 3, "kappa": -1.0}, "kappa must be positive"),
        ({"n_tasks": 3, "W_bounds": (1.0, -1.0)}, "W_bounds must be"),
        ({"n_tasks": 3, "kappa_bounds": (-1.0, 1.0)}, "kappa_bounds must be"),
        ({"n_tasks": 3, "kappa_bounds": "free"}, "kappa_bounds must be a pair"),
    ],
)
def test_task_kernel_bad_parameters(params, match):
    kernel = CoregionalizationKernel(**params)
    with pytest.raises(ValueError, match=match):
        kernel(np.zeros((2, 1)))
        _ = kernel.bounds


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.array([[0.5]]), r"X must hold integer task indices in 0..2"),
        (np.array([[3.0]]), r"X must hold integer task indices in 0..2"),
        (np.array([[-1.0]]), r"X must hold integer task indices in 0..2"),
        (np.zeros((2, 2)), "X must have one column"),
    ],
)
def test_task_kernel_bad_tasks(X, match):
    with pytest.raises(ValueError, match=match):
        CoregionalizationKernel(3)(X)


def test_task_kernel_bad_theta_length():
    with pytest.raises(ValueError, match="theta must have 6 entries"):
        CoregionalizationKernel(3).theta = np.zeros(4)


# -- the pure algebra of C (x) R + S (x) O, complete and with missing cells ------------
from kronecker_gp.solvers._multitask import (  # noqa: E402
    gradient_matrices,
    multitask_factorize,
    predict_moments,
    two_kron_eigh,
)
from kronecker_gp.testing import random_spd  # noqa: E402


def _sym(rng, n):
    a = rng.standard_normal((n, n))
    return 0.5 * (a + a.T)


def _two_kron_inputs(rng, t=3, n=5, noise="diag", missing=0.0):
    c = random_spd(t, cond=1e3, random_state=rng)
    r = random_spd(n, cond=1e3, random_state=rng)
    if noise == "diag":  # per-task noise: S diagonal (1-D), O = I (None)
        s, o = rng.uniform(0.1, 0.5, t), None
        s_dense, o_dense = np.diag(s), np.eye(n)
    else:  # structured noise: full S and O
        s = s_dense = 0.3 * random_spd(t, cond=10, random_state=rng)
        o = o_dense = random_spd(n, cond=10, random_state=rng)
    y = rng.standard_normal((t, n))
    observed = rng.uniform(size=(t, n)) >= missing
    observed[0, 0] = True
    return c, r, s, o, s_dense, o_dense, y, observed


def _dense_lml(c, r, noise, y, observed, *, dsigma=None):
    s_dense, o_dense = noise
    sigma = np.kron(c, r) + np.kron(s_dense, o_dense)
    obs = observed.reshape(-1)
    sigma = sigma[np.ix_(obs, obs)]
    yo = y.reshape(-1)[obs]
    alpha = np.linalg.solve(sigma, yo)
    lml = -0.5 * yo @ alpha - 0.5 * np.linalg.slogdet(sigma)[1]
    lml -= 0.5 * yo.size * np.log(2 * np.pi)
    if dsigma is None:
        return lml, alpha
    d = dsigma[np.ix_(obs, obs)]
    return 0.5 * alpha @ d @ alpha - 0.5 * np.trace(np.linalg.solve(sigma, d))


CASES = [
    pytest.param("diag", 0.0, id="diag-noise-complete"),
    pytest.param("full", 0.0, id="full-noise-complete"),
    pytest.param("diag", 0.3, id="diag-noise-30pc-missing"),
    pytest.param("full", 0.5, id="full-noise-50pc-missing"),
]


@pytest.mark.parametrize(("noise", "missing"), CASES)
def test_two_kron_lml_and_alpha_match_dense(noise, missing, rng):
    c, r, s, o, s_dense, o_dense, y, obs = _two_kron_inputs(
        rng, noise=noise, missing=missing
    )
    post, lml = multitask_factorize(two_kron_eigh(c, r, s, o), y, obs)
    ref_lml, ref_alpha = _dense_lml(c, r, (s_dense, o_dense), y, obs)
    assert_allclose(lml, ref_lml, rtol=EIG_RTOL)
    alpha = post.alpha()
    assert_allclose(
        alpha.reshape(-1)[obs.reshape(-1)], ref_alpha, rtol=EIG_RTOL, atol=1e-10
    )
    assert_allclose(alpha[~obs], np.zeros((~obs).sum()), atol=1e-10)


@pytest.mark.parametrize(("noise", "missing"), CASES)
@pytest.mark.parametrize("which", ["C", "R", "S", "O"])
def test_two_kron_gradient_matrices_match_dense(which, noise, missing, rng):
    c, r, s, o, s_dense, o_dense, y, obs = _two_kron_inputs(
        rng, noise=noise, missing=missing
    )
    post, _ = multitask_factorize(two_kron_eigh(c, r, s, o), y, obs)
    m = gradient_matrices(post, which)
    size = c.shape[0] if which in "CS" else r.shape[0]
    d = _sym(rng, size)
    other = {"C": r, "R": c, "S": o_dense, "O": s_dense}[which]
    dsigma = np.kron(d, other) if which in "CS" else np.kron(other, d)
    expected = _dense_lml(c, r, (s_dense, o_dense), y, obs, dsigma=dsigma)
    assert_allclose(np.sum(d * m), expected, rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.parametrize(("noise", "missing"), CASES)
def test_two_kron_predictions_match_dense(noise, missing, rng):
    c, r, s, o, s_dense, o_dense, y, obs = _two_kron_inputs(
        rng, noise=noise, missing=missing
    )
    # the input Gram of 5 training and 4 test points under an RBF kernel
    x = rng.uniform(0, 3, (9, 1))
    k_all = RBF(1.0)(x)
    r = k_all[:5, :5]
    post, _ = multitask_factorize(two_kron_eigh(c, r, s, o), y, obs)
    mean, var = predict_moments(post, c, k_all[5:, :5], np.diag(k_all[5:, 5:]))
    sigma = np.kron(c, r) + np.kron(s_dense, o_dense)
    flat = obs.reshape(-1)
    sigma = sigma[np.ix_(flat, flat)]
    cross = np.kron(c, k_all[5:, :5])[:, flat]  # (T * 4, n_obs), task-major rows
    ref_mean = cross @ np.linalg.solve(sigma, y.reshape(-1)[flat])
    prior = np.kron(c, k_all[5:, 5:])
    ref_cov = prior - cross @ np.linalg.solve(sigma, cross.T)
    assert_allclose(mean, ref_mean.reshape(3, 4).T, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(var, np.diag(ref_cov).reshape(3, 4).T, rtol=EIG_RTOL, atol=1e-10)


# -- MultiTaskGP against dense references -------------------------------------------
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from kronecker_gp import MultiTaskGP  # noqa: E402


def _mt_data(rng, n=8, t=3, missing=0.0):
    x = rng.uniform(0, 4, (n, 2))
    f = np.sin(x[:, 0]) + np.cos(x[:, 1])
    mix = np.array([1.0, -0.7, 0.4, 0.9])[:t]
    Y = np.outer(f, mix) + 0.2 * rng.standard_normal((n, t))
    Y[rng.uniform(size=Y.shape) < missing] = np.nan
    Y[0] = 0.1  # every task observed at least once
    return x, Y


def _task_rows(x, t):
    """Task-major rows (task, x...) matching B (x) K."""
    return np.column_stack([np.repeat(np.arange(t), len(x)), np.tile(x, (t, 1))])


def _dense_twin(gp, x, Y):
    """GaussianProcessRegressor on the observed rows with per-row noise alpha."""
    t = Y.shape[1]
    rows, y = _task_rows(x, t), Y.T.reshape(-1)
    obs = ~np.isnan(y)
    kernel = KroneckerKernel(
        [clone(gp.task_kernel_), clone(gp.kernel_)],
        axes=[[0], list(range(1, x.shape[1] + 1))],
    )
    alpha = np.repeat(gp.noise_, len(x))[obs]
    ref = GaussianProcessRegressor(kernel, alpha=alpha, optimizer=None)
    return ref.fit(rows[obs], y[obs]), rows


MT_CASES = [
    pytest.param(0.0, "per_task", id="isotopic-per-task"),
    pytest.param(0.0, "shared", id="isotopic-shared"),
    pytest.param(0.3, "per_task", id="heterotopic-30pc"),
]


def _fitted(rng, missing, task_noise, rank=2):
    x, Y = _mt_data(rng, missing=missing)
    task = CoregionalizationKernel(
        3, rank=rank, W=rng.standard_normal((3, rank)), kappa=[0.2, 0.5, 0.1]
    )
    noise = [0.05, 0.1, 0.2] if task_noise == "per_task" else 0.1
    gp = MultiTaskGP(
        ConstantKernel(1.0) * RBF([1.0, 1.5]),
        task_kernel=task,
        task_noise=task_noise,
        noise=noise,
        optimizer=None,
    )
    return gp.fit(x, Y), x, Y


@pytest.mark.parametrize(("missing", "task_noise"), MT_CASES)
def test_multitask_lml_and_predictions_match_dense(missing, task_noise, rng):
    gp, x, Y = _fitted(rng, missing, task_noise)
    ref, rows = _dense_twin(gp, x, Y)
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )
    x_test = rng.uniform(0, 4, (5, 2))
    mean, std = gp.predict(x_test, return_std=True)
    ref_mean, ref_std = ref.predict(_task_rows(x_test, 3), return_std=True)
    assert mean.shape == std.shape == (5, 3)
    assert_allclose(mean, ref_mean.reshape(3, 5).T, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std, ref_std.reshape(3, 5).T, rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.parametrize(("missing", "task_noise"), MT_CASES)
def test_multitask_lml_gradient_matches_dense_and_finite_differences(
    missing, task_noise, rng
):
    gp, x, Y = _fitted(rng, missing, task_noise)
    theta = gp.theta_ + 0.1 * rng.standard_normal(gp.theta_.size)
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    n_kernel = theta.size - (3 if task_noise == "per_task" else 1)
    ref, _ = _dense_twin(gp, x, Y)
    gp._set_theta(theta)  # the dense twin at the perturbed kernels and noise
    ref, _ = _dense_twin(gp, x, Y)
    gp._set_theta(gp.theta_)
    ref_lml, ref_grad = ref.log_marginal_likelihood(
        ref.kernel_.theta, eval_gradient=True
    )
    assert_allclose(lml, ref_lml, rtol=EIG_RTOL)
    assert_allclose(grad[:n_kernel], ref_grad, rtol=EIG_RTOL, atol=1e-9)
    fd = _fd_gradient(gp.log_marginal_likelihood, theta)
    assert_allclose(grad, fd, rtol=EIG_RTOL, atol=1e-8)


def test_single_task_reduces_to_kronecker_gp(rng):
    x = np.sort(rng.uniform(0, 5, 12))[:, None]
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(12)
    task = CoregionalizationKernel(1, W=[[0.8]], kappa=0.5)
    gp = MultiTaskGP(Matern(1.2, nu=2.5), task_kernel=task, noise=0.04, optimizer=None)
    gp.fit(x, y)
    ref = KroneckerGP([ConstantKernel(0.8**2 + 0.5) * Matern(1.2, nu=2.5)], noise=0.04)
    ref.set_params(optimizer=None).fit(x, y)
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )
    x_test = rng.uniform(0, 5, (6, 1))
    mean, std = gp.predict(x_test, return_std=True)
    ref_mean, ref_std = ref.predict(x_test, return_std=True)
    assert mean.shape == std.shape == (6,)
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std, ref_std, rtol=EIG_RTOL, atol=1e-10)
    # the kernel and noise gradients agree too (the task part is B's chain rule)
    _, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    _, ref_grad = ref.log_marginal_likelihood(ref.theta_, eval_gradient=True)
    assert_allclose(grad[2:], ref_grad[1:], rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.filterwarnings(
    "ignore:The optimal value found:sklearn.exceptions.ConvergenceWarning"
)
def test_optimised_hyperparameters_match_sklearn(rng):
    x, Y = _mt_data(rng, n=10)
    task = CoregionalizationKernel(3, W=[[1.0], [-0.5], [0.5]], kappa=0.3)
    gp = MultiTaskGP(RBF(1.0), task_kernel=task, task_noise="shared", noise=0.05)
    gp.set_params(noise_bounds="fixed").fit(x, Y)
    kernel = KroneckerKernel([task, RBF(1.0)], axes=[[0], [1, 2]])
    ref = GaussianProcessRegressor(kernel, alpha=0.05).fit(
        _task_rows(x, 3), Y.T.reshape(-1)
    )
    assert_allclose(
        gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_, rtol=1e-6
    )
    assert_allclose(gp.theta_, ref.kernel_.theta, rtol=0, atol=2e-3)


def test_optimisation_learns_task_correlations(rng):
    x, Y = _mt_data(rng, n=30)
    gp = MultiTaskGP(RBF(1.0), normalize_y=True).fit(x, Y)
    corr = gp.task_correlation_
    assert corr[0, 1] < -0.5 and corr[0, 2] > 0.5
    assert_allclose(np.diag(corr), np.ones(3))
    start = clone(gp).set_params(optimizer=None).fit(x, Y)
    assert gp.log_marginal_likelihood_value_ > start.log_marginal_likelihood_value_
    assert gp.alpha_.shape == (30, 3) and gp.noise_.shape == (3,)


def test_normalize_y_predictions_are_in_data_units(rng):
    x, Y = _mt_data(rng, n=20, missing=0.2)
    Y = Y * [1.0, 100.0, 0.01] + [0.0, 50.0, -3.0]
    gp = MultiTaskGP(RBF(1.0), normalize_y=True, optimizer=None).fit(x, Y)
    obs = ~np.isnan(Y)
    assert_allclose(gp.y_train_mean_, [np.mean(Y[obs[:, t], t]) for t in range(3)])
    mean = gp.predict(x)
    resid = np.abs(mean - Y)[obs] / np.repeat(gp.y_train_std_[None], 20, 0)[obs]
    assert np.median(resid) < 1.0


def test_rows_with_no_observed_output_are_dropped(rng):
    x, Y = _mt_data(rng, n=8)
    Y_nan = np.vstack([Y, np.full((1, 3), np.nan)])
    x_nan = np.vstack([x, [[9.0, 9.0]]])
    a = MultiTaskGP(optimizer=None).fit(x, Y)
    b = MultiTaskGP(optimizer=None).fit(x_nan, Y_nan)
    assert_allclose(a.log_marginal_likelihood_value_, b.log_marginal_likelihood_value_)
    assert b.X_train_.shape == (8, 2)


def test_restarts_are_reproducible_and_no_worse(rng):
    x, Y = _mt_data(rng, n=10)
    task = CoregionalizationKernel(3, W_bounds=(-5, 5), kappa_bounds=(1e-2, 1e1))
    base = MultiTaskGP(RBF(1.0, (1e-1, 1e1)), task_kernel=task, noise_bounds=(1e-2, 1))
    one = clone(base).fit(x, Y)
    a = clone(base).set_params(n_restarts_optimizer=1, random_state=0).fit(x, Y)
    b = clone(base).set_params(n_restarts_optimizer=1, random_state=0).fit(x, Y)
    assert_allclose(a.theta_, b.theta_)
    assert a.log_marginal_likelihood_value_ >= one.log_marginal_likelihood_value_ - 1e-8


def test_verbose_prints_progress(rng, capsys):
    x, Y = _mt_data(rng, n=6)
    MultiTaskGP(verbose=1).fit(x, Y)
    assert "[MultiTaskGP] evaluation   1: LML =" in capsys.readouterr().out


def test_never_forms_the_block_covariance(monkeypatch, rng):
    x, Y = _mt_data(rng, n=60, missing=0.05)

    def no_kron(*args, **kwargs):
        raise AssertionError("np.kron called on the multi-task path")

    monkeypatch.setattr(np, "kron", no_kron)
    gp = MultiTaskGP(optimizer=None).fit(x, Y)
    gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    gp.predict(x, return_std=True)


def _expected_failures(estimator):
    # Every entry needs a written reason; the dict is expected to stay empty.
    return {}


# optimizer=None keeps this file fast: with the default optimizer every check also
# passes, but L-BFGS-B on sklearn's unscaled check data takes ~2 minutes in total.
@parametrize_with_checks(
    [MultiTaskGP(optimizer=None)], expected_failed_checks=_expected_failures
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"model": "xyz"}, "model must be one of 'icm', 'lmc'"),
        ({"task_noise": "each"}, "task_noise must be one of 'per_task', 'shared'"),
        ({"noise": -1.0}, "noise must be a positive number or 3 positive numbers"),
        (
            {"noise": [1.0, 2.0]},
            "noise must be a positive number or 3 positive numbers",
        ),
        (
            {"noise": [1.0, 2.0, 3.0], "task_noise": "shared"},
            "noise must be a positive number",
        ),
        ({"noise_bounds": (1.0, 0.5)}, "noise_bounds must be"),
        ({"n_tasks": 4}, "y must have n_tasks=4 columns; got 3"),
        ({"rank": 5}, "rank must be an integer between 1 and 3"),
        ({"n_restarts_optimizer": -1}, "n_restarts_optimizer must be a non-negative"),
        ({"optimizer": "adam"}, 'optimizer must be "fmin_l_bfgs_b"'),
    ],
)
def test_multitask_bad_parameters(params, match, rng):
    x, Y = _mt_data(rng, n=6, missing=0.3)
    with pytest.raises(ValueError, match=match):
        MultiTaskGP(**params).fit(x, Y)


def test_multitask_bad_data(rng):
    x, Y = _mt_data(rng, n=6)
    with pytest.raises(ValueError, match="y must have one row per row of X"):
        MultiTaskGP().fit(x, Y[:5])
    with pytest.raises(ValueError, match="y has no observed"):
        MultiTaskGP().fit(x, np.full_like(Y, np.nan))
    with pytest.raises(ValueError, match="y contains infinite"):
        MultiTaskGP().fit(x, np.where(Y > 0, np.inf, Y))
    with pytest.raises(TypeError, match="kernel must be a scikit-learn Kernel"):
        MultiTaskGP(kernel="rbf").fit(x, Y)
    gp = MultiTaskGP(optimizer=None).fit(x, Y)
    with pytest.raises(ValueError, match="theta must have"):
        gp.log_marginal_likelihood(np.zeros(2))


def test_jura_example_runs_quick(tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    import matplotlib.pyplot as plt
    from threadpoolctl import threadpool_limits

    path = Path(__file__).parents[1] / "examples" / "plot_multitask_jura.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--out", str(tmp_path), "--quick"])
    # one BLAS thread: on a loaded 2-core machine, threaded LAPACK on 359 x 359
    # matrices is up to 30x slower than single-threaded
    try:
        with threadpool_limits(limits=1):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        plt.close("all")
    out = capsys.readouterr().out
    assert (tmp_path / "multitask_jura.png").stat().st_size > 10_000
    assert "MAE multi-task" in out and "wrote" in out


# -- LMC: preconditioned CG, SLQ and Hutchinson estimates ------------------------------
def _lmc_dense(gp, x, Y, x_test):
    """Dense LML, gradient, mean and variance of the fitted LMC at theta_."""
    t, n = Y.shape[1], len(x)
    bs = [k(np.arange(t)[:, None], eval_gradient=True) for k in gp.task_kernels_]
    ks = [k(x, eval_gradient=True) for k in gp.kernels_]
    sigma = sum(np.kron(b, k) for (b, _), (k, _) in zip(bs, ks))
    sigma = sigma + np.kron(np.diag(gp.noise_), np.eye(n))
    obs = ~np.isnan(Y.T.reshape(-1))
    sigma = sigma[np.ix_(obs, obs)]
    y = Y.T.reshape(-1)[obs]
    inv = np.linalg.inv(sigma)
    alpha = inv @ y
    lml = -0.5 * y @ alpha - 0.5 * np.linalg.slogdet(sigma)[1]
    lml -= 0.5 * y.size * np.log(2 * np.pi)
    d_sigma = []
    for (b, db), (k, dk) in zip(bs, ks):
        d_sigma += [np.kron(db[:, :, p], k) for p in range(db.shape[2])]
        d_sigma += [np.kron(b, dk[:, :, p]) for p in range(dk.shape[2])]
    d_sigma += [np.kron(np.diag(np.eye(t)[i] * gp.noise_), np.eye(n)) for i in range(t)]
    grad = np.array(
        [
            0.5 * alpha @ d[np.ix_(obs, obs)] @ alpha
            - 0.5 * np.sum(inv * d[np.ix_(obs, obs)])
            for d in d_sigma
        ]
    )
    cross = sum(np.kron(b, k(x_test, x)) for (b, _), k in zip(bs, gp.kernels_))[:, obs]
    prior = sum(np.kron(b, k(x_test)) for (b, _), k in zip(bs, gp.kernels_))
    mean = (cross @ alpha).reshape(t, -1).T
    var = (
        (np.diag(prior) - np.einsum("ij,jk,ik->i", cross, inv, cross)).reshape(t, -1).T
    )
    return lml, grad, mean, var


def _lmc(rng, missing=0.0, same_kernels=False, **kw):
    x, Y = _mt_data(rng, n=12, missing=missing)
    kernels = [RBF(1.0), RBF(1.0) if same_kernels else Matern(0.7, nu=0.5)]
    tasks = [
        CoregionalizationKernel(3, W=rng.standard_normal((3, 1)), kappa=0.1)
        for _ in range(2)
    ]
    params = {"cg_tol": 1e-12, "n_probes": 32, "random_state": 0, "optimizer": None}
    gp = MultiTaskGP(
        kernels, task_kernel=tasks, model="lmc", n_latent=2, noise=[0.1, 0.2, 0.3]
    )
    return gp.set_params(**{**params, **kw}).fit(x, Y), x, Y


@pytest.mark.parametrize("missing", [0.0, 0.3], ids=["isotopic", "heterotopic"])
def test_lmc_predictions_match_dense_to_cg_tolerance(missing, rng):
    gp, x, Y = _lmc(rng, missing)
    assert gp.solver_ == "pcg" and max(gp.cg_iterations_) > 1
    x_test = rng.uniform(0, 4, (4, 2))
    _, _, ref_mean, ref_var = _lmc_dense(gp, x, Y, x_test)
    mean, std = gp.predict(x_test, return_std=True)
    # cg_tol=1e-12 and a condition number below 1e3 give errors below EIG_RTOL
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(std**2, ref_var, rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.parametrize("missing", [0.0, 0.3], ids=["isotopic", "heterotopic"])
def test_lmc_lml_and_gradient_estimates_within_their_standard_errors(missing, rng):
    gp, x, Y = _lmc(rng, missing)
    ref_lml, ref_grad, _, _ = _lmc_dense(gp, x, Y, x[:2])
    lml, grad, ev = gp._evaluate(eval_gradient=True)
    assert gp.log_marginal_likelihood_stderr_ == ev.lml_stderr > 0
    assert abs(lml - ref_lml) <= 4 * ev.lml_stderr
    assert ev.lml_stderr < 1e-2 * max(abs(ref_lml), Y.size)  # LML's O(N) scale
    assert np.all(np.abs(grad - ref_grad) <= 4 * ev.grad_stderr + 1e-8)


def test_lmc_with_a_shared_kernel_is_exact(rng):
    # B_1 (x) K + B_2 (x) K = (B_1 + B_2) (x) K: the preconditioner is exact
    gp, x, Y = _lmc(rng, 0.2, same_kernels=True)
    ref_lml, ref_grad, _, _ = _lmc_dense(gp, x, Y, x[:2])
    lml, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    assert_allclose(lml, ref_lml, rtol=EIG_RTOL)
    assert_allclose(grad, ref_grad, rtol=EIG_RTOL, atol=1e-9)
    assert gp.log_marginal_likelihood_stderr_ < 1e-10
    assert max(gp.cg_iterations_) <= 2


def test_lmc_with_one_latent_is_the_exact_icm(rng):
    x, Y = _mt_data(rng, n=10, missing=0.2)
    icm = MultiTaskGP(Matern(1.0, nu=1.5), optimizer=None).fit(x, Y)
    lmc = MultiTaskGP(Matern(1.0, nu=1.5), model="lmc", optimizer=None).fit(x, Y)
    assert lmc.solver_ == icm.solver_ == "exact"
    assert_allclose(
        lmc.log_marginal_likelihood_value_, icm.log_marginal_likelihood_value_
    )


def test_lmc_optimisation_is_deterministic_and_improves(rng):
    x, Y = _mt_data(rng, n=10)
    gp = MultiTaskGP([RBF(1.0), RBF(3.0)], model="lmc", n_latent=2, n_probes=8)
    gp.set_params(random_state=0, lanczos_steps=10, normalize_y=True)
    a = clone(gp).fit(x, Y)
    start = clone(gp).set_params(optimizer=None).fit(x, Y)
    # fixed probes: the estimate is a deterministic function of theta
    theta = a.theta_ + 0.1
    assert a.log_marginal_likelihood(theta) == a.log_marginal_likelihood(theta)
    assert a.log_marginal_likelihood_value_ > start.log_marginal_likelihood_value_
    assert len(a.kernels_) == len(a.task_kernels_) == 2


def test_lmc_cg_non_convergence_warns(rng):
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="CG did not converge in 1 iterations"):
        _lmc(rng, cg_maxiter=1)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_latent": 2}, 'n_latent must be 1 with model="icm"'),
        ({"model": "lmc", "n_latent": 0}, "n_latent must be a positive integer"),
        ({"model": "lmc", "n_latent": 2, "cg_tol": 0.0}, r"cg_tol must be in \(0, 1\)"),
        ({"model": "lmc", "lanczos_steps": 0}, "lanczos_steps must be a positive"),
        ({"model": "lmc", "n_probes": -1}, "n_probes must be a non-negative"),
    ],
)
def test_lmc_bad_parameters(params, match, rng):
    x, Y = _mt_data(rng, n=6)
    with pytest.raises(ValueError, match=match):
        MultiTaskGP(**params).fit(x, Y)


def test_lmc_kernel_list_length_must_match(rng):
    x, Y = _mt_data(rng, n=6)
    with pytest.raises(TypeError, match="a list of 3 kernels"):
        MultiTaskGP([RBF(), RBF()], model="lmc", n_latent=3).fit(x, Y)


@pytest.mark.parametrize(("noise", "missing"), CASES)
@pytest.mark.parametrize("side", ["task", "input"])
def test_trace_matrix_matches_dense(side, noise, missing, rng):
    from kronecker_gp.solvers._multitask import missing_cells, trace_matrix

    c, r, s, o, s_dense, o_dense, _, obs = _two_kron_inputs(
        rng, noise=noise, missing=missing
    )
    eig = two_kron_eigh(c, r, s, o)
    cells = None if obs.all() else missing_cells(eig, *np.nonzero(~obs))
    f = random_spd(r.shape[0] if side == "task" else c.shape[0], random_state=rng)
    v = eig.v2 if side == "task" else eig.v1
    tm = trace_matrix(eig, cells, side, v.T @ f @ v)
    d = _sym(rng, c.shape[0] if side == "task" else r.shape[0])
    d_sigma = np.kron(d, f) if side == "task" else np.kron(f, d)
    flat = obs.reshape(-1)
    sigma = (np.kron(c, r) + np.kron(s_dense, o_dense))[np.ix_(flat, flat)]
    expected = np.trace(np.linalg.solve(sigma, d_sigma[np.ix_(flat, flat)]))
    assert_allclose(np.sum(d * tm), expected, rtol=EIG_RTOL, atol=1e-10)


def test_nearest_kronecker_product_weights(rng):
    from kronecker_gp.solvers._multitask_iterative import nkp_weights

    b1, b2 = random_spd(3, random_state=rng), random_spd(3, random_state=rng)
    k1, k2 = random_spd(5, random_state=rng), random_spd(5, random_state=rng)
    # a sum whose terms share a factor is an exact Kronecker product
    a, c = nkp_weights([b1, b2], [k1, k1])
    approx = np.kron(a[0] * b1 + a[1] * b2, c[0] * k1 + c[1] * k1)
    assert_allclose(approx, np.kron(b1, k1) + np.kron(b2, k1))
    # in general the best rank-one approximation leaves an orthogonal residual
    a, c = nkp_weights([b1, b2], [k1, k2])
    exact = np.kron(b1, k1) + np.kron(b2, k2)
    approx = np.kron(a[0] * b1 + a[1] * b2, c[0] * k1 + c[1] * k2)
    assert np.all(a >= 0) and np.all(c >= 0)
    assert_allclose(np.sum((exact - approx) * approx), 0.0, atol=1e-10)


def test_remaining_error_messages(rng):
    from kronecker_gp.solvers._multitask import whitened_eigh

    with pytest.raises(
        ValueError, match="Gradient can only be evaluated when Y is None"
    ):
        CoregionalizationKernel(2)(
            np.zeros((1, 1)), np.zeros((1, 1)), eval_gradient=True
        )
    with pytest.raises(ValueError, match="the noise of c must be positive"):
        whitened_eigh(np.eye(2), np.array([1.0, 0.0]), "c")
    with pytest.raises(ValueError, match="is not positive definite; increase"):
        whitened_eigh(np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]]), "c")
    x, Y = _mt_data(rng, n=6)
    with pytest.raises(ValueError, match='noise_bounds must be a pair or "fixed"'):
        MultiTaskGP(noise_bounds="free").fit(x, Y)
    with pytest.raises(ValueError, match="max_missing must be a non-negative integer"):
        MultiTaskGP(max_missing=-1).fit(x, Y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        MultiTaskGP().fit(x, None)
    gp = MultiTaskGP(optimizer=None).fit(x, Y)
    with pytest.raises(ValueError, match="Gradient can only be evaluated for theta"):
        gp.log_marginal_likelihood(eval_gradient=True)
    assert gp.log_marginal_likelihood() == gp.log_marginal_likelihood_value_


@pytest.mark.parametrize("noise", ["diag", "full"])
def test_many_missing_cells_form_schur_by_mode_products(noise, rng):
    """m > T + n: C_m from mode products of its columns, not the row Gram."""
    from kronecker_gp.solvers._multitask import missing_cells, multitask_factorize

    c, r, s, o, s_dense, o_dense, y, obs = _two_kron_inputs(
        rng, t=3, n=8, noise=noise, missing=0.7
    )
    tasks, inputs = np.nonzero(~obs)
    assert tasks.size > 3 + 8
    eig = two_kron_eigh(c, r, s, o)
    cells = missing_cells(eig, tasks, inputs)
    sigma = np.kron(c, r) + np.kron(s_dense, o_dense)
    miss = np.ravel_multi_index((tasks, inputs), obs.shape)
    c_m = np.linalg.inv(sigma)[np.ix_(miss, miss)]
    assert_allclose(cells.logdet(), np.linalg.slogdet(c_m)[1], rtol=EIG_RTOL)
    post, lml = multitask_factorize(eig, y, obs)
    want, alpha = _dense_lml(c, r, (s_dense, o_dense), y, obs)
    assert_allclose(lml, want, rtol=EIG_RTOL)
    assert_allclose(post.alpha()[obs], alpha, rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.parametrize("model", ["icm", "lmc"])
def test_scattered_fit_is_one_factorization_with_the_protocol(model, rng):
    """predict_grid / sample_grid of the stored factorization agree with predict."""
    from kronecker_gp._grid import Grid

    if model == "icm":
        x, Y = _mt_data(rng, missing=0.3)
        gp = MultiTaskGP(optimizer=None).fit(x, Y)
        assert gp.solver_info_.path == "icm-exact"
    else:
        gp, x, Y = _lmc(rng, 0.3)
        assert gp.solver_info_.path == "lmc-pcg"
        assert gp.solver_info_.iterations == max(gp.cg_iterations_)
    assert gp.solver_info_.n_missing == int(np.isnan(Y).sum())
    fact, pts = gp._fact, x[:3]
    mean, var = fact.predict_points(None, [pts], std=True, cov=False)
    want_mean, want_std = gp.predict(pts, return_std=True)
    scale = gp.y_train_std_
    assert_allclose(mean * scale + gp.y_train_mean_, want_mean, rtol=1e-10)
    assert_allclose(np.sqrt(np.maximum(var, 0)) * scale, want_std, rtol=1e-10)
    grid_mean, grid_var = fact.predict_grid(None, Grid([pts]), std=True)
    assert_allclose(grid_mean, mean.reshape(-1), rtol=1e-12)
    assert_allclose(grid_var, var.reshape(-1), rtol=1e-12)
    _, joint = fact.predict_points(None, [pts], std=False, cov=True)
    cov = joint.reshape(mean.size, mean.size)
    assert_allclose(np.diag(cov), var.reshape(-1), rtol=1e-7, atol=1e-10)
    n = 4000
    draws = fact.sample_grid(None, Grid([pts]), n, np.random.default_rng(0))
    assert draws.shape == (mean.size, n)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    assert np.all(np.abs(draws.mean(axis=1) - mean.reshape(-1)) <= 5 * sd / np.sqrt(n))


def test_fitted_heterotopic_model_pickles(rng):
    """The Schur complement of the missing outputs holds no closures."""
    import pickle

    x, Y = _mt_data(rng, n=20, missing=0.7)
    assert np.isnan(Y).sum() > 3 + 20  # the mode-product branch too
    gp = MultiTaskGP(optimizer=None).fit(x, Y)
    back = pickle.loads(pickle.dumps(gp))
    want, got = gp.predict(x, return_std=True), back.predict(x, return_std=True)
    assert_allclose(got[0], want[0])
    assert_allclose(got[1], want[1])
