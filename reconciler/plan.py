"""From desired and observed state to an ordered plan of steps.

The planner is a pure function: :func:`build_plan` reads a
:class:`~reconciler.desired.DesiredState` and an :class:`~reconciler.model.Observed`
and returns a frozen :class:`Plan`. It never talks to a system.

The procedure it expands into is the knowledge-base article's Solution 1, with
the pitfalls of ``shared/reference/domain-facts.md`` handled: pause the
scheduler → rule changes (disable the original, copy it at a *free* temporary
precedence, delete the original, give the copy its precedence) → resume the
scheduler → Initial sync → licences (remove and assign again where a licence made
no mailbox, decided after the sync) → verify the mailboxes.
"""

from __future__ import annotations

import enum
import graphlib
import hashlib
import json
import uuid
from typing import Any, Optional

from attrs import evolve, field, frozen

from reconciler.desired import RuleKind
from reconciler.errors import PlanError
from reconciler.model import (
    AUTHORITATIVE_NULL,
    GUID_ATTRIBUTE,
    IGNORE_THIS_FLOW,
    NULL,
    Direction,
    FlowType,
    MailboxState,
    ScopeCondition,
    SyncPolicy,
    SyncRule,
)
from reconciler.operations import (
    AssignLicense,
    CreateRule,
    PurgeDeletedUsers,
    RemoveLicense,
    SetContainerScope,
    SetDeletionThreshold,
    SetExcludedAttributes,
    RemoveRule,
    RunSyncCycle,
    SetRuleDisabled,
    SetScheduler,
    UpdateRule,
    VerifyMailboxes,
)
from reconciler.model import CloudUser, UserRef
from reconciler.provider import UserSelection

#: Without [purge] max_count, a plan never purges more users than this.
DEFAULT_PURGE_CEILING = 50
#: The share-of-deletes check applies from this many synced users on (octoDNS: 10 records).
MIN_SYNCED_FOR_PERCENT = 10
#: The article copies the rule to 200; the planner starts looking there but never takes a taken value.
TEMPORARY_PRECEDENCE_START = 200
CUSTOM_PRECEDENCE_RANGE = range(0, 100)
RULE_NAMESPACE = uuid.UUID("0b7e1f3c-2d4a-4f7e-9c1b-5a6d8e9f0a12")
PLAN_FORMAT_VERSION = "1.0"


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RUN = "run"
    CHECK = "check"


class Impact(enum.Enum):
    #: Can be undone by another plan.
    REVERSIBLE = "reversible"
    #: Needs a full (Initial) sync cycle: long, and felt by every synced object.
    COSTLY = "costly"
    #: Cannot be undone (a hard delete).
    IRREVERSIBLE = "irreversible"


class Level(enum.Enum):
    INFO = "info"
    WARNING = "warning"


@frozen
class Notice:
    level: Level
    code: str
    message: str


@frozen
class FieldChange:
    path: str
    before: Any
    after: Any


@frozen
class Step:
    """One thing apply will do, through one provider, to one resource.

    ``decided_after_sync`` marks a step whose exact content is decided during
    apply from a fresh observation taken after the sync (what the plan shows is
    the prediction).
    """

    id: str
    provider: str
    resource: str
    action: Action
    summary: str
    operation: Any
    impact: Impact = Impact.REVERSIBLE
    before: Optional[dict] = None
    after: Optional[dict] = None
    depends_on: tuple[str, ...] = ()
    decided_after_sync: bool = False
    #: An approval apply needs beyond the plan's own: "irreversible" or "threshold-raise".
    approval: Optional[str] = None
    changes: tuple[FieldChange, ...] = field(default=None)

    def __attrs_post_init__(self):
        if self.changes is None:
            object.__setattr__(self, "changes", field_changes(self.before, self.after))


@frozen
class GuidFlow:
    """Who decides msExchMailboxGuid for existing objects of one AD object type."""

    object_type: str
    now: str
    after: str
    flows_now: bool
    flows_after: bool


@frozen
class Plan:
    source: str
    target: str
    steps: tuple[Step, ...]
    notices: tuple[Notice, ...] = ()
    guid_flows: tuple[GuidFlow, ...] = ()
    #: Reasons apply refuses without --force (octoDNS's "too many deletes").
    unsafe: tuple[str, ...] = ()

    @property
    def approvals_needed(self):
        return tuple(dict.fromkeys(s.approval for s in self.steps if s.approval))

    @property
    def has_changes(self):
        return bool(self.steps)

    def counts(self):
        counts = {action.value: 0 for action in Action}
        for step in self.steps:
            counts[step.action.value] += 1
        counts["costly"] = sum(1 for s in self.steps if s.impact is Impact.COSTLY)
        counts["irreversible"] = sum(1 for s in self.steps if s.impact is Impact.IRREVERSIBLE)
        return counts

    def to_dict(self):
        from reconciler.serialize import plan_to_dict

        return plan_to_dict(self)

    def checksum(self):
        data = json.dumps(self.to_dict()["steps"], sort_keys=True, default=str).encode()
        return hashlib.sha256(data).hexdigest()


