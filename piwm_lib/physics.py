"""Objective physical-consistency proxies for generated BEV rollouts (our answer to PIWM's human TEC/IEC/KIR ratings,
arXiv 2509.12437): vehicles are found in every frame (detect.py), linked between consecutive frames, and counted.

- TEC (temporal existence): vehicles that appear or vanish between consecutive frames away from the image borders.
- IEC (interaction): two vehicles that come close must both exist in the next frame (no eat-up, no merge).
- KIR (kinematic response): after a lane-change command the generated ego moves sideways when the ground truth does.
- Trajectory error of the ego (ADE / FDE, px and m).
All arrays are padded per frame (NaN = no vehicle), so every count is one vectorised operation over (B, T, K).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .detect import detect_vehicles
from .env import ACTIONS


@dataclass(frozen=True)
class PhysicsConfig:
    """Thresholds of the proxies (ours; px on the 150 x 600 frame, 5.5 px per metre, 5 frames per second)."""

    track_radius_px: float = 20.0  # a car moves less than this between frames (3.6 m in 0.2 s relative to the ego)
    border_px: float = 30.0  # (dis)appearing within this of the left / right edge is legitimate (a car length + 3)
    close_px: float = 35.0  # centres closer than this: an interaction the next frame must keep two cars through
    lane_change_px: float = 11.0  # ego lateral motion of half a lane (4 m lanes = 22 px) counts as a lane change
    same_lane_px: float = 6.0  # centres this close vertically are in the same lane (swap detection)
    match_px: float = 12.0  # generated vs ground-truth vehicles pair up when their centres are this close
    kir_window: int = 5  # frames after a lane-change command within which the ground-truth ego changes lane
    px_per_m: float = 5.5  # HighwayEnv scaling
    min_pixels: int = 10  # blobs smaller than this are slivers, not cars (detect.detect_vehicles)
    w_tec: float = 1.0  # weight of the TEC score in the overall score WO
    w_iec: float = 1.0  # weight of the IEC score in WO
    w_kir: float = 1.0  # weight of the KIR score in WO


@dataclass
class Objects:
    """Vehicles of B sequences of T frames: others (B, T, K, 2) px centres, NaN-padded; ego (B, T, 2), NaN if absent."""

    others: np.ndarray
    ego: np.ndarray
    width: int


def find_objects(frames: np.ndarray | torch.Tensor, cfg: PhysicsConfig = PhysicsConfig(), chunk: int = 64) -> Objects:
    """Detect the vehicles of (B, T, H, W, 3) uint8 frames in batches of `chunk` frames; the ego is the largest
    green blob of a frame."""
    B, T, H, W = frames.shape[:4]
    flat = torch.as_tensor(frames).reshape(B * T, H, W, 3)
    parts = []
    for i in range(0, B * T, chunk):
        d = detect_vehicles(flat[i:i + chunk], min_pixels=cfg.min_pixels)
        parts.append((d.frame.cpu().numpy() + i, d.centre.cpu().numpy(), d.pixels.cpu().numpy(),
                      d.is_ego.cpu().numpy()))
    frame, centre, size, ego = (np.concatenate(x) for x in zip(*parts))
    o = ~ego
    k = int(np.bincount(frame[o], minlength=B * T).max()) if o.any() else 0
    others = np.full((B * T, max(k, 1), 2), np.nan)
    order = np.argsort(frame[o], kind="stable")
    f_o = frame[o][order]
    slot = np.arange(len(f_o)) - np.searchsorted(f_o, f_o)  # position within its frame
    others[f_o, slot] = centre[o][order]
    ego_xy = np.full((B * T, 2), np.nan)
    e = np.nonzero(ego)[0]
    e = e[np.argsort(size[e], kind="stable")]  # ascending: the largest blob of a frame is written last
    ego_xy[frame[e]] = centre[e]
    return Objects(others.reshape(B, T, -1, 2), ego_xy.reshape(B, T, 2), W)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances (..., K, L) of (..., K, 2) and (..., L, 2); inf where either is missing."""
    d = np.linalg.norm(a[..., :, None, :] - b[..., None, :, :], axis=-1)
    return np.where(np.isnan(d), np.inf, d)


