"""Notebook parameters: each notebook refuses an unknown name, a wrong type or a value out of range in the cell after
its parameters (checked here in-process on the notebook's own cells, and once through papermill), and every parameter
file in configs/ holds only known parameters of its notebook, with the right types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from piwm_lib import params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb"))


def run_first_cells(notebook: str, overrides: dict) -> dict:
    """Execute a notebook's imports and parameters cells, then `overrides` (as papermill's injected cell would), then
    its parameter check cell; return the namespace."""
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert "params.check" in nb.cells[i + 1].source  # the check is the first cell after the parameters
    ns: dict = {}
    for cell in nb.cells[:i + 1]:
        if cell.cell_type == "code":
            exec("\n".join(line for line in cell.source.split("\n") if not line.startswith("%")), ns)
    ns.update(overrides)
    exec(nb.cells[i + 1].source, ns)
    return ns


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_each_notebook_accepts_its_stored_defaults(notebook):
    ns = run_first_cells(notebook, {})
    assert ns["RUN_NAME"] == "smoke" and "DPI" not in ns["param_defaults"]["params"]  # an import is no parameter


@pytest.mark.parametrize("notebook, overrides, match", [
    ("05_evaluate", {"NOT_A_PARAM": 1}, r"unknown parameter\(s\) NOT_A_PARAM .*known: BOOTSTRAP"),
    ("05_evaluate", {"HORIZON": 0}, "HORIZON must be >= 1, got 0"),
    ("05_evaluate", {"HORIZON": "6"}, r"HORIZON must be an integer, got '6' \(str"),
    ("05_evaluate", {"STARTS": "warm"}, r"STARTS must be a list, got 'warm' \(str\)"),
    ("05_evaluate", {"STARTS": ["cold", "hot"]}, r"STARTS must be one of \('cold', 'warm', 'warm_low'\), got 'hot'"),
    ("05_evaluate", {"STARTS": []}, "STARTS must not be empty"),
    ("05_evaluate", {"MODEL_RUN": "../../x"}, "MODEL_RUN must be a plain name"),
    ("05_evaluate", {"DPI": 300}, "unknown parameter.* DPI"),  # imported from the library, not a knob
    ("03_train_edm", {"LR": "fast"}, "LR must be a number, got 'fast'"),
    ("03_train_edm", {"STEPS": 2.5}, r"STEPS must be an integer, got 2.5 \(float\)"),
    ("03_train_edm", {"MASK": "blurry"}, "MASK must be one of"),
    ("03_train_edm", {"SIGMAS": [1.0, -2.0]}, r"SIGMAS\[1\] must be > 0, got -2.0"),
    ("01_collect_data", {"RUN_NAME": "/tmp/x"}, "RUN_NAME must be a plain name"),
    ("01_collect_data", {"PROGRESS": "no"}, "PROGRESS must be true or false"),
    ("02_soft_masks", {"TRAIN_WEIGHTS": [1.0, 0.8]}, "TRAIN_WEIGHTS must have 3 items"),
    ("04_sample_rollout", {"SAMPLER": "slow"}, "SAMPLER must be one of"),
    ("04_sample_rollout", {"PRETRAINED": "course-nope"}, "PRETRAINED must be a shipped model .*course-soft"),
    ("06_ablations", {"SWEEP": {"grids": [], "reuse": {"tiny/soft": ".."}}}, "SWEEP is not a valid sweep"),
    ("06_ablations", {"CURVE_MODEL": "micro"}, "CURVE_MODEL must be 'model/mask'"),
])
def test_a_bad_parameter_is_refused_naming_it(notebook, overrides, match):
    with pytest.raises(ValueError, match=match):
        run_first_cells(notebook, overrides)


def test_numbers_are_taken_in_the_default_type():
    ns = run_first_cells("03_train_edm", {"STEPS": 1e3, "LR": 1, "SIGMAS": [1, 2.5]})  # -p STEPS 1e3: a float
    assert ns["STEPS"] == 1000 and isinstance(ns["STEPS"], int) and ns["LR"] == 1 and ns["SIGMAS"] == [1, 2.5]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_parameter_files_hold_known_parameters_of_the_right_type(path):
    notebook = next(n for n in NOTEBOOKS if n.startswith(path.stem[:2]))
    values = yaml.safe_load(path.read_text()) or {}
    params.check_values(notebook, values, params.notebook_defaults(notebook), str(path.relative_to(ROOT)))


def test_the_file_check_names_an_unknown_key_and_a_wrong_type():
    defaults = params.notebook_defaults("04_sample_rollout")
    with pytest.raises(ValueError, match=r"04.yaml: unknown parameter\(s\) HORIZONS"):
        params.check_values("04_sample_rollout", {"HORIZONS": 3}, defaults, "04.yaml")
    with pytest.raises(ValueError, match="04.yaml: HORIZON must be an integer, got '1e3'"):
        params.check_values("04_sample_rollout", {"HORIZON": "1e3"}, defaults, "04.yaml")


def test_papermill_stops_on_an_unknown_parameter(tmp_path):
    env = {**os.environ, "PIWM_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    nb = str(ROOT / "notebooks" / "02_soft_masks.ipynb")
    cmd = [sys.executable, "-m", "papermill", nb, str(tmp_path / "o.ipynb"),
           "-p", "NOT_A_PARAM", "1", "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "unknown parameter(s) NOT_A_PARAM" in res.stderr + res.stdout
    assert not (tmp_path / "runs").exists()  # stopped before any work
