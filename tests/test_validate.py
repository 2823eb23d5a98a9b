"""Configs check their fields before any work (types, ranges, relations), each error naming the field, the value and
what is allowed; run and sweep names are plain names that cannot leave the runs root."""

from __future__ import annotations

import pytest
import yaml

from piwm_lib import runs
from piwm_lib.collect import CollectConfig
from piwm_lib.masks import MaskConfig
from piwm_lib.sampler import SamplerConfig
from piwm_lib.sweep import SweepConfig
from piwm_lib.train import TrainConfig, config_from_dict
from piwm_lib.validate import ConfigError, plain_name


@pytest.mark.parametrize("field, value, match", [
    ("grad_clip", -1, r"TrainConfig.grad_clip must be > 0, got -1"),  # would flip the gradients (ascent)
    ("steps", 2.5, r"TrainConfig.steps must be an integer, got 2.5 \(float\)"),  # trained 3 steps, no final ckpt
    ("steps", "abc", r"TrainConfig.steps must be an integer, got 'abc' \(str\)"),
    ("lr", "fast", r"TrainConfig.lr must be a number, got 'fast' \(str\)"),
    ("lr", "1e-4", r"YAML reads 1e-4 as a string: write 1.0e-4"),
    ("ema_decay", 5, r"TrainConfig.ema_decay must be in \[0, 1\), got 5"),
    ("warmup_steps", -5, r"TrainConfig.warmup_steps must be >= 0, got -5"),
    ("betas", (0.9, 1.5), r"TrainConfig.betas\[1\] must be in \[0, 1\), got 1.5"),
    ("stage", "decoder", r"TrainConfig.stage must be one of \('dynamics', 'upsampler'\), got 'decoder'"),
    ("mixed_precision", "fp8", r"TrainConfig.mixed_precision must be one of"),
    ("compile", "yes", r"TrainConfig.compile must be true or false, got 'yes'"),
    ("lr", float("nan"), r"TrainConfig.lr must be > 0, got nan"),
])
def test_a_bad_train_field_is_refused_naming_field_value_and_rule(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_whole_numbers_from_json_or_yaml_are_taken_as_integers():
    cfg = config_from_dict(yaml.safe_load("steps: 1.0e+3\nbetas: [0.9, 0.99]\nlr: 1\n"))
    assert cfg.steps == 1000 and isinstance(cfg.steps, int) and cfg.betas == (0.9, 0.99) and cfg.lr == 1


@pytest.mark.parametrize("cls, kw, match", [
    (MaskConfig, {"dropout": 1.5}, r"MaskConfig.dropout must be in \[0, 1\], got 1.5"),
    (MaskConfig, {"kind": "blurry"}, r"MaskConfig.kind must be one of"),
    (SamplerConfig, {"steps": 0}, r"SamplerConfig.steps must be >= 1, got 0"),
    (CollectConfig, {"workers": 0}, r"CollectConfig.workers must be >= 1, got 0"),
    (CollectConfig, {"test_fraction": 1.0}, r"CollectConfig.test_fraction must be in \[0, 1\), got 1.0"),
])
def test_other_configs_check_their_fields_too(cls, kw, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kw)


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "..", ".", "a/b", "", "x\n"])
def test_run_names_that_would_leave_the_runs_root_are_refused(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PIWM_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match="RUN_NAME must be a plain name"):
        runs.run_dir("03_train_edm", name, {})
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("runs/**/config.json"))


def test_a_plain_run_name_is_kept():
    assert plain_name("course-soft_v1.2") == "course-soft_v1.2"


@pytest.mark.parametrize("kw, match", [
    ({"name": ".."}, "SweepConfig.name must be a plain name"),
    ({"name": "a/b"}, "SweepConfig.name must be a plain name"),
    ({"reuse": {"tiny/soft": "../../elsewhere"}}, r"SweepConfig.reuse\['tiny/soft'\] .* must be a plain name"),
    ({"reuse": {"tiny/blurry": "course"}}, "reuse key 'tiny/blurry' mask"),
    ({"train": {"STEPS": -3}}, "SweepConfig.train: STEPS must be >= 1, got -3"),
    ({"evaluate": {"NOT_A_PARAM": 1}}, r"SweepConfig.evaluate: unknown parameter\(s\) NOT_A_PARAM"),
])
def test_sweep_names_reuse_and_cell_parameters_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        SweepConfig(**kw)
