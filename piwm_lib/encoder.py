"""A feature encoder for FID / FVD that needs no downloaded weights: a small convolutional autoencoder trained by the
library on the collected BEV frames (deterministic from the seed), saved beside the dataset with its config.
Standard Inception FID is available when the user supplies a local TorchScript file of the Inception network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .configs import from_dict, save_json, to_dict, to_json
from .dataset import Dataset
from .frames import to_model
from .validate import NonNegInt, PosFloat, PosInt, check_fields


@dataclass(frozen=True)
class EncoderConfig:
    """Autoencoder whose bottleneck is the feature space of our FID / FVD (ours; not published)."""

    channels: tuple[PosInt, ...] = (32, 64, 128)  # conv widths, each halving the resolution (30x120 -> 4x15)
    feature_dim: PosInt = 64  # bottleneck = feature vector length
    steps: NonNegInt = 400  # Adam steps of reconstruction training
    batch_size: PosInt = 32  # frames per step
    lr: PosFloat = 1e-3  # Adam learning rate
    seed: NonNegInt = 0  # weights and sampling order
    key: Literal["lowres", "frames"] = "lowres"  # the frames it encodes: 30 x 120 (the dynamics model's resolution)
    pool_frames: PosInt = 20_000  # training frames held in memory, evenly spread over the train split (216 MB at most)

    def __post_init__(self) -> None:
        check_fields(self)


class Encoder(nn.Module):
    """Conv encoder (stride-2 convs, flatten, linear) and a mirror decoder; features = the bottleneck (B, D)."""

    def __init__(self, cfg: EncoderConfig, height: int = 30, width: int = 120):
        super().__init__()
        self.cfg, self.size = cfg, (height, width)
        layers, c = [], 3
        for co in cfg.channels:
            layers += [nn.Conv2d(c, co, 3, stride=2, padding=1), nn.SiLU()]
            c = co
        self.enc = nn.Sequential(*layers)
        with torch.no_grad():
            self.grid = tuple(self.enc(torch.zeros(1, 3, height, width)).shape[1:])  # (C, h, w)
        n = int(np.prod(self.grid))
        self.to_feat, self.from_feat = nn.Linear(n, cfg.feature_dim), nn.Linear(cfg.feature_dim, n)
        ups = []
        for co in list(reversed(cfg.channels[:-1])) + [16]:
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, co, 3, padding=1), nn.SiLU()]
            c = co
        self.dec = nn.Sequential(*ups, nn.Conv2d(c, 3, 3, padding=1))

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, feature_dim) code the decoder reconstructs from."""
        return self.to_feat(self.enc(x).flatten(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FID features (B, sum(channels) + feature_dim): the spatial mean of every stage's activations (texture and
        sharpness, as Inception's pooled features) and the bottleneck (layout)."""
        pooled, h = [], x
        for layer in self.enc:
            h = layer(h)
            if isinstance(layer, nn.SiLU):
                pooled.append(h.mean((2, 3)))
        return torch.cat(pooled + [self.to_feat(h.flatten(1))], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, 3, H, W) of (B, 3, H, W)."""
        h = self.from_feat(self.bottleneck(x)).view(-1, *self.grid)
        return F.interpolate(self.dec(h), size=self.size, mode="bilinear", align_corners=False)


def frame_pool(data_dir: str | Path, n: int, key: str = "lowres") -> np.ndarray:
    """Up to n frames (n, H, W, 3) evenly spread over the train split, read episode by episode in whole chunks
    (never the whole dataset)."""
    ds = Dataset(data_dir)
    rows = ds.episodes("train")
    total = sum(r["frames"] for r in rows)
    if total == 0:
        raise ValueError(f"{data_dir} has no training frames to fit the feature encoder on")
    stride = max(1, int(np.ceil(total / n)))
    out = []
    for r in rows:
        with ds.open(r) as ep:
            out.append(ep.read(key)[::stride])  # one episode at a time
    return np.concatenate(out)[:n]


def train_encoder(data_dir: str | Path, cfg: EncoderConfig = EncoderConfig(), progress: bool = True) -> Encoder:
    """Train on the frame pool of the train split (deterministic from cfg.seed); returns the encoder in eval mode."""
    pool = torch.from_numpy(frame_pool(data_dir, cfg.pool_frames, cfg.key))  # (P, H, W, 3) uint8
    torch.manual_seed(cfg.seed)
    model = Encoder(cfg, *pool.shape[1:3])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in tqdm(range(cfg.steps), desc="feature encoder", disable=not progress):
        x = to_model(pool[torch.randint(0, len(pool), (cfg.batch_size,), generator=g)])  # (B, 3, H, W)
        loss = F.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def encoder_path(data_dir: str | Path) -> Path:
    """Where a dataset's feature encoder lives: <data_dir>/feature_encoder.safetensors, its config beside it in
    feature_encoder.json (a sidecar: safetensors' own metadata is not written in a fixed order)."""
    return Path(data_dir) / "feature_encoder.safetensors"


def load_or_train_encoder(data_dir: str | Path, cfg: EncoderConfig = EncoderConfig(),
                          progress: bool = True) -> Encoder:
    """The dataset's saved encoder when its config matches `cfg`; otherwise train one and save it (atomically)."""
    path = encoder_path(data_dir)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if to_json(from_dict(EncoderConfig, meta["config"])) == to_json(cfg):
            model = Encoder(cfg, *meta["size"])
            model.load_state_dict(load_file(str(path)))
            return model.eval()
    model = train_encoder(data_dir, cfg, progress)
    tmp = path.with_name(path.name + ".tmp")
    save_file(model.state_dict(), str(tmp))
    tmp.replace(path)
    save_json({"config": to_dict(cfg), "size": list(model.size)}, meta_path)
    return model


@torch.no_grad()
def frame_features(model: Encoder, frames: np.ndarray | torch.Tensor, batch: int = 256) -> np.ndarray:
    """(..., H, W, 3) uint8 frames -> (N, D) float64 features (leading dims flattened), in batches."""
    x = torch.as_tensor(frames)
    x = x.reshape(-1, *x.shape[-3:])
    out = [model.features(to_model(x[i:i + batch])).double() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def clip_features(model: Encoder, clips: np.ndarray) -> np.ndarray:
    """(N, T, H, W, 3) clips -> (N, 3D) FVD-style features: per-frame features' mean and std over time and the mean
    absolute change between consecutive frames (so that flicker moves the distribution, not only appearance)."""
    N, T = clips.shape[:2]
    f = frame_features(model, clips).reshape(N, T, -1)  # (N, T, D)
    return np.concatenate([f.mean(1), f.std(1), np.abs(np.diff(f, axis=1)).mean(1)], axis=1)


def inception_features(frames: np.ndarray, weights: str | Path, batch: int = 64) -> np.ndarray:
    """2048-d pool features of the standard FID Inception network from a local TorchScript file (e.g. the
    `inception-2015-12-05.pt` that clean-fid / StyleGAN3's metrics use); nothing is downloaded. TorchScript is a
    program, not only weights: pass only a file whose origin you trust (it is never picked up implicitly)."""
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"Inception weights {path} not found: this project downloads nothing at run time. "
                                "Put a TorchScript Inception-v3 FID network there (inception-2015-12-05.pt) to get "
                                "standard FID; the library's own encoder (load_or_train_encoder) needs no file.")
    net = torch.jit.load(str(path), map_location="cpu").eval()
    x = torch.as_tensor(frames).reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = F.interpolate(x[i:i + batch].float(), size=(299, 299), mode="bilinear", align_corners=False)
            out.append(net(xb, return_features=True).double())
    return torch.cat(out).numpy()
