"""Checkpoints: no code runs on load, the same bytes from the same seed, corrupt ones skipped, moved runs resume,
a run never goes back to fewer steps."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from piwm_lib import checkpoint as C
from piwm_lib import train as T
from piwm_lib.configs import save_json


def micro(data: Path, out: Path, **kw) -> T.TrainConfig:
    """The smallest real run: micro U-Net, 2 targets, batch 2, 4 steps, a checkpoint every 2 (both kept)."""
    base = dict(data_dir=str(data), out_dir=str(out), model="micro", ar_steps=2, batch_size=2, steps=4,
                ckpt_every=2, log_every=1, warmup_steps=1, lr=1e-3, device="cpu", progress=False)
    return T.TrainConfig(**{**base, **kw})


def files(run: Path, step: int) -> tuple[bytes, bytes]:
    """The bytes of a checkpoint's .safetensors and .json files."""
    p = run / C.ckpt_name(step)
    return p.read_bytes(), C.meta_path(p).read_bytes()


class Plant:
    """Unpickling this creates the marker file (what a crafted checkpoint could do instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def run(small_dataset, tmp_path_factory) -> Path:
    """One finished 4-step run with checkpoints at steps 2 and 4 (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    T.train(micro(small_dataset, out))
    return out


def copy(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_crafted_pickle_checkpoint_runs_no_code(small_dataset, tmp_path, writer):
    out, marker = tmp_path / "evil", tmp_path / "pwned"
    out.mkdir()
    bad = out / "ckpt_00000001.pt"
    if writer == "pickle":
        bad.write_bytes(pickle.dumps(Plant(marker)))
    else:
        torch.save(Plant(marker), bad)
    save_json({"checkpoint": bad.name, "step": 1}, out / "latest.json")
    with pytest.raises(C.CorruptCheckpoint, match="ckpt_00000001.pt cannot be read safely.*Retrain"):
        T.load_denoiser(bad)
    with pytest.warns(C.CheckpointWarning, match="ckpt_00000001.pt"):
        assert T.latest_checkpoint(out) is None
    with pytest.warns(UserWarning, match="ckpt_00000001.pt"):
        summary = T.train(micro(small_dataset, out, steps=1))  # starts afresh beside it
    assert not marker.exists()
    assert summary["step"] == 1 and summary["checkpoint"].endswith("ckpt_00000001.safetensors")


def test_a_checkpoint_of_an_earlier_version_resumes_weights_only(run, small_dataset, tmp_path):
    out = copy(run, tmp_path / "old")
    state = C.read_checkpoint(out / C.ckpt_name(2))
    state["optimizer"] = C.optimizer_state(state["optimizer"])
    state["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state()}  # tuples and a NumPy array, as the earlier version pickled them
    for p in out.glob("ckpt_*"):
        p.unlink()
    torch.save(state, out / "ckpt_00000002.pt")
    save_json({"checkpoint": "ckpt_00000002.pt", "step": 2}, out / "latest.json")
    assert T.train(micro(small_dataset, out, steps=3))["step"] == 3
    assert files(out, 3)[0] and sorted(C.steps_on_disk(out)) == [2, 3]


def test_the_same_seed_gives_the_same_bytes(run, small_dataset, tmp_path):
    T.train(micro(small_dataset, tmp_path / "again"))
    for step in (2, 4):
        assert files(run, step) == files(tmp_path / "again", step)
    meta = json.loads(C.meta_path(run / C.ckpt_name(4)).read_text())
    assert meta["format"] == C.FORMAT and meta["state"]["step"] == 4 and "out_dir" not in meta["state"]["config"]
    assert meta["state"]["data"] == C.data_fingerprint(small_dataset)
    assert meta["sha256"] == C.sha256(run / C.ckpt_name(4)) and meta["bytes"] == (run / C.ckpt_name(4)).stat().st_size


def test_a_truncated_latest_checkpoint_falls_back_and_is_rewritten(run, small_dataset, tmp_path):
    out = copy(run, tmp_path / "cut")
    newest = out / C.ckpt_name(4)
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(C.CheckpointWarning, match="ckpt_00000004.safetensors has 1000 bytes"):
        assert T.latest_checkpoint(out) == out / C.ckpt_name(2)
    with pytest.raises(C.CorruptCheckpoint, match="ckpt_00000004.safetensors"):
        T.load_denoiser(newest)
    with pytest.warns(C.CheckpointWarning, match="skipping ckpt_00000004.safetensors"):
        assert T.train(micro(small_dataset, out))["step"] == 4  # resumed from step 2
    assert files(out, 4) == files(run, 4)


def test_flipped_bytes_are_caught_by_the_hash(run, tmp_path):
    out = copy(run, tmp_path / "flip")
    newest = out / C.ckpt_name(4)
    data = bytearray(newest.read_bytes())
    data[-5] ^= 0xFF  # a weight, same size
    newest.write_bytes(bytes(data))
    with pytest.raises(C.CorruptCheckpoint, match="ckpt_00000004.safetensors does not match the sha256"):
        C.read_checkpoint(newest)
    with pytest.warns(C.CheckpointWarning, match="ckpt_00000004"):
        model = T.load_denoiser(out)  # the folder: the newest good one
    assert torch.equal(model.state_dict()["net.conv_out.weight"], C.read_checkpoint(out / C.ckpt_name(2))["ema"][
        "net.conv_out.weight"])


@pytest.mark.parametrize("damage", ["garbage latest.json", "latest.json names a missing file", "garbage ckpt json",
                                    "no latest.json"])
def test_bad_pointers_and_metadata_fall_back(run, tmp_path, damage):
    out = copy(run, tmp_path / "bad")
    latest = out / "latest.json"
    if damage == "garbage latest.json":
        latest.write_bytes(b"\x00{not json")
        want, named = 4, "latest.json is unreadable"
    elif damage == "latest.json names a missing file":
        (out / C.ckpt_name(4)).unlink()
        want, named = 2, "ckpt_00000004.safetensors"
    elif damage == "garbage ckpt json":
        C.meta_path(out / C.ckpt_name(4)).write_text("[1, 2")
        want, named = 2, "ckpt_00000004.safetensors is incomplete"
    else:
        latest.unlink()
        want, named = 4, "latest.json is missing"
    with pytest.warns(C.CheckpointWarning, match=named):
        assert T.latest_checkpoint(out) == out / C.ckpt_name(want)


def test_a_moved_run_and_dataset_resume(run, small_dataset, tmp_path):
    data = Path(shutil.copytree(small_dataset, tmp_path / "data_moved"))
    out = copy(run, tmp_path / "moved")
    for p in out.glob("ckpt_00000004.*"):
        p.unlink()
    save_json({"checkpoint": C.ckpt_name(2), "step": 2}, out / "latest.json")
    before = T.read_log(out)
    summary = T.train(micro(data, out))
    after = T.read_log(out)
    assert summary["step"] == 4 and list(after["step"]) == [1, 2, 3, 4]
    assert list(after["seconds"][:2]) == list(before["seconds"][:2])  # steps 1-2 kept: it resumed, not restarted
    assert C.read_checkpoint(out / C.ckpt_name(4))["model"].keys() == C.read_checkpoint(run / C.ckpt_name(4))[
        "model"].keys()
    assert json.loads((out / "config.json").read_text())["out_dir"] == str(out)


def test_other_data_or_settings_are_refused_naming_old_and_new(run, small_dataset, tmp_path):
    data = Path(shutil.copytree(small_dataset, tmp_path / "other"))
    manifest = json.loads((data / "dataset.json").read_text())
    save_json({**manifest, "seed": manifest["seed"] + 1}, data / "dataset.json")
    out = copy(run, tmp_path / "r")
    with pytest.raises(ValueError, match="data_dir: .* holds other episodes"):
        T.train(micro(data, out, steps=6))
    with pytest.raises(ValueError, match=r"ar_steps: 2 -> 3; batch_size: 2 -> 1"):
        T.train(micro(small_dataset, out, steps=6, ar_steps=3, batch_size=1))
    with pytest.raises(ValueError, match=r"mask.dropout: 0.3 -> 0.5"):
        T.train(micro(small_dataset, out, steps=6, mask=T.MaskConfig(dropout=0.5)))


def test_fewer_steps_than_the_checkpoint_are_refused(run, small_dataset, tmp_path, capsys):
    out = copy(run, tmp_path / "back")
    with pytest.raises(ValueError, match="ckpt_00000004.safetensors is at step 4 but steps=3"):
        T.train(micro(small_dataset, out, steps=3))
    save_json(micro(small_dataset, out), tmp_path / "cfg.json")
    config = (out / "config.json").read_bytes()
    assert T.main(["--config", str(tmp_path / "cfg.json"), "--set", "steps=2"]) == 2
    assert "at step 4 but steps=2" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == config and files(out, 4) == files(run, 4)
