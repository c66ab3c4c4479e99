"""Missing cells: KroneckerGP against sklearn's GP on the observed rows only."""

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel

from kronecker_gp import KroneckerGP, _budgets
from kronecker_gp._grid import Grid, check_coords
from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.linalg import _block_jacobi
from kronecker_gp.linalg._block_jacobi import BlockJacobi
from kronecker_gp.linalg._eigenbasis import GridPosterior
from kronecker_gp.solvers import _eigen_missing as _missing
from kronecker_gp.solvers._eigen import GridSolver
from kronecker_gp.solvers._eigen_missing import (
    SchurSystem,
    missing_factorize,
    variance_correction_exact,
    variance_correction_mc,
)
from kronecker_gp.testing import EIG_RTOL, assert_allclose

NOISE = 0.01
#: CG runs to cg_tol=1e-10 on a system with condition number ~10-100.
CG_RTOL = 1e-8


def _force_estimator(monkeypatch):
    # no exact method is affordable: the cost model then takes CG + SLQ
    monkeypatch.setattr(_budgets, "EXACT_FLOPS_BUDGET", 0.0)
    monkeypatch.setattr(_budgets, "EXACT_PREFERENCE", 0.0)


def _kernels():
    return [ConstantKernel(1.0) * RBF(1.5), Matern(6.0, nu=1.5)]


def _problem(rng, ns=12, nt=15):
    sites = rng.uniform(0, 5, size=(ns, 2))
    times = np.arange(nt, dtype=float)
    truth = KroneckerGP(_kernels(), noise=NOISE)
    f = truth.sample_grid([sites, times], random_state=2)[..., 0]
    Y = f + np.sqrt(NOISE) * rng.standard_normal(f.shape)
    return [sites, times], Y


def _mask(kind, shape, rng):
    mask = np.zeros(shape, dtype=bool)
    if kind.startswith("random"):
        mask = rng.random(shape) < float(kind.split("-")[1])
    elif kind == "block-outage":
        mask[3, 4:11] = True
        mask[7, :6] = True
    elif kind == "future-slice":
        mask[:, -3:] = True
        mask[2, 5] = True
    return mask


def _reference(coords, Y, mask, **kw):
    X = Grid(check_coords(coords)).to_rows()
    obs = ~mask.reshape(-1)
    kk = KroneckerKernel(_kernels(), axes=[[0, 1], [2]])
    ref = GaussianProcessRegressor(kk, alpha=NOISE, optimizer=None, **kw)
    return X, ref.fit(X[obs], Y.reshape(-1)[obs]), obs


KINDS = ["random-0.1", "random-0.5", "random-0.9", "block-outage", "future-slice"]


@pytest.mark.parametrize("solver", ["exact", "cg"])
@pytest.mark.parametrize("kind", KINDS)
def test_posterior_matches_dense_gp_on_observed_rows(kind, solver, rng):
    coords, Y = _problem(rng)
    mask = _mask(kind, Y.shape, rng)
    Yn = np.where(mask, np.nan, Y)
    gp = KroneckerGP(_kernels(), noise=NOISE, optimizer=None, solver=solver)
    gp.fit_grid(coords, Yn)
    X, ref, _ = _reference(coords, Y, mask)
    rtol = EIG_RTOL if solver == "exact" else CG_RTOL
    Xq = np.vstack([X[::7], X[:5] + 0.3])
    m, s = gp.predict(Xq, return_std=True)
    m_ref, s_ref = ref.predict(Xq, return_std=True)
    scale = np.abs(m_ref).max()
    assert_allclose(m, m_ref, rtol=rtol, atol=rtol * scale)
    assert_allclose(s, s_ref, rtol=rtol, atol=rtol * s_ref.max())
    mg, sg = gp.predict_grid(coords, return_std=True)
    mg_ref, sg_ref = ref.predict(X, return_std=True)
    assert_allclose(mg.reshape(-1), mg_ref, rtol=rtol, atol=rtol * scale)
    assert_allclose(sg.reshape(-1), sg_ref, rtol=rtol, atol=rtol * sg_ref.max())
    _, c = gp.predict(Xq[:6], return_cov=True)
    _, c_ref = ref.predict(Xq[:6], return_cov=True)
    assert_allclose(c, c_ref, rtol=rtol, atol=rtol * np.abs(c_ref).max())
    if kind == "future-slice":
        assert gp.grid_.shape == (Y.shape[0], Y.shape[1] - 3)
    expected_path = "complete" if mask[:, :-3].sum() == 0 else f"schur-{solver}"
    if kind != "future-slice" or mask[:, :-3].any():
        assert gp.solver_info_.path == expected_path


