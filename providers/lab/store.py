"""The lab file: the lab's whole state as versioned JSON.

Format (version 1)::

    {"format": "syncprep-lab", "version": 1, "lab": { ...the Lab, unstructured... }}

A file of another format or a newer version is refused with one line, and so is
one that is not JSON, is cut short, or has a key or a value the lab does not know;
writes go to a temporary file that is renamed over the old one, so a crash never
leaves a half-written lab.

The JSON is read and written with msgspec: at 100,000 users the file is 72 MiB and
``json`` with cattrs took seconds each way (issue 19). The users, who are nearly
all of it, are decoded into strict msgspec structs (unknown keys refused, types
checked) and encoded straight from the lab's attrs objects; the few small parts
(the server's rules, connectors, SKUs...) still go through cattrs, whose converters
canonicalise them.

A checkpoint writes what changed, not the lab: after the lab file is written
whole, each save by the same process appends one line to the change log next
to it (``lab.json.changes``, see "the change log" below), and a save that
changed nothing writes nothing. The log is folded into a new lab file when it
grows past half of the file, and when apply's target closes; readers apply it.

The file is written with one user per line (still one JSON document), so that it
can be read a line at a time: the whole file is never in memory, and the AD users,
which ``plan`` never reads, are checked but kept as their lines until something
uses them (a ``list`` that fills itself on first use; a save writes the lines back
as they were). A file in any other layout (written by hand, or by an older
syncprep) is read whole, with the same checks.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import re
import sys
import zlib
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin

import attrs
import cattrs
import msgspec

from reconciler.errors import LabError
from providers.lab.world import AdChanges, AdUser, Lab, LabCloudUser, LabLicense, Server

FORMAT = "syncprep-lab"
VERSION = 1
DEFAULT_PATH = Path(".syncprep") / "lab.json"

_converter = cattrs.Converter(forbid_extra_keys=True)
_encoder = msgspec.json.Encoder()

# ---------------------------------------------------------------------------- decoding
#
# Each attrs class below gets a msgspec struct with the same fields (forbid_unknown_fields):
# fields of plain JSON types are decoded and checked by msgspec, the others (rules, enums,
# connectors) are decoded as plain JSON and structured by cattrs afterwards.

_PLAIN = (int, str, bool, type(None))
_MIRRORED = (Lab, Server, AdUser, LabCloudUser, LabLicense)


def _plain(tp):
    if tp in _PLAIN:
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union:
        return all(_plain(a) for a in args)
    if origin is list:
        return _plain(args[0])
    if origin is dict:
        return args[0] is str and _plain(args[1])
    return False


class _Mirror:
    """An attrs class, its msgspec struct, and how to build the one from the other."""

    def __init__(self, cls, mirrors):
        attrs.resolve_types(cls)
        self.cls = cls
        self.later = []  # (index, name, build) for the fields that are not plain
        fields = []
        for index, f in enumerate(a for a in attrs.fields(cls) if a.init):
            tp, build = self._field_type(f.type, mirrors)
            if build is not None:
                self.later.append((index, f.name, build))
            if f.default is attrs.NOTHING:
                fields.append((f.name, tp))
            elif isinstance(f.default, attrs.Factory):
                fields.append((f.name, tp, msgspec.field(default_factory=f.default.factory)))
            else:
                fields.append((f.name, tp, f.default))
        self.struct = msgspec.defstruct(f"_{cls.__name__}File", fields, forbid_unknown_fields=True, gc=False)

    @staticmethod
    def _field_type(tp, mirrors):
        if _plain(tp):
            return tp, None
        if tp in mirrors:
            mirror = mirrors[tp]
            return mirror.struct, mirror.build
        if get_origin(tp) is list and get_args(tp)[0] in mirrors:
            # Lists of users: msgspec builds the attrs objects from the structs in C, setting
            # their slots directly (no __init__, no on_setattr hooks): 100,000 in a fraction of a second.
            return list[mirrors[get_args(tp)[0]].struct], lambda structs, tp=tp: msgspec.convert(structs, tp, from_attributes=True)
        return Any, lambda value, tp=tp: _converter.structure(value, tp)

    def build(self, struct):
        values = msgspec.structs.astuple(struct)
        if self.later:
            values = list(values)
            for index, name, build in self.later:
                try:
                    values[index] = build(values[index])
                except _Corrupt as exc:
                    raise _Corrupt(f"{name}.{exc}") from None
                except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
                    raise _Corrupt(f"{name}: {_cattrs_detail(exc)}") from None
        return self.cls(*values)


def _mirrors():
    mirrors = {}
    for cls in reversed(_MIRRORED):  # the inner classes first
        mirrors[cls] = _Mirror(cls, mirrors)
    return mirrors


_MIRRORS = _mirrors()
_LAB_DECODER = msgspec.json.Decoder(_MIRRORS[Lab].struct)
_DOCUMENT_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])


class _Corrupt(Exception):
    pass


def _cattrs_detail(exc):
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc)[:3])
    return str(exc)


def _json_error(data, exc):
    """``invalid JSON at line L, column C`` from msgspec's byte offset (or the end, if cut short)."""
    match = re.search(r"\(byte (\d+)\)", str(exc))
    offset = int(match.group(1)) if match else len(data)
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    reason = "cut short" if "truncated" in str(exc) else str(exc).split(" (byte")[0].removeprefix("JSON is malformed: ")
    return f"invalid JSON at line {line}, column {column} ({reason})"


