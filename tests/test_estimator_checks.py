"""scikit-learn's estimator checks on the three estimators, and read-only queries.

``parametrize_with_checks`` runs on ``KroneckerGP()``, ``MultiTaskGP`` and
``ProductGraphGP``. The last one's inputs are integer node indices of the
graphs it was built with (one column per graph), so the checks that feed
random real-valued ``X`` with any number of columns cannot fit it; each such
check is listed below with that reason, and its substance (fit returns
self, fit is idempotent, pickling, no parameter overwritten, predictions
unchanged by queries) is tested on valid node data in this module.
"""

import copy
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process.kernels import RBF
from sklearn.utils.estimator_checks import parametrize_with_checks

from kronecker_gp import KroneckerGP, MultiTaskGP, ProductGraphGP
from kronecker_gp.kernels._graph import graph_laplacian
from kronecker_gp.testing import assert_allclose


def _path_laplacian(n):
    adjacency = np.diag(np.ones(n - 1), 1)
    return graph_laplacian(adjacency + adjacency.T)


_NODE_INPUT = (
    "ProductGraphGP's X holds integer node indices of its graphs (one column per "
    "graph, each cell once); the check feeds random real-valued X with another "
    "number of columns. Covered on node data by test_graph_gp_contract_on_nodes."
)
_GRAPH_CHECKS_NEEDING_REAL_X = [
    "check_array_api_input",  # runs once SCIPY_ARRAY_API is set (test_array_api)
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_regressor_data_not_an_array",
    "check_regressors_int",
    "check_regressors_no_decision_function",
    "check_regressors_train",
    "check_supervised_y_2d",
]


def _expected_failures(estimator):
    # Every entry needs a written reason; KroneckerGP and MultiTaskGP have none.
    if isinstance(estimator, ProductGraphGP):
        return dict.fromkeys(_GRAPH_CHECKS_NEEDING_REAL_X, _NODE_INPUT)
    return {}


