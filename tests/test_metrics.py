"""Image metrics with hand-computed values: PSNR, SSIM, bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from piwm_lib.metrics import bootstrap_ci, psnr, ssim


def flat(value: int, shape=(2, 30, 40, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_psnr_hand_computed():
    assert np.allclose(psnr(flat(0), flat(10)), 10 * math.log10(255**2 / 100))  # MSE 100: 28.13 dB
    half = flat(0)
    half[:, :, :20] = 20  # MSE = 400 / 2 = 200
    assert np.allclose(psnr(half, flat(0)), 10 * math.log10(255**2 / 200))
    assert np.isinf(psnr(flat(7), flat(7))).all()
    assert psnr(np.zeros((4, 5, 12, 12, 3), np.uint8), np.ones((4, 5, 12, 12, 3), np.uint8)).shape == (4, 5)


def test_ssim_hand_computed():
    assert np.allclose(ssim(flat(90), flat(90)), 1.0)
    c1 = (0.01 * 255) ** 2  # constant frames: no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    assert np.allclose(ssim(flat(100), flat(50)), (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    assert np.allclose(ssim(x, x), 1.0)
    assert (ssim(255 - x, x) < 0).all()  # inverted structure: negative correlation
    noisy = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(ssim(noisy, x, chunk=1), ssim(noisy, x))  # chunking only bounds memory
    assert 0 < ssim(noisy, x).min() and ssim(noisy, x).max() < 1


def test_ssim_refuses_tiny_frames():
    with pytest.raises(ValueError, match="SSIM window"):
        ssim(flat(0, (1, 8, 8, 3)), flat(0, (1, 8, 8, 3)))


def test_bootstrap_ci():
    assert bootstrap_ci(np.full(10, 3.0)) == (3.0, 3.0, 3.0)
    mean, lo, hi = bootstrap_ci(np.arange(100.0), seed=1)
    assert mean == 49.5 and lo < 49.5 < hi
    se = np.arange(100.0).std() / 10  # standard error of the mean: the interval is about +-1.96 se
    assert abs((hi - lo) / 2 - 1.96 * se) < 0.15 * 1.96 * se
    assert bootstrap_ci(np.array([1.0, np.nan, 3.0]))[0] == 2.0
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([np.nan])))


def test_frechet_distance_hand_computed():
    from piwm_lib.metrics import frechet_distance
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    # 1-D Gaussians: FID = (mu1 - mu2)^2 + (s1 - s2)^2
    x, y = np.array([[0.0], [2.0]]), np.array([[3.0], [7.0]])  # mean 1, var 2 / mean 5, var 8
    assert frechet_distance(x, y) == pytest.approx(16 + (math.sqrt(2) - math.sqrt(8)) ** 2)
    with pytest.raises(ValueError, match="2 samples"):
        frechet_distance(a[:1], a)
