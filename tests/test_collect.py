"""Collection: determinism, worker independence, resume after a kill, accelerate slices and merge."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import digests, small_config

from piwm_lib.collect import collect, merge
from piwm_lib.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]
CLI = ["-m", "piwm_lib.collect", "run", "--episodes", "3", "--seed", "7", "--frames", "30", "--agent", "idm",
       "--test-fraction", "0.34", "--no-progress"]


def test_same_seed_gives_identical_bytes(small_dataset, tmp_path):
    again = collect(small_config(tmp_path / "again"), progress=False)
    assert digests(again) == digests(small_dataset)
    other = collect(small_config(tmp_path / "other", seed=8, episodes=1), progress=False)
    assert digests(other)["episode_000000.h5"] != digests(small_dataset)["episode_000000.h5"]


def test_worker_count_does_not_change_the_data(small_dataset, tmp_path):
    two = collect(small_config(tmp_path / "two", workers=2), progress=False)
    assert digests(two) == digests(small_dataset)


def test_index_split_and_stats(small_dataset):
    ds = Dataset(small_dataset)
    assert [r["split"] for r in ds.episodes()] == ["train", "test", "train"]  # split_of: episode 1 is test
    assert all(r["frames"] == 30 and r["cars_in_view"] > 1 for r in ds.episodes())
    assert ds.index["bytes_per_frame"] < 10_000
    rows = ds.episodes()
    assert all(sum(r["commands"].values()) == r["frames"] - 1 for r in rows)  # one command between two frames
    total = sum(r["commands"]["IDLE"] for r in rows)
    assert ds.index["commands_per_100_frames"]["IDLE"] == round(100 * total / ds.index["frames"], 2)


def test_action_stats_by_hand():
    from piwm_lib.bev import STATE_FIELDS
    from piwm_lib.dataset import action_stats

    states = np.zeros((6, 2, len(STATE_FIELDS)), np.float32)
    states[:, 0, STATE_FIELDS.index("lane")] = [1, 1, 2, 2, 2, 1]  # the ego: two lane changes
    states[:, 1, STATE_FIELDS.index("lane")] = [0, 1, 2, 3, 0, 1]  # another car's changes do not count
    commands, changes = action_stats(np.array([2, 1, 1, 0, 3]), states)
    assert changes == 2
    assert commands == {"LANE_LEFT": 1, "IDLE": 2, "LANE_RIGHT": 1, "FASTER": 1, "SLOWER": 0}


def test_kill_then_resume_equals_an_uninterrupted_run(small_dataset, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, *CLI, "--out", str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "episode_000000.h5").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let it get into the second episode
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in out.glob("episode_*.h5"))
    assert finished and len(finished) < 3 and not (out / "index.json").exists()
    collect(small_config(out), progress=False)  # resume: skips finished episodes, drops the temp file
    assert digests(out) == digests(small_dataset)
    assert not list(out.glob("*.tmp"))


def _accelerate(args: list[str], port: int) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_process_accelerate_collection_merged_equals_one_process(small_dataset, tmp_path):
    _accelerate([*CLI, "--out", str(tmp_path / "slices"), "--per-rank-dirs"], 29611)
    ranks = sorted((tmp_path / "slices").glob("rank_*"))
    assert [len(list(r.glob("episode_*.h5"))) for r in ranks] == [2, 1]
    merged = merge(tmp_path / "merged", ranks)
    assert digests(merged) == digests(small_dataset)
    _accelerate([*CLI, "--out", str(tmp_path / "shared")], 29612)  # both ranks into one folder
    assert digests(tmp_path / "shared") == digests(small_dataset)


def test_merge_refuses_duplicates_and_mismatched_settings(small_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    with pytest.raises(ValueError, match="duplicate episode episode_000000.h5"):
        merge(tmp_path / "m1", [small_dataset, copy])
    other = collect(small_config(tmp_path / "other", seed=9, episodes=1, first_episode=5), progress=False)
    with pytest.raises(ValueError, match=r"settings differ in \['seed'\]"):
        merge(tmp_path / "m2", [small_dataset, other])


def test_existing_folder_with_other_settings_is_refused(small_dataset):
    with pytest.raises(ValueError, match="other settings"):
        collect(small_config(small_dataset, seed=99), progress=False)
