"""Papermill smoke run of notebook 03 (EDM training): it runs headless with a parameters file and writes its metrics."""

from __future__ import annotations

import math

from test_notebooks import run_notebook


def test_03_train_edm_with_a_parameters_file(tmp_path):
    m = run_notebook("03_train_edm", {"RUN_NAME": "pm", "DATA_DIR": str(tmp_path / "none"),
                                      "FALLBACK_DIR": str(tmp_path / "data"), "MASK": "hard", "STEPS": 6,
                                      "AR_STEPS": 2, "BATCH_SIZE": 2, "UP_STEPS": 2, "LOG_EVERY": 2,
                                      "CKPT_EVERY": 3, "SIGMAS": [0.5, 2.0], "LOSS_SIGMAS": 3}, tmp_path)
    assert m["steps"] == 6 and m["model"] == "micro" and m["mask"] == "hard"
    assert 0 < m["loss_last"] < 5 and m["windows_per_s"] > 0 and 0 <= m["data_wait"] < 1
    assert abs(m["params_130M"] / 130.2e6 - 1) < 0.02 and abs(m["params_400M"] / 381.6e6 - 1) < 0.02
    assert set(m["psnr_denoised"]) == {"0.5", "2.0"} and all(math.isfinite(v) for v in m["psnr_denoised"].values())
    assert set(m["upsampler_psnr"]) == {"bicubic", "upsampler, one step at sigma 0.5"}
    runs = tmp_path / "runs" / "03_train_edm" / "pm"
    dyn = runs / "dynamics" / "ckpt_00000006"
    assert dyn.with_suffix(".safetensors").exists() and dyn.with_suffix(".json").exists()
    assert (runs / "upsampler" / "ckpt_00000002.safetensors").exists() and not list(runs.glob("*/*.pt"))
