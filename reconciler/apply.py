"""The apply engine: runs a plan's steps in order through the target's providers.

Contract:

* the steps run in the plan's order; a failed server step stops the apply;
  a tenant step that fails for some users goes on for the others and reports them,
  except an irreversible one (a purge), which stops the apply before the OU returns;
* the brackets hold whatever happens (a failure, Ctrl-C, SIGTERM through the CLI):
  a scheduler this apply paused, or found off while the desired state wants it on,
  is resumed, and a deletion threshold it raised is put back;
* steps marked ``decided_after_sync`` are decided again from a fresh observation
  once the sync before them is done, as the article says: whether a licence must
  be removed and assigned again is known only after the sync; a purge is checked
  against what the sync really soft-deleted;
* a transient error is retried only after observing what the step still has to do
  (:func:`remaining`), so nothing is done twice; a step that cannot finish before
  ``until`` is not started;
* every step start and end goes to the journal, when one is given, before the
  apply goes on; nothing here prints: progress goes to ``on_event``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from typing import Any, Callable

from attrs import frozen

from reconciler import dn, interrupts
from reconciler.errors import ApplyError, ProviderError, TransientError
from reconciler.model import SyncPolicy, UserRef
from reconciler.observe import observe
from reconciler.operations import (
    AddGroupMembers,
    AssignLicense,
    CreateRule,
    Outcome,
    PurgeDeletedUsers,
    RemoveLicense,
    RemoveRule,
    ReprocessLicences,
    RunSyncCycle,
    SetContainerScope,
    SetDeletionThreshold,
    SetExcludedAttributes,
    SetRuleDisabled,
    SetScheduler,
    UpdateRule,
    VerifyMailboxes,
)
from reconciler.licences import license_steps
from reconciler.outcome import conditions, predict
from reconciler.plan import last_full_sync_end
from reconciler.progress import Progress
from reconciler.rebuild import named_for_purge, same_names
from reconciler.recreated import from_record, record_for, recreated_since, settled, still_owed
from reconciler.serialize import plan_checksum
from reconciler.steps import Impact


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
    """Progress for the renderer: ``kind`` is started, finished, failed, replanned, note, or
    progress (``result`` a :class:`~reconciler.progress.Progress` of a long wait, maybe from
    a provider's worker thread)."""

    kind: str
    step: Any = None
    message: str = ""
    result: Any = None


@frozen
class ApplyReport:
    results: tuple[StepResult, ...]
    notices: tuple = ()
    scheduler_restored: bool = False
    #: Stopped before a step that could not finish before ``--until``: resumable.
    stopped_for_window: bool = False
    #: The per-user outcomes as finally decided (after the sync where one ran).
    outcomes: tuple = ()

    @property
    def ok(self):
        return all(r.status is Status.DONE and not r.failures for r in self.results)

    @property
    def user_failures(self):
        return tuple((upn, reason, r.step_id) for r in self.results for upn, reason in r.failures)


def _nothing(_event):
    pass


_LICENCE_OPERATIONS = (AssignLicense, RemoveLicense, AddGroupMembers, ReprocessLicences, VerifyMailboxes)


def apply_plan(
    plan,
    desired,
    target,
    on_event: Callable[[Event], None] = _nothing,
    approvals=frozenset(),
    force=False,
    journal=None,
    until=None,
    retries=3,
    command="apply",
):
    """Run ``plan`` against ``target``. Returns an :class:`ApplyReport`; raises only
    :class:`ApplyError` for a precondition that stops the apply before any change.

    ``approvals`` must hold every ``step.approval`` of the plan ("irreversible",
    "threshold-raise"); ``force`` accepts the plan's ``unsafe`` reasons.
    ``journal`` (a :class:`~reconciler.journal.Journal`) records every step durably.
    ``until`` (an aware datetime, on the target's clock) starts no step that cannot
    finish before it. A :class:`~reconciler.errors.TransientError` is retried up to
    ``retries`` times with backoff, after observing again what is left to do.
    ``command`` is the kind of run the journal records ("apply", or "sync POLICY").
    """
    missing = [a for a in plan.approvals_needed if a not in approvals]
    if missing:
        raise ApplyError("preconditions", f"the plan has steps that need explicit approval ({', '.join(missing)}); nothing was changed")
    if plan.unsafe and not force:
        raise ApplyError("preconditions", "; ".join(plan.unsafe) + " (nothing was changed)")
    steps = list(plan.steps)
    changes_server = any(s.provider == "entra-connect" and not isinstance(s.operation, RunSyncCycle) for s in steps)
    scheduler = target.server.observe().scheduler if changes_server else None
    results, notices = [], []
    # The bracket owes the scheduler back when the desired state wants it on: also when it
    # is off already at the start (left paused by a run that was killed, or by hand).
    paused_by_us = scheduler is not None and not scheduler.sync_cycle_enabled and desired.scheduler.sync_cycle_enabled
    # The threshold to put back when the apply ends: raised by this run, or by an
    # interrupted one whose journal still owes it (a kill between raise and restore).
    previous = journal.last_interrupted() if journal is not None else None
    raised_threshold = previous.threshold_owed if previous is not None else None
    # Purged users still owed their licences (earlier runs' records, and this run's once its
    # purge starts): re-created objects when the licences are decided after the sync.
    record = list(journal.purge_owed()) if journal is not None else []
    restored = False
    replanned = False
    stopped_for_window = False
    history = None
    index = 0
    if journal is not None:
        journal.start(plan_checksum(plan), command, [s.id for s in steps], threshold_owed=raised_threshold)
    last_sync = max((i for i, s in enumerate(steps) if isinstance(s.operation, RunSyncCycle)), default=None)
    last_sync_id = steps[last_sync].id if last_sync is not None else None
    last_sync_done = False
    outcomes = plan.outcomes
    try:
        while True:
            if index >= len(steps):
                if last_sync_done and not replanned and desired.licenses:
                    # The plan predicted no licence change, but who needs one is only
                    # known now: decide from a fresh observation all the same.
                    replanned = True
                    fresh, fresh_notices, outcomes = _decide_after_sync(plan, desired, target, (last_sync_id,), record)
                    steps.extend(fresh)
                    notices.extend(fresh_notices)
                    if fresh or fresh_notices:
                        on_event(Event("replanned", message=f"{len(fresh)} licence step(s) decided from a fresh observation", result=(tuple(fresh), tuple(fresh_notices))))
                    continue
                break
            step = steps[index]
            refusal = None
            seen_bin = None  # the recycle bin, when observed for this step
            if step.decided_after_sync and isinstance(step.operation, PurgeDeletedUsers):
                # Known only after the sync: which users it really soft-deleted.
                step, refusal, seen_bin = _confirm_purge(step, desired, target)
                steps[index] = step
            if step.decided_after_sync and isinstance(step.operation, _LICENCE_OPERATIONS) and not replanned:
                replanned = True
                fresh, fresh_notices, outcomes = _decide_after_sync(plan, desired, target, step.depends_on, record)
                steps[index:] = [s for s in steps[index:] if not (s.decided_after_sync and isinstance(s.operation, _LICENCE_OPERATIONS))] + fresh
                notices.extend(fresh_notices)
                on_event(Event("replanned", message=f"{len(fresh)} licence step(s) decided from a fresh observation", result=(tuple(fresh), tuple(fresh_notices))))
                continue
            if _changes_configuration(step):
                # The server refuses configuration changes during a cycle: wait for one
                # that is running (started by hand, or by the scheduler just before the
                # pause, which is journaled first so a kill meanwhile leaves it owed).
                waited = _wait_until_idle(target, on_event, until)
                if waited == "window":
                    stopped_for_window = True
                    reason = f"not started: a sync cycle is still running and the window closes at {until:%Y-%m-%dT%H:%MZ}"
                    results.extend(StepResult(later.id, Status.SKIPPED, reason) for later in steps[index:])
                    on_event(Event("note", message=f"stopping before '{step.summary}': {reason}"))
                    break
                if waited is not None:
                    result = StepResult(step.id, Status.FAILED, f"not started: {waited}")
                    results.append(result)
                    on_event(Event("failed", step, result.detail, result))
                    results.extend(StepResult(later.id, Status.SKIPPED, f"not run: {step.id} failed") for later in steps[index + 1 :])
                    break
            if until is not None:
                if history is None:
                    history = target.server.observe().run_history
                needed = _estimate_minutes(step, history)
                if target.now() + dt.timedelta(minutes=needed) > until:
                    stopped_for_window = True
                    reason = f"not started: about {needed} min needed, the window closes at {until:%Y-%m-%dT%H:%MZ}"
                    results.extend(StepResult(later.id, Status.SKIPPED, reason) for later in steps[index:])
                    on_event(Event("note", message=f"stopping before '{step.summary}': {reason}"))
                    break
            if step.id.startswith(_RESTORE_PREFIXES):
                # Re-created users have new ids, known only now: look them up by UPN.
                step = _resolve_recreated(step, desired, target)
                steps[index] = step
            if journal is not None and isinstance(step.operation, PurgeDeletedUsers) and not refusal:
                # Durably before anything is purged: who, and how each was licensed, so a
                # kill before the licences leaves them owed (resume and later plans restore them).
                if seen_bin is None:
                    seen_bin = observe(target, desired).tenant.deleted_users
                entries = record_for(plan, step, seen_bin)
                journal.record_purge(entries)
                record.extend(entries)
            on_event(Event("started", step))
            if journal is not None:
                journal.step_started(step.id)
            provider = target.provider_for(step.operation)
            try:
                if refusal:
                    raise ProviderError("syncprep", step.id, refusal)
                if isinstance(step.operation, RunSyncCycle) and history is None:
                    history = _history_for_estimate(target)
                with _relaying(provider, step, on_event, _expected_seconds(step, history)):
                    outcome = _apply_with_retries(provider, step, target, desired, retries, on_event)
            except ProviderError as exc:
                target.checkpoint()
                result = StepResult(step.id, Status.FAILED, str(exc))
                results.append(result)
                if journal is not None:
                    journal.step_ended(step.id, "failed", str(exc))
                on_event(Event("failed", step, str(exc), result))
                for later in steps[index + 1 :]:
                    results.append(StepResult(later.id, Status.SKIPPED, f"not run: {step.id} failed"))
                break
            target.checkpoint()
            if step.impact is Impact.IRREVERSIBLE and outcome.failures:
                # A purge that missed users must not go on to bring their OU back:
                # the sync would restore them from the recycle bin, GUID included.
                result = StepResult(step.id, Status.FAILED, f"{len(outcome.failures)} user(s) not purged; stopping before the OU comes back", outcome.failures)
                results.append(result)
                if journal is not None:
                    journal.step_ended(step.id, "failed", result.detail)
                on_event(Event("failed", step, result.detail, result))
                results.extend(StepResult(later.id, Status.SKIPPED, f"not run: {step.id} failed") for later in steps[index + 1 :])
                break
            if isinstance(step.operation, SetScheduler):
                if _is_pause(step):
                    # Owed back only if the desired state wants it on; else off is the goal.
                    paused_by_us = paused_by_us or desired.scheduler.sync_cycle_enabled
                elif step.operation.enabled:
                    paused_by_us = False
            if isinstance(step.operation, SetDeletionThreshold) and step.approval == "threshold-raise":
                if step.id.endswith("threshold.raise"):
                    # Owed back: the value before the first raise, whoever raised it.
                    raised_threshold = raised_threshold if raised_threshold is not None else step.before.get("threshold")
                else:
                    raised_threshold = None
            if journal is not None:
                journal.step_ended(step.id, "done", outcome.detail, scheduler_paused=paused_by_us, threshold_owed=raised_threshold)
            result = StepResult(step.id, Status.DONE, outcome.detail, outcome.failures)
            results.append(result)
            on_event(Event("finished", step, outcome.detail, result))
            if step.id == last_sync_id:
                last_sync_done = True
            if isinstance(step.operation, (AssignLicense, AddGroupMembers, ReprocessLicences)) and outcome.failures:
                _no_wait_for(steps, index + 1, outcome.failures, on_event)
            index += 1
    finally:
        # A stop signal that comes while things are put back waits until they are (interrupts.deferred).
        with interrupts.deferred():
            if raised_threshold is not None:
                # The raise was for one sync only: never leave it behind.
                try:
                    target.server.apply(SetDeletionThreshold(raised_threshold))
                    target.checkpoint()
                    if journal is not None:
                        journal.step_ended("threshold.restore-owed", "done", threshold_owed=None)
                    on_event(Event("note", message=f"the export deletion threshold was put back to {raised_threshold}"))
                except ProviderError as exc:
                    on_event(Event("note", message=f"could not put the export deletion threshold back to {raised_threshold}: {exc}"))
            if paused_by_us:
                # The bracket: never leave the scheduler off because of us.
                try:
                    target.server.apply(SetScheduler(True))
                    target.checkpoint()
                    restored = True
                    if journal is not None:
                        journal.step_ended("scheduler.restore", "done", scheduler_paused=False)
                    on_event(Event("note", message="the sync scheduler was resumed"))
                except ProviderError as exc:
                    on_event(Event("note", message=f"could not resume the sync scheduler: {exc}; run Set-ADSyncScheduler -SyncCycleEnabled $true"))
            if journal is not None and record:
                licensed = settled(from_record(record, ()), results, steps)
                if licensed:
                    journal.settle_purge(licensed)
            if journal is not None:
                report_ok = all(r.status is Status.DONE for r in results) and len(results) >= len(steps)
                journal.end("done" if report_ok else ("window" if stopped_for_window else "stopped"))
    return ApplyReport(tuple(results), tuple(notices), restored, stopped_for_window, tuple(outcomes))


IDLE_WAIT_SECONDS = 3 * 3600


def _no_wait_for(steps, start, failures, on_event):
    """Users whose licence was not assigned get no mailbox: the verify steps after
    ``start`` do not wait for them, and say so at once."""
    from attrs import evolve

    failed = {upn.lower(): reason for upn, reason in failures}
    for i in range(start, len(steps)):
        operation = steps[i].operation
        if not isinstance(operation, VerifyMailboxes):
            continue
        dropped = [r.upn for r in operation.users if r.upn.lower() in failed]
        if dropped:
            kept = tuple(r for r in operation.users if r.upn.lower() not in failed)
            steps[i] = evolve(steps[i], operation=VerifyMailboxes(kept))
            on_event(Event("note", message=f"no mailbox will come for {len(dropped)} user(s) whose licence was not assigned; not waited for: {', '.join(dropped)}"))


def _is_pause(step):
    return isinstance(step.operation, SetScheduler) and step.id.endswith("scheduler.pause")


def _changes_configuration(step):
    """A server step the server refuses while a sync cycle runs (the scheduler switch it allows)."""
    return step.provider == "entra-connect" and not isinstance(step.operation, (SetScheduler, RunSyncCycle))


def _wait_until_idle(target, on_event, until=None, limit=IDLE_WAIT_SECONDS, poll=30):
    """Wait while a sync cycle runs. None once the server is idle; "window" if ``until``
    comes first; otherwise why it gave up (``limit`` seconds of waiting)."""
    waited = 0
    while target.server.observe().scheduler.cycle_in_progress:
        if waited == 0:
            on_event(Event("note", message="a sync cycle is running: waiting for it to finish before changing the configuration"))
        if until is not None and target.now() >= until:
            return "window"
        if waited >= limit:
            return f"a sync cycle was still running after {limit // 60} minutes of waiting"
        on_event(Event("progress", result=Progress("a running sync cycle to finish before the configuration changes", float(waited))))
        target.sleep(poll)
        waited += poll
    return None


@contextlib.contextmanager
def _relaying(provider, step, on_event, expected=None):
    """The provider's progress on ``step`` as ``Event("progress", step, result=Progress)``,
    with time left from ``expected`` seconds where the provider had no estimate."""
    provider.on_progress = lambda progress: on_event(Event("progress", step, result=progress.estimated(expected)))
    try:
        yield
    finally:
        del provider.on_progress  # back to the class's: nobody listening


def _history_for_estimate(target):
    """The run history, for the time a full sync is expected to take; () if it cannot be read
    (an estimate is worth no failure: the sync step reads the server itself)."""
    try:
        return target.server.observe().run_history
    except ProviderError:
        return ()


def _expected_seconds(step, history):
    """How long an Initial (full) cycle is expected to take: as long as the last one did."""
    operation = step.operation
    if not (isinstance(operation, RunSyncCycle) and operation.policy is SyncPolicy.INITIAL and history):
        return None
    if not any(r.profile == "Full Import" for r in history):
        return None
    return _last_full_cycle_minutes(history) * 60.0


def _apply_with_retries(provider, step, target, desired, retries, on_event):
    """Apply; on a transient error observe again, trim what is done, back off, retry.

    A write whose outcome is unknown is never blindly repeated: what the step
    still has to do is worked out from a fresh observation first.
    """
    operation = step.operation
    attempt = 0
    while True:
        try:
            return provider.apply(operation)
        except TransientError as exc:
            attempt += 1
            if attempt > retries:
                raise ProviderError(exc.provider, exc.resource, f"{exc.message} (still failing after {retries} retries)") from None
            target.sleep(min(2 ** (attempt - 1), 30))
            left = remaining(operation, observe(target, desired))
            on_event(Event("note", message=f"{step.id}: {exc.message}; retry {attempt} of {retries}"))
            if left is None:
                return Outcome("done (found done after a transient error)")
            operation = left


def remaining(operation, observed):
    """What is left of ``operation`` in the world as observed, or None if it is done.

    This is what makes a retry or a resumed run safe: a step already done is
    skipped, a licence already assigned is not assigned twice.
    """
    server, tenant = observed.server, observed.tenant
    match operation:
        # RunSyncCycle is not here: a cycle cannot be seen as done, and running it
        # again is safe (it re-evaluates; it never deletes more than the first would).
        case SetScheduler(enabled):
            return None if server.scheduler.sync_cycle_enabled == enabled else operation
        case SetRuleDisabled(identifier, _name, disabled):
            rule = server.rule_by_id(identifier)
            return None if rule is not None and rule.disabled == disabled else operation
        case CreateRule(rule) | UpdateRule(rule):
            return None if server.rule_by_id(rule.identifier) == rule else operation
        case RemoveRule(identifier, _name):
            return None if server.rule_by_id(identifier) is None else operation
        case SetContainerScope(included, excluded, connector):
            ad = [c for c in server.connectors_of_kind("AD") if connector is None or c.identifier.lower() == connector.lower()]
            done = ad and dn.same_set(ad[0].included_containers, included) and dn.same_set(ad[0].excluded_containers, excluded)
            return None if done else operation
        case SetExcludedAttributes(attributes):
            aad = server.connectors_of_kind("AAD")
            return None if aad and same_names(aad[0].excluded_attributes, attributes) else operation
        case SetDeletionThreshold(threshold):
            return None if server.deletion_threshold == threshold else operation
        case AssignLicense(sku_id, part, users, disabled):
            by_upn = {u.upn.lower(): u for u in tenant.users}
            left = tuple(r for r in users if not (by_upn.get(r.upn.lower()) and by_upn[r.upn.lower()].has_license(sku_id)))
            return AssignLicense(sku_id, part, left, disabled) if left else None
        case RemoveLicense(sku_id, part, users):
            by_upn = {u.upn.lower(): u for u in tenant.users}
            left = tuple(r for r in users if by_upn.get(r.upn.lower()) and by_upn[r.upn.lower()].has_license(sku_id))
            return RemoveLicense(sku_id, part, left) if left else None
        case AddGroupMembers(group_id, name, users):
            group = next((g for g in tenant.groups if g.id == group_id), None)
            if group is None:
                return operation  # not read: let the provider answer
            left = tuple(r for r in users if r.id not in group.members)
            return AddGroupMembers(group_id, name, left) if left else None
        case PurgeDeletedUsers(users):
            if tenant.deleted_users is None:
                return operation  # unknown: let the provider answer
            in_bin = {u.id for u in tenant.deleted_users}
            left = tuple(r for r in users if r.id in in_bin)
            return PurgeDeletedUsers(left) if left else None
    return operation


def _estimate_minutes(step, history):
    """How long a step may take: a full sync as long as the last one, others a little."""
    operation = step.operation
    if isinstance(operation, RunSyncCycle):
        return max(_last_full_cycle_minutes(history), 5)
    if isinstance(operation, VerifyMailboxes):
        return 15
    users = getattr(operation, "users", ())
    return 1 + len(users) // 1000


def _last_full_cycle_minutes(history):
    starts = [r for r in history if r.profile == "Full Import"]
    if not starts:
        return 60  # no history: assume an hour
    last = max(starts, key=lambda r: r.started)
    ends = [r.ended for r in history if r.started == last.started]
    begin = dt.datetime.strptime(last.started, "%Y-%m-%dT%H:%M:%SZ")
    finish = dt.datetime.strptime(max(ends), "%Y-%m-%dT%H:%M:%SZ")
    return max(1, int((finish - begin).total_seconds() // 60) + 1)


def _confirm_purge(step, desired, target):
    """Check the recycle bin against the plan's prediction, by object id.

    Every object the plan names must be in the recycle bin, synced and still under
    the [purge] selection; then exactly those ids are purged, never another object
    with the same UPN. Returns the step to run, if it must not run why, and the
    recycle bin as observed.
    """
    tenant = observe(target, desired).tenant
    if tenant.deleted_users is None:
        return step, "the recycle bin could not be read (unknown): nothing was purged", None
    in_bin = {u.id: u for u in tenant.deleted_users if u.synced is not None}
    planned = step.operation.users
    missing = sorted(r.upn for r in planned if r.id not in in_bin)
    moved = sorted(r.upn for r in planned if r.id in in_bin and not named_for_purge(in_bin[r.id], desired.purge))
    if missing or moved:
        detail = "; ".join(
            part
            for part in (
                f"predicted but not in the recycle bin: {', '.join(missing)}" if missing else "",
                f"no longer named by [purge]: {', '.join(moved)}" if moved else "",
            )
            if part
        )
        return step, f"the sync's soft-deletes differ from the plan's prediction ({detail}); nothing was purged", tenant.deleted_users
    return step, None, tenant.deleted_users


# This run's restores and those an earlier run still owes (licences.restore-owed[...]).
_RESTORE_PREFIXES = ("licences.restore[", "mailboxes.restored.", "licences.restore-owed[", "mailboxes.restored-owed.")


def _resolve_recreated(step, desired, target):
    """The step with each user named by the id of the synced object now holding its UPN."""
    from attrs import evolve

    by_upn = {u.upn.lower(): u for u in observe(target, desired).tenant.users if u.synced}
    users = tuple(UserRef(by_upn[r.upn.lower()].id, r.upn) if r.upn.lower() in by_upn else r for r in step.operation.users)
    return evolve(step, operation=evolve(step.operation, users=users))


def _decide_after_sync(plan, desired, target, depends_on, record=()):
    """The licence steps again from a fresh observation after the sync, held to the
    reviewed plan: fewer users (each with the reason), never others."""
    observed = observe(target, desired)
    server = observed.server
    excluded = tuple(a for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes)
    purged = frozenset(r.upn.lower() for s in plan.steps if isinstance(s.operation, PurgeDeletedUsers) for r in s.operation.users)
    earlier = recreated_since(from_record(record, observed.tenant.skus), observed.tenant)
    earlier = tuple(p for p in earlier if p.upn.lower() not in purged)  # this plan's own purge: as before
    cond = conditions(
        server,
        server.rules,
        excluded,
        sync_planned=False,
        cleared_since=last_full_sync_end(server),
        recreated=purged,
        before_purge={upn.lower(): licences for upn, licences in still_owed(earlier, observed.tenant)},
        guid_gone=frozenset(p.upn.lower() for p in earlier),
    )
    outcomes, notices = predict(desired, observed.tenant, cond, reviewed=plan.outcomes)
    steps = license_steps(desired, observed.tenant, outcomes, depends_on=depends_on)
    return steps, notices, outcomes
