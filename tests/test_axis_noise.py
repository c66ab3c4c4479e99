"""Noise varying along grid axes (``noise_axes``) against its dense twin.

The dense reference builds ``np.kron`` of the factor Grams plus the diagonal
``np.kron`` of the per-axis noise vectors and factors it by Cholesky, on the
observed cells.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP
from kronecker_gp.linalg._whitening import (
    balance_log_variances,
    observed_log_noise,
)
from kronecker_gp.testing import assert_allclose

#: (grid shape, noise axes)
CASES = [((5, 7), (0,)), ((5, 7), (1,)), ((5, 7), (0, 1)), ((3, 4, 5), (0, 2))]


def _kernels(n_axes):
    out = [ConstantKernel(1.5) * RBF(1.2), Matern(2.0, nu=1.5), RBF(0.8)]
    return out[:n_axes]


def _problem(rng, shape, noise_axes, missing):
    coords = [np.sort(rng.uniform(0, 5, n)) for n in shape]
    Y = rng.standard_normal(shape) + np.sin(coords[0]).reshape(
        -1, *[1] * (len(shape) - 1)
    )
    if missing:
        Y[rng.random(shape) < 0.25] = np.nan
        Y.reshape(shape[0], -1)[1, :3] = np.nan  # a short outage
    variances = [rng.uniform(0.1, 1.0, shape[d]) for d in noise_axes]
    return coords, Y, variances


def _full_noise(shape, noise_axes, variances):
    full = [np.ones(n) for n in shape]
    for d, v in zip(noise_axes, variances):
        full[d] = v
    out = full[0]
    for v in full[1:]:
        out = np.kron(out, v)
    return out, full


def _dense(coords, Y, noise_axes, variances, kernels):
    """Dense LML, gradient (kernel thetas, then log-variances), mean and cov."""
    shape = Y.shape
    grams = [k(c[:, None], eval_gradient=True) for k, c in zip(kernels, coords)]
    K = grams[0][0]
    for g, _ in grams[1:]:
        K = np.kron(K, g)
    d_k = []
    for d, (_, dg) in enumerate(grams):
        for p in range(dg.shape[2]):
            mats = [g for g, _ in grams]
            mats[d] = dg[:, :, p]
            out = mats[0]
            for m in mats[1:]:
                out = np.kron(out, m)
            d_k.append(out)
    noise, full = _full_noise(shape, noise_axes, variances)
    d_noise = []
    for d in noise_axes:
        for i in range(shape[d]):
            ind = [np.ones(n) for n in shape]
            ind[d] = np.eye(shape[d])[i]
            sel = ind[0]
            for v in ind[1:]:
                sel = np.kron(sel, v)
            d_noise.append(np.diag(noise * sel))
    obs = ~np.isnan(Y.reshape(-1))
    y = Y.reshape(-1)[obs]
    C = K[np.ix_(obs, obs)] + np.diag(noise[obs])
    L = np.linalg.cholesky(C)
    alpha = np.linalg.solve(C, y)
    lml = -0.5 * y @ alpha - np.log(np.diag(L)).sum() - 0.5 * y.size * np.log(2 * np.pi)
    W = np.outer(alpha, alpha) - np.linalg.inv(C)
    grad = [0.5 * np.sum(W * dc[np.ix_(obs, obs)]) for dc in d_k + d_noise]
    k_xo = K[:, obs]
    mean = k_xo @ alpha
    cov = K - k_xo @ np.linalg.solve(C, k_xo.T)
    return lml, np.array(grad), mean, cov


def _fit(coords, Y, noise_axes, variances, **kwargs):
    noise = variances[0] if len(noise_axes) == 1 else variances
    gp = KroneckerGP(
        _kernels(Y.ndim),
        noise=noise,
        noise_axes=noise_axes,
        optimizer=None,
        state_space=None,
        **kwargs,
    )
    return gp.fit_grid(coords, Y)


@pytest.mark.parametrize("solver", ["exact", "cg"])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize(("shape", "noise_axes"), CASES)
def test_lml_and_gradient_match_dense(shape, noise_axes, missing, solver, rng):
    coords, Y, variances = _problem(rng, shape, noise_axes, missing)
    gp = _fit(coords, Y, noise_axes, variances, solver=solver, cg_tol=1e-13)
    lml, grad, _, _ = _dense(coords, Y, noise_axes, variances, _kernels(len(shape)))
    assert gp.solver_info_.path.startswith("axis-noise")
    assert gp.solver_info_.lml_std_error == 0  # exact on every path here
    assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=1e-10)
    got, g = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    assert_allclose(got, lml, rtol=1e-10)
    assert g.shape == grad.shape
    assert_allclose(g, grad, rtol=1e-10, atol=1e-10 * np.abs(grad).max())


@pytest.mark.parametrize("missing", [False, True])
def test_gradient_matches_finite_differences(missing, rng):
    shape, noise_axes = (4, 6, 3), (0, 2)
    coords, Y, variances = _problem(rng, shape, noise_axes, missing)
    gp = _fit(coords, Y, noise_axes, variances)
    theta = gp.theta_
    _, g = gp.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-5
    fd = [
        (
            gp.log_marginal_likelihood(theta + h * e)
            - gp.log_marginal_likelihood(theta - h * e)
        )
        / (2 * h)
        for e in np.eye(theta.size)
    ]
    assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.abs(g).max())


@pytest.mark.parametrize("normalize_y", [False, True])
@pytest.mark.parametrize("missing", [False, True])
def test_posterior_matches_dense(missing, normalize_y, rng):
    shape, noise_axes = (5, 7), (1,)
    coords, Y, variances = _problem(rng, shape, noise_axes, missing)
    gp = _fit(coords, Y, noise_axes, variances, normalize_y=normalize_y)
    # the dense twin in data units: the fitted per-cell variances
    noise = gp.noise_variances_.reshape(-1)
    assert_allclose(noise, _full_noise(shape, noise_axes, gp.noise_per_axis_)[0])
    kernels = _kernels(2)
    if normalize_y:  # the kernels act on y / std: scale the amplitude back
        kernels[0] = ConstantKernel(1.5 * gp.y_train_std_**2) * RBF(1.2)
    mu = gp.y_train_mean_
    lml, _, mean, cov = _dense(coords, Y - mu, noise_axes, gp.noise_per_axis_, kernels)
    mean = mean + mu
    m, sd = gp.predict_grid(coords, return_std=True)
    assert_allclose(m.reshape(-1), mean, rtol=1e-9, atol=1e-11)
    assert_allclose(sd.reshape(-1), np.sqrt(np.diag(cov)), rtol=1e-8, atol=1e-10)
    X = np.column_stack([np.repeat(coords[0], 7), np.tile(coords[1], 5)])
    pts = [0, 3, 17, 34]
    m_pts, cov_pts = gp.predict(X[pts], return_cov=True)
    assert_allclose(m_pts, mean[pts], rtol=1e-9, atol=1e-11)
    assert_allclose(cov_pts, cov[np.ix_(pts, pts)], rtol=1e-8, atol=1e-10)
    # off the grid: the dense twin on a finer grid of the second axis
    t_new = np.linspace(0, 5, 4)
    m_new, sd_new = gp.predict(
        np.column_stack([np.full(4, coords[0][2]), t_new]), return_std=True
    )
    m_grid, sd_grid = gp.predict_grid([coords[0], t_new], return_std=True)
    assert_allclose(m_new, m_grid[2], rtol=1e-9, atol=1e-11)
    assert_allclose(sd_new, sd_grid[2], rtol=1e-8, atol=1e-10)
    if not normalize_y:
        alpha = gp.alpha_
        obs = ~np.isnan(Y.reshape(-1))
        assert np.all(np.abs(alpha[~obs]) <= 1e-12 * np.abs(alpha).max())
        assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=1e-10)


@pytest.mark.parametrize("missing", [False, True])
def test_sample_grid_moments(missing, rng):
    shape, noise_axes = (5, 7), (0,)
    coords, Y, variances = _problem(rng, shape, noise_axes, missing)
    gp = _fit(coords, Y, noise_axes, variances)
    _, _, mean, cov = _dense(coords, Y, noise_axes, variances, _kernels(2))
    n = 400
    draws = gp.sample_grid(coords, n_samples=n, random_state=3).reshape(-1, n)
    sd = np.sqrt(np.maximum(np.diag(cov), 0))
    assert np.all(np.abs(draws.mean(axis=1) - mean) <= 5 * sd / np.sqrt(n) + 1e-9)
    assert np.all(np.abs(draws.std(axis=1) - sd) <= 0.25 * sd + 1e-9)


def test_fit_learns_per_site_noise(rng):
    sites, days = np.linspace(0, 1, 12), np.arange(40.0)
    f = np.sin(6 * sites)[:, None] * np.cos(days / 6)[None, :]
    sd = np.where(np.arange(12) < 6, 0.05, 0.5)  # two kinds of instrument
    Y = f + sd[:, None] * rng.standard_normal(f.shape)
    kernels = [ConstantKernel() * RBF(0.3), RBF(5.0)]
    gp = KroneckerGP(kernels, noise=0.1, noise_axes=(0,), state_space=None)
    gp.fit_grid([sites, days], Y)
    iid = KroneckerGP(kernels, noise=0.1, state_space=None).fit_grid([sites, days], Y)
    learned = gp.noise_per_axis_[0]
    assert gp.solver_info_.path == "axis-noise"
    assert np.all(np.abs(np.log(learned / sd**2)) < np.log(2.0))  # within 2x
    assert gp.log_marginal_likelihood_value_ > iid.log_marginal_likelihood_value_ + 50
    assert gp.theta_.size == len(gp.kernel_.theta) + 12
    assert_allclose(np.exp(gp.theta_[-12:]), gp.noise_[0])
    assert_allclose(gp.noise_variances_, learned[:, None] * np.ones((12, 40)))


def test_several_axes_scale_sits_on_the_first(rng):
    # D_1 (x) D_2 = (c D_1) (x) (D_2 / c): the other axes have geometric mean 1
    shape, noise_axes = (5, 7), (0, 1)
    coords, Y, variances = _problem(rng, shape, noise_axes, False)
    gp = _fit(coords, Y, noise_axes, variances)
    lml = gp.log_marginal_likelihood_value_
    assert abs(np.mean(np.log(gp.noise_[1]))) < 1e-12
    assert_allclose(np.kron(*gp.noise_), np.kron(*variances))
    fitted = KroneckerGP(
        _kernels(2), noise=0.3, noise_axes=noise_axes, state_space=None
    ).fit_grid(coords, Y)
    assert abs(np.mean(np.log(fitted.noise_per_axis_[1]))) < 1e-12
    assert fitted.log_marginal_likelihood_value_ >= lml - 1e-6
    a, b = balance_log_variances([np.zeros(2), np.array([1.0, 3.0])])
    assert a.tolist() == [2.0, 2.0]
    assert b.tolist() == [-1.0, 1.0]


def test_observed_log_noise_matches_dense(rng):
    v = [rng.uniform(0.1, 2, 3), rng.uniform(0.1, 2, 4)]
    full = np.log(np.kron(*v))
    missing = np.array([0, 5, 11])
    assert_allclose(observed_log_noise(v, None), full.sum())
    assert_allclose(observed_log_noise(v, missing), np.delete(full, missing).sum())


def test_fit_on_rows_aligns_noise_with_kept_slices(rng):
    # fit(X, y): an axis slice without any observation is dropped, and the
    # noise array (one entry per unique value of that axis) follows it
    s, t = np.arange(4.0), np.arange(6.0)
    X = np.column_stack([np.repeat(s, 6), np.tile(t, 4)])
    y = np.sin(X[:, 0]) + np.cos(X[:, 1]) + 0.1 * rng.standard_normal(24)
    y[X[:, 0] == 2.0] = np.nan  # site 2 never observed
    noise = np.array([0.1, 0.2, 0.3, 0.4])
    gp = KroneckerGP(
        [RBF(1.0), RBF(2.0)], noise=noise, noise_axes=[0], optimizer=None
    ).fit(X, y)
    assert gp.grid_.shape == (3, 6)
    assert_allclose(gp.noise_per_axis_[0], [0.1, 0.2, 0.4])


def test_never_forms_dense_kronecker(rng, monkeypatch):
    coords, Y, variances = _problem(rng, (6, 8), (0,), True)

    def boom(*args, **kwargs):
        raise AssertionError("np.kron called on the Kronecker path")

    monkeypatch.setattr(np, "kron", boom)
    gp = KroneckerGP(
        _kernels(2), noise=variances[0], noise_axes=(0,), state_space=None
    ).fit_grid(coords, Y)
    gp.predict_grid(coords, return_std=True)
    gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)


@pytest.mark.parametrize(
    ("noise_axes", "noise", "match"),
    [
        ((2,), 0.1, r"noise_axes must be .* in \[0, 2\)"),
        ((0, 0), 0.1, "noise_axes must be .* distinct"),
        ((), 0.1, "noise_axes must be None or a non-empty"),
        (("a",), 0.1, "noise_axes must be"),
        ((0,), np.ones(4), r"noise for axis 0 must have that axis' length 5"),
        ((0,), np.r_[1.0, 1.0, 0.0, 1.0, 1.0], "noise must be positive"),
        ((0,), -0.1, "noise must be positive"),
        ((0, 1), [np.ones(5)], "one array per axis"),
        ((0, 1), [np.ones(5), np.ones(6)], "noise for axis 1 must have"),
    ],
)
def test_bad_input_names_the_argument(noise_axes, noise, match, rng):
    coords, Y, _ = _problem(rng, (5, 7), (0,), False)
    gp = KroneckerGP(_kernels(2), noise=noise, noise_axes=noise_axes)
    with pytest.raises(ValueError, match=match):
        gp.fit_grid(coords, Y)


def test_separable_cell_noise_takes_the_exact_route(rng):
    # per-cell noise that is an outer product of per-axis vectors: the exact
    # whitened route instead of CG with an estimated LML; one learned scale
    shape = (5, 7)
    coords, Y, _ = _problem(rng, shape, (0,), False)
    v_s, v_t = rng.uniform(0.1, 1.0, 5), rng.uniform(0.5, 2.0, 7)
    cells = np.outer(v_s, v_t)
    gp = KroneckerGP(
        _kernels(2), noise=cells, optimizer=None, state_space=None
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path == "cell-noise-kronecker"
    assert gp.solver_info_.lml_std_error == 0
    assert gp.noise_ == 1.0
    assert_allclose(gp.noise_variances_, cells)
    scale = 1.7
    theta = np.append(gp.kernel_.theta, np.log(scale))
    lml, grad, _, _ = _dense(coords, Y, (0, 1), [scale * v_s, v_t], _kernels(2))
    n_k = len(gp.kernel_.theta)
    grad = np.append(grad[:n_k], grad[n_k : n_k + 5].sum())  # d/dlog(scale)
    got, g = gp.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(got, lml, rtol=1e-10)
    assert_allclose(g, grad, rtol=1e-10, atol=1e-10 * np.abs(grad).max())
    # predictions equal the dense posterior at noise_ = 1
    _, _, mean, cov = _dense(coords, Y, (0, 1), [v_s, v_t], _kernels(2))
    m, sd = gp.predict_grid(coords, return_std=True)
    assert_allclose(m.reshape(-1), mean, rtol=1e-9, atol=1e-11)
    assert_allclose(sd.reshape(-1), np.sqrt(np.diag(cov)), rtol=1e-8, atol=1e-10)
    # a perturbed cell breaks the product: another route (on a grid this
    # small the cost model takes the exact dense one over CG with estimates)
    cells[2, 3] *= 1.001
    gp = KroneckerGP(
        _kernels(2), noise=cells, optimizer=None, state_space=None
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path in ("dense", "cell-noise-cg")


def test_estimated_path_within_its_error(rng, monkeypatch):
    # missing cells beyond the exact budgets: CG, SLQ and Hutchinson on the
    # whitened problem; the noise gradient's trace is estimated like the kernel's
    from kronecker_gp import _budgets

    monkeypatch.setattr(_budgets, "EXACT_FLOPS_BUDGET", 0.0)
    monkeypatch.setattr(_budgets, "EXACT_PREFERENCE", 0.0)
    shape, noise_axes = (8, 10), (0,)
    coords, Y, variances = _problem(rng, shape, noise_axes, True)
    gp = _fit(coords, Y, noise_axes, variances, solver="cg", n_probes=512)
    assert gp.solver_info_.path == "axis-noise-schur-cg"
    lml, grad, mean, _ = _dense(coords, Y, noise_axes, variances, _kernels(2))
    got = gp.log_marginal_likelihood_value_  # estimated on first access
    assert gp.solver_info_.extra["logdet"] == "slq"
    err = gp.solver_info_.lml_std_error
    assert 0 < err
    assert abs(got - lml) <= 4 * err + 1e-8 * abs(lml)
    _, g = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    assert np.abs(g - grad).max() < 0.1 * np.abs(grad).max()
    m = gp.predict_grid(coords)
    assert_allclose(m.reshape(-1), mean, rtol=1e-7, atol=1e-9)


def test_fixed_noise_keeps_the_start(rng):
    shape, noise_axes = (5, 7), (1,)
    coords, Y, variances = _problem(rng, shape, noise_axes, False)
    gp = KroneckerGP(
        _kernels(2),
        noise=variances[0],
        noise_axes=noise_axes,
        noise_bounds="fixed",
        state_space=None,
    ).fit_grid(coords, Y)
    assert gp.theta_.size == len(gp.kernel_.theta)
    assert_allclose(gp.noise_per_axis_[0], variances[0])


def test_refit_without_axis_noise_drops_its_attributes_and_names_theta():
    x, t = np.linspace(0, 1, 5), np.arange(6.0)
    Y = np.random.default_rng(0).standard_normal((5, 6))
    gp = KroneckerGP(_kernels(2), noise=0.1, noise_axes=[0], optimizer=None)
    gp.fit_grid([x, t], Y)
    assert gp.noise_per_axis_[0].shape == (5,)
    with pytest.raises(ValueError, match="5 per-axis noise log-variances"):
        gp.log_marginal_likelihood(np.zeros(2))
    gp.set_params(noise_axes=None).fit_grid([x, t], Y)
    assert not hasattr(gp, "noise_per_axis_")
    assert not hasattr(gp, "noise_variances_")
