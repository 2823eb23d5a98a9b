"""One validation path for configs and notebook parameters: each value against its type and its rule (a range such as
"> 0" or "[0, 1)", a tuple of allowed values, or a function returning an error), errors naming field, value and rule.

A config dataclass declares its rules in its annotations (`steps: PosInt = 100`, `ema_decay: Annotated[float,
"[0, 1)"]`, `stage: Annotated[str, STAGES]`) and calls `check_fields(self)` first thing in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from typing import Annotated, Any, Callable, Literal, Union

PosInt = Annotated[int, ">= 1"]  # a count that must be at least one
NonNegInt = Annotated[int, ">= 0"]  # a count where 0 means off / all
PosFloat = Annotated[float, "> 0"]
NonNegFloat = Annotated[float, ">= 0"]
Prob = Annotated[float, "[0, 1]"]  # a probability or a fraction
Decay = Annotated[float, "[0, 1)"]  # a decay rate (EMA, Adam's betas)

Rule = Union[str, tuple, Callable[[Any], Union[str, None]]]
NAME = re.compile(r"[A-Za-z0-9_.-]+")
_COMPARE = re.compile(r"(>=|>|<=|<)\s*(\S+)")
_INTERVAL = re.compile(r"([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])")


class ConfigError(ValueError):
    """A config field or notebook parameter outside its type or rule."""


def plain_name(value: str, what: str = "name") -> str:
    """`value` if it is a plain file name (letters, digits, - _ .; not . or ..), else raise naming it."""
    if not isinstance(value, str) or not NAME.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{what} must be a plain name (letters, digits, '-', '_', '.'; no path separators, "
                          f"not '.' or '..'), got {value!r}")
    return value


def name_rule(value: Any) -> str | None:
    """Rule for a run name parameter: the error of `plain_name`, or None."""
    try:
        plain_name(value)
    except ConfigError as e:
        return str(e).replace("name must", "must", 1)
    return None


def _show(value: Any) -> str:
    """A value in an error message: repr and type, and a hint for numbers that YAML read as strings."""
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = "; YAML reads 1e-4 as a string: write 1.0e-4"
        except ValueError:
            pass
    return f"{value!r} ({type(value).__name__}{hint})"


def _in_range(value: float, rule: str) -> bool:
    """Whether `value` satisfies a range rule: "> 0", ">= 1", "< 1", "<= 5" or an interval "[0, 1)", "(0, inf)"."""
    if m := _COMPARE.fullmatch(rule.strip()):
        op, bound = m.group(1), float(m.group(2))
        return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]
    if m := _INTERVAL.fullmatch(rule.strip()):
        lo, hi = float(m.group(2)), float(m.group(3))
        above = value > lo if m.group(1) == "(" else value >= lo
        below = value < hi if m.group(4) == ")" else value <= hi
        return above and below
    raise ValueError(f"unreadable range rule {rule!r}")


def check_rule(where: str, value: Any, rule: Rule) -> None:
    """Raise ConfigError unless `value` (or each item of a list value) satisfies `rule`."""
    if isinstance(rule, str) and isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_rule(f"{where}[{i}]", v, rule)
    elif isinstance(rule, str):
        if not isinstance(value, numbers.Real) or math.isnan(value) or not _in_range(value, rule):
            verb = "be in" if rule.lstrip()[0] in "[(" else "be"
            raise ConfigError(f"{where} must {verb} {rule}, got {value!r}")
    elif isinstance(rule, (tuple, list, frozenset, set)):
        items = value if isinstance(value, (list, tuple)) else [value]
        if bad := [v for v in items if v not in rule]:
            got = f"{bad[0]!r} in {value!r}" if isinstance(value, (list, tuple)) else repr(value)
            raise ConfigError(f"{where} must be one of {tuple(rule)}, got {got}")
    elif callable(rule) and (error := rule(value)):
        raise ConfigError(f"{where} {error}")


def coerce(where: str, value: Any, tp: Any) -> Any:
    """`value` as type annotation `tp` (int from an int-valued float, tuple from a list), or raise naming `where`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        value = coerce(where, value, args[0])
        for rule in args[1:]:
            check_rule(where, value, rule)
        return value
    if tp is Any or tp is object:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {args}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(where, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where} must be {_name(tp)}, got {_show(value)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)  # 1e4 from JSON or papermill's -p is a whole number
        raise ConfigError(f"{where} must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value if isinstance(value, (int, float)) else float(value)
        raise ConfigError(f"{where} must be a number, got {_show(value)}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    if tp in (tuple, list, dict):
        ok = isinstance(value, (tuple, list)) if tp is not dict else isinstance(value, dict)
        if not ok:
            raise ConfigError(f"{where} must be a {'mapping' if tp is dict else 'list'}, got {_show(value)}")
        return tuple(value) if tp is tuple else value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where} must be a list of {_name(tp)}, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} items ({_name(tp)}), got {value!r}")
        return tuple(coerce(f"{where}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (list, dict):
        return coerce(where, value, origin)
    if isinstance(tp, type):
        if not isinstance(value, tp):
            article = "an" if tp.__name__[0] in "AEIOU" else "a"
            raise ConfigError(f"{where} must be {article} {tp.__name__}, got {_show(value)}")
        return value
    return value  # an annotation this checker does not know: left to the class


def _name(tp: Any) -> str:
    """A readable name of a type annotation."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass, rules included (cached: once per class)."""
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(cfg: Any, **rules: Rule) -> None:
    """Check (and normalise, e.g. list -> tuple) every field of the dataclass `cfg` against its annotation, and
    against `rules` given here (field name -> rule) for classes that do not declare them in their annotations."""
    hints, cls = _hints(type(cfg)), type(cfg).__name__
    for f in dataclasses.fields(cfg):
        old = getattr(cfg, f.name)
        new = coerce(f"{cls}.{f.name}", old, hints[f.name])
        if f.name in rules:
            check_rule(f"{cls}.{f.name}", new, rules[f.name])
        if new is not old:
            object.__setattr__(cfg, f.name, new)


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok` (relations between fields)."""
    if not ok:
        raise ConfigError(message)
