"""State-space (Kalman) route for Markov time axes against dense GP algebra."""

import numpy as np
import pytest
import scipy.linalg
from sklearn.gaussian_process.kernels import (
    RBF,
    ConstantKernel,
    DotProduct,
    ExpSineSquared,
    Matern,
    RationalQuadratic,
    WhiteKernel,
)

import kronecker_gp.linalg.kalman._filter as kalman
from kronecker_gp.kernels._markov import is_markov_kernel, kernel_to_state_space
from kronecker_gp.linalg._eigenbasis import (
    factor_gradient_matrix,
    factorize,
    lml_gradient,
)
from kronecker_gp.linalg.kalman._filter import step_tables
from kronecker_gp.linalg.kalman._model import discretize
from kronecker_gp.solvers._kalman_series import (
    ssm_grid_moments,
    ssm_log_marginal_likelihood,
    ssm_predict,
    ssm_sample,
    ssm_solve,
)
from kronecker_gp.testing import EIG_RTOL, assert_allclose

# Finite differences use the 4th-order central stencil with step FD_STEP: truncation
# error ~ FD_STEP**4 and round-off ~ 1e-16 / FD_STEP, both far below EIG_RTOL.
FD_STEP = 1e-3

MARKOV_KERNELS = [
    Matern(length_scale=1.3, nu=0.5),
    Matern(length_scale=2.0, nu=1.5),
    Matern(length_scale=0.7, nu=2.5),
    ConstantKernel(2.5) * Matern(length_scale=1.5, nu=1.5),
    Matern(length_scale=[0.9], nu=2.5) * ConstantKernel(0.4),
    ConstantKernel(1.2) * Matern(3.0, nu=0.5)
    + ConstantKernel(0.3) * Matern(0.5, nu=2.5),
    ConstantKernel(0.6) * (Matern(2.0, nu=1.5) + Matern(0.4, nu=0.5)),
    Matern(1.0, nu=1.5) + ConstantKernel(0.25),
    ConstantKernel(1.5, constant_value_bounds="fixed")
    * Matern(2.0, nu=2.5, length_scale_bounds="fixed")
    + ConstantKernel(0.5) * Matern(0.3, nu=0.5),
]
KERNEL_IDS = [str(i) for i in range(len(MARKOV_KERNELS))]
TIME_KERNEL = ConstantKernel(1.3) * Matern(2.0, nu=1.5) + ConstantKernel(0.4) * Matern(
    0.6, nu=0.5
)
NOISE = 0.3


def fd_gradient(f, theta):
    """4th-order central differences of array-valued ``f`` in each theta entry."""
    h = FD_STEP
    columns = []
    for i in range(theta.shape[0]):
        e = np.zeros_like(theta)
        e[i] = h
        columns.append(
            (-f(theta + 2 * e) + 8 * f(theta + e) - 8 * f(theta - e) + f(theta - 2 * e))
            / (12 * h)
        )
    return np.stack(columns, axis=-1)


def _times(kind, rng, n=40):
    if kind == "regular":
        return 0.25 * np.arange(n) + 3.0
    return np.sort(rng.uniform(0.0, 12.0, size=n))


def _series(rng, n_t, weights=(2.0, 0.7, 0.05, 0.0)):
    w = np.asarray(weights)
    return rng.standard_normal((w.size, n_t)), w


def _dense_series(kernel, t, w, noise):
    """Per-series dense covariances ``w_i K_t + sI`` and ``K_t``."""
    kt = kernel(t[:, None])
    return [wi * kt + noise * np.eye(t.size) for wi in w], kt


def _dense_lml_and_grad(kernel, t, Y, w, noise):
    """LML and its analytic gradient by Cholesky on every series."""
    covs, kt = _dense_series(kernel, t, w, noise)
    _, dkt = kernel(t[:, None], eval_gradient=True)
    lml, g_theta, g_w, g_s = 0.0, np.zeros(dkt.shape[2]), np.zeros(w.size), 0.0
    for i, c in enumerate(covs):
        factor = scipy.linalg.cho_factor(c)
        a = scipy.linalg.cho_solve(factor, Y[i])
        inv = scipy.linalg.cho_solve(factor, np.eye(t.size))
        lml += -0.5 * Y[i] @ a - np.log(np.diag(factor[0])).sum()
        lml -= 0.5 * t.size * np.log(2 * np.pi)
        inner = np.outer(a, a) - inv
        g_theta += 0.5 * w[i] * np.einsum("ij,ijp->p", inner, dkt)
        g_w[i] = 0.5 * np.sum(inner * kt)
        g_s += 0.5 * noise * np.trace(inner)
    return lml, g_theta, g_w, g_s


