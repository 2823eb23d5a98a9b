"""Interactive widgets (ipywidgets): the Soft Mask's sliders (notebook 02) and a driving game inside the world model
(notebook 04: action buttons and keys, the live frame, frame counter and measured frames/s, Warm Start toggle, reset,
and autoplay; each step runs in a worker thread so the kernel keeps answering)."""

from __future__ import annotations

import io
import threading
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


KEYS = {"ArrowLeft": 0, "a": 0, "ArrowUp": 3, "w": 3, "ArrowRight": 2, "d": 2, "ArrowDown": 4, "s": 4, " ": 1}
# keyboard -> meta-action (env.ACTIONS: 0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT, 3 FASTER, 4 SLOWER); arrows or WASD, space


def keys_for(actions: tuple[str, ...]) -> dict[str, int]:
    """The keyboard map of an action set: KEYS for HighwayEnv's meta-actions, else digit keys 1..9 for actions 0..8."""
    return dict(KEYS) if tuple(actions) == ACTIONS else {str(a + 1): a for a in range(min(len(actions), 9))}


class PlayPanel:
    """A small driving game inside the world model: buttons and keys (arrows / WASD, space = idle) for the 5
    meta-actions, or a button and a digit key per action of another action set, drive rollout 0 of a WorldModelEnv
    from a real starting window; autoplay lets a policy drive (the logged actions of a real episode by default) until
    stopped. One step runs at a time, off the kernel's thread: presses during a step are dropped (and counted), not
    queued."""

    def __init__(self, env: WorldModelEnv, start: tuple[np.ndarray, np.ndarray, np.ndarray],
                 drive: np.ndarray | None = None, actions: tuple[str, ...] = ACTIONS):
        self.actions, self.key_map = tuple(actions), keys_for(actions)  # the dataset's action names, their keys
        self.env, self.start = env, start  # start: lowres (1, K, h, w, 3), full (1, K, H, W, 3), actions (1, K-1)
        self.drive = np.asarray(drive if drive is not None else [1], dtype=np.int64)  # autoplay's actions, cycled
        self.lock, self.stop_event = threading.Lock(), threading.Event()
        self.worker: threading.Thread | None = None
        self.times: list[float] = []
        self.dropped = 0
        self.image = W.Image(format="png", layout=W.Layout(width="600px"))
        self.status, self.fps = W.Label(), W.Label(layout=W.Layout(width="130px"))
        self.warm = W.ToggleButton(value=env.cfg.warm_start, tooltip="PIWM Warm Start: start each frame from the "
                                   "previous one plus noise (off: from pure noise)")
        self.warm.observe(self._toggle, names="value")
        self.buttons = [W.Button(description=name.replace("_", " ").lower(), layout=W.Layout(width="110px"),
                                 tooltip=f"{name} ({', '.join(repr(k) for k, v in self.key_map.items() if v == a)})")
                        for a, name in enumerate(self.actions)]
        for a, b in enumerate(self.buttons):
            b.on_click(lambda _b, a=a: self.press(a))
        self.reset_button = W.Button(description="reset", button_style="warning", tooltip="back to the real frames")
        self.reset_button.on_click(lambda _b: self.press(None))
        self.auto = W.ToggleButton(value=False, description="autoplay", icon="play",
                                   tooltip="let the logged actions of a real episode drive until stopped")
        self.auto.observe(self._autoplay, names="value")
        self.widget = W.VBox([self.image, W.HBox(self.buttons),
                              W.HBox([self.warm, self.auto, self.reset_button, self.fps, self.status])])
        self.keys = self._keyboard()
        self._label_warm()
        self.reset()

    # -------------------------------------------------------------------------------------------------- controls
    def _keyboard(self):
        """Key presses on the frame (click it first) drive the car; None without the ipyevents package."""
        try:
            from ipyevents import Event
        except ImportError:
            return None
        ev = Event(source=self.image, watched_events=["keydown"], prevent_default_action=True)
        ev.on_dom_event(self.on_key)
        return ev

    def on_key(self, event: dict) -> None:
        """A keydown event (ipyevents) -> one press of its action (key_map); other keys are ignored."""
        if event.get("type") == "keydown" and event.get("key") in self.key_map:
            self.press(self.key_map[event["key"]])

    def _label_warm(self) -> None:
        on = self.env.cfg.warm_start
        self.warm.description, self.warm.icon = ("Warm Start: on", "check") if on else ("Warm Start: off", "times")

    def _toggle(self, change: dict) -> None:
        with self.lock:  # not in the middle of a step
            self.env.cfg = with_warm_start(self.env.cfg, bool(change["new"]))
        self._label_warm()
        self.status.value = self._line("Warm Start switched " + ("on" if change["new"] else "off"))

    def _autoplay(self, change: dict) -> None:
        if change["new"]:
            self.auto.description, self.auto.icon = "stop", "stop"
            self.stop_event.clear()
            self.worker = threading.Thread(target=self._drive, daemon=True)
            self.worker.start()
        else:
            self.stop_event.set()
            worker = getattr(self, "worker", None)
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout=60)  # the step in flight lands before the button says stopped
            self.auto.description, self.auto.icon = "autoplay", "play"

    def _drive(self) -> None:
        """Autoplay's loop (its own thread): step with the drive actions until stopped, as fast as the model goes."""
        try:
            while not self.stop_event.is_set():
                with self.lock:
                    self._step(int(self.drive[self.env.t % len(self.drive)]))
        except Exception as e:  # shown, not lost in a thread
            self.status.value = self._line(f"autoplay stopped: {type(e).__name__}: {e}")
            self.auto.value = False

    def _busy(self, on: bool) -> None:
        for b in (*self.buttons, self.reset_button):
            b.disabled = on
        if on:
            self.status.value = self._line("working ...")

    # ------------------------------------------------------------------------------------------------- stepping
    def press(self, action: int | None) -> bool:
        """A button or key press: one step with `action` (None: reset) in a worker thread, or dropped (counted) when a
        step or autoplay is running. Returns whether it was taken."""
        if self.auto.value or not self.lock.acquire(blocking=False):
            self.dropped += 1
            self.status.value = self._line(f"busy: press ignored ({self.dropped} so far)")
            return False

        def run() -> None:
            try:
                self._busy(True)
                self._reset() if action is None else self._step(action)
            finally:
                self._busy(False)
                self.lock.release()
        self.worker = threading.Thread(target=run, daemon=True)
        self.worker.start()
        return True

    def act(self, action: int) -> np.ndarray:
        """One world-model step with `action` (0..4), in the caller's thread; returns the new full-res frame."""
        with self.lock:
            return self._step(action)

    def reset(self) -> None:
        """Back to the real starting frames; Warm Start forgets its previous frame."""
        with self.lock:
            self._reset()

    def _reset(self) -> None:
        _, full = self.env.reset(*self.start)
        self.times = []
        self.fps.value = ""
        self.show(full[0], "reset to real frames")

    def _step(self, action: int) -> np.ndarray:
        t0 = time.perf_counter()
        _, full = self.env.step([action])
        self.times.append(time.perf_counter() - t0)
        self.fps.value = f"{1.0 / np.mean(self.times[-10:]):.2f} frames/s"
        self.show(full[0], f"{self.actions[action]}: {1e3 * self.times[-1]:.0f} ms")
        return full[0]

    def _line(self, what: str) -> str:
        return f"frame {self.env.t} · {what} · {'warm' if self.env.cfg.warm_start else 'cold'} start"

    def show(self, frame: np.ndarray, what: str) -> None:
        self.image.value = png(frame)
        self.status.value = self._line(what)
