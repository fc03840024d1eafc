"""``--set key=value``: typed overrides of any field of a benchmark's configuration.

Keys are dotted paths through the configuration's dataclasses (``optim.lr``, ``schedule.budget``,
``data.num_buckets``); ``target.NAME`` sets the target of the metric NAME. Values are parsed by the
field's declared type: ``int`` takes an integer literal, ``float`` any number, ``bool`` one of
true/false/yes/no/1/0, ``str`` the text, an optional field also ``none``, a tuple of strings a
comma-separated list. Whatever the configuration's own checks reject is rejected too.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from mlperf_fast.harness.workload import Metric


class OverrideError(ValueError):
    """An override that names no field, or whose value does not fit the field."""


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def parse_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise OverrideError(f"--set {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def _parse(value: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and value.lower() == "none":
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for a in rest:
            try:
                return _parse(value, a, key)
            except OverrideError as e:
                errors.append(str(e))
        raise OverrideError(errors[0] if errors else f"--set {key}: cannot parse {value!r}")
    if tp is bool:
        v = value.lower()
        if v in _TRUE or v in _FALSE:
            return v in _TRUE
        raise OverrideError(f"--set {key}={value}: expected true or false")
    if tp is int:
        try:
            return int(value, 10)
        except ValueError:
            raise OverrideError(f"--set {key}={value}: expected an integer") from None
    if tp is float:
        try:
            x = float(value)
        except ValueError:
            raise OverrideError(f"--set {key}={value}: expected a number") from None
        if math.isnan(x):
            raise OverrideError(f"--set {key}={value}: NaN is not a value")
        return x
    if tp is str:
        return value
    if origin is tuple and typing.get_args(tp)[-1:] == (Ellipsis,):
        item = typing.get_args(tp)[0]
        return tuple(_parse(v.strip(), item, key) for v in value.split(",") if v.strip())
    raise OverrideError(f"--set {key}: a field of type {getattr(tp, '__name__', tp)} cannot be "
                        "set from the command line; set its fields one by one")


def _hints(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def _set(obj: Any, path: list[str], value: str, full: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise OverrideError(f"--set {full}: {'.'.join(path)} is not inside a configuration")
    name = path[0]
    names = [f.name for f in dataclasses.fields(obj)]
    if name not in names:
        raise OverrideError(f"--set {full}: unknown key {name!r} (known here: {', '.join(names)})")
    hints = _hints(obj)
    if len(path) == 1:
        new = _parse(value, hints[name], full)
    else:
        child = getattr(obj, name)
        if child is None:
            raise OverrideError(f"--set {full}: {name} is none in this configuration")
        new = _set(child, path[1:], value, full)
    try:
        return dataclasses.replace(obj, **{name: new})
    except (ValueError, TypeError) as e:
        raise OverrideError(f"--set {full}: {e}") from None


def apply_overrides(config: Any, assignments: list[str]) -> tuple[Any, dict[str, Any]]:
    """``config`` with each ``KEY=VALUE`` applied in order; returns it and {key: value} as set."""
    applied: dict[str, Any] = {}
    for text in assignments:
        key, value = parse_assignment(text)
        path = key.split(".")
        if path[0] == "target" and len(path) == 2:
            config = _set_target(config, path[1], value, key)
        else:
            config = _set(config, path, value, key)
        applied[key] = _lookup(config, path)
    return config, applied


def _set_target(config: Any, metric: str, value: str, key: str) -> Any:
    targets = list(config.targets)
    names = [m.name for m in targets]
    if metric not in names:
        raise OverrideError(f"--set {key}: no metric {metric!r} (metrics: {', '.join(names)})")
    i = names.index(metric)
    try:
        targets[i] = dataclasses.replace(targets[i], target=_parse(value, float, key))
    except ValueError as e:
        raise OverrideError(f"--set {key}: {e}") from None
    return dataclasses.replace(config, targets=tuple(targets))


def _lookup(config: Any, path: list[str]) -> Any:
    if path[0] == "target":
        return next(m.target for m in config.targets if m.name == path[1])
    obj = config
    for name in path:
        obj = getattr(obj, name)
    return obj


def describe(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every settable key of ``config`` and its value, for help texts and reports."""
    rows: list[tuple[str, Any]] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if f.name == "targets":
            rows += [(f"target.{m.name}", m.target) for m in value if isinstance(m, Metric)]
        elif dataclasses.is_dataclass(value):
            rows += describe(value, key + ".")
        else:
            rows.append((key, value))
    return rows
