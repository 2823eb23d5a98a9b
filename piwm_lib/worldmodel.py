"""The trained world model as an environment (gymnasium-style reset/step), batched over several rollouts, and
open-loop rollouts under logged actions next to the ground truth (PIWM / DIAMOND inference loop)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from .edm import Denoiser
from .frames import from_model, to_model, upsample
from .masks import MaskConfig, make_mask
from .sampler import PRESETS, SamplerConfig, sample
from .validate import check_fields


@dataclass(frozen=True)
class WorldModelConfig:
    """Inference settings of the world model (PIWM arXiv 2509.12437: fast sampler, Soft Mask with inference weights)."""

    dynamics: SamplerConfig = field(default_factory=lambda: PRESETS["fast"][0])  # sampler of the 30x120 model
    upsampler: SamplerConfig = field(default_factory=lambda: PRESETS["fast"][1])  # sampler of the x5 upsampler
    mask: MaskConfig = field(default_factory=MaskConfig)  # kind must match the trained model; inference weights
    warm_start: bool = False  # PIWM Warm Start for both models (the one switch; the samplers' warm_* settings apply)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast of both networks (the samplers' arithmetic stays fp32)

    def __post_init__(self) -> None:
        check_fields(self)


STARTS = ("cold", "warm", "warm_low")  # how each generated frame starts: noise, PIWM Warm Start, Warm Start low sigma


def start_config(start: str, mask: MaskConfig, sampler: str = "fast", warm_offset: float = 0.05,
                 warm_pixel: float = 0.05, warm_sigma_max: float = 1.0) -> WorldModelConfig:
    """World-model settings of a start mode by name (the one home of the start modes): "cold" (every frame from
    noise), "warm" (PIWM Warm Start: previous output + noise s_off, s_ew), "warm_low" (Warm Start on a schedule from
    warm_sigma_max instead of 5; not published); `sampler` names a sampler preset (sampler.PRESETS)."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if sampler not in PRESETS:
        raise ValueError(f"sampler must be one of {sorted(PRESETS)}, got {sampler!r}")
    low = warm_sigma_max if start == "warm_low" else None
    dyn, up = (replace(s, warm_offset=warm_offset, warm_pixel=warm_pixel, warm_sigma_max=low) for s in PRESETS[sampler])
    return WorldModelConfig(dynamics=dyn, upsampler=up, mask=mask, warm_start=start != "cold")


def with_warm_start(cfg: WorldModelConfig, on: bool) -> WorldModelConfig:
    """The same config with Warm Start switched on or off."""
    return replace(cfg, warm_start=on)


