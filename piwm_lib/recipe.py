"""Paired comparison of training-recipe variants (the world-model issue's recipe changes 1-3): dynamics models trained
from one shipped model's recipe with one thing changed (same seed, data order, budget, upsampler), sampled with the
same noise on the same test windows and scored on the quality bar (quality.py); each arm's per-window difference
from the base arm with a paired bootstrap interval.

    python -m piwm_lib.recipe configs/recipe_comparison.yaml --csv data/pretrained/recipe_comparison.csv

trains (resuming) the arms that need training into runs/recipe/<arm>/, then measures every arm.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from .runs import resolve
from .validate import ConfigError

COMPARED = ("recall_h", "vanish_popup_per_100", "ego_presence")  # per-window figures (name prefixes) whose paired
# differences get an interval


@dataclass(frozen=True)
class Arm:
    """One arm: a run folder trained from the base model's recipe with `train` overrides (or an existing `run`), and
    the dynamics sampler's context noise s_cond (None: the sampler preset's, 0.005 as DIAMOND csgo)."""

    name: str
    train: dict = field(default_factory=dict)  # TrainConfig overrides of the base recipe (nested dicts merge)
    run: str = ""  # an existing run folder to read instead of training one (e.g. runs/pretrained/course-hard)
    s_cond: float | None = None

    def __post_init__(self) -> None:
        if bool(self.train) == bool(self.run):
            raise ConfigError(f"arm {self.name!r} needs exactly one of 'train' (overrides to train with) and 'run' "
                              f"(an existing run folder), got train={self.train!r} run={self.run!r}")

    def folder(self, runs: Path) -> Path:
        """The run folder this arm reads: its own `run`, else runs/recipe/<name>."""
        return resolve(self.run) if self.run else runs / self.name


@dataclass(frozen=True)
class Comparison:
    """A comparison file (configs/recipe_comparison.yaml): the shipped model whose recipe every arm starts from, the
    step compared, the test windows, and the arms (the first is the base of every difference)."""

    base: str  # a model of configs/pretrained.yaml
    step: int  # the checkpoint step compared in every arm
    arms: tuple[Arm, ...]
    windows: int = 16
    horizon: int = 16
    starts: tuple[str, ...] = ("cold", "warm")
    recipe: str = "configs/pretrained.yaml"
    n_boot: int = 2000
    seed: int = 0


def read_comparison(path: str | Path) -> Comparison:
    """A Comparison from YAML; unknown keys or an arm without train or run raise naming them."""
    path = resolve(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "arms" not in data:
        raise ConfigError(f"{path} must hold a mapping with 'base', 'step' and 'arms'")
    arms = []
    for name, spec in (data.pop("arms") or {}).items():
        unknown = sorted(set(spec or {}) - {"train", "run", "s_cond"})
        if unknown:
            raise ConfigError(f"{path}: arm {name!r} has unknown keys {unknown} (known: train, run, s_cond)")
        arms.append(Arm(name=name, **(spec or {})))
    if len(arms) < 2:
        raise ConfigError(f"{path}: a comparison needs at least two arms, got {[a.name for a in arms]}")
    try:
        return Comparison(arms=tuple(arms), **{k: tuple(v) if k == "starts" else v for k, v in data.items()})
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e


def merge(base: dict, over: dict) -> dict:
    """base updated by over, nested dicts merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def arm_config(comp: Comparison, arm: Arm, runs: Path):
    """The TrainConfig of an arm that trains: the base model's recipe, the arm's overrides, comp.step steps."""
    from .configs import to_dict
    from .pretrained import read_recipe, train_config
    from .train import config_from_dict

    base, models = read_recipe(comp.recipe)
    model = {m.name: m for m in models}.get(comp.base)
    if model is None:
        raise ConfigError(f"base {comp.base!r} is not a model of {comp.recipe}: {[m.name for m in models]}")
    cfg = to_dict(train_config(base, model, runs))
    return config_from_dict(merge(cfg, {**arm.train, "steps": comp.step, "out_dir": str(arm.folder(runs))}))


def train_arms(comp: Comparison, runs: Path | None = None) -> None:
    """Train (or resume) every arm with `train` overrides up to comp.step in runs/recipe/<arm>/."""
    from .checkpoint import ckpt_name
    from .train import train

    runs = runs or resolve("runs") / "recipe"
    for arm in comp.arms:
        if arm.train and not (arm.folder(runs) / ckpt_name(comp.step)).exists():
            print(f"== arm {arm.name}: training to step {comp.step} in {arm.folder(runs)}")
            train(arm_config(comp, arm, runs))
    for arm in comp.arms:
        if not (arm.folder(runs) / ckpt_name(comp.step)).exists():
            raise FileNotFoundError(f"arm {arm.name!r}: {arm.folder(runs) / ckpt_name(comp.step)} not found: train "
                                    f"that run past step {comp.step} keeping that checkpoint (a shipped model's run: "
                                    f"make pretrained PRETRAINED=<name>, configs/pretrained.yaml keeps every 100th)")


def measure_arms(comp: Comparison, data_dir: str | Path = "data/course", runs: Path | None = None,
                 root: Path | None = None) -> pd.DataFrame:
    """Every arm's bar figures per start on the same windows and noise, with its paired difference from the first
    arm (mean and 95% bootstrap interval of the per-window difference) for each of COMPARED."""
    from .checkpoint import ckpt_name, load_denoiser
    from .evaluation import eval_windows
    from .metrics import bootstrap_ci
    from .pretrained import load_pretrained
    from .quality import env_window_scores, summarise
    from .worldmodel import WorldModelEnv

    runs = runs or resolve("runs") / "recipe"
    shipped = load_pretrained(comp.base, root=root)  # its mask settings and upsampler
    win = None
    per, rows = {}, []
    for arm in tqdm(comp.arms, desc="recipe arms", unit="arm"):
        wm = WorldModelEnv(load_denoiser(arm.folder(runs) / ckpt_name(comp.step)), shipped.up, shipped.cfg)
        win = win if win is not None else eval_windows(data_dir, wm.k, comp.horizon, comp.windows)
        scores = env_window_scores(wm, win, comp.starts, seed=comp.seed, s_cond=arm.s_cond)
        for s in comp.starts:
            per[arm.name, s] = scores[s]
            row = {"arm": arm.name, "start": s, "step": comp.step, **summarise(scores[s])}
            for key in [k for k in scores[s] if k.startswith(COMPARED)]:
                d = scores[s][key] - per[comp.arms[0].name, s][key]
                ok = ~np.isnan(d)  # windows where both arms have the figure (recall: a true car in view)
                row[f"d_{key}"], row[f"d_{key}_lo"], row[f"d_{key}_hi"] = (
                    bootstrap_ci(d[ok], comp.n_boot, seed=comp.seed) if ok.any() else (np.nan,) * 3)
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: train the arms of a comparison file that need it, measure all, print and write the table."""
    p = argparse.ArgumentParser(prog="python -m piwm_lib.recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("comparison", help="comparison file, e.g. configs/recipe_comparison.yaml")
    p.add_argument("--data", default="data/course")
    p.add_argument("--csv", help="write the table here")
    p.add_argument("--no-train", action="store_true", help="measure only (every arm's checkpoint must exist)")
    a = p.parse_args(argv)
    comp = read_comparison(a.comparison)
    if not a.no_train:
        train_arms(comp)
    table = measure_arms(comp, a.data)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if a.csv:
        table.to_csv(a.csv, index=False, float_format="%.4f")
        print(f"wrote {a.csv}")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
