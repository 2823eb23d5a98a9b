"""The quality bar of a world model that drives (ours): measured on the course dataset's test windows under the logged
actions, with the camera-aware metrics of physics.py.

    ego present in >= 98% of generated frames
    true cars wholly in view matched by a generated car within 4 px: >= 90% over horizons 1-8, >= 80% over 1-16
    vanish + pop-up away from the borders <= 5 per 100 frames
    lane-change commands answered in the right direction within 8 frames (read from the road) in >= 80% of cases
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import physics as P
from .unet import UNetConfig
from .validate import NonNegFloat, PosFloat, PosInt, Prob, check_fields


@dataclass(frozen=True)
class QualityBar:
    """Thresholds of the bar (ours; see the module docstring)."""

    ego_presence: Prob = 0.98  # share of generated frames with the ego drawn
    match_px: PosFloat = 4.0  # a true car is kept when a generated car's centre is this close
    recall: tuple[tuple[PosInt, Prob], ...] = ((8, 0.90), (16, 0.80))  # (horizon, share of true cars kept over 1..h)
    vanish_popup_per_100: NonNegFloat = 5.0  # cars (dis)appearing away from the borders, per 100 generated frames
    lane_answered: Prob = 0.80  # share of lane-change commands answered in the right direction within kir_window

    def __post_init__(self) -> None:
        check_fields(self)


def window_scores(generated: np.ndarray, truth: np.ndarray, actions: np.ndarray, bar: QualityBar = QualityBar(),
                  cfg: P.PhysicsConfig = P.PhysicsConfig()) -> dict[str, np.ndarray]:
    """The bar's figures per window (N,) of generated vs true (N, 1 + H, 150, 600, 3) uint8 sequences (frame 0: the
    last real context frame) under actions (N, H): recall over each horizon of the bar that fits, ego presence,
    vanish + pop-up per 100 frames, lane-change commands and those answered."""
    H = generated.shape[1] - 1
    out: dict[str, np.ndarray] = {}
    for h, _ in bar.recall:
        if h <= H:
            s = P.scores(generated[:, :h + 1], truth[:, :h + 1], actions[:, :h], replace(cfg, match_px=bar.match_px))
            out[f"recall_h{h}"] = np.asarray(s["others_recall"], float)
    s = P.scores(generated, truth, actions, cfg)
    out.update(ego_presence=np.asarray(s["ego_presence"], float),
               vanish_popup_per_100=np.asarray(s["vanish_per_100"] + s["popup_per_100"], float),
               lane_commands=np.asarray(s["lane_commands"], float), lane_answered=np.asarray(s["lane_answered"], float))
    return out


def summarise(per_window: dict[str, np.ndarray]) -> dict[str, float]:
    """The bar's figures from window_scores: means over windows, lane-change commands pooled over windows."""
    out = {k: float(np.nanmean(v)) for k, v in per_window.items() if k.startswith("recall_h")}
    commands = int(np.sum(per_window["lane_commands"]))
    out.update(ego_presence=float(np.mean(per_window["ego_presence"])),
               vanish_popup_per_100=float(np.mean(per_window["vanish_popup_per_100"])),
               lane_answered=float(np.sum(per_window["lane_answered"]) / commands) if commands else float("nan"),
               lane_commands=commands, windows=int(len(per_window["ego_presence"])))
    return out


def measure(generated: np.ndarray, truth: np.ndarray, actions: np.ndarray, bar: QualityBar = QualityBar(),
            cfg: P.PhysicsConfig = P.PhysicsConfig()) -> dict[str, float]:
    """The bar's figures of generated vs true (N, 1 + H, 150, 600, 3) uint8 sequences under actions (N, H): recall
    over each horizon, ego presence, vanish + pop-up per 100 frames, lane-change commands answered (pooled over
    windows), and the counts behind them."""
    return {**summarise(window_scores(generated, truth, actions, bar, cfg)), "horizon": int(generated.shape[1] - 1)}


def verdict(figures: dict[str, float], bar: QualityBar = QualityBar()) -> dict[str, bool | None]:
    """Each criterion of the bar: True (met), False (missed), None (not measurable: no lane command, short horizon)."""
    def at_least(key: str, need: float) -> bool | None:
        v = figures.get(key, float("nan"))
        return None if np.isnan(v) else bool(v >= need)

    out = {f"recall_h{h}": at_least(f"recall_h{h}", need) for h, need in bar.recall}
    out["ego_presence"] = at_least("ego_presence", bar.ego_presence)
    out["vanish_popup_per_100"] = bool(figures["vanish_popup_per_100"] <= bar.vanish_popup_per_100)
    out["lane_answered"] = at_least("lane_answered", bar.lane_answered)
    return out


def env_window_scores(wm, win: dict[str, np.ndarray], starts: tuple[str, ...] = ("cold", "warm"),
                      sampler: str = "fast", seed: int = 0, bar: QualityBar = QualityBar(),
                      s_cond: float | None = None, cfg: P.PhysicsConfig = P.PhysicsConfig()
                      ) -> dict[str, dict[str, np.ndarray]]:
    """The bar's per-window figures (window_scores) per start of a world model (a WorldModelEnv: its networks and
    mask) rolled out on test windows; s_cond overrides the dynamics sampler's context noise (None: the preset's)."""
    from .evaluation import evaluate, start_config, truth_of, with_context

    cfgs = {}
    for s in starts:
        wc = start_config(s, wm.cfg.mask, sampler)
        cfgs[s] = wc if s_cond is None else replace(wc, dynamics=replace(wc.dynamics, s_cond=s_cond))
    ev = evaluate(wm.dyn, wm.up, cfgs, win, seed=seed)
    truth, actions = truth_of(win, wm.k)
    return {s: window_scores(with_context(win, ev.frames[s], wm.k), truth, actions, bar, cfg) for s in starts}


