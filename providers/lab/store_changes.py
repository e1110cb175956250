"""The lab file's change log: what each checkpoint changed, appended next to the lab file.

``lab.json.changes``, next to the lab file, holds the checkpoints written since the lab
file was, one JSON document a line::

    {"format": "syncprep-lab-changes", "version": 1, "lab_file": {"size": N, "crc32": C}}
    {"set": [[["server", "clock"], 75], ...], "drop": [[...], ...],
     "users": {"cloud_users": [100000, [[17, {...a whole user...}], ...]]}}

The first line names the lab file the log belongs to (its size and CRC-32: a log left
behind by a crash after a new lab file was renamed into place, or next to a lab file
replaced by hand, belongs to another file and is ignored). Each further line is one
checkpoint: the small parts' values that changed (by their key path in "lab"; "drop"
removes a key), and per user list its new length and the users that changed, by index.
A last line without its newline is a checkpoint whose write never finished (the
process was killed): it did not happen. Anything else that is not exactly this is
refused in one line naming the log, like the lab file itself.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import msgspec

from reconciler.errors import LabError
from providers.lab.store_decode import LINE_DECODERS, VERSION, Corrupt, check_version, json_error, loads, validation_detail
from providers.lab.store_encode import BIG, encoder, write_atomically

CHANGES_FORMAT = "syncprep-lab-changes"


def changes_path(path):
    path = Path(path)
    return path.with_name(path.name + ".changes")


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    set: list[tuple[list[str], msgspec.Raw]] = []
    drop: list[list[str]] = []
    users: dict[str, tuple[int, list[tuple[int, msgspec.Raw]]]] = {}


class _LabFile(msgspec.Struct, forbid_unknown_fields=True):
    size: int
    crc32: int


class _LogHead(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    lab_file: _LabFile


_RECORD_DECODER = msgspec.json.Decoder(_Record)


# ---------------------------------------------------------------------------- writing


class TooBig(Exception):
    """The changes would make the log too long: the lab is written whole instead."""


def change_record(last, body, head, lines, room):
    """The log line (bytes, with its newline) that turns what is on disk (``last``) into
    ``body`` (encoded as ``head``) and ``lines``; None if nothing changed.

    Raises :class:`TooBig` as soon as it is clear the line would be longer than ``room``."""
    record = {}
    users = _user_changes(last.lines, lines, room)
    if head != last.head:
        sets, drops = [], []
        _tree_changes(last.body, body, [], sets, drops)
        record.update({key: value for key, value in (("set", sets), ("drop", drops)) if value})
    if users:
        record["users"] = users
    if not record:
        return None
    line = encoder.encode(record) + b"\n"
    if len(line) > room:
        raise TooBig
    return line


def _user_changes(old_lines, lines, room):
    """Per user list that changed: its new length and its changed lines by index."""
    users = {}
    for name in BIG:  # the users first: they tell soonest that the line would be too long
        old, now = old_lines[name], lines[name]
        if old is now or old == now:
            continue
        changed = [i for i, (was, line) in enumerate(zip(old, now)) if was != line]
        changed += range(len(old), len(now))
        room -= sum(len(now[i]) for i in changed)
        if room < 0:
            raise TooBig
        users[name] = (len(now), [(i, msgspec.Raw(now[i])) for i in changed])
    return users


#: A dict this big (the connector space: a key per AD object) whose keys mostly changed (after
#: an Initial sync) is set whole: one value instead of a key path per key.
_WHOLE_AT = 1000


def _tree_changes(old, new, path, sets, drops):
    try:
        differ = dict(new.items() - old.items())  # values of plain types: a set difference, in C
    except TypeError:  # unhashable values (lists, dicts): compared one by one
        differ = new
    if path and len(new) >= _WHOLE_AT and 2 * len(differ) > len(new):
        sets.append((path, new))
        return
    for key, value in differ.items():
        if key not in old:
            sets.append((path + [key], value))
        elif old[key] != value:
            if isinstance(value, dict) and isinstance(old[key], dict):
                _tree_changes(old[key], value, path + [key], sets, drops)
            else:
                sets.append((path + [key], value))
    drops.extend(path + [key] for key in old if key not in new)


def append_change(path, last, record):
    """Appends ``record`` to the change log of the lab file at ``path`` (creating the log,
    header first, for the first checkpoint after a whole write). False if the log is gone."""
    log = changes_path(path)
    if last.log_size == 0:
        # A new log appears whole, its first checkpoint with it.
        head = encoder.encode({"format": CHANGES_FORMAT, "version": VERSION, "lab_file": last.check}) + b"\n"
        write_atomically(log, [head, record])
        last.log_size = len(head) + len(record)
        return True
    try:
        # Never O_CREAT: a log that is gone was removed by a whole write of another process,
        # and a log made here would have no header line (the lab would be refused).
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return False
    with os.fdopen(fd, "ab") as fh:
        fh.write(record)
        fh.flush()
        os.fsync(fh.fileno())
    last.log_size += len(record)
    return True


# ---------------------------------------------------------------------------- reading


class Changes:
    """A change log, read and checked: the small parts' patches and the users to put in place."""

    def __init__(self, log):
        self.log = log
        self.sets = []  # (path, value), in order; a drop is (path, _DROP)
        self.users = {name: _ListChanges() for name in BIG}

    def patched(self, sink, name):
        """``sink`` (fed one user list's lines from the lab file) fed the log's version of the list."""
        return _Patched(sink, self.users[name], name, self.log)

    def replaces(self, name):
        """Whether the log changes the user list ``name`` (then its lines are not the lab file's)."""
        return self.users[name].length is not None

    def patched_lab(self, head, source):
        """The Lab of the first line's document ``head`` with the small parts' changes applied.

        A value the lab refuses is the log's fault if the lab file's own value is not."""
        if not self.sets:
            return loads(head, source)
        try:
            return loads(self._patch_head(head), source)
        except LabError as exc:
            loads(head, source)  # the lab file's own fault, if it has one, is said so
            raise LabError(f"{self.log}: corrupt change log: {str(exc).split(': corrupt lab file: ', 1)[-1]}") from None

    def _patch_head(self, head):
        document = msgspec.json.decode(head)
        for path, value in self.sets:
            node = document["lab"]
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict) or (value is _DROP and path[-1] not in node):
                raise LabError(f"{self.log}: corrupt change log: no {'.'.join(path)} in the lab to change")
            if value is _DROP:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        return encoder.encode(document)


