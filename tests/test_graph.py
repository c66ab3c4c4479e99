"""Graph Laplacians, graph kernels and ProductGraphGP against dense references."""

import sys
import warnings
from functools import reduce

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Matern

from kronecker_gp import KroneckerGP
from kronecker_gp.kernels import (
    GraphDiffusionKernel,
    GraphMaternKernel,
    KroneckerKernel,
    chain_laplacian,
    graph_laplacian,
)
from kronecker_gp.kernels._graph import laplacian_eigh
from kronecker_gp.linalg import KroneckerSum
from kronecker_gp.models import ProductGraphGP
from kronecker_gp.testing import EIG_RTOL, assert_allclose

FD_STEP = 1e-6
#: central differences of O(1) quantities with step 1e-6: error ~1e-9
FD_RTOL = 1e-6
#: two L-BFGS-B runs stop at a gradient ~1e-5: the optimal LMLs agree to ~1e-6
OPT_RTOL = 1e-6
#: CG runs to cg_tol=1e-10 on a system with condition number ~10-100
CG_RTOL = 1e-8


# ------------------------------------------------------------------ helpers
def _random_graph(rng, n, p=0.35):
    """A connected random graph: a spanning path plus random weighted edges."""
    a = np.triu((rng.random((n, n)) < p) * rng.uniform(0.5, 2.0, (n, n)), 1)
    a[np.arange(n - 1), np.arange(1, n)] = 1.0
    return a + a.T


def _ksum(laps, weights=None):
    """Dense Kronecker sum sum_d w_d I (x) .. L_d .. (x) I with np.kron."""
    n = [lap.shape[0] for lap in laps]
    w = np.ones(len(laps)) if weights is None else weights
    out = 0.0
    for d, lap in enumerate(laps):
        mats = [w[d] * lap if e == d else np.eye(n[e]) for e in range(len(laps))]
        out = out + reduce(np.kron, mats)
    return out


def _normalise(m, amplitude=1.0):
    return amplitude * m * m.shape[0] / np.trace(m)


def _dense_matern(lap, nu, kappa, amplitude=1.0):
    shifted = 2 * nu / kappa**2 * np.eye(lap.shape[0]) + lap
    if float(nu).is_integer():
        m = np.linalg.matrix_power(np.linalg.inv(shifted), int(nu))
    else:
        m = np.real(scipy.linalg.fractional_matrix_power(shifted, -nu))
    return _normalise(m, amplitude)


def _dense_diffusion(lap, beta, amplitude=1.0):
    return _normalise(scipy.linalg.expm(-beta * lap), amplitude)


def _dense_gp(K, noise, y, obs):
    """Dense GP algebra (numpy only): LML, posterior mean, covariance."""
    A = K[np.ix_(obs, obs)] + noise * np.eye(obs.size)
    _, logdet = np.linalg.slogdet(A)
    alpha = np.linalg.solve(A, y)
    lml = -0.5 * y @ alpha - 0.5 * logdet - 0.5 * obs.size * np.log(2 * np.pi)
    mean = K[:, obs] @ alpha
    cov = K - K[:, obs] @ np.linalg.solve(A, K[obs])
    return lml, mean, cov


def _fd_gradient(f, theta):
    eye = np.eye(theta.size) * FD_STEP
    return np.array([(f(theta + e) - f(theta - e)) / (2 * FD_STEP) for e in eye])


@pytest.fixture
def laps():
    """A path x cycle product (5 x 4 = 20 nodes)."""
    return [chain_laplacian(5), chain_laplacian(4, cyclic=True)]


# ---------------------------------------------------------------- Laplacians
def test_laplacian_inputs_agree_with_networkx(rng):
    nx = pytest.importorskip("networkx")
    a = _random_graph(rng, 7)
    graph = nx.from_numpy_array(a)
    dense = graph_laplacian(a)
    assert_allclose(dense, nx.laplacian_matrix(graph, weight="weight").toarray())
    assert_allclose(graph_laplacian(scipy.sparse.csr_array(a)), dense)
    assert_allclose(graph_laplacian(graph), dense)
    norm = nx.normalized_laplacian_matrix(graph, weight="weight").toarray()
    assert_allclose(graph_laplacian(graph, normalized=True), norm)
    order = [3, 1, 0, 2, 6, 5, 4]
    assert_allclose(graph_laplacian(graph, nodelist=order), dense[np.ix_(order, order)])