def _server_step(**fields):
    return Step(provider="entra-connect", **fields)


def field_changes(before, after):
    """Field-level differences between two JSON-able views, via deepdiff."""
    if before is None or after is None or before == after:
        return ()
    from deepdiff import DeepDiff

    diff = DeepDiff(before, after, verbose_level=2)
    changes = []
    for kind in ("values_changed", "type_changes"):
        for path, change in diff.get(kind, {}).items():
            changes.append(FieldChange(_dd_path(path), change.get("old_value"), change.get("new_value")))
    for path, value in diff.get("dictionary_item_added", {}).items():
        changes.append(FieldChange(_dd_path(path), None, value))
    for path, value in diff.get("dictionary_item_removed", {}).items():
        changes.append(FieldChange(_dd_path(path), value, None))
    for kind, is_add in (("iterable_item_added", True), ("iterable_item_removed", False)):
        for path, value in diff.get(kind, {}).items():
            changes.append(FieldChange(_dd_path(path), None if is_add else value, value if is_add else None))
    return tuple(sorted(changes, key=lambda c: c.path))


def _dd_path(path):
    # root['flows']['msExchMailboxGuid'] -> flows.msExchMailboxGuid
    text = ""
    for chunk in path[len("root"):].strip("[]").split("]["):
        if chunk.isdigit():
            text += f"[{chunk}]"
        elif chunk:
            text += ("." if text else "") + chunk.strip("'\"")
    return text


def rule_view(rule):
    """What a plan shows of a rule: the fields the desired state can manage."""
    if rule is None:
        return None
    return {
        "name": rule.name,
        "precedence": rule.precedence,
        "enabled": not rule.disabled,
        "standard": rule.is_standard,
        "object_types": f"{rule.source_object_type} -> {rule.target_object_type}",
        "flows": {f.destination: f.describe() for f in rule.flows},
    }


def selection_for(desired):
    return UserSelection.union(
        UserSelection(frozenset(u.lower() for u in spec.users), tuple(spec.ous)) for spec in desired.licenses
    )


def copy_identifier(name):
    """The identifier the copy of a stock rule gets: stable, so plans are reproducible."""
    return str(uuid.uuid5(RULE_NAMESPACE, name))


# ---------------------------------------------------------------------------- msExchMailboxGuid


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


def _guid_rule_flow(rules, object_type):
    chain = sorted(
        (r for r in rules if not r.disabled and r.direction is Direction.INBOUND and r.source_object_type == object_type and r.flows_to(GUID_ATTRIBUTE)),
        key=lambda r: r.precedence,
    )
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


def _object_types(rules):
    types = {"user", "inetOrgPerson"}
    types.update(r.source_object_type for r in rules if r.direction is Direction.INBOUND and r.flows_to(GUID_ATTRIBUTE))
    return sorted(types, key=str.lower)


# ---------------------------------------------------------------------------- planner


class _Builder:
    """Collects steps and their dependencies while the planner walks the rules."""

    def __init__(self, rules):
        self.steps = {}
        self.order = []
        self.rules = {r.identifier: r for r in rules}  # the predicted rule set
        # Temporary precedences handed out: never reused within one plan, so no copy
        # ever waits on another copy's move.
        self.reserved = set()

    def add(self, step):
        self.steps[step.id] = step
        self.order.append(step.id)
        return step.id

    def holder(self, precedence):
        for rule in self.rules.values():
            if rule.precedence == precedence:
                return rule
        return None

    def free_precedence(self, start):
        taken = {r.precedence for r in self.rules.values()} | self.reserved
        value = start
        while value in taken:
            value += 1
        self.reserved.add(value)
        return value


