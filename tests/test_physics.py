"""Physical-consistency metrics: hand-computed events on synthetic tracks and road readings, and perfect scores for
ground truth. Failures drawn by HighwayEnv's own renderer are tested in tests/test_planted.py."""

from __future__ import annotations

import numpy as np
import pytest

from piwm_lib import egomotion as E
from piwm_lib import physics as P
from piwm_lib.bev import STATE_FIELDS
from piwm_lib.dataset import WindowDataset
from piwm_lib.env import ACTIONS
from piwm_lib.tracking import assign, track

CFG = P.PhysicsConfig()
LEFT, FASTER, IDLE = ACTIONS.index("LANE_LEFT"), ACTIONS.index("FASTER"), ACTIONS.index("IDLE")


def scene(frames: list[list[list[float]]], ego: list[list[float]] | None = None, lateral: list[float] | None = None,
          speed: list[float] | None = None, width: int = 600) -> P.Scene:
    """One sequence from per-frame lists of car centres (padded with NaN); the ego at (180, 75), the road steady."""
    T = len(frames)
    others = np.full((1, T, max(1, max(len(f) for f in frames)), 2), np.nan)  # (1, T, K, 2)
    for t, f in enumerate(frames):
        others[0, t, :len(f)] = np.array(f, float).reshape(-1, 2)
    e = np.array(ego if ego is not None else [[180.0, 75.0]] * T, float)[None]
    lat = np.array(lateral if lateral is not None else [55.0] * T, float)[None]
    v = np.array(speed if speed is not None else [25.0] * (T - 1), float)[None]
    return P.Scene(P.Objects(others, e, width), track(others, CFG.track_radius_px), lat, v)


def idle(T: int) -> np.ndarray:
    return np.full((1, T), IDLE)


def types(ev) -> list[tuple[str, int]]:
    return list(zip(ev["type"], ev["frame"]))


def test_optimal_assignment_beats_nearest_neighbour():
    # b0 is nearest to both a0 and a1; the optimal pairing gives it to a1 and b1 to a0 (total 4 + 3 < 1 + 8)
    a = np.array([[0.0, 0.0], [10.0, 0.0]])
    b = np.array([[9.0, 0.0], [4.0, 0.0]])
    assert assign(a, b, 20).tolist() == [1, 0]
    assert assign(a, b, 3.5).tolist() == [-1, 0]  # a0's only partner (4 px) is beyond the radius


def test_vanish_and_popup_away_from_borders_only():
    s = scene([[[100, 50], [300, 80]],
               [[105, 50], [305, 80], [590, 20]],  # a car entering at the right border: legitimate
               [[110, 50], [595, 20]],  # the car at x 305 vanished mid-image
               [[115, 50], [598, 20], [400, 100]]])  # one popped up at x 400
    assert types(P.events(s, s, idle(4))) == [("vanish", 2), ("popup", 3)]
    sc = P.scores(s, s, idle(4))
    assert sc["vanish_per_100"][0] == pytest.approx(100 / 3) and sc["popup_per_100"][0] == pytest.approx(100 / 3)
    n_true = 2 + 1 + 2 + 3  # generated frames 1-3 (frame 0 is the real one): cars away from the borders, the ego's 3
    assert sc["tec"][0] == pytest.approx(1 - 2 / (2 * n_true))
    assert np.isnan(sc["kir"][0]) and sc["wo"][0] == pytest.approx((sc["tec"][0] + 1) / 2)  # no command: no KIR


def test_merge_is_one_iec_event_not_also_a_vanish():
    truth = scene([[[200, 50], [223, 72]], [[206, 50], [229, 72]]])  # a close pair (31.8 px) that stays two cars
    gen = scene([[[200, 50], [223, 72]], [[206, 54]]])  # the pair became one blob
    ev = P.events(gen, truth, idle(2))
    assert types(ev) == [("merge", 1)] and ev["vehicles"][0] == (1, 0)
    sc = P.scores(gen, truth, idle(2))
    assert sc["merge_per_100"][0] == 100 and sc["vanish_per_100"][0] == 0 and sc["close_encounters"][0] == 1
    assert sc["iec"][0] == 0.0 and P.scores(truth, truth, idle(2))["iec"][0] == 1.0


