"""Bring your own episodes (`python -m piwm_lib.importer`): frames (an image folder or a video) with an actions CSV,
HDF5 episodes, or (`gym`, piwm_lib.recorder) recordings of a gymnasium environment, written as a dataset
(data/README.md)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .bev import STATE_FIELDS
from .collect import prepare_manifest
from .dataset import write_index
from .frames import resize_uint8
from .storage import EpisodeWriter, episode_name
from .validate import NonNegInt, PosInt, check_fields

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # frames of an image folder, sorted by file name
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif")  # read with imageio (PyAV for all but .gif)
ACTION_COLUMN = "action"  # the CSV column read: integer indices 0..n-1 or action names
LOWRES_FACTOR = 5  # frame size / low-res size: the upsampler's x5 (PIWM)
MIN_LOWRES = 8  # px: the U-Net halves the low-res grid 3 times (4 levels); 8 keeps >= 1 px at the deepest level


class AspectWarning(UserWarning):
    """Frames resized to a different aspect ratio (they come out stretched)."""


@dataclass(frozen=True)
class ImportConfig:
    """Where and how imported episodes are written; saved in dataset.json."""

    out: str = "data/imported"  # dataset folder (episode files, dataset.json, index.json)
    frame_size: tuple[PosInt, PosInt] = (150, 600)  # (H, W) px every frame is resized to (HighwayEnv's camera)
    lowres_size: tuple[PosInt, PosInt] = (30, 120)  # (h, w) px of the dynamics model's copy: frame_size / 5
    seed: NonNegInt = 0  # the one seed (gymnasium: env.reset(seed=seed + episode) and the policy's generator)
    test_fraction: float = 0.1  # every 10th episode is test, from episode 1 (dataset.split_of)

    def __post_init__(self) -> None:
        check_fields(self, test_fraction="[0, 1)")
        (H, W), (h, w) = self.frame_size, self.lowres_size
        if H % LOWRES_FACTOR or W % LOWRES_FACTOR or (h, w) != (H // LOWRES_FACTOR, W // LOWRES_FACTOR):
            raise ValueError(f"ImportConfig.lowres_size must be frame_size / {LOWRES_FACTOR} (the upsampler is x5): "
                             f"frame_size {self.frame_size} needs both sides divisible by 5, got lowres {(h, w)}")
        if min(h, w) < MIN_LOWRES:
            raise ValueError(f"ImportConfig.lowres_size {(h, w)} is too small for the U-Net (it halves the grid 3 "
                             f"times): both sides >= {MIN_LOWRES}, i.e. frame_size >= {MIN_LOWRES * LOWRES_FACTOR}")


def manifest(cfg: ImportConfig, source: dict, names: list[str]) -> dict:
    """dataset.json of an imported dataset: what every episode shares (a rerun refuses other settings)."""
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"action names must be one or more distinct, non-empty strings, got {names}")
    return {"format": "piwm-dataset", "seed": cfg.seed, "test_fraction": cfg.test_fraction, "source": source,
            "action_names": list(names), "frame_size": list(cfg.frame_size), "lowres_size": list(cfg.lowres_size)}


# ----------------------------------------------------------------------------------------------------------- frames
def fit(frame: np.ndarray, cfg: ImportConfig) -> tuple[np.ndarray, np.ndarray]:
    """An RGB(A)/grey uint8 frame -> (H, W, 3) frame at cfg.frame_size and its (h, w, 3) low-res copy."""
    x = np.asarray(frame)
    x = np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x[..., :3]  # grey -> RGB; RGBA -> RGB
    full = resize_uint8(x[None].astype(np.uint8), *cfg.frame_size)  # (1, H, W, 3)
    return full[0], resize_uint8(full, *cfg.lowres_size)[0]


def check_aspect(shape: tuple[int, ...], cfg: ImportConfig, where: str) -> None:
    """Warn (AspectWarning) when frames of `shape` change aspect ratio on their way to cfg.frame_size."""
    (H, W), (h, w) = cfg.frame_size, shape[:2]
    if abs(w / h - W / H) > 0.01 * W / H:
        warnings.warn(f"{where}: frames of {h}x{w} px are resized to {H}x{W} px (aspect {w / h:.3f} -> {W / H:.3f}): "
                      "they come out stretched; pass frame_size with their aspect ratio to keep it", AspectWarning, 3)


def image_files(folder: Path) -> list[Path]:
    """The frames of an image folder (IMAGE_SUFFIXES), sorted by name; ValueError when there are none."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no frames ({', '.join(IMAGE_SUFFIXES)} files); put the episode's frames "
                         "there, named so that sorting by name gives their order")
    return files


