"""Ego motion read from the road, as the camera shows it (HighwayEnv's viewer follows the ego, so the ego's own pixels
never move): the lateral position from the rows of the lane marks and road edges, the speed from the scroll of the
dashed lane marks. Works the same on true and generated frames; vectorised over (B, T) frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bev import EGO_PIXEL, STATE_FIELDS
from .validate import NonNegFloat, PosFloat, PosInt, check_fields

FASTER, SLOWER = 3, 4  # DiscreteMetaAction indices (env.ACTIONS)


@dataclass(frozen=True)
class RoadConfig:
    """Road geometry as drawn by HighwayEnv (highway-env 1.12.1 defaults; road/graphics.py LaneGraphics)."""

    lanes: PosInt = 4  # lanes_count
    lane_width_m: PosFloat = 4.0  # StraightLane.DEFAULT_WIDTH
    px_per_m: PosFloat = 5.5  # viewer scaling
    stripe_period_m: PosFloat = 4.33  # LaneGraphics.STRIPE_SPACING: one dash + one gap
    stripe_length_m: PosFloat = 3.0  # LaneGraphics.STRIPE_LENGTH: the dash
    frame_hz: PosFloat = 5.0  # recorded frames per second (EnvConfig.policy_hz)
    min_speed_mps: NonNegFloat = 10.0  # dash scroll is known modulo one period (21.65 m/s at 5 Hz): speeds are read in
    #                                    [min_speed_mps, min_speed_mps + period * frame_hz); the ego drives 15-30 m/s
    ego_row: float = float(EGO_PIXEL[1])  # px, the row the camera keeps the ego centre on (centering_position 0.5)
    mark_level: float = 110.0  # a pixel's darkest channel above this is lane-mark white (road is 100, marks 255)
    step_px: PosFloat = 0.25  # resolution of the road-edge search
    lane_hysteresis_px: NonNegFloat = 2.0  # the road must move this far past a lane boundary to count as a lane change

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def lane_px(self) -> float:
        """Lane width in px (22 at the defaults)."""
        return self.lane_width_m * self.px_per_m

    @property
    def period_px(self) -> float:
        """Dash period in px (23.8 at the defaults)."""
        return self.stripe_period_m * self.px_per_m


def mark_profile(frames: np.ndarray, cfg: RoadConfig = RoadConfig()) -> np.ndarray:
    """Lane-mark whiteness (..., H, W) float32 in [0, 1] of (..., H, W, 3) uint8 frames: darkest channel above the
    road grey, so blue and green cars (one channel near 0-100) and the grey road give 0."""
    lut = np.clip((np.arange(256, dtype=np.float32) - cfg.mark_level) / (255.0 - cfg.mark_level), 0.0, 1.0)
    f = np.asarray(frames)
    return lut[np.minimum(np.minimum(f[..., 0], f[..., 1]), f[..., 2])]  # (..., H, W), darkest channel looked up


def _templates(height: int, cfg: RoadConfig) -> tuple[np.ndarray, np.ndarray]:
    """Candidate top-edge rows (R,) and the row profile each predicts (R, H): solid edges (coverage 1) and dashed
    inner lines (coverage stripe_length / period), each 1 px wide, blurred by half a pixel."""
    lo = cfg.ego_row - (cfg.lanes + 0.5) * cfg.lane_px  # ego on the bottom lane, half a lane of slack
    hi = cfg.ego_row + 0.5 * cfg.lane_px
    tops = np.arange(lo, hi, cfg.step_px)  # (R,)
    k = np.arange(cfg.lanes + 1)  # line index from the top edge
    cover = np.where((k == 0) | (k == cfg.lanes), 1.0, cfg.stripe_length_m / cfg.stripe_period_m)  # (L,)
    rows = tops[:, None] + k[None] * cfg.lane_px  # (R, L) line position (top of its 1-px row)
    y = np.arange(height) + 0.5  # (H,) pixel centres
    w = np.exp(-0.5 * ((y[None, None] - rows[..., None] - 0.5) / 0.5) ** 2)  # (R, L, H)
    return tops, np.einsum("l,rlh->rh", cover, w).astype(np.float32)


@dataclass
class Road:
    """The road as read from (...) frames, each (...): top edge row (px, may lie above the image), the lane grid's
    share of the row profile's energy (1: the marks are exactly a lane grid; near 0: no road drawn), the dashes'
    phase (the x of their centres, px in [0, period)) and strength (Fourier amplitude relative to perfect dashes)."""

    top: np.ndarray
    fit: np.ndarray
    phase: np.ndarray
    strength: np.ndarray

    @staticmethod
    def concat(parts: list[Road]) -> Road:
        """The readings of consecutive chunks of frames as one (along the first axis)."""
        return Road(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("top", "fit", "phase", "strength")))


def _fit_top(marks: np.ndarray, cfg: RoadConfig) -> tuple[np.ndarray, np.ndarray]:
    """Top-edge row and fit (...) of lane-mark maps (..., H, W): least squares of the row profile against every
    candidate lane grid, with a free amplitude."""
    p = marks.mean(-1)  # (..., H) row profile
    tops, t = _templates(p.shape[-1], cfg)  # (R,), (R, H)
    dot = p @ t.T  # (..., R)
    explained = np.where(dot > 0, dot ** 2 / (t ** 2).sum(1), 0.0)  # (..., R) energy explained by each grid
    best = explained.argmax(-1)  # (...,)
    fit = np.take_along_axis(explained, best[..., None], -1)[..., 0] / np.maximum((p ** 2).sum(-1), 1e-9)
    return tops[best], np.clip(fit, 0.0, 1.0)


def _phase(marks: np.ndarray, top: np.ndarray, cfg: RoadConfig) -> tuple[np.ndarray, np.ndarray]:
    """Phase and strength (...) of the dashes on the inner lane-mark rows (each row and its neighbours)."""
    H, W = marks.shape[-2:]
    rows = np.floor(top[..., None] + np.arange(1, cfg.lanes) * cfg.lane_px).astype(int)  # (..., L-1)
    band = rows[..., None] + np.arange(-1, 2)  # (..., L-1, 3)
    ok = (band >= 0) & (band < H)
    flat = marks.reshape(-1, H, W)
    b = np.arange(flat.shape[0]).reshape(top.shape + (1, 1))
    lines = np.where(ok[..., None], flat[b, np.clip(band, 0, H - 1)], 0.0).max(-2)  # (..., L-1, W)
    q = lines.sum(-2) / np.maximum(ok.any(-1).sum(-1), 1)[..., None]  # (..., W) mean over lines in view
    x = np.arange(W) + 0.5
    c = q @ np.exp(-2j * np.pi * x / cfg.period_px)  # (...,) first Fourier coefficient of the dash pattern
    duty = cfg.stripe_length_m / cfg.stripe_period_m
    perfect = W * np.sin(np.pi * duty) / np.pi  # |c| of an ideal dash pattern of this duty cycle
    phase = (-np.angle(c) / (2 * np.pi) * cfg.period_px) % cfg.period_px
    return phase, np.clip(np.abs(c) / perfect, 0.0, 1.0)


def read_road(frames: np.ndarray, cfg: RoadConfig = RoadConfig()) -> Road:
    """Lane grid and dash pattern of (..., H, W, 3) uint8 frames (one pass over the pixels)."""
    marks = mark_profile(frames, cfg)  # (..., H, W)
    top, fit = _fit_top(marks, cfg)
    return Road(top, fit, *_phase(marks, top, cfg))


def lateral_px(road: Road, cfg: RoadConfig = RoadConfig()) -> np.ndarray:
    """The ego's lateral position (...) px below the road's top edge, from the road alone (lane i's centre is at
    (i + 0.5) * lane_px): a lane change shows as this moving by one lane, 22 px."""
    return cfg.ego_row - road.top


def lane_of(lateral: np.ndarray, cfg: RoadConfig = RoadConfig()) -> np.ndarray:
    """Lane index (...) of a lateral position in px (0 = top lane), clipped to the road."""
    return np.clip(np.floor(lateral / cfg.lane_px), 0, cfg.lanes - 1).astype(int)


def speed_mps(road: Road, cfg: RoadConfig = RoadConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Ego speed between consecutive frames (B, T-1) m/s from the dashes' scroll (they slide left as the ego drives
    forward), unaliased into [min_speed_mps, min_speed_mps + period * frame_hz), and the weaker dash strength of the
    two frames (B, T-1), from the Road of (B, T) frames."""
    shift = (road.phase[:, :-1] - road.phase[:, 1:]) % cfg.period_px  # (B, T-1) px moved left, modulo one period
    lo_px = cfg.min_speed_mps * cfg.px_per_m / cfg.frame_hz
    shift = lo_px + (shift - lo_px) % cfg.period_px  # the one alias in the speed window
    return shift / cfg.px_per_m * cfg.frame_hz, np.minimum(road.strength[:, :-1], road.strength[:, 1:])


