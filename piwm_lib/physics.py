"""Objective physical-consistency metrics for generated BEV rollouts (our answer to PIWM's human TEC / IEC / KIR
ratings, arXiv 2509.12437 Sec. 4): vehicles are found in every frame (detect.py), given identities through time
(tracking.py) and matched to the true vehicles of the same frame; the ego's motion is read from the road
(egomotion.py: the lane marks along x on straight roads, the road's 2D shift on curved ones), because HighwayEnv's
camera follows the ego and its own pixels never move.

Events (one row each, `events()`), all judged against the ground truth of the same window under the same actions:
- TEC: vanish (a track ends away from the left/right borders), popup (one starts there), ego_vanish.
- IEC: merge (a track ends next to a car it was close to: one event, not also a vanish), swap (two tracks exchange
  their true identities).
- KIR: lane_stuck / lane_wrong (a lane change the truth made after its command is not made, or made the other way,
  within kir_window frames), lane_unrequested (a lane change the truth did not make), speed_ignored / speed_wrong
  (FASTER / SLOWER answered by no speed change or one of the wrong sign), ego_misplaced (the ego sprite leaves the
  spot where the camera holds it).
Frames are indexed within the sequences passed in; actions[:, t] is taken at frame t (it leads to frame t + 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import egomotion as E
from .dataset import action_names
from .detect import detect_vehicles
from .env import ACTIONS, CURVED
from .tracking import match, track
from .validate import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, check_fields, require

TEC_EVENTS = ("vanish", "popup", "ego_vanish")
IEC_EVENTS = ("merge", "swap")
KIR_EVENTS = ("lane_stuck", "lane_wrong", "lane_unrequested", "speed_ignored", "speed_wrong", "ego_misplaced")
EVENT_TYPES = TEC_EVENTS + IEC_EVENTS + KIR_EVENTS


@dataclass(frozen=True)
class PhysicsConfig:
    """Thresholds of the metrics (ours; px on the 150 x 600 frame, 5.5 px per metre, 5 frames per second)."""

    track_radius_px: PosFloat = 20.0  # a car moves less than this between frames beyond its predicted motion
    border_px: PosFloat = 30.0  # (dis)appearing within this of the left / right edge is legitimate (a car length + 3)
    border_y: bool = False  # ... and of the top / bottom edge (square views of roads that run every way: curved ones)
    close_px: PosFloat = 35.0  # centres closer than this: an interaction both cars must survive
    match_px: PosFloat = 10.0  # a generated car is the true car of the same frame when their centres are this close
    swap_gap: NonNegInt = 4  # frames a track may go unmatched between its old and its new true identity in a swap
    ego_offset_px: PosFloat = 6.0  # the ego sprite this far from the true ego's centre is misplaced
    min_road_fit: Prob = 0.5  # frames whose lane marks explain less of the row profile are unreadable (no lanes)
    min_dash: NonNegFloat = 0.2  # frame pairs whose dash strength is below this give no speed
    kir_window: PosInt = 8  # frames after a command within which it must be answered
    judge_slack: NonNegInt = 2  # a command is judged only if the truth answered it this many frames before the end
    speed_change_mps: PosFloat = 1.0  # the truth answers FASTER / SLOWER when its speed moves this far (m/s)
    complete_px: NonNegFloat = 4.0  # a lane change is completed when the road sits this close to the new lane centre
    min_pixels: PosInt = 10  # blobs smaller than this are slivers, not cars (detect.detect_vehicles)
    w_tec: NonNegFloat = 1.0  # weight of the TEC score in the overall score WO
    w_iec: NonNegFloat = 1.0  # weight of the IEC score in WO
    w_kir: NonNegFloat = 1.0  # weight of the KIR score in WO
    road: E.RoadConfig | None = field(default_factory=E.RoadConfig)  # lane geometry and dash pattern; None: no lane
    #     reading (curved roads): no lateral position, so no lane-change metrics
    shift: E.ShiftConfig | None = None  # where road is None: the speed from the road's 2D shift (KIR: speed commands)
    actions: tuple[str, ...] = ACTIONS  # the dataset's action names (env.EnvConfig.action_names): whose index is FASTER

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.w_tec + self.w_iec + self.w_kir > 0,
                f"PhysicsConfig: the WO weights w_tec, w_iec, w_kir must not all be 0, got "
                f"{self.w_tec, self.w_iec, self.w_kir}")


def not_applicable(manifest: dict) -> str:
    """Why the physics metrics cannot score a dataset ("" when they can): they read HighwayEnv's palette and its
    camera that follows the ego."""
    return "" if manifest.get("env") else "it was not collected from HighwayEnv (no palette, camera or road to read)"


def no_road(manifest: dict) -> str:
    """Why the lane reading (lateral position, lane changes, the lane part of KIR) cannot score a collected dataset
    ("" when it can): egomotion.read_road reads lane marks that run along x."""
    env_id = manifest.get("env", {}).get("env_id", "highway-v0")
    return (f"{env_id}'s roads curve under the camera, and the lane reading (lateral position, lane changes) assumes "
            "straight lanes along x; the speed is read from the road's 2D shift instead, so KIR counts the FASTER / "
            "SLOWER commands, and the vehicle metrics (TEC, IEC) apply" if env_id in CURVED else "")


def for_dataset(manifest: dict, **fields) -> PhysicsConfig | None:
    """The PhysicsConfig of a collected dataset's road (its lanes, px per metre, frame rate; `fields` set the rest):
    on curved roads no road reading and borders on all four sides; None where no metric applies (not_applicable)."""
    if not_applicable(manifest):
        return None
    env = manifest["env"]
    fields = {"actions": action_names(manifest), **fields}
    if no_road(manifest):  # cars cross the square view every way: two cars at the top speed close in from opposite
        #                    sides by 2 v / hz metres a frame (roundabout: 35 px), which tracking must follow
        closing_px = 2 * max(env["ego_speeds"]) / env["policy_hz"] * env["scaling"] + 5.0
        radius = max(PhysicsConfig.track_radius_px, closing_px)
        shift = E.ShiftConfig(px_per_m=env["scaling"], frame_hz=env["policy_hz"])
        return PhysicsConfig(**{"road": None, "shift": shift, "border_y": True, "track_radius_px": radius, **fields})
    road = E.RoadConfig(lanes=env["lanes"], px_per_m=env["scaling"], frame_hz=env["policy_hz"],
                        ego_row=env.get("centering", (0.3, 0.5))[1] * env["screen_height"])
    return PhysicsConfig(road=road, **fields)


@dataclass
class Objects:
    """Vehicles of B sequences of T frames: others (B, T, K, 2) px centres, NaN-padded; ego (B, T, 2), NaN if absent."""

    others: np.ndarray
    ego: np.ndarray
    width: int
    height: int = 0


@dataclass
class Scene:
    """What the metrics read from (B, T) frames: vehicles with track ids, and the ego's motion from the road."""

    obj: Objects
    tracks: np.ndarray  # (B, T, K) int track id of each vehicle slot, -1 for padding
    lateral: np.ndarray  # (B, T) px, the ego below the road's top edge; NaN where the road is unreadable
    speed: np.ndarray  # (B, T-1) m/s between frames t and t + 1; NaN where the dashes (or the 2D shift) are unreadable


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
    return Objects(others.reshape(B, T, -1, 2), ego_xy.reshape(B, T, 2), W, H)


