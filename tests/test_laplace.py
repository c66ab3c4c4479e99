"""Laplace inference on grids against a dense numpy Laplace twin.

The twin below is Rasmussen and Williams (2006) Alg. 3.1 (Newton in ``a`` with
``B = I + W^1/2 K W^1/2``, damped by halving for the Student-t) and Alg. 5.1
(gradient), written directly on the dense ``K = np.kron(...)``, with the
general-``W`` forms ``log|I + K W|`` and ``Sigma = (I + K W)^-1 K``.
"""

from functools import reduce

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP, KroneckerLaplaceGP
from kronecker_gp.likelihoods import (
    Bernoulli,
    Gaussian,
    NegativeBinomial,
    Poisson,
    StudentT,
    get_likelihood,
    logistic_normal_mean,
)
from kronecker_gp.solvers import _laplace_precond, _laplace_predict, _laplace_system
from kronecker_gp.solvers._laplace import (
    LaplaceOptions,
    LaplaceProblem,
    laplace_factorize,
)
from kronecker_gp.solvers._laplace_predict import latent_moments, latent_samples
from kronecker_gp.testing import EIG_RTOL, assert_allclose

LIKELIHOODS = [
    Gaussian(0.3),
    Poisson(),
    NegativeBinomial(4.0),
    Bernoulli("logit"),
    Bernoulli("probit"),
    StudentT(4.0, 0.2),
]
IDS = ["gaussian", "poisson", "negbin", "logit", "probit", "student_t"]
SHAPES = [(6, 5), (4, 3, 3)]
DENSE_TWIN_RTOL = 1e-8


def _dense_laplace(Ks, dKs, problem):
    K = reduce(np.kron, Ks)
    n = K.shape[0]
    y, off, lik, params = problem.y, problem.offset, problem.lik, problem.params
    obs = ~np.isnan(y)

    def terms(f):
        lp, d1, d2, d3 = lik.derivatives(y[obs], f[obs] + off[obs], params)
        out = [np.zeros(n) for _ in range(3)]
        for arr, val in zip(out, (d1, -d2, d3)):
            arr[obs] = val
        return (lp.sum(), *out)

    def psi(a):
        return terms(K @ a)[0] - 0.5 * a @ K @ a

    a = np.zeros(n)
    for _ in range(200):
        f = K @ a
        _, g, W, _ = terms(f)
        sw = np.sqrt(np.maximum(W, 0.0))
        B = np.eye(n) + sw[:, None] * K * sw[None, :]
        b = sw**2 * f + g
        step = b - sw * np.linalg.solve(B, sw * (K @ b)) - a
        t, old = 1.0, psi(a)
        while psi(a + t * step) < old and t > 1e-12:
            t *= 0.5
        a = a + t * step
        if np.abs(t * step).max() <= 1e-13 * (1 + np.abs(a).max()):
            break
    f = K @ a
    lp, g, W, d3 = terms(f)
    A = np.eye(n) + K * W[None, :]
    lml = lp - 0.5 * a @ f - 0.5 * np.linalg.slogdet(A)[1]
    Sigma = np.linalg.solve(A, K)
    Sigma = 0.5 * (Sigma + Sigma.T)
    R = np.diag(W) - W[:, None] * Sigma * W[None, :]
    s2 = 0.5 * np.diag(Sigma) * d3
    grad = []
    for d, dk in enumerate(dKs):
        for p in range(dk.shape[2]):
            facs = list(Ks)
            facs[d] = dk[:, :, p]
            C = reduce(np.kron, facs)
            bb = C @ g
            grad.append(
                0.5 * a @ C @ a - 0.5 * np.trace(R @ C) + s2 @ (bb - K @ R @ bb)
            )
    if params.size:
        dlp, dd1, dd2 = lik.param_derivatives(y[obs], f[obs] + off[obs], params)
        for k in range(params.size):
            da, dW = np.zeros(n), np.zeros(n)
            da[obs], dW[obs] = dd1[k], -dd2[k]
            grad.append(dlp[k].sum() - 0.5 * np.diag(Sigma) @ dW + s2 @ Sigma @ da)
    return f, lml, np.array(grad), Sigma, W, g


