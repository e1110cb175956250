"""Progress on long waits (issue 17): providers report, the engine relays, the CLI renders —
rich's display on a terminal, a plain line a minute otherwise (CI logs)."""

import io
import itertools

import pytest
from rich.console import Console

from conftest import EXAMPLE, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan
from reconciler.loader import load_desired
from reconciler.model import SyncPolicy
from reconciler.operations import AssignLicense, RunSyncCycle, VerifyMailboxes
from reconciler.progress import Progress, duration, rate_estimate
from reconciler.render import ApplyRenderer, ProgressView


def test_a_progress_line_says_what_counts_elapsed_and_time_left():
    progress = Progress("Initial sync cycle", 725.0, 1, 2, "connectors", remaining=480.0, waiting_for="contoso.com (Full Synchronization)")
    assert progress.line() == "Initial sync cycle: 1 of 2 connectors, 12 min elapsed, about 8 min left (waiting for contoso.com (Full Synchronization))"
    assert Progress("mailboxes to appear", 40.0, 3, 10, "mailboxes").line() == "mailboxes to appear: 3 of 10 mailboxes, 40 s elapsed"
    assert duration(7500) == "2 h 05 min"
    assert rate_estimate(60.0, 3000, 10000) == pytest.approx(140.0)
    assert rate_estimate(5.0, 0, 10000) is None
    assert Progress("x", 100.0).estimated(expected=360.0).remaining == 260.0
    assert Progress("x", 400.0).estimated(expected=360.0).remaining is None  # longer than the last: no guess


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_not_on_a_terminal_one_plain_line_when_the_wait_starts_then_one_a_minute():
    buffer, clock = io.StringIO(), Clock()
    view = ProgressView(Console(file=buffer, no_color=True, width=200), clock)
    for second in (0, 30, 59, 60, 61, 125, 170):
        clock.now = float(second)
        view.update(Progress("Initial sync cycle", float(second), 0, 2, "connectors"))
    lines = buffer.getvalue().splitlines()
    assert [line.strip() for line in lines] == [
        "Initial sync cycle: 0 of 2 connectors, 0 s elapsed",
        "Initial sync cycle: 0 of 2 connectors, 1 min elapsed",
        "Initial sync cycle: 0 of 2 connectors, 2 min elapsed",
    ]
    view.stop()
    clock.now = 171.0
    view.update(Progress("mailboxes to appear", 0.0, 0, 5, "mailboxes"))  # a new wait: a line at once
    assert buffer.getvalue().splitlines()[-1].strip() == "mailboxes to appear: 0 of 5 mailboxes, 0 s elapsed"


def test_on_a_terminal_rich_progress_shows_counts_and_time_left():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    view = ProgressView(console)
    view.update(Progress("ENTERPRISEPACK licences assigned", 30.0, 3000, 10000, "licences", remaining=70.0))
    assert view.live is not None
    view.live.refresh()
    view.stop()
    text = buffer.getvalue()
    assert "ENTERPRISEPACK licences assigned" in text and "3000/10000" in text and "30 s elapsed, about 1 min left" in text


def test_the_engine_relays_the_providers_progress_with_the_step():
    lab = scenario.build("default", users=20)
    target = LabTarget(lab)
    desired = load_desired(EXAMPLE)
    events = []
    apply_plan(plan_for(desired, target), desired, target, on_event=events.append)
    progress = [(e.step.id if e.step else None, e.result) for e in events if e.kind == "progress"]
    sync = [p for step, p in progress if step == "sync.initial"]
    assert sync and sync[0].what == "Initial sync cycle" and sync[0].unit == "connectors" and sync[0].total == len(lab.server.connectors)
    assert sync[0].remaining > 0  # the lab knows how long its cycle runs
    mailboxes = [p for step, p in progress if p.unit == "mailboxes"]
    assert mailboxes and all(p.total == mailboxes[0].total for p in mailboxes)
    assert mailboxes[-1].elapsed > mailboxes[0].elapsed
    # Nobody listens once the step is over.
    assert "on_progress" not in vars(target.server) and "on_progress" not in vars(target.tenant)


def test_the_psrp_server_reports_connectors_done_while_the_cycle_runs(served):
    _lab, _endpoint, server = served()
    seen = []
    server.on_progress = seen.append
    server.apply(RunSyncCycle(SyncPolicy.INITIAL))
    cycle = [p for p in seen if p.what == "Initial sync cycle"]
    assert cycle and all(p.unit == "connectors" and p.total == cycle[0].total for p in cycle)
    assert cycle[-1].done == cycle[-1].total and not cycle[-1].waiting_for
    assert any(p.waiting_for for p in cycle)  # while it ran, it named the connectors it waited for


def test_graph_reports_licences_made_and_mailboxes_present(monkeypatch):
    from providers.graph import open_tenant
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from reconciler.desired import GraphTargetSpec
    from reconciler.model import UserRef

    lab = scenario.build(users=30)
    token = "eyJ0eXAiOiJKV1Qi.progress-test.sig"
    monkeypatch.setenv("SYNCPREP_GRAPH_TOKEN", token)
    sku_id = scenario.ENTERPRISEPACK_ID
    users = [u for u in lab.active_cloud_users() if u.synced and u.usage_location and not u.licenses][:12]
    lab.provisioning_minutes = 200  # the emulator's lab clock moves with its requests: long enough to be seen pending
    for user in users:
        user.mailbox_guid = None  # as after Solution 1: licensing provisions a mailbox
    refs = tuple(UserRef(u.id, u.upn) for u in users)
    ticks = itertools.count()  # one lab minute each time the emulator looks at the lab
    with GraphEmulator(LabHost(lab, speed=1.0, monotonic=lambda: float(next(ticks))), token=token) as emu:
        spec = GraphTargetSpec(endpoint=emu.base_url, auth="token-env", mailbox_pending_minutes=lab.provisioning_minutes)
        tenant = open_tenant(spec, poll_interval=0.02, verify_timeout=10.0)
        seen = []
        tenant.on_progress = seen.append
        try:
            tenant.apply(AssignLicense(sku_id, "ENTERPRISEPACK", refs))
            result = tenant.apply(VerifyMailboxes(refs))
        finally:
            tenant.close()
    licences = [p for p in seen if p.unit == "licences"]
    assert licences[-1].done == licences[-1].total == len(refs) and licences[-1].what == "ENTERPRISEPACK licences assigned"
    mailboxes = [p for p in seen if p.unit == "mailboxes"]
    assert mailboxes and result.detail.endswith("mailboxes present")
    assert mailboxes[0].total == len(refs) and mailboxes[0].done < len(refs)


def test_apply_in_a_ci_log_prints_the_waits(cli):
    code, out, _err = cli("apply", EXAMPLE, "--auto-approve")
    assert code == 4
    assert "Initial sync cycle: 0 of 2 connectors, 0 s elapsed, about" in out
    assert "mailboxes to appear:" in out and "provisioning)" in out


def test_a_renderer_stops_its_display_before_printing_a_step():
    buffer = io.StringIO()
    renderer = ApplyRenderer(Console(file=buffer, force_terminal=True, width=160, color_system=None), 3)
    from reconciler.apply import Event

    renderer(Event("progress", result=Progress("Initial sync cycle", 1.0, 0, 2, "connectors")))
    assert renderer.waits.live is not None
    renderer(Event("note", message="next"))
    assert renderer.waits.live is None
