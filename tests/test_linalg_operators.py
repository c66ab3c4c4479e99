"""Every structured operator against its dense twin (STYLE.md, habit 1).

Adding an operator means adding one line to ``CATALOGUE``. Each entry is
``(id, factory, dense_reference, kind)``: ``factory(rng)`` draws the inputs and
returns ``(operator, dense)``, where ``dense = dense_reference(inputs)`` is built
with ``np.kron``, ``scipy.linalg.block_diag``, the explicit sum of Kronecker
products or ``np.diag``, never with the operator's own ``to_dense()``. ``kind``
says which checks apply: ``"rect"`` (products only), ``"square"`` (plus the
diagonal), ``"sym"`` (plus eigh and shifted solve/logdet) and ``"spd"`` (plus
unshifted solve/logdet and cg on the bare operator).
"""

from functools import reduce

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import aslinearoperator, cg

from kronecker_gp.linalg import (
    BlockDiagonal,
    BlockMatrix,
    BlockToeplitz,
    DenseOperator,
    DiagonalOperator,
    KroneckerProduct,
    KroneckerSum,
    kron_eigh,
)
from kronecker_gp.testing import EIG_RTOL, EXACT_RTOL, assert_allclose, random_spd

KINDS = ("rect", "square", "sym", "spd")


def _at_least(kind, minimum):
    return KINDS.index(kind) >= KINDS.index(minimum)


# -- inputs and dense references ------------------------------------------------
def _sym(rng, n):
    s = rng.standard_normal((n, n))
    return 0.5 * (s + s.T)


def _path_laplacian(n):
    deg = np.full(n, 2.0)
    deg[[0, -1]] = 1.0
    return np.diag(deg) - np.eye(n, k=1) - np.eye(n, k=-1)


def _cycle_laplacian(n):
    eye = np.eye(n)
    return 2.0 * eye - np.roll(eye, 1, axis=1) - np.roll(eye, -1, axis=1)


def _dense_kron(factors):
    return reduce(np.kron, factors)


def _dense_kron_sum(factors):
    # A (+) B (+) C = A (x) I (x) I + I (x) B (x) I + I (x) I (x) C
    eyes = [np.eye(a.shape[0]) for a in factors]
    return sum(
        reduce(np.kron, [*eyes[:d], a, *eyes[d + 1 :]]) for d, a in enumerate(factors)
    )


def _dense_blocks(blocks):
    return scipy.linalg.block_diag(*blocks)


def _entry(case_id, kind, draw, make_operator, dense_reference):
    def factory(rng):
        inputs = draw(rng)
        return make_operator(inputs), dense_reference(inputs)

    return (case_id, factory, dense_reference, kind)


def _kron_entry(case_id, kind, draw):
    return _entry(case_id, kind, draw, lambda fs: KroneckerProduct(*fs), _dense_kron)


def _kron_sum_entry(case_id, draw):
    return _entry(case_id, "sym", draw, lambda fs: KroneckerSum(*fs), _dense_kron_sum)


def _sym_toeplitz_blocks(rng):
    # first block column of a symmetric block-Toeplitz matrix: T_0 symmetric
    blocks = rng.standard_normal((3, 2, 2))
    blocks[0] = blocks[0] + blocks[0].T
    return blocks


def _dense_block_toeplitz(blocks):
    # block (i, j) = T_{i-j} below the diagonal and T_{j-i}^T above it
    m = blocks.shape[0]
    rows = [
        [blocks[i - j] if i >= j else blocks[j - i].T for j in range(m)]
        for i in range(m)
    ]
    return np.block(rows)


def _block_operator_inputs(rng):
    a, b = random_spd(2, random_state=rng), random_spd(3, random_state=rng)
    d = rng.uniform(0.5, 2.0, size=4)
    c = random_spd(2, random_state=rng)
    return a, b, d, c


def _block_operator(inputs):
    a, b, d, c = inputs
    return BlockDiagonal([KroneckerProduct(a, b), DiagonalOperator(d), c])


def _block_operator_dense(inputs):
    a, b, d, c = inputs
    return scipy.linalg.block_diag(np.kron(a, b), np.diag(d), c)


