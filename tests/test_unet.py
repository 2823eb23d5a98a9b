"""U-Net of the denoiser: input layout, output shapes, zero-initialised output, presets' parameter counts."""

from __future__ import annotations

import pytest
import torch

from piwm_lib.unet import PAPER_TOTALS, UNet, UNetConfig, count_parameters, preset, world_model_parameters


@pytest.mark.parametrize("name", ["130M", "400M"])
def test_paper_sizes_within_2_percent(name):
    counts = world_model_parameters(name)  # built on the meta device
    assert abs(counts["total"] - PAPER_TOTALS[name]) / PAPER_TOTALS[name] < 0.02
    assert counts["upsampler"] == pytest.approx(51e6, rel=0.02)
    assert counts["dynamics"] == pytest.approx({"130M": 79e6, "400M": 330e6}[name], rel=0.02)


def test_sizes_are_ordered():
    sizes = [count_parameters(n) for n in ("tiny", "course", "130M", "400M")]
    assert sizes == sorted(sizes) and sizes[0] < 3e6


def test_input_layout():
    assert preset("tiny").in_channels == 16  # 4 frames x 3 + mask + noisy target
    assert preset("130M").in_channels == 16
    assert preset("upsampler").in_channels == 9  # previous full-res frame, bicubic upsample, noisy target


def test_dynamics_shape_and_zero_output():
    torch.manual_seed(0)
    net = UNet(preset("tiny"))
    y = net(torch.randn(2, 16, 30, 120), torch.zeros(2), torch.randint(0, 5, (2, 4)), torch.zeros(2))
    assert y.shape == (2, 3, 30, 120)
    assert torch.equal(y, torch.zeros_like(y))  # zero-initialised output conv


def test_upsampler_shape():
    torch.manual_seed(0)
    net = UNet(preset("upsampler-tiny"))
    with torch.no_grad():
        net.conv_out.weight.normal_()
        y = net(torch.randn(1, 9, 150, 600), torch.zeros(1), None, torch.zeros(1))
    assert y.shape == (1, 3, 150, 600) and y.abs().sum() > 0


def test_action_order_matters():
    torch.manual_seed(0)
    net = UNet(preset("tiny"))
    c = torch.zeros(2)
    cond = net.condition(c, torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), c)
    assert not torch.allclose(cond[0], cond[1])  # one embedding per context position, not a bag of actions
    with pytest.raises(ValueError):
        net.condition(c, None, c)


def test_same_seed_same_model():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        net = UNet(preset("tiny"))
        with torch.no_grad():
            net.conv_out.weight.normal_(generator=torch.Generator().manual_seed(1))
            outs.append(net(torch.ones(1, 16, 30, 120), torch.zeros(1), torch.ones(1, 4, dtype=torch.long),
                            torch.zeros(1)))
    assert torch.equal(outs[0], outs[1])


def test_config_checks():
    with pytest.raises(ValueError):
        preset("1B")
    with pytest.raises(ValueError):
        UNetConfig(channels=(48, 96), attn_levels=(0,), head_dim=32)  # 48 channels are not 32-channel heads
    with pytest.raises(ValueError):
        UNetConfig(attn_levels=(4,))
