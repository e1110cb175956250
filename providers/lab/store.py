"""The lab file: the lab's whole state as versioned JSON.

Format (version 1)::

    {"format": "syncprep-lab", "version": 1, "lab": { ...the Lab, unstructured... }}

A file of another format, of a version this syncprep does not know (0, or newer), or one
that is not JSON, is cut short, or has a key or a value the lab does not know is refused
with one line; a UTF-8 byte order mark before it is allowed (Notepad writes one). Writes
go to a temporary file that is renamed over the old one, so a crash never leaves a
half-written lab.

The JSON is read and written with msgspec: at 100,000 users the file is 72 MiB and
``json`` with cattrs took seconds each way (issue 19). The users, who are nearly
all of it, are decoded into strict msgspec structs (unknown keys refused, types
checked) and encoded straight from the lab's attrs objects; the few small parts
(the server's rules, connectors, SKUs...) are built as cattrs builds them, whose converters
canonicalise them: by a quick road where they fit, else by cattrs, which says what is wrong
(:mod:`providers.lab.store_decode`, :mod:`providers.lab.store_structure`, :mod:`providers.lab.store_encode`).

A checkpoint writes what changed, not the lab: after the lab file is written
whole, each save by the same process appends one line to the change log next
to it (``lab.json.changes``, :mod:`providers.lab.store_changes`), and a save that
changed nothing writes nothing. The log is folded into a new lab file when it
grows past half of the file, and when apply's target closes; readers apply it.

The file is written with one user per line (still one JSON document), so that it
can be read a block of lines at a time (:mod:`providers.lab.store_lines`): the whole
file is never in memory, and the AD users, which ``plan`` never reads, are checked but
not built until something uses them (a ``list`` that fills itself on first use; a save
writes their lines back as they were). Until then they are kept as their place in the
open file, read again from it; where it cannot stay open (Windows) or a change log
replaced them, as their lines, compressed. A file in any other layout (written by
hand, or by an older syncprep; even one user over two lines, or two on one line) is
read whole, with the same checks.

This module is what the rest of syncprep calls: load, save, compact, identity.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path

import attrs

from reconciler.classes import define
from reconciler.errors import LabError
from providers.lab.store_changes import TooBig, append_change, change_record, changes_path, read_changes
from providers.lab.store_decode import FORMAT, VERSION, loads, no_collection, settle
from providers.lab.store_encode import dumps_bytes, encoded, parts, write_atomically
from providers.lab.store_lines import ad_object_classes, read_lines

__all__ = [
    "COMPACT_AT", "DEFAULT_PATH", "FORMAT", "VERSION", "ad_object_classes", "changes_path", "compact", "dumps",
    "dumps_bytes", "identity", "load", "load_or_create", "load_with_identity", "loads", "save",
]

DEFAULT_PATH = Path(".syncprep") / "lab.json"

#: A change log longer than this fraction of the lab file is folded into a new lab file instead.
COMPACT_AT = 0.5


# ---------------------------------------------------------------------------- reading


def load(path):
    return load_with_identity(path)[0]


def load_with_identity(path):
    """The lab at ``path`` (with its change log, if any) and the :func:`identity` it was read at."""
    path = Path(path)
    with no_collection():  # the lines make a hundred thousand objects and no cycles
        try:
            lab, data, stat, log_stat = _read(path, changes_path(path))
        except FileNotFoundError:
            raise LabError(f"{path}: no lab here; create one with 'syncprep lab init'") from None
        except OSError as exc:
            raise LabError(f"{exc.filename or path}: cannot read the lab file: {exc.strerror}") from None
        if lab is None:
            lab = loads(data, str(path))
        # Before the collector is back: it would first scan all of them once (tens of milliseconds).
        settle(len(lab.cloud_users))
    return lab, (_identity(stat), _identity(log_stat) if log_stat is not None else None)


def _read(path, log):
    """(the lab, or None and the file's bytes to read whole), and the files' stats."""
    # The log first: if a new lab file replaces the old one meanwhile, the log opened
    # belongs to the old one and is ignored, never applied to the wrong file.
    with contextlib.ExitStack() as stack:
        try:
            log_fh = stack.enter_context(open(log, "rb"))
        except FileNotFoundError:
            log_fh = None
        fh = stack.enter_context(open(path, "rb"))
        stat = os.fstat(fh.fileno())
        log_stat = os.fstat(log_fh.fileno()) if log_fh is not None else None
        changes = read_changes(log_fh, log, fh) if log_fh is not None else None
        lab = read_lines(fh, str(path), changes)
        if lab is not None:
            return lab, None, stat, log_stat
        if changes is not None:  # another layout: read it whole
            raise LabError(f"{log}: a change log for a lab file syncprep did not write; remove one of them")
        fh.seek(0)
        return None, fh.read(), stat, log_stat


def load_or_create(path, users=20):
    """The lab at ``path``, created from the default scenario on first use."""
    from providers.lab import scenario

    path = Path(path)
    if path.exists():
        return load(path), False
    # Only the default .syncprep/ is made on first use: a mistyped --lab makes no folders.
    if not path.parent.exists() and path.parent.resolve() != DEFAULT_PATH.parent.resolve():
        raise LabError(f"{path}: the folder {path.parent} does not exist")
    lab = scenario.build("default", users=users)
    save(lab, path)
    return lab, True


def dumps(lab):
    return dumps_bytes(lab).decode("utf-8")


# ---------------------------------------------------------------------------- identity


def _identity(stat):
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _stat_identity(path):
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def identity(path):
    """What tells one version of the lab from another: the lab file's identity and its change
    log's. Every whole write renames a new file over the old one and every checkpoint after it
    appends to the log, so the same identity means the same content."""
    base = _stat_identity(path)
    return None if base is None else (base, _stat_identity(changes_path(path)))


# ---------------------------------------------------------------------------- writing


@define(eq=False)
class _OnDisk:
    """What this process last wrote to a lab file (and its change log), line by line."""

    body: dict  # the small parts, unstructured (what the change log diffs)
    head: bytes  # the first line's document: ``body`` encoded
    lines: dict  # name -> [line, ...]
    sources: dict  # name -> the store_encode.Source of its lines
    check: dict  # the lab file's size and CRC-32, which its change log names
    identity: tuple
    log_size: int = 0


# What this process last wrote to each lab file: one file remembered at a time (a
# 100,000-user lab is 72 MiB of lines).
_written = {}


def save(lab, path):
    """Writes the lab; returns its new :func:`identity`.

    When this process wrote the file (and its change log) last and nobody changed them
    since, only what changed is appended to the change log, durably, as one line (nothing
    at all when nothing changed). Otherwise, or when the log would grow past half of the
    lab file, the whole lab is written to a new file renamed over the old one, and the
    log is removed."""
    path = Path(path)
    key = os.path.abspath(path)
    last = _written.get(key)
    if last is not None and identity(path) != last.identity:
        last = None  # another process wrote meanwhile, or someone removed the file
    written = _encoded(lab, last)
    if last is not None:
        appended = _append(path, key, last, *written)
        if appended is not None:
            return appended
    return _write_whole(path, key, *written)


def _encoded(lab, last=None):
    return encoded(lab, last)


def _append(path, key, last, body, head, lines, sources):
    """The new identity after appending the change (or nothing) to the log; None: write whole."""
    try:
        record = change_record(last, body, head, lines, COMPACT_AT * last.check["size"] - last.log_size)
    except TooBig:
        return None
    if record is None:
        return last.identity
    # Encoding took a while: another process may have written the lab meanwhile. Then
    # the log is not ours to append to (it may be gone, or name the old file): write whole.
    lab_file = last.identity[0]
    if identity(path) != last.identity or not append_change(path, last, record):
        return None
    last.body, last.head, last.lines, last.sources = body, head, lines, sources
    last.identity = identity(path)
    if last.identity is None or last.identity[0] != lab_file:
        _written.pop(key, None)  # the lab file changed under the append: next time, whole
    return last.identity


def compact(path):
    """Folds the change log this process wrote into a new lab file (apply's end does this).

    Nothing happens unless this process wrote the log and nobody changed the files since:
    reading a lab never rewrites it."""
    path = Path(path)
    key = os.path.abspath(path)
    last = _written.get(key)
    if last is None or last.log_size == 0 or identity(path) != last.identity:
        return identity(path)
    return _write_whole(path, key, last.body, last.head, last.lines, last.sources)


def _write_whole(path, key, body, head, lines, sources):
    pieces = parts(head, lines)
    size, crc = 0, 0
    for piece in pieces:
        size, crc = size + len(piece), zlib.crc32(piece, crc)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, pieces)
    # After the rename: a crash in between leaves a log whose lab file is gone, which is ignored.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(changes_path(path))
    _written.clear()
    _written[key] = _OnDisk(body, head, lines, sources, {"size": size, "crc32": crc}, identity(path))
    return _written[key].identity
