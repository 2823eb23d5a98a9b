"""Ablation sweeps (PIWM arXiv 2509.12437, Sec. 4): the grid mask x start x model size as papermill runs of
notebooks 03 (training) and 05 (evaluation), one run folder per cell, resumable, trained models shared."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from . import params
from .configs import save_json
from .runs import ROOT, runs_root
from .train import latest_checkpoint
from .unet import PRESETS, UPSAMPLER_OF
from .validate import NonNegInt, check_fields, plain_name
from .worldmodel import STARTS  # notebook 05's STARTS

MASKS = {"none": ("none", False), "hard": ("hard", False), "soft": ("soft", False), "gt": ("gt", False),
         "soft_weighted": ("soft", True)}  # grid name -> (notebook 03's MASK, LOSS_WEIGHTING)
AXES = ("model", "mask", "start")
TRAIN_NB, EVAL_NB = "03_train_edm", "05_evaluate"
SWEEP_KEYS = ("grids", "train", "evaluate", "reuse", "pretrained")  # a parameter file's SWEEP mapping
PARAMS_FILE = "sweep_params.json"  # beside each cell's metrics.json: the parameters it ran with


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: a union of grids over (model, mask, start), and the notebook parameters every cell shares."""

    name: str = "smoke"  # runs/06_ablations/<name>/ holds the sweep's state; every cell's run name starts <name>-
    data_dir: str = "data/smoke"  # dataset of notebook 01 shared by every cell
    seed: NonNegInt = 0  # the one seed, passed to every cell
    grids: tuple = ({"model": ["micro"], "mask": ["none", "soft"], "start": ["cold", "warm"]},)  # each a full product
    train: dict = field(default_factory=dict)  # notebook-03 parameters of every training cell (STEPS, BATCH_SIZE, ...)
    evaluate: dict = field(default_factory=dict)  # notebook-05 parameters of every evaluation cell (HORIZON, ...)
    reuse: dict = field(default_factory=dict)  # "model/mask" -> a finished notebook-03 run used instead of training
    pretrained: dict = field(default_factory=dict)  # "model/mask" -> a shipped model (piwm_lib.pretrained) evaluated
    #                                                 instead of training one; {} retrains every cell

    def __post_init__(self) -> None:
        check_fields(self)
        plain_name(self.name, "SweepConfig.name")
        for i, g in enumerate(self.grids):
            if set(g) != set(AXES):
                raise ValueError(f"grid {i} must have exactly the keys {AXES}, got {sorted(g)}")
            _check(g["model"], [p for p in PRESETS if not p.startswith("upsampler")], f"grid {i} model")
            _check(g["mask"], list(MASKS), f"grid {i} mask")
            _check(g["start"], list(STARTS), f"grid {i} start")
        for key, run in self.reuse.items():
            grid_key(key, "reuse")
            plain_name(run, f"SweepConfig.reuse[{key!r}] (a run of notebook {TRAIN_NB})")
        for key, name in self.pretrained.items():
            check_shipped(key, name)
        if both := sorted(set(self.reuse) & set(self.pretrained)):
            raise ValueError(f"{both} are both reused and pretrained: give each model/mask one source")
        owned = {"RUN_NAME", "DATA_DIR", "SEED", "MODEL", "MASK", "LOSS_WEIGHTING", "MODEL_RUN", "UPSAMPLER_RUN",
                 "PRETRAINED", "STARTS", "OVERWRITE"}
        for part in ("train", "evaluate"):
            if clash := sorted(owned & set(getattr(self, part))):
                raise ValueError(f"SweepConfig.{part} may not set {clash}: the sweep sets them per cell")
            nb = TRAIN_NB if part == "train" else EVAL_NB
            params.check_values(nb, getattr(self, part), params.notebook_defaults(nb), f"SweepConfig.{part}")


