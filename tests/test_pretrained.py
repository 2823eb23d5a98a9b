"""Shipped models: built by one command from a recipe (resuming), exported as safetensors + JSON + log, loaded by name
into a ready world model; a corrupt or mismatched file fails naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from piwm_lib import pretrained as P
from piwm_lib.checkpoint import data_fingerprint, read_checkpoint
from piwm_lib.dataset import Dataset


@pytest.fixture(scope="module")
def shipped(small_dataset, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A two-model recipe (micro soft dynamics + its upsampler) built into a temporary shipped folder."""
    tmp = tmp_path_factory.mktemp("shipped")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "train": {"data_dir": str(small_dataset), "model": "micro", "ar_steps": 2, "batch_size": 2, "steps": 2,
                  "warmup_steps": 1, "device": "cpu", "progress": False, "ckpt_every": 1},
        "models": {"t-up": {"stage": "upsampler", "train": {"batch_size": 1}},
                   "t-soft": {"upsampler": "t-up", "train": {"mask": "soft"}}}}))
    root, runs = tmp / "pretrained", tmp / "runs"
    P.build(recipe, root=root, runs=runs)
    return recipe, root, runs


def test_build_exports_weights_config_log_and_fingerprint(shipped, small_dataset):
    _, root, runs = shipped
    assert P.shipped_names(root) == ["t-soft", "t-up"]
    meta = json.loads((root / "t-soft" / P.META).read_text())
    assert meta["step"] == 2 and meta["stage"] == "dynamics" and meta["upsampler"] == "t-up"
    assert meta["data"] == data_fingerprint(small_dataset) and meta["compute"]["steps"] == 2
    assert "out_dir" not in meta["config"] and meta["config"]["mask"]["kind"] == "soft"
    assert (root / "t-soft" / P.LOG).read_text() == (runs / "t-soft" / P.LOG).read_text()
    ema = read_checkpoint(runs / "t-soft" / "ckpt_00000002.safetensors", ("ema",))["ema"]
    model, _ = P.load_shipped("t-soft", root=root)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())


def test_a_second_build_resumes_and_gives_the_same_bytes(shipped):
    recipe, root, runs = shipped
    before = {p.name: p.read_bytes() for p in (root / "t-soft").iterdir() if p.name != P.META}
    P.build(recipe, names=["t-soft"], root=root, runs=runs)  # already at its steps: nothing trained, same export
    assert {p.name: p.read_bytes() for p in (root / "t-soft").iterdir() if p.name != P.META} == before


def test_load_pretrained_gives_a_world_model_that_steps(shipped, small_dataset):
    _, root, _ = shipped
    wm = P.load_pretrained("t-soft", root=root)
    assert wm.cfg.mask.kind == "soft" and wm.up is not None
    with Dataset(small_dataset).open(0) as ep:
        low, full, acts = ep.read("lowres", 0, 4)[None], ep.read("frames", 0, 4)[None], ep.read("actions", 0, 3)[None]
    wm.reset(low, full, acts)
    nxt_low, nxt_full = wm.step(np.array([1]))
    assert nxt_low.shape == (1, 30, 120, 3) and nxt_full.shape == (1, 150, 600, 3)


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / P.WEIGHTS).write_bytes((d / P.WEIGHTS).read_bytes()[:-10]), "does not match model.json"),
    (lambda d: (d / P.META).write_text("{garbage"), r"shipped model 't-up'.*git checkout"),
    (lambda d: (d / P.META).unlink(), r"no shipped model 't-up'.*shipped: t-soft"),
])
def test_a_corrupt_shipped_file_is_named(shipped, tmp_path, damage, match):
    import shutil
    root = Path(shutil.copytree(shipped[1], tmp_path / "p"))
    damage(root / "t-up")
    with pytest.raises(P.PretrainedError, match=match):
        P.load_pretrained("t-soft", root=root)


def test_weights_that_do_not_fit_their_config_are_named(shipped, tmp_path):
    import shutil
    root = Path(shutil.copytree(shipped[1], tmp_path / "p"))
    meta = json.loads((root / "t-soft" / P.META).read_text())
    meta["unet"]["channels"] = [c * 2 for c in meta["unet"]["channels"]]
    (root / "t-soft" / P.META).write_text(json.dumps(meta))
    with pytest.raises(P.PretrainedError, match=r"t-soft/model.safetensors does not fit the network"):
        P.load_shipped("t-soft", root=root)


