"""Episode files: contents, random windows, corruption detection and the dataset check."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from piwm_lib import env as E
from piwm_lib.collect import main as cli
from piwm_lib.dataset import Dataset, WindowDataset, check_dataset, check_episode
from piwm_lib.frames import resize_uint8
from piwm_lib.storage import CorruptEpisodeError, Episode


def test_episode_contents(small_dataset):
    with Episode(small_dataset / "episode_000001.h5") as ep:
        assert ep.n_frames == 30 and ep.state_fields == E.STATE_FIELDS
        frames, lowres = ep.read("frames"), ep.read("lowres")
        assert frames.shape == (30, 150, 600, 3) and lowres.shape == (30, 30, 120, 3)
        assert np.array_equal(resize_uint8(frames, 30, 120), lowres)
        assert ep.read("actions").shape == (29,) and ep.read("states").shape == (30, 31, len(E.STATE_FIELDS))
        assert ep.meta("env_config")["episode_frames"] == 30 and ep.attrs["env_seed"] == 8
    assert check_episode(small_dataset / "episode_000001.h5") == []


def test_windows_are_random_access_slices(small_dataset):
    wd = WindowDataset(small_dataset, "train", length=9)
    assert len(wd) == 2 * (30 - 9 + 1)
    item = wd[len(wd) - 1]  # last window of the second train episode
    assert item["frames"].shape == (9, 30, 120, 3) and item["actions"].shape == (8,)
    with Episode(small_dataset / "episode_000002.h5") as ep:  # episode 1 is the test episode (dataset.split_of)
        assert np.array_equal(item["frames"].numpy(), ep.read("lowres", 21, 30))
        assert np.array_equal(item["actions"].numpy(), ep.read("actions", 21, 29))
    with pytest.raises(IndexError):
        wd[len(wd)]


def test_truncated_file_gives_a_clear_error_and_the_rest_still_loads(small_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(small_dataset, root)
    bad = root / "episode_000001.h5"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(CorruptEpisodeError, match="episode_000001.h5"):
        Episode(bad)
    ds = Dataset(root)
    with ds.open(0) as ep:
        assert ep.read("lowres").shape[0] == 30
    with pytest.raises(CorruptEpisodeError, match="delete it and rerun"):
        ds.open(1)
    problems = check_dataset(root)
    assert list(problems) == [str(bad)]
    assert cli(["check", str(root)]) == 1


def test_flipped_bytes_inside_a_chunk_are_detected(small_dataset, tmp_path):
    path = tmp_path / "episode_000000.h5"
    shutil.copy(small_dataset / "episode_000000.h5", path)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(255 - b for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))
    problems = check_episode(path)
    assert problems and "episode_000000.h5" in problems[0]


def test_states_that_do_not_match_frames_are_reported(small_dataset, tmp_path):
    import h5py

    path = tmp_path / "episode_000000.h5"
    shutil.copy(small_dataset / "episode_000000.h5", path)
    with h5py.File(path, "r+") as f:
        st = f["states"][:]
        st[..., E.STATE_FIELDS.index("py")] = 12.0  # every car claimed to be on row 12, the road edge
        f["states"][:] = st
    assert any("vehicle centres" in p for p in check_episode(path))


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run piwm_lib.collect first"):
        Dataset(tmp_path)


def test_evaluation_windows_with_a_preferred_action_come_first(small_dataset):
    from piwm_lib.dataset import pick, test_windows
    assert pick([False, True, False, True, True, False], 2) == [1, 4]  # the hits, spread
    assert pick([False, True, False, False, False, False], 3) == [0, 1, 5]  # the one hit, then the rest spread
    assert pick([False] * 5, 3) == [0, 2, 4]  # no hit: evenly spread, as without a preference
    plain = test_windows(small_dataset, 5, max_windows=3)
    with Episode(small_dataset / "episode_000001.h5") as ep:  # the test episode
        acts = ep.read("actions")
    hit = [bool(np.isin(acts[s + 2:s + 4], [acts[-1]]).any()) for s in range(0, 26, 5)]
    chosen = test_windows(small_dataset, 5, max_windows=3, prefer_actions=(int(acts[-1]),), after=2)
    expect = pick(hit, 3)
    assert np.array_equal(chosen["actions"], np.stack([acts[5 * i:5 * i + 4] for i in expect]))
    assert np.array_equal(plain["actions"], np.stack([acts[5 * i:5 * i + 4] for i in pick([False] * 6, 3)]))
