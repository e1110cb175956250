"""The lab file's JSON decoded strictly: the format and version check, and msgspec structs
mirroring the lab's attrs classes (see :mod:`providers.lab.store` for the file's layout).

Each attrs class below gets a msgspec struct with the same fields (forbid_unknown_fields):
fields of plain JSON types are decoded and checked by msgspec, the others (rules, enums,
connectors) are decoded as plain JSON and structured afterwards: by the quick road
(:mod:`providers.lab.store_structure`) where they fit, else by cattrs, imported only then.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import functools
import gc
import re
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import attrs
import msgspec

from reconciler.errors import LabError
from providers.lab import store_structure
from providers.lab.pwsh_files import check_files
from providers.lab.world import AD_OBJECT_CLASSES, AD_USER_CLASSES, EPOCH, AdObject, AdUser, Lab, LabCloudUser, LabLicense, RunningCycle, Server, ad_object_problem

FORMAT = "syncprep-lab"
VERSION = 1

_PLAIN = (int, str, bool, type(None))
_MIRRORED = (Lab, Server, AdUser, AdObject, LabCloudUser, LabLicense)


def _minutes_to(year):
    return int((dt.datetime(year, 1, 1, tzinfo=dt.timezone.utc) - EPOCH).total_seconds() // 60)


# The lab's minute counters, bounded so that each is a date the lab can write (years 1 to
# 9999, also after adding a duration): a value out of range is a corrupt file at its key
# path, not an OverflowError later. The clock only moves forward from 0.
#: The last minute a lab file may hold (``lab advance`` goes no further).
LAST_MINUTE = _minutes_to(9998)
#: The longest duration a lab file may hold (a year).
LONGEST = 366 * 24 * 60
_MOMENT = Annotated[int, msgspec.Meta(ge=_minutes_to(1), le=LAST_MINUTE)]
_DURATION = Annotated[int, msgspec.Meta(ge=0, le=LONGEST)]
#: By field name (the same name means the same thing in every class of the lab).
BOUNDS = {
    "clock": Annotated[int, msgspec.Meta(ge=0, le=LAST_MINUTE)],
    **dict.fromkeys(
        ("changed_at", "assigned_at", "mailbox_ready_at", "deleted_at", "exchange_plan_since", "next_scheduled_at", "connector_space", "started_at", "ends_at"),
        _MOMENT,
    ),
    "sync_interval": _DURATION,
    "provisioning_minutes": _DURATION,
}


#: Fields that take one of a few names, by (class, field name).
CHOICES = {(AdUser, "object_class"): Literal[AD_USER_CLASSES], (AdObject, "object_class"): Literal[AD_OBJECT_CLASSES]}


def _bounded(name, tp):
    """``tp`` (plain) with its whole numbers bounded as :data:`BOUNDS` says for field ``name``."""
    bound = BOUNDS.get(name)
    origin, args = get_origin(tp), get_args(tp)
    if bound is None:
        return tp
    if tp is int:
        return bound
    if origin is Union:
        return Union[tuple(_bounded(name, a) for a in args)]
    if origin is dict:
        return dict[args[0], _bounded(name, args[1])]
    return tp


def plain(tp):
    """Whether values of type ``tp`` are plain JSON (msgspec checks them with no help)."""
    if tp in _PLAIN:
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union:
        return all(plain(a) for a in args)
    if origin in (list, tuple):
        return plain(args[0])
    if origin is dict:
        return args[0] is str and plain(args[1])
    return False


class Corrupt(Exception):
    """A value the lab does not know, with where it is (turned into one line by the caller)."""


class _Mirror:
    """An attrs class, its msgspec struct, and how to build the one from the other."""

    def __init__(self, cls, mirrors):
        attrs.resolve_types(cls)
        self.cls = cls
        self.later = []  # (index, name, build) for the fields that are not plain
        fields = []
        for index, f in enumerate(a for a in attrs.fields(cls) if a.init):
            tp, build = self._field_type(f.type, mirrors) if (cls, f.name) not in CHOICES else (CHOICES[cls, f.name], None)
            if build is not None:
                self.later.append((index, f.name, build))
            else:
                tp = _bounded(f.name, tp)
            fields.append(_struct_field(f, tp))
        self.struct = msgspec.defstruct(f"_{cls.__name__}File", fields, forbid_unknown_fields=True, gc=False)

    @staticmethod
    def _field_type(tp, mirrors):
        if plain(tp):
            return tp, None
        if tp in mirrors:
            mirror = mirrors[tp]
            return mirror.struct, mirror.build
        origin, args = get_origin(tp), get_args(tp)
        if origin in (list, tuple) and args[0] in mirrors:
            # Lists of users: msgspec builds the attrs objects from the structs in C, setting
            # their slots directly (no __init__, no on_setattr hooks): 100,000 in a fraction of a second.
            struct = mirrors[args[0]].struct
            return (list[struct] if origin is list else tuple[struct, ...]), lambda structs, tp=tp: msgspec.convert(structs, tp, from_attributes=True)
        return Any, lambda value, tp=tp: structured(value, tp)

    def build(self, struct):
        values = msgspec.structs.astuple(struct)
        if self.later:
            values = list(values)
            for index, name, build in self.later:
                values[index] = _built(build, values[index], name)
        return self.cls(*values)


def _struct_field(f, tp):
    if f.default is attrs.NOTHING:
        return (f.name, tp)
    if isinstance(f.default, attrs.Factory):
        return (f.name, tp, msgspec.field(default_factory=f.default.factory))
    return (f.name, tp, f.default)


def _built(build, value, name):
    try:
        return build(value)
    except Corrupt as exc:
        raise Corrupt(f"{name}.{exc}") from None
    except (_validation_error(), KeyError, TypeError, ValueError) as exc:  # (cattrs is imported only to match it)
        raise Corrupt(f"{name}: {_cattrs_detail(exc)}") from None


def structured(value, tp):
    """``value`` (JSON) as ``tp``, as the cattrs converter builds it: by the quick road where it fits."""
    try:
        return _ROAD.structure(value, tp)
    except store_structure.Unfit:
        return converter().structure(value, tp)


def _bounded_cycle(cycle):
    """A running cycle, its minutes bounded as the mirrors' are."""
    for name in ("started_at", "ends_at"):
        try:
            msgspec.convert(getattr(cycle, name), BOUNDS[name])
        except msgspec.ValidationError as exc:
            raise Corrupt(f"{name}: {exc}") from None
    return cycle