def _problem(lik, shape, rng, n_missing=5):
    kernels = [ConstantKernel(1.3) * RBF(0.6), Matern(1.1, nu=1.5), RBF(0.9)]
    coords = [np.linspace(0, 2, n)[:, None] for n in shape]
    pairs = [k(c, eval_gradient=True) for k, c in zip(kernels, coords)]
    Ks, dKs = [p[0] for p in pairs], [p[1] for p in pairs]
    n = int(np.prod(shape))
    f = np.linalg.cholesky(reduce(np.kron, Ks) + 1e-8 * np.eye(n)) @ rng.normal(size=n)
    off = np.zeros(n)
    if isinstance(lik, Poisson | NegativeBinomial):
        off = np.full(n, 0.5)
        y = rng.poisson(np.exp(f + 1.0)).astype(float)
    elif isinstance(lik, Bernoulli):
        y = (rng.random(n) < 1 / (1 + np.exp(-2 * f))) * 1.0
    else:
        y = f + 0.3 * rng.normal(size=n)
    if isinstance(lik, StudentT):
        y[[1, 7]] += [6.0, -5.0]  # outliers: W < 0 there at the mode
    y[rng.choice(np.arange(8, n), n_missing, replace=False)] = np.nan
    prob = LaplaceProblem(y, off, lik, np.asarray(lik.initial_params()))
    return Ks, dKs, prob, coords, kernels


@pytest.mark.parametrize("shape", SHAPES, ids=["2 factors", "3 factors"])
@pytest.mark.parametrize("lik", LIKELIHOODS, ids=IDS)
def test_mode_lml_gradient_equal_dense_twin(lik, shape, rng):
    Ks, dKs, prob, _, _ = _problem(lik, shape, rng)
    f, lml, grad, _, W, _ = _dense_laplace(Ks, dKs, prob)
    res = laplace_factorize(Ks, prob, grad_grams=dKs)
    assert res.info["dense"]
    assert_allclose(res.f, f, rtol=DENSE_TWIN_RTOL, atol=1e-10)
    assert_allclose(res.lml, lml, rtol=DENSE_TWIN_RTOL)
    assert_allclose(
        res.grad, grad, rtol=DENSE_TWIN_RTOL, atol=1e-9 * np.abs(grad).max()
    )
    if isinstance(lik, StudentT):
        assert np.any(W < 0)  # the safeguarded Newton reached a non-concave mode


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=IDS)
def test_gradient_equals_finite_differences(lik, rng):
    _, _, prob, coords, kernels = _problem(lik, (5, 4), rng, n_missing=3)

    def lml(theta):
        nk = [len(k.theta) for k in kernels[:2]]
        ks = [kernels[0].clone_with_theta(theta[: nk[0]])]
        ks.append(kernels[1].clone_with_theta(theta[nk[0] : nk[0] + nk[1]]))
        pairs = [k(c, eval_gradient=True) for k, c in zip(ks, coords)]
        p = LaplaceProblem(prob.y, prob.offset, prob.lik, theta[sum(nk) :])
        r = laplace_factorize(
            [q[0] for q in pairs], p, grad_grams=[q[1] for q in pairs]
        )
        return r.lml, r.grad

    theta = np.concatenate([kernels[0].theta, kernels[1].theta, prob.params])
    _, grad = lml(theta)
    h = 1e-5
    fd = [
        (lml(theta + h * e)[0] - lml(theta - h * e)[0]) / (2 * h)
        for e in np.eye(theta.size)
    ]
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(grad).max())


@pytest.mark.parametrize("pre", ["additive", "scaled"])
@pytest.mark.parametrize("lik", LIKELIHOODS, ids=IDS)
def test_iterative_path_mode_and_lml_estimate(lik, pre, rng):
    Ks, dKs, prob, _, _ = _problem(lik, (6, 5), rng)
    f, lml, _, _, _, _ = _dense_laplace(Ks, dKs, prob)
    opts = LaplaceOptions(
        dense_max_cells=0, cg_tol=1e-13, n_probes=64, preconditioner=pre
    )
    res = laplace_factorize(Ks, prob, opts=opts)
    assert not res.info["dense"]
    assert res.info["cg_iterations"] > 0
    assert_allclose(res.f, f, rtol=1e-8, atol=1e-9)
    assert res.lml_std_error > 0
    assert abs(res.lml - lml) < 5 * res.lml_std_error
    if pre == "scaled" and not isinstance(lik, Gaussian | StudentT):
        assert res.system.route == "scaled"  # W >= 0 and not constant


