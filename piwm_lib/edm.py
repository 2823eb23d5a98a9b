"""EDM diffusion (Karras et al. 2022) as DIAMOND (arXiv 2405.12399) uses it: preconditioning with offset noise,
training noise levels, the denoiser D wrapping the U-Net F, and the denoising loss.

Noise, our reading of DIAMOND's offset noise: x = x0 + sigma * eps + sigma_offset * eps_c, eps ~ N(0, 1) per pixel,
eps_c ~ N(0, 1) per image and channel (broadcast over H, W). Per pixel the noise has variance
sigma^2 + sigma_offset^2 = sigma~^2, so the preconditioning uses sigma~ in place of sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .unet import UNet, UNetConfig
from .validate import NonNegFloat, PosFloat, check_fields, require


@dataclass(frozen=True)
class EDMConfig:
    """EDM training and preconditioning settings (Karras et al. 2022; values: DIAMOND / PIWM, arXiv 2509.12437)."""

    sigma_data: PosFloat = 0.5  # std of the data (frames in [-1, 1])
    sigma_offset: NonNegFloat = 0.1  # std of the offset noise, per image and channel; sigma~ = sqrt(sigma^2 + this^2)
    p_mean: float = -1.2  # training: mean of ln sigma
    p_std: NonNegFloat = 1.2  # training: std of ln sigma
    sigma_min: PosFloat = 0.002  # training: ln-normal sigma clipped below at this
    sigma_max: PosFloat = 20.0  # training: ln-normal sigma clipped above at this
    ctx_augment: bool = True  # training: noise the context frames (DIAMOND's noise_previous_obs; its upsampler: off)
    ctx_p_mean: float = -1.2  # context augmentation: mean of ln sigma_ctx (DIAMOND: the target's distribution)
    ctx_p_std: NonNegFloat = 1.2  # context augmentation: std of ln sigma_ctx (DIAMOND: the target's distribution)
    ctx_sigma_min: NonNegFloat = 0.002  # context augmentation: sigma_ctx clipped below at this (DIAMOND: sigma_min)
    ctx_sigma_max: NonNegFloat = 20.0  # context augmentation: sigma_ctx clipped above at this (DIAMOND: sigma_max)
    ctx_offset: NonNegFloat = 0.1  # context augmentation: offset noise per image and channel (DIAMOND: sigma_offset)
    ctx_sigma_floor: PosFloat = 0.002  # c_noise_ctx = ln(max(sigma_ctx, this)) / 4, so clean context (0) stays finite

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.sigma_min < self.sigma_max,
                f"EDMConfig.sigma_min must be < sigma_max ({self.sigma_max}), got {self.sigma_min}")
        require(self.ctx_sigma_min <= self.ctx_sigma_max,
                f"EDMConfig.ctx_sigma_min must be <= ctx_sigma_max ({self.ctx_sigma_max}), got {self.ctx_sigma_min}")


def _col(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)


def effective_sigma(sigma: torch.Tensor, cfg: EDMConfig) -> torch.Tensor:
    """sigma~ = sqrt(sigma^2 + sigma_offset^2): per-pixel noise std with offset noise (DIAMOND)."""
    return torch.sqrt(sigma**2 + cfg.sigma_offset**2)


def precondition(sigma: torch.Tensor, cfg: EDMConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) of sigma (B,), each (B,): EDM preconditioning, Karras et al. 2022, Table 1.

    With sigma~ = sqrt(sigma^2 + sigma_offset^2) (DIAMOND's offset noise): c_in = 1 / sqrt(sigma~^2 + sigma_data^2),
    c_skip = sigma_data^2 / (sigma~^2 + sigma_data^2), c_out = sigma~ sqrt(c_skip), c_noise = ln(sigma~) / 4.
    """
    s = effective_sigma(sigma, cfg)
    var = s**2 + cfg.sigma_data**2
    c_skip = cfg.sigma_data**2 / var
    return c_skip, s * c_skip.sqrt(), var.rsqrt(), s.log() / 4


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=dev, dtype=dtype).to(device)


