"""The ablation sweep: planning (shared trainings and upsamplers, reuse, validation) and failure handling with real
papermill runs (the kill-and-resume test is in test_notebook_06.py)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from piwm_lib.checkpoint import write_checkpoint
from piwm_lib.sweep import SweepConfig, config_from_file, plan, run_sweep, status

TINY_TRAIN = {"AR_STEPS": 2, "BATCH_SIZE": 2, "STEPS": 3, "UP_STEPS": 1, "LOSS_SIGMAS": 2, "SIGMAS": [1.0]}
TINY_EVAL = {"HORIZON": 3, "MAX_WINDOWS": 2, "ENCODER_STEPS": 3, "BOOTSTRAP": 20}


def test_plan_trains_once_per_model_and_shares_the_upsampler(tmp_path, monkeypatch):
    monkeypatch.setenv("PIWM_RUNS_DIR", str(tmp_path))
    cfg = SweepConfig(name="p", grids=[{"model": ["tiny"], "mask": ["none", "hard", "soft", "gt", "soft_weighted"],
                                        "start": ["cold", "warm"]},
                                       {"model": ["tiny"], "mask": ["soft"], "start": ["warm_low", "warm"]},
                                       {"model": ["micro", "course"], "mask": ["soft"], "start": ["warm"]}])
    cells = plan(cfg)
    train = [c for c in cells if c.kind == "train"]
    ev = [c for c in cells if c.kind == "evaluate"]
    assert [c.run for c in train] == ["p-tiny-none", "p-tiny-hard", "p-tiny-soft", "p-tiny-gt", "p-tiny-soft_weighted",
                                      "p-micro-soft", "p-course-soft"]
    assert len(ev) == 5 * 2 + 1 + 2  # the repeated (tiny, soft, warm) point is planned once
    # micro and tiny share the small upsampler (trained by the first cell); course trains its own
    assert [c.params.get("UP_STEPS", "trains") for c in train] == ["trains", 0, 0, 0, 0, 0, "trains"]
    weighted = next(c for c in train if c.labels["mask"] == "soft_weighted")
    assert weighted.params["MASK"] == "soft" and weighted.params["LOSS_WEIGHTING"] is True
    e = next(c for c in ev if c.labels == {"model": "micro", "mask": "soft", "start": "warm"})
    assert e.params["MODEL_RUN"] == "p-micro-soft" and e.params["UPSAMPLER_RUN"] == "p-tiny-none"
    assert e.params["STARTS"] == ["warm"] and e.params["FALLBACK_STEPS"] == 0
    assert e.needs == ("p-micro-soft", "p-tiny-none")
    assert all(status(c) == "todo" for c in cells)


def test_plan_reuses_a_finished_run_and_its_upsampler(tmp_path, monkeypatch):
    monkeypatch.setenv("PIWM_RUNS_DIR", str(tmp_path))
    up = tmp_path / "03_train_edm" / "course" / "upsampler"
    up.mkdir(parents=True)
    write_checkpoint(up, 1, {"step": 1, "ema": {"w": torch.zeros(1)}}, keep=1)  # a (minimal) good checkpoint
    cfg = SweepConfig(name="r", grids=[{"model": ["tiny"], "mask": ["none", "soft"], "start": ["warm"]}],
                      reuse={"tiny/soft": "course"})
    cells = plan(cfg)
    assert [(c.kind, c.run) for c in cells if c.kind != "evaluate"] == [("reuse", "course"), ("train", "r-tiny-none")]
    none_train = next(c for c in cells if c.kind == "train")
    assert none_train.params["UP_STEPS"] == 0  # the reused run's upsampler is shared
    soft_eval = next(c for c in cells if c.kind == "evaluate" and c.labels["mask"] == "soft")
    assert soft_eval.params["MODEL_RUN"] == "course" and soft_eval.params["UPSAMPLER_RUN"] == ""
    assert status(cells[0]) == "missing"  # no metrics.json yet


def test_plan_evaluates_a_shipped_model_instead_of_training_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PIWM_RUNS_DIR", str(tmp_path))
    cfg = SweepConfig(name="s", grids=[{"model": ["tiny"], "mask": ["none", "soft"], "start": ["cold", "warm"]}],
                      pretrained={"tiny/soft": "course-soft"})
    cells = plan(cfg)
    assert [(c.kind, c.run) for c in cells if c.kind != "evaluate"] == [("train", "s-tiny-none")]
    assert "UP_STEPS" not in cells[0].params  # the trained cell still trains its own upsampler
    for c in (c for c in cells if c.kind == "evaluate" and c.labels["mask"] == "soft"):
        assert (c.params["MODEL_RUN"], c.params["UPSAMPLER_RUN"], c.params["PRETRAINED"]) == ("", "", "course-soft")
        assert c.needs == ()
    none_eval = next(c for c in cells if c.kind == "evaluate" and c.labels["mask"] == "none")
    assert none_eval.params["PRETRAINED"] == "" and none_eval.needs == ("s-tiny-none",)


@pytest.mark.parametrize("kw, match", [
    (dict(grids=[{"model": ["tiny"], "mask": ["soft", "blurry"], "start": ["warm"]}]), "blurry"),
    (dict(grids=[{"model": ["tiny"], "mask": ["soft"]}]), "exactly the keys"),
    (dict(grids=[{"model": ["999M"], "mask": ["soft"], "start": ["warm"]}]), "999M"),
    (dict(grids=[{"model": ["tiny"], "mask": ["soft"], "start": []}]), "non-empty"),
    (dict(train={"MASK": "soft"}), "MASK"),
    (dict(reuse={"tiny/foggy": "x"}), "foggy"),
    (dict(pretrained={"tiny/none": "course-soft"}), "does not fit tiny/none"),
    (dict(pretrained={"micro/soft": "course-soft"}), "does not fit micro/soft"),
    (dict(pretrained={"tiny/soft": "course-nope"}), "no shipped model 'course-nope'"),
    (dict(pretrained={"tiny/soft": "course-soft"}, reuse={"tiny/soft": "x"}), "one source"),
    (dict(name="a/b"), "plain name"),
])
def test_bad_sweep_configs_are_refused_naming_the_problem(kw, match):
    with pytest.raises(ValueError, match=match):
        SweepConfig(**kw)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config_from_file(tmp_path / "nope.yaml")
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"RUN_NAME": "x", "SWEEP": {"grid": []}}))
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_file(f)
    f.write_text(yaml.safe_dump({"RUN_NAME": "x", "DATA_DIR": "d", "SEED": 3,
                                 "SWEEP": {"grids": [{"model": ["micro"], "mask": ["soft"], "start": ["cold"]}]}}))
    cfg = config_from_file(f)
    assert (cfg.name, cfg.data_dir, cfg.seed) == ("x", "d", 3)


def test_a_failed_cell_is_reported_its_dependents_skipped_and_the_rest_run(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PIWM_RUNS_DIR", str(tmp_path / "runs"))
    cfg = SweepConfig(name="f", data_dir=str(small_dataset), grids=[{"model": ["micro"], "mask": ["none", "soft"],
                                                                     "start": ["cold"]}],
                      train=TINY_TRAIN, evaluate=TINY_EVAL, reuse={"micro/none": "absent"})
    rec = {r["run"]: r for r in run_sweep(cfg, progress=False, log=lambda s: None)}
    assert rec["absent"]["status"] == "failed" and "no finished notebook-03 run" in rec["absent"]["error"]
    assert rec["f-micro-none-cold"]["status"] == "skipped" and "absent" in rec["f-micro-none-cold"]["error"]
    assert rec["f-micro-soft"]["status"] == "ran" and rec["f-micro-soft-cold"]["status"] == "ran"
    state = json.loads((tmp_path / "runs" / "06_ablations" / "f" / "sweep.json").read_text())
    assert [c["status"] for c in state["cells"]] == ["failed", "ran", "skipped", "ran"]
    m = json.loads((tmp_path / "runs" / "05_evaluate" / "f-micro-soft-cold" / "metrics.json").read_text())
    assert m["starts"] == ["cold"] and m["mask"] == "soft" and set(m["physics"]) == {"truth", "cold"}
    # the soft cell owns the upsampler (the failed reuse had none), and an evaluation loads it from there
    assert (tmp_path / "runs" / "03_train_edm" / "f-micro-soft" / "upsampler" / "latest.json").exists()
    # a changed parameter makes a finished cell stale (it is rerun from scratch, not silently kept)
    changed = SweepConfig(**{**cfg.__dict__, "evaluate": {**TINY_EVAL, "BOOTSTRAP": 30}})
    assert status(next(c for c in plan(changed) if c.run == "f-micro-soft-cold")) == "stale"
    assert status(next(c for c in plan(changed) if c.run == "f-micro-soft")) == "done"
    # a retrained model makes its finished evaluations stale too: both rerun, and the evaluation sees the new model
    retrained = SweepConfig(**{**cfg.__dict__, "train": {**TINY_TRAIN, "STEPS": 4}})
    rec = {r["run"]: r for r in run_sweep(retrained, progress=False, log=lambda s: None)}
    assert rec["f-micro-soft"]["status"] == "ran" and rec["f-micro-soft-cold"]["status"] == "ran"
    trained = json.loads((tmp_path / "runs" / "03_train_edm" / "f-micro-soft" / "metrics.json").read_text())
    assert trained["steps"] == 4
