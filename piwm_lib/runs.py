"""Project paths and run folders: runs/<notebook>/<run_name>/{config.json, metrics.json, ...}."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from .configs import save_json
from .validate import plain_name

ROOT = Path(__file__).resolve().parents[1]  # the project folder (editable install)


def resolve(path: str | Path) -> Path:
    """A path relative to the project root (notebooks run from notebooks/, the CLI from anywhere)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch from the one SEED (environments get SEED + episode at reset)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def runs_root() -> Path:
    """Where run folders live: $PIWM_RUNS_DIR when set (and not empty), else runs/ in the project."""
    return resolve(os.environ.get("PIWM_RUNS_DIR") or "runs")


def run_dir(notebook: str, run_name: str, config: dict, overwrite: bool = False) -> Path:
    """Create runs/<notebook>/<run_name>/ (root: $PIWM_RUNS_DIR or runs/) with config.json; refuse a run name that is
    not a plain name (it would write elsewhere) and a finished run unless `overwrite`."""
    d = runs_root() / plain_name(notebook, "notebook") / plain_name(run_name, "RUN_NAME")
    if (d / "metrics.json").exists() and not overwrite:
        raise FileExistsError(f"{d} holds a finished run; pass another RUN_NAME or OVERWRITE=True")
    d.mkdir(parents=True, exist_ok=True)
    save_json(config, d / "config.json")
    return d


def write_metrics(d: Path, metrics: dict) -> Path:
    """Write metrics.json (atomically) and return its path."""
    clean = json.loads(json.dumps(metrics, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    save_json(clean, d / "metrics.json")
    return d / "metrics.json"


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; any other name is passed to torch.device (e.g. 'cpu', 'cuda:1')."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"DEVICE must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from e