def loads(data, source="lab file", head_only=False):
    """The Lab in ``data`` (bytes or text), or LabError with one line.

    ``head_only``: check the format and the version, nothing more."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        document = _DOCUMENT_DECODER.decode(data)
    except msgspec.ValidationError:
        raise LabError(f"{source}: not a syncprep lab file (no \"format\": \"{FORMAT}\")") from None
    except msgspec.DecodeError as exc:
        raise LabError(f"{source}: not a lab file: {_json_error(data, exc)}") from None
    if _value(document.get("format")) != FORMAT:
        raise LabError(f"{source}: not a syncprep lab file (no \"format\": \"{FORMAT}\")")
    version = _value(document.get("version"))
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise LabError(f"{source}: lab format version {version!r} is newer than this syncprep reads ({VERSION}); upgrade syncprep or run 'syncprep lab init --force'")
    if head_only:
        return None
    extra = sorted(set(document) - {"format", "version", "lab"})
    if extra or "lab" not in document:
        detail = f"unknown key {extra[0]!r}" if extra else "no \"lab\""
        raise LabError(f"{source}: corrupt lab file: {detail}")
    raw = document.pop("lab")
    del document
    try:
        struct = _LAB_DECODER.decode(raw)
        del raw
        return _MIRRORS[Lab].build(struct)
    except msgspec.ValidationError as exc:
        detail = str(exc).replace("`$", "`$.lab", 1) if " - at `$" in str(exc) else f"{exc} - at `$.lab`"
        raise LabError(f"{source}: corrupt lab file: {detail}") from None
    except _Corrupt as exc:
        raise LabError(f"{source}: corrupt lab file: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise LabError(f"{source}: corrupt lab file: {exc}") from None


def _value(raw):
    try:
        return msgspec.json.decode(raw) if raw is not None else None
    except msgspec.DecodeError:
        return None


def load(path):
    return load_with_identity(path)[0]


def load_with_identity(path):
    """The lab at ``path`` (with its change log, if any) and the :func:`identity` it was read at."""
    path = Path(path)
    log = changes_path(path)
    try:
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
            changes = _read_changes(log_fh, log, fh, str(path)) if log_fh is not None else None
            lab = _read_lines(fh, str(path), changes)
            if lab is None:  # another layout: read it whole
                if changes is not None:
                    raise LabError(f"{log}: a change log for a lab file syncprep did not write; remove one of them")
                fh.seek(0)
                data = fh.read()
    except FileNotFoundError:
        raise LabError(f"{path}: no lab here; create one with 'syncprep lab init'") from None
    except OSError as exc:
        raise LabError(f"{exc.filename or path}: cannot read the lab file: {exc.strerror}") from None
    if lab is None:
        lab = loads(data, str(path))
    return lab, (_identity(stat), _identity(log_stat) if log_stat is not None else None)


class _Layout(Exception):
    """Not the one-user-a-line layout this module writes: read the file whole instead."""


def _read_lines(fh, source, changes=None):
    """The lab from a file in the layout :func:`dumps_bytes` writes, or None for another layout."""
    first = fh.readline()
    if not first.endswith(b',"ad_users":[\n'):
        return None
    # The first line, closed, is a whole document: its format and version are checked first.
    try:
        loads(first[: -len(b',"ad_users":[\n')] + b"}}", source, head_only=True)
    except LabError:
        return None  # let the whole-file reading give its own message
    skeleton = [first[:-1]]
    ad = _AdSink(source)
    cloud = _CloudSink(source)
    if changes is not None:
        ad, cloud = _Patched(ad, changes.users["ad_users"], "ad_users"), _Patched(cloud, changes.users["cloud_users"], "cloud_users")
    number = 1
    for sink, closing in ((ad, b'],"cloud_users":[\n'), (cloud, b"]}}\n")):
        number = _stream_array(fh, number, closing, sink)
        if number is None:
            return None
        skeleton.append(closing[:-1])
    if fh.read(1):
        return None
    head = b"".join(skeleton)
    if changes is not None:
        head = changes.patch_head(head, source)
    lab = loads(head, source)
    lab.cloud_users = cloud.done()
    lab.ad_users = ad.done()
    return lab


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


_USER_TYPES = {"ad_users": AdUser, "cloud_users": LabCloudUser}
_LINE_DECODERS = {name: msgspec.json.Decoder(_MIRRORS[cls].struct) for name, cls in _USER_TYPES.items()}


def _decode_user(decode, line, number, index, name, source):
    try:
        return decode(line)
    except msgspec.ValidationError as exc:
        where = f"$.lab.{name}[{index}]"
        detail = str(exc).replace("`$", f"`{where}", 1) if " - at `$" in str(exc) else f"{exc} - at `{where}`"
        raise LabError(f"{source}: corrupt lab file: {detail}") from None
    except msgspec.DecodeError as exc:
        detail = _json_error(line, exc).replace("at line 1,", f"at line {number},", 1)
        raise LabError(f"{source}: not a lab file: {detail}") from None


class _CloudSink:
    """Cloud users, decoded (strictly) and built as their lines are read."""

    def __init__(self, source):
        self.source, self.users, self.batch = source, [], []
        self.decode = _LINE_DECODERS["cloud_users"].decode

    def add(self, line, number):
        self.batch.append(_decode_user(self.decode, line, number, len(self.users) + len(self.batch), "cloud_users", self.source))
        if len(self.batch) == 4096:
            self._flush()

    def _flush(self):
        with _no_collection():
            self.users += msgspec.convert(self.batch, list[LabCloudUser], from_attributes=True)
        self.batch = []

    def done(self):
        self._flush()
        return self.users


class _AdSink:
    """AD users, checked as their lines are read and kept as those lines, compressed, until used."""

    def __init__(self, source):
        self.source, self.count = source, 0
        self.decode = _LINE_DECODERS["ad_users"].decode
        self.compressor = zlib.compressobj(1)
        self.chunks = []
        self.classes = {}  # objectGUID -> object class, which the lab tenant reports for synced users

    def add(self, line, number):
        user = _decode_user(self.decode, line, number, self.count, "ad_users", self.source)
        self.classes[user.object_guid] = sys.intern(user.object_class)
        self.chunks.append(self.compressor.compress(line + b"\n"))
        self.count += 1

    def done(self):
        self.chunks.append(self.compressor.flush())
        users = _LazyList(b"".join(self.chunks), self.count, _unpack_ad_users)
        users.object_classes = self.classes
        self.chunks = self.classes = None
        return users


def _ad_lines(packed, count):
    return zlib.decompress(packed).split(b"\n")[:count] if count else []


def _unpack_ad_users(packed, count):
    lines, users, decode = _ad_lines(packed, count), [], _LINE_DECODERS["ad_users"].decode
    with _no_collection():
        for start in range(0, len(lines), 4096):
            users += msgspec.convert([decode(line) for line in lines[start : start + 4096]], list[AdUser], from_attributes=True)
    return users


@contextlib.contextmanager
def _no_collection():
    """A hundred thousand new objects and no cycles among them: the collector would only cost time."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class _LazyList(list):
    """A list that fills itself with ``fill(packed, count)`` the first time it is used in any way.

    The AD users of a lab read from its file: checked at load, built only if read.
    Until then :func:`dumps_bytes` writes back the lines they were read from.
    One thing it cannot see: ``plain_list + it`` (list's C code reads the right operand's
    items directly); nothing here concatenates the AD users that way.
    """

    __slots__ = ("_fill", "_packed", "_count", "object_classes")

    def __init__(self, packed, count, fill):
        super().__init__()
        self._packed, self._count, self._fill = packed, count, fill

    def _load(self):
        fill, self._fill = self._fill, None
        if fill is not None:
            packed, self._packed = self._packed, None
            list.extend(self, fill(packed, self._count))

    @property
    def pending(self):
        return self._fill is not None

    def raw_lines(self):
        """The JSON lines it will be filled from (while pending)."""
        return _ad_lines(self._packed, self._count)


