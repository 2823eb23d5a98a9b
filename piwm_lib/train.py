"""Training of the EDM world model with accelerate: the dynamics denoiser (5-step autoregressive, PIWM/DIAMOND) and the
x5 upsampler, with mixed precision, gradient accumulation, EMA, atomic checkpoints and exact resume.

One function, three ways in: `train(cfg)` from Python or a notebook; `accelerate launch -m piwm_lib.train --config
cfg.yaml` from a shell (any number of processes); `launch(cfg, num_processes)` = accelerate's notebook_launcher.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import (  # the ones marked are re-exported: notebooks and modules import them from here
    CheckpointWarning,
    ckpt_name,  # noqa: F401
    config_changes,
    data_fingerprint,
    latest_checkpoint,
    load_denoiser,  # noqa: F401
    optimizer_state,
    read_latest,
    rng_state,  # noqa: F401
    save_checkpoint,
    saved_before_recipe,
    set_rng_state,
    steps_on_disk,
)
from .configs import from_dict, save_json, to_dict
from .dataset import DATASET_FILE, Dataset, WindowDataset, action_names, collected, read_manifest
from .edm import Denoiser, EDMConfig, denoising_step
from .frames import to_model, upsample
from .masks import KINDS, MaskConfig, gt_mask, make_mask, mask_dropout, vehicle_pixels
from .runs import resolve, resolve_device, seed_everything
from .unet import UPSAMPLER_OF, preset
from .validate import Decay, NonNegFloat, NonNegInt, PosFloat, PosInt, check_fields

if TYPE_CHECKING:
    from accelerate import Accelerator

STAGES = ("dynamics", "upsampler")
PRECISIONS = ("no", "bf16", "fp16")
RESUMABLE = {"steps", "workers", "ckpt_every", "keep_ckpts", "log_every", "progress", "device"}  # may change on resume
PATHS = {"out_dir", "data_dir"}  # a moved run or dataset resumes (the dataset is compared by its fingerprint)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (published values: PIWM arXiv 2509.12437 / DIAMOND arXiv 2405.12399; others marked)."""

    data_dir: str = "data/smoke"  # collected dataset (piwm_lib.collect); relative paths from the project root
    out_dir: str = "runs/03_train_edm/smoke/dynamics"  # checkpoints, log.csv, config.json
    stage: Annotated[str, STAGES] = "dynamics"  # "dynamics" (30x120 world model) or "upsampler" (x5, 150x600)
    model: str = "tiny"  # size preset: tiny, course, 130M, 400M (the upsampler stage takes UPSAMPLER_OF[model])
    n_actions: NonNegInt = 0  # discrete actions of the dynamics model; 0: the dataset's (len of dataset.json
    # action_names; HighwayEnv: its 5 meta-actions); another value must equal the dataset's count
    mask: MaskConfig = field(default_factory=MaskConfig)  # mask channel: kind soft (paper), hard, gt, none; its
    # training weights, dropout and colour rule; saved with every checkpoint, the default of inference. A plain kind
    # name ("soft") stands for MaskConfig(kind=...).
    loss_weighting: bool = False  # weight the per-pixel loss by 1 + mask (ablation; not the published loss)
    ar_steps: PosInt = 5  # autoregressive targets per window (PIWM: 4 context + 5 targets)
    batch_size: PosInt = 8  # windows per process per micro-batch
    grad_accum: PosInt = 1  # micro-batches per optimizer step (effective batch = batch_size * grad_accum * processes)
    steps: PosInt = 100  # optimizer steps in total (a resumed run continues up to this)
    lr: PosFloat = 1e-4  # AdamW learning rate (PIWM: 5e-5 to 1e-4)
    weight_decay: NonNegFloat = 1e-2  # AdamW weight decay (PIWM)
    decay_weights_only: bool = True  # decay only Linear/Conv weights, not biases, norms, embeddings (DIAMOND csgo)
    betas: tuple[Decay, Decay] = (0.9, 0.999)  # AdamW betas (torch default; not published)
    adam_eps: PosFloat = 1e-8  # AdamW epsilon (torch default)
    warmup_steps: NonNegInt = 100  # linear learning-rate warm-up, optimizer steps (PIWM)
    grad_clip: PosFloat = 10.0  # max global gradient norm (PIWM)
    ema_decay: Decay = 0.999  # EMA of the weights, ramped as min(decay, (1 + s) / (10 + s)) (not published)
    mixed_precision: Annotated[str, PRECISIONS] = "no"  # "no" (fp32), "bf16" or "fp16" (fp16 uses a loss scaler)
    compile: bool = False  # torch.compile the U-Net
    ckpt_every: PosInt = 50  # optimizer steps between checkpoints (and one at the end)
    keep_ckpts: PosInt = 2  # checkpoints kept on disk (oldest removed first)
    log_every: PosInt = 10  # optimizer steps between log.csv rows
    workers: NonNegInt = 0  # DataLoader worker processes per training process
    seed: NonNegInt = 0  # the one seed: weights, data order, noise, mask dropout
    device: str = "auto"  # auto -> CUDA when available; cpu forces CPU
    progress: bool = True  # tqdm bar on the main process
    edm: EDMConfig = field(default_factory=EDMConfig)  # preconditioning and noise (edm.py)
    upsampler_ctx_noise: bool = False  # the upsampler stage noises its context too (DIAMOND csgo: it does not)
    action_before_mlp: bool = True  # dynamics U-Net: actions enter the conditioning MLP's input (DIAMOND csgo);
    # False adds them after it (this project's first recipe)

    def __post_init__(self) -> None:
        if isinstance(self.mask, str):
            if self.mask not in KINDS:
                raise ValueError(f"TrainConfig.mask must be a MaskConfig or one of {KINDS}, got {self.mask!r}")
            object.__setattr__(self, "mask", MaskConfig(kind=self.mask))
        if not isinstance(self.mask, MaskConfig):
            raise ValueError(f"TrainConfig.mask must be a MaskConfig or a kind name, got {self.mask!r}")
        check_fields(self)  # types and the ranges of the annotations (validate.py)
        if self.model not in UPSAMPLER_OF:
            raise ValueError(f"TrainConfig.model must be one of {sorted(UPSAMPLER_OF)}, got {self.model!r}")

    @property
    def unet(self):
        """The UNetConfig this stage trains (a dynamics model without a mask has no mask channel, as DIAMOND)."""
        if self.stage == "upsampler":
            return preset(UPSAMPLER_OF[self.model])
        unet = preset(self.model)
        return replace(unet, n_actions=self.n_actions or unet.n_actions, use_mask=self.mask.kind != "none",
                       action_before_mlp=self.action_before_mlp)

    @property
    def denoiser_edm(self) -> EDMConfig:
        """The EDMConfig of this stage's denoiser: the upsampler trains on clean context unless told otherwise."""
        if self.stage == "upsampler" and not self.upsampler_ctx_noise:
            return replace(self.edm, ctx_augment=False)
        return self.edm


