"""The denoiser network F of the EDM world model: a 4-level U-Net with adaptive group norm (DIAMOND-style, pixel space).

Input layout (channels, in this order): n_context context frames (n_context * 3), the mask (1, when use_mask),
the noisy target (3). Dynamics model: 4 frames + mask + target = 16 channels on 30x120. Upsampler: context =
[previous full-res frame, bicubic upsample of the new low-res frame], no mask, no actions = 9 channels on 150x600.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .validate import NonNegInt, PosFloat, PosInt, check_fields, require


@dataclass(frozen=True)
class UNetConfig:
    """U-Net of the denoiser F (DIAMOND, arXiv 2405.12399; sizes from PIWM, arXiv 2509.12437)."""

    channels: tuple[PosInt, ...] = (32, 32, 64, 64)  # feature channels per level, finest first; one level per entry
    blocks_per_level: PosInt = 2  # residual blocks per level on the way down (the way up has one more per level)
    attn_levels: tuple[NonNegInt, ...] = (3,)  # level indices (0 = finest) whose residual blocks end in self-attention
    mid_attn: bool = True  # the two middle blocks (deepest resolution) end in self-attention
    cond_dim: PosInt = 128  # width of the conditioning vector (noise level + actions) feeding every AdaGN
    n_fourier: PosInt = 64  # Fourier features of c_noise (cos and sin of n_fourier / 2 fixed random frequencies)
    fourier_std: PosFloat = 1.0  # std of those frequencies, in cycles per unit of c_noise = ln(sigma~) / 4
    context_noise_cond: bool = True  # add Fourier features of the context frames' noise level c_noise_ctx (no params)
    n_actions: NonNegInt = 5  # discrete actions (HighwayEnv DiscreteMetaAction); 0 = no action conditioning
    action_before_mlp: bool = True  # actions embedded into the MLP's input (DIAMOND csgo); False: added after it
    n_context: PosInt = 4  # context frames in the input (upsampler: 2 = previous full-res frame, bicubic upsample)
    use_mask: bool = True  # one mask channel between the context frames and the noisy target
    image_channels: PosInt = 3  # channels of one frame (RGB)
    head_dim: PosInt = 32  # channels per attention head (attention levels need channels divisible by it)
    max_groups: PosInt = 32  # group norm groups = gcd(channels, max_groups)

    def __post_init__(self) -> None:
        check_fields(self)
        require(len(self.channels) >= 1, f"UNetConfig.channels must list at least one level, got {self.channels}")
        bad = [i for i in self.attn_levels if not 0 <= i < len(self.channels)]
        if bad:
            raise ValueError(f"UNetConfig.attn_levels {bad} outside 0..{len(self.channels) - 1}")
        att = {self.channels[i] for i in self.attn_levels} | ({self.channels[-1]} if self.mid_attn else set())
        if any(c % self.head_dim for c in att):
            raise ValueError(f"attention channels {sorted(att)} must be divisible by head_dim {self.head_dim}")

    @property
    def in_channels(self) -> int:
        """Input channels: context frames, mask, noisy target."""
        return (self.n_context + 1) * self.image_channels + int(self.use_mask)


UPSAMPLER = UNetConfig(channels=(64, 64, 128, 256), attn_levels=(3,), cond_dim=2048, n_fourier=2048, n_actions=0,
                       n_context=2, use_mask=False)
PRESETS: dict[str, UNetConfig] = {
    "micro": UNetConfig(channels=(16, 16, 32, 32), cond_dim=64, n_fourier=32),  # 0.6M, unit tests only
    "tiny": UNetConfig(),  # 2.3M, learns on 2 CPU cores in minutes
    "course": UNetConfig(channels=(32, 64, 128, 128), attn_levels=(2, 3), cond_dim=512, n_fourier=128),  # 11.2M
    "130M": UNetConfig(channels=(48, 96, 192, 384), attn_levels=(2, 3), cond_dim=2048, n_fourier=2048),
    "400M": UNetConfig(channels=(128, 256, 512, 1024), attn_levels=(2, 3), cond_dim=2048, n_fourier=2048),
    "upsampler": UPSAMPLER,  # the paper's x5 upsampler, shared by every size
    "upsampler-tiny": replace(UPSAMPLER, channels=(16, 16, 32, 32), cond_dim=64, n_fourier=32),  # 0.57M, tests
    "upsampler-course": replace(UPSAMPLER, channels=(32, 32, 64, 128), cond_dim=256, n_fourier=128),  # 5.3M
}
UPSAMPLER_OF = {"micro": "upsampler-tiny", "tiny": "upsampler-tiny", "course": "upsampler-course",
                "130M": "upsampler", "400M": "upsampler"}
PAPER_TOTALS = {"130M": 130.2e6, "400M": 381.6e6}  # dynamics + upsampler parameters published by PIWM


def preset(name: str) -> UNetConfig:
    """The UNetConfig of a named size: tiny, course, 130M, 400M (dynamics) or upsampler, upsampler-tiny/-course."""
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def _groups(c: int, cfg: UNetConfig) -> int:
    return math.gcd(c, cfg.max_groups)


class FourierFeatures(nn.Module):
    """cos/sin of fixed random frequencies of a scalar (Tancik et al. 2020; EDM's noise embedding)."""

    def __init__(self, n: int, std: float, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator(device="cpu").manual_seed(seed)  # the same frequencies for every model, whatever the seed
        freqs = torch.randn(n // 2, generator=g, device="cpu") * std
        self.register_buffer("freqs", freqs.to(torch.empty(0).device))  # follows a meta/cuda default device

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, n)."""
        phase = 2 * math.pi * t[:, None].float() * self.freqs[None]  # (B, n/2)
        return torch.cat([phase.cos(), phase.sin()], 1)


class AdaGroupNorm(nn.Module):
    """Group norm whose scale and shift come from the conditioning vector (adaptive group norm, DIAMOND)."""

    def __init__(self, c: int, cond_dim: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.proj = nn.Linear(cond_dim, 2 * c)  # cond -> (scale, shift)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), cond (B, D) -> (B, C, H, W) = GN(x) * (1 + scale) + shift."""
        scale, shift = self.proj(cond)[:, :, None, None].chunk(2, 1)  # (B, C, 1, 1) each
        return F.group_norm(x, self.groups) * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual, zero-initialised output."""

    def __init__(self, c: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.heads = c // head_dim
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.out(y.transpose(-1, -2).reshape(B, C, H, W))


class ResBlock(nn.Module):
    """AdaGN -> SiLU -> conv3x3 twice, residual (1x1 conv when channels change), optional self-attention."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig, attn: bool) -> None:
        super().__init__()
        self.norm1 = AdaGroupNorm(cin, cfg.cond_dim, _groups(cin, cfg))
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = AdaGroupNorm(cout, cfg.cond_dim, _groups(cout, cfg))
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attn = SelfAttention2d(cout, cfg.head_dim, _groups(cout, cfg)) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, Cin, H, W), cond (B, D) -> (B, Cout, H, W)."""
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        return self.attn(self.skip(x) + h)


class UNet(nn.Module):
    """F(c_in x, c_noise, actions): the U-Net of the DIAMOND-style EDM denoiser; output conv zero-initialised."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, n = cfg.channels, cfg.blocks_per_level
        self.fourier = FourierFeatures(cfg.n_fourier, cfg.fourier_std)
        self.fourier_ctx = FourierFeatures(cfg.n_fourier, cfg.fourier_std, seed=1) if cfg.context_noise_cond else None
        self.noise_mlp = nn.Sequential(nn.Linear(cfg.n_fourier, cfg.cond_dim), nn.SiLU(),
                                       nn.Linear(cfg.cond_dim, cfg.cond_dim))
        # one embedding per (context position, action): the sum keeps the order of the previous actions; width of
        # the MLP's input (DIAMOND: actions interact with the noise level inside the MLP) or of its output
        emb_dim = cfg.n_fourier if cfg.action_before_mlp else cfg.cond_dim
        self.action_emb = nn.Embedding(cfg.n_context * cfg.n_actions, emb_dim) if cfg.n_actions else None
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = ch[0]
        skips = [c]  # channels of each skip tensor, in push order: conv_in, every block, every downsample
        for i, co in enumerate(ch):
            self.down.append(nn.ModuleList([ResBlock(c if j == 0 else co, co, cfg, i in cfg.attn_levels)
                                            for j in range(n)]))
            c = co
            skips += [co] * n
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, cfg, cfg.mid_attn) for _ in range(2)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks = []
            for j in range(n + 1):  # one block more than on the way down: it consumes the level's entry skip
                co = ch[i] if j < n else ch[max(i - 1, 0)]  # the last one already has the next level's width
                blocks.append(ResBlock(c + skips.pop(), co, cfg, i in cfg.attn_levels))
                c = co
            self.up.append(nn.ModuleList(blocks))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(c, cfg), c)
        self.conv_out = nn.Conv2d(c, cfg.image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def condition(self, c_noise: torch.Tensor, actions: torch.Tensor | None = None,
                  c_noise_ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning (B, D) = MLP(Fourier(c_noise) [+ Fourier'(c_noise_ctx)] + sum_k E[k, a_k]) (DIAMOND csgo);
        with action_before_mlp False the action sum is added after the MLP instead. actions (B, K) long."""
        feats = self.fourier(c_noise)  # (B, n_fourier)
        if self.fourier_ctx is not None:
            if c_noise_ctx is None:
                raise ValueError("this U-Net is conditioned on the context noise level: pass c_noise_ctx (B,)")
            feats = feats + self.fourier_ctx(c_noise_ctx)
        act = None
        if self.action_emb is not None:
            if actions is None:
                raise ValueError("this U-Net is action-conditioned: pass actions (B, n_context) long")
            pos = torch.arange(actions.shape[1], device=actions.device) * self.cfg.n_actions  # (K,)
            act = self.action_emb(actions.long() + pos[None]).sum(1)  # (B, n_fourier) or (B, D)
        before = act is not None and self.cfg.action_before_mlp
        cond = self.noise_mlp(feats + act if before else feats)  # (B, D)
        return cond + act if act is not None and not before else cond

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, actions: torch.Tensor | None = None,
                c_noise_ctx: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W) (context frames, mask, c_in * noisy target), c_noise (B,) -> (B, 3, H, W)."""
        cond = self.condition(c_noise, actions, c_noise_ctx)
        h = self.conv_in(x)
        skips = [h]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, cond)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, cond)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], 1), cond)
            if i < len(self.upsample):
                size = skips[-1].shape[-2:]  # odd sizes (30 -> 15 -> 8 -> 4) come back to the skip's size
                h = self.upsample[i](F.interpolate(h, size=size, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(cfg: UNetConfig | str) -> int:
    """Trainable parameters of the U-Net of `cfg` (a config or a preset name), built on the meta device."""
    cfg = preset(cfg) if isinstance(cfg, str) else cfg
    with torch.device("meta"):
        model = UNet(cfg)
    return sum(p.numel() for p in model.parameters())


def world_model_parameters(name: str) -> dict[str, float]:
    """Dynamics, upsampler and total parameters of a named size, and % off the paper's total where published."""
    dyn = count_parameters(name)
    up = count_parameters(UPSAMPLER_OF[name])
    out = {"dynamics": dyn, "upsampler": up, "total": dyn + up}
    if name in PAPER_TOTALS:
        out["percent_off"] = 100.0 * (dyn + up - PAPER_TOTALS[name]) / PAPER_TOTALS[name]
    return out