@pytest.mark.parametrize("kind", ["random-0.3", "block-outage"])
def test_exact_lml_and_gradient_match_dense(kind, rng):
    coords, Y = _problem(rng)
    mask = _mask(kind, Y.shape, rng)
    gp = KroneckerGP(_kernels(), noise=NOISE, optimizer=None, solver="exact")
    gp.fit_grid(coords, np.where(mask, np.nan, Y))
    X, ref, obs = _reference(coords, Y, mask)
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )
    kk = KroneckerKernel(_kernels(), axes=[[0, 1], [2]])
    ref2 = GaussianProcessRegressor(kk + WhiteKernel(NOISE), alpha=0.0, optimizer=None)
    ref2.fit(X[obs], Y.reshape(-1)[obs])
    theta = gp.theta_ + rng.normal(0, 0.2, size=gp.theta_.shape)
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    lml_ref, grad_ref = ref2.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, lml_ref, rtol=EIG_RTOL)
    assert_allclose(
        grad, grad_ref, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(grad_ref).max()
    )


def _cg_and_exact(rng, ns=40, nt=50, share=0.3):
    coords, Y = _problem(rng, ns=ns, nt=nt)
    Yn = np.where(rng.random(Y.shape) < share, np.nan, Y)
    gp = KroneckerGP(
        _kernels(), noise=NOISE, optimizer=None, solver="cg", random_state=0
    ).fit_grid(coords, Yn)
    exact = KroneckerGP(_kernels(), noise=NOISE, optimizer=None, solver="exact")
    return gp, exact.fit_grid(coords, Yn)


def test_cg_path_uses_exact_logdet_when_cheap(rng):
    # m = 600 missing cells: forming P_mm is cheap, so "cg" solves by CG but
    # takes log|P_mm| and the gradient trace from its Cholesky factor
    gp, exact = _cg_and_exact(rng)
    ref = exact.log_marginal_likelihood_value_
    assert_allclose(gp.log_marginal_likelihood_value_, ref, rtol=CG_RTOL)
    assert gp.solver_info_.path == "schur-cg"
    assert gp.solver_info_.iterations > 0
    assert gp.solver_info_.extra["logdet"] == "exact"
    assert gp.solver_info_.lml_std_error == 0
    _, g = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    _, g_ref = exact.log_marginal_likelihood(exact.theta_, eval_gradient=True)
    assert_allclose(g, g_ref, rtol=CG_RTOL, atol=CG_RTOL * np.abs(g_ref).max())


def test_estimated_lml_within_stated_error(rng, monkeypatch):
    _force_estimator(monkeypatch)  # force the estimator
    gp, exact = _cg_and_exact(rng)
    est, ref = gp.log_marginal_likelihood_value_, exact.log_marginal_likelihood_value_
    assert gp.solver_info_.extra["logdet"] == "slq"
    # the block axis chosen at the first solve is kept for later evaluations
    assert gp._route.block_axis == gp.solver_info_.extra["block_axis"]
    err = gp.solver_info_.lml_std_error
    assert 0 < err < 1e-3 * max(abs(ref), gp.grid_.size)  # the LML's O(N) scale
    assert abs(est - ref) <= 4 * err
    # deterministic: the same probes every call
    assert gp.log_marginal_likelihood(gp.theta_) == gp.log_marginal_likelihood(
        gp.theta_
    )
    _, g_est = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    _, g_ref = exact.log_marginal_likelihood(exact.theta_, eval_gradient=True)
    # Hutchinson with 32 probes: rms error ~3 % of the largest entry here
    assert np.abs(g_est - g_ref).max() < 0.1 * np.abs(g_ref).max()


