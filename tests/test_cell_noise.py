"""Per-cell noise: KroneckerGP against sklearn's GP with alpha = the variances."""

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP, solvers
from kronecker_gp._grid import Grid, check_coords
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.testing import assert_allclose


@pytest.fixture(autouse=True)
def _structured_cg_route(monkeypatch):
    # these tests exercise the CG route for per-cell noise on its small grids;
    # keep the cost model from the exact dense and spatio-temporal routes
    # (tests/test_solvers.py covers those, and the switch to them)
    for name in ("_spacetime_candidate", "_dense_candidate"):
        monkeypatch.setattr(solvers, name, lambda *args, **kwargs: None)


#: CG runs to cg_tol=1e-10 on a system whose condition number is the noise spread.
CG_RTOL = 1e-8


def _kernels():
    return [ConstantKernel(1.0) * RBF(1.5), Matern(5.0, nu=1.5)]


def _problem(rng, ns=10, nt=12):
    coords = [rng.uniform(0, 5, size=(ns, 2)), np.arange(nt, dtype=float)]
    v = rng.uniform(0.01, 0.2, size=(ns, nt))
    f = KroneckerGP(_kernels()).sample_grid(coords, random_state=4)[..., 0]
    return coords, f + np.sqrt(v) * rng.standard_normal(f.shape), v


def _dense(coords, Y, v, **kw):
    X = Grid(check_coords(coords)).to_rows()
    kk = KroneckerKernel(_kernels(), axes=[[0, 1], [2]])
    gpr = GaussianProcessRegressor(kk, alpha=v.reshape(-1), optimizer=None, **kw)
    return X, gpr.fit(X, Y.reshape(-1))


@pytest.mark.parametrize("normalize_y", [False, True])
def test_posterior_matches_dense(normalize_y, rng):
    coords, Y, v = _problem(rng)
    gp = KroneckerGP(
        _kernels(),
        noise=v,
        noise_bounds="fixed",
        optimizer=None,
        normalize_y=normalize_y,
    )
    gp.fit_grid(coords, Y)
    # per-cell variances are in data units; sklearn's alpha is in normalised units
    scale = Y.std() ** 2 if normalize_y else 1.0
    X, ref = _dense(coords, Y, v / scale, normalize_y=normalize_y)
    Xq = np.vstack([X[::5], X[:4] + 0.2])
    m, s = gp.predict(Xq, return_std=True)
    m_ref, s_ref = ref.predict(Xq, return_std=True)
    assert_allclose(m, m_ref, rtol=CG_RTOL, atol=CG_RTOL * np.abs(m_ref).max())
    assert_allclose(s, s_ref, rtol=CG_RTOL, atol=CG_RTOL * s_ref.max())
    mg, sg = gp.predict_grid(coords, return_std=True)
    mg_ref, sg_ref = ref.predict(X, return_std=True)
    assert_allclose(
        mg.reshape(-1), mg_ref, rtol=CG_RTOL, atol=CG_RTOL * np.abs(mg_ref).max()
    )
    assert_allclose(sg.reshape(-1), sg_ref, rtol=CG_RTOL, atol=CG_RTOL * sg_ref.max())
    _, c = gp.predict(Xq[:5], return_cov=True)
    _, c_ref = ref.predict(Xq[:5], return_cov=True)
    assert_allclose(c, c_ref, rtol=CG_RTOL, atol=CG_RTOL * np.abs(c_ref).max())
    assert gp.solver_info_.path == "cell-noise-cg"
    assert_allclose(gp.noise_variances_, v)


