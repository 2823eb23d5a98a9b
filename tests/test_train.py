"""Training: weights move and the loss falls, exact resume after a kill, NaN stop, 2-process accelerate (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from piwm_lib import train as T
from piwm_lib.checkpoint import read_checkpoint
from piwm_lib.configs import save_json, to_dict


def micro(data: Path, out: Path, **kw) -> T.TrainConfig:
    """The smallest real training run: micro U-Net, 2 autoregressive targets, batch 2, fp32 on CPU."""
    base = dict(data_dir=str(data), out_dir=str(out), model="micro", ar_steps=2, batch_size=2, steps=4,
                ckpt_every=2, log_every=1, warmup_steps=1, lr=1e-3, device="cpu", progress=False)
    return T.TrainConfig(**{**base, **kw})


def weights(path: Path, key: str = "model") -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[key]


def pair(path: Path) -> tuple[bytes, bytes]:
    """The bytes of a checkpoint's .safetensors and .json files."""
    return path.read_bytes(), path.with_suffix(".json").read_bytes()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="mask"):
        T.TrainConfig(mask="blurry")
    with pytest.raises(ValueError, match="mixed_precision"):
        T.TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"TrainConfig.model must be one of .*got 'huge'"):
        T.TrainConfig(model="huge")
    with pytest.raises(ValueError, match="unknown field"):
        T.config_from_dict({"stpes": 3})
    cfg = T.TrainConfig(steps=7, edm=replace(T.EDMConfig(), p_mean=-1.0))
    save_json(cfg, tmp_path / "c.json")
    assert T.load_config(tmp_path / "c.json") == cfg


def test_step_batches_resume_and_ranks():
    full = T.StepBatches(10, 3, seed=5)
    it = iter(full)
    first = [next(it) for _ in range(8)]  # crosses two epoch boundaries
    again = iter(T.StepBatches(10, 3, seed=5, start=5))
    assert [next(again) for _ in range(3)] == first[5:]
    r0, r1 = iter(T.StepBatches(10, 3, 5, rank=0, world=2)), iter(T.StepBatches(10, 3, 5, rank=1, world=2))
    assert next(r0) + next(r1) == first[0] + first[1]  # the two ranks split the same stream
    assert sorted(sum(first[:3], []) + [first[3][0]]) == list(range(10))  # each epoch is a permutation


def test_one_step_changes_weights_and_loss_falls_on_fixed_batch(small_dataset):
    cfg = micro(small_dataset, "/unused")
    data = T.windows(cfg)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    torch.manual_seed(0)
    model = T.Denoiser(cfg.unet, cfg.edm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        g = torch.Generator().manual_seed(0)  # the same noise every step: a fixed batch
        losses.append(float(T.dynamics_loss(model, batch, cfg, g, lambda x: x.backward())))
        opt.step()
        opt.zero_grad()
    changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
    assert "net.conv_out.weight" in changed and len(changed) > len(before) // 2
    assert losses[-1] < 0.6 * losses[0] and losses[1] < losses[0], losses


def test_train_writes_log_checkpoints_and_ema(small_dataset, tmp_path):
    cfg = micro(small_dataset, tmp_path / "run", keep_ckpts=1)
    rows = []
    out = T.train(cfg, callback=rows.append)
    assert out["step"] == 4 and [r["step"] for r in rows] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt_*")) == ["ckpt_00000004.json",
                                                                         "ckpt_00000004.safetensors"]
    log = T.read_log(tmp_path / "run")
    assert list(log["step"]) == [1, 2, 3, 4] and (log["loss"] > 0).all()
    state = read_checkpoint(out["checkpoint"])
    assert state["config"] == {k: v for k, v in to_dict(cfg).items() if k != "out_dir"} and state["step"] == 4
    assert not same(state["model"], state["ema"])  # the average lags the weights
    model = T.load_denoiser(tmp_path / "run")
    assert same(model.state_dict(), state["ema"])


