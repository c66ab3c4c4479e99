import itertools
from functools import reduce

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import (
    RBF,
    ConstantKernel,
    DotProduct,
    ExpSineSquared,
    Matern,
    RationalQuadratic,
)

from kronecker_gp.kernels import KroneckerKernel
from kronecker_gp.linalg import DenseOperator, KroneckerProduct
from kronecker_gp.testing import EIG_RTOL, assert_allclose

# Finite differences use the 4th-order central stencil with step FD_STEP: truncation
# error ~ FD_STEP**4 and round-off ~ 1e-16 / FD_STEP, both far below EIG_RTOL.
FD_STEP = 1e-3

KERNELS = [
    pytest.param(
        KroneckerKernel([RBF(0.7), Matern(1.3, nu=1.5)]),
        id="rbf-matern15",
    ),
    pytest.param(
        KroneckerKernel([RBF([0.8, 1.5]), Matern(0.9, nu=0.5)], axes=[[0, 1], [2]]),
        id="anisotropic-multicolumn",
    ),
    pytest.param(
        KroneckerKernel(
            [
                ConstantKernel(2.0) * RBF(1.1),
                RationalQuadratic(0.9, alpha=1.7),
                Matern(1.2, nu=2.5),
            ]
        ),
        id="3-factors-product-rq-matern25",
    ),
    pytest.param(
        KroneckerKernel(
            [
                ExpSineSquared(1.0, periodicity=2.5),
                DotProduct(sigma_0=0.8) + ConstantKernel(0.5),
            ],
            axes=[2, [0, 1]],
        ),
        id="periodic-dotproduct-sum-int-axes",
    ),
    pytest.param(
        KroneckerKernel(
            [
                RBF(1.0, length_scale_bounds="fixed"),
                ConstantKernel(1.5) * Matern(0.8, nu=1.5) + RBF(2.0),
            ],
            axes=[[1], [0, 2]],
        ),
        id="fixed-factor-noncontiguous",
    ),
    pytest.param(
        KroneckerKernel(
            [
                RBF(0.6),
                ConstantKernel(0.8, constant_value_bounds="fixed")
                * DotProduct(0.5, sigma_0_bounds="fixed"),
                RationalQuadratic(1.4, alpha=0.6),
            ]
        ),
        id="3-factors-middle-all-fixed",
    ),
    pytest.param(
        KroneckerKernel([Matern(1.0, nu=2.5)], axes=[[0, 1]]),
        id="single-factor",
    ),
]


@pytest.fixture(params=KERNELS)
def kernel(request):
    return clone(request.param)


# -- helpers written independently of the code under test -----------------------
def groups(kernel):
    """Column groups per factor (re-derived here, not via resolved_axes)."""
    if kernel.axes is None:
        return [[d] for d in range(len(kernel.kernels))]
    return [[a] if isinstance(a, int) else list(a) for a in kernel.axes]


def n_columns(kernel):
    return max(max(g) for g in groups(kernel)) + 1


def random_X(kernel, rng, n=9):
    return rng.uniform(0.0, 2.0, size=(n, n_columns(kernel)))


def random_coords(kernel, rng, sizes=(4, 3, 2)):
    cols = groups(kernel)
    return [
        rng.uniform(0.0, 2.0, size=(n, len(g)))
        for n, g in zip(sizes[: len(cols)], cols, strict=True)
    ]


def grid_rows(kernel, coords):
    """Rows of the grid in C order: itertools.product, last axis fastest."""
    cols = groups(kernel)
    rows = []
    for idx in itertools.product(*(range(len(c)) for c in coords)):
        row = np.zeros(n_columns(kernel))
        for d, i in enumerate(idx):
            row[cols[d]] = coords[d][i]
        rows.append(row)
    return np.array(rows)


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
    shape = np.shape(f(theta))
    return np.stack(columns, axis=-1) if columns else np.zeros((*shape, 0))


# -- values ---------------------------------------------------------------------
def test_call_equals_product_of_factor_grams(kernel, rng):
    X, Y = random_X(kernel, rng), random_X(kernel, rng, n=5)
    cols = groups(kernel)
    expected = reduce(
        np.multiply, [k(X[:, c]) for k, c in zip(kernel.kernels, cols, strict=True)]
    )
    cross = reduce(
        np.multiply,
        [k(X[:, c], Y[:, c]) for k, c in zip(kernel.kernels, cols, strict=True)],
    )
    assert_allclose(kernel(X), expected)
    assert_allclose(kernel(X, Y), cross)


def test_call_without_Y_equals_call_with_X(kernel, rng):
    X = random_X(kernel, rng)
    assert_allclose(kernel(X), kernel(X, X))