def measure_env(wm, win: dict[str, np.ndarray], starts: tuple[str, ...] = ("cold", "warm"), sampler: str = "fast",
                seed: int = 0, bar: QualityBar = QualityBar(), cfg: P.PhysicsConfig = P.PhysicsConfig()
                ) -> dict[str, dict]:
    """The bar's figures per start of a world model (a WorldModelEnv: its networks and mask) on test windows of a
    road `cfg` describes (physics.for_dataset)."""
    horizon = int(win["frames"].shape[1] - wm.k)
    return {s: {**summarise(w), "horizon": horizon}
            for s, w in env_window_scores(wm, win, starts, sampler, seed, bar, cfg=cfg).items()}


def measure_model(name: str, data_dir: str = "data/course", windows: int = 16, horizon: int = 16,
                  starts: tuple[str, ...] = ("cold", "warm"), sampler: str = "fast", seed: int = 0,
                  device: str = "cpu", bar: QualityBar = QualityBar()) -> dict[str, dict]:
    """The bar's figures of a shipped model (piwm_lib.pretrained) per start, on `windows` test windows of the dataset
    (lane-change commands preferred) with `horizon` generated frames each."""
    from .evaluation import eval_windows
    from .pretrained import load_pretrained

    wm = load_pretrained(name, device=device)
    return measure_env(wm, eval_windows(data_dir, wm.k, horizon, windows), starts, sampler, seed, bar)


def curve(run: str | Path, every: int, win: dict[str, np.ndarray], starts: tuple[str, ...] = ("warm",),
          sampler: str = "fast", seed: int = 0, bar: QualityBar = QualityBar(), root: Path | None = None) -> list[dict]:
    """Quality against compute: the bar's figures of a shipped model's training run (runs/pretrained/<name>/) at
    each kept checkpoint every `every` steps (EMA weights, with the shipped upsampler the model pairs with), or of the
    shipped weights alone when the run is gone; a row per checkpoint and start with the steps and minutes behind it."""
    from .checkpoint import ckpt_name, load_denoiser, steps_on_disk
    from .pretrained import load_pretrained, read_meta, seconds_by_step, shipped_root
    from .worldmodel import WorldModelEnv

    run = Path(run)
    wm = load_pretrained(run.name, root=root)  # the shipped model of this run: its mask and upsampler
    kept = sorted(s for s in steps_on_disk(run) if s % every == 0) if run.exists() else []
    logged, seconds = seconds_by_step(run if kept else shipped_root(root) / run.name)
    rows = []
    for step in kept or [read_meta(run.name, root)["step"]]:
        dyn = load_denoiser(run / ckpt_name(step)) if kept else wm.dyn
        minutes = float(np.interp(step, logged, seconds)) / 60 if len(logged) else float("nan")
        for start, fig in measure_env(WorldModelEnv(dyn, wm.up, wm.cfg), win, starts, sampler, seed, bar).items():
            rows.append({"model": run.name, "step": step, "minutes": round(minutes, 1), "start": start, **fig})
    return rows


WINDOW_KEYS = ("lowres", "frames", "actions", "states", "episode")  # what evaluation.eval_windows returns


def save_windows(win: dict[str, np.ndarray], path: str | Path, data_dir: str | Path) -> Path:
    """Write test windows (evaluation.eval_windows) and the fingerprint of their dataset to a compressed .npz."""
    from .checkpoint import data_fingerprint
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **win, data=np.array(data_fingerprint(data_dir) or ""))
    return path


def load_windows(path: str | Path) -> dict[str, np.ndarray]:
    """Test windows written by save_windows (the key "data": the dataset's fingerprint)."""
    try:
        with np.load(path) as f:
            win = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a test-window file ({e}); rebuild it with `python -m piwm_lib.quality "
                         f"--save-windows {path}`") from e
    if missing := sorted(set(WINDOW_KEYS) - set(win)):
        raise ValueError(f"{path} lacks {missing}: rebuild it with `python -m piwm_lib.quality --save-windows {path}`")
    return win


def main(argv: list[str] | None = None) -> int:
    """Command line: the bar's figures and verdict of shipped models."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m piwm_lib.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="shipped model names (python -m piwm_lib.pretrained list)")
    p.add_argument("--data", default="data/course")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--starts", nargs="+", default=["cold", "warm"])
    p.add_argument("--save-windows", metavar="PATH", help="write the chosen test windows to PATH (.npz) and stop")
    p.add_argument("--curve", metavar="CSV", help="instead of the shipped weights, measure every kept checkpoint "
                   "(--every steps) of each model's run in runs/pretrained/ and append the rows to CSV")
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--context", type=int, default=UNetConfig().n_context,
                   help="real frames before each window's generated ones (the models' n_context)")
    a = p.parse_args(argv)
    from .evaluation import eval_windows
    if a.save_windows:
        print(save_windows(eval_windows(a.data, a.context, a.horizon, a.windows), a.save_windows, a.data))
        return 0
    if not a.names:
        p.error("name at least one shipped model (or --save-windows PATH)")
    if a.curve:
        import pandas as pd

        from .runs import resolve
        win = eval_windows(a.data, a.context, a.horizon, a.windows)
        for name in a.names:
            rows = pd.DataFrame(curve(resolve("runs/pretrained") / name, a.every, win, tuple(a.starts)))
            out = Path(a.curve)
            rows.to_csv(out, mode="a", header=not out.exists(), index=False)
            print(rows.to_string(index=False))
        return 0
    for name in a.names:
        for start, fig in measure_model(name, a.data, a.windows, a.horizon, tuple(a.starts)).items():
            print(json.dumps({"model": name, "start": start, **fig, "verdict": verdict(fig)}))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
