"""Broken copies of a JSON-like value, for the tests that check two readers refuse alike."""


def mutations(value, others, path=(), first_item_only=False):
    """``(path, replacement)`` for every place of ``value``: each of ``others`` that differs from
    what is there, and for a dict a key more or one less; lists are walked item by item
    (``first_item_only``: their first item alone)."""
    yield from ((path, other) for other in others if type(other) is not type(value) or other != value)
    if isinstance(value, dict):
        yield path, {**value, "nonsense": 1}
        for key in value:
            yield path, {k: v for k, v in value.items() if k != key}
            yield from mutations(value[key], others, (*path, key), first_item_only)
    if isinstance(value, list):
        for index, item in enumerate(value[:1] if first_item_only else value):
            yield from mutations(item, others, (*path, index), first_item_only)


def replaced(value, path, new):
    """A copy of ``value`` with what is at ``path`` replaced by ``new`` (the rest shared)."""
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = replaced(value[head], rest, new)
    return copy
