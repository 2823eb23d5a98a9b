"""HighwayEnv rendering, ground-truth states, traffic recycling and the agents."""

from __future__ import annotations

import numpy as np
import pytest

from piwm_lib import bev
from piwm_lib import env as E
from piwm_lib.agents import AgentConfig, MCTSAgent, make_agent
from piwm_lib.frames import from_model, resize_uint8, to_model

VEHICLE_COLOURS = [tuple(c) for c in bev.VEHICLE_RGB.tolist()]


@pytest.fixture()
def env():
    e = E.make_env(E.EnvConfig(episode_frames=50))
    yield e
    e.close()


def test_frame_is_rendered_not_blank(env):
    frame = E.reset(env, 0)
    assert frame.shape == (150, 600, 3) and frame.dtype == np.uint8
    colours = {tuple(c) for c in np.unique(frame.reshape(-1, 3), axis=0)}
    assert bev.ROAD_RGB in colours and bev.EGO_RGB in colours and bev.OTHER_RGB in colours
    assert (frame == 0).all(-1).mean() < 0.01  # not a black frame (SDL_VIDEODRIVER=dummy gives all black)


def test_ego_is_slot_zero_and_drawn_where_the_camera_puts_it(env):
    E.reset(env, 1)
    states, ids = E.vehicle_states(env.unwrapped)
    px, py = states[0, E.STATE_FIELDS.index("px")], states[0, E.STATE_FIELDS.index("py")]
    assert ids[0] == 0 and len(ids) == 31 and len(set(ids.tolist())) == 31
    assert abs(px - bev.EGO_PIXEL[0]) <= 1.5 and abs(py - bev.EGO_PIXEL[1]) <= 1.5  # the camera follows the ego


def test_gt_pixel_positions_land_on_the_rendered_vehicles(env):
    cfg = E.EnvConfig(episode_frames=50)
    frame = E.reset(env, 3)
    checked = 0
    for t in range(25):
        states, _ = E.vehicle_states(env.unwrapped)
        inside = np.nonzero(bev.in_view(states, cfg.screen_width, cfg.screen_height))[0]
        for n in inside:
            x, y = int(states[n, E.STATE_FIELDS.index("px")]), int(states[n, E.STATE_FIELDS.index("py")])
            assert tuple(frame[y, x]) in VEHICLE_COLOURS, f"frame {t}, vehicle slot {n} at ({x}, {y})"
            checked += 1
        E.step(env, E.IDLE)
        frame = E.render(env)
    assert checked > 50


def test_recycling_keeps_traffic_in_view():
    cfg = E.EnvConfig(episode_frames=200, vehicles=12)
    env = E.make_env(cfg)
    E.reset(env, 0)
    u = env.unwrapped
    u.vehicle.speed = 30.0
    seen = set()
    for _ in range(120):
        E.step(env, 3)
        E.recycle_traffic(u, cfg)
        E.render(env)
        seen.update(E.vehicle_states(u)[1].tolist())
        xs = np.array([v.position[0] for v in u.road.vehicles])
        assert (xs > u.vehicle.position[0] - cfg.recycle_behind_m - 10).all()  # nobody left far behind
    assert max(seen) > cfg.vehicles  # recycled cars got new ids
    env.close()


def test_env_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of policy_hz"):
        E.EnvConfig(simulation_hz=15, policy_hz=4)
    with pytest.raises(ValueError, match="episode_frames"):
        E.EnvConfig(episode_frames=1)
    with pytest.raises(ValueError, match="kind"):
        AgentConfig(kind="greedy")


def test_lowres_copy_and_model_range():
    frame = np.zeros((1, 150, 600, 3), np.uint8)
    frame[:, 50:100, 100:200] = bev.OTHER_RGB
    low = resize_uint8(frame, 30, 120)
    assert low.shape == (1, 30, 120, 3) and low.dtype == np.uint8
    assert tuple(low[0, 15, 30]) == bev.OTHER_RGB and tuple(low[0, 2, 2]) == (0, 0, 0)  # flat areas stay exact
    car = np.zeros((1, 150, 600, 3), np.uint8)
    car[:, 70:81, 100:127] = bev.OTHER_RGB  # one 27x11 px car: 5.4x2.2 px on the model grid, blurred by bicubic
    assert np.abs(resize_uint8(car, 30, 120)[0, 15, 22].astype(int) - bev.OTHER_RGB).max() <= 6
    x = to_model(low)
    assert x.shape == (1, 3, 30, 120) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(from_model(x), low)


def test_agents_are_deterministic_given_their_rng(env):
    for kind in ("random", "idm", "mcts"):
        runs = []
        for _ in range(2):
            E.reset(env, 5)
            agent = make_agent(AgentConfig(kind=kind, budget=6, horizon=2), np.random.default_rng(11))
            actions = []
            for _ in range(6):
                a = agent.act(env.unwrapped)
                actions.append(a)
                E.step(env, a)
            runs.append(actions)
        assert runs[0] == runs[1] and all(0 <= a < 5 for a in runs[0]), kind


def test_mcts_avoids_a_stopped_car_ahead(env):
    E.reset(env, 2)
    u = env.unwrapped
    ego = u.vehicle
    others = [v for v in u.road.vehicles if v is not ego]
    blocker = others[0]
    for v in others[1:]:  # clear the road around the ego so that only the blocker matters
        v.position = v.position + np.array([1000.0, 0.0])
    lane = u.road.network.get_lane(ego.lane_index)
    blocker.position = lane.position(ego.position[0] + 24.0, 0.0)
    blocker.lane_index, blocker.lane, blocker.heading = ego.lane_index, lane, 0.0
    blocker.speed, blocker.target_speed = 0.0, 0.0
    blocker.enable_lane_change = False  # a stalled car: it stays put
    ego.speed = 25.0
    assert E.simulate(E.planning_copy(u, 30, 80), E.IDLE, 5)  # driving on hits it ...
    agent = MCTSAgent(AgentConfig(budget=24, horizon=3, explore=0.0), np.random.default_rng(0))
    action = agent.plan(u)
    assert action in (0, 2, 4)  # ... so the planner steers away or brakes
    assert not E.simulate(E.planning_copy(u, 30, 80), action, 5)


def test_mcts_target_lane_pulls_the_ego_there_safely(env):
    E.reset(env, 3)
    u = env.unwrapped
    start = u.vehicle.lane_index[2]
    agent = MCTSAgent(AgentConfig(budget=12, horizon=3, explore=0.0, lane_target_every=100), np.random.default_rng(0))
    lanes, crashed = [], False
    for _ in range(30):
        crashed = E.step(env, agent.act(u)) or crashed
        lanes.append(u.vehicle.lane_index[2])
    assert agent.target_lane is not None and agent.target_lane != start  # drawn at the first plan, another lane
    assert lanes[-1] == agent.target_lane and not crashed  # reached it within 6 s, no crash
    assert agent.target_speed is None  # speed targets are off
    with pytest.raises(ValueError, match="lane_target_every"):
        AgentConfig(lane_target_every=-1)


def test_configs_round_trip_through_json():
    from piwm_lib.configs import from_dict, to_dict

    cfg = E.EnvConfig(lanes=3, spawn_ahead_m=(80.0, 150.0))
    assert from_dict(E.EnvConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(E.EnvConfig, {"lanez": 3})
