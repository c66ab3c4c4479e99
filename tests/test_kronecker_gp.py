"""KroneckerGP against its dense twin, sklearn's GaussianProcessRegressor."""

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import (
    RBF,
    ConstantKernel,
    ExpSineSquared,
    Matern,
    RationalQuadratic,
    WhiteKernel,
)

from kronecker_gp import KroneckerGP
from kronecker_gp._grid import Grid, check_coords
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.testing import EIG_RTOL, assert_allclose

NOISE = 0.05


def _case_2d(rng):
    sites = rng.uniform(0, 3, size=(7, 2))
    days = np.sort(rng.uniform(0, 20, size=9))
    kernels = [ConstantKernel(1.5) * RBF([1.0, 2.0]), Matern(4.0, nu=1.5)]
    return [sites, days], kernels


def _case_3d(rng):
    coords = [np.arange(4.0), np.linspace(0, 1, 5), np.sort(rng.uniform(0, 5, 3))]
    kernels = [
        ConstantKernel(0.7) * Matern(2.0, nu=2.5),
        RationalQuadratic(0.5, 1.5),
        ExpSineSquared(1.0, 3.0) + ConstantKernel(0.1),
    ]
    return coords, kernels


def _case_1d(rng):
    return [np.sort(rng.uniform(0, 5, size=15))], [ConstantKernel(2.0) * RBF(0.7)]


CASES = {"2d": _case_2d, "3d": _case_3d, "1d": _case_1d}


def _data(rng, coords):
    shape = tuple(len(c) for c in coords)
    return rng.standard_normal(shape) + 0.5


def _dense_twin(coords, kernels, noise=NOISE, **kw):
    grid = Grid(check_coords(coords))
    kk = KroneckerKernel(
        [k.clone_with_theta(k.theta) for k in kernels], axes=grid.block_axes()
    )
    return grid.to_rows(), kk, GaussianProcessRegressor(kk, alpha=noise, **kw)


@pytest.fixture(params=sorted(CASES))
def case(request, rng):
    coords, kernels = CASES[request.param](rng)
    return coords, kernels, _data(rng, coords)


def test_lml_and_predictions_match_sklearn(case, rng):
    coords, kernels, Y = case
    gp = KroneckerGP(kernels, noise=NOISE, optimizer=None).fit_grid(coords, Y)
    X, _, ref = _dense_twin(coords, kernels, optimizer=None)
    ref.fit(X, Y.reshape(-1))
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )
    assert_allclose(gp.alpha_, ref.alpha_, rtol=EIG_RTOL, atol=1e-9)
    # on the grid and off the grid
    X_off = X[rng.permutation(len(X))[:6]] + rng.normal(0, 0.3, size=(6, X.shape[1]))
    for Xq in (X, X_off):
        m, s = gp.predict(Xq, return_std=True)
        m_ref, s_ref = ref.predict(Xq, return_std=True)
        assert_allclose(m, m_ref, rtol=EIG_RTOL, atol=1e-9)
        assert_allclose(s, s_ref, rtol=EIG_RTOL, atol=1e-7)
        _, c = gp.predict(Xq, return_cov=True)
        _, c_ref = ref.predict(Xq, return_cov=True)
        assert_allclose(c, c_ref, rtol=EIG_RTOL, atol=1e-9)
    mg, sg = gp.predict_grid(coords, return_std=True)
    m_ref, s_ref = ref.predict(X, return_std=True)
    assert mg.shape == Y.shape
    assert_allclose(mg.reshape(-1), m_ref, rtol=EIG_RTOL, atol=1e-9)
    assert_allclose(sg.reshape(-1), s_ref, rtol=EIG_RTOL, atol=1e-7)


def test_lml_gradient_matches_sklearn_and_finite_differences(case, rng):
    coords, kernels, Y = case
    gp = KroneckerGP(kernels, noise=NOISE, optimizer=None).fit_grid(coords, Y)
    X, kk, _ = _dense_twin(coords, kernels)
    ref = GaussianProcessRegressor(kk + WhiteKernel(NOISE), alpha=0.0, optimizer=None)
    ref.fit(X, Y.reshape(-1))
    theta = gp.theta_ + rng.normal(0, 0.2, size=gp.theta_.shape)
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    lml_ref, grad_ref = ref.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, lml_ref, rtol=EIG_RTOL)
    assert_allclose(grad, grad_ref, rtol=EIG_RTOL, atol=1e-8 * np.abs(grad_ref).max())
    eps = 1e-6
    fd = np.array(
        [
            (
                gp.log_marginal_likelihood(theta + eps * e)
                - gp.log_marginal_likelihood(theta - eps * e)
            )
            / (2 * eps)
            for e in np.eye(theta.size)
        ]
    )
    assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)
    # evaluating theta must not change the fitted state
    assert_allclose(
        gp.log_marginal_likelihood(),
        ref.log_marginal_likelihood(gp.theta_),
        rtol=EIG_RTOL,
    )