def ad_object_classes(lab):
    """AD objectGUID -> object class for every AD user, without building AD users not built yet."""
    users = lab.ad_users
    if isinstance(users, _LazyList) and users.pending:
        return users.object_classes
    return {u.object_guid: u.object_class for u in users}


def _filled_first(name):
    method = getattr(list, name)

    def wrapper(self, *args, **kwargs):
        self._load()
        for other in args:  # list's C code reads another list's items directly: fill it too
            if isinstance(other, _LazyList):
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
    setattr(_LazyList, _name, _filled_first(_name))


# ---------------------------------------------------------------------------- encoding

_BIG = ("ad_users", "cloud_users")  # in the order the file holds them


def dumps_bytes(lab):
    """The file: the small parts on the first line, then one user a line (see the module's docstring)."""
    head, lines, _sources = _encoded(lab)
    return b"".join(_parts(head, lines))


def _encoded(lab, last=None):
    """The first line's document (bytes), each user list's lines, and where those lines came from.

    ``last``: what was written before (an :class:`_OnDisk`), whose lines are reused for a
    list that cannot have changed since."""
    body = {f.name: _converter.unstructure(getattr(lab, f.name), f.type) for f in attrs.fields(Lab) if f.init and f.name not in _BIG}
    head = _encoder.encode({"format": FORMAT, "version": VERSION, "lab": body})
    lines, sources = {}, {}
    for name in _BIG:
        lines[name], sources[name] = _user_lines(name, getattr(lab, name), last)
    return head, lines, sources