def read_image(path: Path) -> np.ndarray:
    """One image as a uint8 array; ValueError naming the file when it cannot be decoded."""
    import imageio.v3 as iio

    try:
        img = iio.imread(path)
    except Exception as e:
        raise ValueError(f"cannot read image {path} ({type(e).__name__}: {e}); replace or remove it") from None
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image {path} is {img.shape} {img.dtype}; frames must be 8-bit grey, RGB or RGBA")
    return img


def video_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(label, frame) of each frame of a video file, streamed; ValueError naming the file when it cannot be read."""
    import imageio.v3 as iio

    try:
        for t, frame in enumerate(iio.imiter(path)):
            yield f"{path} frame {t}", frame
    except Exception as e:
        raise ValueError(f"cannot read video {path} ({type(e).__name__}: {e}); check the file, or convert it to "
                         "mp4 (PyAV reads it: pip install av)") from None


def frame_source(src: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(label, frame) pairs of an image folder or a video file."""
    if not src.exists():
        raise FileNotFoundError(f"frames {src} not found: pass an image folder or a video file")
    if src.is_dir():
        return ((str(p), read_image(p)) for p in image_files(src))
    return video_frames(src)


def count_frames(src: Path) -> int | None:
    """The frame count of an image folder (None for a video: known only once read)."""
    return len(image_files(src)) if src.is_dir() else None


def read_actions(path: Path, names: list[str]) -> list[int]:
    """Action indices of an actions CSV: a header row and an `action` column holding indices 0..n-1 or names."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if ACTION_COLUMN not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no {ACTION_COLUMN!r} column (columns: {reader.fieldnames}); write a header "
                             f"row with an {ACTION_COLUMN!r} column: one row per transition, an index or a name")
        return [action_index(row[ACTION_COLUMN], names, path, i + 2) for i, row in enumerate(reader)]


def action_index(value: str | None, names: list[str], path: Path, line: int) -> int:
    """One CSV cell as an action index; ValueError naming the file and line when it is out of range or unknown."""
    v = (value or "").strip()
    if v in names:
        return names.index(v)
    try:
        a = int(v)
    except ValueError:
        raise ValueError(f"{path} line {line}: unknown action {v!r}; known names: {names}") from None
    if not 0 <= a < len(names):
        raise ValueError(f"{path} line {line}: action {a} outside 0..{len(names) - 1} ({len(names)} action names)")
    return a


# ----------------------------------------------------------------------------------------------------------- write
def write_episode(path: Path, frames: Iterator[tuple[str, np.ndarray]], actions: list[int] | Callable[[int], int],
                  cfg: ImportConfig, attrs: dict, states: StateRows | None = None) -> int:
    """Stream frames into one episode file (atomic, storage.EpisodeWriter); `actions` the T-1 actions, or a function
    of the frame number giving the action that led to it; `states` the vehicle states and ids (h5_states) or None.
    Returns the frame count; the file is dropped on error."""
    H, W = cfg.frame_size
    h, w = cfg.lowres_size
    n_slots = 0 if states is None else states.shape[1]
    writer = EpisodeWriter(path, frame_shape=(H, W, 3), lowres_shape=(h, w, 3), n_slots=n_slots,
                           state_fields=STATE_FIELDS if n_slots else (), attrs=attrs)
    try:
        first = None
        for t, (label, frame) in enumerate(frames):
            first = check_frame(frame, first, label, cfg)
            action = None if t == 0 else actions[t - 1] if isinstance(actions, list) else actions(t)
            row = (None, None) if states is None else states.row(t)
            writer.append(*fit(frame, cfg), *row, action)
        n = writer.n
        if n == 0:
            raise ValueError(f"{path.name}: no frames to write")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return n


def check_frame(frame: np.ndarray, first: tuple[int, ...] | None, label: str, cfg: ImportConfig) -> tuple[int, ...]:
    """The episode's frame shape; ValueError when this frame's differs from the first one's (AspectWarning once)."""
    if first is None:
        check_aspect(frame.shape, cfg, label)
        return frame.shape
    if frame.shape != first:
        raise ValueError(f"{label} is {frame.shape[:2]} px but the episode's first frame is {first[:2]}: the frames "
                         "of one episode must share one size; resize or remove the odd ones")
    return first