def observe(frames: np.ndarray, cfg: PhysicsConfig = PhysicsConfig()) -> Scene:
    """Vehicles, tracks and road-read ego motion of (B, T, H, W, 3) uint8 frames."""
    frames = np.asarray(frames)
    obj = find_objects(frames, cfg)
    if cfg.road is None:  # curved roads: no lateral position; the speed from the road's 2D shift (if configured)
        B, T = frames.shape[:2]
        speed = E.shift_speed_mps(frames, cfg.shift) if cfg.shift else np.full((B, T - 1), np.nan)
        return Scene(obj, track(obj.others, cfg.track_radius_px), np.full((B, T), np.nan), speed)
    road = E.read_road(frames, cfg.road)  # (B, T) each
    lateral = np.where(road.fit >= cfg.min_road_fit, E.lateral_px(road, cfg.road), np.nan)
    speed, dash = E.speed_mps(road, cfg.road)  # (B, T-1)
    return Scene(obj, track(obj.others, cfg.track_radius_px), lateral, np.where(dash >= cfg.min_dash, speed, np.nan))


def _scene(x: np.ndarray | Scene, cfg: PhysicsConfig) -> Scene:
    return x if isinstance(x, Scene) else observe(x, cfg)


# ------------------------------------------------------------------------------------------------- TEC and IEC
def _away(xy: np.ndarray, obj: Objects, cfg: PhysicsConfig) -> np.ndarray:
    """(...) True where points (..., 2) px lie away from the borders where cars legitimately enter or leave the view
    (left / right; also top / bottom with border_y). NaN compares False."""
    x, y = xy[..., 0], xy[..., 1]
    ok = (x > cfg.border_px) & (x < obj.width - cfg.border_px)
    return ok & (y > cfg.border_px) & (y < obj.height - cfg.border_px) if cfg.border_y else ok


