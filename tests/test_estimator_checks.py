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


@pytest.mark.parametrize("case", [_kronecker_case, _multitask_case, _graph_case])
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