def test_diag_equals_diagonal_of_gram(kernel, rng):
    X = random_X(kernel, rng)
    assert_allclose(kernel.diag(X), np.diag(kernel(X)))


def test_is_stationary_and_vector_input(kernel):
    assert kernel.is_stationary() == all(k.is_stationary() for k in kernel.kernels)
    assert kernel.requires_vector_input is True


def test_grid_gram_is_kron_of_factor_grams(kernel, rng):
    coords = random_coords(kernel, rng)
    dense = reduce(np.kron, kernel.factor_grams(coords))
    assert_allclose(kernel(grid_rows(kernel, coords)), dense)
    assert_allclose(kernel.as_operator(coords).to_dense(), dense)


def test_factor_cross_is_kron_block_of_cross_gram(kernel, rng):
    coords_a = random_coords(kernel, rng)
    coords_b = random_coords(kernel, rng, sizes=(2, 3, 3))
    cross = reduce(np.kron, kernel.factor_cross(coords_a, coords_b))
    Xa, Xb = grid_rows(kernel, coords_a), grid_rows(kernel, coords_b)
    assert_allclose(kernel(Xa, Xb), cross)


def test_as_operator_type(kernel, rng):
    op = kernel.as_operator(random_coords(kernel, rng))
    expected = KroneckerProduct if len(kernel.kernels) > 1 else DenseOperator
    assert type(op) is expected


def test_factor_grams_accept_1d_coords_for_single_columns(kernel, rng):
    coords = random_coords(kernel, rng)
    flat = [c[:, 0] if c.shape[1] == 1 else c for c in coords]
    for a, b in zip(
        kernel.factor_grams(flat), kernel.factor_grams(coords), strict=True
    ):
        assert_allclose(a, b)


# -- gradients ------------------------------------------------------------------
def test_gradient_matches_finite_differences(kernel, rng):
    X = random_X(kernel, rng)
    K, dK = kernel(X, eval_gradient=True)
    assert dK.shape == (*K.shape, kernel.n_dims)
    assert_allclose(K, kernel(X))
    fd = fd_gradient(lambda t: kernel.clone_with_theta(t)(X), kernel.theta)
    # entries of dK can be exactly zero, where fd is rounding noise: the
    # absolute slack scales with the largest entry
    assert_allclose(dK, fd, rtol=EIG_RTOL, atol=EIG_RTOL * np.abs(fd).max(initial=0))


def test_factor_grams_gradient_matches_finite_differences(kernel, rng):
    coords = random_coords(kernel, rng)
    pairs = kernel.factor_grams(coords, eval_gradient=True)
    for d, (K_d, dK_d) in enumerate(pairs):
        assert dK_d.shape == (*K_d.shape, kernel.n_theta_per_factor[d])
        fd = fd_gradient(
            lambda t, d=d: kernel.clone_with_theta(t).factor_grams(coords)[d],
            kernel.theta,
        )
        pieces = kernel.split_theta(np.arange(kernel.n_dims))
        mine = pieces[d].astype(int)
        assert_allclose(fd[..., mine], dK_d, rtol=EIG_RTOL)
        others = np.setdiff1d(np.arange(kernel.n_dims), mine)
        assert_allclose(fd[..., others], 0.0)


def test_gaussian_process_regressor_gradient(kernel, rng):
    X = random_X(kernel, rng, n=15)
    y = rng.standard_normal(15)
    gpr = GaussianProcessRegressor(kernel=kernel, alpha=0.1, optimizer=None).fit(X, y)
    value, grad = gpr.log_marginal_likelihood(kernel.theta, eval_gradient=True)
    assert_allclose(value, gpr.log_marginal_likelihood_value_)
    fd = fd_gradient(gpr.log_marginal_likelihood, kernel.theta)
    assert_allclose(grad, fd, rtol=EIG_RTOL)
    mean, std = gpr.predict(random_X(kernel, rng, n=4), return_std=True)
    assert mean.shape == std.shape == (4,)


# -- hyperparameter plumbing ----------------------------------------------------
def test_theta_is_log_of_free_params(kernel):
    params = kernel.get_params()
    free = [h for h in kernel.hyperparameters if not h.fixed]
    logs = [np.log(np.atleast_1d(params[h.name])) for h in free]
    assert_allclose(kernel.theta, np.concatenate(logs) if logs else np.empty(0))
    bounds = [np.log(np.atleast_2d(h.bounds)) for h in free]
    assert kernel.bounds.shape == (kernel.n_dims, 2)
    assert_allclose(kernel.bounds, np.vstack(bounds) if bounds else np.empty((0, 2)))


def test_theta_concatenates_factor_thetas(kernel):
    thetas = [k.theta for k in kernel.kernels]
    assert_allclose(kernel.theta, np.concatenate(thetas))
    assert kernel.n_theta_per_factor == [t.size for t in thetas]
    for piece, t in zip(kernel.split_theta(kernel.theta), thetas, strict=True):
        assert_allclose(piece, t)


