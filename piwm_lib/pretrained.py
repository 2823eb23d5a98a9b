"""Trained world models shipped with the course: built by one command from the course dataset, loaded by name.

    data/pretrained/<name>/model.safetensors  the EMA weights (float32; no pickle, nothing runs on load)
    data/pretrained/<name>/model.json         format, name, stage, step, the TrainConfig / U-Net / EDM configs, the
                                              dataset's fingerprint, the upsampler it pairs with, compute spent, and
                                              the size and sha256 of model.safetensors
    data/pretrained/<name>/log.csv            the training log (loss, lr, samples/s, seconds)

`python -m piwm_lib.pretrained build` (`make pretrained`) trains every model of configs/pretrained.yaml in
runs/pretrained/<name>/ (resuming where it stopped: piwm_lib.checkpoint) and exports it here; `load_pretrained(name)`
returns a ready WorldModelEnv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoint import data_fingerprint, read_latest, sha256
from .configs import from_dict, save_json
from .edm import Denoiser, EDMConfig
from .runs import ROOT, resolve
from .unet import UNetConfig
from .validate import ConfigError, check_fields, plain_name

SHIPPED = ROOT / "data" / "pretrained"  # the folder in the repository
FORMAT = "piwm-pretrained-1"
RECIPE = "configs/pretrained.yaml"
WEIGHTS, META, LOG = "model.safetensors", "model.json", "log.csv"


def shipped_root(root: str | Path | None) -> Path:
    """`root`, or the repository's shipped folder when None (looked up at call time, so tests can move it)."""
    return Path(root) if root else SHIPPED


class PretrainedError(ValueError):
    """A shipped model that is missing, corrupt or does not match its description; the message names the file."""


@dataclass(frozen=True)
class ShippedModel:
    """One model of the recipe: its name, the upsampler it pairs with, and its TrainConfig fields (over `train`)."""

    name: str  # data/pretrained/<name>/
    stage: Literal["dynamics", "upsampler"] = "dynamics"  # which network
    upsampler: str = ""  # name of the shipped upsampler a dynamics model pairs with
    train: dict = field(default_factory=dict)  # TrainConfig fields of this model (mask, steps, ...)

    def __post_init__(self) -> None:
        check_fields(self)
        plain_name(self.name, "ShippedModel.name")


# ----------------------------------------------------------------------------------------------------------- export
def seconds_by_step(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(logged steps, wall-clock seconds of training up to each) of a run folder's log.csv, summed over the resumed
    runs (each restarts its `seconds` column); empty arrays when nothing is logged."""
    from .train import read_log
    if not (run / LOG).exists():
        return np.zeros(0, int), np.zeros(0)
    log = read_log(run)
    s, prev = log["seconds"], np.r_[0.0, log["seconds"][:-1]]
    return log["step"].astype(int), np.cumsum(np.where(s >= prev, s - prev, s))  # a drop: a resumed run's new clock


def compute_spent(run: Path) -> dict:
    """Training compute of a run folder from its log.csv: optimizer steps, wall-clock seconds (over resumed runs), and
    the machine it ran on."""
    steps, seconds = seconds_by_step(run)
    return {"steps": int(steps[-1]) if len(steps) else 0, "seconds": round(float(seconds[-1]), 1) if len(seconds)
            else 0.0, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"
            + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")}


def export(run: str | Path, name: str, upsampler: str = "", root: Path | None = None) -> Path:
    """Write the EMA weights of a training run's newest good checkpoint as the shipped model `name`."""
    root = shipped_root(root)
    run, out = resolve(run), Path(root) / plain_name(name, "shipped model name")
    found = read_latest(run, ("ema", "step", "config", "unet", "edm", "data"))
    if found is None:
        raise FileNotFoundError(f"{run} has no readable checkpoint to export as {name}: train it first")
    path, state = found
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS + ".tmp")
    save_file({k: v.contiguous() for k, v in state["ema"].items()}, str(tmp), metadata={"format": "pt"})
    meta = {"format": FORMAT, "name": name, "stage": state["config"]["stage"], "step": state["step"],
            "checkpoint": path.name, "config": state["config"], "unet": state["unet"], "edm": state["edm"],
            "data": state["data"], "upsampler": upsampler, "compute": compute_spent(run),
            "bytes": tmp.stat().st_size, "sha256": sha256(tmp)}
    os.replace(tmp, out / WEIGHTS)
    save_json(meta, out / META)
    if (run / LOG).exists():
        shutil.copyfile(run / LOG, out / LOG)
    return out


# ----------------------------------------------------------------------------------------------------------- loading
def shipped_names(root: Path | None = None) -> list[str]:
    """Names of the models in the shipped folder."""
    root = shipped_root(root)
    return sorted(p.parent.name for p in Path(root).glob(f"*/{META}"))


