"""Pictures for the notebooks: frame grids, strips and clips (small, for stored outputs)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np

DPI = 70  # stored-output figures stay small


def show_frames(frames: np.ndarray, titles: list[str] | None = None, cols: int = 1, width: float = 9.0,
                suptitle: str | None = None) -> plt.Figure:
    """Grid of (N, H, W, 3) uint8 frames, `cols` per row, with optional titles."""
    n = len(frames)
    rows = (n + cols - 1) // cols
    h, w = frames.shape[1:3]
    fig, axes = plt.subplots(rows, cols, figsize=(width, width / cols * h / w * rows * 1.25 + 0.3), dpi=DPI,
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(frames[k], interpolation="nearest")
            if titles:
                ax.set_title(titles[k], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def strip(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """Stack (N, H, W, 3) frames vertically with white gaps into one (N*H + gaps, W, 3) image."""
    white = np.full((gap, *frames.shape[2:]), 255, np.uint8)
    parts = []
    for f in frames:
        parts += [f, white]
    return np.concatenate(parts[:-1], axis=0)


def save_clip(frames: np.ndarray, path: str | Path, fps: float = 5.0) -> Path:
    """Write (T, H, W, 3) uint8 frames as an animated GIF (looping) and return its path."""
    path = Path(path)
    iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


class LiveLoss:
    """A training callback that redraws the loss curve in place in Jupyter (one stored image when run headless)."""

    def __init__(self, title: str = "training loss", every: int = 1):
        from IPython.display import display

        self.rows: list[dict] = []
        self.every, self.title = every, title
        self.fig, self.ax = plt.subplots(figsize=(7, 2.6), dpi=DPI)
        plt.close(self.fig)  # drawn only through the display handle, not again at the end of the cell
        self.handle = display(self.fig, display_id=True)

    def __call__(self, row: dict) -> None:
        """Record one log row (train.LOG_FIELDS) and redraw every `every` rows."""
        self.rows.append(row)
        if len(self.rows) % self.every == 0:
            self.draw()

    def draw(self) -> None:
        """Redraw the curve (log-scale loss against optimizer step)."""
        steps = [r["step"] for r in self.rows]
        self.ax.clear()
        self.ax.plot(steps, [r["loss"] for r in self.rows], lw=1.2)
        self.ax.set(xlabel="optimizer step", ylabel="loss", yscale="log")
        self.ax.set_title(self.title, fontsize=10)
        self.ax.grid(alpha=0.3)
        self.fig.tight_layout()
        if self.handle is not None:
            self.handle.update(self.fig)