# ----------------------------------------------------------------- conversion
@pytest.mark.parametrize("kernel", MARKOV_KERNELS, ids=KERNEL_IDS)
def test_state_space_covariance_equals_kernel(kernel):
    ssm = kernel_to_state_space(kernel)
    taus = np.array([0.0, 0.1, 0.7, 1.9, 4.2])
    values = [
        (ssm.H @ scipy.linalg.expm(ssm.F * t) @ ssm.Pinf @ ssm.H.T)[0, 0] for t in taus
    ]
    assert_allclose(values, kernel(np.zeros((1, 1)), taus[:, None])[0])
    assert ssm.n_theta == kernel.theta.size
    assert ssm.state_dim == ssm.Pinf.shape[0] == ssm.H.shape[1]


@pytest.mark.parametrize("kernel", MARKOV_KERNELS, ids=KERNEL_IDS)
def test_stationary_covariance_solves_lyapunov(kernel):
    ssm = kernel_to_state_space(kernel)
    residual = ssm.F @ ssm.Pinf + ssm.Pinf @ ssm.F.T + ssm.L @ ssm.Qc @ ssm.L.T
    assert_allclose(residual, 0.0, atol=1e-12 * np.abs(ssm.L @ ssm.Qc @ ssm.L.T).max())


@pytest.mark.parametrize("kernel", MARKOV_KERNELS, ids=KERNEL_IDS)
def test_discretize_matches_expm(kernel):
    ssm = kernel_to_state_space(kernel)
    gaps = np.array([0.0, 0.05, 0.5, 3.0, 40.0])
    a, q = discretize(ssm, gaps)
    for g, a_g, q_g in zip(gaps, a, q):
        ref = scipy.linalg.expm(ssm.F * g)
        assert_allclose(a_g, ref, atol=1e-12)
        assert_allclose(q_g, ssm.Pinf - ref @ ssm.Pinf @ ref.T, atol=1e-12)


@pytest.mark.parametrize("kernel", MARKOV_KERNELS, ids=KERNEL_IDS)
def test_model_derivatives_match_finite_differences(kernel):
    ssm = kernel_to_state_space(kernel)
    gaps = np.array([0.3, 2.0])
    _, _, da, dq = discretize(ssm, gaps, eval_gradient=True)

    def model(theta):
        m = kernel_to_state_space(kernel.clone_with_theta(theta))
        a, q = discretize(m, gaps)
        return np.concatenate(
            [m.F.ravel(), m.Qc.ravel(), m.Pinf.ravel(), a.ravel(), q.ravel()]
        )

    fd = fd_gradient(model, kernel.theta)
    mine = np.concatenate(
        [
            ssm.dF.reshape(ssm.n_theta, -1),
            ssm.dQc.reshape(ssm.n_theta, -1),
            ssm.dPinf.reshape(ssm.n_theta, -1),
            np.moveaxis(da, 1, 0).reshape(ssm.n_theta, -1),
            np.moveaxis(dq, 1, 0).reshape(ssm.n_theta, -1),
        ],
        axis=1,
    ).T
    assert_allclose(mine, fd, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(fd).max())


@pytest.mark.parametrize(
    ("kernel", "match"),
    [
        (RBF(1.0), "RBF.*Matern\\(nu=0.5\\), Matern\\(nu=1.5\\) or Matern\\(nu=2.5\\)"),
        (Matern(1.0, nu=np.inf), "nu=inf is not Markov"),
        (Matern(1.0, nu=3.5), "nu=3.5 is not Markov"),
        (RationalQuadratic(), "RationalQuadratic"),
        (ConstantKernel() * ExpSineSquared(), "ExpSineSquared"),
        (WhiteKernel(0.1), "WhiteKernel"),
        (DotProduct(), "DotProduct"),
        (Matern(1.0, nu=0.5) * Matern(2.0, nu=1.5), "product of two Matern"),
        (Matern([1.0, 2.0], nu=1.5), "length_scale has 2 entries"),
        (Matern(1.0, nu=1.5) + RBF(1.0), "RBF"),
    ],
)
def test_unsupported_kernels_name_the_markov_alternatives(kernel, match):
    with pytest.raises(ValueError, match=match):
        kernel_to_state_space(kernel)
    with pytest.raises(ValueError, match="Use a Markov kernel on this axis"):
        ssm_log_marginal_likelihood(
            kernel, np.arange(3.0), np.zeros((1, 3)), [1.0], 0.1
        )


