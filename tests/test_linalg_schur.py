"""The one missing-cell Schur complement (linalg/_schur.py) against dense numpy."""

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from kronecker_gp import _budgets
from kronecker_gp.linalg._schur import (
    DiagonalWhitening,
    MissingCellSchur,
)
from kronecker_gp.testing import assert_allclose, random_spd

N = 40


def _problem(rng, m=12):
    a = random_spd(N, cond=50.0, random_state=rng) + 0.05 * np.eye(N)
    missing = np.sort(rng.choice(N, size=m, replace=False))
    observed = np.setdiff1d(np.arange(N), missing)
    return a, missing, observed


def _solver(a):
    inv = np.linalg.inv(a)
    return lambda x: inv @ x


def test_exact_logdet_and_pmm_match_dense(rng):
    a, missing, observed = _problem(rng)
    schur = MissingCellSchur(_solver(a), missing, N)
    p = np.linalg.inv(a)
    pmm, _ = schur.form_pmm()
    assert_allclose(pmm, p[np.ix_(missing, missing)])
    want = np.linalg.slogdet(a[np.ix_(observed, observed)])[1]
    assert_allclose(np.linalg.slogdet(a)[1] + schur.logdet(), want)
    assert_allclose(schur.diagonal(), np.diag(p)[missing])


def test_exact_observed_solve_matches_dense(rng):
    a, missing, observed = _problem(rng)
    schur = MissingCellSchur(_solver(a), missing, N)
    b = rng.standard_normal((N, 3))
    got = schur.observed_solve(b)
    want = np.linalg.solve(a[np.ix_(observed, observed)], b[observed])
    assert_allclose(got[observed], want)
    assert_allclose(got[missing], 0.0)
    # the residual form: A_oo^{-1} b = P r, r = b on the observed cells
    b[missing] = 0.0
    r = schur.observed_residual(b, np.linalg.solve(a, b))
    assert_allclose(r[observed], b[observed])
    assert_allclose(np.linalg.solve(a, r), got, atol=1e-11)


def test_exact_solve_whitening_and_quad_forms(rng):
    a, missing, _ = _problem(rng)
    schur = MissingCellSchur(_solver(a), missing, N)
    pmm = np.linalg.inv(a)[np.ix_(missing, missing)]
    b = rng.standard_normal((missing.size, 4))
    assert_allclose(schur.solve(b), np.linalg.solve(pmm, b))
    assert_allclose(schur.quad_forms(b), np.sum(b * np.linalg.solve(pmm, b), axis=0))
    c = schur.inv_sqrt()
    assert_allclose(c @ c.T, np.linalg.inv(pmm), rtol=1e-9)
    low = np.linalg.cholesky(pmm)
    assert_allclose(schur.half_inv(b), np.linalg.solve(low, b), rtol=1e-9)


@pytest.mark.parametrize("per_pass", [1, 3, 5, 64])
def test_form_pmm_with_extra_columns_in_passes(rng, per_pass):
    a, missing, _ = _problem(rng)
    calls = []

    def solve(x):
        calls.append(x.shape[1])
        return np.linalg.solve(a, x)

    schur = MissingCellSchur(solve, missing, N, columns_per_pass=per_pass)
    extra = rng.standard_normal((N, 2))
    p_extra = schur.factor(extra)
    assert_allclose(p_extra, np.linalg.solve(a, extra))
    assert max(calls) <= per_pass and sum(calls) == missing.size + 2
    want = np.linalg.slogdet(np.linalg.inv(a)[np.ix_(missing, missing)])[1]
    assert_allclose(schur.logdet(), want)


def test_columns_shortcut_and_diagonal_callback(rng):
    a, missing, _ = _problem(rng)
    p = np.linalg.inv(a)
    seen = []

    def columns(cells):
        seen.append(cells.copy())
        return p[:, cells]

    schur = MissingCellSchur(
        _solver(a),
        missing,
        N,
        columns=columns,
        diagonal=lambda: np.diag(p)[missing],
        columns_per_pass=5,
    )
    pmm, p_extra = schur.form_pmm(np.eye(N)[:, :2])
    assert_allclose(pmm, p[np.ix_(missing, missing)])
    assert_allclose(p_extra, p[:, :2])
    assert_allclose(np.concatenate(seen), missing)
    assert_allclose(schur.diagonal(), np.diag(p)[missing])


