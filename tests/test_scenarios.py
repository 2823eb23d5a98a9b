"""HighwayEnv scenarios beyond highway-v0 (docs/scenarios/survey.md): the straight-road ones, merge-v0 and two-way-v0,
collected through the same collector (their own traffic in padded state slots, their own ends) and checked; the
curved ones are refused with a reason."""

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


def test_unknown_and_curved_scenarios_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown scenario 'roundabout-v0'"):
        scenario("roundabout-v0")
    with pytest.raises(ValueError, match="curved roads, not supported yet"):
        EnvConfig(env_id="intersection-v0", recycle_traffic=False)
    with pytest.raises(ValueError, match="recycle_traffic works on highway-v0 only"):
        EnvConfig(env_id="merge-v0")


@pytest.mark.parametrize("name", ["merge-v0", "two-way-v0"])
def test_a_straight_road_scenario_is_collected_and_checked(name, tmp_path):
    out = collect(CollectConfig(out=str(tmp_path / name), episodes=2, env=scenario(name, episode_frames=90),
                                agent=IDM), progress=False)
    assert check_dataset(out, progress=False) == {}  # vehicle centres land on vehicle colours, shapes, checksums
    index = json.loads((out / "index.json").read_text())
    with Episode(out / "episode_000000.h5") as ep:
        states, ids = ep.read("states"), ep.read("vehicle_ids")
        assert states.shape[1] == 9 and ep.meta("env_config")["env_id"] == name
        used = ids[0] >= 0  # the scenario's own traffic, the rest of the 9 slots padding
        assert 2 <= used.sum() < 9 and np.isnan(states[0, ~used]).all() and (ids[0, ~used] == -1).all()
    frames = [e["frames"] for e in index["episodes"]]
    if name == "merge-v0":  # it ends by itself once the ego has passed the merge, without a crash
        assert all(20 < f < 90 for f in frames) and not any(e["crashed"] for e in index["episodes"])
    assert index["episodes"][0]["cars_in_view"] > 0


def test_a_scenario_from_the_command_line_is_deterministic(tmp_path):
    digests = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert collect_cli(["run", "--out", str(out), "--scenario", "two-way-v0", "--episodes", "1", "--frames", "30",
                            "--agent", "idm", "--no-progress"]) == 0
        digests.append(hashlib.sha256((out / "episode_000000.h5").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
