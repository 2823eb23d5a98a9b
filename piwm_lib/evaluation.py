"""One evaluation of a world model (PIWM Sec. 4 protocol, with objective metrics instead of human raters): open-loop
rollouts of each start mode under the logged actions of the test windows, their physics scored against the truth,
and the metrics.json record that notebook 05, the ablation sweep (notebook 06) and results.py share."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import egomotion as E
from . import physics as P
from .dataset import Dataset, action_names, test_windows
from .edm import Denoiser
from .metrics import bootstrap_ci
from .worldmodel import STARTS, WorldModelConfig, WorldModelEnv, rollout, start_config  # noqa: F401 (re-exported)

REPORTED = ("wo", "tec", "iec", "kir", "ego_presence", "vanish_per_100", "popup_per_100", "merge_per_100",
            "swap_per_100", "ego_vanish_per_100", "missing_rate", "extra_rate", "others_recall", "lane_commands",
            "lane_answered", "lane_stuck", "lane_wrong", "lane_unrequested", "lane_completed", "lane_latency",
            "lane_timing_error", "speed_commands", "speed_answered", "ego_misplaced", "close_encounters",
            "others_error_px")  # per-window metrics summarised in metrics.json


def eval_windows(root: str | Path, context: int, horizon: int, windows: int = 0,
                 min_windows: int = 2) -> dict[str, np.ndarray]:
    """The evaluation windows of a dataset: `windows` (0: all) non-overlapping test windows of context + horizon
    frames, evenly spread, those with a command KIR judges after the context first (judged_actions)."""
    return test_windows(root, context + horizon, max_windows=windows, min_windows=min_windows,
                        prefer_actions=judged_actions(Dataset(root).manifest), after=context - 1)


def judged_actions(manifest: dict) -> tuple[int, ...]:
    """The action indices whose answer KIR judges best on a dataset: lane changes where the lane reading applies,
    FASTER / SLOWER on curved roads (physics.no_road); none on imported data."""
    if P.not_applicable(manifest):
        return ()
    names = action_names(manifest)
    wanted = ("FASTER", "SLOWER") if P.no_road(manifest) else ("LANE_LEFT", "LANE_RIGHT")
    return tuple(names.index(n) for n in wanted if n in names)


@dataclass
class Evaluation:
    """Rollouts of each start on the same windows and what the metrics made of them. Scored sequences start at the
    last real context frame (frame 0), so frame k of an event is the k-th generated frame."""

    windows: dict[str, np.ndarray]  # dataset.test_windows
    context: int  # real frames each rollout starts from
    lowres: dict[str, np.ndarray]  # start -> (N, H, 30, 120, 3) uint8 generated
    frames: dict[str, np.ndarray]  # start -> (N, H, 150, 600, 3) uint8 generated
    seconds: dict[str, float]  # start -> generation time
    scenes: dict[str, P.Scene]  # "truth" and each start: what the metrics read
    scores: dict[str, dict[str, np.ndarray]]  # "truth" and each start -> metric -> (N,) per window
    events: dict[str, pd.DataFrame]  # "truth" and each start -> one row per failure event

    @property
    def fps(self) -> dict[str, float]:
        """Generated frames per second of each start (this machine)."""
        return {k: v.size // np.prod(v.shape[2:]) / self.seconds[k] for k, v in self.lowres.items()}


def with_context(windows: dict[str, np.ndarray], generated: np.ndarray, context: int) -> np.ndarray:
    """Generated frames (N, H, ...) behind the last real context frame: the (N, 1 + H, ...) sequence to score."""
    return np.concatenate([windows["frames"][:, context - 1:context], generated], 1)


def truth_of(windows: dict[str, np.ndarray], context: int) -> tuple[np.ndarray, np.ndarray]:
    """The true frames over the same span (N, 1 + H, ...) and the actions taken at them (N, H)."""
    return windows["frames"][:, context - 1:], windows["actions"][:, context - 1:]


def evaluate(dynamics: Denoiser, upsampler: Denoiser | None, starts: dict[str, WorldModelConfig],
             windows: dict[str, np.ndarray], cfg: P.PhysicsConfig | None = P.PhysicsConfig(), seed: int = 0,
             batch: int = 8) -> Evaluation:
    """Roll out every start of `starts` (name -> settings) on the test windows under their logged actions, each
    rollout with its own noise generator (the same noise for every start), and score them against the truth
    (cfg None: no physics scores, for data the metrics do not apply to: physics.not_applicable)."""
    context = dynamics.unet_cfg.n_context
    if windows["frames"].shape[1] <= context:
        raise ValueError(f"windows of {windows['frames'].shape[1]} frames leave nothing to generate after "
                         f"{context} context frames")
    lowres, frames, seconds = {}, {}, {}
    for name, wm in starts.items():
        t0 = time.perf_counter()
        states = windows["states"] if wm.mask.kind == "gt" else None  # a GT mask is an oracle from the logged states
        lowres[name], frames[name] = rollout(WorldModelEnv(dynamics, upsampler, wm, seed=seed), windows["lowres"],
                                             windows["frames"], windows["actions"], batch=batch, states=states)
        seconds[name] = time.perf_counter() - t0
    truth, actions = truth_of(windows, context)
    if cfg is None:
        return Evaluation(windows, context, lowres, frames, seconds, {}, {}, {})
    scenes = {"truth": P.observe(truth, cfg)}
    scenes.update({k: P.observe(with_context(windows, v, context), cfg) for k, v in frames.items()})
    scores = {k: P.scores(s, scenes["truth"], actions, cfg) for k, s in scenes.items()}
    events = {k: P.events(s, scenes["truth"], actions, cfg) for k, s in scenes.items()}
    return Evaluation(windows, context, lowres, frames, seconds, scenes, scores, events)


def by_horizon(ev: pd.DataFrame, horizon: int, windows: int, kinds: tuple[str, ...] = P.EVENT_TYPES) -> list[float]:
    """Events of the given types per window at each generated frame 1..horizon."""
    hit = ev[ev["type"].isin(kinds)]
    return (np.bincount(hit["frame"].astype(int), minlength=horizon + 1)[1:horizon + 1] / max(windows, 1)).tolist()


def record(evaluation: Evaluation, n_boot: int = 2000, seed: int = 0) -> dict:
    """The physics part of metrics.json: per start (and the truth) each REPORTED metric as [mean, lo, hi] (95%
    bootstrap over windows), its per-window values, event counts by type, events by horizon, frames/s."""
    e = evaluation
    N, H = e.lowres[next(iter(e.lowres))].shape[:2] if e.lowres else (0, 0)
    return {
        "starts": list(e.lowres), "horizon": int(H), "windows": int(N), "context": e.context,
        "episodes": int(len(set(np.asarray(e.windows["episode"]).tolist()))),
        "physics": {k: {m: list(bootstrap_ci(s[m], n_boot, seed=seed)) for m in REPORTED} for k, s in e.scores.items()},
        "per_window": {k: {m: np.asarray(s[m], float).tolist() for m in REPORTED} for k, s in e.scores.items()},
        "events_by_type": {k: {t: int((v["type"] == t).sum()) for t in P.EVENT_TYPES} for k, v in e.events.items()},
        "events_by_horizon": {k: by_horizon(v, H, N) for k, v in e.events.items()},
        "existence_failures_by_horizon": {k: by_horizon(v, H, N, ("vanish", "popup", "merge", "ego_vanish"))
                                          for k, v in e.events.items()},
        "generation_fps": e.fps,
    }


def road_agreement(root: str | Path, chunk: int = 256, progress: bool = True) -> pd.DataFrame:
    """The road reading (egomotion.py) of every recorded episode against its simulator states: one row per episode of
    egomotion.against_states (straight roads) or egomotion.shift_against_states (curved ones), read `chunk` frames
    at a time (never a whole episode of pixels in memory)."""
    ds, rows = Dataset(root), []
    pcfg = P.for_dataset(ds.manifest)
    if pcfg is None:
        raise ValueError(f"{root}: the road reading does not apply: {P.not_applicable(ds.manifest)}")
    road_cfg = pcfg.road
    pair = (pcfg.actions.index("FASTER"), pcfg.actions.index("SLOWER")) if road_cfg is None else None
    for r in tqdm(ds.episodes(), desc="road vs states", unit="episode", disable=not progress):
        with ds.open(r) as ep:
            n = int(r["frames"])
            if road_cfg is None:  # curved roads: the speed from the road's 2D shift (chunks overlap by one frame)
                speed = np.concatenate([E.shift_speed_mps(ep.read("frames", s, min(s + chunk + 1, n))[None],
                                                          pcfg.shift)[0] for s in range(0, max(n - 1, 1), chunk)])
                rows.append({"episode": r["episode"], "frames": n, **E.shift_against_states(
                    speed, ep.read("states"), ep.read("actions"), pair, pcfg.shift)})
                continue
            parts = [E.read_road(ep.read("frames", s, min(s + chunk, n)), road_cfg) for s in range(0, n, chunk)]
            road = E.Road.concat(parts)
            rows.append({"episode": r["episode"], "frames": n,
                         **E.against_states(road, ep.read("states"), ep.read("actions"), road_cfg)})
    return pd.DataFrame(rows).set_index("episode")