def test_cg_solve_and_observed_solve_within_tolerance(rng):
    a, missing, observed = _problem(rng, m=20)
    schur = MissingCellSchur(
        _solver(a), missing, N, method="cg", tol=1e-11, matvec_columns=2
    )
    pmm = np.linalg.inv(a)[np.ix_(missing, missing)]
    b = rng.standard_normal((missing.size, 5))
    want = np.linalg.solve(pmm, b)
    got = schur.solve(b)
    assert not schur.factored and 0 < schur.iterations <= missing.size
    assert schur.residual <= 1e-11
    # relative error <= condition number x relative residual
    cond = np.linalg.cond(pmm)
    assert np.linalg.norm(got - want) <= 2 * cond * 1e-11 * np.linalg.norm(want)
    y = rng.standard_normal((N, 1))
    alpha = schur.observed_solve(y)
    want_o = np.linalg.solve(a[np.ix_(observed, observed)], y[observed])
    assert_allclose(alpha[observed], want_o, rtol=1e-8, atol=1e-9)
    assert_allclose(alpha[missing], 0.0)


def test_cg_solve_direct_forms_the_factor_when_it_pays(rng):
    a, missing, _ = _problem(rng)
    schur = MissingCellSchur(_solver(a), missing, N, method="cg")
    # CG costs about CG_ITERATIONS solves per column, the factor m solves
    assert schur.factor_pays(1) == (_budgets.CG_ITERATIONS > missing.size)
    assert schur.factor_pays(missing.size)
    many = np.arange(3 * _budgets.CG_ITERATIONS)
    big = MissingCellSchur(lambda x: x, many, many.size + 1, method="cg")
    assert not big.factor_pays(1)
    b = rng.standard_normal((missing.size, missing.size))
    got = schur.solve_direct(b)
    assert schur.factored
    pmm = np.linalg.inv(a)[np.ix_(missing, missing)]
    assert_allclose(got, np.linalg.solve(pmm, b), rtol=1e-9)
    cheap = MissingCellSchur(_solver(a), missing, N, method="cg", cheap_factor=True)
    assert cheap.factor_pays(1)


def test_logdet_estimate_with_exact_whitening_is_exact(rng):
    """With the whitening L of P_mm itself, N = I: the quadrature is exact."""
    a, missing, _ = _problem(rng)
    pmm = np.linalg.inv(a)[np.ix_(missing, missing)]
    low = np.linalg.cholesky(pmm)

    class Exact:
        logdet = 2.0 * float(np.sum(np.log(np.diag(low))))

        def half_inv(self, v):
            return np.linalg.solve(low, v)

        def half_inv_t(self, v):
            return np.linalg.solve(low.T, v)

        def solve(self, v):
            return np.linalg.solve(pmm, v)

    schur = MissingCellSchur(_solver(a), missing, N, method="cg", whitening=Exact)
    probes = rng.choice([-1.0, 1.0], size=(missing.size, 4))
    est = schur.logdet_estimate(probes)
    assert_allclose(est.logdet, np.linalg.slogdet(pmm)[1])
    assert est.std_error < 1e-10
    # left_j = P_mm^{-1} z_j and right_j = L^{-T} z_j
    assert_allclose(est.left, np.linalg.solve(low.T, probes), rtol=1e-8, atol=1e-10)


