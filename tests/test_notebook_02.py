"""Papermill smoke run of notebook 02 (soft masks): it runs headless with a parameters file and writes its metrics."""

from __future__ import annotations

from test_notebooks import run_notebook


def test_02_soft_masks_with_a_parameters_file(tmp_path):
    m = run_notebook("02_soft_masks", {"RUN_NAME": "pm", "DATA_DIR": str(tmp_path / "none"),
                                       "FALLBACK_DIR": str(tmp_path / "data"), "CRASH_DIR": str(tmp_path / "crash"),
                                       "EVAL_FRAMES": 20, "FRAME": 5, "BENCH_BATCH": 8, "BENCH_REPEATS": 1,
                                       "DROPOUT_DRAWS": 400}, tmp_path)
    assert m["frames_evaluated"] == 40 and m["vehicles_in_view"] >= 60  # 2 episodes x 20 frames, ~4 cars each
    assert m["precision"] == 1.0 and m["recall"] == 1.0  # measured: 1.0 and 1.0 on the smoke data
    assert 1.0 < m["centre_error_px"] < 2.5  # measured 1.86: drawn 1-2 px up-left of (px, py)
    assert 0.9 <= m["iou_gt_vs_colour"] <= 1.0 and m["iou_gt_vs_colour_min_frame"] >= 0.85  # measured 0.935, 0.872
    assert m["ego_found_fraction"] == 1.0
    assert 0.0 <= m["crash_episode_recall"] < 0.9  # crashed cars are drawn red: the colour rule misses them
    assert 0.2 < m["dropout_rate"] < 0.4
    assert m["masks_per_s_soft"] > 0 and m["masks_per_s_hard"] > 0 and m["masks_per_s_gt"] > 0
