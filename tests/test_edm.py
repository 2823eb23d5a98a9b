"""EDM with offset noise: preconditioning identities and limits, noise, training sigma, the denoiser and its loss."""

from __future__ import annotations

import math

import pytest
import torch

from piwm_lib.edm import Denoiser, EDMConfig, add_noise, denoising_loss, precondition, sample_sigma
from piwm_lib.unet import preset

CFG = EDMConfig()
SIGMAS = torch.tensor([0.0, 0.002, 0.05, 0.5, 1.0, 5.0, 20.0, 1e3], dtype=torch.float64)


def test_preconditioning_identities():
    sd = CFG.sigma_data
    st2 = SIGMAS**2 + CFG.sigma_offset**2  # sigma~^2
    c_skip, c_out, c_in, c_noise = precondition(SIGMAS, CFG)
    torch.testing.assert_close(c_in**2 * (st2 + sd**2), torch.ones_like(st2))  # unit-variance input
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * st2) / c_out**2  # Var((x0 - c_skip x) / c_out)
    torch.testing.assert_close(target_var, torch.ones_like(st2))  # unit-variance training target
    torch.testing.assert_close(c_skip + c_out**2 / sd**2, torch.ones_like(st2))
    torch.testing.assert_close(c_noise, st2.log() / 8)


def test_preconditioning_limits():
    sd, so = CFG.sigma_data, CFG.sigma_offset
    c_skip, c_out, c_in, c_noise = precondition(torch.tensor([0.0, 1e6], dtype=torch.float64), CFG)
    # sigma -> 0: the offset noise stays, so c_skip -> sd^2 / (sd^2 + so^2) = 25/26, not 1
    assert c_skip[0].item() == pytest.approx(sd**2 / (sd**2 + so**2)) == pytest.approx(25 / 26)
    assert c_out[0].item() == pytest.approx(so * math.sqrt(25 / 26))
    assert c_in[0].item() == pytest.approx(1 / math.sqrt(so**2 + sd**2))
    assert c_noise[0].item() == pytest.approx(math.log(so) / 4)
    # sigma -> infinity: c_skip -> 0, c_out -> sigma_data, c_in sigma -> 1
    assert c_skip[1].item() == pytest.approx(0.0, abs=1e-12)
    assert c_out[1].item() == pytest.approx(sd)
    assert c_in[1].item() * 1e6 == pytest.approx(1.0)


def test_sample_sigma_lognormal_and_clipped():
    s = sample_sigma(200_000, CFG, torch.Generator().manual_seed(0))
    assert s.min() >= CFG.sigma_min and s.max() <= CFG.sigma_max
    assert s.log().mean().item() == pytest.approx(CFG.p_mean, abs=0.02)
    assert s.log().std().item() == pytest.approx(CFG.p_std, abs=0.02)


def test_offset_noise_per_image_and_channel():
    x0 = torch.zeros(4000, 3, 4, 4)
    n = add_noise(x0, torch.zeros(4000), CFG, torch.Generator().manual_seed(0))  # sigma 0: offset only
    assert torch.equal(n, n[:, :, :1, :1].expand_as(n))  # constant over H, W
    assert n[:, :, 0, 0].std().item() == pytest.approx(CFG.sigma_offset, rel=0.03)
    n = add_noise(x0, torch.full((4000,), 0.3), CFG, torch.Generator().manual_seed(1))
    assert n.std().item() == pytest.approx(math.sqrt(0.3**2 + CFG.sigma_offset**2), rel=0.02)


@pytest.mark.parametrize("sigma", [0.002, 0.1, 1.0, 10.0])
def test_training_target_has_unit_variance(sigma):
    g = torch.Generator().manual_seed(0)
    x0 = CFG.sigma_data * torch.randn(20_000, 3, 2, 2, generator=g)
    s = torch.full((20_000,), sigma)
    x = add_noise(x0, s, CFG, g)
    c_skip, c_out, _, _ = precondition(s, CFG)
    target = (x0 - c_skip.view(-1, 1, 1, 1) * x) / c_out.view(-1, 1, 1, 1)
    assert target.var().item() == pytest.approx(1.0, rel=0.03)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Denoiser(preset("tiny"), CFG)


def batch(b=2, h=30, w=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(b, 3, h, w, generator=g), 0.5 * torch.randn(b, 12, h, w, generator=g),
            torch.randint(0, 5, (b, 4), generator=g), torch.rand(b, h, w, generator=g))


def test_zero_init_denoiser_is_c_skip_x(tiny):
    x0, ctx, act, mask = batch()
    sigma = torch.tensor([0.0, 5.0])
    with torch.no_grad():
        d = tiny(x0, sigma, ctx, act, mask)
    c_skip = precondition(sigma, CFG)[0].view(-1, 1, 1, 1)
    torch.testing.assert_close(d, c_skip * x0)
    # context given as (B, K, 3, H, W) is the same input
    torch.testing.assert_close(tiny(x0, sigma, ctx.view(2, 4, 3, 30, 120), act, mask), d)


def test_denoiser_limits():
    torch.manual_seed(0)
    den = Denoiser(preset("tiny"), CFG)
    with torch.no_grad():
        den.net.conv_out.weight.normal_(0, 0.1)  # a non-zero network
        x0, ctx, act, mask = batch()
        big, small = torch.full((2,), 1e4), torch.zeros(2)
        f = den.network(x0, big, ctx, act, mask)[0]
        torch.testing.assert_close(den(x0, big, ctx, act, mask), CFG.sigma_data * f, rtol=1e-4, atol=1e-4)
        f = den.network(x0, small, ctx, act, mask)[0]
        d = den(x0, small, ctx, act, mask)
        torch.testing.assert_close(d, 25 / 26 * x0 + 0.1 * math.sqrt(25 / 26) * f)  # D(x) ~ x, offset kept


@pytest.mark.parametrize("sigma", [1.0, 5.0])
def test_loss_at_init_is_about_one(tiny, sigma):
    x0, ctx, act, mask = batch(b=16, seed=1)
    with torch.no_grad():
        loss = denoising_loss(tiny, x0, ctx, act, mask, torch.Generator().manual_seed(0), torch.full((16,), sigma))
    assert loss.item() == pytest.approx(1.0, rel=0.1)  # F = 0 at init and the target has unit variance


def test_weighted_loss_with_unit_weight_is_plain(tiny):
    x0, ctx, act, mask = batch()
    args = (tiny, x0, ctx, act, mask)
    with torch.no_grad():
        plain = denoising_loss(*args, torch.Generator().manual_seed(0))
        ones = denoising_loss(*args, torch.Generator().manual_seed(0), weight=torch.ones(2, 30, 120))
        again = denoising_loss(*args, torch.Generator().manual_seed(0))
        other = denoising_loss(*args, torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, ones)
    assert torch.equal(plain, again) and not torch.equal(plain, other)  # same seed, same loss


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    den = Denoiser(preset("tiny"), CFG)
    x0, ctx, act, mask = batch(b=4, h=16, w=32, seed=2)
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    before = {k: v.clone() for k, v in den.state_dict().items()}
    losses = []
    for _ in range(10):
        loss = denoising_loss(den, x0, ctx, act, mask, torch.Generator().manual_seed(0), torch.full((4,), 1.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = den.state_dict()
    assert not torch.equal(before["net.conv_out.weight"], after["net.conv_out.weight"])
    assert torch.equal(before["net.fourier.freqs"], after["net.fourier.freqs"])  # a buffer, not trained
    assert losses[-1] < 0.8 * losses[0]