def test_block_jacobi_estimate_has_smaller_spread_than_jacobi(rng, monkeypatch):
    # the same probes through a Jacobi (1 x 1 blocks) and a block-Jacobi factor
    _force_estimator(monkeypatch)
    gp, exact = _cg_and_exact(rng)
    ref = exact.log_marginal_likelihood_value_
    errs, stated = {}, {}
    for size in (1, _block_jacobi.BLOCK_SIZE):
        monkeypatch.setattr(_block_jacobi, "BLOCK_SIZE", size)
        runs = [
            missing_factorize(
                gp._fact.post,
                gp._route.y,
                gp._route.missing,
                method="cg",
                tol=1e-10,
                max_iter=500,
                n_probes=16,
                rng=np.random.default_rng(seed),
                eval_gradient=False,
            )
            for seed in range(8)
        ]
        errs[size] = np.sqrt(np.mean([(r[1] - ref) ** 2 for r in runs]))
        stated[size] = np.mean([r[4].lml_std_error for r in runs])
    assert errs[_block_jacobi.BLOCK_SIZE] < 0.8 * errs[1]
    assert stated[_block_jacobi.BLOCK_SIZE] < 0.8 * stated[1]


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_optimum_reaches_dense_optimum(solver, rng):
    coords, Y = _problem(rng)
    mask = rng.random(Y.shape) < 0.3
    gp = KroneckerGP(_kernels(), noise=0.1, solver=solver)
    gp.fit_grid(coords, np.where(mask, np.nan, Y))
    X = Grid(check_coords(coords)).to_rows()
    obs = ~mask.reshape(-1)
    kk = KroneckerKernel(_kernels(), axes=[[0, 1], [2]])
    ref = GaussianProcessRegressor(kk + WhiteKernel(0.1, (1e-6, 1e5)), alpha=0.0)
    ref.fit(X[obs], Y.reshape(-1)[obs])
    dense_at_ours = ref.log_marginal_likelihood(gp.theta_)
    # relative to the LML's O(N) scale, not its value (which may be near 0)
    assert abs(dense_at_ours - ref.log_marginal_likelihood_value_) <= 1e-3 * max(
        abs(ref.log_marginal_likelihood_value_), obs.sum()
    )


def test_fit_on_partial_rows_equals_fit_grid_with_nan(rng):
    coords, Y = _problem(rng)
    mask = rng.random(Y.shape) < 0.4
    X = Grid(check_coords(coords)).to_rows()
    obs = ~mask.reshape(-1)
    perm = rng.permutation(int(obs.sum()))
    a = KroneckerGP(_kernels(), axes=[[0, 1], [2]], noise=NOISE, optimizer=None)
    a.fit(X[obs][perm], Y.reshape(-1)[obs][perm])
    b = KroneckerGP(_kernels(), noise=NOISE, optimizer=None)
    b.fit_grid(coords, np.where(mask, np.nan, Y))
    # predictive means cross zero: absolute slack scaled by the largest
    want = b.predict(X[:9] + 0.1)
    scale = np.abs(want).max()
    assert_allclose(a.predict(X[:9] + 0.1), want, rtol=EIG_RTOL, atol=EIG_RTOL * scale)
    assert_allclose(
        a.log_marginal_likelihood_value_,
        b.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )


