"""Planning sync rules, and who decides msExchMailboxGuid.

Stock rules are managed by their enabled state only; a *replacement* is the
knowledge-base article's editable copy of a stock rule (disable the original,
copy it at a free temporary precedence, delete the original, give the copy its
precedence); a *custom* rule is written out in full. Precedence is unique across
all rules, inbound and outbound (domain-facts A4), and the planner never takes a
precedence that another rule holds.
"""

from __future__ import annotations

import uuid

from typing import Optional

from attrs import evolve

from reconciler.classes import frozen
from reconciler.desired import RuleKind
from reconciler.errors import PlanError
from reconciler.model import AUTHORITATIVE_NULL, GUID_ATTRIBUTE, IGNORE_THIS_FLOW, NULL, Connector, Direction, FlowType, ScopeCondition, SyncRule
from reconciler.operations import CreateRule, RemoveRule, SetRuleDisabled, UpdateRule
from reconciler.steps import Action, GuidFlow, Level, Notice, rule_view, server_step


#: The article copies the rule to 200; the planner starts looking there but never takes a taken value.
TEMPORARY_PRECEDENCE_START = 200


CUSTOM_PRECEDENCE_RANGE = range(0, 100)


RULE_NAMESPACE = uuid.UUID("0b7e1f3c-2d4a-4f7e-9c1b-5a6d8e9f0a12")


#: ``connector = "all-ad"``: a stock or replacement rule applies to every AD connector's rule of its name.
ALL_AD = "all-ad"


def copy_identifier(name, connector=None):
    """The identifier the copy of a stock rule gets: stable, so plans are reproducible.

    ``connector`` (an identifier) on a server with several AD connectors, whose stock rules
    share their names: each connector's copy gets its own identifier."""
    return str(uuid.uuid5(RULE_NAMESPACE, name if connector is None else f"{name}\n{connector.lower()}"))


def guid_flow(rules, object_type, excluded_attributes=()):
    """How msExchMailboxGuid is decided for an *existing* object of ``object_type``.

    Returns ``(text, flows)``: a sentence for the plan and whether a value reaches
    the cloud. Apply-once flows do nothing on existing objects; ``NULL`` lets lower
    rules contribute; ``AuthoritativeNull`` stops them (domain-facts A5).
    """
    text, flows = _guid_rule_flow(rules, object_type)
    if flows and GUID_ATTRIBUTE.lower() in {a.lower() for a in excluded_attributes}:
        return f"{text}, but not exported: msExchMailboxGuid is excluded from export to Entra ID", False
    return text, flows


def guid_report(rules_now, rules_after, excluded_now=(), excluded_after=(), ad_connectors=()):
    """A :class:`~reconciler.steps.GuidFlow` per AD object type: who decides the GUID now and after.

    With several AD connectors (``ad_connectors``), one per connector and object type: an
    object meets only its own forest's connector's rules."""
    if len(ad_connectors) > 1:
        flows = []
        for connector in ad_connectors:
            now, after = _of_connector(rules_now, connector), _of_connector(rules_after, connector)
            flows += [
                GuidFlow.between(t, guid_flow(now, t, excluded_now), guid_flow(after, t, excluded_after), connector.name)
                for t in object_types(now + after)
            ]
        return tuple(flows)
    return tuple(
        GuidFlow.between(t, guid_flow(rules_now, t, excluded_now), guid_flow(rules_after, t, excluded_after))
        for t in object_types(tuple(rules_now) + tuple(rules_after))
    )


def _of_connector(rules, connector):
    return tuple(r for r in rules if r.connector.lower() == connector.identifier.lower())


def _guid_rule_flow(rules, object_type):
    return _guid_chain_flow(_guid_rules(rules, object_type))


def _guid_rules(rules, object_type):
    return [r for r in rules if not r.disabled and r.direction is Direction.INBOUND and r.source_object_type == object_type and r.flows_to(GUID_ATTRIBUTE)]


def joined_guid_flow(members):
    """``(text, flows)`` of msExchMailboxGuid for an existing metaverse person joined from
    several objects: ``members`` holds ``(rules of the object's connector, its object type)``
    each. The rules of every joined object compete in one precedence order, which is one
    number space across every connector (domain-facts A4/A5): an AuthoritativeNull of one
    connector stops a lower rule of another."""
    return _guid_chain_flow([r for rules, object_type in members for r in _guid_rules(rules, object_type)])