@pytest.mark.parametrize("pre", ["additive", "scaled"])
@pytest.mark.parametrize(
    "lik",
    [Poisson(), NegativeBinomial(4.0), Bernoulli()],
    ids=["poisson", "negbin", "logit"],
)
def test_iterative_gradient_estimate_converges_to_dense_twin(lik, pre, rng):
    # the traces and diag(Sigma) are Hutchinson estimates: the error shrinks
    # like 1 / sqrt(n_probes) (about 12 % of max |grad| at 64 probes, 1.2 % at
    # 1024 on this problem); the solves themselves are exact to cg_tol
    Ks, dKs, prob, _, _ = _problem(lik, (6, 5), rng)
    _, _, grad, _, _, _ = _dense_laplace(Ks, dKs, prob)
    errs = []
    for n_probes in (16, 1024):
        opts = LaplaceOptions(
            dense_max_cells=0, cg_tol=1e-12, n_probes=n_probes, preconditioner=pre
        )
        res = laplace_factorize(Ks, prob, grad_grams=dKs, opts=opts)
        assert res.system.route == pre
        errs.append(np.max(np.abs(res.grad - grad)) / np.max(np.abs(grad)))
    assert errs[1] < 0.05
    assert errs[1] < errs[0] / 2


def test_constant_curvature_is_exact_without_dense(rng):
    # Gaussian on a complete grid: W constant, log|A| and diag(Sigma) exact
    Ks, dKs, prob, _, _ = _problem(Gaussian(0.3), (6, 5), rng, n_missing=0)
    _, lml, grad, _, _, _ = _dense_laplace(Ks, dKs, prob)
    res = laplace_factorize(
        Ks, prob, grad_grams=dKs, opts=LaplaceOptions(dense_max_cells=0)
    )
    assert res.lml_std_error == 0.0
    assert_allclose(res.lml, lml, rtol=EIG_RTOL)
    assert_allclose(res.grad, grad, rtol=EIG_RTOL, atol=1e-9 * np.abs(grad).max())


