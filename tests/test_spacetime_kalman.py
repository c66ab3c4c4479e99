"""The spatio-temporal Kalman route against a dense GP on the observed cells."""

import tracemalloc

import numpy as np
import pytest
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.stats import chi2
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp.kernels._markov import kernel_to_state_space
from kronecker_gp.linalg._spacetime import (
    spacetime_cost,
    spacetime_krige,
    spacetime_lml,
    spacetime_memory,
    spacetime_posterior,
    spacetime_sample,
)
from kronecker_gp.linalg.kalman._model import discretize
from kronecker_gp.testing import assert_allclose

TIME_KERNELS = {
    "matern12": Matern(2.0, nu=0.5),
    "matern32": ConstantKernel(0.7) * Matern(3.0, nu=1.5),
    "matern52": Matern(4.0, nu=2.5),
    "sum": ConstantKernel(0.7) * Matern(2.0, nu=1.5) + Matern(5.0, nu=0.5),
    "const+matern12": ConstantKernel(0.5) + Matern(3.0, nu=0.5),
}
SPACE_KERNEL = ConstantKernel(1.3) * RBF([1.0, 2.0])


def make_problem(rng, time_kernel, *, n_s=4, n_t=7, cell_noise=True, frac=0.3):
    """Random sites, irregular times, ~frac missing, one empty time column."""
    xs = rng.uniform(0.0, 3.0, (n_s, 2))
    t = np.sort(rng.uniform(0.0, 10.0, n_t))
    Y = rng.standard_normal((n_s, n_t))
    Y[rng.random(Y.shape) < frac] = np.nan
    if n_t > 3:
        Y[:, 2] = np.nan
    noise = rng.uniform(0.1, 0.5, (n_s, n_t)) if cell_noise else 0.3
    return {"xs": xs, "t": t, "Y": Y, "noise": noise, "kt": time_kernel}


def arrays(prob, ks=SPACE_KERNEL, kt=None, scale=1.0):
    """The inputs of the spacetime functions, with derivative stacks."""
    kt = prob["kt"] if kt is None else kt
    K_s, dK_s = ks(prob["xs"], eval_gradient=True)
    ssm = kernel_to_state_space(kt)
    A, Q, dA, dQ = discretize(ssm, np.diff(prob["t"]), eval_gradient=True)
    model = {"A": A, "Q": Q, "P_inf": ssm.Pinf, "H": ssm.H}
    model["noise"] = scale * np.asarray(prob["noise"])
    derivs = {"dK_s": np.moveaxis(dK_s, -1, 0), "dA": dA, "dQ": dQ}
    return K_s, model, {**derivs, "dP_inf": ssm.dPinf}


def dense_gp(prob, ks=SPACE_KERNEL):
    """Dense prior covariance, observed mask and noise, from the kernels."""
    K = np.kron(ks(prob["xs"]), prob["kt"](prob["t"][:, None]))
    obs = ~np.isnan(prob["Y"].ravel())
    noise = np.broadcast_to(prob["noise"], prob["Y"].shape).ravel()[obs]
    C = K[np.ix_(obs, obs)] + np.diag(noise)
    return K, obs, C


def dense_lml_grad(prob, ks=SPACE_KERNEL):
    """Dense LML and gradient (space theta, time theta, log noise scale)."""
    K_s, dK_s = ks(prob["xs"], eval_gradient=True)
    K_t, dK_t = prob["kt"](prob["t"][:, None], eval_gradient=True)
    K, obs, C = dense_gp(prob, ks)
    y = prob["Y"].ravel()[obs]
    factor = cho_factor(C, lower=True)
    alpha = cho_solve(factor, y)
    lml = -0.5 * (y @ alpha + y.size * np.log(2 * np.pi))
    lml -= np.log(np.diag(factor[0])).sum()
    dKs = [np.kron(dK_s[..., j], K_t) for j in range(dK_s.shape[-1])]
    dKt = [np.kron(K_s, dK_t[..., j]) for j in range(dK_t.shape[-1])]
    inner = np.outer(alpha, alpha) - cho_solve(factor, np.eye(y.size))
    grad = [0.5 * np.sum(inner * D[np.ix_(obs, obs)]) for D in dKs + dKt]
    grad.append(0.5 * np.sum(np.diag(inner) * np.diag(C - K[np.ix_(obs, obs)])))
    return lml, np.array(grad)


