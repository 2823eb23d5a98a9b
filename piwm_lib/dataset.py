"""A collected dataset: manifest, index with train/test split, integrity check, random training windows."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .bev import ACTIONS, LONGITUDINAL, STATE_FIELDS, VEHICLE_RGB, in_view
from .configs import save_json
from .frames import resize_uint8
from .storage import CorruptEpisodeError, Episode

DATASET_FILE = "dataset.json"  # settings shared by every episode (seed, env, agent)
INDEX_FILE = "index.json"  # episodes, lengths and split
SPLIT_RULE = "episode k is test when ceil(k * test_fraction) > ceil((k - 1) * test_fraction)"  # see split_of


def read_manifest(root: str | Path) -> dict:
    """The dataset.json of `root`, with a clear error when it is missing or damaged (ValueError naming it)."""
    path = Path(root) / DATASET_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {root} is not a collected dataset (run piwm_lib.collect first)")
    try:
        man = json.loads(path.read_bytes())
        if not isinstance(man, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:  # bad JSON, bad UTF-8, or not an object
        raise ValueError(f"{path} is damaged ({e}); restore it, or delete it and rerun the collection with the "
                         "dataset's settings to rewrite it") from None
    return man


def split_of(episode: int, test_fraction: float) -> str:
    """'test' for episodes 1, 1 + 1/f, 1 + 2/f, ... else 'train': episodes 0..n-1 hold ceil((n - 1) f) test
    episodes (both splits non-empty from n = 2 on), and adding episodes never moves one to the other split."""
    f = Fraction(str(test_fraction))  # exact: 30 * 0.1 must not round up to 3.0000000000000004
    return "test" if episode >= 1 and math.ceil(episode * f) > math.ceil((episode - 1) * f) else "train"


def index_row(path: Path) -> dict:
    """One index.json row; reads every chunk of the file (checksums), raising CorruptEpisodeError naming it. Vehicle
    statistics (cars_in_view, vehicles_seen, lane_changes) only for episodes with vehicle states."""
    with Episode(path) as ep:
        ep.verify()
        states = ep.read("states")
        commands, lane_changes = action_stats(ep.read("actions"), states, ep.action_names)
        row = {"file": path.name, "episode": int(ep.attrs["episode"]), "frames": ep.n_frames,
               "crashed": bool(ep.attrs.get("crashed", False))}
        if ep.has_states:
            H, W = ep.f["frames"].shape[1:3]  # imported episodes have no env_config
            row["cars_in_view"] = round(float(cars_in_view(states, {"screen_width": W, "screen_height": H}).mean()), 3)
            row["vehicles_seen"] = int(len(np.unique(ep.read("vehicle_ids"))))
        row.update({"bytes": path.stat().st_size, "commands": commands})
        if lane_changes is not None:
            row["lane_changes"] = lane_changes
        return row


def write_index(root: str | Path) -> dict:
    """Scan and verify the episode files of `root` and write index.json: readable episodes with their split
    (split_of), unreadable files under "broken"."""
    root = Path(root)
    man = read_manifest(root)
    rows, broken = [], []
    for path in sorted(root.glob("episode_*.h5")):
        try:
            rows.append(index_row(path))
        except CorruptEpisodeError as e:
            broken.append({"file": path.name, "error": str(e)})
        except Exception as e:  # anything else a damaged file makes HDF5 or our decoding raise
            broken.append({"file": path.name, "error": str(CorruptEpisodeError(path, f"{type(e).__name__}: {e}"))})
    for row in rows:
        row["split"] = split_of(row["episode"], man["test_fraction"])
    frames = sum(r["frames"] for r in rows)
    per100 = 100.0 / max(frames, 1)
    index = {"split_rule": SPLIT_RULE, "episodes": rows, "broken": broken, "frames": frames,
             "bytes_per_frame": round(sum(r["bytes"] for r in rows) / max(frames, 1), 1),
             "commands_per_100_frames": {a: round(sum(r["commands"].get(a, 0) for r in rows) * per100, 2)
                                         for a in action_names(man)}}
    if any("lane_changes" in r for r in rows):
        index["lane_changes_per_100_frames"] = round(sum(r.get("lane_changes", 0) for r in rows) * per100, 2)
    save_json(index, root / INDEX_FILE)
    return index


def collected(manifest: dict) -> bool:
    """Whether a dataset was collected from HighwayEnv by piwm_lib.collect (its dataset.json has `env`): the masks,
    the physics metrics and the quality bar read its palette and camera, which imported episodes need not have."""
    return "env" in manifest


def action_names(manifest: dict) -> tuple[str, ...]:
    """The action names of a dataset (dataset.json action_names; else the collected scenario's meta-actions: 5, or
    SLOWER / IDLE / FASTER without lateral actions, as intersection-v0)."""
    if "action_names" in manifest:
        return tuple(manifest["action_names"])
    return ACTIONS if manifest.get("env", {}).get("lateral", True) else LONGITUDINAL


def action_stats(actions: np.ndarray, states: np.ndarray,
                 names: tuple[str, ...] = ACTIONS) -> tuple[dict[str, int], int | None]:
    """Commands per action name and completed ego lane changes (its lane index changing), of an episode:
    actions (T-1,) int, states (T, N, F) with the ego in slot 0; lane changes None without vehicle states (N = 0)."""
    counts = np.bincount(np.asarray(actions, np.int64), minlength=len(names))
    commands = {a: int(c) for a, c in zip(names, counts)}
    if states.shape[1] == 0:
        return commands, None
    lane = states[:, 0, STATE_FIELDS.index("lane")]  # (T,)
    return commands, int(np.count_nonzero(np.diff(lane) != 0))


def cars_in_view(states: np.ndarray, env_config: dict) -> np.ndarray:
    """Other vehicles (not the ego) wholly inside the frame, per frame: (T,) int."""
    return in_view(states, env_config["screen_width"], env_config["screen_height"])[:, 1:].sum(axis=1)


def _read_index(path: Path) -> dict:
    """index.json as a dict; {} when it is missing or damaged (the caller rebuilds it from the episode files)."""
    try:
        index = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


class Dataset:
    """A collected dataset folder: manifest and index; episodes open lazily, a broken file does not stop the rest."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.action_names = action_names(self.manifest)  # names of actions 0..n-1
        self.index = _read_index(self.root / INDEX_FILE)
        if self.index.get("split_rule") != SPLIT_RULE:  # missing, damaged, or written before the split was stable
            self.index = write_index(self.root)

    def episodes(self, split: str | None = None) -> list[dict]:
        """Index rows, optionally of one split ('train' or 'test')."""
        if split not in (None, "train", "test"):
            raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
        return [r for r in self.index["episodes"] if split is None or r["split"] == split]

    def open(self, row_or_episode: dict | int) -> Episode:
        """Open one episode (by index row or episode number); raises CorruptEpisodeError naming a broken file."""
        if isinstance(row_or_episode, int):
            rows = [r for r in self.index["episodes"] if r["episode"] == row_or_episode]
            if not rows:
                raise KeyError(f"episode {row_or_episode} is not in {self.root / INDEX_FILE}")
            row_or_episode = rows[0]
        return Episode(self.root / row_or_episode["file"])


