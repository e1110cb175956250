"""The lab encoded as its file: the small parts on the first line, then one user a line,
each user list's lines reused from the last write when the list cannot have changed since;
and files written whole, atomically."""

from __future__ import annotations

import operator
import os
from typing import Optional

import attrs
import msgspec

from reconciler.classes import define
from providers.lab.store_decode import FORMAT, VERSION, converter
from providers.lab.store_lines import is_pending
from providers.lab.world import Lab, Stamps

encoder = msgspec.json.Encoder()

BIG = ("ad_users", "cloud_users")  # in the order the file holds them


def dumps_bytes(lab):
    """The file: the small parts on the first line, then one user a line (see :mod:`providers.lab.store`)."""
    _body, head, lines, _sources = encoded(lab)
    return b"".join(parts(head, lines))


def encoded(lab, last=None):
    """The small parts unstructured (new dicts and lists, shared with nothing: what the change
    log diffs), the first line's document (bytes), each user list's lines, and where those
    lines came from.

    ``last``: what was written before (see ``providers.lab.store``), whose lines are reused
    for a list that cannot have changed since."""
    body = {f.name: converter().unstructure(getattr(lab, f.name), f.type) for f in attrs.fields(Lab) if f.init and f.name not in BIG}
    head = encoder.encode({"format": FORMAT, "version": VERSION, "lab": body})
    lines, sources = {}, {}
    for name in BIG:
        lines[name], sources[name] = _user_lines(name, getattr(lab, name), last)
    return body, head, lines, sources


@define(eq=False)
class Source:
    """The list a list's lines were encoded from, and what tells which of them changed since."""

    users: list
    members: Optional[list] = None  # a copy of it: the users each line was encoded from, in order
    stamp: int = 0  # Stamps.now then: a user stamped later was set since
    licences: int = 0  # Stamps.licences then: if it moved, some licence was set in place


def _user_lines(name, users, last):
    known = last.sources.get(name) if last is not None else None
    if is_pending(users):
        if known is not None and known.users is users:
            return last.lines[name], known
        return users.raw_lines(), Source(users, None, Stamps.now, Stamps.licences)
    if known is not None and known.members is None and known.users is users and getattr(users, "as_filled", None) is not None:
        # Written while pending, filled since: its lines are those its objects were built from.
        known = Source(users, users.as_filled, known.stamp, known.licences)
    source = Source(users, list(users), Stamps.now, Stamps.licences)
    if known is None or known.members is None or known.licences != Stamps.licences:
        # The users are encoded by msgspec from the attrs objects themselves (all plain fields).
        return [encoder.encode(u) for u in users], source
    return _encoded_again(known, last.lines[name], users), source


def _encoded_again(known, lines, users):
    """The lines of ``users``: ``lines`` (of ``known.members``) for a user that is the same
    object and was not set since, the others encoded (issue 19: a checkpoint costs what changed)."""
    encode, seen = encoder.encode, known.stamp
    if len(known.members) == len(users) and all(map(operator.is_, known.members, users)):
        changed = [i for i, user in enumerate(users) if user._stamp > seen]
        if not changed:
            return lines
        lines = list(lines)
        for i in changed:
            lines[i] = encode(users[i])
        return lines
    # Users added, removed or replaced: each line found by the object it was encoded from
    # (``known.members`` keeps those alive, so no other object can have their ids).
    by_id = {id(member): line for member, line in zip(known.members, lines)}
    return [line if (line := by_id.get(id(user))) is not None and user._stamp <= seen else encode(user) for user in users]


def parts(head, lines):
    """The file's bytes, in pieces: the first line's document opened up to hold the user lists."""
    pieces = [head[:-2], b',"ad_users":[\n']
    _join_lines(lines["ad_users"], pieces)
    pieces.append(b'],"cloud_users":[\n')
    _join_lines(lines["cloud_users"], pieces)
    pieces.append(b"]}}\n")
    return pieces


_CHUNK = 4096  # lines joined at a time: no 80 MiB piece at 100,000 users


def _join_lines(lines, pieces):
    for start in range(0, len(lines), _CHUNK):
        if start:
            pieces.append(b",\n")
        pieces.append(b",\n".join(lines[start : start + _CHUNK]))
    if lines:
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