def dense_posterior(prob, ks=SPACE_KERNEL):
    """Dense posterior mean and covariance of f over every cell."""
    K, obs, C = dense_gp(prob, ks)
    factor = cho_factor(C, lower=True)
    mean = K[:, obs] @ cho_solve(factor, prob["Y"].ravel()[obs])
    return mean, K - K[:, obs] @ cho_solve(factor, K[obs])


@pytest.mark.parametrize("name", sorted(TIME_KERNELS))
@pytest.mark.parametrize("cell_noise", [True, False])
def test_lml_and_gradient_match_dense(rng, name, cell_noise):
    prob = make_problem(rng, TIME_KERNELS[name], cell_noise=cell_noise)
    K_s, model, derivs = arrays(prob)
    lml = spacetime_lml(prob["Y"], K_s, **model)
    lml_g, grad = spacetime_lml(prob["Y"], K_s, **model, eval_gradient=True, **derivs)
    ref, ref_grad = dense_lml_grad(prob)
    assert_allclose(lml, ref)
    assert_allclose(lml_g, ref)
    assert grad.shape == (SPACE_KERNEL.theta.size + 1 + TIME_KERNELS[name].theta.size,)
    assert_allclose(grad, ref_grad, rtol=1e-8, atol=1e-10 * np.abs(ref_grad).max())


def test_gradient_matches_finite_differences(rng):
    prob = make_problem(rng, TIME_KERNELS["sum"])
    theta = np.concatenate([SPACE_KERNEL.theta, prob["kt"].theta, [0.2]])
    n_s = SPACE_KERNEL.theta.size
    n_t = n_s + prob["kt"].theta.size

    def lml(th):
        ks = SPACE_KERNEL.clone_with_theta(th[:n_s])
        kt = prob["kt"].clone_with_theta(th[n_s:n_t])
        K_s, model, _ = arrays(prob, ks, kt, scale=np.exp(th[-1]))
        return spacetime_lml(prob["Y"], K_s, **model)

    ks = SPACE_KERNEL.clone_with_theta(theta[:n_s])
    K_s, model, derivs = arrays(prob, ks, scale=np.exp(0.2))
    _, grad = spacetime_lml(prob["Y"], K_s, **model, eval_gradient=True, **derivs)
    eps = 1e-6
    fd = [
        (lml(theta + eps * e) - lml(theta - eps * e)) / (2 * eps)
        for e in np.eye(theta.size)
    ]
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["matern32", "const+matern12"])
def test_posterior_mean_and_variance_match_dense(rng, name):
    prob = make_problem(rng, TIME_KERNELS[name])
    prob["Y"][0] = np.nan  # a site never observed is predicted from the others
    K_s, model, _ = arrays(prob)
    mean, var = spacetime_posterior(prob["Y"], K_s, **model)
    ref_mean, ref_cov = dense_posterior(prob)
    assert mean.shape == var.shape == prob["Y"].shape
    assert_allclose(mean.ravel(), ref_mean, rtol=1e-8, atol=1e-10)
    assert_allclose(var.ravel(), np.diag(ref_cov), rtol=1e-8, atol=1e-10)


def test_regular_grid_accepts_one_transition(rng):
    prob = make_problem(rng, TIME_KERNELS["matern32"])
    prob["t"] = np.arange(7.0)
    K_s, model, derivs = arrays(prob)
    one = {**model, "A": model["A"][0], "Q": model["Q"][0]}
    one_d = {**derivs, "dA": derivs["dA"][0], "dQ": derivs["dQ"][0]}
    full = spacetime_lml(prob["Y"], K_s, **model, eval_gradient=True, **derivs)
    short = spacetime_lml(prob["Y"], K_s, **one, eval_gradient=True, **one_d)
    assert_allclose(short[0], full[0])
    assert_allclose(short[1], full[1])