def test_self_loops_are_ignored():
    a = np.array([[5.0, 1.0], [1.0, 0.0]])
    assert_allclose(graph_laplacian(a), [[1.0, -1.0], [-1.0, 1.0]])


def test_chain_laplacian_spectrum():
    n = 7
    w = np.linalg.eigvalsh(chain_laplacian(n))
    assert_allclose(w, np.sort(2 - 2 * np.cos(np.pi * np.arange(n) / n)), atol=1e-12)
    w = np.linalg.eigvalsh(chain_laplacian(n, cyclic=True))
    want = np.sort(2 - 2 * np.cos(2 * np.pi * np.arange(n) / n))
    assert_allclose(w, want, atol=1e-12)


@pytest.mark.parametrize(
    ("adjacency", "match"),
    [
        (np.ones((3, 4)), r"square matrix; got shape \(3, 4\)"),
        (np.array([[0.0, -1.0], [-1.0, 0.0]]), "non-negative edge weights"),
        (np.array([[0.0, 1.0], [2.0, 0.0]]), "must be symmetric"),
        (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN or infinite"),
        (np.ones(3), "2-dimensional"),
    ],
)
def test_bad_graphs_raise(adjacency, match):
    with pytest.raises(ValueError, match=match):
        graph_laplacian(adjacency)


def test_disconnected_graph_warns_with_the_component_count():
    a = scipy.linalg.block_diag(np.ones((3, 3)), np.ones((2, 2)), np.zeros((1, 1)))
    with pytest.warns(UserWarning, match="disconnected: 3 connected components"):
        lap = graph_laplacian(a)
    assert np.sum(np.abs(np.linalg.eigvalsh(lap)) < 1e-12) == 3


def test_networkx_missing_names_the_extra(monkeypatch):
    nx = pytest.importorskip("networkx")
    graph = nx.path_graph(3)
    monkeypatch.setitem(sys.modules, "networkx", None)
    with pytest.raises(ImportError, match=r'pip install "kronecker-gp\[graph\]"'):
        graph_laplacian(graph)


def test_chain_laplacian_and_eigh_errors():
    with pytest.raises(ValueError, match="n_nodes must be an integer >= 3"):
        chain_laplacian(2, cyclic=True)
    with pytest.raises(ValueError, match="positive semi-definite"):
        laplacian_eigh(-chain_laplacian(4))
    with pytest.raises(ValueError, match="nodelist is only used with a networkx"):
        graph_laplacian(np.eye(2), nodelist=[0, 1])


def test_kronecker_sum_is_the_cartesian_product_laplacian(rng):
    nx = pytest.importorskip("networkx")
    g1, g2 = nx.path_graph(4), nx.cycle_graph(5)
    l1, l2 = graph_laplacian(g1), graph_laplacian(g2)
    product = nx.cartesian_product(g1, g2)
    order = [(a, b) for a in g1 for b in g2]  # C order: the last graph fastest
    want = nx.laplacian_matrix(product, nodelist=order).toarray()
    op = KroneckerSum(l1, l2)
    assert_allclose(op.to_dense(), want)
    w, u = op.eigh()
    assert_allclose(np.sort(w), np.linalg.eigvalsh(want), rtol=EIG_RTOL, atol=1e-10)
    x = rng.standard_normal(20)
    assert_allclose(op @ x, want @ x)


# ------------------------------------------------------------------ kernels
def _kernels(lap):
    return [
        GraphDiffusionKernel(lap, beta=0.7, amplitude=1.3),
        GraphMaternKernel(lap, nu=2.0, kappa=1.5, amplitude=0.8),
        GraphMaternKernel(lap, nu=1.5, kappa=2.5, nu_bounds=(0.1, 10.0)),
    ]


def test_kernels_match_dense_references(rng):
    lap = graph_laplacian(_random_graph(rng, 9))
    diffusion, matern, matern_frac = _kernels(lap)
    nodes = np.arange(9)[:, None]
    assert_allclose(diffusion(nodes), _dense_diffusion(lap, 0.7, 1.3), rtol=EIG_RTOL)
    assert_allclose(matern(nodes), _dense_matern(lap, 2.0, 1.5, 0.8), rtol=EIG_RTOL)
    want = _dense_matern(lap, 1.5, 2.5)
    assert_allclose(matern_frac(nodes), want, rtol=EIG_RTOL)
    # unit mean variance (times the amplitude)
    assert_allclose(np.trace(matern(nodes)) / 9, 0.8)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_kernel_properties(which, rng):
    lap = graph_laplacian(_random_graph(rng, 8))
    kernel = _kernels(lap)[which]
    X = np.array([[0], [3], [5], [5], [7]], dtype=float)
    K, dK = kernel(X, eval_gradient=True)
    assert_allclose(K, kernel(X, X))
    assert_allclose(kernel.diag(X), np.diag(K))
    assert not kernel.is_stationary()

    def gram(theta):
        return kernel.clone_with_theta(theta)(X)

    eye = np.eye(kernel.n_dims) * FD_STEP
    for p, e in enumerate(eye):
        fd = (gram(kernel.theta + e) - gram(kernel.theta - e)) / (2 * FD_STEP)
        assert_allclose(dK[:, :, p], fd, rtol=FD_RTOL, atol=1e-8)
    copy = clone(kernel)
    assert copy == kernel and copy is not kernel
    assert copy != kernel.clone_with_theta(kernel.theta + 0.1)
    assert kernel != type(kernel)(chain_laplacian(3))


def test_kernel_theta_and_fixed_bounds(rng):
    lap = chain_laplacian(6)
    kernel = GraphMaternKernel(lap, nu=1.5, kappa=2.0, amplitude=3.0)
    assert_allclose(kernel.theta, np.log([3.0, 2.0]))
    fixed = GraphMaternKernel(lap, kappa=2.0, amplitude_bounds="fixed")
    assert fixed.n_dims == 1
    assert repr(kernel) == "GraphMaternKernel(n_nodes=6, nu=1.5, kappa=2, amplitude=3)"
    sparse = GraphMaternKernel(scipy.sparse.csr_array(lap), kappa=2.0)
    assert sparse == GraphMaternKernel(lap, kappa=2.0)
    assert_allclose(sparse(np.arange(6)[:, None]), fixed(np.arange(6)[:, None]))


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.array([[0.5]]), "integer node indices; got 0.5"),
        (np.array([[6.0]]), r"node index 6 outside \[0, 6\)"),
        (np.array([[-1.0]]), r"node index -1 outside"),
        (np.zeros((2, 2)), "one column of node indices"),
    ],
)
def test_kernel_rejects_bad_node_indices(X, match):
    with pytest.raises(ValueError, match=match):
        GraphDiffusionKernel(chain_laplacian(6))(X)