def test_is_markov_kernel():
    assert all(is_markov_kernel(k) for k in MARKOV_KERNELS)
    assert not is_markov_kernel(RBF(1.0))
    assert not is_markov_kernel(Matern(1.0, nu=1.5) * Matern(1.0, nu=0.5))
    assert not is_markov_kernel("matern")


def test_non_kernel_raises_type_error():
    with pytest.raises(TypeError, match="kernel must be a scikit-learn Kernel"):
        kernel_to_state_space("matern")


# ------------------------------------------------------ log marginal likelihood
@pytest.mark.parametrize("kind", ["regular", "irregular"])
@pytest.mark.parametrize("kernel", [MARKOV_KERNELS[2], TIME_KERNEL, MARKOV_KERNELS[7]])
def test_lml_and_gradient_match_dense(kind, kernel, rng):
    t = _times(kind, rng)
    Y, w = _series(rng, t.size)
    lml, grad = ssm_log_marginal_likelihood(kernel, t, Y, w, NOISE, eval_gradient=True)
    ref, g_theta, g_w, g_s = _dense_lml_and_grad(kernel, t, Y, w, NOISE)
    assert_allclose(lml, ref)
    assert_allclose(ssm_log_marginal_likelihood(kernel, t, Y, w, NOISE), ref)
    assert_allclose(grad.theta, g_theta, rtol=1e-9, atol=1e-9 * np.abs(g_theta).max())
    assert_allclose(grad.weights, g_w, rtol=1e-9, atol=1e-9 * np.abs(g_w).max())
    assert_allclose(grad.log_noise, g_s, rtol=1e-9)
    assert_allclose(np.diag(grad.space), grad.weights)


def test_gradient_matches_finite_differences(rng):
    t = _times("irregular", rng, n=30)
    Y, w = _series(rng, t.size, weights=(1.5, 0.4, 0.02))
    kernel = TIME_KERNEL
    params = np.concatenate([kernel.theta, np.log(w), [np.log(NOISE)]])

    def lml(p):
        k = kernel.clone_with_theta(p[: kernel.theta.size])
        w_p = np.exp(p[kernel.theta.size : -1])
        return ssm_log_marginal_likelihood(k, t, Y, w_p, float(np.exp(p[-1])))

    _, grad = ssm_log_marginal_likelihood(kernel, t, Y, w, NOISE, eval_gradient=True)
    mine = np.concatenate([grad.theta, grad.weights * w, [grad.log_noise]])
    assert_allclose(mine, fd_gradient(lml, params), rtol=EIG_RTOL)


def test_space_gradient_matches_dense_grid(rng):
    sites = rng.uniform(0.0, 3.0, size=(5, 2))
    t = _times("irregular", rng, n=12)
    k_s = ConstantKernel(1.4) * RBF([0.8, 1.6])
    Y = rng.standard_normal((5, t.size))
    K_s, dK_s = k_s(sites, eval_gradient=True)
    w, U = np.linalg.eigh(K_s)
    lml, grad = ssm_log_marginal_likelihood(
        TIME_KERNEL, t, U.T @ Y, w, NOISE, eval_gradient=True
    )
    K_t, dK_t = TIME_KERNEL(t[:, None], eval_gradient=True)
    C = np.kron(K_s, K_t) + NOISE * np.eye(Y.size)
    a = np.linalg.solve(C, Y.reshape(-1))
    inner = np.outer(a, a) - np.linalg.inv(C)
    ref_space = [0.5 * np.sum(inner * np.kron(dK_s[:, :, p], K_t)) for p in range(3)]
    ref_time = [0.5 * np.sum(inner * np.kron(K_s, dK_t[:, :, p])) for p in range(4)]
    ref_lml = -0.5 * (
        a @ Y.reshape(-1) + np.linalg.slogdet(C)[1] + Y.size * np.log(2 * np.pi)
    )
    assert_allclose(lml, ref_lml)
    space = np.einsum("ijp,ij->p", dK_s, U @ grad.space @ U.T)
    assert_allclose(space, ref_space, rtol=1e-9)
    assert_allclose(grad.theta, ref_time, rtol=1e-9)


