"""Parallel, deterministic, resumable BEV data collection (`python -m piwm_lib.collect`)."""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import env as E
from .agents import AgentConfig, make_agent
from .configs import save_json, to_dict
from .dataset import DATASET_FILE, read_manifest, write_index
from .frames import resize_uint8
from .runs import resolve
from .storage import EpisodeBusyError, EpisodeWriter, disk_full_text, episode_name, remove_stale_temp

os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")  # else SDL (pygame) swallows SIGTERM: a killed run would go on
PR_SET_PDEATHSIG = 1  # Linux prctl option: the signal a process gets when its parent dies
_progress = None  # a worker's progress queue (set by _init_worker)


@dataclass(frozen=True)
class CollectConfig:
    """What to collect and where; with `env` and `agent` this fixes every byte of the dataset."""

    out: str = "data/smoke"  # dataset folder (episode files, dataset.json, index.json)
    episodes: int = 2  # episodes to collect (paper: 2,000)
    first_episode: int = 0  # index of the first episode (env seed = seed + episode index)
    seed: int = 0  # the one seed of the dataset
    workers: int = 1  # worker processes on this machine (the data does not depend on it)
    test_fraction: float = 0.1  # every 10th episode is test, from episode 1 (dataset.split_of; paper: 200 of 2,000)
    env: E.EnvConfig = field(default_factory=E.EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        from .validate import check_fields  # types of the annotations, and these ranges
        check_fields(self, episodes=">= 1", first_episode=">= 0", seed=">= 0", workers=">= 1", test_fraction="[0, 1)")
        if self.env.curved and self.agent.kind == "mcts" and self.agent.lane_target_every:
            raise ValueError(f"AgentConfig.lane_target_every needs a straight road: {self.env.env_id}'s lane numbers "
                             "change along its curves; set it 0 (--lane-target-every 0, LANE_TARGET_EVERY = 0)")


def manifest(cfg: CollectConfig) -> dict:
    """What every slice of one dataset must share (merge refuses slices that differ)."""
    return {"format": "piwm-dataset", "seed": cfg.seed, "test_fraction": cfg.test_fraction,
            "env": E.config_dict(cfg.env), "agent": to_dict(cfg.agent)}


def collect_episode(out: Path, index: int, cfg: CollectConfig, progress=None) -> dict:
    """Drive one episode with the agent, streaming frames, low-res copy, actions and states to its file."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per episode; restored below for in-process callers
    ec = cfg.env
    env = E.make_env(ec)
    u = env.unwrapped
    frame = E.reset(env, cfg.seed + index)
    agent = make_agent(cfg.agent, np.random.default_rng([cfg.seed + index, 1]))
    attrs = {"episode": index, "seed": cfg.seed, "env_seed": cfg.seed + index, "env_config": E.config_dict(ec),
             "agent_config": to_dict(cfg.agent), "action_names": list(ec.action_names)}
    writer = EpisodeWriter(out / episode_name(index), frame_shape=(ec.screen_height, ec.screen_width, 3),
                           lowres_shape=(ec.lowres_height, ec.lowres_width, 3), n_slots=ec.n_slots,
                           state_fields=E.STATE_FIELDS, attrs=attrs)
    action, ended = None, False
    try:
        for t in range(ec.episode_frames):
            if t > 0:
                ended = E.step(env, action)  # a crash, or the scenario's own end (merge-v0: past the merge)
                if ec.recycle_traffic:
                    E.recycle_traffic(u, ec)
                frame = E.render(env)
            states, ids = E.vehicle_states(u, ec.n_slots)
            writer.append(frame, resize_uint8(frame[None], ec.lowres_height, ec.lowres_width)[0], states, ids, action)
            if progress is not None and t % 25 == 24:
                progress.put(25)
            if ended and ec.stop_on_crash:
                break
            if t < ec.episode_frames - 1:
                action = agent.act(u)
        n = writer.n
        crashed = bool(u.vehicle.crashed)  # not the scenario's own end (on highway-v0 the two are the same)
        writer.close(crashed=crashed)
    except BaseException:
        writer.abort()
        raise
    finally:
        env.close()
        torch.set_num_threads(threads)
    if progress is not None:
        progress.put(n % 25)  # frames not yet reported
    return {"episode": index, "frames": n, "crashed": crashed}


def _init_worker(progress, parent: int) -> None:
    """Worker initializer: keep the progress queue, and die with the parent even when it is SIGKILLed (Linux)."""
    global _progress
    _progress = progress
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _worker(out: str, index: int, cfg: CollectConfig) -> dict:
    """Pool entry point."""
    return collect_episode(Path(out), index, cfg, _progress)


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (set by `accelerate launch` / torchrun; else 0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def todo(out: Path, cfg: CollectConfig, rank: int = 0, world: int = 1) -> list[int]:
    """Episode indices of this rank's slice that are not finished in `out` yet."""
    mine = range(cfg.first_episode + rank, cfg.first_episode + cfg.episodes, world)
    return [i for i in mine if not (out / episode_name(i)).exists()]


def prepare(out: Path, cfg: CollectConfig, clean: bool = True, wait_s: float = 5.0) -> None:
    """Create `out` with its dataset.json, or check that an existing one has the same settings; with `clean`, drop
    the temp files of episodes that were in flight when an earlier run was killed (a writer still alive gets `wait_s`
    seconds to finish or die, then EpisodeBusyError names its file)."""
    prepare_manifest(out, manifest(cfg), clean, wait_s)


def prepare_manifest(out: Path, want: dict, clean: bool = True, wait_s: float = 5.0) -> None:
    """prepare() for any dataset.json `want` (collected or imported): create it or refuse other settings."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / DATASET_FILE).exists():
        have = read_manifest(out)
        if have != want:
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            raise ValueError(f"{out} already holds a dataset collected with other settings (differs in {diff}); "
                             f"choose another folder or delete it")
    else:
        save_json(want, out / DATASET_FILE)
    for tmp in sorted(out.glob("*.tmp")) if clean else ():
        remove_stale_temp(tmp, wait_s)


def collect(cfg: CollectConfig, progress: bool = True, rank: int | None = None, world: int | None = None,
            per_rank_dirs: bool = False) -> Path:
    """Collect `cfg.episodes` episodes into `cfg.out` with `cfg.workers` processes; resumes where it stopped.

    Under `accelerate launch` each process takes every `world`-th episode; with `per_rank_dirs` it writes to
    `out/rank_<r>` (merge them with `merge`), else all write to `out` and rank 0 writes the index.
    """
    r, w = rank_world()
    rank, world = (r if rank is None else rank), (w if world is None else world)
    out = Path(cfg.out) / f"rank_{rank}" if per_rank_dirs and world > 1 else Path(cfg.out)
    barrier = _barrier() if world > 1 and not per_rank_dirs else (lambda: None)
    if rank == 0 or per_rank_dirs:
        prepare(out, cfg)
    barrier()
    if rank != 0 and not per_rank_dirs:
        prepare(out, cfg, clean=False)  # rank 0 may already be writing its first episode
    jobs = todo(out, cfg, rank, world)
    total = len(jobs) * cfg.env.episode_frames
    bar = tqdm(total=total, unit="frame", desc=f"collect rank {rank}/{world}" if world > 1 else "collect",
               disable=not progress or total == 0, smoothing=0.05)
    if cfg.workers == 1 or len(jobs) <= 1:
        for i in jobs:
            bar.update(collect_episode(out, i, cfg)["frames"])
    else:
        _run_pool(out, jobs, cfg, bar)
    bar.close()
    barrier()
    if rank == 0 or per_rank_dirs:
        write_index(out)
    return out


def ensure_dataset(data_dir: str | Path, fallback_dir: str | Path, seed: int = 0, episodes: int = 2,
                   frames: int = 40) -> Path:
    """data_dir when it holds a dataset; otherwise notebook 01's smoke dataset (IDM, `episodes` x `frames`, seed)
    collected into fallback_dir (reused when already there), so that every notebook runs on its own."""
    root = resolve(data_dir)
    if (root / "dataset.json").exists():
        return root
    print(f"{data_dir} holds no dataset: collecting a smoke dataset (seed {seed}) into {fallback_dir}")
    return collect(CollectConfig(out=str(resolve(fallback_dir)), episodes=episodes, seed=seed,
                                 env=E.EnvConfig(episode_frames=frames), agent=AgentConfig(kind="idm")), progress=False)


def _barrier():
    """A barrier across the processes of `accelerate launch --multi_gpu` / torchrun (gloo, works on CPU)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.barrier


def _run_pool(out: Path, jobs: list[int], cfg: CollectConfig, bar) -> None:
    """Collect episodes `jobs` with cfg.workers spawned processes, which die with this one; on any error the
    running episodes are stopped (a rerun drops their temp files) and the error is raised here."""
    ctx = mp.get_context("spawn")
    progress = ctx.Queue()
    pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(progress, os.getpid()))
    try:
        _drain([pool.submit(_worker, str(out), i, cfg) for i in jobs], progress, bar)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    _forward(progress, bar)


