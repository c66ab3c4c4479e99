"""Per-cell noise with missing cells: against sklearn's GP on the observed rows.

The reference is ``GaussianProcessRegressor`` with the same product kernel,
fitted on the observed rows only, with ``alpha`` the per-cell noise variances
of those rows.
"""

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP, solvers
from kronecker_gp._grid import Grid, check_coords
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.solvers import _cell_noise_missing
from kronecker_gp.solvers._cell_noise import cell_noise_variance_correction
from kronecker_gp.solvers._cell_noise_missing import observed_variance_correction_mc
from kronecker_gp.solvers._eigen_missing import variance_correction_exact
from kronecker_gp.testing import EIG_RTOL, assert_allclose


@pytest.fixture(autouse=True)
def _structured_cg_route(monkeypatch):
    # these tests exercise the CG route for per-cell noise on its small grids;
    # keep the cost model from the exact dense and spatio-temporal routes
    # (tests/test_solvers.py covers those, and the switch to them)
    for name in ("_spacetime_candidate", "_dense_candidate"):
        monkeypatch.setattr(solvers, name, lambda *args, **kwargs: None)


#: The outer CG runs to cg_tol=1e-12; the observed-cell system's condition
#: number is at most the noise spread (20 here).
CG_TOL = 1e-12
CG_RTOL = 1e-8
KINDS = ["random-0.1", "random-0.5", "block-outage", "missing-slice"]


def _kernels():
    return [ConstantKernel(1.0) * RBF(1.5), Matern(5.0, nu=1.5)]


def _problem(rng, ns=10, nt=12):
    coords = [rng.uniform(0, 5, size=(ns, 2)), np.arange(nt, dtype=float)]
    v = rng.uniform(0.01, 0.2, size=(ns, nt))  # heteroscedastic, spread 20
    f = KroneckerGP(_kernels()).sample_grid(coords, random_state=4)[..., 0]
    return coords, f + np.sqrt(v) * rng.standard_normal(f.shape), v


def _mask(kind, shape, rng):
    mask = np.zeros(shape, dtype=bool)
    if kind.startswith("random"):
        mask = rng.random(shape) < float(kind.split("-")[1])
    elif kind == "block-outage":
        mask[2, 3:10] = True
        mask[6:9, :5] = True
    elif kind == "missing-slice":  # a whole time slice (dropped) plus a few cells
        mask[:, 4] = True
        mask[3, 7:9] = True
    return mask


def _dense(coords, Y, v, mask, scale=1.0, **kw):
    X = Grid(check_coords(coords)).to_rows()
    obs = ~mask.reshape(-1)
    kk = KroneckerKernel(_kernels(), axes=[[0, 1], [2]])
    alpha = scale * v.reshape(-1)[obs]
    gpr = GaussianProcessRegressor(kk, alpha=alpha, optimizer=None, **kw)
    return X, gpr.fit(X[obs], Y.reshape(-1)[obs])


def _fit(coords, Y, v, mask, **kw):
    kw = {"optimizer": None, "random_state": 0, **kw}
    gp = KroneckerGP(_kernels(), noise=v, **kw)
    return gp.fit_grid(coords, np.where(mask, np.nan, Y))


def _close(a, ref):
    assert_allclose(a, ref, rtol=CG_RTOL, atol=CG_RTOL * np.abs(ref).max())