def test_logdet_and_trace_estimates_within_their_standard_error(rng):
    a, missing, _ = _problem(rng, m=20)
    pmm = np.linalg.inv(a)[np.ix_(missing, missing)]
    schur = MissingCellSchur(_solver(a), missing, N, method="cg")
    k = 400
    probes = rng.choice([-1.0, 1.0], size=(missing.size, k))
    est = schur.logdet_estimate(probes)
    assert isinstance(schur.whitening, DiagonalWhitening)
    assert 0 < est.std_error and est.steps <= missing.size
    assert abs(est.logdet - np.linalg.slogdet(pmm)[1]) <= 4.0 * est.std_error
    x = random_spd(missing.size, random_state=rng)
    terms = np.sum(est.left * (x @ est.right), axis=0)
    std = terms.std(ddof=1) / np.sqrt(k)
    want = np.trace(np.linalg.solve(pmm, x))
    assert abs(terms.mean() - want) <= 4.0 * std
    # the whitening now preconditions CG
    b = rng.standard_normal((missing.size, 2))
    assert_allclose(schur.solve(b), np.linalg.solve(pmm, b), rtol=1e-8)


def test_cg_non_convergence_warns(rng):
    a, missing, _ = _problem(rng, m=20)
    schur = MissingCellSchur(_solver(a), missing, N, method="cg", max_iter=1)
    with pytest.warns(ConvergenceWarning, match="missing-cell"):
        schur.solve(rng.standard_normal((missing.size, 1)))
    assert schur.iterations == 1 and schur.residual > 1e-10


def test_singular_schur_complement_raises(rng):
    _, missing, _ = _problem(rng)
    schur = MissingCellSchur(lambda x: -x, missing, N)
    with pytest.raises(np.linalg.LinAlgError, match="increase the noise"):
        schur.logdet()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "slq"}, ValueError, "method must be"),
        ({"missing": []}, ValueError, "non-empty"),
        ({"missing": [[1, 2]]}, ValueError, "1-D"),
        ({"missing": [1.0, 2.0]}, ValueError, "integers"),
        ({"missing": [1, 1]}, ValueError, "repeated"),
        ({"missing": [0, N]}, ValueError, "lie in"),
        ({"missing": [-1]}, ValueError, "lie in"),
        ({"n_cells": 0}, ValueError, "n_cells must be positive"),
        ({"solve_full": "P"}, TypeError, "solve_full must be"),
    ],
)
def test_bad_input_raises(kwargs, exc, match):
    args = {"solve_full": lambda x: x, "missing": [1, 2], "n_cells": N}
    args.update(kwargs)
    solve_full, missing, n_cells = (
        args.pop("solve_full"),
        args.pop("missing"),
        args.pop("n_cells"),
    )
    with pytest.raises(exc, match=match):
        MissingCellSchur(solve_full, missing, n_cells, **args)


@pytest.mark.parametrize("quad_tol", [None, 1e-8])
def test_split_solve_accumulates_the_trace_columns_half(quad_tol, rng):
    """With P = B(H(.)), the estimator returns H E_m left and H E_m right."""
    a, missing, _ = _problem(rng, m=20)
    w, v = np.linalg.eigh(np.linalg.inv(a))

    def half(x):
        return w[:, None] * (v.T @ x)

    def back(x):
        return v @ x

    plain = MissingCellSchur(_solver(a), missing, N, method="cg")
    split = MissingCellSchur(
        _solver(a), missing, N, method="cg", solve_half=(half, back), matvec_columns=3
    )
    probes = rng.choice([-1.0, 1.0], size=(missing.size, 7))
    probes[:, 2] = 0.0  # a zero probe moves nothing
    want = plain.logdet_estimate(probes, quad_tol=quad_tol)
    est = split.logdet_estimate(probes, quad_tol=quad_tol)
    assert want.left_half is None
    assert_allclose(est.logdet, want.logdet, rtol=1e-12)
    assert_allclose(est.left, want.left, rtol=1e-10, atol=1e-12)
    assert_allclose(est.right, want.right, rtol=1e-12, atol=1e-14)
    scale = np.abs(est.left_half).max()
    assert_allclose(
        est.left_half, half(split.pad(est.left)), rtol=1e-9, atol=1e-12 * scale
    )
    assert_allclose(est.right_half, half(split.pad(est.right)), rtol=1e-12, atol=1e-14)
    assert np.all(est.left_half[:, 2] == 0) and np.all(est.right_half[:, 2] == 0)
