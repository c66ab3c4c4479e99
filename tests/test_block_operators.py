"""BlockMatrix and BlockToeplitz against their dense twins (np.block, toeplitz).

The references are built with ``np.block``, ``np.kron``, ``scipy.linalg.toeplitz``
or explicit index loops, never with the operators' own ``to_dense()``.
"""

import numpy as np
import pytest
import scipy.linalg
from scipy.sparse.linalg import cg

from kronecker_gp.linalg import (
    BlockDiagonal,
    BlockMatrix,
    BlockToeplitz,
    DiagonalOperator,
    KroneckerProduct,
)
from kronecker_gp.testing import EIG_RTOL, EXACT_RTOL, assert_allclose, random_spd


def _dense_block_toeplitz(col, row):
    """Reference: block (i, j) is col[i - j] below the diagonal, row[j - i] above."""
    m, n = len(col), len(row)
    return np.block(
        [[col[i - j] if i >= j else row[j - i] for j in range(n)] for i in range(m)]
    )


# -- factories: (operator, dense reference, kind) ----------------------------------
def _block_dense(rng):
    a, b, c, d = (rng.standard_normal(s) for s in ((2, 3), (2, 1), (4, 3), (4, 1)))
    return BlockMatrix([[a, b], [c, d]]), np.block([[a, b], [c, d]]), "rect"


def _block_with_zeros_and_operators(rng):
    k1, k2 = random_spd(2, random_state=rng), random_spd(3, random_state=rng)
    d = rng.uniform(0.5, 2.0, 3)
    c = rng.standard_normal((6, 3))
    op = BlockMatrix([[KroneckerProduct(k1, k2), c], [None, DiagonalOperator(d)]])
    dense = np.block([[np.kron(k1, k2), c], [np.zeros((3, 6)), np.diag(d)]])
    return op, dense, "square"


def _block_spd(rng):
    # [[A, C], [C^T, D]] with a dominant diagonal: symmetric positive definite
    a, d = 5 * np.eye(3) + random_spd(3, random_state=rng), 5 * np.eye(2)
    c = rng.standard_normal((3, 2))
    op = BlockMatrix([[a, c], [c.T, BlockDiagonal([d[:1, :1], d[1:, 1:]])]])
    return op, np.block([[a, c], [c.T, d]]), "spd"


def _block_kron_of_2x2(rng):
    a, b = rng.standard_normal((2, 2)), rng.standard_normal((3, 3))
    op = BlockMatrix([[a[i, j] * b for j in range(2)] for i in range(2)])
    return op, np.kron(a, b), "square"


def _block_diag_of_2x2(rng):
    a, b = random_spd(2, random_state=rng), random_spd(2, random_state=rng)
    return BlockMatrix([[a, None], [None, b]]), scipy.linalg.block_diag(a, b), "spd"


def _toeplitz_scalar(rng):
    c = np.array([3.0, 1.0, 0.5, 0.2, 0.1])
    return BlockToeplitz(c), scipy.linalg.toeplitz(c), "spd"


def _toeplitz_scalar_rect(rng):
    c, r = rng.standard_normal(4), rng.standard_normal(6)
    r[0] = c[0]
    return BlockToeplitz(c, r), scipy.linalg.toeplitz(c, r), "rect"


def _toeplitz_blocks_rect(rng):
    col, row = rng.standard_normal((3, 2, 4)), rng.standard_normal((5, 2, 4))
    row[0] = col[0]
    return BlockToeplitz(col, row), _dense_block_toeplitz(col, row), "rect"


def _toeplitz_blocks_square(rng):
    col, row = rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 3))
    row[0] = col[0]
    return BlockToeplitz(col, row), _dense_block_toeplitz(col, row), "square"


def _toeplitz_symmetric_spd(rng):
    # a stationary bivariate covariance: T_k = B exp(-k^2 / 8), B SPD, plus I
    b = random_spd(2, random_state=rng)
    lags = np.arange(6)
    col = np.exp(-(lags**2) / 8.0)[:, None, None] * b
    col[0] += np.eye(2)
    dense = np.kron(scipy.linalg.toeplitz(np.exp(-(lags**2) / 8.0)), b) + np.eye(12)
    return BlockToeplitz(col), dense, "spd"