def test_scattered_rows_warn(rng):
    X = rng.uniform(0, 1, size=(30, 2))
    y = np.sin(X.sum(axis=1))
    gp = KroneckerGP([RBF(), RBF()], noise=0.1, optimizer=None)
    with pytest.warns(UserWarning, match=r"span a grid of 900 cells .* 30x more"):
        gp.fit(X, y)
    ref = GaussianProcessRegressor(
        KroneckerKernel([RBF(), RBF()]), alpha=0.1, optimizer=None
    ).fit(X, y)
    want = ref.predict(X[:5])
    scale = np.abs(want).max()  # means cross zero: scaled absolute slack
    assert_allclose(gp.predict(X[:5]), want, rtol=EIG_RTOL, atol=EIG_RTOL * scale)


def test_cg_non_convergence_warns(rng):
    coords, Y = _problem(rng)
    Y[rng.random(Y.shape) < 0.3] = np.nan
    gp = KroneckerGP(
        _kernels(), noise=NOISE, optimizer=None, solver="cg", cg_max_iter=2
    )
    with pytest.warns(ConvergenceWarning, match="relative residual"):
        gp.fit_grid(coords, Y)
    assert gp.solver_info_.iterations == 2
    assert gp.solver_info_.residual > 1e-10


def test_monte_carlo_variance_within_stated_error(rng):
    coords, Y = _problem(rng)
    mask = rng.random(Y.shape) < 0.3
    gp = KroneckerGP(_kernels(), noise=NOISE, optimizer=None, solver="cg")
    gp.fit_grid(coords, np.where(mask, np.nan, Y))
    system = SchurSystem(gp._fact.post, np.flatnonzero(mask), method="cg")
    test = [coords[0][:5] + 0.1, np.linspace(0, 14, 9)]
    cross = [
        k(t, c) for k, t, c in zip(gp.kernels_, check_coords(test), gp.grid_.coords)
    ]
    v = [c @ u for c, u in zip(cross, gp._fact.post.eigvecs)]
    exact = variance_correction_exact(system, v, grid=True)
    est, se = variance_correction_mc(
        system, v, grid=True, n_samples=400, rng=np.random.default_rng(0)
    )
    assert np.all(np.abs(est - exact) <= 5 * se + 1e-12)
    assert np.abs(est - exact).max() <= 0.5 * exact.max()


def test_posterior_samples_with_missing_cells(rng):
    coords, Y = _problem(rng, ns=4, nt=5)
    mask = rng.random(Y.shape) < 0.3
    gp = KroneckerGP(_kernels(), noise=0.05, optimizer=None)
    gp.fit_grid(coords, np.where(mask, np.nan, Y))
    n = 20000
    draws = gp.sample_grid(coords, n_samples=n, random_state=3).reshape(-1, n)
    X = Grid(check_coords(coords)).to_rows()
    mean, cov = gp.predict(X, return_cov=True)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * sd / np.sqrt(n) + 1e-12)
    assert np.abs(np.cov(draws) - cov).max() < 0.05 * sd.max() ** 2


def test_all_missing_rejected():
    gp = KroneckerGP([RBF(), RBF()], optimizer=None)
    with pytest.raises(ValueError, match="no observed cell"):
        gp.fit_grid([np.arange(3.0), np.arange(2.0)], np.full((3, 2), np.nan))


def test_bad_solver_rejected(rng):
    coords, Y = _problem(rng)
    with pytest.raises(ValueError, match="solver must be"):
        KroneckerGP(_kernels(), solver="lu", optimizer=None).fit_grid(coords, Y)


