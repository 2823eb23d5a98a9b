"""Papermill smoke run of notebook 04 (sampling and rollouts): headless with a parameters file, no trained model and
no shipped one (it trains a micro one itself), metrics written. nbval runs its defaults: the shipped model."""

from __future__ import annotations

from test_notebooks import run_notebook


def test_04_sample_rollout_with_a_parameters_file(tmp_path):
    m = run_notebook("04_sample_rollout", {"RUN_NAME": "pm", "MODEL_RUN": "absent", "PRETRAINED": "",
                                           "FALLBACK_STEPS": 2, "DATA_DIR": str(tmp_path / "none"),
                                           "FALLBACK_DATA": str(tmp_path / "data"),
                                           "HORIZON": 4, "ROLLOUTS": 2, "SPEED_REPEATS": 2}, tmp_path)
    assert m["one_euler_step_equals_denoiser"] is True and m["model"] == "micro"
    assert m["horizon"] == 4 and m["played_frames"] == 5
    assert m["flicker_truth"] > 0 and m["flicker_cold"] > 0 and m["flicker_warm"] > 0
    assert m["fps_fast"] > m["fps_quality"] > 0 and m["p95_ms_fast"] >= m["p50_ms_fast"] > 0
    assert (tmp_path / "runs" / "04_sample_rollout" / "pm" / "rollout_truth_cold_warm.gif").stat().st_size > 1000