def _toeplitz_one_block(rng):
    t0 = rng.standard_normal((2, 3))
    return BlockToeplitz(t0[None], t0[None]), t0, "rect"


CATALOGUE = [
    pytest.param(_block_dense, "rect", id="block-dense-rect"),
    pytest.param(_block_with_zeros_and_operators, "square", id="block-zeros-operators"),
    pytest.param(_block_spd, "spd", id="block-spd"),
    pytest.param(_block_kron_of_2x2, "square", id="block-kron-2x2"),
    pytest.param(_block_diag_of_2x2, "spd", id="block-diag-2x2"),
    pytest.param(_toeplitz_scalar, "spd", id="toeplitz-scalar"),
    pytest.param(_toeplitz_scalar_rect, "rect", id="toeplitz-scalar-rect"),
    pytest.param(_toeplitz_blocks_rect, "rect", id="toeplitz-blocks-rect"),
    pytest.param(_toeplitz_blocks_square, "square", id="toeplitz-blocks-square"),
    pytest.param(_toeplitz_symmetric_spd, "spd", id="toeplitz-symmetric-spd"),
    pytest.param(_toeplitz_one_block, "rect", id="toeplitz-one-block"),
]
KINDS = ("rect", "square", "spd")


def _cases(minimum):
    """The catalogue entries of at least kind ``minimum``."""
    return [
        pytest.param(p.values[0], id=p.id)
        for p in CATALOGUE
        if KINDS.index(p.values[1]) >= KINDS.index(minimum)
    ]


def _needs(factory, rng, kind):
    op, dense, drawn_kind = factory(rng)
    assert KINDS.index(drawn_kind) >= KINDS.index(kind)
    return op, dense


@pytest.mark.parametrize("factory", _cases("rect"))
def test_to_dense_and_shape(factory, rng):
    op, dense = _needs(factory, rng, "rect")
    assert op.shape == dense.shape
    assert op.dtype == np.float64
    assert_allclose(op.to_dense(), dense)


@pytest.mark.parametrize("factory", _cases("rect"))
def test_matvec_matmat(factory, rng):
    op, dense = _needs(factory, rng, "rect")
    u, us = rng.standard_normal(op.shape[1]), rng.standard_normal((op.shape[1], 3))
    assert (op @ u).shape == (op.shape[0],)
    assert_allclose(op @ u, dense @ u)
    assert_allclose(op.matvec(u), dense @ u)
    assert_allclose(op @ us, dense @ us)


@pytest.mark.parametrize("factory", _cases("rect"))
def test_transpose_and_dot_test(factory, rng):
    op, dense = _needs(factory, rng, "rect")
    u = rng.standard_normal(op.shape[1])
    v, vs = rng.standard_normal(op.shape[0]), rng.standard_normal((op.shape[0], 2))
    assert op.T.shape == dense.T.shape
    assert_allclose(op.T @ v, dense.T @ v)
    assert_allclose(op.rmatvec(v), dense.T @ v)
    assert_allclose(op.rmatmat(vs), dense.T @ vs)
    assert_allclose(v @ (op @ u), (op.T @ v) @ u)


@pytest.mark.parametrize("factory", _cases("square"))
def test_diagonal(factory, rng):
    op, dense = _needs(factory, rng, "square")
    assert_allclose(op.diagonal(), np.diag(dense))


@pytest.mark.parametrize("factory", _cases("spd"))
def test_eigh_solve_logdet(factory, rng):
    op, dense = _needs(factory, rng, "spd")
    w, vecs = op.eigh()
    v = vecs.to_dense()
    scale = np.abs(dense).max()  # structural zeros come back as rounding noise
    assert_allclose((v * w) @ v.T, dense, rtol=EIG_RTOL, atol=EIG_RTOL * scale)
    b = rng.standard_normal((op.shape[0], 2))
    assert_allclose(dense @ op.solve(b), b, rtol=EIG_RTOL)
    assert_allclose((dense + 0.5 * np.eye(op.shape[0])) @ op.solve(b, 0.5), b)
    assert_allclose(op.logdet(), np.linalg.slogdet(dense)[1], rtol=EIG_RTOL)


@pytest.mark.parametrize("factory", _cases("spd"))
def test_scipy_cg_accepts_operator(factory, rng):
    op, dense = _needs(factory, rng, "spd")
    b = rng.standard_normal(op.shape[0])
    x, info = cg(op, b, rtol=EXACT_RTOL, atol=0.0, maxiter=50 * op.shape[0])
    assert info == 0
    assert np.linalg.norm(dense @ x - b) <= 10 * EXACT_RTOL * np.linalg.norm(b)