def test_hyperparameter_names_are_prefixed(kernel):
    expected = [
        f"k{d}__{h.name}"
        for d, k in enumerate(kernel.kernels)
        for h in k.hyperparameters
    ]
    assert [h.name for h in kernel.hyperparameters] == expected
    assert set(expected) <= set(kernel.get_params(deep=True))
    assert set(kernel.get_params(deep=False)) == {"kernels", "axes"}


def test_theta_setter_sets_each_factor(kernel):
    new = kernel.theta + 0.25
    kernel.theta = new
    assert_allclose(kernel.theta, new)
    for k, piece in zip(kernel.kernels, kernel.split_theta(new), strict=True):
        assert_allclose(k.theta, piece)


def test_fixing_a_factor_drops_its_theta(kernel):
    before = kernel.split_theta(kernel.theta)
    for factor in range(len(kernel.kernels)):
        fixed = clone(kernel)
        for h in fixed.kernels[factor].hyperparameters:
            fixed.set_params(**{f"k{factor}__{h.name}_bounds": "fixed"})
        assert fixed.n_theta_per_factor[factor] == 0
        kept = [t for d, t in enumerate(before) if d != factor]
        assert_allclose(fixed.theta, np.concatenate([np.empty(0), *kept]))
        assert fixed.bounds.shape == (fixed.theta.size, 2)
        X = np.ones((2, n_columns(fixed)))
        assert fixed(X, eval_gradient=True)[1].shape == (2, 2, fixed.theta.size)


def test_fixing_one_bound_drops_its_entries(kernel):
    free = [h for h in kernel.hyperparameters if not h.fixed]
    n_before = kernel.n_dims
    kernel.set_params(**{f"{free[0].name}_bounds": "fixed"})
    assert kernel.n_dims == n_before - free[0].n_elements


def test_set_params_through_prefixed_names(kernel):
    params = kernel.get_params()
    position = 0
    for h in kernel.hyperparameters:
        if h.fixed:
            continue
        before = kernel.theta
        kernel.set_params(**{h.name: 2.0 * np.asarray(params[h.name])})
        step = np.zeros_like(before)
        step[position : position + h.n_elements] = np.log(2.0)
        assert_allclose(kernel.theta, before + step)
        position += h.n_elements


def test_set_params_replaces_a_factor(kernel):
    original = kernel.kernels
    kernel.set_params(k0=RBF(3.3))
    assert kernel.kernels[0] == RBF(3.3)
    assert original[0] != RBF(3.3)
    assert kernel.get_params()["k0__length_scale"] == 3.3


def test_clone_round_trip_and_equality(kernel):
    twin = clone(kernel)
    assert twin == kernel
    assert repr(twin) == repr(kernel)
    assert all(a is not b for a, b in zip(twin.kernels, kernel.kernels, strict=True))
    assert_allclose(twin.theta, kernel.theta)
    shifted = kernel.clone_with_theta(kernel.theta + 0.5)
    assert_allclose(shifted.theta, kernel.theta + 0.5)
    assert (shifted == kernel) == (kernel.n_dims == 0)
    assert kernel != KroneckerKernel(list(kernel.kernels)[::-1], axes=None)


def test_equality_normalises_axes():
    a = KroneckerKernel([RBF(), RBF()])
    assert a == KroneckerKernel([RBF(), RBF()], axes=[0, [1]])
    assert a != KroneckerKernel([RBF(), RBF()], axes=[1, 0])
    assert a != RBF()


def test_repr_shows_factors_and_columns():
    kernel = KroneckerKernel(
        [RBF(1.0), Matern(2.0, nu=0.5)], axes=[[0, 1], np.int64(2)]
    )
    expected = (
        "KroneckerKernel(RBF(length_scale=1) @ [0, 1], "
        "Matern(length_scale=2, nu=0.5) @ [2])"
    )
    assert repr(kernel) == expected
    assert "kernels=" in repr(KroneckerKernel(RBF()))


def test_product_with_sklearn_kernel_works(rng):
    kernel = ConstantKernel(2.0) * KroneckerKernel([RBF(0.5), RBF(1.5)])
    X = rng.uniform(size=(6, 2))
    K, dK = kernel(X, eval_gradient=True)
    assert_allclose(K, 2.0 * RBF(0.5)(X[:, :1]) * RBF(1.5)(X[:, 1:]))
    assert dK.shape == (6, 6, 3)


# -- errors ---------------------------------------------------------------------
X3 = np.zeros((4, 3))