def test_swap_by_rotation_is_an_identity_exchange():
    a, b, c, r = (284.0, 60.0), (316.0, 60.0), np.array([300.0, 60.0]), 16.0
    rot = [c + r * np.array([np.cos(th), np.sin(th)]) for th in np.radians([240, 300, 60, 120])]
    truth = scene([[a, b]] * 6)
    gen = scene([[a, b], [a, b], [rot[0], rot[2]], [rot[1], rot[3]], [b, a], [b, a]])  # 60 deg a frame about c
    ev = P.events(gen, truth, idle(6))
    assert types(ev) == [("swap", 2)] and sorted(ev["vehicles"][0]) == [0, 1]
    sc = P.scores(gen, truth, idle(6))
    assert sc["iec"][0] == 0.0 and sc["vanish_per_100"][0] == 0 and sc["popup_per_100"][0] == 0
    assert sc["missing_rate"][0] == pytest.approx(4 / (10 + 5))  # generated frames 1-5: both cars off their places in 2
    moved = scene([[a, b]] * 3 + [[(a[0] + 5, a[1]), (b[0] + 5, b[1])]] * 3)  # both drift: no exchange
    assert len(P.events(moved, truth, idle(6))) == 0


def test_an_extra_car_costs_as_much_as_a_missing_one():
    cars = [[100, 30], [250, 52], [400, 74], [500, 96]]
    truth = scene([cars] * 4)
    missing = scene([cars[:3]] * 4)
    extra = scene([cars + [[320, 118]]] * 4)
    s_missing, s_extra = P.scores(missing, truth, idle(4)), P.scores(extra, truth, idle(4))
    n_true = 4 * 3 + 3  # the cars and the ego in generated frames 1-3 (frame 0 is the real one)
    assert s_missing["tec"][0] == pytest.approx(1 - 3 / (2 * n_true)) == s_extra["tec"][0]
    assert s_missing["missing_rate"][0] == s_extra["extra_rate"][0] == pytest.approx(3 / n_true)
    assert len(P.events(missing, truth, idle(4))) == len(P.events(extra, truth, idle(4))) == 0


TRUTH_LEFT = [55, 55, 55, 50.4, 45.3, 41.2, 38.2, 36.2, 35, 34.2, 33.5, 33]  # lane 2 -> 1 after LEFT at frame 2


def lane_case(gen_lateral: list[float], truth_lateral: list[float] = TRUTH_LEFT, command: bool = True):
    acts = idle(len(truth_lateral))
    if command:
        acts[0, 2] = LEFT
    empty = [[]] * len(truth_lateral)
    g, t = scene(empty, lateral=gen_lateral), scene(empty, lateral=truth_lateral)
    return P.events(g, t, acts), P.scores(g, t, acts)


def test_lane_changes_read_with_hysteresis():
    assert E.lane_changes(np.array(TRUTH_LEFT)) == [(5, -1)]  # 41.2 is 2.8 px past the boundary at 44
    assert E.lane_changes(np.array([55, 43, 45, 43, np.nan, 41.0])) == [(5, -1)]  # 1 px past it is not enough


def test_lane_change_answered_late_stuck_wrong_and_unrequested():
    ev, s = lane_case(TRUTH_LEFT)
    assert len(ev) == 0 and s["kir"][0] == 1 and s["lane_latency"][0] == 3 and s["lane_timing_error"][0] == 0
    ev, s = lane_case([55] * 5 + [50, 45, 41, 36, 33, 33, 33])  # crosses at frame 7: latency 5, 2 frames late
    assert len(ev) == 0 and s["lane_answered"][0] == 1 and s["lane_latency"][0] == 5
    assert s["lane_timing_error"][0] == 2 and s["lane_completed"][0] == 1
    ev, s = lane_case([55] * 12)  # the road never shifts
    assert types(ev) == [("lane_stuck", 3)] and s["kir"][0] == 0 and s["lane_commands"][0] == 1
    ev, s = lane_case([55, 55, 55, 60, 65, 70, 75, 77, 77, 77, 77, 77])  # down instead of up
    assert types(ev) == [("lane_wrong", 3)] and s["kir"][0] == 0
    ev, s = lane_case([55, 55, 55, 55, 60.5, 66, 71.5, 77, 77, 77, 77, 77], [55] * 12, command=False)
    assert types(ev) == [("lane_unrequested", 4)] and s["kir"][0] == 0 and s["lane_commands"][0] == 0
    ev, s = lane_case([55] * 12, [55] * 12)  # a LEFT the simulator did not answer (e.g. the top lane): not judged
    assert len(ev) == 0 and np.isnan(s["kir"][0])


