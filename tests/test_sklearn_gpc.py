"""scikit-learn's gaussian_process/tests/test_gpc.py (1.9.1), ported.

Each sklearn test keeps its name and intent with ``KroneckerGPClassifier`` in
place of ``GaussianProcessClassifier`` (one grid axis over all columns, so
any ``X`` is a grid). Design differences, stated once:

* The classifier is binary (a Bernoulli likelihood on one latent field);
  sklearn's multi-class one-vs-rest is obtained by wrapping it in
  ``OneVsRestClassifier``, and the multi-class tests are ported that way.
* Grid coordinates are numeric arrays: the structured-input tests (strings
  with ``MiniSeqKernel``) have no grid and are skipped.
* sklearn's ``test_lml_gradient`` is an xfail there (scikit-learn issue
  31366); here it is an ordinary test, with a central difference.

The first tests check that the classifier equals sklearn's on a one-axis grid.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, CompoundKernel, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as C
from sklearn.multiclass import OneVsRestClassifier

from kronecker_gp import KroneckerGPClassifier
from kronecker_gp.likelihoods import logistic_normal_mean
from kronecker_gp.testing import assert_allclose

SKLEARN_RTOL = 1e-6


def f(x):
    return np.sin(x)


X = np.atleast_2d(np.linspace(0, 10, 30)).T
X2 = np.atleast_2d([2.0, 4.0, 5.5, 6.5, 7.5]).T
y = np.array(f(X).ravel() > 0, dtype=int)
fX = f(X).ravel()
y_mc = np.empty(y.shape, dtype=int)  # multi-class
y_mc[fX < -0.35] = 0
y_mc[(fX >= -0.35) & (fX < 0.35)] = 1
y_mc[fX > 0.35] = 2

fixed_kernel = RBF(length_scale=1.0, length_scale_bounds="fixed")
kernels = [
    RBF(length_scale=0.1),
    fixed_kernel,
    RBF(length_scale=1.0, length_scale_bounds=(1e-3, 1e3)),
    C(1.0, (1e-2, 1e2)) * RBF(length_scale=1.0, length_scale_bounds=(1e-3, 1e3)),
]
non_fixed_kernels = [kernel for kernel in kernels if kernel != fixed_kernel]


# --------------------------------------------------- equality with sklearn
def _sklearn_latent(gpc, Xt):
    # sklearn's binary latent moments (R&W Alg. 3.2), from its fitted state
    b = gpc.base_estimator_
    Ks = b.kernel_(b.X_train_, Xt)
    mean = Ks.T @ (b.y_train_ - b.pi_)
    v = np.linalg.solve(b.L_, b.W_sr_[:, None] * Ks)
    return mean, b.kernel_.diag(Xt) - np.einsum("ij,ij->j", v, v)


@pytest.mark.parametrize("kernel", non_fixed_kernels)
@pytest.mark.parametrize("n_features", [1, 2])
def test_equals_sklearn_gpc_on_one_axis_grid(kernel, n_features):
    rng = np.random.default_rng(3)
    Xf = rng.uniform(0, 5, (30, n_features))
    yf = (np.sin(Xf).sum(axis=1) > 0).astype(int)
    Xt = rng.uniform(0, 5, (7, n_features))
    sk = GaussianProcessClassifier(kernel=kernel).fit(Xf, yf)
    kg = KroneckerGPClassifier(kernel).fit(Xf, yf)
    # the same optimum from the same start
    assert_allclose(kg.kernel_.theta, sk.kernel_.theta, rtol=1e-4, atol=1e-4)
    theta = sk.kernel_.theta
    lml, grad = kg.log_marginal_likelihood(theta, eval_gradient=True)
    lml_sk, grad_sk = sk.log_marginal_likelihood(theta, eval_gradient=True)
    assert_allclose(lml, lml_sk, rtol=SKLEARN_RTOL)
    assert_allclose(grad, grad_sk, rtol=SKLEARN_RTOL, atol=1e-6)
    kg_at = KroneckerGPClassifier(sk.kernel_, optimizer=None).fit(Xf, yf)
    assert_allclose(kg_at.log_marginal_likelihood_value_, lml_sk, rtol=SKLEARN_RTOL)
    mean, var = kg_at.latent_mean_and_variance(Xt)
    mean_sk, var_sk = _sklearn_latent(sk, Xt)
    assert_allclose(mean, mean_sk, rtol=SKLEARN_RTOL, atol=1e-8)
    assert_allclose(var, var_sk, rtol=SKLEARN_RTOL, atol=1e-8)
    proba = kg_at.predict_proba(Xt)
    # exact integral over sklearn's latent moments: equal to 1e-6
    assert_allclose(proba[:, 1], logistic_normal_mean(mean_sk, var_sk), atol=1e-6)
    # sklearn's own probabilities use an erf approximation (error below 3e-4)
    assert_allclose(proba, sk.predict_proba(Xt), atol=3e-4)
    np.testing.assert_array_equal(kg_at.predict(Xt), sk.predict(Xt))


# -------------------------------------------------------------- the port
@pytest.mark.parametrize("kernel", kernels)
def test_predict_consistent(kernel):
    gpc = KroneckerGPClassifier(kernel).fit(X, y)
    np.testing.assert_array_equal(gpc.predict(X), gpc.predict_proba(X)[:, 1] >= 0.5)


@pytest.mark.skip(reason="design: grid axes need numeric coordinates (no strings)")
def test_predict_consistent_structured():
    """Structured inputs (MiniSeqKernel on strings) have no grid."""


@pytest.mark.parametrize("kernel", non_fixed_kernels)
def test_lml_improving(kernel):
    gpc = KroneckerGPClassifier(kernel).fit(X, y)
    assert gpc.log_marginal_likelihood(gpc.kernel_.theta) > gpc.log_marginal_likelihood(
        kernel.theta
    )


@pytest.mark.parametrize("kernel", kernels)
def test_lml_precomputed(kernel):
    gpc = KroneckerGPClassifier(kernel).fit(X, y)
    assert_allclose(
        gpc.log_marginal_likelihood(gpc.kernel_.theta),
        gpc.log_marginal_likelihood(),
        rtol=1e-10,
    )


@pytest.mark.parametrize("kernel", kernels)
def test_lml_without_cloning_kernel(kernel):
    gpc = KroneckerGPClassifier(kernel).fit(X, y)
    input_theta = np.ones(gpc.kernel_.theta.shape, dtype=np.float64)
    gpc.log_marginal_likelihood(input_theta, clone_kernel=False)
    assert_allclose(gpc.kernel_.theta, input_theta)


@pytest.mark.parametrize("kernel", non_fixed_kernels)
def test_converged_to_local_maximum(kernel):
    gpc = KroneckerGPClassifier(kernel).fit(X, y)
    lml, lml_gradient = gpc.log_marginal_likelihood(gpc.kernel_.theta, True)
    assert np.all(
        (np.abs(lml_gradient) < 1e-4)
        | (gpc.kernel_.theta == gpc.kernel_.bounds[:, 0])
        | (gpc.kernel_.theta == gpc.kernel_.bounds[:, 1])
    )


@pytest.mark.parametrize("kernel", non_fixed_kernels)
@pytest.mark.parametrize("length_scale", np.logspace(-3, 3, 13))
def test_lml_gradient(kernel, length_scale):
    kernel = clone(kernel)
    name = next(n for n in kernel.get_params() if n.endswith("length_scale"))
    kernel.set_params(**{name: length_scale})
    # the gradient is checked at kernel.theta, which does not depend on the
    # fitted hyperparameters: skip the optimisation sklearn runs here
    gpc = KroneckerGPClassifier(kernel, optimizer=None).fit(X, y)
    theta = kernel.theta
    _, grad = gpc.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-5
    approx = [
        (
            gpc.log_marginal_likelihood(theta + h * e)
            - gpc.log_marginal_likelihood(theta - h * e)
        )
        / (2 * h)
        for e in np.eye(theta.size)
    ]
    assert_allclose(grad, approx, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_starts(seed):
    n_samples, n_features = 25, 2
    rng = np.random.RandomState(seed)
    Xr = rng.randn(n_samples, n_features) * 2 - 1
    yr = (np.sin(Xr).sum(axis=1) + np.sin(3 * Xr).sum(axis=1)) > 0
    kernel = C(1.0, (1e-2, 1e2)) * RBF(
        length_scale=[1e-3] * n_features, length_scale_bounds=[(1e-4, 1e2)] * n_features
    )
    last_lml = -np.inf
    for n_restarts_optimizer in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp = KroneckerGPClassifier(
                kernel, n_restarts_optimizer=n_restarts_optimizer, random_state=seed
            ).fit(Xr, yr)
        lml = gp.log_marginal_likelihood(gp.kernel_.theta)
        assert lml > last_lml - np.finfo(np.float32).eps
        last_lml = lml


@pytest.mark.parametrize("kernel", non_fixed_kernels)
def test_custom_optimizer(kernel):
    # sklearn fits y_mc (one-vs-rest); the binary classifier fits y
    def optimizer(obj_func, initial_theta, bounds):
        rng = np.random.RandomState(0)
        theta_opt, func_min = (
            initial_theta,
            obj_func(initial_theta, eval_gradient=False),
        )
        for _ in range(10):
            theta = np.atleast_1d(
                rng.uniform(np.maximum(-2, bounds[:, 0]), np.minimum(1, bounds[:, 1]))
            )
            val = obj_func(theta, eval_gradient=False)
            if val < func_min:
                theta_opt, func_min = theta, val
        return theta_opt, func_min

    gpc = KroneckerGPClassifier(kernel, optimizer=optimizer).fit(X, y)
    assert gpc.log_marginal_likelihood(
        gpc.kernel_.theta
    ) >= gpc.log_marginal_likelihood(kernel.theta)


@pytest.mark.parametrize("kernel", kernels)
def test_multi_class(kernel):
    gpc = OneVsRestClassifier(KroneckerGPClassifier(kernel)).fit(X, y_mc)
    y_prob = gpc.predict_proba(X2)
    assert_allclose(y_prob.sum(1), 1)
    np.testing.assert_array_equal(np.argmax(y_prob, 1), gpc.predict(X2))


@pytest.mark.parametrize("kernel", kernels)
def test_multi_class_n_jobs(kernel):
    gpc = OneVsRestClassifier(KroneckerGPClassifier(kernel)).fit(X, y_mc)
    gpc_2 = OneVsRestClassifier(KroneckerGPClassifier(kernel), n_jobs=2).fit(X, y_mc)
    assert_allclose(gpc.predict_proba(X2), gpc_2.predict_proba(X2))


def test_binary_only():
    with pytest.raises(ValueError, match="requires exactly 2 classes"):
        KroneckerGPClassifier().fit(X, y_mc)
    with pytest.raises(ValueError, match="requires exactly 2 classes"):
        KroneckerGPClassifier().fit(X, np.zeros(30))


def test_warning_bounds():
    gpc = KroneckerGPClassifier(RBF(length_scale_bounds=[1e-5, 1e-3]))
    with pytest.warns(ConvergenceWarning, match="length_scale .* upper bound 0.001"):
        gpc.fit(X, y)
    kernel_sum = WhiteKernel(noise_level_bounds=[1e-5, 1e-3]) + RBF(
        length_scale_bounds=[1e3, 1e5]
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        KroneckerGPClassifier(kernel_sum).fit(X, y)
    messages = [str(r.message) for r in record if r.category is ConvergenceWarning]
    assert any("k1__noise_level" in m and "upper bound 0.001" in m for m in messages)
    assert any("k2__length_scale" in m and "lower bound 1e+03" in m for m in messages)
    X_tile = np.tile(X, 2)
    kernel_dims = RBF(length_scale=[1.0, 2.0], length_scale_bounds=[1e1, 1e2])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        KroneckerGPClassifier(kernel_dims).fit(X_tile, y)
    messages = [str(r.message) for r in record if r.category is ConvergenceWarning]
    for d in (0, 1):
        assert any(f"(element {d})" in m and "upper bound 100" in m for m in messages)


def test_gpc_fit_error():
    with pytest.raises(ValueError, match="CompoundKernel"):
        KroneckerGPClassifier(CompoundKernel(0)).fit(X, y)


@pytest.mark.parametrize("kernel", kernels)
def test_gpc_latent_mean_and_variance_shape(kernel):
    gpc = KroneckerGPClassifier(kernel).fit(X, y)
    latent_mean, latent_variance = gpc.latent_mean_and_variance(X)
    assert latent_mean.shape == (X.shape[0],)
    assert latent_variance.shape == (X.shape[0],)


@pytest.mark.skip(reason="design: grid axes need numeric coordinates (no strings)")
def test_latent_mean_and_variance_works_on_structured_kernels():
    """Structured inputs (MiniSeqKernel on strings) have no grid."""
