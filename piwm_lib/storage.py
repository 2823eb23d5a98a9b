"""Episode files: one HDF5 file per episode, Zstandard-compressed chunks with checksums, atomic writes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from pathlib import Path

import h5py
import hdf5plugin  # registers the Zstandard filter with HDF5
import numpy as np

from .bev import ACTIONS

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a rerun then deletes temp files without asking
    fcntl = None

FORMAT = "piwm-episode"
VERSION = 1
LOWRES_CHUNK = 8  # frames per low-res chunk: a 9-frame training window touches at most 2 chunks
STATE_CHUNK = 64  # frames per state chunk
OPTIONAL_KEYS = ("states", "vehicle_ids")  # absent in episodes without vehicle states (n_slots = 0; HDF5 chunks
# cannot have a 0 dimension): Episode.read then gives arrays with 0 vehicle slots
META_DIGEST = "meta_sha256"  # attribute: sha256 of all the others, a second guard over the metadata


class CorruptEpisodeError(RuntimeError):
    """An episode file that cannot be read; the message names the file and what to do."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"episode file {self.path} is unreadable ({reason}); delete it and rerun the collection "
                         f"with the same settings to re-collect it (finished episodes are kept)")


class DiskFullError(OSError):
    """The disk filled up while an episode was written; `filename` is the file, `strerror` says what to do."""


def disk_full(e: BaseException) -> bool:
    """Whether `e` is a full disk: OSError ENOSPC, or HDF5's error text carrying errno 28."""
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or f"errno = {errno.ENOSPC}," in str(e)


def disk_full_message(path: str | Path) -> str:
    """What to tell the user when the disk fills while writing `path`."""
    return f"disk full while writing {path}: free space or choose another --out"


def disk_full_text(e: BaseException, folder: str | Path) -> str | None:
    """The message for `e` when it is a full disk (a DiskFullError names its own folder, others `folder`), else None."""
    if isinstance(e, DiskFullError):
        return e.strerror
    return disk_full_message(folder) if disk_full(e) else None


class EpisodeBusyError(RuntimeError):
    """A live process still writes (holds the lock of) an episode's temp file."""

    def __init__(self, tmp: str | Path):
        self.path = Path(tmp)
        super().__init__(f"{self.path} is being written by another live process (is an earlier collection into "
                         f"{self.path.parent} still running?); wait for it to finish or stop it, then rerun")


def _lock(fd: int, wait_s: float = 0.0) -> bool:
    """Take an exclusive flock on `fd`, retrying for `wait_s` seconds; True also where locks are unsupported."""
    deadline = time.monotonic() + wait_s
    while fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            return True  # a file system without flock (some NFS setups)
    return True


def remove_stale_temp(tmp: str | Path, wait_s: float = 5.0) -> None:
    """Delete the temp file of an episode whose writer died; a live writer gets `wait_s` seconds to finish or die,
    then EpisodeBusyError names the file."""
    tmp = Path(tmp)
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if not _lock(fd, wait_s):
            raise EpisodeBusyError(tmp)
        if _file_id(fd) == _file_id(tmp):  # not renamed into place, nor replaced by a newer writer's file meanwhile
            tmp.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _file_id(f: int | Path) -> tuple[int, int] | None:
    """(device, inode) of an open descriptor or a path; None when it is gone."""
    try:
        st = os.stat(f)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def meta_digest(attrs: dict) -> str:
    """sha256 of the attributes (as plain_attrs gives them) but META_DIGEST."""
    return hashlib.sha256(json.dumps({k: v for k, v in attrs.items() if k != META_DIGEST}, sort_keys=True).encode()
                          ).hexdigest()


def plain_attrs(attrs: h5py.AttributeManager) -> dict:
    """Attributes as Python values: numpy scalars as int/float/bool, fixed-length strings decoded."""
    return {k: v.decode() if isinstance(v, bytes) else v.tolist() if isinstance(v, (np.generic, np.ndarray)) else v
            for k, v in attrs.items()}


def _set_attr(attrs: h5py.AttributeManager, key: str, value: int | float | str | bool) -> None:
    """Store one attribute; a string as fixed-length UTF-8, inside the checksummed metadata (a variable-length one
    lives in a global heap that HDF5 neither checksums nor parses safely: one flipped byte there can hang a reader)."""
    if isinstance(value, str):
        data = value.encode()
        value = np.array(data, dtype=h5py.string_dtype("utf-8", max(len(data), 1)))
    attrs[key] = value


def episode_name(index: int) -> str:
    """File name of episode `index`."""
    return f"episode_{index:06d}.h5"


def _codec() -> dict:
    """Chunk filters: Zstandard level 3 plus a Fletcher-32 checksum per chunk (corruption is detected)."""
    return dict(**hdf5plugin.Zstd(clevel=3), fletcher32=True, track_times=False)