def test_block_toeplitz_large_matches_direct_sum(rng):
    # FFT round-off stays at exact-algebra level for hundreds of blocks
    m, p = 300, 3
    col = rng.standard_normal((m, p, p)) / np.arange(1, m + 1)[:, None, None]
    op = BlockToeplitz(col)
    x = rng.standard_normal(m * p).reshape(m, p)
    direct = np.array(
        [
            sum(col[i - j] @ x[j] if i >= j else col[j - i].T @ x[j] for j in range(m))
            for i in range(m)
        ]
    ).reshape(-1)
    assert_allclose(op @ x.reshape(-1), direct, atol=1e-12 * np.abs(direct).max())


def test_block_matrix_nested_and_transpose_of_operator_blocks(rng):
    inner = BlockMatrix([[rng.standard_normal((2, 2)), None], [None, np.eye(1)]])
    c = rng.standard_normal((3, 2))
    op = BlockMatrix([[inner, c], [c.T, np.eye(2)]])
    dense = np.block(
        [
            [scipy.linalg.block_diag(inner.blocks[0][0].to_dense(), 1.0), c],
            [c.T, np.eye(2)],
        ]
    )
    assert_allclose(op.to_dense(), dense)
    assert isinstance(op.H, BlockMatrix)  # real operators: .H is the transpose
    assert_allclose(op.H.to_dense(), dense.T)
    assert isinstance(
        BlockToeplitz(np.ones((2, 1, 3)), np.ones((3, 1, 3))).H, BlockToeplitz
    )


def test_block_matrix_accepts_scalars_and_vectors_like_np_block():
    blocks = [[1.0, np.array([2.0, 3.0])], [np.array([[4.0]]), np.array([5.0, 6.0])]]
    op = BlockMatrix(blocks)
    assert_allclose(op.to_dense(), np.block(blocks))
    assert op.block_shape == (2, 2)
    assert op.row_sizes == (1, 1) and op.col_sizes == (1, 2)


# -- bad input --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        (np.eye(2), "blocks must be a non-empty list of block rows"),
        ([], "blocks must be a non-empty list of block rows"),
        ([np.eye(2)], "blocks must be a non-empty list of block rows"),
        ([[np.eye(2)], [np.eye(2), np.eye(2)]], "blocks must be rectangular"),
        ([[np.eye(2), np.ones((3, 1))]], r"blocks\[0\]\[1\] has 3 rows"),
        ([[np.eye(2)], [np.ones((1, 3))]], r"blocks\[1\]\[0\] has 3 columns"),
        ([[np.eye(2), None], [None, None]], "block row 1 of blocks holds only None"),
        ([[np.ones((1, 1, 1))]], r"blocks\[0\]\[0\] must be at most 2-D"),
    ],
)
def test_block_matrix_bad_input(blocks, match):
    with pytest.raises(ValueError, match=match):
        BlockMatrix(blocks)


def test_block_matrix_bad_block_type():
    with pytest.raises(TypeError, match=r"blocks\[0\]\[0\] must be an array"):
        BlockMatrix([[{"a": 1}]])


@pytest.mark.parametrize(
    ("col", "row", "match"),
    [
        (np.ones((2, 2)), None, "first_column must be 1 or 3-dimensional"),
        (np.ones((0, 2, 2)), None, "first_column must hold at least one"),
        (np.ones((2, 2, 3)), None, "first_row may be omitted"),
        (np.ones((2, 2, 2)), np.ones((2, 3, 2)), "first_row has blocks of shape"),
        (np.ones((2, 2, 2)), 2 * np.ones((2, 2, 2)), r"first_row\[0\] must equal"),
        ([1.0, np.nan], None, "first_column contains NaN"),
    ],
)
def test_block_toeplitz_bad_input(col, row, match):
    with pytest.raises(ValueError, match=match):
        BlockToeplitz(col, row)


def test_operators_are_immutable(rng):
    op = BlockToeplitz(rng.standard_normal((3, 2, 2)))
    with pytest.raises(ValueError, match="read-only"):
        op.first_column[0, 0, 0] = 1.0
