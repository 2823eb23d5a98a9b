"""HighwayEnv bird's-eye-view environment: config, headless rendering, ground-truth vehicle states."""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Annotated

if "XDG_RUNTIME_DIR" not in os.environ:  # SDL (pygame) warns on every render without it
    os.environ["XDG_RUNTIME_DIR"] = os.path.join(tempfile.gettempdir(), f"piwm-xdg-{os.getuid()}")
    os.makedirs(os.environ["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)

import gymnasium as gym  # noqa: E402
import highway_env  # noqa: E402, F401  (registers highway-v0 with gymnasium)
import numpy as np  # noqa: E402

from .bev import ACTIONS, LONGITUDINAL, STATE_FIELDS  # noqa: E402, F401  (vehicle_states writes its columns in this order)
from .configs import to_dict  # noqa: E402
from .validate import NonNegFloat, NonNegInt, PosFloat, PosInt, check_fields, require  # noqa: E402

IDLE = 1  # the same index in every DiscreteMetaAction variant
CURVED = ("roundabout-v0", "intersection-v0")  # curved roads: the road readings of egomotion.py do not apply


@dataclass(frozen=True)
class EnvConfig:
    """HighwayEnv settings for BEV data collection (values not published by the paper are our choices)."""

    env_id: str = "highway-v0"  # gymnasium id: highway-v0 or another scenario of SCENARIOS (scenario())
    lanes: PosInt = 4  # lanes_count (HighwayEnv default)
    vehicles: NonNegInt = 30  # other vehicles on the road (HighwayEnv default 50; recycling keeps view dense); in
    # the other scenarios, which set their own traffic, the state slots beside the ego (unused slots: NaN, id -1)
    density: PosFloat = 1.0  # vehicles_density: initial spacing factor
    simulation_hz: PosInt = 15  # physics steps per second (HighwayEnv default)
    policy_hz: PosInt = 5  # recorded frames (and actions) per second; paper: not published
    episode_frames: Annotated[int, "[2, 100000]"] = 1000  # frames recorded per episode (<= 1,000 as in the paper)
    screen_width: PosInt = 600  # px, default top-down render
    screen_height: PosInt = 150  # px
    scaling: PosFloat = 5.5  # px per metre (HighwayEnv default)
    centering: tuple[float, float] = (0.3, 0.5)  # where the camera keeps the ego, as fractions of (width, height)
    lowres_height: PosInt = 30  # px, dynamics-model grid (paper: 30x120)
    lowres_width: PosInt = 120  # px
    recycle_traffic: bool = True  # move cars left far behind to far ahead, keeping traffic in view
    recycle_behind_m: NonNegFloat = 45.0  # m behind the ego (off-screen: the view starts ~33 m behind)
    spawn_ahead_m: tuple[float, float] = (90.0, 170.0)  # m ahead of the ego (view ends ~76 m ahead)
    spawn_gap_m: NonNegFloat = 20.0  # m of free lane required around a respawned car
    stop_on_crash: bool = True  # end the episode at the frame where the ego crashes (or the scenario ends it)
    ego_speeds: tuple[float, ...] = (15.0, 20.0, 25.0, 30.0)  # m/s targets FASTER/SLOWER step through
    lateral: bool = True  # LANE_LEFT / LANE_RIGHT among the actions (False: SLOWER, IDLE, FASTER, as intersection-v0)
    duration_s: NonNegFloat = 0.0  # the scenario ends the episode after this long (0: never before episode_frames)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.simulation_hz % self.policy_hz == 0,
                f"EnvConfig.simulation_hz ({self.simulation_hz}) must be a multiple of policy_hz ({self.policy_hz})")
        require(self.env_id in SCENARIOS, f"EnvConfig.env_id must be one of {sorted(SCENARIOS)}, got {self.env_id!r}")
        require(all(0 <= c <= 1 for c in self.centering) and len(self.centering) == 2,
                f"EnvConfig.centering must be (x, y) fractions of the frame in [0, 1], got {self.centering}")
        require(not self.recycle_traffic or self.env_id == "highway-v0",
                f"EnvConfig.recycle_traffic works on highway-v0 only (its lanes); set it False for {self.env_id}")
        lo, hi = self.spawn_ahead_m
        require(0 <= lo <= hi,
                f"EnvConfig.spawn_ahead_m must be (near, far) with 0 <= near <= far, got {self.spawn_ahead_m}")

    @property
    def n_slots(self) -> int:
        """Vehicle slots in the state arrays: the ego (slot 0) and every other vehicle."""
        return self.vehicles + 1

    @property
    def action_names(self) -> tuple[str, ...]:
        """The names of the discrete actions, by index (HighwayEnv's DiscreteMetaAction)."""
        return ACTIONS if self.lateral else LONGITUDINAL

    @property
    def curved(self) -> bool:
        """True on the scenarios whose roads curve under the camera (egomotion.py's road readings do not apply)."""
        return self.env_id in CURVED

    def highway_config(self) -> dict:
        """The HighwayEnv `configure` dict for this config."""
        action = {"type": "DiscreteMetaAction", "target_speeds": list(self.ego_speeds)}
        return {
            "lanes_count": self.lanes,
            "vehicles_count": self.vehicles,
            "vehicles_density": self.density,
            "simulation_frequency": self.simulation_hz,
            "policy_frequency": self.policy_hz,
            "duration": self.duration_s or self.episode_frames / self.policy_hz + 1,  # 0: never before our stop
            "screen_width": self.screen_width,
            "screen_height": self.screen_height,
            "scaling": self.scaling,
            "centering_position": list(self.centering),
            "action": action if self.lateral else {**action, "longitudinal": True, "lateral": False},
            "offscreen_rendering": True,
        }


_SQUARE = {"screen_width": 400, "screen_height": 400, "centering": (0.5, 0.5), "lowres_height": 80,
           "lowres_width": 80, "recycle_traffic": False}  # 73 m x 73 m around the ego, low-res 80 x 80 (5x down)
SCENARIOS: dict[str, dict] = {  # scenario -> EnvConfig fields (docs/scenarios/survey.md, measured there)
    "highway-v0": {},
    "merge-v0": {"lanes": 2, "vehicles": 8, "recycle_traffic": False},  # 4 cars + the ego; ends past x = 370 m
    "two-way-v0": {"lanes": 2, "vehicles": 8, "recycle_traffic": False},  # 5 cars, 2 oncoming; no lane changes
    "roundabout-v0": {**_SQUARE, "lanes": 2, "vehicles": 8, "ego_speeds": (0.0, 8.0, 16.0), "duration_s": 11.0},
    # 4 cars + the ego; the scenario's own speeds and duration (11 s: after it the ego leaves the map)
    "intersection-v0": {**_SQUARE, "lanes": 1, "vehicles": 40, "ego_speeds": (0.0, 4.5, 9.0), "lateral": False,
                        "duration_s": 13.0},  # cars spawn and leave every step; ends on arrival, a crash or 13 s
}


def scenario(name: str, **fields) -> EnvConfig:
    """The EnvConfig of a HighwayEnv scenario (SCENARIOS), with `fields` overriding it."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}: choose one of {sorted(SCENARIOS)}")
    return EnvConfig(env_id=name, **{**SCENARIOS[name], **fields})


LATE_FIELDS = ("centering", "lateral", "duration_s")  # added with the curved scenarios (issue 16)


def config_dict(cfg: EnvConfig) -> dict:
    """The config as saved with a dataset: fields added later are left out at their defaults, so a dataset collected
    before them keeps its manifest (and fingerprint) when collected again."""
    d, default = to_dict(cfg), to_dict(EnvConfig())
    return {k: v for k, v in d.items() if k not in LATE_FIELDS or v != default[k]}


def make_env(cfg: EnvConfig) -> gym.Env:
    """A headless HighwayEnv (render_mode rgb_array, no display needed; do not set SDL_VIDEODRIVER=dummy); other
    scenarios without gymnasium's time limit (two-way-v0 registers 15 steps): the episode length is ours.
    intersection-v0 changes class attributes of the traffic's IDM at reset: closing its env restores them."""
    extra = {} if cfg.env_id == "highway-v0" else {"max_episode_steps": -1}
    restore = cfg.env_id == "intersection-v0"
    saved = _RestoreTraffic.save() if restore else {}  # before gym.make: HighwayEnv's constructor already resets
    with warnings.catch_warnings():  # roundabout-v0 / intersection-v0 "out of date": v0 is the (and survey's)
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        env = gym.make(cfg.env_id, render_mode="rgb_array", config=cfg.highway_config(), **extra)
    return _RestoreTraffic(env, saved) if restore else env


class _RestoreTraffic(gym.Wrapper):
    """Puts back the IDM class attributes intersection-v0's reset sets globally (DISTANCE_WANTED, COMFORT_ACC_*),
    so that a highway env made later in the same process drives as it would alone."""

    NAMES = ("DISTANCE_WANTED", "COMFORT_ACC_MAX", "COMFORT_ACC_MIN")

    def __init__(self, env: gym.Env, saved: dict):
        super().__init__(env)
        self._saved = saved

    @classmethod
    def save(cls) -> dict:
        """The attributes as they are now."""
        from highway_env.vehicle.behavior import IDMVehicle  # intersection-v0's other_vehicles_type

        return {n: getattr(IDMVehicle, n) for n in cls.NAMES}

    def close(self) -> None:
        """Close the env and restore the attributes."""
        try:
            super().close()
        finally:
            from highway_env.vehicle.behavior import IDMVehicle

            for n, v in self._saved.items():
                setattr(IDMVehicle, n, v)


def reset(env: gym.Env, seed: int) -> np.ndarray:
    """Reset with `seed`, number the vehicles (ego = id 0) and return the first frame (H, W, 3) uint8."""
    env.reset(seed=seed)
    u = env.unwrapped
    for i, v in enumerate(vehicle_slots(u)):
        v.piwm_id = i
    u.piwm_next_id = len(u.road.vehicles)
    return render(env)


def render(env: gym.Env) -> np.ndarray:
    """Render the current state; only the recorded frame is drawn, not the skipped physics steps."""
    frame = env.render()
    env.unwrapped.enable_auto_render = False
    if frame is None or frame.max() == 0:
        raise RuntimeError("HighwayEnv returned a blank frame: is SDL_VIDEODRIVER=dummy set? unset it")
    return np.ascontiguousarray(frame, dtype=np.uint8)  # (H, W, 3)


def vehicle_slots(u) -> list:
    """Vehicles in a fixed slot order: the ego first, then the others as HighwayEnv created them."""
    return [u.vehicle] + [v for v in u.road.vehicles if v is not u.vehicle]


def vehicle_states(u, slots: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth states (N, len(STATE_FIELDS)) float32 and ids (N,) int32, pixels from the viewer's transform;
    with `slots`, padded to that many rows (NaN states, id -1), ValueError when more vehicles are on the road."""
    surface = u.viewer.sim_surface
    ox, oy = surface.origin
    rows, ids = [], []
    for v in vehicle_slots(u):
        x, y = v.position
        lane = v.lane_index[2] if v.lane_index else -1
        target = getattr(v, "target_lane_index", None) or v.lane_index
        rows.append((x, y, v.velocity[0], v.velocity[1], v.heading, v.speed, lane,
                     target[2] if target else -1, (x - ox) * surface.scaling, (y - oy) * surface.scaling,
                     float(v.crashed)))
        ids.append(getattr(v, "piwm_id", -1))
    states, ids = np.asarray(rows, dtype=np.float32), np.asarray(ids, dtype=np.int32)
    if slots is None or len(ids) == slots:
        return states, ids
    if len(ids) > slots:
        raise ValueError(f"{len(ids)} vehicles on the road but {slots} state slots: raise EnvConfig.vehicles")
    pad = slots - len(ids)
    return (np.concatenate([states, np.full((pad, states.shape[1]), np.nan, np.float32)]),
            np.concatenate([ids, np.full(pad, -1, np.int32)]))


def step(env: gym.Env, action: int) -> bool:
    """Advance one recorded frame with `action`; True when the episode ended: a crash, or the scenario's own end
    (merge-v0 past the merge, intersection-v0 on arrival, EnvConfig.duration_s)."""
    _, _, terminated, truncated, _ = env.step(int(action))
    return bool(env.unwrapped.vehicle.crashed or terminated or truncated)


def recycle_traffic(u, cfg: EnvConfig) -> None:
    """Move cars left far behind the ego (or crashed there) to a free spot far ahead, as new vehicles."""
    ego = u.vehicle
    rng = u.np_random
    for v in u.road.vehicles:
        if v is ego or v.position[0] > ego.position[0] - cfg.recycle_behind_m:
            continue
        for _ in range(8):  # a few tries to find a free spot; otherwise leave the car where it is
            lane_id = int(rng.integers(cfg.lanes))
            lane_index = (ego.lane_index[0], ego.lane_index[1], lane_id)
            lane = u.road.network.get_lane(lane_index)
            s = ego.position[0] + float(rng.uniform(*cfg.spawn_ahead_m))
            if all(abs(o.position[0] - s) > cfg.spawn_gap_m or o.lane_index[2] != lane_id
                   for o in u.road.vehicles if o is not v):
                _respawn(u, v, lane, lane_index, s, float(rng.uniform(20.0, 25.0)))
                break


def _respawn(u, v, lane, lane_index, s: float, speed: float) -> None:
    """Place vehicle `v` on `lane` at longitudinal position `s` as a fresh car with a new id."""
    v.position = lane.position(s, 0.0)
    v.heading = lane.heading_at(s)
    v.speed = speed
    v.lane_index = v.target_lane_index = lane_index
    v.lane = lane
    if hasattr(v, "target_speed"):
        v.target_speed = speed
    v.crashed = False
    v.impact = None
    v.history.clear() if hasattr(v, "history") else None
    v.piwm_id = u.piwm_next_id
    u.piwm_next_id += 1


def on_curves(u) -> bool:
    """True when unwrapped env `u` is a scenario whose roads curve (CURVED): x is not forward there."""
    return u.spec is not None and u.spec.id in CURVED


def planning_copy(u, behind_m: float, ahead_m: float):
    """Copy of the unwrapped env keeping only vehicles within [-behind_m, +ahead_m] of the ego (cheap to step),
    plus the nearest car beyond each edge in every lane, so that lane-change decisions (MOBIL) near the ego
    still see the right followers and leaders. On curved roads (few cars, x is not forward) it keeps every car."""
    if on_curves(u):
        return copy.deepcopy(u)
    road = u.road
    everyone = road.vehicles
    x0 = u.vehicle.position[0]
    keep, edges = [], {}  # edges: (lane, ahead?) -> (distance, index in road.vehicles)
    for i, v in enumerate(everyone):
        dx = v.position[0] - x0
        if -behind_m <= dx <= ahead_m:
            keep.append(v)
        elif (v.lane_index[2], dx > 0) not in edges or abs(dx) < edges[(v.lane_index[2], dx > 0)][0]:
            edges[(v.lane_index[2], dx > 0)] = (abs(dx), i)
    road.vehicles = keep + [everyone[i] for i in sorted(i for _, i in edges.values())]
    try:
        return copy.deepcopy(u)
    finally:
        road.vehicles = everyone


def simulate(u, action: int, frames: int = 1) -> bool:
    """Step a planning copy `frames` recorded frames (action first, then IDLE), skipping observations; True on crash."""
    for k in range(frames):
        u.time += 1.0 / u.config["policy_frequency"]
        u._simulate(action if k == 0 else IDLE)  # HighwayEnv's physics loop, without observe/reward
        if u.vehicle.crashed:
            return True
    return False