class WorldModelEnv:
    """reset(real frames) then step(actions) -> next frames, for B rollouts at once; keeps the 4-frame/4-action
    context, rebuilds the inference mask from each generated full-res frame, and Warm Start's previous outputs."""

    def __init__(self, dynamics: Denoiser, upsampler: Denoiser | None, cfg: WorldModelConfig = WorldModelConfig(),
                 seed: int = 0):
        self.dyn, self.up, self.cfg, self.seed = dynamics.eval(), upsampler.eval() if upsampler else None, cfg, seed
        self.k = dynamics.unet_cfg.n_context
        self.device = next(dynamics.parameters()).device
        if dynamics.unet_cfg.use_mask != (cfg.mask.kind != "none"):
            raise ValueError(f"the dynamics model was trained {'with' if dynamics.unet_cfg.use_mask else 'without'} "
                             f"a mask channel; WorldModelConfig.mask.kind is {cfg.mask.kind!r}")
        self.generators: list[torch.Generator] = []
        self.t = 0

    def reset(self, lowres: np.ndarray | torch.Tensor, full: np.ndarray | torch.Tensor,
              actions: np.ndarray | torch.Tensor, seeds: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Start B rollouts from real frames: lowres (B, K, h, w, 3) and full (B, K, H, W, 3) uint8, the actions
        between them (B, K-1). Forgets every previous frame (Warm Start starts cold again). Returns the last frames."""
        lowres, full = torch.as_tensor(lowres), torch.as_tensor(full)
        actions = torch.as_tensor(actions, dtype=torch.long)
        if lowres.dim() != 5 or lowres.shape[1] != self.k or actions.shape[-1] != self.k - 1:
            raise ValueError(f"reset needs lowres (B, {self.k}, h, w, 3) and actions (B, {self.k - 1}), "
                             f"got {tuple(lowres.shape)} and {tuple(actions.shape)}")
        B = lowres.shape[0]
        seeds = seeds if seeds is not None else [self.seed + b for b in range(B)]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        self.ctx = to_model(lowres).to(self.device)  # (B, K, 3, h, w)
        self.acts = actions.to(self.device)  # (B, K-1)
        self.full = to_model(full[:, -1]).to(self.device)  # (B, 3, H, W) the newest full-res frame
        self.full_u8 = full[:, -1].to(self.device)  # (B, H, W, 3)
        self.prev_low: torch.Tensor | None = None  # Warm Start memory: forgotten on reset (PIWM; DIAMOND keeps it)
        self.prev_full: torch.Tensor | None = None
        self.t = 0
        return from_model(self.ctx[:, -1]), from_model(self.full)

    def mask(self, states: np.ndarray | torch.Tensor | None = None) -> torch.Tensor | None:
        """The inference-time mask (B, h, w) from the newest full-res frame (PIWM: rebuilt every step); a GT mask is
        drawn from `states` (B, V, 11) instead: an oracle, since generated frames come with no simulator states."""
        if self.cfg.mask.kind == "none":
            return None
        if self.cfg.mask.kind == "gt" and states is None:
            raise ValueError("a GT-state mask needs simulator states, which generated frames do not have: pass the "
                             "logged states of the newest frame to step(actions, states) (an oracle mask)")
        return make_mask(self.full_u8, self.cfg.mask, "infer", states)

    @torch.no_grad()
    def step(self, actions: np.ndarray | torch.Tensor | list[int],
             states: np.ndarray | torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Take one action per rollout (B,); returns the generated (B, h, w, 3) and (B, H, W, 3) uint8 frames.
        `states` (B, V, 11): the true states of the newest frame, needed only by a GT mask (oracle)."""
        if not self.generators:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(actions, dtype=torch.long, device=self.device).view(-1, 1)  # (B, 1)
        acts = torch.cat([self.acts, a], 1)  # (B, K) the K previous actions, the new one last
        cfg = self.cfg
        bf16 = cfg.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            warm = cfg.warm_start  # Warm Start: each sampler starts from its previous output (None on the first step)
            low = sample(self.dyn, self.ctx, cfg.dynamics, self.generators, acts, self.mask(states),
                         self.prev_low if warm else None)
            low = low.clamp(-1, 1)  # (B, 3, h, w)
            if self.up is not None:
                H, W = self.full.shape[-2:]
                up_ctx = torch.stack([self.full, upsample(low, H, W)], 1)  # (B, 2, 3, H, W)
                full = sample(self.up, up_ctx, cfg.upsampler, self.generators, None, None,
                              self.prev_full if warm else None).clamp(-1, 1)
            else:
                full = upsample(low, *self.full.shape[-2:])
        self.ctx = torch.cat([self.ctx[:, 1:], low[:, None]], 1)
        self.acts = acts[:, 1:]
        self.full, self.prev_low, self.prev_full = full, low, full
        full_u8 = from_model(full)  # (B, H, W, 3) on the host: returned, and the next step's mask source
        self.full_u8 = torch.from_numpy(full_u8).to(self.device)
        self.t += 1
        return from_model(low), full_u8


def rollout(env: WorldModelEnv, lowres: np.ndarray, full: np.ndarray, actions: np.ndarray,
            seeds: list[int] | None = None, batch: int | None = None,
            states: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Open-loop rollout under logged actions: lowres (B, K+N, h, w, 3), full (B, K+N, H, W, 3), actions
    (B, K+N-1) from real episodes -> generated (B, N, h, w, 3) and (B, N, H, W, 3) for frames K..K+N-1.
    Rollout b draws its noise from seed seeds[b] (default env.seed + b), so `batch` (rollouts per forward pass,
    default all) changes nothing but memory and speed. `states` (B, K+N, V, 11): the logged states, for a GT mask
    (frame K-1+t's, as in training: the oracle of where the cars truly are)."""
    B, k = lowres.shape[0], env.k
    seeds = seeds if seeds is not None else [env.seed + b for b in range(B)]
    step = batch or B
    outs = []
    for s in range(0, B, step):
        sl = slice(s, s + step)
        env.reset(lowres[sl, :k], full[sl, :k], actions[sl, :k - 1], seeds[sl])
        lows, fulls = [], []
        for t in range(lowres.shape[1] - k):
            lo, fu = env.step(actions[sl, k - 1 + t], None if states is None else states[sl, k - 1 + t])
            lows.append(lo)
            fulls.append(fu)
        outs.append((np.stack(lows, 1), np.stack(fulls, 1)))
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
