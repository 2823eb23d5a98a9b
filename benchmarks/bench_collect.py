"""Collection benchmark: frames/s per agent and per worker count (prints a table; asserts nothing)."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

from piwm_lib.agents import AgentConfig
from piwm_lib.collect import CollectConfig, collect
from piwm_lib.dataset import Dataset
from piwm_lib.env import EnvConfig


def bench(agent: str, workers: int, episodes_per_worker: int, frames: int, seed: int) -> tuple[float, int, int]:
    """Collect into a temporary folder; return (frames/s, frames, crashed episodes)."""
    with tempfile.TemporaryDirectory() as d:
        cfg = CollectConfig(out=d, episodes=workers * episodes_per_worker, workers=workers, seed=seed,
                            env=EnvConfig(episode_frames=frames), agent=replace(AgentConfig(), kind=agent))
        t0 = time.perf_counter()
        collect(cfg, progress=False)
        dt = time.perf_counter() - t0
        idx = Dataset(d).index
        return idx["frames"] / dt, idx["frames"], sum(r["crashed"] for r in idx["episodes"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--agents", nargs="+", default=["random", "idm", "mcts"])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--episodes-per-worker", type=int, default=2)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--seed", type=int, default=100)
    a = p.parse_args()
    print(f"{'agent':>8} {'workers':>7} {'frames':>7} {'crashed':>7} {'frames/s':>9} {'per worker':>10}")
    for agent in a.agents:
        for w in a.workers:
            fps, n, crashed = bench(agent, w, a.episodes_per_worker, a.frames, a.seed)
            print(f"{agent:>8} {w:>7} {n:>7} {crashed:>7} {fps:>9.1f} {fps / w:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
