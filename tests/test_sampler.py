"""Sampling: Karras schedule, Euler/Heun, Warm Start, reset, determinism, batched == one by one."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from piwm_lib.edm import Denoiser, EDMConfig
from piwm_lib.masks import MaskConfig
from piwm_lib.sampler import PRESETS, SamplerConfig, initial_noise, karras_sigmas, sample
from piwm_lib.unet import preset
from piwm_lib.worldmodel import WorldModelConfig, WorldModelEnv, rollout, with_warm_start


def trained_like(name: str, seed: int = 0) -> Denoiser:
    """A denoiser with random non-zero output weights (a zero-initialised one would return c_skip x only)."""
    torch.manual_seed(seed)
    model = Denoiser(preset(name), EDMConfig()).eval()
    for p in model.net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return model


def gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + b) for b in range(n)]


@pytest.mark.parametrize("steps", [2, 3, 10, 50])
def test_karras_schedule_endpoints_and_monotone(steps):
    s = karras_sigmas(steps, 0.002, 5.0, 7.0)
    assert len(s) == steps + 1 and s[-1] == 0
    assert math.isclose(s[0], 5.0, rel_tol=1e-12) and math.isclose(s[-2], 0.002, rel_tol=1e-9)
    assert (s[1:] < s[:-1]).all()
    mid = (5.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 5.0 ** (1 / 7))) ** 7  # EDM eq. 5 at i = (N-1)/2
    if steps % 2 == 1:
        assert math.isclose(s[steps // 2], mid, rel_tol=1e-9)


def test_one_step_schedule_is_max_then_zero():
    assert karras_sigmas(1, 0.002, 5.0).tolist() == [5.0, 0.0]


def test_one_euler_step_is_the_denoiser_at_sigma_max():
    model = trained_like("micro")
    ctx, acts, mask = torch.rand(2, 4, 3, 30, 120) * 2 - 1, torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]]), None
    mask = torch.rand(2, 30, 120)
    out = sample(model, ctx, SamplerConfig(steps=1), gens(2), acts, mask)
    x = 5.0 * torch.stack([torch.randn(3, 30, 120, generator=g) for g in gens(2)])
    with torch.no_grad():
        expect = model(x, torch.full((2,), 5.0), ctx, acts, mask)
    assert torch.equal(out, expect)


def test_heun_uses_two_calls_per_step_except_the_last():
    model = trained_like("micro")
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    sample(model, torch.zeros(1, 4, 3, 30, 120), SamplerConfig(steps=3, order=2), gens(1),
           torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 30, 120))
    assert len(calls) == 2 + 2 + 1


def test_warm_start_with_zero_noise_starts_from_previous_frame():
    prev = torch.rand(2, 3, 30, 120)
    cfg = SamplerConfig(warm_offset=0.0, warm_pixel=0.0)
    assert torch.equal(initial_noise((2, 3, 30, 120), 5.0, gens(2), "cpu", prev, cfg), prev)
    noisy = initial_noise((2, 3, 30, 120), 5.0, gens(2), "cpu", prev, replace(cfg, warm_offset=0.05, warm_pixel=0.05))
    assert 0.05 < (noisy - prev).std() < 0.1  # sqrt(0.05^2 + 0.05^2) = 0.071


def world(warm: bool, kind: str = "soft") -> WorldModelEnv:
    dyn, up = trained_like("micro"), trained_like("upsampler-tiny", 1)
    return WorldModelEnv(dyn, up, with_warm_start(WorldModelConfig(mask=MaskConfig(kind=kind)), warm), seed=3)


def real_window(small_dataset, n: int = 7, b: int = 2):
    from piwm_lib.dataset import WindowDataset
    ds = WindowDataset(small_dataset, "train", n, "lowres", extra={"full": ("frames", 0, n)})
    items = [ds[i * 5] for i in range(b)]
    return (np.stack([i["frames"].numpy() for i in items]), np.stack([i["full"].numpy() for i in items]),
            np.stack([i["actions"].numpy() for i in items]))


def test_reset_forgets_the_previous_frame(small_dataset):
    low, full, acts = real_window(small_dataset)
    env = world(True)
    env.reset(low[:, :4], full[:, :4], acts[:, :3])
    first = env.step(acts[:, 3])[0]
    env.step(acts[:, 4])
    assert env.prev_low is not None
    env.reset(low[:, :4], full[:, :4], acts[:, :3])
    assert env.prev_low is None and env.prev_full is None and env.t == 0
    assert np.array_equal(env.step(acts[:, 3])[0], first)  # cold again, the same noise: the same frame


def test_warm_start_changes_frames_after_the_first(small_dataset):
    low, full, acts = real_window(small_dataset)
    cold, _ = rollout(world(False), low, full, acts)
    warm, _ = rollout(world(True), low, full, acts)
    assert np.array_equal(cold[:, 0], warm[:, 0]) and not np.array_equal(cold[:, 1:], warm[:, 1:])


def test_same_seed_same_rollout_and_batched_equals_one_by_one(small_dataset):
    low, full, acts = real_window(small_dataset, b=3)
    a_low, a_full = rollout(world(True), low, full, acts)
    b_low, b_full = rollout(world(True), low, full, acts)
    assert np.array_equal(a_low, b_low) and np.array_equal(a_full, b_full)
    for i in range(3):
        one_low, one_full = rollout(world(True), low[i:i + 1], full[i:i + 1], acts[i:i + 1], seeds=[3 + i])
        assert np.abs(one_low[0].astype(int) - a_low[i].astype(int)).max() <= 1  # batched convs: last-bit rounding
        assert np.abs(one_full[0].astype(int) - a_full[i].astype(int)).max() <= 1


def test_mask_kind_must_match_the_model():
    with pytest.raises(ValueError, match="mask channel"):
        WorldModelEnv(trained_like("micro"), None, WorldModelConfig(mask=MaskConfig(kind="none")))


def test_presets_cost():
    dyn, up = PRESETS["fast"]
    assert (dyn.steps, dyn.order, up.steps, up.order) == (1, 1, 1, 2)
    dyn, up = PRESETS["quality"]
    assert (dyn.steps, dyn.order, up.steps, up.order) == (3, 1, 10, 1)  # 13 network calls (PIWM)


def test_play_panel_steps_resets_and_toggles(small_dataset):
    from piwm_lib.widgets import PlayPanel
    low, full, acts = real_window(small_dataset, b=1)
    panel = PlayPanel(world(False), (low[:, :4], full[:, :4], acts[:, :3]))
    first = panel.act(1)
    assert first.shape == (150, 600, 3) and panel.env.t == 1 and "frame 1" in panel.status.value
    assert panel.warm.description == "Warm Start: off"
    panel.warm.value = True  # the toggle switches Warm Start in the running environment, and says so at once
    assert panel.env.cfg.warm_start and panel.warm.description == "Warm Start: on"
    assert "warm start" in panel.status.value
    panel.act(3)
    panel.reset()
    assert panel.env.t == 0 and panel.env.prev_low is None and panel.image.value[:4] == b"\x89PNG"
    panel.warm.value = False
    assert np.array_equal(panel.act(1), first)  # after reset, cold, same seed: the same first frame


def test_play_panel_keys_presses_and_autoplay_run_off_the_kernel_thread(small_dataset):
    from piwm_lib.widgets import KEYS, PlayPanel
    low, full, acts = real_window(small_dataset, b=1)
    panel = PlayPanel(world(False), (low[:, :4], full[:, :4], acts[:, :3]), drive=np.array([1, 3]))
    assert panel.keys is not None  # ipyevents is installed: the frame takes arrow keys / WASD
    assert {KEYS["ArrowLeft"], KEYS["ArrowRight"], KEYS["ArrowUp"], KEYS["ArrowDown"], KEYS[" "]} == {0, 1, 2, 3, 4}
    before = panel.image.value
    panel.lock.acquire()  # a step is running: a press is dropped and counted, not queued
    panel.on_key({"type": "keydown", "key": "ArrowLeft"})
    assert panel.dropped == 1 and "busy" in panel.status.value and panel.env.t == 0
    panel.lock.release()
    panel.on_key({"type": "keydown", "key": "ArrowLeft"})  # taken: one step in a worker thread
    panel.worker.join(60)
    assert panel.env.t == 1 and panel.image.value != before and "LANE_LEFT" in panel.status.value
    assert "frames/s" in panel.fps.value and not panel.buttons[0].disabled  # buttons back after the step
    panel.on_key({"type": "keydown", "key": "q"})  # not a driving key: nothing happens
    assert panel.env.t == 1 and panel.worker is not None
    panel.auto.value = True  # autoplay: the drive actions step until stopped
    deadline = time.time() + 60
    while panel.env.t < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert not panel.press(1) and panel.dropped == 2  # presses during autoplay are dropped
    panel.auto.value = False
    panel.worker.join(60)
    assert not panel.worker.is_alive() and panel.env.t >= 3 and panel.auto.description == "autoplay"


def test_a_gt_mask_rolls_out_only_with_the_logged_states(small_dataset):
    from piwm_lib.dataset import test_windows
    w = test_windows(small_dataset, 7, 2)  # (2, 7, ...) windows with their states
    env = world(False, "gt")
    with pytest.raises(ValueError, match="oracle"):
        rollout(env, w["lowres"], w["frames"], w["actions"])
    low, full = rollout(env, w["lowres"], w["frames"], w["actions"], states=w["states"])
    assert low.shape == (2, 3, 30, 120, 3) and full.shape == (2, 3, 150, 600, 3)
    # the mask of step t is drawn from the states of frame 3 + t: different states, different mask, other frames
    moved = w["states"].copy()
    moved[:, :, :, 8] += 40.0  # every car drawn 40 px further right
    other, _ = rollout(env, w["lowres"], w["frames"], w["actions"], states=moved)
    assert not np.array_equal(low, other)