def read_meta(name: str, root: Path | None = None) -> dict:
    """model.json of a shipped model, checked against its weights file's size and sha256."""
    root = shipped_root(root)
    folder = Path(root) / plain_name(name, "shipped model name")
    meta_path, weights = folder / META, folder / WEIGHTS
    if not meta_path.exists():
        raise PretrainedError(f"no shipped model {name!r} ({meta_path} is missing); shipped: "
                              f"{', '.join(shipped_names(root)) or 'none'}. Build them with `make pretrained`")
    try:
        meta = json.loads(meta_path.read_text())
        size = weights.stat().st_size
    except (OSError, ValueError) as e:
        raise PretrainedError(f"shipped model {name!r}: {e}; restore it (git checkout {folder}) or rebuild it "
                              "(make pretrained)") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PretrainedError(f"{meta_path} is not a {FORMAT} description: restore it (git checkout {folder})")
    if meta.get("bytes") != size or sha256(weights) != meta.get("sha256"):
        raise PretrainedError(f"{weights} does not match {meta_path.name} (size or sha256): the file is corrupt or "
                              f"from another build; restore it (git checkout {folder}) or rebuild it (make pretrained)")
    return meta


def load_shipped(name: str, device: str | torch.device = "cpu", root: Path | None = None) -> tuple[Denoiser, dict]:
    """(Denoiser with the shipped EMA weights, its model.json) of shipped model `name`."""
    root = shipped_root(root)
    meta = read_meta(name, root)
    weights = Path(root) / name / WEIGHTS
    try:
        model = Denoiser(from_dict(UNetConfig, meta["unet"]), from_dict(EDMConfig, meta["edm"]))
        with safe_open(str(weights), "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError) as e:
        raise PretrainedError(f"{weights} does not fit the network {Path(root) / name / META} describes: "
                              f"{str(e)[:300]}") from e
    return model.to(device).eval(), meta


def load_pretrained(name: str = "course-soft", device: str | torch.device = "cpu", cfg=None, seed: int = 0,
                    root: Path | None = None):
    """A ready world model (WorldModelEnv) from a shipped name: the dynamics model, its upsampler, and inference
    settings whose mask is the one the model was trained with (cfg, a WorldModelConfig, overrides the samplers)."""
    root = shipped_root(root)
    from .train import config_from_dict
    from .worldmodel import WorldModelConfig, WorldModelEnv

    dyn, meta = load_shipped(name, device, root)
    if meta["stage"] != "dynamics":
        raise PretrainedError(f"shipped model {name!r} is an upsampler; load a dynamics model (shipped: "
                              f"{', '.join(shipped_names(root))})")
    up = load_shipped(meta["upsampler"], device, root)[0] if meta["upsampler"] else None
    mask = config_from_dict(meta["config"]).mask
    return WorldModelEnv(dyn, up, replace(cfg or WorldModelConfig(), mask=mask), seed=seed)


# ----------------------------------------------------------------------------------------------------------- building
def read_recipe(path: str | Path = RECIPE) -> tuple[dict, list[ShippedModel]]:
    """(the TrainConfig fields every model shares, the models) of a recipe file."""
    path = resolve(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or set(data) != {"train", "models"}:
        raise ConfigError(f"{path} must hold exactly the keys 'train' and 'models'")
    return data["train"], [ShippedModel(name=k, **v) for k, v in data["models"].items()]


def train_config(base: dict, model: ShippedModel, runs: Path):
    """The TrainConfig of one shipped model: the shared fields, its own, out_dir runs/pretrained/<name>."""
    from .train import config_from_dict
    return config_from_dict({**base, **model.train, "stage": model.stage, "out_dir": str(runs / model.name)})


def build(recipe: str | Path = RECIPE, names: list[str] | None = None, root: Path | None = None,
          runs: Path | None = None) -> list[Path]:
    """Train (or resume) each model of the recipe to its steps in runs/pretrained/<name>/, then export it."""
    root = shipped_root(root)
    from .train import train
    base, models = read_recipe(recipe)
    runs = runs or resolve("runs") / "pretrained"
    unknown = sorted(set(names or []) - {m.name for m in models})
    if unknown:
        raise ConfigError(f"{unknown} not in {recipe}; its models: {[m.name for m in models]}")
    out = []
    for m in models:
        if names and m.name not in names:
            continue
        cfg = train_config(base, m, runs)
        if data_fingerprint(cfg.data_dir) is None:
            raise FileNotFoundError(f"{cfg.data_dir} holds no dataset: collect the course dataset first "
                                    "(make pretrained does: notebook 01 with configs/course/01.yaml)")
        print(f"== {m.name}: {cfg.stage} {cfg.model} mask {cfg.mask.kind}, {cfg.steps} steps -> {cfg.out_dir}")
        train(cfg)
        out.append(export(cfg.out_dir, m.name, m.upsampler, root))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: `build [--recipe F] [names...]`, `list`."""
    p = argparse.ArgumentParser(prog="python -m piwm_lib.pretrained", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train (resuming) and export the recipe's models")
    b.add_argument("--recipe", default=RECIPE)
    b.add_argument("names", nargs="*", help="only these models (default: all)")
    sub.add_parser("list", help="the shipped models, their step and compute")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            for path in build(a.recipe, a.names):
                print(f"exported {path}")
        else:
            for name in shipped_names():
                meta = read_meta(name)
                c = meta["compute"]
                print(f"{name}: {meta['stage']} {meta['config']['model']} step {meta['step']}, "
                      f"{c['seconds'] / 60:.1f} min on {c['machine']}")
    except (ConfigError, PretrainedError, FileNotFoundError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