@pytest.mark.parametrize(
    ("kernels", "match"),
    [
        (RBF(), r"kernels must be a list .* got RBF"),
        ([RBF(), "rbf"], r"kernels must be a list .* got \[RBF, str\]"),
        ("rbf", r"kernels must be a list .* got str"),
    ],
)
def test_kernels_type_errors(kernels, match):
    kernel = KroneckerKernel(kernels)  # __init__ only stores
    with pytest.raises(TypeError, match=match):
        kernel(X3)


def test_empty_kernels_error():
    with pytest.raises(ValueError, match="kernels must hold at least one kernel"):
        _ = KroneckerKernel([]).theta


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ([[0]], r"list of 2 column lists, one per kernel; got axes=\[\[0\]\]"),
        ([[0], [1], [2]], r"list of 2 column lists"),
        ([[0, 1], [1]], r"must not repeat a column; column\(s\) \[1\]"),
        ([[0, 0], [1]], r"must not repeat a column"),
        ([[0], [-1]], r"non-negative integer column indices; got -1 in"),
        ([[0], [1.5]], r"integer column indices; got 1.5"),
        ([[0], ["a"]], r"integer column indices; got 'a'"),
        ([[0], [True]], r"integer column indices; got True"),
        ([[0], []], r"must not contain an empty group"),
        ("ab", r"axes must be a list of 2 .* got axes='ab'"),
        (3, r"axes must be a list of 2 .* got axes=3"),
    ],
)
def test_axes_errors(axes, match):
    kernel = KroneckerKernel([RBF(), RBF()], axes=axes)
    with pytest.raises(ValueError, match=match):
        kernel(X3)
    with pytest.raises(ValueError, match="axes"):
        kernel.factor_grams([[0.0], [0.0]])


def test_X_with_too_few_columns():
    kernel = KroneckerKernel([RBF(), RBF()], axes=[[0], [3]])
    with pytest.raises(ValueError, match=r"X has 3 columns .* uses column 3"):
        kernel(X3)
    with pytest.raises(ValueError, match=r"X has 3 columns"):
        kernel.diag(X3)
    with pytest.raises(ValueError, match=r"Y has 2 columns"):
        kernel(np.zeros((2, 4)), np.zeros((2, 2)))


def test_X_with_nan_or_bad_rank():
    kernel = KroneckerKernel([RBF(), RBF()])
    with pytest.raises(ValueError, match="X contains NaN or infinite"):
        kernel(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="X must be 1 or 2-dimensional"):
        kernel(np.zeros((2, 2, 2)))


def test_gradient_with_Y_errors():
    kernel = KroneckerKernel([RBF(), RBF()])
    with pytest.raises(ValueError, match="Gradient can only be evaluated when Y is"):
        kernel(np.zeros((2, 2)), np.zeros((2, 2)), eval_gradient=True)


@pytest.mark.parametrize(
    ("coords", "match"),
    [
        ([[0.0, 1.0]], r"coords must be a list of 2 .* got 1 arrays"),
        (np.zeros((2, 3)), r"coords must be a list of 2 .* got ndarray"),
        ([[0.0, 1.0], np.zeros((3, 2))], r"coords\[1\] must have shape \(n_1, 1\)"),
        ([[0.0, 1.0], []], r"coords\[1\] must have shape .* got shape \(0, 1\)"),
        ([[0.0, np.nan], [1.0]], r"coords\[0\] contains NaN or infinite"),
        ([[0.0, 1.0], [np.inf]], r"coords\[1\] contains NaN or infinite"),
        ([[0.0], np.zeros((1, 1, 1))], r"coords\[1\] must be 1 or 2-dimensional"),
    ],
)
def test_coords_errors(coords, match):
    kernel = KroneckerKernel([RBF(), RBF()])
    with pytest.raises(ValueError, match=match):
        kernel.factor_grams(coords)
    with pytest.raises(ValueError, match=match):
        kernel.as_operator(coords)
    with pytest.raises(ValueError, match=match.replace("coords", "coords_b", 1)):
        kernel.factor_cross([[0.0], [0.0]], coords)


def test_split_theta_and_theta_setter_errors():
    kernel = KroneckerKernel([RBF(), ConstantKernel() * RBF()])
    with pytest.raises(ValueError, match=r"theta must be 1-D with 3 entries .* \(2,\)"):
        kernel.split_theta([0.0, 0.0])
    with pytest.raises(ValueError, match=r"theta must be 1-D with 3 entries"):
        kernel.theta = np.zeros(4)


def test_set_params_errors():
    kernel = KroneckerKernel([RBF(), RBF()])
    with pytest.raises(ValueError, match=r"Invalid parameter k2 .* k0..k1"):
        kernel.set_params(k2=RBF())
    with pytest.raises(ValueError, match="Invalid parameter"):
        kernel.set_params(k2__length_scale=1.0)
