"""Planted failures drawn by HighwayEnv's own renderer from edited simulator states, for validating physics metrics.

A metric that must flag a vanishing car, a merge, a swap or an ego that ignores its command has to be tested on
scenes the real renderer draws with the real camera: pasted pixel patches keep the road, the camera and the
sub-pixel placement of the original frame, so they differ from real renders in ways a metric should not depend on.
Here every planted scene is a HighwayEnv render of a modified simulator state.

Each clip is simulated with a scripted action sequence. At every recorded frame the live state is temporarily
edited (a car hidden, moved or added, the ego held or shifted, the camera pinned to the true ego), drawn by
HighwayEnv's EnvViewer and restored exactly, so the simulation continues unchanged: the truth (the unedited render)
is byte-identical to a plain run with the same seed and actions.

A failure is chosen knowing the future (a car isolated over the whole clip, a lane that stays free), so each
trajectory is stepped twice: a planning pass that only records world states, then the rendering pass, which
replays the same seed and actions (its states are checked to match) and draws the truth and planted frames.
Trajectories: "idle" (all IDLE), "lane" (a lane change at frame t0 - 1), "speed" (FASTER or SLOWER at t0 - 1).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pandas as pd

from . import env as E
from . import physics as P
from .bev import EGO_PIXEL

KINDS = ("vanish", "popup", "merge", "swap", "stuck", "stuck_sprite", "unrequested", "speed_ignored", "clean",
         "jitter")
LABELS = {"vanish": "vanish", "popup": "popup", "merge": "merge", "swap": "swap", "stuck": "lane_stuck",
          "stuck_sprite": "ego_misplaced", "unrequested": "lane_unrequested", "speed_ignored": "speed_ignored",
          "clean": "", "jitter": ""}
TRAJECTORY = {"vanish": "idle", "popup": "idle", "merge": "idle", "swap": "idle", "stuck": "lane",
              "stuck_sprite": "lane", "unrequested": "idle", "speed_ignored": "speed", "clean": "idle",
              "jitter": "idle"}

CFG = E.EnvConfig()
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(5)
SCALE = CFG.scaling  # px per metre
LANE_M = 4.0  # m, HighwayEnv's lane width (22 px)
EDGE_PX = 60.0  # cars a plant uses stay this far from the left / right image edges
GAP_PX = 45.0  # ... and their centres this far from every other car
PAIR_PX = 32.0  # centre distance of a close pair (host + companion in the adjacent lane)
PAIR_M = np.array([np.sqrt(PAIR_PX ** 2 - (LANE_M * SCALE) ** 2) / SCALE, LANE_M])  # (dx, dy) m: 4.22 m, 4 m
MERGED_PX = 1.0  # px (x, +-y) companion offset from its host in a merge: it covers the host's body (see _merge)
CLEAR_PX = (31.0, 15.0)  # a moved ego sprite is clear of a car when |dx| or |dy| exceeds this (27 x 11 px cars)
FREE_LANE_PX = 60.0  # unrequested: no car of the target lane within this of the ego longitudinally
CENTRED_M = 0.25  # a car is on its lane centre when its y is this close to it
POPUP_DX_M = np.arange(-20.0, 20.5, 1.0)  # longitudinal offsets tried for a popup car, m from its host


@dataclass
class Clip:
    """A rendered clip with one planted failure."""

    kind: str  # one of KINDS
    seed: int
    truth: np.ndarray  # (T, 150, 600, 3) uint8, HighwayEnv's render of the true states (plus companions)
    planted: np.ndarray  # (T, 150, 600, 3) uint8, the same scene with the failure, rendered by HighwayEnv
    actions: np.ndarray  # (T,) int64, action taken at frame t (leads from frame t to t + 1)
    states: np.ndarray  # (T, N, F) float32 true states from env.vehicle_states (slot 0 = ego), for reference
    frame: int  # first frame index that shows the failure; -1 for the negatives
    label: str  # event type a metric must report (LABELS); "" for the negatives


@dataclass
class Scene:
    """Edits for one render: slots hidden or moved, cars added, and where the camera looks."""

    hide: tuple[int, ...] = ()  # slots left out
    move: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)  # slot -> ((x, y) m, heading rad)
    add: list[tuple[int, np.ndarray, float]] = field(default_factory=list)  # (template slot, (x, y) m, heading)
    camera: np.ndarray | None = None  # (2,) m window centre; None: follow the (drawn) ego


SceneFn = Callable[[object, int], "Scene | None"]  # (unwrapped env, frame) -> edits, None = draw the truth


@dataclass
class _Plan:
    """How one kind is drawn: planted (and, for companions, truth) edits per frame."""

    frame: int
    planted: SceneFn
    truth: SceneFn | None = None  # None: the plain truth render


@dataclass
class _Track:
    """World states recorded by a planning pass, slot 0 = ego."""

    actions: np.ndarray  # (T,) int64
    pos: np.ndarray  # (T, N, 2) m
    vel: np.ndarray  # (T, N, 2) m/s
    heading: np.ndarray  # (T, N) rad
    lane: np.ndarray  # (T, N) int lane index
    crashed: np.ndarray  # (T, N) bool

    def pix(self, xy: np.ndarray, ts: slice = slice(None)) -> np.ndarray:
        """World points (..., T', 2) m at frames `ts` -> pixels in the true camera (the ego at EGO_PIXEL)."""
        return (xy - self.pos[ts, 0]) * SCALE + np.array(EGO_PIXEL, float)

    def slots_pix(self, ts: slice = slice(None)) -> np.ndarray:
        """Pixels (T', N, 2) of every slot at frames `ts`, in the true camera."""
        return (self.pos[ts] - self.pos[ts, :1]) * SCALE + np.array(EGO_PIXEL, float)

    def steady(self, s: int, ts: slice = slice(None)) -> bool:
        """Slot s is uncrashed and keeps its lane, on the lane centre, during frames `ts`."""
        y, lane = self.pos[ts, s, 1], self.lane[ts, s]
        return (not self.crashed[ts, s].any() and (lane == lane[0]).all()
                and bool((np.abs(y - LANE_M * lane) < CENTRED_M).all()))


# ------------------------------------------------------------------------------------------------ live rendering
def _clone(v, pos: np.ndarray, heading: float):
    """A shallow copy of vehicle v drawn at pos with heading (never stepped)."""
    c = copy.copy(v)
    c.position, c.heading, c.crashed = np.array(pos, float), float(heading), False
    return c


@contextmanager
def edited(u, scene: Scene) -> Iterator[None]:
    """Apply `scene` to the live simulator for one render, then restore every edited field exactly."""
    slots = E.vehicle_slots(u)
    road, viewer = u.road, u.viewer
    vehicles, observer = road.vehicles, viewer.observer_vehicle
    saved = [(slots[i], slots[i].position, slots[i].heading) for i in scene.move]
    try:
        for i, (pos, heading) in scene.move.items():
            slots[i].position, slots[i].heading = np.array(pos, float), float(heading)
        hidden = {id(slots[i]) for i in scene.hide}
        road.vehicles = [v for v in vehicles if id(v) not in hidden] + [_clone(slots[i], p, h)
                                                                         for i, p, h in scene.add]
        if scene.camera is not None:  # EnvViewer.window_position follows observer_vehicle when set
            viewer.observer_vehicle = SimpleNamespace(position=np.array(scene.camera, float))
        yield
    finally:
        road.vehicles, viewer.observer_vehicle = vehicles, observer
        for v, pos, heading in saved:
            v.position, v.heading = pos, heading


def _draw(env: gym.Env, scene: Scene) -> np.ndarray:
    """HighwayEnv's render (H, W, 3) uint8 of the edited state."""
    with edited(env.unwrapped, scene):
        return E.render(env)


def _live(u, s: int) -> tuple[np.ndarray, float]:
    """Live position (2,) m (a copy) and heading of slot s."""
    v = E.vehicle_slots(u)[s]
    return v.position.copy(), float(v.heading)


# ------------------------------------------------------------------------------------------------ trajectories
def _script(u, traj: str, frames: int, t0: int, action: int | None = None) -> np.ndarray | None:
    """Actions (T,) int64 of a trajectory given the state after reset; None if the lane change has no lane."""
    a = np.full(frames, IDLE, np.int64)
    if traj == "lane":
        lane = u.vehicle.lane_index[2] + (-1 if action == LANE_LEFT else 1)
        if not 0 <= lane < CFG.lanes:
            return None
        a[t0 - 1] = action
    elif traj == "speed":
        a[t0 - 1] = FASTER if u.vehicle.target_speed < max(CFG.ego_speeds) - 1e-6 else SLOWER
    return a


def _record(u) -> tuple[np.ndarray, ...]:
    """World state of every slot: pos (N, 2), vel (N, 2), heading (N,), lane (N,), crashed (N,)."""
    vs = E.vehicle_slots(u)
    return (np.array([v.position for v in vs], float), np.array([v.velocity for v in vs], float),
            np.array([v.heading for v in vs], float), np.array([v.lane_index[2] for v in vs], np.int64),
            np.array([v.crashed for v in vs], bool))


def _plan_pass(env: gym.Env, seed: int, traj: str, frames: int, t0: int, action: int | None = None
               ) -> _Track | None:
    """Step a trajectory without rendering and record its states; None if the ego crashes or the script fails."""
    E.reset(env, seed)
    u = env.unwrapped
    actions = _script(u, traj, frames, t0, action)
    if actions is None:
        return None
    rows = [_record(u)]
    for t in range(frames - 1):
        if E.step(env, actions[t]):
            return None
        rows.append(_record(u))
    return _Track(actions, *(np.stack(c) for c in zip(*rows)))


def _render_pass(env: gym.Env, seed: int, tr: _Track, plans: dict[str, _Plan]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Replay the trajectory; per kind truth and planted frames (T, H, W, 3) uint8, and states (T, N, F)."""
    E.reset(env, seed)
    u = env.unwrapped
    truth, planted, states = {k: [] for k in plans}, {k: [] for k in plans}, []
    for t in range(len(tr.actions)):
        if t:
            E.step(env, tr.actions[t - 1])
        if not np.array_equal(_record(u)[0], tr.pos[t]):
            raise RuntimeError(f"seed {seed}: the rendering pass diverged from the planning pass at frame {t}")
        scenes = {k: p.planted(u, t) for k, p in plans.items()}
        drawn = {k: _draw(env, s) for k, s in scenes.items() if s is not None}
        own = {k: _draw(env, p.truth(u, t)) for k, p in plans.items() if p.truth is not None}
        plain = E.render(env)  # last: vehicle_states reads the camera of the latest render
        states.append(E.vehicle_states(u)[0])
        for k in plans:
            truth[k].append(own.get(k, plain))
            planted[k].append(drawn.get(k, truth[k][-1]))
    return ({k: np.stack(v) for k, v in truth.items()}, {k: np.stack(v) for k, v in planted.items()},
            np.stack(states))


# ------------------------------------------------------------------------------------------------ geometry
def _inside(p: np.ndarray) -> np.ndarray:
    """Pixel centres (..., 2) wholly in view and EDGE_PX from the left / right edges."""
    return ((p[..., 0] >= EDGE_PX) & (p[..., 0] <= CFG.screen_width - EDGE_PX)
            & (p[..., 1] >= 6) & (p[..., 1] <= CFG.screen_height - 6))


def _near(p: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distance (..., T') px from points (..., T', 2) to the nearest of others (T', M, 2)."""
    return np.linalg.norm(p[..., None, :] - others, axis=-1).min(-1)


def _nearest(tr: _Track, ts: slice) -> np.ndarray:
    """(T', N) px from each slot to its nearest other slot, frames `ts`."""
    p = tr.slots_pix(ts)  # (T', N, 2)
    d = np.linalg.norm(p[:, :, None] - p[:, None], axis=-1)
    d[:, np.arange(d.shape[1]), np.arange(d.shape[1])] = np.inf
    return d.min(-1)


def _others(tr: _Track, s: int, ts: slice) -> np.ndarray:
    """Pixels (T', N-1, 2) of every slot but s, frames `ts`."""
    return np.delete(tr.slots_pix(ts), s, axis=1)


def _ego_clear(tr: _Track, drawn: np.ndarray, ts: slice) -> bool:
    """An ego sprite drawn at world points (T', 2) touches no other car during frames `ts`."""
    d = np.abs(tr.pos[ts, 1:] - drawn[:, None]) * SCALE  # (T', N-1, 2) px
    return bool(((d[..., 0] > CLEAR_PX[0]) | (d[..., 1] > CLEAR_PX[1])).all())


def _swapped(host: np.ndarray, d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Host and companion (host + d) rotated by 60 deg * k (at most 180) about their midpoint: (2,) m each."""
    a = np.deg2rad(60.0 * min(k, 3))
    half = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ (d / 2)
    mid = host + d / 2
    return mid - half, mid + half


# ------------------------------------------------------------------------------------------------ planners
def _vanish(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """Hide an isolated car from t0 on."""
    ts, near = slice(t0 - 1, t0 + 2), _nearest(tr, slice(t0 - 1, t0 + 1))  # (2, N)
    inside = _inside(tr.slots_pix(ts)).all(0)  # (N,)
    ok = [s for s in range(1, tr.pos.shape[1])
          if inside[s] and (near[:, s] >= GAP_PX).all() and not tr.crashed[ts, s].any()]
    if not ok:
        return None
    s = int(rng.choice(ok))
    return _Plan(t0, lambda u, t: Scene(hide=(s,)) if t >= t0 else None)


def _popup(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """Add a car, from t0 on, moving as a host car shifted by (dx, 0 or +-1 lane) into a free spot."""
    ts, found = slice(t0, None), []
    others = tr.slots_pix(ts)  # (T', N, 2)
    for s in range(1, tr.pos.shape[1]):
        if not tr.steady(s, ts):
            continue
        for dy in (-LANE_M, 0.0, LANE_M):
            if not 0 <= tr.lane[t0, s] + int(dy / LANE_M) < CFG.lanes:
                continue
            offs = np.stack([POPUP_DX_M, np.full_like(POPUP_DX_M, dy)], 1)  # (G, 2)
            p = tr.pix(tr.pos[ts, s] + offs[:, None], ts)  # (G, T', 2)
            ok = _inside(p).all(1) & (_near(p, others) >= GAP_PX).all(1)
            found += [(s, offs[g]) for g in np.nonzero(ok)[0]]
    if not found:
        return None
    s, off = found[int(rng.integers(len(found)))]

    def planted(u, t: int) -> Scene | None:
        pos, h = _live(u, s)
        return Scene(add=[(s, pos + off, h)]) if t >= t0 else None
    return _Plan(t0, planted)


def _free(tr: _Track, p: np.ndarray, others: np.ndarray, ts: slice) -> bool:
    """World points (T', 2) at frames `ts` are in view, EDGE_PX from the edges and GAP_PX from others (T', M, 2)."""
    q = tr.pix(p, ts)
    return bool(_inside(q).all() and (_near(q, others) >= GAP_PX).all())


def _pair(tr: _Track, rng: np.random.Generator, t0: int | None = None) -> tuple[int, np.ndarray] | None:
    """A host slot and companion offset (2,) m: both isolated and in view all clip (and, given t0, swapped too)."""
    found, T = [], len(tr.pos)
    for s in range(1, tr.pos.shape[1]):
        if not tr.steady(s):
            continue
        others, host = _others(tr, s, slice(None)), tr.pos[:, s]  # (T, N-1, 2) px, (T, 2) m
        for sx, sy in ((1, -1), (1, 1), (-1, -1), (-1, 1)):
            d = PAIR_M * (sx, sy)
            if not 0 <= tr.lane[0, s] + sy < CFG.lanes or not all(_free(tr, p, others, slice(None))
                                                                  for p in (host, host + d)):
                continue
            if t0 is not None:  # the rotated pair must stay clear of the other cars too
                rot = np.array([_swapped(host[t], d, t - t0 + 1) for t in range(t0, T)])  # (T', 2, 2)
                if not all(_free(tr, rot[:, j], others[t0:], slice(t0, None)) for j in (0, 1)):
                    continue
            found.append((s, d))
    return found[int(rng.integers(len(found)))] if found else None


def _companion(s: int, d: np.ndarray) -> SceneFn:
    """Truth edits: the companion drawn at host + d."""
    def scene(u, t: int) -> Scene:
        pos, h = _live(u, s)
        return Scene(add=[(s, pos + d, h)])
    return scene


def _merge(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """A close pair whose companion moves onto its host (one blob) from t0 on.

    HighwayEnv outlines every car in dark grey, so a companion drawn over its host with a larger offset (say 6, 4 px)
    leaves the host's uncovered body as a second blob cut off by that outline; at 1 px the host shows only outline.
    """
    pair = _pair(tr, rng)
    if pair is None:
        return None
    s, d = pair
    m = MERGED_PX * np.array([1.0, np.sign(d[1])]) / SCALE

    def planted(u, t: int) -> Scene | None:
        pos, h = _live(u, s)
        return Scene(add=[(s, pos + m, h)]) if t >= t0 else None
    return _Plan(t0, planted, _companion(s, d))


def _swap(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """A close pair rotated about its midpoint by 60, 120, 180 deg at t0, t0 + 1, t0 + 2 (then kept swapped)."""
    pair = _pair(tr, rng, t0)
    if pair is None:
        return None
    s, d = pair

    def planted(u, t: int) -> Scene | None:
        if t < t0:
            return None
        pos, h = _live(u, s)
        a, b = _swapped(pos, d, t - t0 + 1)
        return Scene(move={s: (a, h)}, add=[(s, b, h)])
    return _Plan(t0, planted, _companion(s, d))


def _jitter(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """A negative: a close pair in both renders; planted cars offset by -1, 0 or 1 px in x and y per frame."""
    pair = _pair(tr, rng)
    if pair is None:
        return None
    s, d = pair
    T, N = tr.pos.shape[:2]
    off = rng.integers(-1, 2, size=(T, N + 1, 2)) / SCALE  # (T, N + 1, 2) m; slot N = the companion

    def planted(u, t: int) -> Scene:
        live = {i: _live(u, i) for i in range(1, N)}
        return Scene(move={i: (p + off[t, i], h) for i, (p, h) in live.items()},
                      add=[(s, live[s][0] + d + off[t, N], live[s][1])])
    return _Plan(-1, planted, _companion(s, d))


def _ego_held(tr: _Track, t0: int, camera: bool) -> _Plan | None:
    """The ego drawn at its frame-(t0 - 1) y and heading from t0 on; the camera on it or (camera) on the true ego."""
    ts = slice(t0, None)
    y, h = tr.pos[t0 - 1, 0, 1], tr.heading[t0 - 1, 0]
    drawn = np.stack([tr.pos[ts, 0, 0], np.full(len(tr.pos[ts]), y)], 1)  # (T', 2)
    if tr.lane[-1, 0] == tr.lane[t0 - 1, 0] or not _ego_clear(tr, drawn, ts):
        return None

    def planted(u, t: int) -> Scene | None:
        if t < t0:
            return None
        pos = _live(u, 0)[0]
        return Scene(move={0: (np.array([pos[0], y]), h)}, camera=pos if camera else None)
    return _Plan(t0, planted)


def _unrequested(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """The ego (and camera) shifted by 0.25, 0.5, 0.75, 1 lane at t0..t0 + 3 towards a free lane, 1 lane after."""
    ts = slice(t0, None)
    k = np.minimum(np.arange(1, len(tr.pos) - t0 + 1) * 0.25, 1.0)  # (T',) lanes
    for sign in rng.permutation([-1, 1]):
        lane = tr.lane[t0, 0] + sign
        drawn = tr.pos[ts, 0] + np.stack([0 * k, sign * LANE_M * k], 1)  # (T', 2) m
        target = np.abs(tr.pos[ts, 1:, 1] - LANE_M * lane) < LANE_M / 2  # (T', N-1) cars in the target lane
        dx = np.abs(tr.pos[ts, 1:, 0] - tr.pos[ts, :1, 0]) * SCALE
        if 0 <= lane < CFG.lanes and not (target & (dx < FREE_LANE_PX)).any() and _ego_clear(tr, drawn, ts):
            return _Plan(t0, lambda u, t, sign=sign: _shifted(u, t, t0, sign))
    return None


def _shifted(u, t: int, t0: int, sign: int) -> Scene | None:
    """Unrequested lane change edits at frame t."""
    if t < t0:
        return None
    pos, h = _live(u, 0)
    return Scene(move={0: (pos + (0.0, sign * LANE_M * min(0.25 * (t - t0 + 1), 1.0)), h)})


def _speed_ignored(tr: _Track, t0: int, rng: np.random.Generator) -> _Plan | None:
    """The ego (and camera) drawn at the frame-(t0 - 1) speed from t0 on, ignoring FASTER / SLOWER."""
    ts = slice(t0, None)
    speed = np.linalg.norm(tr.vel[:, 0], axis=-1)  # (T,)
    if not (np.abs(speed[t0:t0 + 5] - speed[t0 - 1]) > 1.0).any():
        return None
    x0, vx = tr.pos[t0 - 1, 0, 0], tr.vel[t0 - 1, 0, 0]
    xs = x0 + vx * np.arange(1, len(tr.pos) - t0 + 1) / CFG.policy_hz  # (T',) m
    if not _ego_clear(tr, np.stack([xs, tr.pos[ts, 0, 1]], 1), ts):
        return None

    def planted(u, t: int) -> Scene | None:
        if t < t0:
            return None
        pos, h = _live(u, 0)
        return Scene(move={0: (np.array([xs[t - t0], pos[1]]), h)})
    return _Plan(t0, planted)


PLANNERS: dict[str, Callable[[_Track, int, np.random.Generator], _Plan | None]] = {
    "vanish": _vanish, "popup": _popup, "merge": _merge, "swap": _swap, "jitter": _jitter,
    "stuck": lambda tr, t0, rng: _ego_held(tr, t0, camera=False),
    "stuck_sprite": lambda tr, t0, rng: _ego_held(tr, t0, camera=True),
    "unrequested": _unrequested, "speed_ignored": _speed_ignored,
    "clean": lambda tr, t0, rng: _Plan(-1, lambda u, t: None),
}


# ------------------------------------------------------------------------------------------------ public API
def _plans(tr: _Track, kinds: list[str], seed: int, t0: int) -> dict[str, _Plan]:
    """The plans that fit this trajectory (each kind with its own seeded generator)."""
    out = {k: PLANNERS[k](tr, t0, np.random.default_rng([seed, KINDS.index(k)])) for k in kinds}
    return {k: p for k, p in out.items() if p is not None}


def _trajectory(env: gym.Env, seed: int, traj: str, kinds: list[str], frames: int, t0: int
                ) -> tuple[_Track, dict[str, _Plan]] | None:
    """Plan one trajectory (the lane change tries both directions, in seeded order); None if nothing fits."""
    choices = [None] if traj != "lane" else np.random.default_rng([seed, len(KINDS)]).permutation([LANE_LEFT,
                                                                                                    LANE_RIGHT])
    for action in choices:
        tr = _plan_pass(env, seed, traj, frames, t0, None if action is None else int(action))
        plans = _plans(tr, kinds, seed, t0) if tr is not None else {}
        if plans:
            return tr, plans
    return None


@functools.lru_cache(maxsize=1)
def _env() -> gym.Env:
    """One headless env, reused (reset with each seed); closing it would pygame.quit() every other viewer."""
    return E.make_env(CFG)


def render_clips(seed: int, kinds: Sequence[str] = KINDS, frames: int = 16, t0: int = 6) -> dict[str, Clip]:
    """Clips (kind -> Clip) of the kinds that could be planted for this seed; deterministic given seed.

    At most three trajectories are simulated (idle, lane, speed), only those the kinds need; a trajectory whose ego
    crashes, or whose scene has no suitable car or free lane for a kind, leaves those kinds out.
    """
    if unknown := set(kinds) - set(KINDS):
        raise ValueError(f"unknown kinds {sorted(unknown)}; choose from {KINDS}")
    if not 1 <= t0 < frames:
        raise ValueError(f"need 1 <= t0 < frames, got t0={t0}, frames={frames}")
    env, clips = _env(), {}
    for traj in ("idle", "lane", "speed"):
        todo = [k for k in KINDS if k in kinds and TRAJECTORY[k] == traj]
        planned = _trajectory(env, seed, traj, todo, frames, t0) if todo else None
        if planned is None:
            continue
        tr, plans = planned
        truth, planted, states = _render_pass(env, seed, tr, plans)
        for k, p in plans.items():
            clips[k] = Clip(k, seed, truth[k], planted[k], tr.actions.copy(), states.copy(), p.frame, LABELS[k])
    return clips


def flagged(clip: Clip, cfg: P.PhysicsConfig = P.PhysicsConfig()) -> pd.DataFrame:
    """The events the physics metrics report on a planted clip, judged against its truth under its actions."""
    return P.events(clip.planted[None], clip.truth[None], clip.actions[None], cfg)


def caught(clip: Clip, events: pd.DataFrame, tolerance: int = 1) -> pd.DataFrame:
    """The reported events that are the planted failure: its label, within `tolerance` frames of the planted frame."""
    return events[(events["type"] == clip.label) & ((events["frame"] - clip.frame).abs() <= tolerance)]


def detection_table(seeds: Sequence[int], cfg: P.PhysicsConfig = P.PhysicsConfig(), kinds: Sequence[str] = KINDS,
                    frames: int = 16, t0: int = 6, progress: bool = False) -> pd.DataFrame:
    """Per planted kind over the seeds: clips rendered, failures flagged with their label within one frame of the
    planted frame, the share, the mean frame error, and the other events reported on those clips (for the
    negatives, every event is a false alarm)."""
    from tqdm.auto import tqdm

    rows = {k: {"label": LABELS[k] or "(none)", "clips": 0, "flagged": 0, "frame_error": [], "other_events": 0,
                "other_types": {}} for k in kinds}
    for seed in tqdm(list(seeds), desc="planted scenes", disable=not progress):
        for k, c in render_clips(seed, kinds, frames, t0).items():
            ev, r = flagged(c, cfg), rows[k]
            hit = caught(c, ev) if c.label else ev.iloc[:0]
            r["clips"] += 1
            r["flagged"] += bool(len(hit))
            r["frame_error"] += [int(hit["frame"].iloc[0]) - c.frame] if len(hit) else []
            rest = ev.drop(hit.index[:1])
            r["other_events"] += len(rest)
            for t in rest["type"]:
                r["other_types"][t] = r["other_types"].get(t, 0) + 1
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["share"] = np.where(out["label"] == "(none)", np.nan, out["flagged"] / out["clips"].clip(lower=1))
    out["frame_error"] = [float(np.mean(np.abs(e))) if e else np.nan for e in out["frame_error"]]
    out["other_types"] = [", ".join(f"{t} {n}" for t, n in sorted(d.items())) for d in out["other_types"]]
    return out[["label", "clips", "flagged", "share", "frame_error", "other_events", "other_types"]]
