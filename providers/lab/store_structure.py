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


class Road:
    """The quick road for the lab's types: for each type, a function from a JSON value to the
    value cattrs builds, made once (as cattrs makes its hooks, without generating code).

    ``checks``: {attrs class: function} run on each built instance of that class (what a cattrs
    hook registered for it adds to the default)."""

    def __init__(self, checks):
        self.checks = checks
        self._builders = {}

    def structure(self, value, tp):
        """``value`` (decoded JSON) as ``tp``, or :class:`Unfit`."""
        return self.builder(tp)(value)

    def builder(self, tp):
        builder = self._builders.get(tp)
        if builder is None:
            builder = self._builders[tp] = self._made(tp)
        return builder

    def _made(self, tp):
        if tp is str or tp is bool or tp is int:  # exactly: not a bool for an int
            return lambda value: _checked(value, type(value) is tp)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return lambda value: _member(value, tp)
        if attrs.has(tp):
            return self._instance(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return lambda value, item=self.builder(args[0]): tuple(map(item, _checked(value, type(value) is list)))
        if origin is list:
            return lambda value, item=self.builder(args[0]): list(map(item, _checked(value, type(value) is list)))
        if origin is dict and args[0] is str:
            return lambda value, item=self.builder(args[1]): {key: item(v) for key, v in _checked(value, type(value) is dict).items()}
        if origin is typing.Union and len(args) == 2 and type(None) in args:
            inner = self.builder(args[0] if args[1] is type(None) else args[1])
            return lambda value: None if value is None else inner(value)
        return lambda value: _no_road(tp)

    def _instance(self, cls):
        fields = _fields(cls)
        builders = {name: self.builder(tp) for name, (tp, _required) in fields.items()}
        required = [name for name, (_tp, is_required) in fields.items() if is_required]
        check = self.checks.get(cls)

        def build(value):
            if type(value) is not dict or not value.keys() <= builders.keys():
                raise Unfit(cls.__name__)
            if any(name not in value for name in required):
                raise Unfit(f"{cls.__name__}: a required key is missing")
            built = {name: builders[name](item) for name, item in value.items()}
            try:
                instance = cls(**built)
            except (TypeError, ValueError) as exc:  # a converter's or validator's refusal: cattrs words it
                raise Unfit(str(exc)) from None
            return instance if check is None else check(instance)

        return build


def _checked(value, ok):
    if not ok:
        raise Unfit(type(value).__name__)
    return value


def _member(value, enum_type):
    try:
        return enum_type(value)  # what cattrs does; an unknown value is for cattrs to refuse
    except (ValueError, TypeError):
        raise Unfit(repr(value)) from None


def _no_road(tp):
    raise Unfit(f"no quick road for {tp!r}")


def _fields(cls):
    """{key: (type, required)} of ``cls``'s fields that ``__init__`` takes."""
    attrs.resolve_types(cls)
    # Keyed by name, as cattrs reads them; a field whose ``__init__`` name differs is left to cattrs.
    return {f.name: (f.type, f.default is attrs.NOTHING) for f in attrs.fields(cls) if f.init and f.alias == f.name}