def lane_changes(lateral: np.ndarray, cfg: RoadConfig = RoadConfig()) -> list[tuple[int, int]]:
    """Lane changes (frame, direction -1 up / +1 down) of one sequence of lateral positions (T,) px: the lane
    switches once the road has moved lane_hysteresis_px past the boundary; NaN frames keep the current lane."""
    lane_px, h = cfg.lane_px, cfg.lane_hysteresis_px
    cur, out = None, []
    for t, y in enumerate(lateral):
        if np.isnan(y):
            continue
        lane = int(np.floor(y / lane_px))
        if cur is None:
            cur = lane
        elif lane != cur and min(abs(y - lane_px * max(lane, cur)), abs(y - lane_px * min(lane, cur) - lane_px)) > h:
            out += [(t, int(np.sign(lane - cur)))] * abs(lane - cur)
            cur = lane
    return out


def against_states(road: Road, states: np.ndarray, actions: np.ndarray, cfg: RoadConfig = RoadConfig(),
                   window: int = 8, speed_change_mps: float = 1.0, centred_m: float = 0.75) -> dict[str, float]:
    """The road reading of one true episode (Road of (T,) frames) against its simulator states (T, N, F) and actions
    (T - 1,): the ego's lane changes (lane index changes; completed: it then comes within centred_m of the new
    lane's centre before changing again) found by the road with the right direction within one frame, the speed
    error, and the FASTER / SLOWER commands whose true speed change (speed_change_mps within `window` frames) the
    road sees with the right sign (half that change)."""
    lane, x, y, v = (states[:, 0, STATE_FIELDS.index(k)] for k in ("lane", "x", "y", "speed"))  # (T,) the ego
    starts = [t for t in range(1, len(lane)) if lane[t] != lane[t - 1]] + [len(lane)]
    found = lane_changes(lateral_px(road, cfg), cfg)
    lc = []  # (found within one frame with the right direction, completed)
    for t, nxt in zip(starts, starts[1:]):
        d = int(np.sign(lane[t] - lane[t - 1]))
        hit = any(abs(tf - t) <= 1 and df == d for tf, df in found)
        lc.append((hit, bool((np.abs(y[t:nxt] - lane[t] * cfg.lane_width_m) <= centred_m).any())))
    road_v, _ = speed_mps(Road(*(a[None] for a in (road.top, road.fit, road.phase, road.strength))), cfg)
    true_v = np.diff(x) * cfg.frame_hz  # (T-1,) displacement speed between frames
    cmds, seen = commands_seen(road_v[0], v, actions, (FASTER, SLOWER), window, speed_change_mps)
    return {"lane_changes": len(lc), "found": sum(h for h, _ in lc), "completed": sum(c for _, c in lc),
            "completed_found": sum(h and c for h, c in lc), "road_changes": len(found),
            "speed_mae": float(np.abs(road_v[0] - true_v).mean()), "speed_commands": cmds, "speed_seen": seen}