def grid_key(key: str, what: str) -> tuple[str, str]:
    """(model, mask) of a "model/mask" key of the `what` mapping; raises naming the key when either is unknown."""
    model, _, mask = key.partition("/")
    _check([model], list(PRESETS), f"{what} key {key!r} model")
    _check([mask], list(MASKS), f"{what} key {key!r} mask")
    return model, mask


def check_shipped(key: str, name: str) -> None:
    """Raise unless shipped model `name` is a dynamics model of the size and mask of grid key "model/mask"."""
    from .pretrained import read_meta
    model, mask = grid_key(key, "pretrained")
    meta = read_meta(plain_name(name, f"SweepConfig.pretrained[{key!r}] (a shipped model)"))
    got = (meta["stage"], meta["config"]["model"], meta["config"]["mask"]["kind"],
           bool(meta["config"].get("loss_weighting", False)))
    if got != ("dynamics", model, *MASKS[mask]):
        raise ValueError(f"SweepConfig.pretrained[{key!r}] = {name!r} is a {got[0]} model of size {got[1]} with mask "
                         f"{got[2]} (loss weighting {got[3]}): it does not fit {key}")


def _check(values: list, allowed: list, what: str) -> None:
    """Raise naming `what` when `values` is empty or holds something outside `allowed`."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{what} must be a non-empty list, got {values!r}")
    if bad := [v for v in values if v not in allowed]:
        raise ValueError(f"{what}: {bad} not among {allowed}")


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a training (notebook 03), an evaluation (notebook 05) or a reused finished training."""

    kind: str  # "train", "evaluate" or "reuse"
    run: str  # run name: runs/<notebook>/<run>/
    params: dict  # papermill parameters (empty for "reuse")
    needs: tuple = ()  # run names of the training cells it loads
    labels: dict = field(default_factory=dict)  # model, mask (and start) of the cell

    @property
    def notebook(self) -> str:
        return EVAL_NB if self.kind == "evaluate" else TRAIN_NB

    @property
    def folder(self) -> Path:
        return runs_root() / self.notebook / self.run


def points(cfg: SweepConfig) -> list[tuple[str, str, str]]:
    """The (model, mask, start) grid points of every grid, in order, without repeats."""
    out = [p for g in cfg.grids for p in itertools.product(g["model"], g["mask"], g["start"])]
    return list(dict.fromkeys(out))


def plan(cfg: SweepConfig) -> list[Cell]:
    """Every cell of the sweep in run order: trainings (one per model x mask; one upsampler per upsampler size, shared)
    then evaluations (one per grid point); a model/mask with a shipped model is evaluated from it, not trained."""
    pts = points(cfg)
    shipped = {(m, k) for m, k, _ in pts if f"{m}/{k}" in cfg.pretrained}
    models = [p for p in dict.fromkeys((m, k) for m, k, _ in pts) if p not in shipped]  # (model, mask) pairs to train
    cells, run_of = [], {}
    for model, mask in models:
        reused = cfg.reuse.get(f"{model}/{mask}")
        run_of[model, mask] = reused or f"{cfg.name}-{model}-{mask}"
        if reused:
            cells.append(Cell("reuse", reused, {}, labels={"model": model, "mask": mask}))
    owner = {}  # upsampler preset -> run that trains (or holds) it: a reused run with one first, else the first trained
    for model, mask in models:
        run, up = run_of[model, mask], UPSAMPLER_OF[model]
        if f"{model}/{mask}" in cfg.reuse and latest_checkpoint(runs_root() / TRAIN_NB / run / "upsampler"):
            owner.setdefault(up, run)
    for model, mask in models:
        if f"{model}/{mask}" in cfg.reuse:
            continue
        run = run_of[model, mask]
        trains_up = owner.setdefault(UPSAMPLER_OF[model], run) == run
        nb_mask, weighting = MASKS[mask]
        params = {**cfg.train, "RUN_NAME": run, "DATA_DIR": cfg.data_dir, "SEED": cfg.seed, "MODEL": model,
                  "MASK": nb_mask, "LOSS_WEIGHTING": weighting, "OVERWRITE": False}
        if not trains_up:
            params["UP_STEPS"] = 0  # the upsampler sees no mask: one per size is trained and shared
        cells.append(Cell("train", run, params, labels={"model": model, "mask": mask}))
    for model, mask, start in pts:
        if (model, mask) in shipped:  # the shipped model with the upsampler it pairs with
            train_run = up_run = ""
            source = {"MODEL_RUN": "", "UPSAMPLER_RUN": "", "PRETRAINED": cfg.pretrained[f"{model}/{mask}"]}
        else:
            train_run, up_run = run_of[model, mask], owner.get(UPSAMPLER_OF[model], run_of[model, mask])
            source = {"MODEL_RUN": train_run, "UPSAMPLER_RUN": "" if up_run == train_run else up_run, "PRETRAINED": ""}
        params = {"PLANT_SEEDS": 0, **cfg.evaluate,  # planted clips test the metrics, not the model: skipped here
                  "RUN_NAME": f"{cfg.name}-{model}-{mask}-{start}", "DATA_DIR": cfg.data_dir, "SEED": cfg.seed,
                  **source, "STARTS": [start], "FALLBACK_STEPS": 0, "OVERWRITE": False}
        needs = tuple(n for n in dict.fromkeys([train_run, up_run]) if n)
        labels = {"model": model, "mask": mask, "start": start}
        cells.append(Cell("evaluate", params["RUN_NAME"], params, needs, labels))
    return cells