def _inside(p: np.ndarray, obj: Objects, cfg: PhysicsConfig) -> bool:
    """Point p (x, y) px away from the borders (_away)."""
    return bool(_away(np.asarray(p), obj, cfg))


def _existence(s: Scene, b: int, cfg: PhysicsConfig) -> list[dict]:
    """Vanish / popup / merge events of window b: tracks that end or start away from the borders; a track that ends
    next to a car it was close to, which goes on, merged into it."""
    xy, ids = s.obj.others[b], s.tracks[b]  # (T, K, 2), (T, K)
    T, out = len(ids), []
    for tid in np.unique(ids[ids >= 0]):
        ts, ks = np.nonzero(ids == tid)
        first, last = ts[0], ts[-1]
        if first > 0 and _inside(xy[first, ks[0]], s.obj, cfg):
            out.append(dict(type="popup", frame=int(first), vehicles=(int(tid),), x=xy[first, ks[0], 0],
                            y=xy[first, ks[0], 1]))
        if last < T - 1:
            p = xy[last, ks[-1]]
            v = p - xy[ts[-2], ks[-2]] if len(ts) > 1 else np.zeros(2)
            pred = p + v  # where it should be at last + 1
            if not _inside(pred, s.obj, cfg):
                continue
            d_then = np.linalg.norm(xy[last] - p, axis=-1)  # (K,) to the cars of its last frame
            d_now = np.linalg.norm(xy[last + 1] - pred, axis=-1)  # (K,) to the cars of the next frame
            host = [ids[last + 1, k] for k in range(len(d_now)) if d_now[k] < cfg.close_px and ids[last + 1, k] >= 0
                    and ids[last + 1, k] in ids[last][(d_then < cfg.close_px) & (ids[last] != tid)]]
            kind = "merge" if host else "vanish"
            out.append(dict(type=kind, frame=int(last + 1), vehicles=(int(tid), *map(int, host[:1])), x=pred[0],
                            y=pred[1]))
    return out


def _swaps(gen: Scene, truth: Scene, slot: np.ndarray, b: int, cfg: PhysicsConfig) -> list[dict]:
    """Swap events of window b: two generated tracks whose true identities (through `slot` (T, K), each generated
    car's true counterpart) are exchanged, i -> j and j -> i, within swap_gap frames."""
    tid = np.where(slot >= 0, np.take_along_axis(truth.tracks[b], np.maximum(slot, 0), 1), -1)  # (T, K)
    ids = gen.tracks[b]
    switches = []  # (gen track, old true id, new true id, last frame with the old, first frame with the new)
    for g in np.unique(ids[ids >= 0]):
        ts, ks = np.nonzero(ids == g)
        seen = [(t, tid[t, k]) for t, k in zip(ts, ks) if tid[t, k] >= 0]
        for (t0, a), (t1, c) in zip(seen, seen[1:]):
            if a != c and t1 - t0 <= cfg.swap_gap + 1:
                switches.append((int(g), int(a), int(c), int(t0), int(t1)))
    out, used = [], set()
    for i, (g, a, c, t0, t1) in enumerate(switches):
        for j, (h, a2, c2, u0, u1) in enumerate(switches[i + 1:], i + 1):
            if {i, j} & used or g == h or (a, c) != (c2, a2) or max(t0, u0) > min(t1, u1):
                continue
            used |= {i, j}
            k = np.nonzero(ids[t1] == g)[0]
            x, y = gen.obj.others[b, t1, k[0]] if len(k) else (np.nan, np.nan)
            out.append(dict(type="swap", frame=min(t0, u0) + 1, vehicles=(g, h), x=x, y=y))
    return out


def _encounters(truth: Scene, b: int, cfg: PhysicsConfig) -> int:
    """Distinct pairs of true tracks whose centres come closer than close_px in window b (chances to fail IEC)."""
    pairs = set()
    for t in range(truth.tracks.shape[1]):
        xy, ids = truth.obj.others[b, t], truth.tracks[b, t]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        for i, j in zip(*np.nonzero(np.triu(d < cfg.close_px, 1))):
            pairs.add((min(ids[i], ids[j]), max(ids[i], ids[j])))
    return len(pairs)