def build_plan(desired, observed, target_description="lab"):
    """The plan that takes ``observed`` to ``desired``. Raises :class:`PlanError` when it cannot.

    The server changes come in at most two scheduler brackets, each followed by a
    full sync: the first only for a purge (take the OU out of scope so its users
    land in the recycle bin), the second for everything else (rules, export
    filter, scope). Between them the purge; after them the licences.
    """
    server = observed.server
    builder = _Builder(server.rules)
    notices = []
    scheduler_on = server.scheduler.sync_cycle_enabled
    unsafe = []

    rebuild = _plan_purge(desired, observed, builder, notices, unsafe)
    after_purge = ()
    if rebuild is not None:
        if rebuild.config_ids:
            last, scheduler_on = _bracket(builder, rebuild.config_ids, "rebuild.", scheduler_on, wanted=scheduler_on)
            sync_id = builder.add(
                _server_step(
                    id="rebuild.sync",
                    resource="sync cycle",
                    action=Action.RUN,
                    summary="Run a full (Initial) sync cycle: the users out of scope are soft-deleted in the cloud",
                    operation=RunSyncCycle(SyncPolicy.INITIAL),
                    impact=Impact.COSTLY,
                    depends_on=tuple(last),
                )
            )
            builder.steps[rebuild.purge_id] = evolve(builder.steps[rebuild.purge_id], depends_on=(sync_id,))
        after_purge = (rebuild.purge_id,)

    config_ids = []
    for spec in desired.rules:
        config_ids += _plan_rule(spec, server, builder, notices)
    _check_unique_precedences(tuple(builder.rules.values()))
    config_ids += _plan_export(desired, server, builder, notices)
    config_ids += _plan_scope(desired, observed, builder, notices, rebuild)
    if rebuild is not None and rebuild.threshold_restore is not None:
        config_ids.append(builder.add(rebuild.threshold_restore))
    for step_id in config_ids:
        step = builder.steps[step_id]
        builder.steps[step_id] = evolve(step, depends_on=tuple(dict.fromkeys((*after_purge, *step.depends_on))))
    predicted_rules = tuple(builder.rules.values())

    wanted = desired.scheduler.sync_cycle_enabled
    last, scheduler_on = _bracket(builder, config_ids, "", scheduler_on, wanted=wanted, after=after_purge)
    sync_id = None
    if config_ids or server.scheduler.next_policy is SyncPolicy.INITIAL:
        reason = "the configuration changed" if config_ids else "a full sync is owed since the last rule change"
        if not config_ids and rebuild is not None and rebuild.config_ids:
            reason = "the users come back"
        sync_id = builder.add(
            _server_step(
                id="sync.initial",
                resource="sync cycle",
                action=Action.RUN,
                summary=f"Run a full (Initial) sync cycle and wait for every connector: {reason}",
                operation=RunSyncCycle(SyncPolicy.INITIAL),
                impact=Impact.COSTLY,
                depends_on=tuple(dict.fromkeys((*last, *after_purge))),
            )
        )

    excluded_now = tuple(a for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes)
    excluded_after = tuple(desired.export.excluded_attributes) if desired.export is not None else excluded_now
    guid_flows = tuple(
        GuidFlow(t, *_pair(guid_flow(server.rules, t, excluded_now), guid_flow(predicted_rules, t, excluded_after)))
        for t in _object_types(server.rules + predicted_rules)
    )
    notices += _server_notices(desired, server, predicted_rules, guid_flows, builder)

    licence_steps, licence_notices = license_steps(
        desired,
        observed.tenant,
        guid_flows_after=guid_flows,
        sync_planned=sync_id is not None,
        cleared_since=last_full_sync_end(server),
        depends_on=(sync_id,) if sync_id else tuple(dict.fromkeys((*last, *after_purge))),
        recreated=frozenset(u.upn.lower() for u in rebuild.refs) if rebuild else frozenset(),
        coming_back=_coming_back(observed.tenant, rebuild),
    )
    for step in licence_steps:
        builder.add(step)
    notices += licence_notices

    return Plan(
        source=desired.source,
        target=target_description,
        steps=order_steps(builder.steps, builder.order),
        notices=tuple(notices),
        guid_flows=guid_flows,
        unsafe=tuple(unsafe),
    )


def _bracket(builder, config_ids, prefix, scheduler_on, wanted, after=()):
    """Pause the scheduler around ``config_ids`` and leave it as ``wanted``.

    Returns the ids the next step must wait for, and whether the scheduler is on.
    """
    if not config_ids:
        if wanted == scheduler_on:
            return list(after), scheduler_on
        step_id = builder.add(_scheduler_step(f"{prefix}scheduler.{'resume' if wanted else 'disable'}", wanted, scheduler_on, after))
        return [step_id], wanted
    if scheduler_on:
        pause_id = builder.add(
            _server_step(
                id=f"{prefix}scheduler.pause",
                resource="scheduler",
                action=Action.UPDATE,
                summary="Pause the sync scheduler while the configuration changes",
                operation=SetScheduler(False),
                before={"sync_cycle_enabled": True},
                after={"sync_cycle_enabled": False},
                depends_on=tuple(after),
            )
        )
        for step_id in config_ids:
            step = builder.steps[step_id]
            builder.steps[step_id] = evolve(step, depends_on=(pause_id, *step.depends_on))
    if wanted:
        resume_id = builder.add(_scheduler_step(f"{prefix}scheduler.resume", True, False, config_ids))
        return [resume_id], True
    if scheduler_on:
        return list(config_ids), False
    return list(config_ids), False


def _scheduler_step(step_id, enabled, was_on, depends_on):
    return _server_step(
        id=step_id,
        resource="scheduler",
        action=Action.UPDATE,
        summary="Resume the sync scheduler" if enabled else "Turn the sync scheduler off (the desired state says so)",
        operation=SetScheduler(enabled),
        before={"sync_cycle_enabled": was_on},
        after={"sync_cycle_enabled": enabled},
        depends_on=tuple(depends_on),
    )


def _pair(now, after):
    (now_text, now_flows), (after_text, after_flows) = now, after
    return now_text, after_text, now_flows, after_flows


