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
"""

from __future__ import annotations

import os
import re
import tempfile
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


def loads(data, source="lab file"):
    """The Lab in ``data`` (bytes or text), or LabError with one line."""
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
            data = fh.read()
    except FileNotFoundError:
        raise LabError(f"{path}: no lab here; create one with 'syncprep lab init'") from None
    except OSError as exc:
        raise LabError(f"{path}: cannot read the lab file: {exc.strerror}") from None
    return loads(data, str(path)), _identity(stat)


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
    body = {}
    for f in attrs.fields(Lab):
        if not f.init:
            continue
        value = getattr(lab, f.name)
        # The users are encoded by msgspec from the attrs objects themselves (all plain fields).
        body[f.name] = value if f.name in _BIG else _converter.unstructure(value, f.type)
    return _encoder.encode({"format": FORMAT, "version": VERSION, "lab": body})


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