@pytest.mark.parametrize("solver", ["exact", "cg"])
@pytest.mark.parametrize("kind", KINDS)
def test_posterior_matches_dense(kind, solver, rng):
    coords, Y, v = _problem(rng)
    mask = _mask(kind, Y.shape, rng)
    # values at missing cells are ignored: NaN and garbage alike
    v_in = np.where(mask, np.nan, v)
    v_in[np.nonzero(mask)[0][:3], np.nonzero(mask)[1][:3]] = -7.0
    gp = _fit(coords, Y, v_in, mask, noise_bounds="fixed", solver=solver, cg_tol=CG_TOL)
    X, ref = _dense(coords, Y, v, mask)
    Xq = np.vstack([X[::5], X[:4] + 0.2])
    m, s = gp.predict(Xq, return_std=True)
    m_ref, s_ref = ref.predict(Xq, return_std=True)
    _close(m, m_ref)
    _close(s, s_ref)
    mg, sg = gp.predict_grid(coords, return_std=True)
    mg_ref, sg_ref = ref.predict(X, return_std=True)
    _close(mg.reshape(-1), mg_ref)
    _close(sg.reshape(-1), sg_ref)
    _, c = gp.predict(Xq[:5], return_cov=True)
    _, c_ref = ref.predict(Xq[:5], return_cov=True)
    _close(c, c_ref)
    assert gp.solver_info_.path == f"cell-noise-schur-{solver}"
    assert gp.solver_info_.residual <= 10 * CG_TOL
    dropped = 1 if kind == "missing-slice" else 0
    assert gp.grid_.shape == (Y.shape[0], Y.shape[1] - dropped)
    assert np.isnan(gp.noise_variances_).sum() == mask.sum() - dropped * Y.shape[0]


