"""A valid desired-state file's values into its attrs classes, by reading the classes' fields.

This is the loader's quick road (issue 19): building the cattrs converter and generating
its structuring code took longer than all the rest of loading a small file. It accepts
exactly what the loader's strict converter accepts and builds the same values; anything
else (a wrong type, a key unknown or missing, a value no enum has) raises :class:`Unfit`,
and the loader then structures with cattrs, whose errors name every problem with its key
path. So it never has to explain a refusal, only to be no more lenient than the converter
(``tests/test_loader.py`` checks both roads give the same on every example).
"""

from __future__ import annotations

import enum
import typing

import attrs

from reconciler.desired import DesiredState, LicenseSpec

#: Fields the loader fills itself (a wave's users, where an entry is, the file's name and
#: digest): no TOML keys, refused like any unknown key.
LOADER_FIELDS = {
    LicenseSpec: frozenset({"file_users", "place"}),
    DesiredState: frozenset({"files", "source", "sha256"}),
}


class Unfit(Exception):
    """Not a valid value of the type as it stands; the cattrs converter says why."""


def structure(value, tp):
    """``value`` (from TOML) as ``tp``: a class of the desired state, or one of its field types."""
    if tp is str:
        return _checked(value, isinstance(value, str))
    if tp is bool:
        return _checked(value, isinstance(value, bool))
    if tp is int:
        return _checked(value, isinstance(value, int) and not isinstance(value, bool))
    if tp is float:
        return float(_checked(value, isinstance(value, (int, float)) and not isinstance(value, bool)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _member(value, tp)
    if attrs.has(tp):
        return _instance(value, tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple(structure(item, args[0]) for item in _checked(value, isinstance(value, list)))
    if origin is typing.Union and len(args) == 2 and type(None) in args:
        return None if value is None else structure(value, args[0] if args[1] is type(None) else args[1])
    raise Unfit(f"no quick road for {tp!r}")


def _checked(value, ok):
    if not ok:
        raise Unfit(type(value).__name__)
    return value


def _member(value, enum_type):
    if isinstance(value, str):
        for member in enum_type:
            if member.value.lower() == value.lower():
                return member
    raise Unfit(repr(value))


def _instance(value, cls):
    fields = _fields(cls)
    if not isinstance(value, dict) or not value.keys() <= fields.keys():
        raise Unfit(cls.__name__)
    missing = [name for name, (_tp, required) in fields.items() if required and name not in value]
    if missing:
        raise Unfit(f"{cls.__name__}: {missing[0]}")
    return cls(**{name: structure(item, fields[name][0]) for name, item in value.items()})


_FIELDS = {}


def _fields(cls):
    """{TOML key: (type, required)} of ``cls``, read once."""
    if cls not in _FIELDS:
        attrs.resolve_types(cls)
        omitted = LOADER_FIELDS.get(cls, frozenset())
        _FIELDS[cls] = {f.name: (f.type, f.default is attrs.NOTHING) for f in attrs.fields(cls) if f.init and f.name not in omitted}
    return _FIELDS[cls]