def _guid_chain_flow(candidates):
    chain = sorted(candidates, key=lambda r: r.precedence)
    passed = []
    for rule in chain:
        flow = rule.flows_to(GUID_ATTRIBUTE)[0]
        label = f"'{rule.name}' ({rule.precedence}, {flow.describe()})"
        if flow.execute_once:
            passed.append(f"{label} acts only on new objects")
            continue
        if flow.flow_type is FlowType.EXPRESSION and flow.expression == NULL:
            passed.append(f"{label} contributes nothing")
            continue
        if flow.flow_type is FlowType.EXPRESSION and flow.expression == AUTHORITATIVE_NULL:
            return _sentence(passed, f"removed by {label}, which stops lower rules"), False
        if flow.flow_type is FlowType.EXPRESSION and flow.expression == IGNORE_THIS_FLOW:
            return _sentence(passed, f"left as it is by {label}"), True
        return _sentence(passed, f"flows from {label}"), True
    return _sentence(passed, "no rule contributes it: the value is removed"), False


def _sentence(passed, verdict):
    return verdict if not passed else f"{verdict} ({'; '.join(passed)})"


def object_types(rules):
    types = {"user", "inetOrgPerson"}
    types.update(r.source_object_type for r in rules if r.direction is Direction.INBOUND and r.flows_to(GUID_ATTRIBUTE))
    return sorted(types, key=str.lower)


@frozen
class _Where:
    """Which rule a step is about: its name, and its connector where the name alone is
    not enough (several AD connectors each have a stock rule of the name, domain-facts A2)."""

    name: str
    connector: Optional[Connector] = None

    @property
    def label(self):
        return self.name if self.connector is None else f"{self.name} ({self.connector.name})"

    @property
    def resource(self):
        return f"rule/{self.name}" if self.connector is None else f"rule/{self.connector.name}/{self.name}"

    @property
    def copy_identifier(self):
        return copy_identifier(self.name, self.connector.identifier if self.connector is not None else None)


def plan_rule(spec, server, builder, notices):
    if spec.kind is RuleKind.CUSTOM:
        custom = [r for r in server.rules_named(spec.name) if not r.is_standard]
        if len(custom) > 1:
            # Copies of a stock rule on several AD connectors share its name: the spec's connector tells them apart.
            connector = _connector_for(spec, server)
            custom = [r for r in custom if r.connector.lower() == connector.lower()]
        if len(custom) > 1:
            raise PlanError(f"rule {spec.name!r}: {len(custom)} custom rules have this name on the server; name them apart before planning")
        return _plan_custom(spec, custom[0] if custom else None, server, builder)
    connectors = rule_connectors(spec, server)
    if spec.kind is RuleKind.REPLACEMENT and spec.precedence is not None and len(connectors) > 1:
        raise PlanError(
            f"rule {spec.name!r}: precedence {spec.precedence} is one precedence for the copies on {len(connectors)} connectors "
            f"({', '.join(c.name for c in connectors)}); leave precedence out (each copy takes its original's) or give one [[rules]] per connector with connector = \"...\""
        )
    several = len(server.connectors_of_kind("AD")) > 1
    ids = []
    for connector in connectors or [None]:
        where = _Where(spec.name, connector if several and connector is not None else None)
        named = [r for r in server.rules_named(spec.name) if connector is None or r.connector.lower() == connector.identifier.lower()]
        stock = [r for r in named if r.is_standard]
        copies = [r for r in named if not r.is_standard]
        if len(stock) > 1 or len(copies) > 1:
            raise PlanError(f"rule {where.label!r}: {len(named)} rules have this name on its connector; name them apart before planning")
        stock_rule = stock[0] if stock else None
        copy_rule = copies[0] if copies else None
        if spec.kind is RuleKind.STOCK:
            ids += _plan_stock(spec, where, stock_rule, builder)
        else:
            ids += _plan_replacement(spec, where, stock_rule, copy_rule, server, builder, notices)
    return ids


def rule_connectors(spec, server):
    """The connectors whose rule of ``spec.name`` a stock or replacement spec manages.

    ``connector = "name"``: that connector's; ``connector = "all-ad"``: every AD connector's;
    unset: every connector that holds a rule of the name (each AD connector has its own copy
    of the stock rules, domain-facts A2)."""
    if spec.connector is not None and spec.connector.lower() == ALL_AD:
        return list(server.connectors_of_kind("AD"))
    if spec.connector is not None:
        found = [c for c in server.connectors if c.name.lower() == spec.connector.lower()]
        if not found:
            raise PlanError(f"rule {spec.name!r}: no connector named {spec.connector!r} (the server has {', '.join(repr(c.name) for c in server.connectors) or 'none'})")
        return found
    holders = {r.connector.lower() for r in server.rules_named(spec.name)}
    known = [c for c in server.connectors if c.identifier.lower() in holders]
    unknown = sorted(holders - {c.identifier.lower() for c in known})
    return known + [Connector(identifier, identifier, "?") for identifier in unknown]


