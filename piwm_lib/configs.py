"""Typed-config helpers: dataclass <-> JSON, shared by every config of the library."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass (possibly nested) -> plain dict that JSON can hold."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Plain dict -> dataclass `cls`; unknown keys raise a clear error naming them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def to_json(cfg: Any) -> str:
    """Canonical JSON of a config (sorted keys, so equal configs give equal bytes)."""
    return json.dumps(to_dict(cfg), sort_keys=True)


def save_json(obj: Any, path: str | Path) -> None:
    """Write a config or dict as indented JSON, atomically (temp name + rename)."""
    path = Path(path)
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