def test_windows(root: str | Path, length: int, max_windows: int = 0, min_windows: int = 2,
                 prefer_actions: tuple[int, ...] = (), after: int = 0) -> dict[str, np.ndarray]:
    """Non-overlapping windows of `length` frames from the test split, evenly spread when `max_windows` > 0:
    lowres (N, L, 30, 120, 3), frames (N, L, 150, 600, 3) uint8, actions (N, L-1) int64, states (N, L, V, 11),
    episode (N,) (the same windows for every run on the same dataset, so runs compare pairwise); raises naming the
    numbers when fewer than `min_windows` exist. With `prefer_actions`, windows whose actions from index `after` on
    contain one of them (e.g. lane-change commands after the context) are taken first (read from the actions only)."""
    ds = Dataset(root)
    cands = [(r, s) for r in ds.episodes("test") for s in range(0, r["frames"] - length + 1, length)]
    if max_windows and len(cands) > max_windows:
        cands = choose_windows(ds, cands, length, max_windows, prefer_actions, after)
    if len(cands) < min_windows:
        raise ValueError(f"the test split of {root} has {len(cands)} windows of {length} frames; need {min_windows}: "
                         "lower the horizon or the number of windows, or collect longer test episodes")
    out: dict[str, list] = {"lowres": [], "frames": [], "actions": [], "states": [], "episode": []}
    for r, s in cands:
        with ds.open(r) as ep:
            for key in ("lowres", "frames", "states"):
                out[key].append(ep.read(key, s, s + length))
            out["actions"].append(ep.read("actions", s, s + length - 1).astype(np.int64))
            out["episode"].append(r["episode"])
    return {k: np.stack(v) if k != "episode" else np.array(v) for k, v in out.items()}