def _plan_rule(spec, server, builder, notices):
    named = server.rules_named(spec.name)
    stock = [r for r in named if r.is_standard]
    custom = [r for r in named if not r.is_standard]
    if len(stock) > 1 or len(custom) > 1:
        raise PlanError(f"rule {spec.name!r}: {len(named)} rules have this name on the server; name them apart before planning")
    stock_rule = stock[0] if stock else None
    custom_rule = custom[0] if custom else None
    if spec.kind is RuleKind.STOCK:
        return _plan_stock(spec, stock_rule, builder)
    if spec.kind is RuleKind.REPLACEMENT:
        return _plan_replacement(spec, stock_rule, custom_rule, server, builder, notices)
    return _plan_custom(spec, custom_rule, server, builder)


def _plan_stock(spec, rule, builder):
    if rule is None:
        raise PlanError(f"rule {spec.name!r}: no stock rule of this name on the server")
    if rule.disabled == (not spec.enabled):
        return []
    after = evolve(rule, disabled=not spec.enabled)
    builder.rules[rule.identifier] = after
    verb = "Enable" if spec.enabled else "Disable"
    return [
        builder.add(
            _server_step(
                id=f"rule[{spec.name}].{'enable' if spec.enabled else 'disable'}",
                resource=f"rule/{spec.name}",
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


def _plan_replacement(spec, stock, copy, server, builder, notices):
    ids = []
    name = spec.name
    resource = f"rule/{name}"
    if copy is None:
        if stock is None:
            raise PlanError(f"rule {name!r}: neither the stock rule nor a copy of it is on the server; nothing to copy")
        flows = _desired_flows(stock.flows, spec.flows)
        target_precedence = spec.precedence
        _claim(builder, target_precedence, name, exempt={stock.identifier})
        previous = None
        if not stock.disabled:
            disabled = evolve(stock, disabled=True)
            builder.rules[stock.identifier] = disabled
            previous = builder.add(
                _server_step(
                    id=f"rule[{name}].disable-original",
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
            identifier=copy_identifier(name),
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
            immutable_tag="",
            description=stock.description,
        )
        builder.rules[new_rule.identifier] = new_rule
        why = (
            f"at temporary precedence {temporary}, the first free value from {TEMPORARY_PRECEDENCE_START}"
            + (f" ({TEMPORARY_PRECEDENCE_START} is held by {_holder_name(server, TEMPORARY_PRECEDENCE_START)})" if temporary != TEMPORARY_PRECEDENCE_START and _holder_name(server, TEMPORARY_PRECEDENCE_START) else "")
            if not direct
            else f"at precedence {temporary}"
        )
        copy_id = builder.add(
            _server_step(
                id=f"rule[{name}].copy",
                resource=resource,
                action=Action.CREATE,
                summary=f"Copy the stock rule {why}, with the flows set",
                operation=CreateRule(new_rule),
                before=None,
                after=rule_view(new_rule),
                depends_on=(previous,) if previous else (),
            )
        )
        ids.append(copy_id)
        del builder.rules[stock.identifier]
        remove_id = builder.add(
            _server_step(
                id=f"rule[{name}].remove-original",
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
                    _server_step(
                        id=f"rule[{name}].precedence",
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
            _server_step(
                id=f"rule[{name}].remove-original",
                resource=resource,
                action=Action.DELETE,
                summary="Delete the stock rule again: it is back (an Entra Connect upgrade re-creates deleted stock rules)",
                operation=RemoveRule(stock.identifier, name),
                before=rule_view(stock),
                after=None,
            )
        )
        ids.append(remove_id)
    wanted = evolve(copy, precedence=spec.precedence, flows=_desired_flows(copy.flows, spec.flows), disabled=not spec.enabled)
    if wanted != copy:
        _claim(builder, spec.precedence, name, exempt={copy.identifier})
        builder.rules[copy.identifier] = wanted
        ids.append(
            builder.add(
                _server_step(
                    id=f"rule[{name}].update",
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


def _holder_name(server, precedence):
    for rule in server.rules:
        if rule.precedence == precedence:
            return repr(rule.name)
    return None


def _plan_custom(spec, existing, server, builder):
    connector = _connector_for(spec, server)
    wanted = SyncRule(
        identifier=existing.identifier if existing else copy_identifier(spec.name),
        name=spec.name,
        direction=Direction(spec.direction),
        precedence=spec.precedence,
        connector=connector,
        source_object_type=spec.source_object_type,
        target_object_type=spec.target_object_type,
        link_type=spec.link_type,
        flows=tuple(f.to_flow() for f in spec.flows),
        scope=tuple(tuple(ScopeCondition(c.attribute, c.operator.upper(), c.value) for c in group) for group in spec.scope),
        disabled=not spec.enabled,
        description=spec.description,
    )
    resource = f"rule/{spec.name}"
    if existing is None:
        _claim(builder, spec.precedence, spec.name)
        builder.rules[wanted.identifier] = wanted
        return [
            builder.add(
                _server_step(
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
            _server_step(
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


def _check_unique_precedences(rules):
    by_precedence = {}
    for rule in rules:
        by_precedence.setdefault(rule.precedence, []).append(rule.name)
    clashes = {p: names for p, names in by_precedence.items() if len(names) > 1}
    if clashes:
        precedence, names = sorted(clashes.items())[0]
        raise PlanError(f"precedence {precedence} would be held by {' and '.join(repr(n) for n in names)}; precedence is unique across all rules")


def _server_notices(desired, server, predicted_rules, guid_flows, builder):
    notices = []
    scheduler = server.scheduler
    if scheduler.staging_mode:
        notices.append(Notice(Level.WARNING, "staging-mode", "the server is in staging mode: it exports nothing, so no cloud object will lose its GUID from this server"))
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
            notices.append(Notice(Level.WARNING, "guid-still-flows", f"msExchMailboxGuid still reaches the cloud for {flow.object_type} objects: {flow.after}"))
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


# ---------------------------------------------------------------------------- Solution 2: scope, export, purge


@frozen
class _Rebuild:
    config_ids: tuple[str, ...]
    purge_id: str
    refs: tuple
    scope_out: Optional[tuple] = None  # (included, excluded) while the users are out
    threshold_restore: Optional[Step] = None


def _norm(dns):
    return tuple(sorted({dn.strip() for dn in dns}, key=str.lower))


def _same_dns(a, b):
    return {x.lower() for x in a} == {x.lower() for x in b}


def _in_scope(dn, included, excluded):
    def under(container):
        return dn.lower() == container.lower() or dn.lower().endswith("," + container.lower())

    best_in = max((len(c) for c in included if under(c)), default=-1)
    best_out = max((len(c) for c in excluded if under(c)), default=-1)
    return best_in >= 0 and best_in >= best_out


def _purge_selection(purge):
    return UserSelection(frozenset(u.lower() for u in purge.users), tuple(purge.ous))


def _plan_purge(desired, observed, builder, notices, unsafe):
    """Solution 2's destructive half: which users to hard-delete, and how they get to the recycle bin."""
    purge = desired.purge
    if purge is None:
        return None
    tenant, server = observed.tenant, observed.server
    if tenant.deleted_users is None:
        raise PlanError("purge: the recycle bin could not be read (unknown, not empty): no destructive step is planned; plan again")
    selection = _purge_selection(purge)
    excluding_now = bool(desired.export) and bool(
        {a.lower() for a in desired.export.excluded_attributes} - {a.lower() for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes}
    )
    ad = _single_ad_connector(server)
    active = []
    for user in tenant.users:
        if not selection.matches(user):
            continue
        if user.synced is None:
            notices.append(Notice(Level.WARNING, "purge-cloud-only", f"{user.upn} is cloud-only: never purged"))
            continue
        if not any(user.in_ou(ou) for ou in purge.ous):
            if excluding_now:
                notices.append(Notice(Level.WARNING, "purge-active-by-upn", f"{user.upn} is active and not under a [purge] OU: it cannot be taken out of sync alone; name its OU"))
            continue
        active.append(user)
    deleted = []
    for user in tenant.deleted_users:
        named = user.upn.lower() in selection.upns or (user.on_prem_dn and any(user.on_prem_dn.lower().endswith("," + ou.lower()) for ou in purge.ous))
        if not named:
            continue
        if user.synced is None:
            notices.append(Notice(Level.WARNING, "purge-cloud-only", f"{user.upn} (in the recycle bin) is cloud-only: never purged"))
            continue
        deleted.append(user)
    if active and not excluding_now:
        notices.append(
            Notice(
                Level.INFO,
                "purge-active-kept",
                f"{len(active)} user(s) of the [purge] selection are active: they are taken out and purged only in the plan that starts excluding an attribute from export",
            )
        )
        active = []
    cycled = sorted(active, key=lambda u: u.upn.lower()) if excluding_now else []
    refs = tuple(sorted([u.ref for u in cycled] + [UserRef(u.id, u.upn) for u in deleted], key=lambda r: r.upn.lower()))
    if not refs:
        return None

    limit = purge.max_count if purge.max_count is not None else DEFAULT_PURGE_CEILING
    if len(refs) > limit:
        which = "max_count" if purge.max_count is not None else f"the default ceiling ({DEFAULT_PURGE_CEILING}; set [purge] max_count)"
        raise PlanError(f"purge: {len(refs)} users would be purged, more than {which} allows ({limit}); nothing is planned")
    synced_total = sum(1 for u in tenant.users if u.synced) + len(deleted)
    if synced_total >= MIN_SYNCED_FOR_PERCENT:
        share = 100.0 * len(refs) / synced_total
        if share > purge.max_percent:
            unsafe.append(f"Too many deletes: {share:.2f}% is over {purge.max_percent:.2f}% ({len(refs)}/{synced_total} synced users); force required")

    config_ids = []
    scope_out = None
    threshold_restore = None
    if cycled:
        included, excluded = ad.included_containers, ad.excluded_containers
        new_excluded = _norm((*excluded, *purge.ous))
        scope_out = (tuple(included), new_excluded)
        leaving = [u for u in tenant.users if u.synced and u.on_prem_dn and _in_scope(u.on_prem_dn, included, excluded) and not _in_scope(u.on_prem_dn, included, new_excluded)]
        config_ids.append(
            builder.add(
                _server_step(
                    id="rebuild.scope.exclude",
                    resource=f"connector/{ad.name}/scope",
                    action=Action.UPDATE,
                    summary=f"Take {', '.join(purge.ous)} out of the sync scope: {len(leaving)} user(s) will be soft-deleted in the cloud (known after sync)",
                    operation=SetContainerScope(tuple(included), new_excluded),
                    before={"included": list(included), "excluded": list(excluded)},
                    after={"included": list(included), "excluded": list(new_excluded)},
                )
            )
        )
        threshold = server.deletion_threshold
        if threshold is None:
            notices.append(Notice(Level.WARNING, "threshold-unknown", "the export deletion threshold is off or could not be read"))
        elif len(leaving) > threshold:
            config_ids.append(
                builder.add(
                    _server_step(
                        id="rebuild.threshold.raise",
                        resource="export deletion threshold",
                        action=Action.UPDATE,
                        summary=f"Raise the export deletion threshold from {threshold} to {len(leaving)} for this sync (restored afterwards): otherwise the export stops and deletes nothing",
                        operation=SetDeletionThreshold(len(leaving)),
                        before={"threshold": threshold},
                        after={"threshold": len(leaving)},
                        approval="threshold-raise",
                    )
                )
            )
            threshold_restore = _server_step(
                id="threshold.restore",
                resource="export deletion threshold",
                action=Action.UPDATE,
                summary=f"Restore the export deletion threshold to {threshold}",
                operation=SetDeletionThreshold(threshold),
                before={"threshold": len(leaving)},
                after={"threshold": threshold},
                approval="threshold-raise",
            )
        else:
            notices.append(Notice(Level.INFO, "threshold-ok", f"{len(leaving)} soft-deletion(s) stay under the export deletion threshold of {threshold}"))
        extra = sorted({u.upn for u in leaving} - {r.upn for r in refs})
        if extra:
            notices.append(
                Notice(Level.WARNING, "scope-extra", f"{len(extra)} user(s) not named for purging leave the scope too; they come back from the recycle bin as they were: {_names(extra)}")
            )
    purge_id = builder.add(
        Step(
            id="purge",
            provider="tenant",
            resource="recycle bin",
            action=Action.DELETE,
            summary=f"Hard-delete {len(refs)} synced user(s) from the recycle bin: cannot be undone"
            + (" (checked against what the sync actually deleted first)" if cycled else ""),
            operation=PurgeDeletedUsers(refs),
            impact=Impact.IRREVERSIBLE,
            decided_after_sync=bool(cycled),
            approval="irreversible",
        )
    )
    return _Rebuild(tuple(config_ids), purge_id, refs, scope_out, threshold_restore)


def _single_ad_connector(server):
    candidates = server.connectors_of_kind("AD")
    if len(candidates) != 1:
        raise PlanError(f"{len(candidates)} AD connectors on the server; syncprep manages the scope of exactly one")
    return candidates[0]


def _plan_export(desired, server, builder, notices):
    if desired.export is None:
        return []
    (aad,) = server.connectors_of_kind("AAD") or (None,)
    if aad is None:
        raise PlanError("export: no Entra ID (AAD) connector on the server")
    current = _norm(aad.excluded_attributes)
    wanted = _norm(desired.export.excluded_attributes)
    if _same_dns(current, wanted):
        return []
    added = {a.lower() for a in wanted} - {a.lower() for a in current}
    if added and desired.purge is None:
        notices.append(
            Notice(
                Level.WARNING,
                "exclusion-keeps-values",
                f"excluding {', '.join(sorted(a for a in wanted if a.lower() in added))} only stops the export: the values already in Entra ID stay "
                "(the sync engine stops managing them); Solution 2 purges and re-creates the users with [purge]",
            )
        )
    return [
        builder.add(
            _server_step(
                id="export.attributes",
                resource=f"connector/{aad.name}/attributes",
                action=Action.UPDATE,
                summary="Change the attributes excluded from export to Entra ID",
                operation=SetExcludedAttributes(wanted),
                before={"excluded_attributes": list(current)},
                after={"excluded_attributes": list(wanted)},
            )
        )
    ]


def _plan_scope(desired, observed, builder, notices, rebuild):
    server, tenant = observed.server, observed.tenant
    if desired.scope is None and (rebuild is None or rebuild.scope_out is None):
        return []
    ad = _single_ad_connector(server)
    current = (ad.included_containers, ad.excluded_containers)
    if rebuild is not None and rebuild.scope_out is not None:
        current = rebuild.scope_out
    wanted = (
        (_norm(desired.scope.included), _norm(desired.scope.excluded)) if desired.scope is not None else (ad.included_containers, ad.excluded_containers)
    )
    if _same_dns(current[0], wanted[0]) and _same_dns(current[1], wanted[1]):
        return []
    leaving = [u.upn for u in tenant.users if u.synced and u.on_prem_dn and _in_scope(u.on_prem_dn, *current) and not _in_scope(u.on_prem_dn, *wanted)]
    if leaving:
        notices.append(Notice(Level.WARNING, "scope-deletes", f"the new scope soft-deletes {len(leaving)} synced user(s) in the cloud: {_names(leaving)}"))
        threshold = server.deletion_threshold
        if threshold is not None and len(leaving) > threshold:
            raise PlanError(
                f"scope: {len(leaving)} soft-deletions exceed the export deletion threshold of {threshold}: the export would stop and delete nothing"
            )
    back = rebuild is not None and rebuild.scope_out is not None
    return [
        builder.add(
            _server_step(
                id="scope.containers",
                resource=f"connector/{ad.name}/scope",
                action=Action.UPDATE,
                summary="Bring the OU back into the sync scope, after the purge: the users are re-created as new objects"
                if back
                else "Change the AD connector's OU scope",
                operation=SetContainerScope(*wanted),
                before={"included": list(current[0]), "excluded": list(current[1])},
                after={"included": list(wanted[0]), "excluded": list(wanted[1])},
            )
        )
    ]


# ---------------------------------------------------------------------------- licences


def _coming_back(tenant, rebuild):
    """Purged users that the plan's last sync re-creates, as they will look (unlicensed)."""
    if rebuild is None or tenant.deleted_users is None:
        return ()
    purged = {r.upn.lower() for r in rebuild.refs}
    return tuple(
        CloudUser(id=u.id, upn=u.upn, synced=True, on_prem_dn=u.on_prem_dn, usage_location=u.usage_location)
        for u in tenant.deleted_users
        if u.upn.lower() in purged and u.synced
    )


def license_steps(
    desired, tenant, guid_flows_after=(), sync_planned=False, depends_on=(), cleared_since=None, recreated=frozenset(), coming_back=()
):
    """The licence steps and notices for the tenant as observed.

    A licence that produced no mailbox is removed and assigned again only when
    that can help: when the GUID stops flowing by the time it is assigned again
    (``sync_planned``, or the licence predates ``cleared_since``, the end of the
    last full sync with the current rules). Otherwise it is reported instead, so
    the plan converges rather than relicensing forever.
    """
    steps, notices = [], []
    guid_blocked_somewhere = any(g.flows_after for g in guid_flows_after)
    for spec in desired.licenses:
        sku = tenant.sku_by_part_number(spec.sku)
        if sku is None:
            known = ", ".join(s.part_number for s in tenant.skus) or "none"
            raise PlanError(f"licenses: SKU {spec.sku!r} is not subscribed in the tenant (subscribed: {known})")
        selection = UserSelection(frozenset(u.lower() for u in spec.users), tuple(spec.ous))
        targeted = sorted((u for u in (*tenant.users, *coming_back) if selection.matches(u)), key=lambda u: u.upn.lower())
        found = {u.upn.lower() for u in targeted}
        for upn in spec.users:
            if upn.lower() not in found:
                notices.append(Notice(Level.WARNING, "user-not-found", f"{upn}: no such user in the tenant; not licensed"))
        if not targeted:
            notices.append(Notice(Level.WARNING, "no-users", f"{spec.sku}: the selection matches no user in the tenant"))
        to_assign, to_relicense, pending, unknown = [], [], [], []
        freed = 0
        for user in targeted:
            assignment = user.license(sku.sku_id)
            if user.upn.lower() in recreated:
                # Purged and re-created: a new object, with no licence yet.
                freed += assignment is not None
                assignment = None
            if assignment is None:
                if not user.usage_location:
                    notices.append(Notice(Level.WARNING, "no-usage-location", f"{user.upn} cannot be licensed: no usage location (msExchUsageLocation is empty on-premises)"))
                else:
                    to_assign.append(user)
                continue
            if not sku.includes_exchange or user.mailbox is MailboxState.PRESENT:
                continue
            if user.mailbox is MailboxState.PENDING:
                pending.append(user.upn)
            elif user.mailbox is MailboxState.UNKNOWN:
                unknown.append(user.upn)
            elif not spec.relicense_without_mailbox:
                notices.append(Notice(Level.WARNING, "no-mailbox", f"{user.upn} is licensed but has no mailbox; relicense_without_mailbox is off"))
            elif assignment.by_group:
                notices.append(Notice(Level.WARNING, "group-license", f"{user.upn}: the {spec.sku} licence comes from a group and cannot be removed for one user; remove it from the group and add it back"))
            elif sync_planned or cleared_since is None or (assignment.assigned_at or "") < cleared_since:
                to_relicense.append(user)
            else:
                notices.append(
                    Notice(
                        Level.WARNING,
                        "no-mailbox-after-clear",
                        f"{user.upn} was licensed after msExchMailboxGuid stopped flowing and still has no mailbox: check that no rule flows the GUID for its object type",
                    )
                )
        if pending:
            notices.append(Notice(Level.INFO, "mailbox-pending", f"{len(pending)} mailbox(es) still provisioning: {_names(pending)}"))
        if unknown:
            notices.append(Notice(Level.WARNING, "mailbox-unknown", f"mailbox state unknown (the read failed) for {_names(unknown)}; nothing is decided for them"))
        available = sku.available + freed
        if len(to_assign) > available:
            left_out = to_assign[available:]
            to_assign = to_assign[:available]
            notices.append(
                Notice(
                    Level.WARNING,
                    "license-shortage",
                    f"{spec.sku}: {len(to_assign) + len(left_out)} licence(s) needed, {available} available; not licensed: {_names([u.upn for u in left_out])}",
                )
            )
        elif to_assign and available - len(to_assign) < max(1, sku.prepaid // 20):
            notices.append(Notice(Level.INFO, "license-low", f"{spec.sku}: {available - len(to_assign)} unit(s) left after this plan"))
        if guid_blocked_somewhere and (to_assign or to_relicense):
            notices.append(
                Notice(Level.INFO, "guid-still-flows-licences", "users of an object type that still gets msExchMailboxGuid will get no mailbox from their licence")
            )

        remove_id = None
        sku_label = spec.sku
        if to_relicense:
            refs = tuple(u.ref for u in to_relicense)
            remove_id = f"license[{sku_label}].remove"
            steps.append(
                Step(
                    id=remove_id,
                    provider="tenant",
                    resource=f"licenses/{sku_label}",
                    action=Action.UPDATE,
                    summary=f"Remove {sku_label} from {len(refs)} user(s) whose licence made no mailbox (assigned again next)",
                    operation=RemoveLicense(sku.sku_id, sku.part_number, refs),
                    depends_on=tuple(d for d in depends_on if d),
                    decided_after_sync=sync_planned,
                )
            )
        assign_refs = tuple(u.ref for u in sorted(to_assign + to_relicense, key=lambda u: u.upn.lower()))
        if assign_refs:
            assign_id = f"license[{sku_label}].assign"
            steps.append(
                Step(
                    id=assign_id,
                    provider="tenant",
                    resource=f"licenses/{sku_label}",
                    action=Action.UPDATE,
                    summary=f"Assign {sku_label} to {len(assign_refs)} user(s)"
                    + (f" ({len(to_relicense)} of them again)" if to_relicense else ""),
                    operation=AssignLicense(sku.sku_id, sku.part_number, assign_refs),
                    depends_on=tuple(d for d in (*depends_on, remove_id) if d),
                    decided_after_sync=sync_planned,
                )
            )
            if sku.includes_exchange:
                steps.append(
                    Step(
                        id=f"mailboxes[{sku_label}].verify",
                        provider="tenant",
                        resource=f"mailboxes/{sku_label}",
                        action=Action.CHECK,
                        summary=f"Wait for the {len(assign_refs)} Exchange Online mailbox(es) and verify them",
                        operation=VerifyMailboxes(assign_refs),
                        depends_on=(assign_id,),
                        decided_after_sync=sync_planned,
                    )
                )
    return steps, notices


def _names(upns, limit=10):
    upns = list(upns)
    shown = ", ".join(upns[:limit])
    return shown + (f" and {len(upns) - limit} more" if len(upns) > limit else "")


# ---------------------------------------------------------------------------- ordering


_PHASES = {
    "rebuild.scheduler.pause": 0,
    "rebuild.scheduler.resume": 2,
    "rebuild.sync": 3,
    "purge": 4,
    "scheduler.pause": 5,
    "scheduler.resume": 7,
    "scheduler.disable": 7,
    "sync.initial": 8,
}


def _phase(step):
    if step.id in _PHASES:
        return _PHASES[step.id]
    if step.id.startswith("rebuild."):
        return 1
    if step.id.startswith(("rule[", "export.", "scope.", "threshold.")):
        return 6
    return 9


def order_steps(steps, insertion_order):
    """Topological order with deterministic ties: phase, then the order steps were planned."""
    sorter = graphlib.TopologicalSorter()
    for step_id in insertion_order:
        sorter.add(step_id, *[d for d in steps[step_id].depends_on if d in steps])
    position = {step_id: i for i, step_id in enumerate(insertion_order)}
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise PlanError(f"the steps depend on each other in a cycle: {' -> '.join(exc.args[1])}") from None
    ordered, ready = [], []
    while sorter.is_active():
        ready.extend(sorter.get_ready())
        # One at a time, so a step made ready now can still go before a later phase.
        ready.sort(key=lambda s: (_phase(steps[s]), position[s]))
        first = ready.pop(0)
        ordered.append(steps[first])
        sorter.done(first)
    return tuple(ordered)


def last_full_sync_end(server):
    """When the last successful full synchronization ended (ISO), or None."""
    ends = [r.ended for r in server.run_history if r.ok and r.profile == "Full Synchronization"]
    return max(ends) if ends else None
