"""Inference benchmark: frames/s and latency p50/p95 of one world-model step (dynamics sampler + x5 upsampler + the
inference mask from the new full-res frame) per preset, fast vs quality sampler, eager vs torch.compile, fp32 vs
bf16, batch 1 and larger. Random weights (the output layer is re-initialised so the networks do real work).

    python benchmarks/bench_sample.py                                   # CPU: tiny and course, batch 1
    python benchmarks/bench_sample.py --presets 130M 400M --batches 1 16 --compile eager compile --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from piwm_lib.edm import Denoiser
from piwm_lib.masks import MaskConfig
from piwm_lib.runs import resolve_device
from piwm_lib.sampler import PRESETS
from piwm_lib.unet import UPSAMPLER_OF, preset
from piwm_lib.worldmodel import WorldModelEnv, start_config


def model(name: str, device: torch.device, seed: int) -> Denoiser:
    """A denoiser of preset `name` whose zero-initialised output layer gets small random weights."""
    torch.manual_seed(seed)
    m = Denoiser(preset(name))
    for p in m.net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return m.to(device).eval()


def bench(name: str, sampler: str, batch: int, precision: str, mode: str, device: torch.device, warmup: int,
          repeats: int) -> dict:
    """p50/p95 latency of one world-model step and frames/s (= batch / p50)."""
    dyn, up = model(name, device, 0), model(UPSAMPLER_OF[name], device, 1)
    if mode != "eager":
        for m in (dyn, up):
            m.net.compile(mode="reduce-overhead" if mode == "compile-cudagraphs" else None)
    cfg = replace(start_config("warm", MaskConfig(), sampler), precision=precision)
    env = WorldModelEnv(dyn, up, cfg)
    g = np.random.default_rng(0)
    low = g.integers(0, 256, (batch, 4, 30, 120, 3), dtype=np.uint8)
    full = g.integers(0, 256, (batch, 4, 150, 600, 3), dtype=np.uint8)
    env.reset(low, full, np.zeros((batch, 3), np.int64))
    acts = np.ones(batch, np.int64)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        env.step(acts)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        env.step(acts)  # returns uint8 frames on the host: the copy back is included
        sync()
        times.append(time.perf_counter() - t0)
    p50, p95 = np.percentile(times, 50), np.percentile(times, 95)
    return {"p50_ms": 1e3 * p50, "p95_ms": 1e3 * p95, "frames_per_s": batch / p50}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=None, help="default: tiny course (CPU), 130M 400M (GPU)")
    p.add_argument("--samplers", nargs="+", default=["fast", "quality"], choices=list(PRESETS))
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--compile", nargs="+", default=["eager"], choices=["eager", "compile", "compile-cudagraphs"])
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    device = resolve_device(a.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    presets = a.presets or (["130M", "400M"] if gpu else ["tiny", "course"])
    warmup, repeats = a.warmup or (20 if gpu else 2), a.repeats or (100 if gpu else 10)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; one world-model step = dynamics sampler + x5 upsampler "
          "+ soft mask of the new frame; random weights; warm start on")
    print(f"{'preset':>7} {'sampler':>8} {'batch':>5} {'precision':>9} {'mode':>18} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'frames/s':>9}")
    for preset_name in presets:
        for sampler in a.samplers:
            for batch in a.batches:
                for precision in a.precisions:
                    for mode in a.compile:
                        r = bench(preset_name, sampler, batch, precision, mode, device, warmup, repeats)
                        print(f"{preset_name:>7} {sampler:>8} {batch:>5} {precision:>9} {mode:>18} "
                              f"{r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['frames_per_s']:9.1f}", flush=True)


if __name__ == "__main__":
    main()
