"""Plan and apply the example desired states with the server side over real PSRP.

The server side is the Entra Connect provider, through pypsrp over WS-Man, against
the loopback WinRM endpoint serving a lab; the tenant side is the lab's in-process
tenant on the same lab. The plan and the end state must be those of the pure
in-process lab.
"""

import itertools

import pytest

from attrs import evolve

from conftest import EXAMPLE, ROOT, UPGRADE_SAFE, end_state
from providers.entraconnect import PsrpServer, PsrpSession
from providers.lab import scenario
from providers.lab.host import LabHost
from providers.lab.provider import LabTarget, LabTenant
from providers.lab.pwsh_interpreter import parse as parse_powershell
from providers.lab.winrm_endpoint import WinRMEndpoint
from reconciler.apply import apply_plan, observe
from reconciler.loader import load_desired
from reconciler.model import JoinCondition
from reconciler.operations import RunSyncCycle
from reconciler.plan import build_plan
from reconciler.provider import Target

USER, PASSWORD = "CONTOSO\\syncadmin", "e2e-Pa55word!"


def run(desired, target):
    plan = build_plan(desired, observe(target, desired), "the same target")
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    return plan, report


@pytest.mark.parametrize("path", [EXAMPLE, UPGRADE_SAFE, ROOT / "desired-state" / "rebuild.toml"], ids=lambda p: p.name)
def test_desired_state_plans_and_applies_the_same_over_psrp(path):
    desired = load_desired(path)
    reference = scenario.build("default", users=20)
    plan_lab, report_lab = run(desired, LabTarget(reference))

    lab = scenario.build("default", users=20)
    # One lab minute passes per script the endpoint runs, so a cycle started over
    # WinRM finishes while the provider polls, deterministically.
    steps = itertools.count()
    host = LabHost(lab, speed=1.0, monotonic=lambda: float(next(steps)))
    with WinRMEndpoint(host, USER, PASSWORD) as (address, port):
        session = PsrpSession(address, port=port, ssl=False, auth="basic", username=USER, password=PASSWORD)
        server = PsrpServer(session, poll_interval=0.0, cycle_timeout=30.0, aad_username="sync-admin@contoso.onmicrosoft.com")
        try:
            target = Target(server, LabTenant(lab))
            plan_psrp, report_psrp = run(desired, target)
            scripts = [server.scripts_for(step.operation) for step in plan_psrp.steps if type(step.operation) in server.SUPPORTS]
        finally:
            server.close()

    assert plan_psrp.steps == plan_lab.steps
    assert plan_psrp.notices == plan_lab.notices
    assert report_lab.ok and report_psrp.ok, report_psrp.results
    assert [(r.step_id, r.status, r.failures) for r in report_psrp.results] == [(r.step_id, r.status, r.failures) for r in report_lab.results]
    assert end_state(lab) == end_state(reference)
    assert scripts and all(parse_powershell(s) for s in scripts)


def _with_a_join_on_the_stock_rule(lab, name="In from AD - User Exchange"):
    join = ((JoinCondition("mS-DS-ConsistencyGuid", "sourceAnchorBinary"),), (JoinCondition("objectGUID", "sourceAnchorBinary", True),))
    for rules in (lab.server.rules, lab.server.stock_catalogue):
        index = next(i for i, r in enumerate(rules) if r.name == name)
        rules[index] = evolve(rules[index], join=join)
    return join


def test_the_solution1_copy_keeps_the_stock_rules_join_over_psrp():
    desired = load_desired(EXAMPLE)
    reference = scenario.build("default", users=20)
    _with_a_join_on_the_stock_rule(reference)
    plan_lab, report_lab = run(desired, LabTarget(reference))

    lab = scenario.build("default", users=20)
    join = _with_a_join_on_the_stock_rule(lab)
    steps = itertools.count()
    host = LabHost(lab, speed=1.0, monotonic=lambda: float(next(steps)))
    with WinRMEndpoint(host, USER, PASSWORD) as (address, port):
        session = PsrpSession(address, port=port, ssl=False, auth="basic", username=USER, password=PASSWORD)
        server = PsrpServer(session, poll_interval=0.0, cycle_timeout=30.0)
        try:
            plan_psrp, report_psrp = run(desired, Target(server, LabTenant(lab)))
            observed = server.observe()
        finally:
            server.close()

    assert report_lab.ok and report_psrp.ok, report_psrp.results
    assert plan_psrp.steps == plan_lab.steps
    copies = [r for r in lab.server.rules if r.name == "In from AD - User Exchange"]
    assert len(copies) == 1 and not copies[0].is_standard and copies[0].precedence == 108
    assert copies[0].join == join
    assert observed.rules_named("In from AD - User Exchange")[0].join == join
    assert [r for r in reference.server.rules if r.name == "In from AD - User Exchange"] == copies


def test_the_scripts_a_plan_shows_are_the_scripts_apply_runs():
    # As plan --show-scripts does: observe, plan, then each server step's script in plan order.
    desired = load_desired(EXAMPLE)
    lab = scenario.build("default", users=20)
    steps = itertools.count()
    endpoint = WinRMEndpoint(LabHost(lab, speed=1.0, monotonic=lambda: float(next(steps))), USER, PASSWORD)
    with endpoint as (address, port):
        session = PsrpSession(address, port=port, ssl=False, auth="basic", username=USER, password=PASSWORD)
        server = PsrpServer(session, poll_interval=0.0, cycle_timeout=30.0)
        try:
            target = Target(server, LabTenant(lab))
            plan = build_plan(desired, observe(target, desired), "the same target")
            changes = [step for step in plan.steps if step.provider == "entra-connect" and not isinstance(step.operation, RunSyncCycle)]
            shown = [server.scripts_for(step.operation) for step in changes]
            ran_before = len(endpoint.scripts)
            report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
        finally:
            server.close()
    assert report.ok, report.results
    ran = endpoint.scripts[ran_before:]
    assert [s for s in ran if s in shown] == shown
    moves = [text for step, text in zip(changes, shown) if step.id.endswith(".precedence")]
    assert len(moves) == 2 and all("$syncRule.Precedence = " in text and "New-ADSyncRule" not in text for text in moves)