def _plan_stock(spec, where, rule, builder):
    if rule is None:
        on = f" on connector {where.connector.name!r}" if where.connector is not None else " on the server"
        raise PlanError(f"rule {spec.name!r}: no stock rule of this name{on}")
    if rule.disabled == (not spec.enabled):
        return []
    after = evolve(rule, disabled=not spec.enabled)
    builder.rules[rule.identifier] = after
    verb = "Enable" if spec.enabled else "Disable"
    return [
        builder.add(
            server_step(
                id=f"rule[{where.label}].{'enable' if spec.enabled else 'disable'}",
                resource=where.resource,
                action=Action.UPDATE,
                summary=f"{verb} the stock rule",
                operation=SetRuleDisabled(rule.identifier, rule.name, not spec.enabled),
                before=rule_view(rule),
                after=rule_view(after),
            )
        )
    ]


def _desired_flows(base_flows, specs):
    """The stock rule's flows with the listed destinations replaced (order kept)."""
    overrides = {s.destination: s.to_flow() for s in specs}
    flows = [overrides.pop(f.destination, f) for f in base_flows]
    flows.extend(overrides.values())
    return tuple(flows)


def _claim(builder, precedence, rule_name, exempt=()):
    """Refuse a precedence held by a rule the plan does not move away."""
    holder = builder.holder(precedence)
    if holder is not None and holder.identifier not in exempt:
        raise PlanError(
            f"rule {rule_name!r}: precedence {precedence} is held by {holder.name!r}; precedence is unique across all rules (domain-facts A4)"
        )