def test_graph_kernel_in_gaussian_process_regressor(rng):
    lap = graph_laplacian(_random_graph(rng, 10))
    kernel = GraphMaternKernel(lap, nu=2.0, kappa=1.2)
    X = np.arange(10)[:, None].astype(float)
    y = rng.standard_normal(10)
    gpr = GaussianProcessRegressor(kernel, alpha=0.3, optimizer=None).fit(X, y)
    lml, *_ = _dense_gp(_dense_matern(lap, 2.0, 1.2), 0.3, y, np.arange(10))
    assert_allclose(gpr.log_marginal_likelihood_value_, lml, rtol=EIG_RTOL)
    fitted = GaussianProcessRegressor(kernel, alpha=0.3).fit(X, y)
    assert fitted.log_marginal_likelihood_value_ >= lml - 1e-9


def test_graph_kernel_as_a_kronecker_gp_factor(rng):
    lap = graph_laplacian(_random_graph(rng, 6))
    times = np.linspace(0.0, 3.0, 5)
    kernels = [GraphMaternKernel(lap, kappa=2.0, amplitude=1.5), Matern(1.0, nu=1.5)]
    Y = rng.standard_normal((6, 5))
    gp = KroneckerGP(kernels, noise=0.2, optimizer=None)
    gp.fit_grid([np.arange(6), times], Y)
    K = np.kron(_dense_matern(lap, 1.5, 2.0, 1.5), kernels[1](times[:, None]))
    lml, mean, _ = _dense_gp(K, 0.2, Y.ravel(), np.arange(30))
    assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=EIG_RTOL)
    assert_allclose(
        gp.predict_grid([np.arange(6), times]).ravel(),
        mean,
        rtol=EIG_RTOL,
        atol=EIG_RTOL * np.abs(mean).max(),  # means cross zero
    )
    kk = KroneckerKernel([clone(k) for k in kernels])
    X = np.array([[n, t] for n in range(6) for t in times])
    assert_allclose(kk(X), K, rtol=EIG_RTOL)
    fitted = KroneckerGP(kernels, noise=0.2).fit_grid([np.arange(6), times], Y)
    assert fitted.log_marginal_likelihood_value_ >= lml - 1e-9


