"""Drift detection: what in the environment no longer matches the desired state.

Read-only by construction: this module observes and plans (a pure function) and
has no way to apply anything; it imports neither the apply engine nor a provider's
write path. The CLI's ``drift`` command uses only this module.

Exit codes: 0 in sync, 2 drift, 3 observation incomplete (something could not be
read: unknown is never reported as absent), 1 error.
"""

from __future__ import annotations

from attrs import evolve, frozen

from reconciler.forests import Forests
from reconciler.joins import survey
from reconciler.model import GUID_ATTRIBUTE, MailboxState, Observed, SyncPolicy
from reconciler.operations import AddGroupMembers, AssignLicense, RemoveLicense, RemoveRule, ReprocessLicences, RunSyncCycle, SetScheduler, UpdateRule
from reconciler.plan import build_plan, selection_for

EXIT_IN_SYNC, EXIT_ERROR, EXIT_DRIFT, EXIT_INCOMPLETE = 0, 1, 2, 3
#: The version of the drift report's JSON (drift --json; schemas/drift.json). 1: issue 17, the first versioned.
DRIFT_FORMAT_VERSION = 1

_DRIFT_NOTICES = {"no-mailbox-after-clear": "licensed without a mailbox", "threshold-differs": "deletion threshold changed"}
_NOTICE_RESOURCES = {"threshold-differs": "export deletion threshold"}


@frozen
class DriftItem:
    resource: str
    what: str
    detail: str = ""


@frozen
class DriftReport:
    source: str
    target: str
    items: tuple[DriftItem, ...]
    unknown: tuple[str, ...] = ()
    #: Set when an apply on this target was cut short (from its journal).
    interrupted: str = ""

    @property
    def exit_code(self):
        if self.unknown:
            return EXIT_INCOMPLETE
        return EXIT_DRIFT if self.items else EXIT_IN_SYNC

    def to_dict(self):
        return {
            "format_version": DRIFT_FORMAT_VERSION,
            "source": self.source,
            "target": self.target,
            "in_sync": not self.items and not self.unknown,
            "complete": not self.unknown,
            "drift": [{"resource": i.resource, "what": i.what, "detail": i.detail} for i in self.items],
            "unknown": list(self.unknown),
            "interrupted_apply": self.interrupted or None,
        }


def observe_read_only(server, tenant, desired):
    """Observation only: the read-only calls of the provider contracts. With several AD forests
    and licences, the connector space's joins too, which the per-user prediction reads
    (without them every user gets the cautious answer, and drift would miss licences owed)."""
    observed_server = server.observe()
    if len(observed_server.connectors_of_kind("AD")) > 1 and desired.licenses:
        observed_server = evolve(observed_server, joins=survey(server.connector_space(joins=True), counts=False, joins=True)[1])
    return Observed(server=observed_server, tenant=tenant.observe(selection_for(desired, observed_server)))


def detect(desired, observed, target_description="", purged=()):
    """``purged``: users an earlier apply purged and still owes their licences (the journal's
    record, as for :func:`~reconciler.plan.build_plan`): re-created objects, not "GUID stays"."""
    # An unknown recycle bin plans no step of Solution 2 (the plan says so); it is unknown.
    plan = build_plan(desired, observed, target_description, purged=purged)
    items = []
    scheduler = observed.server.scheduler
    if scheduler.sync_cycle_enabled != desired.scheduler.sync_cycle_enabled:
        state = "on" if scheduler.sync_cycle_enabled else "off (left paused?)"
        items.append(DriftItem("scheduler", f"scheduler {'on' if scheduler.sync_cycle_enabled else 'off'}", f"the sync scheduler is {state}"))
    items.extend(_guid_items(desired, observed, plan))
    # A full sync owed is drift of its own only when no configuration change explains it,
    # and when it matters: nothing will run it (scheduler off), or licences wait for it.
    # An upgrade marks the next cycle Initial with no rule changed: that alone is no drift.
    changes_config = any(s.provider == "entra-connect" and not isinstance(s.operation, (SetScheduler, RunSyncCycle)) for s in plan.steps)
    licences_wait = any(isinstance(s.operation, (AssignLicense, RemoveLicense, AddGroupMembers, ReprocessLicences)) for s in plan.steps)
    owed = scheduler.next_policy is SyncPolicy.INITIAL and not changes_config and (licences_wait or not scheduler.sync_cycle_enabled)
    relicensed = {(s.operation.sku_id, u.upn.lower()) for s in plan.steps if isinstance(s.operation, RemoveLicense) for u in s.operation.users}
    for step in plan.steps:
        items.extend(_describe(step, owed, relicensed))
    for notice in plan.notices:
        if notice.code in _DRIFT_NOTICES and not any(i.what == _DRIFT_NOTICES[notice.code] for i in items):
            items.append(DriftItem(_NOTICE_RESOURCES.get(notice.code, "tenant"), _DRIFT_NOTICES[notice.code], notice.message))
    return DriftReport(desired.source, target_description, tuple(items), _unknowns(desired, observed))