def _plan_replacement(spec, where, stock, copy, server, builder, notices):
    ids = []
    name = spec.name
    label = where.label
    resource = where.resource
    if copy is None:
        if stock is None:
            on = f"on connector {where.connector.name!r}" if where.connector is not None else "on the server"
            raise PlanError(f"rule {label!r}: neither the stock rule nor a copy of it is {on}; nothing to copy")
        flows = _desired_flows(stock.flows, spec.flows)
        # Unset: the copy takes back its original's precedence (per connector).
        target_precedence = spec.precedence if spec.precedence is not None else stock.precedence
        _claim(builder, target_precedence, label, exempt={stock.identifier})
        previous = None
        if not stock.disabled:
            disabled = evolve(stock, disabled=True)
            builder.rules[stock.identifier] = disabled
            previous = builder.add(
                server_step(
                    id=f"rule[{label}].disable-original",
                    resource=resource,
                    action=Action.UPDATE,
                    summary="Disable the stock rule before copying it (the Rules Editor's first step)",
                    operation=SetRuleDisabled(stock.identifier, name, True),
                    before=rule_view(stock),
                    after=rule_view(disabled),
                )
            )
            ids.append(previous)
        holder = builder.holder(target_precedence)
        direct = holder is None
        temporary = target_precedence if direct else builder.free_precedence(TEMPORARY_PRECEDENCE_START)
        new_rule = SyncRule(
            identifier=where.copy_identifier,
            name=name,
            direction=stock.direction,
            precedence=temporary,
            connector=stock.connector,
            source_object_type=stock.source_object_type,
            target_object_type=stock.target_object_type,
            link_type=stock.link_type,
            flows=flows,
            scope=stock.scope,
            join=stock.join,
            disabled=not spec.enabled,
            is_standard=False,
            password_sync=stock.password_sync,
            immutable_tag="",
            description=stock.description,
        )
        refuse_losing_password_sync(stock, new_rule)
        builder.rules[new_rule.identifier] = new_rule
        why = (
            f"at temporary precedence {temporary}, the first free value from {TEMPORARY_PRECEDENCE_START}"
            + (f" ({TEMPORARY_PRECEDENCE_START} is held by {_holder_name(server, TEMPORARY_PRECEDENCE_START)})" if temporary != TEMPORARY_PRECEDENCE_START and _holder_name(server, TEMPORARY_PRECEDENCE_START) else "")
            if not direct
            else f"at precedence {temporary}"
        )
        copy_id = builder.add(
            server_step(
                id=f"rule[{label}].copy",
                resource=resource,
                action=Action.CREATE,
                summary=f"Copy the stock rule {why}, with the flows set",
                operation=CreateRule(new_rule, copy_of=stock.identifier),
                before=None,
                after=rule_view(new_rule),
                depends_on=(previous,) if previous else (),
            )
        )
        ids.append(copy_id)
        del builder.rules[stock.identifier]
        remove_id = builder.add(
            server_step(
                id=f"rule[{label}].remove-original",
                resource=resource,
                action=Action.DELETE,
                summary="Delete the original stock rule (an upgrade will bring it back: see the notices)",
                operation=RemoveRule(stock.identifier, name),
                before=rule_view(stock if previous is None else evolve(stock, disabled=True)),
                after=None,
                depends_on=(copy_id,),
            )
        )
        ids.append(remove_id)
        if not direct:
            moved = evolve(new_rule, precedence=target_precedence)
            builder.rules[new_rule.identifier] = moved
            ids.append(
                builder.add(
                    server_step(
                        id=f"rule[{label}].precedence",
                        resource=resource,
                        action=Action.UPDATE,
                        summary=f"Give the copy the original's precedence {target_precedence}",
                        operation=UpdateRule(moved),
                        before=rule_view(new_rule),
                        after=rule_view(moved),
                        depends_on=(remove_id,),
                    )
                )
            )
        return ids

    # The copy exists: converge it, and delete a stock rule that came back.
    remove_id = None
    if stock is not None:
        del builder.rules[stock.identifier]
        remove_id = builder.add(
            server_step(
                id=f"rule[{label}].remove-returned",
                resource=resource,
                action=Action.DELETE,
                summary="Delete the stock rule again: it is back (an Entra Connect upgrade re-creates deleted stock rules)",
                operation=RemoveRule(stock.identifier, name),
                before=rule_view(stock),
                after=None,
            )
        )
        ids.append(remove_id)
    precedence = spec.precedence if spec.precedence is not None else copy.precedence
    wanted = evolve(copy, precedence=precedence, flows=_desired_flows(copy.flows, spec.flows), disabled=not spec.enabled)
    refuse_losing_password_sync(copy, wanted)
    if wanted != copy:
        _claim(builder, precedence, label, exempt={copy.identifier})
        builder.rules[copy.identifier] = wanted
        ids.append(
            builder.add(
                server_step(
                    id=f"rule[{label}].update",
                    resource=resource,
                    action=Action.UPDATE,
                    summary="Bring the copy back to the desired precedence, state and flows",
                    operation=UpdateRule(wanted),
                    before=rule_view(copy),
                    after=rule_view(wanted),
                    depends_on=(remove_id,) if remove_id else (),
                )
            )
        )
    return ids


def refuse_losing_password_sync(source, rule):
    """PlanError when ``rule``, written from ``source``, would drop its password hash sync:
    a copy without EnablePasswordSync stops password hash sync for every user it covers."""
    if source.password_sync and not rule.password_sync:
        raise PlanError(
            f"rule {rule.name!r}: {source.name!r} carries password hash sync (EnablePasswordSync); "
            "a rewrite without it would stop password hash sync for every user it covers; refusing"
        )


def _holder_name(server, precedence):
    for rule in server.rules:
        if rule.precedence == precedence:
            return repr(rule.name)
    return None


def _plan_custom(spec, existing, server, builder):
    connector = _connector_for(spec, server)
    wanted = SyncRule(
        identifier=existing.identifier if existing else copy_identifier(spec.name, connector if len(server.connectors_of_kind("AD")) > 1 else None),
        name=spec.name,
        direction=Direction(spec.direction),
        precedence=spec.precedence,
        connector=connector,
        source_object_type=spec.source_object_type,
        target_object_type=spec.target_object_type,
        link_type=spec.link_type,
        flows=tuple(f.to_flow() for f in spec.flows),
        scope=tuple(tuple(ScopeCondition(c.attribute, c.operator.upper(), c.value) for c in group) for group in spec.scope),
        # The desired state does not manage join conditions or password sync: an existing rule keeps its own.
        join=existing.join if existing else (),
        password_sync=existing.password_sync if existing else False,
        disabled=not spec.enabled,
        description=spec.description,
    )
    resource = f"rule/{spec.name}"
    if existing is None:
        _claim(builder, spec.precedence, spec.name)
        builder.rules[wanted.identifier] = wanted
        return [
            builder.add(
                server_step(
                    id=f"rule[{spec.name}].create",
                    resource=resource,
                    action=Action.CREATE,
                    summary=f"Create the custom rule at precedence {spec.precedence}",
                    operation=CreateRule(wanted),
                    after=rule_view(wanted),
                )
            )
        ]
    comparable = evolve(existing, flows=tuple(sorted(existing.flows, key=lambda f: f.destination)), immutable_tag="")
    if comparable == evolve(wanted, flows=tuple(sorted(wanted.flows, key=lambda f: f.destination))):
        return []
    _claim(builder, spec.precedence, spec.name, exempt={existing.identifier})
    wanted = evolve(wanted, immutable_tag=existing.immutable_tag)
    builder.rules[existing.identifier] = wanted
    return [
        builder.add(
            server_step(
                id=f"rule[{spec.name}].update",
                resource=resource,
                action=Action.UPDATE,
                summary="Update the custom rule",
                operation=UpdateRule(wanted),
                before=rule_view(existing) | {"scope": _scope_text(existing)},
                after=rule_view(wanted) | {"scope": _scope_text(wanted)},
            )
        )
    ]


