"""Vehicle masks: the Soft Mask formula on synthetic frames with known pixels, Hard/GT masks, dropout, detection."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from piwm_lib import bev
from piwm_lib import detect as D
from piwm_lib import masks as M
from piwm_lib.agents import AgentConfig
from piwm_lib.collect import CollectConfig, collect
from piwm_lib.dataset import Dataset
from piwm_lib.env import EnvConfig

H, W = 150, 600
CFG = M.MaskConfig()
FULL = M.MaskConfig(grid=(H, W))  # no resize: the grid mask is the full-res mask times the gain
EGO_BOX = (167, 70)  # top-left (x, y) of a 27 x 11 ego rectangle centred on pixel (180, 75)


def road() -> np.ndarray:
    """An empty (H, W, 3) road."""
    return np.full((H, W, 3), bev.ROAD_RGB, np.uint8)


def car(frame: np.ndarray, x0: int, y0: int, rgb, length: int = 27, width: int = 11) -> np.ndarray:
    """Paint a length x width rectangle with top-left (x0, y0), clipped to the frame."""
    frame[max(y0, 0):y0 + width, max(x0, 0):x0 + length] = rgb
    return frame


def scene() -> np.ndarray:
    """Ego at (180, 75), three other cars: ahead, behind, and one cut by the right border."""
    f = car(road(), *EGO_BOX, bev.EGO_RGB)
    car(f, 300, 48, bev.OTHER_RGB)
    car(f, 40, 92, bev.OTHER_RGB)
    return car(f, 590, 26, bev.OTHER_RGB)


def test_colour_rule_on_the_palette():
    pal = np.array([bev.EGO_RGB, bev.EGO_LIGHT_RGB, bev.OTHER_RGB, bev.OTHER_LIGHT_RGB, bev.CRASHED_RGB,
                    bev.ROAD_RGB, bev.LANE_MARK_RGB, bev.OUTLINE_RGB], np.uint8)[None, None]  # (1, 1, 8, 3)
    ego, other = M.vehicle_pixels(pal, CFG)
    assert ego[0, 0].tolist() == [True, True, False, False, False, False, False, False]
    assert other[0, 0].tolist() == [False, False, True, False, False, False, False, False]
    # thresholds are parameters: the ego's green margin is 200/255 - 50/255 = 0.588
    ego, _ = M.vehicle_pixels(pal, M.MaskConfig(colour_margin=0.6))
    assert not ego[0, 0, 0] and ego[0, 0, 1]  # the headlight (73, 255, 0) has margin 0.714
    _, other = M.vehicle_pixels(pal, M.MaskConfig(colour_min=1.0))
    assert not other.any()


def all_colours(r0: int, n: int = 32) -> torch.Tensor:
    """(n, 256, 256, 3) uint8: every (g, b) for red values r0 .. r0 + n - 1."""
    v = torch.arange(256)
    r, g, b = torch.meshgrid(r0 + torch.arange(n), v, v, indexing="ij")
    return torch.stack([r, g, b], -1).to(torch.uint8)


def test_integer_colour_rule_equals_the_published_formula_on_every_colour():
    tie = M.MaskConfig(colour_min=0.4, colour_margin=0.2)  # 102/255 and 51/255: ties the rule must leave out
    for r0 in range(0, 256, 32):
        rgb = all_colours(r0)
        r, g, b = (rgb.float() / 255).unbind(-1)  # the paper's float formula (no ties at 0.35 and 0.12)
        ego, other = M.vehicle_pixels(rgb, CFG)
        assert torch.equal(ego, (g > 0.35) & (g - torch.maximum(r, b) > 0.12))
        assert torch.equal(other, (b > 0.35) & (b - torch.maximum(r, g) > 0.12))
        r, g, b = rgb.long().unbind(-1)  # exact rational reference: v / 255 > 2/5  <=>  5 v > 510
        ego, other = M.vehicle_pixels(rgb, tie)
        assert torch.equal(ego, (5 * g > 510) & (5 * (g - torch.maximum(r, b)) > 255))
        assert torch.equal(other, (5 * b > 510) & (5 * (b - torch.maximum(r, g)) > 255))


def test_ego_moments_and_sigma():
    t = M.soft_terms(scene(), CFG)
    torch.testing.assert_close(t.centre, torch.tensor([[180.0, 75.0]]))
    torch.testing.assert_close(t.extent, torch.tensor([[math.sqrt(27**2 - 1), math.sqrt(11**2 - 1)]]))
    torch.testing.assert_close(t.sigma, 0.5 * t.extent)
    tiny = M.soft_terms(car(road(), 100, 50, bev.EGO_RGB, 2, 2), CFG)  # l = sqrt(3): sigma_min = 2 px wins
    torch.testing.assert_close(tiny.sigma, torch.tensor([[2.0, 2.0]]))


def test_soft_mask_peak_and_edge_values():
    t = M.soft_terms(scene(), CFG, "train")
    sx, sy = 0.5 * math.sqrt(27**2 - 1), 0.5 * math.sqrt(11**2 - 1)
    assert t.m_ego[0, 75, 180].item() == 1.0  # exp(0) at the ego centre
    assert t.full[0, 75, 180].item() == pytest.approx(0.8)  # w_ego * M_ego * G(x_c) = 0.8 * 1 * 1
    edge = math.exp(-0.5 * (13 / sx) ** 2)  # last ego column, 13 px from the centre
    corner = math.exp(-0.5 * ((13 / sx) ** 2 + (5 / sy) ** 2))
    assert t.m_ego[0, 75, 193].item() == pytest.approx(edge, abs=1e-6) and edge == pytest.approx(0.6286, abs=1e-4)
    assert t.m_ego[0, 80, 167].item() == pytest.approx(corner, abs=1e-6)
    assert t.m_ego[0, 75, 194].item() == 0.0 and t.m_ego[0, 81, 180].item() == 0.0  # outside the ego pixels
    g193 = math.exp(-0.5 * (13 / (0.35 * W)) ** 2)  # G at the ego's last column
    g300 = math.exp(-0.5 * (130 / (0.35 * W)) ** 2)  # x = 310, 130 px ahead of the ego
    assert t.full[0, 55, 310].item() == pytest.approx(1.0 * g300, abs=1e-6)  # an other car: w_surr * G(x)
    for mode, (w_surr, w_ego, gain) in {"train": (1.0, 0.8, 1.0), "infer": (0.55, 0.45, 0.45)}.items():
        assert M.weights(CFG, mode) == (w_surr, w_ego, gain)
        m = M.soft_mask(scene(), FULL, mode)  # (1, H, W) without resize
        assert m[0, 75, 180].item() == pytest.approx(w_ego * gain)
        assert m[0, 75, 193].item() == pytest.approx(w_ego * edge * g193 * gain, abs=1e-6)
        assert m[0, 55, 310].item() == pytest.approx(w_surr * g300 * gain, abs=1e-6)
    with pytest.raises(ValueError):
        M.weights(CFG, "eval")


def test_global_gaussian_decays_along_the_road():
    t = M.soft_terms(scene(), CFG)
    g = t.g[0]  # (W,)
    assert g[180].item() == 1.0
    assert g[180 + 210].item() == pytest.approx(math.exp(-0.5), abs=1e-6)  # sigma_g = 0.35 * 600 = 210 px
    assert bool((g[181:].diff() < 0).all()) and bool((g[:180].diff() > 0).all())  # strictly monotone both ways
    torch.testing.assert_close(g[180 - 50], g[180 + 50])


def test_masks_stay_in_range_with_overlaps_and_noise():
    noise = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    for frames in (scene()[None], noise):
        t = M.soft_terms(frames, CFG)
        for m in (t.full, t.mask, M.hard_mask(frames, CFG), M.soft_mask(frames, CFG, "infer")):
            assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    ego, other = M.vehicle_pixels(scene(), CFG)
    t = M.compose(ego, other | ego, CFG)  # overlapping boxes (possible for GT boxes): 1.0 + 0.8 clips to 1
    assert t.full[0, 75, 180].item() == 1.0 and t.full.max().item() == 1.0
    assert t.full[0, 75, 193].item() == 1.0  # (1.0 + 0.8 * 0.6286) * G(193) = 1.49 clips to 1


def test_hard_mask_is_exactly_the_vehicle_pixels():
    f = scene()
    want = np.zeros((H, W), bool)
    want[70:81, 167:194] = want[48:59, 300:327] = want[92:103, 40:67] = want[26:37, 590:600] = True
    hard = M.hard_mask(f, FULL)  # (1, H, W) without resize
    assert hard.dtype == torch.float32 and torch.equal(hard[0], torch.from_numpy(want).float())
    small = M.hard_mask(f, CFG)  # (1, 30, 120): bicubic antialiased resize of the same set, clipped
    ref = F.interpolate(torch.from_numpy(want).float()[None, None], size=(30, 120), mode="bicubic",
                        antialias=True).clamp(0, 1)[0]
    torch.testing.assert_close(small, ref)
    assert small.shape == (1, 30, 120) and small.max() > 0.9


def test_no_ego_gives_g_one_and_no_nan():
    f = car(road(), 300, 48, bev.OTHER_RGB)
    t = M.soft_terms(f, CFG)
    assert not t.found[0] and torch.equal(t.g, torch.ones(1, W)) and t.m_ego.abs().sum() == 0
    assert torch.isfinite(t.full).all() and t.full[0, 50, 310].item() == 1.0  # w_surr * 1
    empty = M.soft_terms(road(), CFG)
    assert torch.equal(empty.mask, torch.zeros(1, 30, 120)) and torch.isfinite(empty.sigma).all()


def test_mask_dropout_per_sample_zeroes_whole_masks_deterministically():
    masks = torch.rand(2000, 30, 120, generator=torch.Generator().manual_seed(1)) + 0.1
    out = M.mask_dropout(masks, 0.3, torch.Generator().manual_seed(0), per="sample")
    zero = (out == 0).all(2).all(1)  # (B,)
    kept = (out == masks).all(2).all(1)
    assert bool((zero | kept).all())  # whole masks only
    assert abs(zero.float().mean().item() - 0.3) < 0.035  # 3.4 binomial sd at n = 2000
    assert torch.equal(out, M.mask_dropout(masks, 0.3, torch.Generator().manual_seed(0), per="sample"))
    assert not torch.equal(out, M.mask_dropout(masks, 0.3, torch.Generator().manual_seed(1), per="sample"))
    assert torch.equal(M.mask_dropout(masks, 0.0, torch.Generator(), per="sample"), masks)
    assert M.mask_dropout(masks, 1.0, torch.Generator(), per="sample").abs().sum() == 0


def test_mask_dropout_per_batch_is_one_coin_for_the_whole_batch():
    masks = torch.rand(8, 30, 120, generator=torch.Generator().manual_seed(1)) + 0.1
    outs = [M.mask_dropout(masks, 0.3, torch.Generator().manual_seed(s)) for s in range(400)]
    dropped = [bool((o == 0).all()) for o in outs]
    assert all(d or torch.equal(o, masks) for d, o in zip(dropped, outs))  # all eight zeroed, or none
    assert abs(sum(dropped) / 400 - 0.3) < 0.08  # 3.5 binomial sd at n = 400
    with pytest.raises(ValueError, match="dropout_per"):
        M.MaskConfig(dropout_per="pixel")


def test_gt_pixels_reproduce_the_renderer_geometry():
    s = np.zeros((1, 3, len(bev.STATE_FIELDS)), np.float32)
    px, py, hd = (bev.STATE_FIELDS.index(k) for k in ("px", "py", "heading"))
    s[0, 0, [px, py]] = 180.4, 75.2  # ego: HighwayEnv draws its body at columns 167..191, rows 70..78
    s[0, 1, [px, py, hd]] = 400.9, 53.0, math.pi / 2  # a car turned by 90 degrees: 9 wide, 25 tall
    s[0, 2, [px, py]] = 3.0, 120.0  # cut by the left border
    ego, other = M.gt_pixels(s, CFG, H, W)
    want = np.zeros((H, W), bool)
    want[70:79, 167:192] = True
    assert torch.equal(ego[0], torch.from_numpy(want))
    ys, xs = np.nonzero(other[0, :100].numpy())
    assert len(xs) == 225 and xs.max() - xs.min() == 8 and ys.max() - ys.min() == 24
    assert other[0, 100:].sum() == 15 * 9  # box x in [-10, 15): columns 0..14 survive the clip, rows 115..123
    nan = s.copy()
    nan[0, 1] = np.nan
    assert torch.equal(M.gt_pixels(nan, CFG, H, W)[1][0, :100], torch.zeros(100, W, dtype=torch.bool))


def test_batched_equals_one_by_one():
    frames = np.stack([scene(), car(road(), 300, 48, bev.OTHER_RGB), road()])
    states = np.random.default_rng(1).uniform([0] * 11, [1] * 11, (3, 4, 11)).astype(np.float32)
    states[..., 8] *= W
    states[..., 9] *= H
    for fn, x in ((M.soft_mask, frames), (M.hard_mask, frames), (M.gt_mask, states)):
        whole = fn(torch.as_tensor(x), CFG, "infer")
        torch.testing.assert_close(whole, torch.cat([fn(torch.as_tensor(x[i:i + 1]), CFG, "infer") for i in range(3)]))
    whole = D.detect_vehicles(frames)
    one = [D.detect_vehicles(frames[i:i + 1]) for i in range(3)]
    assert whole.count.tolist() == [int(d.count[0]) for d in one] == [3, 1, 0]
    torch.testing.assert_close(whole.centre, torch.cat([d.centre for d in one]))


def test_make_mask_dispatches_on_kind():
    f = scene()[None]
    torch.testing.assert_close(M.make_mask(f, M.MaskConfig(kind="soft")), M.soft_mask(f, CFG))
    torch.testing.assert_close(M.make_mask(f, M.MaskConfig(kind="hard"), "infer"), M.hard_mask(f, CFG, "infer"))
    assert torch.equal(M.make_mask(f, M.MaskConfig(kind="none")), torch.zeros(1, 30, 120))
    with pytest.raises(ValueError):
        M.make_mask(f, M.MaskConfig(kind="gt"))
    with pytest.raises(ValueError):
        M.MaskConfig(kind="binary")


def test_detect_vehicles_on_known_blobs():
    f = scene()
    car(f, 0, 120, bev.OTHER_RGB, 3, 3)  # a 9-pixel sliver: below min_pixels
    car(f, 450, 100, bev.OTHER_RGB)
    car(f, 477, 100, bev.OTHER_RGB)  # touching the previous one: one blob
    d = D.detect_vehicles(f)
    assert d.count.tolist() == [4] and d.is_ego.sum() == 1
    got = sorted((round(x, 2), round(y, 2), int(n)) for (x, y), n in zip(d.centre.tolist(), d.pixels.tolist()))
    assert got == [(53.5, 97.5, 297), (180.5, 75.5, 297), (313.5, 53.5, 297), (477.0, 105.5, 594),
                   (595.0, 31.5, 110)]  # centres of pixel squares [j, j+1): the ego's (180, 75) + 0.5
    assert D.detect_vehicles(f, min_pixels=5).count.tolist() == [5]


def test_match_vehicles_and_scores_on_known_blobs():
    f = car(scene(), 450, 30, bev.OTHER_RGB)  # a blob with no state: a false positive at (463.5, 35.5)
    s = np.zeros((1, 4, len(bev.STATE_FIELDS)), np.float32)
    px, py = bev.STATE_FIELDS.index("px"), bev.STATE_FIELDS.index("py")
    s[0, :, px], s[0, :, py] = [180.2, 314.3, 54.6, 450.0], [75.0, 54.0, 98.0, 120.0]  # slot 3: no blob there
    det = D.detect_vehicles(f)
    blob_of, rows, offset = D.match_vehicles(det, s)
    centres = det.centre[rows]
    assert blob_of[0, 2].item() == -1
    torch.testing.assert_close(centres[blob_of[0, :2]], torch.tensor([[313.5, 53.5], [53.5, 97.5]]))
    torch.testing.assert_close(offset[blob_of[0, :2]], torch.tensor([[-0.8, -0.5], [-1.1, -0.5]]), atol=1e-4, rtol=0)
    assert int(offset[:, 0].isnan().sum()) == 2  # the false positive and the border car
    r = D.detection_scores(det, s)  # the border car (x 595) is outside the in-view box: not counted
    assert r["vehicles"] == 3 and r["blobs"] == 3
    assert r["recall"] == pytest.approx(2 / 3) and r["precision"] == pytest.approx(2 / 3)
    assert r["centre_error_px"] == pytest.approx((math.hypot(0.8, 0.5) + math.hypot(1.1, 0.5)) / 2, abs=1e-4)


def flood_fill_count(img: np.ndarray) -> int:
    """Reference: 8-connected components by breadth-first search (slow, independent)."""
    seen, n = np.zeros_like(img, bool), 0
    for r0, c0 in zip(*np.nonzero(img)):
        if seen[r0, c0]:
            continue
        n += 1
        queue = deque([(r0, c0)])
        seen[r0, c0] = True
        while queue:
            r, c = queue.popleft()
            for rr in (r - 1, r, r + 1):
                for cc in (c - 1, c, c + 1):
                    if 0 <= rr < img.shape[0] and 0 <= cc < img.shape[1] and img[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        queue.append((rr, cc))
    return n


def test_label_components_matches_a_flood_fill():
    fg = torch.rand(4, 2, 25, 40, generator=torch.Generator().manual_seed(0)) < 0.35  # (B, C, H, W)
    lab = D.label_components(fg)
    assert torch.equal(lab > 0, fg)
    for b in range(4):
        for c in range(2):
            assert len(torch.unique(lab[b, c][fg[b, c]])) == flood_fill_count(fg[b, c].numpy())
    # a label never spans two images, and 8-neighbours always share a label
    assert len(set(lab[0, 0].unique().tolist()) & set(lab[0, 1].unique().tolist())) == 1  # only 0
    both = fg[:, :, :-1, :-1] & fg[:, :, 1:, 1:]
    assert torch.equal(lab[:, :, :-1, :-1][both], lab[:, :, 1:, 1:][both])


@pytest.fixture(scope="module")
def real():
    """One IDM episode of 20 frames, seed 3: frames (T, H, W, 3) and states (T, N, F)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ds = Dataset(collect(CollectConfig(out=d, episodes=1, env=EnvConfig(episode_frames=20),
                                           agent=AgentConfig(kind="idm"), seed=3), progress=False))
        with ds.open(ds.episodes()[0]) as ep:
            yield ep.read("frames"), ep.read("states")


