"""Vehicle detection in generated or real BEV frames: connected components of the colour detections, matched to
ground-truth states (evaluation; vectorised, no scipy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bev import STATE_FIELDS, in_frame, in_view
from .masks import MaskConfig, vehicle_pixels


def _components(fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground pixels of (..., H, W) bool as flat indices (P,) and the flat index of their component's root (P,).

    Label propagation with pointer jumping over the foreground pixels only: each pixel takes the largest label
    among its 8 neighbours, then the label of the pixel that label names; it stops when nothing changes.
    """
    H, W = fg.shape[-2:]
    flat = fg.reshape(-1).nonzero()[:, 0]  # (P,) sorted flat indices
    img, r, c = flat // (H * W), flat // W % H, flat % W  # (P,)
    own = torch.arange(len(flat), device=fg.device)  # (P,) node ids
    nb = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr, cc = r + dr, c + dc
            q = img * H * W + rr.clamp(0, H - 1) * W + cc.clamp(0, W - 1)  # (P,) neighbour flat index
            k = torch.searchsorted(flat, q).clamp_max(max(len(flat) - 1, 0))
            hit = (flat[k] == q) & (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
            nb.append(torch.where(hit, k, own))
    nb = torch.stack(nb, 1)  # (P, 9) neighbour nodes (self where none)
    lab = own
    while len(flat):
        new = lab[nb].amax(1)  # largest neighbouring label; lab[k] >= k keeps every label inside its component
        new = new[new]  # pointer jumping
        if torch.equal(new, lab):
            break
        lab = new
    return flat, flat[lab]


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
    """Vehicles as 8-connected blobs of the colour detections (B, H, W, 3) uint8 (evaluation; no scipy needed).

    Blobs below `min_pixels` (slivers at the image border) are dropped; touching cars form one blob.
    """
    ego, other = vehicle_pixels(frames, cfg)  # (B, H, W)
    B, H, W = ego.shape
    flat, root = _components(torch.stack([ego, other], 1))  # over (B, 2, H, W): labels never cross images
    ids, inv, size = torch.unique(root, return_inverse=True, return_counts=True)  # (K,)
    xy = torch.stack([flat % W, flat // W % H], 1).float() + 0.5  # (P, 2) pixel centres
    sums = torch.zeros(len(ids), 2, device=flat.device).index_add_(0, inv, xy)
    centre = sums / size[:, None]
    first = ids // (H * W)  # image index b * 2 + kind of each component
    keep = size >= min_pixels
    frame, kind = (first // 2)[keep], (first % 2)[keep]
    count = torch.bincount(frame[kind == 1], minlength=B)
    return Detections(frame, centre[keep], size[keep], kind == 0, count)


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