CATALOGUE = [
    _kron_entry(
        "kron-2-spd",
        "spd",
        lambda rng: [random_spd(3, random_state=rng), random_spd(4, random_state=rng)],
    ),
    _kron_entry(
        "kron-3-spd-size1",
        "spd",
        lambda rng: [random_spd(n, random_state=rng) for n in (2, 1, 3)],
    ),
    _kron_entry(
        "kron-2-rect",
        "rect",
        lambda rng: [rng.standard_normal((2, 3)), rng.standard_normal((4, 2))],
    ),
    _kron_entry(
        "kron-3-rect-square-overall",
        "square",
        lambda rng: [rng.standard_normal(s) for s in ((1, 3), (2, 2), (3, 1))],
    ),
    _kron_entry(
        "kron-2-nonsymmetric-square",
        "square",
        lambda rng: [rng.standard_normal((2, 2)), rng.standard_normal((3, 3))],
    ),
    _kron_sum_entry("kron-sum-2-sym", lambda rng: [_sym(rng, 3), _sym(rng, 4)]),
    _kron_sum_entry("kron-sum-3-sym", lambda rng: [_sym(rng, n) for n in (2, 1, 3)]),
    _kron_sum_entry(
        "kron-sum-path-x-cycle", lambda rng: [_path_laplacian(3), _cycle_laplacian(4)]
    ),
    _entry(
        "block-diag-dense",
        "spd",
        lambda rng: [random_spd(n, random_state=rng) for n in (2, 3, 1)],
        BlockDiagonal,
        _dense_blocks,
    ),
    _entry(
        "block-diag-rect",
        "rect",
        lambda rng: [rng.standard_normal(s) for s in ((2, 3), (1, 2), (3, 1))],
        BlockDiagonal,
        _dense_blocks,
    ),
    _entry(
        "block-diag-operators",
        "spd",
        _block_operator_inputs,
        _block_operator,
        _block_operator_dense,
    ),
    _entry(
        "block-matrix-spd",
        "spd",
        lambda rng: random_spd(5, random_state=rng),
        lambda a: BlockMatrix([[a[:2, :2], a[:2, 2:]], [a[2:, :2], a[2:, 2:]]]),
        np.array,
    ),
    _entry(
        "block-matrix-rect",
        "rect",
        lambda rng: [
            [rng.standard_normal((2, 3)), rng.standard_normal((2, 1))],
            [rng.standard_normal((1, 3)), rng.standard_normal((1, 1))],
        ],
        BlockMatrix,
        np.block,
    ),
    _entry(
        "block-toeplitz-sym",
        "sym",
        _sym_toeplitz_blocks,
        BlockToeplitz,
        _dense_block_toeplitz,
    ),
    _entry(
        "dense-spd",
        "spd",
        lambda rng: random_spd(5, random_state=rng),
        DenseOperator,
        np.array,
    ),
    _entry(
        "dense-rect",
        "rect",
        lambda rng: rng.standard_normal((3, 5)),
        DenseOperator,
        np.array,
    ),
    _entry(
        "diagonal",
        "spd",
        lambda rng: rng.uniform(0.5, 2.0, size=4),
        DiagonalOperator,
        np.diag,
    ),
]


def _cases(minimum="rect"):
    return [
        pytest.param(factory, id=case_id)
        for case_id, factory, _, kind in CATALOGUE
        if _at_least(kind, minimum)
    ]


def _pd_shift(dense):
    """A shift that makes a symmetric ``dense`` positive definite (min eig 1)."""
    return max(0.5, 1.0 - float(np.linalg.eigvalsh(dense)[0]))


