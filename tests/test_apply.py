"""The apply engine: order, the scheduler bracket, per-user failures, preconditions."""

import pytest

from conftest import EXAMPLE, UPGRADE_SAFE, plan_and_apply, plan_for
from providers.lab.provider import LabServer, LabTarget, LabTenant
from providers.lab.scenario import ENTERPRISEPACK_ID
from reconciler.apply import Status, apply_plan
from reconciler.errors import ProviderError
from reconciler.loader import load_desired
from reconciler.model import SyncPolicy, UserRef
from reconciler.operations import AssignLicense
from reconciler.plan import Plan, Step, Action
from reconciler.provider import Target


class FailingServer(LabServer):
    """The lab server, except that one kind of operation fails (or is interrupted)."""

    def __init__(self, lab, fail_on, exception=None):
        super().__init__(lab)
        self.fail_on = fail_on
        self.exception = exception

    def apply(self, operation):
        if type(operation).__name__ == self.fail_on:
            self.fail_on = None  # once
            raise self.exception or ProviderError(self.name, "test", "injected failure")
        return super().apply(operation)


def mailboxes(lab):
    return {u.upn for u in lab.active_cloud_users() if lab.mailbox_state(u) == "present"}


@pytest.mark.parametrize("path", [EXAMPLE, UPGRADE_SAFE], ids=["example", "upgrade-safe"])
def test_apply_gives_every_licensable_user_a_mailbox_and_converges(lab, target, path):
    plan, report = plan_and_apply(path, target)
    assert report.ok, report.results
    hybrid = {f"user{i:02d}@contoso.com" for i in range(1, 21)} | {"contractor01@contoso.com"}
    # user07 has no usage location and user20 found no free unit: reported in the plan.
    assert hybrid - mailboxes(lab) == {"user07@contoso.com", "user20@contoso.com"}
    assert all(lab.cloud_user(u).mailbox_guid is None for u in hybrid)
    assert lab.server.sync_cycle_enabled
    again = plan_for(path, target)
    assert again.steps == ()


def test_a_failed_rule_step_stops_the_apply_and_the_scheduler_is_resumed(lab):
    target = Target(FailingServer(lab, "CreateRule"), LabTenant(lab))
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    report = apply_plan(plan, desired, target)
    statuses = [(r.step_id, r.status) for r in report.results]
    assert statuses[:3] == [
        ("scheduler.pause", Status.DONE),
        ("rule[In from AD - User Exchange].disable-original", Status.DONE),
        ("rule[In from AD - User Exchange].copy", Status.FAILED),
    ]
    assert all(status is Status.SKIPPED for _id, status in statuses[3:])
    assert report.scheduler_restored and lab.server.sync_cycle_enabled
    assert not report.ok
    # The run is resumable: planning again picks up where it stopped, and converges.
    target = LabTarget(lab)
    _plan, report = plan_and_apply(desired, target)
    assert report.ok
    assert plan_for(desired, target).steps == ()


def test_ctrl_c_inside_a_step_still_resumes_the_scheduler(lab):
    target = Target(FailingServer(lab, "RemoveRule", KeyboardInterrupt()), LabTenant(lab))
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    with pytest.raises(KeyboardInterrupt):
        apply_plan(plan, desired, target)
    assert lab.server.sync_cycle_enabled


def test_a_user_who_fails_does_not_stop_the_others(lab, target):
    users = (UserRef(lab.cloud_user("user07@contoso.com").id, "user07@contoso.com"), UserRef(lab.cloud_user("user05@contoso.com").id, "user05@contoso.com"))
    step = Step("license[ENTERPRISEPACK].assign", "tenant", "licenses/ENTERPRISEPACK", Action.UPDATE, "assign", AssignLicense(ENTERPRISEPACK_ID, "ENTERPRISEPACK", users))
    report = apply_plan(Plan("t", "lab", (step,)), load_desired(EXAMPLE), target)
    assert report.user_failures == (
        ("user07@contoso.com", "License assignment cannot be done for user with invalid usage location.", "license[ENTERPRISEPACK].assign"),
    )
    assert lab.cloud_user("user05@contoso.com").license(ENTERPRISEPACK_ID) is not None
    assert not report.ok


def test_a_running_cycle_is_waited_for_after_the_pause_before_any_rule_changes(lab, target):
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    lab.start_cycle(SyncPolicy.DELTA)
    seen = []

    def on_event(event):
        # What the server looked like when each step began: no rule step during the cycle.
        if event.kind == "started":
            seen.append((event.step.id, lab.server.cycle is not None, lab.server.sync_cycle_enabled))
        elif event.kind == "note":
            seen.append((event.message, lab.server.cycle is not None, lab.server.sync_cycle_enabled))

    report = apply_plan(plan, desired, target, on_event=on_event)
    assert report.ok
    waiting = next(i for i, (what, _, _) in enumerate(seen) if "sync cycle is running: waiting" in what)
    assert seen[waiting - 1][0].endswith("scheduler.pause"), "the scheduler is paused first, so no new cycle starts"
    assert not any(running for what, running, _ in seen[waiting + 1 :] if what.startswith("rule"))


