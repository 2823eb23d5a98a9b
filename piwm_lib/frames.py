"""Frame conversions in one place: uint8 <-> model floats in [-1, 1], and the low-res (30x120) copy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_uint8(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic, antialiased resize of (T, H, W, 3) uint8 frames to (T, height, width, 3) uint8 (paper: 30x120)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def to_model(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    x = torch.as_tensor(frames)
    return x.movedim(-1, -3).float().div_(127.5).sub_(1.0)


def from_model(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float in [-1, 1] -> (..., H, W, 3) uint8 (clipped)."""
    y = x.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return y.movedim(-3, -1).cpu().numpy()


def upsample(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic upsample of model frames (B, 3, h, w) -> (B, 3, height, width), clipped to [-1, 1] (upsampler input)."""
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False).clamp_(-1.0, 1.0)