def commands_seen(road_v: np.ndarray, v: np.ndarray, actions: np.ndarray, faster_slower: tuple[int, int],
                  window: int = 8, speed_change_mps: float = 1.0) -> tuple[int, int]:
    """FASTER / SLOWER commands (their action indices) of one episode whose true speed v (T,) changes by
    speed_change_mps within `window` frames, and how many of those the road's speed (T-1,) shows with the right sign
    (half that change); a command whose road speed is unread before it or throughout its window is not counted."""
    faster, slower = faster_slower
    cmds = seen = 0
    for t in np.nonzero(np.isin(actions, [faster, slower]))[0]:
        d, span = (1 if actions[t] == faster else -1), slice(t + 1, min(t + 1 + window, len(v)))
        if t < 1 or t + 2 >= len(v) or not (d * (v[span] - v[t]) >= speed_change_mps).any():
            continue
        after = road_v[t:t + window]
        if np.isnan(road_v[t - 1]) or np.isnan(after).all():
            continue
        cmds += 1
        with np.errstate(invalid="ignore"):
            seen += bool((d * (after - road_v[t - 1]) >= speed_change_mps / 2).any())
    return cmds, seen


# ------------------------------------------------------------------------------------------------ curved roads
@dataclass(frozen=True)
class ShiftConfig:
    """The ego's speed on roads that run every way (roundabout-v0, intersection-v0): the camera follows the ego
    without turning, so the whole road moves by the ego's displacement; phase correlation of the lane marks of two
    frames measures that 2D shift (ours)."""

    px_per_m: PosFloat = 5.5  # viewer scaling
    frame_hz: PosFloat = 5.0  # recorded frames per second (EnvConfig.policy_hz)
    mark_level: float = 110.0  # a pixel's darkest channel above this is lane-mark white (RoadConfig.mark_level)
    max_ambiguity: NonNegFloat = 0.25  # the second correlation peak over the first above this: the marks repeat
    #     (dashes along a straight stretch, period 23.8 px), the shift is known only modulo the period: no reading
    exclude_px: PosInt = 4  # radius around the first peak left out when looking for the second

    def __post_init__(self) -> None:
        check_fields(self)


