"""How syncprep's attrs classes are made: ``frozen`` and ``define`` are attrs's, except that
the methods attrs would generate as source and compile for each class, ``__repr__``,
``__eq__`` and ``__hash__``, are made here without compiling anything (issue 19).

attrs writes each class's methods as Python source and compiles it when the class is made;
``plan`` makes about ninety classes before it reads anything, and parsing that source was
most of making them. Only ``__init__`` is still attrs's own. The others behave as attrs's:

- ``__repr__``: the class's name (after ``>.``), then ``name=value`` of each field attrs would
  show, in order, with a field's own ``repr=`` function where it has one, and ``...`` for an
  object already being shown higher up;
- ``__eq__``: ``NotImplemented`` for an object of another class, else whether each compared
  field is ``==`` (in order, up to the first that is not, without taking an object as equal
  to itself: a NaN is not), ``__ne__`` its negation;
- ``__hash__``: a frozen class's hashes its compared fields and the class; a mutable class
  that compares its fields is unhashable, one made with ``eq=False`` keeps ``object``'s.

A class that writes any of these methods itself, or asks attrs for anything about them
(``order=``, ``hash=``...; ``eq=False`` is no question: no ``__eq__``), is made by attrs
alone, as before.

:func:`as_tuple` is ``converter=tuple`` for a field: attrs reads each converter's signature,
and a built-in's is text that :mod:`inspect` parses (tokenizer, ``ast``), a Python function's not.
"""

from __future__ import annotations

import operator
import threading

import attrs

_showing = threading.local()
#: Options that change the methods made here: with any of them, attrs makes them all.
_ATTRS_ALONE = frozenset({"repr", "eq", "order", "hash", "unsafe_hash", "cache_hash", "cmp", "frozen"})
_OWN = frozenset({"__repr__", "__eq__", "__ne__", "__hash__", "__lt__", "__le__", "__gt__", "__ge__"})


def frozen(maybe_cls=None, **options):
    """attrs's ``frozen``, with the methods made here."""
    return _made(attrs.frozen, maybe_cls, options, frozen=True)


def define(maybe_cls=None, **options):
    """attrs's ``define``, with the methods made here."""
    return _made(attrs.define, maybe_cls, options, frozen=False)


def _made(decorate, maybe_cls, options, frozen):
    compares = options.get("eq", True)

    def wrap(cls):
        if (options.keys() - {"eq"}) & _ATTRS_ALONE or cls.__dict__.keys() & _OWN or compares not in (True, False):
            return decorate(cls, **options)
        made = decorate(cls, **{**options, "repr": False, "eq": False})
        made.__repr__ = attrs_repr
        if compares:
            made.__eq__, made.__ne__ = _equality(made), _not_equal
            made.__hash__ = _hashing(made) if frozen else None
        return made

    return wrap if maybe_cls is None else wrap(maybe_cls)


def as_tuple(value):
    """``tuple(value)``: a field's converter (see the module's documentation)."""
    return tuple(value)


def attrs_repr(self):
    """``Name(field=value, ...)``, as attrs's generated ``__repr__`` writes it."""
    showing = _showing.__dict__.setdefault("ids", set())
    if id(self) in showing:
        return "..."
    showing.add(id(self))
    try:
        fields = ", ".join(f"{a.name}={_shown(self, a)}" for a in self.__class__.__attrs_attrs__ if a.repr is not False)
        return f'{self.__class__.__qualname__.rsplit(">.", 1)[-1]}({fields})'
    finally:
        showing.remove(id(self))


def _shown(instance, attribute):
    value = getattr(instance, attribute.name) if attribute.init else getattr(instance, attribute.name, attrs.NOTHING)
    return repr(value) if attribute.repr is True else attribute.repr(value)


def _equality(cls):
    """``__eq__`` of ``cls``: its compared fields (``eq=True``), each through its ``eq=`` key if any."""
    values = _values([a for a in cls.__attrs_attrs__ if a.eq])

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(map(operator.eq, values(self), values(other)))

    return __eq__


def _not_equal(self, other):
    result = self.__eq__(other)
    if result is NotImplemented:
        return NotImplemented
    return not result


def _hashing(cls):
    """``__hash__`` of a frozen ``cls``: its hashed fields (``hash=True``, or compared), and the class."""
    values = _values([a for a in cls.__attrs_attrs__ if a.hash is True or (a.hash is None and a.eq is True)])
    salt = hash(f"{cls.__module__}.{cls.__qualname__} hash")

    def __hash__(self):
        return hash((salt, *values(self)))

    return __hash__


def _values(fields):
    """A function from an instance to the tuple of ``fields``' values, each through its ``eq=`` key."""
    if any(a.eq_key for a in fields):
        return lambda instance: tuple(a.eq_key(getattr(instance, a.name)) if a.eq_key else getattr(instance, a.name) for a in fields)
    if len(fields) == 1:
        return lambda instance, name=fields[0].name: (getattr(instance, name),)
    return operator.attrgetter(*(a.name for a in fields)) if fields else lambda instance: ()
