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

from reconciler.classes import frozen
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
    _check_preconditions(plan, approvals, force)
    run = _Run(plan, desired, target, on_event, journal, until, retries)
    run.begin(command)
    try:
        run.steps_in_order()
    finally:
        # A stop signal that comes while things are put back waits until they are (interrupts.deferred).
        with interrupts.deferred():
            run.put_back()
    return run.report()


def _check_preconditions(plan, approvals, force):
    missing = [a for a in plan.approvals_needed if a not in approvals]
    if missing:
        raise ApplyError("preconditions", f"the plan has steps that need explicit approval ({', '.join(missing)}); nothing was changed")
    if plan.unsafe and not force:
        raise ApplyError("preconditions", "; ".join(plan.unsafe) + " (nothing was changed)")


class _Run:
    """One apply as it goes: the steps (decided again after the sync), their results, and
    what the apply owes back when it ends (the scheduler, the deletion threshold)."""

    def __init__(self, plan, desired, target, on_event, journal, until, retries):
        self.plan, self.desired, self.target, self.on_event = plan, desired, target, on_event
        self.journal, self.until, self.retries = journal, until, retries
        self.steps = list(plan.steps)
        self.results, self.notices = [], []
        self.outcomes = plan.outcomes
        self.index = 0
        self.paused_by_us = self.restored = self.replanned = self.stopped_for_window = False
        self.raised_threshold = None
        self.record = []
        self.history = None
        last_sync = max((i for i, s in enumerate(self.steps) if isinstance(s.operation, RunSyncCycle)), default=None)
        self.last_sync_id = self.steps[last_sync].id if last_sync is not None else None
        self.last_sync_done = False

    def begin(self, command):
        """What is owed from the start, and the journal's record of this run (``command``: its kind)."""
        journal = self.journal
        changes_server = any(s.provider == "entra-connect" and not isinstance(s.operation, RunSyncCycle) for s in self.steps)
        scheduler = self.target.server.observe().scheduler if changes_server else None
        # The bracket owes the scheduler back when the desired state wants it on: also when it
        # is off already at the start (left paused by a run that was killed, or by hand).
        self.paused_by_us = scheduler is not None and not scheduler.sync_cycle_enabled and self.desired.scheduler.sync_cycle_enabled
        # The threshold to put back when the apply ends: raised by this run, or by an
        # interrupted one whose journal still owes it (a kill between raise and restore).
        previous = journal.last_interrupted() if journal is not None else None
        self.raised_threshold = previous.threshold_owed if previous is not None else None
        # Purged users still owed their licences (earlier runs' records, and this run's once its
        # purge starts): re-created objects when the licences are decided after the sync.
        self.record = list(journal.purge_owed()) if journal is not None else []
        if journal is not None:
            journal.start(plan_checksum(self.plan), command, [s.id for s in self.steps], threshold_owed=self.raised_threshold)

    def steps_in_order(self):
        """Each step in turn, until the last is done or one stops the apply."""
        while True:
            if self.index >= len(self.steps):
                if self._decide_at_the_end():
                    continue
                return
            step, refusal, seen_bin = self._confirmed(self.steps[self.index])
            if self._decide_before(step):
                continue
            if not self._may_start(step):
                return
            if step.id.startswith(_RESTORE_PREFIXES):
                # Re-created users have new ids, known only now: look them up by UPN.
                step = self.steps[self.index] = _resolve_recreated(step, self.desired, self.target)
            if not self._run_step(step, refusal, seen_bin):
                return
            self.index += 1

    # ------------------------------------------------------------ decided after the sync

    def _confirmed(self, step):
        """The step, why it must not run (None if it may), and the recycle bin if it was read."""
        if step.decided_after_sync and isinstance(step.operation, PurgeDeletedUsers):
            # Known only after the sync: which users it really soft-deleted.
            step, refusal, seen_bin = _confirm_purge(step, self.desired, self.target)
            self.steps[self.index] = step
            return step, refusal, seen_bin
        return step, None, None

    def _decide_before(self, step):
        """Before the first licence step decided after the sync: decide them all again."""
        if not (step.decided_after_sync and isinstance(step.operation, _LICENCE_OPERATIONS) and not self.replanned):
            return False
        self.replanned = True
        fresh, fresh_notices = self._decide(step.depends_on)
        kept = [s for s in self.steps[self.index :] if not (s.decided_after_sync and isinstance(s.operation, _LICENCE_OPERATIONS))]
        self.steps[self.index :] = kept + fresh
        self._replanned(fresh, fresh_notices)
        return True

    def _decide_at_the_end(self):
        """The plan predicted no licence change, but who needs one is only known after the
        sync: decide from a fresh observation all the same (once)."""
        if not (self.last_sync_done and not self.replanned and self.desired.licenses):
            return False
        self.replanned = True
        fresh, fresh_notices = self._decide((self.last_sync_id,))
        self.steps.extend(fresh)
        if fresh or fresh_notices:
            self._replanned(fresh, fresh_notices)
        return True

    def _decide(self, depends_on):
        fresh, fresh_notices, self.outcomes = _decide_after_sync(self.plan, self.desired, self.target, depends_on, self.record)
        self.notices.extend(fresh_notices)
        return fresh, fresh_notices

    def _replanned(self, fresh, fresh_notices):
        message = f"{len(fresh)} licence step(s) decided from a fresh observation"
        self.on_event(Event("replanned", message=message, result=(tuple(fresh), tuple(fresh_notices))))

    # ------------------------------------------------------------ before a step starts

    def _may_start(self, step):
        """False, with the step and those after it reported, if it must not start now."""
        until = self.until
        if _changes_configuration(step):
            # The server refuses configuration changes during a cycle: wait for one
            # that is running (started by hand, or by the scheduler just before the
            # pause, which is journaled first so a kill meanwhile leaves it owed).
            waited = _wait_until_idle(self.target, self.on_event, until)
            if waited == "window":
                self._stop_for_window(step, f"not started: a sync cycle is still running and the window closes at {until:%Y-%m-%dT%H:%MZ}")
                return False
            if waited is not None:
                self._fail(step, f"not started: {waited}", journaled=False)
                return False
        if until is not None:
            if self.history is None:
                self.history = self.target.server.observe().run_history
            needed = _estimate_minutes(step, self.history)
            if self.target.now() + dt.timedelta(minutes=needed) > until:
                self._stop_for_window(step, f"not started: about {needed} min needed, the window closes at {until:%Y-%m-%dT%H:%MZ}")
                return False
        return True

    def _stop_for_window(self, step, reason):
        self.stopped_for_window = True
        self.results.extend(StepResult(later.id, Status.SKIPPED, reason) for later in self.steps[self.index :])
        self.on_event(Event("note", message=f"stopping before '{step.summary}': {reason}"))

    # ------------------------------------------------------------ one step

    def _run_step(self, step, refusal, seen_bin):
        """Run one step; False if it failed (the steps after it are reported skipped)."""
        self._record_purge(step, refusal, seen_bin)
        self.on_event(Event("started", step))
        if self.journal is not None:
            self.journal.step_started(step.id)
        provider = self.target.provider_for(step.operation)
        try:
            outcome = self._apply(provider, step, refusal)
        except ProviderError as exc:
            self.target.checkpoint()
            self._fail(step, str(exc))
            return False
        self.target.checkpoint()
        if step.impact is Impact.IRREVERSIBLE and outcome.failures:
            # A purge that missed users must not go on to bring their OU back:
            # the sync would restore them from the recycle bin, GUID included.
            self._fail(step, f"{len(outcome.failures)} user(s) not purged; stopping before the OU comes back", outcome.failures)
            return False
        self._done(step, outcome)
        return True

    def _record_purge(self, step, refusal, seen_bin):
        """Durably before anything is purged: who, and how each was licensed, so a kill
        before the licences leaves them owed (resume and later plans restore them)."""
        if self.journal is None or not isinstance(step.operation, PurgeDeletedUsers) or refusal:
            return
        if seen_bin is None:
            seen_bin = observe(self.target, self.desired, counts=False).tenant.deleted_users
        entries = record_for(self.plan, step, seen_bin)
        self.journal.record_purge(entries)
        self.record.extend(entries)

    def _apply(self, provider, step, refusal):
        if refusal:
            raise ProviderError("syncprep", step.id, refusal)
        if isinstance(step.operation, RunSyncCycle) and self.history is None:
            self.history = _history_for_estimate(self.target)
        with _relaying(provider, step, self.on_event, _expected_seconds(step, self.history)):
            return _apply_with_retries(provider, step, self.target, self.desired, self.retries, self.on_event)

    def _fail(self, step, detail, failures=(), journaled=True):
        """``step`` failed: reported, and every step after it skipped."""
        result = StepResult(step.id, Status.FAILED, detail, failures)
        self.results.append(result)
        if journaled and self.journal is not None:
            self.journal.step_ended(step.id, "failed", detail)
        self.on_event(Event("failed", step, detail, result))
        self.results.extend(StepResult(later.id, Status.SKIPPED, f"not run: {step.id} failed") for later in self.steps[self.index + 1 :])

    def _done(self, step, outcome):
        self._owed_after(step)
        if self.journal is not None:
            self.journal.step_ended(step.id, "done", outcome.detail, scheduler_paused=self.paused_by_us, threshold_owed=self.raised_threshold)
        result = StepResult(step.id, Status.DONE, outcome.detail, outcome.failures)
        self.results.append(result)
        self.on_event(Event("finished", step, outcome.detail, result))
        if step.id == self.last_sync_id:
            self.last_sync_done = True
        if isinstance(step.operation, (AssignLicense, AddGroupMembers, ReprocessLicences)) and outcome.failures:
            _no_wait_for(self.steps, self.index + 1, outcome.failures, self.on_event)

    def _owed_after(self, step):
        """What the apply owes back once ``step`` is done: the scheduler, the threshold."""
        operation = step.operation
        if isinstance(operation, SetScheduler):
            if _is_pause(step):
                # Owed back only if the desired state wants it on; else off is the goal.
                self.paused_by_us = self.paused_by_us or self.desired.scheduler.sync_cycle_enabled
            elif operation.enabled:
                self.paused_by_us = False
        if isinstance(operation, SetDeletionThreshold) and step.approval == "threshold-raise":
            if step.id.endswith("threshold.raise"):
                # Owed back: the value before the first raise, whoever raised it.
                self.raised_threshold = self.raised_threshold if self.raised_threshold is not None else step.before.get("threshold")
            else:
                self.raised_threshold = None

    # ------------------------------------------------------------ the end, whatever happened

    def put_back(self):
        """The brackets: the threshold and the scheduler back as owed, the purged users who
        got their licences settled, and the journal's end of this run. Each runs whatever an
        earlier one raised (a provider's error is a note; anything else, such as the event
        callback failing, is raised once every bracket has run)."""
        try:
            if self.raised_threshold is not None:
                self._restore_threshold()
        finally:
            try:
                if self.paused_by_us:
                    self._resume_scheduler()
            finally:
                self._end_journal()

    def _end_journal(self):
        journal = self.journal
        if journal is not None and self.record:
            licensed = settled(from_record(self.record, ()), self.results, self.steps)
            if licensed:
                journal.settle_purge(licensed)
        if journal is not None:
            report_ok = all(r.status is Status.DONE for r in self.results) and len(self.results) >= len(self.steps)
            journal.end("done" if report_ok else ("window" if self.stopped_for_window else "stopped"))

    def _restore_threshold(self):
        # The raise was for one sync only: never leave it behind.
        threshold = self.raised_threshold
        try:
            self.target.server.apply(SetDeletionThreshold(threshold))
            self.target.checkpoint()
            if self.journal is not None:
                self.journal.step_ended("threshold.restore-owed", "done", threshold_owed=None)
            self.on_event(Event("note", message=f"the export deletion threshold was put back to {threshold}"))
        except ProviderError as exc:
            self.on_event(Event("note", message=f"could not put the export deletion threshold back to {threshold}: {exc}"))

    def _resume_scheduler(self):
        # The bracket: never leave the scheduler off because of us.
        try:
            self.target.server.apply(SetScheduler(True))
            self.target.checkpoint()
            self.restored = True
            if self.journal is not None:
                self.journal.step_ended("scheduler.restore", "done", scheduler_paused=False)
            self.on_event(Event("note", message="the sync scheduler was resumed"))
        except ProviderError as exc:
            self.on_event(Event("note", message=f"could not resume the sync scheduler: {exc}; run Set-ADSyncScheduler -SyncCycleEnabled $true"))

    def report(self):
        return ApplyReport(tuple(self.results), tuple(self.notices), self.restored, self.stopped_for_window, tuple(self.outcomes))


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
            left = remaining(operation, observe(target, desired, counts=False))
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
    tenant = observe(target, desired, counts=False).tenant
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

    by_upn = {u.upn.lower(): u for u in observe(target, desired, counts=False).tenant.users if u.synced}
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