def test_no_observation_gives_the_prior(rng):
    prob = make_problem(rng, TIME_KERNELS["matern52"], n_t=3)
    prob["Y"][:] = np.nan
    K_s, model, _ = arrays(prob)
    assert spacetime_lml(prob["Y"], K_s, **model) == 0.0
    mean, var = spacetime_posterior(prob["Y"], K_s, **model)
    assert np.all(mean == 0.0)
    assert_allclose(
        var, np.outer(np.diag(K_s), np.ones(3)) * prob["kt"].diag(np.zeros((1, 1)))
    )


def test_single_time_step_is_a_spatial_gp(rng):
    prob = make_problem(rng, TIME_KERNELS["matern12"], n_t=1, frac=0.0)
    K_s, model, _ = arrays(prob)
    ref, _ = dense_lml_grad(prob)
    assert_allclose(spacetime_lml(prob["Y"], K_s, **model), ref)


def krige_dense(prob, xn, keep):
    """Dense mean and variance at new sites ``xn`` over all times."""
    K, obs, C = dense_gp(prob)
    K_t = prob["kt"](prob["t"][:, None])
    cross = np.kron(SPACE_KERNEL(xn, prob["xs"]), K_t)[:, obs]
    prior = np.kron(SPACE_KERNEL.diag(xn), np.diag(K_t))
    factor = cho_factor(C, lower=True)
    mean = cross @ cho_solve(factor, prob["Y"].ravel()[obs])
    var = prior - np.einsum("ij,ji->i", cross, cho_solve(factor, cross.T))
    n_t = prob["t"].size
    return mean.reshape(-1, n_t)[:, keep], var.reshape(-1, n_t)[:, keep]


def test_kriging_to_new_sites_matches_dense(rng):
    prob = make_problem(rng, TIME_KERNELS["sum"])
    xn = rng.uniform(0.0, 3.0, (3, 2))
    xn[0] = prob["xs"][1]  # a training site: the residual variance is zero
    K_s, model, _ = arrays(prob)
    cross, prior = SPACE_KERNEL(xn, prob["xs"]), SPACE_KERNEL.diag(xn)
    mean, var = spacetime_krige(prob["Y"], K_s, cross, prior, **model)
    ref_mean, ref_var = krige_dense(prob, xn, slice(None))
    assert_allclose(mean, ref_mean, rtol=1e-8, atol=1e-10)
    assert_allclose(var, ref_var, rtol=1e-8, atol=1e-10)


def test_new_times_and_new_site_time_points(rng):
    """Merge new times into the timeline as all-NaN columns, then krige."""
    prob = make_problem(rng, TIME_KERNELS["matern32"], n_t=9)
    new_times = np.array([3, 6])
    prob["Y"][:, new_times] = np.nan
    xn = rng.uniform(0.0, 3.0, (2, 2))
    K_s, model, _ = arrays(prob)
    mean, var = spacetime_posterior(prob["Y"], K_s, **model)
    ref_mean, ref_cov = dense_posterior(prob)
    ref_mean, ref_var = ref_mean.reshape(4, 9), np.diag(ref_cov).reshape(4, 9)
    assert_allclose(mean[:, new_times], ref_mean[:, new_times], rtol=1e-8, atol=1e-10)
    assert_allclose(var[:, new_times], ref_var[:, new_times], rtol=1e-8, atol=1e-10)
    cross, prior = SPACE_KERNEL(xn, prob["xs"]), SPACE_KERNEL.diag(xn)
    km, kv = spacetime_krige(prob["Y"], K_s, cross, prior, **model)
    ref_km, ref_kv = krige_dense(prob, xn, new_times)
    assert_allclose(km[:, new_times], ref_km, rtol=1e-8, atol=1e-10)
    assert_allclose(kv[:, new_times], ref_kv, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["matern32", "const+matern12"])