def test_resume_after_kill_equals_uninterrupted(small_dataset, tmp_path):
    whole = micro(small_dataset, tmp_path / "whole", steps=6)
    T.train(whole)
    killed = micro(small_dataset, tmp_path / "killed", steps=6)
    save_json(killed, tmp_path / "killed.json")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "piwm_lib.train", "--config", str(tmp_path / "killed.json"),
                             "--set", "ckpt_every=2"], env=env)
    latest = tmp_path / "killed" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    step = json.loads(latest.read_text())["step"]
    if proc.returncode != -signal.SIGKILL or step >= 6:
        pytest.skip("the run finished before it could be killed")
    T.train(killed)  # resumes from the latest checkpoint
    a, b = tmp_path / "whole" / "ckpt_00000006.safetensors", tmp_path / "killed" / "ckpt_00000006.safetensors"
    assert same(weights(a), weights(b)) and same(weights(a, "ema"), weights(b, "ema"))
    assert same(weights(a, "optimizer")["state"]["0"], weights(b, "optimizer")["state"]["0"])
    assert pair(a) == pair(b)  # the same bytes: weights, optimizer, scheduler, every RNG, configs
    assert (tmp_path / "whole" / "latest.json").read_bytes() == latest.read_bytes()
    assert list(T.read_log(tmp_path / "killed")["step"]) == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_other_settings(small_dataset, tmp_path):
    T.train(micro(small_dataset, tmp_path / "r", steps=2))
    with pytest.raises(ValueError, match=r"lr: 0\.001 -> 0\.0005"):
        T.train(micro(small_dataset, tmp_path / "r", steps=4, lr=5e-4))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(small_dataset, tmp_path, monkeypatch):
    real = T.dynamics_loss
    calls = []

    def poisoned(model, batch, cfg, g, backward=None):
        calls.append(1)
        loss = real(model, batch, cfg, g, backward)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(T, "dynamics_loss", poisoned)
    with pytest.raises(T.TrainingDiverged, match="step 3.*ckpt_00000002.safetensors"):
        T.train(micro(small_dataset, tmp_path / "nan"))
    assert json.loads((tmp_path / "nan" / "latest.json").read_text())["step"] == 2


@pytest.mark.parametrize("kw", [dict(stage="upsampler", batch_size=1, steps=1),
                                dict(mask="gt", mixed_precision="bf16", loss_weighting=True, steps=1),
                                dict(mask="none", grad_accum=2, steps=1)])
def test_other_stages_and_options_run(small_dataset, tmp_path, kw):
    out = T.train(micro(small_dataset, tmp_path / "o", **kw))
    assert out["step"] == 1 and 0 < out["loss"] < 10


def test_two_processes_with_accelerate_gloo(small_dataset, tmp_path):
    cfg = micro(small_dataset, tmp_path / "ddp", steps=2, batch_size=1)
    save_json(cfg, tmp_path / "ddp.json")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "piwm_lib.train", "--config", str(tmp_path / "ddp.json")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MASTER_PORT": "29531"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["step"] == 2
    log = T.read_log(tmp_path / "ddp")
    assert list(log["step"]) == [1, 2] and (log["samples_per_s"] > 0).all()
    state = read_checkpoint(tmp_path / "ddp" / "ckpt_00000002.safetensors")
    assert state["world_size"] == 2
    assert state["model"]["net.conv_out.weight"].abs().sum() > 0  # zero-initialised, moved by the averaged grads


def test_notebook_launcher_two_processes(small_dataset, tmp_path):
    cfg = micro(small_dataset, tmp_path / "nl", steps=2, batch_size=1)
    save_json(cfg, tmp_path / "nl.json")
    code = ("from piwm_lib import train as T; import sys; c = T.load_config(sys.argv[1]); "
            "T.train(T.replace(c, out_dir=c.out_dir + '_first', steps=1)); T.launch(c, 2)")  # as a notebook would
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nl.json")], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    assert read_checkpoint(tmp_path / "nl" / "ckpt_00000002.safetensors")["world_size"] == 2


def test_a_model_without_mask_has_no_mask_channel():
    base = dict(data_dir="d", out_dir="o", model="tiny")
    assert T.TrainConfig(mask="none", **base).unet.in_channels == 15  # 4 context frames + noisy target (DIAMOND)
    assert T.TrainConfig(mask="soft", **base).unet.in_channels == 16  # + the mask channel (PIWM)
    assert T.TrainConfig(mask="none", stage="upsampler", **base).unet.use_mask is False
