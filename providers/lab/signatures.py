"""The ADSync module's real surface, for the lab's interpreter to refuse what it refuses.

``adsync_signatures.json`` is trimmed from shared/reference/adsync-signatures.json,
read from the compiled ADSync module of Entra Connect build 2.2.8.0: every cmdlet of
the module (and the generic cmdlets the scripts use) with its parameters, parameter
sets, mandatory flags and positions; the enums they take; the ObjectModel types'
properties. A call is checked against it before the lab runs it: an unknown
parameter, parameters from sets that cannot go together, a missing mandatory
parameter, a bad enum value and an unknown or read-only property are errors, with
the messages PowerShell gives.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

COMMON = frozenset(
    p.lower()
    for p in (
        "Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable", "WarningVariable",
        "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable",
    )
)
ALL_SETS = "__AllParameterSets"
OBJECT_MODEL = "Microsoft.IdentityManagement.PowerShell.ObjectModel."


@functools.lru_cache(maxsize=1)
def table():
    return json.loads((Path(__file__).with_name("adsync_signatures.json")).read_text(encoding="utf-8"))


def cmdlet(name):
    """The signature of ``name`` (case-insensitive), or None."""
    by_lower = _cmdlets_by_lower()
    return by_lower.get(name.lower())


@functools.lru_cache(maxsize=1)
def _cmdlets_by_lower():
    return {n.lower(): (n, c) for n, c in table()["cmdlets"].items()}


def known_elsewhere(name):
    """Whether ``name`` is a real command the lab does not simulate (not one that does not exist)."""
    return name.lower() in {n.lower() for n in table()["other_commands"]}


def enum_values(enum):
    return tuple(table()["enums"].get(enum, ()))


def parameter_names(name):
    found = cmdlet(name)
    return tuple(found[1]["parameters"]) if found else ()


def check_call(name, named, positional_count, piped, error):
    """Refuse the call as PowerShell would bind it. ``named``: {lower parameter name: value};
    ``error(message, error_id)`` makes the exception to raise."""
    found = cmdlet(name)
    if found is None:
        return
    real_name, signature = found
    params = {}
    for pname, spec in signature["parameters"].items():
        params[pname.lower()] = (pname, spec)
        for alias in spec.get("aliases", ()):
            params[alias.lower()] = (pname, spec)
    given = {}
    for key, value in named.items():
        if key in COMMON or (key in ("whatif", "confirm") and signature.get("supports_should_process")):
            continue
        if key not in params:
            raise error(f"A parameter cannot be found that matches parameter name '{key}'.", "NamedParameterNotFound")
        given[params[key][0]] = (params[key][1], value)
    candidates = {s for _n, spec in signature["parameters"].items() for s in spec["sets"] if s != ALL_SETS} or {ALL_SETS}
    for pname, (spec, _value) in given.items():
        sets = set(spec["sets"])
        if ALL_SETS not in sets:
            candidates &= sets
    if not candidates:
        raise error(f"{real_name}: Parameter set cannot be resolved using the specified named parameters.", "AmbiguousParameterSet")
    missing = {s: _missing(signature, s, given, positional_count, piped) for s in sorted(candidates)}
    satisfied = [s for s in missing if not missing[s]]
    if not satisfied:
        chosen = signature.get("default_parameter_set") if signature.get("default_parameter_set") in missing else sorted(missing)[0]
        raise error(
            f"{real_name}: Cannot process command because of one or more missing mandatory parameters: {' '.join(missing[chosen])}.",
            "MissingMandatoryParameter",
        )
    for pname, (spec, value) in given.items():
        if spec.get("kind") == "enum" and spec.get("enum") in table()["enums"]:
            check_enum(spec["enum"], value, f"{real_name} -{pname}", error)


def _missing(signature, set_name, given, positional_count, piped):
    in_set = []
    for pname, spec in signature["parameters"].items():
        entry = spec["sets"].get(set_name) or spec["sets"].get(ALL_SETS)
        if entry is not None:
            in_set.append((pname, entry))
    positional = sorted((entry[1], pname) for pname, entry in in_set if entry[1] is not None and pname not in given)
    filled = {pname for _position, pname in positional[:positional_count]}
    return [
        pname
        for pname, (mandatory, _position, pipeline) in in_set
        if mandatory and pname not in given and pname not in filled and not (pipeline and piped)
    ]


def check_enum(enum, value, where, error):
    values = enum_values(enum)
    name = getattr(value, "name", value)
    if isinstance(value, list) and len(value) == 1:
        name = getattr(value[0], "name", value[0])
    if not isinstance(name, str) or name.lower() not in {v.lower() for v in values}:
        raise error(
            f"{where}: Cannot convert value \"{name}\" to type \"{enum}\". Error: \"Unable to match the identifier name {name} to a valid "
            f"enumerator name. Specify one of the following enumerator names and try again: {', '.join(values)}\"",
            "InvalidCastException",
        )


def property_of(type_name, prop):
    """``(name, type, settable)`` of ``prop`` on an ObjectModel type; None when the type is
    not in the table; raises KeyError when the type has no such property."""
    properties = _properties_by_lower(type_name)
    if properties is None:
        return None
    found = properties.get(prop.lower())
    if found is None:
        raise KeyError(prop)
    return found


@functools.lru_cache(maxsize=None)
def _properties_by_lower(type_name):
    """{lower-case property name: (name, type, settable)} of an ObjectModel type (the first
    spelling where two differ only in case), None when the type is not in the table."""
    if not type_name.startswith(OBJECT_MODEL):
        return None
    entry = table()["types"].get(type_name[len(OBJECT_MODEL):])
    if entry is None:
        return None
    properties = {}
    for name, (kind, settable) in entry["properties"].items():
        properties.setdefault(name.lower(), (name, kind, settable))
    return properties