def _drain(futures: list[Future], progress, bar) -> None:
    """Wait for every episode while forwarding per-frame progress from the workers to the bar; re-raise a failure
    (a worker that died abruptly raises BrokenProcessPool)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for f in done:
            f.result()
        _forward(progress, bar)


def _forward(progress, bar) -> None:
    """Move the frame counts queued by the workers to the bar."""
    while True:
        try:
            bar.update(progress.get_nowait())
        except queue.Empty:
            return


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued episodes and kill the running ones now (SIGKILL: no library handler can delay it)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # private; Python 3.14 has kill_workers
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.kill()
    for p in procs:
        p.join()
    pool.shutdown()


def merge(out: str | Path, sources: list[str | Path], move: bool = False) -> Path:
    """Join dataset slices (e.g. one per machine) into `out`, refusing mismatched settings or duplicate episodes."""
    out, sources = Path(out), [Path(s) for s in sources]
    manifests = [read_manifest(s) for s in sources]
    for s, m in zip(sources[1:], manifests[1:]):
        if m != manifests[0]:
            diff = sorted(k for k in set(m) | set(manifests[0]) if m.get(k) != manifests[0].get(k))
            raise ValueError(f"cannot merge {s} with {sources[0]}: settings differ in {diff}")
    seen: dict[str, Path] = {}
    for s in sources:
        for f in sorted(s.glob("episode_*.h5")):
            if f.name in seen:
                raise ValueError(f"duplicate episode {f.name} in {seen[f.name]} and {s}; remove one copy")
            seen[f.name] = s
    out.mkdir(parents=True, exist_ok=True)
    if (out / DATASET_FILE).exists() and read_manifest(out) != manifests[0]:
        raise ValueError(f"{out} already holds a dataset with other settings")
    for name in seen:
        if (out / name).exists() and out.resolve() != seen[name].resolve():
            raise ValueError(f"{out / name} already exists; merge into an empty folder")
    save_json(manifests[0], out / DATASET_FILE)
    for name, src in seen.items():
        if out.resolve() == src.resolve():
            continue
        tmp = out / (name + ".tmp")
        (shutil.move if move else shutil.copyfile)(src / name, tmp)
        tmp.replace(out / name)
    write_index(out)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m piwm_lib.collect", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="collect episodes (splits them by rank under `accelerate launch`)")
    d, de, da = CollectConfig(), E.EnvConfig(), AgentConfig()
    run.add_argument("--out", default=d.out)
    run.add_argument("--episodes", type=int, default=d.episodes)
    run.add_argument("--first-episode", type=int, default=d.first_episode)
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--workers", type=int, default=d.workers)
    run.add_argument("--test-fraction", type=float, default=d.test_fraction)
    run.add_argument("--scenario", choices=sorted(E.SCENARIOS), default=de.env_id,
                     help="HighwayEnv scenario (its lanes and traffic: env.SCENARIOS; --lanes / --vehicles override)")
    run.add_argument("--frames", type=int, default=de.episode_frames, help="frames per episode")
    run.add_argument("--vehicles", type=int, default=None,
                     help=f"other vehicles / state slots (highway: {de.vehicles})")
    run.add_argument("--lanes", type=int, default=None, help=f"lanes (highway: {de.lanes})")
    run.add_argument("--policy-hz", type=int, default=de.policy_hz, help="recorded frames per second")
    run.add_argument("--agent", choices=("mcts", "idm", "random"), default=da.kind)
    run.add_argument("--budget", type=int, default=da.budget, help="MCTS iterations per decision")
    run.add_argument("--horizon", type=int, default=da.horizon, help="MCTS depth in decisions")
    run.add_argument("--decision-frames", type=int, default=da.decision_frames, help="frames between MCTS plans")
    run.add_argument("--lane-target-every", type=int, default=da.lane_target_every,
                     help="MCTS decisions between new random target lanes (0: off; lane changes in the data)")
    run.add_argument("--speed-target-every", type=int, default=da.speed_target_every,
                     help="MCTS decisions between new random target speeds (0: off; FASTER/SLOWER in the data)")
    run.add_argument("--per-rank-dirs", action="store_true", help="rank r writes to OUT/rank_r (merge them later)")
    run.add_argument("--no-progress", action="store_true")
    mg = sub.add_parser("merge", help="join dataset slices into one dataset and index")
    mg.add_argument("--out", required=True)
    mg.add_argument("--move", action="store_true", help="move files instead of copying them")
    mg.add_argument("sources", nargs="+")
    ck = sub.add_parser("check", help="verify every episode file of a dataset; exit 1 naming broken files")
    ck.add_argument("root")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> CollectConfig:
    """CollectConfig from the `run` command-line arguments."""
    given = {k: v for k, v in (("vehicles", a.vehicles), ("lanes", a.lanes)) if v is not None}
    env = E.scenario(a.scenario, episode_frames=a.frames, policy_hz=a.policy_hz, **given)
    agent = replace(AgentConfig(), kind=a.agent, budget=a.budget, horizon=a.horizon, decision_frames=a.decision_frames,
                    lane_target_every=a.lane_target_every, speed_target_every=a.speed_target_every)
    return CollectConfig(out=a.out, episodes=a.episodes, first_episode=a.first_episode, seed=a.seed,
                         workers=a.workers, test_fraction=a.test_fraction, env=env, agent=agent)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; a full disk, a busy episode file or refused settings end in one error line."""
    a = _parse(argv)
    try:
        return _run(a)
    except EpisodeBusyError as e:
        return _error(str(e), 1)
    except ValueError as e:
        return _error(str(e), 2)
    except Exception as e:  # a full disk, raised here or in a worker
        message = disk_full_text(e, a.root if a.cmd == "check" else a.out)
        if message is None:
            raise
        return _error(message, 1)


def _error(message: str, code: int) -> int:
    """Print `message` as the command's one error line; return `code`."""
    print(f"python -m piwm_lib.collect: error: {message}", file=sys.stderr)
    return code


def _run(a: argparse.Namespace) -> int:
    """Run one parsed command; returns the exit code."""
    if a.cmd == "run":
        cfg = config_from_args(a)
        collect(cfg, progress=not a.no_progress, per_rank_dirs=a.per_rank_dirs)
        return 0
    if a.cmd == "merge":
        merge(a.out, a.sources, move=a.move)
        return 0
    from .dataset import check_dataset
    problems = check_dataset(a.root)
    for path, errs in problems.items():
        for e in errs:
            print(f"BROKEN {path}: {e}")
    print(f"{a.root}: {'all episodes OK' if not problems else f'{len(problems)} broken file(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
