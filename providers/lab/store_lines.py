"""Reading a lab file laid out one user a line (as :mod:`providers.lab.store_encode` writes it)
a block of whole lines at a time: the whole file is never in memory, and the AD users, which
``plan`` never reads, are checked but kept as their place in the file until something uses them.

Each block (64 KiB of lines) is decoded strictly with one msgspec call; when it does not
decode, its lines are decoded one by one, so that the error names the line (counted then) and
the user it is about, or, if the lines do not end with a comma each but the last, the file is
read whole instead. Lines are not counted nor matched to users while all is well (a user
over two lines is read as JSON reads it): the AD users' lines are split again when used, and
if they are not a user each (laid out by hand), they are decoded whole then instead.

The AD users' lines are not kept in memory: the reader keeps the file open (a duplicate of its
descriptor) and reads them again from it when they are used, after checking that they are the
bytes checked at load (their CRC-32). Syncprep replaces a lab file by renaming a new one over it,
which leaves the open file as it was (POSIX keeps a replaced file while it is open), so a lab
read before a checkpoint still reads the version it loaded. Where ``os.pread`` is missing
(Windows, where an open file also keeps ``os.replace`` from replacing it), and when a change
log replaced some of the AD users, the lines are kept in memory instead, compressed.
"""

from __future__ import annotations

import operator
import os
import sys
import weakref
import zlib

import msgspec

from reconciler.errors import LabError
from providers.lab.store_decode import LINE_DECODERS, MIRRORS, USER_TYPES, decode_user, loads, no_collection, strip_bom
from providers.lab.world import AdUser, LabCloudUser

_OPENING = b',"ad_users":[\n'
_CLOSINGS = (b'],"cloud_users":[\n', b"]}}\n")
_SEPARATOR = b",\n"  # between two users' lines

#: Whether the AD users' lines can be read again from the open file (see above).
KEEP_FILE_OPEN = hasattr(os, "pread")


def read_lines(fh, source, changes=None):
    """The lab from a file in the one-user-a-line layout, with ``changes`` (a change log
    read by :mod:`providers.lab.store_changes`) applied; None for another layout."""
    first = strip_bom(fh.readline())
    if not first.endswith(_OPENING) or not _head_is_a_lab(first, source):
        return None  # let the whole-file reading give its own message
    in_file = KEEP_FILE_OPEN and (changes is None or not changes.replaces("ad_users"))
    blocks = _Blocks(fh, fh.tell())
    sinks = {"ad_users": _AdSink(source, blocks, fh if in_file else None), "cloud_users": _CloudSink(source, blocks)}
    if changes is not None:
        sinks = {name: changes.patched(sink, name) for name, sink in sinks.items()}
    skeleton = [first[:-1]]
    for sink, closing in zip(sinks.values(), _CLOSINGS):
        if not _read_list(blocks, closing, sink):
            return None
        skeleton.append(closing[:-1])
    if not blocks.at_end():
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


# Bytes read at a time: below the 128 KiB from which malloc maps new pages for each block
# (copying a megabyte block cost four times as much as reading it, in page faults).
_BLOCK = 1 << 16


class _Blocks:
    """The rest of an open file, a block of whole lines at a time, each with its offset in the file."""

    def __init__(self, fh, offset):
        self.fh, self.offset, self.rest = fh, offset, b""

    def take(self):
        """The next lines (b"" at the end of the file; a last line without its newline is never
        given) and the offset of the first."""
        data = self.rest
        cut = data.rfind(b"\n") + 1
        while not cut or len(data) < _BLOCK // 2:
            more = self.fh.read(_BLOCK)
            if not more:
                break
            data += more
            cut = data.rfind(b"\n") + 1
        block, self.rest = data[:cut], data[cut:]
        offset, self.offset = self.offset, self.offset + cut
        return block, offset

    def give_back(self, tail):
        """``tail``, the end of the lines last taken, is read again next."""
        self.rest = tail + self.rest
        self.offset -= len(tail)

    def at_end(self):
        return not self.rest and not self.fh.read(1)

    def line_at(self, offset):
        """The number of the line at ``offset`` (counted only to name a line in an error; 0 for None)."""
        if offset is None:
            return 0
        here = self.fh.tell()
        self.fh.seek(0)
        number, left = 1, offset
        while left > 0 and (chunk := self.fh.read(min(left, _BLOCK))):
            number, left = number + chunk.count(b"\n"), left - len(chunk)
        self.fh.seek(here)
        return number


