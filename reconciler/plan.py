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

import graphlib

from attrs import evolve

from reconciler.errors import PlanError
from reconciler.model import SyncPolicy
from reconciler.operations import RunSyncCycle, SetScheduler
from reconciler.provider import UserSelection
from reconciler.licences import coming_back, license_steps
from reconciler.outcome import conditions, flow_notices, predict
from reconciler.recreated import coming_back as owed_back, recreated_since, still_owed
from reconciler.rebuild import entering, licence_record_notices, plan_export, plan_purge, plan_scope, plan_threshold, purge_selection, restore_steps
from reconciler.rules import check_unique_precedences, guid_report, plan_rule, server_notices
from reconciler.steps import (  # noqa: F401 - the plan's values, importable from here as before
    PLAN_FORMAT_VERSION,
    Action,
    FieldChange,
    GuidFlow,
    Impact,
    Level,
    Notice,
    Plan,
    Step,
    field_changes,
    rule_view,
    server_step,
)


def selection_for(desired, server=None):
    """The users a plan of ``desired`` needs to see; one definition for plan, apply, drift and saved plans.

    Licences name their users. A purge or a scope change needs every synced user it
    can touch and the total it is measured against: all users under the AD
    connector's containers (``server``, when observed) and the desired ones.
    """
    parts = [
        UserSelection(frozenset(u.lower() for u in spec.all_users), tuple(spec.ous), (spec.group,) if spec.group else ())
        for spec in desired.licenses
    ]
    if desired.purge is not None:
        parts.append(purge_selection(desired.purge))
    if desired.purge is not None or desired.scope is not None:
        containers = []
        if desired.scope is not None:
            containers += [*desired.scope.included, *desired.scope.excluded]
        if server is not None:
            for connector in server.connectors_of_kind("AD"):
                containers += [*connector.included_containers, *connector.excluded_containers]
        parts.append(UserSelection(frozenset(), tuple(dict.fromkeys(containers))))
    return UserSelection.union(parts)


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
        if step.id in self.steps:
            raise PlanError(f"two steps would have the id {step.id!r}; the desired state names the same thing twice")
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


def _rules_preview(desired, server):
    """The :class:`Conditions` of the rules and export filter this plan leaves, worked out
    before the purge (which needs them: a purge that gains nothing is not planned). The
    rule steps themselves are planned again after it, with their notices."""
    if desired.purge is None:
        return None
    builder = _Builder(server.rules)
    for spec in desired.rules:
        plan_rule(spec, server, builder, [])
    excluded_now = tuple(a for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes)
    excluded_after = tuple(desired.export.excluded_attributes) if desired.export is not None else excluded_now
    return conditions(server, tuple(builder.rules.values()), excluded_after, sync_planned=False, cleared_since=None)


def build_plan(desired, observed, target_description="lab", purged=()):
    """The plan that takes ``observed`` to ``desired``. Raises :class:`PlanError` when it cannot.

    The server changes come in at most two scheduler brackets, each followed by a
    full sync: the first only for a purge (take the OU out of scope so its users
    land in the recycle bin), the second for everything else (rules, export
    filter, scope). Between them the purge; after them the licences.

    ``purged``: the users an earlier apply purged and still owes their licences
    (:class:`reconciler.recreated.Purged`, from the journal): re-created objects,
    licensed again exactly as before.
    """
    server = observed.server
    builder = _Builder(server.rules)
    notices = []
    scheduler_on = server.scheduler.sync_cycle_enabled
    unsafe = []

    rebuild = plan_purge(desired, observed, builder, notices, unsafe, _rules_preview(desired, server))
    kept, losses = (rebuild.kept, rebuild.losses) if rebuild is not None else ((), ())
    blocked = rebuild is not None and rebuild.blocked
    if rebuild is not None and rebuild.purge_id is None:
        rebuild = None  # everyone named is kept out: nothing to purge
    after_purge = ()
    if rebuild is not None:
        if rebuild.cycles:
            last, scheduler_on = _bracket(builder, rebuild.config_ids, "rebuild.", scheduler_on, wanted=scheduler_on)
            sync_id = builder.add(
                server_step(
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
        config_ids += plan_rule(spec, server, builder, notices)
    check_unique_precedences(tuple(builder.rules.values()))
    if not blocked:
        config_ids += plan_export(desired, server, builder, notices)
        config_ids += plan_scope(desired, observed, builder, notices, rebuild, unsafe)
    config_ids += plan_threshold(desired, server, builder, notices, rebuild)
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
        if not config_ids and rebuild is not None and rebuild.cycles:
            reason = "the users come back"
        sync_id = builder.add(
            server_step(
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
    guid_flows = guid_report(server.rules, predicted_rules, excluded_now, excluded_after, server.connectors_of_kind("AD"))
    notices += server_notices(desired, server, predicted_rules, guid_flows, builder)

    earlier = recreated_since(purged, observed.tenant)
    owed = still_owed(earlier, observed.tenant)
    cond = conditions(
        server,
        predicted_rules,
        excluded_after,
        sync_planned=sync_id is not None,
        cleared_since=last_full_sync_end(server),
        recreated=frozenset(u.upn.lower() for u in rebuild.refs) if rebuild else frozenset(),
        before_purge={upn.lower(): licences for upn, licences in (*owed, *(rebuild.licences_before if rebuild else ()))},
        guid_gone=frozenset(p.upn.lower() for p in earlier),
    )
    cond = entering(cond, server, builder, notices)
    if owed:
        for step in restore_steps(owed, observed.tenant, (sync_id,) if sync_id else (), earlier=True):
            builder.add(step)
        notices += licence_record_notices(owed, observed.tenant, earlier=True)
    if rebuild is not None and sync_id is not None:
        for step in restore_steps(rebuild.licences_before, observed.tenant, (sync_id,)):
            builder.add(step)
        notices += licence_record_notices(rebuild.licences_before, observed.tenant)
    notices += flow_notices(cond)
    outcomes, outcome_notices = predict(desired, observed.tenant, cond, coming_back(observed.tenant, rebuild) + owed_back(earlier, observed.tenant))
    licence_steps = license_steps(
        desired,
        observed.tenant,
        outcomes,
        sync_planned=sync_id is not None,
        depends_on=(sync_id,) if sync_id else tuple(dict.fromkeys((*last, *after_purge))),
    )
    for step in licence_steps:
        builder.add(step)
    notices += outcome_notices

    return Plan(
        source=desired.source,
        target=target_description,
        steps=order_steps(builder.steps, builder.order),
        notices=tuple(notices),
        guid_flows=guid_flows,
        unsafe=tuple(unsafe),
        purge_kept=kept,
        purge_losses=losses,
        outcomes=outcomes,
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
            server_step(
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
    return list(config_ids), False


def _scheduler_step(step_id, enabled, was_on, depends_on):
    return server_step(
        id=step_id,
        resource="scheduler",
        action=Action.UPDATE,
        summary="Resume the sync scheduler" if enabled else "Turn the sync scheduler off (the desired state says so)",
        operation=SetScheduler(enabled),
        before={"sync_cycle_enabled": was_on},
        after={"sync_cycle_enabled": enabled},
        depends_on=tuple(depends_on),
    )


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
