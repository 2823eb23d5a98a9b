"""Vehicle detection in generated or real BEV frames: connected components of the colour detections, matched to
ground-truth states (evaluation; labelling by scipy.ndimage)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .bev import STATE_FIELDS, in_frame, in_view
from .masks import MaskConfig, vehicle_pixels


def _labels(fg: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected labelling of (..., H, W) bool per image by scipy.ndimage.label (C code, on the CPU): flat indices
    of the foreground pixels (P,) sorted, their component (P,) in 0..n-1, and each component's last pixel (n,)."""
    H, W = fg.shape[-2:]
    img = fg.detach().cpu().numpy().reshape(-1, H, W)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-neighbours inside an image, never across images
    lab, n = ndimage.label(img, structure=structure)
    flat = np.flatnonzero(lab)  # (P,) sorted
    comp = lab.reshape(-1)[flat] - 1  # (P,)
    last = np.zeros(n, np.int64)
    last[comp] = flat  # ascending flat: each component keeps its last pixel
    return flat, comp, last


def _components(fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground pixels of (..., H, W) bool as flat indices (P,) and the flat index of their component's root (P,),
    the root being the component's last pixel (on the input's device)."""
    flat, comp, last = _labels(fg)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.long, device=fg.device)  # noqa: E731
    return as_t(flat), as_t(last[comp])


def label_components(fg: torch.Tensor) -> torch.Tensor:
    """8-connected components of (..., H, W) bool: (..., H, W) int64, 0 = background, labels unique in the batch.

    A component's label is 1 + the flat index of its last pixel, so components never span two images.
    """
    flat, root = _components(fg)
    out = torch.zeros(fg.numel(), dtype=torch.long, device=fg.device)
    out[flat] = root + 1
    return out.view(fg.shape)


@dataclass
class Detections:
    """Vehicle blobs of a batch: one row per connected component of ego or other-vehicle pixels."""

    frame: torch.Tensor  # (K,) int64, batch index
    centre: torch.Tensor  # (K, 2) px, (x, y) centroid in continuous image coords (pixel j spans [j, j + 1))
    pixels: torch.Tensor  # (K,) int64, component size
    is_ego: torch.Tensor  # (K,) bool
    count: torch.Tensor  # (B,) int64, other vehicles per frame


def detect_vehicles(frames: np.ndarray | torch.Tensor, cfg: MaskConfig = MaskConfig(),
                    min_pixels: int = 10) -> Detections:
    """Vehicles as 8-connected blobs of the colour detections (B, H, W, 3) uint8 (evaluation).

    Blobs below `min_pixels` (slivers at the image border) are dropped; touching cars form one blob.
    """
    ego, other = vehicle_pixels(frames, cfg)  # (B, H, W)
    B, H, W = ego.shape
    flat, comp, last = _labels(torch.stack([ego, other], 1))  # over (B, 2, H, W): labels never cross images
    order = np.argsort(last)  # components by their last pixel, as before
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    comp, n = rank[comp], len(order)
    size = np.bincount(comp, minlength=n)  # (K,)
    xy = np.stack([np.bincount(comp, flat % W + 0.5, n), np.bincount(comp, flat // W % H + 0.5, n)], 1)  # (K, 2) sums
    first = last[order] // (H * W)  # image index b * 2 + kind of each component
    keep = size >= min_pixels
    as_t = lambda a: torch.as_tensor(a, device=ego.device)  # noqa: E731
    centre = as_t((xy / np.maximum(size, 1)[:, None])[keep]).float()
    frame, kind, size = as_t((first // 2)[keep]), as_t((first % 2)[keep]), as_t(size[keep])
    count = torch.bincount(frame[kind == 1], minlength=B)
    return Detections(frame, centre, size, kind == 0, count)


def match_vehicles(det: Detections, states: np.ndarray | torch.Tensor,
                   radius: float = 6.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair other-vehicle blobs with state slots 1.. of (B, N, F) (evaluation): mutual nearest centres within radius.

    Returns the blob index of each vehicle (B, N-1) int64 (-1: unmatched), the blobs' rows in `det` (K,) and their
    centre minus the matched (px, py), (K, 2) px (NaN: unmatched).
    """
    s = torch.as_tensor(states, dtype=torch.float32, device=det.centre.device)
    s = s[None] if s.dim() == 2 else s  # (B, N, F)
    gt = s[:, 1:, [STATE_FIELDS.index("px"), STATE_FIELDS.index("py")]]  # (B, M, 2)
    gt = torch.where(torch.isfinite(gt), gt, torch.full_like(gt, 1e9))
    rows = (~det.is_ego).nonzero()[:, 0]  # (K,)
    frame, xy = det.frame[rows], det.centre[rows]  # (K,), (K, 2)
    dist = torch.full((s.shape[0], gt.shape[1], len(rows) + 1), float("inf"), device=xy.device)  # (B, M, K + 1)
    k = torch.arange(len(rows), device=xy.device)
    dist[frame, :, k] = torch.linalg.vector_norm(xy[:, None] - gt[frame], dim=-1)  # (K, M) into place
    near_gt = dist[frame, :, k].argmin(1)  # (K,)
    near_blob = dist.argmin(2)  # (B, M)
    ok = (near_blob[frame, near_gt] == k) & (dist[frame, near_gt, k] < radius)  # (K,)
    blob_of = torch.full(gt.shape[:2], -1, dtype=torch.long, device=xy.device)  # (B, M)
    blob_of[frame[ok], near_gt[ok]] = k[ok]
    offset = torch.where(ok[:, None], xy - gt[frame, near_gt], torch.full_like(xy, float("nan")))
    return blob_of, rows, offset


def detection_scores(det: Detections, states: np.ndarray | torch.Tensor, width: int = 600, height: int = 150,
                     radius: float = 6.0) -> dict[str, float]:
    """Precision and recall of other-vehicle blobs for vehicles wholly in view (bev.in_view), centre error in px.

    Recall: in-view vehicles with a matched blob. Precision: blobs whose centre passes the in-view rule that are
    matched (to any vehicle). Centre error: mean distance from blob centroid to (px, py) over in-view matches.
    """
    blob_of, rows, offset = match_vehicles(det, states, radius)
    s = torch.as_tensor(states, dtype=torch.float32).cpu()
    seen = torch.as_tensor(in_view((s[None] if s.dim() == 2 else s)[:, 1:].numpy(), width, height))  # (B, M)
    cx, cy = det.centre[rows].cpu().T.numpy()  # (K,), (K,)
    blob_in = torch.as_tensor(in_frame(cx, cy, width, height))  # (K,)
    matched = offset[:, 0].isfinite().cpu()  # (K,)
    found = (blob_of.cpu() >= 0) & seen  # (B, M)
    good = offset.cpu()[blob_of.cpu()[found]]  # (T, 2) offsets of in-view matches
    return {"precision": int((matched & blob_in).sum()) / max(int(blob_in.sum()), 1),
            "recall": int(found.sum()) / max(int(seen.sum()), 1),
            "centre_error_px": float(good.norm(dim=1).mean()) if len(good) else float("nan"),
            "centre_bias_px": good.mean(0).tolist(), "vehicles": int(seen.sum()), "blobs": int(blob_in.sum())}
