"""HighwayEnv scenarios beyond highway-v0 (docs/scenarios/survey.md): merge-v0, two-way-v0, roundabout-v0 and
intersection-v0 collected through the same collector (their own traffic in padded state slots, their own ends, their
own camera and action sets) and checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from piwm_lib.agents import AgentConfig
from piwm_lib.collect import CollectConfig, collect
from piwm_lib.collect import main as collect_cli
from piwm_lib.dataset import check_dataset
from piwm_lib.env import EnvConfig, scenario
from piwm_lib.storage import Episode

IDM = replace(AgentConfig(), kind="idm")


def test_bad_scenario_settings_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown scenario 'racetrack-v0'"):
        scenario("racetrack-v0")
    with pytest.raises(ValueError, match="recycle_traffic works on highway-v0 only"):
        EnvConfig(env_id="merge-v0")
    with pytest.raises(ValueError, match="lane_target_every needs a straight road"):
        CollectConfig(env=scenario("roundabout-v0"), agent=AgentConfig(lane_target_every=4))
    with pytest.raises(ValueError, match="centering"):
        scenario("roundabout-v0", centering=(0.5, 1.5))


@pytest.mark.parametrize("name", ["merge-v0", "two-way-v0", "roundabout-v0", "intersection-v0"])
def test_a_scenario_is_collected_and_checked(name, tmp_path):
    cfg = scenario(name, episode_frames=90)
    out = collect(CollectConfig(out=str(tmp_path / name), episodes=2, env=cfg, agent=IDM), progress=False)
    assert check_dataset(out, progress=False) == {}  # vehicle centres land on vehicle colours, shapes, checksums
    index = json.loads((out / "index.json").read_text())
    with Episode(out / "episode_000000.h5") as ep:
        states, ids = ep.read("states"), ep.read("vehicle_ids")
        assert ep.read("frames", 0, 1).shape == (1, cfg.screen_height, cfg.screen_width, 3)
        assert ep.read("lowres", 0, 1).shape == (1, cfg.lowres_height, cfg.lowres_width, 3)
        assert states.shape[1] == cfg.n_slots and ep.meta("env_config")["env_id"] == name
        assert tuple(ep.action_names) == cfg.action_names
        used = ids[0] >= 0  # the scenario's own traffic, the rest of the slots padding
        assert 2 <= used.sum() < cfg.n_slots and np.isnan(states[0, ~used]).all() and (ids[0, ~used] == -1).all()
        ego_px = states[:, 0, 8:10]  # the camera keeps the ego at `centering` of the frame in every scenario
        want = np.array(cfg.centering) * (cfg.screen_width, cfg.screen_height)
        assert np.abs(ego_px - want).max() < 0.5
    frames = [e["frames"] for e in index["episodes"]]
    if name != "two-way-v0":  # the others end by themselves: past the merge, the 11 s / 13 s duration, arrival
        assert all(10 < f < 90 for f in frames), frames
    assert index["episodes"][0]["cars_in_view"] > 0


def test_the_intersection_leaves_highway_traffic_as_it_found_it(tmp_path):
    from highway_env.vehicle.behavior import IDMVehicle

    before = (IDMVehicle.DISTANCE_WANTED, IDMVehicle.COMFORT_ACC_MAX, IDMVehicle.COMFORT_ACC_MIN)
    collect(CollectConfig(out=str(tmp_path / "x"), episodes=1, env=scenario("intersection-v0", episode_frames=5),
                          agent=IDM), progress=False)  # its reset sets these class attributes for every IDM car
    assert (IDMVehicle.DISTANCE_WANTED, IDMVehicle.COMFORT_ACC_MAX, IDMVehicle.COMFORT_ACC_MIN) == before


def test_the_intersection_records_its_three_actions_and_mcts_plans_over_them(tmp_path):
    agent = AgentConfig(kind="mcts", budget=4, horizon=2, speed_target_every=2)
    out = collect(CollectConfig(out=str(tmp_path / "i"), episodes=1, env=scenario("intersection-v0", episode_frames=30),
                                agent=agent), progress=False)
    with Episode(out / "episode_000000.h5") as ep:
        assert tuple(ep.action_names) == ("SLOWER", "IDLE", "FASTER")
        acts = ep.read("actions")[1:]
        assert acts.min() >= 0 and acts.max() <= 2 and len(set(acts.tolist())) >= 2


def test_a_scenario_from_the_command_line_is_deterministic(tmp_path):
    digests = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert collect_cli(["run", "--out", str(out), "--scenario", "two-way-v0", "--episodes", "1", "--frames", "30",
                            "--agent", "idm", "--no-progress"]) == 0
        digests.append(hashlib.sha256((out / "episode_000000.h5").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