def _read_list(blocks, closing, sink):
    """Feeds ``sink`` the lines of one user list, a block at a time, up to the line ``closing``.

    False if the list is not laid out a user a line with a comma after each line but the last."""
    fed = False
    while True:
        block, offset = blocks.take()
        if not block:
            return False
        end = 0 if block.startswith(closing) else (block.find(b"\n" + closing) + 1 or None)
        lines = block if end is None else block[:end]
        if lines:
            last = end is not None
            if lines.endswith(_SEPARATOR) == last:
                return False
            if not sink.add_block(lines[: -len(_SEPARATOR)] if not last else lines[:-1], offset):
                return False
            fed = True
        elif fed:
            return False  # the line before the end had a comma after it
        if end is not None:
            blocks.give_back(block[end + len(closing) :])
            return True


class _Sink:
    """One user list's lines, decoded strictly a block at a time."""

    def __init__(self, name, source, blocks):
        self.name, self.source, self.blocks = name, source, blocks
        self.decode_one = LINE_DECODERS[name].decode
        self.decode_many = msgspec.json.Decoder(list[MIRRORS[USER_TYPES[name]].struct]).decode
        self.count = 0

    def add_block(self, body, offset):
        """Lines joined by ``,\\n``, the first at ``offset`` in the file (None: lines of the
        change log's). False: not laid out a user a line."""
        try:
            structs = self.decode_many(b"[" + body + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError):
            structs = self._one_by_one(body, offset)
            if structs is None:
                return False
        self.take(structs, body, offset)
        self.count += len(structs)
        return True

    def _one_by_one(self, body, offset):
        """Each line decoded alone: the error names its line and its user. None: not a user a line.

        A line of the lab file that is not JSON on its own is not a user a line either (a user laid
        out over two lines, two users on one): the file is then read whole, which reads it if it is
        valid and otherwise gives the true error. Deciding here by the line, not by the block, keeps
        the answer the same wherever the 64 KiB blocks are cut (a spread user across a cut was
        refused as "cut short")."""
        lines = body.split(b"\n")
        if not all(line.endswith(b",") for line in lines[:-1]) or any(line.startswith(b"]") for line in lines):
            return None
        lines = [line.removesuffix(b",") if i < len(lines) - 1 else line for i, line in enumerate(lines)]
        if offset is not None and not all(map(_is_json, lines)):
            return None
        number = self.blocks.line_at(offset)
        return [decode_user(self.decode_one, line, number + i, self.count + i, self.name, self.source) for i, line in enumerate(lines)]


def _is_json(line, _decode=msgspec.json.Decoder().decode):
    try:
        _decode(line)
    except msgspec.DecodeError:
        return False
    return True


class _CloudSink(_Sink):
    """Cloud users, decoded (strictly) and built as their lines are read."""

    def __init__(self, source, blocks):
        super().__init__("cloud_users", source, blocks)
        self.users = []

    def take(self, structs, body, offset):
        with no_collection():
            self.users += msgspec.convert(structs, list[LabCloudUser], from_attributes=True)

    def done(self):
        return self.users


_GUID, _CLASS = operator.attrgetter("object_guid"), operator.attrgetter("object_class")


class _AdSink(_Sink):
    """AD users, checked as their lines are read and kept as where they are in the file (``fh``),
    or, when ``fh`` is None, as those lines, compressed, until used."""

    def __init__(self, source, blocks, fh):
        super().__init__("ad_users", source, blocks)
        self.lines = _InFile(fh, source) if fh is not None else _Compressed()
        self.classes = {}  # objectGUID -> object class, which the lab tenant reports for synced users

    def take(self, structs, body, offset):
        # In C, not a Python loop: 100,000 users. Interned, the classes are two strings, not 100,000.
        self.classes.update(zip(map(_GUID, structs), map(sys.intern, map(_CLASS, structs))))
        self.lines.add(body, offset)

    def done(self):
        users = LazyList(self.lines.done(), self.count, _unpack_ad_users)
        users.object_classes = self.classes
        self.lines = self.classes = None
        return users