def links(obj: Objects, cfg: PhysicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest-neighbour links between frames t and t+1 within track_radius: forward (B, T-1, K) index into
    t+1 or -1, backward (B, T-1, K) index into t or -1."""
    d = _dist(obj.others[:, :-1], obj.others[:, 1:])  # (B, T-1, K, K)
    fwd, bwd = d.argmin(-1), d.argmin(-2)  # (B, T-1, K)
    near_f = np.take_along_axis(d, fwd[..., None], -1)[..., 0] < cfg.track_radius_px
    near_b = np.take_along_axis(d, bwd[..., None, :], -2)[..., 0, :] < cfg.track_radius_px
    mutual_f = np.take_along_axis(bwd, fwd, -1) == np.arange(d.shape[-1])
    mutual_b = np.take_along_axis(fwd, bwd, -1) == np.arange(d.shape[-1])
    return np.where(near_f & mutual_f, fwd, -1), np.where(near_b & mutual_b, bwd, -1)


def _inside(xy: np.ndarray, width: int, cfg: PhysicsConfig) -> np.ndarray:
    x = xy[..., 0]
    return (x > cfg.border_px) & (x < width - cfg.border_px)  # NaN compares False


def existence_events(obj: Objects, cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """TEC proxy: vanish (B, T-1, K) at t and pop-up (B, T-1, K) at t+1, away from the left/right borders."""
    fwd, bwd = links(obj, cfg)
    now, nxt = obj.others[:, :-1], obj.others[:, 1:]
    vanish = ~np.isnan(now[..., 0]) & (fwd < 0) & _inside(now, obj.width, cfg)
    popup = ~np.isnan(nxt[..., 0]) & (bwd < 0) & _inside(nxt, obj.width, cfg)
    return {"vanish": vanish, "popup": popup}


def interaction_events(obj: Objects, cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """IEC proxy over close pairs (i < j, centres < close_px apart at t), each (B, T-1, K, K) bool:
    pair, merge (both nearest the same car at t+1) and eat_up (one of them has no car within track_radius)."""
    now, nxt = obj.others[:, :-1], obj.others[:, 1:]
    d_now = _dist(now, now)  # (B, T-1, K, K)
    K = d_now.shape[-1]
    pair = (d_now < cfg.close_px) & np.triu(np.ones((K, K), bool), 1)
    d = _dist(now, nxt)  # (B, T-1, K, K)
    near = d.argmin(-1)  # (B, T-1, K)
    ok = np.take_along_axis(d, near[..., None], -1)[..., 0] < cfg.track_radius_px  # (B, T-1, K)
    same = near[..., :, None] == near[..., None, :]
    both = ok[..., :, None] & ok[..., None, :]
    return {"pair": pair, "merge": pair & both & same, "eat_up": pair & ~both}


def swap_events(obj: Objects, cfg: PhysicsConfig = PhysicsConfig(),
                events: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """IEC swap proxy (B, T-1) counts: two cars vanish at t and two pop up at t+1 so that each lane's new car stands
    where the other lane's old car was (they exchanged longitudinal places). Loops only over transitions with
    events (rare); the events themselves come from the vectorised existence_events (pass them when already known)."""
    ex = events if events is not None else existence_events(obj, cfg)
    out = np.zeros(ex["vanish"].shape[:2], int)
    r, lane = cfg.track_radius_px, cfg.same_lane_px
    for b, t in zip(*np.nonzero((ex["vanish"].sum(-1) >= 2) & (ex["popup"].sum(-1) >= 2))):
        v = obj.others[b, t][ex["vanish"][b, t]]  # (n, 2) vanished at t
        u = obj.others[b, t + 1][ex["popup"][b, t]]  # (m, 2) appeared at t+1
        same = np.abs(v[:, None, 1] - u[None, :, 1]) < lane  # (n, m): i could have jumped to j in its lane
        near = np.abs(u[None, :, 0] - v[:, None, 0]) < r  # (n, m): u_j stands at v_i's x
        # quad[i, j, k, l]: i -> j and k -> l in their lanes, u_j at v_k's x and u_l at v_i's x
        quad = same[:, :, None, None] & same[None, None] & near.T[None, :, :, None] & near[:, None, None, :]
        i, _, k, _ = np.nonzero(quad)
        out[b, t] = len({(min(x, y), max(x, y)) for x, y in zip(i.tolist(), k.tolist()) if x != y})
    return out


def others_error(gen: Objects, truth: Objects, cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """Other vehicles vs the ground truth, frame by frame (mutual nearest within match_px): mean matched distance
    (B,) px and the fraction of ground-truth cars left unmatched (B,)."""
    d = _dist(truth.others, gen.others)  # (B, T, K, L)
    near, back = d.argmin(-1), d.argmin(-2)  # (B, T, K), (B, T, L)
    dist = np.take_along_axis(d, near[..., None], -1)[..., 0]  # (B, T, K)
    ok = (dist < cfg.match_px) & (np.take_along_axis(back, near, -1) == np.arange(d.shape[-2]))
    present = ~np.isnan(truth.others[..., 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        err = np.nanmean(np.where(ok, dist, np.nan).reshape(len(d), -1), axis=1)
    return {"others_error_px": err, "others_unmatched": 1 - ok.sum((1, 2)) / np.maximum(present.sum((1, 2)), 1)}


def kinematic_response(gen: Objects, truth: Objects, actions: np.ndarray,
                       cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """KIR proxy: for each lane-change command (B, T) whose ground-truth ego moves sideways by lane_change_px within
    kir_window frames: success (the generated ego moves the same way as far) or stuck (it moves less than half).

    actions (B, T-1): actions[:, t] is taken at frame t (leading to t+1). Returns bool arrays (B, T-1): command,
    success, stuck.
    """
    lane = np.isin(actions, [ACTIONS.index("LANE_LEFT"), ACTIONS.index("LANE_RIGHT")])  # (B, A)
    A = actions.shape[1]
    end = np.minimum(np.arange(A) + cfg.kir_window, gen.ego.shape[1] - 1)  # (A,)
    dy_gt = truth.ego[:, end, 1] - truth.ego[:, :A, 1]  # (B, A)
    dy_gen = gen.ego[:, end, 1] - gen.ego[:, :A, 1]
    command = lane & (np.abs(dy_gt) >= cfg.lane_change_px)  # NaN compares False
    success = command & (np.sign(dy_gen) == np.sign(dy_gt)) & (np.abs(dy_gen) >= cfg.lane_change_px)
    stuck = command & ~(np.abs(dy_gen) >= cfg.lane_change_px / 2)  # no ego found counts as stuck
    return {"command": command, "success": success, "stuck": stuck}


def ego_errors(gen: Objects, truth: Objects, cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """Ego displacement errors per sequence (B,): ADE (mean over frames) and FDE (last frame), px and m; a missing
    generated ego is excluded from ADE and makes FDE NaN; missing (B,) counts frames without a generated ego."""
    err = np.linalg.norm(gen.ego - truth.ego, axis=-1)  # (B, T), NaN where either ego is missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a sequence without any generated ego: ADE NaN
        ade = np.nanmean(err, axis=1)
    return {"ade_px": ade, "fde_px": err[:, -1], "ade_m": ade / cfg.px_per_m, "fde_m": err[:, -1] / cfg.px_per_m,
            "ego_missing": np.isnan(gen.ego[..., 0]).sum(1)}


def scores(gen: Objects, truth: Objects, actions: np.ndarray,
           cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """Per-sequence (B,) rates and scores: vanish / pop-up / merge / eat-up / swap per 100 frames, TEC (1 - events
    per car-frame chance, times the share of ground-truth cars matched), IEC (1 - failed close pairs and swaps per
    such event), KIR (lane-change success rate times the share of frames with an ego), each in [0, 1] with 1 = no
    failure; the weighted overall WO = (w_tec TEC + w_iec IEC + w_kir KIR) / (w_tec + w_iec + w_kir); the ego
    ADE / FDE and the other vehicles' position error vs the ground truth."""
    ex = existence_events(gen, cfg)
    it = interaction_events(gen, cfg)
    kr = kinematic_response(gen, truth, actions, cfg)
    sw = swap_events(gen, cfg, ex).sum(1)  # (B,)
    T = gen.others.shape[1]
    n_cars = (~np.isnan(gen.others[:, :-1, :, 0])).sum((1, 2))  # car-frames that could vanish (B,)
    vanish, popup = ex["vanish"].sum((1, 2)), ex["popup"].sum((1, 2))
    pairs = it["pair"].sum((1, 2, 3))
    fails = (it["merge"] | it["eat_up"]).sum((1, 2, 3)) + sw
    cmds = kr["command"].sum(1)
    oe = others_error(gen, truth, cfg)
    eg = ego_errors(gen, truth, cfg)
    # an empty world has no existence events: TEC and KIR are scaled by the share of cars / ego frames present
    tec = (1 - (vanish + popup) / np.maximum(2 * n_cars, 1)) * (1 - oe["others_unmatched"])
    iec = np.clip(np.where(pairs + sw > 0, 1 - fails / np.maximum(pairs + sw, 1), 1.0), 0, 1)
    kir = np.where(cmds > 0, kr["success"].sum(1) / np.maximum(cmds, 1), 1.0) * (1 - eg["ego_missing"] / T)
    wo = (cfg.w_tec * tec + cfg.w_iec * iec + cfg.w_kir * kir) / (cfg.w_tec + cfg.w_iec + cfg.w_kir)
    per100 = 100.0 / max(T - 1, 1)
    return {"vanish_per_100": vanish * per100, "popup_per_100": popup * per100,
            "merge_per_100": it["merge"].sum((1, 2, 3)) * per100,
            "eat_up_per_100": it["eat_up"].sum((1, 2, 3)) * per100, "swap_per_100": sw * per100,
            "close_pairs": pairs, "lane_commands": cmds, "lane_success": kr["success"].sum(1),
            "lane_stuck": kr["stuck"].sum(1), "tec": tec, "iec": iec, "kir": kir, "wo": wo,
            **eg, **oe}