def frames_attrs(index: int, cfg: ImportConfig, names: list[str], frames: Path, actions: Path) -> dict:
    """Attributes of an episode imported from frames + CSV (names only, no paths: the bytes do not depend on them)."""
    return {"episode": index, "seed": cfg.seed, "action_names": list(names),
            "source": {"kind": "frames_csv", "frames": frames.name, "actions": actions.name}}


def import_episode(frames: str | Path, actions: str | Path, names: list[str], cfg: ImportConfig,
                   episode: int = 0) -> Path:
    """Import one episode (image folder or video + actions CSV) as episode `episode` of cfg.out; a finished one is
    kept. Writes dataset.json and index.json."""
    out = Path(cfg.out)
    prepare_manifest(out, manifest(cfg, {"kind": "frames_csv"}, names))
    path = out / episode_name(episode)
    if not path.exists():
        _import_one(Path(frames), Path(actions), names, cfg, path, episode)
    write_index(out)
    return path


def _import_one(frames: Path, actions: Path, names: list[str], cfg: ImportConfig, path: Path, episode: int) -> None:
    """Check the counts of one frames + CSV pair and write it."""
    acts = read_actions(actions, names)
    n = count_frames(frames) if frames.exists() else None
    if n is not None and n != len(acts) + 1:
        raise ValueError(mismatch(frames, n, actions, len(acts)))
    write_episode(path, _limited(frame_source(frames), len(acts) + 1, frames, actions, len(acts)), acts, cfg,
                  frames_attrs(episode, cfg, names, frames, actions))


def _limited(frames: Iterator[tuple[str, np.ndarray]], n: int, src: Path, csv_path: Path,
             rows: int) -> Iterator[tuple[str, np.ndarray]]:
    """The first `n` frames; raises the mismatch (counting every frame) when there are more or fewer."""
    t = 0
    for t, item in enumerate(frames, 1):
        if t > n:
            raise ValueError(mismatch(src, n + 1 + sum(1 for _ in frames), csv_path, rows))
        yield item
    if t < n:
        raise ValueError(mismatch(src, t, csv_path, rows))


def mismatch(frames: Path, n: int, actions: Path, rows: int) -> str:
    """The message for frame and action counts that do not fit (T frames need T-1 actions)."""
    return (f"{frames} has {n} frames but {actions} has {rows} action rows: an episode of T frames needs T-1 "
            f"actions (one per transition, {n - 1} here); fix the CSV or the frames")


def episode_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(frames, actions CSV) per episode of a folder: subfolders with images + actions.csv, or videos with a CSV of
    the same stem beside them; sorted by name (episode k = the k-th)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of episodes")
    pairs = [(d, d / "actions.csv") for d in sorted(root.iterdir()) if d.is_dir()]
    pairs += [(v, v.with_suffix(".csv")) for v in sorted(root.iterdir()) if v.suffix.lower() in VIDEO_SUFFIXES]
    if not pairs:
        raise ValueError(f"{root} holds no episodes: put one subfolder per episode (frames + actions.csv) or one "
                         "video per episode with a CSV of the same name beside it")
    missing = [str(a) for _, a in pairs if not a.exists()]
    if missing:
        raise FileNotFoundError(f"actions CSV missing for {len(missing)} episode(s): {missing}")
    return sorted(pairs)


def import_folder(root: str | Path, names: list[str], cfg: ImportConfig, progress: bool = True) -> Path:
    """Import every episode of a folder (episode_pairs) into cfg.out; finished episodes are kept on a rerun."""
    out = Path(cfg.out)
    pairs = episode_pairs(Path(root))
    prepare_manifest(out, manifest(cfg, {"kind": "frames_csv"}, names))
    for k, (frames, actions) in enumerate(tqdm(pairs, desc="import", unit="episode", disable=not progress)):
        if not (out / episode_name(k)).exists():
            _import_one(frames, actions, names, cfg, out / episode_name(k), k)
    write_index(out)
    return out