def test_gt_mask_agrees_with_the_colour_mask_on_real_frames(real):
    frames, states = real
    ego, other = M.vehicle_pixels(frames, CFG)
    gego, gother = M.gt_pixels(states, CFG)
    col, gt = ego | other, gego | gother
    inter, union = (col & gt).sum((1, 2)).float(), (col | gt).sum((1, 2)).float()
    assert (inter.sum() / union.sum()).item() >= 0.9  # measured 0.933 (headlights of other cars: not blue)
    assert (inter / union).min().item() >= 0.85  # measured 0.906
    soft, gtm = M.soft_mask(frames, CFG), M.gt_mask(states, CFG)
    assert (soft - gtm).abs().mean().item() < 0.002  # measured 0.0006 on the 30 x 120 grid


def test_detection_against_ground_truth(real):
    frames, states = real
    det = D.detect_vehicles(frames)
    r = D.detection_scores(det, states)
    assert r["vehicles"] >= 40 and r["precision"] == 1.0 and r["recall"] == 1.0  # measured: 78 vehicles, 1.0, 1.0
    assert 1.0 < r["centre_error_px"] < 2.5  # measured 1.93: drawn 1-2 px up-left of (px, py), headlights missing
    assert int(det.is_ego.sum()) == len(frames)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    frames = np.stack([scene(), road()])
    torch.testing.assert_close(M.soft_mask(torch.as_tensor(frames, device="cuda"), CFG).cpu(),
                               M.soft_mask(frames, CFG), atol=1e-5, rtol=1e-5)
    d = D.detect_vehicles(torch.as_tensor(frames, device="cuda"))
    assert d.count.tolist() == [3, 0]


