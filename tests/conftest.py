"""Shared fixtures: one small deterministic dataset collected once per test session."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from piwm_lib.agents import AgentConfig
from piwm_lib.collect import CollectConfig, collect
from piwm_lib.env import EnvConfig

SMALL = CollectConfig(episodes=3, seed=7, env=EnvConfig(episode_frames=30),
                      agent=AgentConfig(kind="idm"), test_fraction=0.34)


def small_config(out: Path, **kw) -> CollectConfig:
    """The small test dataset's settings, written to `out`."""
    return replace(SMALL, out=str(out), **kw)


def digests(root: Path) -> dict[str, str]:
    """sha256 of every episode file and the index of a dataset folder."""
    files = sorted(root.glob("episode_*.h5")) + [root / "index.json", root / "dataset.json"]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """3 IDM episodes x 30 frames, seed 7, collected with one process."""
    out = tmp_path_factory.mktemp("small") / "ds"
    return collect(small_config(out), progress=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (rep_setup, rep_call): fixtures read it to act on a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
