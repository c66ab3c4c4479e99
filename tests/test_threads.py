"""Thread pools: element-wise passes split over threads give the serial results."""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from kronecker_gp import _budgets, _threads
from kronecker_gp.linalg import kron_outer
from kronecker_gp.linalg._eigenbasis import factorize, lml_gradient
from kronecker_gp.testing import EIG_RTOL, assert_allclose


@pytest.fixture
def many_threads(monkeypatch):
    """Small chunks, no size threshold and four threads: every pass is split."""
    monkeypatch.setattr(_budgets, "ELEMENTWISE_CHUNK", 7)
    monkeypatch.setattr(_budgets, "THREADED_ELEMENTWISE_MIN", 0)
    monkeypatch.setattr(_threads, "elementwise_threads", lambda: 4)


def test_row_chunks_cover_the_rows_once():
    chunks = _threads.row_chunks(10, 3)
    step = max(1, _budgets.ELEMENTWISE_CHUNK // 3)
    assert chunks[0] == (0, min(10, step))
    assert [c[0] for c in chunks[1:]] == [c[1] for c in chunks[:-1]]
    assert chunks[-1][1] == 10


def test_map_chunks_runs_on_several_threads(many_threads):
    names = set()
    x = np.arange(200.0).reshape(100, 2)

    def run(lo, hi):
        names.add(threading.current_thread().name)
        return float(x[lo:hi].sum())

    parts = _threads.map_chunks(run, 100, 2)
    assert len(parts) == len(_threads.row_chunks(100, 2)) > 4
    assert sum(parts) == x.sum()
    assert any(n.startswith("kgp-ew") for n in names)


def test_map_chunks_stays_serial_below_the_threshold(monkeypatch):
    monkeypatch.setattr(_budgets, "ELEMENTWISE_CHUNK", 7)
    monkeypatch.setattr(_threads, "elementwise_threads", lambda: 4)
    names = set()

    def run(lo, hi):
        names.add(threading.current_thread().name)

    _threads.map_chunks(run, 10, 2)  # 20 entries < THREADED_ELEMENTWISE_MIN
    assert names == {threading.current_thread().name}


def test_elementwise_threads_follow_the_blas_limit():
    with threadpool_limits(1, user_api="blas"):
        assert _threads.elementwise_threads() == 1
    assert _threads.elementwise_threads() >= 1


@pytest.mark.parametrize("n_targets", [None, 3])
def test_threaded_eigen_passes_equal_the_formulas(n_targets, rng, many_threads):
    shape = (5, 4, 6)
    grams = []
    for n in shape:
        a = rng.standard_normal((n, n))
        grams.append(a @ a.T + 0.1 * np.eye(n))
    size = int(np.prod(shape))
    y = rng.standard_normal(size if n_targets is None else (size, n_targets))
    noise = 0.3
    post, lml = factorize(grams, noise, y)
    # dense reference of the same quantities
    k = np.kron(np.kron(grams[0], grams[1]), grams[2]) + noise * np.eye(size)
    alpha = np.linalg.solve(k, y)
    cols = 1 if n_targets is None else n_targets
    ref = -0.5 * np.sum(y * alpha) - 0.5 * cols * np.linalg.slogdet(k)[1]
    ref -= 0.5 * y.size * np.log(2 * np.pi)
    assert_allclose(lml, ref, rtol=EIG_RTOL)
    assert_allclose(post.alpha(), alpha, rtol=EIG_RTOL, atol=1e-12)
    lam = kron_outer([np.linalg.eigvalsh(g) for g in grams])
    assert_allclose(np.sort(post.inv_lam), np.sort(1.0 / (lam + noise)), rtol=1e-10)
    # gradient w.r.t. a scale of each factor and the log-noise
    grad = lml_gradient(post, [g[:, :, None] for g in grams], noise_free=True)
    inv = np.linalg.inv(k)
    inner = alpha.reshape(size, -1) @ alpha.reshape(size, -1).T - cols * inv
    ref_grad = [0.5 * np.sum(inner * (k - noise * np.eye(size)))] * 3
    ref_grad.append(0.5 * noise * np.trace(inner))
    assert_allclose(grad, ref_grad, rtol=EIG_RTOL)


def test_threaded_reductions_equal_the_serial_ones_exactly(rng, monkeypatch):
    from kronecker_gp.linalg._eigenbasis import _weights_and_sums

    monkeypatch.setattr(_budgets, "ELEMENTWISE_CHUNK", 64)
    monkeypatch.setattr(_budgets, "THREADED_ELEMENTWISE_MIN", 0)
    y, inv_lam = rng.standard_normal(1000), rng.uniform(0.1, 1.0, 1000)
    monkeypatch.setattr(_threads, "elementwise_threads", lambda: 1)
    serial = _weights_and_sums(y, inv_lam)
    monkeypatch.setattr(_threads, "elementwise_threads", lambda: 3)
    threaded = _weights_and_sums(y, inv_lam)
    assert np.array_equal(serial[0], threaded[0])  # the same chunks, in order
    assert serial[1:] == threaded[1:]
    assert_allclose(serial[1], np.sum(y * y * inv_lam), rtol=1e-13)


def _sum_in_child(queue):
    x = np.arange(100.0).reshape(50, 2)
    queue.put(sum(_threads.map_chunks(lambda lo, hi: float(x[lo:hi].sum()), 50, 2)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method only")
def test_pool_works_in_a_forked_child(many_threads):
    x = np.arange(100.0).reshape(50, 2)
    assert sum(_threads.map_chunks(lambda lo, hi: float(x[lo:hi].sum()), 50, 2)) == 4950
    ctx = multiprocessing.get_context("fork")  # the parent's pool threads stay behind
    queue = ctx.Queue()
    child = ctx.Process(target=_sum_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():  # hung on the parent's pool: end it, then fail
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 4950
