"""Turn the JSON the observation script emits into :mod:`reconciler.model` values.

It accepts what Windows PowerShell 5.1 really writes (domain-facts E8):

* enums as their name (the scripts cast them to ``[string]``) or, as a fallback, as
  their integer value (5.1 has no ``-EnumsAsStrings``);
* dates as ``/Date(ms)/`` or as ISO 8601 text;
* ``@($null)`` as ``[null]``.

``ConvertTo-Json`` cuts silently below its ``-Depth``, putting an object's string
form (``@{...}``, ``System.Object[]``, a type name) where the object was: a string
where an object or a list belongs is reported as truncated output, never guessed at.
"""

from __future__ import annotations

import datetime as dt
import re

from reconciler.errors import ProviderError
from reconciler.model import (
    COMPARISON_OPERATORS,
    AttributeFlow,
    Connector,
    Direction,
    FlowType,
    JoinCondition,
    LinkType,
    MergeType,
    RunResult,
    ScopeCondition,
    SchedulerState,
    ServerState,
    SyncPolicy,
    SyncRule,
)
from providers.entraconnect.scripts import AAD_EXPORT_ATTRIBUTES

PROVIDER = "entra-connect"

# Declaration order of the ADSync enums: 5.1 writes the ordinal. Names and ordinals
# are the module's own (adsync-signatures.json, build 2.2.8.0); names are preferred when present.
ENUM_MEMBERS = {
    Direction: ("Inbound", "Outbound"),
    LinkType: ("Provision", "StickyJoin", "Join", "JoinNoFlow"),
    FlowType: ("Direct", "Constant", "Expression"),
    MergeType: ("Update", "Replace", "MergeCaseInsensitive", "Merge"),
    SyncPolicy: ("Unspecified", "Delta", "Initial"),
}
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class Truncated(ProviderError):
    """The JSON was cut at ConvertTo-Json's -Depth."""


def _fail(where, message):
    raise ProviderError(PROVIDER, where, message)


def obj_of(value, where):
    """A JSON object; a string where it belongs is output cut at -Depth (Truncated)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        raise Truncated(PROVIDER, where, f"output truncated at ConvertTo-Json's -Depth (found {value[:40]!r} where an object belongs); raise -Depth")
    _fail(where, f"expected an object, got {type(value).__name__}")


def list_of(value, where):
    """A JSON array; ``null`` entries (``@($null)``) dropped; a lone object taken as one element."""
    if value is None:
        return []
    if isinstance(value, str) and (value == "System.Object[]" or value.startswith("@{")):
        raise Truncated(PROVIDER, where, f"output truncated at ConvertTo-Json's -Depth (found {value[:40]!r} where a list belongs); raise -Depth")
    if not isinstance(value, list):
        value = [value]
    return [v for v in value if v is not None]


def _strings(value, where):
    out = []
    for item in list_of(value, where):
        if not isinstance(item, str):
            _fail(where, f"expected text, got {type(item).__name__}")
        out.append(item)
    return out


def count_of(value, where):
    """A count (a non-negative Int32 written as a JSON number)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(where, f"expected a count, got {value!r}"[:120])
    return value


def enum(cls, value, where, members=None):
    """An enum value written as its name or as its integer ordinal."""
    names = members or ENUM_MEMBERS[cls]
    if isinstance(value, bool) or value is None:
        _fail(where, f"no value for {cls.__name__ if cls else 'enum'}")
    if isinstance(value, int):
        if not 0 <= value < len(names):
            _fail(where, f"unknown {getattr(cls, '__name__', 'enum')} value {value}")
        name = names[value]
    elif isinstance(value, str):
        name = next((n for n in names if n.lower() == value.strip().lower()), None)
        if name is None:
            _fail(where, f"unknown {getattr(cls, '__name__', 'enum')} value {value!r}")
    else:
        _fail(where, f"unexpected enum value {value!r}")
    return name


def _enum_member(cls, value, where):
    name = enum(cls, value, where)
    if cls is SyncPolicy and name == "Unspecified":
        return SyncPolicy.DELTA
    return cls(name)


def _bool(value, where):
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    _fail(where, f"expected true or false, got {value!r}")


