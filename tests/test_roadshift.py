"""The ego's speed on curved roads from the road's 2D shift (egomotion.road_shift) and the KIR speed commands it
judges, on scenes drawn by HighwayEnv's own renderer: the true run, and the same run with the camera and the ego
drawn where an ego that ignored its command would be (planted.edited moves the simulator's ego and camera for one
render, then restores them)."""

from __future__ import annotations

import numpy as np
import pytest

from piwm_lib import env as E
from piwm_lib import physics as P
from piwm_lib.egomotion import ShiftConfig, road_shift, shift_speed_mps
from piwm_lib.planted import Scene, edited

T0 = 3  # the command's frame


def _along(pos: np.ndarray, heading: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """The point (2,) m and heading at arc length s of the path pos (K, 2), s within its length."""
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pos, axis=0), axis=1))]
    i = int(np.clip(np.searchsorted(arc, s), 1, len(arc) - 1))
    w = (s - arc[i - 1]) / max(arc[i] - arc[i - 1], 1e-9)
    return (1 - w) * pos[i - 1] + w * pos[i], float(heading[i])


def drive(name: str, command: str, hold: str, frames: int = 8) -> dict:
    """IDLE, `command` at frame T0, IDLE in scenario `name` (seed 0; its roundabout ego crashes at frame 9): the
    true frames, the frames of an ego that holds its speed from T0 on (hold="speed") or stops there (hold="stop") as
    HighwayEnv draws them (camera and ego sprite moved, traffic true), the actions and the ego's true positions."""
    cfg = E.scenario(name)
    env = E.make_env(cfg)
    names = cfg.action_names
    actions = np.array([names.index("IDLE")] * T0 + [names.index(command)] + [names.index("IDLE")] * (frames - T0 - 1))
    truth, edit = [E.reset(env, 0)], []
    u = env.unwrapped
    pos, heading = [u.vehicle.position.copy()], [u.vehicle.heading]
    edit.append(truth[0])
    for k, a in enumerate(actions, start=1):
        E.step(env, int(a))
        truth.append(E.render(env))
        pos.append(u.vehicle.position.copy())
        heading.append(u.vehicle.heading)
        if k <= T0:
            edit.append(truth[-1])
            continue
        p, h = np.array(pos), np.array(heading)
        step = np.linalg.norm(p[T0] - p[T0 - 1]) if hold == "speed" else 0.0  # m per frame before the command
        where, hd = _along(p, h, np.linalg.norm(np.diff(p[:T0 + 1], axis=0), axis=1).sum() + step * (k - T0))
        with edited(u, Scene(move={0: (where, hd)}, camera=where)):
            edit.append(E.render(env))
    env.close()
    manifest = {"env": E.config_dict(cfg), "action_names": list(names)}
    return {"truth": np.stack(truth)[None], "edited": np.stack(edit)[None], "actions": actions[None],
            "pos": np.array(pos), "cfg": P.for_dataset(manifest), "hz": cfg.policy_hz}


@pytest.mark.parametrize("name", ["roundabout-v0", "intersection-v0"])
def test_the_road_shift_reads_the_true_speed_on_curved_roads(name):
    run = drive(name, "FASTER" if name == "roundabout-v0" else "SLOWER", "speed")
    v = shift_speed_mps(run["truth"], run["cfg"].shift)[0]  # (T-1,)
    true_v = np.linalg.norm(np.diff(run["pos"], axis=0), axis=1) * run["hz"]  # displacement speed
    ok = ~np.isnan(v)
    assert ok.mean() >= 0.8 and np.abs(v[ok] - true_v[ok]).max() < 1.0, (v, true_v)
    assert np.ptp(true_v) > 2.0  # the command changed the speed: the reading followed a real change
    shift, _ = road_shift(run["truth"], run["cfg"].shift)  # the road moves against the ego's displacement
    d_m = np.diff(run["pos"], axis=0)[ok]
    assert np.abs(-shift[0][ok] / run["cfg"].shift.px_per_m - d_m).max() < 0.2


def test_straight_dashes_give_no_reading_rather_than_an_aliased_one():
    """On the highway the marks repeat every 23.8 px along the road and the ego moves 27 px a frame: the shift is
    ambiguous, and the reading says so (NaN) instead of returning the alias (the dash scroll reads it there)."""
    cfg = E.scenario("highway-v0")
    env = E.make_env(cfg)
    frames = [E.reset(env, 0)]
    for _ in range(6):
        E.step(env, cfg.action_names.index("IDLE"))
        frames.append(E.render(env))
    v = shift_speed_mps(np.stack(frames)[None], ShiftConfig())
    assert np.isnan(v).all()


@pytest.mark.parametrize("name, command", [("roundabout-v0", "FASTER"), ("intersection-v0", "SLOWER")])
def test_kir_flags_an_ego_that_holds_its_speed_after_a_command(name, command):
    run = drive(name, command, "speed")
    cfg, truth, actions = run["cfg"], run["truth"], run["actions"]
    assert cfg.road is None and cfg.shift is not None and cfg.actions == E.scenario(name).action_names
    own = P.scores(truth, truth, actions, cfg)
    assert own["speed_commands"][0] == 1 and own["kir"][0] == 1.0
    assert P.events(truth, truth, actions, cfg).empty
    ev = P.events(run["edited"], truth, actions, cfg)
    hit = ev[ev["type"] == "speed_ignored"]
    assert len(hit) == 1 and hit["frame"].iloc[0] == T0 + 1, ev
    assert P.scores(run["edited"], truth, actions, cfg)["kir"][0] == 0.0


def test_kir_flags_an_ego_that_stops_after_faster_as_wrong():
    run = drive("roundabout-v0", "FASTER", "stop")
    ev = P.events(run["edited"], run["truth"], run["actions"], run["cfg"])
    assert list(ev.loc[ev["type"].str.startswith("speed"), "type"]) == ["speed_wrong"], ev
