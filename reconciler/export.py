"""From observed state to a desired-state file (``syncprep export``).

:func:`export_desired` writes what was observed as desired-state TOML so that a
team can adopt the tool on a server that is already configured. The contract is
the round trip: :func:`reconciler.loader.loads_desired` accepts the text, and
planning it against the environment it came from gives no steps.

What it writes:

* ``[target]`` and ``[scheduler]`` as observed;
* every stock rule by name with its enabled state (``kind = "stock"``: all a stock
  rule can say);
* every custom rule in full (``kind = "custom"``), including the copies of stock
  rules that Solution 1 leaves behind under the stock rule's name;
* ``[scope]`` from the AD connector and ``[export] excluded_attributes`` from the
  Entra ID connector (only when something is excluded);
* the licences of synced users, per SKU, as UPN lists with
  ``relicense_without_mailbox = false``: an export records, it never schedules a
  relicence.

It never writes ``[purge]``. What cannot be written so that it loads and plans to
nothing is left out with a ``# not exported:`` comment saying why (a custom rule
without flows, a stock rule that shares its name with a custom rule, ...);
leaving a rule out of a desired state leaves it unmanaged, which the planner
never touches.

Licences cover the users the observation saw. :func:`observe_for_export` asks the
tenant for the synced users below the AD connector's included containers: the
Graph provider lists exactly those, so licences of cloud-only users (which
syncprep does not manage) are not exported.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import attrs

from reconciler import __version__
from reconciler.desired import TargetKind, TargetSpec
from reconciler.dn import is_container
from reconciler.loader import UPN
from reconciler.model import FlowType, Observed, SyncPolicy
from reconciler.provider import UserSelection


def observe_for_export(target):
    """Observe everything an export needs: the server, then the synced users it scopes.

    The tenant is asked for the users below the AD connector's included containers
    (every synced user), since an export has no desired state to select them by.
    """
    server = target.server.observe()
    ous = tuple(dict.fromkeys(dn for c in server.connectors_of_kind("AD") for dn in c.included_containers))
    tenant = target.tenant.observe(UserSelection(frozenset(), ous))
    return Observed(server=server, tenant=tenant)


# ---------------------------------------------------------------------------- TOML writing

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(value):
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in str(value):
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back the same; TOML spells the others inf and nan.
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _key(key):
    return key if _BARE_KEY.match(key) else toml_string(key)


def _comment(text):
    # A comment ends at the line's end: a newline in a name must not start a TOML line.
    return "# " + " ".join(str(text).split())


def _string_list(key, values, indent=""):
    """A list one item per line when long: easier to review and to diff."""
    if len(values) <= 3:
        return [f"{indent}{key} = {_toml_value(list(values))}"]
    return [f"{indent}{key} = ["] + [f"{indent}  {toml_string(v)}," for v in values] + [f"{indent}]"]


# ---------------------------------------------------------------------------- sections


def _target_lines(target_kind, target):
    if target is None:
        target = TargetSpec(kind=TargetKind(target_kind))
    lines = ["[target]", f"kind = {toml_string(target.kind.value)}"]
    if target.lab is not None:
        lines.append(f"lab = {toml_string(target.lab)}")
    if target.kind is not TargetKind.REMOTE:
        return lines
    for table, spec in (("graph", target.graph), ("entra_connect", target.entra_connect)):
        if spec is None:
            lines += ["", _comment(f"[target.{table}] was not given: fill it in (see README, Real targets); no secrets here")]
            continue
        lines += ["", f"[target.{table}]"]
        defaults = type(spec)(host=spec.host) if table == "entra_connect" else type(spec)()
        for attribute in attrs.fields(type(spec)):
            value = getattr(spec, attribute.name)
            # Only what differs from the defaults (the host always): names of
            # environment variables at most, never their values.
            if value is None or (value == getattr(defaults, attribute.name) and attribute.name != "host"):
                continue
            lines.append(f"{attribute.name} = {_toml_value(value)}")
    return lines


def _flow_lines(flow):
    lines = ["", "  [[rules.flows]]", f"  destination = {toml_string(flow.destination)}", f"  flow_type = {toml_string(flow.flow_type.value)}"]
    if flow.flow_type is FlowType.DIRECT:
        lines.append(f"  source = {toml_string(flow.source)}")
    else:
        lines.append(f"  expression = {toml_string(flow.expression)}")
        if flow.sources:
            lines.append(f"  sources = {_toml_value(list(flow.sources))}")
    lines.append(f"  apply_once = {_toml_value(flow.execute_once)}")
    lines.append(f"  merge_type = {toml_string(flow.merge_type.value)}")
    return lines


def _custom_problem(rule, connectors):
    """Why a custom rule cannot be written as a loadable desired state, or None."""
    if not rule.name.strip():
        return "its name is empty"
    if rule.connector not in connectors:
        return f"its connector {rule.connector} is not on the server"
    if not rule.flows:
        return "it has no attribute flows (a custom rule in a desired state needs at least one)"
    destinations = [f.destination for f in rule.flows]
    if len(set(destinations)) != len(destinations):
        return "two of its flows have the same destination"
    for flow in rule.flows:
        if flow.flow_type is FlowType.DIRECT and (not flow.source or flow.expression is not None):
            return f"its Direct flow to {flow.destination} has no source, or an expression too"
        if flow.flow_type is not FlowType.DIRECT and not flow.expression:
            return f"its {flow.flow_type.value} flow to {flow.destination} has no expression"
    if not rule.source_object_type:
        return "it has no source object type"
    return None


def _rule_lines(observed):
    server = observed.server
    connectors = {c.identifier: c.name for c in server.connectors}
    custom = [r for r in server.rules if not r.is_standard]
    # With several AD connectors a rule is known by its name and its connector (each has its
    # own stock rules of the same names): every rule entry names its connector.
    several = len(server.connectors_of_kind("AD")) > 1
    custom_names = {}
    for rule in custom:
        custom_names.setdefault((rule.name, rule.connector.lower() if several else ""), []).append(rule)
    lines, skipped = [], []
    # Stock rules first, in precedence order, as the Rules Editor lists them.
    for rule in sorted((r for r in server.rules if r.is_standard), key=lambda r: (r.precedence, r.name)):
        if (rule.name, rule.connector.lower() if several else "") in custom_names:
            # One name, one entry: the custom rule (a Solution 1 copy) is the one written out;
            # a stock rule back under that name (after an upgrade) stays unmanaged.
            skipped.append(
                f"stock rule {rule.name!r} ({'disabled' if rule.disabled else 'enabled'}, precedence {rule.precedence}): a custom rule has the same name; "
                "kind = \"replacement\" would delete it"
            )
            continue
        lines += ["", "[[rules]]", f"name = {toml_string(rule.name)}", 'kind = "stock"', f"enabled = {_toml_value(not rule.disabled)}"]
        if several and rule.connector in connectors:
            lines.append(f"connector = {toml_string(connectors[rule.connector])}")
    seen = set()
    for rule in sorted(custom, key=lambda r: (r.precedence, r.name)):
        problem = _custom_problem(rule, connectors)
        key = (rule.name, rule.connector.lower() if several else "")
        if problem is None and key in seen:
            problem = "another custom rule has the same name (the planner refuses this server until they are named apart)"
        if problem:
            skipped.append(f"custom rule {rule.name!r} at precedence {rule.precedence}: {problem}")
            continue
        seen.add(key)
        lines += ["", "[[rules]]"]
        if any(r.name == rule.name for r in server.rules if r.is_standard) or _looks_like_stock(rule.name):
            lines.append(
                _comment(
                    "Named like a stock rule: a copy of it (Solution 1), written out in full. If an upgrade brings the "
                    'stock rule back, this file leaves it be; kind = "replacement" would delete it.'
                )
            )
        lines += [
            f"name = {toml_string(rule.name)}",
            'kind = "custom"',
            f"enabled = {_toml_value(not rule.disabled)}",
            f"precedence = {rule.precedence}",
            f"direction = {toml_string(rule.direction.value)}",
            f"source_object_type = {toml_string(rule.source_object_type)}",
            f"target_object_type = {toml_string(rule.target_object_type)}",
            f"link_type = {toml_string(rule.link_type.value)}",
            f"connector = {toml_string(connectors[rule.connector])}",
            f"description = {toml_string(rule.description)}",
        ]
        if rule.scope:
            groups = [[{"attribute": c.attribute, "operator": c.operator, "value": c.value} for c in group] for group in rule.scope]
            lines.append(f"scope = {_toml_value(groups)}")
        for flow in rule.flows:
            lines += _flow_lines(flow)
    return lines, skipped


def _looks_like_stock(name):
    # Stock rule names follow "In from AD - X" / "Out to AAD - X" / "In from AAD - X".
    return bool(re.match(r"^(In from AD|In from AAD|Out to AAD|Out to AD) - ", name))


def _scope_lines(observed, skipped):
    ads = observed.server.connectors_of_kind("AD")
    if not ads:
        return []
    empty = [ad.name for ad in ads if not ad.included_containers]
    if empty:
        skipped.append(f"[scope]: the AD connector {', '.join(empty)} includes no container (a desired state cannot say so)")
        return []
    included = [c for ad in ads for c in ad.included_containers]
    excluded = [c for ad in ads for c in ad.excluded_containers]
    bad = [dn for dn in (*included, *excluded) if not is_container(dn)]
    if bad:
        skipped.append(f"[scope]: {', '.join(bad)} cannot be written as a distinguished name the loader accepts")
        return []
    # Each container goes back to the connector of its forest when the file is planned.
    names = ", ".join(ad.name for ad in ads)
    return ["", _comment(f"The OU filtering of the AD connector{'s' if len(ads) > 1 else ''} {names}."), "[scope]"] + _string_list("included", included) + _string_list(
        "excluded", excluded
    )


def _export_lines(observed, skipped):
    aads = observed.server.connectors_of_kind("AAD")
    if len(aads) != 1:
        if aads:
            skipped.append(f"[export]: {len(aads)} Entra ID connectors")
        return []
    excluded = aads[0].excluded_attributes
    if not excluded:
        return []
    return ["", _comment("Attributes the Entra ID connector does not export."), "[export]"] + _string_list("excluded_attributes", excluded)


def _license_lines(observed, skipped):
    tenant = observed.tenant
    by_sku = {sku.sku_id: sku for sku in tenant.skus}
    upns = {}
    for user in sorted(tenant.users, key=lambda u: u.upn.lower()):
        if not user.synced:
            continue  # cloud-only and no-longer-synced users: not syncprep's to manage
        for assignment in user.licenses:
            sku = by_sku.get(assignment.sku_id)
            if sku is None:
                skipped.append(f"{user.upn}: licence {assignment.sku_id} is not among the tenant's subscribed SKUs")
                continue
            if not UPN.match(user.upn):
                skipped.append(f"{user.upn}: not a user principal name the loader accepts")
                continue
            upns.setdefault(sku.part_number, []).append(user.upn)
    lines = []
    for part_number in sorted(upns, key=str.lower):
        lines += [
            "",
            "[[licenses]]",
            f"sku = {toml_string(part_number)}",
            *_string_list("users", upns[part_number]),
            _comment("An export records licences; it never removes and assigns one again."),
            "relicense_without_mailbox = false",
        ]
    return lines


def export_desired(observed: Observed, *, target_kind="lab", target: TargetSpec | None = None, now: dt.datetime | None = None, description: str = "") -> str:
    """Desired-state TOML for ``observed``; loading it and planning it against the
    same environment gives no steps.

    ``target`` (a :class:`~reconciler.desired.TargetSpec`) is written as ``[target]``
    when given, else ``kind = target_kind``; a remote target without its spec gets a
    comment asking for ``[target.graph]`` and ``[target.entra_connect]``, and loads
    only once they are filled in. ``description`` names where the observation came
    from, for the header; ``now`` fixes the header's time (tests).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    rules, skipped = _rule_lines(observed)
    scope = _scope_lines(observed, skipped)
    export = _export_lines(observed, skipped)
    licences = _license_lines(observed, skipped)
    header = [
        _comment(f"Exported by syncprep {__version__} at {now.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}" + (f" from {description}" if description else "") + "."),
        _comment("What the server and the tenant looked like then: planning this file against the same environment changes nothing."),
        _comment("Stock rules by name and state, custom rules in full, scope, export filter and the licences of synced users."),
        _comment("Review it, then change it into what you want."),
    ]
    if observed.server.scheduler.next_policy is SyncPolicy.INITIAL:
        # Not configuration, so not in the file: planning it still schedules that sync.
        header.append(_comment("The server owes a full sync (a rule changed since the last one): a plan of this file runs it."))
    if skipped:
        header.append("#")
        header += [_comment(f"not exported: {reason}") for reason in skipped]
    body = [
        "",
        *_target_lines(target_kind, target),
        "",
        "[scheduler]",
        f"sync_cycle_enabled = {_toml_value(observed.server.scheduler.sync_cycle_enabled)}",
        *rules,
        *scope,
        *export,
        *licences,
    ]
    return "\n".join(header + body) + "\n"


__all__ = ["export_desired", "observe_for_export", "toml_string"]
