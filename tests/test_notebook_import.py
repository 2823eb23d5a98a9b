"""Notebooks 03, 04 and 05, unchanged, on episodes that are not HighwayEnv's: a video + actions CSV and a CartPole-v1
recording, imported with piwm_lib.importer, trained (the video with a Soft Mask whose colour rule is given as
parameters, CartPole without a mask), rolled out and evaluated through papermill (the quality bar and the physics
metrics, which read HighwayEnv's palette and road, are skipped with a message)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pytest
from test_importer import synthetic_frames
from test_notebooks import run_notebook

from piwm_lib import importer as I
from piwm_lib import recorder as R

SMALL = {"frame_size": (40, 80), "lowres_size": (8, 16), "test_fraction": 0.34}  # episode 1 is the test episode


def video_dataset(tmp_path: Path) -> Path:
    """3 episodes of 16 synthetic frames, each an H.264 video with a same-name actions CSV (names and indices)."""
    pytest.importorskip("av", reason="PyAV (pip install av) reads the videos")
    src = tmp_path / "videos"
    src.mkdir()
    for k in range(3):
        iio.imwrite(src / f"run_{k}.mp4", synthetic_frames(16, k, (80, 160)), fps=10, codec="libx264", plugin="pyav")
        (src / f"run_{k}.csv").write_text("action\n" + "".join(f"{'left' if t % 3 else 1}\n" for t in range(15)))
    return I.import_folder(src, ["left", "right"], I.ImportConfig(out=str(tmp_path / "video_ds"), **SMALL),
                           progress=False)


def cartpole_dataset(tmp_path: Path) -> Path:
    """4 CartPole-v1 episodes of at most 20 frames, random policy (2 actions), seed 0."""
    cfg = I.ImportConfig(out=str(tmp_path / "cartpole_ds"), seed=0, frame_size=(40, 60), lowres_size=(8, 12),
                         test_fraction=0.34)
    return R.record_gym(R.GymConfig("CartPole-v1", episodes=4, frames=20), cfg, progress=False)


@pytest.mark.parametrize("make", [video_dataset, cartpole_dataset], ids=["video_csv", "cartpole"])
def test_notebooks_03_to_05_train_roll_out_and_evaluate_imported_episodes(make, tmp_path):
    root = make(tmp_path)
    names = json.loads((root / "dataset.json").read_text())["action_names"]
    # the video's moving square is red: its Soft Mask is the colour rule given as parameters; CartPole goes without
    mask = {"MASK": "soft", "MASK_CHANNELS": [0, 2]} if make is video_dataset else {"MASK": "none"}
    m3 = run_notebook("03_train_edm", {"RUN_NAME": "imp", "DATA_DIR": str(root), "STEPS": 4, "UP_STEPS": 2,
                                       "LOG_EVERY": 2, "LOSS_SIGMAS": 3, **mask}, tmp_path)
    assert m3["mask"] == mask["MASK"] and m3["steps"] == 4
    nb3 = (tmp_path / "03_train_edm.ipynb").read_text()
    assert "was not collected from HighwayEnv" in nb3  # the bar is skipped, not measured on foreign pixels
    m4 = run_notebook("04_sample_rollout", {"RUN_NAME": "imp", "DATA_DIR": str(root), "MODEL_RUN": "imp",
                                            "HORIZON": 3, "ROLLOUTS": 1, "SPEED_REPEATS": 1}, tmp_path)
    assert m4["horizon"] == 3 and m4["played_frames"] == 5 and m4["flicker_warm"] >= 0
    m5 = run_notebook("05_evaluate", {"RUN_NAME": "imp", "DATA_DIR": str(root), "MODEL_RUN": "imp", "HORIZON": 3,
                                      "MAX_WINDOWS": 2, "ENCODER_STEPS": 3, "BOOTSTRAP": 20, "PLANT_SEEDS": 0},
                      tmp_path)
    assert m5["physics"] is None and m5["windows"] == 2 and set(m5["fid"]) >= {"cold", "warm"}  # image metrics only
    state = json.loads((tmp_path / "04_sample_rollout.ipynb").read_text())["metadata"]["widgets"]
    buttons = [m["state"].get("description") for m in next(iter(state.values()))["state"].values()
               if m["model_name"] == "ButtonModel"]
    assert set(names) <= set(buttons)  # the play panel has a button per action of the dataset


def test_the_keyboard_map_follows_the_action_set():
    from piwm_lib.bev import ACTIONS
    from piwm_lib.widgets import KEYS, keys_for

    assert keys_for(ACTIONS) == KEYS  # arrows / WASD / space for HighwayEnv's meta-actions
    assert keys_for(("0", "1")) == {"1": 0, "2": 1}  # digit keys for any other action set
