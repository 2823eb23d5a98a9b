"""Papermill smoke run of notebook 05 (evaluation): headless with a parameters file, no dataset and no trained model
(it builds both), metrics written."""

from __future__ import annotations

from test_notebooks import run_notebook

from piwm_lib import planted as PL


def test_05_evaluate_with_a_parameters_file(tmp_path):
    m = run_notebook("05_evaluate", {"RUN_NAME": "pm", "MODEL_RUN": "absent", "PRETRAINED": "", "FALLBACK_STEPS": 2,
                                     "DATA_DIR": str(tmp_path / "none"), "FALLBACK_DATA": str(tmp_path / "data"),
                                     "HORIZON": 4, "MAX_WINDOWS": 2, "ENCODER_STEPS": 5, "BOOTSTRAP": 50}, tmp_path)
    assert m["windows"] == 2 and m["horizon"] == 4
    truth = m["physics"]["truth"]
    assert truth["wo"][0] == 1 and truth["tec"][0] == 1 and truth["vanish_per_100"][0] == 0  # truth vs itself
    assert set(m["fid"]) >= {"cold", "warm"} and m["fid"]["cold"] >= 0
    assert truth["kir"][0] == 1 or truth["lane_commands"][0] + truth["speed_commands"][0] == 0  # n/a without commands
    planted = m["planted"]  # PLANT_SEEDS = 2 scenes per planted failure, drawn by HighwayEnv's renderer
    assert set(planted) == set(PL.KINDS)
    for kind, row in planted.items():
        assert row["clips"] >= 1 and row["flagged"] == (0 if row["label"] == "(none)" else row["clips"]), kind
        if row["label"] == "(none)":
            assert row["other_events"] == 0, kind  # clean truth and jitter: nothing reported