# -- the suite ------------------------------------------------------------------
def test_catalogue_ids_are_unique():
    ids = [case[0] for case in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert all(kind in KINDS for *_, kind in CATALOGUE)


@pytest.mark.parametrize("factory", _cases())
def test_shape_and_to_dense(factory, rng):
    op, dense = factory(rng)
    assert op.shape == dense.shape
    assert op.dtype == np.float64
    assert_allclose(op.to_dense(), dense)


@pytest.mark.parametrize("factory", _cases())
def test_matvec(factory, rng):
    op, dense = factory(rng)
    u = rng.standard_normal(op.shape[1])
    out = op @ u
    assert out.shape == (op.shape[0],)
    assert_allclose(out, dense @ u)
    assert_allclose(op.matvec(u), dense @ u)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("factory", _cases())
def test_matmat(factory, k, rng):
    op, dense = factory(rng)
    u = rng.standard_normal((op.shape[1], k))
    out = op @ u
    assert out.shape == (op.shape[0], k)
    assert_allclose(out, dense @ u)


@pytest.mark.parametrize("factory", _cases())
def test_transpose(factory, rng):
    op, dense = factory(rng)
    v = rng.standard_normal(op.shape[0])
    vs = rng.standard_normal((op.shape[0], 3))
    assert op.T.shape == dense.T.shape
    assert_allclose(op.T @ v, dense.T @ v)
    assert_allclose(op.T @ vs, dense.T @ vs)
    assert_allclose(op.rmatvec(v), dense.T @ v)
    assert_allclose(op.rmatmat(vs), dense.T @ vs)


@pytest.mark.parametrize("factory", _cases())
def test_dot_test(factory, rng):
    op, _ = factory(rng)
    u = rng.standard_normal(op.shape[1])
    v = rng.standard_normal(op.shape[0])
    assert_allclose(v @ (op @ u), (op.T @ v) @ u)


@pytest.mark.parametrize("factory", _cases("square"))
def test_diagonal(factory, rng):
    op, dense = factory(rng)
    assert_allclose(op.diagonal(), np.diag(dense))


@pytest.mark.parametrize("factory", _cases("sym"))
def test_eigh_reconstructs(factory, rng):
    op, dense = factory(rng)
    w, vecs = op.eigh()
    v = vecs.to_dense()
    assert w.shape == (op.shape[0],)
    assert v.shape == op.shape
    # structural zeros of dense come back as rounding noise: scaled slack
    scale = np.abs(dense).max()
    assert_allclose((v * w) @ v.T, dense, rtol=EIG_RTOL, atol=EIG_RTOL * scale)
    assert_allclose(v.T @ v, np.eye(op.shape[0]), rtol=EIG_RTOL, atol=EIG_RTOL)
    u = rng.standard_normal(op.shape[0])
    assert_allclose(vecs @ u, v @ u)


@pytest.mark.parametrize("factory", _cases("spd"))
def test_solve(factory, rng):
    op, dense = factory(rng)
    b = rng.standard_normal(op.shape[0])
    bs = rng.standard_normal((op.shape[0], 3))
    assert_allclose(dense @ op.solve(b), b, rtol=EIG_RTOL)
    assert_allclose(dense @ op.solve(bs), bs, rtol=EIG_RTOL)


@pytest.mark.parametrize("factory", _cases("sym"))
def test_solve_shifted(factory, rng):
    op, dense = factory(rng)
    shift = _pd_shift(dense)
    shifted = dense + shift * np.eye(op.shape[0])
    b = rng.standard_normal(op.shape[0])
    bs = rng.standard_normal((op.shape[0], 2))
    assert_allclose(shifted @ op.solve(b, shift), b, rtol=EIG_RTOL)
    assert_allclose(shifted @ op.solve(bs, shift=shift), bs, rtol=EIG_RTOL)


@pytest.mark.parametrize("factory", _cases("spd"))
def test_logdet(factory, rng):
    op, dense = factory(rng)
    sign, value = np.linalg.slogdet(dense)
    assert sign > 0
    assert_allclose(op.logdet(), value, rtol=EIG_RTOL)


@pytest.mark.parametrize("factory", _cases("sym"))
def test_logdet_shifted(factory, rng):
    op, dense = factory(rng)
    shift = _pd_shift(dense)
    sign, value = np.linalg.slogdet(dense + shift * np.eye(op.shape[0]))
    assert sign > 0
    assert_allclose(op.logdet(shift), value, rtol=EIG_RTOL)


def _assert_cg_converges(a, dense, b):
    """cg stops when ||r|| <= rtol ||b||; the error is then <= cond * rtol."""
    n = dense.shape[0]
    x, info = cg(a, b, rtol=EXACT_RTOL, atol=0.0, maxiter=20 * n)
    assert info == 0
    exact = np.linalg.solve(dense, b)
    cond = np.linalg.cond(dense)
    # slack 10 for the gap between cg's recurrence residual and the true one
    assert np.linalg.norm(dense @ x - b) <= 10 * EXACT_RTOL * np.linalg.norm(b)
    assert np.linalg.norm(x - exact) <= 10 * cond * EXACT_RTOL * np.linalg.norm(exact)


@pytest.mark.parametrize("factory", _cases("spd"))
def test_scipy_cg_accepts_operator(factory, rng):
    op, dense = factory(rng)
    _assert_cg_converges(op, dense, rng.standard_normal(op.shape[0]))


@pytest.mark.parametrize("factory", _cases("sym"))
def test_scipy_cg_accepts_shifted_sum(factory, rng):
    op, dense = factory(rng)
    n = op.shape[0]
    shift = _pd_shift(dense)
    shifted = op + shift * aslinearoperator(scipy.sparse.identity(n))
    _assert_cg_converges(shifted, dense + shift * np.eye(n), rng.standard_normal(n))


# -- property tests: random small shapes vs np.kron / block_diag -----------------
SIZES = st.lists(st.integers(1, 5), min_size=2, max_size=3)
SEEDS = st.integers(0, 2**32 - 1)
PROPERTY = settings(max_examples=25, deadline=None)


def _check_square_operator(op, dense, rng):
    n = dense.shape[0]
    u, us = rng.standard_normal(n), rng.standard_normal((n, 2))
    assert_allclose(op.to_dense(), dense)
    assert_allclose(op @ u, dense @ u)
    assert_allclose(op @ us, dense @ us)
    assert_allclose(op.T @ u, dense.T @ u)
    assert_allclose(op.diagonal(), np.diag(dense))
    w, vecs = op.eigh()
    v = vecs.to_dense()
    scale = np.abs(dense).max()
    assert_allclose((v * w) @ v.T, dense, rtol=EIG_RTOL, atol=EIG_RTOL * scale)
    shift = _pd_shift(dense)
    shifted = dense + shift * np.eye(n)
    assert_allclose(shifted @ op.solve(us, shift), us, rtol=EIG_RTOL)
    value = np.linalg.slogdet(shifted)[1]
    assert_allclose(op.logdet(shift), value, rtol=EIG_RTOL)


@PROPERTY
@given(sizes=SIZES, seed=SEEDS)
def test_kronecker_product_property(sizes, seed):
    rng = np.random.default_rng(seed)
    factors = [random_spd(n, random_state=rng) for n in sizes]
    op, dense = KroneckerProduct(*factors), reduce(np.kron, factors)
    _check_square_operator(op, dense, rng)
    value = np.linalg.slogdet(dense)[1]
    assert_allclose(op.logdet(), value, rtol=EIG_RTOL)


@PROPERTY
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=2, max_size=3
    ),
    seed=SEEDS,
)
def test_kronecker_product_rectangular_property(shapes, seed):
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal(s) for s in shapes]
    op, dense = KroneckerProduct(*factors), reduce(np.kron, factors)
    u, v = rng.standard_normal((dense.shape[1], 2)), rng.standard_normal(dense.shape[0])
    assert op.shape == dense.shape
    assert_allclose(op @ u, dense @ u)
    assert_allclose(op.T @ v, dense.T @ v)
    assert_allclose(op.to_dense(), dense)


