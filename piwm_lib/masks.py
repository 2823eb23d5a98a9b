"""Vehicle masks of BEV frames: colour detection, the PIWM Soft Mask (arXiv 2509.12437), a Hard Mask, a GT mask."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .bev import STATE_FIELDS
from .validate import NonNegFloat, PosFloat, PosInt, Prob, check_fields, require

KINDS = ("soft", "hard", "gt", "none")
CHANNELS = (0, 1, 2)  # r, g, b
MODES = ("train", "infer")
# Soft Mask weights during training: the paper's text (1.0 / 0.8) or the released configuration (0.55 / 0.45, the
# inference weights); gain 1.0 in both
TRAIN_WEIGHTS = {"paper": {"train_w_surr": 1.0, "train_w_ego": 0.8},
                 "released": {"train_w_surr": 0.55, "train_w_ego": 0.45}}


@dataclass(frozen=True)
class MaskConfig:
    """Soft/Hard/GT mask settings (PIWM Soft Mask, arXiv 2509.12437; GT geometry: HighwayEnv 1.12.1)."""

    kind: Annotated[str, KINDS] = "soft"  # mask fed to the model: soft (paper), hard (ablation), gt (from states), none
    colour_min: Prob = 0.35  # detection: the car's dominant channel (g ego, b others) above this, rgb in [0, 1]
    colour_margin: Prob = 0.12  # detection: dominant channel minus the max of the other two above this
    ego_channel: Annotated[int, CHANNELS] = 1  # detection: the ego's dominant channel, 0 r 1 g 2 b (HighwayEnv: green)
    other_channel: Annotated[int, CHANNELS] = 2  # detection: the other cars' (HighwayEnv: blue); own palettes: set both
    s_ego: PosFloat = 0.5  # ego Gaussian sigma per axis, as a fraction of the ego extent l = sqrt(12 var)
    sigma_min: PosFloat = 2.0  # px, floor of the ego Gaussian sigma
    r_glob: PosFloat = 0.35  # global longitudinal Gaussian sigma as a fraction of the frame width W
    train_w_surr: NonNegFloat = 1.0  # training: weight of other-vehicle pixels
    train_w_ego: NonNegFloat = 0.8  # training: weight of the ego Gaussian
    train_gain: NonNegFloat = 1.0  # training: factor applied after the resize
    infer_w_surr: NonNegFloat = 0.55  # inference: weight of other-vehicle pixels
    infer_w_ego: NonNegFloat = 0.45  # inference: weight of the ego Gaussian
    infer_gain: NonNegFloat = 0.45  # inference: factor applied after the resize
    dropout: Prob = 0.3  # training: probability that the whole mask channel is zeroed (PIWM)
    dropout_per: Literal["batch", "sample"] = "batch"  # one coin per batch (PIWM's text, DIAMOND csgo's code) or sample
    grid: tuple[PosInt, PosInt] = (30, 120)  # (h, w) px, the dynamics model's grid
    car_length_px: PosFloat = 27.0  # GT: drawn car length, outline included (5 m at 5.5 px/m)
    car_width_px: PosFloat = 11.0  # GT: drawn car width, outline included (2 m)
    outline_px: NonNegFloat = 1.0  # GT: the dark outline is no vehicle colour; the GT box is inset by it on every side
    anchor_px: float = -0.5  # GT: body centre = floor(px, py) + this, px (HighwayEnv truncates pos2pix; notebook 02)
    straight_rad: NonNegFloat = math.radians(2.0)  # GT: headings below this are drawn unrotated (as HighwayEnv does)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.ego_channel != self.other_channel, f"MaskConfig: ego_channel and other_channel must differ (the "
                f"colour rule tells the ego from the other cars by them), got {self.ego_channel} for both")


def weights(cfg: MaskConfig, mode: str) -> tuple[float, float, float]:
    """(w_surr, w_ego, gain) of `mode` 'train' or 'infer' (PIWM Soft Mask, arXiv 2509.12437)."""
    if mode == "train":
        return cfg.train_w_surr, cfg.train_w_ego, cfg.train_gain
    if mode == "infer":
        return cfg.infer_w_surr, cfg.infer_w_ego, cfg.infer_gain
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def as_frames(frames: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8, numpy or torch -> (B, H, W, 3) uint8 tensor on `device`."""
    x = torch.as_tensor(frames, device=device)
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (..., H, W, 3) uint8, got {tuple(x.shape)} {x.dtype}")
    return x[None] if x.dim() == 3 else x


