"""The no-download feature encoder: deterministic, saved beside the dataset, and FID that rises with degradation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from piwm_lib.dataset import WindowDataset
from piwm_lib.encoder import EncoderConfig, encoder_path, frame_features, inception_features, load_or_train_encoder
from piwm_lib.metrics import frechet_distance

CFG = EncoderConfig(steps=30, batch_size=8)  # brief: CPU convolutions of this size are slow here


def frames(root, split: str) -> np.ndarray:
    ds = WindowDataset(root, split, 1, "lowres")
    return np.concatenate([ds[i]["frames"].numpy() for i in range(len(ds))])  # (N, 30, 120, 3)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return x
    r = int(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).double()
    t = torch.as_tensor(x).permute(0, 3, 1, 2).double().reshape(-1, 1, *x.shape[1:3])
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return t.reshape(len(x), 3, *x.shape[1:3]).permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy()


@pytest.fixture(scope="module")
def encoder(small_dataset):
    return load_or_train_encoder(small_dataset, CFG, progress=False)


def test_saved_beside_the_dataset_and_deterministic(small_dataset, encoder, tmp_path):
    assert encoder_path(small_dataset).exists() and encoder_path(small_dataset).with_suffix(".json").exists()
    again = load_or_train_encoder(small_dataset, CFG, progress=False)  # loaded, not retrained
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), again.state_dict().values()))
    import shutil
    quick = EncoderConfig(steps=3, batch_size=4)
    for d in ("a", "b"):  # two datasets with the same frames, each training its own: the same bytes
        shutil.copytree(small_dataset, tmp_path / d, ignore=shutil.ignore_patterns("feature_encoder*"))
        load_or_train_encoder(tmp_path / d, quick, progress=False)
    assert encoder_path(tmp_path / "a").read_bytes() == encoder_path(tmp_path / "b").read_bytes()
    assert encoder_path(tmp_path / "a").read_bytes() != encoder_path(small_dataset).read_bytes()


@pytest.mark.parametrize("kind", ["blur", "noise"])
def test_fid_rises_monotonically_with_degradation(small_dataset, encoder, kind):
    ref = frame_features(encoder, frames(small_dataset, "train"))
    held = frames(small_dataset, "test")
    rng = np.random.default_rng(0)
    levels = [0, 0.5, 1.0, 2.0] if kind == "blur" else [0, 48, 96, 160]  # noise std in 0..255 units
    fids = []
    for lv in levels:
        x = blur(held, lv) if kind == "blur" else np.clip(held + rng.normal(0, lv, held.shape), 0, 255).astype(np.uint8)
        fids.append(frechet_distance(ref, frame_features(encoder, x)))
    assert all(b > a for a, b in zip(fids, fids[1:])), fids


def test_inception_needs_a_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        inception_features(np.zeros((1, 30, 120, 3), np.uint8), tmp_path / "inception-2015-12-05.pt")


def test_clip_features_hand_computed(small_dataset, encoder):
    from piwm_lib.encoder import clip_features
    x = frames(small_dataset, "test")[:3]  # (3, 30, 120, 3)
    f = frame_features(encoder, x)  # (3, D)
    still = np.repeat(x[:1], 4, axis=0)[None]  # one clip: the same frame 4 times
    c = clip_features(encoder, still)[0]
    D = f.shape[1]
    assert np.allclose(c[:D], f[0]) and np.allclose(c[D:], 0)  # mean = that frame; no spread, no change
    c2 = clip_features(encoder, x[None])[0]  # 3 different frames
    assert np.allclose(c2[:D], f.mean(0)) and np.allclose(c2[D:2 * D], f.std(0))
    assert np.allclose(c2[2 * D:], np.abs(np.diff(f, axis=0)).mean(0))