def test_optimised_hyperparameters_match_sklearn(rng):
    coords, kernels = _case_2d(rng)
    s, t = np.meshgrid(coords[0][:, 0], coords[1], indexing="ij")
    Y = np.sin(s) * np.cos(t / 3) + 0.1 * rng.standard_normal(s.shape)
    gp = KroneckerGP(kernels, noise=0.1).fit_grid(coords, Y)
    X, kk, _ = _dense_twin(coords, kernels)
    ref = GaussianProcessRegressor(kk + WhiteKernel(0.1, (1e-6, 1e5)), alpha=0.0)
    ref.fit(X, Y.reshape(-1))
    assert_allclose(
        gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_, rtol=1e-6
    )
    assert_allclose(gp.theta_, ref.kernel_.theta, rtol=0, atol=2e-3)


def test_normalize_y_matches_sklearn(rng):
    coords, kernels = _case_2d(rng)
    Y = 50 + 10 * _data(rng, coords)
    gp = KroneckerGP(kernels, noise=NOISE, optimizer=None, normalize_y=True)
    gp.fit_grid(coords, Y)
    X, _, ref = _dense_twin(coords, kernels, optimizer=None, normalize_y=True)
    ref.fit(X, Y.reshape(-1))
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )
    m, s = gp.predict(X[:5] + 0.1, return_std=True)
    m_ref, s_ref = ref.predict(X[:5] + 0.1, return_std=True)
    assert_allclose(m, m_ref, rtol=EIG_RTOL)
    assert_allclose(s, s_ref, rtol=EIG_RTOL)


def test_fit_on_shuffled_rows_equals_fit_grid(rng):
    coords, kernels = _case_2d(rng)
    Y = _data(rng, coords)
    X = Grid(check_coords(coords)).to_rows()
    perm = rng.permutation(len(X))
    a = KroneckerGP(kernels, axes=[[0, 1], [2]], noise=NOISE, optimizer=None)
    a.fit(X[perm], Y.reshape(-1)[perm])
    b = KroneckerGP(kernels, noise=NOISE, optimizer=None).fit_grid(coords, Y)
    assert_allclose(a.log_marginal_likelihood_value_, b.log_marginal_likelihood_value_)
    Xq = X[:4] + 0.05
    want = b.predict(Xq)
    scale = np.abs(want).max()  # means cross zero: scaled absolute slack
    assert_allclose(a.predict(Xq), want, rtol=EIG_RTOL, atol=EIG_RTOL * scale)


def test_default_estimator_is_an_ordinary_exact_gp(rng):
    X = rng.uniform(0, 5, size=(30, 3))
    y = np.sin(X).sum(axis=1)
    gp = KroneckerGP(noise=1e-2, optimizer=None).fit(X, y)
    ref = GaussianProcessRegressor(
        ConstantKernel(1.0) * RBF(1.0), alpha=1e-2, optimizer=None
    ).fit(X, y)
    want = ref.predict(X[:5])
    scale = np.abs(want).max()  # means cross zero: scaled absolute slack
    assert_allclose(gp.predict(X[:5]), want, rtol=EIG_RTOL, atol=EIG_RTOL * scale)


def test_fixed_noise_is_not_in_theta(rng):
    coords, kernels = _case_2d(rng)
    Y = _data(rng, coords)
    gp = KroneckerGP(kernels, noise=0.2, noise_bounds="fixed").fit_grid(coords, Y)
    assert gp.noise_ == 0.2
    assert gp.theta_.shape == gp.kernel_.theta.shape
    assert gp.theta_.shape[0] == len(gp.kernel_.theta)