@PROPERTY
@given(sizes=SIZES, seed=SEEDS)
def test_kronecker_sum_property(sizes, seed):
    rng = np.random.default_rng(seed)
    factors = [_sym(rng, n) for n in sizes]
    _check_square_operator(KroneckerSum(*factors), _dense_kron_sum(factors), rng)


@PROPERTY
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    as_kron=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=SEEDS,
)
def test_block_diagonal_property(sizes, as_kron, seed):
    rng = np.random.default_rng(seed)
    blocks, dense_blocks = [], []
    for n, kron in zip(sizes, as_kron):
        if kron:  # a KroneckerProduct block of size 2n
            a, b = random_spd(2, random_state=rng), random_spd(n, random_state=rng)
            blocks.append(KroneckerProduct(a, b))
            dense_blocks.append(np.kron(a, b))
        else:
            a = random_spd(n, random_state=rng)
            blocks.append(a)
            dense_blocks.append(a)
    op, dense = BlockDiagonal(blocks), scipy.linalg.block_diag(*dense_blocks)
    _check_square_operator(op, dense, rng)


# -- errors -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [KroneckerProduct, KroneckerSum])
def test_fewer_than_two_factors(cls):
    with pytest.raises(ValueError, match="at least 2 factors; got 1"):
        cls(np.eye(2))
    with pytest.raises(ValueError, match="at least 2 factors; got 0"):
        cls()


def test_kronecker_sum_non_square_factor():
    with pytest.raises(ValueError, match=r"factor 1 must be a square matrix.*\(2, 3\)"):
        KroneckerSum(np.eye(2), np.ones((2, 3)))