# ----------------------------------------------------------------------------------------------------------- HDF5
def h5_names(f, path: Path, names: list[str] | None) -> list[str]:
    """Action names of an HDF5 episode: `names` when given, else its action_names attribute (a JSON list)."""
    if names:
        return list(names)
    if "action_names" not in f.attrs:
        raise ValueError(f"{path} has no action_names attribute (a JSON list of names); add it or pass action names")
    raw = f.attrs["action_names"]
    return list(json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)))


def h5_actions(f, path: Path, n_names: int) -> list[int]:
    """The (T-1,) integer actions of an HDF5 episode, checked against its frames and the action count."""
    for key in ("frames", "actions"):
        if key not in f:
            raise ValueError(f"{path} has no {key!r} dataset; an episode needs frames (T, H, W, 3) uint8 and actions "
                             "(T-1,) int (data/README.md)")
    frames, actions = f["frames"], f["actions"][()]
    if frames.ndim != 4 or frames.shape[3] not in (3, 4) or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames is {frames.shape} {frames.dtype}, expected (T, H, W, 3) uint8")
    if actions.ndim != 1 or actions.dtype.kind not in "iu":
        raise ValueError(f"{path}: actions is {actions.shape} {actions.dtype}, expected (T-1,) integers")
    if len(actions) != len(frames) - 1:
        raise ValueError(f"{path} has {len(frames)} frames but {len(actions)} actions: an episode of T frames needs "
                         f"T-1 actions (one per transition)")
    bad = sorted({int(a) for a in actions if not 0 <= a < n_names})
    if bad:
        raise ValueError(f"{path}: actions {bad} outside 0..{n_names - 1} ({n_names} action names)")
    return [int(a) for a in actions]


def h5_states(f, path: Path, size: tuple[int, int]):
    """The optional vehicle states of an HDF5 episode as StateRows (px, py scaled to the written frame size),
    or None without a `states` dataset; ValueError when their shape does not fit the frames (data/README.md)."""
    if "states" not in f:
        return None
    st, n = f["states"], len(f["frames"])
    if st.ndim != 3 or st.shape[0] != n or st.shape[2] != len(STATE_FIELDS):
        raise ValueError(f"{path}: states is {st.shape}, expected (T={n}, N, {len(STATE_FIELDS)}) in the order "
                         f"{list(STATE_FIELDS)} (px, py in pixels of the frames)")
    ids = f["vehicle_ids"] if "vehicle_ids" in f else None
    if ids is not None and ids.shape != st.shape[:2]:
        raise ValueError(f"{path}: vehicle_ids is {ids.shape}, expected {st.shape[:2]} (one id per state row)")
    H0, W0 = f["frames"].shape[1:3]
    return StateRows(st, ids, size[1] / W0, size[0] / H0)