def test_estimated_lml_and_gradient(rng):
    coords, Y, v = _problem(rng)
    gp = KroneckerGP(_kernels(), noise=v, optimizer=None, n_probes=64, random_state=0)
    gp.fit_grid(coords, Y)
    X, ref = _dense(coords, Y, v)
    est, exact = gp.log_marginal_likelihood_value_, ref.log_marginal_likelihood_value_
    err = gp.solver_info_.lml_std_error
    assert 0 < err
    assert abs(est - exact) <= 4 * err
    # relative to the LML's O(N) scale, not its value (which may be near 0)
    assert abs(est - exact) <= 1e-3 * max(abs(exact), Y.size)
    # gradient w.r.t. kernel theta vs the dense gradient; last entry: noise scale
    theta = gp.theta_
    _, g = gp.log_marginal_likelihood(theta, eval_gradient=True)
    _, g_ref = ref.log_marginal_likelihood(theta[:-1], eval_gradient=True)
    assert np.abs(g[:-1] - g_ref).max() <= 0.05 * np.abs(g_ref).max()
    eps = 1e-4
    fd = (
        ref_lml_scaled(coords, Y, v, theta, eps)
        - ref_lml_scaled(coords, Y, v, theta, -eps)
    ) / (2 * eps)
    # the entry is 0.5 a^T D a - 0.5 tr(A^-1 D), two terms of size ~N/2; the trace
    # is estimated with 64 probes: allow 1 % of N/2
    assert abs(g[-1] - fd) <= 0.01 * 0.5 * Y.size


def ref_lml_scaled(coords, Y, v, theta, eps):
    _, ref = _dense(coords, Y, v * np.exp(theta[-1] + eps))
    return ref.log_marginal_likelihood(theta[:-1])


def test_learned_scale_recovers_truth(rng):
    coords, Y, v = _problem(rng, ns=15, nt=20)
    gp = KroneckerGP(_kernels(), noise=v / 4.0, random_state=0).fit_grid(coords, Y)
    assert 2.0 < gp.noise_ < 8.0  # the given variances were 4x too small


def test_cell_noise_errors(rng):
    coords, Y, v = _problem(rng)
    with pytest.raises(ValueError, match="noise given per cell must have Y's shape"):
        KroneckerGP(_kernels(), noise=v[:, :-1], optimizer=None).fit_grid(coords, Y)
    bad = v.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="positive and finite"):
        KroneckerGP(_kernels(), noise=bad, optimizer=None).fit_grid(coords, Y)
    # missing cells are accepted since issue 3 item 4: tests/test_cell_noise_missing.py


def test_fit_rows_with_per_sample_noise(rng):
    coords, Y, v = _problem(rng)
    X = Grid(check_coords(coords)).to_rows()
    perm = rng.permutation(len(X))
    gp = KroneckerGP(
        _kernels(),
        axes=[[0, 1], [2]],
        noise=v.reshape(-1)[perm],
        noise_bounds="fixed",
        optimizer=None,
    )
    gp.fit(X[perm], Y.reshape(-1)[perm])
    _, ref = _dense(coords, Y, v)
    assert_allclose(
        gp.predict(X[:6] + 0.1), ref.predict(X[:6] + 0.1), rtol=CG_RTOL, atol=CG_RTOL
    )


def test_many_points_variance_is_an_unbiased_estimate(rng, monkeypatch):
    # beyond EXACT_VARIANCE_FACTOR x VARIANCE_PROBES points the correction to
    # the preconditioner's exact variance is a Hutchinson estimate (one batched
    # CG run, not one solve per point): close to the dense variance, unbiased
    from kronecker_gp import _budgets
    from kronecker_gp.solvers import _cell_noise

    coords, Y, v = _problem(rng, ns=20, nt=24)  # 480 points > 2 x 128
    gp = KroneckerGP(_kernels(), noise=v, optimizer=None, noise_bounds="fixed")
    gp.fit_grid(coords, Y)
    assert gp.solver_info_.path == "cell-noise-cg"
    X, dense = _dense(coords, Y, v)
    _, want = dense.predict(X, return_std=True)
    _, got = gp.predict_grid(coords, return_std=True)
    rel = np.abs(got.reshape(-1) ** 2 - want**2) / want**2
    assert np.median(rel) < 0.05 and rel.max() < 0.5
    # no bias: the mean error over many cells is well below a single cell's
    assert (
        abs(np.mean(got.reshape(-1) ** 2 - want**2))
        < 0.3 * np.mean(np.abs(got.reshape(-1) ** 2 - want**2)) + 1e-12
    )
    # the exact path (one solve per point) on the same grid equals the dense one
    monkeypatch.setattr(_cell_noise, "EXACT_VARIANCE_FACTOR", 10**6)
    _, exact = gp.predict_grid(coords, return_std=True)
    assert_allclose(exact.reshape(-1), want, rtol=1e-7)
    assert _budgets.VARIANCE_PROBES * _budgets.EXACT_VARIANCE_FACTOR < 480