def timestamp(value, where="date"):
    """A date as the lab and the model write it: ``YYYY-MM-DDTHH:MM:SSZ`` in UTC."""
    moment = parse_datetime(value, where)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value, where="date"):
    if not isinstance(value, str):
        _fail(where, f"expected a date, got {value!r}")
    match = _MS_DATE.match(value.strip())
    if match:
        return dt.datetime.fromtimestamp(int(match.group(1)) / 1000, tz=dt.timezone.utc)
    text = value.strip().replace("Z", "+00:00")
    # .NET's round-trip format has 7 fractional digits; Python takes at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(where, f"unreadable date {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def text(value, where, what):
    """A property that must come as text (``[string]`` casts and ``.TagValue`` in the
    scripts): an object here would be written back as its Python form, so refuse it."""
    if value is None:
        return ""
    if not isinstance(value, str):
        _fail(where, f"{what} came as {type(value).__name__}, not text: {str(value)[:60]}")
    return value


def _condition_groups(raw, where, make):
    """Scope or join filter groups: a list of {Conditions: [...]}, each condition built by ``make``."""
    groups = []
    for group in list_of(raw, where):
        group = obj_of(group, where)
        groups.append(tuple(make(obj_of(condition, where)) for condition in list_of(group.get("Conditions"), where)))
    return groups


def rule(data, index):
    data = obj_of(data, f"rule #{index}")
    name = data.get("Name") or f"#{index}"
    where = f"rule {name!r}"
    flows = []
    for flow in list_of(data.get("Flows"), where):
        flow = obj_of(flow, where)
        sources = _strings(flow.get("Source"), where)
        flow_type = _enum_member(FlowType, flow.get("FlowType"), where)
        expression = flow.get("Expression")
        if flow_type is FlowType.CONSTANT:
            # The editor writes a Constant flow with the constant as its source.
            expression, sources = (sources[0] if sources else None), sources[1:]
        flows.append(
            AttributeFlow(
                destination=flow.get("Destination") or "",
                flow_type=flow_type,
                source=sources[0] if sources else None,
                expression=expression,
                execute_once=_bool(flow.get("ExecuteOnce"), where),
                merge_type=_enum_member(MergeType, flow.get("ValueMergeType", 0), where),
                other_sources=tuple(sources[1:]),
            )
        )
    scope = _condition_groups(
        data.get("Scope"),
        where,
        lambda c: ScopeCondition(
            attribute=c.get("Attribute") or "",
            operator=enum(None, c.get("Operator"), where, COMPARISON_OPERATORS),
            value=c.get("Value") or "",
        ),
    )
    join = _condition_groups(
        data.get("Join"),
        where,
        lambda c: JoinCondition(
            cs_attribute=c.get("CSAttribute") or "",
            mv_attribute=c.get("MVAttribute") or "",
            case_sensitive=_bool(c.get("CaseSensitive"), where),
        ),
    )
    precedence = data.get("Precedence")
    if not isinstance(precedence, int) or isinstance(precedence, bool):
        _fail(where, f"precedence {precedence!r} is not a number")
    return SyncRule(
        identifier=text(data.get("Identifier"), where, "Identifier"),
        name=data.get("Name") or "",
        direction=_enum_member(Direction, data.get("Direction"), where),
        precedence=precedence,
        connector=text(data.get("Connector"), where, "Connector"),
        source_object_type=data.get("SourceObjectType") or "",
        target_object_type=data.get("TargetObjectType") or "",
        link_type=_enum_member(LinkType, data.get("LinkType"), where),
        flows=tuple(flows),
        scope=tuple(scope),
        join=tuple(join),
        disabled=_bool(data.get("Disabled"), where),
        is_standard=_bool(data.get("IsStandardRule"), where),
        password_sync=_bool(data.get("EnablePasswordSync"), where),
        immutable_tag=text(data.get("ImmutableTag"), where, "ImmutableTag"),
        description=data.get("Description") or "",
    )


def connector(data, index):
    data = obj_of(data, f"connector #{index}")
    name = data.get("Name") or f"#{index}"
    where = f"connector {name!r}"
    type_name = data.get("Type") or ""
    if type_name.upper() == "AD":
        included, excluded = [], []
        for partition in list_of(data.get("Partitions"), where):
            partition = obj_of(partition, where)
            if partition.get("Selected") is False:
                continue
            included += [c for c in _strings(partition.get("Included"), where) if c not in included]
            excluded += [c for c in _strings(partition.get("Excluded"), where) if c not in excluded]
        return Connector(str(data.get("Identifier")), name, "AD", tuple(included), tuple(excluded))
    # The Entra ID connector is an "Extensible2" connector; domain-facts A9 for the exclusions.
    inclusions = {a.lower() for a in _strings(data.get("AttributeInclusions"), where)}
    excluded_attributes = tuple(a for a in AAD_EXPORT_ATTRIBUTES if a.lower() not in inclusions)
    kind = "AAD" if type_name.lower() == "extensible2" or name.upper().endswith("- AAD") else type_name
    return Connector(str(data.get("Identifier")), name, kind, excluded_attributes=excluded_attributes if kind == "AAD" else ())