def test_matches_eigen_route(rng):
    sites = rng.uniform(0.0, 3.0, size=(4, 1))
    t = _times("regular", rng, n=60)
    k_s = ConstantKernel(0.8) * Matern(1.1, nu=2.5)
    Y = rng.standard_normal((4, t.size))
    K_s, dK_s = k_s(sites, eval_gradient=True)
    K_t, dK_t = TIME_KERNEL(t[:, None], eval_gradient=True)
    post, ref = factorize([K_s, K_t], NOISE, Y.reshape(-1))
    ref_grad = lml_gradient(post, [dK_s, dK_t])
    w, U = np.linalg.eigh(K_s)
    lml, grad = ssm_log_marginal_likelihood(
        TIME_KERNEL, t, U.T @ Y, w, NOISE, eval_gradient=True
    )
    space = np.einsum("ijp,ij->p", dK_s, U @ grad.space @ U.T)
    assert_allclose(lml, ref, rtol=EIG_RTOL)
    assert_allclose(
        np.concatenate([space, grad.theta, [grad.log_noise]]), ref_grad, rtol=EIG_RTOL
    )
    assert_allclose(
        U @ grad.space @ U.T, factor_gradient_matrix(post, 0), rtol=EIG_RTOL
    )


def test_alpha_and_k_alpha(rng):
    t = _times("irregular", rng)
    Y, w = _series(rng, t.size)
    _, grad = ssm_log_marginal_likelihood(
        TIME_KERNEL, t, Y, w, NOISE, eval_gradient=True
    )
    covs, K_t = _dense_series(TIME_KERNEL, t, w, NOISE)
    alpha = np.stack([np.linalg.solve(c, y) for c, y in zip(covs, Y)])
    assert_allclose(grad.alpha, alpha)
    assert_allclose(grad.k_alpha, alpha @ K_t, atol=1e-12)


def test_multi_factor_rotation_matches_dense(rng):
    # task x site x time: rotate both non-time factors, weights are their outer
    # product, and the rotated Gram gradient contracts to each factor
    t = _times("irregular", rng, n=10)
    K_a = np.array([[1.0, 0.6, 0.2], [0.6, 1.2, 0.3], [0.2, 0.3, 0.8]])
    sites = rng.uniform(0.0, 2.0, size=(4, 1))
    k_b = ConstantKernel(1.1) * RBF(0.7)
    K_b, dK_b = k_b(sites, eval_gradient=True)
    Y = rng.standard_normal((3, 4, t.size))
    w_a, U_a = np.linalg.eigh(K_a)
    w_b, U_b = np.linalg.eigh(K_b)
    U = np.kron(U_a, U_b)
    lml, grad = ssm_log_marginal_likelihood(
        TIME_KERNEL,
        t,
        U.T @ Y.reshape(12, -1),
        np.outer(w_a, w_b).ravel(),
        NOISE,
        eval_gradient=True,
    )
    K_t = TIME_KERNEL(t[:, None])
    C = np.kron(np.kron(K_a, K_b), K_t) + NOISE * np.eye(Y.size)
    a = np.linalg.solve(C, Y.reshape(-1))
    ref = -0.5 * (
        a @ Y.reshape(-1) + np.linalg.slogdet(C)[1] + Y.size * np.log(2 * np.pi)
    )
    assert_allclose(lml, ref)
    # dK~ = diag(w_a) (x) (U_b^T dK_b U_b): M~_b[i, j] = sum_c w_a[c] G[(c,i), (c,j)]
    g4 = grad.space.reshape(3, 4, 3, 4)
    m_b = U_b @ np.einsum("c,cicj->ij", w_a, g4) @ U_b.T
    inner = np.outer(a, a) - np.linalg.inv(C)
    ref_b = [
        0.5 * np.sum(inner * np.kron(np.kron(K_a, dK_b[:, :, p]), K_t))
        for p in range(2)
    ]
    assert_allclose(np.einsum("ijp,ij->p", dK_b, m_b), ref_b, rtol=1e-9)


