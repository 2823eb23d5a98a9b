"""Episode files: one HDF5 file per episode, Zstandard-compressed chunks with checksums, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import hdf5plugin  # registers the Zstandard filter with HDF5
import numpy as np

FORMAT = "piwm-episode"
VERSION = 1
LOWRES_CHUNK = 8  # frames per low-res chunk: a 9-frame training window touches at most 2 chunks
STATE_CHUNK = 64  # frames per state chunk


class CorruptEpisodeError(RuntimeError):
    """An episode file that cannot be read; the message names the file and what to do."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"episode file {self.path} is unreadable ({reason}); delete it and rerun the collection "
                         f"with the same settings to re-collect it (finished episodes are kept)")


def episode_name(index: int) -> str:
    """File name of episode `index`."""
    return f"episode_{index:06d}.h5"


def _codec() -> dict:
    """Chunk filters: Zstandard level 3 plus a Fletcher-32 checksum per chunk (corruption is detected)."""
    return dict(**hdf5plugin.Zstd(clevel=3), fletcher32=True, track_times=False)


class EpisodeWriter:
    """Streams one episode frame by frame into `<name>.tmp`; `close()` renames it into place (atomic)."""

    def __init__(self, path: str | Path, *, frame_shape: tuple[int, int, int], lowres_shape: tuple[int, int, int],
                 n_slots: int, state_fields: tuple[str, ...], attrs: dict):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.f = h5py.File(self.tmp, "w", libver="v110", track_order=False)
        self.n = 0
        c = _codec()
        self.frames = self.f.create_dataset("frames", (0, *frame_shape), np.uint8, maxshape=(None, *frame_shape),
                                            chunks=(1, *frame_shape), **c)
        self.lowres = self.f.create_dataset("lowres", (0, *lowres_shape), np.uint8, maxshape=(None, *lowres_shape),
                                            chunks=(LOWRES_CHUNK, *lowres_shape), **c)
        nf = len(state_fields)
        self.states = self.f.create_dataset("states", (0, n_slots, nf), np.float32, maxshape=(None, n_slots, nf),
                                            chunks=(STATE_CHUNK, n_slots, nf), **c)
        self.ids = self.f.create_dataset("vehicle_ids", (0, n_slots), np.int32, maxshape=(None, n_slots),
                                         chunks=(STATE_CHUNK, n_slots), **c)
        self.actions = self.f.create_dataset("actions", (0,), np.int8, maxshape=(None,), chunks=(STATE_CHUNK,), **c)
        self.f.attrs["format"] = FORMAT
        self.f.attrs["version"] = VERSION
        self.f.attrs["state_fields"] = json.dumps(list(state_fields))
        for k, v in attrs.items():
            self.f.attrs[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v, sort_keys=True)
        self.f.attrs["complete"] = False

    def append(self, frame: np.ndarray, lowres: np.ndarray, states: np.ndarray, ids: np.ndarray,
               action: int | None) -> None:
        """Add frame t: (H, W, 3) uint8, (h, w, 3) uint8, states (N, F), ids (N,), and the action taken before it."""
        t = self.n
        for ds in (self.frames, self.lowres, self.states, self.ids):
            ds.resize(t + 1, axis=0)
        self.frames[t], self.lowres[t], self.states[t], self.ids[t] = frame, lowres, states, ids
        if t > 0:
            self.actions.resize(t, axis=0)
            self.actions[t - 1] = action
        self.n += 1

    def close(self, **final_attrs) -> Path:
        """Write final attributes, mark complete, flush and rename the temp file into place."""
        for k, v in final_attrs.items():
            self.f.attrs[k] = v
        self.f.attrs["n_frames"] = self.n
        self.f.attrs["complete"] = True
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temp file (used on errors and interruptions)."""
        try:
            self.f.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class Episode:
    """Read-only view of one episode file; slices read only the chunks they touch."""

    KEYS = ("frames", "lowres", "states", "vehicle_ids", "actions")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.f = h5py.File(self.path, "r")
            attrs = dict(self.f.attrs)
        except (OSError, KeyError) as e:
            raise CorruptEpisodeError(self.path, f"not a readable HDF5 file: {e}") from None
        if attrs.get("format") != FORMAT:
            raise CorruptEpisodeError(self.path, f"format is {attrs.get('format')!r}, expected {FORMAT!r}")
        if not attrs.get("complete", False):
            raise CorruptEpisodeError(self.path, "the episode was not finished")
        missing = [k for k in self.KEYS if k not in self.f]
        if missing:
            raise CorruptEpisodeError(self.path, f"missing datasets {missing}")
        self.attrs = attrs
        self.n_frames = int(attrs["n_frames"])
        self.state_fields = tuple(json.loads(attrs["state_fields"]))

    def meta(self, key: str):
        """A JSON attribute (e.g. 'env_config') decoded."""
        return json.loads(self.attrs[key])

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of dataset `key`; a damaged chunk raises CorruptEpisodeError."""
        try:
            return self.f[key][start:stop]
        except (OSError, ValueError, KeyError) as e:
            raise CorruptEpisodeError(self.path, f"cannot decode {key}[{start}:{stop}]: {e}") from None

    def window(self, start: int, length: int, key: str = "lowres") -> tuple[np.ndarray, np.ndarray]:
        """`length` frames from `start` and the `length - 1` actions between them."""
        if not 0 <= start <= self.n_frames - length:
            raise IndexError(f"window [{start}, {start + length}) outside {self.path.name} ({self.n_frames} frames)")
        return self.read(key, start, start + length), self.read("actions", start, start + length - 1)

    def close(self) -> None:
        """Close the underlying file."""
        self.f.close()

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
