"""The lab encoded as its file: the small parts on the first line, then one user a line,
each user list's lines reused from the last write when the list cannot have changed since;
and files written whole, atomically."""

from __future__ import annotations

import operator
import os
from typing import Optional, get_origin

import attrs
import msgspec

from providers.lab.store_decode import FORMAT, VERSION, converter, plain
from providers.lab.store_lines import is_pending
from providers.lab.world import AdChanges, AdUser, Lab

encoder = msgspec.json.Encoder()

BIG = ("ad_users", "cloud_users")  # in the order the file holds them


def dumps_bytes(lab):
    """The file: the small parts on the first line, then one user a line (see :mod:`providers.lab.store`)."""
    head, lines, _sources = encoded(lab)
    return b"".join(parts(head, lines))


def encoded(lab, last=None):
    """The first line's document (bytes), each user list's lines, and where those lines came from.

    ``last``: what was written before (see ``providers.lab.store``), whose lines are reused
    for a list that cannot have changed since."""
    body = {f.name: converter.unstructure(getattr(lab, f.name), f.type) for f in attrs.fields(Lab) if f.init and f.name not in BIG}
    head = encoder.encode({"format": FORMAT, "version": VERSION, "lab": body})
    lines, sources = {}, {}
    for name in BIG:
        lines[name], sources[name] = _user_lines(name, getattr(lab, name), last)
    return head, lines, sources


@attrs.define(eq=False)
class Source:
    """The list a list's lines were encoded from, and what proves it unchanged since."""

    users: list
    members: Optional[list] = None  # a copy of it, for a list whose members change only when set
    seen: Optional[int] = None  # the members' change count then


def _counted(cls, counter):
    """``counter`` if every field of ``cls`` is a string, a number or None (then setting a field,
    which ``counter`` counts, is the only way to change one), else None."""
    return counter if all(plain(f.type) and get_origin(f.type) not in (list, dict) for f in attrs.fields(attrs.resolve_types(cls))) else None


# Per user list, what counts its members' changes (a list whose members can change without it: none).
_COUNTERS = {"ad_users": _counted(AdUser, AdChanges)}


def _user_lines(name, users, last):
    known = last.sources.get(name) if last is not None else None
    if is_pending(users):
        if known is not None and known.users is users:
            return last.lines[name], known
        return users.raw_lines(), Source(users)
    counter = _COUNTERS.get(name)
    if counter is not None and _unchanged(known, users, counter):
        return last.lines[name], known  # no member set, none added, removed or replaced: the same lines
    encode = encoder.encode
    # The users are encoded by msgspec from the attrs objects themselves (all plain fields).
    lines = [encode(u) for u in users]
    return lines, Source(users, list(users), counter.seen) if counter is not None else Source(users)


def _unchanged(known, users, counter):
    return (
        known is not None
        and known.seen == counter.seen
        and known.members is not None
        and len(known.members) == len(users)
        and all(map(operator.is_, known.members, users))
    )


def parts(head, lines):
    """The file's bytes, in pieces: the first line's document opened up to hold the user lists."""
    pieces = [head[:-2], b',"ad_users":[\n']
    _join_lines(lines["ad_users"], pieces)
    pieces.append(b'],"cloud_users":[\n')
    _join_lines(lines["cloud_users"], pieces)
    pieces.append(b"]}}\n")
    return pieces


def _join_lines(lines, pieces):
    if lines:
        pieces.append(b",\n".join(lines))
        pieces.append(b"\n")


def write_atomically(path, pieces):
    """Writes ``pieces`` to a new file renamed over ``path``: a crash never leaves half a file."""
    import tempfile  # only to write: plan never loads it

    fd, tmp = tempfile.mkstemp(prefix=".lab-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(pieces)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
