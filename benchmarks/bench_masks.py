"""Mask benchmark: soft, hard and GT masks per second, batch of 150x600 frames, CPU and CUDA (asserts nothing)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from piwm_lib import bev
from piwm_lib import detect as D
from piwm_lib import masks as M


def synthetic_batch(batch: int, cars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 150, 600, 3) uint8 frames with the ego at (180, 75) and `cars` others painted from random states."""
    rng = np.random.default_rng(seed)
    states = np.zeros((batch, cars + 1, len(bev.STATE_FIELDS)), np.float32)
    px, py, hd = (bev.STATE_FIELDS.index(k) for k in ("px", "py", "heading"))
    states[:, 0, [px, py]] = bev.EGO_PIXEL
    states[:, 1:, px] = rng.uniform(-20, 620, (batch, cars))
    states[:, 1:, py] = rng.choice([31.0, 53.0, 75.0, 97.0, 119.0], (batch, cars))
    states[:, 1:, hd] = rng.normal(0, 0.1, (batch, cars))
    ego, other = M.gt_pixels(states, M.MaskConfig())
    frames = np.full((batch, 150, 600, 3), bev.ROAD_RGB, np.uint8)
    frames[other.numpy()] = bev.OTHER_RGB
    frames[ego.numpy()] = bev.EGO_RGB
    return frames, states


def masks_per_s(fn, x, n: int, device: str) -> float:
    """Masks per second of `fn(x)` over `n` timed calls after one warm-up call."""
    fn(x)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return n * len(x) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cars", type=int, default=6, help="other cars per frame")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = M.MaskConfig()
    frames, states = synthetic_batch(a.batch, a.cars, 0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"batch {a.batch} x 150x600, {a.cars} other cars per frame, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    for dev in devices:
        f, s = torch.as_tensor(frames, device=dev), torch.as_tensor(states, device=dev)
        name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
        for label, fn, x in (("soft (train)", lambda x: M.soft_mask(x, cfg, "train"), f),
                             ("soft (infer)", lambda x: M.soft_mask(x, cfg, "infer"), f),
                             ("hard", lambda x: M.hard_mask(x, cfg), f),
                             ("gt (states)", lambda x: M.gt_mask(x, cfg), s),
                             ("detect_vehicles", lambda x: D.detect_vehicles(x), f)):
            print(f"{name:>24} {label:>16}: {masks_per_s(fn, x, a.repeats, dev):9.0f} masks/s", flush=True)


if __name__ == "__main__":
    main()