def speed_case(gen_speed: list[float]):
    truth_v = [25, 25, 25, 26.5, 27.5, 28.3, 28.8, 29.1, 29.4]  # between frames t and t + 1; FASTER at frame 2
    acts = idle(10)
    acts[0, 2] = FASTER
    g, t = scene([[]] * 10, speed=gen_speed), scene([[]] * 10, speed=truth_v)
    return P.events(g, t, acts), P.scores(g, t, acts)


def test_speed_commands_answered_by_the_right_sign():
    ev, s = speed_case([25, 25, 25, 25.7, 26.2, 26.5, 26.5, 26.5, 26.5])
    assert len(ev) == 0 and s["speed_commands"][0] == 1 and s["speed_answered"][0] == 1 and s["kir"][0] == 1
    ev, s = speed_case([25] * 9)
    assert types(ev) == [("speed_ignored", 3)] and s["kir"][0] == 0
    ev, s = speed_case([25, 25, 25, 24, 23, 22, 22, 22, 22])
    assert types(ev) == [("speed_wrong", 3)]


def test_ego_vanish_and_misplaced_sprite():
    truth = scene([[]] * 6)
    gen = scene([[]] * 6, ego=[[180, 75], [180, 75], [np.nan, np.nan], [180, 75], [180, 60], [180, 60]])
    assert types(P.events(gen, truth, idle(6))) == [("ego_vanish", 2), ("ego_misplaced", 4)]
    s = P.scores(gen, truth, idle(6))
    assert s["ego_presence"][0] == pytest.approx(4 / 5) and s["kir"][0] == 0  # a misplaced ego is a KIR failure


def dashes(top: float, phase: float, height: int = 150, width: int = 600) -> np.ndarray:
    """A road frame drawn by hand: grey, solid white edges at `top` and top + 88, dashed lines between whose dashes
    start at x = phase + k * period."""
    cfg = E.RoadConfig()
    f = np.full((height, width, 3), 100, np.uint8)
    x = np.arange(width) + 0.5
    on = ((x - phase) % cfg.period_px) < cfg.stripe_length_m * cfg.px_per_m
    for k in range(cfg.lanes + 1):
        row = int(np.floor(top + k * cfg.lane_px))
        if 0 <= row < height:
            f[row, on if 0 < k < cfg.lanes else slice(None)] = 255
    return f


def test_road_read_from_a_hand_drawn_frame():
    cfg = E.RoadConfig()
    road = E.read_road(np.stack([dashes(20, 5.0), dashes(-2, 5.0), dashes(20, 5.0 - 3.7)]), cfg)
    assert road.top.tolist() == [20, -2, 20] and (road.fit > 0.95).all()
    assert E.lateral_px(road).tolist() == [55, 77, 55] and E.lane_of(E.lateral_px(road)).tolist() == [2, 3, 2]
    dash_centre = 5.0 + cfg.stripe_length_m * cfg.px_per_m / 2  # the phase is where the dashes' centres fall
    assert road.phase[0] == pytest.approx(dash_centre, abs=0.3) and road.strength[0] > 0.8
    # the dashes slid 3.7 px left (modulo a period) between frames 0 and 2; in the 10-31.65 m/s window that is
    # 3.7 + 1 period = 27.5 px = 5.0 m in 0.2 s: 25.0 m/s
    pair = E.Road(*(a[None, [0, 2]] for a in (road.top, road.fit, road.phase, road.strength)))  # (1, 2) each
    v, _ = E.speed_mps(pair)
    assert v[0, 0] == pytest.approx((3.7 + cfg.period_px) / cfg.px_per_m * cfg.frame_hz, abs=0.3)
    blank = E.read_road(np.full((1, 150, 600, 3), 100, np.uint8))
    assert blank.fit[0] == 0 and blank.strength[0] == 0  # no road drawn: nothing to read


