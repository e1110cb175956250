"""Plan and apply desired-state/example.toml with the tenant side through Graph.

The server side is the lab's in-process provider; the tenant side is the real Graph
provider, through msgraph-sdk over HTTP, against the emulator serving the same lab.
The plan and the end state must be those of the pure in-process lab.
"""

import time

import pytest


from conftest import EXAMPLE, end_state
from providers.graph import open_tenant
from providers.lab import scenario
from providers.lab.graph_emulator import GraphEmulator
from providers.lab.host import LabHost
from providers.lab.provider import LabServer, LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.desired import GraphTargetSpec
from reconciler.loader import load_desired
from reconciler.operations import VerifyMailboxes
from reconciler.plan import build_plan
from reconciler.provider import Target

TOKEN = "graph-e2e-token"
TOKEN_ENV = "SYNCPREP_TEST_GRAPH_TOKEN"


class LabClock:
    """A monotonic clock for the LabHost that moves only while ``running``."""

    def __init__(self):
        self._elapsed = 0.0
        self._since = None

    def __call__(self):
        return self._elapsed + (time.monotonic() - self._since if self._since is not None else 0.0)

    @property
    def running(self):
        return self._since is not None

    @running.setter
    def running(self, value):
        if value and self._since is None:
            self._since = time.monotonic()
        elif not value and self._since is not None:
            self._elapsed, self._since = self(), None


def run(desired, target):
    plan = build_plan(desired, observe(target, desired), "the same target")
    report = apply_plan(plan, desired, target)
    return plan, report


@pytest.mark.parametrize("faults", [0.0, 0.10], ids=["clean", "10%-faults-and-throttling"])
def test_example_plans_and_applies_the_same_through_graph(monkeypatch, faults):
    desired = load_desired(EXAMPLE)
    reference = scenario.build("default", users=20)
    plan_lab, report_lab = run(desired, LabTarget(reference))

    lab = scenario.build("default", users=20)
    # As in the in-process lab, lab time passes only while the mailboxes are awaited:
    # then it runs at 600 lab minutes a real second, so they provision while VerifyMailboxes polls.
    clock = LabClock()
    host = LabHost(lab, speed=600.0, monotonic=clock)
    throttle = dict(rate=80, burst=20, retry_after=0.02, fault_rate=faults, seed=11) if faults else {}
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with GraphEmulator(host, token=TOKEN, **throttle) as emu:
        spec = GraphTargetSpec(endpoint=emu.base_url, auth="token-env", token_env=TOKEN_ENV, mailbox_pending_minutes=lab.provisioning_minutes)
        # The verification's bound is wall time; a pass returns as soon as the mailboxes are there.
        # (Failures under load came from the emulator's Date taken after a batch's items, which
        # made a mailbox read just before it provisioned look absent: see test_graph_emulator.)
        tenant = open_tenant(spec, backoff=0.005, reread_delay=0.01, poll_interval=0.1, verify_timeout=120.0, max_attempts=12)
        tenant_apply = tenant.apply

        def apply(operation):
            if not isinstance(operation, VerifyMailboxes):
                return tenant_apply(operation)
            clock.running = True
            try:
                return tenant_apply(operation)
            finally:
                clock.running = False

        tenant.apply = apply
        try:
            plan_graph, report_graph = run(desired, Target(LabServer(lab), tenant))
        finally:
            tenant.close()

    assert plan_graph.steps == plan_lab.steps
    assert plan_graph.notices == plan_lab.notices
    assert report_lab.ok and report_graph.ok, [(r.step_id, r.status, r.detail, r.failures) for r in report_graph.results if r.status.value != "done" or r.failures]
    assert [(r.step_id, r.status, r.failures) for r in report_graph.results] == [(r.step_id, r.status, r.failures) for r in report_lab.results]
    assert end_state(lab) == end_state(reference)
    if faults:
        assert emu.counters["faults"] > 0 and emu.counters["throttled"] > 0
        assert [w for w in emu.writes if w[3] != "applied"] == []