def spread(items: list, k: int) -> list:
    """`k` of `items`, evenly spread from the first to the last (all of them when k >= len(items))."""
    if k <= 0 or not items:
        return []
    return [items[j] for j in np.unique(np.linspace(0, len(items) - 1, k).astype(int))]


def choose_windows(ds: Dataset, cands: list[tuple[dict, int]], length: int, n: int, prefer: tuple[int, ...],
                   after: int) -> list[tuple[dict, int]]:
    """`n` of the candidate (row, start) windows, evenly spread: first over those whose actions[after:] contain one
    of `prefer`, then over the rest; in dataset order. Reads each episode's actions once, no frames."""
    hit = [False] * len(cands)
    if prefer:
        actions = {}
        for r in {id(r): r for r, _ in cands}.values():
            with ds.open(r) as ep:
                actions[r["file"]] = ep.read("actions")
        hit = [bool(np.isin(actions[r["file"]][s + after:s + length - 1], prefer).any()) for r, s in cands]
    return [cands[i] for i in pick(hit, n)]


def pick(hit: list[bool], n: int) -> list[int]:
    """Indices of `n` items, evenly spread over the hits first, then over the others; sorted."""
    first = [i for i, h in enumerate(hit) if h]
    rest = [i for i, h in enumerate(hit) if not h]
    return sorted(spread(first, min(n, len(first))) + spread(rest, n - len(first)))


class WindowDataset(torch.utils.data.Dataset):
    """Every window of `length` consecutive frames (and the actions between them) of one split, read on demand."""

    def __init__(self, root: str | Path, split: str = "train", length: int = 9, key: str = "lowres",
                 max_open: int = 64, extra: dict[str, tuple[str, int, int]] | None = None):
        """extra: more arrays per window, name -> (dataset key, first, stop) frame offsets within the window,
        e.g. {"mask_frames": ("frames", 3, 8)} for the full-res frames the masks are built from."""
        ds = Dataset(root)
        self.root, self.length, self.key, self.max_open = ds.root, length, key, max_open
        self.extra = dict(extra or {})
        bad = {n: v for n, v in self.extra.items() if not 0 <= v[1] < v[2] <= length}
        if bad:
            raise ValueError(f"extra offsets must satisfy 0 <= first < stop <= length={length}, got {bad}")
        rows = [r for r in ds.episodes(split) if r["frames"] >= length]
        self.files = [r["file"] for r in rows]
        counts = np.array([r["frames"] - length + 1 for r in rows], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])  # window k lives in episode searchsorted(k)
        self._open: OrderedDict[str, Episode] = OrderedDict()  # per-process cache of open files

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, k: int) -> tuple[str, int]:
        """Episode file and start frame of window `k`."""
        if not 0 <= k < len(self):
            raise IndexError(f"window {k} out of range [0, {len(self)})")
        e = int(np.searchsorted(self.offsets, k, side="right") - 1)
        return self.files[e], int(k - self.offsets[e])

    def _episode(self, name: str) -> Episode:
        ep = self._open.pop(name, None) or Episode(self.root / name)
        self._open[name] = ep
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        return ep

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        name, start = self.locate(k)
        ep = self._episode(name)
        frames, actions = ep.window(start, self.length, self.key)
        out = {"frames": torch.from_numpy(frames),  # (L, H, W, 3) uint8
               "actions": torch.from_numpy(actions.astype(np.int64))}  # (L-1,)
        for out_name, (key, first, stop) in self.extra.items():
            out[out_name] = torch.from_numpy(ep.read(key, start + first, start + stop))  # (stop - first, ...)
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # open HDF5 handles do not cross process boundaries
        return state


def check_episode(path: str | Path, sample_every: int = 1, manifest: dict | None = None) -> list[str]:
    """Every problem found in one episode file (empty when it is sound): unreadable metadata or chunks, shapes,
    dtypes, lengths, action range, states vs frames (with vehicle states), agreement with the dataset's `manifest`
    (frame sizes, action names) when given. Never raises on a damaged file."""
    try:
        return _check_episode(path, sample_every, manifest or {})
    except CorruptEpisodeError as e:
        return [str(e)]
    except Exception as e:  # HDF5 raises many types on damaged files; report, never crash the whole check
        return [str(CorruptEpisodeError(path, f"{type(e).__name__}: {e}"))]