def test_road_matches_the_simulator_states():
    """On frames HighwayEnv rendered while the ego changed lane and speed: the lateral position agrees with the
    ego's world y to the pixel and the speed with its displacement to 0.3 m/s."""
    from piwm_lib.env import EnvConfig, make_env, render, reset, step, vehicle_states

    env = make_env(EnvConfig())
    frames, ego = [reset(env, 3)], [vehicle_states(env.unwrapped)[0][:1]]
    actions = [IDLE, IDLE, LEFT, IDLE, IDLE, IDLE, IDLE, FASTER, IDLE, IDLE, IDLE, IDLE]
    for a in actions:
        step(env, a)
        frames.append(render(env))
        ego.append(vehicle_states(env.unwrapped)[0][:1])
    states = np.stack(ego)  # (T, 1, F) the ego's states
    x, y = (states[:, 0, STATE_FIELDS.index(k)] for k in ("x", "y"))
    road = E.read_road(np.stack(frames)[None])
    lateral = E.lateral_px(road)[0]
    assert np.abs(lateral - (y + 2) * 5.5).max() <= 1.0  # top edge at world y = -2 m; 1 px rounding
    assert lateral[-1] - lateral[0] == pytest.approx(-22, abs=1)  # one lane up
    v, strength = E.speed_mps(road)
    assert np.abs(v[0] - np.diff(x) * 5).max() < 0.3 and strength.min() > 0.8
    one = E.Road(*(a[0] for a in (road.top, road.fit, road.phase, road.strength)))  # (T,) each
    agree = E.against_states(one, states, np.array(actions))
    assert agree["lane_changes"] == agree["found"] == agree["completed_found"] == 1
    assert agree["speed_commands"] == agree["speed_seen"] == 1 and agree["speed_mae"] < 0.2
    s = P.scores(np.stack(frames)[None], np.stack(frames)[None], np.array([actions]))
    assert s["lane_commands"][0] == 1 and s["speed_commands"][0] == 1 and s["kir"][0] == 1


def test_ground_truth_against_itself_is_perfect(small_dataset):
    ds = WindowDataset(small_dataset, "train", 25, "frames")
    items = [ds[0], ds[len(ds) - 1]]
    frames = np.stack([i["frames"].numpy() for i in items])  # (2, 25, 150, 600, 3)
    acts = np.stack([i["actions"].numpy() for i in items])
    obj = P.find_objects(frames)
    assert obj.others.shape[:2] == (2, 25) and not np.isnan(obj.ego).any()
    small = P.find_objects(frames, chunk=7)  # chunked detection: the same objects
    assert np.array_equal(small.others, obj.others, equal_nan=True) and np.array_equal(small.ego, obj.ego)
    assert (~np.isnan(obj.others[..., 0])).sum(-1).min() >= 2  # several cars in every frame
    assert len(P.events(frames, frames, acts)) == 0
    s = P.scores(frames, frames, acts)
    assert (s["tec"] == 1).all() and (s["iec"] == 1).all() and (s["wo"] == 1).all()
    assert (s["missing_rate"] == 0).all() and (s["extra_rate"] == 0).all() and (s["ego_presence"] == 1).all()


def test_bad_shapes_are_named():
    s = scene([[]] * 4)
    with pytest.raises(ValueError, match="actions must be"):
        P.scores(s, s, np.ones((1, 2), int))
    with pytest.raises(ValueError, match="same B, T"):
        P.scores(s, scene([[]] * 5), idle(5))


def test_weighted_overall_score_and_position_error():
    cars = [[100, 30], [250, 52]]
    truth = scene([cars] * 4)
    gen = scene([cars] + [[[103, 34], [250, 52]]] * 3)  # the first car 5 px off (3, 4) in every generated frame
    acts = idle(4)
    acts[0, 1] = FASTER  # the truth's speed does not change: the command is not judged
    s = P.scores(gen, truth, acts, P.PhysicsConfig(w_tec=2, w_iec=1, w_kir=5))
    assert s["others_error_px"][0] == pytest.approx(2.5) and s["others_recall"][0] == 1  # (5 + 0) / 2, within 10 px
    assert s["tec"][0] == 1 and s["iec"][0] == 1 and np.isnan(s["kir"][0])
    assert s["wo"][0] == pytest.approx(1.0)  # KIR undefined: WO over TEC and IEC only
    acts = idle(12)
    acts[0, 2] = LEFT
    stuck = P.scores(scene([[]] * 12, lateral=[55] * 12), scene([[]] * 12, lateral=TRUTH_LEFT), acts,
                     P.PhysicsConfig(w_tec=2, w_iec=1, w_kir=5))  # the road never shifts: KIR 0
    assert stuck["kir"][0] == 0 and stuck["wo"][0] == pytest.approx((2 * 1 + 1 * 1 + 5 * 0) / 8)

