"""Recordings of any gymnasium environment with rgb_array frames and a Discrete action space, written as an imported
dataset (`python -m piwm_lib.importer gym ENV_ID`): deterministic (env.reset(seed=seed + episode)) and resumable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .collect import prepare_manifest
from .dataset import write_index
from .importer import ImportConfig, manifest, write_episode
from .storage import episode_name
from .validate import NonNegInt, PosInt, check_fields

Policy = Callable[[Any, np.random.Generator], int]  # (observation, the episode's generator) -> action index


@dataclass(frozen=True)
class GymConfig:
    """What to record from a gymnasium environment; saved in dataset.json's source block."""

    env_id: str = "CartPole-v1"  # any registered id whose env renders rgb_array and has a Discrete action space
    episodes: PosInt = 2  # episodes to record
    frames: PosInt = 100  # frames per episode at most (an episode that terminates earlier is shorter)
    policy: str = "random"  # "random": uniform, from default_rng([seed + episode, 1]); "fixed": always `action`
    action: NonNegInt = 0  # the action index of policy "fixed"

    def __post_init__(self) -> None:
        check_fields(self, policy=("random", "fixed"))


def make_env(env_id: str):
    """gymnasium.make(env_id, render_mode="rgb_array"); ValueError unless it renders rgb_array and acts Discrete."""
    import gymnasium as gym

    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.Error as e:
        raise ValueError(f"cannot make gymnasium env {env_id!r}: {e}") from None
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        raise ValueError(f"gymnasium env {env_id!r} cannot render rgb_array (render modes "
                         f"{env.metadata.get('render_modes')}); choose an env that draws its frames")
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise ValueError(f"gymnasium env {env_id!r} has action space {env.action_space}; the world model needs a "
                         "Discrete one (wrap the env to discretise its actions)")
    return env


def gym_names(env) -> list[str]:
    """Action names of a Discrete env: its get_action_meanings() (Atari) or the action values as text."""
    meanings = getattr(env.unwrapped, "get_action_meanings", None)
    space = env.action_space
    return list(meanings()) if meanings else [str(int(space.start) + i) for i in range(int(space.n))]


def gym_policy(gc: GymConfig, n: int) -> Policy:
    """The policy named by gc: uniform random over n actions, or the fixed action (checked against n)."""
    if gc.policy == "fixed":
        if not 0 <= gc.action < n:
            raise ValueError(f"GymConfig.action {gc.action} outside 0..{n - 1} of {gc.env_id!r}")
        return lambda obs, rng: gc.action
    return lambda obs, rng: int(rng.integers(n))


def render(env, env_id: str) -> np.ndarray:
    """env.render() as (H, W, 3) uint8; ValueError naming the env otherwise."""
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
        got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"gymnasium env {env_id!r} rendered {got}, not an (H, W, 3) uint8 rgb_array frame")
    return frame


def gym_frames(env, gc: GymConfig, seed: int, policy: Policy, taken: list[int]) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of one episode (reset(seed=seed), then policy actions until it ends or gc.frames), appending each
    action to `taken`."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng([seed, 1])
    yield f"{gc.env_id} seed {seed} frame 0", render(env, gc.env_id)
    n, start = int(env.action_space.n), int(env.action_space.start)
    for t in range(1, gc.frames):
        a = int(policy(obs, rng))
        if not 0 <= a < n:
            raise ValueError(f"the policy returned action {a} for {gc.env_id!r}, outside 0..{n - 1}")
        taken.append(a)
        obs, _, terminated, truncated, _ = env.step(start + a)
        yield f"{gc.env_id} seed {seed} frame {t}", render(env, gc.env_id)
        if terminated or truncated:
            return


def record_episode(path: Path, index: int, gc: GymConfig, cfg: ImportConfig, policy: Policy) -> int:
    """Record episode `index` (env.reset(seed=cfg.seed + index)) into `path`; returns its frame count."""
    env = make_env(gc.env_id)
    taken: list[int] = []
    try:
        attrs = {"episode": index, "seed": cfg.seed, "env_seed": cfg.seed + index, "action_names": gym_names(env),
                 "source": gym_source(gc, policy)}
        return write_episode(path, gym_frames(env, gc, cfg.seed + index, policy, taken), lambda t: taken[t - 1], cfg,
                             attrs)
    finally:
        env.close()


def gym_source(gc: GymConfig, policy: Policy | None) -> dict:
    """dataset.json's source block of a gymnasium recording (a user policy named by its qualified name)."""
    import gymnasium as gym

    src = {"kind": "gymnasium", "gymnasium": gym.__version__, "env_id": gc.env_id, "frames": gc.frames,
           "policy": gc.policy}  # not the episode count: a rerun with more episodes adds to the dataset
    if gc.policy == "fixed":
        src["action"] = gc.action
    if policy is not None:
        src["policy"] = f"callable {getattr(policy, '__module__', '?')}.{getattr(policy, '__qualname__', '?')}"
    return src


def record_gym(gc: GymConfig, cfg: ImportConfig, policy: Policy | None = None, progress: bool = True) -> Path:
    """Record gc.episodes episodes of gc.env_id into cfg.out (resumable: finished episodes are kept), with the
    policy of gc or `policy(observation, generator) -> action index`; writes dataset.json and index.json."""
    out = Path(cfg.out)
    env = make_env(gc.env_id)
    names = gym_names(env)
    env.close()
    prepare_manifest(out, manifest(cfg, gym_source(gc, policy), names))
    act = policy or gym_policy(gc, len(names))
    for k in tqdm(range(gc.episodes), desc=f"record {gc.env_id}", unit="episode", disable=not progress):
        if not (out / episode_name(k)).exists():
            record_episode(out / episode_name(k), k, gc, cfg, act)
    write_index(out)
    return out