def _scope_text(rule):
    return " OR ".join(" AND ".join(f"{c.attribute} {c.operator} {c.value}".strip() for c in g) for g in rule.scope) or "(all)"


def _connector_for(spec, server):
    candidates = server.connectors_of_kind("AD")
    if spec.connector:
        candidates = tuple(c for c in server.connectors if c.name.lower() == spec.connector.lower())
        if not candidates:
            raise PlanError(f"rule {spec.name!r}: no connector named {spec.connector!r}")
    if len(candidates) != 1:
        raise PlanError(f"rule {spec.name!r}: {len(candidates)} AD connectors; say which with connector = \"...\"")
    return candidates[0].identifier


def check_unique_precedences(rules):
    by_precedence = {}
    for rule in rules:
        by_precedence.setdefault(rule.precedence, []).append(rule.name)
    clashes = {p: names for p, names in by_precedence.items() if len(names) > 1}
    if clashes:
        precedence, names = sorted(clashes.items())[0]
        raise PlanError(f"precedence {precedence} would be held by {' and '.join(repr(n) for n in names)}; precedence is unique across all rules")


def server_notices(desired, server, predicted_rules, guid_flows, builder):
    notices = []
    scheduler = server.scheduler
    if scheduler.staging_mode:
        notices.append(Notice(Level.WARNING, "staging-mode", "the server is in staging mode: it exports nothing, so no cloud object will lose its GUID from this server and no licence is planned; "
                "apply refuses to change it unless the target sets allow_staging = true"))
    if scheduler.cycle_in_progress:
        notices.append(Notice(Level.WARNING, "cycle-running", "a sync cycle is running now: configuration changes are refused until it ends; apply waits for it"))
    if not scheduler.sync_cycle_enabled and desired.scheduler.sync_cycle_enabled:
        notices.append(Notice(Level.WARNING, "scheduler-off", "the sync scheduler is off (left paused?); the plan turns it back on"))
    changes_guid = any(g.flows_now and not g.flows_after for g in guid_flows)
    if changes_guid:
        notices.append(
            Notice(
                Level.INFO,
                "article",
                "once Exchange Online mailboxes exist, the user has two mailboxes (on-premises and cloud): mail from inside the "
                "organisation goes to the one in the sender's environment, so migrate without delay; public folders are not covered",
            )
        )
        notices.append(
            Notice(
                Level.INFO,
                "article-gal",
                "attributes synced from the mailbox GUID (ImmutableId, the on-premises GAL in Exchange Online) may stop working; new mailboxes get new GUIDs",
            )
        )
    for flow in guid_flows:
        if flow.flows_after:
            notices.append(Notice(Level.WARNING, "guid-still-flows", f"msExchMailboxGuid still reaches the cloud for {flow.label} objects: {flow.after}"))
    for spec in desired.rules:
        if spec.kind is RuleKind.REPLACEMENT:
            notices.append(
                Notice(
                    Level.WARNING,
                    "stock-replaced",
                    f"'{spec.name}' is replaced by a copy: an Entra Connect upgrade re-creates the deleted stock rule; plan again after every upgrade "
                    "(or use the upgrade-safe approach: desired-state/upgrade-safe.toml)",
                )
            )
        if spec.kind is not RuleKind.STOCK and spec.precedence is not None and spec.precedence not in CUSTOM_PRECEDENCE_RANGE:
            notices.append(
                Notice(Level.WARNING, "custom-precedence", f"'{spec.name}' is a custom rule at precedence {spec.precedence}: Microsoft supports custom rules only at 0-99")
            )
    return notices