@pytest.mark.parametrize("shape", [(6, 9), (3, 4, 5)])
@pytest.mark.parametrize("block_size", [1, 3, 64])
def test_block_jacobi_matches_dense_blocks(shape, block_size, rng):
    # (3, 4, 5) also covers blocks over pairs of axes
    eigvals, eigvecs = [], []
    for n in shape:
        a = rng.standard_normal((n, n))
        w, u = np.linalg.eigh(a @ a.T / n)
        eigvals.append(w)
        eigvecs.append(u)
    lam = eigvals[0]
    for w in eigvals[1:]:
        lam = np.kron(lam, w)
    inv_lam = 1.0 / (lam + 0.3)
    post = GridPosterior(eigvals, eigvecs, 0.3, inv_lam, 0 * inv_lam)
    u_full = eigvecs[0]
    for u in eigvecs[1:]:
        u_full = np.kron(u_full, u)
    p_dense = (u_full * inv_lam) @ u_full.T
    missing = np.flatnonzero(rng.random(int(np.prod(shape))) < 0.5)
    pmm = p_dense[np.ix_(missing, missing)]
    block = BlockJacobi(post, missing, block_size=block_size)
    # the automatic axis keeps the most squared correlations inside blocks
    d = np.sqrt(np.diag(pmm))
    corr2 = (pmm / np.outer(d, d)) ** 2 - np.eye(missing.size)
    candidates = list(range(len(shape)))
    if len(shape) >= 3:  # pairs of axes, the larger first (blocks span the smaller)
        candidates += [
            (a, b) if shape[a] >= shape[b] else (b, a)
            for a in range(len(shape))
            for b in range(a + 1, len(shape))
        ]
    scores = {}
    for axis in candidates:
        other = BlockJacobi(post, missing, axis=axis, block_size=block_size)
        assert other.axis == axis
        l_inv = other.half_inv(np.eye(missing.size))
        inside = np.abs(np.linalg.inv(l_inv.T @ l_inv)) > 1e-12
        scores[axis] = np.sum(corr2[inside])
    # scale the slack by all the squared correlations, not by the best score:
    # with blocks of one cell every score is rounding noise around zero
    assert block.axis in scores
    assert scores[block.axis] >= max(scores.values()) - 1e-9 * np.sum(corr2)
    # C = L L^T reproduces P_mm on its diagonal blocks and is zero elsewhere
    eye = np.eye(missing.size)
    l_inv = block.half_inv(eye)
    c = np.linalg.inv(l_inv.T @ l_inv)
    assert_allclose(block.half_inv_t(eye), l_inv.T, rtol=EIG_RTOL)
    assert_allclose(block.solve(eye), l_inv.T @ l_inv, rtol=EIG_RTOL, atol=1e-10)
    coupled = np.abs(c) > 1e-9 * np.abs(c).max()
    assert_allclose(c[coupled], pmm[coupled], rtol=EIG_RTOL)
    assert np.all(np.diag(coupled))
    idx = np.unravel_index(missing, shape)
    axes = np.atleast_1d(block.axis)
    other = [i for d, i in enumerate(idx) if d not in axes]
    if not other:  # every axis blocks: one line
        other = [np.zeros_like(idx[0])]
    same_line = np.all([o[:, None] == o[None, :] for o in other], axis=0)
    assert not np.any(coupled & ~same_line)
    assert np.all(coupled.sum(axis=1) <= block_size)
    assert_allclose(block.logdet, np.linalg.slogdet(c)[1], rtol=EIG_RTOL)
    # the whitened matrix has identity diagonal blocks: tr(N - I) = 0
    whitened = l_inv @ pmm @ l_inv.T
    assert_allclose(np.diag(whitened), np.ones(missing.size), rtol=EIG_RTOL)
    assert_allclose(whitened[coupled], eye[coupled], rtol=EIG_RTOL, atol=1e-10)


def test_search_uses_looser_cg_tol_and_refit_uses_cg_tol(rng, monkeypatch):
    coords, Y = _problem(rng)
    Yn = np.where(rng.random(Y.shape) < 0.3, np.nan, Y)
    tols = []
    solve = GridSolver.solve

    def recording(self, *args, **kwargs):
        tols.append(self.tol)
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(GridSolver, "solve", recording)
    gp = KroneckerGP(_kernels(), noise=0.1, solver="cg", random_state=0)
    gp.fit_grid(coords, Yn)
    assert set(tols[:-1]) == {_budgets.SEARCH_CG_TOL} and tols[-1] == 1e-10
    assert gp.solver_info_.residual <= 1e-10
    monkeypatch.setattr(_budgets, "SEARCH_CG_TOL", 0.0)
    tight = KroneckerGP(_kernels(), noise=0.1, solver="cg", random_state=0)
    tight.fit_grid(coords, Yn)
    # the optimum moves far less than the estimator's error would move it
    assert np.abs(gp.theta_ - tight.theta_).max() < 1e-3