def test_samples_have_the_dense_posterior_moments(rng, name):
    prob = make_problem(rng, TIME_KERNELS[name], n_s=3, n_t=4)
    K_s, model, _ = arrays(prob)
    n = 20000
    draws = spacetime_sample(
        prob["Y"], K_s, **model, n_samples=n, random_state=np.random.default_rng(5)
    )
    assert draws.shape == (n, 3, 4)
    x = draws.reshape(n, -1)
    mean, cov = dense_posterior(prob)
    # sample mean: n (xbar - mu)^T cov^-1 (xbar - mu) ~ chi2(12)
    diff = x.mean(axis=0) - mean
    stat = n * diff @ np.linalg.solve(cov, diff)
    assert stat < chi2.ppf(1 - 1e-6, df=mean.size)
    # sample covariance entries: sd ~ sqrt((c_ij^2 + c_ii c_jj) / n); 6 sd
    sd = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) < 6 * sd)


def test_samples_are_reproducible(rng):
    prob = make_problem(rng, TIME_KERNELS["matern12"], n_s=2, n_t=3)
    K_s, model, _ = arrays(prob)
    a = spacetime_sample(prob["Y"], K_s, **model, n_samples=2, random_state=3)
    b = spacetime_sample(prob["Y"], K_s, **model, n_samples=2, random_state=3)
    assert np.array_equal(a, b)


def test_cost_scales_as_documented(monkeypatch):
    import kronecker_gp.linalg._spacetime as spacetime

    base = spacetime_cost(100, 50, 2, 4)
    assert spacetime_cost(100, 100, 2, 4) == pytest.approx(2 * base, rel=1e-4)
    assert 7.0 < spacetime_cost(200, 50, 2, 4) / base < 8.5
    # the gradient's length only adds its contractions
    extra = spacetime_cost(100, 50, 2, 8) - base
    assert extra == pytest.approx(4 * (2 * 50 * 4 + 100**2))
    # records over the budget are re-filtered: at most one more recording pass
    monkeypatch.setattr(spacetime, "_RECORD_BYTES", 1)
    assert 1.1 < spacetime_cost(100, 50, 2, 4) / base < 1.6


def test_cost_of_each_operation():
    lml = spacetime_cost(100, 50, 2, 4, operation="lml")
    grad = spacetime_cost(100, 50, 2, 4)
    post = spacetime_cost(100, 50, 2, 4, operation="posterior")
    # the gradient and the smoother each cost a few filters, not n_theta of them
    assert 2.0 < grad / lml < 4.0
    assert 2.0 < post / lml < 5.0
    with pytest.raises(ValueError, match="operation must be 'lml\\+grad'"):
        spacetime_cost(3, 4, 1, 2, operation="predict")


@pytest.mark.parametrize("budget", [2**28, 2**18])
def test_memory_estimate_bounds_the_traced_peak(rng, monkeypatch, budget):
    """Few steps, a large state: the arrays, not Python objects, dominate."""
    import kronecker_gp.linalg._spacetime as spacetime

    monkeypatch.setattr(spacetime, "_RECORD_BYTES", budget)
    prob = make_problem(rng, TIME_KERNELS["matern32"], n_s=40, n_t=10)
    K_s, model, derivs = arrays(prob)
    estimate = spacetime_memory(40, 10, 2)
    for run in (
        lambda: spacetime_lml(prob["Y"], K_s, **model, eval_gradient=True, **derivs),
        lambda: spacetime_posterior(prob["Y"], K_s, **model),
    ):
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert 0.5 * estimate < peak < estimate


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_s": 0}, "n_s must be an integer >= 1"),
        ({"d": 1.5}, "d must be an integer >= 1"),
        ({"n_theta": -1}, "n_theta must be an integer >= 0"),
    ],
)
def test_cost_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spacetime_cost(**{"n_s": 3, "n_t": 4, "d": 1, "n_theta": 2, **kwargs})
    if "n_theta" not in kwargs:
        with pytest.raises(ValueError, match=match):
            spacetime_memory(**{"n_s": 3, "n_t": 4, "d": 1, **kwargs})