def test_a_running_cycle_is_waited_for_when_the_scheduler_is_off_already(lab, target):
    lab.set_scheduler(False)  # left paused: the plan has no pause step of its own
    lab.start_cycle(SyncPolicy.DELTA)  # a cycle started by hand
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    assert not any(s.id.endswith("scheduler.pause") for s in plan.steps)
    notes = []
    report = apply_plan(plan, desired, target, on_event=lambda e: notes.append(e.message) if e.kind == "note" else None)
    assert report.ok and lab.server.sync_cycle_enabled
    assert "a sync cycle is running: waiting for it to finish before changing the configuration" in notes


def test_the_wait_for_a_running_cycle_ends_with_the_window(lab):
    import datetime as dt

    from providers.lab.world import RunningCycle

    target = LabTarget(lab)
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    lab.start_cycle(SyncPolicy.INITIAL)
    lab.server.cycle = RunningCycle(SyncPolicy.INITIAL, lab.clock, lab.clock + 120)  # a two-hour cycle
    started = lab.clock
    report = apply_plan(plan, desired, target, until=target.now() + dt.timedelta(minutes=10))
    assert report.stopped_for_window and not report.ok
    assert lab.clock - started <= 11, "stopped when the window closed, not when the cycle ended"
    assert lab.server.sync_cycle_enabled and report.scheduler_restored
    assert "a sync cycle is still running and the window closes" in report.results[-1].detail


def test_a_cycle_that_never_ends_fails_the_step_after_three_hours(lab):
    from providers.lab.world import RunningCycle

    target = LabTarget(lab)
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    lab.start_cycle(SyncPolicy.INITIAL)
    lab.server.cycle = RunningCycle(SyncPolicy.INITIAL, lab.clock, lab.clock + 24 * 60)  # a stuck cycle
    rules_before = list(lab.server.rules)
    report = apply_plan(plan, desired, target)
    failed = next(r for r in report.results if r.status is Status.FAILED)
    assert failed.detail == "not started: a sync cycle was still running after 180 minutes of waiting"
    assert lab.server.rules == rules_before, "no configuration change during the cycle"
    assert lab.server.sync_cycle_enabled and report.scheduler_restored


def test_a_kill_while_waiting_after_the_pause_leaves_the_scheduler_owed(lab, tmp_path):
    from reconciler.journal import Journal, last_interrupted

    class Killed(BaseException):
        pass

    target = LabTarget(lab)
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    lab.start_cycle(SyncPolicy.INITIAL)

    seen = []

    def on_event(event):
        if event.kind == "note" and "waiting" in event.message:
            # What a SIGKILL now would leave behind (no finally block would run).
            seen.append((last_interrupted(tmp_path / "journal"), lab.server.sync_cycle_enabled))
            raise Killed

    with pytest.raises(Killed):
        apply_plan(plan, desired, target, on_event=on_event, journal=Journal(tmp_path / "journal"))
    interrupted, scheduler_on = seen[0]
    assert not scheduler_on and interrupted.scheduler_paused, "plan and drift must say the scheduler was left off"


def test_an_export_stopped_by_the_deletion_threshold_fails_the_sync_step(lab, target):
    lab.set_deletion_threshold(1)
    lab.ad_users = [u for u in lab.ad_users if not u.sam.startswith("svc")]  # two deletions at the next sync
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    report = apply_plan(plan, desired, target)
    failed = next(r for r in report.results if r.status is Status.FAILED)
    assert failed.step_id == "sync.initial"
    assert "stopped-deletion-threshold-exceeded" in failed.detail
    assert lab.server.sync_cycle_enabled


def test_a_cycle_that_starts_just_before_the_pause_is_waited_for(lab):
    class RacingServer(LabServer):
        """The scheduler starts a cycle at the moment syncprep pauses it."""

        def apply(self, operation):
            from reconciler.operations import SetScheduler

            if operation == SetScheduler(False) and self.lab.server.cycle is None:
                self.lab.start_cycle(SyncPolicy.DELTA)
            return super().apply(operation)

    target = Target(RacingServer(lab), LabTenant(lab))
    target.sleep = lambda seconds: lab.advance(1)
    desired = load_desired(EXAMPLE)
    notes = []
    report = apply_plan(plan_for(desired, target), desired, target, on_event=lambda e: notes.append(e.message))
    assert report.ok
    assert any("sync cycle is running: waiting" in n for n in notes)