class StateRows:
    """States (T, N, F) and ids (T, N) read one frame at a time, px / py scaled to the written frames (no id: -1)."""

    def __init__(self, states, ids, sx: float, sy: float):
        self.states, self.ids, self.sx, self.sy = states, ids, sx, sy
        self.shape = states.shape
        self.px, self.py = STATE_FIELDS.index("px"), STATE_FIELDS.index("py")

    def row(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """States (N, F) float32 with px / py scaled, and ids (N,) int32 of frame t."""
        st = np.asarray(self.states[t], np.float32).copy()
        st[:, self.px] *= self.sx
        st[:, self.py] *= self.sy
        ids = np.asarray(self.ids[t], np.int32) if self.ids is not None else np.full(self.shape[1], -1, np.int32)
        return st, ids


def import_h5(files: list[str | Path], cfg: ImportConfig, names: list[str] | None = None,
              progress: bool = True) -> Path:
    """Import HDF5 episodes (frames + actions + action_names, optional states; data/README.md) in the given order as
    episodes 0..n-1: frames resized, the low-res copy computed, states' pixel columns scaled to the new size;
    finished episodes are kept on a rerun."""
    import h5py

    out, paths = Path(cfg.out), [Path(p) for p in files]
    if not paths:
        raise ValueError("no HDF5 episode files given")
    for k, path in enumerate(tqdm(paths, desc="import", unit="episode", disable=not progress)):
        try:
            f = h5py.File(path, "r")
        except Exception as e:
            raise ValueError(f"cannot read HDF5 file {path} ({type(e).__name__}: {e}); check or replace it") from None
        with f:
            ep_names = h5_names(f, path, names)
            prepare_manifest(out, manifest(cfg, {"kind": "hdf5"}, ep_names))  # a file with other names is refused
            acts = h5_actions(f, path, len(ep_names))
            if not (out / episode_name(k)).exists():
                rows = ((f"{path} frame {t}", f["frames"][t]) for t in range(len(f["frames"])))
                attrs = {"episode": k, "seed": cfg.seed, "action_names": ep_names,
                         "source": {"kind": "hdf5", "file": path.name}}
                write_episode(out / episode_name(k), rows, acts, cfg, attrs, h5_states(f, path, cfg.frame_size))
    write_index(out)
    return out


# ----------------------------------------------------------------------------------------------------------- CLI
def _size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 150x600), got {text!r}") from None
    return h, w


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m piwm_lib.importer", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = ImportConfig()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="dataset folder")
    common.add_argument("--frame-size", type=_size, default=d.frame_size, help="HxW px of the frames (150x600)")
    common.add_argument("--lowres-size", type=_size, default=None, help="HxW px of the low-res copy (frame / 5)")
    common.add_argument("--seed", type=int, default=d.seed)
    common.add_argument("--test-fraction", type=float, default=d.test_fraction)
    common.add_argument("--no-progress", action="store_true")
    fr = sub.add_parser("frames", parents=[common], help="one episode: an image folder or a video + actions CSV")
    fr.add_argument("frames", help="folder of PNG/JPEG frames (sorted by name) or a video file")
    fr.add_argument("actions", help="CSV with a header and an 'action' column: T-1 rows, indices or names")
    fr.add_argument("--action-names", required=True, help="comma-separated names of actions 0..n-1")
    fr.add_argument("--episode", type=int, default=0, help="episode number (a finished one is kept)")
    fo = sub.add_parser("folder", parents=[common], help="every episode of a folder (subfolders or videos + CSVs)")
    fo.add_argument("root")
    fo.add_argument("--action-names", required=True, help="comma-separated names of actions 0..n-1")
    h5 = sub.add_parser("hdf5", parents=[common], help="HDF5 episodes (frames, actions, action_names), in order")
    h5.add_argument("files", nargs="+", help="episode files, in episode order")
    h5.add_argument("--action-names", default="", help="comma-separated names (default: each file's attribute)")
    gy = sub.add_parser("gym", parents=[common], help="record a gymnasium env (rgb_array, Discrete actions)")
    from .recorder import GymConfig  # the recorder imports this module

    g = GymConfig()
    gy.add_argument("env_id")
    gy.add_argument("--episodes", type=int, default=g.episodes)
    gy.add_argument("--frames", type=int, default=g.frames, help="frames per episode at most")
    gy.add_argument("--policy", choices=("random", "fixed"), default=g.policy)
    gy.add_argument("--action", type=int, default=g.action, help="the action of --policy fixed")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> ImportConfig:
    """ImportConfig from the command line (low-res size frame / 5 unless given)."""
    low = a.lowres_size or (a.frame_size[0] // LOWRES_FACTOR, a.frame_size[1] // LOWRES_FACTOR)
    return ImportConfig(out=a.out, frame_size=a.frame_size, lowres_size=low, seed=a.seed,
                        test_fraction=a.test_fraction)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; a refused input ends in one error line naming the file and what to do."""
    a = _parse(argv)
    try:
        cfg = config_from_args(a)
        if a.cmd == "gym":
            from .recorder import GymConfig, record_gym

            record_gym(GymConfig(a.env_id, a.episodes, a.frames, a.policy, a.action), cfg, progress=not a.no_progress)
        elif a.cmd == "hdf5":
            import_h5(a.files, cfg, a.action_names.split(",") if a.action_names else None, not a.no_progress)
        elif a.cmd == "folder":
            import_folder(a.root, a.action_names.split(","), cfg, progress=not a.no_progress)
        else:
            import_episode(a.frames, a.actions, a.action_names.split(","), cfg, a.episode)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m piwm_lib.importer: error: {e}", file=sys.stderr)
        return 2
    print(f"{cfg.out}: imported; check it with python -m piwm_lib.collect check {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