def vehicle_pixels(frames: np.ndarray | torch.Tensor, cfg: MaskConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Ego and other-vehicle pixels, (B, H, W) bool each, by the published colour rule (PIWM Soft Mask).

    Ego: g > colour_min and g - max(r, b) > colour_margin, with r, g, b in [0, 1]; others: the same with b (the
    channels are cfg.ego_channel and cfg.other_channel: other palettes). Computed exactly on the 0..255 scale
    (v / 255 > t  <=>  v > floor(255 t) for integer v), 4x faster than floats.
    """
    lo, margin = (math.floor(round(255.0 * t, 9)) for t in (cfg.colour_min, cfg.colour_margin))
    rgb = as_frames(frames).permute(3, 0, 1, 2).to(torch.int16)  # (3, B, H, W)

    def dominant(c: int) -> torch.Tensor:
        rest = torch.maximum(*(rgb[k] for k in range(3) if k != c))  # (B, H, W)
        return (rgb[c] > lo) & (rgb[c] - rest > margin)

    return dominant(cfg.ego_channel), dominant(cfg.other_channel)


def ego_moments(ego: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ego centre (x_c, y_c) = mean, extent l = sqrt(12 var) per axis, (B, 2) px, and found (B,) (PIWM Soft Mask).

    Pixel coordinates are column/row indices. With no ego pixel: centre 0, extent 0, found False.
    An ego cut by the image border gets the moments of its visible part.
    """
    B, H, W = ego.shape
    w = ego.float()  # (B, H, W)
    n = w.sum((1, 2))  # (B,)
    found = n > 0
    n1 = n.clamp_min(1.0)
    xs = torch.arange(W, device=ego.device, dtype=torch.float32)  # (W,)
    ys = torch.arange(H, device=ego.device, dtype=torch.float32)  # (H,)
    px, py = w.sum(1), w.sum(2)  # (B, W), (B, H) marginals
    cx, cy = (px * xs).sum(1) / n1, (py * ys).sum(1) / n1  # (B,)
    vx = (px * (xs - cx[:, None]) ** 2).sum(1) / n1
    vy = (py * (ys - cy[:, None]) ** 2).sum(1) / n1
    centre = torch.stack([cx, cy], 1)  # (B, 2)
    extent = torch.sqrt(12.0 * torch.stack([vx, vy], 1))  # (B, 2)
    return centre, extent, found


def ego_sigma(extent: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """sigma_ego = max(s_ego * l, sigma_min) per axis, (B, 2) px (PIWM Soft Mask)."""
    return (cfg.s_ego * extent).clamp_min(cfg.sigma_min)


def ego_gaussian(ego: torch.Tensor, centre: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """M_ego = ego_pixels * exp(-0.5 (((x - x_c)/s_x)^2 + ((y - y_c)/s_y)^2)), (B, H, W) (PIWM Soft Mask); 0 w/o ego.

    The exponential is evaluated as the product of its x and y factors (separable, same values).
    """
    B, H, W = ego.shape
    xs = torch.arange(W, device=ego.device, dtype=torch.float32)
    ys = torch.arange(H, device=ego.device, dtype=torch.float32)
    gx = torch.exp(-0.5 * ((xs[None] - centre[:, :1]) / sigma[:, :1]) ** 2)  # (B, W)
    gy = torch.exp(-0.5 * ((ys[None] - centre[:, 1:]) / sigma[:, 1:]) ** 2)  # (B, H)
    return ego.float() * gy[:, :, None] * gx[:, None, :]


def global_gaussian(centre: torch.Tensor, found: torch.Tensor, width: int, cfg: MaskConfig) -> torch.Tensor:
    """G(x) = exp(-0.5 ((x - x_c)/(r_glob W))^2), (B, W); G = 1 where no ego is found (PIWM Soft Mask)."""
    xs = torch.arange(width, device=centre.device, dtype=torch.float32)
    g = torch.exp(-0.5 * ((xs[None] - centre[:, :1]) / (cfg.r_glob * width)) ** 2)  # (B, W)
    return torch.where(found[:, None], g, torch.ones_like(g))


def to_grid(full: torch.Tensor, cfg: MaskConfig, gain: float = 1.0) -> torch.Tensor:
    """(B, H, W) full-res mask -> (B, h, w): bicubic antialiased resize, clip to [0, 1], times gain (PIWM Soft Mask).

    When the frame already has the grid's size the resize is skipped (identity).
    """
    if tuple(full.shape[-2:]) != tuple(cfg.grid):
        full = F.interpolate(full[:, None], size=tuple(cfg.grid), mode="bicubic", antialias=True,
                             align_corners=False)[:, 0]  # (B, h, w)
    return full.clamp(0.0, 1.0) * gain


@dataclass
class SoftTerms:
    """Every term of the Soft Mask of a batch: pixel sets, ego moments, the two Gaussians, full-res and grid masks."""

    ego: torch.Tensor  # (B, H, W) bool, ego pixels
    other: torch.Tensor  # (B, H, W) bool, other-vehicle pixels
    centre: torch.Tensor  # (B, 2) px, ego (x_c, y_c) in column/row indices
    extent: torch.Tensor  # (B, 2) px, ego extent l per axis
    found: torch.Tensor  # (B,) bool, an ego pixel exists
    sigma: torch.Tensor  # (B, 2) px, ego Gaussian sigma per axis
    m_ego: torch.Tensor  # (B, H, W), ego Gaussian on ego pixels
    g: torch.Tensor  # (B, W), global longitudinal Gaussian
    full: torch.Tensor  # (B, H, W), clip((w_surr other + w_ego M_ego) G, 0, 1)
    mask: torch.Tensor  # (B, h, w), resized, clipped, times gain


def compose(ego: torch.Tensor, other: torch.Tensor, cfg: MaskConfig, mode: str = "train") -> SoftTerms:
    """The Soft Mask terms from ego/other pixel sets (B, H, W) bool (PIWM Soft Mask, arXiv 2509.12437).

    Overlapping ego and other pixels add before the clip to [0, 1]; with no ego, M_ego = 0 and G = 1 (no NaN).
    """
    w_surr, w_ego, gain = weights(cfg, mode)
    centre, extent, found = ego_moments(ego)
    sigma = ego_sigma(extent, cfg)
    m_ego = ego_gaussian(ego, centre, sigma)  # (B, H, W)
    g = global_gaussian(centre, found, ego.shape[-1], cfg)  # (B, W)
    full = ((w_surr * other.float() + w_ego * m_ego) * g[:, None, :]).clamp(0.0, 1.0)  # (B, H, W)
    return SoftTerms(ego, other, centre, extent, found, sigma, m_ego, g, full, to_grid(full, cfg, gain))


def soft_terms(frames: np.ndarray | torch.Tensor, cfg: MaskConfig, mode: str = "train") -> SoftTerms:
    """Every Soft Mask term of (B, H, W, 3) uint8 frames (PIWM Soft Mask, arXiv 2509.12437)."""
    return compose(*vehicle_pixels(frames, cfg), cfg, mode)


def soft_mask(frames: np.ndarray | torch.Tensor, cfg: MaskConfig, mode: str = "train") -> torch.Tensor:
    """PIWM Soft Mask (arXiv 2509.12437): (B, H, W, 3) uint8 frames -> (B, h, w) float32 in [0, gain]."""
    return soft_terms(frames, cfg, mode).mask


def hard_mask(frames: np.ndarray | torch.Tensor, cfg: MaskConfig, mode: str = "train") -> torch.Tensor:
    """Hard Mask (paper's ablation; definition not published): binary ego | other pixels, resized like the soft mask.

    Our choice: the union of the same colour detections, no Gaussian weighting, resized (bicubic, antialias),
    clipped and scaled by the mode's gain like the Soft Mask. (B, H, W, 3) uint8 -> (B, h, w) float32.
    """
    ego, other = vehicle_pixels(frames, cfg)
    return to_grid((ego | other).float(), cfg, weights(cfg, mode)[2])


def gt_pixels(states: np.ndarray | torch.Tensor, cfg: MaskConfig, height: int = 150,
              width: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """Ego (slot 0) and other-vehicle pixels (B, H, W) bool from states (B, N, F): rotated car boxes, no colours.

    Each body is a (car_length - 2 outline) x (car_width - 2 outline) box centred at floor(px, py) + anchor_px
    (pixel j spans [j, j + 1)) and rotated by its heading; a pixel is in it when its centre (j + 0.5, i + 0.5) is.
    Parts outside the frame are dropped; overlapping cars form a union; non-finite states are ignored.
    """
    s = torch.as_tensor(states, dtype=torch.float32)
    s = s[None] if s.dim() == 2 else s  # (B, N, F)
    B, N, _ = s.shape
    f = STATE_FIELDS.index
    cx = torch.floor(s[..., f("px")]) + cfg.anchor_px  # (B, N) continuous px
    cy = torch.floor(s[..., f("py")]) + cfg.anchor_px
    h = s[..., f("heading")]
    h = torch.where(h.abs() > cfg.straight_rad, h, torch.zeros_like(h))
    half_l, half_w = cfg.car_length_px / 2 - cfg.outline_px, cfg.car_width_px / 2 - cfg.outline_px
    k = int(math.ceil(math.hypot(half_l, half_w))) + 1  # patch radius covering any rotation
    d = torch.arange(-k, k + 1, device=s.device, dtype=torch.float32)  # (K,)
    ok = torch.isfinite(cx) & torch.isfinite(cy) & torch.isfinite(h)  # (B, N)
    cx, cy, h = (torch.where(ok, v, torch.zeros_like(v)) for v in (cx, cy, h))
    cols = torch.floor(cx)[..., None, None] + d[None, None, None, :]  # (B, N, 1, K)
    rows = torch.floor(cy)[..., None, None] + d[None, None, :, None]  # (B, N, K, 1)
    rx, ry = cols + 0.5 - cx[..., None, None], rows + 0.5 - cy[..., None, None]  # (B, N, K, K) broadcast
    c, sn = torch.cos(h)[..., None, None], torch.sin(h)[..., None, None]
    u, v = rx * c + ry * sn, -rx * sn + ry * c  # car frame: u along the heading
    inside = (u >= -half_l) & (u < half_l) & (v >= -half_w) & (v < half_w)  # (B, N, K, K)
    inside &= (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width) & ok[..., None, None]
    bidx = torch.arange(B, device=s.device)[:, None, None, None].expand_as(inside)
    flat = (bidx * height * width + rows.long() * width + cols.long()).expand_as(inside)  # (B, N, K, K)
    is_ego = torch.zeros(N, dtype=torch.bool, device=s.device)
    is_ego[0] = True
    out = []
    for sel in (inside & is_ego[None, :, None, None], inside & ~is_ego[None, :, None, None]):
        m = torch.zeros(B * height * width, dtype=torch.bool, device=s.device)
        m[flat[sel]] = True
        out.append(m.view(B, height, width))
    return out[0], out[1]


def gt_mask(states: np.ndarray | torch.Tensor, cfg: MaskConfig, mode: str = "train", height: int = 150,
            width: int = 600) -> torch.Tensor:
    """PIWM Soft Mask weighting over car boxes drawn from states (B, N, F) instead of colours: (B, h, w)."""
    return compose(*gt_pixels(states, cfg, height, width), cfg, mode).mask


def make_mask(frames: np.ndarray | torch.Tensor, cfg: MaskConfig, mode: str = "train",
              states: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """The mask channel of `cfg.kind` for (B, H, W, 3) frames (states needed for 'gt'): (B, h, w) float32."""
    x = as_frames(frames)
    if cfg.kind == "soft":
        return soft_mask(x, cfg, mode)
    if cfg.kind == "hard":
        return hard_mask(x, cfg, mode)
    if cfg.kind == "gt":
        if states is None:
            raise ValueError("MaskConfig.kind 'gt' needs the vehicle states")
        return gt_mask(torch.as_tensor(states, device=x.device), cfg, mode, x.shape[1], x.shape[2])
    return torch.zeros(x.shape[0], *cfg.grid, device=x.device)


def mask_dropout(masks: torch.Tensor, p: float, generator: torch.Generator | None = None,
                 per: str = "batch") -> torch.Tensor:
    """Zero the whole mask with probability p (PIWM Soft Mask, training): one coin for the batch (published) or one
    per batch element (per="sample"); (B, ...) -> (B, ...)."""
    dev = generator.device if generator is not None else masks.device
    n = 1 if per == "batch" else masks.shape[0]
    keep = torch.rand(n, generator=generator, device=dev) >= p  # (1,) or (B,)
    keep = keep.to(masks.device).expand(masks.shape[0])  # (B,)
    return masks * keep.view(-1, *([1] * (masks.dim() - 1))).to(masks.dtype)