def _bad(prob, K_s, model, derivs, what):
    Y, K_s, model, derivs = prob["Y"].copy(), K_s.copy(), dict(model), dict(derivs)
    if what == "Y-1d":
        Y = Y[0]
    elif what == "Y-inf":
        Y[0, 0] = np.inf
    elif what == "K_s":
        K_s = K_s[:-1, :-1]
    elif what == "A":
        model["A"] = model["A"][:-1]
    elif what == "P_inf":
        model["P_inf"] = np.full((2, 2), np.nan)
    elif what == "noise-shape":
        model["noise"] = np.ones(3)
    elif what == "noise-sign":
        model["noise"] = np.where(np.isnan(Y), 1.0, -0.1)
    elif what == "noise-inf":
        model["noise"] = np.where(np.isnan(Y), 1.0, np.inf)
    elif what == "derivs":
        del derivs["dQ"]
    elif what == "dK_s":
        derivs["dK_s"] = derivs["dK_s"][0]
    return Y, K_s, model, derivs


@pytest.mark.parametrize(
    ("what", "match"),
    [
        ("Y-1d", "Y must be a 2-D array"),
        ("Y-inf", "Y must not contain inf"),
        ("K_s", r"K_s must have shape \(4, 4\)"),
        ("A", r"A must have shape \(6, 2, 2\)"),
        ("P_inf", "P_inf must be finite"),
        ("noise-shape", "noise must be a scalar or an array of shape"),
        ("noise-sign", r"noise must be positive and finite .* got -0.1 at cell"),
        ("noise-inf", "noise must be positive and finite"),
        ("derivs", "eval_gradient=True needs dK_s, dA, dQ and dP_inf"),
        ("dK_s", r"dK_s must have shape \(p_s, n_s, n_s\)"),
    ],
)
def test_bad_input_is_named(rng, what, match):
    prob = make_problem(rng, TIME_KERNELS["matern32"])
    Y, K_s, model, derivs = _bad(prob, *arrays(prob), what)
    with pytest.raises(ValueError, match=match):
        spacetime_lml(Y, K_s, **model, eval_gradient=True, **derivs)


def test_krige_and_sample_reject_bad_arguments(rng):
    prob = make_problem(rng, TIME_KERNELS["matern12"])
    K_s, model, _ = arrays(prob)
    cross = SPACE_KERNEL(prob["xs"][:2], prob["xs"])
    with pytest.raises(ValueError, match=r"K_star_s must have shape \(n_star, 4\)"):
        spacetime_krige(prob["Y"], K_s, cross[:, :3], np.ones(2), **model)
    with pytest.raises(ValueError, match=r"k_star must have shape \(2,\)"):
        spacetime_krige(prob["Y"], K_s, cross, np.ones(3), **model)
    singular = np.ones((4, 4))
    with pytest.raises(LinAlgError, match="K_s is not positive definite"):
        spacetime_krige(prob["Y"], singular, cross, np.ones(2), **model)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        spacetime_sample(prob["Y"], K_s, **model, n_samples=0)


def test_indefinite_space_gram_raises_linalg_error(rng):
    prob = make_problem(rng, TIME_KERNELS["matern12"], frac=0.0)
    K_s, model, _ = arrays(prob)
    with pytest.raises(LinAlgError, match="increase noise"):
        spacetime_lml(prob["Y"], -10 * K_s, **model)


def test_checkpointed_passes_equal_the_stored_ones(rng, monkeypatch):
    import kronecker_gp.linalg._spacetime as spacetime

    prob = make_problem(rng, TIME_KERNELS["sum"], n_t=9)
    K_s, model, derivs = arrays(prob)
    Y = prob["Y"]

    def run():
        return (
            spacetime_lml(Y, K_s, **model, eval_gradient=True, **derivs),
            spacetime_posterior(Y, K_s, **model),
            spacetime_sample(Y, K_s, **model, n_samples=2, random_state=1),
        )

    whole = run()
    # records of 2 steps at a time: 5 segments, 4 re-filtered from checkpoints
    N = 4 * model["P_inf"].shape[0]
    step_bytes = 8 * (N * N + N * 4 + 4 * 4 + 2 * N)
    monkeypatch.setattr(spacetime, "_RECORD_BYTES", 2 * step_bytes)
    assert len(spacetime._segments(spacetime._problem(Y, K_s, **model))) == 5
    split = run()
    for a, b in zip([*whole[0], *whole[1], whole[2]], [*split[0], *split[1], split[2]]):
        assert_allclose(a, b)
