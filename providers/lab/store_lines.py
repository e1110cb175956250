"""Reading a lab file laid out one user a line (as :mod:`providers.lab.store_encode` writes it)
a line at a time: the whole file is never in memory, and the AD users, which ``plan`` never
reads, are checked but kept as their lines (compressed) until something uses them.
"""

from __future__ import annotations

import sys
import zlib

import msgspec

from reconciler.errors import LabError
from providers.lab.store_decode import LINE_DECODERS, MIRRORS, USER_TYPES, decode_user, loads, no_collection, strip_bom
from providers.lab.world import AdUser, LabCloudUser

_OPENING = b',"ad_users":[\n'
_CLOSINGS = (b'],"cloud_users":[\n', b"]}}\n")


def read_lines(fh, source, changes=None):
    """The lab from a file in the one-user-a-line layout, with ``changes`` (a change log
    read by :mod:`providers.lab.store_changes`) applied; None for another layout."""
    first = strip_bom(fh.readline())
    if not first.endswith(_OPENING) or not _head_is_a_lab(first, source):
        return None  # let the whole-file reading give its own message
    sinks = {"ad_users": _AdSink(source), "cloud_users": _CloudSink(source)}
    if changes is not None:
        sinks = {name: changes.patched(sink, name) for name, sink in sinks.items()}
    skeleton, number = [first[:-1]], 1
    for sink, closing in zip(sinks.values(), _CLOSINGS):
        number = _stream_array(fh, number, closing, sink)
        if number is None:
            return None
        skeleton.append(closing[:-1])
    if fh.read(1):
        return None
    head = b"".join(skeleton)
    lab = loads(head, source) if changes is None else changes.patched_lab(head, source)
    lab.cloud_users = sinks["cloud_users"].done()
    lab.ad_users = sinks["ad_users"].done()
    return lab


def _head_is_a_lab(first, source):
    """The first line, closed, is a whole document: its format and version are checked first."""
    try:
        loads(first[: -len(_OPENING)] + b"}}", source, head_only=True)
    except LabError:
        return False
    return True


def _stream_array(fh, number, closing, sink):
    """Feeds ``sink`` the elements of one array laid out one a line, up to the line ``closing``.

    Returns the number of the last line read, or None if the array is not laid out so.
    """
    previous = None
    for line in fh:
        number += 1
        if line == closing:
            if previous is not None:
                if previous.endswith(b","):
                    return None
                sink.add(previous, number - 1)
            return number
        if not line.endswith(b"\n") or line.startswith(b"]"):
            return None
        if previous is not None:
            if not previous.endswith(b","):
                return None
            sink.add(previous[:-1], number - 1)
        previous = line[:-1]
    return None


_BATCH = 4096  # lines decoded with one call


class _Sink:
    """One user list's lines, decoded strictly a batch at a time (one msgspec call for 4,096
    lines); when a batch does not decode, each of its lines is decoded alone, so that the
    error names the line and the user it is about."""

    def __init__(self, name, source):
        self.name, self.source = name, source
        self.decode_one = LINE_DECODERS[name].decode
        self.decode_many = msgspec.json.Decoder(list[MIRRORS[USER_TYPES[name]].struct]).decode
        self.lines, self.numbers, self.count = [], [], 0

    def add(self, line, number):
        self.lines.append(line)
        self.numbers.append(number)
        if len(self.lines) == _BATCH:
            self._flush()

    def _flush(self):
        lines = self.lines
        if lines:
            self.take(self._decoded(lines), lines)
            self.count += len(lines)
            self.lines, self.numbers = [], []

    def _decoded(self, lines):
        try:
            structs = self.decode_many(b"[" + b",".join(lines) + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError):
            structs = None
        if structs is None or len(structs) != len(lines):  # e.g. two users on one line
            structs = [
                decode_user(self.decode_one, line, number, self.count + i, self.name, self.source)
                for i, (line, number) in enumerate(zip(lines, self.numbers))
            ]
        return structs


