"""MMD against a direct numpy computation, and its behaviour on equal vs shifted samples."""
import numpy as np
import pytest

from rhmdiff.analysis import mmd


def _direct(x, y, k):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kxx, kyy, kxy = k(x[:, None], x[None]), k(y[:, None], y[None]), k(x[:, None], y[None])
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_mmd_matches_direct_numpy_in_blocks():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(37, 5)), rng.normal(0.3, 1.2, size=(29, 5))
    sigma = 1.7
    rbf = lambda a, b: np.exp(-((a - b) ** 2).sum(-1) / (2 * sigma**2))
    poly = lambda a, b: ((a * b).sum(-1) / 5 + 1) ** 3
    assert mmd.mmd2_unbiased(x, y, "rbf", sigma, block=8) == pytest.approx(_direct(x, y, rbf), rel=1e-4, abs=1e-6)
    assert mmd.kid(x, y, block=10) == pytest.approx(_direct(x, y, poly), rel=1e-4, abs=1e-5)
    z = np.concatenate([x, y])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    assert mmd.median_bandwidth(x, y) == pytest.approx(np.median(d[np.triu_indices(len(z), 1)]), rel=1e-4)


def test_mmd_near_zero_for_equal_distributions_and_positive_for_shifted():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    shifted = rng.normal(0.5, 1.0, size=(600, 8))
    same, diff = mmd.mmd2_unbiased(x, y), mmd.mmd2_unbiased(x, shifted)
    assert abs(same) < 0.005 < diff
    assert abs(mmd.kid(x, y)) < 0.1 * mmd.kid(x, shifted)


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        mmd.mmd2_unbiased(np.zeros((3, 2)), np.zeros((3, 2)), "laplace")
    with pytest.raises(ValueError, match="same d"):
        mmd.mmd2_unbiased(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd.mmd2_unbiased(np.zeros((1, 2)), np.zeros((3, 2)))
