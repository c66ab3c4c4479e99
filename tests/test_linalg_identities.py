"""Each Kronecker identity on tiny random factors against dense numpy (habit 5)."""

import tracemalloc
from functools import reduce

import numpy as np
import pytest

from kronecker_gp.linalg import (
    KroneckerProduct,
    _identities,
    face_split_gram,
    face_split_matvec,
    kron_diag,
    kron_eigh,
    kron_logdet,
    kron_matvec,
    kron_outer,
    kron_quad_form,
    kron_solve_shifted,
)
from kronecker_gp.testing import EIG_RTOL, assert_allclose, random_spd

SIZES = [(3,), (2, 3), (3, 1, 2), (2, 3, 1, 2)]
SHAPES = [
    ((2, 3),),
    ((3, 2), (1, 4)),
    ((2, 3), (4, 1), (2, 2)),
    ((1, 2),) * 2 + ((3, 2),) * 2,
]


def _spd_factors(rng, sizes):
    return [random_spd(n, random_state=rng) for n in sizes]


def _dense_shifted(factors, shift):
    k = reduce(np.kron, factors)
    return k + shift * np.eye(k.shape[0])


def test_ordering_convention(rng):
    # stated once in kronecker_gp/linalg/__init__.py: C order, last axis fastest
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((4, 4))
    x = rng.standard_normal((3, 4))
    op = KroneckerProduct(a, b)
    assert_allclose(op @ x.reshape(-1), (a @ x @ b.T).reshape(-1))
    assert_allclose(op @ x.reshape(-1), np.kron(a, b) @ x.reshape(-1))


@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"{len(s)}-factors")
@pytest.mark.parametrize("k", [None, 1, 3], ids=["vector", "1-col", "3-cols"])
def test_kron_matvec(shapes, k, rng):
    factors = [rng.standard_normal(s) for s in shapes]
    dense = reduce(np.kron, factors)
    x = rng.standard_normal(dense.shape[1] if k is None else (dense.shape[1], k))
    out = kron_matvec(factors, x)
    assert out.shape == (dense @ x).shape
    assert_allclose(out, dense @ x)


def test_kron_matvec_wrong_length(rng):
    with pytest.raises(ValueError, match=r"x has 5 rows.*\[2, 3\] columns needs 6"):
        kron_matvec([np.eye(2), np.eye(3)], np.ones(5))


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}-factors")
def test_kron_diag(sizes, rng):
    factors = [rng.standard_normal((n, n)) for n in sizes]
    assert_allclose(kron_diag(factors), np.diag(reduce(np.kron, factors)))


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}-factors")
def test_kron_outer(sizes, rng):
    vectors = [rng.standard_normal(n) for n in sizes]
    assert_allclose(kron_outer(vectors), reduce(np.kron, vectors))
    assert_allclose(kron_outer(vectors, np.multiply), reduce(np.kron, vectors))
    ones = [np.ones(n) for n in sizes]
    outer_sum = sum(
        reduce(np.kron, [*ones[:d], v, *ones[d + 1 :]]) for d, v in enumerate(vectors)
    )
    assert_allclose(kron_outer(vectors, np.add), outer_sum)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}-factors")
def test_kron_eigh_reconstructs(sizes, rng):
    factors = _spd_factors(rng, sizes)
    ws, us = kron_eigh(factors)
    for a, w, u in zip(factors, ws, us):
        scale = np.abs(a).max()  # entries near zero: slack scaled by the largest
        assert_allclose((u * w) @ u.T, a, rtol=EIG_RTOL, atol=EIG_RTOL * scale)
        assert_allclose(u.T @ u, np.eye(len(w)), rtol=EIG_RTOL, atol=EIG_RTOL)
    u = reduce(np.kron, us)
    dense = reduce(np.kron, factors)
    assert_allclose(
        (u * kron_outer(ws)) @ u.T,
        dense,
        rtol=EIG_RTOL,
        atol=EIG_RTOL * np.abs(dense).max(),
    )


@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}-factors")
def test_kron_solve_shifted(sizes, shift, rng):
    factors = _spd_factors(rng, sizes)
    dense = _dense_shifted(factors, shift)
    ws, us = kron_eigh(factors)
    b = rng.standard_normal(dense.shape[0])
    bs = rng.standard_normal((dense.shape[0], 3))
    lam = kron_outer(ws)
    assert_allclose(
        kron_solve_shifted(lam, us, shift, b), np.linalg.solve(dense, b), rtol=EIG_RTOL
    )
    assert_allclose(
        kron_solve_shifted(lam, us, shift, bs),
        np.linalg.solve(dense, bs),
        rtol=EIG_RTOL,
    )