def test_unknown_names_are_refused(shipped):
    recipe, root, runs = shipped
    with pytest.raises(ValueError, match=r"\['nope'\] not in"):
        P.build(recipe, names=["nope"], root=root, runs=runs)
    with pytest.raises(ValueError, match="plain name"):
        P.load_pretrained("../x", root=root)


def test_a_notebook_without_a_trained_run_uses_the_shipped_model(shipped, small_dataset, tmp_path, monkeypatch):
    from piwm_lib.train import ensure_world_model
    monkeypatch.setattr(P, "SHIPPED", shipped[1])
    dyn, up, cfg, folder = ensure_world_model(tmp_path / "no-run", small_dataset, tmp_path / "fallback", steps=0,
                                              pretrained="t-soft")
    assert folder == shipped[1] / "t-soft" and cfg.mask.kind == "soft"
    assert up.unet_cfg == P.load_shipped("t-up")[0].unet_cfg
    assert not (tmp_path / "fallback").exists()  # nothing trained


def test_quality_curve_measures_kept_checkpoints_or_the_shipped_weights(shipped, small_dataset, tmp_path):
    from piwm_lib.dataset import test_windows
    from piwm_lib.quality import curve
    _, root, runs = shipped
    win = test_windows(small_dataset, 6, max_windows=2)
    rows = curve(runs / "t-soft", 1, win, ("cold", "warm"), root=root)
    assert [(r["step"], r["start"]) for r in rows] == [(1, "cold"), (1, "warm"), (2, "cold"), (2, "warm")]
    assert all(r["model"] == "t-soft" and r["minutes"] >= 0 and 0 <= r["ego_presence"] <= 1 for r in rows)
    gone = curve(tmp_path / "t-soft", 1, win, ("warm",), root=root)  # no run folder: the shipped weights
    assert [(r["step"], r["start"]) for r in gone] == [(2, "warm")]
    np.testing.assert_equal(gone[0], rows[-1])  # the shipped weights are the last checkpoint's EMA


def test_recipe_comparison_trains_an_arm_and_pairs_it_with_the_base(shipped, small_dataset, tmp_path):
    from piwm_lib.checkpoint import load_denoiser
    from piwm_lib.recipe import Comparison, arm_config, measure_arms, read_comparison, train_arms
    recipe, root, runs = shipped
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump({
        "base": "t-soft", "step": 2, "windows": 2, "horizon": 2, "starts": ["cold"], "recipe": str(recipe),
        "n_boot": 50, "arms": {"published": {"run": str(runs / "t-soft")},
                               "s_cond-0": {"run": str(runs / "t-soft"), "s_cond": 0.0},
                               "after": {"train": {"action_before_mlp": False, "edm": {"ctx_p_mean": -3.0}}}}},
        sort_keys=False))
    comp = read_comparison(spec)
    cfg = arm_config(comp, comp.arms[2], tmp_path)
    assert cfg.steps == 2 and cfg.mask.kind == "soft" and cfg.model == "micro"  # the base recipe, the arm's changes
    assert cfg.edm.ctx_p_mean == -3.0 and cfg.edm.ctx_p_std == 1.2 and not cfg.unet.action_before_mlp
    train_arms(comp, tmp_path)
    assert not load_denoiser(tmp_path / "after").unet_cfg.action_before_mlp
    table = measure_arms(comp, small_dataset, tmp_path, root=root)
    assert list(table["arm"]) == ["published", "s_cond-0", "after"] and (table["windows"] == 2).all()
    base = table.iloc[0]
    for key in ("d_vanish_popup_per_100", "d_ego_presence"):  # the base against itself
        assert base[key] == base[key + "_lo"] == base[key + "_hi"] == 0
    assert "d_recall_h8" not in table  # recall at horizon 8 needs 8 generated frames
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "t-soft", "step": 2, "arms": {"a": {"run": "x"}, "b": {}}}))
    with pytest.raises(ValueError, match="arm 'b' needs exactly one of 'train'"):
        read_comparison(bad)
    bad.write_text(yaml.safe_dump({"base": "t-soft", "step": 2, "arms": {"a": {"run": "x"}, "b": {"runs": "y"}}}))
    with pytest.raises(ValueError, match=r"arm 'b' has unknown keys \['runs'\]"):
        read_comparison(bad)
    with pytest.raises(ValueError, match="not a model of"):
        arm_config(Comparison(base="t-nope", step=2, arms=comp.arms, recipe=str(recipe)), comp.arms[2], tmp_path)