class EpisodeWriter:
    """Streams one episode frame by frame into `<name>.tmp`, holding an flock on it (a rerun leaves a live writer's
    file alone); `close()` renames it into place (atomic). A full disk raises DiskFullError and drops the file.
    With n_slots = 0 the episode has no vehicle states: the states and vehicle_ids datasets are not written."""

    def __init__(self, path: str | Path, *, frame_shape: tuple[int, int, int], lowres_shape: tuple[int, int, int],
                 n_slots: int, state_fields: tuple[str, ...], attrs: dict):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.n = 0
        self._lock_fd = self._take_lock()
        try:
            self.f = h5py.File(self.tmp, "w", libver="v110", track_order=False, locking=False)  # locked above
        except Exception as e:
            self.tmp.unlink(missing_ok=True)
            self._unlock()
            raise (self._disk_full() if disk_full(e) else e) from None
        self._fd = self.f.id.get_vfd_handle()  # asked now: after a failed write HDF5 may crash on it
        try:
            self._create(frame_shape, lowres_shape, n_slots, state_fields, attrs)
        except Exception as e:
            self._fail(e)

    def _take_lock(self) -> int:
        """Open the temp file and lock it; EpisodeBusyError when another live writer holds it."""
        try:
            fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise (self._disk_full() if disk_full(e) else e) from None
        if not _lock(fd):
            os.close(fd)
            raise EpisodeBusyError(self.tmp)
        return fd

    def _create(self, frame_shape: tuple[int, int, int], lowres_shape: tuple[int, int, int], n_slots: int,
                state_fields: tuple[str, ...], attrs: dict) -> None:
        """The datasets (five, or three without vehicle states) and the attributes known before the first frame."""
        c = _codec()
        self.frames = self.f.create_dataset("frames", (0, *frame_shape), np.uint8, maxshape=(None, *frame_shape),
                                            chunks=(1, *frame_shape), **c)
        self.lowres = self.f.create_dataset("lowres", (0, *lowres_shape), np.uint8, maxshape=(None, *lowres_shape),
                                            chunks=(LOWRES_CHUNK, *lowres_shape), **c)
        nf = len(state_fields)
        self.states = self.ids = None
        if n_slots and nf:
            self.states = self.f.create_dataset("states", (0, n_slots, nf), np.float32, maxshape=(None, n_slots, nf),
                                                chunks=(STATE_CHUNK, n_slots, nf), **c)
            self.ids = self.f.create_dataset("vehicle_ids", (0, n_slots), np.int32, maxshape=(None, n_slots),
                                             chunks=(STATE_CHUNK, n_slots), **c)
        self.actions = self.f.create_dataset("actions", (0,), np.int8, maxshape=(None,), chunks=(STATE_CHUNK,), **c)
        _set_attr(self.f.attrs, "format", FORMAT)
        _set_attr(self.f.attrs, "version", VERSION)
        _set_attr(self.f.attrs, "state_fields", json.dumps(list(state_fields)))
        for k, v in attrs.items():
            _set_attr(self.f.attrs, k, v if isinstance(v, (int, float, str, bool)) else json.dumps(v, sort_keys=True))
        _set_attr(self.f.attrs, "complete", False)

    def append(self, frame: np.ndarray, lowres: np.ndarray, states: np.ndarray | None, ids: np.ndarray | None,
               action: int | None) -> None:
        """Add frame t: (H, W, 3) uint8, (h, w, 3) uint8, states (N, F), ids (N,) (None without vehicle states),
        and the action taken before it."""
        t = self.n
        try:
            rows = [(self.frames, frame), (self.lowres, lowres)]
            if self.states is not None:
                rows += [(self.states, states), (self.ids, ids)]
            for ds, value in rows:
                ds.resize(t + 1, axis=0)
                ds[t] = value
            if t > 0:
                self.actions.resize(t, axis=0)
                self.actions[t - 1] = action
        except Exception as e:
            self._fail(e)
        self.n += 1

    def close(self, **final_attrs) -> Path:
        """Write final attributes and their checksum, mark complete, flush and rename the temp file into place."""
        try:
            for k, v in {**final_attrs, "n_frames": self.n, "complete": True}.items():
                _set_attr(self.f.attrs, k, v)
            _set_attr(self.f.attrs, META_DIGEST, meta_digest(plain_attrs(self.f.attrs)))
            self.f.flush()  # a full disk fails here, with the file still whole: a failed close leaves HDF5 unusable
            self.f.close()
        except Exception as e:
            self._fail(e)
        try:
            os.replace(self.tmp, self.path)
        finally:
            self._unlock()
        return self.path

    def _fail(self, e: Exception):
        """A failed HDF5 write: abort, and turn a full disk into a DiskFullError naming the file."""
        self.abort()
        raise (self._disk_full() if disk_full(e) else e) from None

    def _disk_full(self) -> DiskFullError:
        """The error for a full disk under this episode's temp file."""
        return DiskFullError(errno.ENOSPC, disk_full_message(self.tmp.parent), str(self.tmp))

    def abort(self) -> None:
        """Drop the temp file (errors, interruptions, a full disk); HDF5's last writes go to /dev/null, so that
        closing cannot fail and leave a half-closed file for HDF5 to crash on at exit."""
        try:
            if self.f.id.valid:
                self._discard_writes()
                self.f.close()
        except Exception:
            pass  # the file is deleted below; nothing in it matters any more
        finally:
            self.tmp.unlink(missing_ok=True)
            self._unlock()

    def _discard_writes(self) -> None:
        """Point HDF5's descriptor at /dev/null: whatever it still writes succeeds and goes nowhere."""
        if self._lock_fd < 0 or _file_id(self._fd) != _file_id(self._lock_fd):
            return  # HDF5 already closed it (the number may now be another file's)
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, self._fd, inheritable=False)
        finally:
            os.close(null)

    def _unlock(self) -> None:
        """Release the temp file's lock (closing its descriptor); idempotent."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class Episode:
    """Read-only view of one episode file; slices read only the chunks they touch. An episode without vehicle
    states (no states / vehicle_ids datasets) reads them as arrays with 0 vehicle slots."""

    KEYS = ("frames", "lowres", "states", "vehicle_ids", "actions")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.f = h5py.File(self.path, "r")
        except Exception as e:  # h5py raises OSError, KeyError, ValueError, RuntimeError... on damaged files
            raise CorruptEpisodeError(self.path, f"not a readable HDF5 file: {e}") from None
        try:
            self._load_attrs()
        except CorruptEpisodeError:
            self.f.close()
            raise
        except Exception as e:
            self.f.close()
            raise CorruptEpisodeError(self.path, f"damaged metadata: {type(e).__name__}: {e}") from None

    def _load_attrs(self) -> None:
        """Read and check the file attributes and the list of datasets."""
        attrs = plain_attrs(self.f.attrs)
        if attrs.get("format") != FORMAT:
            raise CorruptEpisodeError(self.path, f"format is {attrs.get('format')!r}, expected {FORMAT!r}")
        if not attrs.get("complete", False):
            raise CorruptEpisodeError(self.path, "the episode was not finished")
        if META_DIGEST in attrs and attrs[META_DIGEST] != meta_digest(attrs):  # files written before it lack it
            raise CorruptEpisodeError(self.path, "damaged metadata: the attributes do not match their checksum")
        missing = [k for k in self.KEYS if k not in self.f]
        self.has_states = not set(missing) & set(OPTIONAL_KEYS)
        if set(missing) - set(OPTIONAL_KEYS) or 0 < len(set(missing) & set(OPTIONAL_KEYS)) < len(OPTIONAL_KEYS):
            raise CorruptEpisodeError(self.path, f"missing datasets {missing}")
        self.attrs = attrs
        self.n_frames = int(attrs["n_frames"])
        self.state_fields = tuple(json.loads(attrs.get("state_fields", "[]")))

    @property
    def action_names(self) -> tuple[str, ...]:
        """The names of actions 0..n-1 (attribute action_names; HighwayEnv's meta-actions in files without it)."""
        if "action_names" not in self.attrs:
            return ACTIONS
        return tuple(self.meta("action_names"))

    def meta(self, key: str):
        """A JSON attribute (e.g. 'env_config') decoded."""
        return json.loads(self.attrs[key])

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of dataset `key`; a damaged chunk raises CorruptEpisodeError."""
        if key in OPTIONAL_KEYS and not self.has_states:
            rows = len(range(self.n_frames)[start:stop])
            return np.zeros((rows, 0, len(self.state_fields)) if key == "states" else (rows, 0),
                            np.float32 if key == "states" else np.int32)
        try:
            return self.f[key][start:stop]
        except Exception as e:  # a failed checksum, a damaged chunk index or object header
            raise CorruptEpisodeError(self.path, f"cannot decode {key}[{start}:{stop}]: {e}") from None

    def verify(self, block: int = 64) -> None:
        """Read every row of every dataset (`block` rows at a time): each chunk's Fletcher-32 checksum is checked."""
        for key in self.keys:
            n = self.n_frames - (key == "actions")
            if self.rows(key) != n:
                raise CorruptEpisodeError(self.path, f"{key} has {self.rows(key)} rows, expected {n}")
            for s in range(0, n, block):
                self.read(key, s, s + block)

    @property
    def keys(self) -> tuple[str, ...]:
        """The datasets this file holds (KEYS, less states and vehicle_ids without vehicle states)."""
        return tuple(k for k in self.KEYS if self.has_states or k not in OPTIONAL_KEYS)

    def rows(self, key: str) -> int:
        """Length of dataset `key`; a damaged header raises CorruptEpisodeError."""
        try:
            return len(self.f[key])
        except Exception as e:
            raise CorruptEpisodeError(self.path, f"cannot open {key}: {e}") from None

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
