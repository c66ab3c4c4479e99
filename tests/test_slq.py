"""Stochastic Lanczos quadrature from CG against dense eigendecompositions."""

import tracemalloc

import numpy as np
import scipy.linalg

from kronecker_gp.linalg._krylov import (
    lanczos_logdet_solve,
    lanczos_tridiagonal,
    preconditioned_lanczos_quadrature,
)
from kronecker_gp.testing import EIG_RTOL, assert_allclose


def _unit_diag_spd(rng, m, spread=0.6):
    q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    a = (q * rng.uniform(1 - spread, 1 + spread, m)) @ q.T
    d = np.sqrt(np.diag(a))
    return a / np.outer(d, d)


def _f_quadratic_forms(a, z):
    w, v = np.linalg.eigh(a)
    f = np.log(w) - w + 1.0
    proj = v.T @ z
    return np.sum(f[:, None] * proj**2, axis=0)


def test_tridiagonal_from_cg_equals_lanczos(rng):
    # CG coefficients give the Lanczos matrix of the same Krylov space
    m, steps = 30, 6
    a = _unit_diag_spd(rng, m)
    z = rng.standard_normal(m)
    x, r = np.zeros(m), z.copy()
    p, rz, alphas, betas = r.copy(), r @ r, [], []
    for _ in range(steps):
        ap = a @ p
        alpha = rz / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        beta = (r @ r) / rz
        p, rz = r + beta * p, r @ r
        alphas.append(alpha)
        betas.append(beta)
    diag, off = lanczos_tridiagonal(np.array(alphas), np.array(betas))
    basis = [z / np.linalg.norm(z)]
    for j in range(steps - 1):  # dense Lanczos with full reorthogonalisation
        w = a @ basis[j]
        for v in basis:
            w -= (v @ w) * v
        basis.append(w / np.linalg.norm(w))
    v = np.column_stack(basis)
    t = v.T @ a @ v
    assert_allclose(diag, np.diag(t), rtol=EIG_RTOL)
    assert_allclose(off, np.diag(t, 1), rtol=EIG_RTOL)


def test_quadrature_and_solves_converge_to_dense(rng):
    m, k = 60, 5
    a = _unit_diag_spd(rng, m)
    z = rng.choice([-1.0, 1.0], size=(m, k))
    trace, std, solves, steps = lanczos_logdet_solve(
        lambda v: a @ v, z, max_steps=m, tol=1e-12
    )
    exact_terms = _f_quadratic_forms(a, z)
    assert_allclose(trace, exact_terms.mean(), rtol=EIG_RTOL)
    assert_allclose(std, exact_terms.std(ddof=1) / np.sqrt(k), rtol=1e-6)
    assert_allclose(solves, np.linalg.solve(a, z), rtol=1e-9, atol=1e-10)
    assert 0 < steps <= m


def test_trace_estimate_within_stated_error(rng):
    m, k = 200, 64
    a = _unit_diag_spd(rng, m, spread=0.8)
    w = np.linalg.eigvalsh(a)
    exact = float(np.sum(np.log(w) - w + 1.0))
    z = rng.choice([-1.0, 1.0], size=(m, k))
    trace, std, _, _ = lanczos_logdet_solve(lambda v: a @ v, z)
    assert 0 < std < 0.2 * abs(exact)
    assert abs(trace - exact) <= 4 * std
    # log|A| = tr f(A) + tr(A - I), and tr(A - I) = 0 for a unit diagonal
    assert abs(trace - np.linalg.slogdet(a)[1]) <= 4 * std


def test_memory_does_not_grow_with_steps(rng):
    # a stored Lanczos basis would need steps x m x k floats (here 80 x m x k)
    m, k = 4000, 16
    w = np.linspace(0.05, 1.95, m)  # slow convergence: many steps

    def matvec(v):
        return w[:, None] * v

    z = rng.choice([-1.0, 1.0], size=(m, k))
    tracemalloc.start()
    _, _, solves, steps = lanczos_logdet_solve(matvec, z, max_steps=80, tol=1e-14)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert steps == 80
    assert peak < 12 * m * k * 8
    assert_allclose(solves, z / w[:, None], rtol=1e-3)


def test_zero_probe_contributes_nothing(rng):
    a = _unit_diag_spd(rng, 10)
    z = np.zeros((10, 2))
    z[:, 0] = rng.choice([-1.0, 1.0], size=10)
    trace, _, solves, _ = lanczos_logdet_solve(
        lambda v: a @ v, z, max_steps=10, tol=1e-13
    )
    assert_allclose(trace, _f_quadratic_forms(a, z[:, :1])[0] / 2, rtol=EIG_RTOL)
    assert np.all(solves[:, 1] == 0)
    assert scipy.linalg.norm(a @ solves[:, 0] - z[:, 0]) < 1e-10


def test_quadrature_stopping_rule_meets_its_tolerance(rng):
    # each probe stops once its quadrature moved by <= quad_tol ||z||^2 (and
    # its residual is <= sqrt(quad_tol)); the Gauss rule then sits within that
    # tolerance of the exact quadratic form, after fewer steps than a run to
    # a tight residual
    m, k, quad_tol = 300, 6, 1e-9
    a = _unit_diag_spd(rng, m, spread=0.7)
    z = rng.choice([-1.0, 1.0], size=(m, k))
    exact_terms = _f_quadratic_forms(a, z)
    trace, std, solves, steps = lanczos_logdet_solve(
        lambda v: a @ v, z, max_steps=m, tol=1e-13, quad_tol=quad_tol
    )
    _, _, _, full_steps = lanczos_logdet_solve(
        lambda v: a @ v, z, max_steps=m, tol=1e-13
    )
    assert steps < full_steps
    assert abs(trace - exact_terms.mean()) <= quad_tol * m
    assert abs(trace - exact_terms.mean()) > 0  # it did stop early
    relres = np.linalg.norm(z - a @ solves, axis=0) / np.linalg.norm(z, axis=0)
    assert np.all(relres <= np.sqrt(quad_tol))
    assert_allclose(std, exact_terms.std(ddof=1) / np.sqrt(k), rtol=1e-3)


def test_preconditioned_lanczos_quadrature_equals_the_dense_form(rng):
    m = 12
    g = rng.standard_normal((m, m))
    a = g @ g.T + m * np.eye(m)
    p = np.diag(rng.uniform(0.5, 3.0, m))  # a diagonal preconditioner
    z = np.sqrt(np.diag(p)) * rng.standard_normal(m)  # z ~ N(0, P)
    half = np.diag(1.0 / np.sqrt(np.diag(p)))
    w, v = np.linalg.eigh(half @ a @ half)
    u = half @ z
    want = u @ v @ np.diag(np.log(w)) @ v.T @ u
    got = preconditioned_lanczos_quadrature(
        lambda x: a @ x, lambda x: np.linalg.solve(p, x), z, steps=m
    )
    assert np.isclose(got, want, rtol=1e-10)
    # fewer steps: a Gauss rule, close but not equal
    few = preconditioned_lanczos_quadrature(
        lambda x: a @ x, lambda x: np.linalg.solve(p, x), z, steps=3
    )
    assert abs(few - want) < 0.1 * abs(want)
