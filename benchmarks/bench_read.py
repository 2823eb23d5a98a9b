"""Training-read benchmark: random (9-frame, 30x120) windows per second through a torch DataLoader."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from piwm_lib.agents import AgentConfig
from piwm_lib.collect import CollectConfig, collect
from piwm_lib.dataset import WindowDataset
from piwm_lib.env import EnvConfig


def windows_per_s(root: Path, workers: int, batch: int, batches: int, key: str, length: int) -> float:
    """Random windows per second read by a DataLoader with `workers` worker processes."""
    ds = WindowDataset(root, "train", length=length, key=key)
    g = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=(batches + 1) * batch, generator=g)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                     persistent_workers=workers > 0)
    it = iter(dl)
    next(it)  # warm-up: worker start, file opening
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=None, help="dataset folder (default: collect a small one)")
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=60)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(a.data) if a.data else collect(CollectConfig(out=d, episodes=8, workers=2, seed=3,
                                                                 env=EnvConfig(episode_frames=200),
                                                                 agent=AgentConfig(kind="idm")), progress=False)
        print(f"dataset {root}: {len(WindowDataset(root, 'train'))} training windows")
        for key, length in (("lowres", 9), ("frames", 2)):
            for w in a.workers:
                r = windows_per_s(root, w, a.batch, a.batches, key, length)
                print(f"{key:>7} x{length} frames, {w} loader workers: {r:8.0f} windows/s", flush=True)


if __name__ == "__main__":
    main()
