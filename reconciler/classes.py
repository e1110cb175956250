"""How syncprep's attrs classes are made: ``frozen`` and ``define`` are attrs's, except that
every class shares one ``__repr__`` instead of having one generated for it (issue 19).

attrs writes each class's methods as Python source and compiles it when the class is made;
``plan`` makes about ninety classes before it reads anything, and the ``__repr__`` was the
longest source of each. The shared one gives the same text as attrs's (the class's name,
then ``name=value`` of each field attrs would show, in order, a field's own ``repr=``
function where it has one, and ``...`` for an object already being shown higher up);
a class that writes its own ``__repr__`` keeps it, as with attrs.

:func:`as_tuple` is ``converter=tuple`` for a field: attrs reads each converter's signature,
and a built-in's is text that :mod:`inspect` parses (tokenizer, ``ast``), a Python function's not.
"""

from __future__ import annotations

import threading

import attrs

_showing = threading.local()


def frozen(maybe_cls=None, **options):
    """attrs's ``frozen``, with the shared ``__repr__``."""
    return _made(attrs.frozen, maybe_cls, options)


def define(maybe_cls=None, **options):
    """attrs's ``define``, with the shared ``__repr__``."""
    return _made(attrs.define, maybe_cls, options)


def _made(decorate, maybe_cls, options):
    def wrap(cls):
        if options.get("repr", True) is False or "__repr__" in cls.__dict__:
            return decorate(cls, **options)
        made = decorate(cls, **{**options, "repr": False})
        made.__repr__ = attrs_repr
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