def run_result(data, where="run history"):
    data = obj_of(data, where)
    return RunResult(
        connector=data.get("Connector") or "",
        profile=data.get("Profile") or "",
        result=data.get("Result") or "",
        started=timestamp(data.get("StartDate"), where),
        ended=timestamp(data.get("EndDate"), where) if data.get("EndDate") else "",
    )


def run_number(data, where="run history"):
    """A run's RunNumber (it grows per connector); ``None`` when absent (no run yet)."""
    number = data.get("RunNumber") if isinstance(data, dict) else data
    if number is None:
        return None
    if isinstance(number, bool) or not isinstance(number, int):
        _fail(where, f"run number {number!r} is not a number")
    return number


_EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


def cs_object(item, connector, where, joins=True):
    """``(connector, DN, object type, is a connector, metaverse id)`` of one connector-space
    object of the page script (None without a DN). The metaverse id is ConnectedMVObjectId as
    text, "" for Guid.Empty (a disconnector); anything but a GUID is refused. Without
    ``joins`` it is not read ("")."""
    item = obj_of(item, where)
    if not item.get("DN"):
        return None
    if not joins:
        return connector, str(item["DN"]), str(item.get("Type") or ""), item.get("Connector") is True, ""
    mv = item.get("MV")
    mv = "" if mv is None else mv
    if not isinstance(mv, str):
        _fail(where, f"ConnectedMVObjectId of {item['DN']} is not text: {type(mv).__name__}")
    mv = mv.strip().lower()
    if mv and not _GUID.fullmatch(mv):
        _fail(where, f"ConnectedMVObjectId of {item['DN']} is not a GUID: {mv[:40]!r}")
    return connector, str(item["DN"]), str(item.get("Type") or ""), item.get("Connector") is True, "" if mv == _EMPTY_GUID else mv


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def connector_kind(type_name, name):
    """"AD", "AAD" (the Entra ID connector, an "Extensible2" connector) or the type name."""
    type_name = type_name or ""
    if type_name.upper() == "AD":
        return "AD"
    if type_name.lower() == "extensible2" or (name or "").upper().endswith("- AAD"):
        return "AAD"
    return type_name


def run_results(value, where="run history"):
    """Run results oldest first (the cmdlet answers newest first, per connector)."""
    by_connector = {}
    for item in list_of(value, where):
        result = run_result(item, where)
        by_connector.setdefault(result.connector, []).append(result)
    results = [r for runs in by_connector.values() for r in reversed(runs)]
    return sorted(results, key=lambda r: (r.started, r.ended))


def deletion_threshold(value):
    """``None`` when disabled or unreadable. DeletionPrevention 0 is disabled whatever
    count it still holds (a restore must never enable a threshold that was off)."""
    if value is None:
        return None
    data = obj_of(value, "export deletion threshold")
    if "DeletionPrevention" in data and data.get("DeletionPrevention") in (0, False, "0", "Disabled"):
        return None
    count = data.get("ThresholdCount")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        return None
    return count


def server_state(document, history=20):
    where = "observation"
    document = obj_of(document, where)
    scheduler = obj_of(document.get("Scheduler"), "scheduler")
    for key in ("SyncCycleEnabled", "StagingModeEnabled", "SyncCycleInProgress"):
        if not isinstance(scheduler.get(key), bool):
            _fail("scheduler", f"{key} missing from Get-ADSyncScheduler's output")
    state = SchedulerState(
        sync_cycle_enabled=scheduler["SyncCycleEnabled"],
        staging_mode=scheduler["StagingModeEnabled"],
        cycle_in_progress=scheduler["SyncCycleInProgress"],
        next_policy=_enum_member(SyncPolicy, scheduler.get("NextSyncCyclePolicyType", 1), "scheduler"),
    )
    rules = tuple(rule(r, i) for i, r in enumerate(list_of(document.get("Rules"), "rules")))
    connectors = tuple(connector(c, i) for i, c in enumerate(list_of(document.get("Connectors"), "connectors")))
    runs = run_results(document.get("Runs"))
    return ServerState(
        scheduler=state,
        rules=rules,
        connectors=connectors,
        # The observation script leaves it out: PsrpServer.observe reads it on its own, time-boxed.
        deletion_threshold=deletion_threshold(document.get("DeletionThreshold")),
        run_history=tuple(runs[-history:]),
    )