class _CloudSink(_Sink):
    """Cloud users, decoded (strictly) and built as their lines are read."""

    def __init__(self, source):
        super().__init__("cloud_users", source)
        self.users = []

    def take(self, structs, lines):
        with no_collection():
            self.users += msgspec.convert(structs, list[LabCloudUser], from_attributes=True)

    def done(self):
        self._flush()
        return self.users


class _AdSink(_Sink):
    """AD users, checked as their lines are read and kept as those lines, compressed, until used."""

    def __init__(self, source):
        super().__init__("ad_users", source)
        self.compressor = zlib.compressobj(1)
        self.chunks = []
        self.classes = {}  # objectGUID -> object class, which the lab tenant reports for synced users

    def take(self, structs, lines):
        classes = self.classes
        for user in structs:
            classes[user.object_guid] = sys.intern(user.object_class)
        self.chunks.append(self.compressor.compress(b"\n".join(lines) + b"\n"))

    def done(self):
        self._flush()
        self.chunks.append(self.compressor.flush())
        users = LazyList(b"".join(self.chunks), self.count, _unpack_ad_users)
        users.object_classes = self.classes
        self.chunks = self.classes = None
        return users


def _ad_lines(packed, count):
    return zlib.decompress(packed).split(b"\n")[:count] if count else []


def _unpack_ad_users(packed, count):
    lines, users, decode = _ad_lines(packed, count), [], LINE_DECODERS["ad_users"].decode
    with no_collection():
        for start in range(0, len(lines), _BATCH):
            users += msgspec.convert([decode(line) for line in lines[start : start + _BATCH]], list[AdUser], from_attributes=True)
    return users


class LazyList(list):
    """A list that fills itself with ``fill(packed, count)`` the first time it is used in any way.

    The AD users of a lab read from its file: checked at load, built only if read.
    Until then the file's writer writes back the lines they were read from.
    One thing it cannot see: ``plain_list + it`` (list's C code reads the right operand's
    items directly); nothing here concatenates the AD users that way.
    """

    __slots__ = ("_fill", "_packed", "_count", "object_classes", "as_filled")

    def __init__(self, packed, count, fill):
        super().__init__()
        self._packed, self._count, self._fill = packed, count, fill
        self.as_filled = None  # once filled: the objects built from the lines, in their order

    def _load(self):
        fill, self._fill = self._fill, None
        if fill is not None:
            packed, self._packed = self._packed, None
            self.as_filled = fill(packed, self._count)
            list.extend(self, self.as_filled)

    @property
    def pending(self):
        return self._fill is not None

    def raw_lines(self):
        """The JSON lines it will be filled from (while pending)."""
        return _ad_lines(self._packed, self._count)


def is_pending(users):
    """Whether ``users`` is a :class:`LazyList` not filled yet."""
    return isinstance(users, LazyList) and users.pending


def ad_object_classes(lab):
    """AD objectGUID -> object class for every AD user, without building AD users not built yet."""
    users = lab.ad_users
    if is_pending(users):
        return users.object_classes
    return {u.object_guid: u.object_class for u in users}


def _filled_first(name):
    method = getattr(list, name)

    def wrapper(self, *args, **kwargs):
        self._load()
        for other in args:  # list's C code reads another list's items directly: fill it too
            if isinstance(other, LazyList):
                other._load()
        return method(self, *args, **kwargs)

    wrapper.__name__ = name
    return wrapper


for _name in (
    "__len__", "__iter__", "__reversed__", "__getitem__", "__setitem__", "__delitem__", "__contains__",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__add__", "__iadd__", "__mul__", "__rmul__",
    "__imul__", "__repr__", "__reduce_ex__", "append", "extend", "insert", "pop", "remove", "clear", "copy",
    "count", "index", "reverse", "sort",
):
    setattr(LazyList, _name, _filled_first(_name))
