"""The lab file's small parts (rules, connectors, SKUs, groups...) into the lab's attrs classes
without cattrs: the quick road of :mod:`providers.lab.store_decode` (issue 19).

Importing cattrs, building its converter and generating its structuring code took about a
tenth of ``plan`` on the default lab, for a few dozen small values. For a value that fits
its type as the lab writes it (a string where a string goes, a list where a list goes, a
known enum value, an object with no unknown key and no required key missing) this builds
exactly what cattrs's converter builds (``cls(**fields)``, each field structured by its type);
anything else raises :class:`Unfit`, and the caller lets cattrs structure that value: it
builds what it would have built (cattrs is more lenient: ``str(7)``, ``int("7")``) or says
why it cannot. So this never explains a refusal, and is never more lenient than cattrs
(``tests/test_lab_store_structure.py`` checks both roads on every lab and on broken copies).
"""

from __future__ import annotations

import enum
import typing

import attrs


class Unfit(Exception):
    """Not a value of the type as the lab writes it: cattrs decides (and says why)."""


def structure(value, tp, checks):
    """``value`` (decoded JSON) as ``tp``. ``checks``: {attrs class: function} run on each built
    instance of that class (what a cattrs hook registered for it adds to the default)."""
    if tp is str or tp is bool:
        return _checked(value, type(value) is tp)
    if tp is int:
        return _checked(value, type(value) is int)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _member(value, tp)
    if attrs.has(tp):
        return _instance(value, tp, checks)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple(structure(item, args[0], checks) for item in _checked(value, type(value) is list))
    if origin is list:
        return [structure(item, args[0], checks) for item in _checked(value, type(value) is list)]
    if origin is dict and args[0] is str:
        return {key: structure(item, args[1], checks) for key, item in _checked(value, type(value) is dict).items()}
    if origin is typing.Union and len(args) == 2 and type(None) in args:
        return None if value is None else structure(value, args[0] if args[1] is type(None) else args[1], checks)
    raise Unfit(f"no quick road for {tp!r}")


def _checked(value, ok):
    if not ok:
        raise Unfit(type(value).__name__)
    return value


def _member(value, enum_type):
    try:
        return enum_type(value)  # what cattrs does; an unknown value is for cattrs to refuse
    except (ValueError, TypeError):
        raise Unfit(repr(value)) from None


def _instance(value, cls, checks):
    fields = _fields(cls)
    if type(value) is not dict or not value.keys() <= fields.keys():
        raise Unfit(cls.__name__)
    if any(required and name not in value for name, (_tp, required) in fields.items()):
        raise Unfit(f"{cls.__name__}: a required key is missing")
    built = {name: structure(item, fields[name][0], checks) for name, item in value.items()}
    try:
        instance = cls(**built)
    except (TypeError, ValueError) as exc:  # a converter's or validator's refusal: cattrs words it
        raise Unfit(str(exc)) from None
    check = checks.get(cls)
    return instance if check is None else check(instance)


_FIELDS = {}


def _fields(cls):
    """{key: (type, required)} of ``cls``'s fields that ``__init__`` takes, read once."""
    if cls not in _FIELDS:
        attrs.resolve_types(cls)
        # Keyed by name, as cattrs reads them; a field whose ``__init__`` name differs is left to cattrs.
        _FIELDS[cls] = {f.name: (f.type, f.default is attrs.NOTHING) for f in attrs.fields(cls) if f.init and f.alias == f.name}
    return _FIELDS[cls]