# configs saved before the published recipe (fields they lack -> the behaviour they were trained with)
LEGACY_TRAIN = {"decay_weights_only": False, "upsampler_ctx_noise": True, "action_before_mlp": False}
LEGACY_MASK = {"dropout_per": "sample"}


def config_from_dict(data: dict) -> TrainConfig:
    """TrainConfig from a plain dict (JSON/YAML), with its nested EDMConfig and MaskConfig (or a mask kind name);
    unknown keys raise naming them. A config saved before the published recipe (a mask kind and mask_dropout at the
    top level) loads with the settings it was trained with."""
    data = dict(data)
    edm = from_dict(EDMConfig, data.pop("edm", {}) or {})
    mask = data.pop("mask", "soft")
    if saved_before_recipe(data):
        mask = {"kind": mask, "dropout": data.pop("mask_dropout"), **LEGACY_MASK}
        data = {**LEGACY_TRAIN, **data}
    mask = mask if isinstance(mask, str) else from_dict(MaskConfig, mask)  # TrainConfig turns a kind name into one
    return replace(from_dict(TrainConfig, data), edm=edm, mask=mask)


def load_config(path: str | Path) -> TrainConfig:
    """TrainConfig from a .json or .yaml file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training config {path} not found")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    return config_from_dict(data)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


# ----------------------------------------------------------------------------------------------------------- data
def has_states(root: Path) -> bool:
    """Whether every episode of a dataset holds vehicle states (the GT mask's source)."""
    ds = Dataset(root)
    for row in ds.episodes():
        with ds.open(row) as ep:
            if not ep.has_states:
                return False
    return bool(ds.episodes())


MIN_EGO_FOUND = 0.9  # a colour mask on imported frames: the rule must find the ego in this share of the first frames


def ego_found(root: Path, mask: MaskConfig, frames: int = 64) -> float:
    """Share of the first `frames` frames of a dataset's first episode in which mask's colour rule finds ego pixels."""
    ds = Dataset(root)
    with ds.open(ds.episodes()[0]) as ep:
        f = ep.read("frames", 0, min(frames, ep.n_frames))  # (T, H, W, 3) uint8
    return float(vehicle_pixels(f, mask)[0].flatten(1).any(1).float().mean())


def for_data(cfg: TrainConfig) -> TrainConfig:
    """cfg checked against its dataset: n_actions set from the dataset's action names (ValueError when a set value
    differs), the mask grid set to the dataset's low-res size; on imported data the GT mask refused without states,
    the colour masks where their colour rule does not find the ego (its channels and thresholds are parameters)."""
    root = resolve(cfg.data_dir)
    manifest = read_manifest(root)
    names = action_names(manifest)
    if cfg.n_actions not in (0, len(names)):
        raise ValueError(f"TrainConfig.n_actions is {cfg.n_actions} but {root / DATASET_FILE} has {len(names)} "
                         f"actions {list(names)}: set n_actions to 0 (the dataset's count) or {len(names)}")
    imported = cfg.stage == "dynamics" and not collected(manifest)
    source = manifest.get("source", {}).get("kind", "not collected")
    if imported and cfg.mask.kind == "gt" and not has_states(root):
        raise ValueError(f"TrainConfig.mask kind 'gt' needs vehicle states, and {root} was imported ({source}) without "
                         "them: import states with the episodes, or train it with mask='none' (or a colour mask)")
    if imported and cfg.mask.kind in ("soft", "hard") and (found := ego_found(root, cfg.mask)) < MIN_EGO_FOUND:
        m = cfg.mask
        raise ValueError(f"TrainConfig.mask kind {m.kind!r} finds the cars by colour, and on {root} (imported, "
                         f"{source}) the colour rule (ego: channel {m.ego_channel}, other cars: channel "
                         f"{m.other_channel}, dominant above {m.colour_min} by {m.colour_margin}; 0 r, 1 g, 2 b) finds "
                         f"the ego in {found:.0%} of its first frames: set the mask's ego_channel, other_channel, "
                         "colour_min, colour_margin for your frames' colours (notebook 03: MASK_CHANNELS, "
                         "MASK_COLOUR), or train it with mask='none' (or 'gt' with imported states)")
    env = manifest.get("env", {})
    grid = ((env["lowres_height"], env["lowres_width"]) if env else tuple(manifest.get("lowres_size", cfg.mask.grid)))
    if cfg.mask.grid != grid:  # the mask channel lies on the dynamics model's grid (roundabout: 80 x 80)
        cfg = replace(cfg, mask=replace(cfg.mask, grid=grid))
    if cfg.n_actions or len(names) == preset(cfg.model).n_actions:
        return cfg
    return replace(cfg, n_actions=len(names))


def windows(cfg: TrainConfig, split: str = "train") -> WindowDataset:
    """The streamed windows of one stage: dynamics = 4 + ar_steps low-res frames, actions and the mask sources
    (full-res frames or states at each target's last context position); upsampler = 2 full-res frames + low-res."""
    root = resolve(cfg.data_dir)
    if cfg.stage == "upsampler":
        return WindowDataset(root, split, 2, "frames", extra={"lowres": ("lowres", 1, 2)})
    k = cfg.unet.n_context
    extra = {}
    if cfg.mask.kind in ("soft", "hard"):
        extra["mask_src"] = ("frames", k - 1, k - 1 + cfg.ar_steps)
    elif cfg.mask.kind == "gt":
        extra["mask_src"] = ("states", k - 1, k - 1 + cfg.ar_steps)
    return WindowDataset(root, split, k + cfg.ar_steps, "lowres", extra=extra)


class StepBatches(torch.utils.data.Sampler):
    """Infinite batches of window indices, a fixed function of (seed, micro-batch number, rank): a fresh permutation
    per epoch, each micro-batch split across ranks. Starting at micro-batch m reproduces an uninterrupted run."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, start
        self._epoch, self._perm = -1, None

    def _at(self, p: int) -> int:
        epoch = p // self.n
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return int(self._perm[p % self.n])

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            first = (m * self.world + self.rank) * self.batch
            yield [self._at(p) for p in range(first, first + self.batch)]
            m += 1


def loader(cfg: TrainConfig, data: WindowDataset, rank: int, world: int, start: int,
           pin: bool) -> torch.utils.data.DataLoader:
    """DataLoader over StepBatches from micro-batch `start`, prefetching in `workers` processes."""
    if len(data) < 1:
        raise ValueError(f"{cfg.data_dir} has no training window of {data.length} frames: collect longer episodes")
    sampler = StepBatches(len(data), cfg.batch_size, cfg.seed, rank, world, start)
    kw = {"prefetch_factor": 4, "persistent_workers": True} if cfg.workers else {}
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=pin, **kw)


def generator(cfg: TrainConfig, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """The noise generator of one micro-batch on one rank: a fixed function of (seed, micro-batch, rank)."""
    seed = int(np.random.SeedSequence([cfg.seed, micro, rank, 1]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------- losses
def window_masks(src: torch.Tensor | None, mask: MaskConfig | str, mode: str = "train") -> torch.Tensor | None:
    """The mask channel of every target of a batch of windows (PIWM Soft Mask; hard/gt ablations), None for 'none'.

    src: (B, T, H, W, 3) uint8 full-res frames (soft, hard) or (B, T, N, F) states (gt) -> (B, T, h, w) float.
    mask: the training run's MaskConfig (its weights of `mode`), or a kind name for the default settings.
    """
    cfg = MaskConfig(kind=mask) if isinstance(mask, str) else mask
    if cfg.kind == "none":
        return None
    if src is None:
        raise ValueError(f"mask {cfg.kind!r} needs the mask sources of each window (windows() provides them)")
    flat = src.flatten(0, 1)  # (B*T, ...)
    masks = gt_mask(flat, cfg, mode) if cfg.kind == "gt" else make_mask(flat, cfg, mode)  # (B*T, h, w)
    return masks.view(*src.shape[:2], *masks.shape[-2:])


def dynamics_loss(model: Denoiser, batch: dict, cfg: TrainConfig, g: torch.Generator,
                  backward: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Mean EDM loss over ar_steps autoregressive targets (PIWM: each detached prediction replaces its frame).

    batch: frames (B, K + T, h, w, 3) uint8, actions (B, K + T - 1), mask_src (B, T, H, W, 3) uint8 or states.
    `backward` (if given) is called on each step's loss share, so only one step's graph is alive at a time.
    """
    x = to_model(batch["frames"])  # (B, K + T, 3, h, w)
    k, T = cfg.unet.n_context, cfg.ar_steps
    ctx = x[:, :k]  # (B, K, 3, h, w)
    masks = window_masks(batch.get("mask_src"), cfg.mask, "train")  # (B, T, h, w) or None
    total = torch.zeros((), device=x.device)
    for t in range(T):
        mask = None
        if masks is not None:
            mask = mask_dropout(masks[:, t], cfg.mask.dropout, g, cfg.mask.dropout_per)  # (B, h, w)
        weight = (1.0 + masks[:, t]) if (cfg.loss_weighting and masks is not None) else None
        loss, denoised = denoising_step(model, x[:, k + t], ctx, batch["actions"][:, t:t + k], mask, g, weight=weight)
        if backward is not None:
            backward(loss / T)
        total = total + loss.detach() / T
        ctx = torch.cat([ctx[:, 1:], denoised.detach().clamp(-1, 1)[:, None]], 1)  # prediction replaces the frame
    return total


def upsampler_loss(model: Denoiser, batch: dict, cfg: TrainConfig, g: torch.Generator,
                   backward: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """EDM loss of the x5 upsampler: target full-res frame given [previous full-res frame, bicubic upsample].

    batch: frames (B, 2, H, W, 3) uint8 (previous, target), lowres (B, 1, h, w, 3) uint8 of the target.
    """
    full = to_model(batch["frames"])  # (B, 2, 3, H, W)
    low = to_model(batch["lowres"][:, 0])  # (B, 3, h, w)
    up = upsample(low, *full.shape[-2:])  # (B, 3, H, W)
    ctx = torch.stack([full[:, 0], up], 1)  # (B, 2, 3, H, W)
    loss, _ = denoising_step(model, full[:, 1], ctx, None, None, g)
    if backward is not None:
        backward(loss)
    return loss.detach()


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a batch to the training device without blocking (pinned host memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------------- state
def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: weight decay on Linear/Conv weights only (DIAMOND csgo, after minGPT), or on every parameter."""
    if not cfg.decay_weights_only:
        return [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    decay = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    params = list(model.parameters())
    return [{"params": [p for p in params if id(p) in decay], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]


def lr_lambda(warmup: int) -> Callable[[int], float]:
    """Linear warm-up over `warmup` optimizer steps, then constant (DIAMOND)."""
    return lambda s: min(1.0, (s + 1) / max(warmup, 1))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- d ema + (1 - d) model with d = min(decay, (1 + step) / (10 + step)) (warm-up of the average)."""
    d = min(decay, (1 + step) / (10 + step))
    e, m = list(ema.parameters()), [p.detach().float() for p in model.parameters()]
    torch._foreach_lerp_(e, m, 1.0 - d)


# ----------------------------------------------------------------------------------------------------------- loop
def _check_resume(state: dict, cfg: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint trained with other settings (paths aside; the dataset by content) or past cfg.steps."""
    saved = {"n_actions": 0, **state["config"]}  # saved before n_actions existed: HighwayEnv's 5, what 0 means there
    saved["mask"] = {"ego_channel": 1, "other_channel": 2, **saved["mask"]}  # before the channels: HighwayEnv's
    changes = config_changes(saved, to_dict(cfg), RESUMABLE | PATHS)
    old, new = state.get("data"), data_fingerprint(cfg.data_dir)
    if old and new and old != new:
        changes.append(f"data_dir: {state['config'].get('data_dir')!r} -> {cfg.data_dir!r} holds other episodes "
                       f"(dataset fingerprint {old[:12]} -> {new[:12]})")
    if changes:
        raise ValueError(f"{path} was trained with other settings ({'; '.join(changes)}): resume with its values, "
                         "or pass another out_dir to start a new run")
    if cfg.steps < state["step"]:
        raise ValueError(f"{path} is at step {state['step']} but steps={cfg.steps}: a run cannot go back; pass "
                         f"steps >= {state['step']}, or another out_dir to start a new run")


def resume(cfg: TrainConfig, out: Path, model: Denoiser, ema: Denoiser, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, Path | None, dict | None]:
    """Load out's newest good checkpoint into model, EMA, optimizer and scheduler after _check_resume; returns
    (step, checkpoint, its state: the scaler and RNG are restored later), or (0, None, None) for a fresh run."""
    found = read_latest(out)
    if found is None:
        if steps_on_disk(out):
            warnings.warn(f"{out}: no checkpoint is readable, training starts again from step 0", CheckpointWarning, 2)
        return 0, None, None
    path, state = found
    _check_resume(state, cfg, path)
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(optimizer_state(state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], path, state


def _log_rows(path: Path, upto: int) -> None:
    """Drop log rows after step `upto` (a resumed run rewrites them)."""
    if not path.exists():
        return
    rows = list(csv.reader(path.open()))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= upto]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)


# one row per log_every steps: loss = mean over those steps; data_wait = the fraction of their wall time spent
# waiting for the loader (the device idles then); samples_per_s counts windows of all processes
LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "samples_per_s", "data_wait", "seconds"]


@dataclass
class LogMeter:
    """The running sums behind each log.csv row (LOG_FIELDS) since the previous one."""

    path: Path  # log.csv
    samples_per_step: int  # windows per optimizer step, all processes
    t0: float = field(default_factory=time.perf_counter)  # start of this (possibly resumed) run, seconds
    t_last: float = field(default_factory=time.perf_counter)  # time of the previous row, seconds
    steps: int = 0  # optimizer steps since the previous row
    waited: float = 0.0  # seconds spent waiting for the loader since the previous row
    loss_sum: float = 0.0  # sum of the step losses since the previous row

    def add(self, loss: float, waited: float) -> None:
        """Count one optimizer step."""
        self.steps, self.loss_sum, self.waited = self.steps + 1, self.loss_sum + loss, self.waited + waited

    def row(self, step: int, lr: float, grad_norm: float) -> dict:
        """The row of the steps since the previous one (and start the next)."""
        now = time.perf_counter()
        span = now - self.t_last
        row = {"step": step, "loss": self.loss_sum / self.steps, "lr": lr, "grad_norm": grad_norm,
               "samples_per_s": self.steps * self.samples_per_step / span, "data_wait": self.waited / span,
               "seconds": now - self.t0}
        self.t_last, self.steps, self.waited, self.loss_sum = now, 0, 0.0, 0.0
        return row

    def write(self, row: dict) -> None:
        """Append a row to log.csv (with the header when the file is new)."""
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)


def accelerator(cfg: TrainConfig) -> Accelerator:
    """accelerate's Accelerator for cfg (forgetting a previous single-process run's settings)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # one process (a notebook training a second model, maybe in bf16 after fp32): accelerate's state is a
        # process-wide singleton that refuses new settings, so forget the previous run's (no process group here)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=resolve_device(cfg.device).type == "cpu",
                       step_scheduler_with_optimizer=False)


def build(cfg: TrainConfig) -> tuple[Denoiser, Denoiser, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Fresh model (every RNG seeded from cfg.seed: the same weights on every rank), EMA, AdamW and warm-up."""
    seed_everything(cfg.seed)
    model = Denoiser(cfg.unet, cfg.denoiser_edm)
    ema = Denoiser(cfg.unet, cfg.denoiser_edm).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
    return model, ema, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps))


def forward_backward(acc: Accelerator, model: torch.nn.Module, batches: Iterator[dict], cfg: TrainConfig,
                     step: int) -> tuple[torch.Tensor, float]:
    """The grad_accum micro-batches of one optimizer step; returns (loss averaged over processes, seconds waited)."""
    loss_fn = dynamics_loss if cfg.stage == "dynamics" else upsampler_loss
    total, waited = torch.zeros((), device=acc.device), 0.0
    for micro in range(cfg.grad_accum):
        t_wait = time.perf_counter()
        batch = to_device(next(batches), acc.device)
        waited += time.perf_counter() - t_wait
        g = generator(cfg, step * cfg.grad_accum + micro, acc.process_index, acc.device)
        sync = acc.no_sync(model) if micro < cfg.grad_accum - 1 else contextlib.nullcontext()
        with acc.autocast(), sync:
            total += loss_fn(model, batch, cfg, g, lambda x: acc.backward(x / cfg.grad_accum))
    return acc.reduce(total / cfg.grad_accum, reduction="mean"), waited


def check_finite(loss: torch.Tensor, step: int, cfg: TrainConfig, last_good: Path | None) -> None:
    """Raise TrainingDiverged on a NaN/inf loss, naming the last good checkpoint."""
    if not torch.isfinite(loss):
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1} ({cfg.out_dir}); {where}. "
                               "Lower lr, use bf16 instead of fp16, or check the data (piwm_lib.collect check).")


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> dict:
    """Train one stage to cfg.steps optimizer steps, resuming from out_dir's newest good checkpoint; returns a summary.

    Runs as one process or under accelerate launch / notebook_launcher (each process sees its rank through
    accelerate). `callback(row)` gets every log row on the main process (live loss curves).
    """
    cfg = for_data(cfg)
    acc = accelerator(cfg)
    out = resolve(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, ema, optimizer, scheduler = build(cfg)
    step, last_good, state = resume(cfg, out, model, ema, optimizer, scheduler)
    if acc.is_main_process:
        save_json(cfg, out / "config.json")
        _log_rows(out / "log.csv", step)
    if cfg.compile:
        model.net.compile()  # in place: state_dict keys stay those of the plain module
    model, optimizer = acc.prepare(model, optimizer)
    if state is not None and state.get("scaler") is not None and acc.scaler is not None:
        acc.scaler.load_state_dict(state["scaler"])
    ema.to(acc.device)
    raw = acc.unwrap_model(model)
    batches = iter(loader(cfg, windows(cfg), acc.process_index, acc.num_processes, step * cfg.grad_accum,
                          pin=acc.device.type == "cuda"))
    if state is not None:
        set_rng_state(state["rng"])  # after the loader drew its seed, as the uninterrupted run had before saving
    meter = LogMeter(out / "log.csv", cfg.batch_size * cfg.grad_accum * acc.num_processes)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.stage} {cfg.model}", unit="step",
               disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True)
    summary = {}
    with contextlib.closing(bar):
        while step < cfg.steps:
            model.train()
            loss, waited = forward_backward(acc, model, batches, cfg, step)
            check_finite(loss, step, cfg, last_good)
            grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema_update(ema, raw, cfg.ema_decay, step)
            step += 1
            meter.add(float(loss), waited)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                summary = meter.row(step, scheduler.get_last_lr()[0], float(grad_norm))
                if acc.is_main_process:
                    meter.write(summary)
                    bar.set_postfix(loss=f"{summary['loss']:.4f}")
                    if callback is not None:
                        callback(summary)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                if acc.is_main_process:
                    last_good = save_checkpoint(out, step, raw, ema, optimizer, scheduler, acc.scaler, cfg,
                                                cfg.keep_ckpts, acc.num_processes)
                acc.wait_for_everyone()
    acc.wait_for_everyone()
    return {"step": step, "checkpoint": str(latest_checkpoint(out)), "processes": acc.num_processes, **summary}


def read_log(out_dir: str | Path) -> dict[str, np.ndarray]:
    """log.csv of a run as columns (LOG_FIELDS)."""
    path = resolve(out_dir) / "log.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run has not logged a step yet")
    rows = list(csv.DictReader(path.open()))
    return {k: np.array([float(r[k]) for r in rows]) for k in LOG_FIELDS}


def launch(cfg: TrainConfig, num_processes: int = 1) -> None:
    """Train from JupyterLab on several GPUs with accelerate's notebook_launcher (one process: plain train())."""
    if num_processes == 1:
        train(cfg)
        return
    from accelerate import notebook_launcher
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)  # an earlier train() in this kernel set it up
    GradientState._reset_state()
    notebook_launcher(train, (cfg,), num_processes=num_processes)


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m piwm_lib.train --config cfg.yaml [--set key=value ...] (under accelerate launch for DDP)."""
    p = argparse.ArgumentParser(prog="python -m piwm_lib.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="TrainConfig as .yaml or .json")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override fields (JSON values)")
    a = p.parse_args(argv)
    data = to_dict(load_config(a.config))
    for item in a.set:
        key, _, value = item.partition("=")
        if key not in data:
            p.error(f"--set {key}: not a TrainConfig field; known: {sorted(data)}")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    try:
        summary = train(config_from_dict(data))
    except ValueError as e:  # a refused resume or a bad setting: one clear line, no traceback
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # one summary line, from the main process
        print(json.dumps(summary), flush=True)
    return 0


def ensure_world_model(model_dir: str | Path | None, data_dir: str | Path, fallback_dir: str | Path, steps: int = 20,
                       seed: int = 0, device: str = "cpu", upsampler_dir: str | Path | None = None,
                       pretrained: str = "") -> tuple[Denoiser, Denoiser, TrainConfig, Path]:
    """The EMA dynamics model and upsampler of a notebook-03 run folder (the upsampler from `upsampler_dir`'s run when
    given: it needs no mask, so runs of one size can share it); when it has no trained model (or `model_dir` is None),
    the shipped model `pretrained` (piwm_lib.pretrained) when given, else a micro world model trained for `steps` steps
    into `fallback_dir` (so a later notebook runs on its own), or raise when `steps` is 0.
    Returns (dynamics, upsampler, the dynamics TrainConfig, the folder used)."""
    model_dir = resolve(model_dir) if model_dir else None
    up_dir = resolve(upsampler_dir) if upsampler_dir else model_dir
    if (model_dir is None or latest_checkpoint(model_dir / "dynamics") is None
            or latest_checkpoint(up_dir / "upsampler") is None):
        where = f"{model_dir} has no trained world model" if model_dir else "no notebook-03 run given"
        scenario = read_manifest(resolve(data_dir)).get("env", {}).get("env_id", "imported episodes")
        if pretrained and scenario != "highway-v0":
            print(f"the shipped models were trained on highway-v0, {resolve(data_dir).name} holds {scenario}: "
                  f"not using {pretrained}")
            pretrained = ""
        if pretrained:
            from .pretrained import SHIPPED, load_shipped
            dyn, meta = load_shipped(pretrained, device)
            print(f"{where}: using the shipped model {pretrained} "
                  f"({meta['config']['model']}, {meta['config']['mask']['kind']} mask, {meta['step']} steps)")
            up = load_shipped(meta["upsampler"], device)[0]
            return dyn, up, config_from_dict(meta["config"]), SHIPPED / pretrained
        if steps <= 0:
            raise FileNotFoundError(f"no trained world model: {where}; run notebook 03 for it first, name a shipped "
                                    "model (python -m piwm_lib.pretrained list) or allow fallback steps > 0")
        print(f"{where}: training a micro one for {steps} steps into {fallback_dir} "
              "(its frames will be poor; run notebook 03 first for a real one, or use a shipped model)")
        model_dir = up_dir = resolve(fallback_dir)
        base = TrainConfig(data_dir=str(resolve(data_dir)), model="micro", ar_steps=2, steps=steps, warmup_steps=5,
                           lr=3e-4, seed=seed, progress=False, device=str(device), out_dir="-")
        for stage, batch in (("dynamics", 4), ("upsampler", 1)):
            if latest_checkpoint(model_dir / stage) is None:
                train(replace(base, stage=stage, batch_size=batch, out_dir=str(model_dir / stage)))
    dyn = load_denoiser(model_dir / "dynamics", ema=True, device=device)
    up = load_denoiser(up_dir / "upsampler", ema=True, device=device)
    return dyn, up, load_config(model_dir / "dynamics" / "config.json"), model_dir


if __name__ == "__main__":
    sys.exit(main())