@attrs.define(eq=False)
class _Source:
    """The list a list's lines were encoded from, and what proves it unchanged since."""

    users: list
    members: Optional[list] = None  # a copy of it, for a list whose members change only when set
    seen: Optional[int] = None  # the members' change count then


def _counted(cls, counter):
    """``counter`` if every field of ``cls`` is a string, a number or None (then setting a field,
    which ``counter`` counts, is the only way to change one), else None."""
    return counter if all(_plain(f.type) and get_origin(f.type) not in (list, dict) for f in attrs.fields(attrs.resolve_types(cls))) else None


# Per user list, what counts its members' changes (a list whose members can change without it: none).
_COUNTERS = {"ad_users": _counted(AdUser, AdChanges)}


def _user_lines(name, users, last):
    known = last.sources.get(name) if last is not None else None
    if isinstance(users, _LazyList) and users.pending:
        if known is not None and known.users is users:
            return last.lines[name], known
        return users.raw_lines(), _Source(users)
    counter = _COUNTERS.get(name)
    if (
        counter is not None
        and known is not None
        and known.seen == counter.seen
        and known.members is not None
        and len(known.members) == len(users)
        and all(map(operator.is_, known.members, users))
    ):
        return last.lines[name], known  # no member set, none added, removed or replaced: the same lines
    encode = _encoder.encode
    # The users are encoded by msgspec from the attrs objects themselves (all plain fields).
    lines = [encode(u) for u in users]
    return lines, _Source(users, list(users), counter.seen) if counter is not None else _Source(users)