# ------------------------------------------------------------ ProductGraphGP
def _product_gp(kind, laps, **kw):
    params = {"kappa": 1.7} if kind == "matern" else {"beta": 0.6}
    params.update(kw)
    return ProductGraphGP(
        laps, kernel=kind, nu=2.0, amplitude=1.3, noise=0.2, optimizer=None, **params
    )


def _dense_product(kind, laps, scale, amplitude=1.3, nu=2.0):
    if np.ndim(scale) == 0:
        lap = _ksum(laps)
        return (
            _dense_matern(lap, nu, scale, amplitude)
            if kind == "matern"
            else _dense_diffusion(lap, scale, amplitude)
        )
    if kind == "matern":  # weighted sum, kappa_d^2 L_d, shift 2 nu
        lap = _ksum(laps, np.asarray(scale) ** 2)
        return _dense_matern(lap, nu, 1.0, amplitude)
    return _dense_diffusion(_ksum(laps, np.asarray(scale)), 1.0, amplitude)


@pytest.mark.parametrize("kind", ["matern", "diffusion"])
@pytest.mark.parametrize("scale", [1.7, (0.8, 2.1)], ids=["shared", "per-axis"])
def test_complete_grid_matches_dense(kind, scale, laps, rng):
    Y = rng.standard_normal((5, 4))
    key = "kappa" if kind == "matern" else "beta"
    gp = _product_gp(kind, laps, **{key: scale}).fit_grid(None, Y)
    K = _dense_product(kind, laps, scale)
    lml, mean, cov = _dense_gp(K, 0.2, Y.ravel(), np.arange(20))
    assert gp.solver_info_.path == "complete"
    assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=EIG_RTOL)
    m, s = gp.predict_grid(return_std=True)
    assert_allclose(m.ravel(), mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(s.ravel(), np.sqrt(np.diag(cov)), rtol=EIG_RTOL)
    X = np.array([[4, 1], [0, 0], [2, 3]])
    cells = np.ravel_multi_index(X.T, (5, 4))
    m, c = gp.predict(X, return_cov=True)
    assert_allclose(c, cov[np.ix_(cells, cells)], rtol=EIG_RTOL, atol=1e-10)


def _observed_cases(rng, Y):
    """(fit arguments, observed flat cells): sub-grid and scattered NaN."""
    stations = np.array([4, 0, 2])  # unordered on purpose
    sub = [stations, np.arange(Y.shape[1])]
    sub_cells = np.ravel_multi_index(np.ix_(*sub), Y.shape).ravel()
    Yn = Y.copy()
    Yn.ravel()[rng.choice(Y.size, 5, replace=False)] = np.nan
    nan_cells = np.flatnonzero(~np.isnan(Yn.ravel()))
    return {
        "subgrid": ((sub, Y[np.ix_(*sub)]), sub_cells),
        "schur-exact": ((None, Yn), nan_cells),
    }


@pytest.mark.parametrize("path", ["subgrid", "schur-exact"])
@pytest.mark.parametrize("kind", ["matern", "diffusion"])
def test_missing_nodes_and_cells_match_dense(path, kind, rng):
    """A random graph x time chain with unobserved stations or NaN cells."""
    laps = [graph_laplacian(_random_graph(rng, 6)), chain_laplacian(7)]
    Y = rng.standard_normal((6, 7))
    (coords, Yfit), obs = _observed_cases(rng, Y)[path]
    gp = _product_gp(kind, laps, kappa=(1.3, 2.0)).fit_grid(coords, Yfit)
    assert gp.solver_info_.path == path
    K = _dense_product(kind, laps, (1.3, 2.0) if kind == "matern" else 0.6)
    lml, mean, cov = _dense_gp(K, 0.2, Y.ravel()[obs], obs)
    assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=EIG_RTOL)
    m, s = gp.predict_grid(return_std=True)
    assert_allclose(m.ravel(), mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(s.ravel(), np.sqrt(np.diag(cov)), rtol=EIG_RTOL)
    X = np.array([[1, 6], [3, 0], [0, 2]])
    cells = np.ravel_multi_index(X.T, (6, 7))
    assert_allclose(
        gp.predict(X, return_cov=True)[1],
        cov[np.ix_(cells, cells)],
        rtol=EIG_RTOL,
        atol=1e-10,
    )
    rows = np.array(np.unravel_index(obs, (6, 7))).T
    refit = _product_gp(kind, laps, kappa=(1.3, 2.0)).fit(
        rows[::-1], Y.ravel()[obs][::-1]
    )
    assert refit.solver_info_.path == path
    assert_allclose(refit.log_marginal_likelihood_value_, lml, rtol=EIG_RTOL)


def test_cg_schur_path_mean_is_exact_and_lml_estimated(laps, rng):
    Y = rng.standard_normal((5, 4))
    Y.ravel()[[1, 7, 13]] = np.nan
    obs = np.flatnonzero(~np.isnan(Y.ravel()))
    gp = _product_gp("matern", laps, solver="cg", n_probes=64, random_state=0)
    gp.fit_grid(None, Y)
    assert gp.solver_info_.path == "schur-cg"
    lml, mean, cov = _dense_gp(
        _dense_product("matern", laps, 1.7), 0.2, Y.ravel()[obs], obs
    )
    m, s = gp.predict_grid(return_std=True)
    assert_allclose(m.ravel(), mean, rtol=CG_RTOL, atol=CG_RTOL)
    # stochastic Lanczos log-determinant of a 3 x 3 system: within 5 std errors
    err = gp.solver_info_.lml_std_error
    assert abs(gp.log_marginal_likelihood_value_ - lml) <= 5 * err + 1e-8
    # the missing-cell variance correction is a Monte Carlo estimate here, with
    # relative standard error sqrt(2 / n_probes): check it within 5 of those
    _, _, cov_full = _dense_gp(
        _dense_product("matern", laps, 1.7), 0.2, Y.ravel() * 0, np.arange(20)
    )
    corr = np.diag(cov) - np.diag(cov_full)
    assert np.all(np.abs(s.ravel() ** 2 - np.diag(cov)) <= 5 * np.sqrt(2 / 64) * corr)


def test_subgrid_with_two_partial_axes_of_three(rng):
    laps = [chain_laplacian(3), chain_laplacian(4, cyclic=True), chain_laplacian(5)]
    Y = rng.standard_normal((3, 4, 5))
    coords = [np.arange(3), np.array([3, 0]), np.array([1, 4, 2])]
    gp = _product_gp("matern", laps, kappa=(0.7, 1.5, 2.2)).fit_grid(
        coords, Y[np.ix_(*coords)]
    )
    assert gp.solver_info_.path == "subgrid"
    obs = np.ravel_multi_index(np.ix_(*coords), Y.shape).ravel()
    K = _dense_product("matern", laps, (0.7, 1.5, 2.2))
    lml, mean, cov = _dense_gp(K, 0.2, Y.ravel()[obs], obs)
    assert_allclose(gp.log_marginal_likelihood_value_, lml, rtol=EIG_RTOL)
    m, s = gp.predict_grid(return_std=True)
    assert_allclose(m.ravel(), mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(s.ravel(), np.sqrt(np.diag(cov)), rtol=EIG_RTOL)


@pytest.mark.parametrize("path", ["complete", "subgrid", "schur-exact"])
def test_lml_gradient_matches_finite_differences(path, rng):
    laps = [graph_laplacian(_random_graph(rng, 5)), chain_laplacian(6)]
    Y = rng.standard_normal((5, 6))
    cases = _observed_cases(rng, Y) | {"complete": ((None, Y), None)}
    (coords, Yfit), _ = cases[path]
    gp = ProductGraphGP(
        laps, kappa=(1.2, 0.9), nu=1.5, nu_bounds=(0.1, 10.0), noise=0.3, optimizer=None
    ).fit_grid(coords, Yfit)
    assert gp.hyperparameter_names_ == [
        "amplitude",
        "kappa_0",
        "kappa_1",
        "nu",
        "noise",
    ]
    theta = gp.theta_ + np.array([0.2, -0.1, 0.3, 0.1, -0.2])
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    fd = _fd_gradient(gp.log_marginal_likelihood, theta)
    assert_allclose(grad, fd, rtol=FD_RTOL, atol=1e-7)
    assert_allclose(gp.log_marginal_likelihood(theta), lml)
    # evaluating at another theta leaves the fit untouched
    assert_allclose(
        gp.log_marginal_likelihood(gp.theta_), gp.log_marginal_likelihood_value_
    )


def test_diffusion_on_a_product_graph_is_separable(laps, rng):
    """exp(-beta (L1 (+) L2)) = exp(-beta L1) (x) exp(-beta L2)."""
    Y = rng.standard_normal((5, 4))
    gp = _product_gp("diffusion", laps).fit_grid(None, Y)
    kernels = [
        GraphDiffusionKernel(laps[0], beta=0.6, amplitude=1.3),
        GraphDiffusionKernel(laps[1], beta=0.6, amplitude_bounds="fixed"),
    ]
    sep = KroneckerGP(kernels, noise=0.2, optimizer=None)
    sep.fit_grid([np.arange(5), np.arange(4)], Y)
    assert_allclose(
        gp.log_marginal_likelihood_value_,
        sep.log_marginal_likelihood_value_,
        rtol=EIG_RTOL,
    )


def test_one_graph_matches_sklearn_including_the_optimum(rng):
    lap = graph_laplacian(_random_graph(rng, 12))
    X = np.arange(12)[:, None].astype(float)
    y = rng.standard_normal(12)
    kernel = GraphMaternKernel(lap, nu=1.5, kappa=1.0, amplitude=1.0)
    gpr = GaussianProcessRegressor(kernel, alpha=0.25, optimizer=None).fit(X, y)
    gp = ProductGraphGP(
        [lap], kappa=1.0, noise=0.25, noise_bounds="fixed", optimizer=None
    ).fit(X, y)
    theta = np.log([1.7, 0.6])
    assert_allclose(
        gp.log_marginal_likelihood(theta, eval_gradient=True)[1],
        gpr.log_marginal_likelihood(theta, eval_gradient=True)[1],
        rtol=EIG_RTOL,
        atol=1e-10,
    )
    opt = ProductGraphGP([lap], kappa=1.0, noise=0.25, noise_bounds="fixed").fit(X, y)
    ref = GaussianProcessRegressor(kernel, alpha=0.25).fit(X, y)
    assert_allclose(
        opt.log_marginal_likelihood_value_,
        ref.log_marginal_likelihood_value_,
        rtol=OPT_RTOL,
    )


def test_optimisation_and_normalize_y(laps, rng):
    truth = ProductGraphGP(laps, kappa=2.0, amplitude=2.0)
    Y = 5.0 + truth.sample_grid(random_state=0)[..., 0]
    Y += 0.1 * rng.standard_normal(Y.shape)
    gp = ProductGraphGP(
        laps, noise=1.0, normalize_y=True, n_restarts_optimizer=1, random_state=0
    ).fit_grid(None, Y)
    start = ProductGraphGP(laps, noise=1.0, normalize_y=True, optimizer=None)
    assert (
        gp.log_marginal_likelihood_value_
        > start.fit_grid(None, Y).log_marginal_likelihood_value_
    )
    _, grad = gp.log_marginal_likelihood(gp.theta_, eval_gradient=True)
    assert np.abs(grad).max() < 1e-2
    assert np.sqrt(np.mean((gp.predict_grid() - Y) ** 2)) < 0.3
    assert gp.kappa_.shape == (1,) and gp.noise_ > 0


def test_posterior_samples_have_the_posterior_moments(rng):
    laps = [graph_laplacian(_random_graph(rng, 4)), chain_laplacian(3)]
    Y = rng.standard_normal((4, 3))
    gp = _product_gp("matern", laps).fit_grid(
        [np.array([0, 2]), np.arange(3)], Y[[0, 2]]
    )
    n = 20000
    draws = gp.sample_grid(n_samples=n, random_state=3).reshape(-1, n)
    X = np.array(np.unravel_index(np.arange(12), (4, 3))).T
    mean, cov = gp.predict(X, return_cov=True)
    sd = np.sqrt(np.diag(cov))
    # Monte Carlo error: mean within 5 standard errors, covariance within 0.05 sd^2
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * sd / np.sqrt(n))
    assert np.abs(np.cov(draws) - cov).max() < 0.05 * sd.max() ** 2
    prior = _product_gp("matern", laps).sample_grid(n_samples=n, random_state=4)
    K = _dense_product("matern", laps, 1.7)
    assert np.abs(np.cov(prior.reshape(-1, n)) - K).max() < 0.05 * K.max()
    assert gp.sample_grid([[1], [0, 2]], n_samples=2).shape == (1, 2, 2)
    assert gp.sample_y(X[:3], n_samples=2).shape == (3, 2)


@pytest.mark.parametrize("kind", ["matern", "diffusion"])
def test_predictions_before_fit_are_the_prior(kind, laps):
    """As GaussianProcessRegressor: unfitted, predict from the prior."""
    gp = _product_gp(kind, laps)
    scale = 1.7 if kind == "matern" else 0.6
    K = _dense_product(kind, laps, scale)
    X = np.array([[0, 0], [2, 3], [4, 1]])
    cells = np.ravel_multi_index(tuple(X.T), (5, 4))
    mean, cov = gp.predict(X, return_cov=True)
    assert_allclose(mean, np.zeros(3))
    assert_allclose(cov, K[np.ix_(cells, cells)], rtol=1e-10, atol=1e-12)
    _, std = gp.predict(X, return_std=True)
    assert_allclose(std, np.sqrt(np.diag(K)[cells]), rtol=1e-10)
    grid_mean, grid_std = gp.predict_grid([[1, 3], None], return_std=True)
    assert grid_mean.shape == grid_std.shape == (2, 4)
    assert_allclose(grid_std, np.sqrt(np.diag(K)).reshape(5, 4)[[1, 3]], rtol=1e-10)
    assert gp.sample_y(X, n_samples=2).shape == (3, 2)
    assert not hasattr(gp, "alpha_")  # still unfitted


def test_clone_and_score(laps, rng):
    gp = ProductGraphGP(laps, kernel="diffusion", beta=[0.5, 1.0], noise=0.1)
    copy = clone(gp)
    assert copy.get_params()["beta"] == [0.5, 1.0]
    assert_allclose(copy.laplacians[0], laps[0])
    Y = rng.standard_normal((5, 4))
    X = np.array(np.unravel_index(np.arange(20), (5, 4))).T
    fitted = copy.fit(X, Y.ravel())
    assert fitted.hyperparameter_names_ == ["amplitude", "beta_0", "beta_1", "noise"]
    assert fitted.score(X, Y.ravel()) <= 1.0
    assert not hasattr(gp, "theta_")


def test_complete_path_never_calls_np_kron(monkeypatch, rng):
    laps = [graph_laplacian(_random_graph(rng, 30)), chain_laplacian(40)]
    Y = rng.standard_normal((30, 40))

    def no_kron(*args, **kwargs):
        raise AssertionError("np.kron called on the Kronecker path")

    monkeypatch.setattr(np, "kron", no_kron)
    gp = ProductGraphGP(laps, noise=0.5).fit_grid(None, Y)
    gp.predict_grid(return_std=True)
    gp.sample_grid(n_samples=2, random_state=0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kernel": "rbf"}, 'kernel must be "matern" or "diffusion"'),
        ({"kappa": [1.0, 2.0, 3.0]}, "kappa must be a positive float or 2 positive"),
        ({"kappa": -1.0}, "kappa must be positive and finite"),
        ({"noise_bounds": (1.0, 0.1)}, "noise_bounds must be"),
        ({"optimizer": "adam"}, 'optimizer must be "fmin_l_bfgs_b"'),
        ({"solver": "lu"}, 'solver must be "auto", "exact" or "cg"'),
        ({"laplacians": None}, "laplacians must be a non-empty list"),
    ],
)
def test_bad_parameters_raise(kw, match, laps):
    params = {"laplacians": laps} | kw
    with pytest.raises(ValueError, match=match):
        ProductGraphGP(**params).fit_grid(None, np.zeros((5, 4)))


