"""Papermill smoke runs: each notebook runs headless with a parameters file and writes the figures it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str, params: dict, tmp_path: Path) -> dict:
    """Execute notebooks/<name>.ipynb with papermill and a parameters file; return its metrics.json."""
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PIWM_RUNS_DIR": str(tmp_path / "runs")}
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{name}.ipynb"),
           str(tmp_path / f"{name}.ipynb"), "-f", str(pfile), "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads((tmp_path / "runs" / name / params["RUN_NAME"] / "metrics.json").read_text())


def test_01_collect_data_with_a_parameters_file(tmp_path):
    m = run_notebook("01_collect_data", {"RUN_NAME": "pm", "DATA_DIR": str(tmp_path / "data"), "EPISODES": 3,
                                         "FRAMES": 25, "WORKERS": 2, "AGENT": "random", "SEED": 5,
                                         "COST_DECISIONS": 1}, tmp_path)
    assert m["episodes"] == 3 and m["workers"] == 2 and m["agent"] == "random"
    assert 3 <= m["frames"] <= 75 and m["broken_files"] == 0
    assert 0 < m["bytes_per_frame"] < 10_000 and m["mean_cars_in_view"] > 1
    assert m["mcts_decision_ms"] > 0 and m["windows_per_s_one_process"] > 0
    assert m["frames_collected_now"] == m["frames"] and m["collect_frames_per_s"] > 0
    assert (tmp_path / "runs" / "01_collect_data" / "pm" / "episode0.gif").stat().st_size > 1000
