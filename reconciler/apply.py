"""The apply engine: runs a plan's steps in order through the target's providers.

Contract:

* the steps run in the plan's order; a failed server step stops the apply;
  a tenant step that fails for some users goes on for the others and reports them;
* the scheduler bracket holds: if this apply paused the scheduler, it is resumed
  whatever happens (a failure, Ctrl-C), before the engine returns or raises;
* steps marked ``decided_after_sync`` are planned again from a fresh observation
  once the steps before them (the sync) are done, as the article says: whether a
  licence must be removed and assigned again is known only after the sync;
* nothing here prints: progress goes to ``on_event``.
"""

from __future__ import annotations

import enum
from typing import Any, Callable

from attrs import frozen

from reconciler.errors import ApplyError, ProviderError
from reconciler.model import Observed, UserRef
from reconciler.operations import AssignLicense, PurgeDeletedUsers, RemoveLicense, SetScheduler, VerifyMailboxes
from reconciler.plan import guid_flow, last_full_sync_end, license_steps, selection_for, GuidFlow, _object_types, _pair


class Status(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@frozen
class StepResult:
    step_id: str
    status: Status
    detail: str = ""
    failures: tuple[tuple[str, str], ...] = ()


@frozen
class Event:
    """Progress for the renderer: ``kind`` is started, finished, failed, replanned, note."""

    kind: str
    step: Any = None
    message: str = ""
    result: Any = None


@frozen
class ApplyReport:
    results: tuple[StepResult, ...]
    notices: tuple = ()
    scheduler_restored: bool = False

    @property
    def ok(self):
        return all(r.status is Status.DONE and not r.failures for r in self.results)

    @property
    def user_failures(self):
        return tuple((upn, reason, r.step_id) for r in self.results for upn, reason in r.failures)


def _nothing(_event):
    pass


def observe(target, desired):
    """One observation of both sides, for what ``desired`` talks about."""
    return Observed(server=target.server.observe(), tenant=target.tenant.observe(selection_for(desired)))


_LICENCE_OPERATIONS = (AssignLicense, RemoveLicense, VerifyMailboxes)


def apply_plan(plan, desired, target, on_event: Callable[[Event], None] = _nothing, approvals=frozenset(), force=False):
    """Run ``plan`` against ``target``. Returns an :class:`ApplyReport`; raises only
    :class:`ApplyError` for a precondition that stops the apply before any change.

    ``approvals`` must hold every ``step.approval`` of the plan ("irreversible",
    "threshold-raise"); ``force`` accepts the plan's ``unsafe`` reasons.
    """
    missing = [a for a in plan.approvals_needed if a not in approvals]
    if missing:
        raise ApplyError("preconditions", f"the plan has steps that need explicit approval ({', '.join(missing)}); nothing was changed")
    if plan.unsafe and not force:
        raise ApplyError("preconditions", "; ".join(plan.unsafe) + " (nothing was changed)")
    steps = list(plan.steps)
    if any(s.provider == "entra-connect" and s.operation.__class__.__name__ != "RunSyncCycle" for s in steps):
        scheduler = target.server.observe().scheduler
        if scheduler.cycle_in_progress:
            raise ApplyError(
                "preconditions",
                "a sync cycle is running on the server: configuration changes are refused until it ends; apply again when it has finished",
            )
    results, notices = [], []
    paused_by_us = False
    restored = False
    replanned = False
    index = 0
    try:
        while index < len(steps):
            step = steps[index]
            refusal = None
            if step.decided_after_sync and isinstance(step.operation, PurgeDeletedUsers):
                # Known only after the sync: which users it really soft-deleted.
                step, refusal = _confirm_purge(step, desired, target)
                steps[index] = step
            if step.decided_after_sync and isinstance(step.operation, _LICENCE_OPERATIONS) and not replanned:
                replanned = True
                fresh, fresh_notices = _decide_after_sync(desired, target, step.depends_on)
                steps[index:] = [s for s in steps[index:] if not (s.decided_after_sync and isinstance(s.operation, _LICENCE_OPERATIONS))] + fresh
                notices.extend(fresh_notices)
                on_event(Event("replanned", message=f"{len(fresh)} licence step(s) decided from a fresh observation", result=(tuple(fresh), tuple(fresh_notices))))
                continue
            on_event(Event("started", step))
            provider = target.provider_for(step.operation)
            try:
                if refusal:
                    raise ProviderError("syncprep", step.id, refusal)
                outcome = provider.apply(step.operation)
            except ProviderError as exc:
                result = StepResult(step.id, Status.FAILED, str(exc))
                results.append(result)
                on_event(Event("failed", step, str(exc), result))
                for later in steps[index + 1 :]:
                    results.append(StepResult(later.id, Status.SKIPPED, f"not run: {step.id} failed"))
                break
            finally:
                target.checkpoint()
            if isinstance(step.operation, SetScheduler):
                paused_by_us = not step.operation.enabled
            result = StepResult(step.id, Status.DONE, outcome.detail, outcome.failures)
            results.append(result)
            on_event(Event("finished", step, outcome.detail, result))
            index += 1
    finally:
        if paused_by_us:
            # The bracket: never leave the scheduler off because of us.
            try:
                target.server.apply(SetScheduler(True))
                target.checkpoint()
                restored = True
                on_event(Event("note", message="the sync scheduler was resumed after the failure"))
            except ProviderError as exc:
                on_event(Event("note", message=f"could not resume the sync scheduler: {exc}; run Set-ADSyncScheduler -SyncCycleEnabled $true"))
    return ApplyReport(tuple(results), tuple(notices), restored)


def _confirm_purge(step, desired, target):
    """Check the recycle bin against the plan's prediction; purge exactly what is there.

    Returns the step to run and, if it must not run, why.
    """
    from attrs import evolve

    from reconciler.plan import _purge_selection

    tenant = target.tenant.observe(selection_for(desired))
    predicted = {ref.upn.lower() for ref in step.operation.users}
    if tenant.deleted_users is None:
        return step, "the recycle bin could not be read (unknown): nothing was purged"
    selection = _purge_selection(desired.purge)
    in_bin = {}
    for user in tenant.deleted_users:
        named = user.upn.lower() in selection.upns or (
            user.on_prem_dn and any(user.on_prem_dn.lower().endswith("," + ou.lower()) for ou in desired.purge.ous)
        )
        if named and user.synced is not None:
            in_bin[user.upn.lower()] = user
    actual = set(in_bin)
    if actual != predicted:
        unexpected = sorted(actual - predicted)
        missing = sorted(predicted - actual)
        detail = "; ".join(
            part
            for part in (
                f"not predicted: {', '.join(unexpected)}" if unexpected else "",
                f"predicted but not in the recycle bin: {', '.join(missing)}" if missing else "",
            )
            if part
        )
        return step, f"the sync's soft-deletes differ from the plan's prediction ({detail}); nothing was purged"
    refs = tuple(UserRef(in_bin[upn].id, in_bin[upn].upn) for upn in sorted(actual))
    return evolve(step, operation=PurgeDeletedUsers(refs)), None


def _decide_after_sync(desired, target, depends_on):
    observed = observe(target, desired)
    rules = observed.server.rules
    excluded = tuple(a for c in observed.server.connectors_of_kind("AAD") for a in c.excluded_attributes)
    flows = tuple(GuidFlow(t, *_pair(guid_flow(rules, t, excluded), guid_flow(rules, t, excluded))) for t in _object_types(rules))
    steps, notices = license_steps(
        desired,
        observed.tenant,
        guid_flows_after=flows,
        sync_planned=False,
        depends_on=depends_on,
        cleared_since=last_full_sync_end(observed.server),
    )
    return steps, notices