def test_every_reachable_slider_setting_gives_a_finite_mask(small_dataset):
    """Notebook 02's sliders (piwm_lib.widgets.MASK_KNOBS) at every corner of their ranges, on a frame HighwayEnv drew:
    the ends of the ranges are valid settings and the mask has no NaN or inf (0 is out of reach for the sigmas)."""
    from dataclasses import replace
    from itertools import product

    from piwm_lib.widgets import MASK_KNOBS, mask_sliders
    with Dataset(small_dataset).open(0) as ep:
        frame = ep.read("frames", 0, 1)  # (1, 150, 600, 3)
    field = {"w_ego": "train_w_ego", "w_surr": "train_w_surr", "gain": "train_gain"}
    for corner in product(*[(lo, hi) for lo, hi, _ in MASK_KNOBS.values()]):
        cfg = replace(CFG, **{field.get(k, k): v for k, v in zip(MASK_KNOBS, corner)})
        t = M.soft_terms(frame, cfg, "train")
        assert torch.isfinite(t.full).all() and torch.isfinite(t.mask).all(), corner
    sliders = mask_sliders({"s_ego": 0.5, "sigma_min": 2.0, "r_glob": 0.35, "w_ego": 0.8, "w_surr": 1.0, "gain": 1.0})
    assert all((s.min, s.max) == MASK_KNOBS[k][:2] for k, s in sliders.items())
