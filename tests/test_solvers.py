"""The route catalogue: every route of the solver layer against one dense GP twin.

Each entry names a route (``solver_info_.path``) and the estimator settings
that lead :func:`kronecker_gp.solvers.select_solver` to it; one parametrized
suite checks the LML, its gradient (against the dense gradient and finite
differences), the posterior mean, standard deviation and covariance, and the
moments of posterior samples. Adding a route is one line in ``ROUTES``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern

from kronecker_gp import KroneckerGP, _budgets, solvers
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.testing import EIG_RTOL, assert_allclose

SHAPE = (6, 9)

#: (expected path, estimator settings, missing cells? (or their fraction),
#: per-cell noise?, exact LML?);
#: "allow" names the one alternative route the cost model may switch to, or
#: "none" (the grids are tiny: without "allow" the structured route is kept
#: unless its estimate passes ROUTE_SWITCH_FLOPS, as with 512 probes)
ROUTES = [
    ("complete", {"state_space": None}, False, False, True),
    ("schur-exact", {"state_space": None, "solver": "exact"}, True, False, True),
    ("schur-cg", {"state_space": None, "solver": "cg"}, True, False, True),
    ("cell-noise-cg", {"state_space": None, "allow": "none"}, False, True, False),
    (
        "cell-noise-schur-exact",
        {"state_space": None, "allow": "none"},
        True,
        True,
        False,
    ),
    ("state-space", {"state_space": 1}, False, False, True),
    ("state-space-schur-cg", {"state_space": 1, "solver": "cg"}, True, False, False),
    (
        "state-space-schur-exact",
        {"state_space": 1, "solver": "exact"},
        True,
        False,
        True,
    ),
    (
        "state-space-cell-noise-cg",
        {"state_space": 1, "allow": "none"},
        False,
        True,
        False,
    ),
    (
        "spacetime-kalman",
        {"state_space": "auto", "allow": "spacetime"},
        True,
        False,
        True,
    ),
    (
        "spacetime-kalman",
        {"state_space": "auto", "allow": "spacetime"},
        True,
        True,
        True,
    ),
    ("dense", {"state_space": None, "allow": "dense"}, 0.85, False, True),
    ("dense", {"state_space": None, "allow": "dense"}, 0.85, True, True),
    # per-cell noise on a small complete grid: exact, not CG with estimates
    ("dense", {"state_space": None}, False, True, True),
]


def _kernels():
    return [ConstantKernel(1.5) * RBF(1.2), Matern(2.0, nu=1.5)]


def _problem(rng, missing, cell_noise):
    s = np.sort(rng.uniform(0, 5, SHAPE[0]))
    t = np.arange(SHAPE[1]) * 0.7
    Y = np.sin(s)[:, None] + np.cos(t)[None, :] + 0.3 * rng.standard_normal(SHAPE)
    if missing:
        fraction = 0.3 if missing is True else missing
        Y[rng.random(SHAPE) < fraction] = np.nan
        Y[2, :] = np.where(np.arange(SHAPE[1]) < 5, np.nan, Y[2, :])  # an outage
    noise = 0.2
    if cell_noise:
        noise = rng.uniform(0.05, 0.4, SHAPE)
    return [s, t], Y, noise


def _dense(coords, Y, noise, kernel, noise_scale):
    """Dense GP on the observed cells: LML, gradient, mean, var on the grid."""
    s, t = coords
    X = np.column_stack([np.repeat(s, t.size), np.tile(t, s.size)])
    K, dK = kernel(X, eval_gradient=True)
    obs = ~np.isnan(Y.reshape(-1))
    d = noise_scale * (
        np.full(obs.size, noise) if np.isscalar(noise) else noise.reshape(-1)
    )
    C = K[np.ix_(obs, obs)] + np.diag(d[obs])
    y = Y.reshape(-1)[obs]
    L = np.linalg.cholesky(C)
    alpha = np.linalg.solve(C, y)
    lml = (
        -0.5 * y @ alpha
        - np.log(np.diag(L)).sum()
        - 0.5 * obs.sum() * np.log(2 * np.pi)
    )
    inv = np.linalg.inv(C)
    w = np.outer(alpha, alpha) - inv
    grads = [
        0.5 * np.sum(w * dK[np.ix_(obs, obs)][:, :, p]) for p in range(dK.shape[2])
    ]
    grads.append(0.5 * np.sum(w * np.diag(d[obs])))
    k_xo = K[:, obs]
    mean = k_xo @ alpha
    cov = K - k_xo @ inv @ k_xo.T
    return lml, np.array(grads), mean, cov, X


@pytest.mark.parametrize(
    ("path", "settings", "missing", "cell_noise", "exact"),
    ROUTES,
    ids=[f"{r[0]}{'-cell' if r[3] else ''}" for r in ROUTES],
)
def test_route_matches_dense_twin(  # noqa: PLR0917 - the catalogue's columns
    path, settings, missing, cell_noise, exact, rng, monkeypatch
):
    settings = dict(settings)
    allow = settings.pop("allow", None)
    if allow is not None:
        monkeypatch.setattr(_budgets, "ROUTE_SWITCH_FLOPS", 0.0)
        monkeypatch.setattr(_budgets, "KALMAN_STEP_FLOPS", 0.0)  # flops alone
        for name in ("spacetime", "dense"):
            if name != allow:
                monkeypatch.setattr(
                    solvers, f"_{name}_candidate", lambda *args, **kwargs: None
                )
    coords, Y, noise = _problem(rng, missing, cell_noise)
    gp = KroneckerGP(
        _kernels(),
        noise=noise,
        optimizer=None,
        cg_tol=1e-12,
        n_probes=32 if exact else 512,  # estimated routes: a tight estimate
        state_space_min_size=4 if settings["state_space"] == 1 else 10**6,
        **settings,
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path == path
    kernel = KroneckerKernel(_kernels(), axes=[[0], [1]])
    scale = 1.0 if np.isscalar(noise) else gp.noise_  # per-cell: a learned scale
    lml, grad, mean, cov, X = _dense(coords, Y, noise, kernel, scale)
    rtol = EIG_RTOL if exact else 1e-6
    # likelihood: exact routes to 1e-8; estimated ones within their stated error
    got = gp.log_marginal_likelihood_value_
    err = gp.solver_info_.lml_std_error
    assert (err == 0) == exact
    assert abs(got - lml) <= 4 * err + rtol * abs(lml)
    # gradient: exact routes equal the dense one; every route matches finite
    # differences of its own (deterministic) objective
    lml_t, g = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    if exact:
        assert_allclose(g, grad, rtol=1e-7, atol=1e-7 * np.abs(grad).max())
        h = 1e-5
        fd = [
            (
                gp.log_marginal_likelihood(gp.theta_ + h * e)
                - gp.log_marginal_likelihood(gp.theta_ - h * e)
            )
            / (2 * h)
            for e in np.eye(g.size)
        ]
        assert_allclose(g, fd, rtol=1e-5, atol=1e-5 * np.abs(g).max())
    else:  # Hutchinson estimates with 512 probes: a few per cent
        assert np.abs(g - grad).max() < 0.1 * np.abs(grad).max()
    # posterior moments on the grid and covariance at points
    m, sd = gp.predict_grid(coords, return_std=True)
    assert_allclose(m.reshape(-1), mean, rtol=1e-7, atol=1e-9)
    assert_allclose(sd.reshape(-1), np.sqrt(np.diag(cov)), rtol=1e-6, atol=1e-8)
    pts = [0, 7, 20, 41]
    m_pts, cov_pts = gp.predict(X[pts], return_cov=True)
    assert_allclose(m_pts, mean[pts], rtol=1e-7, atol=1e-9)
    assert_allclose(cov_pts, cov[np.ix_(pts, pts)], rtol=1e-6, atol=1e-8)
    # posterior samples: moments within their Monte Carlo error
    n = 400
    draws = gp.sample_grid(coords, n_samples=n, random_state=1).reshape(-1, n)
    sd_true = np.sqrt(np.maximum(np.diag(cov), 0))
    assert np.all(np.abs(draws.mean(axis=1) - mean) <= 5 * sd_true / np.sqrt(n) + 1e-9)
    assert np.all(np.abs(draws.std(axis=1) - sd_true) <= 0.25 * sd_true + 1e-9)


@pytest.mark.parametrize("missing", [False, True])
def test_predictions_in_chunks_equal_one_pass(missing, rng, monkeypatch):
    # bounded memory: points go through the routes in chunks; the chunk size
    # must not change a single number
    coords, Y, _ = _problem(rng, missing, False)
    gp = KroneckerGP(_kernels(), noise=0.2, optimizer=None, state_space=None)
    gp.fit_grid(coords, Y)
    X = np.column_stack([rng.uniform(0, 5, 50), rng.uniform(0, 6, 50)])
    mean, std = gp.predict(X, return_std=True)
    monkeypatch.setattr(_budgets, "CHUNK_ENTRIES", 6 * sum(SHAPE) * 7)  # 7 points
    mean_c, std_c = gp.predict(X, return_std=True)
    assert_allclose(mean_c, mean, rtol=1e-12, atol=1e-14)
    assert_allclose(std_c, std, rtol=1e-12, atol=1e-14)


def test_refit_recomputes_the_weights(rng):
    # alpha_ is computed on first access: a refit on other data must not
    # return the weights of the previous fit
    coords, Y, _ = _problem(rng, True, False)
    gp = KroneckerGP(_kernels(), noise=0.2, optimizer=None, state_space=None)
    first = gp.fit_grid(coords, Y).alpha_.copy()
    second = gp.fit_grid(coords, 2.0 * Y).alpha_
    assert_allclose(second, 2.0 * first, rtol=1e-10, atol=1e-12)


# -- routes with structured noise or a sum of separable kernels ----------------
def _regional_plus_local():
    from kronecker_gp.kernels import SeparableSum

    return SeparableSum(
        [
            [ConstantKernel(0.7), Matern(3.0, nu=1.5)],  # regional: rank one in space
            [ConstantKernel(1.2) * RBF(1.0), Matern(1.5, nu=0.5)],
        ]
    )


def _two_full_terms():
    from kronecker_gp.kernels import SeparableSum

    return SeparableSum(
        [
            [ConstantKernel(0.7) * RBF(2.0), Matern(3.0, nu=1.5)],
            [ConstantKernel(1.2) * RBF(0.6), Matern(1.5, nu=0.5)],
        ]
    )


#: (expected path, kernel factory, estimator settings, missing cells?, exact LML?)
STRUCTURED_ROUTES = [
    ("axis-noise", _kernels, {"noise_axes": (0,)}, False, True),
    ("axis-noise", _kernels, {"noise_axes": (0, 1)}, False, True),
    (
        "axis-noise-schur-exact",
        _kernels,
        {"noise_axes": (1,), "solver": "exact", "allow": "none"},
        True,
        True,
    ),
    (
        "axis-noise-schur-cg",
        _kernels,
        {"noise_axes": (1,), "solver": "cg", "allow": "none"},
        True,
        True,
    ),
    ("separable-sum-woodbury", _regional_plus_local, {}, False, True),
    ("separable-sum-woodbury-schur", _regional_plus_local, {}, True, True),
    (
        "separable-sum-cg",
        _two_full_terms,
        {"solver": "cg", "n_probes": 512},
        True,
        False,
    ),
    ("separable-sum-kalman", _regional_plus_local, {"state_space": 1}, True, True),
    ("separable-sum-woodbury", _regional_plus_local, {"noise_axes": (0,)}, False, True),
    (
        "separable-sum-woodbury-schur",
        _regional_plus_local,
        {"noise_axes": (1,)},
        True,
        True,
    ),
    (
        "separable-sum-kalman",
        _regional_plus_local,
        {"noise_axes": (0,), "state_space": 1},
        True,
        True,
    ),
    (
        "separable-sum-cg",
        _two_full_terms,
        {"solver": "cg", "n_probes": 512, "noise_axes": (0,)},
        True,
        False,
    ),
]


@pytest.mark.parametrize(
    ("path", "make_kernel", "settings", "missing", "exact"),
    STRUCTURED_ROUTES,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(STRUCTURED_ROUTES)],
)
def test_structured_route_matches_dense_twin(  # noqa: PLR0917 - the catalogue's columns
    path, make_kernel, settings, missing, exact, rng, monkeypatch
):
    settings = dict(settings)
    if settings.pop("allow", None) is not None:
        monkeypatch.setattr(_budgets, "ROUTE_SWITCH_FLOPS", 0.0)
        for name in ("spacetime", "dense"):
            monkeypatch.setattr(
                solvers, f"_{name}_candidate", lambda *args, **kwargs: None
            )
    coords, Y, _ = _problem(rng, missing, False)
    start = {}
    if "noise_axes" in settings:  # a different variance per slice of each axis
        start["noise"] = [
            rng.uniform(0.05, 0.4, SHAPE[a]) for a in settings["noise_axes"]
        ]
        if len(start["noise"]) == 1:
            start["noise"] = start["noise"][0]
    settings.setdefault("state_space", None)
    gp = KroneckerGP(
        make_kernel(),
        noise=start.get("noise", 0.2),
        optimizer=None,
        cg_tol=1e-12,
        **settings,
    ).fit_grid(coords, Y)
    assert gp.solver_info_.path == path
    kernel = gp.kernel_
    if "noise_axes" in settings:  # the kernel as given (the fit may rebalance scales)
        kernel = (
            KroneckerKernel(_kernels(), axes=[[0], [1]])
            if make_kernel is _kernels
            else make_kernel()
        )
    d = (
        gp.noise_variances_.reshape(-1)
        if "noise_axes" in settings
        else np.full(Y.size, 0.2)
    )
    lml, grad, mean, cov, X = _dense(coords, Y, d.reshape(SHAPE), kernel, 1.0)
    got = gp.log_marginal_likelihood_value_
    err = gp.solver_info_.lml_std_error
    assert (err == 0) == exact
    rtol = EIG_RTOL if exact else 1e-6
    assert abs(got - lml) <= 4 * err + rtol * abs(lml)
    n_kernel = kernel.theta.size
    lml_t, g = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    if exact:
        # the kernel's part of the gradient equals the dense one
        assert_allclose(
            g[:n_kernel], grad[:n_kernel], rtol=1e-7, atol=1e-7 * np.abs(grad).max()
        )
        # every entry (noise ones too) matches finite differences of the LML
        h = 1e-5
        fd = [
            (
                gp.log_marginal_likelihood(gp.theta_ + h * e)
                - gp.log_marginal_likelihood(gp.theta_ - h * e)
            )
            / (2 * h)
            for e in np.eye(g.size)
        ]
        assert_allclose(g, fd, rtol=1e-5, atol=1e-5 * np.abs(g).max())
        # and at another kernel theta the LML is still the dense one
        moved = gp.theta_.copy()
        moved[:n_kernel] += 0.2
        other = kernel.clone_with_theta(moved[:n_kernel])
        assert_allclose(
            gp.log_marginal_likelihood(moved),
            _dense(coords, Y, d.reshape(SHAPE), other, 1.0)[0],
            rtol=EIG_RTOL,
        )
    else:
        assert np.abs(g[:n_kernel] - grad[:n_kernel]).max() < 0.1 * np.abs(grad).max()
    m, sd = gp.predict_grid(coords, return_std=True)
    assert_allclose(m.reshape(-1), mean, rtol=1e-7, atol=1e-9)
    assert_allclose(sd.reshape(-1), np.sqrt(np.diag(cov)), rtol=1e-6, atol=1e-8)
    pts = [0, 7, 20, 41]
    m_pts, cov_pts = gp.predict(X[pts], return_cov=True)
    assert_allclose(m_pts, mean[pts], rtol=1e-7, atol=1e-9)
    assert_allclose(cov_pts, cov[np.ix_(pts, pts)], rtol=1e-6, atol=1e-8)
    n = 400
    draws = gp.sample_grid(coords, n_samples=n, random_state=1).reshape(-1, n)
    sd_true = np.sqrt(np.maximum(np.diag(cov), 0))
    assert np.all(np.abs(draws.mean(axis=1) - mean) <= 5 * sd_true / np.sqrt(n) + 1e-9)
    assert np.all(np.abs(draws.std(axis=1) - sd_true) <= 0.25 * sd_true + 1e-9)
