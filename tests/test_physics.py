"""Physical-consistency proxies: hand-computed events on synthetic tracks, and perfect scores for ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from piwm_lib import physics as P
from piwm_lib.dataset import WindowDataset
from piwm_lib.env import ACTIONS

NAN = [np.nan, np.nan]
CFG = P.PhysicsConfig()


def objs(frames: list[list[list[float]]], ego: list[list[float]] | None = None, width: int = 600) -> P.Objects:
    """One sequence from per-frame lists of car centres (padded with NaN)."""
    others = np.full((1, len(frames), max(1, max(len(f) for f in frames)), 2), np.nan)  # (1, T, K, 2)
    for t, f in enumerate(frames):
        others[0, t, :len(f)] = np.array(f, float).reshape(-1, 2)
    e = np.array(ego if ego is not None else [[80.0, 75.0]] * len(frames), float)[None]
    return P.Objects(others, e, width)


def test_vanish_and_popup_away_from_borders_only():
    o = objs([[[100, 50], [300, 80]],
              [[105, 50], [305, 80], [590, 20]],  # a car entering at the right border: legitimate
              [[110, 50], [595, 20]],  # the car at x 305 vanished mid-image
              [[115, 50], [598, 20], [400, 100]]])  # one popped up at x 400
    ev = P.existence_events(o)
    assert ev["vanish"].sum() == 1 and ev["vanish"][0, 1].nonzero()[0].tolist() == [1]
    assert ev["popup"].sum() == 1 and ev["popup"][0, 2].nonzero()[0].tolist() == [2]
    s = P.scores(o, o, np.ones((1, 3), int))
    assert s["vanish_per_100"][0] == pytest.approx(100 / 3) and s["popup_per_100"][0] == pytest.approx(100 / 3)
    n_cars = 2 + 3 + 2  # car-frames in frames 0..2
    assert s["tec"][0] == pytest.approx(1 - 2 / (2 * n_cars))


def test_merge_and_eat_up_of_close_pairs():
    merge = objs([[[200, 50], [220, 60]], [[212, 55]]])  # 22.4 px apart, then one car between them
    it = P.interaction_events(merge)
    assert it["pair"].sum() == 1 and it["merge"].sum() == 1 and it["eat_up"].sum() == 0
    eat = objs([[[200, 50], [215, 75]], [[202, 50]]])  # 29.2 px apart; the second has no car within 20 px after
    it = P.interaction_events(eat)
    assert it["pair"].sum() == 1 and it["merge"].sum() == 0 and it["eat_up"].sum() == 1
    kept = objs([[[200, 50], [215, 75]], [[204, 50], [219, 75]]])
    it = P.interaction_events(kept)
    assert it["pair"].sum() == 1 and not (it["merge"] | it["eat_up"]).any()
    assert P.scores(merge, merge, np.ones((1, 1), int))["iec"][0] == 0.0
    assert P.scores(kept, kept, np.ones((1, 1), int))["iec"][0] == 1.0


def test_lane_change_success_and_stuck():
    left = ACTIONS.index("LANE_LEFT")
    truth = objs([[]] * 4, ego=[[80, 75], [80, 70], [80, 64], [80, 60]])  # moves up 15 px
    moved = objs([[]] * 4, ego=[[80, 75], [80, 71], [80, 66], [80, 62]])  # up 13 px: success
    stuck = objs([[]] * 4, ego=[[80, 75], [80, 75], [80, 74], [80, 74]])  # 1 px: stuck
    acts = np.array([[left, 1, 1]])
    ok = P.kinematic_response(moved, truth, acts)
    assert ok["command"].sum() == 1 and ok["success"].sum() == 1 and ok["stuck"].sum() == 0
    bad = P.kinematic_response(stuck, truth, acts)
    assert bad["success"].sum() == 0 and bad["stuck"].sum() == 1
    assert P.scores(stuck, truth, acts)["kir"][0] == 0.0 and P.scores(moved, truth, acts)["kir"][0] == 1.0
    idle = P.kinematic_response(stuck, truth, np.ones((1, 3), int))
    assert idle["command"].sum() == 0  # no lane-change command: nothing to answer


def test_ego_errors_hand_computed():
    truth = objs([[]] * 3, ego=[[80, 75], [82, 75], [84, 75]])
    gen = objs([[]] * 3, ego=[[83, 79], [85, 79], [84, 75]])  # off by (3, 4) twice, then exact
    e = P.ego_errors(gen, truth)
    assert e["ade_px"][0] == pytest.approx(10 / 3) and e["fde_px"][0] == 0.0
    assert e["ade_m"][0] == pytest.approx(10 / 3 / 5.5) and e["ego_missing"][0] == 0
    lost = objs([[]] * 3, ego=[[83, 79], NAN, NAN])
    e = P.ego_errors(lost, truth)
    assert e["ade_px"][0] == 5.0 and np.isnan(e["fde_px"][0]) and e["ego_missing"][0] == 2


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
    s = P.scores(obj, obj, acts)
    assert (s["vanish_per_100"] == 0).all() and (s["popup_per_100"] == 0).all()
    assert (s["merge_per_100"] == 0).all() and (s["eat_up_per_100"] == 0).all()
    assert (s["tec"] == 1).all() and (s["iec"] == 1).all() and (s["kir"] == 1).all() and (s["wo"] == 1).all()
    assert (s["ade_px"] == 0).all() and (s["fde_px"] == 0).all()


# ----------------------------------------------------------------------------------- planted failures on real frames
from piwm_lib import failures as FL  # noqa: E402
from piwm_lib.dataset import Dataset  # noqa: E402


@pytest.fixture(scope="module")
def episodes(small_dataset):
    ds = Dataset(small_dataset)
    out = []
    for row in ds.episodes():
        with ds.open(row) as ep:
            out.append((ep.read("frames"), ep.read("states"), ep.read("actions")))
    return out


def score(planted: np.ndarray, frames: np.ndarray, actions: np.ndarray) -> dict:
    gen, truth = P.find_objects(planted[None]), P.find_objects(frames[None])
    return {k: v[0] for k, v in P.scores(gen, truth, actions[None]).items()}


def free(xy: np.ndarray, others: np.ndarray, t: int, radius: float = 45.0) -> bool:
    """From frame t on, positions (T, 2) stay `radius` px from every other vehicle (T, M, 2) of their lane and
    away from the left/right borders."""
    dx, dy = np.abs(others[t:] - xy[t:, None]).transpose(2, 0, 1)  # (T', M) each
    clash = (dy < 11) & (dx < radius)
    return bool(not clash.any() and (xy[t:, 0] > 35).all() and (xy[t:, 0] < 565).all())


def test_planted_delete_is_a_vanish(episodes):
    frames, states, acts = episodes[0]
    slot = FL.pick_vehicle(states, 600, 150)
    assert slot > 0
    s = score(FL.delete(frames, states, slot, 10), frames, acts)
    assert s["vanish_per_100"] > 0 and s["popup_per_100"] == 0 and s["tec"] < 1
    assert score(frames, frames, acts)["tec"] == 1


def test_planted_spawn_is_a_pop_up(episodes):
    t = 20
    for frames, states, acts in episodes:
        xy, seen = FL.centres(states), FL.in_view(states, 600, 150)
        for slot in range(1, states.shape[1]):
            for dy in (22.0, -22.0):  # the next lane
                for dx in range(-120, 121, 20):
                    at = xy[:, slot] + [dx, dy]
                    if seen[t:, slot].all() and free(at, np.delete(xy, slot, axis=1), t, 35) and 20 < at[t, 1] < 125:
                        s = score(FL.spawn(frames, states, slot, t, *at[t]), frames, acts)
                        assert s["popup_per_100"] > 0 and s["vanish_per_100"] == 0 and s["tec"] < 1
                        return
    raise AssertionError("no free place to spawn a car in the test episodes")


def test_planted_merge_is_flagged(episodes):
    for frames, states, acts in episodes:
        xy = FL.centres(states)
        for slot in range(1, states.shape[1]):
            behind = xy[:, slot] - [24.0, 0.0]
            if FL.in_view(states[:, slot], 600, 150).all() and free(behind, np.delete(xy, slot, axis=1), 0, 40):
                s = score(FL.merge(frames, states, slot, 12), frames, acts)
                assert s["merge_per_100"] > 0 and s["iec"] < 1
                return
    raise AssertionError("no car with room behind it in the test episodes")


def test_planted_swap_is_flagged(episodes):
    for frames, states, acts in episodes:
        xy, seen = FL.centres(states), FL.in_view(states, 600, 150)
        t = 20
        for a in range(1, states.shape[1]):
            for b in range(a + 1, states.shape[1]):
                dx, dy = np.abs(xy[t:, a] - xy[t:, b]).T
                rest = np.delete(xy, [a, b], axis=1)
                if seen[t:, [a, b]].all() and (18 < dy).all() and (dy < 26).all() and (dx > 40).all() \
                        and free(np.stack([xy[:, b, 0], xy[:, a, 1]], 1), rest, t, 30) \
                        and free(np.stack([xy[:, a, 0], xy[:, b, 1]], 1), rest, t, 30):
                    s = score(FL.swap(frames, states, a, b, t), frames, acts)
                    assert s["swap_per_100"] > 0 and s["iec"] < 1
                    return
    raise AssertionError("no pair of cars in adjacent lanes to swap in the test episodes")


def test_planted_frozen_ego_is_stuck(episodes):
    frames, states, acts = episodes[0]
    t = 8
    truth, truth_states = FL.shift_ego(frames, states, t, -5.5)  # a lane change up by 22 px over 4 frames
    acts = acts.copy()
    acts[t - 1] = ACTIONS.index("LANE_LEFT")
    frozen = FL.freeze_ego(truth, truth_states, t - 1)
    s = score(frozen, truth, acts)
    assert s["lane_commands"] == 1 and s["lane_stuck"] == 1 and s["kir"] == 0 and s["fde_px"] > 15
    ok = score(truth, truth, acts)
    assert ok["lane_commands"] == 1 and ok["lane_success"] == 1 and ok["kir"] == 1


def test_planted_jitter_raises_position_error(episodes):
    frames, states, acts = episodes[0]
    s = score(FL.jitter(frames, states, 3.0), frames, acts)
    assert s["others_error_px"] > 1.5 and s["others_unmatched"] < 0.2
    assert score(frames, frames, acts)["others_error_px"] == 0


def test_an_empty_world_is_not_consistent():
    truth = objs([[[100, 50], [300, 80]], [[105, 50], [305, 80]]])
    empty = objs([[], []], ego=[NAN, NAN])  # a model that draws only road: no events, but nothing exists
    s = P.scores(empty, truth, np.ones((1, 1), int))
    assert s["vanish_per_100"][0] == 0 and s["tec"][0] == 0 and s["kir"][0] == 0 and s["others_unmatched"][0] == 1
    assert s["wo"][0] == pytest.approx(1 / 3)  # only IEC (no interaction to fail) is left


def test_swap_and_others_error_hand_computed():
    # lane y=50: car at x 100; lane y=72: car at x 200. Next frame they have exchanged longitudinal places.
    swapped = objs([[[100, 50], [200, 72]], [[200, 50], [100, 72]]])
    assert P.swap_events(swapped).tolist() == [[1]]
    moved = objs([[[100, 50], [200, 72]], [[200, 50], [300, 72]]])  # both jump forward: no exchange
    assert P.swap_events(moved).tolist() == [[0]]
    truth = objs([[[100, 50], [300, 80]], [[110, 50], [310, 80]]])
    gen = objs([[[103, 54], [300, 80]], [[110, 50], [400, 80]]])  # 5 px off once, then one car 90 px away (unmatched)
    e = P.others_error(gen, truth)
    assert e["others_error_px"][0] == pytest.approx(5 / 3) and e["others_unmatched"][0] == pytest.approx(1 / 4)