_ROAD = store_structure.Road({RunningCycle: _bounded_cycle})


@functools.cache
def converter():
    """The cattrs converter of the lab file (it structures what the quick road leaves, and
    unstructures the small parts for a write)."""
    import cattrs

    lab_converter = cattrs.Converter(forbid_extra_keys=True)
    default = lab_converter.get_structure_hook(RunningCycle)
    lab_converter.register_structure_hook(RunningCycle, lambda value, tp: _bounded_cycle(default(value, tp)))
    return lab_converter


def _validation_error():
    import cattrs

    return cattrs.BaseValidationError


def _mirrors():
    mirrors = {}
    for cls in reversed(_MIRRORED):  # the inner classes first
        mirrors[cls] = _Mirror(cls, mirrors)
    return mirrors


MIRRORS = _mirrors()
_LAB_DECODER = msgspec.json.Decoder(MIRRORS[Lab].struct)
_DOCUMENT_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
USER_TYPES = {"ad_users": AdUser, "cloud_users": LabCloudUser}
#: Per user list, the strict decoder of one of its users (a line of the file).
LINE_DECODERS = {name: msgspec.json.Decoder(MIRRORS[cls].struct) for name, cls in USER_TYPES.items()}


def _cattrs_detail(exc):
    import cattrs

    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc)[:3])
    return str(exc)


def json_error(data, exc, line=1):
    """``invalid JSON at line L, column C`` from msgspec's byte offset (or the end, if cut short).

    ``line``: the line number ``data`` starts at, in its file."""
    match = re.search(r"\(byte (\d+)\)", str(exc))
    offset = int(match.group(1)) if match else len(data)
    number = data.count(b"\n", 0, offset) + line
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    reason = "cut short" if "truncated" in str(exc) else str(exc).split(" (byte")[0].removeprefix("JSON is malformed: ")
    return f"invalid JSON at line {number}, column {column} ({reason})"


def validation_detail(exc, where):
    """msgspec's ValidationError text with its ``$`` path put under ``where`` (e.g. ``$.lab``)."""
    text = str(exc)
    return text.replace("`$", f"`{where}", 1) if " - at `$" in text else f"{text} - at `{where}`"