# MultiTaskGP's checks pass with its default optimiser too, but take ~2 minutes.
@parametrize_with_checks(
    [
        KroneckerGP(),
        MultiTaskGP(optimizer=None),
        ProductGraphGP([_path_laplacian(12)]),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ----------------------------------------------------------- read-only queries
def _public_state(est):
    """Deep copies of every public fitted attribute (name ends in '_')."""
    names = [n for n in vars(est) if n.endswith("_") and not n.startswith("_")]
    state = {n: copy.deepcopy(getattr(est, n)) for n in names}
    for prop in ("alpha_", "log_marginal_likelihood_value_"):
        state[prop] = copy.deepcopy(getattr(est, prop))
    return state


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for name, value in before.items():
        other = after[name]
        if hasattr(value, "get_params"):  # kernels: exact same hyperparameters
            assert repr(value) == repr(other), name
            np.testing.assert_array_equal(value.theta, other.theta, err_msg=name)
        elif isinstance(value, list) and value and hasattr(value[0], "get_params"):
            assert repr(value) == repr(other), name
            for k, k_other in zip(value, other):
                np.testing.assert_array_equal(k.theta, k_other.theta, err_msg=name)
        elif isinstance(value, (np.ndarray, float, int, np.floating)):
            np.testing.assert_array_equal(value, other, err_msg=name)
        else:
            assert pickle.dumps(value) == pickle.dumps(other), name


def _kronecker_case(rng):
    x, t = np.linspace(0, 1, 5), np.arange(6.0)
    Y = np.sin(3 * x)[:, None] + 0.3 * np.cos(t)[None, :]
    Y = Y + 0.05 * rng.standard_normal(Y.shape)
    Y[1, 2] = np.nan  # the missing-cell route too
    gp = KroneckerGP([RBF(0.5), RBF(2.0)], noise=0.01, normalize_y=True)
    gp.fit_grid([x, t], Y)
    X = np.array([[0.1, 0.5], [0.7, 3.2], [0.3, 5.0]])
    return gp, X, [x[:3], t[:4]]


def _state_space_case(rng):
    from sklearn.gaussian_process.kernels import Matern

    x, t = np.linspace(0, 1, 4), np.arange(12.0)
    Y = np.sin(3 * x)[:, None] * np.cos(t / 3)[None, :]
    Y = Y + 0.05 * rng.standard_normal(Y.shape)
    gp = KroneckerGP([RBF(0.5), Matern(3.0, nu=1.5)], noise=0.01, state_space=1)
    gp.fit_grid([x, t], Y)
    assert gp.solver_info_.path == "state-space"  # the Kalman route
    X = np.array([[0.1, 0.5], [0.7, 3.2], [0.3, 11.0]])
    return gp, X, [x, t[:4] + 0.5]  # sample_grid: training coordinates on axis 0


def _multitask_case(rng):
    X = np.linspace(0, 1, 8)[:, None]
    Y = np.column_stack([np.sin(4 * X[:, 0]), np.cos(4 * X[:, 0])])
    Y = Y + 0.05 * rng.standard_normal(Y.shape)
    gp = MultiTaskGP(RBF(0.3), noise=0.01).fit(X, Y)
    return gp, np.array([[0.15], [0.55]]), None


def _graph_case(rng):
    gp = ProductGraphGP([_path_laplacian(6), _path_laplacian(5)], noise=0.1)
    Y = rng.standard_normal((6, 5))
    Y[2, 3] = np.nan
    gp.fit_grid(None, Y)
    return gp, np.array([[0, 1], [3, 4], [2, 3]]), [np.array([0, 2]), None]


@pytest.mark.parametrize(
    "case", [_kronecker_case, _state_space_case, _multitask_case, _graph_case]
)
def test_queries_do_not_change_fitted_state(case, rng):
    gp, X, coords = case(rng)
    before = _public_state(gp)
    mean0, std0 = gp.predict(X, return_std=True)
    theta = gp.theta_ + 0.3  # a different point: the query must not stick
    gp.log_marginal_likelihood(theta)
    gp.log_marginal_likelihood(theta, eval_gradient=True)
    gp.log_marginal_likelihood()
    gp.predict(X, return_cov=True)
    gp.sample_y(X, n_samples=2, random_state=0)
    if coords is not None:
        gp.predict_grid(coords, return_std=True)
        gp.sample_grid(coords, n_samples=2, random_state=0)
    _assert_same_state(before, _public_state(gp))
    mean1, std1 = gp.predict(X, return_std=True)
    np.testing.assert_array_equal(mean0, mean1)
    np.testing.assert_array_equal(std0, std1)


@pytest.mark.parametrize("case", [_kronecker_case, _multitask_case, _graph_case])
def test_lml_returns_float64_and_clone_kernel_false_moves_theta(case, rng):
    gp, _, _ = case(rng)
    assert type(gp.log_marginal_likelihood()) is np.float64
    theta = gp.theta_ + 0.2
    lml, grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
    assert type(lml) is np.float64
    assert grad.dtype == np.float64
    same = gp.log_marginal_likelihood(theta, clone_kernel=False)
    assert same == lml
    # as sklearn: the fitted hyperparameters now sit at theta
    assert_allclose(gp._theta(), theta)


def test_graph_gp_contract_on_nodes(rng):
    """The substance of the checks listed in _GRAPH_CHECKS_NEEDING_REAL_X."""
    laplacians = [_path_laplacian(5), _path_laplacian(4)]
    cells = np.array([(i, j) for i in range(5) for j in range(4)])
    keep = rng.permutation(len(cells))[:15]
    X, y = cells[keep], rng.standard_normal(15)
    est = ProductGraphGP(laplacians, noise=0.1)
    params = copy.deepcopy(est.get_params())
    assert est.fit(X, y) is est  # fit returns self
    _assert_same_state(params, est.get_params())  # no parameter overwritten
    first = est.predict(cells)
    refit = clone(est).fit(X, y)
    np.testing.assert_array_equal(refit.predict(cells), first)  # idempotent
    est.fit(X, y)
    np.testing.assert_array_equal(est.predict(cells), first)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(cells), first)
    order = rng.permutation(len(cells))  # sample order and subset invariance
    np.testing.assert_array_equal(est.predict(cells[order]), first[order])
    np.testing.assert_array_equal(est.predict(cells[:3]), first[:3])
    assert est.n_features_in_ == 2
    with pytest.raises(ValueError, match="expecting 2 features"):
        est.predict(cells[:, :1])
    with pytest.raises(ValueError, match="integer node indices"):
        est.predict(cells + 0.5)


# ------------------------------------------ the shared contract (issue 12)
def _sklearn_style_optimizer(calls):
    """A custom optimizer written for sklearn: obj_func(theta, eval_gradient=...)."""

    def optimizer(obj_func, initial_theta, bounds):
        value, grad = obj_func(initial_theta)  # eval_gradient=True by default
        calls.append((value, np.shape(grad), np.shape(initial_theta)))
        best, best_val = initial_theta, obj_func(initial_theta, eval_gradient=False)
        for shift in (-0.5, 0.5):
            theta = np.clip(initial_theta + shift, bounds[:, 0], bounds[:, 1])
            val = obj_func(theta, eval_gradient=False)
            if val < best_val:
                best, best_val = theta, val
        return best, best_val

    return optimizer


def _mt_data(rng):
    X = np.linspace(0, 1, 8)[:, None]
    Y = np.column_stack([np.sin(4 * X[:, 0]), np.cos(4 * X[:, 0])])
    return X, Y + 0.05 * rng.standard_normal(Y.shape)


@pytest.mark.parametrize("kind", ["kronecker", "multitask", "graph"])
def test_custom_optimizer_gets_sklearns_obj_func(kind, rng):
    calls = []
    opt = _sklearn_style_optimizer(calls)
    if kind == "kronecker":
        gp = KroneckerGP([RBF(1.0)], noise=0.1, optimizer=opt)
        gp.fit(np.linspace(0, 1, 7)[:, None], np.sin(np.arange(7.0)))
    elif kind == "multitask":
        gp = MultiTaskGP(RBF(0.3), noise=0.01, optimizer=opt).fit(*_mt_data(rng))
    else:
        gp = ProductGraphGP([_path_laplacian(6)], noise=0.1, optimizer=opt)
        gp.fit_grid(None, rng.standard_normal(6))
    value, grad_shape, theta_shape = calls[0]
    assert isinstance(value, float) and grad_shape == theta_shape
    assert gp.log_marginal_likelihood_value_ >= -value - 1e-9 * abs(value)


def test_bound_warnings_name_the_parameter_for_every_estimator(rng):
    X, Y = _mt_data(rng)
    mt = MultiTaskGP(RBF(0.3, length_scale_bounds=(1e-3, 1e-2)), noise=0.01)
    with pytest.warns(ConvergenceWarning, match="parameter kernel__length_scale is"):
        mt.fit(X, Y)
    graph = ProductGraphGP(
        [_path_laplacian(6)], noise=0.5, noise_bounds=(0.4, 0.6), kappa_bounds="fixed"
    )
    y = np.sin(np.arange(6.0))
    with pytest.warns(ConvergenceWarning, match="parameter noise is close to the"):
        graph.fit_grid(None, y)
    graph = ProductGraphGP([_path_laplacian(6)], amplitude=1e6, noise=0.1)
    with pytest.warns(UserWarning, match="parameter amplitude, 1e[+]06, is outside"):
        graph.fit_grid(None, y)


def test_nan_rule_and_huge_targets_for_graph_gp(rng):
    """ProductGraphGP.fit takes NaN in y as a missing cell (as fit_grid), and
    normalize_y does not overflow near 1e200."""
    laplacians = [_path_laplacian(5), _path_laplacian(4)]
    cells = np.array([(i, j) for i in range(5) for j in range(4)])
    y = rng.standard_normal(len(cells))
    y_nan = y.copy()
    y_nan[[3, 11]] = np.nan
    keep = ~np.isnan(y_nan)
    est = ProductGraphGP(laplacians, noise=0.1, optimizer=None)
    a = clone(est).fit(cells, y_nan)
    b = clone(est).fit(cells[keep], y[keep])
    c = clone(est).fit_grid(None, y_nan.reshape(5, 4))
    np.testing.assert_array_equal(a.predict(cells), b.predict(cells))
    assert_allclose(a.predict(cells), c.predict(cells))
    with pytest.raises(ValueError, match="no observed cell"):
        clone(est).fit(cells, np.full(len(cells), np.nan))
    big = clone(est).set_params(normalize_y=True).fit(cells, 1e200 * y)
    ref = clone(est).set_params(normalize_y=True).fit(cells, y)
    mean, std = big.predict(cells, return_std=True)
    ref_mean, ref_std = ref.predict(cells, return_std=True)
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    assert_allclose(mean / 1e200, ref_mean, atol=1e-12 * np.abs(ref_mean).max())
    assert_allclose(std / 1e200, ref_std)


def test_huge_targets_normalize_without_overflow_multitask(rng):
    X, Y = _mt_data(rng)
    est = MultiTaskGP(RBF(0.3), noise=0.01, optimizer=None, normalize_y=True)
    big = clone(est).fit(X, 1e200 * Y)
    ref = clone(est).fit(X, Y)
    mean, std = big.predict(X, return_std=True)
    ref_mean, ref_std = ref.predict(X, return_std=True)
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    assert_allclose(mean / 1e200, ref_mean, atol=1e-12 * np.abs(ref_mean).max())
    assert_allclose(std / 1e200, ref_std)


def test_graph_gp_tiny_noise_raises_with_condition_number():
    # a diffusion kernel with a long time has a spectrum spanning exp(-1e4 lam)
    gp = ProductGraphGP(
        [_path_laplacian(6)], kernel="diffusion", beta=1e4, noise=1e-300
    )
    with pytest.raises(np.linalg.LinAlgError, match="condition number of K"):
        gp.set_params(optimizer=None).fit_grid(None, np.ones(6))
    # a well-conditioned Matern spectrum takes the same tiny noise
    ProductGraphGP([_path_laplacian(6)], noise=1e-300, optimizer=None).fit_grid(
        None, np.ones(6)
    )


def test_multitask_tiny_noise_raises_with_condition_number():
    from sklearn.gaussian_process.kernels import DotProduct

    X, Y = np.arange(12.0).reshape(6, 2), np.ones((6, 2))
    gp = MultiTaskGP(DotProduct(), noise=1e-100, noise_bounds="fixed", optimizer=None)
    with pytest.raises(np.linalg.LinAlgError, match="condition number of K"):
        gp.fit(X, Y)
    gp.set_params(noise=1e-3).fit(X, Y)  # above the rounding level: fits
    assert np.isfinite(gp.log_marginal_likelihood_value_)
