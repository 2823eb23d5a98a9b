"""Image and video quality of generated rollouts against the ground truth: PSNR and SSIM per frame (batched torch,
CPU or GPU), and bootstrap confidence intervals over episodes (evaluation, notebook 05)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0  # uint8 frames


def _float_frames(x: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (N, 3, H, W) float64 in 0..255, leading dims flattened."""
    t = torch.as_tensor(x, device=device)
    if t.shape[-1] != 3:
        raise ValueError(f"frames must be (..., H, W, 3), got {tuple(t.shape)}")
    return t.reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2).double()


def psnr(generated: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> np.ndarray:
    """PSNR in dB of each frame, 10 log10(255^2 / MSE) over all pixels and channels: (..., H, W, 3) -> (...)."""
    g, t = _float_frames(generated), _float_frames(truth, None)
    mse = ((g - t.to(g.device)) ** 2).mean(dim=(1, 2, 3))  # (N,)
    out = 10 * torch.log10(DATA_RANGE**2 / mse)  # inf where identical
    return out.cpu().numpy().reshape(np.shape(generated)[:-3])


def _gaussian(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim(generated: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, chunk: int = 32) -> np.ndarray:
    """Mean SSIM of each frame (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, 'valid'
    windows only, channels averaged): (..., H, W, 3) -> (...), `chunk` frames at a time (bounded memory)."""
    g_all, t_all = torch.as_tensor(generated), torch.as_tensor(truth)
    lead = tuple(g_all.shape[:-3])
    g_all, t_all = g_all.reshape(-1, *g_all.shape[-3:]), t_all.reshape(-1, *t_all.shape[-3:])
    out = [_ssim(g_all[i:i + chunk], t_all[i:i + chunk], window, sigma, k1, k2) for i in range(0, len(g_all), chunk)]
    return np.concatenate(out).reshape(lead)


def _ssim(generated: torch.Tensor, truth: torch.Tensor, window: int, sigma: float, k1: float,
          k2: float) -> np.ndarray:
    g = _float_frames(generated)
    t = _float_frames(truth).to(g.device)
    if min(g.shape[-2:]) < window:
        raise ValueError(f"frames of {tuple(g.shape[-2:])} px are smaller than the {window}-px SSIM window")
    w1 = _gaussian(window, sigma, g.device)
    n, c, h, w = g.shape
    maps = torch.stack([g, t, g * g, t * t, g * t]).reshape(5 * n * c, 1, h, w)  # every channel blurred alike
    # the 2-D Gaussian is separable: a row pass then a column pass (22 instead of 121 multiply-adds per pixel)
    blurred = F.conv2d(F.conv2d(maps, w1.view(1, 1, 1, window)), w1.view(1, 1, window, 1))
    mu_g, mu_t, gg, tt, gt = blurred.reshape(5, n, c, h - window + 1, w - window + 1)  # (N, 3, H-k+1, W-k+1) each

    c1, c2 = (k1 * DATA_RANGE) ** 2, (k2 * DATA_RANGE) ** 2
    var_g, var_t, cov = gg - mu_g**2, tt - mu_t**2, gt - mu_g * mu_t
    s = ((2 * mu_g * mu_t + c1) * (2 * cov + c2)) / ((mu_g**2 + mu_t**2 + c1) * (var_g + var_t + c2))
    return s.mean(dim=(1, 2, 3)).cpu().numpy()


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-episode values (N,) and its percentile bootstrap interval (Efron 1979), resampling episodes."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)  # (n_boot,)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(v.mean()), float(lo), float(hi)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to features a (N, D) and b (M, D) (FID, Heusel et al. 2017):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the root's trace from the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2) (symmetric, so no scipy is needed)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 samples per side, got {a.shape[0]} and {b.shape[0]}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))  # (D, D)
    w, v = torch.linalg.eigh(sa)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T  # S_a^(1/2)
    cross = torch.linalg.eigvalsh(root_a @ sb @ root_a).clamp_min(0).sqrt().sum()
    return float(mu @ mu + sa.trace() + sb.trace() - 2 * cross)


def ci_text(values: np.ndarray, n_boot: int = 2000, seed: int = 0, digits: int = 3) -> str:
    """"mean [lo, hi]" of bootstrap_ci (95%), "n/a" without finite values: one cell of the notebooks' tables."""
    m, lo, hi = bootstrap_ci(values, n_boot, seed=seed)
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(m) else "n/a"