def _coverage(gen: Scene, truth: Scene, slot: np.ndarray, b: int, cfg: PhysicsConfig) -> dict[str, float]:
    """Car-frames of window b's generated frames (1..T-1) away from the borders: true ones (others + ego), missing
    from the generated frames, extra in them (no true counterpart); the share of true other cars matched (recall)
    and the mean distance of matched cars (px)."""
    inside = lambda xy: _away(xy, truth.obj, cfg)  # noqa: E731
    t_xy, g_xy, slot = truth.obj.others[b, 1:], gen.obj.others[b, 1:], slot[1:]  # (T-1, L|K, 2): frame 0 is real
    matched_truth = np.zeros(t_xy.shape[:2], bool)
    for t, k in zip(*np.nonzero(slot >= 0)):
        matched_truth[t, slot[t, k]] = True
    ego_t, ego_g = ~np.isnan(truth.obj.ego[b, 1:, 0]), ~np.isnan(gen.obj.ego[b, 1:, 0])
    n_true, n_cars = int(inside(t_xy).sum() + ego_t.sum()), int(inside(t_xy).sum())
    missing = int((inside(t_xy) & ~matched_truth).sum() + (ego_t & ~ego_g).sum())
    extra = int((inside(g_xy) & (slot < 0)).sum())
    k = np.nonzero(slot >= 0)
    err = np.linalg.norm(g_xy[k] - t_xy[k[0], slot[k]], axis=-1)
    recall = (inside(t_xy) & matched_truth).sum() / n_cars if n_cars else np.nan
    return {"n_true": n_true, "missing": missing, "extra": extra, "recall": recall,
            "err": float(err.mean()) if len(err) else np.nan}


# ------------------------------------------------------------------------------------------------- KIR
def _onset(lateral: np.ndarray, t: int, direction: int) -> int:
    """First frame of the sideways motion that reached a lane change at frame t (walks back while moving > 1 px)."""
    start = t
    while t > 0 and direction * (lateral[t] - lateral[t - 1]) > 1.0:  # NaN compares False
        t -= 1
    return min(t + 1, start)


def _lanes(gen: Scene, truth: Scene, actions: np.ndarray, b: int, cfg: PhysicsConfig) -> tuple[list[dict], dict]:
    """Lane-change commands of window b judged against the truth's answer: events and counts (commands, answered,
    latency and timing error in frames, completed)."""
    lg, lt, T = gen.lateral[b], truth.lateral[b], gen.lateral.shape[1]
    st = {"commands": 0, "answered": 0, "latency": [], "timing": [], "completed": 0}
    if cfg.road is None:
        return [], st
    g_changes = E.lane_changes(lg, cfg.road)
    used, out = [False] * len(g_changes), []
    for tx, d in E.lane_changes(lt, cfg.road):
        want = _index(cfg, "LANE_LEFT" if d < 0 else "LANE_RIGHT")
        cmd = [t for t in range(max(tx - cfg.kir_window, 0), tx) if actions[b, t] == want]
        tc = cmd[-1] if cmd else -1  # -1: commanded before the sequence
        hit = [i for i, (t, dd) in enumerate(g_changes) if not used[i] and tc < t <= tc + cfg.kir_window and dd == d]
        if hit:
            used[hit[0]] = True
            tg = g_changes[hit[0]][0]
            st["answered"] += 1
            st["latency"].append(tg - tc)
            st["timing"].append(tg - tx)
            centre = (np.floor(lg[tg] / cfg.road.lane_px) + 0.5) * cfg.road.lane_px
            after = lg[tg:tc + cfg.kir_window + 1]
            st["completed"] += bool(np.nanmin(np.abs(after - centre)) <= cfg.complete_px) if len(after) else 0
            st["commands"] += 1
            continue
        if tx > T - 1 - cfg.judge_slack:
            continue  # the truth answered too close to the end to judge the model
        st["commands"] += 1
        wrong = [i for i, (t, dd) in enumerate(g_changes) if not used[i] and tc < t <= tc + cfg.kir_window and dd == -d]
        if wrong:
            used[wrong[0]] = True
        out.append(dict(type="lane_wrong" if wrong else "lane_stuck", frame=max(tc + 1, 0), vehicles=(), x=np.nan,
                        y=lt[tx]))
    for (t, d), u in zip(g_changes, used):
        if not u:
            out.append(dict(type="lane_unrequested", frame=_onset(lg, t, d), vehicles=(), x=np.nan, y=lg[t]))
    return out, st