def test_frozen_gains_equal_full_filter(rng, monkeypatch):
    # a long regular axis: the Riccati recursion converges and the gains freeze
    t = np.arange(3000.0) * 0.1
    Y, w = _series(rng, t.size)
    kernel = ConstantKernel(1.3) * Matern(0.8, nu=2.5)
    lml, grad = ssm_log_marginal_likelihood(kernel, t, Y, w, NOISE, eval_gradient=True)
    x = ssm_solve(kernel, t, w, NOISE, Y)
    monkeypatch.setattr(kalman, "STEADY_RTOL", -1.0)  # never freeze
    lml_full, grad_full = ssm_log_marginal_likelihood(
        kernel, t, Y, w, NOISE, eval_gradient=True
    )
    # an LML's rounding error scales with its O(N) terms, not with its value
    assert_allclose(lml, lml_full, rtol=1e-13, atol=1e-13 * Y.size)
    for mine, full in zip(grad, grad_full):
        assert_allclose(mine, full, rtol=1e-11, atol=1e-11 * np.abs(full).max())
    assert_allclose(x, ssm_solve(kernel, t, w, NOISE, Y), rtol=1e-11, atol=1e-12)


def test_gaps_differing_by_rounding_share_one_transition(rng):
    t = 1000.0 + 0.1 * np.arange(200)  # float gaps differ in the last bits
    assert np.unique(np.diff(t)).size > 1
    tab = step_tables(kernel_to_state_space(TIME_KERNEL), t, False)
    assert tab.A.shape[0] == 2  # the prior step and one gap
    Y, w = _series(rng, t.size)
    ref = _dense_lml_and_grad(TIME_KERNEL, t, Y, w, NOISE)[0]
    assert_allclose(ssm_log_marginal_likelihood(TIME_KERNEL, t, Y, w, NOISE), ref)


def test_repeated_times_and_single_step(rng):
    t = np.array([0.0, 0.5, 0.5, 1.5, 1.5, 1.5, 4.0])
    Y, w = _series(rng, t.size)
    ref = _dense_lml_and_grad(TIME_KERNEL, t, Y, w, NOISE)[0]
    assert_allclose(ssm_log_marginal_likelihood(TIME_KERNEL, t, Y, w, NOISE), ref)
    one = ssm_log_marginal_likelihood(TIME_KERNEL, [2.0], Y[:, :1], w, NOISE)
    var = w * TIME_KERNEL.diag(np.zeros((1, 1)))[0] + NOISE
    assert_allclose(one, np.sum(-0.5 * (Y[:, 0] ** 2 / var + np.log(2 * np.pi * var))))


# ----------------------------------------------------------------------- solve
@pytest.mark.parametrize("kind", ["regular", "irregular"])
def test_solve_matches_dense(kind, rng):
    t = _times(kind, rng)
    _, w = _series(rng, t.size)
    B = rng.standard_normal((w.size, t.size, 3))
    X = ssm_solve(TIME_KERNEL, t, w, NOISE, B)
    covs, _ = _dense_series(TIME_KERNEL, t, w, NOISE)
    ref = np.stack([np.linalg.solve(c, b) for c, b in zip(covs, B)])
    assert X.shape == B.shape
    scale = np.abs(ref).max()  # entries near zero: slack scaled by the largest
    assert_allclose(X, ref, atol=1e-12 * scale)
    assert_allclose(
        ssm_solve(TIME_KERNEL, t, w, NOISE, B[:, :, 1]),
        ref[:, :, 1],
        atol=1e-12 * scale,
    )


def test_solve_with_tiny_noise_keeps_accuracy(rng):
    # no ``(b - mean) / s`` cancellation: the adjoint pass never divides by s
    t = _times("irregular", rng, n=30)
    w = np.array([1.0, 0.5])
    B = rng.standard_normal((2, t.size))
    X = ssm_solve(MARKOV_KERNELS[0], t, w, 1e-6, B)
    covs, _ = _dense_series(MARKOV_KERNELS[0], t, w, 1e-6)
    residual = np.stack([c @ x for c, x in zip(covs, X)]) - B
    assert_allclose(residual, 0.0, atol=1e-12 * np.abs(B).max())


