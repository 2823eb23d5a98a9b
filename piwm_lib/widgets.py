"""Interactive widgets (ipywidgets): the Soft Mask's sliders (notebook 02) and play with the world model in JupyterLab
(notebook 04: action buttons, the live frame, frame counter and measured FPS, cold/warm start toggle and reset; each
click runs one world-model step in the kernel)."""

from __future__ import annotations

import io
import time

import ipywidgets as W
import numpy as np
from PIL import Image

from .env import ACTIONS
from .worldmodel import WorldModelEnv, with_warm_start

# Soft Mask knobs of notebook 02: (min, max, step). The formula's sigmas stay > 0 at every reachable setting (MaskConfig
# refuses 0): s_ego and r_glob are fractions, sigma_min is in full-res px; the weights and gain may be 0.
MASK_KNOBS = {"s_ego": (0.05, 2.0, 0.05), "sigma_min": (0.5, 20.0, 0.5), "r_glob": (0.05, 2.0, 0.05),
              "w_ego": (0.0, 2.0, 0.05), "w_surr": (0.0, 2.0, 0.05), "gain": (0.0, 2.0, 0.05)}


def mask_sliders(values: dict[str, float]) -> dict[str, W.FloatSlider]:
    """A labelled slider per Soft Mask knob (MASK_KNOBS), 300 px wide, starting at `values`."""
    return {k: W.FloatSlider(value=values[k], min=lo, max=hi, step=step, description=k, continuous_update=False,
                             readout_format=".2f", style={"description_width": "70px"},
                             layout=W.Layout(width="300px"))
            for k, (lo, hi, step) in MASK_KNOBS.items()}


def png(frame: np.ndarray, scale: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (nearest-neighbour enlarged by `scale`)."""
    img = Image.fromarray(frame)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class PlayPanel:
    """Buttons for the 5 meta-actions drive rollout 0 of a WorldModelEnv from a real starting window."""

    def __init__(self, env: WorldModelEnv, start: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.env, self.start = env, start  # start: lowres (1, K, h, w, 3), full (1, K, H, W, 3), actions (1, K-1)
        self.image = W.Image(format="png", layout=W.Layout(width="600px"))
        self.status = W.Label()
        self.warm = W.ToggleButton(value=env.cfg.warm_start, description="warm start",
                                   tooltip="PIWM Warm Start: start each frame from the previous one plus noise")
        self.warm.observe(self._toggle, names="value")
        buttons = [W.Button(description=name.replace("_", " ").lower(), layout=W.Layout(width="110px"))
                   for name in ACTIONS]
        for a, b in enumerate(buttons):
            b.on_click(lambda _b, a=a: self.act(a))
        reset = W.Button(description="reset", button_style="warning")
        reset.on_click(lambda _b: self.reset())
        self.times: list[float] = []
        self.widget = W.VBox([self.image, W.HBox(buttons), W.HBox([self.warm, reset, self.status])])
        self.reset()

    def _toggle(self, change: dict) -> None:
        self.env.cfg = with_warm_start(self.env.cfg, bool(change["new"]))

    def reset(self) -> None:
        """Back to the real starting frames; Warm Start forgets its previous frame."""
        _, full = self.env.reset(*self.start)
        self.times = []
        self.show(full[0], "reset to real frames")

    def act(self, action: int) -> np.ndarray:
        """One world-model step with `action` (0..4); returns the new full-res frame."""
        t0 = time.perf_counter()
        _, full = self.env.step([action])
        self.times.append(time.perf_counter() - t0)
        fps = 1.0 / np.mean(self.times[-10:])
        self.show(full[0], f"{ACTIONS[action]}: {1e3 * self.times[-1]:.0f} ms, {fps:.1f} frames/s (last 10)")
        return full[0]

    def show(self, frame: np.ndarray, what: str) -> None:
        self.image.value = png(frame)
        self.status.value = f"frame {self.env.t} · {what} · {'warm' if self.env.cfg.warm_start else 'cold'} start"
