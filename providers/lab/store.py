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
canonicalise them. A save that would write the bytes the file already holds
(a checkpoint after a step that changed nothing in the lab) writes nothing.

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
import os
import re
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import attrs
import cattrs
import msgspec

from reconciler.errors import LabError
from providers.lab.world import AdUser, Lab, LabCloudUser, LabLicense, Server

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
    """The lab at ``path`` and the identity of the file it was read from (see :func:`identity`)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            lab = _read_lines(fh, str(path))
            if lab is None:  # another layout: read it whole
                fh.seek(0)
                data = fh.read()
    except FileNotFoundError:
        raise LabError(f"{path}: no lab here; create one with 'syncprep lab init'") from None
    except OSError as exc:
        raise LabError(f"{path}: cannot read the lab file: {exc.strerror}") from None
    if lab is None:
        lab = loads(data, str(path))
    return lab, _identity(stat)


class _Layout(Exception):
    """Not the one-user-a-line layout this module writes: read the file whole instead."""


def _read_lines(fh, source):
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
    number = 1
    for sink, closing in ((ad, b'],"cloud_users":[\n'), (cloud, b"]}}\n")):
        number = _stream_array(fh, number, closing, sink)
        if number is None:
            return None
        skeleton.append(closing[:-1])
    if fh.read(1):
        return None
    lab = loads(b"".join(skeleton), source)
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


def identity(path):
    """What tells one version of the file from another: every write renames a new file
    over the old one, so a file with the same identity holds the same bytes."""
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


# ---------------------------------------------------------------------------- encoding

_BIG = {"ad_users", "cloud_users"}


def dumps_bytes(lab):
    """The file: the small parts on the first line, then one user a line (see the module's docstring)."""
    body = {f.name: _converter.unstructure(getattr(lab, f.name), f.type) for f in attrs.fields(Lab) if f.init and f.name not in _BIG}
    head = _encoder.encode({"format": FORMAT, "version": VERSION, "lab": body})
    parts = [head[:-2], b',"ad_users":[\n']
    _user_lines(lab.ad_users, parts)
    parts.append(b'],"cloud_users":[\n')
    _user_lines(lab.cloud_users, parts)
    parts.append(b"]}}\n")
    return b"".join(parts)


def _user_lines(users, parts):
    encode = _encoder.encode
    # The users are encoded by msgspec from the attrs objects themselves (all plain fields).
    lines = users.raw_lines() if isinstance(users, _LazyList) and users.pending else [encode(u) for u in users]
    if lines:
        parts.append(b",\n".join(lines))
        parts.append(b"\n")


def dumps(lab):
    return dumps_bytes(lab).decode("utf-8")


# What this process last wrote to each lab file, and how the file looked right after.
_written = {}


def _identity(stat):
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def save(lab, path):
    """Writes the lab (atomically); returns the file's new :func:`identity`."""
    path = Path(path)
    data = dumps_bytes(lab)
    key = os.path.abspath(path)
    last = _written.get(key)
    if last is not None and last[0] == data:
        try:
            if _identity(path.stat()) == last[1]:
                return last[1]  # the file holds exactly these bytes already
        except OSError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lab-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _written.clear()  # one file remembered at a time: a 100,000-user lab is 72 MiB
    _written[key] = (data, _identity(path.stat()))
    return _written[key][1]


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