class _InFile:
    """Lines of an open file, read again from it on demand: where they start and end, and their
    CRC-32 to tell that what is read again is what was checked."""

    def __init__(self, fh, source):
        self.source, self.fd, self.closing = source, None, None
        self.fh, self.start, self.end, self.crc = fh, None, None, 0

    def add(self, body, offset):
        if self.start is None:
            self.start = offset
        else:
            if offset != self.end + len(_SEPARATOR):  # pragma: no cover - the blocks follow one another
                raise AssertionError("a gap between two blocks of lines")
            self.crc = zlib.crc32(_SEPARATOR, self.crc)
        self.crc, self.end = zlib.crc32(body, self.crc), offset + len(body)

    def done(self):
        if self.start is not None:
            self.fd = os.dup(self.fh.fileno())
            self.closing = weakref.finalize(self, os.close, self.fd)  # when built, or dropped
        self.fh = None
        return self

    def read(self):
        if self.start is None:
            return b""
        data = os.pread(self.fd, self.end - self.start, self.start)
        if len(data) != self.end - self.start or zlib.crc32(data) != self.crc:
            raise LabError(f"{self.source}: the lab file changed on disk while syncprep was using it (edited in place?); run the command again")
        return data


class _Compressed:
    """Lines kept in memory, compressed."""

    def __init__(self):
        self.compressor, self.chunks, self.packed = zlib.compressobj(1), [], None

    def add(self, body, offset):
        self.chunks.append(self.compressor.compress(_SEPARATOR + body if self.chunks else body))

    def done(self):
        self.chunks.append(self.compressor.flush())
        self.packed, self.chunks = b"".join(self.chunks), None
        return self

    def read(self):
        return zlib.decompress(self.packed)


def _ad_lines(packed, count):
    return packed.read().split(_SEPARATOR) if count else []


def _unpack_ad_users(packed, count):
    """(the AD users, whether each of their lines, split at ``,\\n``, is one user's).

    A file written by syncprep has a user a line; one laid out otherwise by hand (a user over
    several lines, two on one) was checked whole at load, and is decoded whole here; its lines
    are then not the users' (see :mod:`providers.lab.store_encode`, which encodes them again)."""
    if not count:
        return [], True
    data = packed.read()
    lines, decode, users = data.split(_SEPARATOR), LINE_DECODERS["ad_users"].decode, []
    with no_collection():
        if len(lines) == count:
            try:
                for start in range(0, count, _BATCH):
                    users += msgspec.convert([decode(line) for line in lines[start : start + _BATCH]], list[AdUser], from_attributes=True)
                return users, True
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass
        structs = msgspec.json.decode(b"[" + data + b"]", type=list[MIRRORS[AdUser].struct])
        return msgspec.convert(structs, list[AdUser], from_attributes=True), False


_BATCH = 4096  # AD users built at a time


class LazyList(list):
    """A list that fills itself with ``fill(packed, count)`` (which returns the items, and whether
    they were built a line each) the first time it is used in any way.

    The AD users of a lab read from its file: checked at load, built only if read.
    Until then the file's writer writes back the lines they were read from.
    One thing it cannot see: ``plain_list + it`` (list's C code reads the right operand's
    items directly); nothing here concatenates the AD users that way.
    """

    __slots__ = ("_fill", "_packed", "_count", "object_classes", "as_filled")

    def __init__(self, packed, count, fill):
        super().__init__()
        self._packed, self._count, self._fill = packed, count, fill
        #: Once filled: the objects built from its lines, in their order (None if they were not a user a line).
        self.as_filled = None

    def _load(self):
        if self._fill is not None:
            users, by_line = self._fill(self._packed, self._count)  # if it raises, still pending
            self._fill = self._packed = None
            self.as_filled = users if by_line else None
            list.extend(self, users)

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
