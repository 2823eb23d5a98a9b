"""Training benchmark: samples/s, step time and (on a GPU) model FLOPs utilisation per preset, eager vs
torch.compile, fp32 vs bf16. One sample = one window (4 context frames + AR_STEPS autoregressive targets).

FLOPs are counted from the model (torch.utils.flop_counter over one forward + backward of a training step: matmuls
and convolutions by their shapes), not from a profiler's timeline. MFU = counted FLOPs / step time / bf16 dense peak.

    python benchmarks/bench_train.py                              # CPU: tiny and course
    python benchmarks/bench_train.py --presets 130M --batch 16    # GPU
    python benchmarks/bench_train.py --data data/course --loader  # also the real loader and the GPU's wait for data
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from piwm_lib import train as T
from piwm_lib.runs import resolve, resolve_device

PEAK_BF16 = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
             "RTX 4090": 165e12, "L4": 121e12}  # dense bf16 tensor-core peaks from the vendors' data sheets


def peak_flops(device: torch.device) -> float | None:
    """bf16 dense peak of the GPU (None on CPU or an unknown card)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if all(part in name for part in key.split()):
            return PEAK_BF16[key]
    return None


def synthetic_batch(cfg: T.TrainConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of the dynamics stage's shapes: random uint8 frames, actions, full-res mask sources."""
    g = torch.Generator().manual_seed(0)
    k, t = cfg.unet.n_context, cfg.ar_steps
    out = {"frames": torch.randint(0, 256, (batch, k + t, 30, 120, 3), generator=g, dtype=torch.uint8),
           "actions": torch.randint(0, 5, (batch, k + t - 1), generator=g)}
    if cfg.mask in ("soft", "hard"):
        out["mask_src"] = torch.randint(0, 256, (batch, t, 150, 600, 3), generator=g, dtype=torch.uint8)
    return {key: v.to(device) for key, v in out.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_fn(model, opt, cfg: T.TrainConfig, device: torch.device):
    """One optimizer step of the dynamics stage on a device-resident batch (the loop of piwm_lib.train)."""
    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else None

    def run(batch: dict, m: int) -> float:
        g = T.generator(cfg, m, 0, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = T.dynamics_loss(model, batch, cfg, g, lambda x: x.backward())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return run


def count_flops(model, cfg: T.TrainConfig, batch: dict, device: torch.device) -> int:
    """Forward + backward FLOPs of one training step (all AR targets), counted from the model's ops."""
    counter = FlopCounterMode(display=False)
    with counter:
        T.dynamics_loss(model, batch, cfg, T.generator(cfg, 0, 0, device), lambda x: x.backward())
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench(preset: str, batch: int, precision: str, compiled: bool, device: torch.device, warmup: int,
          repeats: int) -> dict:
    """Median step time and derived figures of one (preset, precision, compile) setting."""
    cfg = T.TrainConfig(model=preset, mixed_precision=precision, batch_size=batch, compile=compiled)
    torch.manual_seed(0)
    model = T.Denoiser(cfg.unet, cfg.edm).to(device)
    flops = count_flops(model, cfg, synthetic_batch(cfg, batch, device), device)
    if compiled:
        model.net.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2, fused=device.type == "cuda")
    run, data = step_fn(model, opt, cfg, device), synthetic_batch(cfg, batch, device)
    for m in range(warmup):
        run(data, m)
    sync(device)
    times = []
    for m in range(repeats):
        t0 = time.perf_counter()
        run(data, warmup + m)
        sync(device)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    peak = peak_flops(device)
    return {"preset": preset, "precision": precision, "compile": compiled, "batch": batch, "step_ms": 1e3 * step,
            "samples_per_s": batch / step, "frames_per_s": batch * cfg.ar_steps / step,
            "tflops": flops / step / 1e12, "mfu": flops / step / peak if peak else None}


def bench_loader(data_dir: str, preset: str, batch: int, workers: int, device: torch.device, steps: int) -> dict:
    """Real training through piwm_lib.train for `steps` steps: samples/s and the fraction of time spent waiting
    for data (the loop's data_wait column)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cfg = T.TrainConfig(data_dir=data_dir, out_dir=tmp, model=preset, batch_size=batch, steps=steps,
                            log_every=steps, ckpt_every=steps, workers=workers, progress=False,
                            mixed_precision="bf16" if device.type == "cuda" else "no", device=str(device))
        out = T.train(cfg)
    return {"preset": preset, "workers": workers, "batch": batch, "samples_per_s": out["samples_per_s"],
            "data_wait": out["data_wait"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=None, help="default: tiny course (CPU), 130M (GPU)")
    p.add_argument("--batch", type=int, default=None, help="windows per step (default 4 on CPU, 16 on a GPU)")
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    p.add_argument("--compile", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=None, help="a dataset: also time real training with the loader")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--loader-steps", type=int, default=30)
    a = p.parse_args()
    device = resolve_device(a.device)
    gpu = device.type == "cuda"
    presets = a.presets or (["130M"] if gpu else ["tiny", "course"])
    batch = a.batch or (16 if gpu else 4)
    warmup, repeats = a.warmup or (10 if gpu else 2), a.repeats or (20 if gpu else 3)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; one sample = 1 window = {T.TrainConfig().ar_steps} "
          "autoregressive targets (4 context frames each); soft mask built on the device from full-res frames")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(f"{'preset':>8} {'precision':>9} {'mode':>8} {'batch':>5} {'step ms':>9} {'samples/s':>10} "
          f"{'frames/s':>9} {'TFLOP/s':>8} {'MFU':>6}")
    for preset in presets:
        for precision in a.precisions:
            for mode in a.compile:
                r = bench(preset, batch, precision, mode == "compile", device, warmup, repeats)
                mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
                print(f"{preset:>8} {'fp32' if precision == 'no' else precision:>9} {mode:>8} {batch:>5} "
                      f"{r['step_ms']:9.1f} {r['samples_per_s']:10.2f} {r['frames_per_s']:9.1f} "
                      f"{r['tflops']:8.3f} {mfu:>6}", flush=True)
    if a.data:
        workers = a.workers if a.workers is not None else (8 if gpu else 2)
        data = str(resolve(a.data))
        for preset in presets:
            r = bench_loader(data, preset, batch, workers, device, a.loader_steps)
            print(f"real loader, {preset}, {workers} workers, batch {batch}: {r['samples_per_s']:.2f} samples/s, "
                  f"waiting for data {100 * r['data_wait']:.1f}% of the time")


if __name__ == "__main__":
    main()