def sample_sigma(n: int, cfg: EDMConfig, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Training noise levels (n,): ln sigma ~ N(p_mean, p_std^2), clipped to [sigma_min, sigma_max] (EDM, Table 1)."""
    z = _randn((n,), generator, device)
    return (cfg.p_mean + cfg.p_std * z).exp().clamp(cfg.sigma_min, cfg.sigma_max)


def add_noise(x0: torch.Tensor, sigma: torch.Tensor, cfg: EDMConfig,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """x = x0 + sigma eps + sigma_offset eps_c, eps per pixel, eps_c per image and channel (DIAMOND offset noise)."""
    B, C = x0.shape[:2]
    eps = _randn(tuple(x0.shape), generator, x0.device, x0.dtype)  # (B, C, H, W)
    eps_c = _randn((B, C, 1, 1), generator, x0.device, x0.dtype)  # (B, C, 1, 1)
    return x0 + _col(sigma).to(x0.dtype) * eps + cfg.sigma_offset * eps_c


def augment_context(context: torch.Tensor, cfg: EDMConfig,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Context noise augmentation (DIAMOND csgo's noise_previous_obs): (B, K, C, H, W) -> (noisy, sigma_ctx (B,)).

    ln sigma_ctx ~ N(ctx_p_mean, ctx_p_std^2) clipped to [ctx_sigma_min, ctx_sigma_max]; per-pixel noise of that std
    plus offset noise of std ctx_offset per context frame and channel, as the target's noise.
    """
    B = context.shape[0]
    z = _randn((B,), generator, context.device)
    sigma_ctx = (cfg.ctx_p_mean + cfg.ctx_p_std * z).exp().clamp(cfg.ctx_sigma_min, cfg.ctx_sigma_max)  # (B,)
    eps = _randn(tuple(context.shape), generator, context.device, context.dtype)
    lead = context.shape[:-2]  # (B, K, C) or (B, K*C)
    eps_c = _randn(tuple(lead), generator, context.device, context.dtype)[..., None, None]  # (B, ..., 1, 1)
    scale = sigma_ctx.view(-1, *[1] * (context.dim() - 1)).to(context.dtype)  # (B, 1, ...)
    return context + scale * eps + cfg.ctx_offset * eps_c, sigma_ctx


class Denoiser(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, context, actions, mask) (EDM, Karras et al. 2022, eq. 7)."""

    def __init__(self, unet_cfg: UNetConfig, edm_cfg: EDMConfig = EDMConfig()) -> None:
        super().__init__()
        self.unet_cfg, self.edm_cfg = unet_cfg, edm_cfg
        self.net = UNet(unet_cfg)

    def inputs(self, x: torch.Tensor, c_in: torch.Tensor, context: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Channel concat [context (B, K*3, H, W), mask (B, 1, H, W) if used, c_in x (B, 3, H, W)] -> (B, in, H, W)."""
        cfg = self.unet_cfg
        context = context.flatten(1, 2) if context.dim() == 5 else context  # (B, K, 3, H, W) -> (B, K*3, H, W)
        if context.shape[1] != cfg.n_context * cfg.image_channels:
            raise ValueError(f"context must have {cfg.n_context} frames, got {context.shape[1]} channels")
        parts = [context]
        if cfg.use_mask:
            if mask is None:
                mask = torch.zeros_like(x[:, :1])  # no mask = the mask-dropout input (all zero)
            parts.append(mask[:, None] if mask.dim() == 3 else mask)
        parts.append(_col(c_in).to(x.dtype) * x)
        return torch.cat(parts, 1)

    def network(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                actions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                sigma_ctx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F output, c_skip, c_out) for noisy x (B, 3, H, W) at sigma (B,); sigma_ctx None = clean context (0)."""
        c_skip, c_out, c_in, c_noise = precondition(sigma, self.edm_cfg)
        if sigma_ctx is None:
            sigma_ctx = torch.zeros_like(sigma)
        c_noise_ctx = sigma_ctx.clamp_min(self.edm_cfg.ctx_sigma_floor).log() / 4
        f = self.net(self.inputs(x, c_in, context, mask), c_noise, actions, c_noise_ctx)  # (B, 3, H, W)
        return f, c_skip, c_out

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                actions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                sigma_ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Denoised estimate D(x; sigma) of x0, (B, 3, H, W) (EDM, Karras et al. 2022, eq. 7)."""
        f, c_skip, c_out = self.network(x, sigma, context, actions, mask, sigma_ctx)
        return _col(c_skip) * x + _col(c_out) * f


def denoising_step(denoiser: Denoiser, x0: torch.Tensor, context: torch.Tensor, actions: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   sigma: torch.Tensor | None = None,
                   weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM loss (Karras et al. 2022, eq. 8) and the denoised estimate D(x; sigma) (B, 3, H, W) of the same pass.

    Loss: mean (F(c_in x, ...) - (x0 - c_skip x) / c_out)^2, a scalar. x0 (B, 3, H, W) clean target; sigma (B,)
    drawn by sample_sigma when None; weight: optional per-pixel map (B, H, W) or (B, 1, H, W), e.g. 1 + mask for
    the mask-weighted ablation (the published loss is unweighted). Context frames are noise-augmented when the
    config says so. The denoised estimate is what autoregressive training feeds back as the next context frame.
    """
    cfg = getattr(denoiser, "module", denoiser).edm_cfg  # the Denoiser, or the DistributedDataParallel around it
    if sigma is None:
        sigma = sample_sigma(x0.shape[0], cfg, generator, x0.device)
    sigma_ctx = None
    if cfg.ctx_augment:
        context, sigma_ctx = augment_context(context, cfg, generator)
    x = add_noise(x0, sigma, cfg, generator)
    denoised = denoiser(x, sigma, context, actions, mask, sigma_ctx).float()  # through DDP's forward when wrapped
    c_out = precondition(sigma, cfg)[1]
    # F - (x0 - c_skip x) / c_out == (D - x0) / c_out: the preconditioned target, without a second network path
    err = ((denoised - x0) / _col(c_out)) ** 2  # (B, 3, H, W)
    if weight is None:
        loss = err.mean()
    else:
        w = weight[:, None] if weight.dim() == 3 else weight  # (B, 1, H, W)
        loss = (err * w).sum() / (w.expand_as(err).sum() + 1e-12)
    return loss, denoised


def denoising_loss(denoiser: Denoiser, x0: torch.Tensor, context: torch.Tensor, actions: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   sigma: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """EDM loss (Karras et al. 2022, eq. 8), a scalar: denoising_step without the denoised estimate."""
    return denoising_step(denoiser, x0, context, actions, mask, generator, sigma, weight)[0]