def test_normalize_y_matches_dense(rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.5", Y.shape, rng)
    gp = _fit(coords, Y, v, mask, noise_bounds="fixed", normalize_y=True)
    # per-cell variances are in data units; sklearn's alpha in normalised units
    X, ref = _dense(
        coords, Y, v, mask, scale=1.0 / Y[~mask].std() ** 2, normalize_y=True
    )
    m, s = gp.predict(X[::3], return_std=True)
    m_ref, s_ref = ref.predict(X[::3], return_std=True)
    _close(m, m_ref)
    _close(s, s_ref)


def test_fit_rows_with_partial_rows(rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.1", Y.shape, rng)
    X = Grid(check_coords(coords)).to_rows()
    keep = np.flatnonzero(~mask.reshape(-1))
    perm = rng.permutation(keep)
    gp = KroneckerGP(
        _kernels(),
        axes=[[0, 1], [2]],
        noise=v.reshape(-1)[perm],
        noise_bounds="fixed",
        optimizer=None,
        cg_tol=CG_TOL,
    )
    gp.fit(X[perm], Y.reshape(-1)[perm])
    _, ref = _dense(coords, Y, v, mask)
    _close(gp.predict(X[:6] + 0.1), ref.predict(X[:6] + 0.1))


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_lml_within_stated_error(solver, rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.5", Y.shape, rng)
    _, ref = _dense(coords, Y, v, mask)
    exact = ref.log_marginal_likelihood_value_
    est, err = [], []
    for seed in range(6):
        gp = _fit(coords, Y, v, mask, noise_bounds="fixed", random_state=seed)
        est.append(gp.log_marginal_likelihood_value_)
        err.append(gp.solver_info_.lml_std_error)
    est, err = np.array(est), np.array(err)
    assert np.all(err > 0)
    assert np.all(np.abs(est - exact) <= 4 * err)
    # the stated error matches the spread over seeds (up to sampling noise)
    assert 0.3 < est.std(ddof=1) / err.mean() < 3.0
    assert abs(est.mean() - exact) <= 4 * err.mean() / np.sqrt(est.size)


def _dense_lml(coords, Y, v, mask, theta):
    """Exact LML at ``theta`` = (kernel theta, log noise scale)."""
    _, ref = _dense(coords, Y, v, mask, scale=np.exp(theta[-1]))
    return ref.log_marginal_likelihood(theta[:-1])


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_gradient_matches_finite_differences(solver, rng):
    coords, Y, v = _problem(rng)
    mask = _mask("block-outage", Y.shape, rng)
    theta = np.array([0.2, 0.1, 1.4, np.log(1.5)])
    grads = []
    for seed in range(8):
        gp = _fit(coords, Y, v, mask, random_state=seed, solver=solver)
        grads.append(gp.log_marginal_likelihood(theta, eval_gradient=True)[1])
    grads = np.array(grads)
    eps = 1e-5
    fd = np.array(
        [
            (
                _dense_lml(coords, Y, v, mask, theta + eps * e)
                - _dense_lml(coords, Y, v, mask, theta - eps * e)
            )
            / (2 * eps)
            for e in np.eye(theta.size)
        ]
    )
    # unbiased: the mean over seeds is within 4 standard errors of the truth
    se = grads.std(axis=0, ddof=1) / np.sqrt(len(grads))
    assert np.all(np.abs(grads.mean(axis=0) - fd) <= 4 * se + 1e-8 * np.abs(fd))
    # and each estimate is useful: within 20 % of the gradient's scale
    assert np.abs(grads - fd).max() <= 0.2 * np.abs(fd).max()


def test_optimisation_reaches_dense_optimum(rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.1", Y.shape, rng)
    gp = KroneckerGP(_kernels(), noise=np.where(mask, np.nan, v), random_state=0)
    gp.set_params(noise_bounds="fixed")
    gp.fit_grid(coords, np.where(mask, np.nan, Y))
    X, ref = _dense(coords, Y, v, mask)
    ref.set_params(optimizer="fmin_l_bfgs_b").fit(X[~mask.reshape(-1)], Y[~mask])
    best = ref.log_marginal_likelihood_value_
    assert ref.log_marginal_likelihood(gp.theta_) >= best - 0.05
    assert np.abs(gp.theta_ - ref.kernel_.theta).max() < 0.2


def test_learned_scale_with_missing_cells(rng):
    coords, Y, v = _problem(rng, ns=15, nt=20)
    mask = _mask("random-0.1", Y.shape, rng)
    gp = _fit(coords, Y, v / 4.0, mask, optimizer="fmin_l_bfgs_b")
    assert 2.0 < gp.noise_ < 8.0  # the given variances were 4x too small


def test_posterior_samples(rng):
    coords, Y, v = _problem(rng, ns=4, nt=5)
    mask = _mask("random-0.1", Y.shape, rng)
    mask[1, 2] = True
    gp = _fit(coords, Y, np.where(mask, np.nan, v), mask, noise_bounds="fixed")
    n = 20000
    draws = gp.sample_grid(coords, n_samples=n, random_state=3).reshape(-1, n)
    X = Grid(check_coords(coords)).to_rows()
    mean, cov = gp.predict(X, return_cov=True)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * sd / np.sqrt(n) + 1e-12)
    assert np.abs(np.cov(draws) - cov).max() < 0.05 * sd.max() ** 2
    y_draws = gp.sample_y(X[:3], n_samples=4, random_state=0)
    assert y_draws.shape == (3, 4)
    assert np.all(np.isfinite(y_draws))


def test_never_forms_n_by_n(monkeypatch, rng):
    import tracemalloc

    coords = [rng.uniform(0, 5, size=(60, 2)), np.arange(80.0)]
    Y = rng.standard_normal((60, 80))
    v = rng.uniform(0.05, 0.5, size=Y.shape)
    mask = rng.random(Y.shape) < 0.3

    def no_kron(*args, **kwargs):
        raise AssertionError("np.kron called on the Kronecker path")

    monkeypatch.setattr(np, "kron", no_kron)
    tracemalloc.start()
    gp = _fit(coords, Y, v, mask, solver="cg", n_probes=4)
    gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    gp.predict(np.c_[coords[0][:20], np.arange(20.0)], return_std=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.25 * 8 * Y.size**2  # an N x N array would need 8 N^2 bytes


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.nan, "positive and finite on every observed cell.*1 NaN"),
        (-0.1, "positive and finite on every observed cell; got min -0.1"),
        (0.0, "positive and finite on every observed cell; got min 0.0"),
    ],
)
def test_bad_noise_on_observed_cell(bad, match, rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.1", Y.shape, rng)
    obs = np.argwhere(~mask)[0]
    v = v.copy()
    v[tuple(obs)] = bad
    with pytest.raises(ValueError, match=match):
        _fit(coords, Y, v, mask)


def test_bad_noise_shape_and_infinite(rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.1", Y.shape, rng)
    with pytest.raises(ValueError, match="noise given per cell must have Y's shape"):
        _fit(coords, Y, v[:, :-1], mask)
    v_inf = v.copy()
    v_inf[mask] = np.inf  # NaN or a finite value marks an unused entry, inf does not
    with pytest.raises(ValueError, match="noise"):
        _fit(coords, Y, v_inf, mask)
    X = Grid(check_coords(coords)).to_rows()[:50]
    gp = KroneckerGP(_kernels(), axes=[[0, 1], [2]], noise=np.full(50, np.nan))
    with pytest.raises(ValueError, match="noise"):
        gp.set_params(optimizer=None).fit(X, Y.reshape(-1)[:50])


def _test_basis(gp, test):
    cross = [
        k(t, c) for k, t, c in zip(gp.kernels_, check_coords(test), gp.grid_.coords)
    ]
    return [c @ u for c, u in zip(cross, gp._fact.post.eigvecs)]


def test_variance_monte_carlo_is_unbiased(rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.5", Y.shape, rng)
    gp = _fit(coords, Y, v, mask, noise_bounds="fixed", solver="exact")
    basis = _test_basis(gp, [coords[0][:5] + 0.1, np.linspace(0, 11, 9)])
    total = cell_noise_variance_correction(gp._fact.system, basis, grid=True)
    target = total - variance_correction_exact(gp._fact.system.schur, basis, grid=True)
    est, se = observed_variance_correction_mc(
        gp._fact.system, basis, grid=True, n_samples=400, rng=np.random.default_rng(0)
    )
    assert np.all(np.abs(est - target) <= 5 * se + 1e-12)
    assert se.max() <= 0.1 * np.abs(total).max()


def test_large_test_sets_use_monte_carlo(monkeypatch, rng):
    coords, Y, v = _problem(rng)
    mask = _mask("random-0.1", Y.shape, rng)
    gp = _fit(coords, Y, v, mask, noise_bounds="fixed", n_probes=400)
    test = [coords[0], np.linspace(0, 11, 50)]  # 500 points > 400 samples
    _, s_exact = gp.predict_grid(test, return_std=True)
    monkeypatch.setattr(_cell_noise_missing, "EXACT_VARIANCE_WORK", 0)
    _, s_mc = gp.predict_grid(test, return_std=True)
    assert np.abs(s_mc - s_exact).max() > 1e-10  # the sampled path was taken
    # an unbiased estimate of the variance; 400 samples: a few % of its scale
    var_err = np.abs(s_mc**2 - s_exact**2)
    assert var_err.max() <= 0.1 * (s_exact**2).max()


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_constant_variances_reduce_to_scalar_noise(solver, rng):
    # W = D - s_bar I = 0: C_hat = I, so only the missing-cell part remains
    coords, Y, _ = _problem(rng)
    mask = _mask("random-0.5", Y.shape, rng)
    gp = _fit(coords, Y, np.full(Y.shape, 0.05), mask, solver=solver)
    theta = np.array([0.3, 0.2, 1.5, np.log(0.7)])
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    theta_ref = np.r_[theta[:-1], theta[-1] + np.log(0.05)]
    ref = _fit(coords, Y, 0.05, mask, solver=solver)
    lml_ref, grad_ref = ref.log_marginal_likelihood(theta_ref, eval_gradient=True)
    assert_allclose(lml, lml_ref, rtol=EIG_RTOL)
    scale = np.abs(grad).max()
    assert_allclose(grad[:-1], grad_ref[:-1], rtol=EIG_RTOL, atol=EIG_RTOL * scale)
    if solver == "exact":
        assert_allclose(grad[-1], grad_ref[-1], rtol=EIG_RTOL, atol=EIG_RTOL * scale)
    else:
        # the noise entry's trace estimate skips the missing cells (where the
        # scalar path's estimate is noise around zero): compare with the truth
        exact = _fit(coords, Y, 0.05, mask, solver="exact")
        truth = exact.log_marginal_likelihood(theta_ref, eval_gradient=True)[1][-1]
        assert abs(grad[-1] - truth) <= 0.05 * max(abs(truth), 1e-3 * scale)
