"""EDM sampling (Karras et al. 2022, Algorithm 2) as DIAMOND uses it, and PIWM's Warm Start (arXiv 2509.12437).

Noise is drawn per sample from its own torch.Generator, so a batch of rollouts gives the same frames as the same
rollouts run one by one (EDM's per-sample generators).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .edm import Denoiser
from .validate import NonNegFloat, PosFloat, PosInt, check_fields, require


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler of one denoiser (EDM Algorithm 2; DIAMOND defaults; Warm Start: PIWM)."""

    steps: PosInt = 1  # denoising steps (PIWM "fast": 1 for the dynamics model, 1 for the upsampler)
    order: Literal[1, 2] = 1  # 1 = Euler, 2 = Heun (the correction is skipped when the next sigma is 0)
    sigma_min: PosFloat = 2e-3  # last non-zero noise level of the schedule
    sigma_max: PosFloat = 5.0  # first noise level (DIAMOND / PIWM: 5)
    rho: PosFloat = 7.0  # Karras schedule curvature
    s_churn: NonNegFloat = 0.0  # EDM stochasticity: gamma = min(s_churn / steps, sqrt(2) - 1) inside [s_tmin, s_tmax]
    s_tmin: NonNegFloat = 0.0
    s_tmax: NonNegFloat = math.inf
    s_noise: NonNegFloat = 1.0  # std multiplier of the churn noise
    s_cond: NonNegFloat = 0.0  # noise level added to the context frames at sampling (DIAMOND's conditioning noise)
    warm_offset: NonNegFloat = 0.05  # Warm Start: std of the per-image, per-channel offset noise (s_off)
    warm_pixel: NonNegFloat = 0.05  # Warm Start: std of the per-pixel noise (s_ew)
    warm_sigma_max: PosFloat | None = None  # ablation: a warm-started frame's schedule starts here instead of sigma_max

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.sigma_min < self.sigma_max,
                f"SamplerConfig.sigma_min must be < sigma_max ({self.sigma_max}), got {self.sigma_min}")
        require(self.s_tmin <= self.s_tmax,
                f"SamplerConfig.s_tmin must be <= s_tmax ({self.s_tmax}), got {self.s_tmin}")


# DIAMOND csgo's samplers: the dynamics model gets context noise s_cond 0.005 (its training saw noisy context); the
# upsampler (trained on clean context) none, and stops at sigma 1 with churn. One step: [sigma_max, 0], so "fast"
# costs one network call per model; the upsampler's churn lifts its first level from 5 to 5 x 1.414 = 7.07.
_DYN = dict(s_cond=0.005)
_UP = dict(sigma_min=1.0, s_churn=10.0, s_tmin=1.0, s_tmax=5.0, s_noise=0.9)
PRESETS = {  # (dynamics, upsampler) samplers of PIWM's two settings: 1 + 1 and 3 + 10 network calls per frame
    "fast": (SamplerConfig(steps=1, order=1, **_DYN), SamplerConfig(steps=1, order=2, **_UP)),  # Heun skipped at 0
    "quality": (SamplerConfig(steps=3, order=1, **_DYN), SamplerConfig(steps=10, order=1, **_UP)),  # 13 calls
    # the samplers before the published recipe (no context noise, upsampler to 0.002 without churn): old checkpoints
    "fast_plain": (SamplerConfig(steps=1, order=1), SamplerConfig(steps=1, order=2)),
}


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Noise levels (steps + 1,): sigma_i = (max^(1/rho) + i/(steps-1) (min^(1/rho) - max^(1/rho)))^rho, then 0
    (EDM eq. 5); one step is [sigma_max, 0]."""
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(a + ramp * (b - a)) ** rho, torch.zeros(1, dtype=torch.float64)])


def randn_like(x: torch.Tensor, generators: list[torch.Generator], per_channel: bool = False) -> torch.Tensor:
    """N(0, 1) noise shaped like x (B, C, H, W), sample b from generators[b]; per_channel: (B, C, 1, 1)."""
    shape = (x.shape[1], 1, 1) if per_channel else tuple(x.shape[1:])
    return torch.stack([torch.randn(shape, generator=g, device=g.device, dtype=torch.float32)
                        for g in generators]).to(device=x.device, dtype=x.dtype)


def initial_noise(shape: tuple[int, ...], sigma: float, generators: list[torch.Generator],
                  device: torch.device | str, prev: torch.Tensor | None = None,
                  cfg: SamplerConfig | None = None) -> torch.Tensor:
    """Cold start: sigma * eps. Warm Start (PIWM): prev + s_off eps_c + s_ew eps, eps_c per image and channel."""
    base = torch.zeros(shape, device=device)
    if prev is None:
        return sigma * randn_like(base, generators)
    return prev + cfg.warm_offset * randn_like(base, generators, per_channel=True) \
        + cfg.warm_pixel * randn_like(base, generators)


@torch.no_grad()
def sample(model: Denoiser, context: torch.Tensor, cfg: SamplerConfig, generators: list[torch.Generator],
           actions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
           prev: torch.Tensor | None = None) -> torch.Tensor:
    """One frame (B, 3, H, W) from context (B, K, 3, H, W) by EDM's Algorithm 2 (Euler or Heun, optional churn).

    prev: the previous output of this sampler for PIWM Warm Start (None: cold start from sigma_max noise); whether to
    pass it is the world model's one switch (WorldModelConfig.warm_start).
    """
    B, _, _, H, W = context.shape
    top = cfg.warm_sigma_max if (prev is not None and cfg.warm_sigma_max is not None) else cfg.sigma_max
    sigmas = karras_sigmas(cfg.steps, cfg.sigma_min, top, cfg.rho).tolist()
    x = initial_noise((B, 3, H, W), sigmas[0], generators, context.device, prev, cfg)
    sigma_ctx = None
    if cfg.s_cond > 0:
        ctx_noise = torch.stack([randn_like(context[:, k], generators) for k in range(context.shape[1])], 1)
        context = context + cfg.s_cond * ctx_noise
        sigma_ctx = torch.full((B,), cfg.s_cond, device=context.device)
    gamma_max = min(cfg.s_churn / cfg.steps, math.sqrt(2) - 1)

    def denoise(x_: torch.Tensor, s: float) -> torch.Tensor:
        return model(x_, torch.full((B,), s, device=x_.device), context, actions, mask, sigma_ctx).float()

    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        gamma = gamma_max if cfg.s_tmin <= s <= cfg.s_tmax else 0.0
        s_hat = s * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(s_hat**2 - s**2) * cfg.s_noise * randn_like(x, generators)
        den = denoise(x, s_hat)
        if s_next == 0:
            x = den  # the Euler step to sigma 0 lands exactly on the denoised estimate
            continue
        d = (x - den) / s_hat
        x_next = x + (s_next - s_hat) * d
        if cfg.order == 2:
            d2 = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (s_next - s_hat) * (d + d2) / 2
        x = x_next
    return x