def _expected(ep: Episode, manifest: dict) -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of each dataset: from env_config (HighwayEnv), else the manifest's sizes or the file's own."""
    n = ep.n_frames
    if "env_config" in ep.attrs:
        cfg = ep.meta("env_config")
        (H, W), (h, w), slots = (cfg["screen_height"], cfg["screen_width"]), (cfg["lowres_height"],
                                                                               cfg["lowres_width"]), cfg["vehicles"] + 1
    else:
        H, W = manifest.get("frame_size") or ep.f["frames"].shape[1:3]
        h, w = manifest.get("lowres_size") or ep.f["lowres"].shape[1:3]
        slots = ep.f["states"].shape[1] if ep.has_states else 0
    want = {"frames": ((n, H, W, 3), np.uint8), "lowres": ((n, h, w, 3), np.uint8)}
    if "env_config" in ep.attrs or ep.has_states:
        want["states"] = ((n, slots, len(ep.state_fields)), np.float32)
        want["vehicle_ids"] = ((n, slots), np.int32)
    return {**want, "actions": ((n - 1,), np.int8)}


def _check_episode(path: str | Path, sample_every: int, manifest: dict) -> list[str]:
    """check_episode's checks; a damaged file may raise anything."""
    problems: list[str] = []
    with Episode(path) as ep:
        try:
            for key, (shape, dtype) in _expected(ep, manifest).items():
                if key not in ep.f:
                    problems.append(f"{key} is missing, expected {shape} {np.dtype(dtype)}")
                elif ep.f[key].shape != shape or ep.f[key].dtype != dtype:
                    problems.append(f"{key} is {ep.f[key].shape} {ep.f[key].dtype}, expected {shape} {np.dtype(dtype)}")
            if "action_names" in manifest and tuple(manifest["action_names"]) != ep.action_names:
                problems.append(f"action_names {list(ep.action_names)} differ from the dataset's "
                                f"{manifest['action_names']}")
            if problems:
                return problems
            ep.read("vehicle_ids")  # checksums of the one dataset the checks below do not decode
            actions, n = ep.read("actions"), len(ep.action_names)
            if actions.size and (actions.min() < 0 or actions.max() > n - 1):
                problems.append(f"actions outside 0..{n - 1}: {sorted(set(actions.tolist()))}")
            states = ep.read("states") if ep.has_states else None  # decoded (checksums) even where not compared
            palette = "env_config" in ep.attrs  # collected: HighwayEnv's colours under every vehicle centre
            problems += _check_frames(ep, states if palette else None, sample_every)
        except CorruptEpisodeError as e:
            problems.append(str(e))
    return problems


def _check_frames(ep: Episode, states: np.ndarray | None, sample_every: int) -> list[str]:
    """Decode every frame chunk; lowres[0] must be the low-res copy of frames[0]; with vehicle states, the GT pixel
    centre of each in-view vehicle must show a vehicle colour (HighwayEnv's palette)."""
    problems, hits, total = [], 0, 0
    px_i, py_i = STATE_FIELDS.index("px"), STATE_FIELDS.index("py")
    for start in range(0, ep.n_frames, 64):
        frames = ep.read("frames", start, start + 64)  # (B, H, W, 3)
        lowres = ep.read("lowres", start, start + 64)
        if start == 0 and not np.array_equal(resize_uint8(frames[:1], *lowres.shape[1:3])[0], lowres[0]):
            problems.append("lowres[0] is not the bicubic-antialiased copy of frames[0]")
        if states is None:
            continue
        st = states[start:start + 64:sample_every]
        fr = frames[::sample_every]
        inside = in_view(st, frames.shape[2], frames.shape[1])
        b, n = np.nonzero(inside)
        colours = fr[b, st[b, n, py_i].astype(int), st[b, n, px_i].astype(int)]  # (K, 3)
        hits += int((colours[:, None, :] == VEHICLE_RGB[None]).all(-1).any(-1).sum())
        total += len(b)
    if total and hits / total < 0.98:
        problems.append(f"only {hits}/{total} vehicle centres land on vehicle-coloured pixels "
                        "(states do not match frames)")
    return problems


def check_dataset(root: str | Path, progress: bool = True) -> dict[str, list[str]]:
    """Check every episode file of a dataset; returns {file: problems} for the broken ones only."""
    root = Path(root)
    out, manifest = {}, {}
    try:
        manifest = read_manifest(root)
    except ValueError as e:
        out[str(root / DATASET_FILE)] = [str(e)]
    for path in tqdm(sorted(root.glob("episode_*.h5")), desc="check", unit="episode", disable=not progress):
        problems = check_episode(path, manifest=manifest)
        if problems:
            out[str(path)] = problems
    return out
