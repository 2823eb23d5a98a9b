"""The README's scenario pictures: frames 0, 10 and 20 (0, 2 and 4 s) of one episode per scenario, drawn by
HighwayEnv from the collector's own config (env.scenario) and driven by the IDM agent, seed 0.

    python docs/scenarios/make_pictures.py    # writes docs/scenarios/<scenario>.png
"""

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from piwm_lib import env as E
from piwm_lib.agents import AgentConfig, make_agent

OUT = Path(__file__).parent


def picture(name: str, seed: int = 0, times: tuple[int, ...] = (0, 10, 20)) -> np.ndarray:
    """Frames `times` of an IDM episode of scenario `name`, side by side with 4-px white gaps: (H, n*W + gaps, 3)."""
    cfg = E.scenario(name, episode_frames=max(times) + 1)
    env = E.make_env(cfg)
    frame, shots = E.reset(env, seed), []
    agent = make_agent(AgentConfig(kind="idm"), np.random.default_rng(seed))
    for t in range(max(times) + 1):
        if t in times:
            shots.append(frame)
        if t < max(times):
            E.step(env, agent.act(env.unwrapped))
            frame = E.render(env)
    env.close()
    gap = np.full((cfg.screen_height, 4, 3), 255, np.uint8)
    return np.concatenate([p for s in shots for p in (s, gap)][:-1], axis=1)


if __name__ == "__main__":
    for name in E.SCENARIOS:
        iio.imwrite(OUT / f"{name}.png", picture(name), optimize=True)
        print(OUT / f"{name}.png")