# ------------------------------------------------------------------- posterior
@pytest.mark.parametrize("kind", ["regular", "irregular"])
def test_predict_matches_dense_on_and_off_grid(kind, rng):
    t = _times(kind, rng, n=30)
    Y, w = _series(rng, t.size)
    query = np.array([t[4], -2.0, 0.5 * (t[7] + t[8]), t[-1] + 3.0, t[0], 6.1])
    pred = ssm_predict(TIME_KERNEL, t, Y, w, NOISE, pred_times=query)
    covs, _ = _dense_series(TIME_KERNEL, t, w, NOISE)
    k_star = TIME_KERNEL(query[:, None], t[:, None])
    k_diag = TIME_KERNEL.diag(query[:, None])
    for i, c in enumerate(covs):
        beta = k_star @ np.linalg.solve(c, Y[i])
        gamma = np.einsum("ij,ji->i", k_star, np.linalg.solve(c, k_star.T))
        assert_allclose(pred.beta[i], beta)
        assert_allclose(pred.gamma[i], gamma)
        assert_allclose(pred.mean[i], w[i] * beta)
        assert_allclose(pred.var[i], w[i] * k_diag - w[i] ** 2 * gamma, atol=1e-12)
    grid = ssm_predict(TIME_KERNEL, t, Y, w, NOISE)
    at_grid = ssm_predict(TIME_KERNEL, t, Y, w, NOISE, pred_times=t)
    for a, b in zip(grid, at_grid):
        assert_allclose(a, b)


@pytest.mark.parametrize("query", ["train", "early_queries"])
def test_frozen_predict_equals_unfrozen_and_dense(query, rng):
    # a long regular axis: the filter (with D tracked) and the backward
    # covariance recursion both freeze on the observed tail
    t = np.arange(600.0) * 0.2
    Y, w = _series(rng, t.size)
    kernel = ConstantKernel(1.3) * Matern(0.8, nu=1.5)
    pred_times = None if query == "train" else np.array([0.3, 1.1, 2.5])
    tab = step_tables(kernel_to_state_space(kernel), t, False)
    filt = kalman.filter_store(tab, Y.T[:, :, None].copy(), w, NOISE, track_d=True)
    assert filt.frozen_from < t.size // 2  # it froze (else this test shows nothing)
    pred = ssm_predict(kernel, t, Y, w, NOISE, pred_times=pred_times)
    beta_only, none = ssm_grid_moments(
        kernel, t, Y, w, NOISE, pred_times=pred_times, variance=False
    )
    beta_tm, gamma_tm = ssm_grid_moments(kernel, t, Y, w, NOISE, pred_times=pred_times)
    assert none is None
    assert_allclose(beta_only.T, pred.beta, rtol=1e-11, atol=1e-12)
    assert_allclose(beta_tm.T, pred.beta, rtol=1e-12, atol=1e-13)
    assert_allclose(gamma_tm.T, pred.gamma, rtol=1e-12, atol=1e-13)
    q = t if pred_times is None else pred_times
    k_star = kernel(q[:, None], t[:, None])
    for i, c in enumerate(_dense_series(kernel, t, w, NOISE)[0]):
        assert_allclose(pred.beta[i], k_star @ np.linalg.solve(c, Y[i]), rtol=1e-9)
        gamma = np.einsum("ij,ji->i", k_star, np.linalg.solve(c, k_star.T))
        assert_allclose(pred.gamma[i], gamma, rtol=1e-9)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kalman, "STEADY_RTOL", -1.0)  # never freeze
        full = ssm_predict(kernel, t, Y, w, NOISE, pred_times=pred_times)
    for mine, ref in zip(pred, full):
        assert_allclose(mine, ref, rtol=1e-11, atol=1e-13 * np.abs(ref).max())


def test_filter_freezes_only_on_an_observed_tail(rng):
    t = np.arange(400.0) * 0.2
    tab = step_tables(kernel_to_state_space(Matern(0.5, nu=1.5)), t, False)
    y = rng.standard_normal((t.size, 2, 1))
    obs = np.ones(t.size, dtype=bool)
    obs[350] = False  # one unobserved step late: no freezing before it
    filt = kalman.filter_store(tab, y, np.array([1.0, 0.2]), NOISE, obs, track_d=True)
    assert 350 < filt.frozen_from < t.size
    assert kalman.observed_from(obs, t.size) == 351
    assert kalman.observed_from(None, t.size) == 0
    kept = kalman.filter_store(tab, y, np.array([1.0, 0.2]), NOISE, keep=True)
    assert kept.frozen_from == t.size  # the kept covariances are never frozen


def test_predict_mean_is_weighted_solve(rng):
    t = _times("irregular", rng)
    Y, w = _series(rng, t.size)
    pred = ssm_predict(TIME_KERNEL, t, Y, w, NOISE)
    alpha = ssm_solve(TIME_KERNEL, t, w, NOISE, Y)
    assert_allclose(pred.mean, Y - NOISE * alpha, atol=1e-12)