def status(cell: Cell) -> str:
    """'done' (metrics.json written with these parameters), 'stale' (run with other parameters) or 'todo'."""
    metrics, stored = cell.folder / "metrics.json", cell.folder / PARAMS_FILE
    if cell.kind == "reuse":
        return "done" if metrics.exists() else "missing"
    if stored.exists() and json.loads(stored.read_text()) != _jsonable(cell.params):
        return "stale"
    return "done" if metrics.exists() else "todo"


def _jsonable(d: dict) -> dict:
    """`d` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(d))


def state_dir(cfg: SweepConfig) -> Path:
    """runs/06_ablations/<name>/: sweep_config.json, sweep.json (cell states) and the results table."""
    return runs_root() / "06_ablations" / cfg.name


def run_sweep(cfg: SweepConfig, progress: bool = True, log=print) -> list[dict]:
    """Run every unfinished cell with papermill (finished ones are skipped; a failed one is recorded, the cells that
    need it are skipped and the rest go on); one record per cell, also kept in runs/06_ablations/<name>/sweep.json."""
    import papermill as pm  # imported here: the planning functions do not need a kernel

    cells, out = plan(cfg), state_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_json(asdict(cfg), out / "sweep_config.json")
    records, failed, ran = [], set(), set()
    bar = tqdm(cells, desc=f"sweep {cfg.name}", unit="run", disable=not progress)
    for cell in bar:
        rec = {"run": cell.run, "kind": cell.kind, **cell.labels, "status": status(cell), "seconds": 0.0, "error": ""}
        records.append(rec)
        blocked = [n for n in cell.needs if n in failed]
        if rec["status"] == "done" and any(n in ran for n in cell.needs):
            rec["status"] = "stale"  # its model was (re)trained just now: an evaluation of the old one is out of date
        if blocked:
            rec.update(status="skipped", error=f"needs {', '.join(blocked)}, which failed")
        elif rec["status"] == "missing":
            rec.update(status="failed", error=f"reuse: {cell.folder} holds no finished notebook-03 run")
        elif rec["status"] == "done":
            rec["status"] = "done (kept)"
        else:
            bar.set_postfix_str(cell.run)
            log(f"[sweep {cfg.name}] {cell.notebook} -> {cell.run} ({rec['status']})")
            stale, rec["status"] = rec["status"] == "stale", "running"
            _save_state(out, records, cells)
            rec.update(_execute(pm, cell, overwrite=stale))
            if rec["status"] == "ran":
                ran.add(cell.run)
        if rec["status"] in ("failed", "skipped"):
            failed.add(cell.run)
            log(f"[sweep {cfg.name}] {cell.run}: {rec['status']}: {rec['error']}")
        _save_state(out, records, cells)
    return records


def _save_state(out: Path, records: list[dict], cells: list[Cell]) -> None:
    """sweep.json: the records so far, then the cells not reached yet as 'pending'."""
    pending = [{"run": c.run, "kind": c.kind, **c.labels, "status": "pending", "seconds": 0.0, "error": ""}
               for c in cells[len(records):]]
    save_json({"cells": records + pending}, out / "sweep.json")


def _execute(pm, cell: Cell, overwrite: bool) -> dict:
    """Execute one cell's notebook into its run folder; the result fields of its record."""
    cell.folder.mkdir(parents=True, exist_ok=True)
    save_json(cell.params, cell.folder / PARAMS_FILE)
    params = {**cell.params, "OVERWRITE": True} if overwrite else cell.params
    t0 = time.perf_counter()
    try:
        with _stderr_to(cell.folder / "kernel.log"):  # the child kernel's own log lines, kept beside the run
            pm.execute_notebook(str(ROOT / "notebooks" / f"{cell.notebook}.ipynb"),
                                str(cell.folder / f"{cell.notebook}.ipynb"), parameters=params,
                                cwd=str(ROOT / "notebooks"), progress_bar=False)
    except pm.PapermillExecutionError as e:
        return {"status": "failed", "seconds": time.perf_counter() - t0, "error": f"{e.ename}: {e.evalue}"[:500]}
    except Exception as e:  # noqa: BLE001 - a dead kernel or a bad parameter must not stop the other cells
        return {"status": "failed", "seconds": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"[:500]}
    if not (cell.folder / "metrics.json").exists():
        return {"status": "failed", "seconds": time.perf_counter() - t0, "error": "the notebook wrote no metrics.json"}
    return {"status": "ran", "seconds": time.perf_counter() - t0, "error": ""}


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send file descriptor 2 (inherited by the kernel papermill starts, and papermill's log) to `path` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def config_from_file(path: str | Path, name: str | None = None) -> SweepConfig:
    """A SweepConfig from a notebook-06 parameter file: RUN_NAME, DATA_DIR, SEED and the SWEEP mapping."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"sweep config {p} does not exist (see configs/course/06.yaml for an example)")
    y = yaml.safe_load(p.read_text()) or {}
    if not isinstance(y.get("SWEEP"), dict):
        raise ValueError(f"{p} has no SWEEP mapping ({', '.join(SWEEP_KEYS)})")
    unknown = set(y["SWEEP"]) - set(SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{p}: SWEEP has unknown keys {sorted(unknown)}; allowed: {', '.join(SWEEP_KEYS)}")
    return SweepConfig(name=name or y.get("RUN_NAME", p.stem), data_dir=y.get("DATA_DIR", "data/smoke"),
                       seed=int(y.get("SEED", 0)), **y["SWEEP"])


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m piwm_lib.sweep --config configs/course/06.yaml [--plan]; exit 1 when a cell failed."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--config", required=True, help="notebook-06 parameter file with a SWEEP mapping")
    ap.add_argument("--name", help="sweep name (default: the file's RUN_NAME)")
    ap.add_argument("--plan", action="store_true", help="print the cells and their status, run nothing")
    a = ap.parse_args(argv)
    cfg = config_from_file(a.config, a.name)
    if a.plan:
        for c in plan(cfg):
            print(f"{status(c):8s} {c.kind:9s} {c.notebook}/{c.run}")
        return 0
    records = run_sweep(cfg)
    for r in records:
        print(f"{r['status']:12s} {r['seconds']:7.0f} s  {r['run']}  {r['error']}")
    return int(any(r["status"] in ("failed", "skipped") for r in records))


if __name__ == "__main__":
    sys.exit(main())