def _describe(step, full_sync_owed, relicensed=frozenset()):
    op = step.operation
    changes = "; ".join(f"{c.path}: {c.before} -> {c.after}" for c in step.changes)
    if isinstance(op, SetScheduler):
        return []  # the scheduler is judged from the observation, not from the fix's bracket
    if isinstance(op, RemoveRule) and step.id.endswith(".remove-returned"):
        return [DriftItem(step.resource, "stock rule back", f"'{op.name}' is back (an Entra Connect upgrade re-creates deleted stock rules)")]
    if isinstance(op, UpdateRule):
        return [DriftItem(step.resource, "rule changed", changes or step.summary)]
    if isinstance(op, RemoveLicense):
        # "Without", not "gone": before the first apply these mailboxes never existed.
        return [DriftItem(step.resource, "licensed without a mailbox", f"{len(op.users)} user(s): {', '.join(u.upn for u in op.users)}")]
    if isinstance(op, AssignLicense):
        # A user relicensed holds the licence already: "licensed without a mailbox" says it.
        missing = [u for u in op.users if (op.sku_id, u.upn.lower()) not in relicensed]
        return [DriftItem(step.resource, "licence missing", f"{len(missing)} user(s): {', '.join(u.upn for u in missing)}")] if missing else []
    if isinstance(op, AddGroupMembers):
        return [DriftItem(step.resource, "licence missing", f"{len(op.users)} user(s) not in the licensing group {op.group_name!r}: {', '.join(u.upn for u in op.users)}")]
    if isinstance(op, ReprocessLicences):
        return [DriftItem(step.resource, "licensed without a mailbox", f"{len(op.users)} user(s) with a group licence: {', '.join(u.upn for u in op.users)}")]
    if step.id == "sync.initial":
        if full_sync_owed:
            return [DriftItem("sync cycle", "full sync owed", "the next cycle must be a full (Initial) sync, and only Delta cycles ran since it was owed")]
        return []
    if step.id.startswith("mailboxes["):
        return []
    if step.id == "export.attributes":
        return [DriftItem(step.resource, "export filter changed", changes)]
    return [DriftItem(step.resource, step.action.value, changes or step.summary)]


def _manages_guid(desired):
    """Whether the desired state means to keep msExchMailboxGuid out of the cloud."""
    if desired.export is not None and GUID_ATTRIBUTE.lower() in {a.lower() for a in desired.export.excluded_attributes}:
        return True
    return any(f.destination == GUID_ATTRIBUTE for spec in desired.rules for f in spec.flows)


def _guid_items(desired, observed, plan):
    """Per object type in scope: the GUID flowing (the plan's rule-winner view of the rules as
    they are now), and the licensed-for users whose cloud GUID it brought back, or will."""
    if not _manages_guid(desired):
        return []
    items = []
    owed = observed.server.scheduler.next_policy is SyncPolicy.INITIAL
    for flow in plan.guid_flows:
        if not flow.flows_now:
            continue
        key = f"guid/{flow.connector}/{flow.object_type}" if flow.connector else f"guid/{flow.object_type}"
        items.append(DriftItem(key, "GUID flows", f"msExchMailboxGuid reaches the cloud for {flow.label} objects: {flow.now}"))
        of_type = [o.upn for o in plan.outcomes if o.object_type is None or o.object_type.lower() == flow.object_type.lower()]
        users = sorted(set(_reached(flow, of_type, observed)))
        if users:
            when = "will be back in the cloud after the next full sync" if owed else "is in the cloud"
            items.append(DriftItem(key, "GUID in the cloud", f"msExchMailboxGuid {when} for {len(users)} user(s): {', '.join(users)}"))
    return items


def _reached(flow, upns, observed):
    """Those of ``upns`` a flow of one connector (``flow.connector``, with several AD forests)
    reaches: its forest's users, and those whose person is joined with one of its objects.
    A user whose forest or joins are unknown counts (the cautious answer)."""
    if not flow.connector:
        return upns
    ads = observed.server.connectors_of_kind("AD")
    forests, joins = Forests(ads), observed.server.joins
    names = {c.identifier.lower(): c.name for c in ads}
    by_upn = {u.upn.lower(): u for u in observed.tenant.users}
    reached = []
    for upn in upns:
        user = by_upn.get(upn.lower())
        on_prem_dn = getattr(user, "on_prem_dn", None)
        owner = forests.owner(on_prem_dn, strict=False) if on_prem_dn else None
        members = joins.of(on_prem_dn) if owner is not None and joins is not None else None
        if owner is None or owner.name == flow.connector or members is None or any(names.get(c.lower()) == flow.connector for c, _t in members):
            reached.append(upn)
    return reached


def _unknowns(desired, observed):
    unknown = []
    selection = selection_for(desired)
    blind = [u.upn for u in observed.tenant.users if u.mailbox is MailboxState.UNKNOWN and u.licenses and selection.matches(u)]
    if blind:
        unknown.append(f"mailbox state of {len(blind)} user(s) could not be read: {', '.join(blind)}")
    if desired.purge is not None and observed.tenant.deleted_users is None:
        unknown.append("the recycle bin could not be read")
    return tuple(unknown)