def test_restarts_are_reproducible_and_no_worse(rng):
    coords, kernels = _case_2d(rng)
    Y = _data(rng, coords)
    base = KroneckerGP(kernels, noise=0.1).fit_grid(coords, Y)
    a = KroneckerGP(kernels, noise=0.1, n_restarts_optimizer=2, random_state=3)
    b = KroneckerGP(kernels, noise=0.1, n_restarts_optimizer=2, random_state=3)
    a.fit_grid(coords, Y)
    b.fit_grid(coords, Y)
    assert_allclose(a.theta_, b.theta_)
    assert (
        a.log_marginal_likelihood_value_ >= base.log_marginal_likelihood_value_ - 1e-8
    )


def test_verbose_prints_progress(rng, capsys):
    coords, kernels = _case_1d(rng)
    KroneckerGP(kernels, noise=0.1, verbose=1).fit_grid(coords, _data(rng, coords))
    assert "LML" in capsys.readouterr().out


def test_posterior_grid_samples_have_the_posterior_moments(rng):
    coords = [np.linspace(0, 1, 3), np.linspace(0, 2, 4)]
    kernels = [ConstantKernel(1.0) * RBF(0.5), Matern(1.0, nu=1.5)]
    Y = _data(rng, coords)
    gp = KroneckerGP(kernels, noise=0.1, optimizer=None).fit_grid(coords, Y)
    test = [np.array([0.2, 0.9]), np.array([0.0, 1.0, 3.0])]  # partly off-grid
    n = 20000
    draws = gp.sample_grid(test, n_samples=n, random_state=5).reshape(-1, n)
    X = Grid(check_coords(test)).to_rows()
    mean, cov = gp.predict(X, return_cov=True)
    sd = np.sqrt(np.diag(cov))
    # Monte Carlo error: mean within 5 standard errors, covariance within 0.05 sd^2
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * sd / np.sqrt(n))
    assert np.abs(np.cov(draws) - cov).max() < 0.05 * sd.max() ** 2


def test_prior_samples_before_fit(rng):
    coords = [np.linspace(0, 1, 3), np.linspace(0, 2, 4)]
    kernels = [RBF(0.5), Matern(1.0, nu=0.5)]
    gp = KroneckerGP(kernels)
    n = 20000
    draws = gp.sample_grid(coords, n_samples=n, random_state=1)
    assert draws.shape == (3, 4, n)
    k = np.kron(kernels[0](coords[0][:, None]), kernels[1](coords[1][:, None]))
    assert np.abs(np.cov(draws.reshape(-1, n)) - k).max() < 0.05
    y = gp.sample_y(Grid(check_coords(coords)).to_rows(), n_samples=2)
    assert y.shape == (12, 2)


def test_sample_y_after_fit_is_deterministic(rng):
    coords, kernels = _case_2d(rng)
    gp = KroneckerGP(kernels, noise=NOISE, optimizer=None).fit_grid(
        coords, _data(rng, coords)
    )
    X = rng.uniform(0, 3, size=(4, 3))
    assert_allclose(
        gp.sample_y(X, 3, random_state=0), gp.sample_y(X, 3, random_state=0)
    )