@pytest.mark.parametrize(
    ("dense_max", "pre"),
    [(1024, "auto"), (0, "additive"), (0, "scaled")],
    ids=["dense", "cg-additive", "cg-scaled"],
)
@pytest.mark.parametrize("lik", [Poisson(), Bernoulli()], ids=["poisson", "logit"])
def test_latent_moments_at_points_and_grid(lik, dense_max, pre, rng):
    Ks, dKs, prob, coords, kernels = _problem(lik, (6, 5), rng)
    f, _, _, _, W, g = _dense_laplace(Ks, dKs, prob)
    K = reduce(np.kron, Ks)
    opts = LaplaceOptions(dense_max_cells=dense_max, cg_tol=1e-13, preconditioner=pre)
    res = laplace_factorize(Ks, prob, opts=opts)
    test = [np.array([[0.3], [1.7]]), np.array([[0.1], [0.5], [1.9]])]
    cross = [k(t, c) for k, t, c in zip(kernels, test, coords)]
    Kx = np.kron(*cross)
    prior = np.kron(*[k.diag(t) for k, t in zip(kernels, test)])
    R = np.linalg.inv(K + np.diag(1 / np.where(W > 0, W, 1e-300)))
    mean_ref, var_ref = Kx @ g, prior - np.einsum("ij,jk,ik->i", Kx, R, Kx)
    mean, var, exact = latent_moments(res, cross, prior, grid=True)
    assert exact
    assert_allclose(mean, mean_ref, rtol=1e-8, atol=1e-10)
    assert_allclose(var, var_ref, rtol=1e-7, atol=1e-10)
    idx = np.indices((2, 3)).reshape(2, -1)
    rows = [c[i] for c, i in zip(cross, idx)]
    mean_p, var_p, _ = latent_moments(res, rows, prior, grid=False)
    assert_allclose(mean_p, mean_ref, rtol=1e-8, atol=1e-10)
    assert_allclose(var_p, var_ref, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("pre", ["additive", "scaled"])
def test_monte_carlo_variance_and_samples(pre, rng, monkeypatch):
    Ks, dKs, prob, coords, kernels = _problem(Poisson(), (6, 5), rng)
    _, _, _, Sigma, _, _ = _dense_laplace(Ks, dKs, prob)
    opts = LaplaceOptions(dense_max_cells=0, cg_tol=1e-12, preconditioner=pre)
    res = laplace_factorize(Ks, prob, opts=opts)
    assert res.system.route == pre
    cross = [np.asarray(k(c, c)) for k, c in zip(kernels, coords)]
    prior = np.kron(*[k.diag(c) for k, c in zip(kernels, coords)])
    exact_var = np.diag(Sigma)
    monkeypatch.setattr(_laplace_predict, "EXACT_VARIANCE_WORK", 0)
    _, var, exact = latent_moments(res, cross, prior, grid=True, n_samples=4000)
    assert not exact
    # relative MC error of the subtracted term is about sqrt(2 / 4000) = 0.022
    assert np.max(np.abs(var - exact_var) / prior) < 0.1
    assert np.max(np.abs(var - exact_var) / prior) > 1e-6  # it is an estimate
    draws = latent_samples(res, 4000, random_state=1)
    assert np.max(np.abs(draws.mean(axis=1) - res.f)) < 5 * np.sqrt(
        exact_var.max() / 4000
    )
    cov = np.cov(draws)
    assert np.max(np.abs(cov - Sigma)) < 0.15 * np.max(np.diag(Sigma))


def test_gaussian_likelihood_equals_kronecker_gp(rng):
    x, t = np.linspace(0, 1, 7), np.linspace(0, 2, 6)
    Y = np.sin(4 * x)[:, None] + np.cos(t)[None, :] + 0.2 * rng.normal(size=(7, 6))
    Y[1, 2] = Y[4, 4] = np.nan
    kernels = [ConstantKernel(1.0) * RBF(0.3), RBF(0.8)]
    lap = KroneckerLaplaceGP(kernels, likelihood=Gaussian(0.1), mean=0.0).fit_grid(
        [x, t], Y
    )
    ref = KroneckerGP(kernels, noise=0.1).fit_grid([x, t], Y)
    assert_allclose(lap.theta_, ref.theta_, rtol=1e-4)
    lml, grad = lap.log_marginal_likelihood(ref.theta_, eval_gradient=True)
    lml_ref, grad_ref = ref.log_marginal_likelihood(ref.theta_, eval_gradient=True)
    assert_allclose(lml, lml_ref, rtol=EIG_RTOL)
    assert_allclose(grad, grad_ref, rtol=1e-6, atol=1e-6)
    lap.set_params(optimizer=None, likelihood=Gaussian(ref.noise_))
    lap.set_params(kernels=ref.kernels_).fit_grid([x, t], Y)
    Xt = rng.uniform(0, 1, (5, 2))
    mean, std = lap.predict_latent(Xt, return_std=True)
    mean_ref, std_ref = ref.predict(Xt, return_std=True)
    assert_allclose(mean, mean_ref, rtol=1e-8, atol=1e-10)
    assert_allclose(std, std_ref, rtol=1e-8, atol=1e-10)


def _likelihood_case(lik, rng):
    if isinstance(lik, Poisson | NegativeBinomial):
        return rng.poisson(3.0, 6).astype(float), rng.normal(size=6) * 0.7 + 1.0
    if isinstance(lik, Bernoulli):
        return (rng.random(6) < 0.5) * 1.0, rng.normal(size=6)
    return 2 * rng.normal(size=6), rng.normal(size=6)


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=IDS)
def test_likelihood_derivatives_equal_finite_differences(lik, rng):
    y, eta = _likelihood_case(lik, rng)
    p, h = lik.initial_params(), 1e-5
    d = lik.derivatives(y, eta, p)
    up, dn = lik.derivatives(y, eta + h, p), lik.derivatives(y, eta - h, p)
    for k in range(3):
        assert_allclose(d[k + 1], (up[k] - dn[k]) / (2 * h), rtol=1e-6, atol=1e-8)
    pd = lik.param_derivatives(y, eta, p)
    assert pd[0].shape == (p.size, 6)
    for j in range(p.size):
        e = h * np.eye(p.size)[j]
        up, dn = lik.derivatives(y, eta, p + e), lik.derivatives(y, eta, p - e)
        for k in range(3):
            assert_allclose(pd[k][j], (up[k] - dn[k]) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=IDS)