def _index(cfg: PhysicsConfig, name: str) -> int:
    """The index of action `name` in cfg.actions (-1, matching no action, where the scenario lacks it)."""
    return cfg.actions.index(name) if name in cfg.actions else -1


def _speeds(gen: Scene, truth: Scene, actions: np.ndarray, b: int, cfg: PhysicsConfig) -> tuple[list[dict], dict]:
    """FASTER / SLOWER commands of window b that the truth answers (speed moves speed_change_mps within kir_window
    frames), judged by the sign of the generated speed change: events and counts."""
    vg, vt = gen.speed[b], truth.speed[b]  # (T-1,) speed between frames t and t + 1
    out, st = [], {"commands": 0, "answered": 0}
    faster, slower = _index(cfg, "FASTER"), _index(cfg, "SLOWER")
    for tc in np.nonzero(np.isin(actions[b, :len(vt)], [faster, slower]))[0]:
        if tc < 1 or tc + cfg.judge_slack + 1 > len(vt):
            continue  # no speed before the command, or too few frames after it
        d = 1 if actions[b, tc] == faster else -1
        span = slice(tc, min(tc + cfg.kir_window, len(vt)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if not np.nanmax(d * (vt[span] - vt[tc - 1])) >= cfg.speed_change_mps:
                continue  # the simulator did not answer (already at the speed limit) or the truth is unreadable
            up, down = np.nanmax(d * (vg[span] - vg[tc - 1])), np.nanmin(d * (vg[span] - vg[tc - 1]))
        st["commands"] += 1
        if up >= cfg.speed_change_mps / 2:
            st["answered"] += 1
        else:
            kind = "speed_wrong" if down <= -cfg.speed_change_mps / 2 else "speed_ignored"
            out.append(dict(type=kind, frame=int(tc + 1), vehicles=(), x=np.nan, y=np.nan))
    return out, st


def _ego(gen: Scene, truth: Scene, b: int, cfg: PhysicsConfig) -> list[dict]:
    """ego_vanish (the generated ego gone where the truth has one) and ego_misplaced (the ego sprite more than
    ego_offset_px from the true ego, i.e. from where the camera holds it) onsets of window b."""
    g, t = gen.obj.ego[b], truth.obj.ego[b]  # (T, 2)
    gone = np.isnan(g[:, 0]) & ~np.isnan(t[:, 0])
    with np.errstate(invalid="ignore"):
        off = np.linalg.norm(g - t, axis=-1) > cfg.ego_offset_px  # NaN compares False
    out = []
    for kind, flag in (("ego_vanish", gone), ("ego_misplaced", off)):
        for f in np.nonzero(flag & ~np.r_[False, flag[:-1]])[0]:
            if f > 0 or kind == "ego_misplaced":
                out.append(dict(type=kind, frame=int(f), vehicles=(0,), x=g[f, 0], y=g[f, 1]))
    return out


# ------------------------------------------------------------------------------------------------- public API
def _window(gen: Scene, truth: Scene, actions: np.ndarray, b: int, cfg: PhysicsConfig) -> tuple[list[dict], dict]:
    """Every event of window b and the counts its scores need."""
    slot = match(gen.obj.others[b:b + 1], truth.obj.others[b:b + 1], cfg.match_px)[0]  # (T, K) true counterpart
    lane_ev, lane = _lanes(gen, truth, actions, b, cfg)
    speed_ev, speed = _speeds(gen, truth, actions, b, cfg)
    ev = _existence(gen, b, cfg) + _swaps(gen, truth, slot, b, cfg) + lane_ev + speed_ev + _ego(gen, truth, b, cfg)
    counts = {"coverage": _coverage(gen, truth, slot, b, cfg), "encounters": _encounters(truth, b, cfg),
              "lane": lane, "speed": speed}
    return sorted(ev, key=lambda e: (e["frame"], e["type"])), counts


def _check(generated, truth, actions: np.ndarray) -> np.ndarray:
    """Shapes of a generated / true pair and actions (B, T) or (B, T - 1), with a message naming the mismatch."""
    shape = lambda x: x.lateral.shape if isinstance(x, Scene) else np.shape(x)[:2]  # noqa: E731
    if shape(generated) != shape(truth):
        raise ValueError(f"generated and truth must both be (B, T, ...) with the same B, T: {shape(generated)} vs "
                         f"{shape(truth)}")
    a = np.asarray(actions)
    if a.ndim != 2 or a.shape[0] != shape(truth)[0] or a.shape[1] < shape(truth)[1] - 1:
        raise ValueError(f"actions must be (B, T) or (B, T - 1) for B, T = {shape(truth)}, got {a.shape}")
    return a


def events(generated: np.ndarray | Scene, truth: np.ndarray | Scene, actions: np.ndarray,
           cfg: PhysicsConfig = PhysicsConfig()) -> pd.DataFrame:
    """Every failure event of generated vs true (B, T, H, W, 3) uint8 frames (or their Scenes from observe) under
    actions (B, T) or (B, T - 1): one row per event with window, type, frame, vehicles (track ids), x, y (px)."""
    a = _check(generated, truth, actions)
    g, t = _scene(generated, cfg), _scene(truth, cfg)
    rows = [dict(window=b, **e) for b in range(g.lateral.shape[0]) for e in _window(g, t, a, b, cfg)[0]]
    return pd.DataFrame(rows, columns=["window", "type", "frame", "vehicles", "x", "y"])


def scores(generated: np.ndarray | Scene, truth: np.ndarray | Scene, actions: np.ndarray,
           cfg: PhysicsConfig = PhysicsConfig()) -> dict[str, np.ndarray]:
    """Per-window (B,) event rates per 100 frames and scores in [0, 1] (1 = no failure):
    TEC = 1 - (vanish + popup + ego_vanish + missing + extra car-frames) / (2 true car-frames);
    IEC = 1 - (merges + swaps) / (close encounters of true cars, at least the failures; 1 without any);
    KIR = answered commands / (judged commands + unrequested lane changes + misplaced egos), NaN without any;
    WO = the weighted mean of the three (of TEC and IEC where KIR is NaN). Plus lane latency / timing error
    (frames), ego presence and the matched cars' position error (px)."""
    a = _check(generated, truth, actions)
    g, t = _scene(generated, cfg), _scene(truth, cfg)
    B, T = g.lateral.shape
    rows = []
    for b in range(B):
        ev, c = _window(g, t, a, b, cfg)
        n = {k: sum(e["type"] == k for e in ev) for k in EVENT_TYPES}
        cov, lane, speed = c["coverage"], c["lane"], c["speed"]
        lost = n["vanish"] + n["popup"] + n["ego_vanish"] + cov["missing"] + cov["extra"]
        tec = 1 - lost / max(2 * cov["n_true"], 1)
        fails = n["merge"] + n["swap"]
        iec = 1 - fails / max(c["encounters"], fails, 1)
        judged = (lane["commands"] + speed["commands"] + n["lane_unrequested"] + n["ego_misplaced"]
                  if cfg.road is not None or cfg.shift is not None else 0)  # no reading of the ego's motion: no KIR
        kir = (lane["answered"] + speed["answered"]) / judged if judged else np.nan
        w = np.array([cfg.w_tec, cfg.w_iec, cfg.w_kir * (judged > 0)])
        row = {f"{k}_per_100": n[k] * 100.0 / max(T - 1, 1) for k in EVENT_TYPES}
        row.update(tec=float(np.clip(tec, 0, 1)), iec=iec, kir=kir,
                   wo=float(w @ np.nan_to_num([np.clip(tec, 0, 1), iec, kir]) / w.sum()),
                   lane_commands=lane["commands"], lane_answered=lane["answered"], lane_stuck=n["lane_stuck"],
                   lane_wrong=n["lane_wrong"], lane_unrequested=n["lane_unrequested"],
                   lane_completed=lane["completed"], speed_commands=speed["commands"],
                   speed_answered=speed["answered"], ego_misplaced=n["ego_misplaced"], close_encounters=c["encounters"],
                   lane_latency=np.mean(lane["latency"]) if lane["latency"] else np.nan,
                   lane_timing_error=np.mean(np.abs(lane["timing"])) if lane["timing"] else np.nan,
                   missing_rate=cov["missing"] / max(cov["n_true"], 1), others_recall=cov["recall"],
                   extra_rate=cov["extra"] / max(cov["n_true"], 1),
                   ego_presence=float(np.mean(~np.isnan(g.obj.ego[b, 1:, 0]))), others_error_px=cov["err"])
        rows.append(row)
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}