_DROP = object()


class _ListChanges:
    """One user list's changes: its final length, the lowest length it had meanwhile, the lines to put in."""

    def __init__(self):
        self.length = self.floor = None
        self.lines = {}

    def add(self, length, changed):
        self.length = length
        self.floor = length if self.floor is None else min(self.floor, length)
        for index in [i for i in self.lines if i >= length]:
            del self.lines[index]
        self.lines.update(changed)


def read_changes(fh, log, base_fh):
    """The change log open at ``fh``, if it belongs to the lab file open at ``base_fh``; else None."""
    lines = fh.read().split(b"\n")[:-1]  # the last piece is empty, or a checkpoint cut short: not written
    if not lines:
        return None
    header = _header(lines[0], log)
    if (header.lab_file.size, header.lab_file.crc32) != check_of(base_fh):
        return None  # the log of an earlier lab file
    changes = Changes(log)
    for number, line in enumerate(lines[1:], 2):
        try:
            _take_record(changes, _RECORD_DECODER.decode(line))
        except msgspec.ValidationError as exc:
            raise LabError(f"{log}: corrupt change log: line {number}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise LabError(f"{log}: corrupt change log: {json_error(line, exc, number)}") from None
        except Corrupt as exc:
            raise LabError(f"{log}: corrupt change log: line {number}: {exc}") from None
    return changes


def _header(line, log):
    try:
        header = msgspec.json.decode(line, type=dict[str, Any])
    except (msgspec.ValidationError, msgspec.DecodeError):
        header = {}
    if header.get("format") != CHANGES_FORMAT:
        raise LabError(f"{log}: not a syncprep lab change log")
    check_version(header.get("version"), f"{log}: lab change log", "upgrade syncprep")
    try:
        return msgspec.convert(header, _LogHead)
    except msgspec.ValidationError as exc:
        raise LabError(f"{log}: corrupt change log: line 1: {exc}") from None


def _take_record(changes, record):
    for path, raw in record.set:
        _check_key_path(path)
        changes.sets.append((path, msgspec.json.decode(raw)))
    for path in record.drop:
        _check_key_path(path)
        changes.sets.append((path, _DROP))
    for name, (length, changed) in record.users.items():
        if name not in changes.users:
            raise Corrupt(f"no user list {name!r} in the lab")
        if length < 0:
            raise Corrupt(f"{name} has a negative length {length}")
        changes.users[name].add(length, _user_lines(name, length, changed))


def _check_key_path(path):
    if not path:
        raise Corrupt("an empty key path")
    if path[0] in BIG:  # the writer never sets them so: the lab file's user lines would win unseen
        raise Corrupt(f"{path[0]} is changed by index, not set by key path")


def _user_lines(name, length, changed):
    decode, lines = LINE_DECODERS[name].decode, {}
    for index, raw in changed:
        if not 0 <= index < length:
            raise Corrupt(f"{name}[{index}] is outside the list's {length} users")
        try:
            decode(raw)
        except msgspec.ValidationError as exc:
            raise Corrupt(validation_detail(exc, f"$.lab.{name}[{index}]")) from None
        lines[index] = bytes(raw)
    return lines


def check_of(fh):
    """The size and CRC-32 of the file open at ``fh`` (read from the start; left at the start)."""
    fh.seek(0)
    size, crc = 0, 0
    while chunk := fh.read(1 << 20):
        size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    fh.seek(0)
    return size, crc


class _Patched:
    """A sink fed the lab file's lines of one user list, handing on the change log's version of the list."""

    def __init__(self, sink, changes, name, log):
        self.sink, self.changes, self.name, self.log = sink, changes, name, log
        self.index = 0

    def add_block(self, body, offset):
        changes = self.changes
        if changes.length is None:
            return self.sink.add_block(body, offset)
        # Split as the log's writer split them: the lines of the lab file the log names.
        lines = body.split(b",\n")
        kept = [self._line(index, line) for index, line in enumerate(lines, self.index) if index < changes.length]
        self.index += len(lines)
        return not kept or self.sink.add_block(b",\n".join(kept), None)

    def _line(self, index, line):
        changes = self.changes
        return changes.lines.get(index, line) if index < changes.floor else self._changed(index)

    def _changed(self, index):
        try:
            return self.changes.lines[index]
        except KeyError:
            raise LabError(f"{self.log}: corrupt change log: it has no {self.name}[{index}]") from None

    def done(self):
        if self.changes.length is not None and self.index < self.changes.length:
            added = [self._changed(index) for index in range(self.index, self.changes.length)]
            if not self.sink.add_block(b",\n".join(added), None):  # pragma: no cover - each was checked
                raise LabError(f"{self.log}: corrupt change log: {self.name} added that are not one user a line")
        return self.sink.done()