def _parts(head, lines):
    parts = [head[:-2], b',"ad_users":[\n']
    _join_lines(lines["ad_users"], parts)
    parts.append(b'],"cloud_users":[\n')
    _join_lines(lines["cloud_users"], parts)
    parts.append(b"]}}\n")
    return parts


def _join_lines(lines, parts):
    if lines:
        parts.append(b",\n".join(lines))
        parts.append(b"\n")


def dumps(lab):
    return dumps_bytes(lab).decode("utf-8")


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


@attrs.define(eq=False)
class _OnDisk:
    """What this process last wrote to a lab file (and its change log), line by line."""

    head: bytes
    lines: dict  # name -> [line, ...]
    sources: dict  # name -> the _Source of its lines
    check: dict  # the lab file's size and CRC-32, which its change log names
    identity: tuple
    log_size: int = 0
    tree: Optional[dict] = None  # the head, decoded, when a change needed it

    def head_tree(self):
        if self.tree is None:
            self.tree = msgspec.json.decode(self.head)["lab"]
        return self.tree


# What this process last wrote to each lab file: one file remembered at a time (a
# 100,000-user lab is 72 MiB of lines).
_written = {}

#: A change log longer than this fraction of the lab file is folded into a new lab file instead.
COMPACT_AT = 0.5


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
    head, lines, sources = _encoded(lab, last)
    if last is not None:
        try:
            record, tree = _change_record(last, head, lines, COMPACT_AT * last.check["size"] - last.log_size)
        except _TooBig:
            pass
        else:
            if record is None:
                return last.identity
            # Encoding took a while: another process may have written the lab meanwhile. Then
            # the log is not ours to append to (it may be gone, or name the old file): write whole.
            lab_file = last.identity[0]
            if identity(path) == last.identity and _append_change(path, last, record):
                last.head, last.lines, last.sources, last.tree = head, lines, sources, tree
                last.identity = identity(path)
                if last.identity is None or last.identity[0] != lab_file:
                    _written.pop(key, None)  # the lab file changed under the append: next time, whole
                return last.identity
    return _write_whole(path, key, head, lines, sources)


def compact(path):
    """Folds the change log this process wrote into a new lab file (apply's end does this).

    Nothing happens unless this process wrote the log and nobody changed the files since:
    reading a lab never rewrites it."""
    path = Path(path)
    key = os.path.abspath(path)
    last = _written.get(key)
    if last is None or last.log_size == 0 or identity(path) != last.identity:
        return identity(path)
    return _write_whole(path, key, last.head, last.lines, last.sources)


def _write_whole(path, key, head, lines, sources):
    parts = _parts(head, lines)
    size, crc = 0, 0
    for part in parts:
        size, crc = size + len(part), zlib.crc32(part, crc)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, parts)
    # After the rename: a crash in between leaves a log whose lab file is gone, which is ignored.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(changes_path(path))
    _written.clear()
    _written[key] = _OnDisk(head, lines, sources, {"size": size, "crc32": crc}, identity(path))
    return _written[key].identity


