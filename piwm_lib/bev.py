"""What a HighwayEnv bird's-eye-view frame contains: palette, camera geometry, ground-truth state layout, actions."""

from __future__ import annotations

import numpy as np

EGO_RGB = (50, 200, 0)  # ego car body
EGO_LIGHT_RGB = (73, 255, 0)  # ego headlights
OTHER_RGB = (100, 200, 255)  # other cars
OTHER_LIGHT_RGB = (147, 255, 255)  # their headlights
CRASHED_RGB = (255, 100, 100)  # crashed cars are drawn red
ROAD_RGB = (100, 100, 100)
LANE_MARK_RGB = (255, 255, 255)
OUTLINE_RGB = (60, 60, 60)  # 1-px car outline
VEHICLE_RGB = np.array([EGO_RGB, EGO_LIGHT_RGB, OTHER_RGB, OTHER_LIGHT_RGB, CRASHED_RGB], np.uint8)  # (5, 3)
EGO_PIXEL = (180, 75)  # (x, y) where the camera keeps the ego: centering_position (0.3, 0.5) of 600x150
ACTIONS: tuple[str, ...] = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")  # DiscreteMetaAction, in order
LONGITUDINAL: tuple[str, ...] = ("SLOWER", "IDLE", "FASTER")  # DiscreteMetaAction(lateral=False): intersection-v0
STATE_FIELDS: tuple[str, ...] = (
    "x", "y", "vx", "vy", "heading", "speed", "lane", "target_lane", "px", "py", "crashed",
)  # per vehicle, per frame; x, y, vx, vy in m and m/s, heading in rad, px, py in frame pixels


def in_frame(px: np.ndarray, py: np.ndarray, width: int, height: int, margin_px: float = 14.0) -> np.ndarray:
    """Whether a car centred at pixel (px, py) is wholly inside a width x height frame (margin_px from the x edges)."""
    return (px >= margin_px) & (px <= width - margin_px) & (py >= 6) & (py <= height - 6)


def in_view(states: np.ndarray, width: int, height: int, margin_px: float = 14.0) -> np.ndarray:
    """Mask (..., N) of vehicles wholly inside a width x height frame, from their states (..., N, F)."""
    return in_frame(states[..., STATE_FIELDS.index("px")], states[..., STATE_FIELDS.index("py")], width, height,
                    margin_px)
