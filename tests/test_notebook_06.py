"""Notebook 06 and its sweep: the smoke grid is killed mid-run from the shell (python -m piwm_lib.sweep), then the
notebook resumes it with papermill without redoing the finished cells, and writes the table, claims and curves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml
from test_notebooks import ROOT, run_notebook
from test_sweep import TINY_EVAL, TINY_TRAIN

SWEEP = {"grids": [{"model": ["micro"], "mask": ["none", "soft"], "start": ["cold", "warm"]}],
         "train": {**TINY_TRAIN, "CKPT_EVERY": 1}, "evaluate": TINY_EVAL, "reuse": {}}


def test_06_resumes_a_killed_sweep_without_redoing_finished_runs(tmp_path):
    runs = tmp_path / "runs"
    params = {"RUN_NAME": "pm", "DATA_DIR": str(tmp_path / "none"), "FALLBACK_DATA": str(tmp_path / "data"),
              "SWEEP": SWEEP, "BOOTSTRAP": 50, "CURVE_MODEL": "micro/soft", "CURVE_NOISE": [0.0, 5.0],
              "MASK_WEIGHTS": [[0.45, 0.55], [0.0, 0.55]], "CURVE_WINDOWS": 2, "CURVE_HORIZON": 3}
    # the shell driver needs the dataset the notebook would collect: collect it the same way first
    from piwm_lib.collect import ensure_dataset
    data = ensure_dataset(str(tmp_path / "none"), str(tmp_path / "data"), 0)
    cfg_file = tmp_path / "06.yaml"
    cfg_file.write_text(yaml.safe_dump({"RUN_NAME": "pm", "DATA_DIR": str(data), "SWEEP": SWEEP}))
    env = {**os.environ, "PIWM_RUNS_DIR": str(runs)}
    proc = subprocess.Popen([sys.executable, "-m", "piwm_lib.sweep", "--config", str(cfg_file)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = runs / "03_train_edm" / "pm-micro-none" / "metrics.json"
    state_file = runs / "06_ablations" / "pm" / "sweep.json"

    def state() -> list[str]:
        return [c["status"] for c in json.loads(state_file.read_text())["cells"]] if state_file.exists() else []

    t0 = time.time()
    while state()[1:2] != ["running"] and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.1)
    assert state()[:2] == ["ran", "running"], state()
    os.killpg(proc.pid, signal.SIGKILL)  # kill the driver mid-sweep: the second training has just started
    proc.wait()
    stamp = first.stat().st_mtime_ns
    assert state() == ["ran", "running", "pending", "pending", "pending", "pending"]

    m = run_notebook("06_ablations", params, tmp_path)  # same sweep, resumed by the notebook
    assert first.stat().st_mtime_ns == stamp  # the finished cell was not redone
    assert m["kept"] == 1 and m["ran"] == 5 and m["failed"] == [] and m["cells"] == 6
    rows = {(r["mask"], r["start"]): r for r in m["table"]}
    assert set(rows) == {("none", "cold"), ("none", "warm"), ("soft", "cold"), ("soft", "warm")}
    assert all(0 <= r["wo_lo"] <= r["wo"] <= r["wo_hi"] <= 1 and r["fps"] > 0 for r in rows.values())
    claims = {c["claim"]: c for c in m["claims"]}
    assert claims["piwm_vs_baseline"]["a"] == "micro/soft/warm" and claims["piwm_vs_baseline"]["b"] == "micro/none/cold"
    assert claims["small_vs_large"]["verdict"] == "not in this grid"  # one size only
    assert set(m["warm_curve"]) == {"s=0", "s=5", "cold"} and len(m["mask_weights"]) == 2
    assert (runs / "06_ablations" / "pm" / "results.csv").read_text().count("\n") == 5
