"""The shape of a JSON document the tool wrote and reads back: one check at its reader, naming the first place
where a damaged (hand-edited, half-restored) file differs from what the reader needs.

A shape is written as data:
    str, int, float, bool, dict, list   that type (int and float never accept a bool; float accepts an int)
    (shape, shape, ...)                 any of them; None in the tuple allows null
    [shape]                             a list whose every item has that shape
    {"key": shape, "key?": shape}       an object with those keys ("?": optional); other keys are allowed
    Map(shape)                          an object whose every value has that shape
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}


@dataclass(frozen=True)
class Map:
    """An object of any keys whose values all have `value`'s shape."""
    value: Any


def shape_problem(value: Any, shape: Any, where: str = "") -> str | None:
    """What is wrong with `value` as `shape` ("configurations[0].seeds: expected a list, found str"); None: fine."""
    if isinstance(shape, tuple):
        if any(_problem_free(value, s) for s in shape):
            return None
        return _expected(where, " or ".join(_describe(s) for s in shape), value)
    if shape is None:
        return None if value is None else _expected(where, "null", value)
    if isinstance(shape, list):
        if not isinstance(value, list):
            return _expected(where, "a list", value)
        return next((p for i, item in enumerate(value) if (p := shape_problem(item, shape[0], f"{where}[{i}]"))),
                    None)
    if isinstance(shape, Map):
        if not isinstance(value, dict):
            return _expected(where, "an object", value)
        return next((p for k, item in value.items() if (p := shape_problem(item, shape.value, _key(where, k)))),
                    None)
    if isinstance(shape, dict):
        return _object_problem(value, shape, where)
    if not _is(value, shape):
        return _expected(where, _NAMES.get(shape, shape.__name__), value)
    return None


def _object_problem(value: Any, shape: dict, where: str) -> str | None:
    if not isinstance(value, dict):
        return _expected(where, "an object", value)
    missing = [k for k in shape if not k.endswith("?") and k not in value]
    if missing:
        return f"{where + ': ' if where else ''}{', '.join(missing)} missing"
    for key, item_shape in shape.items():
        name = key.removesuffix("?")
        if name in value and (p := shape_problem(value[name], item_shape, _key(where, name))):
            return p
    return None


def _problem_free(value: Any, shape: Any) -> bool:
    return shape_problem(value, shape) is None


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _describe(shape: Any) -> str:
    if shape is None:
        return "null"
    if isinstance(shape, list):
        return "a list"
    if isinstance(shape, (dict, Map)):
        return "an object"
    return _NAMES.get(shape, getattr(shape, "__name__", str(shape)))


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _expected(where: str, what: str, value: Any) -> str:
    found = "a bool" if isinstance(value, bool) else _NAMES.get(type(value), type(value).__name__)
    return f"{where + ': ' if where else ''}expected {what}, found {found}"