def _write_atomically(path, parts):
    import tempfile  # only to write: plan never loads it

    fd, tmp = tempfile.mkstemp(prefix=".lab-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(parts)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- the change log
#
# ``lab.json.changes``, next to the lab file, holds the checkpoints written since the lab
# file was, one JSON document a line:
#
#     {"format": "syncprep-lab-changes", "version": 1, "lab_file": {"size": N, "crc32": C}}
#     {"set": [[["server", "clock"], 75], ...], "drop": [[...], ...],
#      "users": {"cloud_users": [100000, [[17, {...a whole user...}], ...]]}}
#
# The first line names the lab file the log belongs to (its size and CRC-32: a log left
# behind by a crash after a new lab file was renamed into place, or next to a lab file
# replaced by hand, belongs to another file and is ignored). Each further line is one
# checkpoint: the small parts' values that changed (by their key path in "lab"; "drop"
# removes a key), and per user list its new length and the users that changed, by index.
# A last line without its newline is a checkpoint whose write never finished (the
# process was killed): it did not happen. Anything else that is not exactly this is
# refused in one line, like the lab file itself.

CHANGES_FORMAT = "syncprep-lab-changes"


def changes_path(path):
    path = Path(path)
    return path.with_name(path.name + ".changes")


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    set: list[tuple[list[str], msgspec.Raw]] = []
    drop: list[list[str]] = []
    users: dict[str, tuple[int, list[tuple[int, msgspec.Raw]]]] = {}


class _LogHead(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    lab_file: dict[str, int]


_RECORD_DECODER = msgspec.json.Decoder(_Record)


class _TooBig(Exception):
    """The changes would make the log too long: the lab is written whole instead."""


def _change_record(last, head, lines, room):
    """The log line (bytes, with its newline) that turns what is on disk into ``head`` and
    ``lines`` (None if nothing changed), and ``head`` decoded if that was needed.

    Raises :class:`_TooBig` as soon as it is clear the line would be longer than ``room``."""
    record, tree, budget = {}, last.tree, room
    users = {}
    for name in _BIG:  # the users first: they tell soonest that the line would be too long
        old, now = last.lines[name], lines[name]
        if old is now or old == now:
            continue
        changed = [i for i, (was, line) in enumerate(zip(old, now)) if was != line]
        changed += range(len(old), len(now))
        room -= sum(len(now[i]) for i in changed)
        if room < 0:
            raise _TooBig
        users[name] = (len(now), [(i, msgspec.Raw(now[i])) for i in changed])
    if head != last.head:
        tree = msgspec.json.decode(head)["lab"]
        sets, drops = [], []
        _tree_changes(last.head_tree(), tree, [], sets, drops)
        if sets:
            record["set"] = sets
        if drops:
            record["drop"] = drops
    if users:
        record["users"] = users
    if not record:
        return None, tree
    line = _encoder.encode(record) + b"\n"
    if len(line) > budget:
        raise _TooBig
    return line, tree


def _tree_changes(old, new, path, sets, drops):
    try:
        differ = dict(new.items() - old.items())  # values of plain types: a set difference, in C
    except TypeError:  # unhashable values (lists, dicts): compared one by one
        differ = new
    for key, value in differ.items():
        if key not in old:
            sets.append((path + [key], value))
        elif old[key] != value:
            if isinstance(value, dict) and isinstance(old[key], dict):
                _tree_changes(old[key], value, path + [key], sets, drops)
            else:
                sets.append((path + [key], value))
    drops.extend(path + [key] for key in old if key not in new)


def _append_change(path, last, record):
    log = changes_path(path)
    if last.log_size == 0:
        # A new log appears whole, its first checkpoint with it.
        head = _encoder.encode({"format": CHANGES_FORMAT, "version": VERSION, "lab_file": last.check}) + b"\n"
        _write_atomically(log, [head, record])
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


class _Changes:
    """A change log, read and checked: the small parts' patches and the users to put in place."""

    def __init__(self):
        self.sets = []  # (path, value), in order; a drop is (path, _DROP)
        self.users = {name: _ListChanges() for name in _BIG}

    def patch_head(self, head, source):
        """The first line's document with the small parts' changes applied."""
        if not self.sets:
            return head
        document = msgspec.json.decode(head)
        for path, value in self.sets:
            node = document["lab"]
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict) or (value is _DROP and path[-1] not in node):
                raise LabError(f"{source}: corrupt change log: no {'.'.join(path)} in the lab to change")
            if value is _DROP:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        return _encoder.encode(document)


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


def _read_changes(fh, log, base_fh, source):
    """The change log open at ``fh``, if it belongs to the lab file open at ``base_fh``; else None."""
    data = fh.read()
    lines = data.split(b"\n")[:-1]  # the last piece is empty, or a checkpoint cut short: not written
    if not lines:
        return None
    try:
        header = msgspec.json.decode(lines[0], type=dict[str, Any])
    except (msgspec.ValidationError, msgspec.DecodeError):
        header = {}
    version = header.get("version")
    if header.get("format") != CHANGES_FORMAT or not isinstance(version, int) or isinstance(version, bool):
        raise LabError(f"{log}: not a syncprep lab change log")
    if version > VERSION:
        raise LabError(f"{log}: lab change log version {version} is newer than this syncprep reads ({VERSION}); upgrade syncprep")
    try:
        header = msgspec.convert(header, _LogHead)
    except msgspec.ValidationError as exc:
        raise LabError(f"{log}: corrupt change log: line 1: {exc}") from None
    if header.lab_file != _check_of(base_fh):
        return None  # the log of an earlier lab file
    changes = _Changes()
    for number, line in enumerate(lines[1:], 2):
        try:
            record = _RECORD_DECODER.decode(line)
            _take_record(changes, record, source)
        except msgspec.ValidationError as exc:
            raise LabError(f"{log}: corrupt change log: line {number}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise LabError(f"{log}: corrupt change log: {_json_error(line, exc).replace('at line 1,', f'at line {number},', 1)}") from None
        except _Corrupt as exc:
            raise LabError(f"{log}: corrupt change log: line {number}: {exc}") from None
    return changes


def _take_record(changes, record, source):
    for path, raw in record.set:
        if not path:
            raise _Corrupt("an empty key path")
        changes.sets.append((path, msgspec.json.decode(raw)))
    for path in record.drop:
        if not path:
            raise _Corrupt("an empty key path")
        changes.sets.append((path, _DROP))
    for name, (length, changed) in record.users.items():
        if name not in changes.users:
            raise _Corrupt(f"no user list {name!r} in the lab")
        if length < 0:
            raise _Corrupt(f"{name} has a negative length {length}")
        decode = _LINE_DECODERS[name].decode
        lines = {}
        for index, raw in changed:
            if not 0 <= index < length:
                raise _Corrupt(f"{name}[{index}] is outside the list's {length} users")
            try:
                decode(raw)
            except msgspec.ValidationError as exc:
                detail = str(exc).replace("`$", f"`$.lab.{name}[{index}]", 1) if " - at `$" in str(exc) else f"{exc} - at `$.lab.{name}[{index}]`"
                raise _Corrupt(detail) from None
            lines[index] = bytes(raw)
        changes.users[name].add(length, lines)


def _check_of(fh):
    """The size and CRC-32 of the file open at ``fh`` (read from the start; left at the start)."""
    fh.seek(0)
    size, crc = 0, 0
    while chunk := fh.read(1 << 20):
        size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    fh.seek(0)
    return {"size": size, "crc32": crc}


class _Patched:
    """A sink fed the lab file's lines of one user list, handing on the change log's version of the list."""

    def __init__(self, sink, changes, name):
        self.sink, self.changes, self.name = sink, changes, name
        self.index = 0

    def add(self, line, number):
        index, changes = self.index, self.changes
        self.index += 1
        if changes.length is None:
            self.sink.add(line, number)
        elif index < changes.floor:
            self.sink.add(changes.lines.get(index, line), number)
        elif index < changes.length:
            self.sink.add(self._changed(index), number)

    def _changed(self, index):
        try:
            return self.changes.lines[index]
        except KeyError:
            raise LabError(f"{self.sink.source}: corrupt change log: it has no {self.name}[{index}]") from None

    def done(self):
        if self.changes.length is not None:
            for index in range(self.index, self.changes.length):
                self.sink.add(self._changed(index), 0)
        return self.sink.done()


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
