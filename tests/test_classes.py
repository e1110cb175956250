"""reconciler.classes (issue 19): attrs classes whose ``__repr__``, ``__eq__`` and ``__hash__`` are
made without compiling show, compare and hash exactly as attrs's generated ones; and the
classes ``plan`` makes use them."""

import importlib
import inspect
import re

import attrs
import pytest

from reconciler import classes


def _pair(body, **options):
    """The same class made by attrs and by reconciler.classes (``body``: a function returning it)."""
    return body(attrs.define, options), body(classes.define, options)


def _plain(decorate, options):
    @decorate(**options)
    class Plain:
        name: str
        count: int = 0
        hidden: str = attrs.field(default="secret", repr=False)
        shown: str = attrs.field(default="x", repr=lambda value: f"<{value}>")
        later: int = attrs.field(init=False, default=5)
        unset: int = attrs.field(init=False)
        nested: object = None

    return Plain


def _frozen(decorate, options):
    @(attrs.frozen if decorate is attrs.define else classes.frozen)(**options)
    class Value:
        id: str = attrs.field(eq=False)
        items: tuple = ()

    return Value


def _own(decorate, options):
    @decorate(**options)
    class Own:
        name: str

        def __repr__(self):
            return f"Own<{self.name}>"

    return Own


@pytest.mark.parametrize("options", [{}, {"slots": False}, {"eq": False}, {"repr": False}], ids=str)
def test_the_shared_repr_shows_what_attrs_shows(options):
    for body in (_plain, _frozen, _own):
        made_by_attrs, ours = _pair(body, **options)
        values = {"name": "a'b", "nested": ["é", {"k": (1, None)}]} if body is _plain else {"name": "n"} if body is _own else {"id": "7", "items": (1.5, "x")}
        shown = [re.sub(r" at 0x[0-9a-f]+", "", repr(cls(**values))) for cls in (made_by_attrs, ours)]  # repr=False: object's
        assert shown[0] == shown[1], body.__name__


def test_an_object_shown_inside_itself_is_three_dots_as_with_attrs():
    made_by_attrs, ours = _pair(_plain)
    shown = []
    for cls in (made_by_attrs, ours):
        outer = cls("outer")
        outer.nested = [outer, cls("inner", nested=outer)]
        shown.append(repr(outer))
    assert shown[0] == shown[1] and shown[0].count("...") == 2


def test_a_subclass_and_a_class_in_a_function_are_named_as_attrs_names_them():
    made_by_attrs, ours = _pair(_frozen)
    shown = [(repr(cls("1")), repr(type("Sub", (cls,), {"__slots__": ()})("2"))) for cls in (made_by_attrs, ours)]
    # The qualname "_frozen.<locals>.Value": the part after ">."; a subclass by its own name.
    assert shown[0] == shown[1] == ("Value(id='1', items=())", "Sub(id='2', items=())")


def _compared(decorate, options):
    kind = attrs.define if decorate is attrs.define else classes.define
    options = dict(options)
    if options.pop("frozen", False):
        kind = attrs.frozen if decorate is attrs.define else classes.frozen

    @kind(**options)
    class Compared:
        name: str = attrs.field(eq=str.lower)
        count: float = 0
        noted: str = attrs.field(default="", eq=False)
        hashed_only_by_eq: tuple = attrs.field(default=(), hash=False)

    return Compared


NAN = float("nan")
PAIRS = [
    (("a",), ("a",)),
    (("a",), ("A",)),  # the same by the eq= key
    (("a",), ("b",)),
    (("a", 1), ("a", 2)),
    (("a", 1, "x"), ("a", 1, "y")),  # a field not compared
    (("a", 1, "", (1,)), ("a", 1, "", (2,))),  # compared, not hashed
    (("a", NAN), ("a", NAN)),  # the same NaN: not equal, as with attrs
]


def _outcome(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc)


@pytest.mark.parametrize("options", [{}, {"frozen": True}, {"eq": False}, {"frozen": True, "eq": False}], ids=str)
def test_the_shared_eq_and_hash_compare_and_hash_as_attrs(options):
    made_by_attrs, ours = _pair(_compared, **options)
    for left, right in PAIRS:
        seen = []
        for cls in (made_by_attrs, ours):
            a, b, same = cls(*left), cls(*right), cls(*left)
            hashes = _outcome(lambda: (hash(a) == hash(b), hash(a) == hash(same)))
            identity = _outcome(lambda: hash(a) == object.__hash__(a))
            seen.append((a == b, a != b, a == same, a != a, a.__eq__(1), a.__ne__(1), a == 1, hashes, identity))
        assert seen[0] == seen[1], (options, left, right)


def test_a_class_that_writes_its_own_eq_keeps_it():
    @classes.frozen
    class Own:
        name: str

        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

    assert Own("a") == Own("b") and Own("a") == 1


#: The modules plan imports whose classes are made by reconciler.classes.
MODULES = [
    "reconciler.model", "reconciler.desired", "reconciler.operations", "reconciler.steps", "reconciler.rules",
    "reconciler.recreated", "reconciler.provider", "reconciler.progress", "reconciler.journal", "reconciler.apply",
    "providers.endpoints", "providers.lab.world", "providers.lab.store", "providers.lab.store_encode",
]


@pytest.mark.parametrize("name", MODULES)
def test_the_classes_plan_makes_share_the_repr(name):
    module = importlib.import_module(name)
    made = [cls for _, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == name and attrs.has(cls)]
    assert made
    assert [cls.__name__ for cls in made if cls.__repr__ is not classes.attrs_repr] == []
    compiled = [cls.__name__ for cls in made if "generated" in getattr(cls.__eq__, "__code__", _Code).co_filename]
    assert compiled == []  # attrs's __eq__ (and __hash__) are compiled from generated source


class _Code:
    co_filename = "not a function: object's"


@pytest.mark.parametrize("name", MODULES)
def test_no_field_converts_with_a_built_in(name):
    """attrs reads a converter's signature; a built-in's (``tuple``) is text, parsed by
    :mod:`inspect` with the tokenizer: ``classes.as_tuple`` does the same, quicker."""
    module = importlib.import_module(name)
    made = [cls for _, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == name and attrs.has(cls)]
    built_in = [f"{cls.__name__}.{a.name}" for cls in made for a in attrs.fields(cls) if a.converter is not None and not inspect.isfunction(a.converter)]
    assert built_in == []