@pytest.mark.parametrize(
    "method",
    [lambda op: op.eigh(), lambda op: op.solve(np.ones(8)), lambda op: op.logdet()],
    ids=["eigh", "solve", "logdet"],
)
def test_rectangular_kronecker_product_structured_methods(method):
    op = KroneckerProduct(np.ones((2, 3)), np.eye(4))
    with pytest.raises(ValueError, match=r"needs a square operator.*\(8, 12\)"):
        method(op)


def test_singular_solve_raises(rng):
    psd = KroneckerProduct(np.diag([0.0, 1.0]), random_spd(3, random_state=rng))
    with pytest.raises(np.linalg.LinAlgError, match="singular; use a positive shift"):
        psd.solve(np.ones(6))
    assert np.all(np.isfinite(psd.solve(np.ones(6), shift=1e-3)))
    laplacian = KroneckerSum(_path_laplacian(3), _cycle_laplacian(4))
    with pytest.raises(np.linalg.LinAlgError, match="singular.*use a positive shift"):
        laplacian.solve(np.ones(12))
    with pytest.raises(np.linalg.LinAlgError, match="diagonal.*has zeros"):
        DiagonalOperator([1.0, 2.0]).solve(np.ones(2), shift=-1.0)


def test_not_positive_definite_logdet_raises():
    laplacian = KroneckerSum(_path_laplacian(3), _cycle_laplacian(4))
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        laplacian.logdet()
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        KroneckerProduct(np.diag([0.0, 1.0]), np.eye(2)).logdet()


@pytest.mark.parametrize("blocks", [[], np.eye(2)], ids=["empty", "ndarray"])
def test_block_diagonal_needs_non_empty_list(blocks):
    with pytest.raises(ValueError, match="non-empty list of matrices or operators"):
        BlockDiagonal(blocks)


def test_block_diagonal_rectangular_blocks_structured_methods():
    op = BlockDiagonal([np.ones((1, 2)), np.ones((2, 1))])  # square 3 x 3 overall
    methods = [op.diagonal, op.eigh, op.logdet, lambda: op.solve(np.ones(3))]
    for method in methods:
        with pytest.raises(ValueError, match=r"square blocks; blocks\[0\] is \(1, 2\)"):
            method()


@pytest.mark.parametrize(
    "build",
    [
        lambda bad: KroneckerProduct(np.eye(2), bad),
        lambda bad: KroneckerSum(np.eye(2), bad),
        lambda bad: kron_eigh([np.eye(2), bad]),
        DenseOperator,
        lambda bad: DiagonalOperator(np.diag(bad)),
        lambda bad: BlockDiagonal([np.eye(2), bad]),
    ],
    ids=["kron", "kron-sum", "kron-eigh", "dense", "diagonal", "block-diag"],
)
def test_nan_input_raises(build):
    bad = np.eye(2)
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        build(bad)


def _with_eigenvalues(rng, w):
    q, _ = np.linalg.qr(rng.standard_normal((len(w), len(w))))
    a = (q * np.asarray(w)) @ q.T
    return 0.5 * (a + a.T)


def test_kron_eigh_rejects_non_psd_factor(rng):
    bad = _with_eigenvalues(rng, [-0.1, 0.5, 1.0])
    with pytest.raises(ValueError, match="factor 1 is not positive semi-definite"):
        kron_eigh([np.eye(2), bad])
    with pytest.raises(ValueError, match="positive semi-definite"):
        KroneckerProduct(np.eye(2), bad).eigh()


def test_kron_eigh_clips_slightly_negative_eigenvalue(rng):
    # -1e-7 lies between the warning (-1e-8 max) and error (-1e-6 max) thresholds
    a = _with_eigenvalues(rng, [-1e-7, 0.5, 1.0])
    with pytest.warns(RuntimeWarning, match="negative eigenvalue.*clipped to zero"):
        ws, us = kron_eigh([np.eye(2), a])
    assert ws[1][0] == 0.0
    assert np.all(ws[1] >= 0.0)
    assert_allclose(ws[1][1:], [0.5, 1.0], rtol=EIG_RTOL)


def test_kron_eigh_rejects_non_symmetric_factor():
    with pytest.raises(ValueError, match="factor 0 must be symmetric"):
        kron_eigh([np.array([[1.0, 2.0], [0.0, 1.0]]), np.eye(2)])