def test_bad_data_raise(laps):
    gp = ProductGraphGP(laps)
    with pytest.raises(ValueError, match=r"Y must have shape \(5, 4\)"):
        gp.fit_grid(None, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="coords\\[0\\] repeats a node"):
        gp.fit_grid([[0, 0], np.arange(4)], np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"node index 9 outside \[0, 5\)"):
        gp.fit_grid([[9], np.arange(4)], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="no observed cell"):
        gp.fit_grid(None, np.full((5, 4), np.nan))
    with pytest.raises(ValueError, match="X repeats a grid cell"):
        gp.fit(np.array([[0, 1], [0, 1]]), np.zeros(2))
    with pytest.raises(NotFittedError):
        gp.log_marginal_likelihood()
    with pytest.raises(ValueError, match="one column per graph"):
        ProductGraphGP(laps).predict(np.zeros((1, 3)))  # the prior checks X too
    gp.set_params(optimizer=None).fit_grid(None, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="theta must have 3 entries"):
        gp.log_marginal_likelihood(np.zeros(2))
    with pytest.raises(ValueError, match="2 features"):
        gp.predict(np.zeros((1, 3)))


def test_ill_conditioned_fit_suggests_more_noise(laps):
    gp = ProductGraphGP(
        laps, kernel="diffusion", beta=1e4, noise=1e-300, optimizer=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(np.linalg.LinAlgError, match="increase noise"):
            gp.fit_grid([[0, 1, 2], np.arange(4)], np.ones((3, 4)))


@pytest.mark.parametrize("path", ["complete", "subgrid", "schur-exact", "schur-cg"])
def test_lml_queries_leave_the_stored_factorization_alone(path, laps, rng):
    """A factorization is immutable: other thetas never change the predictions."""
    Y = rng.standard_normal((5, 4))
    nodes = None
    if path == "subgrid":
        nodes, Y = [np.array([0, 2, 3]), None], Y[[0, 2, 3]]
    elif path.startswith("schur"):
        Y.ravel()[[1, 7, 13]] = np.nan
    solver = "cg" if path == "schur-cg" else "auto"
    gp = ProductGraphGP(laps, noise=0.3, optimizer=None, solver=solver)
    gp.fit_grid(nodes, Y)
    assert gp.solver_info_.path == path
    mean, std = gp.predict_grid(return_std=True)
    draws = gp.sample_grid(n_samples=3, random_state=1)
    lml = gp.log_marginal_likelihood(gp.theta_ + 0.3, eval_gradient=True)[0]
    assert not np.isclose(lml, gp.log_marginal_likelihood_value_)
    again, std_again = gp.predict_grid(return_std=True)
    assert_allclose(again, mean)
    assert_allclose(std_again, std)
    assert_allclose(gp.sample_grid(n_samples=3, random_state=1), draws)
    assert gp.solver_info_ is gp._fact.info
