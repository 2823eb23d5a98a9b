"""The quality bar's figures on real frames drawn by HighwayEnv: the truth meets every measurable criterion, a
rollout that holds its first frame (the world stops while the true traffic moves) misses the recall criteria."""

from __future__ import annotations

import numpy as np
import pytest

from piwm_lib.dataset import test_windows as windows_of
from piwm_lib.quality import QualityBar, measure, verdict

BAR = QualityBar(recall=((4, 0.9), (8, 0.8)))


@pytest.fixture(scope="module")
def windows(small_dataset):
    """Every test window of 13 frames: the last context frame (index 3) and 9 more behind it."""
    w = windows_of(small_dataset, 13)
    return w["frames"][:, 3:], w["actions"][:, 3:]


def test_the_truth_meets_the_bar(windows):
    truth, actions = windows
    fig = measure(truth, truth, actions, BAR)
    assert fig["recall_h4"] == 1.0 and fig["recall_h8"] == 1.0 and fig["ego_presence"] == 1.0
    assert fig["vanish_popup_per_100"] == 0.0 and fig["windows"] == len(truth) and fig["horizon"] == 9
    v = verdict(fig, BAR)
    assert v["recall_h4"] and v["recall_h8"] and v["ego_presence"] and v["vanish_popup_per_100"]
    assert v["lane_answered"] is (None if fig["lane_commands"] == 0 else True)


def test_a_held_frame_misses_the_recall_bar(windows):
    truth, actions = windows
    held = np.repeat(truth[:, :1], truth.shape[1], axis=1)  # the world stops; the true traffic moves on
    fig = measure(held, truth, actions, BAR)
    assert fig["ego_presence"] == 1.0  # the ego is drawn where the camera holds it
    assert fig["recall_h8"] <= fig["recall_h4"] < 0.9  # IDM traffic moves more than 4 px a frame against the ego
    v = verdict(fig, BAR)
    assert v["recall_h4"] is False and v["recall_h8"] is False and v["ego_presence"]
