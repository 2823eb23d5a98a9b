"""Planted failures for validating the physical-consistency proxies (physics.py): each function takes a real
ground-truth sequence (T, H, W, 3) uint8 with its states (T, N, F) and returns a copy with one failure drawn in
(a vehicle deleted, spawned, merged into another, two vehicles swapped, the ego frozen, positions jittered).

Cars are moved as pixel patches: a box of CAR_HALF around a vehicle's (px, py) is cut out (filled with the road
colour) and pasted elsewhere. Boxes are axis-aligned, so pick vehicles that drive straight (all but lane changers).
"""

from __future__ import annotations

import numpy as np

from .bev import ROAD_RGB, STATE_FIELDS, in_view

CAR_HALF = (14, 6)  # half box (x, y) px around (px, py): the drawn car is 27 x 11 px, outline included
PX, PY = STATE_FIELDS.index("px"), STATE_FIELDS.index("py")


def _box(x: float, y: float) -> tuple[slice, slice]:
    cx, cy = int(x), int(y)
    return slice(max(cy - CAR_HALF[1], 0), cy + CAR_HALF[1]), slice(max(cx - CAR_HALF[0], 0), cx + CAR_HALF[0])


def patch(frame: np.ndarray, x: float, y: float) -> np.ndarray:
    """The (12, 28, 3) pixels of the car centred at (x, y)."""
    rows, cols = _box(x, y)
    return frame[rows, cols].copy()


def erase(frame: np.ndarray, x: float, y: float) -> None:
    """Paint the car box at (x, y) with the road colour, in place."""
    rows, cols = _box(x, y)
    frame[rows, cols] = ROAD_RGB


def paste(frame: np.ndarray, car: np.ndarray, x: float, y: float) -> None:
    """Draw a car patch centred at (x, y), in place (clipped at the image edges)."""
    rows, cols = _box(x, y)
    h, w = frame[rows, cols].shape[:2]
    frame[rows, cols] = car[:h, :w]


def centres(states: np.ndarray) -> np.ndarray:
    """(T, N, F) states -> (T, N, 2) pixel centres (px, py) of every slot (0 = ego)."""
    return states[..., [PX, PY]]


def pick_vehicle(states: np.ndarray, width: int, height: int, margin: float = 60.0) -> int:
    """A state slot (>= 1) in view and at least `margin` px from the left/right edges in every frame, or -1."""
    xy = centres(states)[:, 1:]  # (T, M, 2)
    ok = in_view(states[:, 1:], width, height).all(0) & (xy[..., 0] > margin).all(0) & \
        (xy[..., 0] < width - margin).all(0)
    idx = np.nonzero(ok)[0]
    return int(idx[0]) + 1 if len(idx) else -1


def delete(frames: np.ndarray, states: np.ndarray, slot: int, t: int) -> np.ndarray:
    """TEC 'vanish': vehicle `slot` disappears from frame t on."""
    out = frames.copy()
    for k in range(t, len(out)):
        erase(out[k], *centres(states)[k, slot])
    return out


def spawn(frames: np.ndarray, states: np.ndarray, slot: int, t: int, x: float, y: float) -> np.ndarray:
    """TEC 'pop-up': a copy of vehicle `slot` appears at (x, y) at frame t and drives with it (fixed offset)."""
    out = frames.copy()
    car = patch(frames[t], *centres(states)[t, slot])
    dx, dy = np.array([x, y]) - centres(states)[t, slot]
    for k in range(t, len(out)):
        sx, sy = centres(states)[k, slot]
        paste(out[k], car, sx + dx, sy + dy)
    return out


def merge(frames: np.ndarray, states: np.ndarray, slot: int, t: int, gap: float = 24.0,
          overlap: float = 14.0) -> np.ndarray:
    """IEC 'merge': a companion drives `gap` px behind vehicle `slot` (a close pair) and from frame t on is drawn
    `overlap` px behind it, touching it: two cars become one blob."""
    out = frames.copy()
    car = patch(frames[0], *centres(states)[0, slot])
    for k in range(len(out)):
        x, y = centres(states)[k, slot]
        paste(out[k], car, x - (gap if k < t else overlap), y)
        paste(out[k], patch(frames[k], x, y), x, y)  # the original car stays on top
    return out


def swap(frames: np.ndarray, states: np.ndarray, a: int, b: int, t: int) -> np.ndarray:
    """IEC 'swap': from frame t on, vehicles a and b exchange their longitudinal positions, each in its own lane."""
    out = frames.copy()
    xy = centres(states)
    car_a, car_b = patch(frames[t], *xy[t, a]), patch(frames[t], *xy[t, b])
    for k in range(t, len(out)):
        erase(out[k], *xy[k, a])
        erase(out[k], *xy[k, b])
    for k in range(t, len(out)):
        paste(out[k], car_a, xy[k, b, 0], xy[k, a, 1])
        paste(out[k], car_b, xy[k, a, 0], xy[k, b, 1])
    return out


def freeze_ego(frames: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
    """KIR 'stuck': from frame t on the ego is drawn where it was at frame t."""
    out = frames.copy()
    xy = centres(states)[:, 0]
    car = patch(frames[t], *xy[t])
    for k in range(t, len(out)):
        erase(out[k], *xy[k])
        paste(out[k], car, *xy[t])
    return out


def shift_ego(frames: np.ndarray, states: np.ndarray, t: int, dy_per_frame: float, frames_moving: int = 4,
              ) -> tuple[np.ndarray, np.ndarray]:
    """A lane change drawn into a sequence: from frame t the ego moves dy_per_frame px per frame for frames_moving
    frames, then stays in the new lane. Returns the frames and the states with the ego's py moved accordingly."""
    out, st = frames.copy(), states.copy()
    xy = centres(states)[:, 0]
    car = patch(frames[t], *xy[t])
    for k in range(t, len(out)):
        dy = dy_per_frame * min(k - t + 1, frames_moving)
        erase(out[k], *xy[k])
        paste(out[k], car, xy[k, 0], xy[k, 1] + dy)
        st[k, 0, PY] += dy
    return out, st


def jitter(frames: np.ndarray, states: np.ndarray, sigma_px: float, seed: int = 0) -> np.ndarray:
    """Positions jittered: every other vehicle wholly in view is redrawn off by N(0, sigma_px^2) px per axis, per
    frame (rounded), the ego untouched."""
    out = frames.copy()
    rng = np.random.default_rng(seed)
    xy = centres(states)
    seen = in_view(states, frames.shape[2], frames.shape[1])  # (T, N)
    seen[:, 0] = False
    for k, n in zip(*np.nonzero(seen)):
        car = patch(frames[k], *xy[k, n])
        erase(out[k], *xy[k, n])
        dx, dy = np.round(rng.normal(0, sigma_px, 2))
        paste(out[k], car, xy[k, n, 0] + dx, xy[k, n, 1] + dy)
    return out