def test_predictive_integrals_equal_quadrature(lik, rng):
    y, _ = _likelihood_case(lik, rng)
    m, v = np.array([0.4, 1.2]), np.array([0.3, 2.5])
    p = lik.initial_params()
    got = lik.log_predictive(y[:2], m, v, p)
    for i in range(2):
        s = np.sqrt(v[i])

        def integrand(f, i=i, s=s):
            lp = lik.derivatives(y[i : i + 1], np.array([f]), p)[0][0]
            return np.exp(lp) * norm.pdf(f, m[i], s)

        ref = quad(integrand, m[i] - 12 * s, m[i] + 12 * s, epsrel=1e-12, limit=400)[0]
        assert_allclose(got[i], np.log(ref), rtol=1e-8)


@pytest.mark.parametrize(
    ("m", "v"), [(0.3, 0.1), (1.0, 4.0), (3.0, 100.0), (-2.0, 900.0)]
)
def test_logistic_normal_mean_equals_quadrature(m, v):
    s = np.sqrt(v)
    ref = quad(
        lambda f: norm.pdf(f, m, s) / (1 + np.exp(-f)),
        m - 12 * s,
        m + 12 * s,
        points=[0.0],
        epsabs=1e-14,
        epsrel=1e-13,
        limit=500,
    )[0]
    assert_allclose(logistic_normal_mean([m], [v])[0], ref, rtol=1e-10, atol=1e-13)


def test_count_means_and_probit_closed_forms():
    m, v = np.array([0.2, -1.0]), np.array([0.5, 2.0])
    assert_allclose(Poisson().mean(m, v, []), np.exp(m + v / 2))
    x, w = np.polynomial.hermite_e.hermegauss(80)
    ref = (norm.cdf(m[:, None] + np.sqrt(v)[:, None] * x) @ w) / np.sqrt(2 * np.pi)
    assert_allclose(Bernoulli("probit").mean(m, v, []), ref, rtol=1e-10)


def test_estimator_poisson_recovers_rate_with_exposure(rng):
    x, t = np.linspace(0, 1, 12), np.linspace(0, 1, 10)
    rate = np.exp(-1 + np.sin(4 * x)[:, None] * np.cos(3 * t)[None, :])
    expo = rng.uniform(20, 60, size=(12, 10))
    Y = rng.poisson(rate * expo).astype(float)
    Y[3, 4] = np.nan
    gp = KroneckerLaplaceGP([ConstantKernel(1.0) * RBF(0.3), RBF(0.3)])
    gp.fit_grid([x, t], Y, exposure=expo)
    assert np.mean(np.abs(np.exp(gp.predict_grid([x, t])) - rate)) < 0.05
    rows = gp.grid_.to_rows()
    pred = gp.predict(rows, exposure=expo.ravel())
    assert_allclose(
        np.sum(pred), np.nansum(Y) + expo[3, 4] * pred[34] / expo.ravel()[34], rtol=0.05
    )
    # fit(X, y) on the rows in shuffled order equals fit_grid
    keep = ~np.isnan(Y.ravel())
    perm = rng.permutation(np.flatnonzero(keep))
    gp2 = KroneckerLaplaceGP([ConstantKernel(1.0) * RBF(0.3), RBF(0.3)])
    gp2.fit(rows[perm], Y.ravel()[perm], exposure=expo.ravel()[perm])
    assert_allclose(gp2.theta_, gp.theta_, rtol=1e-6)
    assert_allclose(
        gp2.log_marginal_likelihood_value_,
        gp.log_marginal_likelihood_value_,
        rtol=1e-10,
    )
    lpd = gp.log_predictive_density(rows[:4], Y.ravel()[:4], exposure=expo.ravel()[:4])
    assert_allclose(
        gp.score(rows[:4], Y.ravel()[:4], exposure=expo.ravel()[:4]), lpd.mean()
    )
    samples = gp.sample_latent_grid(3)
    assert samples.shape == (12, 10, 3)