def test_pmm_matvec_in_column_chunks_matches_dense(rng):
    coords, Y = _problem(rng, ns=5, nt=6)
    mask = rng.random(Y.shape) < 0.4
    gp = KroneckerGP(_kernels(), noise=NOISE, optimizer=None).fit_grid(coords, Y)
    missing = np.flatnonzero(mask)
    system = SchurSystem(gp._fact.post, missing, method="cg")
    kk = KroneckerKernel(_kernels(), axes=[[0, 1], [2]])
    a = kk(Grid(check_coords(coords)).to_rows()) + NOISE * np.eye(Y.size)
    p_mm = np.linalg.inv(a)[np.ix_(missing, missing)]
    v = rng.standard_normal((missing.size, 2 * _missing.MATVEC_COLUMNS + 3))
    assert_allclose(system.pmm_matvec(v), p_mm @ v, rtol=EIG_RTOL, atol=1e-10)


@pytest.mark.parametrize("axis", [(2, 0), (0, 1), (1, 2, 0)])
def test_block_jacobi_over_axis_pairs_matches_dense_blocks(axis, rng):
    shape = (3, 4, 5)
    eigvals, eigvecs = [], []
    for n in shape:
        a = rng.standard_normal((n, n))
        w, u = np.linalg.eigh(a @ a.T / n)
        eigvals.append(w)
        eigvecs.append(u)
    lam = np.kron(np.kron(eigvals[0], eigvals[1]), eigvals[2])
    inv_lam = 1.0 / (lam + 0.3)
    post = GridPosterior(eigvals, eigvecs, 0.3, inv_lam, 0 * inv_lam)
    u_full = np.kron(np.kron(eigvecs[0], eigvecs[1]), eigvecs[2])
    p_dense = (u_full * inv_lam) @ u_full.T
    missing = np.flatnonzero(rng.random(60) < 0.5)
    pmm = p_dense[np.ix_(missing, missing)]
    block = BlockJacobi(post, missing, axis=axis, block_size=4)
    assert block.axis == axis
    eye = np.eye(missing.size)
    l_inv = block.half_inv(eye)
    c = np.linalg.inv(l_inv.T @ l_inv)
    coupled = np.abs(c) > 1e-9 * np.abs(c).max()
    assert_allclose(c[coupled], pmm[coupled], rtol=EIG_RTOL)
    idx = np.unravel_index(missing, shape)
    other = [idx[d] for d in range(3) if d not in axis] or [np.zeros_like(idx[0])]
    same_line = np.all([o[:, None] == o[None, :] for o in other], axis=0)
    assert not np.any(coupled & ~same_line)
    assert np.all(coupled.sum(axis=1) <= 4)
    # a block holds consecutive cells with the last axis of ``axis`` fastest
    along = np.ravel_multi_index([idx[d] for d in axis], [shape[d] for d in axis])
    for i, j in zip(*np.nonzero(coupled & same_line)):
        between = same_line[i] & (along > min(along[i], along[j]))
        between &= along < max(along[i], along[j])
        assert np.all(coupled[i, between])
    assert_allclose(block.logdet, np.linalg.slogdet(c)[1], rtol=EIG_RTOL)
    assert_allclose(
        np.diag(l_inv @ pmm @ l_inv.T), np.ones(missing.size), rtol=EIG_RTOL
    )


@pytest.mark.parametrize("axis", [3, (0, 0), (-1,), 1.5])
def test_block_jacobi_rejects_bad_axis(axis, rng):
    w = [np.ones(2), np.ones(3)]
    u = [np.eye(2), np.eye(3)]
    post = GridPosterior(w, u, 0.1, np.full(6, 1 / 1.1), np.zeros(6))
    with pytest.raises(ValueError, match="axis must be"):
        BlockJacobi(post, np.array([0, 4]), axis=axis)
