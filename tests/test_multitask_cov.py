"""MultiTaskGP's joint posterior covariance, return_cov and sample_y against dense."""

import numpy as np
import pytest
from test_multitask import MT_CASES, _dense_twin, _fitted, _lmc, _task_rows

from kronecker_gp.testing import EIG_RTOL, assert_allclose


def _dense_joint(ref, x_test, t):
    mean, cov = ref.predict(_task_rows(x_test, t), return_cov=True)
    m = len(x_test)
    # rows are task-major: (task, point) -> reorder to (point, task)
    return mean.reshape(t, m).T, cov.reshape(t, m, t, m).transpose(1, 0, 3, 2)


@pytest.mark.parametrize(("missing", "task_noise"), MT_CASES)
def test_icm_joint_covariance_matches_dense(missing, task_noise, rng):
    gp, x, Y = _fitted(rng, missing, task_noise)
    ref, _ = _dense_twin(gp, x, Y)
    x_test = rng.uniform(0, 4, (4, 2))
    mean, joint = gp.predict_joint_cov(x_test)
    ref_mean, ref_joint = _dense_joint(ref, x_test, 3)
    assert joint.shape == (4, 3, 4, 3)
    assert_allclose(mean, ref_mean, rtol=EIG_RTOL, atol=1e-10)
    assert_allclose(joint, ref_joint, rtol=EIG_RTOL, atol=1e-10)
    # return_cov gives the per-task blocks, in GaussianProcessRegressor's layout
    mean2, cov = gp.predict(x_test, return_cov=True)
    assert cov.shape == (4, 4, 3)
    assert_allclose(mean2, mean, rtol=1e-14)
    for t in range(3):
        assert_allclose(cov[:, :, t], ref_joint[:, t, :, t], rtol=EIG_RTOL, atol=1e-10)
    _, std = gp.predict(x_test, return_std=True)
    diag = np.array([[joint[i, t, i, t] for t in range(3)] for i in range(4)])
    assert_allclose(std**2, diag, rtol=1e-8, atol=1e-12)


def test_lmc_joint_covariance_matches_dense(rng):
    gp, x, Y = _lmc(rng, 0.3)
    ref_joint = _lmc_dense_joint(gp, x, Y, x[:3])
    _, joint = gp.predict_joint_cov(x[:3])
    assert_allclose(joint, ref_joint, rtol=1e-7, atol=1e-9)


def _lmc_dense_joint(gp, x, Y, x_test):
    t, n = Y.shape[1], len(x)
    bs = [k(np.arange(t)[:, None]) for k in gp.task_kernels_]
    sigma = sum(np.kron(b, k(x)) for b, k in zip(bs, gp.kernels_))
    sigma = sigma + np.kron(np.diag(gp.noise_), np.eye(n))
    obs = ~np.isnan(Y.T.reshape(-1))
    sigma = sigma[np.ix_(obs, obs)]
    cross = sum(np.kron(b, k(x_test, x)) for b, k in zip(bs, gp.kernels_))[:, obs]
    prior = sum(np.kron(b, k(x_test)) for b, k in zip(bs, gp.kernels_))
    cov = prior - cross @ np.linalg.solve(sigma, cross.T)
    m = len(x_test)
    cov = cov.reshape(t, m, t, m).transpose(1, 0, 3, 2)
    return cov * np.outer(gp.y_train_std_, gp.y_train_std_)[None, :, None, :]


def test_sample_y_keeps_task_correlations(rng):
    gp, x, Y = _fitted(rng, 0.0, "per_task")
    x_test = rng.uniform(0, 4, (2, 2))
    draws = gp.sample_y(x_test, n_samples=20000, random_state=3)
    assert draws.shape == (2, 3, 20000)
    mean, joint = gp.predict_joint_cov(x_test)
    emp = np.cov(draws.reshape(6, -1))
    assert_allclose(draws.mean(axis=-1), mean, atol=4 * np.sqrt(joint.max() / 20000))
    assert np.abs(emp - joint.reshape(6, 6)).max() <= 0.05 * np.abs(joint).max()
    assert np.array_equal(
        gp.sample_y(x_test, n_samples=2, random_state=1),
        gp.sample_y(x_test, n_samples=2, random_state=1),
    )


def test_return_std_and_cov_together_raise(rng):
    gp, _, _ = _fitted(rng, 0.0, "shared")
    with pytest.raises(RuntimeError, match="At most one"):
        gp.predict(np.zeros((2, 2)), return_std=True, return_cov=True)
