"""Planted failures drawn by HighwayEnv's own renderer (planted.py): the truth is an unedited run, every edit is
undone, and each kind shows its failure to a plain blob detector and to the road's lane marks."""

from __future__ import annotations

import numpy as np
import pytest

from piwm_lib import env as E
from piwm_lib import planted as P
from piwm_lib.bev import EGO_PIXEL
from piwm_lib.physics import find_objects

SEEDS = (0, 1)  # every kind can be planted for both


@pytest.fixture(scope="module")
def clips() -> dict[int, dict[str, P.Clip]]:
    """All kinds for each test seed, rendered once."""
    return {s: P.render_clips(s) for s in SEEDS}


def blobs(frames: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Other-vehicle blob centres per frame (list of (K_t, 2) px) and the ego blob centre (T, 2) of (T, H, W, 3)."""
    obj = find_objects(frames[None])
    others = obj.others[0]  # (T, K, 2), NaN-padded
    return [o[~np.isnan(o[:, 0])] for o in others], obj.ego[0]


def counts(frames: np.ndarray) -> np.ndarray:
    """Other-vehicle blobs per frame (T,)."""
    return np.array([len(b) for b in blobs(frames)[0]])


def lane_rows(frame: np.ndarray) -> np.ndarray:
    """(H,) bool: rows more than 60% lane-mark white (the solid road edges)."""
    return (frame == 255).all(-1).mean(1) > 0.6


def row_shift(a: np.ndarray, b: np.ndarray, max_px: int = 10) -> int:
    """The vertical shift (px, |shift| <= max_px) that best maps the lane-mark rows of frame a onto those of b."""
    ra, rb = lane_rows(a), lane_rows(b)
    H = len(ra)
    score = [sum(ra[r] and 0 <= r + s < H and rb[r + s] for r in range(H)) for s in range(-max_px, max_px + 1)]
    assert max(score) > 0, "no lane-mark rows in common"
    return int(np.argmax(score)) - max_px


def lane_shift(frames: np.ndarray, t1: int, t2: int) -> int:
    """How far (px) the lane marks move from frame t1 to t2, summed frame by frame: lanes repeat every 22 px, so
    only steps below half a lane (<= 10 px; a lane change moves them ~5 px a frame) are unambiguous."""
    return sum(row_shift(frames[t], frames[t + 1]) for t in range(t1, t2))


def max_offset(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance (px) from a centre of a (K, 2) to the nearest centre of b (M, 2); 0 if a is empty."""
    return float(np.linalg.norm(a[:, None] - b[None], axis=-1).min(1).max()) if len(a) else 0.0


def interior(c: np.ndarray, margin: float, width: int = 600) -> np.ndarray:
    """Centres (K, 2) at least `margin` px from the left / right image edges."""
    return c[(c[:, 0] >= margin) & (c[:, 0] <= width - margin)]


@pytest.mark.parametrize("seed", SEEDS)
def test_all_kinds_and_fields(clips, seed):
    for kind in P.KINDS:
        c = clips[seed][kind]
        T = len(c.actions)
        assert c.kind == kind and c.seed == seed and c.label == P.LABELS[kind]
        assert c.truth.shape == c.planted.shape == (T, 150, 600, 3) and c.truth.dtype == c.planted.dtype == np.uint8
        assert c.actions.dtype == np.int64 and c.states.shape[::2] == (T, len(E.STATE_FIELDS))
        assert c.frame == (-1 if kind in ("clean", "jitter") else 6)
        assert (c.truth.reshape(T, -1, 3).std(1) > 10).all() and (c.planted.reshape(T, -1, 3).std(1) > 10).all()
        ego = blobs(c.truth)[1]
        assert np.abs(ego - EGO_PIXEL).max() < 4.0, kind  # (178.5, 74.5); a turning sprite ~2.6 px off
        assert (c.states[:, 0, E.STATE_FIELDS.index("crashed")] == 0).all()


def test_truth_is_an_unedited_run(clips):
    seed = SEEDS[0]
    clean = clips[seed]["clean"]
    env = E.make_env(E.EnvConfig())
    frames = [E.reset(env, seed)]
    for a in clean.actions[:-1]:
        E.step(env, a)
        frames.append(E.render(env))
    frames = np.stack(frames)
    assert np.array_equal(frames, clean.truth) and np.array_equal(frames, clips[seed]["vanish"].truth)


def test_edits_are_undone():
    env = E.make_env(E.EnvConfig())
    E.reset(env, 3)
    u = env.unwrapped
    slots = E.vehicle_slots(u)
    before = [(v.position, v.position.copy(), v.heading) for v in slots]
    vehicles = u.road.vehicles
    scene = P.Scene(hide=(1,), move={0: (np.array([0.0, 0.0]), 0.3), 2: (np.array([1.0, 2.0]), -0.2)},
                    add=[(3, slots[3].position + (5.0, 4.0), 0.0)], camera=slots[0].position.copy())
    with P.edited(u, scene):
        assert len(u.road.vehicles) == len(vehicles) and slots[1] not in u.road.vehicles
        E.render(env)
    assert u.road.vehicles is vehicles and u.viewer.observer_vehicle is None
    for v, (obj, val, h) in zip(slots, before):
        assert v.position is obj and np.array_equal(v.position, val) and v.heading == h


@pytest.mark.parametrize("seed", SEEDS)
def test_vanish_popup_merge(clips, seed):
    t0 = 6
    for kind, delta, every in (("vanish", -1, False), ("popup", 1, True), ("merge", -1, False)):
        c = clips[seed][kind]
        nt, npl = counts(c.truth), counts(c.planted)
        assert np.array_equal(nt[:t0], npl[:t0]) and np.array_equal(c.truth[:t0], c.planted[:t0]), kind
        assert npl[t0] == nt[t0] + delta, kind
        if every:
            assert (npl[t0:] == nt[t0:] + delta).all(), kind


@pytest.mark.parametrize("seed", SEEDS)
def test_swap(clips, seed):
    c, t0 = clips[seed]["swap"], 6
    bt, bp = blobs(c.truth)[0], blobs(c.planted)[0]
    assert [len(b) for b in bt] == [len(b) for b in bp]
    for t in range(len(bt)):
        moved = max(max_offset(bp[t], bt[t]), max_offset(bt[t], bp[t]))
        assert (moved > 5.0) if t0 <= t <= t0 + 1 else (moved < 0.5), t


@pytest.mark.parametrize("seed", SEEDS)
def test_stuck_and_stuck_sprite(clips, seed):
    t0 = 6
    stuck, sprite = clips[seed]["stuck"], clips[seed]["stuck_sprite"]
    assert stuck.actions[t0 - 1] in (0, 2) and np.array_equal(stuck.truth, sprite.truth)
    assert 15 <= abs(lane_shift(stuck.truth, t0 - 1, t0 + 5)) <= 25
    assert lane_shift(stuck.planted, t0 - 1, t0 + 5) == 0
    assert np.abs(blobs(stuck.planted)[1] - EGO_PIXEL).max() < 2.0  # the camera follows the held ego
    assert abs(blobs(sprite.planted)[1][t0 + 4, 1] - EGO_PIXEL[1]) > 10
    assert all((lane_rows(a) == lane_rows(b)).all() for a, b in zip(sprite.truth, sprite.planted))


@pytest.mark.parametrize("seed", SEEDS)
def test_unrequested(clips, seed):
    c, t0 = clips[seed]["unrequested"], 6
    assert (c.actions == E.IDLE).all()
    assert lane_shift(c.truth, t0 - 1, len(c.truth) - 1) == 0
    assert 20 <= abs(lane_shift(c.planted, t0 - 1, len(c.planted) - 1)) <= 24
    assert np.array_equal(c.truth[:t0], c.planted[:t0])


@pytest.mark.parametrize("seed", SEEDS)
def test_speed_ignored(clips, seed):
    c, t0 = clips[seed]["speed_ignored"], 6
    assert c.actions[t0 - 1] in (3, 4)
    same = [np.array_equal(a, b) for a, b in zip(c.truth, c.planted)]
    assert all(same[:t0]) and not any(same[t0:])


@pytest.mark.parametrize("seed", SEEDS)
def test_negatives(clips, seed):
    clean, jitter = clips[seed]["clean"], clips[seed]["jitter"]
    assert np.array_equal(clean.truth, clean.planted)
    bt, bp = blobs(jitter.truth)[0], blobs(jitter.planted)[0]
    for t in range(len(bt)):  # cars at the left / right edge may show 1 px more or less, or drop below min_pixels
        assert max_offset(interior(bp[t], 20), bt[t]) <= 1.6 and max_offset(interior(bt[t], 22), bp[t]) <= 1.6, t
        for b in (bt[t], bp[t]):  # the close pair: two blobs ~32 px apart
            d = np.linalg.norm(b[:, None] - b[None], axis=-1)
            assert ((d > 28) & (d < 36)).any(), t


def test_deterministic(clips):
    seed = SEEDS[0]
    again = P.render_clips(seed)
    assert again.keys() == clips[seed].keys()
    for k, c in again.items():
        old = clips[seed][k]
        for f in ("truth", "planted", "actions", "states"):
            assert np.array_equal(getattr(c, f), getattr(old, f)), (k, f)
        assert (c.frame, c.label) == (old.frame, old.label)


def test_subset_and_errors():
    clips = P.render_clips(2, kinds=("clean",), frames=8, t0=3)
    assert list(clips) == ["clean"] and clips["clean"].truth.shape[0] == 8
    with pytest.raises(ValueError):
        P.render_clips(0, kinds=("nope",))
    with pytest.raises(ValueError):
        P.render_clips(0, t0=0)


def test_the_metrics_flag_every_planted_failure_and_nothing_else():
    """The physics metrics (physics.events) on >= 20 rendered clips per kind, different seeds: every planted failure
    is reported with its label within one frame of the planted frame, and nothing else is reported, on the failure
    clips or on the negatives (clean truth, 1-px jitter of every car, close pairs included)."""
    need, seen, missed, extra = 20, {k: 0 for k in P.KINDS}, [], []
    seed = 0
    while min(seen.values()) < need and seed < 40:
        for k, c in P.render_clips(seed).items():
            ev = P.flagged(c)
            hit = P.caught(c, ev) if c.label else ev.iloc[:0]
            seen[k] += 1
            if c.label and not len(hit):
                missed.append((k, seed, list(zip(ev["type"], ev["frame"]))))
            if len(ev) > len(hit[:1]):
                extra.append((k, seed, list(zip(ev["type"], ev["frame"]))))
        seed += 1
    assert min(seen.values()) >= need, seen
    assert not missed and not extra, (missed, extra)
