"""Vehicle identities through time: frame-to-frame optimal assignment (Hungarian, scipy's linear_sum_assignment) of
detections to tracks predicted with constant velocity, and per-frame matching of generated to true vehicles.
Loops run over frames (T ~ 16), never over pixels; each assignment is a tiny K x K problem."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (K, L) between (K, 2) and (L, 2) points; inf where either is NaN."""
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return np.where(np.isnan(d), np.inf, d)


def assign(a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Optimal one-to-one pairing of points a (K, 2) with points b (L, 2) minimising the summed distance, pairs
    farther than `radius` dropped: (K,) index into b or -1."""
    out = np.full(len(a), -1)
    d = _dist(a, b)
    if not np.isfinite(d).any():
        return out
    cost = np.where(d <= radius, d, 1e6)  # a gated pair costs more than any sum of admissible ones
    rows, cols = linear_sum_assignment(cost)
    ok = d[rows, cols] <= radius
    out[rows[ok]] = cols[ok]
    return out


def track(others: np.ndarray, radius: float, damping: float = 1.0) -> np.ndarray:
    """Track ids (B, T, K) int (-1: padding) of the vehicle centres (B, T, K, 2) px, NaN-padded. Each track is
    predicted at t + 1 from its last displacement (times `damping`; a new track moves with the median of the
    others), then assigned optimally to the detections within `radius`; left-over detections start new tracks."""
    B, T, K, _ = others.shape
    ids = np.full((B, T, K), -1)
    for b in range(B):
        nxt = 0
        vel = np.zeros((K, 2))  # (K, 2) last displacement of the track at each slot of frame t
        for t in range(T):
            cur = others[b, t]  # (K, 2)
            present = ~np.isnan(cur[:, 0])
            if t > 0:
                prev = others[b, t - 1]
                moving = ~np.isnan(vel[:, 0]) & ~np.isnan(prev[:, 0])
                flow = np.median(vel[moving], 0) if moving.any() else np.zeros(2)
                pred = prev + np.where(np.isnan(vel), flow, vel * damping)  # (K, 2)
                j = assign(pred, cur, radius)  # (K,) slot at t of each slot at t-1
                new_vel = np.full((K, 2), np.nan)
                for i in np.nonzero(j >= 0)[0]:
                    ids[b, t, j[i]] = ids[b, t - 1, i]
                    new_vel[j[i]] = cur[j[i]] - prev[i]
                vel = new_vel
            else:
                vel = np.full((K, 2), np.nan)
            fresh = present & (ids[b, t] < 0)
            ids[b, t, fresh] = nxt + np.arange(fresh.sum())
            nxt += int(fresh.sum())
    return ids


def match(gen: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """For each generated vehicle (B, T, K, 2) the slot (B, T, K) of its true counterpart in truth (B, T, L, 2)
    by optimal assignment within `radius` px, or -1."""
    B, T = gen.shape[:2]
    out = np.full(gen.shape[:3], -1)
    for b in range(B):
        for t in range(T):
            out[b, t] = assign(gen[b, t], truth[b, t], radius)
    return out