def _peak(r: np.ndarray, cfg: ShiftConfig) -> tuple[np.ndarray, float]:
    """Sub-pixel (dx, dy) of the highest value of a centred correlation surface (H, W) (parabola through the peak
    and its neighbours on each axis), and the second-highest value away from it over the highest."""
    H, W = r.shape
    i, j = np.unravel_index(int(np.argmax(r)), r.shape)
    p = r[i, j]
    sub = []
    for lo, hi in ((r[(i - 1) % H, j], r[(i + 1) % H, j]), (r[i, (j - 1) % W], r[i, (j + 1) % W])):
        den = lo - 2 * p + hi
        sub.append(0.5 * (lo - hi) / den if den < 0 else 0.0)
    e = cfg.exclude_px
    rest = r.copy()
    rest[max(i - e, 0):i + e + 1, max(j - e, 0):j + e + 1] = -np.inf
    return np.array([j + sub[1] - W // 2, i + sub[0] - H // 2]), float(rest.max() / max(p, 1e-9))


def road_shift(frames: np.ndarray, cfg: ShiftConfig = ShiftConfig()) -> tuple[np.ndarray, np.ndarray]:
    """How far the road moves between consecutive frames of (B, T, H, W, 3) uint8: (B, T-1, 2) px (dx, dy) by phase
    correlation of the lane-mark maps (cars drop out: mark_profile), and the ambiguity (B, T-1) of each reading
    (second correlation peak over the first). The ego moved by minus the shift."""
    marks = mark_profile(frames, RoadConfig(mark_level=cfg.mark_level))  # (B, T, H, W)
    B, T, H, W = marks.shape
    shift, ambiguity = np.full((B, T - 1, 2), np.nan), np.full((B, T - 1), np.nan)
    for b in range(B):  # one sequence at a time: (T, H, W / 2 + 1) complex spectra
        f = np.fft.rfft2(marks[b])
        cross = f[1:] * np.conj(f[:-1])  # (T-1, H, W/2+1)
        r = np.fft.fftshift(np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-6), s=(H, W)), axes=(-2, -1))
        for t in range(T - 1):
            if marks[b, t].any() and marks[b, t + 1].any():  # no marks (a blank frame): no reading
                shift[b, t], ambiguity[b, t] = _peak(r[t], cfg)
    return shift, ambiguity


def shift_speed_mps(frames: np.ndarray, cfg: ShiftConfig = ShiftConfig()) -> np.ndarray:
    """Ego speed between consecutive frames (B, T-1) m/s from the road's 2D shift of (B, T, H, W, 3) uint8 frames;
    NaN where the reading is ambiguous (max_ambiguity) or the frames show no marks."""
    shift, ambiguity = road_shift(frames, cfg)
    speed = np.linalg.norm(shift, axis=-1) / cfg.px_per_m * cfg.frame_hz
    return np.where(ambiguity <= cfg.max_ambiguity, speed, np.nan)


def shift_against_states(speed: np.ndarray, states: np.ndarray, actions: np.ndarray, faster_slower: tuple[int, int],
                         cfg: ShiftConfig = ShiftConfig(), window: int = 8,
                         speed_change_mps: float = 1.0) -> dict[str, float]:
    """The 2D-shift speed (T-1,) of one true episode against its simulator states (T, N, F) and actions (T-1,): the
    error against the ego's displacement speed where it reads, the share of frame pairs it does not read, and the
    FASTER / SLOWER commands (their indices) whose true speed change it shows (commands_seen)."""
    xy = states[:, 0, [STATE_FIELDS.index("x"), STATE_FIELDS.index("y")]]  # (T, 2) m, the ego
    true_v = np.linalg.norm(np.diff(xy, axis=0), axis=1) * cfg.frame_hz  # (T-1,)
    ok = ~np.isnan(speed)
    err = np.abs(speed[ok] - true_v[ok]) if ok.any() else np.full(1, np.nan)  # (read pairs,) m/s
    cmds, seen = commands_seen(speed, states[:, 0, STATE_FIELDS.index("speed")], actions, faster_slower, window,
                               speed_change_mps)
    return {"speed_mae": float(err.mean()), "speed_max_error": float(err.max()), "unread": float(1 - ok.mean()),
            "speed_commands": cmds, "speed_seen": seen}