def test_never_forms_n_by_n(monkeypatch, rng):
    import tracemalloc

    coords = [rng.uniform(0, 5, size=(120, 2)), np.arange(150.0)]
    Y = rng.standard_normal((120, 150))
    kernels = [ConstantKernel(1.0) * RBF(1.0), Matern(10.0, nu=1.5)]

    def no_kron(*args, **kwargs):
        raise AssertionError("np.kron called on the Kronecker path")

    monkeypatch.setattr(np, "kron", no_kron)
    n_cells = Y.size
    tracemalloc.start()
    gp = KroneckerGP(kernels, noise=0.1, optimizer=None).fit_grid(coords, Y)
    gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    gp.predict_grid(coords, return_std=True)
    gp.predict(np.c_[coords[0][:50], np.arange(50.0)], return_std=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40 * 8 * n_cells  # an N x N array would need 8 N^2 bytes


# ------------------------------------------------------------------ bad input
def _fit_grid(coords, Y, **kw):
    kernels = [RBF(1.0) for _ in coords]
    return KroneckerGP(kernels, optimizer=None, **kw).fit_grid(coords, Y)


@pytest.mark.parametrize(
    ("coords", "Y", "kw", "match"),
    [
        ([np.arange(3.0), np.arange(4.0)], np.ones((4, 3)), {}, "grid's shape"),
        (
            [np.arange(3.0), np.arange(4.0)],
            np.full((3, 4), np.nan),
            {},
            "no observed cell",
        ),
        (
            [np.array([0.0, np.nan, 2.0]), np.arange(4.0)],
            np.ones((3, 4)),
            {},
            r"coords\[0\] contains NaN",
        ),
        (
            [np.array([0.0, 1.0, 1.0]), np.arange(4.0)],
            np.ones((3, 4)),
            {},
            r"coords\[0\] has duplicate",
        ),
        (
            [np.arange(3.0), np.arange(4.0)],
            np.ones((3, 4)),
            {"noise": -0.1},
            "noise must be a positive",
        ),
        (
            [np.arange(3.0), np.arange(4.0)],
            np.ones((3, 4)),
            {"noise_bounds": (1.0, 0.1)},
            "noise_bounds",
        ),
        (
            [np.arange(3.0), np.arange(4.0)],
            np.ones((3, 4)),
            {"noise_bounds": "free"},
            "noise_bounds",
        ),
        (
            [np.arange(3.0), np.arange(4.0)],
            np.ones((3, 4)),
            {"axes": [[1], [0]]},
            "does not match",
        ),
    ],
)
def test_fit_grid_bad_input(coords, Y, kw, match):
    with pytest.raises(ValueError, match=match):
        _fit_grid(coords, Y, **kw)


def test_fit_grid_rejects_non_list_coords():
    with pytest.raises(TypeError, match="coords must be a list"):
        _fit_grid(np.arange(3.0), np.ones(3))


def test_kernel_count_must_match_axes():
    with pytest.raises(ValueError, match="kernels has 1 entries but the grid has 2"):
        KroneckerGP([RBF()]).fit_grid([np.arange(3.0), np.arange(2.0)], np.ones((3, 2)))
    with pytest.raises(TypeError, match="kernels must be a list"):
        KroneckerGP(RBF()).fit_grid([np.arange(3.0)], np.ones(3))


def test_duplicate_and_misshapen_rows_rejected(rng):
    X = Grid(check_coords([np.arange(4.0), np.arange(5.0)])).to_rows()
    y = rng.standard_normal(len(X))
    gp = KroneckerGP([RBF(), RBF()], optimizer=None)
    with pytest.raises(ValueError, match="more than once"):
        gp.fit(np.vstack([X, X[:1]]), np.append(y, 0.0))
    with pytest.raises(ValueError, match="3 columns"):
        KroneckerGP([RBF(), RBF()]).fit(np.c_[X, X[:, 0]], y)


def test_wrong_theta_length(rng):
    gp = _fit_grid([np.arange(3.0), np.arange(4.0)], rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match="theta must have 3 entries"):
        gp.log_marginal_likelihood(np.zeros(2))


def test_predict_grid_bad_coords(rng):
    gp = _fit_grid([np.arange(3.0), np.arange(4.0)], rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match="coords must give 2 axes"):
        gp.predict_grid([np.arange(3.0)])
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        gp.sample_grid([np.arange(3.0), np.arange(4.0)], n_samples=0)


def test_non_psd_factor_raises(rng):
    from sklearn.gaussian_process.kernels import DotProduct

    class Negative(DotProduct):
        def __call__(self, X, Y=None, eval_gradient=False):
            out = super().__call__(X, Y, eval_gradient)
            return (-out[0], -out[1]) if eval_gradient else -out

    with pytest.raises(ValueError, match="not positive semi-definite"):
        KroneckerGP([Negative(1.0), RBF()], optimizer=None).fit_grid(
            [np.arange(1.0, 4.0), np.arange(4.0)], np.ones((3, 4))
        )


def test_optimiser_warning_reports_gradients_on_line_search_failure():
    """An objective whose gradient is not its derivative makes L-BFGS-B fail."""
    from sklearn.exceptions import ConvergenceWarning

    from kronecker_gp.models._optimize import maximise_lml

    def lml_at(theta, eval_gradient):
        # value -(theta^2) with a gradient pointing the wrong way
        return -float(theta @ theta), 2.0 * theta

    bounds = np.array([[-5.0, 5.0], [-5.0, 5.0]])
    with pytest.warns(
        ConvergenceWarning, match=r"largest free gradient entry is .* at"
    ):
        maximise_lml(
            lml_at,
            np.array([1.0, -2.0]),
            bounds,
            optimizer="fmin_l_bfgs_b",
            n_restarts=0,
            random_state=0,
        )
    assert maximise_lml(
        lml_at,
        np.array([1.0, 2.0]),
        bounds,
        optimizer=None,
        n_restarts=0,
        random_state=0,
    ).tolist() == [1.0, 2.0]