def test_kron_solve_shifted_singular():
    ws, us = kron_eigh([np.diag([0.0, 1.0]), np.eye(2)])
    with pytest.raises(np.linalg.LinAlgError, match="singular; use a positive shift"):
        kron_solve_shifted(kron_outer(ws), us, 0.0, np.ones(4))


@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}-factors")
def test_kron_logdet(sizes, shift, rng):
    factors = _spd_factors(rng, sizes)
    sign, value = np.linalg.slogdet(_dense_shifted(factors, shift))
    assert sign > 0
    ws, _ = kron_eigh(factors)
    assert_allclose(kron_logdet(ws, shift), value, rtol=EIG_RTOL)
    if shift == 0.0:
        assert_allclose(kron_logdet(ws), value, rtol=EIG_RTOL)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_kron_logdet_singular(shift):
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        kron_logdet([np.array([0.0, 1.0]), np.array([2.0])], shift=-shift)


@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{len(s)}-factors")
def test_kron_quad_form(sizes, shift, rng):
    factors = _spd_factors(rng, sizes)
    dense = _dense_shifted(factors, shift)
    ws, us = kron_eigh(factors)
    y = rng.standard_normal(dense.shape[0])
    assert_allclose(
        kron_quad_form(kron_outer(ws), us, shift, y),
        y @ np.linalg.solve(dense, y),
        rtol=EIG_RTOL,
    )


def _face_split(mats):
    """The face-splitting product, row by row: row i is kron(A_1[i], ..., A_D[i])."""
    return np.stack(
        [reduce(np.kron, [a[i] for a in mats]) for i in range(len(mats[0]))]
    )


FACE_SIZES = [(3,), (2, 3), (3, 1, 2), (2, 3, 2)]


@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["default", "chunk-1", "chunk-7"])
@pytest.mark.parametrize("sizes", FACE_SIZES, ids=lambda s: f"{len(s)}-factors")
def test_face_split_matvec(sizes, chunk, rng, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(_identities, "_CHUNK_ENTRIES", chunk)
    m = 5
    mats = [rng.standard_normal((m, n)) for n in sizes]
    x = rng.standard_normal(int(np.prod(sizes)))
    assert_allclose(face_split_matvec(mats, x), _face_split(mats) @ x)


@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["default", "chunk-1", "chunk-7"])
@pytest.mark.parametrize("sizes", FACE_SIZES, ids=lambda s: f"{len(s)}-factors")
def test_face_split_gram(sizes, chunk, rng, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(_identities, "_CHUNK_ENTRIES", chunk)
    m = 5
    mats = [rng.standard_normal((m, n)) for n in sizes]
    w = rng.uniform(0.5, 2.0, size=int(np.prod(sizes)))
    f = _face_split(mats)
    assert_allclose(face_split_gram(mats, w), (f * w) @ f.T)


def test_kronecker_path_never_forms_n_by_n(rng, monkeypatch):
    n_s, n_t, shift = 30, 40, 0.1
    a, b = random_spd(n_s, random_state=rng), random_spd(n_t, random_state=rng)
    x = rng.standard_normal((n_s, n_t))
    xs = rng.standard_normal((n_s * n_t, 2))
    n = n_s * n_t

    def no_kron(*args, **kwargs):
        raise AssertionError("np.kron called on the Kronecker path")

    monkeypatch.setattr(np, "kron", no_kron)
    tracemalloc.start()
    try:
        y = kron_matvec([a, b], x.reshape(-1))
        ys = kron_matvec([a, b], xs)
        ws, us = kron_eigh([a, b])
        sol = kron_solve_shifted(kron_outer(ws), us, shift, x.reshape(-1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # an N x N float64 array alone would take 8 N^2 bytes (11.5 MB here)
    assert peak < 8 * n * n / 10
    assert_allclose(y, (a @ x @ b.T).reshape(-1))
    assert_allclose(ys[:, 1], (a @ xs[:, 1].reshape(n_s, n_t) @ b.T).reshape(-1))
    residual = (a @ sol.reshape(n_s, n_t) @ b.T).reshape(-1) + shift * sol
    assert_allclose(residual, x.reshape(-1), rtol=EIG_RTOL)