def test_negative_binomial_learns_overdispersion(rng):
    x = np.linspace(0, 1, 30)
    t = np.arange(4.0)
    mu = np.exp(2 + np.sin(5 * x))[:, None] * np.ones(4)
    r = 3.0
    Y = rng.poisson(rng.gamma(r, mu / r)).astype(float)
    gp = KroneckerLaplaceGP(
        [ConstantKernel(1.0) * RBF(0.3), RBF(2.0, "fixed")],
        likelihood=NegativeBinomial(10.0),
    ).fit_grid([x, t], Y)
    assert 1.0 < gp.likelihood_params_[0] < 10.0


def test_no_dense_kron_above_dense_budget(rng, monkeypatch):
    x, t = np.linspace(0, 1, 40), np.linspace(0, 1, 30)
    Y = rng.poisson(3.0, size=(40, 30)).astype(float)
    Y[5, 5] = np.nan

    def boom(*args, **kwargs):
        raise AssertionError("np.kron called on the Kronecker path")

    monkeypatch.setattr(np, "kron", boom)
    gp = KroneckerLaplaceGP([RBF(0.3), RBF(0.3)], optimizer=None, n_probes=4)
    gp.fit_grid([x, t], Y)
    assert not gp.solver_info_["dense"]
    assert gp.lml_std_error_ > 0
    assert gp.predict_grid([x[:3], t[:2]], return_std=True)[1].shape == (3, 2)


@pytest.mark.parametrize(
    ("params", "fit_args", "match"),
    [
        ({"likelihood": "poison"}, None, "likelihood must be one of"),
        ({"likelihood": "poisson", "link": "logit"}, None, "link must be one of"),
        ({"mean": "zero"}, None, "mean must be"),
        ({}, {"Y": [[1.0, -2.0], [0.0, 1.0]]}, "non-negative integer counts"),
        ({}, {"Y": [[1.5, 2.0], [0.0, 1.0]]}, "non-negative integer counts"),
        ({}, {"exposure": [[1.0, 0.0], [1.0, 1.0]]}, "exposure must be positive"),
        ({}, {"exposure": [1.0, 2.0]}, "exposure must have shape"),
        ({"likelihood": "bernoulli"}, {"Y": [[0.0, 2.0], [1.0, 0.0]]}, "binary labels"),
        ({"n_restarts_optimizer": -1}, None, "n_restarts_optimizer"),
    ],
)
def test_errors_name_the_argument(params, fit_args, match):
    args = {"Y": [[1.0, 2.0], [0.0, 1.0]]}
    args.update(fit_args or {})
    gp = KroneckerLaplaceGP(**params)
    with pytest.raises(ValueError, match=match):
        gp.fit_grid([np.arange(2.0), np.arange(2.0)], **args)


def test_bad_likelihood_parameters_raise():
    with pytest.raises(ValueError, match="link must be"):
        Bernoulli("cloglog")
    with pytest.raises(ValueError, match="df must be positive"):
        StudentT(df=-1.0)
    with pytest.raises(ValueError, match="takes 1 log-parameters"):
        Gaussian().derivatives(np.zeros(2), np.zeros(2), [])
    assert isinstance(get_likelihood("student_t"), StudentT)


def test_theta_length_and_prediction_errors(rng):
    gp = KroneckerLaplaceGP([RBF(0.5), RBF(0.5)], optimizer=None)
    gp.fit_grid([np.arange(3.0), np.arange(4.0)], rng.poisson(2, (3, 4)).astype(float))
    with pytest.raises(ValueError, match="theta must have 2 entries"):
        gp.log_marginal_likelihood([0.0])
    with pytest.raises(ValueError, match="Gradient can only be evaluated"):
        gp.log_marginal_likelihood(eval_gradient=True)
    with pytest.raises(ValueError, match="exposure must hold 2 positive"):
        gp.predict(np.zeros((2, 2)), exposure=[1.0, -1.0])
    with pytest.raises(ValueError, match="coords must give 2 axes"):
        gp.predict_grid([np.arange(3.0)])