def test_samples_have_the_dense_posterior_moments(rng):
    t = _times("irregular", rng, n=15)
    Y, w = _series(rng, t.size, weights=(1.5, 0.2))
    query = np.concatenate([t[::3], [-1.0, 5.5, 13.0]])
    n_samples = 20000
    f = ssm_sample(
        TIME_KERNEL,
        t,
        Y,
        w,
        NOISE,
        pred_times=query,
        n_samples=n_samples,
        random_state=7,
    )
    assert f.shape == (2, query.size, n_samples)
    covs, _ = _dense_series(TIME_KERNEL, t, w, NOISE)
    k_star = TIME_KERNEL(query[:, None], t[:, None])
    for i, c in enumerate(covs):
        mean = w[i] * k_star @ np.linalg.solve(c, Y[i])
        cov = w[i] * TIME_KERNEL(query[:, None])
        cov -= w[i] ** 2 * k_star @ np.linalg.solve(c, k_star.T)
        sd = np.sqrt(np.diag(cov))
        # Monte Carlo: mean error ~ sd / sqrt(n); covariance error ~ sd_i sd_j
        # sqrt(2 / n). 5 standard errors bound every entry with overwhelming
        # probability, and the seed fixes the draw.
        se = 5.0 / np.sqrt(n_samples)
        assert np.all(np.abs(f[i].mean(axis=1) - mean) <= se * sd)
        emp = np.cov(f[i])
        assert np.all(np.abs(emp - cov) <= se * np.sqrt(2.0) * np.outer(sd, sd))


def test_samples_are_reproducible_and_zero_for_zero_weight(rng):
    t = _times("regular", rng, n=10)
    Y, _ = _series(rng, t.size)
    w = np.array([1.0, 0.0, 0.3, 2.0])
    a = ssm_sample(TIME_KERNEL, t, Y, w, NOISE, n_samples=3, random_state=1)
    b = ssm_sample(
        TIME_KERNEL, t, Y, w, NOISE, n_samples=3, random_state=np.random.default_rng(1)
    )
    assert_allclose(a, b)
    assert_allclose(a[1], 0.0)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("times", "Y", "weights", "noise", "match"),
    [
        ([0.0, 2.0, 1.0], np.zeros((1, 3)), [1.0], 0.1, "times must be sorted"),
        (
            [[0.0, 1.0], [1.0, 2.0]],
            np.zeros((1, 2)),
            [1.0],
            0.1,
            "times must be a finite",
        ),
        ([0.0, np.nan], np.zeros((1, 2)), [1.0], 0.1, "times must be a finite"),
        (
            [0.0, 1.0],
            np.zeros((1, 3)),
            [1.0],
            0.1,
            r"Y_rot must have shape \(n_series, n_times=2",
        ),
        (
            [0.0, 1.0],
            [[0.0, np.nan]],
            [1.0],
            0.1,
            "Y_rot must be finite.*Missing cells",
        ),
        ([0.0, 1.0], np.zeros((2, 2)), [1.0], 0.1, "weights must be 2 finite non-neg"),
        ([0.0, 1.0], np.zeros((1, 2)), [-1.0], 0.1, "weights must be 1 .*minimum -1"),
        ([0.0, 1.0], np.zeros((1, 2)), [1.0], 0.0, "noise must be a positive"),
    ],
)
def test_bad_inputs_raise(times, Y, weights, noise, match):
    with pytest.raises(ValueError, match=match):
        ssm_log_marginal_likelihood(TIME_KERNEL, times, Y, weights, noise)


def test_bad_solve_predict_sample_inputs_raise():
    t = np.arange(3.0)
    with pytest.raises(ValueError, match=r"B must have shape \(S, n_t\) or"):
        ssm_solve(TIME_KERNEL, t, [1.0], 0.1, np.zeros(3))
    with pytest.raises(ValueError, match="B must be finite"):
        ssm_solve(TIME_KERNEL, t, [1.0], 0.1, np.full((1, 3, 2), np.inf))
    with pytest.raises(ValueError, match="pred_times must be a finite 1-D"):
        ssm_predict(
            TIME_KERNEL, t, np.zeros((1, 3)), [1.0], 0.1, pred_times=np.zeros((2, 2))
        )
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        ssm_sample(TIME_KERNEL, t, np.zeros((1, 3)), [1.0], 0.1, n_samples=0)
