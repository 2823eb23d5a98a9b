"""Importing your own episodes: frames + CSV, video + CSV, gymnasium recordings; determinism, resume, clear errors,
`collect check`, and a few training steps of the micro world model on each."""

from __future__ import annotations

import hashlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from piwm_lib import importer as I
from piwm_lib import recorder as R
from piwm_lib import train as T
from piwm_lib.collect import main as collect_cli
from piwm_lib.dataset import Dataset, WindowDataset, check_dataset, check_episode
from piwm_lib.dataset import test_windows as eval_windows
from piwm_lib.frames import resize_uint8
from piwm_lib.masks import MaskConfig, vehicle_pixels
from piwm_lib.storage import Episode, EpisodeWriter
from piwm_lib.validate import ConfigError
from piwm_lib.worldmodel import WorldModelConfig, WorldModelEnv

NAMES = ["left", "right", "stay"]
SMALL = dict(frame_size=(40, 80), lowres_size=(8, 16))  # the smallest frames the U-Net takes, for speed


def synthetic_frames(n: int, seed: int, size: tuple[int, int] = (40, 80)) -> np.ndarray:
    """(n, H, W, 3) uint8: a square moving right over a grey background with noise."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, *size, 3), 90, np.uint8) + rng.integers(0, 20, (n, *size, 3), dtype=np.uint8)
    for t in range(n):
        x = (5 + 3 * t) % (size[1] - 10)
        frames[t, 15:25, x:x + 10] = (200, 40, 40)
    return frames


def write_episode_folder(folder: Path, n: int, seed: int, rows: list[str] | None = None) -> Path:
    """An image folder of n synthetic PNG frames with actions.csv (n - 1 rows of names and indices)."""
    folder.mkdir(parents=True)
    for t, frame in enumerate(synthetic_frames(n, seed)):
        iio.imwrite(folder / f"{t:04d}.png", frame)
    rows = rows if rows is not None else [NAMES[t % 3] if t % 2 else str(t % 3) for t in range(n - 1)]
    (folder / "actions.csv").write_text("step,action\n" + "".join(f"{t},{a}\n" for t, a in enumerate(rows)))
    return folder


def cfg(out: Path, **kw) -> I.ImportConfig:
    return I.ImportConfig(out=str(out), **{**SMALL, "test_fraction": 0.34, **kw})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def frames_dataset(tmp_path_factory) -> Path:
    """3 synthetic episodes of 12 frames imported from image folders + CSVs."""
    root = tmp_path_factory.mktemp("frames")
    for k in range(3):
        write_episode_folder(root / "src" / f"ep{k}", 12, seed=k)
    return I.import_folder(root / "src", NAMES, cfg(root / "ds"), progress=False)


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory) -> Path:
    """3 CartPole-v1 episodes of at most 14 frames, random policy, seed 3."""
    out = tmp_path_factory.mktemp("cartpole") / "ds"
    gc = R.GymConfig("CartPole-v1", episodes=3, frames=14)
    return R.record_gym(gc, cfg(out, frame_size=(40, 60), lowres_size=(8, 12), seed=3), progress=False)


def test_frames_and_csv_become_a_checked_stateless_episode(frames_dataset, tmp_path):
    with Episode(frames_dataset / "episode_000001.h5") as ep:
        frames, lowres = ep.read("frames"), ep.read("lowres")
        assert not ep.has_states and ep.action_names == tuple(NAMES) and ep.n_frames == 12
        assert np.array_equal(frames, synthetic_frames(12, seed=1))  # already at the frame size: lossless
        assert np.array_equal(lowres, resize_uint8(frames, 8, 16))
        assert ep.read("actions").tolist() == [t % 3 for t in range(11)]  # indices and names alike
        assert ep.read("states", 2, 5).shape == (3, 0, 0) and ep.read("vehicle_ids").shape == (12, 0)
    ds = Dataset(frames_dataset)
    assert ds.manifest["source"] == {"kind": "frames_csv"} and ds.action_names == tuple(NAMES)
    assert ds.manifest["frame_size"] == [40, 80] and ds.manifest["lowres_size"] == [8, 16]
    assert [r["split"] for r in ds.episodes()] == ["train", "test", "train"]
    assert "lane_changes" not in ds.episodes()[0] and "lane_changes_per_100_frames" not in ds.index
    assert set(ds.index["commands_per_100_frames"]) == set(NAMES)
    assert check_dataset(frames_dataset) == {} and collect_cli(["check", str(frames_dataset)]) == 0
    assert len(WindowDataset(frames_dataset, "train", 9)) == 2 * (12 - 9 + 1)
    assert eval_windows(frames_dataset, 6, min_windows=2)["states"].shape == (2, 6, 0, 0)


def test_check_episode_uses_the_episodes_own_action_count(tmp_path):
    path = tmp_path / "episode_000000.h5"
    w = EpisodeWriter(path, frame_shape=(40, 80, 3), lowres_shape=(8, 16, 3), n_slots=0, state_fields=(),
                      attrs={"episode": 0, "action_names": ["a", "b"]})
    frames = synthetic_frames(3, 0)
    for t, f in enumerate(frames):
        w.append(f, resize_uint8(f[None], 8, 16)[0], None, None, [None, 1, 2][t])
    w.close()
    assert check_episode(path) == ["actions outside 0..1: [1, 2]"]
    assert "differ from the dataset's" in check_episode(path, manifest={"action_names": ["a", "b", "c"]})[0]


def test_video_and_csv(tmp_path):
    pytest.importorskip("av", reason="PyAV (pip install av) reads the video")
    src = tmp_path / "src"
    src.mkdir()
    frames = synthetic_frames(10, 5, (80, 160))
    iio.imwrite(src / "run_a.mp4", frames, fps=10, codec="libx264", plugin="pyav")
    (src / "run_a.csv").write_text("action\n" + "0\n1\n" * 4 + "2\n")
    out = I.import_folder(src, NAMES, cfg(tmp_path / "ds"), progress=False)
    with Episode(out / "episode_000000.h5") as ep:
        got = ep.read("frames").astype(float)
        assert got.shape == (10, 40, 80, 3) and ep.attrs["source"] == '{"actions": "run_a.csv", "frames": ' \
                                                                      '"run_a.mp4", "kind": "frames_csv"}'
    assert np.abs(got - resize_uint8(frames, 40, 80)).mean() < 8  # lossy H.264, then the same resize
    assert check_dataset(out) == {}


def test_cartpole_recording_is_deterministic_and_checked(cartpole, tmp_path):
    man = Dataset(cartpole).manifest
    assert man["action_names"] == ["0", "1"] and man["source"]["env_id"] == "CartPole-v1"
    assert man["source"]["policy"] == "random" and "episodes" not in man["source"]
    with Episode(cartpole / "episode_000000.h5") as ep:
        assert ep.attrs["env_seed"] == 3 and ep.read("frames").shape[1:] == (40, 60, 3)
        assert ep.read("frames").std() > 10  # a drawn cart and pole, not a blank frame
    again = R.record_gym(R.GymConfig("CartPole-v1", episodes=2, frames=14),
                         cfg(tmp_path / "again", frame_size=(40, 60), lowres_size=(8, 12), seed=3), progress=False)
    for name in ("episode_000000.h5", "episode_000001.h5"):
        assert sha(again / name) == sha(cartpole / name)  # same seed, same bytes
    assert collect_cli(["check", str(cartpole)]) == 0


def test_a_rerun_keeps_finished_episodes_and_adds_the_missing_ones(tmp_path):
    c = cfg(tmp_path / "ds", frame_size=(40, 60), lowres_size=(8, 12))
    R.record_gym(R.GymConfig(episodes=1, frames=6, policy="fixed", action=1), c, progress=False)
    first = tmp_path / "ds" / "episode_000000.h5"
    inode, digest = first.stat().st_ino, sha(first)
    R.record_gym(R.GymConfig(episodes=2, frames=6, policy="fixed", action=1), c, progress=False)
    assert first.stat().st_ino == inode and sha(first) == digest
    with Episode(tmp_path / "ds" / "episode_000001.h5") as ep:
        assert set(ep.read("actions").tolist()) == {1}
    src = write_episode_folder(tmp_path / "ep", 6, seed=0)
    path = I.import_episode(src, src / "actions.csv", NAMES, cfg(tmp_path / "f"), episode=4)
    inode = path.stat().st_ino
    assert I.import_episode(src, src / "actions.csv", NAMES, cfg(tmp_path / "f"), episode=4).stat().st_ino == inode
    with pytest.raises(ValueError, match="distinct, non-empty strings"):
        I.import_episode(src, src / "actions.csv", ["a", "a"], cfg(tmp_path / "g"))
    with pytest.raises(ValueError, match="other settings"):
        I.import_episode(src, src / "actions.csv", ["x", "y", "z"], cfg(tmp_path / "f"), episode=5)


def test_a_user_policy_drives_the_recording(tmp_path):
    out = R.record_gym(R.GymConfig(episodes=1, frames=8), cfg(tmp_path / "ds", frame_size=(40, 60),
                       lowres_size=(8, 12)), policy=lambda obs, rng: 0, progress=False)
    policy = Dataset(out).manifest["source"]["policy"]
    assert policy.startswith("callable ") and policy.endswith("drives_the_recording.<locals>.<lambda>")
    with Episode(out / "episode_000000.h5") as ep:
        assert set(ep.read("actions").tolist()) == {0}


def bad_rows(tmp_path: Path, rows: list[str]) -> Path:
    return write_episode_folder(tmp_path / "ep", 5, seed=0, rows=rows)


@pytest.mark.parametrize("rows, match", [
    (["0", "1", "2"], r"has 5 frames but .*actions.csv has 3 action rows"),
    (["0", "1", "2", "0", "1"], r"has 5 frames but .*actions.csv has 5 action rows"),
    (["0", "1", "3", "0"], r"actions.csv line 4: action 3 outside 0..2"),
    (["0", "jump", "1", "0"], r"actions.csv line 3: unknown action 'jump'"),
])
def test_bad_csv_is_refused_naming_the_file(tmp_path, rows, match):
    src = bad_rows(tmp_path, rows)
    with pytest.raises(ValueError, match=match):
        I.import_episode(src, src / "actions.csv", NAMES, cfg(tmp_path / "ds"))
    assert not list((tmp_path / "ds").glob("episode_*"))


def test_bad_frames_are_refused_naming_the_file(tmp_path):
    src = bad_rows(tmp_path, ["0"] * 4)
    iio.imwrite(src / "0003.png", synthetic_frames(1, 0, (40, 60))[0])
    with pytest.raises(ValueError, match=r"0003.png is \(40, 60\) px but the episode's first frame is \(40, 80\)"):
        I.import_episode(src, src / "actions.csv", NAMES, cfg(tmp_path / "ds"))
    (src / "0003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*0003.png"):
        I.import_episode(src, src / "actions.csv", NAMES, cfg(tmp_path / "ds"))
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="cannot read video .*clip.mp4"):
        I.import_episode(tmp_path / "clip.mp4", src / "actions.csv", NAMES, cfg(tmp_path / "ds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no frames"):
        I.import_episode(tmp_path / "empty", src / "actions.csv", NAMES, cfg(tmp_path / "ds"))
    with pytest.raises(ValueError, match="holds no episodes"):
        I.import_folder(tmp_path / "empty", NAMES, cfg(tmp_path / "ds"))
    assert not list((tmp_path / "ds").glob("episode_*")) and not list((tmp_path / "ds").glob("*.tmp"))


def test_frame_sizes_are_validated_and_a_changed_aspect_warns(tmp_path):
    with pytest.raises(ValueError, match=r"lowres_size must be frame_size / 5"):
        I.ImportConfig(frame_size=(150, 600), lowres_size=(32, 120))
    with pytest.raises(ValueError, match="too small for the U-Net"):
        I.ImportConfig(frame_size=(20, 80), lowres_size=(4, 16))
    src = write_episode_folder(tmp_path / "ep", 5, seed=0)
    with pytest.warns(I.AspectWarning, match="resized to 50x50 px"):
        I.import_episode(src, src / "actions.csv", NAMES, cfg(tmp_path / "ds", frame_size=(50, 50),
                                                              lowres_size=(10, 10)))


class NoPicture:
    """A Discrete env that draws nothing (render modes: none)."""

    metadata = {"render_modes": []}

    def __new__(cls, render_mode=None):
        import gymnasium as gym

        class Env(gym.Env):
            metadata = cls.metadata
            action_space = gym.spaces.Discrete(2)
            observation_space = gym.spaces.Discrete(2)

        return Env()


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
def test_envs_without_discrete_actions_or_pictures_are_refused(tmp_path):
    import gymnasium as gym

    with pytest.raises(ValueError, match=r"'Pendulum-v1' has action space Box.*needs a Discrete one"):
        R.record_gym(R.GymConfig("Pendulum-v1", episodes=1, frames=3), cfg(tmp_path / "ds"), progress=False)
    gym.register("PiwmNoPicture-v0", entry_point=NoPicture)
    with pytest.raises(ValueError, match="'PiwmNoPicture-v0' cannot render rgb_array"):
        R.record_gym(R.GymConfig("PiwmNoPicture-v0", episodes=1, frames=3), cfg(tmp_path / "ds"), progress=False)
    with pytest.raises(ValueError, match="cannot make gymnasium env 'NoSuchEnv-v0'"):
        R.make_env("NoSuchEnv-v0")


def test_cli_records_and_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "ds"
    assert I.main(["gym", "CartPole-v1", "--out", str(out), "--frame-size", "40x60", "--episodes", "1",
                   "--frames", "5", "--no-progress"]) == 0
    assert Dataset(out).manifest["lowres_size"] == [8, 12] and collect_cli(["check", str(out)]) == 0
    assert I.main(["gym", "Pendulum-v1", "--out", str(tmp_path / "p"), "--no-progress"]) == 2
    assert "needs a Discrete one" in capsys.readouterr().err


def micro(data: Path, out: Path, **kw) -> T.TrainConfig:
    """A few optimizer steps of the micro U-Net without a mask (test_train's smallest run)."""
    base = dict(data_dir=str(data), out_dir=str(out), model="micro", ar_steps=2, batch_size=2, steps=2, ckpt_every=2,
                log_every=1, warmup_steps=1, lr=1e-3, device="cpu", progress=False, mask="none")
    return T.TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("data", ["frames_dataset", "cartpole"])
def test_the_world_model_trains_and_steps_on_imported_data(data, request, tmp_path):
    root = request.getfixturevalue(data)
    n = len(Dataset(root).action_names)
    out = T.train(micro(root, tmp_path / "dyn"))
    assert out["step"] == 2 and np.isfinite(out["loss"])
    dyn = T.load_denoiser(tmp_path / "dyn")
    assert dyn.unet_cfg.n_actions == n and T.load_config(tmp_path / "dyn" / "config.json").n_actions == n
    w = eval_windows(root, 5, max_windows=1, min_windows=1)
    env = WorldModelEnv(dyn, None, WorldModelConfig(mask=MaskConfig(kind="none")))
    env.reset(w["lowres"][:, :4], w["frames"][:, :4], w["actions"][:, :3])
    low, full = env.step(w["actions"][:, 3])
    assert low.shape == w["lowres"][:, 4].shape and full.shape == w["frames"][:, 4].shape
    with pytest.raises(ValueError, match=f"n_actions is 5 but .*dataset.json has {n} actions"):
        T.train(micro(root, tmp_path / "bad", n_actions=5))
    with pytest.raises(ValueError, match=r"mask kind 'soft' finds the cars by colour.*ego: channel 1.*finds the ego in "
                                         r"0% of its first frames: set the mask's ego_channel.*MASK_CHANNELS"):
        T.train(micro(root, tmp_path / "bad", mask="soft"))  # HighwayEnv's green ego: none in these frames


def test_a_colour_mask_trains_on_imported_frames_of_another_palette(frames_dataset, tmp_path):
    """The synthetic episodes' moving square is red: with the ego's channel set to red, the Soft Mask finds it in
    every frame, trains, and the world model infers its mask from generated frames with the same rule."""
    red = MaskConfig(kind="soft", ego_channel=0, other_channel=2)
    assert T.ego_found(frames_dataset, red) == 1.0 and T.ego_found(frames_dataset, MaskConfig()) == 0.0
    with Dataset(frames_dataset).open(Dataset(frames_dataset).episodes()[0]) as ep:
        ego, other = vehicle_pixels(ep.read("frames", 0, 1), red)
    assert ego.sum() >= 80 and other.sum() == 0  # the 10 x 10 square (resized), nothing else
    out = T.train(micro(frames_dataset, tmp_path / "red", mask=red))
    assert out["step"] == 2 and np.isfinite(out["loss"])
    dyn_cfg = T.load_config(tmp_path / "red" / "config.json")
    assert (dyn_cfg.mask.ego_channel, dyn_cfg.mask.other_channel, dyn_cfg.mask.grid) == (0, 2, (8, 16))
    w = eval_windows(frames_dataset, 5, max_windows=1, min_windows=1)
    env = WorldModelEnv(T.load_denoiser(tmp_path / "red"), None, WorldModelConfig(mask=dyn_cfg.mask))
    env.reset(w["lowres"][:, :4], w["frames"][:, :4], w["actions"][:, :3])
    assert env.step(w["actions"][:, 3])[0].shape == w["lowres"][:, 4].shape
    with pytest.raises(ConfigError, match="ego_channel and other_channel must differ"):
        MaskConfig(ego_channel=2)


def test_hdf5_episodes_get_their_low_res_copy_and_bad_ones_are_named(tmp_path):
    import h5py

    frames = synthetic_frames(7, 2, (80, 160))
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["frames"], f["actions"] = frames, np.array([0, 1, 1, 0, 1, 0])
        f.attrs["action_names"] = '["brake", "go"]'
    out = I.import_h5([tmp_path / "mine.h5"], cfg(tmp_path / "ds"), progress=False)
    with Episode(out / "episode_000000.h5") as ep:
        assert ep.action_names == ("brake", "go") and ep.read("actions").tolist() == [0, 1, 1, 0, 1, 0]
        assert np.array_equal(ep.read("frames"), resize_uint8(frames, 40, 80))
        assert np.array_equal(ep.read("lowres"), resize_uint8(ep.read("frames"), 8, 16))
    assert collect_cli(["check", str(out)]) == 0
    with h5py.File(tmp_path / "short.h5", "w") as f:
        f["frames"], f["actions"] = frames, np.array([0, 1])
    with pytest.raises(ValueError, match="short.h5 has 7 frames but 2 actions"):
        I.import_h5([tmp_path / "short.h5"], cfg(tmp_path / "ds2"), names=["a", "b"], progress=False)
    with pytest.raises(ValueError, match="short.h5 has no action_names attribute"):
        I.import_h5([tmp_path / "short.h5"], cfg(tmp_path / "ds2"), progress=False)
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read HDF5 file .*junk.h5"):
        I.import_h5([tmp_path / "junk.h5"], cfg(tmp_path / "ds2"), progress=False)


def test_checkpoints_saved_before_n_actions_existed_still_resume(small_dataset, tmp_path):
    cfg = micro(small_dataset, tmp_path / "run", mask="soft")
    assert T.for_data(cfg) == cfg and cfg.unet.n_actions == 5  # HighwayEnv data: 0 keeps meaning its 5 actions
    old = {k: v for k, v in T.to_dict(cfg).items() if k != "n_actions"}
    T._check_resume({"config": old, "step": 0}, cfg, tmp_path / "ckpt")  # no "n_actions: (absent) -> 0" refusal
    before = {**old, "mask": {k: v for k, v in old["mask"].items() if not k.endswith("_channel")}}
    T._check_resume({"config": before, "step": 0}, cfg, tmp_path / "ckpt")  # saved before the colour channels
    with pytest.raises(ValueError, match="n_actions: 2 -> 0"):
        T._check_resume({"config": {**old, "n_actions": 2}, "step": 0}, cfg, tmp_path / "ckpt")


def test_hdf5_states_come_along_scaled_and_train_the_gt_mask(small_dataset, tmp_path):
    import h5py

    files = []
    for k, row in enumerate(Dataset(small_dataset).episodes()):  # collected episodes, exported as someone's own files
        with Episode(small_dataset / row["file"]) as ep, h5py.File(tmp_path / f"own_{k}.h5", "w") as f:
            f["frames"], f["actions"] = ep.read("frames"), ep.read("actions")
            f["states"], f["vehicle_ids"] = ep.read("states"), ep.read("vehicle_ids")
            f.attrs["action_names"] = '["LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER"]'
            files.append(tmp_path / f"own_{k}.h5")
    out = I.import_h5(files, cfg(tmp_path / "ds", frame_size=(75, 300), lowres_size=(15, 60)), progress=False)
    assert check_dataset(out, progress=False) == {}
    with Episode(small_dataset / "episode_000000.h5") as a, Episode(out / "episode_000000.h5") as b:
        sa, sb = a.read("states"), b.read("states")
        px, py = I.STATE_FIELDS.index("px"), I.STATE_FIELDS.index("py")
        assert np.allclose(sb[..., px], sa[..., px] / 2) and np.allclose(sb[..., py], sa[..., py] / 2)
        assert np.array_equal(b.read("vehicle_ids"), a.read("vehicle_ids"))
    res = T.train(micro(out, tmp_path / "gt", mask="gt"))  # the GT mask from the imported states
    assert res["step"] == 2 and np.isfinite(res["loss"])
    soft = T.for_data(micro(out, tmp_path / "soft", mask="soft"))  # HighwayEnv's pixels: its colour rule applies
    assert soft.mask.kind == "soft" and soft.mask.grid == (15, 60)
    with h5py.File(files[0], "a") as f:
        del f["states"]
        f["states"] = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"own_0.h5: states is \(3, 2, 4\), expected \(T=30, N, 11\)"):
        I.import_h5(files[:1], cfg(tmp_path / "ds3"), progress=False)
