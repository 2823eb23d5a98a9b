"""Checkpoints that load without running code: tensors in safetensors, everything else in canonical JSON beside them.

    ckpt_<step>.safetensors  model.*, ema.*, optimizer.state.*, rng.* tensors (no pickle; metadata {"format": "pt"})
    ckpt_<step>.json         step, world_size, configs, optimizer groups, scheduler, scaler, dataset fingerprint,
                             where each tensor goes, and the size and sha256 of the .safetensors file (written last:
                             a pair is good only when the two agree)
    latest.json              {"checkpoint": "ckpt_<step>.safetensors", "step": step}

Each file is written under a temporary name and renamed; the same training state gives the same bytes. A bad newest
checkpoint (truncated, garbage, missing) is named in a warning and the newest good one is used instead. Checkpoints of
earlier versions (ckpt_<step>.pt) are read with torch.load(weights_only=True) only, never with pickle's full power.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configs import from_dict, save_json, to_dict
from .dataset import DATASET_FILE, INDEX_FILE
from .edm import Denoiser, EDMConfig
from .runs import resolve
from .unet import UNetConfig

if TYPE_CHECKING:
    from .train import TrainConfig

FORMAT = "piwm-checkpoint-1"  # the "format" field of every ckpt_<step>.json
TENSOR = "__tensor__"  # {"__tensor__": name} in the JSON stands for the tensor `name` of the .safetensors file
NAME = re.compile(r"^ckpt_(\d{8})\.(safetensors|json|pt)$")
LATEST = "latest.json"
LEGACY_UNET = {"action_before_mlp": False}  # UNetConfig fields older checkpoints lack -> how they were trained
NUMPY_GLOBALS = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]  # NumPy RNG arrays


class CorruptCheckpoint(ValueError):
    """A checkpoint that cannot be read completely and safely; the message names the file."""


class CheckpointWarning(UserWarning):
    """A bad checkpoint was skipped in favour of an older good one."""


def saved_before_recipe(config: dict) -> bool:
    """Whether a saved TrainConfig dict predates the published recipe (it has mask_dropout beside a mask kind)."""
    return "mask_dropout" in config


# ----------------------------------------------------------------------------------------------------------- plain form
def split_tensors(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of a nested state, every tensor moved to `tensors` under its dotted path."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {TENSOR: key}
    if isinstance(obj, dict):
        return {str(k): split_tensors(v, f"{key}.{k}" if key else str(k), tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint entry {key!r} is a {type(obj).__name__}: only tensors and plain data are stored")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of split_tensors: put the tensors back where the JSON names them."""
    if isinstance(obj, dict):
        if set(obj) == {TENSOR}:
            return tensors[obj[TENSOR]]
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """Every RNG's state (Python, NumPy, torch CPU and CUDA) as tensors and plain numbers, for the checkpoint."""
    version, key, gauss = random.getstate()
    _, np_key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out = {"python": {"version": version, "state": torch.tensor(key, dtype=torch.int64), "gauss": gauss},
           "numpy": {"key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                     "gauss": float(cached)},
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() saved (or the pickled tuples of a checkpoint of an earlier version)."""
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        py = (py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"])
        npy = ("MT19937", npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------- files
def ckpt_name(step: int) -> str:
    """File name of the checkpoint of optimizer step `step`."""
    return f"ckpt_{step:08d}.safetensors"


def meta_path(path: Path) -> Path:
    """The JSON half of a checkpoint pair."""
    return path.with_suffix(".json")


def data_fingerprint(data_dir: str | Path) -> str | None:
    """sha256 of a dataset's content (manifest, episode files, lengths, split; not its path), None without an index."""
    root = resolve(data_dir)
    try:
        manifest = json.loads((root / DATASET_FILE).read_text())
        rows = json.loads((root / INDEX_FILE).read_text())["episodes"]
        episodes = [[r["file"], r["frames"], r["split"]] for r in rows]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    text = json.dumps({"manifest": manifest, "episodes": episodes}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256(path: Path) -> str:
    """sha256 of a file, read in 16 MB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(out: Path, step: int, state: dict, keep: int) -> Path:
    """Write ckpt_<step>.safetensors, then its JSON, then latest.json (each atomically); keep the newest `keep`."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, "", tensors)
    path = out / ckpt_name(step)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})  # one metadata key: its order cannot vary
    meta = {"format": FORMAT, "bytes": tmp.stat().st_size, "sha256": sha256(tmp), "state": skeleton}
    os.replace(tmp, path)
    save_json(meta, meta_path(path))
    save_json({"checkpoint": path.name, "step": step}, out / LATEST)
    prune(out, keep, step)
    return path


def steps_on_disk(out: Path) -> list[int]:
    """Steps of the checkpoint files in a run folder (either format, good or not), newest first."""
    found = {int(m.group(1)) for p in out.glob("ckpt_*") if (m := NAME.match(p.name))}
    return sorted(found, reverse=True)


def prune(out: Path, keep: int, upto: int) -> None:
    """Remove every file of all but the newest `keep` checkpoints up to step `upto` (later ones are left to be
    overwritten: a run resumed from before them)."""
    for step in [s for s in steps_on_disk(out) if s <= upto][keep:]:
        for p in out.glob(f"ckpt_{step:08d}.*"):
            if NAME.match(p.name):
                p.unlink()


def save_checkpoint(out: Path, step: int, model: torch.nn.Module, ema: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    scaler: torch.amp.GradScaler | None, cfg: TrainConfig, keep: int, world_size: int = 1) -> Path:
    """Checkpoint a training run: weights, EMA, optimizer, scheduler, loss scaler, step, RNG, configs (not out_dir:
    the folder holding it) and the dataset fingerprint; returns the .safetensors path."""
    config = {k: v for k, v in to_dict(cfg).items() if k != "out_dir"}
    state = {"step": step, "world_size": world_size, "model": model.state_dict(), "ema": ema.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(), "config": config,
             "unet": to_dict(cfg.unet), "edm": to_dict(cfg.denoiser_edm), "data": data_fingerprint(cfg.data_dir)}
    return write_checkpoint(out, step, state, keep)


# ----------------------------------------------------------------------------------------------------------- reading
def read_meta(path: Path) -> dict:
    """The JSON half of a checkpoint pair, checked against its .safetensors file's size (not yet its hash)."""
    mp = meta_path(path)
    try:
        meta = json.loads(mp.read_text())
        size = path.stat().st_size
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"checkpoint {path} is incomplete or unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "state" not in meta:
        raise CorruptCheckpoint(f"checkpoint {mp} is not a {FORMAT} file")
    if meta.get("bytes") != size:
        raise CorruptCheckpoint(f"checkpoint {path} has {size} bytes, {mp.name} says {meta.get('bytes')}: "
                                "it was truncated or belongs to another write")
    return meta


def _read_new(path: Path, parts: tuple[str, ...] | None) -> dict:
    """State of a safetensors + JSON pair, verified by its sha256 (only the top-level `parts` when given)."""
    meta = read_meta(path)
    if sha256(path) != meta.get("sha256"):
        raise CorruptCheckpoint(f"checkpoint {path} does not match the sha256 in {meta_path(path).name}: corrupt")
    skeleton = {k: v for k, v in meta["state"].items() if parts is None or k in parts}
    try:
        with safe_open(str(path), "pt") as f:
            names = [k for k in f.keys() if k.split(".")[0] in skeleton]
            tensors = {k: f.get_tensor(k) for k in names}
        return join_tensors(skeleton, tensors)
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({e})") from e


def _read_old(path: Path) -> dict:
    """State of a ckpt_<step>.pt of an earlier version, unpickled with torch's weights-only loader (no code runs)."""
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CorruptCheckpoint(
            f"checkpoint {path} cannot be read safely: it is a pickle file holding more than tensors and plain data "
            f"({type(e).__name__}), and unpickling it could run code. Retrain the run, or convert the file to "
            "ckpt_<step>.safetensors + .json (save_checkpoint) in a session where you trust its origin") from e
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def read_checkpoint(path: str | Path, parts: tuple[str, ...] | None = None) -> dict:
    """A checkpoint's state (ckpt_<step>.safetensors or its .json; an earlier version's .pt read weights-only)."""
    path = resolve(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix == ".pt":
        state = _read_old(path)
        return state if parts is None else {k: v for k, v in state.items() if k in parts}
    if path.suffix != ".safetensors":
        raise CorruptCheckpoint(f"{path} is not a checkpoint (ckpt_<step>.safetensors)")
    return _read_new(path, parts)


def check(path: Path) -> None:
    """Raise CorruptCheckpoint unless `path` looks whole: its JSON, size and safetensors header (fast, no hash)."""
    if path.suffix == ".pt":
        _read_old(path)
        return
    read_meta(path)
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as e:
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({e})") from e


# ----------------------------------------------------------------------------------------------------------- finding
def checkpoints(out: Path) -> list[Path]:
    """One path per checkpoint on disk, newest first: the .safetensors of a pair, else an earlier version's .pt."""
    paths = []
    for step in steps_on_disk(out):
        new = out / ckpt_name(step)
        old = new.with_suffix(".pt")
        paths.append(old if old.exists() and not (new.exists() or meta_path(new).exists()) else new)
    return paths


def _pointer(out: Path) -> Path | None:
    """The checkpoint latest.json names, None (with a warning) when latest.json is unreadable or names nothing."""
    p = out / LATEST
    try:
        name = json.loads(p.read_text())["checkpoint"]
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{name!r} is not a checkpoint name")
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"{p} is unreadable ({e}): using the newest good checkpoint on disk", CheckpointWarning, 3)
        return None
    return out / name


def _candidates(out: Path) -> list[Path]:
    """latest.json's checkpoint first, then every other one on disk, newest first; [] for a fresh run."""
    on_disk = checkpoints(out)
    if not (out / LATEST).exists():
        if on_disk:
            warnings.warn(f"{out / LATEST} is missing: using the newest good checkpoint on disk", CheckpointWarning, 3)
        return on_disk
    first = _pointer(out)
    if first is None:
        return on_disk
    return [first] + [p for p in on_disk if p != first]


def first_good(out_dir: str | Path, read: Callable[[Path], Any]) -> tuple[Path, Any] | None:
    """(path, read(path)) of the first readable candidate checkpoint, warning on each bad one; None when none is."""
    for path in _candidates(resolve(out_dir)):
        try:
            return path, read(path)
        except (CorruptCheckpoint, FileNotFoundError) as e:
            warnings.warn(f"skipping {path.name}: {e}", CheckpointWarning, 3)
    return None


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest good checkpoint of a run folder (latest.json's when it is whole), or None for a fresh run."""
    found = first_good(out_dir, check)
    return found[0] if found else None


def read_latest(out_dir: str | Path, parts: tuple[str, ...] | None = None) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint of a run folder that reads completely, or None."""
    return first_good(out_dir, lambda p: read_checkpoint(p, parts))


def load_denoiser(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> Denoiser:
    """A trained Denoiser from a checkpoint file or a run folder (its newest good checkpoint); EMA weights default."""
    path, key = resolve(path), "ema" if ema else "model"
    parts = (key, "config", "unet", "edm")
    if path.is_dir():
        found = read_latest(path, parts)
        if found is None:
            raise FileNotFoundError(f"{path} has no readable checkpoint: train first (piwm_lib.train)")
        state = found[1]
    elif not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    else:
        state = read_checkpoint(path, parts)
    unet = {**LEGACY_UNET, **state["unet"]} if saved_before_recipe(state["config"]) else state["unet"]
    model = Denoiser(from_dict(UNetConfig, unet), from_dict(EDMConfig, state["edm"]))
    model.load_state_dict(state[key])
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------- resume
def flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value} (lists kept whole)."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(old: dict, new: dict, ignore: set[str]) -> list[str]:
    """'field: old -> new' for every field (nested ones dotted) that differs, except top-level `ignore` ones."""
    a, b = flat(old), flat(new)
    keys = sorted(k for k in set(a) | set(b) if k.split(".")[0] not in ignore and a.get(k) != b.get(k))
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in keys]


def optimizer_state(saved: dict) -> dict:
    """A saved optimizer state_dict as load_state_dict wants it (JSON turned its parameter ids into strings)."""
    return {**saved, "state": {int(k): v for k, v in saved["state"].items()}}
