"""The one evaluation entry (evaluation.py): start modes from a name, rollouts scored against the truth, and the
metrics.json record notebook 05 and the sweep share."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_sampler import trained_like

from piwm_lib import evaluation as EV
from piwm_lib.dataset import test_windows as windows_of
from piwm_lib.masks import MaskConfig


def test_start_modes_from_a_name():
    mask = MaskConfig(kind="soft")
    cold, warm, low = (EV.start_config(s, mask, warm_offset=0.1, warm_pixel=0.2, warm_sigma_max=0.5)
                       for s in ("cold", "warm", "warm_low"))
    assert not cold.warm_start and warm.warm_start and low.warm_start
    assert warm.dynamics.warm_offset == 0.1 and warm.upsampler.warm_pixel == 0.2
    assert warm.dynamics.warm_sigma_max is None and low.dynamics.warm_sigma_max == 0.5 == low.upsampler.warm_sigma_max
    assert EV.start_config("warm", mask, "quality").dynamics.steps == 3
    with pytest.raises(ValueError, match="start must be one of"):
        EV.start_config("hot", mask)
    with pytest.raises(ValueError, match="sampler must be one of"):
        EV.start_config("cold", mask, "slow")


def test_evaluate_scores_every_start_against_the_truth(small_dataset):
    dyn, up = trained_like("micro"), trained_like("upsampler-tiny", 1)
    w = windows_of(small_dataset, 4 + 2, 2)
    settings = {s: EV.start_config(s, MaskConfig(kind="soft")) for s in ("cold", "warm")}
    ev = EV.evaluate(dyn, up, settings, w, seed=0, batch=1)
    assert ev.frames["cold"].shape == (2, 2, 150, 600, 3) and ev.lowres["warm"].shape == (2, 2, 30, 120, 3)
    assert set(ev.scores) == {"truth", "cold", "warm"} and ev.scores["cold"]["wo"].shape == (2,)
    assert (ev.scores["truth"]["wo"] == 1).all() and len(ev.events["truth"]) == 0  # the truth against itself
    assert ev.scenes["truth"].lateral.shape == (2, 3)  # the last real frame, then the 2 generated ones
    assert (ev.fps["cold"] > 0) and ev.context == 4
    again = EV.evaluate(dyn, up, {"cold": settings["cold"]}, w, seed=0, batch=1)
    assert np.array_equal(again.frames["cold"], ev.frames["cold"])  # same seed, same noise for every start
    rec = json.loads(json.dumps(EV.record(ev, n_boot=20, seed=0)))  # plain JSON
    assert rec["starts"] == ["cold", "warm"] and rec["windows"] == 2 and rec["horizon"] == 2
    assert set(rec["physics"]) == {"truth", "cold", "warm"} and set(rec["physics"]["cold"]) == set(EV.REPORTED)
    m, lo, hi = rec["physics"]["cold"]["tec"]
    assert lo <= m <= hi and len(rec["per_window"]["warm"]["wo"]) == 2
    assert sum(rec["events_by_type"]["cold"].values()) == len(ev.events["cold"])
    assert len(rec["events_by_horizon"]["cold"]) == 2


def test_windows_too_short_to_generate_are_refused(small_dataset):
    dyn, up = trained_like("micro"), trained_like("upsampler-tiny", 1)
    w = windows_of(small_dataset, 4, 2)
    with pytest.raises(ValueError, match="leave nothing to generate"):
        EV.evaluate(dyn, up, {"cold": EV.start_config("cold", MaskConfig(kind="soft"))}, w)


def test_road_agreement_reads_every_episode_against_its_states(small_dataset):
    from piwm_lib.dataset import Dataset

    table = EV.road_agreement(small_dataset, chunk=7, progress=False)  # chunks that split episodes mid-way
    rows = Dataset(small_dataset).episodes()
    assert list(table.index) == [r["episode"] for r in rows] and table["frames"].tolist() == [r["frames"] for r in rows]
    assert (table["found"] <= table["lane_changes"]).all() and (table["speed_seen"] <= table["speed_commands"]).all()
    assert (table["speed_mae"] < 0.5).all()  # the dashes' scroll reads the simulator's speed
    whole = EV.road_agreement(small_dataset, chunk=10_000, progress=False)
    assert table.equals(whole)  # chunking changes nothing