def strip_bom(data):
    """``data`` without a UTF-8 byte order mark (Notepad's "UTF-8 with BOM"): the JSON starts after it."""
    return data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data


def loads(data, source="lab file", head_only=False):
    """The Lab in ``data`` (bytes or text), or LabError with one line.

    ``head_only``: check the format and the version, nothing more."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    document = _document(strip_bom(data), source)
    if head_only:
        return None
    extra = sorted(set(document) - {"format", "version", "lab"})
    if extra or "lab" not in document:
        detail = f"unknown key {extra[0]!r}" if extra else "no \"lab\""
        raise LabError(f"{source}: corrupt lab file: {detail}")
    raw = document.pop("lab")
    del document
    try:
        return build_lab(raw)
    except Corrupt as exc:
        raise LabError(f"{source}: corrupt lab file: {exc}") from None


def build_lab(raw):
    """The Lab from the JSON of its body (``"lab"``); Corrupt with where, if it is not one."""
    try:
        lab = MIRRORS[Lab].build(_LAB_DECODER.decode(raw))
    except msgspec.ValidationError as exc:
        raise Corrupt(validation_detail(exc, "$.lab")) from None
    except (TypeError, ValueError) as exc:
        raise Corrupt(str(exc)) from None
    problem = check_files(lab.server.files) or ad_object_problem(lab.ad_objects)
    if problem is not None:
        raise Corrupt(problem)
    return lab


def _document(data, source):
    """The top-level keys of a lab file (values undecoded), its format and version checked."""
    try:
        document = _DOCUMENT_DECODER.decode(data)
    except msgspec.ValidationError:
        raise LabError(f"{source}: not a syncprep lab file (no \"format\": \"{FORMAT}\")") from None
    except msgspec.DecodeError as exc:
        raise LabError(f"{source}: not a lab file: {json_error(data, exc)}") from None
    if _value(document.get("format")) != FORMAT:
        raise LabError(f"{source}: not a syncprep lab file (no \"format\": \"{FORMAT}\")")
    check_version(_value(document.get("version")), f"{source}: lab format", "upgrade syncprep or run 'syncprep lab init --force'")
    return document


def check_version(version, what, remedy):
    """Refuses (one line) a version that is not a whole number from 1 to :data:`VERSION`."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LabError(f"{what} version {version!r} is not one this syncprep knows (it reads 1 to {VERSION})")
    if version > VERSION:
        raise LabError(f"{what} version {version} is newer than this syncprep reads ({VERSION}); {remedy}")


def _value(raw):
    try:
        return msgspec.json.decode(raw) if raw is not None else None
    except msgspec.DecodeError:
        return None


def decode_user(decode, line, number, index, name, source):
    """One user's line decoded strictly, or LabError naming the line (``number``) or the key path."""
    try:
        return decode(line)
    except msgspec.ValidationError as exc:
        raise LabError(f"{source}: corrupt lab file: {validation_detail(exc, f'$.lab.{name}[{index}]')}") from None
    except msgspec.DecodeError as exc:
        raise LabError(f"{source}: not a lab file: {json_error(line, exc, number)}") from None


#: A lab with this many users or more is frozen out of the collector's scans once read.
FREEZE_AT = 10_000


def settle(count):
    """After reading ``count`` long-lived objects (a lab, an observation of it): at 100,000 users
    the cyclic garbage collector scanned them again and again while apply and plan made their
    own objects (a tenth of the CPU time). ``gc.freeze`` moves what exists now out of its scans;
    the lab's objects hold no reference cycles, so they are still freed when dropped. Small labs
    (the tests make hundreds) are left to the collector as they are. The youngest generation is
    then collected every 100,000 new objects instead of 700: plan and apply make a few objects
    per user (outcomes, references, steps), none in cycles, and each collection of it reached
    into the older ones (about a tenth of apply's CPU time at 100,000 users)."""
    if count >= FREEZE_AT:
        gc.freeze()
        young, *older = gc.get_threshold()
        if 0 < young < _YOUNG:
            gc.set_threshold(_YOUNG, *older)


_YOUNG = 100_000


@contextlib.contextmanager
def no_collection():
    """A hundred thousand new objects and no cycles among them: the collector would only cost time."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