def test_kronecker_preconditioner_is_exact_for_a_product_curvature(rng):
    Ks = [np.asarray(RBF(0.5)(np.linspace(0, 2, n)[:, None])) for n in (5, 4)]
    basis = _laplace_precond.KronBasis.from_grams(Ks)
    a, c = rng.uniform(0.5, 50, 5), rng.uniform(0.1, 3, 4)
    w = np.outer(a, c).ravel()
    d = _laplace_precond.additive_log_fit(w.reshape(5, 4))
    assert_allclose(np.outer(*d), w.reshape(5, 4), rtol=1e-10)
    opts = LaplaceOptions(dense_max_cells=0)
    system = _laplace_system.CurvatureSystem(basis, w, opts)
    assert system.route == "additive"  # a product curvature: spread 1
    b = rng.normal(size=(20, 2))
    A = system.matvec(np.eye(20))
    assert_allclose(system._precond.apply(A @ b), b, rtol=1e-9, atol=1e-11)
    x = system.solve(b)
    assert system.cg_iterations <= 2
    assert_allclose(A @ x, b, rtol=1e-9, atol=1e-9)
    # a missing cell (W = 0) leaves its slice's other cells in the fit
    w[3] = 0.0
    d = _laplace_precond.additive_log_fit(w.reshape(5, 4))
    assert np.all(np.concatenate(d) > 0)


def test_scaled_preconditioner_is_exact_for_a_product_curvature(rng):
    Ks = [np.asarray(RBF(0.5)(np.linspace(0, 2, n)[:, None])) for n in (5, 4)]
    basis = _laplace_precond.KronBasis.from_grams(Ks)
    w = np.outer(rng.uniform(0.5, 50, 5), rng.uniform(0.1, 3, 4)).ravel()
    opts = LaplaceOptions(dense_max_cells=0, preconditioner="scaled")
    system = _laplace_system.CurvatureSystem(basis, w, opts)
    assert system.route == "scaled"
    # T = I and P = I + W^1/2 K W^1/2 = B: the CG operator is diag(1 + Gamma)
    assert_allclose(system._bprec.t2, np.ones(20), rtol=1e-10)
    N = system._matvec_u(np.eye(20))
    assert_allclose(N * system._bprec.inv[None, :], np.eye(20), atol=1e-9)
    assert_allclose(basis.k_matvec(w), reduce(np.kron, Ks) @ w, rtol=1e-12)
    b = rng.normal(size=(20, 1))
    K = reduce(np.kron, Ks)
    B = np.eye(20) + np.sqrt(w)[:, None] * K * np.sqrt(w)[None, :]
    assert_allclose(B @ system.b_solve(b, 1e-12), b, rtol=1e-9, atol=1e-9)


def test_kron_apply_equals_the_dense_kronecker_product_in_any_order(rng):
    # factors growing, shrinking and square: the axes are reordered inside
    factors = [rng.normal(size=s) for s in [(8, 2), (3, 7), (5, 5)]]
    dense = reduce(np.kron, factors)
    x = rng.normal(size=(70, 3))
    assert_allclose(_laplace_precond.kron_apply(factors, x), dense @ x, rtol=1e-12)
    assert_allclose(
        _laplace_precond.kron_apply(factors, x[:, 0]), dense @ x[:, 0], rtol=1e-12
    )


def test_truncated_basis_keeps_the_mode_and_drops_null_eigenpairs(rng):
    # a very smooth factor: most eigenvalues are at rounding level
    x = np.linspace(0, 1, 40)[:, None]
    Ks = [np.asarray(RBF(0.5)(x)), np.asarray(Matern(0.3, nu=1.5)(x[:30]))]
    basis = _laplace_precond.KronBasis.from_grams(Ks, truncate=True)
    assert basis.lam_axes[0].size < 40
    assert basis.lam_axes[1].size == 30
    y = rng.poisson(3.0, size=1200).astype(float)
    y[rng.choice(1200, 30, replace=False)] = np.nan
    prob = LaplaceProblem(y, np.zeros(1200), Poisson(), np.zeros(0))
    opts = LaplaceOptions(dense_max_cells=0, cg_tol=1e-12)
    res = laplace_factorize(Ks, prob, opts=opts)
    full = laplace_factorize(Ks, prob, opts=LaplaceOptions(dense_max_cells=2000))
    assert full.info["dense"] and not res.info["dense"]
    assert res.v.size == basis.rank
    assert_allclose(res.f, full.f, rtol=1e-8, atol=1e-9)
