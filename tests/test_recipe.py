"""The published training recipe (DIAMOND csgo, which PIWM's code forks) as config fields: context noise, s_cond,
actions before the conditioning MLP, the upsampler's sampler, weight decay on weights only, per-batch mask dropout,
the mask settings nested in TrainConfig, and loading of checkpoints saved before the recipe."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from piwm_lib import train as T
from piwm_lib.configs import save_json, to_dict
from piwm_lib.edm import Denoiser, EDMConfig, augment_context
from piwm_lib.masks import MaskConfig, make_mask
from piwm_lib.sampler import PRESETS, SamplerConfig, sample
from piwm_lib.unet import UNet, preset


def test_context_noise_follows_the_target_distribution_with_offset_noise():
    cfg = EDMConfig()
    ctx = torch.zeros(4000, 4, 3, 2, 2)
    noisy, sigma = augment_context(ctx, cfg, torch.Generator().manual_seed(0))
    assert sigma.median().item() == pytest.approx(math.exp(-1.2), rel=0.08)  # ln sigma ~ N(-1.2, 1.2^2)
    assert (sigma > 1).float().mean().item() == pytest.approx(0.159, abs=0.02)  # P(z > 1.2 / 1.2) = 15.9%
    assert sigma.min() >= cfg.ctx_sigma_min and sigma.max() <= cfg.ctx_sigma_max
    # offset noise: each frame and channel shifted as a whole, std 0.1, beside the per-pixel noise
    quiet = sigma < 0.01
    shift = noisy[quiet].mean((-1, -2))  # (n, 4, 3)
    assert shift.std().item() == pytest.approx(cfg.ctx_offset, rel=0.15)
    clean, _ = augment_context(ctx, replace(cfg, ctx_offset=0.0), torch.Generator().manual_seed(0))
    assert clean[quiet].mean((-1, -2)).abs().max() < 0.05  # without it, a quiet context stays near zero


def test_upsampler_trains_on_clean_context_unless_told():
    assert T.TrainConfig(stage="dynamics").denoiser_edm.ctx_augment
    assert not T.TrainConfig(stage="upsampler").denoiser_edm.ctx_augment
    assert T.TrainConfig(stage="upsampler", upsampler_ctx_noise=True).denoiser_edm.ctx_augment


@pytest.mark.parametrize("before", [True, False])
def test_actions_enter_before_or_after_the_conditioning_mlp(before):
    torch.manual_seed(0)
    net = UNet(replace(preset("micro"), action_before_mlp=before))
    assert net.action_emb.weight.shape[1] == (net.cfg.n_fourier if before else net.cfg.cond_dim)
    with torch.no_grad():
        net.action_emb.weight.normal_()  # a trained-like table
    a1, a2 = torch.tensor([[0, 0, 0, 0]]), torch.tensor([[3, 3, 3, 3]])
    lo, hi, ctx = torch.tensor([-1.0]), torch.tensor([0.4]), torch.tensor([0.0])
    effect_lo = net.condition(lo, a2, ctx) - net.condition(lo, a1, ctx)
    effect_hi = net.condition(hi, a2, ctx) - net.condition(hi, a1, ctx)
    # before the MLP the action's effect depends on the noise level (DIAMOND); after it, it is a constant shift
    assert torch.allclose(effect_lo, effect_hi, atol=1e-5) is (not before)


def test_train_config_places_the_action_embedding():
    assert T.TrainConfig(model="micro").unet.action_before_mlp  # published default
    assert not T.TrainConfig(model="micro", action_before_mlp=False).unet.action_before_mlp
    assert not T.TrainConfig(model="micro", stage="upsampler").unet.n_actions  # the upsampler takes no actions


def test_published_samplers():
    dyn, up = PRESETS["fast"]
    assert (dyn.s_cond, dyn.s_churn, dyn.sigma_min) == (0.005, 0.0, 0.002)
    assert (up.s_cond, up.sigma_min, up.s_churn, up.s_tmin, up.s_tmax, up.s_noise) == (0.0, 1.0, 10.0, 1.0, 5.0, 0.9)
    assert PRESETS["quality"][1].sigma_min == 1.0 and PRESETS["quality"][0].s_cond == 0.005


def test_s_cond_noises_the_context_and_tells_the_network():
    """One Euler step with s_cond: D(5 eps; 5, context + s_cond eps_k, c_noise_ctx = ln(s_cond) / 4), by hand."""
    torch.manual_seed(1)
    model = Denoiser(preset("micro"), EDMConfig()).eval()
    with torch.no_grad():
        model.net.conv_out.weight.normal_(std=0.1)
    ctx, acts = torch.rand(1, 4, 3, 30, 120) * 2 - 1, torch.tensor([[0, 1, 2, 3]])
    out = sample(model, ctx, SamplerConfig(steps=1, s_cond=0.005), [torch.Generator().manual_seed(7)], acts)
    g = torch.Generator().manual_seed(7)
    x = 5.0 * torch.randn((3, 30, 120), generator=g)[None]  # initial noise first
    noise = torch.stack([torch.randn((3, 30, 120), generator=g) for _ in range(4)])[None]  # then one per frame
    with torch.no_grad():
        expect = model(x, torch.full((1,), 5.0), ctx + 0.005 * noise, acts, None, torch.full((1,), 0.005))
        plain = model(x, torch.full((1,), 5.0), ctx, acts, None, None)
    torch.testing.assert_close(out, expect)
    assert not torch.allclose(out, plain)


def test_weight_decay_on_linear_and_conv_weights_only():
    model = Denoiser(preset("micro"))
    decay, rest = T.param_groups(model, T.TrainConfig())
    named = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert all(named[id(p)].endswith("weight") for p in decay["params"])
    rest_names = [named[id(p)] for p in rest["params"]]
    assert "net.action_emb.weight" in rest_names and any(n.endswith("bias") for n in rest_names)
    assert any("norm" in n and n.endswith("weight") for n in rest_names)  # group norm scales are not decayed
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))
    (every,) = T.param_groups(model, T.TrainConfig(decay_weights_only=False))
    assert len(every["params"]) == len(list(model.parameters()))


def test_mask_settings_travel_with_the_training_config(tmp_path):
    released = MaskConfig(kind="soft", train_w_surr=0.55, train_w_ego=0.45, dropout=0.25)
    cfg = T.TrainConfig(mask=released)
    save_json(cfg, tmp_path / "c.json")
    back = T.load_config(tmp_path / "c.json")
    assert back == cfg and back.mask == released
    assert T.TrainConfig(mask="hard").mask == MaskConfig(kind="hard")  # a kind name stands for the defaults
    assert T.config_from_dict({"mask": "none"}).unet.use_mask is False
    frames = torch.zeros(1, 1, 150, 600, 3, dtype=torch.uint8)
    frames[..., 70:80, 290:310, 2] = 220  # one other vehicle: blue
    got = T.window_masks(frames, cfg.mask, "train")[0, 0]
    torch.testing.assert_close(got, make_mask(frames[0], released, "train")[0])
    assert got.max().item() == pytest.approx(0.55, abs=0.05)  # the run's weight, not the paper's 1.0


def test_configs_saved_before_the_recipe_load_as_they_were_trained(tmp_path):
    old = to_dict(T.TrainConfig(model="micro"))
    del old["decay_weights_only"], old["upsampler_ctx_noise"], old["action_before_mlp"]
    old["mask"], old["mask_dropout"] = "soft", 0.3
    cfg = T.config_from_dict(old)
    assert cfg.mask == MaskConfig(kind="soft", dropout=0.3, dropout_per="sample")
    assert not cfg.decay_weights_only and cfg.upsampler_ctx_noise
    assert not cfg.action_before_mlp and not cfg.unet.action_before_mlp  # the U-Net it trained, had it resumed
    # a checkpoint of that time: actions added after the MLP, a config with no action_before_mlp field
    torch.manual_seed(0)
    net_cfg = replace(preset("micro"), action_before_mlp=False)
    model = Denoiser(net_cfg)
    with torch.no_grad():
        model.net.conv_out.weight.normal_(std=0.1)
    unet = to_dict(net_cfg)
    del unet["action_before_mlp"]
    torch.save({"config": old, "unet": unet, "edm": to_dict(EDMConfig()), "ema": model.state_dict()},
               tmp_path / "ckpt_00000001.pt")
    loaded = T.load_denoiser(tmp_path / "ckpt_00000001.pt")
    assert loaded.unet_cfg.action_before_mlp is False
    x, ctx, acts = torch.randn(1, 3, 30, 120), torch.randn(1, 4, 3, 30, 120), torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.ones(1), ctx, acts, None), model(x, torch.ones(1), ctx, acts, None))
